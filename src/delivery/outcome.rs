//! What came of a delivery attempt: per recipient, delivered / transient / permanent with the
//! reply that said so, and what Momentum's mainlog records about the attempt (remote address,
//! bytes sent, the stage reached).

use crate::reply::{Enhanced, Reply};
use std::fmt;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Delivered,
    /// Try again later (4xx, timeouts, connection failures, DNS trouble).
    Transient,
    /// Give up and bounce (5xx, null MX, no such domain).
    Permanent,
}

/// Where in the SMTP conversation something happened, numbered as Momentum's mainlog
/// "Connection Stages" are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    NotConnected = 0,
    Idle = 1,
    MailFrom = 2,
    AfterMailFrom = 3,
    RcptTo = 4,
    AfterRcptTo = 5,
    Data = 6,
    AfterData = 7,
    Body = 8,
    Confirmation = 9,
    Ehlo = 10,
    AfterEhlo = 11,
    Banner = 12,
    Rset = 13,
    AfterRset = 14,
    Starttls = 15,
    AfterStarttls = 16,
    TlsHandshake = 17,
    Xclient = 19,
    AfterXclient = 20,
}

impl Stage {
    /// The mainlog's number for the stage.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The outcome for one recipient (or, from [`Failure`], for every recipient of a message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub disposition: Disposition,
    /// The reply code: the next hop's, or ours for failures of our own (`451` for a lost
    /// connection, `550` for a null MX).
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    /// The reply text, lines joined by spaces (no CR or LF).
    pub text: String,
    pub stage: Stage,
    /// Whether code and text are the next hop's reply (RFC 3464 `Diagnostic-Code: smtp;`)
    /// rather than our own words.
    pub remote: bool,
}

impl Outcome {
    /// The next hop's reply, judged by its code.
    pub fn from_reply(reply: &Reply, stage: Stage) -> Outcome {
        // A 3xx where a final reply was due is no verdict at all: try again.
        let disposition = match reply.code {
            200..=299 => Disposition::Delivered,
            500..=599 => Disposition::Permanent,
            _ => Disposition::Transient,
        };
        Outcome {
            disposition,
            code: reply.code,
            enhanced: reply.enhanced,
            text: reply.text(),
            stage,
            remote: true,
        }
    }

    /// A temporary failure of our own (`451 4.x.x`).
    pub fn transient(enhanced: Enhanced, text: impl Into<String>, stage: Stage) -> Outcome {
        Outcome::local(Disposition::Transient, 451, enhanced, text, stage)
    }

    /// A permanent failure of our own (`550 5.x.x`, or `552` for size).
    pub fn permanent(
        code: u16,
        enhanced: Enhanced,
        text: impl Into<String>,
        stage: Stage,
    ) -> Outcome {
        Outcome::local(Disposition::Permanent, code, enhanced, text, stage)
    }

    fn local(
        disposition: Disposition,
        code: u16,
        enhanced: Enhanced,
        text: impl Into<String>,
        stage: Stage,
    ) -> Outcome {
        let text: String = text.into();
        Outcome {
            disposition,
            code,
            enhanced: Some(enhanced),
            // Our texts quote host names and replies: never let one carry a line break.
            text: text.replace(['\r', '\n'], " "),
            stage,
            remote: false,
        }
    }
}

impl fmt::Display for Outcome {
    /// `550 5.1.1 text`, as the mainlog's error field and a DSN's diagnostic show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {e} {}", self.code, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

/// The result of one message on one connection.
#[derive(Clone, Debug)]
pub struct MessageOutcome {
    /// One per recipient of the message, in its order.
    pub recipients: Vec<Outcome>,
    /// The address of the next hop that answered.
    pub remote: SocketAddr,
    /// Bytes written for this message: commands and content.
    pub bytes_sent: u64,
    /// Whether the next hop offered DSN, so NOTIFY/ORCPT/RET/ENVID went with the message;
    /// when it did not, RFC 3461 §4.1 has a `relayed` notice sent to senders who asked for
    /// NOTIFY=SUCCESS.
    pub dsn_passed: bool,
    /// Whether the session was encrypted.
    pub tls: bool,
}

/// A destination that could not be reached at all: no route, or no next hop answered.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What every recipient of the messages for it gets.
    pub outcome: Outcome,
    /// The last address tried, if any.
    pub remote: Option<SocketAddr>,
}
