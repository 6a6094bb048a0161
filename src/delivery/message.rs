//! What delivery is given for one message: the envelope as the next hop must see it (with
//! the DSN parameters of RFC 3461), the original client for XCLIENT, and the content.

use crate::spool::Content;
use std::net::IpAddr;

/// One message to deliver to one destination domain.
#[derive(Clone, Debug)]
pub struct OutboundMessage {
    /// The queue's message id, for logs.
    pub id: String,
    /// The envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// The recipients to attempt on this connection, all in one destination domain. Outcomes
    /// come back in this order.
    pub recipients: Vec<Recipient>,
    /// `RET=` of the original MAIL (RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// `ENVID=` of the original MAIL, decoded from xtext (RFC 3461 §4.4).
    pub envid: Option<String>,
    /// `BODY=` of the original MAIL (RFC 6152).
    pub body: Option<Body>,
    /// Who sent the message to us, for outbound XCLIENT.
    pub origin: Origin,
    /// The message as it is to be sent: CRLF line ends, not dot-stuffed.
    pub content: Content,
}

/// One recipient with its DSN parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address, without angle brackets.
    pub address: String,
    /// `NOTIFY=` (RFC 3461 §4.1); `None` when the client gave none.
    pub notify: Option<Notify>,
    /// `ORCPT=`, decoded: `rfc822;user@example.com` (RFC 3461 §4.2).
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

/// `NOTIFY=NEVER`, or any of SUCCESS, FAILURE, DELAY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    Never,
    On {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

impl Notify {
    /// The parameter value: `NEVER` or `SUCCESS,FAILURE,DELAY` in that order.
    pub fn value(self) -> String {
        match self {
            Notify::Never => "NEVER".into(),
            Notify::On {
                success,
                failure,
                delay,
            } => [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, w)| *w)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// `RET=FULL` or `RET=HDRS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// `BODY=7BIT` or `BODY=8BITMIME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// The client that gave us the message. Every field may be unknown: a message we generated
/// (a bounce) has none of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    /// The client's own name for itself, from its HELO/EHLO.
    pub helo: Option<String>,
    /// Whether it said EHLO (ESMTP) rather than HELO.
    pub esmtp: bool,
    /// The client's verified host name, when one is known (from an XCLIENT in front of us).
    pub client_name: Option<String>,
    /// The user it authenticated as.
    pub auth_user: Option<String>,
}
