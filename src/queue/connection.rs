//! One outbound connection of the queue: opened for a destination domain with its first
//! message, it delivers what the manager gives it, one message after the other, and closes
//! after `Idle_Timeout` without work, at `Max_Deliveries_Per_Connection`, or when the next hop
//! ends the session. Each result goes back to the manager as it comes; work that arrives as
//! the connection closes is handed back, never dropped.

use crate::delivery::{self, Delivery, Failure, MessageOutcome, Notify, OutboundMessage};
use crate::spool::{self, Content, Envelope, MessageId, Spool};
use std::sync::Arc;
use tokio::sync::mpsc;

/// One message's recipients for one domain, to be tried on a connection.
pub struct Work {
    pub id: MessageId,
    pub domain: String,
    pub envelope: Arc<Envelope>,
    /// In memory when the spool kept it; read back from disk otherwise.
    pub content: Option<Content>,
    /// Indexes into the envelope's recipients.
    pub rcpts: Vec<usize>,
}

/// What a connection tells the manager.
pub enum Report {
    /// A message was tried: an outcome per recipient of `work`, or one failure for all of
    /// them (no next hop reachable, or the content unreadable).
    Tried {
        task: u64,
        work: Work,
        result: Result<MessageOutcome, Failure>,
        /// This connection's id, for the mainlog.
        connection: String,
        /// The name of the next hop that answered.
        hop: Option<String>,
        /// No next hop could be reached: the destination's other ready work would fail the
        /// same way now. (A failure of this message alone, its content unreadable, says
        /// nothing about the others.)
        unreachable: bool,
    },
    /// The connection is gone; `returned` is work it was given but did not try.
    Closed { task: u64, returned: Vec<Work> },
}

pub struct Connection {
    pub task: u64,
    pub delivery: Delivery,
    pub spool: Arc<Spool>,
    pub reports: mpsc::UnboundedSender<Report>,
}

impl Connection {
    pub async fn run(self, first: Work, mut more: mpsc::Receiver<Work>) {
        let connection = format!("{:X}-out-{:X}", crate::log::pid(), self.task);
        let mut outbound = match self
            .delivery
            .open(&first.domain, &first.envelope.sender)
            .await
        {
            Ok(o) => o,
            Err(failure) => {
                self.unreachable(first, failure, &connection);
                return self.close(more);
            }
        };
        let settings = outbound.settings().clone();
        let mut next = Some(first);
        let mut reused = false;
        while let Some(work) = next.take() {
            let msg = self.message(&work).await;
            let mut result = match &msg {
                Ok(msg) => Ok(outbound.deliver(msg).await),
                Err(failure) => Err(failure.clone()),
            };
            if let (Ok(msg), Ok(outcome)) = (&msg, &result)
                && reused
                && !outbound.is_usable()
                && lost_before_the_transaction(outcome)
            {
                // The connection kept for this destination died while it waited (its next
                // hop went away, and delivery could not connect to that address again). That
                // says nothing about the destination's other next hops: start afresh through
                // all of them, in order, as a first connection does. Nothing of the message
                // was sent, so nothing can arrive twice.
                match self
                    .delivery
                    .open(&work.domain, &work.envelope.sender)
                    .await
                {
                    Ok(fresh) => {
                        std::mem::replace(&mut outbound, fresh).quit().await;
                        result = Ok(outbound.deliver(msg).await);
                    }
                    Err(failure) => {
                        self.unreachable(work, failure, &connection);
                        break;
                    }
                }
            }
            reused = true;
            let hop = Some(outbound.hop().to_owned());
            self.tried(work, result, &connection, hop);
            let spent = settings
                .max_deliveries_per_connection
                .is_some_and(|max| outbound.accepted() >= max);
            if spent || !outbound.is_usable() {
                break;
            }
            next = match tokio::time::timeout(settings.idle_timeout, more.recv()).await {
                Ok(Some(w)) => Some(w),
                // The manager let go (stopping), or nothing came: done.
                Ok(None) | Err(_) => None,
            };
        }
        outbound.quit().await;
        self.close(more);
    }

