//! Outbound delivery options valid both globally and in `Domain "name" { }` scopes: TLS, the
//! remote port, connection limits, EHLO name and Momentum's per-stage timeouts; and the Domain
//! scope itself.
//!
//! Every field of [`Outbound`] is `None` where its scope does not set it; [`DomainSettings`]
//! resolves them for one destination (Domain, then global, then Momentum's default).

use super::Cx;
use super::addr::Cidr;
use super::names::ScopeKind;
use super::resolver::ResolverSettings;
use super::routing::{self, NextHop, OutboundXclient, Route, Target};
use super::value::{self, Read, Spanned};
use crate::config::ast::{Setting, Value};
use crate::config::{Diagnostic, Origin, Scope};
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Defaults from Momentum's reference pages.
pub const DEFAULT_MAX_OUTBOUND_CONNECTIONS: u32 = 32;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_EHLO_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_MAILFROM_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_RCPTTO_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_RSET_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The CA bundle Debian's `ca-certificates` maintains, for `TLS_Verify = ca|host`.
pub const DEFAULT_TLS_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Outbound `TLS`: STARTTLS towards the next hop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutboundTls {
    /// Never (Momentum's default).
    #[default]
    No,
    /// When the next hop offers STARTTLS.
    IfAvailable,
    /// No mail leaves without a successful TLS negotiation.
    Required,
}

/// Outbound `TLS_Verify`: how the next hop's certificate is checked once TLS is negotiated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutboundTlsVerify {
    #[default]
    No,
    Ca,
    Host,
    /// Momentum checks as `host` and delivers whatever the result; with nothing to record the
    /// result in, that is delivery as with `no`.
    Optional,
}

/// `EHLO_Hostname`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EhloHostname {
    /// `__hostname__`: this machine's name (the default).
    #[default]
    Hostname,
    /// `__message__`: the domain of the message's envelope sender.
    Message,
    Name(String),
}

/// The outbound options of one scope.
#[derive(Clone, Debug, Default)]
pub struct Outbound {
    pub remote_smtp_port: Option<Spanned<u16>>,
    pub tls: Option<Spanned<OutboundTls>>,
    pub tls_verify: Option<Spanned<OutboundTlsVerify>>,
    pub tls_ca: Option<Spanned<PathBuf>>,
    pub tls_ifavailable_fallback: Option<Spanned<bool>>,
    /// `None` inside: no limit (`-1`).
    pub max_outbound_connections: Option<Spanned<Option<u32>>>,
    /// `None` inside: no limit (`0`).
    pub max_deliveries_per_connection: Option<Spanned<Option<u32>>>,
    pub ehlo_hostname: Option<Spanned<EhloHostname>>,
    pub send_8bitmime: Option<Spanned<bool>>,
    pub connect_timeout: Option<Spanned<Duration>>,
    pub ehlo_timeout: Option<Spanned<Duration>>,
    pub mailfrom_timeout: Option<Spanned<Duration>>,
    pub rcptto_timeout: Option<Spanned<Duration>>,
    pub body_timeout: Option<Spanned<Duration>>,
    pub rset_timeout: Option<Spanned<Duration>>,
    pub idle_timeout: Option<Spanned<Duration>>,
}

impl Outbound {
    /// Reads `s` if it is one of these options; `false` if it is not.
    pub(super) fn read_setting(&mut self, cx: &mut Cx, s: &Setting) -> bool {
        let timeout =
            |n: &str, v: &Value| value::unsigned(n, v, 1, 86_400).map(Duration::from_secs);
        match s.name.to_ascii_lowercase().as_str() {
            "remote_smtp_port" => {
                self.remote_smtp_port =
                    cx.read(s, |n, v| value::unsigned(n, v, 1, 65_535).map(|p| p as u16))
            }
            "tls" => {
                self.tls = cx.read(s, |n, v| {
                    value::choice(
                        n,
                        v,
                        &[
                            ("no", OutboundTls::No),
                            ("ifavailable", OutboundTls::IfAvailable),
                            ("required", OutboundTls::Required),
                        ],
                    )
                })
            }
            "tls_verify" => {
                self.tls_verify = cx.read(s, |n, v| {
                    value::choice(
                        n,
                        v,
                        &[
                            ("no", OutboundTlsVerify::No),
                            ("ca", OutboundTlsVerify::Ca),
                            ("host", OutboundTlsVerify::Host),
                            ("optional", OutboundTlsVerify::Optional),
                        ],
                    )
                })
            }
            "tls_ca" => self.tls_ca = cx.read_path(s),
            "tls_ifavailable_fallback" => {
                self.tls_ifavailable_fallback = cx.read(s, value::boolean)
            }
            "max_outbound_connections" => {
                self.max_outbound_connections = cx.read(s, read_connection_limit)
            }
            "max_deliveries_per_connection" => {
                self.max_deliveries_per_connection = cx.read(s, |n, v| {
                    value::unsigned(n, v, 0, u32::MAX.into()).map(|m| (m > 0).then_some(m as u32))
                })
            }
            "ehlo_hostname" => self.ehlo_hostname = cx.read(s, read_ehlo_hostname),
            "send_8bitmime" => {
                self.send_8bitmime = cx.read(s, |n, v| {
                    value::choice(n, v, &[("no", false), ("ifavailable", true)])
                })
            }
            "connect_timeout" => self.connect_timeout = cx.read(s, timeout),
            "ehlo_timeout" => self.ehlo_timeout = cx.read(s, timeout),
            "mailfrom_timeout" => self.mailfrom_timeout = cx.read(s, timeout),
            "rcptto_timeout" => self.rcptto_timeout = cx.read(s, timeout),
            "body_timeout" => self.body_timeout = cx.read(s, timeout),
            "rset_timeout" => self.rset_timeout = cx.read(s, timeout),
            // Zero is meaningful here: close as soon as the queue for the domain is empty.
            "idle_timeout" => self.idle_timeout = cx.read(s, value::seconds),
            _ => return false,
        }
        true
    }
}

