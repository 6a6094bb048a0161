//! Reading a message file back: at recovery and for content read-back every byte is checked
//! against the trailer's CRC; a queue listing reads only the header, envelope and trailer.

use super::envelope::{AttemptMeta, Envelope};
use super::error::Damage;
use super::format::{self, Layout, META_SLOT, TRAILER_LEN};
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How much of the file to check.
#[derive(Clone, Copy, Debug)]
pub(super) enum Check {
    /// Every byte against the checksum; content up to `keep` bytes is returned in memory.
    Full { keep: u64 },
    /// Lengths and trailer only: the content is not read.
    Listing,
}

pub(super) struct Stored {
    pub envelope: Envelope,
    /// Recipients whose state pair did not check out (read as pending).
    pub damaged_states: Vec<usize>,
    pub meta: AttemptMeta,
    /// Neither metadata slot checked out (defaults used).
    pub meta_damaged: bool,
    pub size: u64,
    pub content: Option<Vec<u8>>,
}

pub(super) enum ReadError {
    Io(io::Error),
    Damage(Damage),
}

impl From<Damage> for ReadError {
    fn from(d: Damage) -> Self {
        ReadError::Damage(d)
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Bytes read at a time while checking content that is not kept.
const CHUNK: usize = 64 * 1024;

pub(super) fn read(path: &Path, check: Check) -> Result<Stored, ReadError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut header = [0u8; format::HEADER_LEN];
    if len < header.len() as u64 {
        return Err(Damage::Incomplete("shorter than its header".into()).into());
    }
    file.read_exact_at(&mut header, 0)?;
    let layout = Layout::read(&header)?;
    let content_at = layout.content_offset();
    if len < content_at + TRAILER_LEN {
        return Err(Damage::Incomplete(format!("no trailer ({len} bytes on disk)")).into());
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut trailer, len - TRAILER_LEN)?;
    let size = format::check_trailer(layout, len, &trailer)?;
    let mut prefix = vec![0u8; (content_at - format::HEADER_LEN as u64) as usize];
    file.read_exact_at(&mut prefix, format::HEADER_LEN as u64)?;
    let n = 2 * layout.recipients as usize;
    let (states, rest) = prefix.split_at(n);
    let (slots, encoded) = rest.split_at(2 * META_SLOT);
    let mut content = None;
    if let Check::Full { keep } = check {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(encoded);
        file.seek(SeekFrom::Start(content_at))?;
        let mut body = (&mut file).take(size);
        if size <= keep {
            let mut c = Vec::with_capacity(size as usize);
            body.read_to_end(&mut c)?;
            crc.update(&c);
            content = Some(c);
        } else {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let got = body.read(&mut buf)?;
                if got == 0 {
                    break;
                }
                crc.update(&buf[..got]);
            }
        }
        crc.update(&trailer[..8]);
        if crc.finalize() != format::trailer_crc(&trailer) {
            return Err(Damage::Corrupt("checksum mismatch".into()).into());
        }
    }
    let (envelope, damaged_states) = format::decode_envelope(encoded, states)?;
    let current = format::current_meta(slots);
    Ok(Stored {
        envelope,
        damaged_states,
        meta_damaged: current.is_none(),
        meta: current.map(|(_, _, m)| m).unwrap_or_default(),
        size,
        content,
    })
}
