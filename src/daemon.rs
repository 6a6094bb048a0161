//! The running daemon: serving threads, signals, reload and stop.
//!
//! One serving thread per CPU but one (at least one), each a single-threaded runtime told by
//! commands which sockets to accept on. SIGHUP reloads: the new configuration is read and
//! checked first, and only a valid one replaces the running one (new sessions use it, Listens
//! are added and removed, sessions on the old one answer `Reconfig_Message` at their next MAIL
//! or RSET). SIGTERM and SIGINT drain (see `listener::shutdown`).

use crate::listener::server::{self, Bound, Command};
use crate::listener::{Runtime, Services, Store, control, shutdown};
use crate::metrics::Metrics;
use crate::metrics::http::Exporter;
use crate::model::Config;
use crate::model::addr::ListenAddr;
use crate::{log_error, log_info, log_warning};
use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// How long deliveries under way may take to finish at a stop, once sessions are done.
const QUEUE_STOP: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and checks the configuration again; `Err` holds the messages (with file:line:col).
pub type Reload = dyn Fn() -> Result<Config, Vec<String>>;

/// Runs the daemon on `config` until a stop; returns the exit code. `ready` (daemon mode) is
/// told `ready`, or why not, once the sockets are bound and privileges dropped.
pub fn run(config: Config, reload: &Reload, mut ready: Option<UnixStream>) -> i32 {
    let mut fail = |message: String| {
        eprintln!("smtp-auth-proxy: {message}");
        if let Some(r) = ready.as_mut() {
            let _ = r.write_all(format!("smtp-auth-proxy: {message}\n").as_bytes());
        }
        1
    };
    crate::crypto::install();
    let metrics = Arc::new(Metrics::new());
    let security = config.security.clone();
    let user = security
        .as_ref()
        .and_then(|s| s.user.as_ref())
        .map(|u| u.value.clone());
    let group = security
        .as_ref()
        .and_then(|s| s.group.as_ref())
        .map(|g| g.value.clone());
    // The spool is opened (and recovered) before anything serves. Its directories belong to
    // the Security user, who writes every message once root is given up.
    let spoolbase = config.spoolbase();
    let dirs = [
        spoolbase.clone(),
        spoolbase.join(crate::spool::QUEUE_DIR),
        spoolbase.join(crate::spool::CORRUPT_DIR),
        spoolbase.join(crate::spool::SPARE_DIR),
    ];
    let dirs: Vec<&std::path::Path> = dirs.iter().map(|d| d.as_path()).collect();
    if let Err(e) = crate::privileges::prepare_dirs(&dirs, user.as_deref(), group.as_deref()) {
        return fail(format!("Spoolbase: {e}"));
    }
    let (spool, recovered) =
        match crate::spool::Spool::open(&spoolbase, crate::spool::SpoolOptions::default()) {
            Ok(s) => s,
            Err(e) => return fail(format!("Spoolbase {}: {e}", spoolbase.display())),
        };
    let hostname = crate::net::hostname();
    let queue_settings = match crate::queue::Settings::from_config(&config, &hostname) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (queue, inbox) = crate::queue::QueueHandle::channel();
    let services = Services {
        metrics: metrics.clone(),
        counters: Arc::new(crate::limits::Shared::default()),
        store: Some(Store {
            spool: spool.clone(),
            queue: queue.clone(),
        }),
    };
    let rt = match prepare(config, &services) {
        Ok(rt) => rt,
        Err(errors) => return fail(errors.join("\nsmtp-auth-proxy: ")),
    };
    apply_debug_level(&rt.config);
    let bound = match server::bind_all(&rt) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let mut exporter = Exporter::new(metrics.clone());
    let scraped = match exporter.bind_new(&rt.config) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    // Counting starts with the first session, before the endpoint is served.
    exporter.metrics().set_enabled(!scraped.is_empty());
    exporter.metrics().loaded();
    let first = rt.clone();
    // Every serving thread's sockets are bound now, while still privileged: a privileged
    // port needs root, and SO_REUSEPORT sockets must share one owner.
    let threads = serving_threads();
    let mut more_sockets = Vec::new();
    for _ in 1..threads {
        match server::bind_again(&bound) {
            Ok(b) => more_sockets.push(b),
            Err(e) => return fail(e),
        }
    }
    // Sockets bound and keys read: root is no longer needed.
    if let Err(e) = crate::privileges::drop_to(user.as_deref(), group.as_deref()) {
        return fail(e);
    }
    // Delivery starts as the Security user, with what the spool held; the operator's
    // commands come in by a socket in the Spoolbase, which that user owns.
    if let Err(e) = crate::queue::start(
        inbox,
        queue.clone(),
        spool.clone(),
        recovered.queued,
        queue_settings,
        metrics.clone(),
    ) {
        return fail(e);
    }
    let control = match crate::queue::control::bind(&spoolbase) {
        Ok(l) => l,
        Err(e) => {
            return fail(format!(
                "the queue's control socket in {}: {e}",
                spoolbase.display()
            ));
        }
    };
    match crate::net::raise_fd_limit() {
        Ok(n) => log_info!("open file limit: {n}"),
        Err(e) => log_warning!("cannot raise the open file limit: {e}"),
    }
    server::announce(&rt, &bound, threads);
    let mut active: HashMap<ListenAddr, String> = bound
        .iter()
        .map(|b| (b.addr.clone(), b.local.clone()))
        .collect();
    control::install(rt);
    // Each serving thread runs its own single-threaded runtime over its own
    // SO_REUSEPORT sockets, so a session never hops between threads (no cross-thread
    // wake-ups, measured at about a tenth of the CPU per session).
    let mut threads_tx = Vec::new();
    let (main_tx, main_rx) = unbounded_channel();
    threads_tx.push(main_tx);
    for (i, more) in (1..threads).zip(more_sockets) {
        let (tx, rx) = unbounded_channel();
        let _ = tx.send(Command::Add(more));
        threads_tx.push(tx);
        let spawned = std::thread::Builder::new()
            .name(format!("serve-{i}"))
            .spawn(move || match single_threaded() {
                Ok(tokio) => tokio.block_on(server::serve(rx)),
                Err(e) => log_error!("serving thread {i}: {e}"),
            });
        if let Err(e) = spawned {
            return fail(format!("cannot start a serving thread: {e}"));
        }
    }
    let _ = threads_tx[0].send(Command::Add(bound));
    let tokio = match single_threaded() {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    if let Some(mut r) = ready.take() {
        let _ = r.write_all(b"ready\n");
    }
    let code = tokio.block_on(async move {
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("smtp-auth-proxy: cannot handle signals: {e}");
                return 1;
            }
        };
        let serving = tokio::spawn(server::serve(main_rx));
        tokio::spawn(crate::queue::control::serve(control, queue.clone(), spool));
        exporter.apply(&first.config, scraped);
        drop(first);
        let signal = loop {
            match signals.next().await {
                Signal::Hup => {
                    reconfigure(reload, &threads_tx, &mut active, &mut exporter, &services)
                }
                Signal::Stop(name) => break name,
            }
        };
        log_info!(
            "{signal}: stopping: no new connections, {} session(s) may finish",
            shutdown::sessions()
        );
        shutdown::drain(shutdown::drain_deadline()).await;
        serving.abort();
        // No session can queue anything now: deliveries under way finish (or are left in the
        // spool for the next start) within a bound of their own.
        queue.stop(tokio::time::Instant::now() + QUEUE_STOP).await;
        log_info!("stopped");
        0
    });
    crate::log::flush();
    code
}