    fn tried(
        &self,
        work: Work,
        result: Result<MessageOutcome, Failure>,
        connection: &str,
        hop: Option<String>,
    ) {
        let _ = self.reports.send(Report::Tried {
            task: self.task,
            work,
            result,
            connection: connection.to_owned(),
            hop,
            unreachable: false,
        });
    }

    /// `work` could not be tried: no next hop of its destination answered.
    fn unreachable(&self, work: Work, failure: Failure, connection: &str) {
        let _ = self.reports.send(Report::Tried {
            task: self.task,
            work,
            result: Err(failure),
            connection: connection.to_owned(),
            hop: None,
            unreachable: true,
        });
    }

    /// Hands back whatever was sent to this connection and not tried.
    fn close(self, mut more: mpsc::Receiver<Work>) {
        more.close();
        let mut returned = Vec::new();
        while let Ok(w) = more.try_recv() {
            returned.push(w);
        }
        let _ = self.reports.send(Report::Closed {
            task: self.task,
            returned,
        });
    }

    /// The message as delivery takes it. Content not kept in memory is read back (and
    /// checked) from the spool; a damaged file is a failure of this attempt.
    async fn message(&self, work: &Work) -> Result<OutboundMessage, Failure> {
        let content = match &work.content {
            Some(c) => c.clone(),
            None => self.spool.content(work.id).await.map_err(|e| Failure {
                outcome: delivery::Outcome::transient(
                    crate::reply::Enhanced(4, 3, 0),
                    format!("spool: {e}"),
                    delivery::Stage::NotConnected,
                ),
                remote: None,
            })?,
        };
        Ok(outbound_message(work, content))
    }
}

/// Whether a message's outcome says only that its connection was lost before the mail
/// transaction got anywhere: every recipient deferred while connecting, greeting, at EHLO or
/// TLS, or before the content went out (MAIL, RCPT).
fn lost_before_the_transaction(outcome: &MessageOutcome) -> bool {
    use delivery::{Disposition, Stage};
    !outcome.recipients.is_empty()
        && outcome.recipients.iter().all(|o| {
            o.disposition == Disposition::Transient
                && matches!(
                    o.stage,
                    Stage::NotConnected
                        | Stage::Idle
                        | Stage::Banner
                        | Stage::Ehlo
                        | Stage::AfterEhlo
                        | Stage::Starttls
                        | Stage::AfterStarttls
                        | Stage::TlsHandshake
                        | Stage::Rset
                        | Stage::AfterRset
                        | Stage::MailFrom
                        | Stage::AfterMailFrom
                        | Stage::RcptTo
                        | Stage::AfterRcptTo
                )
        })
}

/// The spool's envelope, as delivery is given it: only this domain's recipients.
pub fn outbound_message(work: &Work, content: Content) -> OutboundMessage {
    let e = &work.envelope;
    OutboundMessage {
        id: e.id.to_string(),
        sender: e.sender.clone(),
        recipients: work
            .rcpts
            .iter()
            .map(|&i| {
                let r = &e.recipients[i];
                delivery::Recipient {
                    address: r.address.clone(),
                    notify: notify(r.notify),
                    orcpt: r.orcpt.clone(),
                }
            })
            .collect(),
        ret: e.ret.map(|r| match r {
            spool::Ret::Full => delivery::Ret::Full,
            spool::Ret::Hdrs => delivery::Ret::Hdrs,
        }),
        envid: e.envid.clone(),
        body: match e.body {
            spool::Body::Unspecified => None,
            spool::Body::SevenBit => Some(delivery::Body::SevenBit),
            spool::Body::EightBitMime => Some(delivery::Body::EightBitMime),
        },
        origin: delivery::Origin {
            client_ip: e.origin.client_ip,
            client_port: e.origin.client_port,
            helo: e.origin.helo.clone(),
            esmtp: e.origin.esmtp,
            client_name: e.origin.client_name.clone(),
            auth_user: e.origin.auth_user.clone(),
        },
        content,
    }
}

fn notify(n: spool::Notify) -> Option<Notify> {
    if n.unspecified() {
        None
    } else if n.has(spool::Notify::NEVER) {
        Some(Notify::Never)
    } else {
        Some(Notify::On {
            success: n.has(spool::Notify::SUCCESS),
            failure: n.has(spool::Notify::FAILURE),
            delay: n.has(spool::Notify::DELAY),
        })
    }
}
