//! The settings in force for one client: the effective scope (Listen-Peer > Listen > listener
//! Peer > listener > global) resolved once, and again whenever the client's address changes.

use super::Runtime;
use super::policy::{self, RelayRight};
use super::tls::TlsKey;
use crate::auth::Backend;
use crate::model::listener::{Effective, Extensions, InjectionPolicy, Mechanism};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// A mechanism the client may use, with its back end.
#[derive(Clone)]
pub struct OfferedMechanism {
    pub mechanism: Mechanism,
    pub backend: Arc<Backend>,
    pub log_authentication: bool,
}

#[derive(Clone)]
pub struct ClientScope {
    pub extensions: Extensions,
    /// The advertised mechanisms that have a working back end, in configured order.
    pub mechanisms: Vec<OfferedMechanism>,
    pub relay: RelayRight,
    pub require_ehlo: bool,
    /// `None`: `Idle_Time = 0`, no limit.
    pub idle_time: Option<Duration>,
    pub max_message_size: Option<u64>,
    pub hostname: Arc<str>,
    pub injection_policy: InjectionPolicy,
    /// Certificate and key in scope (STARTTLS or Use_SSL).
    pub tls: Option<TlsKey>,
    pub use_ssl: bool,
}

impl ClientScope {
    pub fn resolve(rt: &Runtime, listen: usize, client: Option<IpAddr>) -> ClientScope {
        let listener = rt.listener();
        let e = Effective::new(
            &rt.config.global,
            listener,
            &listener.listens[listen],
            client,
        );
        let extensions = e.extensions().map(|x| x.value.clone()).unwrap_or_default();
        let mechanisms = extensions
            .auth
            .iter()
            .filter_map(|&mechanism| {
                let params = &e.auth_parameters(mechanism)?.value;
                let backend = rt.backend(&params.backend.value)?;
                backend.supports(mechanism).then(|| OfferedMechanism {
                    mechanism,
                    backend,
                    log_authentication: params.log_authentication,
                })
            })
            .collect();
        let tls = match (e.tls_certificate(), e.tls_key()) {
            (Some(c), Some(k)) => Some(TlsKey::new(
                &c.value,
                &k.value,
                e.tls_protocols(),
                e.tls_ciphers().map(|c| &c.value),
            )),
            _ => None,
        };
        ClientScope {
            relay: policy::relay_right(&e, client),
            require_ehlo: e.require_ehlo(),
            idle_time: e.idle_time(),
            max_message_size: e.max_message_size(),
            hostname: e
                .banner_hostname()
                .map_or_else(|| rt.hostname.clone(), Arc::from),
            injection_policy: e.starttls_injection_policy(),
            use_ssl: e.use_ssl().is_some_and(|u| u.value) && tls.is_some(),
            tls,
            extensions,
            mechanisms,
        }
    }

    /// Whether STARTTLS is offered (listed, with a certificate, and not already implicit TLS).
    pub fn starttls_available(&self) -> bool {
        self.extensions.starttls && self.tls.is_some() && !self.use_ssl
    }
}
