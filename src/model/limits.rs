//! Sending limits (our options) and the `Shared_Counters` scope that makes every counter one
//! across a fleet.
//!
//! The limits are listener options, read in the global scope, `ESMTP_Listener`, `Listen` and
//! `Peer`, and resolved for each client by the listener family's fallback chain:
//!
//! - `User_Message_Limit`, `User_Recipient_Limit`: per authenticated user;
//! - `Address_Message_Limit`, `Address_Recipient_Limit`: per client address (IPv6 per /64);
//! - `Relay_Hosts_Message_Limit`, `Relay_Hosts_Recipient_Limit`: per `relay_hosts` entry that
//!   lets the client relay;
//! - `User_Session_Limit`, `Address_Session_Limit`: concurrent sessions sending mail.
//!
//! A rate is written as Momentum writes its throttles (`Inbound_Throttle_Messages = "3/60"`):
//! `"count/seconds"`, a bare count meaning per second; a list of them sets several windows
//! (`( "100/3600" "1000/86400" )`). `"0"` turns a limit off in a scope, so that a Peer can
//! exempt a network from a limit set above it.

use super::Cx;
use super::names::ScopeKind;
use super::value::{self, Read, Spanned};
use crate::config::ast::{Setting, Value};
use crate::config::{Diagnostic, Origin, Scope};
use std::time::Duration;

/// Whose sending a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    User,
    Address,
    RelayHosts,
}

/// What a rate limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Measure {
    Messages,
    Recipients,
}

impl Subject {
    pub const ALL: [Subject; 3] = [Subject::User, Subject::Address, Subject::RelayHosts];
}

impl Measure {
    pub const ALL: [Measure; 2] = [Measure::Messages, Measure::Recipients];
}

/// The option that sets a rate, as the configuration writes it.
pub fn rate_option(subject: Subject, measure: Measure) -> &'static str {
    match (subject, measure) {
        (Subject::User, Measure::Messages) => "User_Message_Limit",
        (Subject::User, Measure::Recipients) => "User_Recipient_Limit",
        (Subject::Address, Measure::Messages) => "Address_Message_Limit",
        (Subject::Address, Measure::Recipients) => "Address_Recipient_Limit",
        (Subject::RelayHosts, Measure::Messages) => "Relay_Hosts_Message_Limit",
        (Subject::RelayHosts, Measure::Recipients) => "Relay_Hosts_Recipient_Limit",
    }
}

/// The option that sets a concurrency limit (`None`: relay_hosts entries have none).
pub fn session_option(subject: Subject) -> Option<&'static str> {
    match subject {
        Subject::User => Some("User_Session_Limit"),
        Subject::Address => Some("Address_Session_Limit"),
        Subject::RelayHosts => None,
    }
}

/// `count` per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, self.window.as_secs())
    }
}

/// The limits one scope sets; `None` where it sets none (the next scope in the chain decides).
/// An empty list or a 0 is "no limit here".
#[derive(Clone, Debug, Default)]
pub struct LimitSettings {
    /// By [`Subject`], then [`Measure`].
    pub rates: [[Option<Spanned<Vec<Rate>>>; 2]; 3],
    pub user_sessions: Option<Spanned<u32>>,
    pub address_sessions: Option<Spanned<u32>>,
}

impl LimitSettings {
    pub fn rates(&self, subject: Subject, measure: Measure) -> Option<&Spanned<Vec<Rate>>> {
        self.rates[subject as usize][measure as usize].as_ref()
    }

    pub fn sessions(&self, subject: Subject) -> Option<&Spanned<u32>> {
        match subject {
            Subject::User => self.user_sessions.as_ref(),
            Subject::Address => self.address_sessions.as_ref(),
            Subject::RelayHosts => None,
        }
    }
}

/// Longest window: a week (longer ones are better served by a quota system than a relay).
pub const MAX_WINDOW: u64 = 7 * 86_400;

/// Reads one of [`LIMIT_OPTIONS`](super::names::LIMIT_OPTIONS) into `out`.
pub(super) fn read_setting(cx: &mut Cx, out: &mut LimitSettings, name: &str, s: &Setting) {
    let sessions = |n: &str, v: &Value| value::unsigned(n, v, 0, 1_000_000).map(|n| n as u32);
    let rate = |subject: Subject, measure: Measure| (subject as usize, measure as usize);
    let (i, j) = match name {
        "user_session_limit" => return out.user_sessions = cx.read(s, sessions),
        "address_session_limit" => return out.address_sessions = cx.read(s, sessions),
        "user_message_limit" => rate(Subject::User, Measure::Messages),
        "user_recipient_limit" => rate(Subject::User, Measure::Recipients),
        "address_message_limit" => rate(Subject::Address, Measure::Messages),
        "address_recipient_limit" => rate(Subject::Address, Measure::Recipients),
        "relay_hosts_message_limit" => rate(Subject::RelayHosts, Measure::Messages),
        "relay_hosts_recipient_limit" => rate(Subject::RelayHosts, Measure::Recipients),
        _ => unreachable!("every LIMIT_OPTIONS name is handled"),
    };
    out.rates[i][j] = cx.read(s, read_rates);
}

fn read_rates(name: &str, v: &Value) -> Read<Vec<Rate>> {
    let mut out = Vec::new();
    for (item, origin) in value::scalar_list(name, v)? {
        out.extend(
            parse_rates(item).map_err(|e| Diagnostic::error(origin, format!("`{name}`: {e}")))?,
        );
    }
    Ok(out)
}

