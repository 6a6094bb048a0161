//! The PROXY protocol header (HAProxy's spec, versions 1 and 2), read before the SMTP greeting
//! on a `Listen` with `Proxy_Protocol = true`.
//!
//! The decoder is incremental and does no I/O: give it the bytes received so far, and it says
//! whether it needs more, found a header (and how many bytes it used), or found garbage. Momentum
//! drops a connection without a valid header without sending a banner, so every error is final.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes including CRLF.
const V1_MAX: usize = 107;
/// Bound on a v2 header (16-byte fixed part + payload): the longest address block is 216 bytes
/// (Unix); TLVs may follow, but nothing useful to an SMTP edge needs more than this.
const V2_MAX_PAYLOAD: usize = 1024;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address as the proxy saw it; `None` for `LOCAL` (health checks) and
    /// `UNKNOWN`, where the connection's own address stands.
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

impl ProxyHeader {
    /// No addresses from the proxy (`UNKNOWN`, `LOCAL`, Unix or UDP): the connection's own stand.
    pub const UNKNOWN: ProxyHeader = ProxyHeader {
        source: None,
        destination: None,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Not enough bytes yet to decide.
    Incomplete,
    /// A header, and the number of bytes it took (the SMTP stream starts after them).
    Header(ProxyHeader, usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHeader(pub &'static str);

impl std::fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid PROXY protocol header: {}", self.0)
    }
}

/// Decodes a v1 or v2 header at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded, InvalidHeader> {
    let common = buf.len().min(V2_SIGNATURE.len());
    if buf[..common] == V2_SIGNATURE[..common] {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(Decoded::Incomplete);
        }
        return decode_v2(buf);
    }
    let common = buf.len().min(6);
    if buf[..common] == b"PROXY "[..common] {
        return decode_v1(buf);
    }
    Err(InvalidHeader("no PROXY signature"))
}

