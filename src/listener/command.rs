//! SMTP command lines (RFC 5321 §4.1), parsed without I/O.
//!
//! The verb is case-insensitive; its argument is kept as written. Paths follow RFC 5321
//! §4.1.2 with the leniency real clients need (a space after `FROM:`), and nothing more: a
//! proxy must not pass on what the next hop could read differently.

use super::xtext;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail {
        from: Path,
        params: Vec<Param>,
    },
    Rcpt {
        to: Path,
        params: Vec<Param>,
    },
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    Starttls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// Postfix's XCLIENT: `name=value` attributes, values xtext-decoded.
    Xclient(Vec<(String, String)>),
    Xremoteip(String),
    /// `XSETCONTEXT k=v ...`, values xtext-decoded.
    Xsetcontext(Vec<(String, String)>),
    Xdumpcontext,
}

/// A reverse- or forward-path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// `<>`: the null reverse-path of bounces.
    Null,
    Mailbox(Mailbox),
    /// `<postmaster>`, which RCPT must accept without a domain (RFC 5321 §4.5.1).
    Postmaster,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

impl Path {
    /// The address without angle brackets: empty for `<>`, `postmaster` for `<postmaster>`.
    pub fn address(&self) -> String {
        match self {
            Path::Null => String::new(),
            Path::Postmaster => "postmaster".into(),
            Path::Mailbox(m) => format!("{}@{}", m.local, m.domain),
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Null => f.write_str("<>"),
            Path::Postmaster => f.write_str("<postmaster>"),
            Path::Mailbox(m) => write!(f, "<{}@{}>", m.local, m.domain),
        }
    }
}

/// An ESMTP parameter, `KEYWORD[=value]`; the keyword upper-cased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub keyword: String,
    pub value: Option<String>,
}

/// Why a line is not a command we can act on; each maps to one reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not a command this server knows: 500 5.5.1.
    Unknown(String),
    /// A known command with a bad argument: 501 5.5.4 (or 553 5.1.x for an address).
    Syntax(&'static str),
    /// A bad address: 553 5.1.3 (RFC 3463 "bad destination mailbox address syntax").
    Address(&'static str),
}

pub fn parse(line: &[u8]) -> Result<Command, Invalid> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Invalid::Syntax("8-bit characters in a command"));
    };
    if line.bytes().any(|b| b < 0x20 && b != b'\t') {
        return Err(Invalid::Syntax("control characters in a command"));
    }
    let (verb, arg) = match line.split_once(' ') {
        Some((v, a)) => (v, a.trim()),
        None => (line.trim_end(), ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_arg = |c: Command| {
        if arg.is_empty() {
            Ok(c)
        } else {
            Err(Invalid::Syntax("this command takes no argument"))
        }
    };
    match verb.as_str() {
        "HELO" | "EHLO" => {
            if arg.is_empty() || arg.contains(' ') {
                return Err(Invalid::Syntax("a domain or address literal is needed"));
            }
            Ok(if verb == "HELO" {
                Command::Helo(arg.to_owned())
            } else {
                Command::Ehlo(arg.to_owned())
            })
        }
        "MAIL" => {
            let rest = strip_keyword(arg, "FROM:")
                .ok_or(Invalid::Syntax("expected MAIL FROM:<address>"))?;
            let (from, params) = path_and_params(rest, true)?;
            Ok(Command::Mail { from, params })
        }
        "RCPT" => {
            let rest =
                strip_keyword(arg, "TO:").ok_or(Invalid::Syntax("expected RCPT TO:<address>"))?;
            let (to, params) = path_and_params(rest, false)?;
            Ok(Command::Rcpt { to, params })
        }
        "DATA" => no_arg(Command::Data),
        "BDAT" => Ok(Command::Bdat),
        "RSET" => no_arg(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(Command::Starttls),
        "AUTH" => {
            let mut words = arg.split_ascii_whitespace();
            let mechanism = words
                .next()
                .ok_or(Invalid::Syntax(
                    "expected AUTH mechanism [initial-response]",
                ))?
                .to_ascii_uppercase();
            let initial = words.next().map(str::to_owned);
            if words.next().is_some() {
                return Err(Invalid::Syntax(
                    "expected AUTH mechanism [initial-response]",
                ));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        "XCLIENT" => Ok(Command::Xclient(attributes(arg)?)),
        "XREMOTEIP" => {
            if arg.is_empty() || arg.contains(' ') {
                return Err(Invalid::Syntax("expected XREMOTEIP address"));
            }
            Ok(Command::Xremoteip(arg.to_owned()))
        }
        "XSETCONTEXT" => Ok(Command::Xsetcontext(attributes(arg)?)),
        "XDUMPCONTEXT" => Ok(Command::Xdumpcontext),
        _ => Err(Invalid::Unknown(verb.chars().take(32).collect())),
    }
}

/// `FROM:` / `TO:`, case-insensitive, with optional spaces after the colon.
fn strip_keyword<'a>(arg: &'a str, kw: &str) -> Option<&'a str> {
    let head = arg.get(..kw.len())?;
    head.eq_ignore_ascii_case(kw)
        .then(|| arg[kw.len()..].trim_start())
}

/// `name=value` pairs separated by spaces, values in xtext.
fn attributes(arg: &str) -> Result<Vec<(String, String)>, Invalid> {
    let mut out = Vec::new();
    for pair in arg.split_ascii_whitespace() {
        let (k, v) = pair
            .split_once('=')
            .ok_or(Invalid::Syntax("expected name=value attributes"))?;
        if k.is_empty() {
            return Err(Invalid::Syntax("expected name=value attributes"));
        }
        let v = xtext::decode(v).map_err(|_| Invalid::Syntax("bad xtext in an attribute value"))?;
        out.push((k.to_owned(), v));
    }
    if out.is_empty() {
        return Err(Invalid::Syntax("expected name=value attributes"));
    }
    Ok(out)
}

fn path_and_params(rest: &str, reverse: bool) -> Result<(Path, Vec<Param>), Invalid> {
    if !rest.starts_with('<') {
        return Err(Invalid::Syntax("the address must be in angle brackets"));
    }
    let close = closing_bracket(rest).ok_or(Invalid::Syntax("unbalanced angle brackets"))?;
    let inner = &rest[1..close];
    let params = rest[close + 1..]
        .split_ascii_whitespace()
        .map(|p| {
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (p, None),
            };
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(Invalid::Syntax("bad ESMTP parameter"));
            }
            Ok(Param {
                keyword: k.to_ascii_uppercase(),
                value: v,
            })
        })
        .collect::<Result<_, _>>()?;
    if inner.is_empty() {
        return if reverse {
            Ok((Path::Null, params))
        } else {
            Err(Invalid::Address("an empty recipient"))
        };
    }
    if !reverse && inner.eq_ignore_ascii_case("postmaster") {
        return Ok((Path::Postmaster, params));
    }
    // An obsolete source route (`@a,@b:user@c`) is ignored, as RFC 5321 §4.1.2 allows.
    let mailbox = match inner.strip_prefix('@') {
        Some(_) => inner
            .split_once(':')
            .map(|(_, m)| m)
            .ok_or(Invalid::Address("a bad source route"))?,
        None => inner,
    };
    Ok((Path::Mailbox(parse_mailbox(mailbox)?), params))
}

