//! The ESMTP listener: sockets from `Listen` scopes, and one session per client connection.
//!
//! The session is split by protocol phase, so the code for a command sits where the RFC puts
//! it: `ehlo.rs` (greeting, HELO/EHLO), `starttls.rs`, `auth.rs`, `mail.rs`, `rcpt.rs`,
//! `data.rs`, `xclient.rs` (Momentum's X-commands); `policy.rs` holds every relay and access
//! decision. Accepted mail goes into the spool (`store.rs`), or through the bridge to the AUTH
//! upstream where `deliver_through_upstream` asks for it (`bridge.rs`).

pub mod acctlog;
pub mod auth;
pub mod bridge;
pub mod command;
pub mod connection;
pub mod control;
pub mod data;
pub mod ehlo;
pub mod limit;
pub mod mail;
pub mod oauth;
pub mod policy;
pub mod proxy_protocol;
pub mod rcpt;
pub mod scope;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod starttls;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod xclient;
/// xtext moved to the crate root (outbound XCLIENT in `delivery` writes it too).
pub use crate::xtext;

use crate::auth::{Backend, Backends};
use crate::metrics::{ListenCounters, Metrics};
use crate::model::Config;
use crate::model::listener::{AuthBackend, EsmtpListener};
use scope::ClientScope;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tls::TlsConfigs;

/// What outlives every configuration: made once by the daemon, handed to each [`Runtime`].
#[derive(Clone, Default)]
pub struct Services {
    pub metrics: Arc<Metrics>,
    /// Where the sending limits and the AUTH failure counts are kept.
    pub counters: Arc<crate::limits::Shared>,
    /// Where accepted mail goes; `None` where nothing is stored (mail can then only go
    /// through the bridge).
    pub store: Option<Store>,
}

/// The spool and the queue manager that delivers from it.
#[derive(Clone)]
pub struct Store {
    pub spool: Arc<crate::spool::Spool>,
    pub queue: crate::queue::QueueHandle,
}

/// Everything sessions share: the configuration they started under and what was built from it
/// (authentication back ends, TLS configurations).
pub struct Runtime {
    pub config: Config,
    pub hostname: Arc<str>,
    backends: Backends,
    pub tls: TlsConfigs,
    /// AUTH failures per client address and user name (`Auth_Failure_Limit`).
    pub throttle: throttle::Throttle,
    /// The sending limits, and where their counters (and the throttle's) live.
    pub limits: crate::limits::Limits,
    /// `Listener_Sessions` budgets (per Listen, and per Peer that sets one), shared by every
    /// serving thread.
    pub caps: server::SessionCaps,
    /// Which configuration this is: every reload makes a new one.
    pub generation: u64,
    /// The daemon's metrics, which outlive every configuration.
    pub metrics: Arc<Metrics>,
    /// Session counters per Listen (by index).
    pub listen_metrics: Vec<ListenCounters>,
    /// Where accepted mail goes.
    pub store: Option<Store>,
    next_session: AtomicU64,
}

impl Runtime {
    /// Takes a checked configuration and the back ends built for it, and prepares the TLS
    /// configurations. What fails here is what only trying can tell (a key that does not match
    /// its certificate). The `services` are the daemon's, which outlive every configuration.
    pub fn new(
        config: Config,
        hostname: Arc<str>,
        backends: Backends,
        services: &Services,
    ) -> Result<Runtime, Vec<String>> {
        let metrics = services.metrics.clone();
        let counters = &services.counters;
        let mut errors = Vec::new();
        let failure_limit = config
            .esmtp_listener
            .as_ref()
            .and_then(|l| l.settings.auth_failure_limit.as_ref())
            .map_or(throttle::DEFAULT_LIMIT, |l| l.value);
        let limits = crate::limits::Limits::new(&config, counters, backends.datasource(), &metrics)
            .map_err(|e| vec![e])?;
        let mut rt = Runtime {
            config,
            hostname,
            backends,
            tls: TlsConfigs::default(),
            throttle: throttle::Throttle::new(
                failure_limit,
                limits.counters().clone(),
                limits.failure_mode(),
            ),
            limits,
            caps: server::SessionCaps::default(),
            generation: {
                static GENERATIONS: AtomicU64 = AtomicU64::new(1);
                GENERATIONS.fetch_add(1, Ordering::Relaxed)
            },
            next_session: AtomicU64::new(1),
            listen_metrics: Vec::new(),
            metrics,
            store: services.store.clone(),
        };
        let Some(listener) = rt.config.esmtp_listener.as_ref() else {
            return Err(vec!["no ESMTP_Listener".into()]);
        };
        let caps = server::SessionCaps::new(listener);
        rt.caps = caps;
        rt.listen_metrics = listener
            .listens
            .iter()
            .map(|l| rt.metrics.listen(&l.address.value.to_string()))
            .collect();
        // Every client class of every enabled Listen: clients matching no Peer, and each Peer.
        for (i, listen) in listener.listens.iter().enumerate() {
            if !listener.enabled(listen) {
                continue;
            }
            let clients = std::iter::once(None)
                .chain(listener.peers_for(listen).map(|p| Some(p.cidr.network)));
            for client in clients {
                if let Some(key) = ClientScope::resolve(&rt, i, client).tls
                    && let Err(e) = rt.tls.get(&key)
                {
                    errors.push(format!("Listen \"{}\": {e}", listen.address.value));
                }
            }
        }
        errors.dedup();
        if errors.is_empty() {
            Ok(rt)
        } else {
            Err(errors)
        }
    }

    /// Whether mail after an AUTH through the proxy engine goes through that upstream session
    /// (`deliver_through_upstream`) rather than the spool.
    pub fn bridges_to_upstream(&self) -> bool {
        self.config
            .auth_proxy
            .as_ref()
            .is_some_and(|p| p.enabled && p.deliver_through_upstream)
    }

    /// The index of the enabled Listen at `addr`, if this configuration has one.
    pub fn listen_at(&self, addr: &crate::model::addr::ListenAddr) -> Option<usize> {
        let listener = self.listener();
        listener
            .listens
            .iter()
            .position(|l| l.address.value == *addr && listener.enabled(l))
    }

    /// `Reconfig_Message` for a Listen: its own, the listener's, or Momentum's default.
    pub fn reconfig_message(&self, listen: usize) -> String {
        let listener = self.listener();
        listener.listens[listen]
            .settings
            .reconfig_message
            .as_ref()
            .or(listener.settings.reconfig_message.as_ref())
            .map_or_else(
                || crate::model::listener::DEFAULT_RECONFIG_MESSAGE.to_owned(),
                |m| m.value.clone(),
            )
    }

    pub fn listener(&self) -> &EsmtpListener {
        self.config
            .esmtp_listener
            .as_ref()
            .expect("Runtime::new checked there is a listener")
    }

    pub fn backend(&self, b: &AuthBackend) -> Option<Arc<Backend>> {
        self.backends.get(b)
    }

    /// A session identifier for logs: process id and a counter, unique for the process's life.
    pub fn session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        format!("{:X}-{n:X}", crate::log::pid())
    }
}
