//! Delivery status notifications (RFC 3464): the bounce a sender gets when a recipient failed,
//! and the `relayed` notice RFC 3461 §4.1 owes a sender who asked for NOTIFY=SUCCESS when the
//! next hop could not be told.
//!
//! A report is a `multipart/report` message (RFC 6522) of three parts: a short text for
//! people, the machine-readable `message/delivery-status`, and the original message
//! (`message/rfc822`) or its header (`text/rfc822-headers`) as `RET` asked. Everything that
//! came from outside (addresses, the next hop's reply, the original's header) is placed
//! through [`HeaderField`], so no remote text can add a field or a part.

use crate::date::rfc5322_date;
use crate::header::HeaderField;
use std::fmt::Write as _;
use std::time::SystemTime;

/// Past this size a returned message is cut to its header, as Postfix's `bounce_size_limit`
/// does: a bounce is for telling, not for carrying large attachments back.
pub const FULL_RETURN_LIMIT: usize = 50 * 1024;
/// Remote replies can be long; a field line must stay well under RFC 5322's 998 octets.
const MAX_DIAGNOSTIC: usize = 900;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Passed to a next hop that could not be asked for notifications.
    Relayed,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// What is returned of the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Return {
    Full,
    Headers,
}

/// One recipient's line in the report.
#[derive(Clone, Debug)]
pub struct RecipientReport {
    /// The address as it was given to us.
    pub address: String,
    /// `ORCPT=` as given (`rfc822;user@example`), when the client gave one.
    pub orcpt: Option<String>,
    pub action: Action,
    /// RFC 3463 status, `5.1.1`.
    pub status: (u8, u16, u16),
    /// The next hop's name, when it was reached.
    pub remote_mta: Option<String>,
    /// The next hop's reply (`550 5.1.1 No such user`), when it gave one; else our own words
    /// (`Diagnostic-Code: X-smtp-auth-proxy;`).
    pub diagnostic: String,
    pub remote_diagnostic: bool,
    pub last_attempt: SystemTime,
}

/// Everything a report says.
#[derive(Clone, Debug)]
pub struct Report<'a> {
    /// This host's name (`Reporting-MTA`, and the `MAILER-DAEMON` address).
    pub reporting_mta: &'a str,
    /// The original envelope sender, to whom the report goes.
    pub sender: &'a str,
    /// The original queue id, for the text part and the report's Message-ID.
    pub original_id: &'a str,
    pub envid: Option<&'a str>,
    pub arrival: SystemTime,
    pub recipients: Vec<RecipientReport>,
    /// The original message as it was sent on (CRLF line ends).
    pub original: &'a [u8],
    pub ret: Return,
    /// When this report is made.
    pub now: SystemTime,
}

