//! A message being received: its content is gathered in memory up to the spool's
//! `memory_threshold`, then goes to its file as it comes, so a session's memory stays bounded
//! whatever the message size. Nothing is acknowledged until [`Incoming::commit`] returns.

use super::Spool;
use super::commit::Job;
use super::content::Content;
use super::envelope::{AttemptMeta, Envelope};
use super::error::{ErrorClass, SpoolError};
use super::format;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Once spilled, bytes gathered before a write to the file.
const SPILL_CHUNK: usize = 256 * 1024;

/// A message on its way into the spool. Dropping it without [`commit`](Incoming::commit)
/// removes whatever was written.
pub struct Incoming {
    spool: Arc<Spool>,
    envelope: Arc<Envelope>,
    path: PathBuf,
    /// In memory: the file image so far. Spilled: the bytes not yet written.
    buf: Vec<u8>,
    /// Where the file image's content starts.
    content_offset: usize,
    crc: Option<crc32fast::Hasher>,
    content_len: u64,
    spilled: Option<Spilled>,
    /// The class of the first failed write: the message can no longer be committed.
    poisoned: Option<ErrorClass>,
}

struct Spilled {
    file: Arc<File>,
    /// Bytes of the file written so far.
    written: u64,
}

/// A message safely in the spool: what the queue manager needs to deliver it.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The envelope, with each recipient's state as stored.
    pub envelope: Arc<Envelope>,
    /// Content bytes (the message as it will be sent).
    pub size: u64,
    /// The content, when the message was small enough and the spool's memory cap allowed;
    /// otherwise read it back with [`Spool::content`].
    pub content: Option<Content>,
    /// Retry metadata as stored (the default for a new message).
    pub meta: AttemptMeta,
}

impl Queued {
    /// The message's id.
    pub fn id(&self) -> super::MessageId {
        self.envelope.id
    }
}

impl Incoming {
    pub(super) fn new(spool: Arc<Spool>, envelope: Envelope) -> Incoming {
        let (buf, crc) = format::prefix(&envelope);
        let path = spool.path_of(envelope.id);
        Incoming {
            spool,
            envelope: Arc::new(envelope),
            path,
            content_offset: buf.len(),
            buf,
            crc: Some(crc),
            content_len: 0,
            spilled: None,
            poisoned: None,
        }
    }

    /// The envelope being stored.
    pub fn envelope(&self) -> &Arc<Envelope> {
        &self.envelope
    }

    /// Content bytes so far.
    pub fn size(&self) -> u64 {
        self.content_len
    }

    /// Bytes this message holds in memory now: at most the memory threshold (with the
    /// envelope) and the last write's bytes.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds content: the message as it will be sent (CRLF line ends, not dot-stuffed). Past
    /// the spool's memory threshold the bytes go to the file (off the serving thread). After
    /// an error the message cannot be committed; the caller keeps reading the client's DATA,
    /// answers the error, and drops this.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        if let Some(class) = self.poisoned {
            return Err(SpoolError::Poisoned(class));
        }
        if let Some(crc) = self.crc.as_mut() {
            crc.update(bytes);
        }
        self.content_len += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        let due = match self.spilled {
            None => self.content_len > self.spool.options.memory_threshold as u64,
            Some(_) => self.buf.len() >= SPILL_CHUNK.min(self.spool.options.memory_threshold),
        };
        if due {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the gathered bytes to the file, creating it the first time.
    async fn flush(&mut self) -> Result<(), SpoolError> {
        let buf = std::mem::take(&mut self.buf);
        let path = self.path.clone();
        let existing = self.spilled.as_ref().map(|s| (s.file.clone(), s.written));
        let len = buf.len() as u64;
        let outcome = tokio::task::spawn_blocking(move || {
            let (file, at) = match existing {
                Some(fw) => fw,
                None => match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                {
                    Ok(f) => (Arc::new(f), 0),
                    Err(e) => return Err(SpoolError::io("create", &path, e)),
                },
            };
            match file.write_all_at(&buf, at) {
                Ok(()) => Ok((file, buf)),
                Err(e) => {
                    // The message is lost to this session: its file goes now, before the
                    // session hears of the failure.
                    let _ = std::fs::remove_file(&path);
                    Err(SpoolError::io("write", &path, e))
                }
            }
        })
        .await;
        let result = match outcome {
            Ok(Ok((file, mut buf))) => {
                let written = self.spilled.as_ref().map_or(0, |s| s.written) + len;
                self.spilled = Some(Spilled { file, written });
                buf.clear();
                self.buf = buf;
                Ok(())
            }
            Ok(Err(e)) => {
                self.spilled = None;
                Err(e)
            }
            Err(join) => Err(SpoolError::io(
                "write",
                &self.path,
                std::io::Error::other(join.to_string()),
            )),
        };
        if let Err(e) = &result {
            self.poisoned = Some(e.class());
        }
        result
    }

    /// Makes the message durable: its file's data and its directory entry are synced (with
    /// other sessions' messages, in one group commit) before this returns `Ok`. Only then may
    /// the client hear `250`. On `Err` no file is left behind.
    pub async fn commit(mut self) -> Result<Queued, SpoolError> {
        if let Some(class) = self.poisoned {
            return Err(SpoolError::Poisoned(class));
        }
        let crc = self.crc.take().expect("taken only here");
        self.buf
            .extend_from_slice(&format::trailer(self.content_len, crc));
        let envelope = self.envelope.clone();
        let size = self.content_len;
        let queued = |content| Queued {
            envelope,
            size,
            content,
            meta: AttemptMeta::default(),
        };
        if self.spilled.is_some() {
            self.flush().await?;
            let file = self.spilled.take().expect("flushed").file;
            let (done, wait) = oneshot::channel();
            let job = Job::Seal {
                path: self.path.clone(),
                file,
                done,
            };
            self.spool.committer.submit(job)?;
            // From here, a dropped future is the committer's to clean up (the file goes).
            wait.await.map_err(|_| SpoolError::Closed)??;
            return Ok(queued(None));
        }
        let image = std::mem::take(&mut self.buf);
        let (done, wait) = oneshot::channel();
        let job = Job::Create {
            path: self.path.clone(),
            image,
            done,
        };
        self.spool.committer.submit(job)?;
        let image = wait.await.map_err(|_| SpoolError::Closed)??;
        let spool = &self.spool;
        let start = self.content_offset;
        let end = start + size as usize;
        let content = spool
            .budget
            .take(image.len())
            .then(|| Content::new(image, start, end, Some(spool.budget.clone())));
        Ok(queued(content))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.spilled.take().is_some() {
            let _ = self.spool.committer.submit(Job::Discard {
                path: self.path.clone(),
            });
        }
    }
}
