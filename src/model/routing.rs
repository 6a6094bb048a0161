//! Where accepted mail goes next: `Gateway`, `Routes` (with `__mx__`), outbound `XCLIENT`,
//! `Relay_Domains`, `Prohibited_Hosts` / `Skip_Hosts`, and the `Domain "name" { }` scopes that
//! override them per destination domain.
//!
//! Momentum's fallback for outbound options is Domain, then global, then the default. `Gateway`
//! and `Routes` are taken together from the most specific scope that sets either: a Domain's
//! `Routes` is not overridden by a global `Gateway`.

use super::addr::{HostPort, is_hostname};
use super::value::{self, Read};
use crate::config::Diagnostic;
use crate::config::ast::Value;
use std::fmt;

/// Port for next hops written without one (Momentum's `Remote_SMTP_Port` default).
pub const DEFAULT_REMOTE_PORT: u16 = 25;

/// How a configured next hop's name becomes addresses: `type=mx` (the default: Momentum resolves
/// a gateway "using MX records; if there are none, as an A record") or `type=a`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lookup {
    #[default]
    MxThenA,
    A,
}

/// A next hop as configured: a host name or address, with a port if one was written (else
/// `Remote_SMTP_Port` applies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: Option<u16>,
    pub lookup: Lookup,
}

impl NextHop {
    /// The hop with its port filled in from `Remote_SMTP_Port`.
    pub fn with_port(&self, default_port: u16) -> HostPort {
        HostPort {
            host: self.host.clone(),
            port: self.port.unwrap_or(default_port),
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (false, None) => f.write_str(&self.host),
        }
    }
}

/// One entry of `Routes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    /// Lower first; entries of equal preference share load (picked at random).
    pub pref: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Host(NextHop),
    /// `__mx__`: the recipient domain's own mail exchangers, at this point in the list.
    Mx,
}

/// Outbound `XCLIENT`: whether to tell the next hop the original client's address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutboundXclient {
    #[default]
    No,
    IfAvailable,
    Required,
}

pub fn read_xclient(name: &str, v: &Value) -> Read<OutboundXclient> {
    value::choice(
        name,
        v,
        &[
            ("no", OutboundXclient::No),
            ("ifavailable", OutboundXclient::IfAvailable),
            ("required", OutboundXclient::Required),
        ],
    )
}

pub fn read_gateway(name: &str, v: &Value) -> Read<NextHop> {
    let s = value::scalar(name, v)?;
    if s.starts_with('#') {
        return Err(Diagnostic::error(
            v.origin,
            format!("`{name} = \"{s}\"` names a Domain's routes; give the next hop's host instead"),
        ));
    }
    parse_hop(s, Lookup::MxThenA).map_err(|e| Diagnostic::error(v.origin, format!("`{name}`: {e}")))
}

/// `host`, `host:port`, `[v6]:port`; port 0 stands for "not written" while parsing.
fn parse_hop(s: &str, lookup: Lookup) -> Result<NextHop, String> {
    let hp = HostPort::parse(s, 0)?;
    Ok(NextHop {
        host: hp.host,
        port: (hp.port != 0).then_some(hp.port),
        lookup,
    })
}

