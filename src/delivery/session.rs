//! One outbound SMTP connection: greeting, EHLO (HELO when EHLO is refused), STARTTLS as
//! `TLS` asks, outbound XCLIENT with the original client's attributes, and QUIT. The mail
//! transactions themselves are in `transaction.rs`.

use super::Ctx;
use super::conn::{Broken, Conn};
use super::message::Origin;
use super::outcome::{Disposition, Failure, Outcome, Stage};
use crate::client::tls::server_name;
use crate::model::outbound::{DomainSettings, OutboundTls};
use crate::model::routing::OutboundXclient;
use crate::reply::{Enhanced, Reply};
use crate::xtext;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What the next hop's EHLO reply offered.
#[derive(Clone, Debug, Default)]
pub(super) struct Extensions {
    pub pipelining: bool,
    pub chunking: bool,
    pub starttls: bool,
    pub eightbitmime: bool,
    pub dsn: bool,
    pub smtputf8: bool,
    /// `SIZE n`: the largest message it takes; `Some(0)`: no stated limit.
    pub size: Option<u64>,
    /// `XCLIENT` with the attribute names it accepts.
    pub xclient: Option<Vec<String>>,
}

impl Extensions {
    fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "CHUNKING" => ext.chunking = true,
                "STARTTLS" => ext.starttls = true,
                "8BITMIME" => ext.eightbitmime = true,
                "DSN" => ext.dsn = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "XCLIENT" => {
                    ext.xclient = Some(words.map(str::to_ascii_uppercase).collect());
                }
                _ => {}
            }
        }
        ext
    }
}

/// An open, greeted connection to a next hop, ready for mail.
pub struct Outbound {
    pub(super) ctx: Arc<Ctx>,
    pub(super) settings: DomainSettings,
    pub(super) conn: Conn,
    /// The next hop's name (MX host, gateway), for the TLS server name and logs.
    pub(super) hop: String,
    pub(super) ehlo_name: String,
    pub(super) ext: Extensions,
    pub(super) tls: bool,
    /// STARTTLS failed here and `TLS_Ifavailable_Fallback` sent us on in clear text.
    pub(super) plain_only: bool,
    /// The XCLIENT attributes in force on this connection, if any were sent.
    pub(super) xclient: Option<String>,
    /// The attribute names XCLIENT accepted when the session began (Postfix stops offering
    /// XCLIENT once it is used).
    pub(super) xclient_offered: Option<Vec<String>>,
    /// A transaction was left open (MAIL accepted, no data): RSET before the next.
    pub(super) dirty: bool,
    /// False once the connection broke or the next hop said 421.
    pub(super) usable: bool,
    /// Messages the next hop accepted on this connection.
    pub(super) accepted: u32,
    /// Messages tried on this connection.
    pub(super) attempted: u32,
}

/// What became of XCLIENT before a message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Xclient {
    /// The message's client attributes are in force.
    Applied,
    /// Not offered, or refused under `ifavailable`: the message goes without.
    NotUsed,
    /// Another client's attributes are in force and cannot be replaced on this connection.
    NeedsNewConnection,
}

/// Why establishing failed, and whether to try the same address again without TLS.
pub(super) enum NotReady {
    Failed(Failure),
    RetryPlain(Failure),
}

