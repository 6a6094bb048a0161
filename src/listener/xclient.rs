//! Momentum's X-commands: XCLIENT (Postfix's protocol), XREMOTEIP, XSETCONTEXT and
//! XDUMPCONTEXT. The session reaches these only where `policy::x_command_permitted` allowed
//! the command for the client's effective scope.

use super::session::{ClientAddr, Session};
use crate::log_info;
use crate::reply::Reply;
use std::borrow::Cow;
use std::net::IpAddr;

/// Parses an XCLIENT/XREMOTEIP address: IPv4, `IPV6:addr` (Postfix's form), a bare IPv6, or
/// `[addr]`. `Ok(None)`: `[UNAVAILABLE]` / `[TEMPUNAVAIL]`.
fn parse_addr(v: &str) -> Result<Option<IpAddr>, ()> {
    if v.eq_ignore_ascii_case("[UNAVAILABLE]") || v.eq_ignore_ascii_case("[TEMPUNAVAIL]") {
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
        for (k, v) in &attrs {
            match k.to_ascii_uppercase().as_str() {
                "ADDR" => match parse_addr(v) {
                    Ok(ip) => client.ip = ip,
                    Err(()) => {
                        self.reject(501, (5, 5, 4), "Bad XCLIENT ADDR");
                        return;
                    }
                },
                "PORT" => match v.parse::<u16>() {
                    Ok(p) => client.port = Some(p),
                    Err(_) if v.starts_with('[') => client.port = None,
                    Err(_) => {
                        self.reject(501, (5, 5, 4), "Bad XCLIENT PORT");
                        return;
                    }
                },
                "NAME" => name = (!v.starts_with('[')).then(|| v.clone()),
                "HELO" => helo = (!v.starts_with('[')).then(|| v.clone()),
                "LOGIN" => login = (!v.starts_with('[')).then(|| v.clone()),
                "PROTO" | "DESTADDR" | "DESTPORT" => {}
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
            self.set_context("auth_user", &user);
            self.auth = Some(super::session::Authenticated {
                user,
                mechanism: crate::model::listener::Mechanism::Login,
            });
            self.update_relay_context();
        }
        if let Some(h) = helo {
            self.set_context("xclient_helo", &h);
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
    pub fn xsetcontext(&mut self, pairs: Vec<(String, String)>) {
        for (k, v) in &pairs {
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
