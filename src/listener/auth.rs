//! AUTH (RFC 4954) with LOGIN, PLAIN (RFC 4616) and CRAM-MD5 (RFC 2195), and bearer tokens
//! (OAUTHBEARER, XOAUTH2: `oauth.rs`): the front end decodes what the client sends and hands
//! the credentials to the mechanism's back end.
//!
//! Replies keep the three outcomes apart: `235 2.7.0` pass, `535 5.7.8` bad credentials,
//! `454 4.7.0` when the back end could not decide (the client should retry, not give up).

use super::acctlog;
use super::connection::{MAX_COMMAND_LINE, ReadError};
use super::policy::AuthOffer;
use super::session::{Authenticated, Flow, Session};
use super::throttle::Decision;
use crate::auth::{CramChallenge, Credentials, Exchange, Proof, Secret, Verdict};
use crate::model::listener::Mechanism;
use crate::reply::Reply;
use crate::{log_info, log_warning};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::time::Instant;
use zeroize::Zeroizing;

/// How an exchange ended without credentials.
pub(super) enum Abort {
    /// The client sent `*` (RFC 4954 §4): 501.
    Cancelled,
    /// Not base64, or not the mechanism's format: 501.
    Malformed,
    /// The client went away or idled out.
    Gone(ReadError),
}

impl Session {
    pub async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Flow {
        let initial = initial.map(Zeroizing::new);
        match self.auth_offer() {
            AuthOffer::NotOffered => {
                self.reject(503, (5, 5, 1), "Authentication not available");
                return Flow::Continue;
            }
            AuthOffer::StarttlsFirst => {
                self.reject(
                    538,
                    (5, 7, 11),
                    "Encryption required for requested authentication mechanism",
                );
                return Flow::Continue;
            }
            AuthOffer::Offered => {}
        }
        if !self.helo.as_ref().is_some_and(|h| h.esmtp) {
            self.reject(503, (5, 5, 1), "Send EHLO first");
            return Flow::Continue;
        }
        if self.auth.is_some() {
            self.reject(503, (5, 5, 1), "Already authenticated");
            return Flow::Continue;
        }
        if self.txn.is_some() {
            self.reject(
                503,
                (5, 5, 1),
                "AUTH not permitted during a mail transaction",
            );
            return Flow::Continue;
        }
        let Some(offered) = self
            .scope
            .mechanisms
            .iter()
            .find(|m| m.mechanism.name() == mechanism)
            .cloned()
        else {
            self.reject(504, (5, 5, 4), "Unrecognized authentication mechanism");
            return Flow::Continue;
        };
        let creds = match offered.mechanism {
            Mechanism::Plain => self.plain(initial).await,
            Mechanism::Login => self.login(initial).await,
            Mechanism::CramMd5 => match offered
                .backend
                .cram_md5_challenge(&self.scope.hostname)
                .await
            {
                Ok(c) => self.cram_md5(c).await,
                Err(outcome) => {
                    self.rt
                        .metrics
                        .auth(Mechanism::CramMd5, outcome.verdict.into());
                    log_warning!(
                        "session {}: AUTH CRAM-MD5 error before a user name ({})",
                        self.id,
                        outcome.detail
                    );
                    self.reply(454, (4, 7, 0), "Temporary authentication failure");
                    return Flow::Continue;
                }
            },
            Mechanism::OAuthBearer | Mechanism::XOAuth2 => {
                self.token(offered.mechanism, initial).await
            }
        };
        let creds = match creds {
            Ok(c) => c,
            Err(abort) => return self.aborted(abort),
        };
        match self
            .rt
            .throttle
            .check(self.client.ip, &creds.username, Instant::now())
            .await
        {
            Decision::Allow => {}
            Decision::Delay(wait) => tokio::time::sleep(wait).await,
            Decision::Refuse => {
                self.rt.metrics.auth_throttled();
                log_warning!(
                    "session {}: AUTH refused without checking: too many failures from {} (its address or network); user={}",
                    self.id,
                    self.client,
                    creds.username
                );
                self.reject(
                    454,
                    (4, 7, 0),
                    "Too many failed authentication attempts, try again later",
                );
                return Flow::Continue;
            }
            Decision::Unavailable => {
                self.reply(454, (4, 7, 0), "Temporary authentication failure");
                return Flow::Continue;
            }
        }
        // Mail after this AUTH goes through the upstream that accepted it unless a Gateway or
        // Routes names a next hop.
        let keep_upstream = self.rt.bridges_to_upstream();
        let username = creds.username.clone();
        // Set when the client did not answer an error challenge: it gets that answer's reply.
        let mut unanswered = None;
        let outcome = match offered.backend.authenticate(creds, keep_upstream).await {
            Exchange::Done(o) => o,
            Exchange::Challenge(c) => {
                let (o, a) = self
                    .error_challenge(&offered.backend, c, keep_upstream)
                    .await;
                unanswered = a;
                o
            }
        };
        self.rt
            .metrics
            .auth(offered.mechanism, outcome.verdict.into());
        if offered.log_authentication {
            crate::log::acctlog(&acctlog::line(
                &self.local,
                self.client.ip.map(|_| self.client.to_string()),
                &username,
                outcome.timed_out,
                outcome.verdict == Verdict::Pass,
            ));
        }
        self.set_context("auth_status", outcome.verdict.status());
        self.set_context("auth_name", offered.mechanism.name());
        self.set_context("auth_user", username.clone());
        let summary = format!(
            "session {}: AUTH {} user={} {} ({})",
            self.id,
            offered.mechanism.name(),
            username,
            outcome.verdict.status(),
            outcome.detail
        );
        match outcome.verdict {
            Verdict::Pass => {
                // The session's closing line names the user; a pass needs no line of its own.
                crate::log_debug!("{summary}");
                self.rt.throttle.succeeded(&username).await;
                self.auth = Some(Authenticated {
                    user: username.clone(),
                    mechanism: offered.mechanism,
                });
                if let Some(up) = outcome.upstream {
                    self.hop = Some(up);
                }
                self.update_relay_context();
                self.reply(235, (2, 7, 0), "Authentication successful");
            }
            Verdict::Fail => {
                log_info!("{summary}");
                self.rt
                    .throttle
                    .failed(self.client.ip, &username, Instant::now())
                    .await;
                if unanswered.is_none() {
                    self.reject(535, (5, 7, 8), "Authentication credentials invalid");
                }
            }
            Verdict::Error => {
                log_warning!("{summary}");
                if unanswered.is_none() {
                    self.reply(454, (4, 7, 0), "Temporary authentication failure");
                }
            }
        }
        match unanswered {
            Some(a) => self.aborted(a),
            None => Flow::Continue,
        }
    }

