//! The message file, byte by byte (integers little-endian):
//!
//! ```text
//! 0        magic "SAPSPL01"
//! 8        recipient count n (u32)
//! 12       envelope length e (u32)
//! 16       n recipient states: 2 bytes each, the state and its complement
//! 16+2n    retry metadata, slot A (512 bytes)
//! +512     retry metadata, slot B (512 bytes)
//! P        the envelope (e bytes); P = 16 + 2n + 1024
//! P+e      the content (c bytes): the message as it will be sent, CRLF, not dot-stuffed
//! P+e+c    trailer: c (u64), CRC-32 (u32), "SEND"
//! ```
//!
//! The CRC-32 covers the first 16 bytes, the envelope, the content and the trailer's length,
//! and the file must be exactly as long as the header and trailer say: a file cut short at any
//! point, or with any of those bytes changed, is not a message. The states and the metadata
//! lie outside the checksum so that they can be rewritten in place; each protects itself. A
//! state is a byte and its complement (2-byte aligned, so one write never tears a pair): a
//! changed byte shows, and reads as `Pending`, since delivering twice beats never. Metadata
//! goes alternately to slot A and B with a sequence number and its own CRC, so a write torn by
//! a crash leaves the previous slot to read.

use super::envelope::{
    AttemptMeta, Body, Envelope, MAX_LAST_ERROR, Notify, Origin, RcptState, Recipient, Ret,
};
use super::error::Damage;
use super::id::MessageId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const MAGIC: &[u8; 8] = b"SAPSPL01";
pub const TRAILER_MAGIC: &[u8; 4] = b"SEND";
pub const HEADER_LEN: usize = 16;
pub const TRAILER_LEN: u64 = 16;
pub const META_SLOT: usize = 512;
/// Bounds a damaged header cannot exceed without being called corrupt.
const MAX_RECIPIENTS: u32 = 1 << 20;
const MAX_ENVELOPE: u32 = 64 << 20;

/// Where things are in one message's file, from its first 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub recipients: u32,
    pub envelope_len: u32,
}

impl Layout {
    pub fn state_offset(self, index: usize) -> u64 {
        HEADER_LEN as u64 + 2 * index as u64
    }

    pub fn meta_offset(self, slot: usize) -> u64 {
        self.state_offset(self.recipients as usize) + (slot * META_SLOT) as u64
    }

    pub fn envelope_offset(self) -> u64 {
        self.meta_offset(2)
    }

    pub fn content_offset(self) -> u64 {
        self.envelope_offset() + self.envelope_len as u64
    }

    pub fn header(self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.recipients.to_le_bytes());
        h[12..16].copy_from_slice(&self.envelope_len.to_le_bytes());
        h
    }

    pub fn read(header: &[u8]) -> Result<Layout, Damage> {
        if header.len() < HEADER_LEN {
            return Err(Damage::Incomplete("shorter than its header".into()));
        }
        if &header[..8] != MAGIC {
            return Err(Damage::Corrupt("not a spool file (bad magic)".into()));
        }
        let recipients = u32::from_le_bytes(header[8..12].try_into().unwrap());
        let envelope_len = u32::from_le_bytes(header[12..16].try_into().unwrap());
        if recipients == 0 || recipients > MAX_RECIPIENTS || envelope_len > MAX_ENVELOPE {
            return Err(Damage::Corrupt(format!(
                "impossible header ({recipients} recipients, {envelope_len}-byte envelope)"
            )));
        }
        Ok(Layout {
            recipients,
            envelope_len,
        })
    }
}

pub fn state_pair(state: RcptState) -> [u8; 2] {
    let b = match state {
        RcptState::Pending => b'P',
        RcptState::Delivered => b'D',
        RcptState::Failed => b'F',
    };
    [b, !b]
}

