//! RCPT (RFC 5321 §4.1.1.3): the relay decision, then the next hop's own answer.

use super::command::{Param, Path};
use super::policy::{self, RcptGrant, RelayRight};
use super::session::Session;
use crate::log_info;
use crate::metrics::Relay;

/// More recipients than RFC 5321 §4.5.3.1.8 requires a server to take (100), but a bound.
const MAX_RECIPIENTS: usize = 1000;

impl Session {
    pub async fn rcpt(&mut self, to: Path, params: Vec<Param>) {
        let Some(txn) = &self.txn else {
            self.reject(503, (5, 5, 1), "Need MAIL before RCPT");
            return;
        };
        if let Some(p) = params.first() {
            self.reject(
                555,
                (5, 5, 4),
                format!("Unsupported parameter {}", p.keyword),
            );
            return;
        }
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
        if !txn.relayed {
            // Permitted, but this session's mail has nowhere to go (`--check-config` rejects
            // configurations where that can happen, except for <postmaster>).
            self.reply(550, (5, 3, 5), "No route for this recipient");
            return;
        }
        if !self.sending_limit_rcpt().await {
            return;
        }
        let reply = self.hop_command(&format!("RCPT TO:{to}")).await;
        self.limits
            .rcpt_answered(reply.as_ref().is_some_and(|r| r.is_positive()));
        if let Some(r) = reply {
            if r.is_positive()
                && let Some(txn) = self.txn.as_mut()
            {
                txn.rcpts.push(to);
            }
            self.send_relayed(r);
        }
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
