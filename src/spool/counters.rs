//! What the spool has done, counted where it is done, for the metrics export and for the
//! tests and benchmark that check group commit pays off.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub messages: AtomicU64,
    pub failures: AtomicU64,
    pub file_syncs: AtomicU64,
    pub directory_syncs: AtomicU64,
    pub writeback_starts: AtomicU64,
    pub batches: AtomicU64,
    pub updates: AtomicU64,
    pub removals: AtomicU64,
    pub reused: AtomicU64,
}

/// A snapshot of the spool's counters since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolCounters {
    /// Messages made durable (file data and directory entry synced).
    pub messages: u64,
    /// Commits that failed (disk full, read-only, I/O error, ...).
    pub failures: u64,
    /// `fdatasync` calls on message files (new messages and state updates).
    pub file_syncs: u64,
    /// `fsync` calls on the queue directory.
    pub directory_syncs: u64,
    /// `sync_file_range` calls starting a batch's writeback before its syncs (not a sync).
    pub writeback_starts: u64,
    /// Group commits: each is one pass of syncs with at most one directory sync.
    pub batches: u64,
    /// Durable recipient-state updates.
    pub updates: u64,
    /// Messages removed.
    pub removals: u64,
    /// New messages written into a spare file (a removed message's) instead of a new one.
    pub reused: u64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SpoolCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SpoolCounters {
            messages: get(&self.messages),
            failures: get(&self.failures),
            file_syncs: get(&self.file_syncs),
            directory_syncs: get(&self.directory_syncs),
            writeback_starts: get(&self.writeback_starts),
            batches: get(&self.batches),
            updates: get(&self.updates),
            removals: get(&self.removals),
            reused: get(&self.reused),
        }
    }
}
