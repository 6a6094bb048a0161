//! The synchronous bridge to the AUTH upstream (`deliver_through_upstream = true` in
//! `smtp_auth_proxy`): mail after a pass goes through the very upstream session that accepted
//! the AUTH, command for command, and the client's MAIL, RCPT and end-of-DATA replies are the
//! upstream's own. Nothing is acknowledged that the upstream has not taken; an upstream that
//! cannot be reached, or fails mid-way, gives `451 4.4.1` and the client retries.
//!
//! Every other message goes to the spool (`store.rs`) and is delivered by the queue.

use super::data::DotCodec;
use super::session::{Flow, Session, Transaction};
use crate::log_warning;
use crate::metrics::NextHop;
use crate::reply::{Enhanced, Reply};
use crate::spool::Body;

/// Bytes gathered before a write to the upstream: fewer system calls for large messages.
const FORWARD_CHUNK: usize = 64 * 1024;

pub fn unavailable() -> Reply {
    Reply::new(
        451,
        Enhanced(4, 4, 1),
        "Next hop unavailable, try again later",
    )
}

impl Session {
    /// Whether this session's mail goes through the AUTH upstream's session.
    pub fn bridged(&self) -> bool {
        self.hop.is_some()
    }

    /// MAIL through the bridge: the upstream is asked, with the SIZE and BODY it understands.
    pub async fn mail_to_upstream(&mut self, mut txn: Transaction) {
        let Some(hop) = self.hop.as_mut() else {
            self.conn.send(&unavailable());
            return;
        };
        let mut line = format!("MAIL FROM:{}", txn.from);
        if let Some(n) = txn.mail.size
            && hop.extension("SIZE").is_some()
        {
            line.push_str(&format!(" SIZE={n}"));
        }
        let body = match txn.mail.body {
            Body::SevenBit => Some("7BIT"),
            Body::EightBitMime => Some("8BITMIME"),
            Body::Unspecified => None,
        };
        if let Some(b) = body
            && hop.extension("8BITMIME").is_some()
        {
            line.push_str(&format!(" BODY={b}"));
        }
        if let Some(r) = self.hop_command(&line).await {
            if r.is_positive() {
                txn.relayed = true;
                self.txn = Some(txn);
            }
            self.send_relayed(r);
        }
    }

    /// Sends one envelope command to the upstream and returns its reply for the caller to pass
    /// on. A `421` closes the bridge. No upstream, or one that failed, gets the client
    /// `451 4.4.1` here, and `None`.
    pub async fn hop_command(&mut self, line: &str) -> Option<Reply> {
        let Some(hop) = self.hop.as_mut() else {
            self.conn.send(&unavailable());
            return None;
        };
        let result = hop.command(line).await;
        let code = result.as_ref().ok().map(|r| r.code);
        self.rt.metrics.next_hop(NextHop::of_command(line), code);
        match result {
            Ok(r) => {
                if r.code == 421 {
                    self.abandon_hop().await;
                }
                Some(r)
            }
            Err(e) => {
                let verb = line.split(' ').next().unwrap_or(line);
                log_warning!("session {}: next hop {verb}: {e}", self.id);
                self.abandon_hop().await;
                self.conn.send(&unavailable());
                None
            }
        }
    }

    /// Passes a next hop's reply to the client. A reply without an enhanced code gets the
    /// generic one of its class, for a client that was offered ENHANCEDSTATUSCODES.
    pub fn send_relayed(&mut self, mut r: Reply) {
        if r.enhanced.is_none() {
            let class = (r.code / 100) as u8;
            if matches!(class, 2 | 4 | 5) {
                r.enhanced = Some(Enhanced(class, 0, 0));
            }
        }
        self.conn.send(&r);
    }

    /// DATA through the bridge: the message streams to the upstream as it arrives, and the
    /// client's final reply is the upstream's.
    pub async fn data_to_upstream(&mut self) -> Flow {
        let Some(hop) = self.hop.as_mut() else {
            self.txn = None;
            self.conn.send(&unavailable());
            return Flow::Continue;
        };
        let result = hop.command("DATA").await;
        let code = result.as_ref().ok().map(|r| r.code);
        self.rt.metrics.next_hop(NextHop::Data, code);
        match result {
            Ok(r) if r.code == 354 => {}
            Ok(r) => {
                self.send_relayed(r);
                self.reset_transaction().await;
                return Flow::Continue;
            }
            Err(e) => {
                log_warning!("session {}: next hop DATA: {e}", self.id);
                self.hop = None;
                self.txn = None;
                self.conn.send(&unavailable());
                return Flow::Continue;
            }
        }
        self.conn
            .send(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        let id = format!("{}.{}", self.id, self.messages + 1);
        let mut out = self.received_header(&id).into_bytes();
        let mut codec = DotCodec::default();
        let max = self.scope.max_message_size;
        let mut too_big = false;
        let mut hop_failed = false;
        loop {
            let end = match self.data_piece(&mut codec, &mut out).await {
                Ok(end) => end,
                Err(flow) => {
                    // The client left mid-message: dropping the upstream's connection without
                    // the final dot makes it discard the partial message.
                    self.hop = None;
                    return flow;
                }
            };
            if end {
                // The end-of-data mark goes out with the last bytes: one write, not two.
                out.extend_from_slice(b".\r\n");
            }
            if !too_big && max.is_some_and(|m| codec.size > m) {
                too_big = true;
                self.hop = None;
            }
            if too_big || hop_failed {
                out.clear();
            } else if (end || out.len() >= FORWARD_CHUNK)
                && let Some(hop) = self.hop.as_mut()
            {
                if let Err(e) = hop.write_all(&out).await {
                    log_warning!("session {}: next hop during DATA: {e}", self.id);
                    hop_failed = true;
                    self.hop = None;
                }
                out.clear();
            }
            if end {
                break;
            }
        }
        let txn = self.txn.take().expect("DATA checked there is one");
        if too_big {
            self.refuse_oversized();
            return Flow::Continue;
        }
        let Some(hop) = self.hop.as_mut().filter(|_| !hop_failed) else {
            self.rt.metrics.next_hop(NextHop::Message, None);
            self.conn.send(&unavailable());
            return Flow::Continue;
        };
        let result = hop.read_reply().await;
        let code = result.as_ref().ok().map(|r| r.code);
        self.rt.metrics.next_hop(NextHop::Message, code);
        match result {
            Ok(r) => {
                if r.is_positive() {
                    self.limits.accepted();
                    self.messages += 1;
                    self.rt.metrics.message_relayed(codec.size);
                }
                crate::log_info!(
                    "session {}: message from={} rcpts={} size={} upstream {}: {}",
                    self.id,
                    txn.from,
                    txn.rcpts.len(),
                    codec.size,
                    hop.server,
                    r
                );
                if r.code == 421 {
                    self.hop = None;
                }
                self.send_relayed(r);
            }
            Err(e) => {
                log_warning!("session {}: next hop after DATA: {e}", self.id);
                self.hop = None;
                self.conn.send(&unavailable());
            }
        }
        Flow::Continue
    }
}
