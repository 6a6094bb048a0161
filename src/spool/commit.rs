//! Group commit. One thread takes every job waiting and makes them durable together: it
//! writes the new files, starts their writeback all at once (`sync_file_range`), then
//! `fdatasync`s the files and `fsync`s the queue directory, once for the whole batch, all side
//! by side (`syncpool`). Only then is each waiting session told. Jobs that arrive while a
//! batch is syncing form the next one, so the more sessions commit at once, the fewer
//! directory syncs each message costs. Removals need no sync of their own: the next batch's
//! directory sync covers them, or one made for them within `REMOVAL_SYNC`.
//!
//! A thread of its own, not the serving threads' runtimes: a sync can take milliseconds and
//! must not stall sessions.

use super::counters::Counters;
use super::envelope::{AttemptMeta, RcptState};
use super::error::SpoolError;
use super::id::MessageId;
use super::inplace;
use super::spare::Spares;
use super::syncpool::{SYNC_THREADS, Sync, SyncPool};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

/// The directory's place among a batch's syncs.
const DIRECTORY: usize = usize::MAX;

/// The longest a removal waits for the directory sync that makes it durable: a machine
/// crash within it can bring a delivered message back (delivered twice, never lost), as
/// with Postfix, which does not sync its removals at all. A process kill loses nothing.
const REMOVAL_SYNC: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a batch waits for company when commits come side by side.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// Without work this long, the spool is quiet: spares beyond the warm ones are trimmed.
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// The most jobs in one batch, so the first in line does not wait on an unbounded crowd.
const MAX_BATCH: usize = 512;

pub(super) type Done<T> = oneshot::Sender<Result<T, SpoolError>>;

pub(super) enum Job {
    /// A message wholly in memory: create its file, write, sync. The image comes back so its
    /// content can go on to delivery without being read again.
    Create {
        path: PathBuf,
        image: Vec<u8>,
        done: Done<Vec<u8>>,
    },
    /// A message already written to its file (spilled): sync it.
    Seal {
        path: PathBuf,
        file: Arc<File>,
        done: Done<()>,
    },
    /// New recipient states (and metadata), durable.
    Update {
        path: PathBuf,
        id: MessageId,
        states: Vec<(usize, RcptState)>,
        meta: Option<AttemptMeta>,
        done: Done<()>,
    },
    Remove {
        path: PathBuf,
        id: MessageId,
        done: Done<()>,
    },
    /// A message abandoned before its commit: its file goes, no one waits.
    Discard { path: PathBuf },
}

