//! Where the counts are kept: this process, or Redis (`Shared_Counters`). The same operations
//! on both, so the limits and the AUTH failure counters never ask which.

use super::local::{Limit, Local, Take};
use super::redis::{RedisStore, Unavailable};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a session slot is held in Redis without being renewed: an instance that dies
/// leaves its sessions' slots behind for at most this long.
pub const LEASE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub enum Counters {
    Local(Arc<Local>),
    Redis(Arc<RedisStore>),
}

/// Runs `f` on the current runtime without waiting for it (nothing to wait on where there is
/// none: the process is stopping).
fn detach(f: impl Future<Output = ()> + Send + 'static) {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(f);
    }
}

impl Counters {
    pub fn is_shared(&self) -> bool {
        matches!(self, Counters::Redis(_))
    }

    /// Takes `n` from every window of `limits`, or from none. No windows: nothing to ask.
    pub async fn take(&self, limits: &[Limit], n: u32) -> Result<Take, Unavailable> {
        if limits.is_empty() {
            return Ok(Take::Taken { at_ms: 0 });
        }
        match self {
            Counters::Local(l) => Ok(l.take(limits, n, l.now_ms())),
            Counters::Redis(r) => r.take(limits, n).await,
        }
    }

    /// Gives back `n` taken at `at_ms`, without waiting.
    pub fn give_back(&self, windows: Vec<(String, u64)>, n: u32, at_ms: u64) {
        if windows.is_empty() || n == 0 {
            return;
        }
        match self {
            Counters::Local(l) => l.give_back(&windows, n, at_ms),
            Counters::Redis(r) => {
                let r = r.clone();
                detach(async move { r.give_back(&windows, n, at_ms).await });
            }
        }
    }

    /// A slot under every `(key, limit)`, or none (`Some(i)`: key `i` is full). `id` names the
    /// holder in Redis, where the slot is a lease to renew.
    pub async fn acquire(
        &self,
        slots: &[(String, u32)],
        id: &str,
    ) -> Result<Option<usize>, Unavailable> {
        match self {
            Counters::Local(l) => Ok(l.acquire(slots)),
            Counters::Redis(r) => r.acquire(slots, id, LEASE).await,
        }
    }

    /// Keeps a Redis lease alive (in this process a slot needs no renewing).
    pub async fn renew(&self, slots: &[(String, u32)], id: &str) {
        if let Counters::Redis(r) = self {
            let _ = r.acquire(slots, id, LEASE).await;
        }
    }

    /// Gives the slots back, without waiting.
    pub fn release(&self, keys: Vec<String>, id: String) {
        match self {
            Counters::Local(l) => l.release(&keys),
            Counters::Redis(r) => {
                let r = r.clone();
                detach(async move { r.release(&keys, &id).await });
            }
        }
    }

    /// AUTH failures under each key within `life` of the key's first (`now` is this process's
    /// clock; Redis keeps time by expiry).
    pub async fn failures(
        &self,
        keys: &[String],
        life: Duration,
        now: Instant,
    ) -> Result<Vec<u32>, Unavailable> {
        match self {
            Counters::Local(l) => Ok(l.failures(keys, life, now)),
            Counters::Redis(r) => r.failures(keys).await,
        }
    }

    pub async fn fail(&self, keys: &[String], life: Duration, now: Instant) {
        match self {
            Counters::Local(l) => l.fail(keys, life, now),
            Counters::Redis(r) => {
                let _ = r.fail(keys, life).await;
            }
        }
    }

    pub async fn clear(&self, key: &str) {
        match self {
            Counters::Local(l) => l.clear(key),
            Counters::Redis(r) => {
                let _ = r.clear(key).await;
            }
        }
    }
}
