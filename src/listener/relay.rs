//! The next hop for accepted mail: the `Gateway`, else the `Routes` in order of preference, else
//! the AUTH upstream session that accepted the client's credentials (kept open after 235).
//!
//! Mail is relayed synchronously: the client's MAIL, RCPT and end-of-DATA replies are the next
//! hop's, so nothing is acknowledged that the next hop has not taken. A next hop that cannot be
//! reached gives `451 4.4.1`, and the client retries later.

use super::session::Session;
use super::xtext;
use crate::client::SmtpClient;
use crate::log_warning;
use crate::metrics::NextHop;
use crate::model::routing::{DEFAULT_REMOTE_PORT, OutboundXclient, Target};
use crate::reply::{Enhanced, Reply};
use std::net::IpAddr;
use std::time::Duration;

/// Bound on each wait for the next hop. RFC 5321 §4.5.3.2 allows a client minutes per reply;
/// a relay that holds its own client meanwhile should give up sooner and let it retry.
pub const NEXT_HOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the session has a next hop to talk to.
pub enum HopState {
    Ready,
    /// No Gateway/Routes and no AUTH upstream: nowhere to send mail.
    None,
    /// Configured, but no next hop could be reached: the reply to send.
    Unavailable(Reply),
}

pub fn unavailable() -> Reply {
    Reply::new(
        451,
        Enhanced(4, 4, 1),
        "Next hop unavailable, try again later",
    )
}

impl Session {
    /// Makes sure `self.hop` is a greeted, EHLO'd connection to the next hop.
    pub async fn ensure_hop(&mut self) -> HopState {
        if self.hop.is_some() {
            return HopState::Ready;
        }
        let routing = &self.rt.config.routing;
        let port = routing
            .outbound
            .remote_smtp_port
            .as_ref()
            .map_or(DEFAULT_REMOTE_PORT, |p| p.value);
        // The relay cannot deliver by MX: `__mx__` entries wait for the queue.
        let targets: Vec<_> = routing
            .gateway
            .iter()
            .map(|g| g.value.with_port(port))
            .chain(routing.routes.iter().flat_map(|r| {
                r.value.iter().filter_map(move |r| match &r.target {
                    Target::Host(h) => Some(h.with_port(port)),
                    Target::Mx => None,
                })
            }))
            .collect();
        if targets.is_empty() {
            // An authenticated session whose upstream connection is gone has lost its route.
            return if self.auth.is_some() {
                HopState::Unavailable(unavailable())
            } else {
                HopState::None
            };
        }
        let xclient = routing.xclient;
        for target in targets {
            let opened = self.open_hop(&target, xclient).await;
            // Ready (greeted, EHLO'd) counts as 2xx; anything short of it as an error.
            let ready = opened.as_ref().ok().map(|_| 220);
            self.rt.metrics.next_hop(NextHop::Connect, ready);
            match opened {
                Ok(hop) => {
                    self.hop = Some(hop);
                    return HopState::Ready;
                }
                Err(why) => log_warning!("session {}: next hop {target}: {why}", self.id),
            }
        }
        HopState::Unavailable(unavailable())
    }

    /// Sends one envelope command to the next hop and returns its reply for the caller to pass
    /// on. A `421` closes the next hop. No next hop, or one that failed, gets the client
    /// `451 4.4.1` here, and `None`.
    pub async fn hop_command(&mut self, line: &str) -> Option<Reply> {
        let Some(hop) = self.hop.as_mut() else {
            self.conn.send(&unavailable());
            return None;
        };
        let result = hop.command(line).await;
        let code = result.as_ref().ok().map(|r| r.code);
        self.rt.metrics.next_hop(NextHop::of_command(line), code);
        match result {
            Ok(r) => {
                if r.code == 421 {
                    self.abandon_hop().await;
                }
                Some(r)
            }
            Err(e) => {
                let verb = line.split(' ').next().unwrap_or(line);
                log_warning!("session {}: next hop {verb}: {e}", self.id);
                self.abandon_hop().await;
                self.conn.send(&unavailable());
                None
            }
        }
    }

    async fn open_hop(
        &self,
        target: &crate::model::addr::HostPort,
        xclient: OutboundXclient,
    ) -> Result<SmtpClient, String> {
        let (mut hop, greeting) = SmtpClient::connect(target, NEXT_HOP_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if greeting.code != 220 {
            return Err(format!("greeting {greeting}"));
        }
        let name = self.rt.hostname.to_string();
        let r = hop.ehlo(&name).await.map_err(|e| e.to_string())?;
        if !r.is_positive() {
            return Err(format!("EHLO {r}"));
        }
        if xclient == OutboundXclient::No {
            return Ok(hop);
        }
        let Some(offered) = hop.extension("XCLIENT").map(str::to_owned) else {
            if xclient == OutboundXclient::Required {
                return Err("XCLIENT = required, but the next hop does not offer XCLIENT".into());
            }
            return Ok(hop);
        };
        let line = self.xclient_line(&offered);
        let r = hop.command(&line).await.map_err(|e| e.to_string())?;
        if r.code != 220 {
            return Err(format!("XCLIENT {r}"));
        }
        // XCLIENT starts a fresh session at the next hop, and Postfix takes the HELO name from
        // the EHLO that follows, not from XCLIENT's HELO attribute: say the client's own name
        // there, or its Received: line and HELO checks would see ours.
        let name = self.helo.as_ref().map_or(name, |h| h.name.clone());
        let r = hop.ehlo(&name).await.map_err(|e| e.to_string())?;
        if !r.is_positive() {
            return Err(format!("EHLO after XCLIENT {r}"));
        }
        Ok(hop)
    }

    /// `XCLIENT` with the original client's attributes, those the next hop listed.
    fn xclient_line(&self, offered: &str) -> String {
        let offers = |a: &str| {
            offered
                .split_ascii_whitespace()
                .any(|o| o.eq_ignore_ascii_case(a))
        };
        let mut line = String::from("XCLIENT");
        let mut add = |name: &str, value: String| {
            if offers(name) {
                line.push_str(&format!(" {name}={value}"));
            }
        };
        add(
            "ADDR",
            match self.client.ip {
                Some(IpAddr::V6(ip)) => format!("IPV6:{ip}"),
                Some(ip) => ip.to_string(),
                None => "[UNAVAILABLE]".into(),
            },
        );
        add(
            "PORT",
            self.client
                .port
                .map_or_else(|| "[UNAVAILABLE]".into(), |p| p.to_string()),
        );
        add(
            "NAME",
            self.client_name
                .as_deref()
                .map_or_else(|| "[UNAVAILABLE]".into(), xtext::encode),
        );
        if let Some(h) = &self.helo {
            add("HELO", xtext::encode(&h.name));
            add("PROTO", if h.esmtp { "ESMTP" } else { "SMTP" }.into());
        }
        if let Some(a) = &self.auth {
            add("LOGIN", xtext::encode(&a.user));
        }
        line
    }
}
