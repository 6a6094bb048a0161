//! Upstream connections opened ahead of need: connected, greeted, EHLO'd (and STARTTLS'd), each
//! used for one AUTH. A login then costs the upstream one round trip instead of four.
//!
//! The pool is per serving thread (each thread has its own runtime, and a socket is best
//! driven by the runtime that registered it) and per configured `host`. A connection that sat
//! longer than [`MAX_IDLE`] is dropped unused, well inside the idle timeouts upstreams use
//! (Postfix 300 s, Haraka 60 s); one that the upstream closed anyway fails at AUTH and the
//! engine retries on a fresh connection.

use crate::client::SmtpClient;
use crate::model::addr::HostPort;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub const MAX_IDLE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Host {
    ready: VecDeque<(SmtpClient, Instant)>,
    /// Connections being opened for the pool now.
    opening: usize,
}

thread_local! {
    static POOL: RefCell<HashMap<HostPort, Host>> = RefCell::new(HashMap::new());
}

/// A ready connection to `host`, the most recently opened one, if any is fresh enough.
pub fn take(host: &HostPort) -> Option<SmtpClient> {
    POOL.with_borrow_mut(|pool| {
        let h = pool.get_mut(host)?;
        let now = Instant::now();
        h.ready.retain(|(_, at)| now.duration_since(*at) < MAX_IDLE);
        h.ready.pop_back().map(|(c, _)| c)
    })
}

/// How many more connections to open so that `size` are ready or on their way; counts them
/// as opening.
pub fn reserve(host: &HostPort, size: usize) -> usize {
    POOL.with_borrow_mut(|pool| {
        let h = pool.entry(host.clone()).or_default();
        let need = size.saturating_sub(h.ready.len() + h.opening);
        h.opening += need;
        need
    })
}

/// A connection opened for the pool arrived (`None`: opening it failed).
pub fn opened(host: &HostPort, conn: Option<SmtpClient>) {
    POOL.with_borrow_mut(|pool| {
        let h = pool.entry(host.clone()).or_default();
        h.opening = h.opening.saturating_sub(1);
        if let Some(c) = conn {
            h.ready.push_back((c, Instant::now()));
        }
    });
}
