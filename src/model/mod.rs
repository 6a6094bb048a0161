//! The typed configuration the daemon runs on, built from the merged tree.
//!
//! Building never stops at the first problem: every bad value is reported with its file:line:col,
//! every option the appliance does not implement is reported once, and the cross-checks in
//! `check.rs` run over whatever could be read.

pub mod addr;
pub mod check;
pub mod datasource;
pub mod limits;
pub mod listener;
pub mod names;
pub mod outbound;
pub mod prometheus;
pub mod proxy;
pub mod query;
pub mod queue;
pub mod resolver;
pub mod routing;
pub mod security;
pub mod value;

use crate::config::ast::{Setting, Value};
use crate::config::{Diagnostic, Diagnostics, Origin, Scope, SourceMap};
use datasource::Datasource;
use listener::{EsmtpListener, ListenerSettings};
use names::ScopeKind;
use outbound::Routing;
use prometheus::PrometheusListener;
use proxy::SmtpAuthProxy;
use routing::DomainPattern;
use security::Security;
use std::path::PathBuf;
use value::{Read, Spanned};

/// The whole typed configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The listener options Momentum also reads globally (`relay_hosts`, `require_ehlo`).
    pub global: ListenerSettings,
    pub relay_domains: Option<Spanned<Vec<DomainPattern>>>,
    pub esmtp_listener: Option<EsmtpListener>,
    pub auth_proxy: Option<SmtpAuthProxy>,
    pub datasources: Vec<Datasource>,
    pub routing: Routing,
    /// `Spoolbase`: where accepted mail waits for delivery.
    pub spoolbase: Option<Spanned<PathBuf>>,
    /// Retries, expiration, bounces (global; a Domain may override).
    pub queue: queue::QueueSettings,
    pub ec_logger: Option<queue::EcLogger>,
    pub security: Option<Security>,
    /// Where metrics are served; `None`: nowhere, and nothing is counted.
    pub prometheus_listener: Option<PrometheusListener>,
    /// Where the counters live when instances share them; `None`: in this process.
    pub shared_counters: Option<limits::SharedCounters>,
}

impl Config {
    /// The spool directory: `Spoolbase`, or this package's default.
    pub fn spoolbase(&self) -> PathBuf {
        self.spoolbase.as_ref().map_or_else(
            || PathBuf::from(queue::DEFAULT_SPOOLBASE),
            |s| s.value.clone(),
        )
    }

    pub fn datasource(&self, name: &str) -> Option<&Datasource> {
        self.datasources.iter().find(|d| d.name == name)
    }

    /// Every scope's listener settings: global, ESMTP_Listener, its Peers, each Listen and
    /// the Listen's Peers.
    pub fn all_listener_settings(&self) -> Vec<&ListenerSettings> {
        let mut all = vec![&self.global];
        if let Some(l) = &self.esmtp_listener {
            all.push(&l.settings);
            all.extend(l.peers.iter().map(|p| &p.settings));
            for listen in &l.listens {
                all.push(&listen.settings);
                all.extend(listen.peers.iter().map(|p| &p.settings));
            }
        }
        all
    }
}

