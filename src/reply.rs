//! SMTP replies (RFC 5321 §4.2), in both directions: the listener writes them to clients, the
//! SMTP client parses them from the next hop and the AUTH upstream, and a next hop's reply can
//! be passed to the client unchanged.

use std::borrow::Cow;
use std::fmt;

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Enhanced {
    /// Reads `2.1.0 ` at the start of `text`, returning the code and the rest of the text.
    pub fn split(text: &str) -> Option<(Enhanced, &str)> {
        let (code, rest) = match text.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (text, ""),
        };
        let mut parts = code.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some((Enhanced(class, subject, detail), rest))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Written after the code on every line when the client was offered ENHANCEDSTATUSCODES.
    pub enhanced: Option<Enhanced>,
    /// The text of each line, without code or enhanced code; never empty.
    pub lines: Vec<Cow<'static, str>>,
}

/// Why bytes from a server are not an SMTP reply.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// Not `ddd`, `ddd-text` or `ddd text`, or the lines disagree on the code.
    Malformed(String),
    /// More lines or bytes than any real server sends.
    TooLong,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed(line) => write!(f, "malformed reply line {line:?}"),
            ReplyError::TooLong => f.write_str("reply too long"),
        }
    }
}

/// Bounds on a parsed reply: an EHLO reply has a few dozen lines; anything far beyond is an
/// attack or a broken peer, and must not grow memory.
const MAX_LINE: usize = 4096;
const MAX_LINES: usize = 256;

impl Reply {
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (greeting, EHLO, 354, AUTH challenges).
    pub fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The lines joined by spaces, for logs.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Appends the reply in wire form. Enhanced codes are written only where the client was
    /// offered ENHANCEDSTATUSCODES (RFC 2034 §3), which is also what Postfix does.
    pub fn write_to(&self, out: &mut Vec<u8>, enhanced_codes: bool) {
        // Every reply of every session passes here: digits are pushed directly, no `format!`.
        let enhanced = self.enhanced.filter(|_| enhanced_codes);
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            push_decimal(out, self.code.into());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(e) = enhanced {
                push_decimal(out, e.0.into());
                out.push(b'.');
                push_decimal(out, e.1.into());
                out.push(b'.');
                push_decimal(out, e.2.into());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            // A text line never carries CR or LF of its own: a next hop's text is relayed, and
            // must not be able to forge extra reply lines.
            let text = line.as_bytes();
            if text.iter().any(|&b| b == b'\r' || b == b'\n') {
                out.extend(text.iter().filter(|&&b| b != b'\r' && b != b'\n'));
            } else {
                out.extend_from_slice(text);
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Takes the first complete reply off the front of `buf`, a connection's read buffer (what
    /// follows it stays for the next call). `Ok(None)`: more bytes are needed; before reading
    /// them, [`Reply::make_room`].
    pub fn take_from(buf: &mut Vec<u8>) -> Result<Option<Reply>, ReplyError> {
        let Some((reply, used)) = Reply::parse(buf)? else {
            return Ok(None);
        };
        buf.drain(..used);
        Ok(Some(reply))
    }

    /// Spare room in a read buffer for the rest of a reply. Replies are small: the first
    /// kilobyte serves most connections whole, and growing only when nearly full spares a
    /// reallocation per connection.
    pub fn make_room(buf: &mut Vec<u8>) {
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
    }

    /// Parses one complete reply from the start of `buf`. `Ok(None)`: more bytes are needed.
    /// On success, returns the reply and how many bytes it used. The enhanced code of the first
    /// line, if any, is split off every line that carries it.
    pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        let mut pos = 0;
        let mut code = None;
        let mut lines: Vec<String> = Vec::new();
        loop {
            let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
                if buf.len() - pos > MAX_LINE {
                    return Err(ReplyError::TooLong);
                }
                return Ok(None);
            };
            if nl > MAX_LINE {
                return Err(ReplyError::TooLong);
            }
            let raw = &buf[pos..pos + nl];
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            pos += nl + 1;
            // Valid UTF-8 (every real reply) is borrowed; the lossy path only for the rest.
            let line = match std::str::from_utf8(raw) {
                Ok(l) => Cow::Borrowed(l),
                Err(_) => String::from_utf8_lossy(raw),
            };
            let bad = || ReplyError::Malformed(line.chars().take(80).collect());
            let bytes = line.as_bytes();
            if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) || bytes[0] < b'2' {
                return Err(bad());
            }
            let this: u16 = line[..3].parse().map_err(|_| bad())?;
            if code.is_some_and(|c| c != this) {
                return Err(bad());
            }
            code = Some(this);
            let (more, text) = match bytes.get(3) {
                None => (false, ""),
                Some(b' ') => (false, &line[4..]),
                Some(b'-') => (true, &line[4..]),
                Some(_) => return Err(bad()),
            };
            lines.push(text.to_owned());
            if !more {
                break;
            }
            if lines.len() >= MAX_LINES {
                return Err(ReplyError::TooLong);
            }
        }
        let code = code.unwrap_or_default();
        let enhanced = lines
            .first()
            .and_then(|l| Enhanced::split(l))
            .map(|(e, _)| e)
            .filter(|e| u16::from(e.0) == code / 100);
        let lines = lines
            .into_iter()
            .map(|mut l| {
                // Strip the enhanced code in place: no second allocation per line.
                if let Some(e) = enhanced
                    && let Some((e2, rest)) = Enhanced::split(&l)
                    && e2 == e
                {
                    let cut = l.len() - rest.len();
                    l.drain(..cut);
                }
                Cow::Owned(l)
            })
            .collect();
        Ok(Some((
            Reply {
                code,
                enhanced,
                lines,
            },
            pos,
        )))
    }
}

