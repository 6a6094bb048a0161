//! Spare files: a delivered message's file is kept (renamed into `Spoolbase/spare/`) and
//! overwritten by a later message, instead of being unlinked and a new one created.
//!
//! Why: a file per message makes the file system allocate and free an inode per message, and
//! ext4 without a journal (common on cloud images) scans past every inode freed in the last
//! 30 seconds on each allocation, which measured here as three quarters of the spool's CPU at
//! a few thousand messages a second. A rename costs neither, and overwriting blocks a file
//! already owns allocates none.
//!
//! Spares grow to the queue's high-water mark (each holds an inode; small ones keep their
//! blocks up to a budget of disk, the rest are truncated) and, once the queue is quiet,
//! shrink by unlinking a few a second down to [`KEEP_SPARES`], so freed inodes never pile
//! up for the next burst to scan past.
//!
//! Safety: a spare is renamed to its message's name only after the new message is written
//! into it, and recovery checks that a file's name and its envelope's id agree, so a crash
//! that kept an old message's bytes under a new name (the rename durable, the writes not)
//! sets that file aside instead of delivering the old message again. No spare outlives
//! a crash in the middle of a rename: [`Spares::open`] unlinks any spare that shares its
//! inode with a queued file.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Under the Spoolbase.
pub const SPARE_DIR: &str = "spare";

/// The most spare files kept; beyond it files are unlinked as before.
const MAX_SPARES: usize = 65_536;
/// Disk the spares may keep: within it a spare keeps its blocks, and overwriting it
/// allocates nothing; beyond it a spare is truncated first (an inode is all it holds).
const WARM_BYTES: u64 = 128 << 20;
/// Files larger than this are truncated whatever the budget.
const MAX_WARM_FILE: u64 = 128 << 10;
/// Spares a quiet spool keeps whatever happens.
pub(super) const KEEP_SPARES: usize = 1024;
/// Spares beyond [`KEEP_SPARES`] unlinked per quiet second: few enough that the freed inodes
/// cost the next burst's allocations nothing worth measuring.
const TRIM_PER_PASS: usize = 16;

struct Spare {
    path: PathBuf,
    /// Disk it holds.
    bytes: u64,
    /// Its length: a new message shorter than this must cut the old bytes off.
    len: u64,
}

pub(super) struct Spares {
    dir: PathBuf,
    free: Vec<Spare>,
    /// Disk the spares hold.
    held: u64,
    /// Names spares take, unique within this process.
    next: u64,
}

