//! `Datasource "name" { uri = ( … ) }`: where per-user lookups go.
//!
//! The URI forms are Momentum's: the text up to the first `:` names the driver and the rest goes
//! to it. Which ODBC driver serves each is decided by the datasource layer, not here.

use super::Cx;
use super::names::ScopeKind;
use super::value::{self, Spanned};
use crate::config::{Diagnostic, Origin, Scope};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_CACHE_SIZE: usize = 1000;
pub const DEFAULT_CACHE_LIFE: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_ROWS: u64 = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasourceUri {
    /// `odbc:DSN=…;UID=…`: an ODBC connection string, passed verbatim.
    Odbc(String),
    /// `sqlite:/path/file.sqlite`.
    Sqlite(PathBuf),
    /// `pgsql:host=…;dbname=…;user=…;password=…;port=…`, as `key=value` pairs.
    Pgsql(Vec<(String, String)>),
    /// `mysql:host=…;port=…;dbname=…;user=…;password=…` (`unix=` for a socket).
    Mysql(Vec<(String, String)>),
    /// A Momentum driver this appliance has no ODBC equivalent for (`ldap:`, `csv:`, `cdb:`…).
    Unsupported(String),
}

#[derive(Clone, Debug)]
pub struct Datasource {
    pub name: String,
    /// Used round-robin; all equivalent (Momentum does no failover beyond skipping dead ones).
    pub uris: Vec<Spanned<DatasourceUri>>,
    pub cache_size: usize,
    pub cache_life: Duration,
    /// `None`: unlimited (`max_rows = -1`).
    pub max_rows: Option<u64>,
    pub no_cache: bool,
    pub origin: Origin,
}

pub(super) fn read(cx: &mut Cx, scope: &Scope) -> Option<Datasource> {
    let origin = scope.origin?;
    let Some(name) = scope.instance.as_ref().map(|i| i.name.clone()) else {
        cx.diags.push(Diagnostic::error(
            origin,
            "`Datasource` needs a name: `Datasource \"users\" { }`",
        ));
        return None;
    };
    let mut ds = Datasource {
        name,
        uris: Vec::new(),
        cache_size: DEFAULT_CACHE_SIZE,
        cache_life: DEFAULT_CACHE_LIFE,
        max_rows: Some(DEFAULT_MAX_ROWS),
        no_cache: false,
        origin,
    };
    for s in &scope.settings {
        match s.name.to_ascii_lowercase().as_str() {
            "uri" => match value::scalar_list(&s.name, &s.value) {
                Ok(items) => {
                    for (uri, origin) in items {
                        match parse_uri(cx, uri, origin) {
                            Ok(value) => ds.uris.push(Spanned { value, origin }),
                            Err(d) => cx.diags.push(d),
                        }
                    }
                }
                Err(d) => cx.diags.push(d),
            },
            "cache_size" => {
                if let Some(n) = cx.read(s, |n, v| value::unsigned(n, v, 0, 100_000_000)) {
                    ds.cache_size = n.value as usize;
                }
            }
            "cache_life" => {
                if let Some(d) = cx.read(s, value::seconds) {
                    ds.cache_life = d.value;
                }
            }
            "max_rows" => {
                if let Some(n) = cx.read(s, |n, v| value::integer(n, v, -1, i64::MAX)) {
                    ds.max_rows = u64::try_from(n.value).ok();
                }
            }
            "no_cache" => {
                if let Some(b) = cx.read(s, value::boolean) {
                    ds.no_cache = b.value;
                }
            }
            _ => cx.unknown_option(ScopeKind::Datasource, s),
        }
    }
    for child in &scope.scopes {
        cx.unknown_scope(ScopeKind::Datasource, child);
    }
    if ds.uris.is_empty() && scope.get("uri").is_none() {
        cx.diags.push(Diagnostic::error(
            origin,
            format!("Datasource \"{}\" has no `uri`", ds.name),
        ));
    }
    Some(ds)
}

fn parse_uri(cx: &Cx, uri: &str, origin: Origin) -> Result<DatasourceUri, Diagnostic> {
    let Some((driver, rest)) = uri.split_once(':') else {
        return Err(Diagnostic::error(
            origin,
            format!("datasource uri `{uri}` has no `driver:` prefix"),
        ));
    };
    match driver.to_ascii_lowercase().as_str() {
        "odbc" if rest.is_empty() => Err(Diagnostic::error(
            origin,
            "`odbc:` needs a connection string",
        )),
        "odbc" => Ok(DatasourceUri::Odbc(rest.to_owned())),
        "sqlite" => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(Diagnostic::error(origin, "`sqlite:` needs a database path"));
            }
            Ok(DatasourceUri::Sqlite(cx.resolve_path(path, origin)))
        }
        "pgsql" => Ok(DatasourceUri::Pgsql(pairs(rest, origin)?)),
        "mysql" => Ok(DatasourceUri::Mysql(pairs(rest, origin)?)),
        _ => Ok(DatasourceUri::Unsupported(driver.to_owned())),
    }
}

/// `k=v;k=v` as Momentum's pgsql and mysql drivers read it.
fn pairs(s: &str, origin: Origin) -> Result<Vec<(String, String)>, Diagnostic> {
    s.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_ascii_lowercase(), v.to_owned()))
            }
            _ => Err(Diagnostic::error(
                origin,
                format!("`{p}` in datasource uri is not `key=value`"),
            )),
        })
        .collect()
}