impl Outbound {
    /// Connects to `addr` and makes the session ready: greeting, EHLO, STARTTLS per
    /// `settings.tls`, and the XCLIENT check.
    pub(super) async fn establish(
        ctx: Arc<Ctx>,
        settings: DomainSettings,
        hop: &str,
        addr: SocketAddr,
        ehlo_name: &str,
        plain_only: bool,
    ) -> Result<Outbound, NotReady> {
        let t = settings.timeouts;
        let fail = |outcome: Outcome| {
            NotReady::Failed(Failure {
                outcome,
                remote: Some(addr),
            })
        };
        let conn = Conn::connect(addr, t.connect).await.map_err(|e| {
            fail(Outcome::transient(
                Enhanced(4, 4, 1),
                format!("connect to {hop} [{addr}]: {e}"),
                Stage::NotConnected,
            ))
        })?;
        let mut out = Outbound {
            ctx,
            settings,
            conn,
            hop: hop.to_owned(),
            ehlo_name: ehlo_name.to_owned(),
            ext: Extensions::default(),
            tls: false,
            plain_only,
            xclient: None,
            xclient_offered: None,
            dirty: false,
            usable: true,
            accepted: 0,
            attempted: 0,
        };
        let greeting = out
            .conn
            .reply(t.ehlo)
            .await
            .map_err(|e| fail(out.broken(&e, Stage::Banner)))?;
        if greeting.code != 220 {
            return Err(fail(session_reply(&greeting, Stage::Banner)));
        }
        let name = out.ehlo_name.clone();
        out.hello(&name).await.map_err(fail)?;
        if out.settings.tls != OutboundTls::No && !plain_only {
            out.negotiate_tls(addr).await?;
        }
        out.xclient_offered = out.ext.xclient.clone();
        if out.settings.xclient == OutboundXclient::Required && out.ext.xclient.is_none() {
            return Err(fail(Outcome::transient(
                Enhanced(4, 7, 0),
                format!("XCLIENT = required, but {hop} [{addr}] does not offer XCLIENT"),
                Stage::AfterEhlo,
            )));
        }
        Ok(out)
    }

    /// EHLO, or HELO when the next hop refuses EHLO with a 5xx (RFC 5321 §4.1.4).
    pub(super) async fn hello(&mut self, name: &str) -> Result<(), Outcome> {
        let ehlo = self.command(&format!("EHLO {name}"), Stage::Ehlo).await?;
        if ehlo.is_positive() {
            self.ext = Extensions::from_ehlo(&ehlo);
            return Ok(());
        }
        if ehlo.is_permanent() {
            let helo = self.command(&format!("HELO {name}"), Stage::Ehlo).await?;
            if helo.is_positive() {
                self.ext = Extensions::default();
                return Ok(());
            }
            return Err(self.refused(&helo, Stage::Ehlo));
        }
        Err(self.refused(&ehlo, Stage::Ehlo))
    }

    /// STARTTLS (RFC 3207) and EHLO again inside TLS.
    async fn negotiate_tls(&mut self, addr: SocketAddr) -> Result<(), NotReady> {
        let required = self.settings.tls == OutboundTls::Required;
        let hop = self.hop.clone();
        let fail = |outcome: Outcome| Failure {
            outcome,
            remote: Some(addr),
        };
        if !self.ext.starttls {
            if required {
                return Err(NotReady::Failed(fail(Outcome::transient(
                    Enhanced(4, 7, 4),
                    format!("TLS = required, but {hop} [{addr}] does not offer STARTTLS"),
                    Stage::AfterEhlo,
                ))));
            }
            return Ok(());
        }
        let reply = self
            .command("STARTTLS", Stage::Starttls)
            .await
            .map_err(|o| NotReady::Failed(fail(o)))?;
        if reply.code != 220 {
            if required {
                return Err(NotReady::Failed(fail(
                    self.refused(&reply, Stage::Starttls),
                )));
            }
            return Ok(());
        }
        let Some(config) = self.ctx.tls.get(&self.settings) else {
            return Err(NotReady::Failed(fail(Outcome::transient(
                Enhanced(4, 7, 5),
                "no TLS client configuration for this destination",
                Stage::Starttls,
            ))));
        };
        let name = server_name(&hop).map_err(|e| {
            NotReady::Failed(fail(Outcome::transient(
                Enhanced(4, 7, 5),
                e,
                Stage::TlsHandshake,
            )))
        })?;
        if let Err(e) = self
            .conn
            .upgrade(config, name, self.settings.timeouts.ehlo)
            .await
        {
            self.usable = false;
            let outcome = Outcome::transient(
                Enhanced(4, 7, 5),
                format!("STARTTLS with {hop} [{addr}]: {e}"),
                Stage::TlsHandshake,
            );
            // Momentum's TLS_Ifavailable_Fallback: send in clear text at once instead.
            return Err(if !required && self.settings.tls_ifavailable_fallback {
                NotReady::RetryPlain(fail(outcome))
            } else {
                NotReady::Failed(fail(outcome))
            });
        }
        self.tls = true;
        let name = self.ehlo_name.clone();
        self.hello(&name)
            .await
            .map_err(|o| NotReady::Failed(fail(o)))
    }

