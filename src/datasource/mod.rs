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

struct Job {
    query: Arc<Query>,
    username: String,
    reply: oneshot::Sender<Result<Option<String>, String>>,
}

pub struct Datasource {
    pub name: String,
    jobs: SyncSender<Job>,
    cache: Option<Mutex<Cache>>,
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
        Ok(Arc::new(Datasource {
            name: cfg.name.clone(),
            jobs: tx,
            cache,
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
    ) -> Result<Option<String>, String> {
        let now = Instant::now();
        let cached = self.cache.as_ref().and_then(|c| {
            c.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(username, now)
        });
        if let Some(hit) = &cached
            && hit.fresh
        {
            self.counters.cache(Answer::Hit);
            return Ok(hit.host.clone());
        }
        let timing = self.counters.query();
        let result = self.ask(query, username, deadline).await;
        timing.finish(result.is_ok());
        let answer = match (&result, &cached) {
            (Err(_), Some(_)) => Answer::Stale,
            _ => Answer::Miss,
        };
        self.counters.cache(answer);
        match (result, cached) {
            (Ok(host), _) => {
                if let Some(c) = &self.cache {
                    c.lock().unwrap_or_else(|p| p.into_inner()).insert(
                        username,
                        host.clone(),
                        Instant::now(),
                    );
                }
                Ok(host)
            }
            (Err(e), Some(stale)) => {
                log_warning!(
                    "Datasource \"{}\": {e}; serving the cached answer for {username} (stale)",
                    self.name
                );
                Ok(stale.host)
            }
            (Err(e), None) => Err(e),
        }
    }

    async fn ask(
        &self,
        query: &Arc<Query>,
        username: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<String>, String> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            query: query.clone(),
            username: username.to_owned(),
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err("lookup queue full".into()),
            Err(TrySendError::Disconnected(_)) => return Err("datasource stopped".into()),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("datasource thread ended".into()),
            Err(_) => Err("lookup timed out".into()),
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
            match odbc::lookup(
                conn.as_ref().expect("connected above"),
                &job.query,
                &job.username,
            ) {
                Ok(host) => {
                    result = Some(Ok(host));
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

/// A connection string with its password values hidden, for logs.
pub fn redact(conn: &str) -> String {
    conn.split(';')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("pwd") || k.eq_ignore_ascii_case("password") => {
                format!("{k}=***")
            }
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
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