/// `n` in decimal, without going through `fmt`.
fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text()),
            None => write!(f, "{} {}", self.code, self.text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multiline_with_enhanced_codes() {
        let buf = b"250-mx.example Hello\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\nextra";
        let (r, used) = Reply::parse(buf).unwrap().unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines.len(), 3);
        assert_eq!(&buf[used..], b"extra");
        let (r, _) = Reply::parse(b"550 5.7.1 relaying denied\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.enhanced, Some(Enhanced(5, 7, 1)));
        assert_eq!(r.lines, vec!["relaying denied"]);
        let mut out = Vec::new();
        r.write_to(&mut out, true);
        assert_eq!(out, b"550 5.7.1 relaying denied\r\n");
        out.clear();
        r.write_to(&mut out, false);
        assert_eq!(out, b"550 relaying denied\r\n");
    }

    #[test]
    fn incomplete_and_garbage() {
        assert_eq!(Reply::parse(b"250-a\r\n250 b"), Ok(None));
        assert!(Reply::parse(b"hello\r\n").is_err());
        assert!(Reply::parse(b"250-a\r\n251 b\r\n").is_err());
        assert!(Reply::parse(b"099 x\r\n").is_err());
        assert_eq!(
            Reply::parse(&vec![b'2'; MAX_LINE + 10]),
            Err(ReplyError::TooLong)
        );
    }

    #[test]
    fn codes_are_written_as_written_in_every_line() {
        let r = Reply {
            code: 250,
            enhanced: Some(Enhanced(2, 10, 0)),
            lines: vec!["first".into(), "".into(), "last".into()],
        };
        let mut out = Vec::new();
        r.write_to(&mut out, true);
        assert_eq!(
            out,
            b"250-2.10.0 first\r\n250-2.10.0\r\n250 2.10.0 last\r\n"
        );
        let mut out = Vec::new();
        Reply::plain(0, "odd").write_to(&mut out, true);
        assert_eq!(out, b"0 odd\r\n");
    }

    #[test]
    fn relayed_text_cannot_forge_lines() {
        let r = Reply::plain(250, "ok\r\n250 forged");
        let mut out = Vec::new();
        r.write_to(&mut out, false);
        assert_eq!(out, b"250 ok250 forged\r\n");
    }
}
