//! The session's side of the sending limits (`crate::limits`): who is sending, as the limits
//! need to know it, and the reply when a limit refuses. Each phase calls one of these.

use super::policy::RelayRight;
use super::session::Session;
use crate::limits::Sender;
use crate::model::listener::Effective;

impl Session {
    /// MAIL: whether the limits let this sender start a message; if not, the reply is sent.
    pub async fn sending_limit_mail(&mut self) -> bool {
        let rt = self.rt.clone();
        let listener = rt.listener();
        let e = Effective::new(
            &rt.config.global,
            listener,
            &listener.listens[self.listen],
            self.client.ip,
        );
        let sender = Sender {
            user: self.auth.as_ref().map(|a| a.user.clone()),
            ip: self.client.ip,
            relay_block: match self.scope.relay {
                RelayRight::RelayHost(block) => Some(block),
                _ => None,
            },
        };
        match rt
            .limits
            .at_mail(&mut self.limits, sender, &e, &self.id)
            .await
        {
            Ok(()) => true,
            Err(r) => {
                self.conn.send(&r);
                false
            }
        }
    }

    /// RCPT: whether the limits let this message have one more recipient.
    pub async fn sending_limit_rcpt(&mut self) -> bool {
        let rt = self.rt.clone();
        match rt.limits.at_rcpt(&mut self.limits, &self.id).await {
            Ok(()) => true,
            Err(r) => {
                self.conn.send(&r);
                false
            }
        }
    }
}
