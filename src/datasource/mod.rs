//! Datasources: per-user upstream lookups through ODBC, with a cache.
//!
//! ODBC calls block, so they never run on the async workers: each datasource has a small pool
//! of threads, each owning at most one connection (so at most [`CONNECTIONS`] per datasource),
//! fed through a bounded queue. Threads start on different URIs, which spreads the load over
//! them (Momentum's round-robin), and a connection that fails is dropped and the next URI tried.

pub mod cache;
pub mod odbc;

use crate::metrics::{Cache as Answer, DatasourceCounters, Metrics};
use crate::model::datasource::Datasource as Config;
use crate::model::query::Query;
use crate::{log_info, log_warning};
use cache::Cache;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// Connections (and threads) per datasource.
pub const CONNECTIONS: usize = 4;
/// Lookups waiting for a thread; beyond this the database is too slow to wait for.
const QUEUE: usize = 256;

/// A row's columns by name (lower case), NULL as `None`.
pub type Row = Vec<(String, Option<String>)>;

/// What a query is run for: its first value (the upstream), or its first row (the limits).
#[derive(Clone, Copy)]
enum Want {
    First,
    Row,
}

#[derive(Clone)]
enum Found {
    First(Option<String>),
    Row(Option<Row>),
}

struct Job {
    query: Arc<Query>,
    username: String,
    want: Want,
    reply: oneshot::Sender<Result<Found, String>>,
}

/// Why a lookup gave no answer. Kept typed to the end: a timeout is reported as one (acctlog's
/// `T`), not folded into a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No answer by the deadline.
    Timeout,
    /// Every thread is busy and the queue is full: the database is too slow to wait for.
    QueueFull,
    /// The datasource's threads are gone.
    Stopped,
    /// The database (or every URI of it) failed: the driver's words.
    Database(String),
}

impl LookupError {
    pub fn is_timeout(&self) -> bool {
        *self == LookupError::Timeout
    }
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Timeout => f.write_str("lookup timed out"),
            LookupError::QueueFull => f.write_str("lookup queue full"),
            LookupError::Stopped => f.write_str("datasource stopped"),
            LookupError::Database(e) => f.write_str(e),
        }
    }
}

pub struct Datasource {
    pub name: String,
    jobs: SyncSender<Job>,
    cache: Option<Mutex<Cache>>,
    rows: Option<Mutex<Cache<Option<Row>>>>,
    counters: DatasourceCounters,
}

impl Datasource {
    /// Starts the threads. They connect on first use, so a database that is down at start
    /// delays nothing and is retried with every lookup.
    pub fn start(cfg: &Config, metrics: &Metrics) -> Result<Arc<Datasource>, String> {
        let uris: Vec<String> = cfg
            .uris
            .iter()
            .filter_map(|u| odbc::connection_string(&u.value))
            .collect();
        if uris.is_empty() {
            return Err(format!("Datasource \"{}\": no usable uri", cfg.name));
        }
        odbc::environment()?;
        let (tx, rx) = sync_channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..CONNECTIONS {
            let rx = rx.clone();
            let uris = uris.clone();
            let name = cfg.name.clone();
            std::thread::Builder::new()
                .name(format!("ds-{}-{i}", cfg.name))
                .spawn(move || worker(&name, i, &uris, &rx))
                .map_err(|e| format!("Datasource \"{}\": {e}", cfg.name))?;
        }
        let cache = (!cfg.no_cache).then(|| Mutex::new(Cache::new(cfg.cache_size, cfg.cache_life)));
        let rows = (!cfg.no_cache).then(|| Mutex::new(Cache::new(cfg.cache_size, cfg.cache_life)));
        Ok(Arc::new(Datasource {
            name: cfg.name.clone(),
            jobs: tx,
            cache,
            rows,
            counters: metrics.datasource(&cfg.name),
        }))
    }

    /// The upstream for `username`: `Ok(None)` when the query finds no row. Past `deadline`, or
    /// when the database fails, an older cached answer is served (and logged as stale); without
    /// one, the error is returned.
    pub async fn lookup(
        &self,
        query: &Arc<Query>,
        username: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<String>, LookupError> {
        self.cached(
            &self.cache,
            query,
            username,
            deadline,
            Want::First,
            |a| match a {
                Found::First(host) => host,
                Found::Row(_) => None,
            },
        )
        .await
    }

    /// The first row `query` finds for `username` (the limits query), cached and served stale
    /// as [`Datasource::lookup`] is.
    pub async fn lookup_row(
        &self,
        query: &Arc<Query>,
        username: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Row>, LookupError> {
        self.cached(
            &self.rows,
            query,
            username,
            deadline,
            Want::Row,
            |a| match a {
                Found::Row(row) => row,
                Found::First(_) => None,
            },
        )
        .await
    }

    async fn cached<V: Clone>(
        &self,
        cache: &Option<Mutex<Cache<V>>>,
        query: &Arc<Query>,
        username: &str,
        deadline: tokio::time::Instant,
        want: Want,
        take: impl FnOnce(Found) -> V,
    ) -> Result<V, LookupError> {
        let now = Instant::now();
        let cached = cache.as_ref().and_then(|c| {
            c.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(username, now)
        });
        if let Some(hit) = &cached
            && hit.fresh
        {
            self.counters.cache(Answer::Hit);
            return Ok(hit.value.clone());
        }
        let timing = self.counters.query();
        let result = self.ask(query, username, want, deadline).await.map(take);
        timing.finish(result.is_ok());
        let answer = match (&result, &cached) {
            (Err(_), Some(_)) => Answer::Stale,
            _ => Answer::Miss,
        };
        self.counters.cache(answer);
        match (result, cached) {
            (Ok(value), _) => {
                if let Some(c) = cache {
                    c.lock().unwrap_or_else(|p| p.into_inner()).insert(
                        username,
                        value.clone(),
                        Instant::now(),
                    );
                }
                Ok(value)
            }
            (Err(e), Some(stale)) => {
                log_warning!(
                    "Datasource \"{}\": {e}; serving the cached answer for {username} (stale)",
                    self.name
                );
                Ok(stale.value)
            }
            (Err(e), None) => Err(e),
        }
    }

    async fn ask(
        &self,
        query: &Arc<Query>,
        username: &str,
        want: Want,
        deadline: tokio::time::Instant,
    ) -> Result<Found, LookupError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            query: query.clone(),
            username: username.to_owned(),
            want,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(LookupError::QueueFull),
            Err(TrySendError::Disconnected(_)) => return Err(LookupError::Stopped),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r.map_err(LookupError::Database),
            Ok(Err(_)) => Err(LookupError::Stopped),
            Err(_) => Err(LookupError::Timeout),
        }
    }
}

