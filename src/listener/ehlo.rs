//! The greeting and HELO/EHLO (RFC 5321 §4.1.1.1), with the extensions of the client's
//! effective scope.

use super::policy::AuthOffer;
use super::session::{Helo, Session};
use crate::date::rfc5322_date;
use crate::reply::Reply;
use std::borrow::Cow;
use std::time::SystemTime;

impl Session {
    /// `220 host ESMTP ecelerity …`: the shape of Momentum's greeting, which monitoring
    /// scripts match on.
    pub fn greet(&mut self) {
        let text = format!(
            "{} ESMTP ecelerity-compatible smtp-auth-proxy {} {}",
            self.scope.hostname,
            env!("CARGO_PKG_VERSION"),
            rfc5322_date(SystemTime::now())
        );
        self.conn.send(&Reply::plain(220, text));
    }

    pub async fn helo(&mut self, name: String, esmtp: bool) {
        // EHLO and HELO reset the transaction (RFC 5321 §4.1.4).
        self.reset_transaction().await;
        let mut lines: Vec<Cow<'static, str>> = vec![Cow::Owned(format!(
            "{} says {} to {}",
            self.scope.hostname,
            if esmtp { "EHLO" } else { "HELO" },
            self.client
                .ip
                .map_or_else(|| "unix".to_owned(), |ip| ip.to_string())
        ))];
        if esmtp {
            lines.extend(self.extension_lines());
        }
        self.conn.enhanced_codes = esmtp && self.scope.extensions.enhanced_status_codes;
        self.helo = Some(Helo { name, esmtp });
        self.conn.send(&Reply {
            code: 250,
            enhanced: None,
            lines,
        });
    }

    /// The EHLO keywords for this client, in Momentum's order and form: PIPELINING and
    /// 8BITMIME always; AUTH once as the legacy `AUTH=…` and once as `AUTH …`, with every
    /// mechanism on one line; no trailing space on keywords without arguments.
    pub fn extension_lines(&self) -> Vec<Cow<'static, str>> {
        let ext = &self.scope.extensions;
        // Fixed keywords are borrowed: only the lines with arguments are built per session.
        let mut lines: Vec<Cow<'static, str>> = vec!["PIPELINING".into(), "8BITMIME".into()];
        if ext.enhanced_status_codes {
            lines.push("ENHANCEDSTATUSCODES".into());
        }
        if self.dsn_offered() {
            lines.push("DSN".into());
        }
        if let Some(max) = self.scope.max_message_size {
            lines.push(format!("SIZE {max}").into());
        }
        for (on, name) in [
            (ext.xremoteip, "XREMOTEIP"),
            (ext.xdumpcontext, "XDUMPCONTEXT"),
            (ext.xsetcontext, "XSETCONTEXT"),
        ] {
            if on {
                lines.push(name.into());
            }
        }
        if ext.xclient {
            lines.push("XCLIENT ADDR NAME PORT PROTO HELO LOGIN DESTADDR DESTPORT".into());
        }
        let offer = self.auth_offer();
        if offer == AuthOffer::Offered && self.auth.is_none() {
            let names: Vec<&str> = self
                .scope
                .mechanisms
                .iter()
                .map(|m| m.mechanism.name())
                .collect();
            let names = names.join(" ");
            lines.push(format!("AUTH={names}").into());
            lines.push(format!("AUTH {names}").into());
        }
        if self.scope.starttls_available() && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        lines
    }
}