    /// Sends XCLIENT with `origin`'s attributes, then EHLO with the client's own HELO name:
    /// the next hop records the name from the EHLO that follows XCLIENT (Postfix does), not
    /// the HELO attribute. Nothing is sent when the same attributes are already in force.
    pub(super) async fn apply_xclient(&mut self, origin: &Origin) -> Result<Xclient, Outcome> {
        let Some(offered) = self.xclient_offered.clone() else {
            return match self.settings.xclient {
                OutboundXclient::Required => Err(Outcome::transient(
                    Enhanced(4, 7, 0),
                    format!(
                        "XCLIENT = required, but {} does not offer XCLIENT",
                        self.hop
                    ),
                    Stage::Xclient,
                )),
                _ => Ok(Xclient::NotUsed),
            };
        };
        let line = xclient_line(origin, &offered);
        if self.xclient.as_deref() == Some(line.as_str()) {
            return Ok(Xclient::Applied);
        }
        // Postfix authorises XCLIENT by the client address in force: after one XCLIENT it
        // no longer offers it, and another client's mail needs a connection of its own.
        if self.ext.xclient.is_none() {
            return Ok(Xclient::NeedsNewConnection);
        }
        let reply = self.command(&line, Stage::Xclient).await?;
        if reply.code != 220 && reply.code != 250 {
            if !self.usable || self.settings.xclient == OutboundXclient::Required {
                return Err(self.refused(&reply, Stage::Xclient));
            }
            // `ifavailable`: the message goes without, unless another client's attributes
            // are still in force here.
            return Ok(if self.xclient.is_some() {
                Xclient::NeedsNewConnection
            } else {
                Xclient::NotUsed
            });
        }
        self.xclient = Some(line);
        self.dirty = false;
        let helo = client_helo(origin).unwrap_or(&self.ehlo_name).to_owned();
        self.hello(&helo).await?;
        Ok(Xclient::Applied)
    }

    /// Replaces this connection by a fresh one to the same address.
    pub(super) async fn reconnect(&mut self) -> Result<(), Outcome> {
        let fresh = Outbound::establish(
            self.ctx.clone(),
            self.settings.clone(),
            &self.hop,
            self.conn.peer,
            &self.ehlo_name,
            self.plain_only,
        )
        .await;
        match fresh {
            Ok(mut fresh) => {
                // The message's byte count spans both connections.
                fresh.conn.sent += self.conn.sent;
                let old = std::mem::replace(self, fresh);
                old.quit().await;
                Ok(())
            }
            Err(NotReady::Failed(f) | NotReady::RetryPlain(f)) => {
                self.usable = false;
                Err(f.outcome)
            }
        }
    }

    /// Sends one command and reads its reply; a 421 makes the connection unusable.
    pub(super) async fn command(&mut self, line: &str, stage: Stage) -> Result<Reply, Outcome> {
        let t = self.settings.timeouts.ehlo;
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        if let Err(e) = self.conn.write(&bytes, t).await {
            return Err(self.broken(&e, stage));
        }
        let reply = match self.conn.reply(t).await {
            Ok(r) => r,
            Err(e) => return Err(self.broken(&e, stage)),
        };
        if reply.code == 421 {
            self.usable = false;
        }
        Ok(reply)
    }

    /// The outcome for a connection that broke: temporary, and the connection is done.
    pub(super) fn broken(&mut self, e: &Broken, stage: Stage) -> Outcome {
        self.usable = false;
        Outcome::transient(
            Enhanced(4, 4, 2),
            format!("{} [{}]: {e}", self.hop, self.conn.peer),
            stage,
        )
    }

    /// A refusal outside a mail transaction (EHLO, STARTTLS, XCLIENT): it says nothing about
    /// the recipients, so it is temporary whatever its code; the connection is not used again.
    pub(super) fn refused(&mut self, reply: &Reply, stage: Stage) -> Outcome {
        self.usable = false;
        session_reply(reply, stage)
    }

