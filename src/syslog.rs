//! A syslog sender (RFC 3164 over the local `/dev/log` datagram socket) that survives a
//! syslogd restart: on a failed send it reconnects once and retries. The `syslog` crate keeps
//! its first socket forever, which is why it is not used.
//!
//! `SMTP_AUTH_PROXY_SYSLOG` names another socket path (tests use their own listener).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Facility `mail` (RFC 5424 table 1), as Momentum's logs go.
pub const FACILITY_MAIL: u8 = 2;

/// A facility by its syslog name (`mail`, `daemon`, `local0` … `local7`, …).
pub fn facility(name: &str) -> Option<u8> {
    const NAMES: [&str; 12] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp",
    ];
    let name = name.to_ascii_lowercase();
    if let Some(n) = name.strip_prefix("local") {
        return n.parse::<u8>().ok().filter(|&n| n < 8).map(|n| 16 + n);
    }
    NAMES.iter().position(|&f| f == name).map(|i| i as u8)
}
pub const SEVERITY_INFO: u8 = 6;

pub struct Syslog {
    path: PathBuf,
    ident: String,
    pid: u32,
    socket: Mutex<Link>,
}

/// The connection to syslogd, or when to try for one again.
#[derive(Default)]
struct Link {
    socket: Option<UnixDatagram>,
    /// After a failed connect (no syslogd), none is tried before this: a machine without
    /// one would otherwise pay two sockets and two connects per line.
    retry_at: Option<Instant>,
}

/// How long a failed connect is not tried again.
const RETRY_AFTER: Duration = Duration::from_millis(200);

impl Syslog {
    pub fn new(ident: &str, pid: u32) -> Syslog {
        let path = std::env::var_os("SMTP_AUTH_PROXY_SYSLOG")
            .map_or_else(|| PathBuf::from("/dev/log"), PathBuf::from);
        Syslog {
            path,
            ident: ident.to_owned(),
            pid,
            socket: Mutex::new(Link::default()),
        }
    }

    /// Sends one message; returns false when no syslog daemon took it (the caller may log it
    /// elsewhere so that nothing is lost).
    pub fn send(&self, facility: u8, severity: u8, message: &str) -> bool {
        let mut link = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        // While no syslogd is there, a line is not even formatted.
        if link.socket.is_none() && link.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let line = format!(
            "<{}>{} {}[{}]: {message}",
            u16::from(facility) * 8 + u16::from(severity),
            timestamp(),
            self.ident,
            self.pid
        );
        for _ in 0..2 {
            if link.socket.is_none() {
                if link.retry_at.is_some_and(|t| Instant::now() < t) {
                    return false;
                }
                link.socket = UnixDatagram::unbound()
                    .and_then(|s| s.connect(&self.path).map(|()| s))
                    .ok();
                link.retry_at = link.socket.is_none().then(|| Instant::now() + RETRY_AFTER);
            }
            match link.socket.as_ref().map(|s| s.send(line.as_bytes())) {
                Some(Ok(_)) => return true,
                // syslogd restarted (or was never there): reconnect and try once more.
                _ => link.socket = None,
            }
        }
        false
    }
}

/// `Nov 24 09:05:03`, RFC 3164's timestamp, in UTC.
fn timestamp() -> String {
    let date = crate::date::rfc5322_date(std::time::SystemTime::now());
    // "Tue, 24 Nov 2026 09:05:03 +0000" -> "Nov 24 09:05:03"
    let parts: Vec<&str> = date.split(' ').collect();
    match parts.as_slice() {
        [_, day, month, _, time, _] => format!("{month} {day:>2} {time}"),
        _ => date,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn facility_names() {
        assert_eq!(super::facility("mail"), Some(2));
        assert_eq!(super::facility("LOCAL7"), Some(23));
        assert_eq!(super::facility("local8"), None);
        assert_eq!(super::facility("daemon"), Some(3));
    }
}
