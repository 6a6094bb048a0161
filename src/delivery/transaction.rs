//! One mail transaction on an open connection: XCLIENT for the message's client, then MAIL,
//! RCPT and DATA pipelined in one write when the next hop offers PIPELINING (RFC 2920), BDAT
//! when it offers CHUNKING (RFC 3030), SIZE/BODY/SMTPUTF8 and the DSN parameters when
//! offered; and an outcome for every recipient.

use super::content::{self, Stuffer};
use super::message::{Body, OutboundMessage, Recipient, Ret};
use super::outcome::{Disposition, MessageOutcome, Outcome, Stage};
use super::session::{Outbound, Xclient};
use crate::model::routing::OutboundXclient;
use crate::reply::{Enhanced, Reply};
use crate::xtext;
use std::time::Duration;

/// Content up to this size goes in the same write as MAIL and RCPT when the next hop offers
/// both PIPELINING and CHUNKING: one round trip per message. A larger message waits for the
/// RCPT replies, so that it is not sent for nothing when every recipient is refused.
pub const INLINE_BDAT: usize = 64 * 1024;

/// What a pipelined batch expects back, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    Bdat,
}

impl Outbound {
    /// Delivers one message to the recipients it lists, all in this connection's domain.
    /// Every recipient gets an outcome; a connection that fails makes the recipients still
    /// open transient, and [`Outbound::is_usable`] false.
    pub async fn deliver(&mut self, msg: &OutboundMessage) -> MessageOutcome {
        let start = self.conn.sent;
        let mut dsn_passed = false;
        let fresh = if self.attempted > 0 && self.usable && self.conn.is_stale().await {
            // The next hop closed this idle connection (its timeout): a new one, same address.
            self.reconnect().await
        } else {
            Ok(())
        };
        self.attempted += 1;
        let result = match fresh {
            Ok(()) => self.transact(msg, &mut dsn_passed).await,
            Err(o) => Err(o),
        };
        let recipients = match result {
            Ok(outcomes) => outcomes,
            Err(outcome) => vec![outcome; msg.recipients.len()],
        };
        // Momentum's Max_Deliveries_Per_Connection counts successful deliveries.
        if recipients
            .iter()
            .any(|o| o.disposition == Disposition::Delivered)
        {
            self.accepted += 1;
        }
        MessageOutcome {
            recipients,
            remote: self.conn.peer,
            bytes_sent: self.conn.sent.saturating_sub(start),
            dsn_passed,
            tls: self.tls,
        }
    }

    /// The transaction; `Err` is one outcome for every recipient.
    async fn transact(
        &mut self,
        msg: &OutboundMessage,
        dsn_passed: &mut bool,
    ) -> Result<Vec<Outcome>, Outcome> {
        if !self.usable {
            return Err(Outcome::transient(
                Enhanced(4, 4, 2),
                format!(
                    "connection to {} [{}] is no longer usable",
                    self.hop, self.conn.peer
                ),
                Stage::Idle,
            ));
        }
        if msg.recipients.is_empty() {
            return Ok(Vec::new());
        }
        self.check_envelope(msg)?;
        if self.settings.xclient != OutboundXclient::No {
            let mut step = self.apply_xclient(&msg.origin).await?;
            if step == Xclient::NeedsNewConnection {
                self.reconnect().await?;
                step = self.apply_xclient(&msg.origin).await?;
            }
            if step == Xclient::NeedsNewConnection {
                self.usable = false;
                return Err(Outcome::transient(
                    Enhanced(4, 7, 0),
                    format!("{} would not take XCLIENT for this message", self.hop),
                    Stage::Xclient,
                ));
            }
        }
        let size = msg.content.len() as u64;
        if let Some(limit) = self.ext.size
            && limit > 0
            && size > limit
        {
            return Err(Outcome::permanent(
                552,
                Enhanced(5, 3, 4),
                format!(
                    "message of {size} bytes exceeds the {limit} bytes {} takes",
                    self.hop
                ),
                Stage::AfterEhlo,
            ));
        }
        *dsn_passed = self.ext.dsn;
        let mail = self.mail_line(msg);
        let rcpts: Vec<String> = msg.recipients.iter().map(|r| self.rcpt_line(r)).collect();
        if self.ext.pipelining {
            self.pipelined(msg, &mail, &rcpts).await
        } else {
            self.in_turn(msg, &mail, &rcpts).await
        }
    }

