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
//! counters are process-wide and bounded: at [`MAX_ENTRIES`], expired ones go first, then the
//! least recently failed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const DEFAULT_LIMIT: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(600);
pub const MAX_ENTRIES: usize = 65_536;
/// A network may fail this many times the per-address limit before it is refused.
pub const NETWORK_FACTOR: u32 = 4;
/// The longest wait added to one attempt.
const MAX_DELAY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    Net(IpAddr),
    User(String),
}

struct Entry {
    failures: u32,
    first: Instant,
    last: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Check the credentials after this wait.
    Delay(Duration),
    /// Refuse without checking.
    Refuse,
}

pub struct Throttle {
    limit: u32,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// The address as counted: IPv4 as is, IPv6 by its /64.
fn addr_key(ip: IpAddr) -> IpAddr {
    masked(ip, 32, 64)
}

/// The network as counted: IPv4 /24, IPv6 /48.
fn net_key(ip: IpAddr) -> IpAddr {
    masked(ip, 24, 48)
}

fn masked(ip: IpAddr, v4_bits: u32, v6_bits: u32) -> IpAddr {
    match crate::model::addr::canonical(ip) {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - v4_bits).unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - v6_bits).unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    }
}

impl Throttle {
    pub fn new(limit: u32) -> Throttle {
        Throttle {
            limit,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: Option<IpAddr>, user: &str) -> impl Iterator<Item = Key> {
        ip.into_iter()
            .flat_map(|ip| [Key::Addr(addr_key(ip)), Key::Net(net_key(ip))])
            .chain(std::iter::once(Key::User(user.to_lowercase())))
    }

    /// What to do with an attempt from `ip` for `user`.
    pub fn check(&self, ip: Option<IpAddr>, user: &str, now: Instant) -> Decision {
        if self.limit == 0 {
            return Decision::Allow;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let count = |k: Key| {
            entries
                .get(&k)
                .filter(|e| now.duration_since(e.first) < WINDOW)
                .map_or(0, |e| e.failures)
        };
        let (addr, net) = match ip {
            Some(ip) => (count(Key::Addr(addr_key(ip))), count(Key::Net(net_key(ip)))),
            None => (0, 0),
        };
        if addr >= self.limit || net >= self.limit.saturating_mul(NETWORK_FACTOR) {
            return Decision::Refuse;
        }
        let half = self.limit.div_ceil(2);
        let from_here = (addr + 1).saturating_sub(half);
        let for_user = (count(Key::User(user.to_lowercase())) + 1).saturating_sub(self.limit);
        match from_here.max(for_user) {
            0 => Decision::Allow,
            n => Decision::Delay(Duration::from_secs(n.into()).min(MAX_DELAY)),
        }
    }

    pub fn failed(&self, ip: Option<IpAddr>, user: &str, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for key in Self::keys(ip, user) {
            if !entries.contains_key(&key) && entries.len() >= MAX_ENTRIES {
                entries.retain(|_, e| now.duration_since(e.first) < WINDOW);
                if entries.len() >= MAX_ENTRIES
                    && let Some(oldest) = entries
                        .iter()
                        .min_by_key(|(_, e)| e.last)
                        .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                first: now,
                last: now,
            });
            if now.duration_since(e.first) >= WINDOW {
                *e = Entry {
                    failures: 0,
                    first: now,
                    last: now,
                };
            }
            e.failures += 1;
            e.last = now;
        }
    }

    /// The right password for `user`: its slowdown ends. The address keeps its count, so a
    /// guesser holding one good account cannot wipe its record with it.
    pub fn succeeded(&self, user: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Key::User(user.to_lowercase()));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_slowed_then_refused_then_forgotten() {
        let t = Throttle::new(4);
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        assert_eq!(t.check(a, "u", t0), Decision::Allow);
        t.failed(a, "u", t0);
        assert_eq!(t.check(a, "u", t0), Decision::Allow);
        t.failed(a, "u", t0);
        assert_eq!(t.check(a, "u", t0), Decision::Delay(Duration::from_secs(1)));
        t.failed(a, "u", t0);
        t.failed(a, "u", t0);
        assert_eq!(t.check(a, "u", t0), Decision::Refuse);
        // Another user from the same address: refused too (it is the address that guesses).
        assert_eq!(t.check(a, "other", t0), Decision::Refuse);
        assert_eq!(t.check(a, "u", t0 + WINDOW), Decision::Allow);
    }

    #[test]
    fn failures_under_a_name_never_lock_its_owner_out_elsewhere() {
        let t = Throttle::new(4);
        let t0 = Instant::now();
        for _ in 0..40 {
            t.failed(ip("192.0.2.1"), "alice", t0);
        }
        // The owner, from another network: slowed (the name is under attack), not refused.
        let owner = ip("198.51.100.7");
        assert_eq!(t.check(owner, "alice", t0), Decision::Delay(MAX_DELAY));
        // Someone else from there: untouched.
        assert_eq!(t.check(owner, "bob", t0), Decision::Allow);
        // The owner logs in: the slowdown ends; the guesser's address stays refused.
        t.succeeded("alice");
        assert_eq!(t.check(owner, "alice", t0), Decision::Allow);
        assert_eq!(t.check(ip("192.0.2.1"), "alice", t0), Decision::Refuse);
    }

    #[test]
    fn a_network_rotating_addresses_is_refused_as_a_whole() {
        let t = Throttle::new(2);
        let now = Instant::now();
        // IPv4: eight addresses of one /24, one failure each (under the per-address limit).
        for i in 1..=8 {
            t.failed(ip(&format!("192.0.2.{i}")), &format!("u{i}"), now);
        }
        assert_eq!(t.check(ip("192.0.2.200"), "x", now), Decision::Refuse);
        assert_ne!(t.check(ip("192.0.3.1"), "x", now), Decision::Refuse);
        // IPv6: a /64 is one address; /64s of one /48 add up.
        t.failed(ip("2001:db8:0:1::1"), "x", now);
        t.failed(ip("2001:db8:0:1::ffff"), "y", now);
        assert_eq!(t.check(ip("2001:db8:0:1::2"), "z", now), Decision::Refuse);
        assert_eq!(t.check(ip("2001:db8:0:2::1"), "z", now), Decision::Allow);
    }

    #[test]
    fn memory_is_bounded() {
        let t = Throttle::new(5);
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 100) {
            t.failed(Some(IpAddr::from(i.to_be_bytes())), "same", now);
        }
        assert!(t.len() <= MAX_ENTRIES);
    }
}
