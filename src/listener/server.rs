//! Sockets: one per enabled `Listen`, an accept loop each, and the start of every session
//! (PROXY header, implicit TLS, `Listener_Sessions`) before the greeting.

use super::Runtime;
use super::connection::Connection;
use super::proxy_protocol::{self, Decoded};
use super::scope::ClientScope;
use super::session::{ClientAddr, Session};
use super::starttls::handshake;
use super::{control, shutdown};
use crate::model::addr::ListenAddr;
use crate::model::listener::{EsmtpListener, Peer, PeerRef};
use crate::model::value::Spanned;
use crate::net::{BoxIo, Prefixed};
use crate::{log_debug, log_error, log_info};
use socket2::{Domain, Protocol, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Momentum's `Listen_Backlog` default.
const LISTEN_BACKLOG: i32 = 500;

/// A bound socket, not yet registered with a runtime (each serving thread registers its own).
pub enum Socket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// A bound `Listen`.
pub struct Bound {
    /// Index into the listener's `listens` (of the configuration that bound it).
    pub listen: usize,
    /// The Listen's address as configured: what identifies it across reloads.
    pub addr: ListenAddr,
    pub socket: Socket,
    /// The address actually bound (with the port the kernel chose for `:0`).
    pub local: String,
}

/// `Listener_Sessions`, shared by every serving thread. Outside a Peer it is one budget per
/// Listen (its own value, else the listener's); in a Peer it is one more budget, for the
/// clients that Peer matches, on top of the Listen's: Momentum's example gives the listener
/// a ceiling and each Peer a share of it. A Peer's budget belongs to its scope, so a
/// listener-level Peer's is shared by all the Listens.
#[derive(Default)]
pub struct SessionCaps {
    listens: Vec<Option<Cap>>,
    /// Per Listen, per Peer of that Listen (`listen.peers` order).
    listen_peers: Vec<Vec<Option<Cap>>>,
    /// Per Peer of the listener (`listener.peers` order).
    listener_peers: Vec<Option<Cap>>,
}

struct Cap {
    limit: u32,
    slots: Arc<Semaphore>,
}

impl Cap {
    fn new(limit: Option<&Spanned<u32>>) -> Option<Cap> {
        limit.map(|n| Cap {
            limit: n.value,
            slots: Arc::new(Semaphore::new(n.value as usize)),
        })
    }

    /// A slot, held until dropped; `None` when every slot is taken.
    fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

impl SessionCaps {
    pub fn new(listener: &EsmtpListener) -> SessionCaps {
        let peers = |peers: &[Peer]| {
            peers
                .iter()
                .map(|p| Cap::new(p.settings.listener_sessions.as_ref()))
                .collect()
        };
        SessionCaps {
            listens: listener
                .listens
                .iter()
                .map(|l| {
                    Cap::new(
                        l.settings
                            .listener_sessions
                            .as_ref()
                            .or(listener.settings.listener_sessions.as_ref()),
                    )
                })
                .collect(),
            listen_peers: listener.listens.iter().map(|l| peers(&l.peers)).collect(),
            listener_peers: peers(&listener.peers),
        }
    }

    /// The Listen's own budget, if it has one.
    pub fn listen_limit(&self, listen: usize) -> Option<u32> {
        self.listens[listen].as_ref().map(|c| c.limit)
    }

    /// A slot in `listen`'s budget: `Ok(None)` when it has none, `Err` when it is full.
    fn listen_slot(&self, listen: usize) -> Result<Option<OwnedSemaphorePermit>, ()> {
        self.listens[listen]
            .as_ref()
            .map(|c| c.take().ok_or(()))
            .transpose()
    }

    /// A slot in the budget of the Peer a client at `ip` counts against, if any (a client
    /// without an address, on a Unix socket, matches no Peer). The error names the Peer.
    fn peer_slot(
        &self,
        listener: &EsmtpListener,
        listen: usize,
        ip: Option<IpAddr>,
    ) -> Result<Option<OwnedSemaphorePermit>, String> {
        let l = &listener.listens[listen];
        let Some(r) = ip.and_then(|ip| listener.session_cap_peer(l, ip)) else {
            return Ok(None);
        };
        let cap = match r {
            PeerRef::Listen(i) => &self.listen_peers[listen][i],
            PeerRef::Listener(i) => &self.listener_peers[i],
        };
        let cap = cap
            .as_ref()
            .expect("session_cap_peer picks a Peer with a cap");
        match cap.take() {
            Some(slot) => Ok(Some(slot)),
            None => Err(format!("Peer \"{}\"", listener.peer(l, r).cidr.value)),
        }
    }
}

/// Binds every enabled Listen, before privileges are dropped.
pub fn bind_all(rt: &Runtime) -> Result<Vec<Bound>, String> {
    bind_where(rt, |_| true)
}

/// Binds the enabled Listens whose address `wanted` accepts (a reload binds the new ones).
pub fn bind_where(
    rt: &Runtime,
    wanted: impl Fn(&ListenAddr) -> bool,
) -> Result<Vec<Bound>, String> {
    let listener = rt.listener();
    let mut bound = Vec::new();
    for (i, listen) in listener.listens.iter().enumerate() {
        if !listener.enabled(listen) || !wanted(&listen.address.value) {
            continue;
        }
        let addr = &listen.address.value;
        let socket = bind(addr).map_err(|e| format!("Listen \"{addr}\": cannot bind: {e}"))?;
        // As Momentum's acctlog writes it (`*:25`), with the port the kernel chose for `:0`.
        let local = match (&socket, addr) {
            (Socket::Tcp(l), ListenAddr::Any { ipv6_only, .. }) => ListenAddr::Any {
                port: l.local_addr().map_or(0, |a| a.port()),
                ipv6_only: *ipv6_only,
            }
            .to_string(),
            (Socket::Tcp(l), _) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            (Socket::Unix(_), _) => addr.to_string(),
        };
        bound.push(Bound {
            listen: i,
            addr: addr.clone(),
            socket,
            local,
        });
    }
    Ok(bound)
}

/// Sockets for one more serving thread: each TCP Listen bound again to the same address with
/// SO_REUSEPORT, so the kernel spreads new connections over the threads with no thundering
/// herd. A Unix socket cannot be shared that way and stays with the first thread.
pub fn bind_again(bound: &[Bound]) -> Result<Vec<Bound>, String> {
    let mut more = Vec::new();
    for b in bound {
        let Socket::Tcp(l) = &b.socket else { continue };
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let v6_only = match addr {
            SocketAddr::V6(_) => Some(tcp_only_v6(l)),
            SocketAddr::V4(_) => None,
        };
        let socket =
            tcp(addr, v6_only).map_err(|e| format!("{}: cannot bind again: {e}", b.local))?;
        more.push(Bound {
            listen: b.listen,
            addr: b.addr.clone(),
            socket,
            local: b.local.clone(),
        });
    }
    Ok(more)
}

fn tcp_only_v6(l: &std::net::TcpListener) -> bool {
    socket2::SockRef::from(l).only_v6().unwrap_or(true)
}

fn tcp(sa: SocketAddr, v6_only: Option<bool>) -> io::Result<Socket> {
    let s = socket2::Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(only) = v6_only {
        s.set_only_v6(only)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listening one (Linux), which saves a
    // system call per connection. Replies go out as whole lines; Nagle would hold each one
    // for the client's delayed ACK (~40 ms).
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&sa.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(Socket::Tcp(s.into()))
}

fn bind(addr: &ListenAddr) -> io::Result<Socket> {
    match addr {
        // `:25` / `*:25`: every address, IPv4 and IPv6 through one dual-stack socket; on a
        // host without IPv6, IPv4 only.
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
        ListenAddr::Unix(path) => {
            // A socket file left by an earlier run would make bind fail; anything else at
            // that path is not ours to remove.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    std::fs::remove_file(path)?;
                }
            }
            let l = std::os::unix::net::UnixListener::bind(path)?;
            l.set_nonblocking(true)?;
            Ok(Socket::Unix(l))
        }
    }
}

/// Says what is bound where.
pub fn announce(rt: &Runtime, bound: &[Bound], threads: usize) {
    for b in bound {
        log_info!(
            "listening on {} (Listen \"{}\"{}, {threads} thread{})",
            b.local,
            b.addr,
            rt.caps
                .listen_limit(b.listen)
                .map(|n| format!(", Listener_Sessions {n}"))
                .unwrap_or_default(),
            if threads == 1 { "" } else { "s" }
        );
    }
}

/// What a serving thread is told to do with its sockets.
pub enum Command {
    /// Accept on these (at start, and for Listens a reload added).
    Add(Vec<Bound>),
    /// Stop accepting on these (Listens a reload removed).
    Remove(Vec<ListenAddr>),
}

/// One serving thread's accept loops, added and removed as commands say, until the process
/// ends. Call inside that thread's runtime.
pub async fn serve(mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>) {
    let mut stops: std::collections::HashMap<ListenAddr, tokio::sync::oneshot::Sender<()>> =
        std::collections::HashMap::new();
    while let Some(command) = commands.recv().await {
        match command {
            Command::Add(bound) => {
                for b in bound {
                    let listener = match b.socket {
                        Socket::Tcp(l) => TcpListener::from_std(l).map(Listener::Tcp),
                        Socket::Unix(l) => UnixListener::from_std(l).map(Listener::Unix),
                    };
                    match listener {
                        Ok(l) => {
                            let (stop, stopped) = tokio::sync::oneshot::channel();
                            stops.insert(b.addr.clone(), stop);
                            tokio::spawn(accept_loop(b.addr, b.local, l, stopped));
                        }
                        Err(e) => log_error!("{}: {e}", b.local),
                    }
                }
            }
            Command::Remove(addrs) => {
                for a in addrs {
                    if let Some(stop) = stops.remove(&a) {
                        let _ = stop.send(());
                    }
                }
            }
        }
    }
    // The sessions on this thread's runtime must go on (dropping the runtime would cut them
    // off), so this never returns: the process ends when the drain is over.
    std::future::pending::<()>().await;
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

async fn accept_loop(
    addr: ListenAddr,
    local: String,
    socket: Listener,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut phase = shutdown::subscribe();
    loop {
        let accept = async {
            match &socket {
                Listener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                    let ip = crate::model::addr::canonical(peer.ip());
                    (
                        Box::new(s) as BoxIo,
                        ClientAddr {
                            ip: Some(ip),
                            port: Some(peer.port()),
                        },
                    )
                }),
                Listener::Unix(l) => l.accept().await.map(|(s, _)| {
                    (
                        Box::new(s) as BoxIo,
                        ClientAddr {
                            ip: None,
                            port: None,
                        },
                    )
                }),
            }
        };
        let accepted: io::Result<(BoxIo, ClientAddr)> = tokio::select! {
            a = accept => a,
            // Draining, or a reload removed this Listen: the socket closes with this loop.
            () = shutdown::reached(&mut phase, shutdown::Phase::Draining) => return,
            _ = &mut stopped => return,
        };
        let (io, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                log_error!("accept on {local}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // New sessions start under the configuration in force now.
        let Some(rt) = control::current() else {
            continue;
        };
        let Some(listen) = rt.listen_at(&addr) else {
            continue;
        };
        let Ok(permit) = rt.caps.listen_slot(listen) else {
            rt.listen_metrics[listen].refused();
            tokio::spawn(refuse(io, client, "Listen"));
            continue;
        };
        let local = local.clone();
        let guard = shutdown::SessionGuard::new();
        let counted = rt.listen_metrics[listen].session();
        tokio::spawn(async move {
            start(rt, listen, local, io, client).await;
            drop((permit, guard, counted));
        });
    }
}

/// Listener_Sessions of `whose` reached: a clean, retryable refusal, as Momentum words it.
async fn refuse(mut io: BoxIo, client: ClientAddr, whose: &str) {
    log_info!("refused {client}: Listener_Sessions of {whose} reached");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        io.write_all(b"421 4.4.5 Service unavailable, concurrency limit reached.\r\n")
            .await?;
        io.shutdown().await
    })
    .await;
}

