//! The counters of one process, when no `Shared_Counters` is configured: sliding windows, session
//! slots and AUTH failure counts, each map bounded by [`MAX_ENTRIES`] (expired entries go
//! first, then the least recently used). They live as long as the daemon, so a reload does not
//! wipe a sender's record.

use super::window::Window;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_ENTRIES: usize = 65_536;

/// One window of a check: its key, its limit and its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub key: String,
    pub limit: u32,
    pub window_ms: u64,
}

/// How a check of several windows ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// Taken from every window at this moment (in the store's clock, for giving it back).
    Taken { at_ms: u64 },
    /// Nothing taken: this window (by index) has too little left.
    Refused { index: usize },
}

struct Failure {
    count: u32,
    first: Instant,
    last: Instant,
}

pub struct Local {
    base: Instant,
    windows: Mutex<HashMap<String, Window>>,
    slots: Mutex<HashMap<String, u32>>,
    failures: Mutex<HashMap<String, Failure>>,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            base: Instant::now(),
            windows: Mutex::default(),
            slots: Mutex::default(),
            failures: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Local {
    /// Milliseconds on this store's clock.
    pub fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Takes `n` from every window in `limits`, or from none.
    pub fn take(&self, limits: &[Limit], n: u32, now_ms: u64) -> Take {
        let mut windows = lock(&self.windows);
        for (index, l) in limits.iter().enumerate() {
            let used = windows
                .get_mut(&l.key)
                .map_or(0, |w| w.used(now_ms, l.window_ms));
            if used + u64::from(n) > u64::from(l.limit) {
                return Take::Refused { index };
            }
        }
        for l in limits {
            if !windows.contains_key(&l.key) && windows.len() >= MAX_ENTRIES {
                make_room(&mut windows, now_ms, l.window_ms);
            }
            windows
                .entry(l.key.clone())
                .or_default()
                .add(now_ms, l.window_ms, n);
        }
        Take::Taken { at_ms: now_ms }
    }

    /// Gives back `n` taken at `at_ms` from each `(key, window)`.
    pub fn give_back(&self, windows: &[(String, u64)], n: u32, at_ms: u64) {
        let mut map = lock(&self.windows);
        for (key, window_ms) in windows {
            if let Some(w) = map.get_mut(key) {
                w.remove(at_ms, *window_ms, n);
                if w.is_empty() {
                    map.remove(key);
                }
            }
        }
    }

    /// A slot under every `(key, limit)`, or none: `Some(i)` when key `i` is full.
    pub fn acquire(&self, slots: &[(String, u32)]) -> Option<usize> {
        let mut map = lock(&self.slots);
        if let Some(i) = slots
            .iter()
            .position(|(k, limit)| map.get(k).copied().unwrap_or(0) >= *limit)
        {
            return Some(i);
        }
        for (k, _) in slots {
            *map.entry(k.clone()).or_default() += 1;
        }
        None
    }

    pub fn release(&self, keys: &[String]) {
        let mut map = lock(&self.slots);
        for k in keys {
            if let Some(n) = map.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(k);
                }
            }
        }
    }

    /// The failures counted under each key, within `life` of the key's first.
    pub fn failures(&self, keys: &[String], life: Duration, now: Instant) -> Vec<u32> {
        let map = lock(&self.failures);
        keys.iter()
            .map(|k| {
                map.get(k)
                    .filter(|f| now.duration_since(f.first) < life)
                    .map_or(0, |f| f.count)
            })
            .collect()
    }

    /// One more failure under each key; a count lives `life` from its first failure.
    pub fn fail(&self, keys: &[String], life: Duration, now: Instant) {
        let mut map = lock(&self.failures);
        for key in keys {
            if !map.contains_key(key) && map.len() >= MAX_ENTRIES {
                map.retain(|_, f| now.duration_since(f.first) < life);
                if map.len() >= MAX_ENTRIES
                    && let Some(oldest) = map
                        .iter()
                        .min_by_key(|(_, f)| f.last)
                        .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
            let f = map.entry(key.clone()).or_insert(Failure {
                count: 0,
                first: now,
                last: now,
            });
            if now.duration_since(f.first) >= life {
                *f = Failure {
                    count: 0,
                    first: now,
                    last: now,
                };
            }
            f.count += 1;
            f.last = now;
        }
    }

    pub fn clear(&self, key: &str) {
        lock(&self.failures).remove(key);
    }

    /// Keys held now, all maps together (for tests of the bounds).
    pub fn len(&self) -> usize {
        lock(&self.windows).len() + lock(&self.slots).len() + lock(&self.failures).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the windows with nothing left in them, then, if still full, the least recently used.
fn make_room(windows: &mut HashMap<String, Window>, now_ms: u64, window_ms: u64) {
    // A window's length is not kept with it; one of the check's own is a fair bound for which
    // buckets are stale, and an entry dropped early only forgets, never refuses.
    windows.retain(|_, w| {
        w.used(now_ms, window_ms);
        !w.is_empty()
    });
    if windows.len() >= MAX_ENTRIES
        && let Some(oldest) = windows
            .iter()
            .min_by_key(|(_, w)| w.newest())
            .map(|(k, _)| k.clone())
    {
        windows.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(key: &str, limit: u32) -> Limit {
        Limit {
            key: key.into(),
            limit,
            window_ms: 60_000,
        }
    }

    #[test]
    fn all_windows_or_none() {
        let l = Local::default();
        let both = [limit("u", 2), limit("a", 1)];
        assert_eq!(l.take(&both, 1, 0), Take::Taken { at_ms: 0 });
        assert_eq!(l.take(&both, 1, 10), Take::Refused { index: 1 });
        // The refused check took nothing from the first window either.
        assert_eq!(l.take(&[limit("u", 2)], 1, 20), Take::Taken { at_ms: 20 });
        l.give_back(&[("a".into(), 60_000)], 1, 0);
        assert_eq!(l.take(&[limit("a", 1)], 1, 30), Take::Taken { at_ms: 30 });
    }

    #[test]
    fn slots_are_all_or_none_and_come_back() {
        let l = Local::default();
        let keys = [("u".to_string(), 1), ("a".to_string(), 5)];
        assert_eq!(l.acquire(&keys), None);
        assert_eq!(l.acquire(&keys), Some(0));
        assert_eq!(l.acquire(&[("a".to_string(), 5)]), None, "a counts 2");
        l.release(&["u".into(), "a".into()]);
        assert_eq!(l.acquire(&keys), None);
    }

    #[test]
    fn memory_is_bounded() {
        let l = Local::default();
        let now = Instant::now();
        let life = Duration::from_secs(600);
        for i in 0..(MAX_ENTRIES + 100) {
            l.fail(&[format!("f:a:{i}")], life, now);
            l.take(&[limit(&format!("w:{i}"), 5)], 1, 0);
        }
        assert!(l.len() <= 2 * MAX_ENTRIES);
    }
}