/// Builds the typed configuration and reports what is wrong, unimplemented or dangerous.
pub fn build(root: &Scope, sources: &SourceMap) -> (Config, Diagnostics) {
    let mut cx = Cx {
        sources,
        diags: Diagnostics::default(),
    };
    let mut config = Config::default();
    for s in &root.settings {
        if listener::read_setting(&mut cx, &mut config.global, s, ScopeKind::Global) {
            continue;
        }
        match s.name.to_ascii_lowercase().as_str() {
            "relay_domains" => config.relay_domains = cx.read(s, routing::read_relay_domains),
            "gateway" => config.routing.gateway = cx.read(s, routing::read_gateway),
            "routes" => config.routing.routes = cx.read(s, routing::read_routes),
            "spoolbase" => config.spoolbase = cx.read_path(s),
            name if names::QUEUE_OPTIONS.contains(&name) => {
                config.queue.read_setting(&mut cx, s);
            }
            "xclient" => {
                if let Some(x) = cx.read(s, routing::read_xclient) {
                    config.routing.xclient = x.value;
                }
            }
            "prohibited_hosts" => {
                if let Some(h) = cx.read_with(s, listener::read_relay_hosts) {
                    config.routing.prohibited_hosts = h.value;
                }
            }
            "skip_hosts" => {
                if let Some(h) = cx.read_with(s, listener::read_relay_hosts) {
                    config.routing.skip_hosts = h.value;
                }
            }
            "server_max_outbound_connections" => {
                if let Some(n) = cx.read(s, |n, v| value::integer(n, v, -1, u32::MAX.into())) {
                    // -1 and 0: no limit of our own (the descriptor limit still applies).
                    config.routing.server_max_outbound_connections =
                        u32::try_from(n.value).ok().filter(|n| *n > 0);
                }
            }
            "resolv_conf" => config.routing.resolver.resolv_conf = cx.read_path(s),
            "dns_nameservers" => {
                config.routing.resolver.nameservers = cx.read(s, resolver::read_nameservers)
            }
            "use_ipv6" => {
                if let Some(b) = cx.read(s, value::boolean) {
                    config.routing.use_ipv6 = b.value;
                }
            }
            _ => {
                if !config.routing.outbound.read_setting(&mut cx, s) {
                    cx.unknown_option(ScopeKind::Global, s);
                }
            }
        }
    }
    for scope in &root.scopes {
        match scope.name.to_ascii_lowercase().as_str() {
            "esmtp_listener" => {
                if let (Some(inst), Some(origin)) = (&scope.instance, scope.origin) {
                    cx.diags.push(Diagnostic::error(
                        origin,
                        format!(
                            "`{} \"{}\"`: ESMTP_Listener takes no instance name",
                            scope.name, inst.name
                        ),
                    ));
                    continue;
                }
                config.esmtp_listener = Some(listener::read_esmtp_listener(&mut cx, scope));
            }
            "smtp_auth_proxy" => {
                if let Some(first) = &config.auth_proxy {
                    let at = cx.sources.locate(first.origin).to_string();
                    cx.diags.push(Diagnostic::error(
                        scope.origin,
                        format!("a second smtp_auth_proxy instance; only one is supported (the first is at {at})"),
                    ));
                    continue;
                }
                config.auth_proxy = proxy::read(&mut cx, scope);
            }
            "datasource" => config.datasources.extend(datasource::read(&mut cx, scope)),
            "ec_logger" => config.ec_logger = Some(queue::read_ec_logger(&mut cx, scope)),
            "security" => config.security = Some(security::read(&mut cx, scope)),
            "prometheus_listener" => {
                config.prometheus_listener = Some(prometheus::read(&mut cx, scope));
            }
            "domain" => {
                if let Some(d) = outbound::read_domain(&mut cx, scope) {
                    if let Some(first) = config.routing.domains.iter().find(|f| f.name == d.name) {
                        let at = cx.sources.locate(first.origin).to_string();
                        cx.diags.push(Diagnostic::error(
                            d.origin,
                            format!(
                                "a second Domain scope for `{}` (the first is at {at})",
                                d.name
                            ),
                        ));
                    } else {
                        config.routing.domains.push(d);
                    }
                }
            }
            "shared_counters" => {
                config.shared_counters = limits::read_shared_counters(&mut cx, scope);
            }
            _ => cx.unknown_scope(ScopeKind::Global, scope),
        }
    }
    check::check(&mut cx, &config);
    prometheus::check(&mut cx, &config);
    cx.diags.sort();
    (config, cx.diags)
}

/// What the builders share: the sources (to resolve paths and print positions) and the
/// diagnostics collected so far.
pub(crate) struct Cx<'a> {
    pub sources: &'a SourceMap,
    pub diags: Diagnostics,
}

