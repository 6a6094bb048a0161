//! DNS for delivery: a domain's mail exchangers (RFC 5321 §5.1, null MX of RFC 7505) and a
//! host's addresses, asked through hickory-resolver on tokio.
//!
//! Answers are sorted into what delivery must do with them: a name that does not exist
//! (NXDOMAIN) or has no record of the type asked is a permanent answer; SERVFAIL, REFUSED, a
//! timeout or a network error is temporary, and the mail waits.
//!
//! The resolver runs its queries as tasks on the runtime that first uses each name server
//! connection; use one [`Resolver`] per runtime, or keep delivery on one.

use crate::model::resolver::{ResolverSettings, SYSTEM_RESOLV_CONF};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use rand::seq::SliceRandom;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Why a lookup gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN: the name does not exist.
    NoSuchDomain(String),
    /// The name exists, without a record of the type asked.
    NoData(String),
    /// SERVFAIL, REFUSED, timeout, network trouble: ask again later.
    Temporary(String),
}

impl LookupError {
    /// Whether asking again later cannot change the answer (as far as delivery is concerned).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, LookupError::Temporary(_))
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NoSuchDomain(t) | LookupError::NoData(t) | LookupError::Temporary(t) => {
                f.write_str(t)
            }
        }
    }
}

/// One MX record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchanger {
    pub preference: u16,
    /// Without the trailing dot.
    pub host: String,
}

/// What a domain's MX records say about where its mail goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxAnswer {
    /// Best (lowest preference) first; exchangers of equal preference in random order, so
    /// that load spreads over them (RFC 5321 §5.1).
    Exchangers(Vec<Exchanger>),
    /// No MX records: the domain itself is the mail exchanger, at preference 0.
    Implicit,
    /// A single `0 .` record (RFC 7505): the domain accepts no mail.
    NullMx,
}

pub struct Resolver {
    inner: TokioResolver,
    /// Bound on one whole lookup, whatever the resolver's own retries do.
    limit: Duration,
}

impl Resolver {
    /// The resolver the configuration names: `DNS_Nameservers`, else `Resolv_Conf`, else
    /// /etc/resolv.conf (a resolv.conf without name servers means the local one, as for
    /// the C library).
    pub fn from_settings(settings: &ResolverSettings) -> Result<Resolver, String> {
        if let Some(ns) = &settings.nameservers {
            let opts = ResolverOpts::default();
            return Ok(Resolver::with_nameservers(
                &ns.value,
                opts.timeout,
                opts.attempts,
            ));
        }
        let path = settings
            .resolv_conf
            .as_ref()
            .map_or_else(|| SYSTEM_RESOLV_CONF.into(), |p| p.value.clone());
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            // No /etc/resolv.conf at all: the C library asks the local server then.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && settings.resolv_conf.is_none() =>
            {
                Vec::new()
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let has_nameserver = String::from_utf8_lossy(&text)
            .lines()
            .any(|l| l.trim_start().starts_with("nameserver"));
        if !has_nameserver {
            let opts = ResolverOpts::default();
            let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);
            return Ok(Resolver::with_nameservers(
                &[local],
                opts.timeout,
                opts.attempts,
            ));
        }
        let (config, opts) = hickory_resolver::system_conf::parse_resolv_conf(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Resolver::build(config, opts))
    }

    /// A resolver asking `servers` (UDP, then TCP for long answers), each query waiting
    /// `timeout` and tried `attempts` times.
    pub fn with_nameservers(
        servers: &[SocketAddr],
        timeout: Duration,
        attempts: usize,
    ) -> Resolver {
        let name_servers = servers
            .iter()
            .map(|addr| {
                let conn = |protocol| {
                    let mut c = ConnectionConfig::new(protocol);
                    c.port = addr.port();
                    c
                };
                NameServerConfig::new(
                    addr.ip(),
                    true,
                    vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
                )
            })
            .collect();
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = attempts;
        Resolver::build(ResolverConfig::from_name_servers(name_servers), opts)
    }

    fn build(config: ResolverConfig, mut opts: ResolverOpts) -> Resolver {
        // Servers are asked in the order written, as resolv.conf promises.
        opts.server_ordering_strategy =
            hickory_resolver::config::ServerOrderingStrategy::UserProvidedOrder;
        let per_try = opts.timeout.max(Duration::from_millis(100));
        let tries = u32::try_from(opts.attempts.max(1)).unwrap_or(u32::MAX);
        let limit = per_try
            .saturating_mul(tries.saturating_add(1))
            .saturating_mul(2)
            + Duration::from_secs(1);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = opts;
        let inner = builder
            .build()
            .expect("a resolver without DNSSEC or TLS always builds");
        Resolver { inner, limit }
    }

