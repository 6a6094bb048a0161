//! The proxy engine behind `smtp_auth_proxy://`: it asks an upstream SMTP server whether the
//! client's credentials are good, and reports the upstream's verdict.
//!
//! Which upstream: the `ds_cache` datasource's answer for the user (first column of the first
//! row, `host` or `host:port`), else the configured `host` list. One attempt: connect,
//! greeting, EHLO, STARTTLS as `tls` says, then `AUTH PLAIN` (or `AUTH LOGIN` when that is all
//! the upstream offers) with the client's credentials. `235` is a pass; `535` or another 5xx is
//! a fail, and no other host is asked; anything else (refused, reset, timeout, a 4xx, garbage)
//! is an error, and the next host is tried. `timeout` bounds the whole exchange, lookup
//! included.
//!
//! Bearer tokens (OAUTHBEARER, XOAUTH2) go to the upstream as the client sent them, under the
//! same mechanism; an upstream that does not offer it is an error, not a fail. An upstream that
//! refuses a token answers with an error challenge (RFC 7628 §3.2.2), which the client must
//! see and answer before the final reply: [`Exchange::Challenge`], then [`Engine::answer`].

pub mod pool;

use super::credentials::{CramChallenge, Credentials, ErrorChallenge, Proof};
use super::verdict::{Exchange, Outcome, Verdict};
use crate::client::{ClientError, SmtpClient, tls};
use crate::datasource::Datasource;
use crate::metrics::{Metrics, Tls, UpstreamCounters};
use crate::model::addr::HostPort;
use crate::model::proxy::{SmtpAuthProxy, UpstreamTls};
use crate::model::query::Query;
use crate::reply::Reply;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, timeout_at};
use zeroize::Zeroizing;

pub struct Engine {
    hosts: Vec<HostPort>,
    port: u16,
    timeout: Duration,
    ehlo_name: String,
    lookup: Option<(Arc<Datasource>, Arc<Query>)>,
    tls: UpstreamTls,
    tls_config: Arc<rustls::ClientConfig>,
    /// Ready connections to keep per serving thread for each configured host (`pool`).
    pool_size: usize,
    /// This engine's own ready connections: they were opened under its TLS settings.
    pool: pool::Pool,
    /// When each remote upstream was last reported as taking passwords in clear text.
    clear_text_warned: std::sync::Mutex<std::collections::HashMap<HostPort, std::time::Instant>>,
    metrics: Arc<Metrics>,
    /// Per configured host (as `hosts`), with its label; then for hosts a datasource named.
    counters: Vec<(String, UpstreamCounters)>,
    looked_up: UpstreamCounters,
}

/// How often a remote upstream without STARTTLS is reported again.
const CLEAR_TEXT_WARNING_EVERY: Duration = Duration::from_secs(600);

/// How one host's attempt ended.
enum Attempt {
    Verdict(Outcome),
    /// The upstream refused a bearer token with an error challenge; the client answers it.
    Challenge(ErrorChallenge),
    /// This host could not decide; try the next.
    Error(String),
    /// This host did not answer in time (acctlog's `T`); try the next.
    Timeout,
}

impl From<ClientError> for Attempt {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Timeout => Attempt::Timeout,
            e => Attempt::Error(e.to_string()),
        }
    }
}

/// An error outcome from the errors of the hosts tried.
fn error_outcome(errors: Vec<String>, timed_out: bool) -> Outcome {
    let mut o = Outcome::new(Verdict::Error, errors.join("; "));
    o.timed_out = timed_out;
    o
}

impl Engine {
    pub fn new(
        cfg: &SmtpAuthProxy,
        ehlo_name: String,
        datasource: Option<Arc<Datasource>>,
        metrics: &Arc<Metrics>,
    ) -> Result<Engine, String> {
        let lookup = match (datasource, &cfg.query) {
            (Some(ds), Some(q)) => Some((ds, Arc::new(q.value.clone()))),
            _ => None,
        };
        Ok(Engine {
            hosts: cfg.hosts.iter().map(|h| h.value.clone()).collect(),
            port: cfg.port,
            timeout: cfg.timeout,
            ehlo_name,
            lookup,
            tls: cfg.tls,
            tls_config: tls::client_config(cfg.tls_verify, &cfg.tls_ca)?,
            pool_size: cfg.pool,
            pool: pool::Pool::default(),
            clear_text_warned: Default::default(),
            metrics: metrics.clone(),
            counters: cfg
                .hosts
                .iter()
                .map(|h| {
                    let label = h.value.to_string();
                    let c = metrics.upstream(&label);
                    (label, c)
                })
                .collect(),
            looked_up: metrics.upstream("datasource"),
        })
    }