/// A state pair as read; `None` when the pair does not check out (read as pending).
pub fn read_state(pair: &[u8]) -> Option<RcptState> {
    if pair[0] != !pair[1] {
        return None;
    }
    match pair[0] {
        b'P' => Some(RcptState::Pending),
        b'D' => Some(RcptState::Delivered),
        b'F' => Some(RcptState::Failed),
        _ => None,
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One metadata slot with sequence number `seq` (never 0: an unwritten slot is all zeros).
pub fn meta_slot(seq: u64, meta: &AttemptMeta) -> [u8; META_SLOT] {
    let mut s = [0u8; META_SLOT];
    s[..8].copy_from_slice(&seq.to_le_bytes());
    s[8..12].copy_from_slice(&meta.attempts.to_le_bytes());
    let next = meta.next_attempt.map_or(0, |t| unix_secs(t).max(1));
    s[12..20].copy_from_slice(&next.to_le_bytes());
    let text = clean_error(meta.last_error.as_deref().unwrap_or(""));
    s[20..22].copy_from_slice(&(text.len() as u16).to_le_bytes());
    s[22..22 + text.len()].copy_from_slice(text.as_bytes());
    let crc = crc32fast::hash(&s[..META_SLOT - 4]);
    s[META_SLOT - 4..].copy_from_slice(&crc.to_le_bytes());
    s
}

/// `last_error` as stored: no CR or LF, cut to [`MAX_LAST_ERROR`] at a character boundary.
fn clean_error(text: &str) -> String {
    let mut end = text.len().min(MAX_LAST_ERROR);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace(['\r', '\n'], " ")
}

/// A slot's sequence number and metadata, if it checks out.
pub fn read_meta_slot(s: &[u8]) -> Option<(u64, AttemptMeta)> {
    let crc = u32::from_le_bytes(s[META_SLOT - 4..META_SLOT].try_into().unwrap());
    let seq = u64::from_le_bytes(s[..8].try_into().unwrap());
    if seq == 0 || crc != crc32fast::hash(&s[..META_SLOT - 4]) {
        return None;
    }
    let attempts = u32::from_le_bytes(s[8..12].try_into().unwrap());
    let next = u64::from_le_bytes(s[12..20].try_into().unwrap());
    let len = u16::from_le_bytes(s[20..22].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(s.get(22..22 + len)?).ok()?;
    Some((
        seq,
        AttemptMeta {
            attempts,
            next_attempt: (next != 0).then(|| UNIX_EPOCH + Duration::from_secs(next)),
            last_error: (!text.is_empty()).then(|| text.to_string()),
        },
    ))
}

/// The newer valid slot of the two (slots A and B, 2 × 512 bytes): its index and contents.
pub fn current_meta(slots: &[u8]) -> Option<(usize, u64, AttemptMeta)> {
    let a = read_meta_slot(&slots[..META_SLOT]).map(|(s, m)| (0, s, m));
    let b = read_meta_slot(&slots[META_SLOT..2 * META_SLOT]).map(|(s, m)| (1, s, m));
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The start of a new message's file: header, states, metadata slots, envelope. Returns the
/// bytes and the checksum so far.
pub fn prefix(envelope: &Envelope) -> (Vec<u8>, crc32fast::Hasher) {
    let encoded = encode_envelope(envelope);
    let layout = Layout {
        recipients: envelope.recipients.len() as u32,
        envelope_len: encoded.len() as u32,
    };
    let mut out = Vec::with_capacity(layout.content_offset() as usize + 4096);
    let header = layout.header();
    out.extend_from_slice(&header);
    for r in &envelope.recipients {
        out.extend_from_slice(&state_pair(r.state));
    }
    out.extend_from_slice(&meta_slot(1, &AttemptMeta::default()));
    out.extend_from_slice(&[0u8; META_SLOT]);
    out.extend_from_slice(&encoded);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(&encoded);
    (out, crc)
}

/// The trailer for `content_len` bytes of content; `crc` has seen header, envelope, content.
pub fn trailer(content_len: u64, mut crc: crc32fast::Hasher) -> [u8; TRAILER_LEN as usize] {
    let mut t = [0u8; TRAILER_LEN as usize];
    t[..8].copy_from_slice(&content_len.to_le_bytes());
    crc.update(&t[..8]);
    t[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
    t[12..].copy_from_slice(TRAILER_MAGIC);
    t
}

/// Checks the trailer against the file's length; returns the content length it states.
pub fn check_trailer(layout: Layout, file_len: u64, trailer: &[u8]) -> Result<u64, Damage> {
    let fixed = layout.content_offset() + TRAILER_LEN;
    if file_len < fixed || &trailer[12..16] != TRAILER_MAGIC {
        return Err(Damage::Incomplete(format!(
            "no trailer ({file_len} bytes on disk)"
        )));
    }
    let content_len = u64::from_le_bytes(trailer[..8].try_into().unwrap());
    if fixed.checked_add(content_len) != Some(file_len) {
        return Err(Damage::Corrupt(format!(
            "trailer says {content_len} content bytes, the file holds {}",
            file_len - fixed
        )));
    }
    Ok(content_len)
}

pub fn trailer_crc(trailer: &[u8]) -> u32 {
    u32::from_le_bytes(trailer[8..12].try_into().unwrap())
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
}

pub fn encode_envelope(e: &Envelope) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.u64(e.id.as_u64());
    let since = e.received.duration_since(UNIX_EPOCH).unwrap_or_default();
    w.u64(since.as_secs());
    w.u32(since.subsec_nanos());
    w.str(&e.sender);
    w.u8(match e.ret {
        None => 0,
        Some(Ret::Full) => 1,
        Some(Ret::Hdrs) => 2,
    });
    w.opt_str(e.envid.as_deref());
    w.u8(match e.body {
        Body::Unspecified => 0,
        Body::SevenBit => 1,
        Body::EightBitMime => 2,
    });
    let o = &e.origin;
    match o.client_ip {
        None => w.u8(0),
        Some(IpAddr::V4(a)) => {
            w.u8(4);
            w.0.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            w.u8(6);
            w.0.extend_from_slice(&a.octets());
        }
    }
    match o.client_port {
        None => w.u8(0),
        Some(p) => {
            w.u8(1);
            w.u16(p);
        }
    }
    w.opt_str(o.helo.as_deref());
    w.opt_str(o.client_name.as_deref());
    w.opt_str(o.auth_user.as_deref());
    w.str(&o.session);
    w.str(&o.listen);
    w.u8(u8::from(o.esmtp) | (u8::from(o.tls) << 1));
    w.u32(e.recipients.len() as u32);
    for r in &e.recipients {
        w.str(&r.address);
        w.u8(r.notify.0);
        w.opt_str(r.orcpt.as_deref());
    }
    w.0
}

struct Reader<'a>(&'a [u8]);

fn short() -> Damage {
    Damage::Corrupt("envelope ends early".into())
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Damage> {
        if self.0.len() < n {
            return Err(short());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Damage> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Damage> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, Damage> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, Damage> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn str(&mut self) -> Result<String, Damage> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Damage::Corrupt("envelope text is not UTF-8".into()))
    }
    fn opt_str(&mut self) -> Result<Option<String>, Damage> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            t => Err(bad("optional text tag", t)),
        }
    }
}

fn bad(what: &str, v: u8) -> Damage {
    Damage::Corrupt(format!("envelope: bad {what} {v}"))
}

/// Decodes an envelope; the recipients' states come from the state pairs (`states`, 2 bytes
/// per recipient). `None` states (damaged pairs) read as pending; the second value tells
/// which recipients those were.
pub fn decode_envelope(bytes: &[u8], states: &[u8]) -> Result<(Envelope, Vec<usize>), Damage> {
    let mut r = Reader(bytes);
    let id = MessageId::from_u64(r.u64()?);
    let secs = r.u64()?;
    let nanos = r.u32()?;
    if nanos >= 1_000_000_000 {
        return Err(Damage::Corrupt("envelope: bad arrival time".into()));
    }
    let received = UNIX_EPOCH
        .checked_add(Duration::new(secs, nanos))
        .ok_or_else(|| Damage::Corrupt("envelope: bad arrival time".into()))?;
    let sender = r.str()?;
    let ret = match r.u8()? {
        0 => None,
        1 => Some(Ret::Full),
        2 => Some(Ret::Hdrs),
        t => return Err(bad("RET", t)),
    };
    let envid = r.opt_str()?;
    let body = match r.u8()? {
        0 => Body::Unspecified,
        1 => Body::SevenBit,
        2 => Body::EightBitMime,
        t => return Err(bad("BODY", t)),
    };
    let client_ip = match r.u8()? {
        0 => None,
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(r.take(4)?).unwrap(),
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(r.take(16)?).unwrap(),
        ))),
        t => return Err(bad("address family", t)),
    };
    let client_port = match r.u8()? {
        0 => None,
        1 => Some(r.u16()?),
        t => return Err(bad("port tag", t)),
    };
    let helo = r.opt_str()?;
    let client_name = r.opt_str()?;
    let auth_user = r.opt_str()?;
    let session = r.str()?;
    let listen = r.str()?;
    let flags = r.u8()?;
    if flags > 3 {
        return Err(bad("flags", flags));
    }
    let count = r.u32()? as usize;
    if count * 2 != states.len() {
        return Err(Damage::Corrupt(format!(
            "envelope lists {count} recipients, the header {}",
            states.len() / 2
        )));
    }
    let mut recipients = Vec::with_capacity(count);
    let mut damaged = Vec::new();
    for i in 0..count {
        let address = r.str()?;
        let notify = Notify(r.u8()?);
        let orcpt = r.opt_str()?;
        let state = read_state(&states[2 * i..2 * i + 2]).unwrap_or_else(|| {
            damaged.push(i);
            RcptState::Pending
        });
        recipients.push(Recipient {
            address,
            notify,
            orcpt,
            state,
        });
    }
    if !r.0.is_empty() {
        return Err(Damage::Corrupt("envelope: bytes after its end".into()));
    }
    Ok((
        Envelope {
            id,
            received,
            sender,
            recipients,
            ret,
            envid,
            body,
            origin: Origin {
                client_ip,
                client_port,
                helo,
                client_name,
                auth_user,
                session,
                listen,
                esmtp: flags & 1 != 0,
                tls: flags & 2 != 0,
            },
        },
        damaged,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_slots_alternate_and_the_newer_valid_one_is_read() {
        let old = AttemptMeta {
            attempts: 1,
            ..AttemptMeta::default()
        };
        let new = AttemptMeta {
            attempts: 2,
            next_attempt: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            last_error: Some("451 4.3.0 try\r\nlater".into()),
        };
        let mut slots = [0u8; 2 * META_SLOT];
        slots[..META_SLOT].copy_from_slice(&meta_slot(7, &old));
        slots[META_SLOT..].copy_from_slice(&meta_slot(8, &new));
        let (slot, seq, meta) = current_meta(&slots).unwrap();
        assert_eq!((slot, seq, meta.attempts), (1, 8, 2));
        assert_eq!(meta.last_error.as_deref(), Some("451 4.3.0 try  later"));
        // The newer slot torn by a crash: the older one is read.
        slots[META_SLOT + 30] ^= 0xff;
        assert_eq!(current_meta(&slots).unwrap().2, old);
        assert_eq!(current_meta(&[0u8; 2 * META_SLOT]), None);
    }

    #[test]
    fn a_long_last_error_is_cut_at_a_character_boundary() {
        let meta = AttemptMeta {
            last_error: Some("é".repeat(400)),
            ..AttemptMeta::default()
        };
        let (_, read) = read_meta_slot(&meta_slot(1, &meta)).unwrap();
        let text = read.last_error.unwrap();
        assert!(text.len() <= MAX_LAST_ERROR && text.len() >= MAX_LAST_ERROR - 1);
        assert!(text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_state_pair_with_a_changed_byte_does_not_read() {
        for s in [RcptState::Pending, RcptState::Delivered, RcptState::Failed] {
            let pair = state_pair(s);
            assert_eq!(read_state(&pair), Some(s));
            for bit in 0..16 {
                let mut p = pair;
                p[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(read_state(&p), None);
            }
        }
    }
}