    /// Answers an exchange the client broke off.
    fn aborted(&mut self, abort: Abort) -> Flow {
        match abort {
            Abort::Cancelled => self.reject(501, (5, 0, 0), "Authentication cancelled"),
            Abort::Malformed => self.reject(501, (5, 5, 2), "Cannot decode the response"),
            Abort::Gone(ReadError::Idle) => {
                self.reply(421, (4, 4, 2), "Idle timeout, closing connection");
                return Flow::Close;
            }
            Abort::Gone(ReadError::TooLong) => {
                self.reject(500, (5, 5, 6), "Authentication exchange line too long")
            }
            Abort::Gone(_) => return Flow::Close,
        }
        Flow::Continue
    }

    /// Sends a `334` challenge and reads the client's answer, base64-decoded.
    pub(super) async fn challenge(&mut self, text: &str) -> Result<Zeroizing<Vec<u8>>, Abort> {
        self.conn.send(&Reply::plain(334, text.to_owned()));
        let line = Zeroizing::new(
            self.conn
                .read_line(MAX_COMMAND_LINE)
                .await
                .map_err(Abort::Gone)?,
        );
        decode(&line)
    }

    /// PLAIN: `authzid NUL authcid NUL password`, in the initial response or after `334 `.
    async fn plain(&mut self, initial: Option<Zeroizing<String>>) -> Result<Credentials, Abort> {
        let raw = match initial {
            Some(ir) => decode(ir.as_bytes())?,
            None => self.challenge("").await?,
        };
        let mut parts = raw.split(|&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Abort::Malformed);
        };
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| Abort::Malformed);
        let username = text(authcid)?;
        if username.is_empty() {
            return Err(Abort::Malformed);
        }
        Ok(Credentials {
            mechanism: Mechanism::Plain,
            authzid: text(authzid)?,
            username,
            proof: Proof::Password(Secret::new(text(password)?)),
        })
    }

    /// LOGIN: user name (possibly as the initial response), then password, each after a
    /// `334` prompt (`Username:` and `Password:` in base64).
    async fn login(&mut self, initial: Option<Zeroizing<String>>) -> Result<Credentials, Abort> {
        let user = match initial {
            Some(ir) => decode(ir.as_bytes())?,
            None => self.challenge("VXNlcm5hbWU6").await?,
        };
        let username = String::from_utf8(user.to_vec()).map_err(|_| Abort::Malformed)?;
        let password = self.challenge("UGFzc3dvcmQ6").await?;
        let password = String::from_utf8(password.to_vec()).map_err(|_| Abort::Malformed)?;
        Ok(Credentials {
            mechanism: Mechanism::Login,
            username,
            authzid: String::new(),
            proof: Proof::Password(Secret::new(password)),
        })
    }

    /// CRAM-MD5: the back end's challenge goes out, the answer is `user hexdigest`.
    async fn cram_md5(&mut self, c: CramChallenge) -> Result<Credentials, Abort> {
        let answer = self.challenge(&B64.encode(&c.challenge)).await?;
        let answer = std::str::from_utf8(&answer).map_err(|_| Abort::Malformed)?;
        let (user, digest) = answer.rsplit_once(' ').ok_or(Abort::Malformed)?;
        if user.is_empty() || digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Abort::Malformed);
        }
        Ok(Credentials {
            mechanism: Mechanism::CramMd5,
            username: user.to_owned(),
            authzid: String::new(),
            proof: Proof::CramMd5 {
                challenge: c.challenge,
                digest: digest.to_owned(),
                upstream: c.upstream,
            },
        })
    }
}

/// Decodes one base64 response line; `*` cancels, `=` is an empty response (RFC 4954 §4).
pub(super) fn decode(line: &[u8]) -> Result<Zeroizing<Vec<u8>>, Abort> {
    let line = line.trim_ascii();
    match line {
        b"*" => Err(Abort::Cancelled),
        b"=" => Ok(Zeroizing::new(Vec::new())),
        _ => B64
            .decode(line)
            .map(Zeroizing::new)
            .map_err(|_| Abort::Malformed),
    }
}