fn decode_v1(buf: &[u8]) -> Result<Decoded, InvalidHeader> {
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(InvalidHeader("v1 line longer than 107 bytes"))
        } else {
            Ok(Decoded::Incomplete)
        };
    };
    let line = buf[..end]
        .strip_suffix(b"\r")
        .ok_or(InvalidHeader("v1 line does not end in CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| InvalidHeader("v1 line is not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let header = match fields.next() {
        Some("UNKNOWN") => ProxyHeader::UNKNOWN,
        Some(proto @ ("TCP4" | "TCP6")) => {
            let parts: Vec<&str> = fields.collect();
            let [src, dst, sport, dport] = parts[..] else {
                return Err(InvalidHeader("v1 needs source, destination and two ports"));
            };
            let ip = |s: &str| -> Result<IpAddr, InvalidHeader> {
                let ip: IpAddr = s.parse().map_err(|_| InvalidHeader("v1 address"))?;
                if ip.is_ipv4() != (proto == "TCP4") {
                    return Err(InvalidHeader("v1 address family does not match"));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, InvalidHeader> {
                // No leading zeros or signs: the spec's ports are plain decimal.
                if s.is_empty()
                    || (s.len() > 1 && s.starts_with('0'))
                    || !s.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(InvalidHeader("v1 port"));
                }
                s.parse().map_err(|_| InvalidHeader("v1 port"))
            };
            ProxyHeader {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => return Err(InvalidHeader("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Decoded::Header(header, end + 1))
}

fn decode_v2(buf: &[u8]) -> Result<Decoded, InvalidHeader> {
    if buf.len() < 16 {
        return Ok(Decoded::Incomplete);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(InvalidHeader("v2 version is not 2"));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(InvalidHeader("v2 header too long"));
    }
    if buf.len() < 16 + len {
        return Ok(Decoded::Incomplete);
    }
    let payload = &buf[16..16 + len];
    let header = match version_command & 0x0f {
        // LOCAL: the proxy's own connection (a health check); use the real addresses.
        0 => ProxyHeader::UNKNOWN,
        1 => match family {
            0x11 => {
                let a: [u8; 12] = payload
                    .get(..12)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(InvalidHeader("v2 IPv4 addresses truncated"))?;
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(ip(0), port(8))),
                    destination: Some(SocketAddr::new(ip(4), port(10))),
                }
            }
            0x21 => {
                let a = payload
                    .get(..36)
                    .ok_or(InvalidHeader("v2 IPv6 addresses truncated"))?;
                let ip = |o: usize| {
                    let b: [u8; 16] = a[o..o + 16].try_into().expect("16 bytes");
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(ip(0), port(32))),
                    destination: Some(SocketAddr::new(ip(16), port(34))),
                }
            }
            // UNSPEC, Unix sockets, UDP: no client IP to take; the connection's own stands.
            0x00 | 0x31 | 0x32 | 0x12 | 0x22 => ProxyHeader::UNKNOWN,
            _ => return Err(InvalidHeader("v2 address family")),
        },
        _ => return Err(InvalidHeader("v2 command is not LOCAL or PROXY")),
    };
    Ok(Decoded::Header(header, 16 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn v1_forms() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n";
        assert_eq!(
            decode(h).unwrap(),
            Decoded::Header(
                ProxyHeader {
                    source: sa("192.0.2.1:56324"),
                    destination: sa("198.51.100.2:25")
                },
                44
            )
        );
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1024 587\r\n";
        assert!(
            matches!(decode(h6).unwrap(), Decoded::Header(ProxyHeader { source: Some(s), .. }, 45) if s.port() == 1024)
        );
        assert_eq!(
            decode(b"PROXY UNKNOWN\r\n").unwrap(),
            Decoded::Header(ProxyHeader::UNKNOWN, 15)
        );
        for partial in [&b"PRO"[..], b"PROXY TCP4 192.0.2.1"] {
            assert_eq!(decode(partial).unwrap(), Decoded::Incomplete);
        }
        for bad in [
            &b"EHLO example.com\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 25\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 25\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 25\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 25\r\n",
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(
            decode(&[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(20)).is_err(),
            "no newline in 107 bytes"
        );
    }

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.extend([0x20 | command, family]);
        v.extend((payload.len() as u16).to_be_bytes());
        v.extend(payload);
        v
    }

    #[test]
    fn v2_forms() {
        let mut p4 = vec![192, 0, 2, 1, 198, 51, 100, 2];
        p4.extend(56324u16.to_be_bytes());
        p4.extend(25u16.to_be_bytes());
        p4.extend([0x04, 0x00, 0x01, 0x00]); // a TLV, skipped
        let h = v2(1, 0x11, &p4);
        assert_eq!(
            decode(&h).unwrap(),
            Decoded::Header(
                ProxyHeader {
                    source: sa("192.0.2.1:56324"),
                    destination: sa("198.51.100.2:25")
                },
                h.len()
            )
        );
        let mut p6 = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        p6.extend("2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p6.extend([0, 80, 0, 25]);
        assert!(
            matches!(decode(&v2(1, 0x21, &p6)).unwrap(), Decoded::Header(ProxyHeader { source: Some(s), .. }, 52) if s.port() == 80)
        );
        assert_eq!(
            decode(&v2(0, 0x00, &[])).unwrap(),
            Decoded::Header(ProxyHeader::UNKNOWN, 16)
        );
        for n in 0..h.len() {
            assert_eq!(
                decode(&h[..n]).unwrap(),
                Decoded::Incomplete,
                "prefix of {n} bytes"
            );
        }
        assert!(
            decode(&v2(1, 0x11, &[1, 2, 3])).is_err(),
            "truncated addresses"
        );
        assert!(decode(&v2(2, 0x11, &p4)).is_err(), "bad command");
        assert!(decode(&v2(1, 0x41, &p4)).is_err(), "bad family");
        let mut wrong_version = v2(1, 0x11, &p4);
        wrong_version[12] = 0x11;
        assert!(decode(&wrong_version).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(decode(&huge).is_err(), "length bound");
    }
}
