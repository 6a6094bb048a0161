//! The metrics endpoint: `GET /metrics` over HTTP/1.1 on each `Prometheus_Listener` Listen.
//!
//! A scraper needs one resource, so this is a small responder rather than a web framework:
//! GET and HEAD of `/metrics`, keep-alive as RFC 9112 sets it (HTTP/1.1 persistent unless
//! `Connection: close`; HTTP/1.0 only on `Connection: keep-alive`), and a clear status for
//! everything else (400 malformed, 404 another path, 405 another method, 408 a request head
//! not finished in time, 431 a head over [`MAX_HEAD`], 505 another HTTP version, 503 past
//! [`MAX_CONNECTIONS`]). A request with a body is answered and its connection closed, so
//! body bytes are never read as a next request.

use super::Metrics;
use crate::model::Config;
use crate::model::addr::ListenAddr;
use crate::{log_error, log_info};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};

/// The longest request head (request line and headers) read; a scraper sends a few hundred
/// bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a request head may take to arrive, the wait on a kept-alive connection included.
/// Prometheus scrapes every 15-60 s and reconnects when it finds a connection closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to read a response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once over all the endpoints; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 16;

/// A bound endpoint socket, not yet served.
pub struct Bound {
    /// The Listen's address as configured: what identifies it across reloads.
    pub addr: ListenAddr,
    socket: std::net::TcpListener,
    /// The address actually bound (with the port the kernel chose for `:0`).
    pub local: String,
}

/// The endpoints serving now, and the metrics they serve. The daemon owns it for its life.
pub struct Exporter {
    metrics: Arc<Metrics>,
    running: HashMap<ListenAddr, (String, oneshot::Sender<()>)>,
    slots: Arc<Semaphore>,
}

impl Exporter {
    pub fn new(metrics: Arc<Metrics>) -> Exporter {
        Exporter {
            metrics,
            running: HashMap::new(),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Binds the enabled endpoints of `config` that are not serving yet: all of them at start,
    /// while still privileged (as the SMTP Listens are); the new ones at a reload.
    pub fn bind_new(&self, config: &Config) -> Result<Vec<Bound>, String> {
        let mut bound = Vec::new();
        for addr in wanted(config) {
            if self.running.contains_key(addr) {
                continue;
            }
            let socket = bind(addr)
                .map_err(|e| format!("Prometheus_Listener Listen \"{addr}\": cannot bind: {e}"))?;
            let local = match addr {
                ListenAddr::Any { ipv6_only, .. } => ListenAddr::Any {
                    port: socket.local_addr().map_or(0, |a| a.port()),
                    ipv6_only: *ipv6_only,
                }
                .to_string(),
                _ => socket
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            };
            bound.push(Bound {
                addr: addr.clone(),
                socket,
                local,
            });
        }
        Ok(bound)
    }

    /// Serves `added` and stops the endpoints `config` no longer has; counting is on while any
    /// endpoint is. Call inside the runtime that is to serve them.
    pub fn apply(&mut self, config: &Config, added: Vec<Bound>) {
        let wanted: Vec<&ListenAddr> = wanted(config).collect();
        self.running.retain(|addr, (local, _)| {
            let keep = wanted.contains(&addr);
            if !keep {
                log_info!(
                    "no longer serving metrics on {local} (Prometheus_Listener Listen \"{addr}\")"
                );
            }
            // Dropping the sender stops that endpoint's accept loop.
            keep
        });
        for b in added {
            match TcpListener::from_std(b.socket) {
                Ok(listener) => {
                    log_info!(
                        "serving metrics on {} (Prometheus_Listener Listen \"{}\")",
                        b.local,
                        b.addr
                    );
                    let (stop, stopped) = oneshot::channel();
                    tokio::spawn(accept_loop(
                        listener,
                        self.metrics.clone(),
                        self.slots.clone(),
                        stopped,
                    ));
                    self.running.insert(b.addr, (b.local, stop));
                }
                Err(e) => log_error!("metrics on {}: {e}", b.local),
            }
        }
        self.metrics.set_enabled(!self.running.is_empty());
    }
}

fn wanted(config: &Config) -> impl Iterator<Item = &ListenAddr> {
    config
        .prometheus_listener
        .iter()
        .flat_map(|p| p.enabled_listens())
}

fn tcp(sa: SocketAddr, v6_only: Option<bool>) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(only) = v6_only {
        s.set_only_v6(only)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&sa.into())?;
    s.listen(64)?;
    Ok(s.into())
}

/// The model admits TCP addresses only here (a scraper cannot reach a Unix socket).
fn bind(addr: &ListenAddr) -> io::Result<std::net::TcpListener> {
    match addr {
        ListenAddr::Any {
            port,
            ipv6_only: false,
        } => tcp(
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port)),
            Some(false),
        )
        .or_else(|_| tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port)), None)),
        ListenAddr::Any {
            port,
            ipv6_only: true,
        } => tcp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port)), Some(true)),
        ListenAddr::Ip { ip, port } => {
            tcp(SocketAddr::new(*ip, *port), ip.is_ipv6().then_some(true))
        }
        ListenAddr::Unix(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a TCP address",
        )),
    }
}

