//! Stopping without losing mail (SIGTERM, SIGINT): stop accepting, let sessions finish up to a
//! deadline, then tell those still open `421` at their next wait for a command.
//!
//! The state is process-wide, because the serving threads each run their own runtime; a
//! `watch` channel carries it to every accept loop and session on any of them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How long sessions may take to finish once a stop is asked for, unless
/// `SMTP_AUTH_PROXY_DRAIN_SECONDS` says otherwise.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

pub fn drain_deadline() -> Duration {
    std::env::var("SMTP_AUTH_PROXY_DRAIN_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(DRAIN_DEADLINE, Duration::from_secs)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// No new connections; sessions go on.
    Draining,
    /// Sessions close at their next wait for a command.
    Closing,
}

struct State {
    phase: watch::Sender<Phase>,
    sessions: AtomicUsize,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| State {
        phase: watch::channel(Phase::Serving).0,
        sessions: AtomicUsize::new(0),
    })
}

pub fn subscribe() -> watch::Receiver<Phase> {
    state().phase.subscribe()
}

pub fn set(phase: Phase) {
    state().phase.send_replace(phase);
}

/// Counts a session for as long as the guard lives.
pub struct SessionGuard(());

impl SessionGuard {
    pub fn new() -> SessionGuard {
        state().sessions.fetch_add(1, Ordering::SeqCst);
        SessionGuard(())
    }
}

impl Default for SessionGuard {
    fn default() -> Self {
        SessionGuard::new()
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        state().sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn sessions() -> usize {
    state().sessions.load(Ordering::SeqCst)
}

/// Waits until `phase` (or a later one) is reached.
pub async fn reached(rx: &mut watch::Receiver<Phase>, phase: Phase) {
    let rank = |p: Phase| p as u8;
    let _ = rx.wait_for(|p| rank(*p) >= rank(phase)).await;
}

/// The drain: stop accepting, wait for sessions up to `deadline`, then close the rest.
pub async fn drain(deadline: Duration) {
    set(Phase::Draining);
    let start = tokio::time::Instant::now();
    while sessions() > 0 && start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if sessions() > 0 {
        crate::log_info!(
            "{} session(s) still open after {deadline:?}: closing them",
            sessions()
        );
        set(Phase::Closing);
        let start = tokio::time::Instant::now();
        while sessions() > 0 && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