    /// Refuses what must never reach the wire: a line break in an address, or an
    /// internationalised address for a next hop without SMTPUTF8 (RFC 6531 §3.4).
    fn check_envelope(&self, msg: &OutboundMessage) -> Result<(), Outcome> {
        let addresses = std::iter::once(msg.sender.as_str())
            .chain(msg.recipients.iter().map(|r| r.address.as_str()));
        for a in addresses.clone() {
            if a.bytes()
                .any(|b| b == b'\r' || b == b'\n' || b == 0 || b == b'<' || b == b'>')
            {
                return Err(Outcome::permanent(
                    553,
                    Enhanced(5, 1, 3),
                    "address contains characters SMTP cannot carry",
                    Stage::Idle,
                ));
            }
        }
        if !self.ext.smtputf8 && addresses.clone().any(|a| !a.is_ascii()) {
            return Err(Outcome::permanent(
                553,
                Enhanced(5, 6, 7),
                format!(
                    "{} does not offer SMTPUTF8 for a non-ASCII address",
                    self.hop
                ),
                Stage::AfterEhlo,
            ));
        }
        Ok(())
    }

    fn mail_line(&self, msg: &OutboundMessage) -> String {
        let mut line = format!("MAIL FROM:<{}>", msg.sender);
        if self.ext.size.is_some() {
            line.push_str(&format!(" SIZE={}", msg.content.len()));
        }
        let body = msg.body.or_else(|| {
            (self.settings.send_8bitmime && content::has_8bit(&msg.content))
                .then_some(Body::EightBitMime)
        });
        if self.ext.eightbitmime
            && let Some(body) = body
        {
            line.push_str(match body {
                Body::SevenBit => " BODY=7BIT",
                Body::EightBitMime => " BODY=8BITMIME",
            });
        }
        let utf8 = !msg.sender.is_ascii() || msg.recipients.iter().any(|r| !r.address.is_ascii());
        if utf8 {
            line.push_str(" SMTPUTF8");
        }
        if self.ext.dsn {
            if let Some(ret) = msg.ret {
                line.push_str(match ret {
                    Ret::Full => " RET=FULL",
                    Ret::Hdrs => " RET=HDRS",
                });
            }
            if let Some(envid) = &msg.envid {
                line.push_str(" ENVID=");
                line.push_str(&xtext::encode(envid));
            }
        }
        line
    }

    fn rcpt_line(&self, r: &Recipient) -> String {
        let mut line = format!("RCPT TO:<{}>", r.address);
        if self.ext.dsn {
            if let Some(n) = r.notify {
                line.push_str(" NOTIFY=");
                line.push_str(&n.value());
            }
            if let Some(orcpt) = &r.orcpt {
                let (kind, addr) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
                line.push_str(&format!(" ORCPT={kind};{}", xtext::encode(addr)));
            }
        }
        line
    }

    /// RFC 2920: RSET (if needed), MAIL, every RCPT and DATA, or BDAT with a small message,
    /// in one write; then the replies in order.
    async fn pipelined(
        &mut self,
        msg: &OutboundMessage,
        mail: &str,
        rcpts: &[String],
    ) -> Result<Vec<Outcome>, Outcome> {
        let t = self.settings.timeouts;
        let mut batch = Vec::with_capacity(256);
        let mut expect = Vec::with_capacity(rcpts.len() + 3);
        if self.dirty {
            batch.extend_from_slice(b"RSET\r\n");
            expect.push(Expect::Rset);
        }
        push_line(&mut batch, mail);
        expect.push(Expect::Mail);
        for (i, r) in rcpts.iter().enumerate() {
            push_line(&mut batch, r);
            expect.push(Expect::Rcpt(i));
        }
        let content = &msg.content[..];
        let inline_bdat = self.ext.chunking && content.len() <= INLINE_BDAT;
        if inline_bdat {
            let tail = content::bdat_tail(content);
            push_line(
                &mut batch,
                &format!("BDAT {} LAST", content.len() + tail.len()),
            );
            batch.extend_from_slice(content);
            batch.extend_from_slice(tail);
            expect.push(Expect::Bdat);
        } else if !self.ext.chunking {
            batch.extend_from_slice(b"DATA\r\n");
            expect.push(Expect::Data);
        }
        // The transaction is open from here until its final reply.
        self.dirty = true;
        if let Err(e) = self.conn.write(&batch, t.mailfrom.max(t.body)).await {
            return Err(self.broken(&e, Stage::MailFrom));
        }
        let mut mail_reply = None;
        let mut rcpt_replies: Vec<Option<Reply>> = vec![None; rcpts.len()];
        let mut data_reply = None;
        let mut bdat_reply = None;
        for e in &expect {
            let (limit, stage) = match e {
                Expect::Rset => (t.rset, Stage::Rset),
                Expect::Mail => (t.mailfrom, Stage::MailFrom),
                Expect::Rcpt(_) => (t.rcptto, Stage::RcptTo),
                Expect::Data => (t.rcptto, Stage::Data),
                Expect::Bdat => (t.body, Stage::Confirmation),
            };
            if expect.len() > 1 {
                self.conn.ack_promptly();
            }
            let reply = match self.conn.reply(limit).await {
                Ok(r) => r,
                Err(err) => {
                    let lost = self.broken(&err, stage);
                    return Ok(settle(msg, mail_reply.as_ref(), &rcpt_replies, &lost));
                }
            };
            if reply.code == 421 {
                // The next hop is closing: what it said is the answer for everything open.
                self.usable = false;
                let closing = Outcome::from_reply(&reply, stage);
                return Ok(settle(msg, mail_reply.as_ref(), &rcpt_replies, &closing));
            }
            match e {
                Expect::Rset => {
                    if !reply.is_positive() {
                        self.usable = false;
                        return Err(self.refused_rset(&reply));
                    }
                }
                Expect::Mail => mail_reply = Some(reply),
                Expect::Rcpt(i) => rcpt_replies[*i] = Some(reply),
                Expect::Data => data_reply = Some(reply),
                Expect::Bdat => bdat_reply = Some(reply),
            }
        }
        let mail_reply = mail_reply.expect("MAIL was sent");
        self.finish(msg, &mail_reply, &rcpt_replies, data_reply, bdat_reply)
            .await
    }

