//! The sending limits of one session: what it is checked against at MAIL and RCPT, what it
//! holds (session slots, and the current transaction's reservations), and what it gives back.
//!
//! A message is reserved at MAIL and a recipient at RCPT, before the next hop is asked, so that
//! concurrent transactions (on this instance or another) see each other and the limit holds
//! exactly; counting only at the end of DATA would let every transaction in flight past the
//! last free unit. A reservation stands only for mail the next hop accepted: a recipient it
//! refuses is given back at once, and whatever a transaction reserved without ending in an
//! accepted message (RSET, a refused or broken DATA, a client that left) is given back at the
//! next MAIL or when the session ends. So the counts are of accepted messages and recipients.
//!
//! Session slots are taken at the session's first MAIL and held until it ends: idle and
//! AUTH-only connections hold none (`Listener_Sessions` bounds those).

use super::counters::{Counters, LEASE};
use super::local::{Limit, Take};
use super::{Limits, subject_address};
use crate::log_warning;
use crate::model::addr::Cidr;
use crate::model::limits::{FailureMode, Measure, Rate, Subject, rate_option, session_option};
use crate::model::listener::Effective;
use crate::reply::{Enhanced, Reply};
use std::net::IpAddr;
use std::time::Duration;

/// Who is sending, as the session knows it at MAIL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The authenticated user, as typed.
    pub user: Option<String>,
    pub ip: Option<IpAddr>,
    /// The `relay_hosts` entry that lets the client relay.
    pub relay_block: Option<Cidr>,
}

/// One rate in force, with the key it is counted under.
#[derive(Clone, Debug)]
struct Rated {
    subject: Subject,
    measure: Measure,
    rate: Rate,
    key: String,
}

/// One session limit in force.
#[derive(Clone, Debug)]
struct Slot {
    subject: Subject,
    limit: u32,
    key: String,
}

/// The limits in force for one sender.
#[derive(Debug)]
struct Policy {
    sender: Sender,
    rates: Vec<Rated>,
    slots: Vec<Slot>,
}

impl Policy {
    /// The windows of `measure` to check, and which of `rates` each is.
    fn windows(&self, measure: Measure) -> (Vec<Limit>, Vec<usize>) {
        self.rates
            .iter()
            .enumerate()
            .filter(|(_, r)| r.measure == measure)
            .map(|(i, r)| {
                let limit = Limit {
                    key: r.key.clone(),
                    limit: r.rate.count,
                    window_ms: r.rate.window.as_millis() as u64,
                };
                (limit, i)
            })
            .unzip()
    }

    fn give_back_keys(&self, measure: Measure) -> Vec<(String, u64)> {
        self.rates
            .iter()
            .filter(|r| r.measure == measure)
            .map(|r| (r.key.clone(), r.rate.window.as_millis() as u64))
            .collect()
    }

    /// How the log and the reply name the sender a limit counts.
    fn who(&self, subject: Subject) -> String {
        let s = &self.sender;
        match subject {
            Subject::User => format!("user={}", s.user.as_deref().unwrap_or("-")),
            Subject::Address => format!(
                "address={}",
                s.ip.map_or_else(|| "-".into(), |ip| subject_address(ip).to_string())
            ),
            Subject::RelayHosts => format!(
                "relay_hosts={}",
                s.relay_block.map_or_else(|| "-".into(), |c| c.to_string())
            ),
        }
    }
}

/// Slots held, and the task that keeps their Redis lease alive.
struct Held {
    slots: Vec<(String, u32)>,
    id: String,
    renew: Option<tokio::task::JoinHandle<()>>,
}

/// A session's side of the limits; what it holds is given back when it is dropped.
#[derive(Default)]
pub struct SessionLimits {
    counters: Option<Counters>,
    policy: Option<Policy>,
    held: Option<Held>,
    /// When this transaction's message was reserved.
    message: Option<u64>,
    /// When each of its recipients was reserved.
    recipients: Vec<u64>,
    /// The recipient reserved at the RCPT the next hop has yet to answer.
    pending: Option<u64>,
}

impl SessionLimits {
    /// The next hop answered the recipient just reserved: a refused one is given back.
    pub fn rcpt_answered(&mut self, accepted: bool) {
        let Some(at) = self.pending.take() else {
            return;
        };
        if accepted {
            self.recipients.push(at);
        } else if let (Some(c), Some(p)) = (&self.counters, &self.policy) {
            c.give_back(p.give_back_keys(Measure::Recipients), 1, at);
        }
    }