/// Reads `Routes`: `smtp://host?port=P&pref=N&type=mx|a&ttl=T`, a bare host, or `__mx__`.
/// Entries are ordered by `pref` (lower first); an entry without one takes its position in the
/// list, so the listed order is the preference order, as Momentum documents.
pub fn read_routes(name: &str, v: &Value) -> Read<Vec<Route>> {
    let mut routes = Vec::new();
    for (i, (item, origin)) in value::scalar_list(name, v)?.into_iter().enumerate() {
        if item == "__mx__" {
            routes.push((
                i,
                Route {
                    target: Target::Mx,
                    pref: i as u64,
                },
            ));
            continue;
        }
        let (target, query) = match item.strip_prefix("smtp://") {
            Some(rest) => rest
                .split_once('?')
                .map_or((rest, None), |(t, q)| (t, Some(q))),
            None => (item, None),
        };
        let mut port = None;
        let mut pref = i as u64;
        let mut lookup = Lookup::MxThenA;
        for kv in query.into_iter().flat_map(|q| q.split('&')) {
            let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
            match k.to_ascii_lowercase().as_str() {
                "port" => {
                    port = Some(val.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        Diagnostic::error(
                            origin,
                            format!("`port={val}` in route is not a port number"),
                        )
                    })?)
                }
                "pref" => {
                    pref = val.parse().map_err(|_| {
                        Diagnostic::error(origin, format!("`pref={val}` in route is not a number"))
                    })?
                }
                // The entry's DNS lifetime: answers are kept for their own TTL instead.
                "ttl" => {}
                "type" if val.eq_ignore_ascii_case("mx") => lookup = Lookup::MxThenA,
                "type" if val.eq_ignore_ascii_case("a") => lookup = Lookup::A,
                _ => {
                    return Err(Diagnostic::error(
                        origin,
                        format!(
                            "route parameter `{kv}` is not implemented (port, pref, ttl and type=mx|a are)"
                        ),
                    ));
                }
            }
        }
        let mut hop = parse_hop(target, lookup)
            .map_err(|e| Diagnostic::error(origin, format!("`{name}`: {e}")))?;
        if port.is_some() {
            hop.port = port;
        }
        routes.push((
            i,
            Route {
                target: Target::Host(hop),
                pref,
            },
        ));
    }
    routes.sort_by_key(|(i, r)| (r.pref, *i));
    Ok(routes.into_iter().map(|(_, r)| r).collect())
}

/// `Relay_Domains = ( example.com *.example.com )`: recipient domains accepted from anyone.
/// `*.example.com` does not match `example.com`; `*example.com` matches `badexample.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// The text after `*`, lower case: the domain must end with it.
    Suffix(String),
}

impl DomainPattern {
    pub fn matches(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        match self {
            DomainPattern::Exact(d) => domain == *d,
            DomainPattern::Suffix(s) => domain.len() > s.len() && domain.ends_with(s.as_str()),
        }
    }
}

pub fn read_relay_domains(name: &str, v: &Value) -> Read<Vec<DomainPattern>> {
    value::scalar_list(name, v)?
        .into_iter()
        .map(|(item, origin)| {
            let lower = item.to_ascii_lowercase();
            let (pattern, check) = match lower.strip_prefix('*') {
                Some(rest) => (
                    DomainPattern::Suffix(rest.to_owned()),
                    rest.trim_start_matches('.').to_owned(),
                ),
                None => (DomainPattern::Exact(lower.clone()), lower),
            };
            if !is_hostname(&check) {
                return Err(Diagnostic::error(
                    origin,
                    format!("`{item}` is not a domain or `*.domain` pattern"),
                ));
            }
            Ok(pattern)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_domain_patterns_follow_momentum() {
        let sub = DomainPattern::Suffix(".example.com".into());
        assert!(sub.matches("a.example.com") && !sub.matches("example.com"));
        let loose = DomainPattern::Suffix("example.com".into());
        assert!(loose.matches("badexample.com") && !loose.matches("example.com"));
        assert!(DomainPattern::Exact("example.com".into()).matches("Example.COM."));
    }

    #[test]
    fn next_hops_print_as_written() {
        let hop = |s| parse_hop(s, Lookup::MxThenA).unwrap().to_string();
        assert_eq!(hop("mx.example.com"), "mx.example.com");
        assert_eq!(hop("10.0.0.5:2525"), "10.0.0.5:2525");
        assert_eq!(hop("[fe80::a00]:1"), "[fe80::a00]:1");
        assert_eq!(hop("2001:db8::1"), "[2001:db8::1]");
    }
}
