//! The threads that run one batch's syncs side by side. A single thread syncing a batch
//! file after file pays a device cache flush per file; syncs issued together are merged by the
//! kernel (one journal commit, shared flushes), as measured on ext4 over virtio: see the
//! README's spool figures.

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The most threads syncing at once, the committer included. Started as batches need them.
/// More syncs in flight merge better; 64 was best of 16, 32, 64 and 128 at c=128 here.
pub(super) const SYNC_THREADS: usize = 64;

/// How much of a file to sync.
#[derive(Clone, Copy, Debug)]
pub(super) enum Sync {
    /// `fdatasync`: the data, and the metadata needed to read it back.
    Data,
    /// `fsync`: everything (for the directory).
    Full,
}

fn run(f: &File, how: Sync) -> io::Result<()> {
    match how {
        Sync::Data => f.sync_data(),
        Sync::Full => f.sync_all(),
    }
}

struct Work {
    /// Files still to sync, each with its place in the batch.
    todo: Vec<(usize, Arc<File>, Sync)>,
    results: Vec<(usize, io::Result<()>)>,
    outstanding: usize,
    closed: bool,
}

struct Shared {
    work: Mutex<Work>,
    more: Condvar,
    finished: Condvar,
}

pub(super) struct SyncPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    max_threads: usize,
}

impl SyncPool {
    /// A pool of at most `max_threads` threads besides the caller's; none started yet.
    pub fn new(max_threads: usize) -> SyncPool {
        SyncPool {
            shared: Arc::new(Shared {
                work: Mutex::new(Work {
                    todo: Vec::new(),
                    results: Vec::new(),
                    outstanding: 0,
                    closed: false,
                }),
                more: Condvar::new(),
                finished: Condvar::new(),
            }),
            threads: Vec::new(),
            max_threads,
        }
    }

    /// Starts threads until there are `n` (or the most allowed); a thread that cannot be
    /// started only means fewer syncs side by side.
    fn grow(&mut self, n: usize) {
        while self.threads.len() < n.min(self.max_threads) {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("spool-sync-{}", self.threads.len()))
                .stack_size(64 * 1024)
                .spawn(move || worker(&shared));
            match spawned {
                Ok(t) => self.threads.push(t),
                Err(_) => break,
            }
        }
    }

    /// Syncs every file, returning each one's outcome by its place in the batch. The
    /// calling thread syncs too; a single file is synced right here.
    pub fn sync(
        &mut self,
        mut files: Vec<(usize, Arc<File>, Sync)>,
    ) -> Vec<(usize, io::Result<()>)> {
        let helpers = files.len().saturating_sub(1);
        self.grow(helpers);
        if helpers == 0 || self.threads.is_empty() {
            return files
                .drain(..)
                .map(|(i, f, how)| (i, run(&f, how)))
                .collect();
        }
        let mut w = self.shared.work.lock().unwrap_or_else(|p| p.into_inner());
        w.outstanding = files.len();
        w.todo = files;
        // Only as many threads as there are files to share: waking idle ones costs CPU.
        for _ in 0..helpers.min(self.threads.len()) {
            self.shared.more.notify_one();
        }
        while let Some((i, f, how)) = w.todo.pop() {
            drop(w);
            let r = run(&f, how);
            w = self.shared.work.lock().unwrap_or_else(|p| p.into_inner());
            w.results.push((i, r));
            w.outstanding -= 1;
        }
        while w.outstanding > 0 {
            w = self
                .shared
                .finished
                .wait(w)
                .unwrap_or_else(|p| p.into_inner());
        }
        std::mem::take(&mut w.results)
    }
}

fn worker(shared: &Shared) {
    let mut w = shared.work.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some((i, f, how)) = w.todo.pop() {
            drop(w);
            let r = run(&f, how);
            w = shared.work.lock().unwrap_or_else(|p| p.into_inner());
            w.results.push((i, r));
            w.outstanding -= 1;
            if w.outstanding == 0 {
                shared.finished.notify_one();
            }
        } else if w.closed {
            return;
        } else {
            w = shared.more.wait(w).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        self.shared
            .work
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.more.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
