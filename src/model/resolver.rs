//! Where DNS questions for delivery go: `/etc/resolv.conf` (the default), Momentum's
//! `Resolv_Conf = "/path"`, or our `DNS_Nameservers = ( "127.0.0.1:5353" … )`, which names
//! servers with their ports (a resolv.conf cannot give a port, and tests run a DNS server on
//! loopback on a free one).

use super::value::{self, Read, Spanned};
use crate::config::Diagnostic;
use crate::config::ast::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The resolv.conf read when neither option is set.
pub const SYSTEM_RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolverSettings {
    /// `Resolv_Conf`: a resolv.conf to read instead of /etc/resolv.conf.
    pub resolv_conf: Option<Spanned<PathBuf>>,
    /// `DNS_Nameservers`: the servers to ask, in order.
    pub nameservers: Option<Spanned<Vec<SocketAddr>>>,
}

/// Reads `DNS_Nameservers`: addresses with an optional port (`127.0.0.1:5353`, `[::1]:53`,
/// `::1`); port 53 where none is written.
pub fn read_nameservers(name: &str, v: &Value) -> Read<Vec<SocketAddr>> {
    let items = value::scalar_list(name, v)?;
    if items.is_empty() {
        return Err(Diagnostic::error(
            v.origin,
            format!("`{name}` needs at least one server"),
        ));
    }
    items
        .into_iter()
        .map(|(item, origin)| {
            item.parse::<SocketAddr>()
                .ok()
                .or_else(|| item.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
                .filter(|a| a.port() != 0)
                .ok_or_else(|| {
                    Diagnostic::error(
                        origin,
                        format!(
                            "`{item}` is not a name server address (`192.0.2.53`, `127.0.0.1:5353`, `[::1]:53`)"
                        ),
                    )
                })
        })
        .collect()
}