/// `Max_Outbound_Connections`: a positive count, or `-1` for no limit (as Momentum's `host`
/// scope prints it).
fn read_connection_limit(name: &str, v: &Value) -> Read<Option<u32>> {
    match value::integer(name, v, -1, u32::MAX.into())? {
        -1 => Ok(None),
        0 => Err(Diagnostic::error(
            v.origin,
            format!("`{name} = 0` would never deliver; write -1 for no limit"),
        )),
        n => Ok(Some(n as u32)),
    }
}

fn read_ehlo_hostname(name: &str, v: &Value) -> Read<EhloHostname> {
    let s = value::scalar(name, v)?;
    if s.eq_ignore_ascii_case("__hostname__") {
        return Ok(EhloHostname::Hostname);
    }
    if s.eq_ignore_ascii_case("__message__") {
        return Ok(EhloHostname::Message);
    }
    if !super::addr::is_hostname(s) && !is_address_literal(s) {
        return Err(Diagnostic::error(
            v.origin,
            format!(
                "`{name}` takes a host name, an address literal, `__hostname__` or `__message__`, found `{s}`"
            ),
        ));
    }
    Ok(EhloHostname::Name(s.to_owned()))
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
pub fn is_address_literal(s: &str) -> bool {
    address_literal(s).is_some()
}

/// The address of an RFC 5321 address literal, as a recipient domain or Domain scope name.
pub fn address_literal(s: &str) -> Option<IpAddr> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// `Server_Max_Outbound_Connections` default, as Momentum's reference page gives it (its sample
/// configuration file sets 20000).
pub const DEFAULT_SERVER_MAX_OUTBOUND_CONNECTIONS: u32 = 75_000;

/// Where accepted mail goes, as configured: the global routes and outbound options, and the
/// `Domain` scopes over them.
#[derive(Clone, Debug)]
pub struct Routing {
    /// `Gateway = host[:port]`: the smart host for all accepted mail.
    pub gateway: Option<Spanned<NextHop>>,
    /// `Routes = ( … )`: next hops in order of preference.
    pub routes: Option<Spanned<Vec<Route>>>,
    pub xclient: OutboundXclient,
    /// The other outbound options (TLS, ports, limits, timeouts) as set globally.
    pub outbound: Outbound,
    /// `Domain "name" { }` scopes, in the order written.
    pub domains: Vec<Domain>,
    /// `Prohibited_Hosts`: a destination whose mail exchangers include one of these addresses
    /// is refused outright (Momentum: it "permanently denies" the domain).
    pub prohibited_hosts: Vec<Cidr>,
    /// `Skip_Hosts`: these addresses are skipped; the domain's other hosts are still tried.
    pub skip_hosts: Vec<Cidr>,
    /// `Server_Max_Outbound_Connections`: all outbound connections together; `None`: no limit.
    pub server_max_outbound_connections: Option<u32>,
    /// Where DNS questions go: `/etc/resolv.conf`, `Resolv_Conf`, or `DNS_Nameservers`.
    pub resolver: ResolverSettings,
    /// `Use_IPv6`: whether AAAA records are used for delivery (Momentum's default: no).
    pub use_ipv6: bool,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            gateway: None,
            routes: None,
            xclient: OutboundXclient::No,
            outbound: Outbound::default(),
            domains: Vec::new(),
            prohibited_hosts: Vec::new(),
            skip_hosts: Vec::new(),
            server_max_outbound_connections: Some(DEFAULT_SERVER_MAX_OUTBOUND_CONNECTIONS),
            resolver: ResolverSettings::default(),
            use_ipv6: false,
        }
    }
}

