//! A per-user answer cache of one datasource (the upstream lookup's, and the limits query's):
//! `cache_size` entries, fresh for `cache_life`.
//!
//! Only lookup answers are cached, never a password verdict. An expired entry is kept until
//! evicted, so that when the database is down the last answer can still be served (and logged
//! as stale) instead of failing every login.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub struct Cache<V = Option<String>> {
    entries: HashMap<String, Entry<V>>,
    /// Insertion order, for eviction; a key may appear with an old sequence number.
    order: VecDeque<(u64, String)>,
    size: usize,
    life: Duration,
    seq: u64,
}

struct Entry<V> {
    /// The answer (for the upstream lookup, `None`: the query found no row for this user).
    value: V,
    at: Instant,
    seq: u64,
}

/// A cached answer and whether it is still within `cache_life`.
pub struct Hit<V> {
    pub value: V,
    pub fresh: bool,
}

impl<V: Clone> Cache<V> {
    pub fn new(size: usize, life: Duration) -> Cache<V> {
        Cache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            size,
            life,
            seq: 0,
        }
    }

    pub fn get(&self, user: &str, now: Instant) -> Option<Hit<V>> {
        self.entries.get(user).map(|e| Hit {
            value: e.value.clone(),
            fresh: now.duration_since(e.at) < self.life,
        })
    }

    pub fn insert(&mut self, user: &str, value: V, now: Instant) {
        if self.size == 0 {
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        self.entries.insert(
            user.to_owned(),
            Entry {
                value,
                at: now,
                seq,
            },
        );
        self.order.push_back((seq, user.to_owned()));
        while self.entries.len() > self.size {
            let Some((s, key)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&key).is_some_and(|e| e.seq == s) {
                self.entries.remove(&key);
            }
        }
        // Re-inserted keys leave old sequence numbers behind; keep the queue bounded too.
        if self.order.len() > 2 * self.size + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(s, k)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_stale_and_bounded() {
        let t0 = Instant::now();
        let mut c: Cache = Cache::new(2, Duration::from_secs(10));
        c.insert("a", Some("h1".into()), t0);
        c.insert("b", None, t0);
        assert!(c.get("a", t0).unwrap().fresh);
        assert!(!c.get("a", t0 + Duration::from_secs(11)).unwrap().fresh);
        assert_eq!(c.get("b", t0).unwrap().value, None);
        c.insert("c", Some("h3".into()), t0);
        assert_eq!(c.len(), 2);
        assert!(c.get("a", t0).is_none(), "oldest evicted");
        for _ in 0..1000 {
            c.insert("c", Some("h".into()), t0);
        }
        assert!(c.order.len() <= 2 * 2 + 16);
        assert_eq!(c.len(), 2);
    }
}
