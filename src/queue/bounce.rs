//! From failed recipients to a bounce in the spool: who gets told (RFC 3461's NOTIFY, and never
//! for the null sender), what the report says (`dsn.rs`), and the new message stored with
//! the null reverse path, as RFC 5321 §4.5.5 requires of a notification.

use super::dsn::{self, Action, RecipientReport, Report, Return};
use crate::delivery::Outcome;
use crate::spool::{
    Body, Envelope, Notify, Origin, Queued, RcptState, Recipient, Ret, Spool, SpoolError,
};
use std::sync::Arc;
use std::time::SystemTime;

/// One recipient's part in a report.
pub struct Reported<'a> {
    pub index: usize,
    pub action: Action,
    pub outcome: &'a Outcome,
    /// The next hop's name, when one answered.
    pub remote_mta: Option<String>,
}

/// Whether the sender of `envelope` is to hear about recipient `index` with `action`: never
/// for a bounce (null sender), as NOTIFY asked otherwise (failures and delays by default,
/// successes only when asked; RFC 3461 §4.1).
pub fn wanted(envelope: &Envelope, index: usize, action: Action) -> bool {
    if envelope.sender.is_empty() {
        return false;
    }
    let notify = envelope.recipients[index].notify;
    if notify.has(Notify::NEVER) {
        return false;
    }
    match action {
        Action::Failed => notify.unspecified() || notify.has(Notify::FAILURE),
        Action::Delayed => notify.has(Notify::DELAY),
        Action::Delivered | Action::Relayed => notify.has(Notify::SUCCESS),
    }
}

/// Stores a report on `reported` (the caller has checked [`wanted`]) for the original
/// `envelope` and `content`, and returns it queued for delivery.
pub async fn store(
    spool: &Arc<Spool>,
    hostname: &str,
    envelope: &Envelope,
    content: &[u8],
    reported: &[Reported<'_>],
) -> Result<Queued, SpoolError> {
    let now = SystemTime::now();
    let recipients = reported
        .iter()
        .map(|r| {
            let original = &envelope.recipients[r.index];
            let o = r.outcome;
            let status = o
                .enhanced
                .map(|e| (e.0, e.1, e.2))
                .unwrap_or(match r.action {
                    Action::Failed => (5, 0, 0),
                    Action::Delayed => (4, 0, 0),
                    Action::Delivered | Action::Relayed => (2, 0, 0),
                });
            RecipientReport {
                address: original.address.clone(),
                orcpt: original.orcpt.clone(),
                action: r.action,
                status,
                remote_mta: r.remote_mta.clone(),
                diagnostic: o.to_string(),
                remote_diagnostic: o.remote,
                last_attempt: now,
            }
        })
        .collect();
    let id = spool.next_id();
    let report = dsn::build(&Report {
        reporting_mta: hostname,
        sender: &envelope.sender,
        original_id: &envelope.id.to_string(),
        envid: envelope.envid.as_deref(),
        arrival: envelope.received,
        recipients,
        original: content,
        ret: match envelope.ret {
            Some(Ret::Hdrs) => Return::Headers,
            _ => Return::Full,
        },
        now,
    });
    let bounce = Envelope {
        id,
        received: now,
        sender: String::new(),
        recipients: vec![Recipient {
            address: envelope.sender.clone(),
            notify: Notify::default(),
            orcpt: None,
            state: RcptState::Pending,
        }],
        ret: None,
        envid: None,
        // The original may be returned whole, 8-bit text and all.
        body: if report.iter().any(|&b| b >= 0x80) {
            Body::EightBitMime
        } else {
            Body::Unspecified
        },
        origin: Origin {
            session: format!("bounce-of-{}", envelope.id),
            listen: "internal".into(),
            ..Origin::default()
        },
    };
    let mut incoming = spool.begin(bounce);
    incoming.write(&report).await?;
    incoming.commit().await
}