/// Rates as text: `"100/3600"`, several separated by spaces or commas (`"100/3600 1000/86400"`,
/// as a datasource column holds them), `"0"` for none. Each window is counted once: when two
/// rates share a window, the lower count stands.
pub fn parse_rates(text: &str) -> Result<Vec<Rate>, String> {
    let mut out: Vec<Rate> = Vec::new();
    let items: Vec<&str> = text
        .split([' ', ',', '\t'])
        .filter(|t| !t.is_empty())
        .collect();
    if items == ["0"] {
        return Ok(out);
    }
    for item in items {
        let (count, seconds) = item.split_once('/').unwrap_or((item, "1"));
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{item}` is not `count/seconds` (\"100/3600\")"))?;
        let seconds: u64 = seconds
            .trim()
            .parse()
            .map_err(|_| format!("`{item}` is not `count/seconds` (\"100/3600\")"))?;
        if count == 0 {
            return Err(format!(
                "`{item}` would refuse all mail; write \"0\" alone to turn the limit off"
            ));
        }
        if seconds == 0 || seconds > MAX_WINDOW {
            return Err(format!(
                "`{item}`: the window must be 1 to {MAX_WINDOW} seconds"
            ));
        }
        let rate = Rate {
            count,
            window: Duration::from_secs(seconds),
        };
        match out.iter_mut().find(|r| r.window == rate.window) {
            Some(r) => r.count = r.count.min(rate.count),
            None => out.push(rate),
        }
    }
    Ok(out)
}

/// What to do when the shared counters cannot be reached in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Let the mail (and the AUTH) through uncounted, with a warning: an outage of the counters
    /// is not an outage of mail.
    #[default]
    Open,
    /// Refuse with a temporary error (`451 4.7.1` at MAIL and RCPT, `454 4.7.0` at AUTH).
    Closed,
}

pub const DEFAULT_COUNTERS_TIMEOUT: Duration = Duration::from_millis(500);

/// `Shared_Counters { uri = "redis://…" timeout = 0.5 failure_mode = open }`: where the
/// sending limits and the AUTH failure counters live when several instances share them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedCounters {
    /// `redis://`, `rediss://` (TLS) or `unix://` (a socket path).
    pub uri: Spanned<String>,
    /// Bound on each exchange with the store.
    pub timeout: Duration,
    pub failure_mode: FailureMode,
    pub origin: Option<Origin>,
}

pub(super) fn read_shared_counters(cx: &mut Cx, scope: &Scope) -> Option<SharedCounters> {
    let origin = scope.origin?;
    let mut uri = None;
    let mut timeout = DEFAULT_COUNTERS_TIMEOUT;
    let mut failure_mode = FailureMode::default();
    for s in &scope.settings {
        match s.name.to_ascii_lowercase().as_str() {
            "uri" => {
                uri = cx.read(s, value::text);
                if let Some(u) = &uri
                    && !["redis://", "rediss://", "unix://"]
                        .iter()
                        .any(|p| u.value.to_ascii_lowercase().starts_with(p))
                {
                    cx.diags.push(Diagnostic::error(
                        u.origin,
                        "`uri` takes a Redis URI: redis://host:port/db, rediss://… (TLS) or unix:///path",
                    ));
                    uri = None;
                }
            }
            "timeout" => {
                if let Some(t) = cx.read(s, read_fraction_of_seconds) {
                    timeout = t.value;
                }
            }
            "failure_mode" => {
                if let Some(m) = cx.read(s, |n, v| {
                    value::choice(
                        n,
                        v,
                        &[("open", FailureMode::Open), ("closed", FailureMode::Closed)],
                    )
                }) {
                    failure_mode = m.value;
                }
            }
            _ => cx.unknown_option(ScopeKind::SharedCounters, s),
        }
    }
    for child in &scope.scopes {
        cx.unknown_scope(ScopeKind::SharedCounters, child);
    }
    let Some(uri) = uri else {
        if scope.get("uri").is_none() {
            cx.diags.push(Diagnostic::error(
                origin,
                "`Shared_Counters` needs a `uri`: uri = \"redis://127.0.0.1:6379/0\"",
            ));
        }
        return None;
    };
    Some(SharedCounters {
        uri,
        timeout,
        failure_mode,
        origin: Some(origin),
    })
}

/// Seconds, with a fraction (`0.25`): a round trip to a counter store is measured in
/// milliseconds.
fn read_fraction_of_seconds(name: &str, v: &Value) -> Read<Duration> {
    let s = value::scalar(name, v)?;
    match s.trim().parse::<f64>() {
        Ok(f) if (0.001..=60.0).contains(&f) => Ok(Duration::from_secs_f64(f)),
        _ => Err(Diagnostic::error(
            v.origin,
            format!("`{name}` takes seconds from 0.001 to 60 (`0.5`), found `{s}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_as_written() {
        let r = parse_rates("100/3600, 1000/86400 5").unwrap();
        assert_eq!(
            r,
            [
                Rate {
                    count: 100,
                    window: Duration::from_secs(3600)
                },
                Rate {
                    count: 1000,
                    window: Duration::from_secs(86400)
                },
                Rate {
                    count: 5,
                    window: Duration::from_secs(1)
                },
            ]
        );
        assert_eq!(parse_rates("0").unwrap(), []);
        assert_eq!(parse_rates("10/60 5/60").unwrap()[0].count, 5);
        assert!(parse_rates("0/60").is_err());
        assert!(parse_rates("10/0").is_err());
        assert!(parse_rates("ten/60").is_err());
        assert!(parse_rates("10/9999999").is_err());
    }
}
