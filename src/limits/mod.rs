//! Sending limits and the counters behind them (and behind `Auth_Failure_Limit`), in this
//! process or shared by a fleet through Redis.
//!
//! The limits: messages and recipients per window for each authenticated user, client address
//! (IPv6 per /64) and `relay_hosts` entry, and concurrent sessions per user and per address
//! (options in `model::limits`; a user's own through `limits_query`). Over a limit, MAIL or RCPT
//! gets `452 4.7.1` naming it; the mail already accepted in the transaction stays accepted.
//!
//! The algorithm is a sliding window of 60 buckets (`window.rs`), chosen over the others:
//! - a fixed window lets twice the limit through across a boundary;
//! - a token bucket (or GCRA, its one-number form) of capacity N refilling N per window also
//!   lets close to 2N through in some window-long stretch (a full bucket, then the refill),
//!   which is not what "100 per hour" promises an operator;
//! - an exact sliding log holds one timestamp per unit: 10,000 per day is 10,000 entries a key;
//! - a two-bucket sliding counter estimates, and under a burst at the end of one window it
//!   lets through more than the limit in the next.
//!
//! Sixty buckets never let more than the limit through in any window-long stretch, hold 60
//! numbers per key whatever the limit, and cost one Lua script in Redis: a single round trip,
//! atomic across instances.

pub mod counters;
pub mod local;
pub mod redis;
pub mod sending;
pub mod user;
pub mod window;

pub use counters::Counters;
pub use sending::{Sender, SessionLimits};

use crate::datasource::Datasource;
use crate::metrics::Metrics;
use crate::model::Config;
use crate::model::limits::{FailureMode, SharedCounters};
use crate::model::query::Query;
use local::Local;
use redis::RedisStore;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What outlives a configuration: the in-process counters (a reload does not reset a sender's
/// record), the Redis store while its settings stay the same, and what was logged when.
pub struct Shared {
    local: Arc<Local>,
    redis: Mutex<Option<(RedisSettings, Arc<RedisStore>)>>,
    logged: Mutex<HashMap<String, Instant>>,
    /// This instance's name in lease ids: host and process.
    instance: String,
    leases: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            local: Arc::default(),
            redis: Mutex::default(),
            logged: Mutex::default(),
            instance: format!("{}:{}", crate::net::hostname(), std::process::id()),
            leases: AtomicU64::new(0),
        }
    }
}

/// What a Redis store is built from: a reload that keeps these keeps the store.
type RedisSettings = (String, Duration, FailureMode);

/// Entries of the once-per-window log bookkeeping kept at most.
const MAX_LOGGED: usize = 10_000;

impl Shared {
    /// The counters `cfg` asks for: this process's, or a Redis store (the running one when its
    /// settings did not change, so a reload keeps its connections).
    pub fn counters(
        &self,
        cfg: Option<&SharedCounters>,
        metrics: &Arc<Metrics>,
    ) -> Result<Counters, String> {
        let Some(cfg) = cfg else {
            return Ok(Counters::Local(self.local.clone()));
        };
        let settings = (cfg.uri.value.clone(), cfg.timeout, cfg.failure_mode);
        let mut redis = self.redis.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, store)) = redis.as_ref()
            && *s == settings
        {
            return Ok(Counters::Redis(store.clone()));
        }
        let store = Arc::new(RedisStore::new(
            &cfg.uri.value,
            cfg.timeout,
            cfg.failure_mode,
            metrics.clone(),
        )?);
        *redis = Some((settings, store.clone()));
        Ok(Counters::Redis(store))
    }

    /// Whether `key` was not logged within `window`; if so, it counts as logged now.
    pub fn first_in(&self, key: String, window: Duration) -> bool {
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < window)
        {
            return false;
        }
        if logged.len() >= MAX_LOGGED {
            // Forget the oldest half: at worst a line is written twice in its window.
            let mut ats: Vec<Instant> = logged.values().copied().collect();
            ats.sort_unstable();
            let cut = ats[ats.len() / 2];
            logged.retain(|_, at| *at > cut);
        }
        logged.insert(key, now);
        true
    }

    /// A name for one session's slots, unique across the fleet.
    fn lease_id(&self) -> String {
        let n = self.leases.fetch_add(1, Ordering::Relaxed);
        format!("{}:{n}", self.instance)
    }
}

/// `limits_query`, where it is set.
struct UserLookup {
    datasource: Arc<Datasource>,
    query: Arc<Query>,
    timeout: Duration,
}

/// The limits of one configuration.
pub struct Limits {
    shared: Arc<Shared>,
    counters: Counters,
    failure_mode: FailureMode,
    per_user: Option<UserLookup>,
    metrics: Arc<Metrics>,
}

impl Limits {
    /// `datasource`: the proxy engine's `ds_cache`, on which `limits_query` runs.
    pub fn new(
        config: &Config,
        shared: &Arc<Shared>,
        datasource: Option<Arc<Datasource>>,
        metrics: &Arc<Metrics>,
    ) -> Result<Limits, String> {
        let cfg = config.shared_counters.as_ref();
        let proxy = config.auth_proxy.as_ref();
        let per_user = match (datasource, proxy.and_then(|p| p.limits_query.as_ref())) {
            (Some(datasource), Some(q)) => Some(UserLookup {
                datasource,
                query: Arc::new(q.value.clone()),
                timeout: proxy.map_or(crate::model::proxy::DEFAULT_TIMEOUT, |p| p.timeout),
            }),
            _ => None,
        };
        Ok(Limits {
            shared: shared.clone(),
            counters: shared.counters(cfg, metrics)?,
            failure_mode: cfg.map_or(FailureMode::default(), |c| c.failure_mode),
            per_user,
            metrics: metrics.clone(),
        })
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn failure_mode(&self) -> FailureMode {
        self.failure_mode
    }
}

/// An address as the limits count it: IPv4 as is, IPv6 by its /64 (one host usually holds a
/// whole /64).
pub fn subject_address(ip: IpAddr) -> IpAddr {
    masked(ip, 32, 64)
}

/// `ip` with only its first `v4_bits` (IPv4) or `v6_bits` (IPv6) kept.
pub fn masked(ip: IpAddr, v4_bits: u32, v6_bits: u32) -> IpAddr {
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