/// The index of the `>` closing the path; `>` inside a quoted local part does not count.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_mailbox(s: &str) -> Result<Mailbox, Invalid> {
    let at = s
        .rfind('@')
        .ok_or(Invalid::Address("an address needs a domain"))?;
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if local.is_empty() || local.len() > 64 {
        return Err(Invalid::Address("a bad local part"));
    }
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    if !quoted
        && !local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:@\"".contains(&b))
    {
        return Err(Invalid::Address("a bad local part"));
    }
    let literal = domain.starts_with('[') && domain.ends_with(']');
    let host_ok = !domain.is_empty()
        && domain.len() <= 255
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !(literal || host_ok) {
        return Err(Invalid::Address("a bad domain"));
    }
    Ok(Mailbox {
        local: local.to_owned(),
        domain: domain.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbox(l: &str, d: &str) -> Path {
        Path::Mailbox(Mailbox {
            local: l.into(),
            domain: d.into(),
        })
    }

    #[test]
    fn mail_and_rcpt() {
        assert_eq!(
            parse(b"mail from:<a@b.example> SIZE=100 BODY=8BITMIME"),
            Ok(Command::Mail {
                from: mbox("a", "b.example"),
                params: vec![
                    Param {
                        keyword: "SIZE".into(),
                        value: Some("100".into())
                    },
                    Param {
                        keyword: "BODY".into(),
                        value: Some("8BITMIME".into())
                    },
                ],
            })
        );
        assert_eq!(
            parse(b"MAIL FROM: <>"),
            Ok(Command::Mail {
                from: Path::Null,
                params: vec![]
            })
        );
        assert_eq!(
            parse(b"RCPT TO:<@relay.example:\"x>y\"@c.example>"),
            Ok(Command::Rcpt {
                to: mbox("\"x>y\"", "c.example"),
                params: vec![]
            })
        );
        assert_eq!(
            parse(b"RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt {
                to: Path::Postmaster,
                params: vec![]
            })
        );
        assert!(matches!(parse(b"RCPT TO:<>"), Err(Invalid::Address(_))));
        assert!(matches!(parse(b"MAIL FROM:a@b"), Err(Invalid::Syntax(_))));
        assert!(matches!(
            parse(b"RCPT TO:<a@b c>"),
            Err(Invalid::Address(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<a@[1.2.3.4]>"),
            Ok(Command::Rcpt { .. })
        ));
    }

    #[test]
    fn x_commands_decode_xtext() {
        assert_eq!(
            parse(b"XCLIENT ADDR=192.0.2.1 NAME=host+2Eexample"),
            Ok(Command::Xclient(vec![
                ("ADDR".into(), "192.0.2.1".into()),
                ("NAME".into(), "host.example".into())
            ]))
        );
        assert!(parse(b"XSETCONTEXT nope").is_err());
        assert_eq!(parse(b"xdumpcontext"), Ok(Command::Xdumpcontext));
    }

    #[test]
    fn unknown_and_garbage() {
        assert_eq!(parse(b"FOO bar"), Err(Invalid::Unknown("FOO".into())));
        assert!(matches!(parse(b"HELO"), Err(Invalid::Syntax(_))));
        assert!(matches!(parse(b"NOOP \x00"), Err(Invalid::Syntax(_))));
        assert!(matches!(parse(&[0xff, 0xfe]), Err(Invalid::Syntax(_))));
        assert_eq!(
            parse(b"AUTH plain dGVzdA=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("dGVzdA==".into())
            })
        );
    }
}
