//! The counters in Redis (`Shared_Counters`), so that every instance behind a load balancer
//! counts into the same windows, slots and failure counts.
//!
//! Every check is one round trip: a Lua script run with EVALSHA (the `redis` crate loads it
//! once when Redis answers NOSCRIPT), atomic in Redis, so two instances can never both take the
//! last unit of a limit. Time is Redis's own (`TIME`), so instances with clocks apart still
//! share one window.
//!
//! Each serving thread has its own connection (a `redis` connection manager, which reconnects
//! after a drop): a session never waits on another thread. Every exchange is bounded by
//! `timeout`. The first failure marks the store down, is logged once and counted; while it is
//! down, exchanges answer at once as failed (the caller applies `failure_mode`) except one
//! probe a second on a fresh connection, whose success is logged once as the recovery.

use super::local::{Limit, Take};
use super::window::BUCKETS;
use crate::metrics::Metrics;
use crate::model::limits::FailureMode;
use crate::{log_info, log_warning};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// How often a store that is down is tried again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The counters could not be read or written in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable;

/// Takes an amount from several sliding windows (see `window.rs`: the same arithmetic), all or
/// none.
const TAKE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local buckets = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local width = math.max(1, math.floor(window / buckets))
  local oldest = math.floor(math.max(0, now - window) / width)
  local used = 0
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    if tonumber(fields[j]) < oldest then
      redis.call('HDEL', key, fields[j])
    else
      used = used + tonumber(fields[j + 1])
    end
  end
  if used + n > limit then return {i, now} end
end
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 + 2 * i])
  local width = math.max(1, math.floor(window / buckets))
  redis.call('HINCRBY', key, string.format('%.0f', math.floor(now / width)), n)
  redis.call('PEXPIRE', key, window + width)
end
return {0, now}
";

/// Gives back an amount taken at a moment, from the buckets that are still there.
const GIVE_BACK: &str = r"
local n, at, buckets = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  local width = math.max(1, math.floor(tonumber(ARGV[3 + i]) / buckets))
  local b = string.format('%.0f', math.floor(at / width))
  if redis.call('HEXISTS', key, b) == 1 and redis.call('HINCRBY', key, b, -n) <= 0 then
    redis.call('HDEL', key, b)
  end
end
return 0
";

/// A slot in several sets of leases (lease id -> expiry), all or none; renews a lease held.
/// Returns 0, or the index (from 1) of the set that is full.
const ACQUIRE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, lease = ARGV[1], tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, id) and redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, string.format('%.0f', now + lease), id)
  redis.call('PEXPIRE', key, lease)
end
return 0
";

const RELEASE: &str = r"
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return 0
";

/// One more AUTH failure under each key; a count lives from its first failure.
const FAIL: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
end
return 0
";

struct Scripts {
    take: Script,
    give_back: Script,
    acquire: Script,
    release: Script,
    fail: Script,
}

pub struct RedisStore {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The URI without its password, for logs.
    name: String,
    timeout: Duration,
    /// What an outage means for mail, for the log line that reports it.
    consequence: &'static str,
    scripts: Scripts,
    conns: Mutex<HashMap<ThreadId, ConnectionManager>>,
    down: AtomicBool,
    base: Instant,
    next_probe_ms: AtomicU64,
    metrics: Arc<Metrics>,
}

/// A Redis URI without the password it may hold.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &uri[..s + 3], &uri[at..]),
        _ => uri.to_owned(),
    }
}