struct Queue {
    jobs: Vec<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

pub(super) struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread for the queue directory `dir` (open, for its `fsync`).
    pub fn start(
        dir: File,
        dir_path: PathBuf,
        spares: Spares,
        counters: Arc<Counters>,
    ) -> io::Result<Committer> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let worker = Worker {
            shared: shared.clone(),
            syncs: SyncPool::new(SYNC_THREADS - 1),
            dir: Arc::new(dir),
            dir_path,
            spares,
            unsynced_removals: None,
            busy: false,
            counters,
        };
        let thread = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || worker.run())?;
        Ok(Committer {
            shared,
            thread: Some(thread),
        })
    }

    pub fn submit(&self, job: Job) -> Result<(), SpoolError> {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(SpoolError::Closed);
        }
        q.jobs.push(job);
        let first = q.jobs.len() == 1;
        drop(q);
        if first {
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl Drop for Committer {
    /// Finishes the jobs already given, then stops the thread.
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    syncs: SyncPool,
    dir: Arc<File>,
    dir_path: PathBuf,
    /// Only this thread creates and removes message files, so it owns the spares.
    spares: Spares,
    /// Since when removals wait for a directory sync (none of their own: the next batch's,
    /// or one of their own once [`REMOVAL_SYNC`] has passed).
    unsynced_removals: Option<Instant>,
    /// The last batch had company: sessions are committing side by side.
    busy: bool,
    counters: Arc<Counters>,
}

/// Who hears how a job went.
enum Reply {
    Image(Option<Vec<u8>>, Done<Vec<u8>>),
    Unit(Done<()>),
    Nobody,
}

/// One job on its way through a batch.
struct Step {
    path: PathBuf,
    file: Option<Arc<File>>,
    /// The job created a directory entry: the batch's directory sync covers it.
    entry: bool,
    /// A new message: on failure, or when its session has gone, its file is removed.
    new: bool,
    result: Result<(), SpoolError>,
    reply: Reply,
}

impl Worker {
    fn run(mut self) {
        loop {
            let batch = {
                let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                while q.jobs.is_empty() && !q.closed {
                    let wait = if self.unsynced_removals.is_some() {
                        REMOVAL_SYNC
                    } else {
                        QUIET
                    };
                    let (guard, waited) = self
                        .shared
                        .wake
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|p| p.into_inner());
                    q = guard;
                    if waited.timed_out() {
                        drop(q);
                        if self.unsynced_removals.is_some() {
                            self.sync_removals();
                        } else if self.spares.trimmable() {
                            self.spares.trim();
                        }
                        q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                    }
                }
                if q.jobs.is_empty() {
                    drop(q);
                    self.sync_removals();
                    return;
                }
                let n = q.jobs.len().min(MAX_BATCH);
                let mut batch = q.jobs.drain(..n).collect::<Vec<Job>>();
                if self.busy && batch.len() < MAX_BATCH {
                    // Others are committing too: a moment's wait lets more share this
                    // batch's syncs.
                    drop(q);
                    std::thread::sleep(LINGER);
                    q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                    let n = q.jobs.len().min(MAX_BATCH - batch.len());
                    batch.extend(q.jobs.drain(..n));
                }
                self.busy = batch.len() > 1;
                batch
            };
            self.commit(batch);
        }
    }

    /// Makes the removals so far durable, if any are waiting.
    fn sync_removals(&mut self) {
        if self.unsynced_removals.take().is_some() {
            Counters::add(&self.counters.directory_syncs, 1);
            if let Err(e) = self.dir.sync_all() {
                // Their messages may come back after a crash, delivered twice, never lost.
                crate::log_warning!(
                    "spool: directory sync of {} after removals: {e}",
                    self.dir_path.display()
                );
            }
        }
    }

    fn commit(&mut self, batch: Vec<Job>) {
        Counters::add(&self.counters.batches, 1);
        let mut steps: Vec<Step> = batch.into_iter().map(|j| self.write(j)).collect();

        // Start every file's writeback before waiting on any: the device gets the batch at
        // once, and the first fdatasync's journal commit carries the others' metadata.
        #[cfg(target_os = "linux")]
        for s in steps.iter().filter(|s| s.result.is_ok()) {
            if let Some(f) = &s.file {
                use std::os::fd::AsRawFd;
                // SAFETY: a plain system call on a descriptor this step owns.
                unsafe {
                    libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                }
                Counters::add(&self.counters.writeback_starts, 1);
            }
        }
        let mut targets: Vec<(usize, Arc<File>, Sync)> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.result.is_ok())
            .filter_map(|(i, s)| s.file.clone().map(|f| (i, f, Sync::Data)))
            .collect();
        Counters::add(&self.counters.file_syncs, targets.len() as u64);
        // The directory is synced alongside the files, not after them: the message is
        // acknowledged only once both are durable, and a crash between the two leaves either
        // an entry without its data or data without an entry, neither ever acknowledged.
        // Removals ride along with a new message's directory sync, or wait for one of their
        // own at most REMOVAL_SYNC.
        let removals_due = self
            .unsynced_removals
            .is_some_and(|since| since.elapsed() >= REMOVAL_SYNC);
        if removals_due || steps.iter().any(|s| s.entry && s.result.is_ok()) {
            Counters::add(&self.counters.directory_syncs, 1);
            targets.push((DIRECTORY, self.dir.clone(), Sync::Full));
            self.unsynced_removals = None;
        }
        let mut dir_error = None;
        for (i, r) in self.syncs.sync(targets) {
            match r {
                Ok(()) => {}
                Err(e) if i == DIRECTORY => dir_error = Some(e),
                Err(e) => steps[i].result = Err(SpoolError::io("sync", &steps[i].path, e)),
            }
        }
        if let Some(e) = dir_error {
            let kind = e.kind();
            let raw = e.raw_os_error();
            for s in steps.iter_mut().filter(|s| s.entry && s.result.is_ok()) {
                let e = raw.map_or_else(|| io::Error::from(kind), io::Error::from_raw_os_error);
                s.result = Err(SpoolError::io("directory sync", &self.dir_path, e));
            }
        }
        for s in steps {
            self.finish(s);
        }
    }

    /// The job's writes, before any sync.
    fn write(&mut self, job: Job) -> Step {
        let step = |path, file, entry, new, result, reply| Step {
            path,
            file,
            entry,
            new,
            result,
            reply,
        };
        match job {
            Job::Create { path, image, done } => {
                if done.is_closed() {
                    // The session went before its turn: nothing to do.
                    return step(path, None, false, false, Ok(()), Reply::Nobody);
                }
                let (file, result) = match self.spares.reuse(&path, &image) {
                    Some(f) => {
                        Counters::add(&self.counters.reused, 1);
                        (Some(Arc::new(f)), Ok(()))
                    }
                    None => create(&path, &image),
                };
                let new = file.is_some();
                step(
                    path,
                    file,
                    true,
                    new,
                    result,
                    Reply::Image(Some(image), done),
                )
            }
            Job::Seal { path, file, done } => {
                step(path, Some(file), true, true, Ok(()), Reply::Unit(done))
            }
            Job::Update {
                path,
                id,
                states,
                meta,
                done,
            } => match inplace::write(&path, id, &states, meta.as_ref()) {
                Ok(f) => {
                    Counters::add(&self.counters.updates, 1);
                    step(
                        path,
                        Some(Arc::new(f)),
                        false,
                        false,
                        Ok(()),
                        Reply::Unit(done),
                    )
                }
                Err(e) => step(path, None, false, false, Err(e), Reply::Unit(done)),
            },
            Job::Remove { path, id, done } => {
                let result = match self.spares.retire(&path) {
                    Ok(()) => {
                        Counters::add(&self.counters.removals, 1);
                        self.unsynced_removals.get_or_insert_with(Instant::now);
                        Ok(())
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpoolError::NotFound(id)),
                    Err(e) => Err(SpoolError::io("remove", &path, e)),
                };
                step(path, None, false, false, result, Reply::Unit(done))
            }
            Job::Discard { path } => {
                let _ = std::fs::remove_file(&path);
                step(path, None, false, false, Ok(()), Reply::Nobody)
            }
        }
    }

    /// Tells the waiting session; a new message that failed, or whose session is gone (so
    /// never acknowledged), leaves no file.
    fn finish(&self, s: Step) {
        let Step {
            path,
            file,
            new,
            result,
            reply,
            ..
        } = s;
        drop(file);
        let failed = result.is_err();
        if new && failed {
            // Gone before the session hears of the failure.
            let _ = std::fs::remove_file(&path);
        }
        // Counted before the reply, so that a session that has its answer sees it counted.
        if new {
            let counter = if failed {
                &self.counters.failures
            } else {
                &self.counters.messages
            };
            Counters::add(counter, 1);
        }
        let delivered = match reply {
            Reply::Image(image, done) => done
                .send(result.map(|()| image.unwrap_or_default()))
                .is_ok(),
            Reply::Unit(done) => done.send(result).is_ok(),
            Reply::Nobody => true,
        };
        if new && !failed && !delivered {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// A new file at `path` holding `image`, not yet synced.
fn create(path: &Path, image: &[u8]) -> (Option<Arc<File>>, Result<(), SpoolError>) {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut f) => {
            let r = f
                .write_all(image)
                .map_err(|e| SpoolError::io("write", path, e));
            (Some(Arc::new(f)), r)
        }
        Err(e) => (None, Err(SpoolError::io("create", path, e))),
    }
}
