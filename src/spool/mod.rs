//! The durable spool: a message is on disk, file data and directory entry synced, before its
//! client hears `250`, and stays there until every recipient is final.
//!
//! One file per message in one flat directory, `Spoolbase/queue/`, named by the message id.
//! The file holds all that delivery and reporting need: the envelope, the content exactly as
//! it will be sent, and a trailer (length and CRC-32) that makes a half-written or damaged file
//! recognisable; the recipients' states and retry metadata sit at fixed offsets outside the
//! checksum and are updated in place (`format` has the layout).
//!
//! Syncs are gathered: one thread commits every message waiting at once, `fdatasync` for each
//! file and one `fsync` of the directory for the whole batch (`commit`). At start, `open`
//! queues every complete file again and moves incomplete or corrupt ones to
//! `Spoolbase/corrupt/`. A delivered message's file is kept for a later one (`spare`).
//!
//! Layering: the spool imports nothing above it; the listener stores through [`Incoming`], the
//! queue manager updates and removes, delivery reads [`Envelope`] and content.

mod commit;
mod content;
mod counters;
mod envelope;
mod error;
mod format;
mod id;
mod incoming;
mod inplace;
mod read;
mod recover;
mod spare;
mod syncpool;

pub use content::Content;
pub use counters::SpoolCounters;
pub use envelope::{
    AttemptMeta, Body, Envelope, MAX_LAST_ERROR, Notify, Origin, RcptState, Recipient, Ret,
};
pub use error::{Damage, ErrorClass, SpoolError};
pub use id::{BadMessageId, MessageId};
pub use incoming::{Incoming, Queued};
pub use recover::{ListEntry, Recovered, SetAside, list};
pub use spare::SPARE_DIR;

use commit::{Committer, Done, Job};
use content::Budget;
use counters::Counters;
use id::IdGenerator;
use read::{Check, ReadError};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;

/// This package's default `Spoolbase` (Momentum's is `/var/spool/ecelerity`).
pub const DEFAULT_SPOOLBASE: &str = "/var/spool/smtp-auth-proxy";
/// The messages, one file each, under the Spoolbase.
pub const QUEUE_DIR: &str = "queue";
/// Files recovery would not deliver, under the Spoolbase.
pub const CORRUPT_DIR: &str = "corrupt";
/// Held (`flock`) by the process that owns the spool.
const LOCK_FILE: &str = "lock";

/// How the spool uses memory.
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// Content bytes a message keeps in memory while it is received; beyond this, the rest
    /// goes to its file as it arrives. Default 1 MiB.
    pub memory_threshold: usize,
    /// Total bytes of committed messages' content handed to the queue manager in memory
    /// ([`Queued::content`]); past this, delivery reads content back from disk. Default 64 MiB.
    pub held_content_cap: usize,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            memory_threshold: 1 << 20,
            held_content_cap: 64 << 20,
        }
    }
}

/// The spool of one daemon. Shared (`Arc`) by the serving threads and the queue manager.
pub struct Spool {
    base: PathBuf,
    queue: PathBuf,
    options: SpoolOptions,
    ids: IdGenerator,
    counters: Arc<Counters>,
    budget: Arc<Budget>,
    /// Declared before the lock: dropping the spool finishes its commits, then unlocks.
    committer: Committer,
    _lock: File,
}