impl Routing {
    /// Whether accepted mail has somewhere to go other than the AUTH upstream, for the
    /// synchronous relay: a `Gateway`, or `Routes` naming at least one host. `__mx__` alone
    /// does not count until mail is queued (the relay cannot deliver by MX).
    pub fn has_next_hop(&self) -> bool {
        self.gateway.is_some()
            || self
                .routes
                .as_ref()
                .is_some_and(|r| r.value.iter().any(|r| matches!(r.target, Target::Host(_))))
    }

    /// The `Domain` scope for `domain`, if one names it (case-insensitively, trailing dot
    /// ignored).
    pub fn domain_scope(&self, domain: &str) -> Option<&Domain> {
        let wanted = domain.trim_end_matches('.');
        // An address literal also finds a Domain named by the bare address.
        let bare = address_literal(wanted).map(|ip| ip.to_string());
        self.domains.iter().find(|d| {
            d.name.eq_ignore_ascii_case(wanted) || bare.as_deref().is_some_and(|b| d.name == b)
        })
    }

    /// The settings in force for mail to `domain`: its Domain scope's, else the global ones,
    /// else Momentum's defaults.
    pub fn for_domain(&self, domain: &str) -> DomainSettings {
        DomainSettings::resolve(self, self.domain_scope(domain))
    }

    /// Whether `Prohibited_Hosts` covers `ip`.
    pub fn is_prohibited(&self, ip: std::net::IpAddr) -> bool {
        self.prohibited_hosts.iter().any(|c| c.contains(ip))
    }

    /// Whether `Skip_Hosts` covers `ip`.
    pub fn is_skipped(&self, ip: std::net::IpAddr) -> bool {
        self.skip_hosts.iter().any(|c| c.contains(ip))
    }
}

/// `Domain "example.com" { … }`: options for mail to one destination domain.
#[derive(Clone, Debug)]
pub struct Domain {
    /// Lower case, without a trailing dot: `example.com`, `192.0.43.10`, `[ipv6:fd82::1]`.
    pub name: String,
    pub origin: Origin,
    pub gateway: Option<Spanned<NextHop>>,
    pub routes: Option<Spanned<Vec<Route>>>,
    pub xclient: Option<Spanned<OutboundXclient>>,
    pub outbound: Outbound,
    /// Retries, expiration and bounces for this domain's mail.
    pub queue: super::queue::QueueSettings,
}

/// Reads a `Domain` scope. Regex domains (`Domain "/…/"`) are not implemented: one that routes
/// mail is an error (ignoring it would send mail elsewhere), others are ignored with a warning.
pub(super) fn read_domain(cx: &mut Cx, scope: &Scope) -> Option<Domain> {
    let origin = scope.origin?;
    let Some(instance) = &scope.instance else {
        cx.diags.push(Diagnostic::error(
            origin,
            "`Domain` needs the domain it applies to: `Domain \"example.com\" { }`",
        ));
        return None;
    };
    let raw = instance.name.trim_end_matches('.');
    if raw.starts_with('/') {
        let routes_mail = scope.settings.iter().any(|s| {
            s.name.eq_ignore_ascii_case("gateway") || s.name.eq_ignore_ascii_case("routes")
        });
        let message = format!(
            "regex Domain scopes (`Domain \"{}\"`) are not implemented",
            instance.name
        );
        cx.diags.push(if routes_mail {
            Diagnostic::error(
                origin,
                format!(
                    "{message}; its Gateway/Routes would be ignored, so mail would go elsewhere"
                ),
            )
        } else {
            Diagnostic::warning(origin, format!("{message}; ignored")).unimplemented()
        });
        return None;
    }
    let name = raw.to_ascii_lowercase();
    if !super::addr::is_hostname(&name)
        && name.parse::<IpAddr>().is_err()
        && !is_address_literal(&name)
    {
        cx.diags.push(Diagnostic::error(
            origin,
            format!(
                "`Domain \"{}\"`: not a domain name, an IP address or `[IPv6:…]`",
                instance.name
            ),
        ));
        return None;
    }
    let mut domain = Domain {
        name,
        origin,
        gateway: None,
        routes: None,
        xclient: None,
        outbound: Outbound::default(),
        queue: Default::default(),
    };
    for s in &scope.settings {
        match s.name.to_ascii_lowercase().as_str() {
            "gateway" => domain.gateway = cx.read(s, routing::read_gateway),
            "routes" => domain.routes = cx.read(s, routing::read_routes),
            "xclient" => domain.xclient = cx.read(s, routing::read_xclient),
            _ => {
                if !domain.queue.read_setting(cx, s) && !domain.outbound.read_setting(cx, s) {
                    cx.unknown_option(ScopeKind::Domain, s);
                }
            }
        }
    }
    for child in &scope.scopes {
        cx.unknown_scope(ScopeKind::Domain, child);
    }
    Some(domain)
}