async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stopped => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors: back off instead of spinning.
                log_error!("metrics accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    serve(stream, &metrics).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    let r = Response::status(503, "Too many connections to the metrics endpoint\n");
                    let _ = send(&mut stream, &r.bytes()).await;
                });
            }
        }
    }
}

/// One connection: requests answered in turn until the client or a reply closes it.
async fn serve(mut stream: TcpStream, metrics: &Metrics) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let response = match read_head(&mut stream, &mut buf).await {
            Ok(None) => return,
            Ok(Some(len)) => {
                let parsed = parse(&buf[..len]);
                buf.drain(..len);
                match parsed {
                    Ok(request) => answer(&request, metrics),
                    Err(status) => Response::error(status),
                }
            }
            Err(status) => Response::error(status),
        };
        if send(&mut stream, &response.bytes()).await.is_err() || !response.keep_alive {
            return;
        }
    }
}

async fn send(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Reads until `buf` holds a whole request head; returns its length. `Ok(None)`: the client
/// closed, or stayed silent, between requests. `Err`: the status to answer before closing.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>, u16> {
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    let mut chunk = [0u8; 2048];
    loop {
        // RFC 9112 §2.2: empty lines before a request line are ignored.
        let blank = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        buf.drain(..blank);
        if let Some(len) = head_len(buf) {
            return Ok(Some(len));
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) if buf.is_empty() => return Ok(None),
            Err(_) => return Err(408),
            Ok(Ok(0) | Err(_)) => return Ok(None),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Where the head ends: after the first empty line (CRLF CRLF, or bare LFs).
fn head_len(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let nl = from + i;
        match buf.get(nl + 1..nl + 3) {
            Some([b'\n', _]) => return Some(nl + 2),
            Some([b'\r', b'\n']) => return Some(nl + 3),
            _ if buf.get(nl + 1) == Some(&b'\n') => return Some(nl + 2),
            _ => {}
        }
        from = nl + 1;
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    target: String,
    /// HTTP/1.x: `x`.
    minor: u8,
    close: bool,
    keep_alive: bool,
    has_body: bool,
}

/// Parses a request head; `Err` is the status it earns.
fn parse(head: &[u8]) -> Result<Request, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().ok_or(400u16)?;
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !is_token(method) || target.is_empty() || target.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(400);
    }
    let minor = match version.strip_prefix("HTTP/") {
        Some("1.1") => 1,
        Some("1.0") => 0,
        Some(v) if v.len() == 3 && v.as_bytes()[1] == b'.' => return Err(505),
        Some(v) if v.len() == 1 && v.as_bytes()[0].is_ascii_digit() => return Err(505),
        _ => return Err(400),
    };
    let mut request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        minor,
        close: false,
        keep_alive: false,
        has_body: false,
    };
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        // Obsolete line folding is refused (RFC 9112 §5.2).
        if line.starts_with([' ', '\t']) {
            return Err(400);
        }
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        if !is_token(name) {
            return Err(400);
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                request.close |= option.eq_ignore_ascii_case("close");
                request.keep_alive |= option.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.parse().map_err(|_| 400u16)?;
            if length.is_some_and(|l| l != n) {
                return Err(400);
            }
            length = Some(n);
            request.has_body |= n > 0;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            request.has_body = true;
        }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in 1.0.
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(400);
    }
    Ok(request)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The path of a request target, in origin form (`/metrics?x` or `http://host/metrics`).
