//! What can go wrong in the spool, classified the way the session must answer it: a full disk
//! is `452 4.3.1` (RFC 3463: mail system full), anything else `451 4.3.0`. Never a `250`.

use super::id::MessageId;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// The class of a spool failure, which decides the reply and what the log tells the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// No space or quota left (`ENOSPC`, `EDQUOT`): `452 4.3.1`.
    Full,
    /// The file system is mounted read-only (`EROFS`).
    ReadOnly,
    /// The daemon's user may not write there (`EACCES`, `EPERM`).
    Permission,
    /// Any other failure (`EIO`, a damaged file, a message that is not there, ...).
    Other,
}

impl ErrorClass {
    /// The class of an operating system error.
    pub fn of(e: &io::Error) -> ErrorClass {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorClass::Full,
            Some(libc::EROFS) => ErrorClass::ReadOnly,
            Some(libc::EACCES) | Some(libc::EPERM) => ErrorClass::Permission,
            _ => ErrorClass::Other,
        }
    }
}

/// A spool operation that failed. `Display` is a whole log line's worth: what was being done,
/// to which file, and why.
#[derive(Debug)]
pub enum SpoolError {
    /// A system call failed; `during` names the step ("create", "write", "sync", "directory
    /// sync", "remove", ...).
    Io {
        /// How the session answers it.
        class: ErrorClass,
        /// The step that failed.
        during: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The system's error.
        error: io::Error,
    },
    /// No message with this id is in the spool.
    NotFound(MessageId),
    /// The file is there but is not a complete, intact message.
    Damaged {
        /// The message's file.
        path: PathBuf,
        /// What is wrong with it.
        damage: Damage,
    },
    /// Another process holds the spool (its `lock` file).
    Locked(PathBuf),
    /// A recipient index outside the message's recipients.
    NoSuchRecipient {
        /// The message.
        id: MessageId,
        /// The index given.
        index: usize,
    },
    /// An earlier write of this message failed; it cannot be committed.
    Poisoned(ErrorClass),
    /// The spool is shutting down and takes no more work.
    Closed,
}

impl SpoolError {
    pub(super) fn io(during: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        SpoolError::Io {
            class: ErrorClass::of(&error),
            during,
            path: path.into(),
            error,
        }
    }

    /// The class the session's reply is chosen by.
    pub fn class(&self) -> ErrorClass {
        match self {
            SpoolError::Io { class, .. } => *class,
            SpoolError::Poisoned(class) => *class,
            _ => ErrorClass::Other,
        }
    }

    /// Disk full or over quota: the session answers `452 4.3.1` rather than `451 4.3.0`.
    pub fn is_full(&self) -> bool {
        self.class() == ErrorClass::Full
    }
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Io {
                class,
                during,
                path,
                error,
            } => {
                let what = match class {
                    ErrorClass::Full => "spool full: ",
                    ErrorClass::ReadOnly => "spool read-only: ",
                    ErrorClass::Permission => "spool not writable: ",
                    ErrorClass::Other => "",
                };
                write!(f, "{what}{during} {}: {error}", path.display())
            }
            SpoolError::NotFound(id) => write!(f, "message {id} is not in the spool"),
            SpoolError::Damaged { path, damage } => write!(f, "{}: {damage}", path.display()),
            SpoolError::Locked(p) => write!(
                f,
                "{} is locked: another process is using this spool",
                p.display()
            ),
            SpoolError::NoSuchRecipient { id, index } => {
                write!(f, "message {id} has no recipient number {index}")
            }
            SpoolError::Poisoned(class) => {
                write!(f, "an earlier write of this message failed ({class:?})")
            }
            SpoolError::Closed => f.write_str("the spool is shutting down"),
        }
    }
}

impl std::error::Error for SpoolError {}

/// Why a file in the queue directory is not a message that can be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The file ends before its trailer: it was being written when the process stopped, so it
    /// was never acknowledged.
    Incomplete(String),
    /// The file is whole but does not check out: wrong checksum, impossible lengths, an
    /// envelope that does not decode. Something changed it after it was written.
    Corrupt(String),
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Incomplete(why) => write!(f, "incomplete (never acknowledged): {why}"),
            Damage::Corrupt(why) => write!(f, "corrupt: {why}"),
        }
    }
}
