//! Authentication back ends: what decides whether credentials given to `AUTH` are good.
//!
//! The listener's AUTH front end decodes the mechanism and hands [`Credentials`] to the back end
//! its `Auth<Mech>Parameters uri` names; the back end answers with an [`Outcome`]. The three
//! verdicts are Momentum's `EC_AUTH_OK`, `EC_AUTH_FAIL` and `EC_AUTH_ERROR`, and they must stay
//! apart: only `Fail` may become a 535; a back end that could not decide is a 454.

pub mod credentials;
pub mod file;
pub mod proxy;
pub mod verdict;

pub use credentials::{CramChallenge, Credentials, ErrorChallenge, Proof, Secret};
pub use verdict::{Exchange, Outcome, Verdict};

use crate::datasource::Datasource;
use crate::metrics::Metrics;
use crate::model::Config;
use crate::model::listener::{AuthBackend, Mechanism};
use file::PasswordFile;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Every back end a configuration names, built once per configuration (at start and at each
/// reload) and handed to the listener, which only looks them up.
#[derive(Default)]
pub struct Backends {
    proxy: Option<Arc<Backend>>,
    /// The proxy engine's `ds_cache`, which the limits query runs on too.
    datasource: Option<Arc<Datasource>>,
    files: HashMap<PathBuf, Arc<Backend>>,
}

impl Backends {
    /// Starts the proxy engine (with its datasource's threads) and reads the password files.
    /// What fails here is what only trying can tell: a file that changed since the check, a
    /// datasource without a usable URI.
    pub fn build(
        config: &Config,
        hostname: &str,
        metrics: &Arc<Metrics>,
    ) -> Result<Backends, Vec<String>> {
        let mut errors = Vec::new();
        let mut backends = Backends::default();
        if let Some(p) = config.auth_proxy.as_ref().filter(|p| p.enabled) {
            let datasource = match p
                .ds_cache
                .as_ref()
                .and_then(|n| config.datasource(&n.value))
            {
                Some(ds) => match Datasource::start(ds, metrics) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                },
                None => None,
            };
            backends.datasource = datasource.clone();
            match proxy::Engine::new(p, hostname.to_owned(), datasource, metrics) {
                Ok(engine) => {
                    backends.proxy = Some(Arc::new(Backend::SmtpAuthProxy(Arc::new(engine))))
                }
                Err(e) => errors.push(format!("smtp_auth_proxy: {e}")),
            }
        }
        for s in config.all_listener_settings() {
            for params in s.auth_parameters() {
                if let AuthBackend::File(path) = &params.backend.value
                    && !backends.files.contains_key(path)
                {
                    match PasswordFile::load(path) {
                        Ok(f) => {
                            backends
                                .files
                                .insert(path.clone(), Arc::new(Backend::File(f)));
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(backends)
        } else {
            Err(errors)
        }
    }

    /// The proxy engine's datasource, when it has one.
    pub fn datasource(&self) -> Option<Arc<Datasource>> {
        self.datasource.clone()
    }

    /// The back end an `Auth*Parameters uri` names, if this configuration built it.
    pub fn get(&self, b: &AuthBackend) -> Option<Arc<Backend>> {
        match b {
            AuthBackend::SmtpAuthProxy => self.proxy.clone(),
            AuthBackend::File(p) => self.files.get(p).cloned(),
            AuthBackend::Unsupported(_) => None,
        }
    }
}

/// A configured back end, shared by every session that uses it.
pub enum Backend {
    File(file::PasswordFile),
    SmtpAuthProxy(Arc<proxy::Engine>),
}

impl Backend {
    /// Whether the back end can check `mechanism`'s proof. CRAM-MD5 needs the password (a file)
    /// or a fixed upstream that runs the challenge itself; a bearer token, its provider's server.
    pub fn supports(&self, mechanism: Mechanism) -> bool {
        match self {
            Backend::File(_) => !mechanism.takes_token(),
            Backend::SmtpAuthProxy(engine) => {
                mechanism != Mechanism::CramMd5 || engine.can_relay_cram_md5()
            }
        }
    }

    /// A CRAM-MD5 challenge; `Err` is the outcome to report when none could be had.
    pub async fn cram_md5_challenge(&self, hostname: &str) -> Result<CramChallenge, Outcome> {
        match self {
            Backend::File(_) => Ok(CramChallenge {
                challenge: file::new_challenge(hostname),
                upstream: None,
            }),
            Backend::SmtpAuthProxy(engine) => engine.cram_md5_challenge().await,
        }
    }

    /// Checks `creds`. `keep_upstream`: the session will relay its mail through the upstream
    /// that accepted the AUTH, so return that connection instead of closing it.
    pub async fn authenticate(&self, creds: Credentials, keep_upstream: bool) -> Exchange {
        match self {
            Backend::File(f) => Exchange::Done(f.authenticate(&creds)),
            Backend::SmtpAuthProxy(engine) => engine.authenticate(creds, keep_upstream).await,
        }
    }

    /// Finishes an exchange the upstream refused with an error challenge: relays the client's
    /// answer (`None`: the client cancelled, or went away) and reports the final verdict.
    pub async fn answer(
        &self,
        challenge: ErrorChallenge,
        answer: Option<&[u8]>,
        keep_upstream: bool,
    ) -> Outcome {
        match self {
            // A password file never issues one.
            Backend::File(_) => Outcome::new(Verdict::Error, "no error challenge to answer"),
            Backend::SmtpAuthProxy(engine) => engine.answer(challenge, answer, keep_upstream).await,
        }
    }
}
