//! Recovery at start, and the queue listing. Every complete file goes back on the queue with
//! its recipients' states; an incomplete or corrupt file is never delivered: it is moved to
//! `Spoolbase/corrupt/` for an operator to look at, and logged.

use super::content::{Budget, Content};
use super::envelope::AttemptMeta;
use super::envelope::Envelope;
use super::error::{Damage, SpoolError};
use super::id::MessageId;
use super::incoming::Queued;
use super::read::{self, Check, ReadError};
use crate::log_warning;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// A file recovery moved to `Spoolbase/corrupt/` rather than deliver it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    /// Its name in `queue/` (normally a message id).
    pub name: String,
    /// Its name in `corrupt/` (the same, unless that was taken).
    pub moved_to: String,
    /// Why it was not delivered.
    pub damage: Damage,
}

/// What [`Spool::open`](super::Spool::open) found in the spool.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The complete messages, in arrival order, to be queued again.
    pub queued: Vec<Queued>,
    /// Files moved to `corrupt/` (each also logged).
    pub set_aside: Vec<SetAside>,
}

pub(super) struct Scan {
    pub recovered: Recovered,
    /// The largest id seen, so that new ids come after it.
    pub max_id: Option<MessageId>,
}

pub(super) fn recover(
    queue: &Path,
    corrupt: &Path,
    keep: u64,
    budget: &Arc<Budget>,
) -> Result<Scan, SpoolError> {
    let mut names = entries(queue)?;
    names.sort();
    let mut scan = Scan {
        recovered: Recovered::default(),
        max_id: None,
    };
    for name in names {
        let path = queue.join(&name);
        let id = name.parse::<MessageId>().ok();
        scan.max_id = scan.max_id.max(id);
        let damage = match (id, read::read(&path, Check::Full { keep })) {
            (None, _) => Damage::Corrupt("not a message id".into()),
            (Some(_), Err(ReadError::Io(e))) => return Err(SpoolError::io("read", &path, e)),
            (Some(_), Err(ReadError::Damage(d))) => d,
            (Some(id), Ok(s)) if s.envelope.id != id => Damage::Corrupt(format!(
                "the file's name says {id}, its envelope {}",
                s.envelope.id
            )),
            (Some(id), Ok(s)) => {
                if !s.damaged_states.is_empty() {
                    log_warning!(
                        "spool: message {id}: damaged state of recipient(s) {:?}; treated as pending",
                        s.damaged_states
                    );
                }
                if s.meta_damaged {
                    log_warning!("spool: message {id}: retry metadata unreadable; starting afresh");
                }
                let content = s.content.and_then(|c| {
                    let n = c.len();
                    budget
                        .take(n)
                        .then(|| Content::new(c, 0, n, Some(budget.clone())))
                });
                scan.recovered.queued.push(Queued {
                    envelope: Arc::new(s.envelope),
                    size: s.size,
                    content,
                    meta: s.meta,
                });
                continue;
            }
        };
        let moved_to = set_aside(&path, corrupt, &name)?;
        log_warning!(
            "spool: {} {damage}; moved to {} and not delivered",
            path.display(),
            corrupt.join(&moved_to).display()
        );
        scan.recovered.set_aside.push(SetAside {
            name,
            moved_to,
            damage,
        });
    }
    if !scan.recovered.set_aside.is_empty() {
        for dir in [corrupt, queue] {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| SpoolError::io("directory sync", dir, e))?;
        }
    }
    Ok(scan)
}

fn entries(dir: &Path) -> Result<Vec<String>, SpoolError> {
    let mut names = Vec::new();
    let list = std::fs::read_dir(dir).map_err(|e| SpoolError::io("list", dir, e))?;
    for entry in list {
        let entry = entry.map_err(|e| SpoolError::io("list", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Moves `queue/name` to `corrupt/`, under a new name if that one is taken.
fn set_aside(path: &Path, corrupt: &Path, name: &str) -> Result<String, SpoolError> {
    let mut target = name.to_string();
    let mut n = 1;
    while corrupt.join(&target).exists() {
        target = format!("{name}.{n}");
        n += 1;
    }
    std::fs::rename(path, corrupt.join(&target))
        .map_err(|e| SpoolError::io("move aside", path, e))?;
    Ok(target)
}

/// One file of the queue, as the queue commands show it.
#[derive(Clone, Debug)]
pub enum ListEntry {
    /// A stored message.
    Message {
        /// Its envelope, with the recipients' states.
        envelope: Box<Envelope>,
        /// Content bytes.
        size: u64,
        /// Attempts so far, next attempt, last error.
        meta: AttemptMeta,
    },
    /// Not a deliverable message: being received right now, or damaged (recovery at the next
    /// start will move it aside).
    Unreadable {
        /// The file's name.
        name: String,
        /// What is missing or wrong.
        damage: Damage,
    },
}

/// Lists the queue of the spool at `spoolbase`, in arrival order, without taking it over and
/// without changing anything. Reads headers, envelopes and trailers, not content, so the
/// content checksum is not verified here (recovery and read-back do).
pub fn list(spoolbase: &Path) -> Result<Vec<ListEntry>, SpoolError> {
    let queue = spoolbase.join(super::QUEUE_DIR);
    let mut names = entries(&queue)?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let path = queue.join(&name);
        match read::read(&path, Check::Listing) {
            Ok(s) => out.push(ListEntry::Message {
                envelope: Box::new(s.envelope),
                size: s.size,
                meta: s.meta,
            }),
            // Removed (delivered) between the listing and the read.
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(ReadError::Io(e)) => return Err(SpoolError::io("read", &path, e)),
            Err(ReadError::Damage(damage)) => out.push(ListEntry::Unreadable { name, damage }),
        }
    }
    Ok(out)
}