/// Momentum's per-stage waits for one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `Connect_Timeout`: the TCP connection.
    pub connect: Duration,
    /// `EHLO_Timeout`: the greeting, EHLO/HELO, STARTTLS and its handshake, XCLIENT.
    pub ehlo: Duration,
    /// `MAILFROM_Timeout`.
    pub mailfrom: Duration,
    /// `RCPTTO_Timeout`: each RCPT, and the reply to DATA.
    pub rcptto: Duration,
    /// `Body_Timeout`: each write of the content, and the reply after it.
    pub body: Duration,
    /// `RSET_Timeout`: RSET, and QUIT.
    pub rset: Duration,
}

/// The settings in force for one destination domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSettings {
    /// Where to connect, in order of preference: the Gateway first, then the Routes; `[Mx]`
    /// when neither is set.
    pub routes: Vec<Route>,
    pub remote_smtp_port: u16,
    pub tls: OutboundTls,
    pub tls_verify: OutboundTlsVerify,
    pub tls_ca: PathBuf,
    pub tls_ifavailable_fallback: bool,
    pub xclient: OutboundXclient,
    /// `None`: no limit.
    pub max_outbound_connections: Option<u32>,
    /// `None`: no limit.
    pub max_deliveries_per_connection: Option<u32>,
    pub ehlo_hostname: EhloHostname,
    /// `Send_8BitMime = ifavailable`.
    pub send_8bitmime: bool,
    pub timeouts: Timeouts,
    /// `Idle_Timeout`: how long an idle outbound connection is kept for more mail.
    pub idle_timeout: Duration,
}

impl DomainSettings {
    pub(super) fn resolve(routing: &Routing, domain: Option<&Domain>) -> DomainSettings {
        let local = domain.map(|d| &d.outbound);
        let global = &routing.outbound;
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                local
                    .and_then(|o| o.$field.as_ref())
                    .or(global.$field.as_ref())
                    .map(|s| s.value.clone())
                    .unwrap_or($default)
            };
        }
        let (gateway, routes) = match domain {
            Some(d) if d.gateway.is_some() || d.routes.is_some() => (&d.gateway, &d.routes),
            _ => (&routing.gateway, &routing.routes),
        };
        let mut list: Vec<Route> = gateway
            .iter()
            .map(|g| Route {
                target: Target::Host(g.value.clone()),
                pref: 0,
            })
            .collect();
        let after = u64::from(gateway.is_some());
        list.extend(routes.iter().flat_map(|r| r.value.iter()).map(|r| Route {
            target: r.target.clone(),
            pref: r.pref.saturating_add(after),
        }));
        if list.is_empty() {
            list.push(Route {
                target: Target::Mx,
                pref: 0,
            });
        }
        DomainSettings {
            routes: list,
            remote_smtp_port: pick!(remote_smtp_port, routing::DEFAULT_REMOTE_PORT),
            tls: pick!(tls, OutboundTls::No),
            tls_verify: pick!(tls_verify, OutboundTlsVerify::No),
            tls_ca: pick!(tls_ca, PathBuf::from(DEFAULT_TLS_CA)),
            tls_ifavailable_fallback: pick!(tls_ifavailable_fallback, true),
            xclient: domain
                .and_then(|d| d.xclient.as_ref())
                .map_or(routing.xclient, |x| x.value),
            max_outbound_connections: pick!(
                max_outbound_connections,
                Some(DEFAULT_MAX_OUTBOUND_CONNECTIONS)
            ),
            max_deliveries_per_connection: pick!(max_deliveries_per_connection, None),
            ehlo_hostname: pick!(ehlo_hostname, EhloHostname::Hostname),
            send_8bitmime: pick!(send_8bitmime, false),
            timeouts: Timeouts {
                connect: pick!(connect_timeout, DEFAULT_CONNECT_TIMEOUT),
                ehlo: pick!(ehlo_timeout, DEFAULT_EHLO_TIMEOUT),
                mailfrom: pick!(mailfrom_timeout, DEFAULT_MAILFROM_TIMEOUT),
                rcptto: pick!(rcptto_timeout, DEFAULT_RCPTTO_TIMEOUT),
                body: pick!(body_timeout, DEFAULT_BODY_TIMEOUT),
                rset: pick!(rset_timeout, DEFAULT_RSET_TIMEOUT),
            },
            idle_timeout: pick!(idle_timeout, DEFAULT_IDLE_TIMEOUT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_literals() {
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            address_literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(address_literal("[2001:db8::1]"), None, "IPv6 needs its tag");
        assert_eq!(address_literal("192.0.2.1"), None);
        assert_eq!(address_literal("[example.com]"), None);
    }
}