    /// The next hop accepted the message: its reservations stand.
    pub fn accepted(&mut self) {
        self.message = None;
        self.recipients.clear();
    }

    /// Gives back what the transaction reserved without sending.
    fn settle(&mut self) {
        let (Some(c), Some(p)) = (&self.counters, &self.policy) else {
            return;
        };
        if let Some(at) = self.message.take() {
            c.give_back(p.give_back_keys(Measure::Messages), 1, at);
        }
        for at in self.recipients.drain(..).chain(self.pending.take()) {
            c.give_back(p.give_back_keys(Measure::Recipients), 1, at);
        }
    }

    fn release(&mut self) {
        if let (Some(h), Some(c)) = (self.held.take(), &self.counters) {
            if let Some(task) = h.renew {
                task.abort();
            }
            c.release(h.slots.into_iter().map(|(k, _)| k).collect(), h.id);
        }
    }
}

impl Drop for SessionLimits {
    fn drop(&mut self) {
        self.settle();
        self.release();
    }
}

/// Why a check did not pass.
enum Refusal {
    Rate(usize),
    Sessions(usize),
}

impl Limits {
    /// MAIL: the session's slots (at its first MAIL) and one message from every message window
    /// in force. `Err` is the reply to send instead of going on.
    pub async fn at_mail(
        &self,
        s: &mut SessionLimits,
        sender: Sender,
        e: &Effective<'_>,
        session: &str,
    ) -> Result<(), Reply> {
        s.settle();
        if s.counters.is_none() {
            s.counters = Some(self.counters.clone());
        }
        if s.policy.as_ref().is_none_or(|p| p.sender != sender) {
            s.release();
            s.policy = Some(self.resolve(sender, e).await);
        }
        let policy = s.policy.as_ref().expect("resolved above");
        if s.held.is_none() && !policy.slots.is_empty() {
            let slots: Vec<(String, u32)> = policy
                .slots
                .iter()
                .map(|sl| (sl.key.clone(), sl.limit))
                .collect();
            let id = self.shared.lease_id();
            match self.counters.acquire(&slots, &id).await {
                Ok(None) => {
                    let renew = self.counters.is_shared().then(|| {
                        let (c, slots, id) = (self.counters.clone(), slots.clone(), id.clone());
                        tokio::spawn(async move {
                            loop {
                                tokio::time::sleep(LEASE / 3).await;
                                c.renew(&slots, &id).await;
                            }
                        })
                    });
                    s.held = Some(Held { slots, id, renew });
                }
                Ok(Some(i)) => return Err(self.refuse(policy, Refusal::Sessions(i), session)),
                Err(_) => self.unavailable(session)?,
            }
        }
        let (windows, which) = policy.windows(Measure::Messages);
        match self.counters.take(&windows, 1).await {
            Ok(Take::Taken { at_ms }) => {
                if !windows.is_empty() {
                    s.message = Some(at_ms);
                }
                Ok(())
            }
            Ok(Take::Refused { index }) => {
                Err(self.refuse(policy, Refusal::Rate(which[index]), session))
            }
            Err(_) => self.unavailable(session),
        }
    }

    /// RCPT: one recipient from every recipient window in force.
    pub async fn at_rcpt(&self, s: &mut SessionLimits, session: &str) -> Result<(), Reply> {
        let Some(policy) = s.policy.as_ref() else {
            return Ok(());
        };
        let (windows, which) = policy.windows(Measure::Recipients);
        match self.counters.take(&windows, 1).await {
            Ok(Take::Taken { at_ms }) => {
                if !windows.is_empty() {
                    s.pending = Some(at_ms);
                }
                Ok(())
            }
            Ok(Take::Refused { index }) => {
                Err(self.refuse(policy, Refusal::Rate(which[index]), session))
            }
            Err(_) => self.unavailable(session),
        }
    }

