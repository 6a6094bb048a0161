//! rustls server configurations for STARTTLS and `Use_SSL`, built once at start-up for every
//! distinct (`TLS_Certificate`, `TLS_Key`, `TLS_Protocols`, `TLS_Ciphers`) the configuration
//! uses, so a bad key stops the daemon at start rather than failing a client's handshake.
//! Each issues its own session tickets, under a key that lives as long as the configuration
//! (a reload starts a new one: clients then make one full handshake).

use crate::model::listener::{TlsCiphers, TlsVersions};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsKey {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub versions: (bool, bool),
    pub suites: Option<Vec<&'static str>>,
}

impl TlsKey {
    pub fn new(
        cert: &Path,
        key: &Path,
        versions: TlsVersions,
        ciphers: Option<&TlsCiphers>,
    ) -> Self {
        TlsKey {
            certificate: cert.to_owned(),
            key: key.to_owned(),
            versions: (versions.tls12, versions.tls13),
            suites: ciphers.and_then(|c| c.suites.clone()),
        }
    }
}

/// The server configurations, by what they were built from. Start-up builds one for every
/// client class it can enumerate; a combination only a particular address reaches (Peers that
/// overlap in unusual ways) is built on first use.
#[derive(Default)]
pub struct TlsConfigs {
    built: Mutex<HashMap<TlsKey, Arc<ServerConfig>>>,
}

impl TlsConfigs {
    /// The configuration for `key`, built now if it was not yet.
    pub fn get(&self, key: &TlsKey) -> Result<Arc<ServerConfig>, String> {
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = built.get(key) {
            return Ok(c.clone());
        }
        let config = Arc::new(build(key)?);
        built.insert(key.clone(), config.clone());
        Ok(config)
    }
}

fn build(key: &TlsKey) -> Result<ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&key.certificate)
        .and_then(|it| it.collect())
        .map_err(|e| format!("TLS_Certificate {}: {e}", key.certificate.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS_Certificate {}: no certificate in the file",
            key.certificate.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(&key.key)
        .map_err(|e| format!("TLS_Key {}: {e}", key.key.display()))?;
    let mut provider = crate::crypto::provider();
    if let Some(names) = &key.suites {
        provider.cipher_suites.retain(|s| {
            let name = format!("{:?}", s.suite());
            names.iter().any(|n| *n == name)
        });
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if key.versions.1 {
        versions.push(&rustls::version::TLS13);
    }
    if key.versions.0 {
        versions.push(&rustls::version::TLS12);
    }
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS_Protocols/TLS_Ciphers leave nothing to offer: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            format!(
                "TLS_Certificate {} / TLS_Key {}: {e}",
                key.certificate.display(),
                key.key.display()
            )
        })?;
    // Stateless session tickets (TLS 1.3, and TLS 1.2 clients that ask for them): a returning
    // client resumes however many handshakes came between, on any serving thread, and nothing
    // is stored per session. rustls' default, a cache of 256 sessions behind one lock, was
    // full after 128 handshakes. The cache stays for TLS 1.2 clients without tickets.
    config.ticketer = crate::crypto::ticketer()
        .map_err(|e| format!("TLS session tickets cannot be issued: {e}"))?;
    Ok(config)
}

/// Every name in [`RUSTLS_SUITES`] is a suite the provider has (checked by a test).
#[cfg(test)]
mod tests {
    use crate::model::listener::RUSTLS_SUITES;

    #[test]
    fn suite_names_match_rustls() {
        let provider = crate::crypto::provider();
        let have: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        for (iana, _) in RUSTLS_SUITES {
            assert!(have.iter().any(|h| h == iana), "{iana} not in {have:?}");
        }
    }
}
