//! From a recipient domain to the addresses to try, in order: the Domain scope's or the global
//! Gateway/Routes, else the domain's MX (RFC 5321 §5.1), then `Skip_Hosts` and
//! `Prohibited_Hosts`.
//!
//! A configured next hop's name is resolved by MX, then as an address record, as Momentum does
//! for a gateway; any failure to resolve it is temporary (the operator can fix the name; the
//! mail waits). Only answers about the recipient's own domain are permanent: it does not exist,
//! has no mail exchanger and no address, or publishes a null MX.

use super::outcome::{Outcome, Stage};
use crate::dns::{LookupError, MxAnswer, Resolver};
use crate::model::outbound::Routing;
use crate::model::outbound::{DomainSettings, address_literal};
use crate::model::routing::{Lookup, NextHop, Route, Target};
use crate::reply::Enhanced;
use rand::seq::SliceRandom;
use std::collections::HashSet;
use std::net::IpAddr;

/// One next hop: a host and the addresses it resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The host as found: an MX host name, a configured gateway, or an address. Used for the
    /// TLS server name and in logs.
    pub name: String,
    pub port: u16,
    pub addrs: Vec<IpAddr>,
}

/// What the lookups found that did not become hops.
#[derive(Default)]
struct Trouble {
    temporary: Option<String>,
    permanent: Option<Outcome>,
}

pub async fn next_hops(
    resolver: &Resolver,
    routing: &Routing,
    settings: &DomainSettings,
    domain: &str,
) -> Result<Vec<Hop>, Outcome> {
    let mut hops = Vec::new();
    let mut trouble = Trouble::default();
    for route in shuffled(&settings.routes) {
        match &route.target {
            Target::Host(hop) => {
                let port = hop.port.unwrap_or(settings.remote_smtp_port);
                configured_hop(resolver, routing, hop, port, &mut hops, &mut trouble).await;
            }
            Target::Mx => {
                let port = settings.remote_smtp_port;
                domain_mx(resolver, routing, domain, port, &mut hops, &mut trouble).await;
            }
        }
    }
    screen(routing, hops, trouble)
}

/// The routes in order, entries of equal preference shuffled among themselves: Momentum
/// spreads connections over equal-preference routes.
fn shuffled(routes: &[Route]) -> Vec<&Route> {
    let mut out: Vec<&Route> = Vec::with_capacity(routes.len());
    let mut rng = rand::rng();
    for group in routes.chunk_by(|a, b| a.pref == b.pref) {
        let start = out.len();
        out.extend(group);
        out[start..].shuffle(&mut rng);
    }
    out
}

async fn configured_hop(
    resolver: &Resolver,
    routing: &Routing,
    hop: &NextHop,
    port: u16,
    hops: &mut Vec<Hop>,
    trouble: &mut Trouble,
) {
    if let Ok(ip) = hop.host.parse::<IpAddr>() {
        hops.push(Hop {
            name: hop.host.clone(),
            port,
            addrs: vec![ip],
        });
        return;
    }
    if hop.lookup == Lookup::MxThenA
        && let Ok(MxAnswer::Exchangers(list)) = resolver.mx(&hop.host).await
    {
        for ex in list {
            match resolver.addresses(&ex.host, routing.use_ipv6).await {
                Ok(addrs) => hops.push(Hop {
                    name: ex.host,
                    port,
                    addrs,
                }),
                Err(e) => trouble.temporary = Some(e.to_string()),
            }
        }
        return;
    }
    match resolver.addresses(&hop.host, routing.use_ipv6).await {
        Ok(addrs) => hops.push(Hop {
            name: hop.host.clone(),
            port,
            addrs,
        }),
        Err(e) => trouble.temporary = Some(format!("next hop {hop}: {e}")),
    }
}

async fn domain_mx(
    resolver: &Resolver,
    routing: &Routing,
    domain: &str,
    port: u16,
    hops: &mut Vec<Hop>,
    trouble: &mut Trouble,
) {
    let domain = domain.trim_end_matches('.');
    if let Some(ip) = address_literal(domain) {
        hops.push(Hop {
            name: ip.to_string(),
            port,
            addrs: vec![ip],
        });
        return;
    }
    let (exchangers, implicit) = match resolver.mx(domain).await {
        Ok(MxAnswer::Exchangers(list)) => (list.into_iter().map(|e| e.host).collect(), false),
        Ok(MxAnswer::Implicit) => (vec![domain.to_owned()], true),
        Ok(MxAnswer::NullMx) => {
            trouble.permanent = Some(Outcome::permanent(
                550,
                Enhanced(5, 1, 10),
                format!("Recipient domain {domain} has a null MX: it accepts no mail"),
                Stage::NotConnected,
            ));
            return;
        }
        Err(e) => return note(trouble, e, Enhanced(5, 1, 2)),
    };
    let found = hops.len();
    let mut unusable: Option<LookupError> = None;
    for host in exchangers {
        match resolver.addresses(&host, routing.use_ipv6).await {
            Ok(addrs) => hops.push(Hop {
                name: host,
                port,
                addrs,
            }),
            // A temporary failure for any host outweighs permanent ones for others.
            Err(e) if unusable.as_ref().is_none_or(|u| u.is_permanent()) => unusable = Some(e),
            Err(_) => {}
        }
    }
    if hops.len() == found
        && let Some(e) = unusable
    {
        // RFC 5321 §5.1: mail exchangers that cannot be used are an error to report.
        let enhanced = if implicit {
            Enhanced(5, 1, 2)
        } else {
            Enhanced(5, 4, 4)
        };
        note(trouble, e, enhanced);
    }
}

fn note(trouble: &mut Trouble, e: LookupError, enhanced: Enhanced) {
    if e.is_permanent() {
        trouble.permanent = Some(Outcome::permanent(
            550,
            enhanced,
            e.to_string(),
            Stage::NotConnected,
        ));
    } else {
        trouble.temporary = Some(e.to_string());
    }
}

/// Applies Skip_Hosts and Prohibited_Hosts and removes repeated addresses; decides what no
/// hop at all means.
fn screen(routing: &Routing, mut hops: Vec<Hop>, trouble: Trouble) -> Result<Vec<Hop>, Outcome> {
    for hop in &hops {
        if let Some(ip) = hop.addrs.iter().find(|ip| routing.is_prohibited(**ip)) {
            return Err(Outcome::permanent(
                550,
                Enhanced(5, 4, 4),
                format!("Mail exchanger {} [{ip}] is in Prohibited_Hosts", hop.name),
                Stage::NotConnected,
            ));
        }
    }
    let mut seen = HashSet::new();
    let mut skipped = false;
    for hop in &mut hops {
        hop.addrs.retain(|ip| {
            let skip = routing.is_skipped(*ip);
            skipped |= skip;
            !skip && seen.insert((*ip, hop.port))
        });
    }
    hops.retain(|h| !h.addrs.is_empty());
    if !hops.is_empty() {
        return Ok(hops);
    }
    if let Some(t) = trouble.temporary {
        return Err(Outcome::transient(
            Enhanced(4, 4, 3),
            t,
            Stage::NotConnected,
        ));
    }
    if let Some(p) = trouble.permanent {
        return Err(p);
    }
    let why = if skipped {
        "every mail exchanger is in Skip_Hosts"
    } else {
        "no next hop"
    };
    Err(Outcome::transient(
        Enhanced(4, 4, 4),
        why,
        Stage::NotConnected,
    ))
}
