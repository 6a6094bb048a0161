//! RCPT (RFC 5321 §4.1.1.3): the relay decision and the sending limits; then the recipient is
//! taken for the spool (with its DSN parameters), or, bridged, the upstream answers.

use super::command::{Param, Path};
use super::policy::{self, RcptGrant, RelayRight};
use super::session::{Rcpt, Session};
use crate::log_info;
use crate::metrics::Relay;
use crate::spool::Notify;

/// More recipients than RFC 5321 §4.5.3.1.8 requires a server to take (100), but a bound.
const MAX_RECIPIENTS: usize = 1000;

impl Session {
    pub async fn rcpt(&mut self, to: Path, params: Vec<Param>) {
        let Some(txn) = &self.txn else {
            self.reject(503, (5, 5, 1), "Need MAIL before RCPT");
            return;
        };
        let (notify, orcpt) = match self.rcpt_params(&params) {
            Ok(p) => p,
            Err((code, text)) => {
                self.reject(code, (5, 5, 4), text);
                return;
            }
        };
        if txn.rcpts.len() >= MAX_RECIPIENTS {
            self.reply(452, (4, 5, 3), "Too many recipients");
            return;
        }
        let relay_domains = self
            .rt
            .config
            .relay_domains
            .as_ref()
            .map(|d| d.value.as_slice());
        let grant = policy::rcpt_grant(self.can_relay(), relay_domains, &to);
        self.rt.metrics.relay(decision(grant, self.scope.relay));
        if grant.is_none() {
            log_info!(
                "session {}: relaying denied: client={} from={} to={}",
                self.id,
                self.client,
                txn.from,
                to
            );
            self.reject(550, (5, 7, 1), "relaying denied");
            return;
        }
        let relayed = txn.relayed;
        if !self.sending_limit_rcpt().await {
            return;
        }
        let rcpt = Rcpt {
            path: to,
            notify,
            orcpt,
        };
        if !relayed {
            // For the spool: the queue delivers it, and tells the sender if it cannot.
            self.limits.rcpt_answered(true);
            if let Some(txn) = self.txn.as_mut() {
                txn.rcpts.push(rcpt);
            }
            self.reply(250, (2, 1, 5), "Recipient OK");
            return;
        }
        let reply = self.hop_command(&format!("RCPT TO:{}", rcpt.path)).await;
        self.limits
            .rcpt_answered(reply.as_ref().is_some_and(|r| r.is_positive()));
        if let Some(r) = reply {
            if r.is_positive()
                && let Some(txn) = self.txn.as_mut()
            {
                txn.rcpts.push(rcpt);
            }
            self.send_relayed(r);
        }
    }

    /// NOTIFY and ORCPT (RFC 3461 §4.1, §4.2) where DSN was offered; nothing else.
    fn rcpt_params(&self, params: &[Param]) -> Result<(Notify, Option<String>), (u16, String)> {
        let dsn = self.dsn_offered();
        let mut notify = Notify::default();
        let mut orcpt = None;
        for p in params {
            match (p.keyword.as_str(), p.value.as_deref()) {
                ("NOTIFY", Some(v)) if dsn && notify.unspecified() => {
                    let mut flags = 0;
                    for word in v.split(',') {
                        flags |= match word.to_ascii_uppercase().as_str() {
                            "NEVER" => Notify::NEVER,
                            "SUCCESS" => Notify::SUCCESS,
                            "FAILURE" => Notify::FAILURE,
                            "DELAY" => Notify::DELAY,
                            _ => return Err((501, "Bad NOTIFY parameter".into())),
                        };
                    }
                    // NEVER stands alone (RFC 3461 §4.1).
                    if flags & Notify::NEVER != 0 && flags != Notify::NEVER {
                        return Err((501, "NOTIFY=NEVER stands alone".into()));
                    }
                    notify = Notify(flags);
                }
                ("ORCPT", Some(v)) if dsn && orcpt.is_none() => {
                    // `addr-type;xtext`, kept decoded for the bounce's Original-Recipient.
                    let decoded = v
                        .split_once(';')
                        .filter(|(t, _)| {
                            !t.is_empty()
                                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        })
                        .and_then(|(t, a)| crate::xtext::decode(a).ok().map(|a| format!("{t};{a}")))
                        .filter(|o| o.len() <= 500 && !o.chars().any(char::is_control))
                        .ok_or((501, "Bad ORCPT parameter".to_owned()))?;
                    orcpt = Some(decoded);
                }
                _ => return Err((555, format!("Unsupported parameter {}", p.keyword))),
            }
        }
        Ok((notify, orcpt))
    }
}

/// The option that decided a recipient, as the metrics name it.
fn decision(grant: Option<RcptGrant>, right: RelayRight) -> Relay {
    match (grant, right) {
        (None, _) => Relay::Denied,
        (Some(RcptGrant::Relay), RelayRight::OpenRelay) => Relay::OpenRelay,
        (Some(RcptGrant::Relay), RelayRight::RelayHost(_)) => Relay::RelayHosts,
        (Some(RcptGrant::Relay), RelayRight::None) => Relay::Auth,
        (Some(RcptGrant::RelayDomain), _) => Relay::RelayDomains,
        (Some(RcptGrant::Postmaster), _) => Relay::Postmaster,
    }
}
