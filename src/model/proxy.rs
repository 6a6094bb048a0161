//! The `smtp_auth_proxy { }` module scope: where AUTH is forwarded.

use super::Cx;
use super::addr::HostPort;
use super::names::ScopeKind;
use super::query::{self, Query};
use super::value::{self, Spanned};
use crate::config::{Diagnostic, Origin, Scope};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 25;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_POOL: usize = 2;
/// The CA bundle Debian's `ca-certificates` maintains, for `tls_verify`.
pub const DEFAULT_TLS_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `tls`: STARTTLS towards the upstream (our option; Momentum's module has none). Named as
/// Momentum's outbound `TLS` option is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamTls {
    No,
    /// STARTTLS when the upstream offers it (the default).
    #[default]
    IfAvailable,
    /// No STARTTLS, no AUTH: the upstream's failure to offer it is an error (454).
    Required,
}

/// `tls_verify`: how the upstream's certificate is checked, as Momentum's `TLS_Verify` words it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlsVerify {
    /// Accept any certificate (encryption against passive listeners only).
    #[default]
    No,
    /// A chain to a trusted CA.
    Ca,
    /// A chain to a trusted CA, naming the host connected to.
    Host,
}

#[derive(Clone, Debug)]
pub struct SmtpAuthProxy {
    /// Upstreams to try in order when one cannot be reached; each has its port filled in.
    pub hosts: Vec<Spanned<HostPort>>,
    pub port: u16,
    /// Bounds the whole upstream exchange for one AUTH.
    pub timeout: Duration,
    /// The Datasource that maps a user to an upstream.
    pub ds_cache: Option<Spanned<String>>,
    /// SQL with `:username`, `:localpart` and `:domain` (rewritten to `?`), otherwise passed to
    /// the datasource as written.
    pub query: Option<Spanned<Query>>,
    /// `limits_query` (ours): SQL like `query`, run on the same datasource, returning the
    /// user's own sending limits in columns named after the options (`user_message_limit`…).
    pub limits_query: Option<Spanned<Query>>,
    pub tls: UpstreamTls,
    pub tls_verify: TlsVerify,
    /// PEM bundle of trusted CAs for `tls_verify`.
    pub tls_ca: PathBuf,
    /// `pool`: connections to each configured host kept ready (per serving thread), each used
    /// for one AUTH; 0 turns it off.
    pub pool: usize,
    /// `enabled = false` loads the module passive: it answers no AUTH.
    pub enabled: bool,
    /// `deliver_through_upstream` (ours): mail after a pass through this engine goes through
    /// the very upstream session that accepted the AUTH, synchronously, instead of the spool
    /// and the routes every other message takes.
    pub deliver_through_upstream: bool,
    /// `debug_level` (every Momentum module has it): the daemon's log level.
    pub debug_level: Option<Spanned<crate::log::Level>>,
    pub origin: Origin,
}

