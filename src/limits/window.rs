//! The sliding window every rate limit is counted in, the same here and in Redis's script
//! (`redis.rs`): a window of W is kept as [`BUCKETS`] counts of W/60 each (a bucketed sliding
//! log). A check adds up every bucket that overlaps the last W, so the span it sees is W to
//! W + W/60 long: whatever the moment, no W-long stretch of time ever holds more than the
//! limit, at a bucket edge or anywhere else. The price of the buckets is that an event is
//! forgotten up to W/60 after it leaves the window; the gain is memory bounded by 60 counts
//! per key whatever the limit.

use std::collections::VecDeque;

pub const BUCKETS: u64 = 60;

/// How long one bucket is, in milliseconds.
pub fn width(window_ms: u64) -> u64 {
    (window_ms / BUCKETS).max(1)
}

/// The bucket a moment falls in.
pub fn bucket(at_ms: u64, window_ms: u64) -> u64 {
    at_ms / width(window_ms)
}

/// The oldest bucket that overlaps the window ending at `now_ms`.
pub fn oldest(now_ms: u64, window_ms: u64) -> u64 {
    now_ms.saturating_sub(window_ms) / width(window_ms)
}

/// One key's counts, oldest bucket first.
#[derive(Debug, Default)]
pub struct Window {
    buckets: VecDeque<(u64, u32)>,
}

impl Window {
    /// What the last `window_ms` hold; drops the buckets that left it.
    pub fn used(&mut self, now_ms: u64, window_ms: u64) -> u64 {
        let oldest = oldest(now_ms, window_ms);
        while self.buckets.front().is_some_and(|&(b, _)| b < oldest) {
            self.buckets.pop_front();
        }
        self.buckets.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    pub fn add(&mut self, now_ms: u64, window_ms: u64, n: u32) {
        let b = bucket(now_ms, window_ms);
        match self.buckets.back_mut() {
            Some((last, count)) if *last == b => *count = count.saturating_add(n),
            _ => self.buckets.push_back((b, n)),
        }
    }

    /// Gives back `n` taken at `at_ms`, if its bucket is still in the window.
    pub fn remove(&mut self, at_ms: u64, window_ms: u64, n: u32) {
        let b = bucket(at_ms, window_ms);
        if let Some(i) = self.buckets.iter().position(|&(x, _)| x == b) {
            let count = &mut self.buckets[i].1;
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.buckets.remove(i);
            }
        }
    }

    /// The newest bucket counted (for eviction: the least recently used key goes first).
    pub fn newest(&self) -> Option<u64> {
        self.buckets.back().map(|&(b, _)| b)
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes one if the window has room, as a check does.
    fn take(w: &mut Window, now: u64, window: u64, limit: u64) -> bool {
        if w.used(now, window) + 1 > limit {
            return false;
        }
        w.add(now, window, 1);
        true
    }

    #[test]
    fn no_burst_at_any_boundary() {
        // 10 per 60 s, tried every 100 ms for ten minutes: no 60 s stretch holds more than 10.
        let (window, limit) = (60_000, 10);
        let mut w = Window::default();
        let mut taken = Vec::new();
        for now in (0..600_000).step_by(100) {
            if take(&mut w, now, window, limit) {
                taken.push(now);
            }
        }
        for (i, &t) in taken.iter().enumerate() {
            let in_window = taken[i..].iter().take_while(|&&u| u < t + window).count();
            assert!(in_window as u64 <= limit, "{in_window} within 60 s of {t}");
        }
        // And the limit is not starved either: about ten per minute over ten minutes.
        assert!(taken.len() >= 90, "{}", taken.len());
    }

    #[test]
    fn freed_one_bucket_after_the_window_and_given_back() {
        let mut w = Window::default();
        assert!(take(&mut w, 0, 60_000, 1));
        assert!(!take(&mut w, 59_999, 60_000, 1));
        assert!(
            !take(&mut w, 60_999, 60_000, 1),
            "its bucket still overlaps"
        );
        assert!(take(&mut w, 61_000, 60_000, 1));
        w.remove(61_000, 60_000, 1);
        assert!(w.is_empty());
        assert!(take(&mut w, 61_500, 60_000, 1), "given back: free again");
    }
}