impl Spares {
    /// The spare directory under `spoolbase`, created if need be. Spares a previous process
    /// left are taken over, except any that shares its inode with a file in the queue (a
    /// crash in the middle of a rename on a file system without a journal can leave both
    /// names): that name is unlinked, so a spare never overwrites a queued message.
    pub fn open(spoolbase: &Path) -> io::Result<Spares> {
        let dir = spoolbase.join(SPARE_DIR);
        let mut spares = Spares {
            dir,
            free: Vec::new(),
            held: 0,
            next: 0,
        };
        match std::fs::create_dir(&spares.dir) {
            Ok(()) => return Ok(spares),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let queued: HashSet<u64> = std::fs::read_dir(spoolbase.join(super::QUEUE_DIR))?
            .map(|e| e.map(|e| e.ino()))
            .collect::<io::Result<_>>()?;
        for entry in std::fs::read_dir(&spares.dir)? {
            let entry = entry?;
            let n = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            // New names stay above every old one, adopted or not, so none is reused while a
            // leftover that could not be removed still holds it.
            if let Some(n) = n {
                spares.next = spares.next.max(n + 1);
            }
            match n {
                Some(_)
                    if entry.file_type()?.is_file()
                        && !queued.contains(&entry.ino())
                        && spares.free.len() < MAX_SPARES =>
                {
                    let meta = entry.metadata()?;
                    let bytes = meta.blocks() * 512;
                    spares.held += bytes;
                    spares.free.push(Spare {
                        path: entry.path(),
                        bytes,
                        len: meta.len(),
                    });
                }
                // Not adopted either way: a name that cannot go is left alone.
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(spares)
    }

    /// A new message's file at `path` holding `image`: a spare overwritten and renamed into
    /// place when there is one, `None` when there is none or it failed (the spare is then
    /// dropped and the caller creates a new file).
    pub fn reuse(&mut self, path: &Path, image: &[u8]) -> Option<File> {
        let spare = self.free.pop()?;
        self.held -= spare.bytes;
        let reused = (|| {
            let mut f = OpenOptions::new().write(true).open(&spare.path)?;
            f.write_all(image)?;
            if spare.len > image.len() as u64 {
                f.set_len(image.len() as u64)?;
            }
            std::fs::rename(&spare.path, path)?;
            Ok::<File, io::Error>(f)
        })();
        match reused {
            Ok(f) => Some(f),
            Err(_) => {
                let _ = std::fs::remove_file(&spare.path);
                None
            }
        }
    }

    /// Takes the file at `path` (a message leaving the queue) out of the queue directory:
    /// kept as a spare when there is room (truncated when its blocks would pass the budget),
    /// else unlinked.
    pub fn retire(&mut self, path: &Path) -> io::Result<()> {
        if self.free.len() < MAX_SPARES {
            let meta = std::fs::metadata(path)?;
            let mut bytes = meta.blocks() * 512;
            let mut len = meta.len();
            let mut kept = true;
            if bytes > 0 && (meta.len() > MAX_WARM_FILE || self.held + bytes > WARM_BYTES) {
                kept = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(0))
                    .is_ok();
                bytes = 0;
                len = 0;
            }
            let spare = self.dir.join(self.next.to_string());
            self.next += 1;
            // A file that cannot be truncated, or a rename that cannot be made (another file
            // system under queue/), falls back to the unlink.
            if kept && std::fs::rename(path, &spare).is_ok() {
                self.held += bytes;
                self.free.push(Spare {
                    path: spare,
                    bytes,
                    len,
                });
                return Ok(());
            }
        }
        std::fs::remove_file(path)
    }

    /// Whether a quiet spool has spares to let go.
    pub fn trimmable(&self) -> bool {
        self.free.len() > KEEP_SPARES
    }

    /// The queue is quiet: a few spares beyond [`KEEP_SPARES`] go, the latest first.
    pub fn trim(&mut self) {
        let excess = self.free.len().saturating_sub(KEEP_SPARES);
        let keep = self.free.len() - excess.min(TRIM_PER_PASS);
        for spare in self.free.drain(keep..) {
            self.held -= spare.bytes;
            let _ = std::fs::remove_file(spare.path);
        }
    }

    /// Spare files held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spares-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("queue")).unwrap();
        dir
    }

    #[test]
    fn a_retired_file_is_overwritten_and_renamed_for_the_next_message() {
        let base = tempdir("reuse");
        let mut spares = Spares::open(&base).unwrap();
        let old = base.join("queue/A");
        std::fs::write(&old, b"the old message, longer than the new one").unwrap();
        let inode = std::fs::metadata(&old).unwrap().ino();
        spares.retire(&old).unwrap();
        assert!(!old.exists());
        let new = base.join("queue/B");
        spares.reuse(&new, b"new").unwrap();
        assert_eq!(std::fs::read(&new).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&new).unwrap().ino(), inode);
        assert_eq!(std::fs::read_dir(base.join(SPARE_DIR)).unwrap().count(), 0);
        // None left: the caller creates a file.
        assert!(spares.reuse(&base.join("queue/C"), b"x").is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn large_spares_give_up_their_blocks_and_a_restart_takes_the_spares_over() {
        let base = tempdir("limits");
        let mut spares = Spares::open(&base).unwrap();
        let big = base.join("queue/A");
        std::fs::write(&big, vec![1u8; MAX_WARM_FILE as usize + 1]).unwrap();
        spares.retire(&big).unwrap();
        assert!(!big.exists());
        assert_eq!(std::fs::metadata(&spares.free[0].path).unwrap().len(), 0);
        let small = base.join("queue/B");
        std::fs::write(&small, b"small").unwrap();
        spares.retire(&small).unwrap();
        assert_eq!(std::fs::metadata(&spares.free[1].path).unwrap().len(), 5);
        assert_eq!(std::fs::read_dir(base.join(SPARE_DIR)).unwrap().count(), 2);
        drop(spares);
        // One spare also linked into the queue, as a torn rename could leave it.
        let spare = base.join(SPARE_DIR).join("1");
        std::fs::hard_link(&spare, base.join("queue/C")).unwrap();
        let mut spares = Spares::open(&base).unwrap();
        assert_eq!(spares.len(), 1);
        assert!(!spare.exists());
        assert_eq!(std::fs::read(base.join("queue/C")).unwrap(), b"small");
        // New names do not take an old one.
        let d = base.join("queue/D");
        std::fs::write(&d, b"d").unwrap();
        spares.retire(&d).unwrap();
        assert_eq!(spares.len(), 2);
        assert_eq!(std::fs::read_dir(base.join(SPARE_DIR)).unwrap().count(), 2);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn leftovers_that_cannot_be_removed_never_block_a_start_nor_lend_their_names() {
        let base = tempdir("leftovers");
        drop(Spares::open(&base).unwrap());
        // A directory under a spare's name (remove_file refuses it) and a foreign name.
        let dir = base.join(SPARE_DIR).join("7");
        std::fs::create_dir_all(dir.join("inside")).unwrap();
        std::fs::write(base.join(SPARE_DIR).join("junk"), b"x").unwrap();
        let mut spares = Spares::open(&base).unwrap();
        assert_eq!(spares.len(), 0);
        assert!(dir.join("inside").exists());
        assert!(!base.join(SPARE_DIR).join("junk").exists());
        let a = base.join("queue/A");
        std::fs::write(&a, b"a").unwrap();
        spares.retire(&a).unwrap();
        assert_eq!(spares.free[0].path, base.join(SPARE_DIR).join("8"));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn spares_past_the_disk_budget_are_truncated_and_trimmed_a_few_at_a_time() {
        let base = tempdir("trim");
        let mut spares = Spares::open(&base).unwrap();
        // Pretend the budget is nearly spent.
        spares.held = WARM_BYTES - 4096;
        for i in 0..KEEP_SPARES + TRIM_PER_PASS + 3 {
            let path = base.join(format!("queue/{i}"));
            std::fs::write(&path, b"content").unwrap();
            spares.retire(&path).unwrap();
        }
        let sizes: Vec<u64> = spares
            .free
            .iter()
            .map(|s| std::fs::metadata(&s.path).unwrap().len())
            .collect();
        // The first fits the budget (one block); the rest are truncated.
        assert_eq!(sizes[0], 7);
        assert!(sizes[1..].iter().all(|&n| n == 0));
        assert!(spares.trimmable());
        spares.trim();
        assert_eq!(spares.len(), KEEP_SPARES + 3);
        spares.trim();
        assert_eq!(spares.len(), KEEP_SPARES);
        assert!(!spares.trimmable());
        assert_eq!(
            std::fs::read_dir(base.join(SPARE_DIR)).unwrap().count(),
            KEEP_SPARES
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
