//! Cross-checks over the whole model: references that name nothing, files that are not there,
//! and configurations that are legal but dangerous.
//!
//! Listener checks run once per client class of each enabled Listen (clients matching no Peer,
//! and each Peer), because Peer scopes can change what is advertised and how it is backed.

use super::addr::ListenAddr;
use super::datasource::DatasourceUri;
use super::listener::{AuthBackend, Effective, ListenerSettings, Mechanism};
use super::outbound::{DEFAULT_TLS_CA, OutboundTlsVerify};
use super::routing::Target;
use super::{Config, Cx};
use crate::config::{Diagnostic, Origin};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub(super) fn check(cx: &mut Cx, config: &Config) {
    let mut seen = HashSet::new();
    let mut push = |cx: &mut Cx, d: Diagnostic| {
        if seen.insert((d.message.clone(), d.origin.map(|o| (o.file, o.offset)))) {
            cx.diags.push(d);
        }
    };
    check_listeners(cx, config, &mut push);
    check_auth_proxy(cx, config);
    check_relay_domains(cx, config);
    check_files(cx, config);
    check_outbound(cx, config);
}

fn check_listeners(cx: &mut Cx, config: &Config, push: &mut impl FnMut(&mut Cx, Diagnostic)) {
    let Some(listener) = &config.esmtp_listener else {
        cx.diags.push(Diagnostic::error(
            None,
            "no `ESMTP_Listener` scope: there is nothing to serve (add `ESMTP_Listener { Listen \":25\" { } }`)",
        ));
        return;
    };
    if listener.enabled_listens().next().is_none() {
        cx.diags.push(Diagnostic::error(
            listener.origin,
            "ESMTP_Listener has no enabled `Listen` scope: there is nothing to serve",
        ));
        return;
    }
    for listen in listener.enabled_listens() {
        let mut classes: Vec<(Option<IpAddr>, String, bool)> =
            vec![(None, "clients matching no Peer".to_owned(), true)];
        for peer in listener.peers_for(listen) {
            classes.push((
                Some(peer.cidr.network),
                format!("Peer \"{}\"", peer.cidr.value),
                peer.cidr.is_everything(),
            ));
        }
        let addr = &listen.address.value;
        for (client, class, everyone) in classes {
            let e = Effective::new(&config.global, listener, listen, client);
            check_effective(cx, config, &e, addr, &class, everyone, push);
        }
    }
}

