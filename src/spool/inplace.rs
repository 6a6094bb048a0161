//! In-place updates of a stored message: recipient states and retry metadata, each written
//! with one `pwrite` at the offsets the file's header gives (see `format`).

use super::envelope::{AttemptMeta, RcptState};
use super::error::SpoolError;
use super::format::{self, Layout, META_SLOT};
use super::id::MessageId;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Writes `states` (recipient index, new state) and `meta` into the message at `path`;
/// returns the open file for the caller to sync (or not).
pub(super) fn write(
    path: &Path,
    id: MessageId,
    states: &[(usize, RcptState)],
    meta: Option<&AttemptMeta>,
) -> Result<File, SpoolError> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SpoolError::NotFound(id)),
        Err(e) => return Err(SpoolError::io("open", path, e)),
    };
    let mut header = [0u8; format::HEADER_LEN];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| SpoolError::io("read", path, e))?;
    let layout = Layout::read(&header).map_err(|damage| SpoolError::Damaged {
        path: path.into(),
        damage,
    })?;
    if !states.is_empty() {
        let n = layout.recipients as usize;
        if let Some(&(index, _)) = states.iter().find(|(i, _)| *i >= n) {
            return Err(SpoolError::NoSuchRecipient { id, index });
        }
        // The whole state area in one write: each pair is 2-byte aligned, so a torn write
        // leaves every pair either old or new, never half.
        let mut area = vec![0u8; 2 * n];
        file.read_exact_at(&mut area, layout.state_offset(0))
            .map_err(|e| SpoolError::io("read", path, e))?;
        for &(i, s) in states {
            area[2 * i..2 * i + 2].copy_from_slice(&format::state_pair(s));
        }
        file.write_all_at(&area, layout.state_offset(0))
            .map_err(|e| SpoolError::io("update", path, e))?;
    }
    if let Some(meta) = meta {
        let mut slots = [0u8; 2 * META_SLOT];
        file.read_exact_at(&mut slots, layout.meta_offset(0))
            .map_err(|e| SpoolError::io("read", path, e))?;
        // Overwrite the older slot, so a crash mid-write leaves the newer one whole.
        let (slot, seq) = match format::current_meta(&slots) {
            Some((current, seq, _)) => (1 - current, seq + 1),
            None => (0, 1),
        };
        file.write_all_at(&format::meta_slot(seq, meta), layout.meta_offset(slot))
            .map_err(|e| SpoolError::io("update", path, e))?;
    }
    Ok(file)
}