impl Spool {
    /// Opens (creating if need be) the spool at `spoolbase`, takes it over (one process per
    /// spool: `Spoolbase/lock`), and recovers it: every complete message comes back in
    /// [`Recovered::queued`], in arrival order, with its recipients' states and retry
    /// metadata; incomplete and corrupt files are moved to `Spoolbase/corrupt/`, logged, and
    /// listed in [`Recovered::set_aside`]. Blocking: call it before serving.
    pub fn open(
        spoolbase: &Path,
        options: SpoolOptions,
    ) -> Result<(Arc<Spool>, Recovered), SpoolError> {
        let queue = spoolbase.join(QUEUE_DIR);
        let corrupt = spoolbase.join(CORRUPT_DIR);
        let mut created = false;
        for dir in [spoolbase, &queue, &corrupt] {
            if !dir.is_dir() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
                    .map_err(|e| SpoolError::io("create directory", dir, e))?;
                created = true;
            }
        }
        if created {
            sync_dir(spoolbase)?;
        }
        let lock_path = spoolbase.join(LOCK_FILE);
        // Opened read-only (flock needs no more), so that holding it does not keep the file
        // system from being remounted read-only under a running daemon.
        if !lock_path.exists() {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(|e| SpoolError::io("create", &lock_path, e))?;
        }
        let lock = File::open(&lock_path).map_err(|e| SpoolError::io("open", &lock_path, e))?;
        // SAFETY: a plain system call on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                SpoolError::Locked(lock_path)
            } else {
                SpoolError::io("lock", &lock_path, e)
            });
        }
        let budget = Arc::new(Budget::new(options.held_content_cap));
        let scan = recover::recover(&queue, &corrupt, options.memory_threshold as u64, &budget)?;
        let dir = File::open(&queue).map_err(|e| SpoolError::io("open", &queue, e))?;
        let counters = Arc::new(Counters::default());
        let spares = spare::Spares::open(spoolbase)
            .map_err(|e| SpoolError::io("open", spoolbase.join(SPARE_DIR), e))?;
        let committer = Committer::start(dir, queue.clone(), spares, counters.clone())
            .map_err(|e| SpoolError::io("start committer for", &queue, e))?;
        let spool = Spool {
            base: spoolbase.to_path_buf(),
            queue,
            options,
            ids: IdGenerator::starting_after(scan.max_id),
            counters,
            budget,
            committer,
            _lock: lock,
        };
        Ok((Arc::new(spool), scan.recovered))
    }

    /// The directory the spool was opened at.
    pub fn spoolbase(&self) -> &Path {
        &self.base
    }

    /// A new message id: unique, later than every id before it. The listener takes one when
    /// the message's DATA starts (its `Received:` header names it) and puts it in the
    /// [`Envelope`] it passes to [`begin`](Spool::begin).
    pub fn next_id(&self) -> MessageId {
        self.ids.next()
    }

    /// Starts storing a message. Nothing touches the disk until the content passes the memory
    /// threshold or [`Incoming::commit`] is called.
    pub fn begin(self: &Arc<Self>, envelope: Envelope) -> Incoming {
        Incoming::new(self.clone(), envelope)
    }

    /// Records the outcome of a delivery attempt: the recipients' new states (by index into
    /// [`Envelope::recipients`]) and the retry metadata, durably (group-committed
    /// `fdatasync`) before it returns.
    pub async fn update(
        &self,
        id: MessageId,
        states: &[(usize, RcptState)],
        meta: &AttemptMeta,
    ) -> Result<(), SpoolError> {
        let states = states.to_vec();
        let meta = Some(meta.clone());
        self.run(|done| Job::Update {
            path: self.path_of(id),
            id,
            states,
            meta,
            done,
        })
        .await
    }

    /// Records retry metadata only, without a sync: after a crash it may read as the previous
    /// attempt's, which costs at most an early retry.
    pub async fn update_meta(&self, id: MessageId, meta: &AttemptMeta) -> Result<(), SpoolError> {
        let path = self.path_of(id);
        let meta = meta.clone();
        blocking(move || inplace::write(&path, id, &[], Some(&meta)).map(drop)).await
    }

    /// Removes a message whose recipients are all final: its file leaves the queue directory
    /// (kept as a spare). The directory sync that makes that durable is the next group
    /// commit's, or its own within 100 ms: a machine crash before it brings the message back
    /// (a duplicate, never a loss).
    pub async fn remove(&self, id: MessageId) -> Result<(), SpoolError> {
        self.run(|done| Job::Remove {
            path: self.path_of(id),
            id,
            done,
        })
        .await
    }

    /// Reads a message's content back (every byte checked against its checksum), for
    /// delivery when [`Queued::content`] was not kept in memory.
    pub async fn content(&self, id: MessageId) -> Result<Content, SpoolError> {
        let path = self.path_of(id);
        blocking(
            move || match read::read(&path, Check::Full { keep: u64::MAX }) {
                Ok(s) => {
                    let c = s.content.unwrap_or_default();
                    let n = c.len();
                    Ok(Content::new(c, 0, n, None))
                }
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                    Err(SpoolError::NotFound(id))
                }
                Err(ReadError::Io(e)) => Err(SpoolError::io("read", &path, e)),
                Err(ReadError::Damage(damage)) => Err(SpoolError::Damaged { path, damage }),
            },
        )
        .await
    }

    /// The queue as stored (see [`list`]); blocking.
    pub fn list(&self) -> Result<Vec<ListEntry>, SpoolError> {
        list(&self.base)
    }

    /// What the spool has done since it was opened.
    pub fn counters(&self) -> SpoolCounters {
        self.counters.snapshot()
    }

    /// Bytes of content held in memory for the queue manager now.
    pub fn held_bytes(&self) -> usize {
        self.budget.used()
    }

    fn path_of(&self, id: MessageId) -> PathBuf {
        self.queue.join(id.to_string())
    }

    async fn run<T>(&self, job: impl FnOnce(Done<T>) -> Job) -> Result<T, SpoolError> {
        let (done, wait) = oneshot::channel();
        self.committer.submit(job(done))?;
        wait.await.map_err(|_| SpoolError::Closed)?
    }
}

/// Runs file work off the serving thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(SpoolError::Closed))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::io("directory sync", dir, e))
}