/// SIGHUP: a new configuration replaces the running one only if it is valid and its new
/// Listens can be bound; otherwise the old one keeps running and the errors are logged.
fn reconfigure(
    reload: &Reload,
    threads: &[UnboundedSender<Command>],
    active: &mut HashMap<ListenAddr, String>,
    exporter: &mut Exporter,
    services: &Services,
) {
    let metrics = exporter.metrics().clone();
    let failed = |errors: Vec<String>| {
        metrics.reload(false);
        for e in errors {
            log_error!("Reconfigure failed: {e}");
        }
    };
    let config = match reload() {
        Ok(c) => c,
        Err(errors) => return failed(errors),
    };
    let queue = match crate::queue::Settings::from_config(&config, &crate::net::hostname()) {
        Ok(q) => q,
        Err(e) => return failed(vec![e]),
    };
    let rt = match prepare(config, services) {
        Ok(rt) => rt,
        Err(errors) => return failed(errors),
    };
    let wanted: Vec<ListenAddr> = rt
        .listener()
        .enabled_listens()
        .map(|l| l.address.value.clone())
        .collect();
    let added = match server::bind_where(&rt, |a| !active.contains_key(a)) {
        Ok(b) => b,
        Err(e) => return failed(vec![e]),
    };
    let mut per_thread: Vec<Vec<Bound>> = Vec::new();
    for _ in 1..threads.len() {
        match server::bind_again(&added) {
            Ok(b) => per_thread.push(b),
            Err(e) => return failed(vec![e]),
        }
    }
    let scraped = match exporter.bind_new(&rt.config) {
        Ok(b) => b,
        Err(e) => return failed(vec![e]),
    };
    apply_debug_level(&rt.config);
    let removed: Vec<ListenAddr> = active
        .keys()
        .filter(|a| !wanted.contains(a))
        .cloned()
        .collect();
    let added_count = added.len();
    server::announce(&rt, &added, threads.len());
    for a in &removed {
        log_info!("no longer listening on {} (Listen \"{a}\")", active[a]);
        active.remove(a);
    }
    active.extend(added.iter().map(|b| (b.addr.clone(), b.local.clone())));
    exporter.apply(&rt.config, scraped);
    // Queued mail follows the new routes and retry options from its next attempt.
    if let Some(store) = &services.store {
        store.queue.reconfigure(queue);
    }
    // The new configuration first, so that the new accept loops find their Listen in it.
    control::install(rt);
    let mut bounds = std::iter::once(added).chain(per_thread);
    for tx in threads {
        let _ = tx.send(Command::Remove(removed.clone()));
        let _ = tx.send(Command::Add(bounds.next().unwrap_or_default()));
    }
    metrics.reload(true);
    log_info!(
        "reconfigured (generation {}): {added_count} Listen(s) added, {} removed",
        control::generation(),
        removed.len()
    );
}

