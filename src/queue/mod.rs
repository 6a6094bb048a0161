//! The queue: what happens to a message after `250`.
//!
//! The listener stores a message in the [`spool`](crate::spool) and hands the result to the
//! queue manager through a [`QueueHandle`]. The manager (`manager.rs`) keeps one queue per
//! destination domain, opens connections through [`delivery`](crate::delivery) within
//! `Max_Outbound_Connections` and `Server_Max_Outbound_Connections`, feeds each connection
//! messages for its domain (`connection.rs`), records every recipient's outcome in the spool,
//! retries on Momentum's schedule (`schedule.rs`), bounces what fails (`bounce.rs`, `dsn.rs`)
//! and writes the mainlog (`mainlog.rs`). It runs on a thread of its own, so delivery never
//! takes time from the serving threads. The operator's commands reach it through the same
//! handle, from the control socket (`control.rs`).

pub mod bounce;
mod connection;
pub mod control;
pub mod dsn;
pub mod mainlog;
mod manager;
pub mod schedule;

pub use manager::Settings;

use crate::metrics::Metrics;
use crate::spool::{MessageId, Queued, Spool};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

/// One message as the operator sees it (`mailq`, Momentum's `showqueue`).
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: MessageId,
    pub arrival: SystemTime,
    pub size: u64,
    pub sender: String,
    /// Recipients still to be delivered.
    pub pending: Vec<String>,
    pub attempts: u32,
    /// When the next attempt is due; `None`: ready now, or being delivered.
    pub next_attempt: Option<SystemTime>,
    pub last_error: Option<String>,
    /// A connection is delivering it now.
    pub active: bool,
}

/// Which messages an operator's command applies to.
#[derive(Clone, Debug)]
pub enum Which {
    All,
    Ids(Vec<MessageId>),
}

/// What the operator asked for a message, and what came of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    Ok,
    NotFound,
    /// A connection is delivering it right now: ask again when the attempt is over.
    Busy,
}

pub(crate) enum Request {
    Submit(Queued),
    List(oneshot::Sender<Vec<Entry>>),
    Retry(Which, oneshot::Sender<Vec<(MessageId, Done)>>),
    /// `bounce`: fail the pending recipients and tell the sender; else delete silently.
    Remove {
        which: Which,
        bounce: bool,
        done: oneshot::Sender<Vec<(MessageId, Done)>>,
    },
    Reconfigure(Box<Settings>),
    /// Recipients whose failure could not be recorded (their bounce could not be stored):
    /// pending again, due at `at`. The message's envelope and content come along, for when
    /// the manager has let go of it.
    Requeue(Requeue),
    /// Stop starting deliveries; answer once those under way are over (or the deadline).
    Stop(tokio::time::Instant, oneshot::Sender<()>),
}

/// Recipients whose failure could not be recorded (their bounce could not be stored).
pub(crate) struct Requeue {
    /// The message's envelope and content, for when the manager has let go of it.
    pub envelope: Arc<crate::spool::Envelope>,
    pub content: Option<crate::spool::Content>,
    pub size: u64,
    /// The attempt's results that were recorded (deliveries).
    pub recorded: Vec<(usize, crate::spool::RcptState)>,
    /// Pending again.
    pub rcpts: Vec<usize>,
}

/// The way into the queue manager. Cheap to clone; usable from any thread or runtime.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Request>,
}

/// The manager's end of a [`QueueHandle`]: what [`start`] runs on.
pub struct Inbox(mpsc::UnboundedReceiver<Request>);

impl Inbox {
    /// The next message submitted, for a stand-in manager (the session fuzz target's); other
    /// requests are answered empty.
    pub async fn next_submitted(&mut self) -> Option<Queued> {
        loop {
            match self.0.recv().await? {
                Request::Submit(q) => return Some(q),
                Request::Stop(_, done) => {
                    let _ = done.send(());
                }
                _ => {}
            }
        }
    }

    /// A submitted message waiting now, without waiting for one.
    pub fn try_submitted(&mut self) -> Option<Queued> {
        while let Ok(r) = self.0.try_recv() {
            if let Request::Submit(q) = r {
                return Some(q);
            }
        }
        None
    }
}

impl QueueHandle {
    /// A handle and its manager's end: the handle can be given out (to the listener's
    /// runtime) before the manager starts.
    pub fn channel() -> (QueueHandle, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        (QueueHandle { tx }, Inbox(rx))
    }

    /// A message the spool holds now: to be delivered.
    pub fn submit(&self, queued: Queued) {
        let _ = self.tx.send(Request::Submit(queued));
    }

    pub async fn list(&self) -> Vec<Entry> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Request::List(tx));
        rx.await.unwrap_or_default()
    }

    /// Tries these messages now (`postqueue -f`, Momentum's `retry`).
    pub async fn retry(&self, which: Which) -> Vec<(MessageId, Done)> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Request::Retry(which, tx));
        rx.await.unwrap_or_default()
    }

    /// Removes messages: silently (`postsuper -d`), or with a bounce to the sender
    /// (Momentum's `fail`).
    pub async fn remove(&self, which: Which, bounce: bool) -> Vec<(MessageId, Done)> {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Request::Remove {
            which,
            bounce,
            done,
        });
        rx.await.unwrap_or_default()
    }

    /// Recipients whose failure could not be recorded, pending again from `at`.
    pub(crate) fn requeue(&self, r: Requeue) {
        let _ = self.tx.send(Request::Requeue(r));
    }

    /// New routing and queue options: they apply to queued mail from its next attempt.
    pub fn reconfigure(&self, settings: Settings) {
        let _ = self.tx.send(Request::Reconfigure(Box::new(settings)));
    }

    /// Stops the manager: no new deliveries; those under way may finish until `deadline`.
    /// What is not delivered stays in the spool for the next start.
    pub async fn stop(&self, deadline: tokio::time::Instant) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Stop(deadline, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the queue manager on a thread of its own with the messages the spool recovered,
/// serving `inbox` (whose handle it also uses to queue the bounces it makes).
pub fn start(
    inbox: Inbox,
    own: QueueHandle,
    spool: Arc<Spool>,
    recovered: Vec<Queued>,
    settings: Settings,
    metrics: Arc<Metrics>,
) -> Result<(), String> {
    let rx = inbox.0;
    std::thread::Builder::new()
        .name("queue".into())
        .spawn(move || {
            let tokio = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(t) => t,
                Err(e) => {
                    crate::log_error!("queue: cannot start its runtime: {e}");
                    return;
                }
            };
            tokio.block_on(manager::run(spool, recovered, settings, metrics, rx, own));
        })
        .map_err(|e| format!("cannot start the queue thread: {e}"))?;
    Ok(())
}