/// The report as a message, CRLF line ends, ready to spool with the null sender.
pub fn build(r: &Report) -> Vec<u8> {
    let boundary = format!("{}/{}", r.original_id, r.reporting_mta);
    let failed = r.recipients.iter().any(|x| x.action == Action::Failed);
    let subject = if failed {
        "Undelivered Mail Returned to Sender"
    } else if r.recipients.iter().any(|x| x.action == Action::Delayed) {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    };
    let mut out = String::with_capacity(2048 + r.original.len().min(FULL_RETURN_LIMIT));
    field(
        &mut out,
        "From",
        &["Mail Delivery System <MAILER-DAEMON@", r.reporting_mta, ">"],
    );
    field(&mut out, "To", &["<", r.sender, ">"]);
    field(&mut out, "Subject", &[subject]);
    field(&mut out, "Date", &[&rfc5322_date(r.now)]);
    field(
        &mut out,
        "Message-ID",
        &[&format!(
            "<{}.{}.dsn@{}>",
            r.original_id,
            r.now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros()),
            r.reporting_mta
        )],
    );
    // RFC 3834: an automatic reply, which no vacation responder should answer.
    field(&mut out, "Auto-Submitted", &["auto-replied"]);
    field(&mut out, "MIME-Version", &["1.0"]);
    field(
        &mut out,
        "Content-Type",
        &[&format!(
            "multipart/report; report-type=delivery-status; boundary=\"{boundary}\""
        )],
    );
    out.push_str("\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    // The part for people.
    let _ = write!(
        out,
        "--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    );
    let _ = write!(
        out,
        "This is the mail system at host {}.\r\n\r\n",
        one_line(r.reporting_mta)
    );
    out.push_str(if failed {
        "Your message could not be delivered to one or more recipients.\r\nIt is attached below.\r\n\r\n"
    } else {
        "This is a report on your message's delivery, as you asked.\r\n\r\n"
    });
    for x in &r.recipients {
        let _ = write!(
            out,
            "<{}>: {}: {}\r\n",
            one_line(&x.address),
            x.action.word(),
            one_line(&cut(&x.diagnostic, MAX_DIAGNOSTIC))
        );
    }
    out.push_str("\r\n");

    // The part for programs (RFC 3464 §2).
    let _ = write!(
        out,
        "--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
    );
    field(&mut out, "Reporting-MTA", &["dns; ", r.reporting_mta]);
    if let Some(envid) = r.envid {
        field(&mut out, "Original-Envelope-Id", &[envid]);
    }
    field(&mut out, "Arrival-Date", &[&rfc5322_date(r.arrival)]);
    for x in &r.recipients {
        out.push_str("\r\n");
        if let Some(orcpt) = &x.orcpt {
            field(&mut out, "Original-Recipient", &[orcpt]);
        }
        field(&mut out, "Final-Recipient", &["rfc822; ", &x.address]);
        field(&mut out, "Action", &[x.action.word()]);
        let (c, s, d) = x.status;
        field(&mut out, "Status", &[&format!("{c}.{s}.{d}")]);
        if let Some(mta) = &x.remote_mta {
            field(&mut out, "Remote-MTA", &["dns; ", mta]);
        }
        let kind = if x.remote_diagnostic {
            "smtp; "
        } else {
            "X-smtp-auth-proxy; "
        };
        field(
            &mut out,
            "Diagnostic-Code",
            &[kind, &cut(&x.diagnostic, MAX_DIAGNOSTIC)],
        );
        field(
            &mut out,
            "Last-Attempt-Date",
            &[&rfc5322_date(x.last_attempt)],
        );
    }
    out.push_str("\r\n");

    // The original, or its header.
    let header_end = find_header_end(r.original);
    let full = r.ret == Return::Full && r.original.len() <= FULL_RETURN_LIMIT;
    let (ctype, description) = if full {
        ("message/rfc822", "Undelivered Message")
    } else {
        ("text/rfc822-headers", "Undelivered Message Headers")
    };
    let _ = write!(
        out,
        "--{boundary}\r\nContent-Description: {description}\r\nContent-Type: {ctype}\r\n\r\n"
    );
    let mut bytes = out.into_bytes();
    let returned = if full {
        r.original
    } else {
        &r.original[..header_end]
    };
    bytes.extend_from_slice(returned);
    if !returned.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// Appends one field made of `parts`.
fn field(out: &mut String, name: &'static str, parts: &[&str]) {
    let mut f = HeaderField::new(name);
    for p in parts {
        f.push(p);
    }
    out.push_str(&f.finish());
}

/// Where the original's header ends: after its empty line, or the whole message when it has
/// none.
fn find_header_end(m: &[u8]) -> usize {
    if m.starts_with(b"\r\n") {
        return 0;
    }
    m.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(m.len(), |i| i + 2)
}

fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    crate::text::escape_controls(s)
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(ret: Return, original: &[u8]) -> Vec<u8> {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        build(&Report {
            reporting_mta: "edge.example",
            sender: "alice@example.com",
            original_id: "0123456789ABCDEF",
            envid: Some("env-1"),
            arrival: t,
            recipients: vec![RecipientReport {
                address: "bob@remote.example".into(),
                orcpt: Some("rfc822;bob@remote.example".into()),
                action: Action::Failed,
                status: (5, 1, 1),
                remote_mta: Some("mx.remote.example".into()),
                diagnostic: "550 5.1.1 <bob@remote.example>: no such user\r\nInjected: field"
                    .into(),
                remote_diagnostic: true,
                last_attempt: t,
            }],
            original,
            ret,
            now: t,
        })
    }

    #[test]
    fn a_failure_report_has_the_three_parts_and_the_fields_rfc_3464_asks() {
        let original = b"Subject: hello\r\nFrom: alice@example.com\r\n\r\nbody line\r\n";
        let text = String::from_utf8(report(Return::Full, original)).unwrap();
        for needed in [
            "To: <alice@example.com>\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"0123456789ABCDEF/edge.example\"\r\n",
            "Content-Type: message/delivery-status\r\n",
            "Reporting-MTA: dns; edge.example\r\n",
            "Original-Envelope-Id: env-1\r\n",
            "Original-Recipient: rfc822;bob@remote.example\r\nFinal-Recipient: rfc822; bob@remote.example\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.remote.example\r\n",
            "Content-Type: message/rfc822\r\n\r\nSubject: hello\r\nFrom: alice@example.com\r\n\r\nbody line\r\n",
        ] {
            assert!(text.contains(needed), "{needed:?} missing from\n{text}");
        }
        assert!(text.ends_with("\r\n--0123456789ABCDEF/edge.example--\r\n"));
        // The remote text's line break does not become a field of its own.
        assert!(!text.contains("\r\nInjected: field"), "{text}");
        assert!(
            text.contains("no such user\\x0D\\x0AInjected: field"),
            "{text}"
        );
    }

    #[test]
    fn ret_hdrs_and_large_messages_return_the_header_only() {
        let original = b"Subject: hello\r\n\r\nsecret body\r\n";
        let text = String::from_utf8(report(Return::Headers, original)).unwrap();
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: hello\r\n\r\n--"));
        assert!(!text.contains("secret body"));
        let mut big = b"Subject: big\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', FULL_RETURN_LIMIT));
        let text = String::from_utf8(report(Return::Full, &big)).unwrap();
        assert!(text.contains("text/rfc822-headers") && !text.contains("xxxx"));
    }
}