    /// Without PIPELINING: one command, one reply.
    async fn in_turn(
        &mut self,
        msg: &OutboundMessage,
        mail: &str,
        rcpts: &[String],
    ) -> Result<Vec<Outcome>, Outcome> {
        let t = self.settings.timeouts;
        if self.dirty {
            let r = self.exchange("RSET", t.rset, Stage::Rset).await?;
            if !r.is_positive() {
                self.usable = false;
                return Err(self.refused_rset(&r));
            }
            self.dirty = false;
        }
        self.dirty = true;
        let mail_reply = self.exchange(mail, t.mailfrom, Stage::MailFrom).await?;
        let mut rcpt_replies: Vec<Option<Reply>> = vec![None; rcpts.len()];
        if mail_reply.is_positive() {
            for (i, line) in rcpts.iter().enumerate() {
                match self.exchange(line, t.rcptto, Stage::RcptTo).await {
                    Ok(r) if r.code == 421 => {
                        let closing = Outcome::from_reply(&r, Stage::RcptTo);
                        return Ok(settle(msg, Some(&mail_reply), &rcpt_replies, &closing));
                    }
                    Ok(r) => rcpt_replies[i] = Some(r),
                    Err(lost) => return Ok(settle(msg, Some(&mail_reply), &rcpt_replies, &lost)),
                }
            }
        }
        let accepted = rcpt_replies.iter().flatten().any(Reply::is_positive);
        let mut data_reply = None;
        if mail_reply.is_positive() && accepted && !self.ext.chunking {
            match self.exchange("DATA", t.rcptto, Stage::Data).await {
                Ok(r) => data_reply = Some(r),
                Err(lost) => return Ok(settle(msg, Some(&mail_reply), &rcpt_replies, &lost)),
            }
        }
        self.finish(msg, &mail_reply, &rcpt_replies, data_reply, None)
            .await
    }