/// Everything before the greeting: the PROXY header, then implicit TLS.
pub(crate) async fn start(
    rt: Arc<Runtime>,
    listen: usize,
    local: String,
    mut io: BoxIo,
    mut client: ClientAddr,
) {
    let listener = rt.listener();
    let mut prefix = Vec::new();
    if listener.proxy_protocol(&listener.listens[listen]) {
        let limit = listener.proxy_protocol_timeout(&listener.listens[listen]);
        match read_proxy_header(&mut io, limit).await {
            Ok((header, rest)) => {
                if let Some(src) = header.source {
                    client = ClientAddr {
                        ip: Some(crate::model::addr::canonical(src.ip())),
                        port: Some(src.port()),
                    };
                }
                prefix = rest;
            }
            Err(e) => {
                // Momentum drops such a connection without a banner.
                log_info!("connection from {client} dropped: {e}");
                return;
            }
        }
    }
    // A Peer's budget counts clients by the address the PROXY header gave, as Momentum's
    // concurrency accounting does; the slot is kept for the connection's life, whatever
    // XCLIENT says later.
    let _peer_slot = match rt.caps.peer_slot(listener, listen, client.ip) {
        Ok(slot) => slot,
        Err(peer) => {
            rt.listen_metrics[listen].refused();
            refuse(io, client, &peer).await;
            return;
        }
    };
    let scope = ClientScope::resolve(&rt, listen, client.ip);
    let mut tls = None;
    if scope.use_ssl {
        let Some(key) = scope.tls.as_ref() else {
            return;
        };
        let config = match rt.tls.get(key) {
            Ok(c) => c,
            Err(e) => {
                log_error!("Use_SSL for {client}: {e}");
                return;
            }
        };
        let handshake = handshake(config, io, std::mem::take(&mut prefix), scope.idle_time).await;
        rt.metrics
            .tls(crate::metrics::Tls::Implicit, handshake.is_ok());
        match handshake {
            Ok((s, info)) => {
                io = s;
                tls = Some(info);
            }
            Err(e) => {
                log_debug!("connection from {client}: {e}");
                return;
            }
        }
    } else if !prefix.is_empty() {
        io = Box::new(Prefixed::new(prefix, io));
    }
    let conn = Connection::new(io, scope.idle_time);
    let mut session = Session::new(rt.clone(), conn, listen, local, client, scope);
    if let Some(info) = tls {
        session.tls = Some(info);
        session.set_context("tls", "on");
    }
    session.run().await;
}

/// Reads a PROXY v1/v2 header, for at most `limit` (`None`: no limit); returns it and the
/// bytes that followed it.
async fn read_proxy_header(
    io: &mut BoxIo,
    limit: Option<Duration>,
) -> Result<(proxy_protocol::ProxyHeader, Vec<u8>), String> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            match proxy_protocol::decode(&buf) {
                _ if buf.is_empty() => {}
                Ok(Decoded::Header(h, used)) => return Ok((h, buf.split_off(used))),
                Ok(Decoded::Incomplete) => {}
                Err(e) => return Err(e.to_string()),
            }
            let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before a PROXY protocol header".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    match limit {
        Some(limit) => tokio::time::timeout(limit, read).await.map_err(|_| {
            format!(
                "no PROXY protocol header within Proxy_Protocol_Timeout ({}s)",
                limit.as_secs()
            )
        })?,
        None => read.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let Socket::Tcp(l) = tcp(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap() else {
            unreachable!()
        };
        l.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
