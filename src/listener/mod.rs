//! The ESMTP listener: sockets from `Listen` scopes, and one session per client connection.
//!
//! The session is split by protocol phase, so the code for a command sits where the RFC puts
//! it: `ehlo.rs` (greeting, HELO/EHLO), `starttls.rs`, `auth.rs`, `mail.rs`, `rcpt.rs`,
//! `data.rs`, `xclient.rs` (Momentum's X-commands); `policy.rs` holds every relay and access
//! decision; `relay.rs` is the next hop the accepted mail goes to.

pub mod acctlog;
pub mod auth;
pub mod command;
pub mod connection;
pub mod control;
pub mod data;
pub mod ehlo;
pub mod mail;
pub mod policy;
pub mod proxy_protocol;
pub mod rcpt;
pub mod received;
pub mod relay;
pub mod scope;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod starttls;
pub mod throttle;
pub mod tls;
pub mod xclient;
/// xtext moved to the crate root (outbound XCLIENT in `delivery` writes it too).
pub use crate::xtext;

use crate::auth::{Backend, file::PasswordFile};
use crate::datasource::Datasource;
use crate::model::Config;
use crate::model::listener::{AuthBackend, EsmtpListener};
use crate::proxy;
use scope::ClientScope;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tls::TlsConfigs;

/// Everything sessions share: the configuration they started under and what was built from it
/// (authentication back ends, TLS configurations).
pub struct Runtime {
    pub config: Config,
    pub hostname: Arc<str>,
    proxy: Option<Arc<Backend>>,
    files: HashMap<PathBuf, Arc<Backend>>,
    pub tls: TlsConfigs,
    /// AUTH failures per client address and user name (`Auth_Failure_Limit`).
    pub throttle: throttle::Throttle,
    /// `Listener_Sessions` per Listen (by index), shared by every serving thread.
    pub caps: Vec<Option<Arc<tokio::sync::Semaphore>>>,
    /// Which configuration this is: every reload makes a new one.
    pub generation: u64,
    next_session: AtomicU64,
}

impl Runtime {
    /// Builds the back ends and TLS configurations the configuration names. The configuration
    /// has been checked; what fails here is what only trying can tell (a key that does not
    /// match its certificate, a password file that changed since).
    pub fn new(config: Config) -> Result<Runtime, Vec<String>> {
        let hostname: Arc<str> = Arc::from(crate::net::hostname());
        let mut errors = Vec::new();
        let mut proxy = None;
        if let Some(p) = config.auth_proxy.as_ref().filter(|p| p.enabled) {
            let datasource = match p
                .ds_cache
                .as_ref()
                .and_then(|n| config.datasource(&n.value))
            {
                Some(ds) => match Datasource::start(ds) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                },
                None => None,
            };
            match proxy::Engine::new(p, hostname.to_string(), datasource) {
                Ok(engine) => proxy = Some(Arc::new(Backend::SmtpAuthProxy(Arc::new(engine)))),
                Err(e) => errors.push(format!("smtp_auth_proxy: {e}")),
            }
        }
        let failure_limit = config
            .esmtp_listener
            .as_ref()
            .and_then(|l| l.settings.auth_failure_limit.as_ref())
            .map_or(throttle::DEFAULT_LIMIT, |l| l.value);
        let mut files = HashMap::new();
        let mut rt = Runtime {
            config,
            hostname,
            proxy,
            files: HashMap::new(),
            tls: TlsConfigs::default(),
            throttle: throttle::Throttle::new(failure_limit),
            caps: Vec::new(),
            generation: {
                static GENERATIONS: AtomicU64 = AtomicU64::new(1);
                GENERATIONS.fetch_add(1, Ordering::Relaxed)
            },
            next_session: AtomicU64::new(1),
        };
        let Some(listener) = rt.config.esmtp_listener.as_ref() else {
            return Err(vec!["no ESMTP_Listener".into()]);
        };
        let caps = listener
            .listens
            .iter()
            .map(|listen| {
                listen
                    .settings
                    .listener_sessions
                    .as_ref()
                    .or(listener.settings.listener_sessions.as_ref())
                    .map(|n| Arc::new(tokio::sync::Semaphore::new(n.value as usize)))
            })
            .collect();
        for s in rt.config.all_listener_settings() {
            for params in s.auth_parameters() {
                if let AuthBackend::File(path) = &params.backend.value
                    && !files.contains_key(path)
                {
                    match PasswordFile::load(path) {
                        Ok(f) => {
                            files.insert(path.clone(), Arc::new(Backend::File(f)));
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        rt.files = files;
        rt.caps = caps;
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
        match b {
            AuthBackend::SmtpAuthProxy => self.proxy.clone(),
            AuthBackend::File(p) => self.files.get(p).cloned(),
            AuthBackend::Unsupported(_) => None,
        }
    }

    /// A session identifier for logs: process id and a counter, unique for the process's life.
    pub fn session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        format!("{:X}-{n:X}", crate::log::pid())
    }
}