    /// The mail exchangers of `domain`.
    pub async fn mx(&self, domain: &str) -> Result<MxAnswer, LookupError> {
        let name = fqdn(domain)?;
        let what = format!("MX lookup for {}", bare(domain));
        let answers = match self.lookup(name, RecordType::MX, &what).await {
            Ok(a) => a,
            Err(LookupError::NoData(_)) => return Ok(MxAnswer::Implicit),
            Err(e) => return Err(e),
        };
        let mut records: Vec<Exchanger> = answers
            .into_iter()
            .filter_map(|d| match d {
                RData::MX(mx) => Some(Exchanger {
                    preference: mx.preference,
                    host: mx.exchange.to_ascii().trim_end_matches('.').to_owned(),
                }),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            // Only a CNAME chain without MX at its end.
            return Ok(MxAnswer::Implicit);
        }
        // RFC 7505 §3: `0 .` means no mail. A root exchanger beside real ones is unusable and
        // dropped; the others are tried.
        let real = records.iter().filter(|r| !r.host.is_empty()).count();
        if real == 0 {
            return Ok(MxAnswer::NullMx);
        }
        records.retain(|r| !r.host.is_empty());
        records.shuffle(&mut rand::rng());
        records.sort_by_key(|r| r.preference);
        Ok(MxAnswer::Exchangers(records))
    }

    /// The addresses of `host`: IPv4 first, then IPv6 when `ipv6` is set. An address literal
    /// is its own answer.
    pub async fn addresses(&self, host: &str, ipv6: bool) -> Result<Vec<IpAddr>, LookupError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = fqdn(host)?;
        let (what4, what6) = (
            format!("A lookup for {}", bare(host)),
            format!("AAAA lookup for {}", bare(host)),
        );
        let v4 = self.lookup(name.clone(), RecordType::A, &what4);
        let (v4, v6) = if ipv6 {
            let v6 = self.lookup(name, RecordType::AAAA, &what6);
            let (a, b) = tokio::join!(v4, v6);
            (a, Some(b))
        } else {
            (v4.await, None)
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for answer in std::iter::once(v4).chain(v6) {
            match answer {
                Ok(data) => out.extend(data.into_iter().filter_map(|d| match d {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) => errors.push(e),
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        // A temporary failure of either question outweighs a negative answer to the other.
        let mut errors = errors.into_iter();
        let first = errors
            .next()
            .unwrap_or_else(|| LookupError::NoData(format!("no address for {}", bare(host))));
        Err(errors.find(|e| !e.is_permanent()).unwrap_or(first))
    }

    async fn lookup(
        &self,
        name: Name,
        kind: RecordType,
        what: &str,
    ) -> Result<Vec<RData>, LookupError> {
        let answer = tokio::time::timeout(self.limit, self.inner.lookup(name, kind))
            .await
            .map_err(|_| LookupError::Temporary(format!("{what}: timed out")))?;
        match answer {
            Ok(lookup) => {
                let data: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == kind)
                    .map(|r| r.data.clone())
                    .collect();
                if data.is_empty() {
                    return Err(LookupError::NoData(format!("{what}: no {kind} record")));
                }
                Ok(data)
            }
            Err(e) => Err(classify(e, what)),
        }
    }
}

fn classify(e: NetError, what: &str) -> LookupError {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => LookupError::NoSuchDomain(format!("{what}: no such domain")),
            ResponseCode::NoError => {
                LookupError::NoData(format!("{what}: no {} record", nr.query.query_type()))
            }
            code => LookupError::Temporary(format!("{what}: {}", rcode(code))),
        },
        NetError::Dns(DnsError::ResponseCode(code)) => {
            LookupError::Temporary(format!("{what}: {}", rcode(code)))
        }
        NetError::Timeout => LookupError::Temporary(format!("{what}: timed out")),
        other => LookupError::Temporary(format!("{what}: {other}")),
    }
}

/// A response code as `dig` prints it, the way operators know them.
fn rcode(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        other => other.to_string(),
    }
}

/// `name` as an absolute DNS name, so that no search domain is tried; international names
/// become their A-labels.
fn fqdn(name: &str) -> Result<Name, LookupError> {
    let mut n = Name::from_utf8(bare(name)).map_err(|e| {
        LookupError::NoSuchDomain(format!("`{}` is not a domain name: {e}", bare(name)))
    })?;
    n.set_fqdn(true);
    Ok(n)
}

fn bare(name: &str) -> &str {
    name.trim_end_matches('.')
}
