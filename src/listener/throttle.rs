//! Brute-force throttling of AUTH, without handing strangers a way to lock a user out.
//!
//! Failures are counted per client address (IPv6 by /64, as one host usually holds a whole
//! /64), per network (IPv4 /24, IPv6 /48: one attacker rotating through neighbouring
//! addresses), and per user name. Only the first two ever refuse: past half the limit, each
//! attempt from that address waits a little longer before its credentials are checked, and at
//! the limit (four times the limit for a network) attempts from there are refused (`454 4.7.0`,
//! temporary) without asking the back end, until ten minutes after the first counted failure.
//! Failures for a user name from anywhere only slow that name down (past the limit, each
//! attempt for it waits up to five seconds): if they refused, anyone could lock any user out
//! by failing ten times under their name. A success clears the user's count, never an
//! address's.
//!
//! `Auth_Failure_Limit` in ESMTP_Listener sets the limit (default 10; 0 turns this off). The
//! counts live where the sending limits' do (`limits::Counters`): in this process, bounded, or
//! in Redis with `Shared_Counters`, where a guesser locked out on one instance is locked out on
//! every other. When Redis does not answer, `failure_mode` decides: attempts go on unthrottled
//! (open), or get `454 4.7.0` (closed).

use crate::limits::{Counters, masked};
use crate::model::limits::FailureMode;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const DEFAULT_LIMIT: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(600);
/// A network may fail this many times the per-address limit before it is refused.
pub const NETWORK_FACTOR: u32 = 4;
/// The longest wait added to one attempt.
const MAX_DELAY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Check the credentials after this wait.
    Delay(Duration),
    /// Refuse without checking.
    Refuse,
    /// The counters cannot be read and `failure_mode = closed`: a temporary failure.
    Unavailable,
}

pub struct Throttle {
    limit: u32,
    counters: Counters,
    failure_mode: FailureMode,
}

/// The counter keys for an attempt: address (IPv6 by its /64), network (IPv4 /24, IPv6 /48),
/// user name.
fn keys(ip: Option<IpAddr>, user: &str) -> Vec<String> {
    let mut keys = Vec::with_capacity(3);
    if let Some(ip) = ip {
        keys.push(format!("sap:f:a:{}", masked(ip, 32, 64)));
        keys.push(format!("sap:f:n:{}", masked(ip, 24, 48)));
    }
    keys.push(format!("sap:f:u:{}", user.to_lowercase()));
    keys
}

/// The decision for the counts of an attempt's address, network and user name.
fn decide(limit: u32, addr: u32, net: u32, user: u32) -> Decision {
    if addr >= limit || net >= limit.saturating_mul(NETWORK_FACTOR) {
        return Decision::Refuse;
    }
    let half = limit.div_ceil(2);
    let from_here = (addr + 1).saturating_sub(half);
    let for_user = (user + 1).saturating_sub(limit);
    match from_here.max(for_user) {
        0 => Decision::Allow,
        n => Decision::Delay(Duration::from_secs(n.into()).min(MAX_DELAY)),
    }
}

impl Throttle {
    pub fn new(limit: u32, counters: Counters, failure_mode: FailureMode) -> Throttle {
        Throttle {
            limit,
            counters,
            failure_mode,
        }
    }

    /// What to do with an attempt from `ip` for `user` (`now` is for the in-process counters).
    pub async fn check(&self, ip: Option<IpAddr>, user: &str, now: Instant) -> Decision {
        if self.limit == 0 {
            return Decision::Allow;
        }
        let counts = match self.counters.failures(&keys(ip, user), WINDOW, now).await {
            Ok(c) => c,
            Err(_) => {
                return match self.failure_mode {
                    FailureMode::Open => Decision::Allow,
                    FailureMode::Closed => Decision::Unavailable,
                };
            }
        };
        let (addr, net, user) = match counts[..] {
            [a, n, u] => (a, n, u),
            [u] => (0, 0, u),
            _ => unreachable!("one count per key"),
        };
        decide(self.limit, addr, net, user)
    }

    pub async fn failed(&self, ip: Option<IpAddr>, user: &str, now: Instant) {
        if self.limit > 0 {
            self.counters.fail(&keys(ip, user), WINDOW, now).await;
        }
    }

    /// The right password for `user`: its slowdown ends. The address keeps its count, so a
    /// guesser holding one good account cannot wipe its record with it.
    pub async fn succeeded(&self, user: &str) {
        if self.limit > 0 {
            let key = keys(None, user).pop().expect("the user key");
            self.counters.clear(&key).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::local::Local;
    use std::sync::Arc;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn throttle(limit: u32) -> Throttle {
        Throttle::new(
            limit,
            Counters::Local(Arc::new(Local::default())),
            FailureMode::Open,
        )
    }

    #[tokio::test]
    async fn an_address_is_slowed_then_refused_then_forgotten() {
        let t = throttle(4);
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        assert_eq!(t.check(a, "u", t0).await, Decision::Allow);
        t.failed(a, "u", t0).await;
        assert_eq!(t.check(a, "u", t0).await, Decision::Allow);
        t.failed(a, "u", t0).await;
        assert_eq!(
            t.check(a, "u", t0).await,
            Decision::Delay(Duration::from_secs(1))
        );
        t.failed(a, "u", t0).await;
        t.failed(a, "u", t0).await;
        assert_eq!(t.check(a, "u", t0).await, Decision::Refuse);
        // Another user from the same address: refused too (it is the address that guesses).
        assert_eq!(t.check(a, "other", t0).await, Decision::Refuse);
        assert_eq!(t.check(a, "u", t0 + WINDOW).await, Decision::Allow);
    }

    #[tokio::test]
    async fn failures_under_a_name_never_lock_its_owner_out_elsewhere() {
        let t = throttle(4);
        let t0 = Instant::now();
        for _ in 0..40 {
            t.failed(ip("192.0.2.1"), "alice", t0).await;
        }
        // The owner, from another network: slowed (the name is under attack), not refused.
        let owner = ip("198.51.100.7");
        assert_eq!(
            t.check(owner, "alice", t0).await,
            Decision::Delay(MAX_DELAY)
        );
        // Someone else from there: untouched.
        assert_eq!(t.check(owner, "bob", t0).await, Decision::Allow);
        // The owner logs in: the slowdown ends; the guesser's address stays refused.
        t.succeeded("alice").await;
        assert_eq!(t.check(owner, "alice", t0).await, Decision::Allow);
        assert_eq!(
            t.check(ip("192.0.2.1"), "alice", t0).await,
            Decision::Refuse
        );
    }

    #[tokio::test]
    async fn a_network_rotating_addresses_is_refused_as_a_whole() {
        let t = throttle(2);
        let now = Instant::now();
        // IPv4: eight addresses of one /24, one failure each (under the per-address limit).
        for i in 1..=8 {
            t.failed(ip(&format!("192.0.2.{i}")), &format!("u{i}"), now)
                .await;
        }
        assert_eq!(t.check(ip("192.0.2.200"), "x", now).await, Decision::Refuse);
        assert_ne!(t.check(ip("192.0.3.1"), "x", now).await, Decision::Refuse);
        // IPv6: a /64 is one address; /64s of one /48 add up.
        t.failed(ip("2001:db8:0:1::1"), "x", now).await;
        t.failed(ip("2001:db8:0:1::ffff"), "y", now).await;
        assert_eq!(
            t.check(ip("2001:db8:0:1::2"), "z", now).await,
            Decision::Refuse
        );
        assert_eq!(
            t.check(ip("2001:db8:0:2::1"), "z", now).await,
            Decision::Allow
        );
    }
}