impl RedisStore {
    pub fn new(
        uri: &str,
        timeout: Duration,
        failure_mode: FailureMode,
        metrics: Arc<Metrics>,
    ) -> Result<RedisStore, String> {
        let name = redact(uri);
        let client =
            redis::Client::open(uri).map_err(|e| format!("Shared_Counters uri `{name}`: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        Ok(RedisStore {
            client,
            config,
            name,
            timeout,
            consequence: match failure_mode {
                FailureMode::Open => "failure_mode = open: mail goes through uncounted",
                FailureMode::Closed => "failure_mode = closed: mail and AUTH get temporary errors",
            },
            scripts: Scripts {
                take: Script::new(TAKE),
                give_back: Script::new(GIVE_BACK),
                acquire: Script::new(ACQUIRE),
                release: Script::new(RELEASE),
                fail: Script::new(FAIL),
            },
            conns: Mutex::default(),
            down: AtomicBool::new(false),
            base: Instant::now(),
            next_probe_ms: AtomicU64::new(0),
            metrics,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn take(&self, limits: &[Limit], n: u32) -> Result<Take, Unavailable> {
        let mut call = self.scripts.take.prepare_invoke();
        call.arg(n).arg(BUCKETS);
        for l in limits {
            call.key(&l.key).arg(l.limit).arg(l.window_ms);
        }
        let (index, now): (usize, u64) = self
            .exchange(|mut c| {
                let call = &call;
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(match index {
            0 => Take::Taken { at_ms: now },
            i => Take::Refused { index: i - 1 },
        })
    }

    pub async fn give_back(&self, windows: &[(String, u64)], n: u32, at_ms: u64) {
        let mut call = self.scripts.give_back.prepare_invoke();
        call.arg(n).arg(at_ms).arg(BUCKETS);
        for (key, window_ms) in windows {
            call.key(key).arg(*window_ms);
        }
        let _: Result<i64, _> = self
            .exchange(|mut c| {
                let call = &call;
                async move { call.invoke_async(&mut c).await }
            })
            .await;
    }

    /// `Some(i)`: key `i` is full.
    pub async fn acquire(
        &self,
        slots: &[(String, u32)],
        id: &str,
        lease: Duration,
    ) -> Result<Option<usize>, Unavailable> {
        let mut call = self.scripts.acquire.prepare_invoke();
        call.arg(id).arg(lease.as_millis() as u64);
        for (key, limit) in slots {
            call.key(key).arg(*limit);
        }
        let full: usize = self
            .exchange(|mut c| {
                let call = &call;
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(full.checked_sub(1))
    }

    pub async fn release(&self, keys: &[String], id: &str) {
        let mut call = self.scripts.release.prepare_invoke();
        call.arg(id);
        for key in keys {
            call.key(key);
        }
        let _: Result<i64, _> = self
            .exchange(|mut c| {
                let call = &call;
                async move { call.invoke_async(&mut c).await }
            })
            .await;
    }

    pub async fn failures(&self, keys: &[String]) -> Result<Vec<u32>, Unavailable> {
        let mut cmd = redis::cmd("MGET");
        cmd.arg(keys);
        let counts: Vec<Option<u32>> = self
            .exchange(|mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(counts.into_iter().map(|c| c.unwrap_or(0)).collect())
    }

    pub async fn fail(&self, keys: &[String], life: Duration) -> Result<(), Unavailable> {
        let mut call = self.scripts.fail.prepare_invoke();
        call.arg(life.as_millis() as u64);
        for key in keys {
            call.key(key);
        }
        let _: i64 = self
            .exchange(|mut c| {
                let call = &call;
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(())
    }

    pub async fn clear(&self, key: &str) -> Result<(), Unavailable> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        let _: i64 = self
            .exchange(|mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(())
    }

    /// One exchange on this thread's connection, bounded by the timeout, with the outage
    /// bookkeeping: down (logged once, counted), probing, and back up (logged once).
    async fn exchange<T, F, Fut>(&self, run: F) -> Result<T, Unavailable>
    where
        T: FromRedisValue,
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let probing = self.down.load(Ordering::Relaxed);
        if probing {
            let now = self.now_ms();
            let due = self.next_probe_ms.load(Ordering::Relaxed);
            let next = now + PROBE_EVERY.as_millis() as u64;
            if now < due
                || self
                    .next_probe_ms
                    .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                self.metrics.shared_counters_error();
                return Err(Unavailable);
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut fresh = probing;
        loop {
            let conn = match self.connection(fresh) {
                Ok(c) => c,
                Err(e) => return Err(self.failed(&e.to_string())),
            };
            match tokio::time::timeout_at(deadline, run(conn.clone())).await {
                Ok(Ok(v)) => {
                    if self.down.swap(false, Ordering::Relaxed) {
                        self.recovered();
                    }
                    return Ok(v);
                }
                // A connection that broke since its last use (Redis restarted, a proxy cut
                // it) is replaced and the exchange tried once more within the same timeout.
                Ok(Err(e)) if !fresh && (e.is_io_error() || e.is_unrecoverable_error()) => {
                    fresh = true;
                }
                Ok(Err(e)) => return Err(self.failed(&e.to_string())),
                Err(_) => {
                    return Err(
                        self.failed(&format!("no answer within {} ms", self.timeout.as_millis()))
                    );
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// This thread's connection; a fresh one for a probe, so that a connection given up on
    /// during the outage does not answer for the store that came back.
    fn connection(&self, fresh: bool) -> redis::RedisResult<ConnectionManager> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let thread = std::thread::current().id();
        if fresh {
            conns.remove(&thread);
        }
        if let Some(c) = conns.get(&thread) {
            return Ok(c.clone());
        }
        let c = ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())?;
        conns.insert(thread, c.clone());
        Ok(c)
    }

    fn failed(&self, why: &str) -> Unavailable {
        self.metrics.shared_counters_error();
        if !self.down.swap(true, Ordering::Relaxed) {
            self.next_probe_ms.store(
                self.now_ms() + PROBE_EVERY.as_millis() as u64,
                Ordering::Relaxed,
            );
            log_warning!(
                "Shared_Counters {}: {why}; counters unavailable until it answers again (tried every {} s; {})",
                self.name,
                PROBE_EVERY.as_secs(),
                self.consequence
            );
        }
        Unavailable
    }

    fn recovered(&self) {
        // The other threads' connections may be ones given up on: they start afresh.
        let thread = std::thread::current().id();
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|t, _| *t == thread);
        log_info!("Shared_Counters {}: answering again", self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("rediss://user:s3cret@cache.example:6380/2"),
            "rediss://***@cache.example:6380/2"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("unix:///run/redis.sock"), "unix:///run/redis.sock");
    }
}
