//! Momentum's X-commands: XCLIENT (Postfix's protocol), XREMOTEIP, XSETCONTEXT and
//! XDUMPCONTEXT. The session reaches these only where `policy::x_command_permitted` allowed
//! the command for the client's effective scope.

use super::session::{ClientAddr, Session};
use crate::log_info;
use crate::model::addr::is_hostname;
use crate::reply::Reply;
use std::borrow::Cow;
use std::net::IpAddr;

/// XSETCONTEXT bounds: a session's context is a few keys a trusted peer sets, not storage.
pub const MAX_CONTEXT_KEYS: usize = 64;
pub const MAX_CONTEXT_KEY: usize = 64;
pub const MAX_CONTEXT_VALUE: usize = 1024;

/// `[UNAVAILABLE]` / `[TEMPUNAVAIL]`: Postfix's words for an attribute the proxy does not know.
fn unavailable(v: &str) -> bool {
    v.eq_ignore_ascii_case("[UNAVAILABLE]") || v.eq_ignore_ascii_case("[TEMPUNAVAIL]")
}

/// A HELO name or LOGIN as XCLIENT may set it: no control characters (the values arrive
/// xtext-encoded, so `+0D+0A` would otherwise decode to a line break that ends up in our
/// `Received:` field and in the next hop's command stream), no white space in a HELO name,
/// and a sane length.
fn plain_value(v: &str, spaces: bool) -> bool {
    !v.is_empty()
        && v.len() <= 255
        && !v
            .chars()
            .any(|c| c.is_control() || (!spaces && c.is_whitespace()))
}

