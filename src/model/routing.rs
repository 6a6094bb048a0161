//! Where accepted mail goes next: `Gateway`, `Routes`, outbound `XCLIENT`, and `Relay_Domains`.

use super::addr::{HostPort, is_hostname};
use super::value::{self, Read, Spanned};
use crate::config::Diagnostic;
use crate::config::ast::Value;

/// Port for next hops written without one (Momentum's `Remote_SMTP_Port` default).
pub const DEFAULT_REMOTE_PORT: u16 = 25;

#[derive(Clone, Debug, Default)]
pub struct Routing {
    /// `Gateway = host[:port]`: the smart host for all accepted mail.
    pub gateway: Option<Spanned<HostPort>>,
    /// `Routes = ( … )`: next hops in order of preference.
    pub routes: Option<Spanned<Vec<HostPort>>>,
    pub xclient: OutboundXclient,
}

impl Routing {
    /// Whether accepted mail has somewhere to go other than the AUTH upstream.
    pub fn has_next_hop(&self) -> bool {
        self.gateway.is_some() || self.routes.as_ref().is_some_and(|r| !r.value.is_empty())
    }
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

pub fn read_gateway(name: &str, v: &Value) -> Read<HostPort> {
    let s = value::scalar(name, v)?;
    if s.starts_with('#') {
        return Err(Diagnostic::error(
            v.origin,
            format!("`{name} = \"{s}\"` names a Domain's routes; give the next hop's host instead"),
        ));
    }
    HostPort::parse(s, DEFAULT_REMOTE_PORT)
        .map_err(|e| Diagnostic::error(v.origin, format!("`{name}`: {e}")))
}

/// Reads `Routes`: `smtp://host:port?pref=N`, or a bare host. Entries are ordered by `pref`
/// (lower first), the listed order breaking ties, as Momentum does.
pub fn read_routes(name: &str, v: &Value) -> Read<Vec<HostPort>> {
    let mut routes = Vec::new();
    for (i, (item, origin)) in value::scalar_list(name, v)?.into_iter().enumerate() {
        if item == "__mx__" {
            return Err(Diagnostic::error(
                origin,
                "`__mx__` (deliver by MX lookup) is not implemented: name the next hop's host",
            ));
        }
        let (target, query) = match item.strip_prefix("smtp://") {
            Some(rest) => rest
                .split_once('?')
                .map_or((rest, None), |(t, q)| (t, Some(q))),
            None => (item, None),
        };
        let mut port = None;
        let mut pref = i as u64;
        for kv in query.into_iter().flat_map(|q| q.split('&')) {
            let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
            match k.to_ascii_lowercase().as_str() {
                "port" => {
                    port = Some(val.parse::<u16>().map_err(|_| {
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
                // DNS lifetime of the route: meaningful only for MX routing.
                "ttl" => {}
                "type" if val.eq_ignore_ascii_case("a") => {}
                _ => {
                    return Err(Diagnostic::error(
                        origin,
                        format!(
                            "route parameter `{kv}` is not implemented (port, pref, ttl and type=a are)"
                        ),
                    ));
                }
            }
        }
        let mut hp = HostPort::parse(target, DEFAULT_REMOTE_PORT)
            .map_err(|e| Diagnostic::error(origin, format!("`{name}`: {e}")))?;
        if let Some(p) = port {
            hp.port = p;
        }
        routes.push((pref, i, hp));
    }
    routes.sort_by_key(|&(pref, i, _)| (pref, i));
    Ok(routes.into_iter().map(|(_, _, hp)| hp).collect())
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
}
