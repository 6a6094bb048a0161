//! Host names of next hops and upstreams, resolved through the system resolver and kept for a
//! minute: a busy proxy would otherwise ask for the same name on every login, each time on a
//! blocking thread. An address literal needs no lookup at all.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer is reused. The system resolver does not tell the record's TTL; a minute
/// bounds how stale a changed upstream address can be.
pub const TTL: Duration = Duration::from_secs(60);
/// Names kept at most (a datasource can name many upstreams).
const MAX_NAMES: usize = 4096;

type Answers = HashMap<(String, u16), (Vec<SocketAddr>, Instant)>;

fn cache() -> &'static Mutex<Answers> {
    static CACHE: std::sync::OnceLock<Mutex<Answers>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let key = (host.to_ascii_lowercase(), port);
    let now = Instant::now();
    if let Some((addrs, at)) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && now.duration_since(*at) < TTL
    {
        return Ok(addrs.clone());
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let mut c = cache().lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= MAX_NAMES {
        c.retain(|_, (_, at)| now.duration_since(*at) < TTL);
        if c.len() >= MAX_NAMES {
            c.clear();
        }
    }
    c.insert(key, (addrs.clone(), now));
    Ok(addrs)
}
