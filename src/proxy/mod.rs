//! The proxy engine behind `smtp_auth_proxy://`: it asks an upstream SMTP server whether the
//! client's credentials are good, and reports the upstream's verdict.
//!
//! One attempt: connect, greeting, EHLO, then `AUTH PLAIN` (or `AUTH LOGIN` when that is all the
//! upstream offers) with the client's credentials. `235` is a pass; `535` or another 5xx is a
//! fail, and no other host is asked; anything else (refused, reset, timeout, a 4xx, garbage) is
//! an error, and the next configured host is tried. `timeout` bounds the whole exchange.

use crate::auth::{Credentials, Outcome, Proof, Verdict};
use crate::client::{ClientError, SmtpClient};
use crate::model::addr::HostPort;
use crate::model::proxy::SmtpAuthProxy;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::time::Duration;
use tokio::time::{Instant, timeout_at};
use zeroize::Zeroizing;

pub struct Engine {
    hosts: Vec<HostPort>,
    timeout: Duration,
    ehlo_name: String,
}

/// How one host's attempt ended.
enum Attempt {
    Verdict(Outcome),
    /// This host could not decide; try the next.
    Error(String),
}

impl Engine {
    pub fn new(cfg: &SmtpAuthProxy, ehlo_name: String) -> Engine {
        Engine {
            hosts: cfg.hosts.iter().map(|h| h.value.clone()).collect(),
            timeout: cfg.timeout,
            ehlo_name,
        }
    }

    pub async fn authenticate(&self, creds: &Credentials, keep_upstream: bool) -> Outcome {
        let Proof::Password(_) = &creds.proof else {
            return Outcome::new(Verdict::Error, "CRAM-MD5 is not relayed upstream");
        };
        if self.hosts.is_empty() {
            return Outcome::new(Verdict::Error, "no upstream host configured");
        }
        let deadline = Instant::now() + self.timeout;
        let mut errors = Vec::new();
        for host in &self.hosts {
            match timeout_at(deadline, self.attempt(host, creds, keep_upstream)).await {
                Ok(Attempt::Verdict(outcome)) => return outcome,
                Ok(Attempt::Error(e)) => errors.push(format!("{host}: {e}")),
                Err(_) => {
                    errors.push(format!("{host}: timed out"));
                    let mut o = Outcome::new(Verdict::Error, errors.join("; "));
                    o.timed_out = true;
                    return o;
                }
            }
        }
        Outcome::new(Verdict::Error, errors.join("; "))
    }

    async fn attempt(&self, host: &HostPort, creds: &Credentials, keep: bool) -> Attempt {
        match self.converse(host, creds, keep).await {
            Ok(a) => a,
            Err(ClientError::Timeout) => Attempt::Error("timed out".into()),
            Err(e) => Attempt::Error(e.to_string()),
        }
    }

    async fn converse(
        &self,
        host: &HostPort,
        creds: &Credentials,
        keep: bool,
    ) -> Result<Attempt, ClientError> {
        let Proof::Password(password) = &creds.proof else {
            unreachable!("checked by authenticate");
        };
        let (mut up, greeting) = SmtpClient::connect(host, self.timeout).await?;
        if greeting.code != 220 {
            return Ok(Attempt::Error(format!("greeting {greeting}")));
        }
        let ehlo = up.ehlo(&self.ehlo_name).await?;
        if !ehlo.is_positive() {
            return Ok(Attempt::Error(format!("EHLO {ehlo}")));
        }
        let reply = if up.offers_auth("PLAIN") {
            let raw = Zeroizing::new(format!(
                "{}\0{}\0{}",
                creds.authzid,
                creds.username,
                password.expose()
            ));
            let line = Zeroizing::new(format!("AUTH PLAIN {}", B64.encode(raw.as_bytes())));
            up.command(&line).await?
        } else if up.offers_auth("LOGIN") {
            let r = up.command("AUTH LOGIN").await?;
            if r.code != 334 {
                r
            } else {
                let r = up.command(&B64.encode(&creds.username)).await?;
                if r.code != 334 {
                    r
                } else {
                    let line = Zeroizing::new(B64.encode(password.expose()));
                    up.command(&line).await?
                }
            }
        } else {
            up.quit().await;
            return Ok(Attempt::Error(
                "upstream offers neither AUTH PLAIN nor AUTH LOGIN".into(),
            ));
        };
        let verdict = match reply.code {
            235 => Verdict::Pass,
            500..=599 => Verdict::Fail,
            _ => {
                up.quit().await;
                return Ok(Attempt::Error(format!("AUTH {reply}")));
            }
        };
        let mut outcome = Outcome::new(verdict, format!("{} answered {}", up.server, reply.code));
        if verdict == Verdict::Pass && keep {
            outcome.upstream = Some(up);
        } else {
            up.quit().await;
        }
        Ok(Attempt::Verdict(outcome))
    }
}
