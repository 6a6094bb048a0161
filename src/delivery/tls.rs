//! Client TLS configurations for outbound STARTTLS, one per `TLS_Verify` / `TLS_CA` pair in
//! the configuration, built once so that sessions are resumed across connections.

use crate::client::tls::client_config;
use crate::model::outbound::{DomainSettings, OutboundTls, OutboundTlsVerify};
use crate::model::proxy::TlsVerify;
use rustls::ClientConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

type Key = (TlsVerify, PathBuf);

#[derive(Default)]
pub struct TlsConfigs(HashMap<Key, Arc<ClientConfig>>);

impl TlsConfigs {
    /// Builds the configurations `settings` (every scope's) call for.
    pub fn build<'a>(
        settings: impl IntoIterator<Item = &'a DomainSettings>,
    ) -> Result<TlsConfigs, String> {
        let mut map = HashMap::new();
        for s in settings {
            if s.tls == OutboundTls::No {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(key(s)) {
                let (verify, ca) = slot.key();
                let config = client_config(*verify, ca)?;
                slot.insert(config);
            }
        }
        Ok(TlsConfigs(map))
    }

    pub fn get(&self, s: &DomainSettings) -> Option<Arc<ClientConfig>> {
        self.0.get(&key(s)).cloned()
    }
}

/// `optional` delivers whatever the check says, which is what `no` does.
fn key(s: &DomainSettings) -> Key {
    match s.tls_verify {
        OutboundTlsVerify::No | OutboundTlsVerify::Optional => (TlsVerify::No, PathBuf::new()),
        OutboundTlsVerify::Ca => (TlsVerify::Ca, s.tls_ca.clone()),
        OutboundTlsVerify::Host => (TlsVerify::Host, s.tls_ca.clone()),
    }
}