impl Cx<'_> {
    /// Reads a setting's value, recording an error and returning `None` if it is bad.
    pub fn read<T>(
        &mut self,
        s: &Setting,
        read: impl FnOnce(&str, &Value) -> Read<T>,
    ) -> Option<Spanned<T>> {
        match value::spanned(s, read) {
            Ok(v) => Some(v),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    /// Like `read`, for readers that also report warnings.
    pub fn read_with<T>(
        &mut self,
        s: &Setting,
        read: impl FnOnce(&mut Self, &str, &Value) -> Read<T>,
    ) -> Option<Spanned<T>> {
        match read(self, &s.name, &s.value) {
            Ok(value) => Some(Spanned {
                value,
                origin: s.value.origin,
            }),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    /// Reads a file path. A relative path is taken relative to the directory of the file it is
    /// written in, so a configuration tree can be moved as a whole.
    pub fn read_path(&mut self, s: &Setting) -> Option<Spanned<PathBuf>> {
        let text = self.read(s, value::text)?;
        Some(Spanned {
            value: self.resolve_path(&text.value, text.origin),
            origin: text.origin,
        })
    }

    pub fn resolve_path(&self, path: &str, origin: Origin) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            return p;
        }
        let joined = self.sources.dir(origin.file).join(p);
        // Absolute, so that the path still holds if the daemon changes directory.
        if joined.is_relative()
            && let Ok(cwd) = std::env::current_dir()
        {
            return cwd.join(joined);
        }
        joined
    }

    /// Reports an option that `kind` does not implement: a typo of one it does is an error;
    /// anything else is kept and ignored with a warning (an error under `--strict`).
    pub fn unknown_option(&mut self, kind: ScopeKind, s: &Setting) {
        self.unknown(kind, &s.name, s.origin, kind.options(), "option", None);
    }

    pub fn unknown_scope(&mut self, kind: ScopeKind, scope: &Scope) {
        let Some(origin) = scope.origin else { return };
        let n = scope.option_count();
        let contents = match n {
            0 => String::new(),
            1 => " (1 option)".into(),
            n => format!(" ({n} options)"),
        };
        self.unknown(
            kind,
            &scope.name,
            origin,
            kind.scopes(),
            "scope",
            Some((scope.title(), contents)),
        );
    }

    fn unknown(
        &mut self,
        kind: ScopeKind,
        name: &str,
        origin: Origin,
        implemented: &[&'static str],
        what: &str,
        scope: Option<(String, String)>,
    ) {
        let lower = name.to_ascii_lowercase();
        let listener_family = matches!(
            kind,
            ScopeKind::EsmtpListener | ScopeKind::Listen | ScopeKind::Peer
        );
        // Momentum itself refuses these two mix-ups (shared spec §4.10).
        if listener_family && lower == "enabled" {
            self.diags.push(Diagnostic::error(
                origin,
                "listeners are switched with `Enable`, not `enabled`",
            ));
            return;
        }
        if kind == ScopeKind::AuthProxy && lower == "enable" {
            self.diags.push(Diagnostic::error(
                origin,
                "modules are switched with `enabled`, not `Enable`",
            ));
            return;
        }
        let title = scope
            .as_ref()
            .map_or_else(|| format!("`{name}`"), |(t, _)| format!("`{t}`"));
        let contents = scope.map(|(_, c)| c).unwrap_or_default();
        let elsewhere = [
            ScopeKind::Global,
            ScopeKind::EsmtpListener,
            ScopeKind::AuthProxy,
            ScopeKind::Datasource,
            ScopeKind::Security,
        ]
        .into_iter()
        .find(|k| {
            *k != kind
                && (k.options().contains(&lower.as_str()) || k.scopes().contains(&lower.as_str()))
        });
        if let Some(other) = elsewhere {
            self.diags.push(
                Diagnostic::warning(
                    origin,
                    format!(
                        "{title}{contents} is read in {}, not in {}; ignored here",
                        other.title(),
                        kind.title()
                    ),
                )
                .unimplemented(),
            );
        } else if names::is_known_momentum_name(name) {
            self.diags.push(
                Diagnostic::warning(
                    origin,
                    format!(
                        "{what} {title}{contents} is not implemented by smtp-auth-proxy; ignored"
                    ),
                )
                .unimplemented(),
            );
        } else if let Some(meant) = names::suggest(name, implemented) {
            self.diags.push(Diagnostic::error(
                origin,
                format!(
                    "unknown {what} `{name}` in {}; did you mean `{meant}`?",
                    kind.title()
                ),
            ));
        } else {
            self.diags.push(
                Diagnostic::warning(
                    origin,
                    format!(
                        "{what} {title}{contents} in {} is unknown to smtp-auth-proxy; ignored",
                        kind.title()
                    ),
                )
                .unimplemented(),
            );
        }
    }
}