/// Parses an XCLIENT/XREMOTEIP address: IPv4, `IPV6:addr` (Postfix's form), a bare IPv6, or
/// `[addr]`. `Ok(None)`: `[UNAVAILABLE]` / `[TEMPUNAVAIL]`.
fn parse_addr(v: &str) -> Result<Option<IpAddr>, ()> {
    if unavailable(v) {
        return Ok(None);
    }
    let v = v
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(v);
    // `get` rather than slicing: the value is client input and byte 5 may fall inside a
    // multi-byte character.
    let v = match (v.get(..5), v.get(5..)) {
        (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("IPV6:") => rest,
        _ => v,
    };
    v.parse().map(Some).map_err(|_| ())
}

impl Session {
    /// XCLIENT: a trusted proxy tells who the real client is. On success the session starts
    /// afresh (`220` greeting, EHLO again) under the scope of the new address.
    pub fn xclient(&mut self, attrs: Vec<(String, String)>) {
        if self.txn.is_some() {
            self.reject(
                503,
                (5, 5, 1),
                "XCLIENT not permitted inside a mail transaction",
            );
            return;
        }
        let mut client = self.client;
        let mut name = self.client_name.clone();
        let mut helo = None;
        let mut login = None;
        // Every value is checked as Postfix checks it, and nothing is applied unless all are
        // good: a 501 leaves the session as it was.
        for (k, v) in &attrs {
            let bad = |what: &str| format!("Bad XCLIENT {what} value");
            match k.to_ascii_uppercase().as_str() {
                "ADDR" => match parse_addr(v) {
                    Ok(ip) => client.ip = ip,
                    Err(()) => {
                        self.reject(501, (5, 5, 4), bad("ADDR"));
                        return;
                    }
                },
                "PORT" => match v.parse::<u16>() {
                    Ok(p) => client.port = Some(p),
                    Err(_) if unavailable(v) => client.port = None,
                    Err(_) => {
                        self.reject(501, (5, 5, 4), bad("PORT"));
                        return;
                    }
                },
                "NAME" if unavailable(v) => name = None,
                "NAME" if is_hostname(v) => name = Some(v.clone()),
                "HELO" if unavailable(v) => helo = None,
                "HELO" if plain_value(v, false) => helo = Some(v.clone()),
                "LOGIN" if unavailable(v) => login = None,
                "LOGIN" if plain_value(v, true) => login = Some(v.clone()),
                "PROTO" if v.eq_ignore_ascii_case("SMTP") || v.eq_ignore_ascii_case("ESMTP") => {}
                "DESTADDR" if parse_addr(v).is_ok() => {}
                "DESTPORT" if unavailable(v) || v.parse::<u16>().is_ok() => {}
                what @ ("NAME" | "HELO" | "LOGIN" | "PROTO" | "DESTADDR" | "DESTPORT") => {
                    self.reject(501, (5, 5, 4), bad(what));
                    return;
                }
                other => {
                    self.reject(
                        501,
                        (5, 5, 4),
                        format!(
                            "Bad XCLIENT attribute {}",
                            other.chars().take(32).collect::<String>()
                        ),
                    );
                    return;
                }
            }
        }
        log_info!(
            "session {}: XCLIENT from {}: client is now {}",
            self.id,
            self.client,
            client
        );
        self.client_name = name;
        self.helo = None;
        self.auth = None;
        self.hop = None;
        self.set_client(client);
        // LOGIN: the proxy in front authenticated the user, as Postfix's XCLIENT means it.
        if let Some(user) = login {
            self.set_context("auth_status", "pass");
            self.set_context("auth_user", user.clone());
            self.auth = Some(super::session::Authenticated {
                user,
                mechanism: crate::model::listener::Mechanism::Login,
            });
            self.update_relay_context();
        }
        if let Some(h) = helo {
            self.set_context("xclient_helo", h);
        }
        self.conn.enhanced_codes = false;
        self.greet();
    }

    /// XREMOTEIP: the client says which address it is acting for; the listener's ACLs are
    /// applied again to that address (Momentum ticket #1860).
    pub fn xremoteip(&mut self, addr: &str) {
        let Ok(Some(ip)) = parse_addr(addr) else {
            self.reject(501, (5, 5, 4), "Bad XREMOTEIP address");
            return;
        };
        log_info!("session {}: XREMOTEIP from {}: {ip}", self.id, self.client);
        self.set_client(ClientAddr {
            ip: Some(ip),
            port: self.client.port,
        });
        self.reply(250, (2, 0, 0), format!("XREMOTEIP {ip} accepted"));
    }

    /// XSETCONTEXT k=v …: sets connection-context keys; a later value replaces an earlier one.
    /// Keys and values are bounded (count and size) and free of control characters: they are
    /// echoed by XDUMPCONTEXT and kept for the session's life. All pairs or none are applied.
    pub fn xsetcontext(&mut self, pairs: Vec<(String, String)>) {
        for (k, v) in &pairs {
            let key_ok = k.len() <= MAX_CONTEXT_KEY && k.bytes().all(|b| b.is_ascii_graphic());
            if !key_ok || v.len() > MAX_CONTEXT_VALUE || v.chars().any(char::is_control) {
                self.reject(
                    501,
                    (5, 5, 4),
                    format!(
                        "XSETCONTEXT keys are up to {MAX_CONTEXT_KEY} printable characters, values up to {MAX_CONTEXT_VALUE} bytes without control characters"
                    ),
                );
                return;
            }
        }
        let new_keys = pairs
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| {
                !self.context.iter().any(|(c, _)| c == k)
                    && !pairs[..*i].iter().any(|(p, _)| p == k)
            })
            .count();
        if self.context.len() + new_keys > MAX_CONTEXT_KEYS {
            self.reject(
                501,
                (5, 5, 4),
                format!("XSETCONTEXT: at most {MAX_CONTEXT_KEYS} context keys per session"),
            );
            return;
        }
        for (k, v) in pairs {
            self.set_context(k, v);
        }
        self.reply(250, (2, 0, 0), "XSETCONTEXT accepted");
    }

    /// XDUMPCONTEXT: `250-[connection] key value` lines, then `250 XDUMPCONTEXT complete`.
    pub fn xdumpcontext(&mut self) {
        let mut lines: Vec<Cow<'static, str>> = self
            .context
            .iter()
            .map(|(k, v)| Cow::Owned(format!("[connection] {k} {v}")))
            .collect();
        lines.push(Cow::Borrowed("XDUMPCONTEXT complete"));
        self.conn.send(&Reply {
            code: 250,
            enhanced: None,
            lines,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("192.0.2.1"),
            Ok(Some("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(
            parse_addr("IPV6:2001:db8::1"),
            Ok(Some("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(parse_addr("[UNAVAILABLE]"), Ok(None));
        assert!(parse_addr("example.com").is_err());
        // A multi-byte character across byte 5 (found by the session fuzz target).
        assert!(parse_addr("1992\u{6a6}@f.201").is_err());
    }
}