    /// The counters of `host`: its own when configured, else those of looked-up hosts.
    fn counters(&self, host: &HostPort) -> &UpstreamCounters {
        self.hosts
            .iter()
            .position(|h| h == host)
            .map_or(&self.looked_up, |i| &self.counters[i].1)
    }

    /// The counters of the upstream a connection is to (its `server` label).
    fn counters_of(&self, up: &SmtpClient) -> &UpstreamCounters {
        self.counters
            .iter()
            .find(|(label, _)| *label == up.server)
            .map_or(&self.looked_up, |(_, c)| c)
    }

    /// CRAM-MD5's challenge comes before the user name, so only a fixed `host` can serve it.
    pub fn can_relay_cram_md5(&self) -> bool {
        !self.hosts.is_empty()
    }

    pub async fn authenticate(
        self: &Arc<Self>,
        mut creds: Credentials,
        keep_upstream: bool,
    ) -> Exchange {
        let deadline = Instant::now() + self.timeout;
        let upstream = match &mut creds.proof {
            Proof::CramMd5 { upstream, .. } => upstream.take(),
            Proof::Password(_) | Proof::Token(_) => None,
        };
        let result = timeout_at(deadline, async {
            match upstream {
                Some(up) => Exchange::Done(self.finish_cram_md5(up, &creds, keep_upstream).await),
                None => self.ask_upstreams(&creds, keep_upstream, deadline).await,
            }
        })
        .await;
        result.unwrap_or_else(|_| Exchange::Done(error_outcome(vec!["timed out".into()], true)))
    }

    /// Presents a password or token to the user's upstreams, in turn, until one decides.
    async fn ask_upstreams(
        self: &Arc<Self>,
        creds: &Credentials,
        keep: bool,
        deadline: Instant,
    ) -> Exchange {
        let hosts = match self.upstreams(&creds.username, deadline).await {
            Ok(h) => h,
            Err(o) => return Exchange::Done(o),
        };
        let mut errors = Vec::new();
        let mut timed_out = false;
        for host in &hosts {
            // Dropped without a verdict (an error, or the deadline cancelling it): an error.
            let counted = self.counters(host).attempt();
            match self.try_host(host, creds, keep).await {
                Ok(Attempt::Verdict(o)) | Err(Attempt::Verdict(o)) => {
                    counted.finish(o.verdict.into());
                    return Exchange::Done(o);
                }
                Ok(Attempt::Challenge(c)) | Err(Attempt::Challenge(c)) => {
                    // The verdict is counted when the client's answer comes back.
                    counted.hand_over();
                    return Exchange::Challenge(c);
                }
                Ok(Attempt::Error(e)) | Err(Attempt::Error(e)) => {
                    errors.push(format!("{host}: {e}"))
                }
                Ok(Attempt::Timeout) | Err(Attempt::Timeout) => {
                    timed_out = true;
                    errors.push(format!("{host}: timed out"));
                }
            }
        }
        Exchange::Done(error_outcome(errors, timed_out))
    }

    /// The hosts to ask for this user: the datasource's answer, or the configured list.
    async fn upstreams(&self, user: &str, deadline: Instant) -> Result<Vec<HostPort>, Outcome> {
        let Some((ds, query)) = &self.lookup else {
            return Ok(self.hosts.clone());
        };
        match ds.lookup(query, user, deadline).await {
            Ok(Some(h)) => HostPort::parse(&h, self.port)
                .map(|hp| vec![hp])
                .map_err(|e| {
                    Outcome::new(
                        Verdict::Error,
                        format!(
                            "Datasource \"{}\" answered `{h}` for the user: {e}",
                            ds.name
                        ),
                    )
                }),
            Ok(None) if !self.hosts.is_empty() => Ok(self.hosts.clone()),
            Ok(None) => Err(Outcome::new(
                Verdict::Fail,
                format!(
                    "Datasource \"{}\" has no upstream for the user and no `host` is set",
                    ds.name
                ),
            )),
            Err(e) => {
                let mut o =
                    Outcome::new(Verdict::Error, format!("Datasource \"{}\": {e}", ds.name));
                o.timed_out = e.is_timeout();
                Err(o)
            }
        }
    }