    /// After the envelope's replies: sends the content (DATA after a 354, or BDAT), reads the
    /// final reply, and gives each recipient its outcome.
    async fn finish(
        &mut self,
        msg: &OutboundMessage,
        mail: &Reply,
        rcpts: &[Option<Reply>],
        data: Option<Reply>,
        bdat: Option<Reply>,
    ) -> Result<Vec<Outcome>, Outcome> {
        let t = self.settings.timeouts;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
        let mut accepted = Vec::new();
        for (i, r) in rcpts.iter().enumerate() {
            match r {
                _ if !mail.is_positive() => {
                    outcomes[i] = Some(Outcome::from_reply(mail, Stage::MailFrom))
                }
                Some(r) if r.is_positive() => accepted.push(i),
                Some(r) => outcomes[i] = Some(Outcome::from_reply(r, Stage::RcptTo)),
                None => {}
            }
        }
        let final_reply: Result<Reply, Outcome> = if accepted.is_empty() || !mail.is_positive() {
            // Nothing to send. A DATA that was answered 354 anyway needs its end marker.
            if data.as_ref().is_some_and(|d| d.code == 354) {
                let _ = self.conn.write(b".\r\n", t.body).await;
                let _ = self.conn.reply(t.body).await;
            }
            return Ok(outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| self.lost("no reply to RCPT", Stage::RcptTo)))
                .collect());
        } else if let Some(b) = bdat {
            Ok(b)
        } else if self.ext.chunking {
            self.send_bdat(&msg.content).await
        } else {
            match data {
                Some(d) if d.code == 354 => self.send_data(&msg.content).await,
                Some(d) if d.code >= 400 => Err(Outcome::from_reply(&d, Stage::Data)),
                // Anything else where 354 was due: out of step, and nothing was delivered.
                Some(d) => {
                    let mut o = Outcome::from_reply(&d, Stage::Data);
                    o.disposition = Disposition::Transient;
                    self.usable = false;
                    Err(o)
                }
                None => Err(self.lost("no reply to DATA", Stage::Data)),
            }
        };
        let last = match final_reply {
            Ok(r) => {
                // The final reply ends the transaction, whatever it says.
                self.dirty = false;
                if r.code == 421 {
                    self.usable = false;
                }
                if (300..400).contains(&r.code) {
                    // Not a final reply: the conversation is out of step.
                    self.usable = false;
                }
                Outcome::from_reply(&r, Stage::Confirmation)
            }
            Err(o) => o,
        };
        for i in accepted {
            outcomes[i] = Some(last.clone());
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| last.clone()))
            .collect())
    }

    /// The content, dot-stuffed, piece by piece, then the final reply.
    async fn send_data(&mut self, content: &[u8]) -> Result<Reply, Outcome> {
        let t = self.settings.timeouts.body;
        let mut stuffer = Stuffer::new(content);
        // Sized for the message, not the largest piece: a 64 KB buffer per small message costs
        // the allocator a consolidation pass each time it is freed.
        let mut piece = Vec::with_capacity(content.len().min(content::PIECE) + 8);
        while stuffer.next(&mut piece) {
            if let Err(e) = self.conn.write(&piece, t).await {
                return Err(self.broken(&e, Stage::Body));
            }
        }
        self.conn
            .reply(t)
            .await
            .map_err(|e| self.broken(&e, Stage::Confirmation))
    }

    /// `BDAT n LAST` and the content as it is, then the final reply.
    async fn send_bdat(&mut self, content: &[u8]) -> Result<Reply, Outcome> {
        let t = self.settings.timeouts.body;
        let tail = content::bdat_tail(content);
        let head = format!("BDAT {} LAST\r\n", content.len() + tail.len());
        if let Err(e) = self.conn.write(head.as_bytes(), t).await {
            return Err(self.broken(&e, Stage::Body));
        }
        for piece in content.chunks(content::PIECE) {
            if let Err(e) = self.conn.write(piece, t).await {
                return Err(self.broken(&e, Stage::Body));
            }
        }
        if !tail.is_empty()
            && let Err(e) = self.conn.write(tail, t).await
        {
            return Err(self.broken(&e, Stage::Body));
        }
        self.conn
            .reply(t)
            .await
            .map_err(|e| self.broken(&e, Stage::Confirmation))
    }

    /// One command and its reply within `limit`.
    async fn exchange(
        &mut self,
        line: &str,
        limit: Duration,
        stage: Stage,
    ) -> Result<Reply, Outcome> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        push_line(&mut bytes, line);
        if let Err(e) = self.conn.write(&bytes, limit).await {
            return Err(self.broken(&e, stage));
        }
        let reply = self
            .conn
            .reply(limit)
            .await
            .map_err(|e| self.broken(&e, stage))?;
        if reply.code == 421 {
            self.usable = false;
        }
        Ok(reply)
    }

    fn refused_rset(&mut self, reply: &Reply) -> Outcome {
        let mut o = Outcome::from_reply(reply, Stage::Rset);
        o.disposition = Disposition::Transient;
        o
    }

    fn lost(&mut self, what: &str, stage: Stage) -> Outcome {
        self.usable = false;
        Outcome::transient(
            Enhanced(4, 4, 2),
            format!("{} [{}]: {what}", self.hop, self.conn.peer),
            stage,
        )
    }
}

fn push_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Outcomes when the conversation ended early with `end`: replies already read keep their
/// verdicts (a refused recipient stays refused); everything still open gets `end`.
fn settle(
    msg: &OutboundMessage,
    mail: Option<&Reply>,
    rcpts: &[Option<Reply>],
    end: &Outcome,
) -> Vec<Outcome> {
    (0..msg.recipients.len())
        .map(|i| match (mail, rcpts.get(i).and_then(Option::as_ref)) {
            (Some(m), _) if !m.is_positive() => Outcome::from_reply(m, Stage::MailFrom),
            (_, Some(r)) if !r.is_positive() => Outcome::from_reply(r, Stage::RcptTo),
            _ => end.clone(),
        })
        .collect()
}