    /// The limits in force for `sender`: the configuration's for its scope, with the user's own
    /// from `limits_query` over them.
    async fn resolve(&self, sender: Sender, e: &Effective<'_>) -> Policy {
        let mut user_rates = [
            e.rates(Subject::User, Measure::Messages).to_vec(),
            e.rates(Subject::User, Measure::Recipients).to_vec(),
        ];
        let mut user_sessions = e.sessions(Subject::User);
        if let (Some(user), Some(lookup)) = (&sender.user, &self.per_user) {
            let deadline = tokio::time::Instant::now() + lookup.timeout;
            match lookup
                .datasource
                .lookup_row(&lookup.query, user, deadline)
                .await
            {
                Ok(Some(row)) => match super::user::from_row(&row) {
                    Ok(own) => {
                        if let Some(m) = own.messages {
                            user_rates[0] = m;
                        }
                        if let Some(r) = own.recipients {
                            user_rates[1] = r;
                        }
                        if let Some(n) = own.sessions {
                            user_sessions = (n > 0).then_some(n);
                        }
                    }
                    Err(why) => log_warning!(
                        "limits_query for user={user}: {why}; the configured limits apply"
                    ),
                },
                Ok(None) => {}
                Err(why) => log_warning!(
                    "limits_query for user={user}: Datasource \"{}\": {why}; the configured limits apply",
                    lookup.datasource.name
                ),
            }
        }
        let mut subjects = Vec::new();
        if let Some(u) = &sender.user {
            subjects.push((Subject::User, format!("u:{}", u.to_lowercase())));
        }
        if let Some(ip) = sender.ip {
            subjects.push((Subject::Address, format!("a:{}", subject_address(ip))));
        }
        if let Some(block) = sender.relay_block {
            subjects.push((Subject::RelayHosts, format!("r:{block}")));
        }
        let mut rates = Vec::new();
        let mut slots = Vec::new();
        for (subject, key) in &subjects {
            for measure in Measure::ALL {
                let in_force = match subject {
                    Subject::User => &user_rates[measure as usize][..],
                    _ => e.rates(*subject, measure),
                };
                let m = match measure {
                    Measure::Messages => 'm',
                    Measure::Recipients => 'r',
                };
                rates.extend(in_force.iter().map(|&rate| Rated {
                    subject: *subject,
                    measure,
                    rate,
                    key: format!("sap:w:{m}:{}:{key}", rate.window.as_secs()),
                }));
            }
            let sessions = match subject {
                Subject::User => user_sessions,
                _ => e.sessions(*subject),
            };
            if let Some(limit) = sessions {
                slots.push(Slot {
                    subject: *subject,
                    limit,
                    key: format!("sap:s:{key}"),
                });
            }
        }
        Policy {
            sender,
            rates,
            slots,
        }
    }

    /// The reply for a limit reached; counted, and logged once per window for its key.
    fn refuse(&self, policy: &Policy, why: Refusal, session: &str) -> Reply {
        self.metrics.sending_limit_refused();
        let (subject, option, value, text, window) = match why {
            Refusal::Rate(i) => {
                let r = &policy.rates[i];
                let text = match r.measure {
                    Measure::Messages => "Message limit reached",
                    Measure::Recipients => "Recipient limit reached",
                };
                let option = rate_option(r.subject, r.measure);
                (r.subject, option, r.rate.to_string(), text, r.rate.window)
            }
            Refusal::Sessions(i) => {
                let sl = &policy.slots[i];
                let option = session_option(sl.subject).expect("only subjects with slots");
                (
                    sl.subject,
                    option,
                    sl.limit.to_string(),
                    "Too many concurrent sessions",
                    SESSION_LOG_EVERY,
                )
            }
        };
        let who = policy.who(subject);
        if self
            .shared
            .first_in(format!("{option} {value} {who}"), window)
        {
            let s = &policy.sender;
            log_warning!(
                "session {session}: sending limit {option} {value} reached for {who} (user={} client={}); logged once per {} s for it",
                s.user.as_deref().unwrap_or("-"),
                s.ip.map_or_else(|| "unix".into(), |ip| ip.to_string()),
                window.as_secs()
            );
        }
        Reply::new(
            452,
            Enhanced(4, 7, 1),
            format!("{text} ({option} {value}), try again later"),
        )
    }

    /// The counters did not answer: on with the mail (failure_mode = open), or a temporary
    /// refusal (closed).
    fn unavailable(&self, session: &str) -> Result<(), Reply> {
        match self.failure_mode {
            FailureMode::Open => Ok(()),
            FailureMode::Closed => {
                self.metrics.sending_limit_refused();
                crate::log_debug!("session {session}: sending limits cannot be checked: 451");
                Err(Reply::new(
                    451,
                    Enhanced(4, 7, 1),
                    "Sending limits cannot be checked now, try again later",
                ))
            }
        }
    }
}

/// How often a session limit reached is logged again for the same sender.
const SESSION_LOG_EVERY: Duration = Duration::from_secs(60);