    /// Connects and gets the upstream ready for AUTH: greeting, EHLO, STARTTLS per `tls`.
    async fn open(&self, host: &HostPort) -> Result<SmtpClient, Attempt> {
        let (mut up, greeting) = SmtpClient::connect(host, self.timeout).await?;
        if greeting.code != 220 {
            return Err(Attempt::Error(format!("greeting {greeting}")));
        }
        let ehlo = up.ehlo(&self.ehlo_name).await?;
        if !ehlo.is_positive() {
            return Err(Attempt::Error(format!("EHLO {ehlo}")));
        }
        let offered = up.extension("STARTTLS").is_some();
        match (self.tls, offered) {
            (UpstreamTls::No, _) => return Ok(up),
            (UpstreamTls::IfAvailable, false) => {
                self.warn_clear_text(host);
                return Ok(up);
            }
            (UpstreamTls::Required, false) => {
                return Err(Attempt::Error(
                    "tls = required, but the upstream does not offer STARTTLS".into(),
                ));
            }
            _ => {}
        }
        let name = tls::server_name(&host.host).map_err(Attempt::Error)?;
        let handshake = up.starttls(self.tls_config.clone(), name).await;
        self.metrics
            .tls(Tls::Upstream, matches!(handshake, Ok(None)));
        if let Some(r) = handshake? {
            return Err(Attempt::Error(format!("STARTTLS {r}")));
        }
        let ehlo = up.ehlo(&self.ehlo_name).await?;
        if !ehlo.is_positive() {
            return Err(Attempt::Error(format!("EHLO after STARTTLS {ehlo}")));
        }
        Ok(up)
    }

    /// `tls = ifavailable` met an upstream without STARTTLS: passwords to it go in clear text.
    /// Harmless on loopback; elsewhere an operator must hear of it (at most every ten minutes
    /// per host), since an attacker on the path can cause it by stripping STARTTLS.
    fn warn_clear_text(&self, host: &HostPort) {
        if crate::model::addr::is_loopback_host(&host.host) {
            return;
        }
        let now = std::time::Instant::now();
        let mut warned = self
            .clear_text_warned
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if warned
            .get(host)
            .is_some_and(|at| now.duration_since(*at) < CLEAR_TEXT_WARNING_EVERY)
        {
            return;
        }
        warned.insert(host.clone(), now);
        crate::log_warning!(
            "smtp_auth_proxy: upstream {host} does not offer STARTTLS: passwords go to it in clear text (tls = ifavailable; set tls = required to refuse)"
        );
    }

    /// A ready connection to `host`: from the pool when it has one (and the pool is topped up
    /// in the background), else opened now. The flag says it came from the pool.
    async fn connection(self: &Arc<Self>, host: &HostPort) -> Result<(SmtpClient, bool), Attempt> {
        let pooled = self.pool_size > 0 && self.hosts.contains(host);
        if pooled {
            let found = self.pool.take(host);
            for _ in 0..self.pool.reserve(host, self.pool_size) {
                let (engine, host) = (self.clone(), host.clone());
                // A current-thread runtime: the task runs, and reports back, on this thread.
                tokio::spawn(async move {
                    let conn = engine.open(&host).await.ok();
                    engine.pool.opened(&host, conn);
                });
            }
            if let Some(c) = found {
                return Ok((c, true));
            }
        }
        Ok((self.open(host).await?, false))
    }