    /// Whether another message may be sent on this connection.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// Messages the next hop accepted (for at least one recipient) on this connection, for
    /// `Max_Deliveries_Per_Connection`.
    pub fn accepted(&self) -> u32 {
        self.accepted
    }

    /// The next hop's address.
    pub fn remote(&self) -> SocketAddr {
        self.conn.peer
    }

    /// The next hop's name (MX host or configured host).
    pub fn hop(&self) -> &str {
        &self.hop
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The settings in force for the destination.
    pub fn settings(&self) -> &DomainSettings {
        &self.settings
    }

    /// Says QUIT, waits a little for the 221, and closes.
    pub async fn quit(mut self) {
        if self.usable {
            let limit = self.settings.timeouts.rset.min(Duration::from_secs(5));
            if self.conn.write(b"QUIT\r\n", limit).await.is_ok() {
                let _ = self.conn.reply(limit).await;
            }
        }
        self.conn.close().await;
    }
}

/// A reply that ends a session before any mail: temporary, whatever its code.
fn session_reply(reply: &Reply, stage: Stage) -> Outcome {
    let mut o = Outcome::from_reply(reply, stage);
    if o.disposition != Disposition::Transient {
        o.disposition = Disposition::Transient;
    }
    o
}

/// `XCLIENT` with the attributes of `origin` that the next hop accepts (Postfix's
/// XCLIENT_README): unknown values as `[UNAVAILABLE]`, text values in xtext.
pub(super) fn xclient_line(origin: &Origin, offered: &[String]) -> String {
    let mut line = String::from("XCLIENT");
    let mut add = |name: &str, value: String| {
        if offered.iter().any(|o| o == name) {
            line.push(' ');
            line.push_str(name);
            line.push('=');
            line.push_str(&value);
        }
    };
    const UNAVAILABLE: &str = "[UNAVAILABLE]";
    add(
        "ADDR",
        match origin.client_ip {
            Some(IpAddr::V6(ip)) => format!("IPV6:{ip}"),
            Some(ip) => ip.to_string(),
            None => UNAVAILABLE.into(),
        },
    );
    add(
        "PORT",
        origin
            .client_port
            .map_or_else(|| UNAVAILABLE.into(), |p| p.to_string()),
    );
    add(
        "NAME",
        origin
            .client_name
            .as_deref()
            .map_or_else(|| UNAVAILABLE.into(), xtext::encode),
    );
    add(
        "HELO",
        origin
            .helo
            .as_deref()
            .map_or_else(|| UNAVAILABLE.into(), xtext::encode),
    );
    add("PROTO", if origin.esmtp { "ESMTP" } else { "SMTP" }.into());
    if let Some(user) = &origin.auth_user {
        add("LOGIN", xtext::encode(user));
    }
    line
}

/// The client's HELO name if it can stand in an EHLO command as written: one word of
/// printable ASCII (the listener took whatever the client said).
fn client_helo(origin: &Origin) -> Option<&str> {
    origin
        .helo
        .as_deref()
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xclient_names_only_what_the_next_hop_accepts() {
        let origin = Origin {
            client_ip: Some("2001:db8::5".parse().unwrap()),
            client_port: Some(40000),
            helo: Some("client host".into()),
            esmtp: true,
            client_name: None,
            auth_user: Some("u+1@example.com".into()),
        };
        let all: Vec<String> = ["ADDR", "PORT", "NAME", "HELO", "PROTO", "LOGIN"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            xclient_line(&origin, &all),
            "XCLIENT ADDR=IPV6:2001:db8::5 PORT=40000 NAME=[UNAVAILABLE] HELO=client+20host PROTO=ESMTP LOGIN=u+2B1@example.com"
        );
        assert_eq!(
            xclient_line(&origin, &["ADDR".into()]),
            "XCLIENT ADDR=IPV6:2001:db8::5"
        );
        assert_eq!(
            client_helo(&origin),
            None,
            "a HELO with a space is not sent as EHLO"
        );
    }
}