/// Builds what a configuration runs on: its authentication back ends (the proxy engine with its
/// datasource, password files), then the listener's runtime over them.
/// The `services` are the daemon's, which outlive every configuration.
pub fn prepare(config: Config, services: &Services) -> Result<Arc<Runtime>, Vec<String>> {
    let hostname: Arc<str> = Arc::from(crate::net::hostname());
    let backends = crate::auth::Backends::build(&config, &hostname, &services.metrics)?;
    Runtime::new(config, hostname, backends, services).map(Arc::new)
}

/// `smtp_auth_proxy { debug_level = … }` sets how much the daemon logs (info by default).
fn apply_debug_level(config: &Config) {
    let level = config
        .auth_proxy
        .as_ref()
        .and_then(|p| p.debug_level.as_ref())
        .map_or(crate::log::Level::Info, |l| l.value);
    crate::log::set_level(level);
}

enum Signal {
    Hup,
    Stop(&'static str),
}

/// The signals the daemon acts on, registered once so none is missed between two waits.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Hup,
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
        }
    }
}

fn single_threaded() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The serving threads: [`default_threads`] of the CPUs the process may use;
/// `SMTP_AUTH_PROXY_THREADS` overrides.
fn serving_threads() -> usize {
    std::env::var("SMTP_AUTH_PROXY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| {
            default_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        })
}

/// One serving thread per CPU but one, and at least one. Two thirds of a session's CPU time is
/// the kernel's TCP work, and the log writer, datasource threads and often the upstream run on
/// the same machine: a CPU left to them keeps the serving threads from taking turns on the
/// others. Measured on 2 CPUs (README, "Performance"): one serving thread spends 15-35 % less
/// CPU per login than two, at the same rates.
fn default_threads(cpus: usize) -> usize {
    cpus.saturating_sub(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::default_threads;

    #[test]
    fn small_machines_serve_on_one_thread_and_larger_ones_leave_a_cpu_free() {
        assert_eq!(default_threads(1), 1);
        assert_eq!(default_threads(2), 1);
        assert_eq!(default_threads(4), 3);
        assert_eq!(default_threads(16), 15);
    }
}
