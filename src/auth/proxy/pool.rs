//! Upstream connections opened ahead of need: connected, greeted, EHLO'd (and STARTTLS'd), each
//! used for one AUTH. A login then costs the upstream one round trip instead of four.
//!
//! The pool belongs to the engine that opened its connections, so a connection made under one
//! configuration's `tls` / `tls_verify` can never serve another's: after a reload the new
//! engine starts empty, and the old pool closes with the old engine. Inside, connections are
//! kept per serving thread (each thread has its own runtime, and a socket is best driven by the
//! runtime that registered it) and per configured `host`. A connection that sat longer than
//! [`MAX_IDLE`] is dropped unused, well inside the idle timeouts upstreams use (Postfix 300 s,
//! Haraka 60 s); one that the upstream closed anyway fails at AUTH and the engine retries on a
//! fresh connection.

use crate::client::SmtpClient;
use crate::model::addr::HostPort;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

pub const MAX_IDLE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Host {
    ready: VecDeque<(SmtpClient, Instant)>,
    /// Connections being opened for the pool now.
    opening: usize,
}

/// Ready connections of one engine. The lock is held for a few instructions, by one serving
/// thread at a time per key in practice.
#[derive(Default)]
pub struct Pool {
    hosts: Mutex<HashMap<ThreadId, HashMap<HostPort, Host>>>,
}

impl Pool {
    fn with<R>(&self, host: &HostPort, f: impl FnOnce(&mut Host) -> R) -> R {
        let mut threads = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let hosts = threads.entry(std::thread::current().id()).or_default();
        // Looked up by reference: a login takes and reserves, and a copy of the key each time
        // was an allocation.
        if !hosts.contains_key(host) {
            hosts.insert(host.clone(), Host::default());
        }
        f(hosts.get_mut(host).expect("inserted above"))
    }

    /// A ready connection to `host` opened on this thread, the most recently opened one, if any
    /// is fresh enough.
    pub fn take(&self, host: &HostPort) -> Option<SmtpClient> {
        let now = Instant::now();
        self.with(host, |h| {
            h.ready.retain(|(_, at)| now.duration_since(*at) < MAX_IDLE);
            h.ready.pop_back().map(|(c, _)| c)
        })
    }

    /// How many more connections to open so that `size` are ready or on their way; counts
    /// them as opening.
    pub fn reserve(&self, host: &HostPort, size: usize) -> usize {
        self.with(host, |h| {
            let need = size.saturating_sub(h.ready.len() + h.opening);
            h.opening += need;
            need
        })
    }

    /// A connection opened for the pool arrived (`None`: opening it failed). Call it on the
    /// thread that reserved it.
    pub fn opened(&self, host: &HostPort, conn: Option<SmtpClient>) {
        self.with(host, |h| {
            h.opening = h.opening.saturating_sub(1);
            if let Some(c) = conn {
                h.ready.push_back((c, Instant::now()));
            }
        });
    }
}
