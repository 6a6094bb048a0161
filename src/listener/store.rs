//! DATA into the spool: the message is decoded as it arrives (`DotCodec::unstuffed`), written
//! to the spool behind our `Received:` header, and acknowledged only once the spool says it is
//! durable; then it is the queue's to deliver.
//!
//! A spool that cannot take the message (a full disk, a read-only or unwritable spool) gets the
//! client a temporary failure after its final dot (`452 4.3.1` for lack of room, `451 4.3.0`
//! otherwise), the reason in the log, and nothing half-written left behind; the session goes
//! on. Whatever the client sends after a failed write is still read to its end, so the reply
//! comes where the client expects it.

use super::data::DotCodec;
use super::session::{Flow, Session};
use crate::reply::Reply;
use crate::spool::{Envelope, ErrorClass, Origin, RcptState, Recipient, SpoolError};
use crate::{log_info, log_warning};
use std::time::SystemTime;

/// Content gathered before it is handed to the spool: few calls, bounded memory.
const WRITE_CHUNK: usize = 64 * 1024;

impl Session {
    pub async fn data_to_spool(&mut self) -> Flow {
        let Some(store) = self.rt.store.clone() else {
            self.txn = None;
            self.reply(
                451,
                (4, 3, 0),
                "Mail cannot be queued here, try again later",
            );
            return Flow::Continue;
        };
        let txn = self.txn.as_ref().expect("DATA checked there is one");
        let id = store.spool.next_id();
        let envelope = Envelope {
            id,
            received: SystemTime::now(),
            sender: txn.from.address(),
            recipients: txn
                .rcpts
                .iter()
                .map(|r| Recipient {
                    address: match &r.path {
                        super::command::Path::Postmaster => {
                            format!("postmaster@{}", self.scope.hostname)
                        }
                        p => p.address(),
                    },
                    notify: r.notify,
                    orcpt: r.orcpt.clone(),
                    state: RcptState::Pending,
                })
                .collect(),
            ret: txn.mail.ret,
            envid: txn.mail.envid.clone(),
            body: txn.mail.body,
            origin: Origin {
                client_ip: self.client.ip,
                client_port: self.client.port,
                helo: self.helo.as_ref().map(|h| h.name.clone()),
                client_name: self.client_name.clone(),
                auth_user: self.auth.as_ref().map(|a| a.user.clone()),
                session: self.id.clone(),
                listen: self.local.clone(),
                esmtp: self.helo.as_ref().is_some_and(|h| h.esmtp),
                tls: self.tls.is_some(),
            },
        };
        self.conn
            .send(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        let mut incoming = store.spool.begin(envelope);
        let mut out = self.received_header(&id.to_string()).into_bytes();
        let mut codec = DotCodec::unstuffed();
        let max = self.scope.max_message_size;
        let mut too_big = false;
        let mut failed: Option<SpoolError> = None;
        loop {
            // A client that leaves mid-message: dropping the incoming message removes whatever
            // of it reached the disk.
            let end = match self.data_piece(&mut codec, &mut out).await {
                Ok(end) => end,
                Err(flow) => return flow,
            };
            if !too_big && max.is_some_and(|m| codec.size > m) {
                too_big = true;
            }
            if too_big || failed.is_some() {
                out.clear();
            } else if end || out.len() >= WRITE_CHUNK {
                if let Err(e) = incoming.write(&out).await {
                    failed = Some(e);
                }
                out.clear();
            }
            if end {
                break;
            }
        }
        let txn = self.txn.take().expect("DATA checked there is one");
        if too_big {
            self.refuse_oversized();
            return Flow::Continue;
        }
        let result = match failed {
            Some(e) => Err(e),
            None => incoming.commit().await,
        };
        match result {
            Ok(queued) => {
                self.limits.accepted();
                self.messages += 1;
                self.rt.metrics.message_relayed(codec.size);
                log_info!(
                    "session {}: message {id} from={} rcpts={} size={} queued",
                    self.id,
                    txn.from,
                    txn.rcpts.len(),
                    codec.size
                );
                store.queue.submit(queued);
                self.reply(250, (2, 0, 0), format!("Ok: queued as {id}"));
            }
            Err(e) => {
                log_warning!(
                    "session {}: message from={} not queued: {e}",
                    self.id,
                    txn.from
                );
                match e.class() {
                    ErrorClass::Full => self.reply(
                        452,
                        (4, 3, 1),
                        "Insufficient system storage, try again later",
                    ),
                    _ => self.reply(451, (4, 3, 0), "Local error in processing, try again later"),
                }
            }
        }
        Flow::Continue
    }
}
