//! DATA (RFC 5321 §4.1.1.4): the message goes into the spool (`store.rs`), or through the
//! bridge to the AUTH upstream (`bridge.rs`), with a `Received:` header in front.
//!
//! Line endings, decided once here: the end of data is exactly `CRLF . CRLF`. A bare LF or a
//! bare CR (RFC 5321 §2.3.8 forbids both) ends a line and is passed on as CRLF, but a line so
//! ended never makes the next `.` the end of data. For the bridge every line is dot-stuffed
//! afresh; into the spool the content goes unstuffed and delivery stuffs it again. Either way
//! the next hop finds the end of the message exactly where this server did: no "SMTP
//! smuggling" through inconsistent end-of-data parsing. Memory stays bounded whatever the
//! line lengths: bytes are decoded as they stream.

use super::connection::ReadError;
use super::session::{Flow, Session};
use crate::date::rfc5322_date;
use crate::header::HeaderField;
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` CR at the start of a line.
    DotCr,
    InLine,
    /// A CR inside a line.
    Cr,
}

/// Turns the client's dot-stuffed DATA stream into CRLF lines, dot-stuffed again for a next
/// hop ([`DotCodec::default`]) or not, for the spool ([`DotCodec::unstuffed`]), counting the
/// message size.
#[derive(Debug)]
pub struct DotCodec {
    state: State,
    /// Whether the last line ended in CRLF (only then does `.` CRLF end the data).
    after_crlf: bool,
    /// Whether a line starting with `.` is written with its stuffing dot.
    stuff: bool,
    /// Message bytes so far, without the stuffing dots.
    pub size: u64,
}

impl Default for DotCodec {
    fn default() -> Self {
        DotCodec {
            state: State::LineStart,
            after_crlf: true,
            stuff: true,
            size: 0,
        }
    }
}

impl DotCodec {
    /// The content as it is: what the spool keeps.
    pub fn unstuffed() -> DotCodec {
        DotCodec {
            stuff: false,
            ..DotCodec::default()
        }
    }

    /// A line's leading dot as written out.
    fn dot(&self) -> &'static [u8] {
        if self.stuff { b".." } else { b"." }
    }

    /// Decodes `input` into `out` (dot-stuffed, CRLF line endings). Returns how many input
    /// bytes were used and whether the end of data was reached; bytes after it are not used.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::LineStart => {
                    if b == b'.' {
                        self.state = State::Dot;
                        i += 1;
                    } else {
                        self.state = State::InLine;
                    }
                }
                State::Dot => match b {
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    b'\n' => {
                        // `.` LF: a line holding one dot, not the end of data.
                        self.line_end(out, self.dot(), false);
                        i += 1;
                    }
                    _ => {
                        // The leading dot was stuffing: drop it. What follows is content; a
                        // dot there is stuffed again for the next hop.
                        if b == b'.' {
                            out.extend_from_slice(self.dot());
                            self.size += 1;
                            i += 1;
                        }
                        self.state = State::InLine;
                    }
                },
                State::DotCr => {
                    if b == b'\n' {
                        if self.after_crlf {
                            return (i + 1, true);
                        }
                        self.line_end(out, self.dot(), true);
                        i += 1;
                    } else {
                        // `.` and a bare CR: a line holding one dot.
                        self.line_end(out, self.dot(), false);
                    }
                }
                State::InLine => {
                    let run = input[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(input.len() - i);
                    out.extend_from_slice(&input[i..i + run]);
                    self.size += run as u64;
                    i += run;
                    if let Some(&c) = input.get(i) {
                        i += 1;
                        if c == b'\r' {
                            self.state = State::Cr;
                        } else {
                            self.line_end(out, b"", false);
                        }
                    }
                }
                State::Cr => {
                    if b == b'\n' {
                        self.line_end(out, b"", true);
                        i += 1;
                    } else {
                        self.line_end(out, b"", false);
                    }
                }
            }
        }
        (i, false)
    }

    fn line_end(&mut self, out: &mut Vec<u8>, content: &[u8], crlf: bool) {
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        // A re-stuffed lone dot counts as one byte of content.
        self.size += content.len().min(1) as u64 + 2;
        self.state = State::LineStart;
        self.after_crlf = crlf;
    }
}

impl Session {
    pub async fn data(&mut self) -> Flow {
        let Some(txn) = &self.txn else {
            self.reject(503, (5, 5, 1), "Need MAIL command");
            return Flow::Continue;
        };
        if txn.rcpts.is_empty() {
            self.reject(554, (5, 5, 1), "No valid recipients");
            return Flow::Continue;
        }
        if txn.relayed {
            self.data_to_upstream().await
        } else {
            self.data_to_spool().await
        }
    }

    /// Reads the next piece of the client's message into `out` through `codec`; `Ok(true)` once
    /// the end of data is read. A client that leaves (or idles out) mid-message ends the
    /// transaction and the session, an idle one hearing `421` first; nothing of the message
    /// was acknowledged.
    pub(super) async fn data_piece(
        &mut self,
        codec: &mut DotCodec,
        out: &mut Vec<u8>,
    ) -> Result<bool, Flow> {
        let chunk = match self.conn.data_chunk().await {
            Ok(c) => c,
            Err(e) => {
                self.txn = None;
                if let ReadError::Idle = e {
                    self.reply(421, (4, 4, 2), "Idle timeout, closing connection");
                }
                return Err(Flow::Close);
            }
        };
        let (used, end) = codec.feed(chunk, out);
        self.conn.consume(used);
        Ok(end)
    }

    /// `552` for a message past `Max_Message_Size` (announced at MAIL, or found in DATA).
    pub(super) fn refuse_oversized(&mut self) {
        self.reply(
            552,
            (5, 3, 4),
            "Message size exceeds fixed maximum message size",
        );
    }

    /// The trace header this server adds (RFC 5321 §4.4), with the RFC 3848 protocol name. The
    /// HELO name and an XCLIENT NAME are the client's words: `HeaderField` keeps them inside
    /// the field whatever they hold.
    pub fn received_header(&self, id: &str) -> String {
        let helo = self.helo.as_ref();
        let mut proto = String::from(if helo.is_some_and(|h| !h.esmtp) {
            "SMTP"
        } else {
            "ESMTP"
        });
        if proto == "ESMTP" {
            if self.tls.is_some() {
                proto.push('S');
            }
            if self.auth.is_some() {
                proto.push('A');
            }
        }
        let mut f = HeaderField::new("Received");
        f.push("from ")
            .push(helo.map_or("unknown", |h| h.name.as_str()));
        match self.client.ip {
            Some(ip) => {
                f.push(" (");
                if let Some(name) = &self.client_name {
                    f.push(name).push(" ");
                }
                f.push(&format!("[{ip}])"));
            }
            None => {
                f.push(" (unix socket)");
            }
        }
        f.fold()
            .push("by ")
            .push(&self.scope.hostname)
            .push(" (smtp-auth-proxy)");
        if let Some(t) = &self.tls {
            f.push(" (").push(t).push(")");
        }
        f.push(&format!(" with {proto} id {id};"))
            .fold()
            .push(&rfc5322_date(SystemTime::now()));
        f.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, bool, u64, usize) {
        let mut c = DotCodec::default();
        let mut out = Vec::new();
        let mut used_last = 0;
        for chunk in chunks {
            let (used, end) = c.feed(chunk, &mut out);
            used_last = used;
            if end {
                return (out, true, c.size, used_last);
            }
        }
        (out, false, c.size, used_last)
    }

    #[test]
    fn plain_message_and_unstuffing() {
        let (out, end, size, used) = run(&[b"a\r\n..b\r\n.\r\nQUIT\r\n"]);
        assert!(end);
        assert_eq!(out, b"a\r\n..b\r\n");
        assert_eq!(size, 7);
        assert_eq!(used, 11);
    }

    #[test]
    fn end_split_across_chunks() {
        let (out, end, _, _) = run(&[b"a\r", b"\n.", b"\r", b"\n"]);
        assert!(end);
        assert_eq!(out, b"a\r\n");
    }

    #[test]
    fn smuggling_forms_are_content() {
        // `LF . LF`, `LF . CRLF` and `CR . CR` never end the data here, and are passed on so
        // that the next hop cannot take them for the end either.
        let (out, end, _, _) = run(&[b"a\n.\nb\n.\r\nc\r.\rd\r\n.\r\n"]);
        assert!(end);
        assert_eq!(out, b"a\r\n..\r\nb\r\n..\r\nc\r\n..\r\nd\r\n");
    }

    #[test]
    fn dot_cr_then_content() {
        let (out, end, _, _) = run(&[b".\rx\r\n.\r\n"]);
        assert!(end);
        assert_eq!(out, b"..\r\nx\r\n");
    }
}
