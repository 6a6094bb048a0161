//! MAIL (RFC 5321 §4.1.1.2): starts a transaction, for the spool or, for a session bridged to
//! its AUTH upstream, at the upstream too.

use super::command::{Param, Path};
use super::session::{MailParams, Session, Transaction};
use crate::spool::{Body, Ret};

/// RFC 3461 §4.4: an ENVID is at most 100 characters.
const MAX_ENVID: usize = 100;

impl Session {
    pub async fn mail(&mut self, from: Path, params: Vec<Param>) {
        if self.txn.is_some() {
            self.reject(503, (5, 5, 1), "Nested MAIL command");
            return;
        }
        let mail = match self.mail_params(&params) {
            Ok(m) => m,
            Err((code, text)) => {
                self.reject(code, (5, 5, 4), text);
                return;
            }
        };
        if let (Some(n), Some(max)) = (mail.size, self.scope.max_message_size)
            && n > max
        {
            self.refuse_oversized();
            return;
        }
        if !self.sending_limit_mail().await {
            return;
        }
        let txn = Transaction {
            from,
            mail,
            rcpts: Vec::new(),
            relayed: false,
        };
        if self.bridged() {
            self.mail_to_upstream(txn).await;
        } else {
            self.txn = Some(txn);
            self.reply(250, (2, 1, 0), "Sender OK");
        }
    }

    /// The parameters this server offers: SIZE, BODY, AUTH, and the DSN extension's RET and
    /// ENVID where DSN was offered.
    fn mail_params(&self, params: &[Param]) -> Result<MailParams, (u16, String)> {
        let dsn = self.dsn_offered();
        let mut m = MailParams::default();
        for p in params {
            match (p.keyword.as_str(), p.value.as_deref()) {
                ("SIZE", Some(v)) => {
                    m.size = Some(v.parse().map_err(|_| (501, "Bad SIZE parameter".into()))?)
                }
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => m.body = Body::SevenBit,
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                    m.body = Body::EightBitMime
                }
                // RFC 4954 §5: accepted; not passed on, since this server does not vouch for
                // the identity the client claims the message was submitted by.
                ("AUTH", Some(_)) => {}
                ("RET", Some(v)) if dsn && m.ret.is_none() => {
                    m.ret = Some(match v.to_ascii_uppercase().as_str() {
                        "FULL" => Ret::Full,
                        "HDRS" => Ret::Hdrs,
                        _ => return Err((501, "Bad RET parameter".into())),
                    })
                }
                ("ENVID", Some(v)) if dsn && m.envid.is_none() => {
                    let envid = crate::xtext::decode(v)
                        .ok()
                        .filter(|e| e.len() <= MAX_ENVID && !e.chars().any(char::is_control))
                        .ok_or((501, "Bad ENVID parameter".to_owned()))?;
                    m.envid = Some(envid);
                }
                _ => return Err((555, format!("Unsupported parameter {}", p.keyword))),
            }
        }
        Ok(m)
    }

    /// DSN (RFC 3461) is offered where mail goes to the spool, whose queue honours NOTIFY
    /// and RET; the bridge passes the upstream's own replies and nothing more.
    pub fn dsn_offered(&self) -> bool {
        self.rt.store.is_some() && !self.rt.bridges_to_upstream()
    }
}
