//! What a back end answers: Momentum's three outcomes, kept apart.

use super::credentials::ErrorChallenge;
use crate::client::SmtpClient;

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

/// Where an AUTH stands once the back end has the client's credentials.
pub enum Exchange {
    Done(Outcome),
    /// A bearer token was refused with an error challenge: the client must see it and answer
    /// before the upstream gives its final reply.
    Challenge(ErrorChallenge),
}