    async fn try_host(
        self: &Arc<Self>,
        host: &HostPort,
        creds: &Credentials,
        keep: bool,
    ) -> Result<Attempt, Attempt> {
        let (mut up, pooled) = self.connection(host).await?;
        let reply = match auth_on(&mut up, creds).await {
            // The upstream closed a pooled connection while it waited: once more, fresh.
            Err(ClientError::Closed | ClientError::Io(_)) if pooled => {
                up = self.open(host).await?;
                auth_on(&mut up, creds).await?
            }
            r => r?,
        };
        let Some(reply) = reply else {
            up.quit().await;
            return Ok(Attempt::Error(match creds.proof {
                Proof::Token(_) => {
                    format!("upstream does not offer AUTH {}", creds.mechanism.name())
                }
                _ => "upstream offers neither AUTH PLAIN nor AUTH LOGIN".into(),
            }));
        };
        if reply.code == 334 && matches!(creds.proof, Proof::Token(_)) {
            return Ok(error_challenge(up, reply).await);
        }
        Ok(match self.verdict(up, reply, keep).await {
            Ok(o) => Attempt::Verdict(o),
            Err(e) => Attempt::Error(e),
        })
    }

    /// Maps the upstream's reply to AUTH to a verdict, keeping or closing the session;
    /// `Err`: the reply decides nothing (a 4xx, or a reply AUTH cannot have).
    async fn verdict(&self, up: SmtpClient, reply: Reply, keep: bool) -> Result<Outcome, String> {
        let verdict = match reply.code {
            235 => Verdict::Pass,
            500..=599 => Verdict::Fail,
            _ => {
                up.quit().await;
                return Err(format!("AUTH {reply}"));
            }
        };
        let mut outcome = Outcome::new(verdict, format!("{} answered {}", up.server, reply.code));
        if verdict == Verdict::Pass && keep {
            outcome.upstream = Some(up);
        } else {
            up.quit().await;
        }
        Ok(outcome)
    }

    /// Opens an upstream session and has it issue a CRAM-MD5 challenge, which the client must
    /// answer unchanged: the password never has to be known here.
    pub async fn cram_md5_challenge(&self) -> Result<CramChallenge, Outcome> {
        let deadline = Instant::now() + self.timeout;
        let mut errors = Vec::new();
        for host in &self.hosts {
            let counted = self.counters(host).attempt();
            let attempt = timeout_at(deadline, async {
                let mut up = self.open(host).await?;
                if !up.offers_auth("CRAM-MD5") {
                    up.quit().await;
                    return Err(Attempt::Error(
                        "upstream does not offer AUTH CRAM-MD5".into(),
                    ));
                }
                let r = up.command("AUTH CRAM-MD5").await?;
                let decoded = (r.code == 334)
                    .then(|| B64.decode(r.lines[0].trim()).ok())
                    .flatten()
                    .and_then(|c| String::from_utf8(c).ok());
                match decoded {
                    Some(challenge) => Ok(CramChallenge {
                        challenge,
                        upstream: Some(up),
                    }),
                    None => Err(Attempt::Error(format!("AUTH CRAM-MD5 {r}"))),
                }
            })
            .await;
            match attempt {
                Ok(Ok(c)) => {
                    // The verdict is counted when the client's answer comes back.
                    counted.hand_over();
                    return Ok(c);
                }
                Ok(Err(Attempt::Error(e))) => errors.push(format!("{host}: {e}")),
                // Only a token exchange is classified so; dropping it closes the connection.
                Ok(Err(Attempt::Challenge(_))) => {
                    errors.push(format!("{host}: unexpected error challenge"))
                }
                Ok(Err(Attempt::Verdict(o))) => {
                    counted.finish(o.verdict.into());
                    return Err(o);
                }
                Ok(Err(Attempt::Timeout)) | Err(_) => {
                    errors.push(format!("{host}: timed out"));
                    return Err(error_outcome(errors, true));
                }
            }
        }
        Err(error_outcome(errors, false))
    }

    async fn finish_cram_md5(
        &self,
        mut up: SmtpClient,
        creds: &Credentials,
        keep: bool,
    ) -> Outcome {
        let Proof::CramMd5 { digest, .. } = &creds.proof else {
            unreachable!("called for CRAM-MD5 only");
        };
        let answer = B64.encode(format!("{} {digest}", creds.username));
        let counted = self.counters_of(&up).attempt();
        match up.command(&answer).await {
            Ok(reply) => match self.verdict(up, reply, keep).await {
                Ok(o) => {
                    counted.finish(o.verdict.into());
                    o
                }
                Err(e) => Outcome::new(Verdict::Error, e),
            },
            Err(e) => error_outcome(vec![e.to_string()], matches!(e, ClientError::Timeout)),
        }
    }

