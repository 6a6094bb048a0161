//! Authentication back ends: what decides whether credentials given to `AUTH` are good.
//!
//! The listener's AUTH front end decodes the mechanism and hands [`Credentials`] to the back end
//! its `Auth<Mech>Parameters uri` names; the back end answers with an [`Outcome`]. The three
//! verdicts are Momentum's `EC_AUTH_OK`, `EC_AUTH_FAIL` and `EC_AUTH_ERROR`, and they must stay
//! apart: only `Fail` may become a 535; a back end that could not decide is a 454.

pub mod file;

use crate::client::SmtpClient;
use crate::model::listener::Mechanism;
use crate::proxy;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroize;

/// A password or other secret: never printed, wiped from memory when dropped.
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What the client proved its identity with.
pub enum Proof {
    /// LOGIN and PLAIN: the password itself.
    Password(Secret),
    /// CRAM-MD5: the challenge sent and the hex HMAC-MD5 digest the client answered; with
    /// `smtp_auth_proxy://`, the upstream session that issued the challenge.
    CramMd5 {
        challenge: String,
        digest: String,
        upstream: Option<SmtpClient>,
    },
}

/// A CRAM-MD5 challenge (RFC 2195), from the back end: made here for a password file, the
/// upstream's own for `smtp_auth_proxy://` (the client's answer only works against it).
pub struct CramChallenge {
    pub challenge: String,
    pub upstream: Option<SmtpClient>,
}

pub struct Credentials {
    pub mechanism: Mechanism,
    /// The authentication identity as the client typed it.
    pub username: String,
    /// PLAIN's authorization identity; empty when not given.
    pub authzid: String,
    pub proof: Proof,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials are good: 235.
    Pass,
    /// The credentials are bad: 535.
    Fail,
    /// Nothing could be decided (back end down, slow, or answering nonsense): 454.
    Error,
}

impl From<Verdict> for crate::metrics::Outcome {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Pass => crate::metrics::Outcome::Pass,
            Verdict::Fail => crate::metrics::Outcome::Fail,
            Verdict::Error => crate::metrics::Outcome::Error,
        }
    }
}

impl Verdict {
    /// The connection-context value Momentum sets (`auth_status`).
    pub fn status(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }
}

pub struct Outcome {
    pub verdict: Verdict,
    /// What happened, for the log; never carries the secret.
    pub detail: String,
    /// The error was a timeout (acctlog writes `T` for these).
    pub timed_out: bool,
    /// On `Pass` through `smtp_auth_proxy://`, when asked for: the upstream session that
    /// accepted the AUTH, left open so the session's mail can go through it.
    pub upstream: Option<SmtpClient>,
}

impl Outcome {
    pub fn new(verdict: Verdict, detail: impl Into<String>) -> Outcome {
        Outcome {
            verdict,
            detail: detail.into(),
            timed_out: false,
            upstream: None,
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
    /// or a fixed upstream that runs the challenge itself.
    pub fn supports(&self, mechanism: Mechanism) -> bool {
        match self {
            Backend::File(_) => true,
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
    pub async fn authenticate(&self, creds: Credentials, keep_upstream: bool) -> Outcome {
        match self {
            Backend::File(f) => f.authenticate(&creds),
            Backend::SmtpAuthProxy(engine) => engine.authenticate(creds, keep_upstream).await,
        }
    }
}
