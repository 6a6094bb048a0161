//! The envelope of a spooled message: everything delivery and reporting need besides the
//! content, in the words of RFC 5321 and the DSN extension (RFC 3461).

use super::id::MessageId;
use std::net::IpAddr;
use std::time::SystemTime;

/// A message's envelope. Immutable once stored, except the recipients' states, which the
/// spool keeps apart (see [`RcptState`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// From [`Spool::next_id`](super::Spool::next_id); the file's name.
    pub id: MessageId,
    /// When the message was received (its arrival time for `Message_Expiration`).
    pub received: SystemTime,
    /// The reverse path without angle brackets; empty for the null sender `<>`.
    pub sender: String,
    /// The forward paths, in RCPT order; indexes into this list name recipients everywhere.
    pub recipients: Vec<Recipient>,
    /// MAIL `RET=` (RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// MAIL `ENVID=`, decoded from xtext.
    pub envid: Option<String>,
    /// MAIL `BODY=` (RFC 6152).
    pub body: Body,
    /// Where and how the message came in.
    pub origin: Origin,
}

/// One forward path with its DSN parameters and its delivery state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The forward path without angle brackets.
    pub address: String,
    /// RCPT `NOTIFY=`.
    pub notify: Notify,
    /// RCPT `ORCPT=` as given (`addr-type;xtext`), passed on where the next hop offers DSN.
    pub orcpt: Option<String>,
    /// As stored in the file's state bytes, not in the checksummed envelope.
    pub state: RcptState,
}

/// Where a recipient stands. Only `Pending` recipients are tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RcptState {
    /// Still to be delivered (also what a damaged state byte reads as).
    Pending,
    /// Accepted by the next hop.
    Delivered,
    /// Permanently failed (and bounced, or to be bounced, by the queue manager).
    Failed,
}

/// RCPT `NOTIFY=` (RFC 3461 §4.1) as a set of flags; empty when the client gave none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Notify(pub u8);

impl Notify {
    /// `NOTIFY=SUCCESS`.
    pub const SUCCESS: u8 = 1;
    /// `NOTIFY=FAILURE`.
    pub const FAILURE: u8 = 2;
    /// `NOTIFY=DELAY`.
    pub const DELAY: u8 = 4;
    /// `NOTIFY=NEVER` (alone, by RFC 3461).
    pub const NEVER: u8 = 8;

    /// No `NOTIFY=` was given (the server's default applies: failures and delays).
    pub fn unspecified(self) -> bool {
        self.0 == 0
    }

    /// Whether `flag` (one of the constants) is set.
    pub fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }
}

/// MAIL `RET=`: what a bounce carries of the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: its headers only.
    Hdrs,
}

/// MAIL `BODY=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Body {
    /// No `BODY=` given.
    #[default]
    Unspecified,
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// Where and how the message came in: for `Received:`, outbound XCLIENT, mainlog and bounces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The effective client address (PROXY, XCLIENT or XREMOTEIP applied); none on a Unix socket.
    pub client_ip: Option<IpAddr>,
    /// The client's port, with its address.
    pub client_port: Option<u16>,
    /// The HELO/EHLO name the client gave.
    pub helo: Option<String>,
    /// The client's host name (XCLIENT `NAME=`).
    pub client_name: Option<String>,
    /// The user the client authenticated as.
    pub auth_user: Option<String>,
    /// The inbound session's id, as the listener logs it.
    pub session: String,
    /// The Listen address the message came in on.
    pub listen: String,
    /// The client said EHLO.
    pub esmtp: bool,
    /// The session was under TLS.
    pub tls: bool,
}

/// Retry bookkeeping kept with the message, updated in place after each attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptMeta {
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When to try next; `None`: as soon as possible. Stored to the second.
    pub next_attempt: Option<SystemTime>,
    /// The last transient failure's text, at most [`MAX_LAST_ERROR`] bytes (longer text is
    /// cut at a character boundary; CR and LF become spaces, since it is remote text that
    /// ends up in log lines and queue listings).
    pub last_error: Option<String>,
}

/// The longest `last_error` kept, in bytes.
pub const MAX_LAST_ERROR: usize = 486;

impl Envelope {
    /// Indexes of the recipients still to be delivered.
    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state == RcptState::Pending)
            .map(|(i, _)| i)
    }
}
