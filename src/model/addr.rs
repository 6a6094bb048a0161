//! Addresses as the configuration writes them: CIDR blocks (`relay_hosts`, `Peer`), listen
//! addresses (`Listen ":25"`), and `host[:port]` next hops (`smtp_auth_proxy host`, `Gateway`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// An address block. A bare address is a single host (/32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix: u8,
}

/// Why a CIDR did not parse; the caller words the message for its option.
#[derive(Debug, PartialEq, Eq)]
pub enum CidrError {
    /// Looks like a host name: relay_hosts has refused those since Momentum ticket #431.
    HostName,
    Invalid,
    /// Parsed, but with bits set below the prefix (`10.0.0.1/8`); the masked block is attached.
    HostBits(Cidr),
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = match addr.parse() {
            Ok(ip) => ip,
            Err(_) if is_hostname(addr) && addr.chars().any(|c| c.is_ascii_alphabetic()) => {
                return Err(CidrError::HostName);
            }
            Err(_) => return Err(CidrError::Invalid),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(CidrError::Invalid),
            },
        };
        let network = mask(ip, prefix);
        let cidr = Cidr { network, prefix };
        if network != ip {
            return Err(CidrError::HostBits(cidr));
        }
        Ok(cidr)
    }

    /// Whether `ip` is in the block. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as a
    /// dual-stack socket reports IPv4 clients) match IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.network
            }
            _ => false,
        }
    }

    /// Whether the block covers every address of its family (`0.0.0.0/0`, `::/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// RFC 1123 host name syntax (letters, digits, `-`, dots between labels); `_` is tolerated
/// because internal names use it.
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// `localhost` or a loopback address (bracketed or not): a connection that never leaves the
/// machine.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Where a `Listen` scope accepts connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// `":25"` or `"*:25"`: every address; `"[*]:25"` / `"[::]:25"`: every IPv6 address.
    Any {
        port: u16,
        ipv6_only: bool,
    },
    Ip {
        ip: IpAddr,
        port: u16,
    },
    /// `"/tmp/2025"`: a Unix-domain socket.
    Unix(PathBuf),
}

impl ListenAddr {
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        if s.starts_with('/') {
            return Ok(ListenAddr::Unix(PathBuf::from(s)));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err("expected `address:port`, `:port` or a Unix socket path".into());
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{port}` is not a port number (0-65535)"))?;
        match host {
            "" | "*" => Ok(ListenAddr::Any {
                port,
                ipv6_only: false,
            }),
            "[*]" | "[::]" => Ok(ListenAddr::Any {
                port,
                ipv6_only: true,
            }),
            _ => {
                let inner = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                match inner.parse::<IpAddr>() {
                    Ok(IpAddr::V6(_)) if !host.starts_with('[') => {
                        Err("an IPv6 address in Listen must be in brackets: `[::1]:25`".into())
                    }
                    Ok(ip) if ip.is_unspecified() => Ok(ListenAddr::Any {
                        port,
                        ipv6_only: ip.is_ipv6(),
                    }),
                    Ok(ip) => Ok(ListenAddr::Ip { ip, port }),
                    Err(_) => Err(format!(
                        "`{host}` is not an IP address (Listen binds addresses, not host names)"
                    )),
                }
            }
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Any {
                port,
                ipv6_only: false,
            } => write!(f, "*:{port}"),
            ListenAddr::Any {
                port,
                ipv6_only: true,
            } => write!(f, "[::]:{port}"),
            ListenAddr::Ip {
                ip: IpAddr::V6(ip),
                port,
            } => write!(f, "[{ip}]:{port}"),
            ListenAddr::Ip { ip, port } => write!(f, "{ip}:{port}"),
            ListenAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A host to connect to, with a port: `mx.example.com`, `10.0.0.5:2525`, `[2001:db8::1]:25`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; `default_port`
    /// fills in a missing port.
    pub fn parse(s: &str, default_port: u16) -> Result<HostPort, String> {
        if let Some(rest) = s.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: `[` without `]`"))?;
            addr.parse::<Ipv6Addr>()
                .map_err(|_| format!("`{addr}` is not an IPv6 address"))?;
            let port = match after {
                "" => default_port,
                p => parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("`{s}`: expected `:port` after `]`"))?,
                )?,
            };
            return Ok(HostPort {
                host: addr.to_owned(),
                port,
            });
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return Ok(HostPort {
                host: s.to_owned(),
                port: default_port,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p)?),
            None => (s, default_port),
        };
        if !is_hostname(host) && host.parse::<Ipv4Addr>().is_err() {
            return Err(format!("`{host}` is not a host name or IP address"));
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{p}` is not a port number (1-65535)")),
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_forms() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.200.1.1")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped client");
        let host = Cidr::parse("192.0.2.7").unwrap();
        assert_eq!(host.prefix, 32);
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("fd82:7796:815b:af9d::").unwrap();
        assert_eq!(v6.prefix, 128);
        let net6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(net6.contains(ip("2001:db8:1::5")) && !net6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().is_everything());
        assert_eq!(Cidr::parse("foo.com"), Err(CidrError::HostName));
        assert_eq!(Cidr::parse("10.0.0.0/33"), Err(CidrError::Invalid));
        assert_eq!(
            Cidr::parse("10.0.0.1/8"),
            Err(CidrError::HostBits(Cidr::parse("10.0.0.0/8").unwrap()))
        );
    }

    #[test]
    fn listen_forms() {
        let any = ListenAddr::Any {
            port: 25,
            ipv6_only: false,
        };
        assert_eq!(ListenAddr::parse(":25").unwrap(), any);
        assert_eq!(ListenAddr::parse("*:25").unwrap(), any);
        assert_eq!(
            ListenAddr::parse("[*]:25").unwrap(),
            ListenAddr::parse("[::]:25").unwrap()
        );
        assert_eq!(
            ListenAddr::parse("[::1]:2525").unwrap(),
            ListenAddr::Ip {
                ip: ip("::1"),
                port: 2525
            }
        );
        assert_eq!(
            ListenAddr::parse("/tmp/2025").unwrap(),
            ListenAddr::Unix("/tmp/2025".into())
        );
        assert!(ListenAddr::parse("::1:25").is_err());
        assert!(ListenAddr::parse("mail.example.com:25").is_err());
        assert!(ListenAddr::parse("127.0.0.1").is_err());
        assert!(ListenAddr::parse("127.0.0.1:99999").is_err());
    }

    #[test]
    fn host_port_forms() {
        let hp = |s| HostPort::parse(s, 25);
        assert_eq!(
            hp("some.smtp.server").unwrap().to_string(),
            "some.smtp.server:25"
        );
        assert_eq!(hp("10.0.0.5:2525").unwrap().to_string(), "10.0.0.5:2525");
        assert_eq!(
            hp("[2001:db8::1]:587").unwrap().to_string(),
            "[2001:db8::1]:587"
        );
        assert_eq!(hp("2001:db8::1").unwrap().to_string(), "[2001:db8::1]:25");
        assert!(hp("bad host").is_err());
        assert!(hp("host:0").is_err());
        assert!(hp("[::1").is_err());
    }
}