fn worker(name: &str, id: usize, uris: &[String], jobs: &Mutex<Receiver<Job>>) {
    let mut conn = None;
    let mut next = id % uris.len();
    loop {
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        // The session gave up waiting (its deadline passed): do not run stale work.
        if job.reply.is_closed() {
            continue;
        }
        let mut errors = Vec::new();
        let mut result = None;
        for _ in 0..uris.len() {
            if conn.is_none() {
                match odbc::connect(&uris[next]) {
                    Ok(c) => {
                        log_info!("Datasource \"{name}\": connected ({})", redact(&uris[next]));
                        conn = Some(c);
                    }
                    Err(e) => {
                        errors.push(e);
                        next = (next + 1) % uris.len();
                        continue;
                    }
                }
            }
            let c = conn.as_ref().expect("connected above");
            let answer = match job.want {
                Want::First => odbc::lookup(c, &job.query, &job.username).map(Found::First),
                Want::Row => odbc::lookup_row(c, &job.query, &job.username).map(Found::Row),
            };
            match answer {
                Ok(a) => {
                    result = Some(Ok(a));
                    break;
                }
                Err(e) => {
                    // A dead connection and a bad query look alike from here: drop the
                    // connection either way and try the next URI.
                    errors.push(e);
                    conn = None;
                    next = (next + 1) % uris.len();
                }
            }
        }
        let result = result.unwrap_or_else(|| Err(errors.join("; ")));
        let _ = job.reply.send(result);
    }
}

/// A connection string with its password values hidden, for logs. Attributes are read as ODBC
/// writes them: `key=value;`, a value in braces may hold `;` and `=`, and `}}` inside braces
/// is a literal `}`; the whole value of `PWD` / `Password`, braces and all, becomes `***`.
pub fn redact(conn: &str) -> String {
    let mut out = String::with_capacity(conn.len());
    let mut rest = conn;
    while !rest.is_empty() {
        let (key, after_key) = match rest.split_once('=') {
            Some(kv) => kv,
            // A trailing fragment without `=` holds no value to hide.
            None => {
                out.push_str(rest);
                break;
            }
        };
        let value_len = if after_key.starts_with('{') {
            braced_len(after_key)
        } else {
            after_key.find(';').unwrap_or(after_key.len())
        };
        let (value, tail) = after_key.split_at(value_len);
        out.push_str(key);
        out.push('=');
        let secret = ["pwd", "password"]
            .iter()
            .any(|k| key.trim().eq_ignore_ascii_case(k));
        out.push_str(if secret { "***" } else { value });
        // The separator (and anything up to it, for a brace closed early) is kept as written.
        match tail.find(';') {
            Some(i) => {
                if !secret {
                    out.push_str(&tail[..i]);
                }
                out.push(';');
                rest = &tail[i + 1..];
            }
            None => {
                if !secret {
                    out.push_str(tail);
                }
                rest = "";
            }
        }
    }
    out
}

/// The length of a braced value at the start of `s` (`{...}`, with `}}` standing for `}`),
/// through its closing brace; the whole of `s` when the brace is never closed.
fn braced_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        if b[i] == b'}' {
            if b.get(i + 1) == Some(&b'}') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// `--check-datasources`: connects to every URI and prepares the query there (blocking).
pub fn check(cfg: &Config, query: &Query) -> Vec<String> {
    let mut problems = Vec::new();
    for uri in &cfg.uris {
        let Some(cs) = odbc::connection_string(&uri.value) else {
            continue;
        };
        let what = format!("Datasource \"{}\" ({})", cfg.name, redact(&cs));
        match odbc::connect(&cs).and_then(|c| odbc::prepare(&c, query)) {
            Ok(()) => {}
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden_whole_braces_and_all() {
        assert_eq!(
            redact("Driver={PostgreSQL Unicode};Server=db;UID=u;PWD={Top;Secret-42};Port=5432;"),
            "Driver={PostgreSQL Unicode};Server=db;UID=u;PWD=***;Port=5432;"
        );
        assert_eq!(redact("PWD={a}}b;c=d};UID=x"), "PWD=***;UID=x");
        assert_eq!(redact("password=plain;UID=x"), "password=***;UID=x");
        // An unclosed brace hides everything after it rather than leak a part.
        assert_eq!(redact("UID=x;PWD={never;closed=1"), "UID=x;PWD=***");
        assert_eq!(
            redact("Driver=SQLite3;Database=/tmp/a.db"),
            "Driver=SQLite3;Database=/tmp/a.db"
        );
    }
}