pub(super) fn read(cx: &mut Cx, scope: &Scope) -> Option<SmtpAuthProxy> {
    let origin = scope.origin?;
    let mut port = DEFAULT_PORT;
    let mut raw_hosts = Vec::new();
    let mut timeout = DEFAULT_TIMEOUT;
    let mut ds_cache = None;
    let mut query = None;
    let mut limits_query = None;
    let mut enabled = true;
    let mut tls = UpstreamTls::default();
    let mut tls_verify = TlsVerify::default();
    let mut tls_ca = PathBuf::from(DEFAULT_TLS_CA);
    let mut pool = DEFAULT_POOL;
    let mut debug_level = None;
    let mut deliver_through_upstream = false;
    // `port` applies to hosts written without one, wherever it appears in the scope.
    if let Some(s) = scope.get("port")
        && let Some(p) = cx.read(s, |n, v| value::unsigned(n, v, 1, 65535))
    {
        port = p.value as u16;
    }
    for s in &scope.settings {
        match s.name.to_ascii_lowercase().as_str() {
            "port" => {}
            "host" => match value::scalar_list(&s.name, &s.value) {
                Ok(items) if items.is_empty() => cx
                    .diags
                    .push(Diagnostic::error(s.value.origin, "`host` is an empty list")),
                Ok(items) => {
                    raw_hosts = items.into_iter().map(|(h, o)| (h.to_owned(), o)).collect()
                }
                Err(d) => cx.diags.push(d),
            },
            "timeout" => {
                if let Some(t) = cx.read(s, |n, v| value::unsigned(n, v, 1, 3600)) {
                    timeout = Duration::from_secs(t.value);
                }
            }
            "ds_cache" => ds_cache = cx.read(s, value::text),
            "query" => query = read_query(cx, s),
            "limits_query" => limits_query = read_query(cx, s),
            "tls" => {
                if let Some(t) = cx.read(s, |n, v| {
                    value::choice(
                        n,
                        v,
                        &[
                            ("no", UpstreamTls::No),
                            ("ifavailable", UpstreamTls::IfAvailable),
                            ("required", UpstreamTls::Required),
                        ],
                    )
                }) {
                    tls = t.value;
                }
            }
            "tls_verify" => {
                if let Some(t) = cx.read(s, |n, v| {
                    value::choice(
                        n,
                        v,
                        &[
                            ("no", TlsVerify::No),
                            ("ca", TlsVerify::Ca),
                            ("host", TlsVerify::Host),
                        ],
                    )
                }) {
                    tls_verify = t.value;
                }
            }
            "pool" => {
                if let Some(n) = cx.read(s, |n, v| value::unsigned(n, v, 0, 64)) {
                    pool = n.value as usize;
                }
            }
            "tls_ca" => {
                if let Some(p) = cx.read_path(s) {
                    tls_ca = p.value;
                }
            }
            "enabled" => enabled = cx.read(s, value::boolean).is_none_or(|b| b.value),
            "deliver_through_upstream" => {
                deliver_through_upstream = cx.read(s, value::boolean).is_some_and(|b| b.value)
            }
            "debug_level" => {
                debug_level = cx.read(s, |n, v| {
                    use crate::log::Level;
                    // Momentum's levels; NOTICE and CRITICAL fold into their neighbours.
                    value::choice(
                        n,
                        v,
                        &[
                            ("debug", Level::Debug),
                            ("info", Level::Info),
                            ("notice", Level::Info),
                            ("warning", Level::Warning),
                            ("error", Level::Error),
                            ("crit", Level::Error),
                            ("critical", Level::Error),
                        ],
                    )
                })
            }
            _ => cx.unknown_option(ScopeKind::AuthProxy, s),
        }
    }
    for child in &scope.scopes {
        cx.unknown_scope(ScopeKind::AuthProxy, child);
    }
    let hosts = raw_hosts
        .into_iter()
        .filter_map(|(h, origin)| match HostPort::parse(&h, port) {
            Ok(value) => Some(Spanned { value, origin }),
            Err(e) => {
                cx.diags.push(Diagnostic::error(
                    origin,
                    format!("smtp_auth_proxy host: {e}"),
                ));
                None
            }
        })
        .collect();
    Some(SmtpAuthProxy {
        hosts,
        port,
        timeout,
        ds_cache,
        query,
        limits_query,
        tls,
        tls_verify,
        tls_ca,
        pool,
        enabled,
        debug_level,
        deliver_through_upstream,
        origin,
    })
}

/// SQL with the named parameters rewritten for ODBC.
fn read_query(cx: &mut Cx, s: &crate::config::ast::Setting) -> Option<Spanned<Query>> {
    let q = cx.read(s, value::text)?;
    match query::rewrite(&q.value) {
        Ok(value) => Some(Spanned {
            value,
            origin: q.origin,
        }),
        Err(e) => {
            cx.diags.push(Diagnostic::error(q.origin, e));
            None
        }
    }
}