    /// Relays the client's answer to an error challenge (OAUTHBEARER's dummy `AQ==`, XOAUTH2's
    /// empty line) to the upstream that issued it; the upstream's reply is the verdict. `None`:
    /// the client cancelled or went away. The upstream has refused the token already, so that
    /// is a fail; it hears the cancel (`*`, RFC 4954 §4), and the connection closes without
    /// waiting for its reply.
    pub async fn answer(
        &self,
        challenge: ErrorChallenge,
        answer: Option<&[u8]>,
        keep: bool,
    ) -> Outcome {
        let mut up = challenge.upstream;
        let counted = self.counters_of(&up).attempt();
        let Some(answer) = answer else {
            let o = Outcome::new(
                Verdict::Fail,
                format!("{} refused the token; the client cancelled", up.server),
            );
            let _ = up.send_line("*").await;
            up.quit().await;
            counted.finish(o.verdict.into());
            return o;
        };
        let result = timeout_at(
            Instant::now() + self.timeout,
            up.command(&B64.encode(answer)),
        )
        .await;
        match result {
            Ok(Ok(reply)) => match self.verdict(up, reply, keep).await {
                Ok(o) => {
                    counted.finish(o.verdict.into());
                    o
                }
                Err(e) => Outcome::new(Verdict::Error, e),
            },
            Ok(Err(e)) => error_outcome(vec![e.to_string()], matches!(e, ClientError::Timeout)),
            Err(_) => error_outcome(vec!["timed out".into()], true),
        }
    }
}

/// An upstream's `334` to a token: its error challenge, if it is one (a single line of base64;
/// RFC 7628 §3.2.2 has JSON inside), to go to the client as it came.
async fn error_challenge(up: SmtpClient, reply: Reply) -> Attempt {
    let text = match reply.lines.as_slice() {
        [line] if B64.decode(line.trim()).is_ok() => line.trim().to_owned(),
        _ => {
            up.quit().await;
            return Attempt::Error(format!("AUTH answered {reply}, not an error challenge"));
        }
    };
    Attempt::Challenge(ErrorChallenge { text, upstream: up })
}

/// AUTH with the client's credentials on a ready connection: a token under its own mechanism,
/// as the client sent it; a password with PLAIN when offered, else LOGIN. `None`: the
/// upstream offers no mechanism that fits.
async fn auth_on(up: &mut SmtpClient, creds: &Credentials) -> Result<Option<Reply>, ClientError> {
    let password = match &creds.proof {
        Proof::Password(p) => p,
        Proof::Token(t) => {
            let mechanism = creds.mechanism.name();
            if !up.offers_auth(mechanism) {
                return Ok(None);
            }
            // Built where it is wiped: the token is in every byte of this line.
            let response = t.expose().as_bytes();
            let mut line = Zeroizing::new(String::with_capacity(
                6 + mechanism.len() + response.len().div_ceil(3) * 4,
            ));
            line.push_str("AUTH ");
            line.push_str(mechanism);
            line.push(' ');
            B64.encode_string(response, &mut line);
            return up.command(&line).await.map(Some);
        }
        Proof::CramMd5 { .. } => return Ok(None),
    };
    if up.offers_auth("PLAIN") {
        let raw = Zeroizing::new(format!(
            "{}\0{}\0{}",
            creds.authzid,
            creds.username,
            password.expose()
        ));
        let line = Zeroizing::new(format!("AUTH PLAIN {}", B64.encode(raw.as_bytes())));
        return up.command(&line).await.map(Some);
    }
    if !up.offers_auth("LOGIN") {
        return Ok(None);
    }
    let r = up.command("AUTH LOGIN").await?;
    if r.code != 334 {
        return Ok(Some(r));
    }
    let r = up.command(&B64.encode(&creds.username)).await?;
    if r.code != 334 {
        return Ok(Some(r));
    }
    let line = Zeroizing::new(B64.encode(password.expose()));
    up.command(&line).await.map(Some)
}
