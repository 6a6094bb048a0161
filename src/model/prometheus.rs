//! `Prometheus_Listener { Listen "127.0.0.1:9725" { } }`: where the metrics endpoint listens.
//!
//! Shaped like Momentum's own service listeners (`Control_Listener`, `HTTP_Listener`): a
//! listener scope enclosing one `Listen` per socket, switched with `Enable`. The endpoint is
//! off unless the scope is written. It has no access control of its own, so `--check-config`
//! warns about a wildcard address; a loopback or management address is the intended place.

use super::addr::ListenAddr;
use super::names::ScopeKind;
use super::value::{self, Spanned};
use super::{Config, Cx};
use crate::config::{Diagnostic, Origin, Scope};

#[derive(Clone, Debug)]
pub struct PrometheusListener {
    pub enabled: bool,
    pub listens: Vec<PrometheusListen>,
    pub origin: Option<Origin>,
}

/// A `Listen "address" { }` of the Prometheus_Listener: one socket.
#[derive(Clone, Debug)]
pub struct PrometheusListen {
    pub address: Spanned<ListenAddr>,
    pub enabled: bool,
}

impl PrometheusListener {
    /// The addresses to serve metrics on (none when the scope is disabled).
    pub fn enabled_listens(&self) -> impl Iterator<Item = &ListenAddr> {
        self.listens
            .iter()
            .filter(|l| self.enabled && l.enabled)
            .map(|l| &l.address.value)
    }
}

pub(super) fn read(cx: &mut Cx, scope: &Scope) -> PrometheusListener {
    let mut listener = PrometheusListener {
        enabled: read_enable(cx, scope, ScopeKind::PrometheusListener),
        listens: Vec::new(),
        origin: scope.origin,
    };
    for child in &scope.scopes {
        if child.name.eq_ignore_ascii_case("listen") {
            listener.listens.extend(read_listen(cx, child));
        } else {
            cx.unknown_scope(ScopeKind::PrometheusListener, child);
        }
    }
    for (i, l) in listener.listens.iter().enumerate() {
        if let Some(first) = listener.listens[..i]
            .iter()
            .find(|o| same_socket(&o.address.value, &l.address.value))
        {
            let at = cx.sources.locate(first.address.origin).to_string();
            cx.diags.push(Diagnostic::error(
                l.address.origin,
                format!(
                    "Listen `{}` is the same address as the Listen at {at}",
                    l.address.value
                ),
            ));
        }
    }
    listener
}

/// `Enable`, the only option of both scopes.
fn read_enable(cx: &mut Cx, scope: &Scope, kind: ScopeKind) -> bool {
    let mut enabled = true;
    for s in &scope.settings {
        if s.name.eq_ignore_ascii_case("enable") {
            if let Some(v) = cx.read(s, value::boolean) {
                enabled = v.value;
            }
        } else {
            cx.unknown_option(kind, s);
        }
    }
    enabled
}

fn read_listen(cx: &mut Cx, scope: &Scope) -> Option<PrometheusListen> {
    let origin = scope.origin?;
    let enabled = read_enable(cx, scope, ScopeKind::PrometheusListen);
    for child in &scope.scopes {
        cx.unknown_scope(ScopeKind::PrometheusListen, child);
    }
    let Some(inst) = &scope.instance else {
        cx.diags.push(Diagnostic::error(
            origin,
            "`Listen` needs an address: `Prometheus_Listener { Listen \"127.0.0.1:9725\" { } }`",
        ));
        return None;
    };
    let address = match ListenAddr::parse(&inst.name) {
        Ok(ListenAddr::Unix(_)) => {
            cx.diags.push(Diagnostic::error(
                origin,
                format!(
                    "Prometheus_Listener Listen \"{}\": metrics are served over TCP; give `address:port`",
                    inst.name
                ),
            ));
            return None;
        }
        Ok(a) => a,
        Err(e) => {
            cx.diags.push(Diagnostic::error(
                origin,
                format!("Prometheus_Listener Listen \"{}\": {e}", inst.name),
            ));
            return None;
        }
    };
    if enabled && matches!(address, ListenAddr::Any { .. }) {
        cx.diags.push(Diagnostic::warning(
            origin,
            format!(
                "Prometheus_Listener Listen \"{address}\" serves metrics to anyone who can reach the host; \
                 the endpoint has no access control of its own: prefer a loopback or management address"
            ),
        ));
    }
    Some(PrometheusListen {
        address: Spanned {
            value: address,
            origin,
        },
        enabled,
    })
}

/// Port 0 asks the kernel for a free port: two such Listens never share a socket.
fn same_socket(a: &ListenAddr, b: &ListenAddr) -> bool {
    a == b
        && !matches!(
            a,
            ListenAddr::Any { port: 0, .. } | ListenAddr::Ip { port: 0, .. }
        )
}

/// The metrics endpoint and the SMTP listener cannot share a socket.
pub(super) fn check(cx: &mut Cx, config: &Config) {
    let (Some(p), Some(smtp)) = (&config.prometheus_listener, &config.esmtp_listener) else {
        return;
    };
    for l in p.listens.iter().filter(|l| p.enabled && l.enabled) {
        if let Some(other) = smtp
            .enabled_listens()
            .find(|s| same_socket(&s.address.value, &l.address.value))
        {
            let at = cx.sources.locate(other.address.origin).to_string();
            cx.diags.push(Diagnostic::error(
                l.address.origin,
                format!(
                    "Prometheus_Listener Listen `{}` is the address of the ESMTP_Listener Listen at {at}",
                    l.address.value
                ),
            ));
        }
    }
}
