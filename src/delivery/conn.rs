//! The outbound byte stream: writes (a whole pipelined batch in one write), replies read with
//! a bound on each wait, a count of bytes sent, and the STARTTLS upgrade.

use crate::net::BoxIo;
use crate::reply::{Reply, ReplyError};
use rustls_pki_types::ServerName;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Why the conversation broke off. All of them are temporary failures for the mail.
#[derive(Debug)]
pub enum Broken {
    Timeout,
    Closed,
    Io(io::Error),
    Garbage(ReplyError),
    /// Bytes after STARTTLS's 220, before the handshake: someone on the path is injecting.
    Injected,
    Tls(String),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Timeout => f.write_str("timed out"),
            Broken::Closed => f.write_str("connection closed by the next hop"),
            Broken::Io(e) => write!(f, "{e}"),
            Broken::Garbage(e) => write!(f, "not SMTP: {e}"),
            Broken::Injected => f.write_str("data after STARTTLS's 220 before the TLS handshake"),
            Broken::Tls(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

pub struct Conn {
    io: BoxIo,
    rbuf: Vec<u8>,
    /// Bytes written since the connection opened.
    pub sent: u64,
    pub peer: SocketAddr,
    /// The TCP socket under `io` (TLS or not), for its options.
    fd: RawFd,
}

impl Conn {
    pub async fn connect(peer: SocketAddr, limit: Duration) -> Result<Conn, Broken> {
        let tcp = timeout(limit, TcpStream::connect(peer))
            .await
            .map_err(|_| Broken::Timeout)?
            .map_err(Broken::Io)?;
        // Each batch is written whole and then waited on: Nagle would only delay it.
        tcp.set_nodelay(true).map_err(Broken::Io)?;
        Ok(Conn {
            fd: tcp.as_raw_fd(),
            io: Box::new(tcp),
            rbuf: Vec::with_capacity(4096),
            sent: 0,
            peer,
        })
    }

    /// Acknowledges what arrives next at once rather than after the delayed-ACK timer. For
    /// pipelined replies: a next hop that writes each reply as it goes with Nagle's algorithm
    /// on (Haraka does) holds the second until the first is acknowledged, which costs 40 ms
    /// a message unless the ACK is prompt. Linux forgets the setting after a while, so it is
    /// set before each wait.
    pub fn ack_promptly(&self) {
        #[cfg(target_os = "linux")]
        {
            let on: libc::c_int = 1;
            // SAFETY: setsockopt on a descriptor `io` owns, with a value of the size given;
            // a failure only leaves delayed ACKs on.
            unsafe {
                libc::setsockopt(
                    self.fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }

    /// Writes `bytes` and flushes, within `limit`.
    pub async fn write(&mut self, bytes: &[u8], limit: Duration) -> Result<(), Broken> {
        timeout(limit, async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        .map_err(|_| Broken::Timeout)?
        .map_err(Broken::Io)?;
        self.sent += bytes.len() as u64;
        Ok(())
    }

    /// Reads one reply, waiting at most `limit` for it to be complete.
    pub async fn reply(&mut self, limit: Duration) -> Result<Reply, Broken> {
        timeout(limit, async {
            loop {
                if let Some(reply) = Reply::take_from(&mut self.rbuf).map_err(Broken::Garbage)? {
                    return Ok(reply);
                }
                Reply::make_room(&mut self.rbuf);
                let n = self.io.read_buf(&mut self.rbuf).await.map_err(Broken::Io)?;
                if n == 0 {
                    return Err(Broken::Closed);
                }
            }
        })
        .await
        .map_err(|_| Broken::Timeout)?
    }

    /// Whether the next hop has spoken or hung up while nobody asked: on a connection idle
    /// between messages that means it timed the session out (a `421` and close). Looks
    /// without waiting.
    pub async fn is_stale(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return true;
        }
        self.rbuf.reserve(512);
        // A zero timeout still polls the read once: data, end-of-stream or an error already
        // there completes it.
        timeout(Duration::ZERO, self.io.read_buf(&mut self.rbuf))
            .await
            .is_ok()
    }

    /// Turns the stream into TLS (after STARTTLS's 220).
    pub async fn upgrade(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        limit: Duration,
    ) -> Result<(), Broken> {
        if !self.rbuf.is_empty() {
            return Err(Broken::Injected);
        }
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        let tls = timeout(
            limit,
            tokio_rustls::TlsConnector::from(config).connect(name, io),
        )
        .await
        .map_err(|_| Broken::Timeout)?
        .map_err(|e| Broken::Tls(e.to_string()))?;
        self.io = Box::new(tls);
        Ok(())
    }

    /// Closes the write side; the peer sees the end of the conversation.
    pub async fn close(mut self) {
        let _ = timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}
