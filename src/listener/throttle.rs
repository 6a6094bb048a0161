//! Brute-force throttling of AUTH: failures are counted per client address (IPv6 by /64, as
//! one host usually holds a whole /64) and per user name. Past half the limit each attempt
//! waits a little longer before its credentials are checked; at the limit, attempts are refused
//! (`454 4.7.0`, temporary) without asking the back end, until ten minutes after the first
//! counted failure. A success clears the user's count, not the address's.
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
/// The longest wait added to one attempt.
const MAX_DELAY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
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

fn addr_key(ip: IpAddr) -> IpAddr {
    match crate::model::addr::canonical(ip) {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        v4 => v4,
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
        ip.map(|ip| Key::Addr(addr_key(ip)))
            .into_iter()
            .chain(std::iter::once(Key::User(user.to_lowercase())))
    }

    /// What to do with an attempt from `ip` for `user`.
    pub fn check(&self, ip: Option<IpAddr>, user: &str, now: Instant) -> Decision {
        if self.limit == 0 {
            return Decision::Allow;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let worst = Self::keys(ip, user)
            .filter_map(|k| entries.get(&k))
            .filter(|e| now.duration_since(e.first) < WINDOW)
            .map(|e| e.failures)
            .max()
            .unwrap_or(0);
        if worst >= self.limit {
            Decision::Refuse
        } else if worst >= self.limit.div_ceil(2) {
            let excess = worst + 1 - self.limit.div_ceil(2);
            Decision::Delay(Duration::from_secs(excess.into()).min(MAX_DELAY))
        } else {
            Decision::Allow
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

    #[test]
    fn slows_then_refuses_then_forgets() {
        let t = Throttle::new(4);
        let ip = Some("192.0.2.1".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!(t.check(ip, "u", t0), Decision::Allow);
        t.failed(ip, "u", t0);
        assert_eq!(t.check(ip, "u", t0), Decision::Allow);
        t.failed(ip, "u", t0);
        assert_eq!(
            t.check(ip, "u", t0),
            Decision::Delay(Duration::from_secs(1))
        );
        t.failed(ip, "u", t0);
        t.failed(ip, "u", t0);
        assert_eq!(t.check(ip, "u", t0), Decision::Refuse);
        // The same user from elsewhere, and another user from the same address: refused too.
        assert_eq!(
            t.check(Some("198.51.100.1".parse().unwrap()), "U", t0),
            Decision::Refuse
        );
        assert_eq!(t.check(ip, "other", t0), Decision::Refuse);
        assert_eq!(t.check(ip, "u", t0 + WINDOW), Decision::Allow);
    }

    #[test]
    fn ipv6_counts_by_64_and_memory_is_bounded() {
        let t = Throttle::new(2);
        let a = Some("2001:db8::1".parse().unwrap());
        let b = Some("2001:db8::ffff".parse().unwrap());
        let now = Instant::now();
        t.failed(a, "x", now);
        t.failed(b, "y", now);
        assert_eq!(t.check(b, "z", now), Decision::Refuse);
        let t = Throttle::new(5);
        for i in 0..(MAX_ENTRIES as u32 + 100) {
            t.failed(Some(IpAddr::from(i.to_be_bytes())), "same", now);
        }
        assert!(t.len() <= MAX_ENTRIES);
    }
}