fn check_effective(
    cx: &mut Cx,
    config: &Config,
    e: &Effective,
    addr: &ListenAddr,
    class: &str,
    everyone: bool,
    push: &mut impl FnMut(&mut Cx, Diagnostic),
) {
    let where_ = format!("Listen \"{addr}\" ({class})");
    let use_ssl = e.use_ssl().filter(|u| u.value);
    let have_cert = e.tls_certificate().is_some() && e.tls_key().is_some();
    if let Some(u) = use_ssl
        && !have_cert
    {
        push(
            cx,
            Diagnostic::error(
                u.origin,
                format!(
                    "Use_SSL is on for {where_} but TLS_Certificate and TLS_Key are not both set"
                ),
            ),
        );
    }
    if let Some(ext) = e.extensions() {
        if ext.starttls && !have_cert {
            push(
                cx,
                Diagnostic::error(
                    ext.origin,
                    format!(
                        "STARTTLS is advertised to {where_} but TLS_Certificate and TLS_Key are not both set"
                    ),
                ),
            );
        }
        if ext.starttls && use_ssl.is_some() {
            push(
                cx,
                Diagnostic::warning(
                    ext.origin,
                    format!(
                        "STARTTLS is not offered on {where_}: Use_SSL makes the whole session TLS already"
                    ),
                ),
            );
        }
        for &mech in &ext.auth {
            let Some(params) = e.auth_parameters(mech) else {
                push(
                    cx,
                    Diagnostic::error(
                        ext.origin,
                        format!(
                            "AUTH {} is advertised to {where_} but no {} names its back end",
                            mech.name(),
                            mech.parameters_option()
                        ),
                    ),
                );
                continue;
            };
            if params.backend.value == AuthBackend::SmtpAuthProxy
                && mech == Mechanism::CramMd5
                && config
                    .auth_proxy
                    .as_ref()
                    .is_some_and(|p| p.hosts.is_empty())
            {
                push(
                    cx,
                    Diagnostic::error(
                        params.backend.origin,
                        format!(
                            "AUTH CRAM-MD5 for {where_} goes to `smtp_auth_proxy://`, which needs `host` for it: the challenge is sent before the user name is known, so the per-user lookup cannot pick the upstream"
                        ),
                    ),
                );
            }
            if params.backend.value == AuthBackend::SmtpAuthProxy {
                match &config.auth_proxy {
                    None => push(
                        cx,
                        Diagnostic::error(
                            params.backend.origin,
                            "`smtp_auth_proxy://` is used but no `smtp_auth_proxy { }` scope configures it",
                        ),
                    ),
                    Some(p) if !p.enabled => push(
                        cx,
                        Diagnostic::error(
                            params.backend.origin,
                            "`smtp_auth_proxy://` is used but smtp_auth_proxy has `enabled = false`",
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
        let clear: Vec<&str> = ext
            .auth
            .iter()
            .filter(|m| m.sends_cleartext())
            .map(|m| m.name())
            .collect();
        let tls_offered = ext.starttls || use_ssl.is_some();
        if !clear.is_empty() && !tls_offered && !matches!(addr, ListenAddr::Unix(_)) {
            push(
                cx,
                Diagnostic::warning(
                    ext.origin,
                    format!(
                        "DANGER: AUTH {} is offered to {where_} with no TLS: {} cross the network in clear text (offer STARTTLS with TLS_Certificate and TLS_Key, or Use_SSL)",
                        clear.join(" "),
                        if ext.auth.iter().any(|m| m.takes_token()) {
                            "passwords and bearer tokens"
                        } else {
                            "passwords"
                        }
                    ),
                ),
            );
        }
        if everyone {
            let open: Vec<&str> = [
                ("XCLIENT", ext.xclient),
                ("XREMOTEIP", ext.xremoteip),
                ("XSETCONTEXT", ext.xsetcontext),
            ]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n)
            .collect();
            if !open.is_empty() {
                push(
                    cx,
                    Diagnostic::warning(
                        ext.origin,
                        format!(
                            "DANGER: {} offered to every client of {where_}: any client can claim another address, and with it a relay_hosts address (offer these only in a Peer scope for trusted hosts)",
                            if open.len() == 1 {
                                format!("{} is", open[0])
                            } else {
                                format!("{} are", open.join(", "))
                            }
                        ),
                    ),
                );
            }
        }
    }
}

/// `relay_domains` accepts mail from anyone for its domains. Without a route of its own (a
/// `Domain` scope, or a global `Gateway`/`Routes`) such mail goes by MX, and the MX of a
/// domain this server receives for usually names this server: a loop.
fn check_relay_domains(cx: &mut Cx, config: &Config) {
    let Some(d) = &config.relay_domains else {
        return;
    };
    if config.routing.has_next_hop() {
        return;
    }
    for pattern in &d.value {
        let crate::model::routing::DomainPattern::Exact(name) = pattern else {
            continue;
        };
        if !config
            .routing
            .domains
            .iter()
            .any(|x| x.name == *name && (x.gateway.is_some() || x.routes.is_some()))
        {
            cx.diags.push(Diagnostic::warning(
                d.origin,
                format!(
                    "relay_domains accepts mail for `{name}`, which has no route of its own (`Domain \"{name}\" {{ Gateway = … }}` or a global Gateway/Routes): it goes by MX, which for a domain this server receives for usually points back here"
                ),
            ));
        }
    }
}

fn check_auth_proxy(cx: &mut Cx, config: &Config) {
    let Some(p) = &config.auth_proxy else { return };
    if p.hosts.is_empty() && p.ds_cache.is_none() {
        cx.diags.push(Diagnostic::error(
            p.origin,
            "smtp_auth_proxy needs `host`, `ds_cache` with `query`, or both",
        ));
    }
    match (&p.ds_cache, &p.query) {
        (Some(name), query) => {
            match config.datasource(&name.value) {
                None => cx.diags.push(
                    Diagnostic::error(name.origin, format!("ds_cache `{}` names no Datasource", name.value))
                        .note(format!("define it: Datasource \"{}\" {{ uri = ( \"sqlite:/path/upstreams.sqlite\" ) }}", name.value)),
                ),
                Some(ds) => {
                    for uri in &ds.uris {
                        if let DatasourceUri::Unsupported(driver) = &uri.value {
                            cx.diags.push(Diagnostic::error(
                                uri.origin,
                                format!("datasource driver `{driver}:` is not implemented; smtp_auth_proxy lookups go through odbc:, sqlite:, pgsql: or mysql:"),
                            ));
                        }
                    }
                }
            }
            if query.is_none() {
                cx.diags.push(Diagnostic::error(
                    name.origin,
                    "ds_cache is set but smtp_auth_proxy has no `query` to run",
                ));
            }
        }
        (None, Some(q)) => cx.diags.push(Diagnostic::warning(
            q.origin,
            "`query` is not run: smtp_auth_proxy has no `ds_cache`",
        )),
        (None, None) => {}
    }
    if let (None, Some(q)) = (&p.ds_cache, &p.limits_query) {
        cx.diags.push(Diagnostic::warning(
            q.origin,
            "`limits_query` is not run: smtp_auth_proxy has no `ds_cache`",
        ));
    }
    for ds in &config.datasources {
        if p.ds_cache.as_ref().is_none_or(|n| n.value != ds.name) {
            cx.diags.push(
                Diagnostic::warning(ds.origin, format!("Datasource \"{}\" is not used by anything smtp-auth-proxy implements; ignored", ds.name))
                    .unimplemented(),
            );
        }
    }
    let used = config.esmtp_listener.iter().any(|l| {
        std::iter::once(&l.settings)
            .chain(l.peers.iter().map(|p| &p.settings))
            .chain(l.listens.iter().flat_map(|l| {
                std::iter::once(&l.settings).chain(l.peers.iter().map(|p| &p.settings))
            }))
            .any(uses_proxy)
    });
    if !used {
        cx.diags.push(Diagnostic::warning(
            p.origin,
            "smtp_auth_proxy is configured but no Auth*Parameters `uri` uses `smtp_auth_proxy://`",
        ));
    }
    if p.enabled && used {
        check_upstream_tls(cx, p);
    }
}

/// The client side warns where passwords arrive in clear text; this is the same danger on the
/// way out. Unless `tls = required`, a password goes in clear text to an upstream that does not
/// offer STARTTLS, or to one whose STARTTLS an attacker on the path strips from the EHLO reply;
/// without `tls_verify`, an attacker can also answer the handshake himself. Loopback upstreams
/// never cross a network. Hosts a datasource names are not known until a user logs in: the
/// engine warns at run time when one of them, off loopback, takes a password in clear text.
fn check_upstream_tls(cx: &mut Cx, p: &super::proxy::SmtpAuthProxy) {
    use super::proxy::{TlsVerify, UpstreamTls};
    let remote: Vec<String> = p
        .hosts
        .iter()
        .filter(|h| !super::addr::is_loopback_host(&h.value.host))
        .map(|h| h.value.to_string())
        .collect();
    if remote.is_empty() {
        return;
    }
    let to = remote.join(", ");
    match (p.tls, p.tls_verify) {
        (UpstreamTls::Required, TlsVerify::No) => cx.diags.push(Diagnostic::warning(
            p.origin,
            format!(
                "DANGER: smtp_auth_proxy sends passwords to {to} over TLS without checking the certificate (`tls_verify = no`): anyone on the path can answer the handshake and read them (set `tls_verify = host` with `tls_ca`)"
            ),
        )),
        (UpstreamTls::Required, _) => {}
        (tls, _) => cx.diags.push(Diagnostic::warning(
            p.origin,
            format!(
                "DANGER: smtp_auth_proxy may send passwords to {to} in clear text: with `tls = {}` an upstream that does not offer STARTTLS, or one whose STARTTLS an attacker strips, gets them unencrypted (set `tls = required`, and `tls_verify = host`)",
                if tls == UpstreamTls::No { "no" } else { "ifavailable" }
            ),
        )),
    }
}

fn uses_proxy(s: &ListenerSettings) -> bool {
    s.auth_parameters()
        .any(|p| p.backend.value == AuthBackend::SmtpAuthProxy)
}

/// Every listener-family settings block in the model.
/// Certificates, keys and password files must be readable here, and look like what they are.
fn check_files(cx: &mut Cx, config: &Config) {
    let mut checked = HashSet::new();
    for s in config.all_listener_settings() {
        if let Some(c) = &s.tls_certificate
            && checked.insert(c.value.clone())
        {
            check_file(
                cx,
                &c.value,
                c.origin,
                "TLS_Certificate",
                Some("-----BEGIN CERTIFICATE-----"),
            );
        }
        if let Some(k) = &s.tls_key
            && checked.insert(k.value.clone())
        {
            check_file(cx, &k.value, k.origin, "TLS_Key", Some("PRIVATE KEY-----"));
        }
        for params in s.auth_parameters() {
            if let AuthBackend::File(path) = &params.backend.value
                && checked.insert(path.clone())
            {
                check_file(cx, path, params.backend.origin, "password file", None);
            }
        }
    }
}

/// Outbound delivery: the resolver's source, CA files, and routes that cannot work.
fn check_outbound(cx: &mut Cx, config: &Config) {
    let routing = &config.routing;
    let r = &routing.resolver;
    if let (Some(conf), Some(ns)) = (&r.resolv_conf, &r.nameservers) {
        let at = cx.sources.locate(conf.origin).to_string();
        cx.diags.push(Diagnostic::error(
            ns.origin,
            format!(
                "DNS_Nameservers and Resolv_Conf (at {at}) both name the DNS servers; keep one"
            ),
        ));
    }
    if let Some(conf) = &r.resolv_conf {
        check_file(
            cx,
            &conf.value,
            conf.origin,
            "Resolv_Conf",
            Some("nameserver"),
        );
    }
    let global = (
        "the global scope".to_owned(),
        &routing.gateway,
        &routing.routes,
        &routing.outbound,
    );
    let scopes = std::iter::once(global).chain(routing.domains.iter().map(|d| {
        (
            format!("Domain \"{}\"", d.name),
            &d.gateway,
            &d.routes,
            &d.outbound,
        )
    }));
    let mut checked = HashSet::new();
    for (title, gateway, routes, outbound) in scopes.collect::<Vec<_>>() {
        if let (Some(g), Some(_)) = (gateway, routes) {
            cx.diags.push(Diagnostic::warning(
                g.origin,
                format!("both Gateway and Routes are set in {title}: the Gateway is tried first, the Routes after it"),
            ));
        }
        let hops = gateway
            .iter()
            .map(|g| (&g.value, g.origin))
            .chain(routes.iter().flat_map(|r| {
                r.value.iter().filter_map(move |route| match &route.target {
                    Target::Host(h) => Some((h, r.origin)),
                    Target::Mx => None,
                })
            }));
        for (hop, origin) in hops {
            if let Ok(ip) = hop.host.parse::<IpAddr>()
                && routing.is_prohibited(ip)
            {
                cx.diags.push(Diagnostic::error(
                    origin,
                    format!("next hop {hop} is in Prohibited_Hosts: no mail would reach it"),
                ));
            }
        }
        let verifies = outbound
            .tls_verify
            .as_ref()
            .is_some_and(|v| matches!(v.value, OutboundTlsVerify::Ca | OutboundTlsVerify::Host));
        if let Some(ca) = &outbound.tls_ca {
            if checked.insert(ca.value.clone()) {
                check_file(
                    cx,
                    &ca.value,
                    ca.origin,
                    "TLS_CA",
                    Some("-----BEGIN CERTIFICATE-----"),
                );
            }
        } else if verifies
            && let Some(v) = &outbound.tls_verify
            && checked.insert(PathBuf::from(DEFAULT_TLS_CA))
        {
            check_file(
                cx,
                Path::new(DEFAULT_TLS_CA),
                v.origin,
                "TLS_CA (the default, for TLS_Verify)",
                Some("-----BEGIN CERTIFICATE-----"),
            );
        }
    }
}

fn check_file(cx: &mut Cx, path: &Path, origin: Origin, what: &str, marker: Option<&str>) {
    match std::fs::read(path) {
        Err(e) => cx.diags.push(Diagnostic::error(
            origin,
            format!("cannot read {what} {}: {e}", path.display()),
        )),
        Ok(bytes) => {
            if let Some(marker) = marker
                && !String::from_utf8_lossy(&bytes).contains(marker)
            {
                cx.diags.push(Diagnostic::error(
                    origin,
                    format!("{what} {} is not PEM: no `{marker}` line", path.display()),
                ));
            }
        }
    }
}