fn path(target: &str) -> &str {
    let after_authority = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            target
                .get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .map(|_| &target[scheme.len()..])
        })
        .map(|rest| rest.find('/').map_or("/", |i| &rest[i..]));
    let p = after_authority.unwrap_or(target);
    p.split(['?', '#']).next().unwrap_or(p)
}

fn answer(request: &Request, metrics: &Metrics) -> Response {
    let keep_alive =
        !request.has_body && !request.close && (request.minor == 1 || request.keep_alive);
    let head_only = request.method == "HEAD";
    let mut response = if request.method != "GET" && !head_only {
        let mut r = Response::status(405, "Only GET and HEAD are served here\n");
        r.allow = true;
        r
    } else if path(&request.target) == "/metrics" {
        Response {
            code: 200,
            content_type: prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            body: metrics.encode().into_bytes(),
            keep_alive,
            head_only,
            allow: false,
            http10_keep_alive: false,
        }
    } else {
        Response::status(404, "Not found: the metrics are at /metrics\n")
    };
    response.keep_alive = keep_alive;
    response.head_only = head_only;
    response.http10_keep_alive = keep_alive && request.minor == 0;
    response
}

struct Response {
    code: u16,
    content_type: &'static str,
    body: Vec<u8>,
    keep_alive: bool,
    head_only: bool,
    /// `Allow: GET, HEAD` (with a 405).
    allow: bool,
    /// An HTTP/1.0 client asked to keep the connection: say it is kept.
    http10_keep_alive: bool,
}

impl Response {
    fn status(code: u16, text: &str) -> Response {
        Response {
            code,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
            keep_alive: false,
            head_only: false,
            allow: false,
            http10_keep_alive: false,
        }
    }

    /// A request that could not be read as one: answered, and the connection closed.
    fn error(code: u16) -> Response {
        let text = match code {
            408 => "The request took too long to arrive\n",
            431 => "Request header fields too large\n",
            505 => "Only HTTP/1.0 and HTTP/1.1 are served here\n",
            _ => "Bad request\n",
        };
        Response::status(code, text)
    }

    fn reason(&self) -> &'static str {
        match self.code {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Error",
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.code,
            self.reason(),
            crate::date::http_date(std::time::SystemTime::now()),
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        if !self.keep_alive {
            out.push_str("Connection: close\r\n");
        } else if self.http10_keep_alive {
            out.push_str("Connection: keep-alive\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Request, u16> {
        parse(text.as_bytes())
    }

    #[test]
    fn request_heads() {
        let r = req("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.minor, r.close), ("GET", 1, true));
        let r = req("GET /metrics HTTP/1.0\nConnection: keep-alive\n\n").unwrap();
        assert!(r.keep_alive && !r.close && r.minor == 0);
        assert_eq!(req("GET /metrics HTTP/1.1\r\n\r\n"), Err(400), "no Host");
        assert_eq!(
            req("GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(400)
        );
        assert_eq!(req("GET /metrics HTTP/2.0\r\n\r\n"), Err(505));
        assert_eq!(req("GET /metrics\r\n\r\n"), Err(400));
        assert_eq!(req("GET  /metrics HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(
            req("GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"),
            Err(400)
        );
        assert_eq!(req("GET /metrics HTTP/1.1\r\nHost x\r\n\r\n"), Err(400));
        assert!(
            req("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .has_body
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Err(400)
        );
        assert_eq!(req("GET /\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n"), Err(400));
    }

    #[test]
    fn heads_end_at_the_first_empty_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"), Some(27));
        assert_eq!(head_len(b"GET / HTTP/1.0\n\nrest"), Some(16));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn paths_of_targets() {
        assert_eq!(path("/metrics"), "/metrics");
        assert_eq!(path("/metrics?name[]=x"), "/metrics");
        assert_eq!(path("http://127.0.0.1:9/metrics"), "/metrics");
        assert_eq!(path("HTTP://h"), "/");
        assert_eq!(path("*"), "*");
    }
}
