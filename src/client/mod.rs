//! The client side of SMTP, as the appliance speaks it to the next hop (`Gateway`/`Routes`) and
//! to the AUTH upstream: connect, greeting, EHLO, AUTH, XCLIENT, one command and one reply at a
//! time, message data streamed through.
//!
//! Every wait is bounded by the client's timeout, so a stalled peer becomes an error the caller
//! can turn into a 4xx, never a session that hangs.

pub mod resolve;
pub mod tls;

use crate::model::addr::HostPort;
use crate::net::BoxIo;
use crate::reply::{Reply, ReplyError};
use std::borrow::Cow;
use std::fmt;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Why a conversation with a server failed. None of these is the server's verdict: callers map
/// them to temporary failures.
#[derive(Debug)]
pub enum ClientError {
    Connect(String),
    Timeout,
    Io(io::Error),
    /// The server closed the connection where a reply was due.
    Closed,
    Garbage(ReplyError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect failed: {e}"),
            ClientError::Timeout => f.write_str("timed out"),
            ClientError::Io(e) => write!(f, "I/O error: {e}"),
            ClientError::Closed => f.write_str("connection closed by server"),
            ClientError::Garbage(e) => write!(f, "not SMTP: {e}"),
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// One connection to an SMTP server.
pub struct SmtpClient {
    stream: BoxIo,
    rbuf: Vec<u8>,
    /// `host:port` as configured, for logs.
    pub server: String,
    /// The lines of the EHLO reply after the first: each a keyword and its arguments.
    extensions: Vec<Cow<'static, str>>,
    pub timeout: Duration,
}

impl SmtpClient {
    /// Connects to `hp`, trying each address its name resolves to, and reads the greeting.
    /// A greeting other than 220 is returned as the reply for the caller to judge.
    pub async fn connect(hp: &HostPort, limit: Duration) -> Result<(SmtpClient, Reply)> {
        let server = hp.to_string();
        let addrs = timeout(limit, resolve::resolve(&hp.host, hp.port))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|e| ClientError::Connect(format!("{server}: {e}")))?;
        let mut last = format!("{server}: no address");
        for addr in addrs {
            match timeout(limit, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    // One command and one reply at a time: Nagle would hold each command back
                    // for a delayed ACK (~40 ms per round trip on Linux).
                    tcp.set_nodelay(true)?;
                    let mut client = SmtpClient {
                        stream: Box::new(tcp),
                        rbuf: Vec::with_capacity(1024),
                        server: server.clone(),
                        extensions: Vec::new(),
                        timeout: limit,
                    };
                    let greeting = client.read_reply().await?;
                    return Ok((client, greeting));
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => last = format!("{addr}: timed out"),
            }
        }
        Err(ClientError::Connect(last))
    }

    /// Sends EHLO, falling back to HELO when the server refuses EHLO with a 5xx.
    pub async fn ehlo(&mut self, name: &str) -> Result<Reply> {
        let reply = self.command(&format!("EHLO {name}")).await?;
        if reply.is_permanent() {
            self.extensions.clear();
            return self.command(&format!("HELO {name}")).await;
        }
        let mut reply = reply;
        if reply.is_positive() {
            // The keyword lines are kept as they came and read when asked: splitting them into
            // owned pairs cost two allocations a line on every upstream connection.
            self.extensions = reply.lines.split_off(1.min(reply.lines.len()));
        }
        Ok(reply)
    }

    /// The arguments of an EHLO keyword, if the server offered it.
    pub fn extension(&self, keyword: &str) -> Option<&str> {
        self.extensions.iter().find_map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            k.eq_ignore_ascii_case(keyword).then_some(v)
        })
    }

    /// Whether the server offered `AUTH` with `mechanism`.
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.extension("AUTH").is_some_and(|m| {
            m.split_ascii_whitespace()
                .any(|x| x.eq_ignore_ascii_case(mechanism))
        })
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply> {
        self.send_line(line).await?;
        self.read_reply().await
    }

    pub async fn send_line(&mut self, line: &str) -> Result<()> {
        // A command may carry a credential (AUTH PLAIN's password, a bearer token): this copy
        // is wiped when sent.
        let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(line.len() + 2));
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        self.write_all(&buf).await
    }

    /// Writes raw bytes (message data, already dot-stuffed).
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        timeout(self.timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(ClientError::Io)
    }

    pub async fn read_reply(&mut self) -> Result<Reply> {
        loop {
            if let Some(reply) = Reply::take_from(&mut self.rbuf).map_err(ClientError::Garbage)? {
                return Ok(reply);
            }
            Reply::make_room(&mut self.rbuf);
            let n = timeout(self.timeout, self.stream.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| ClientError::Timeout)??;
            if n == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// STARTTLS (RFC 3207). `Ok(None)`: TLS is up and the EHLO keywords are forgotten (say
    /// EHLO again); `Ok(Some(reply))`: the server refused.
    pub async fn starttls(
        &mut self,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls_pki_types::ServerName<'static>,
    ) -> Result<Option<Reply>> {
        let r = self.command("STARTTLS").await?;
        if r.code != 220 {
            return Ok(Some(r));
        }
        if !self.rbuf.is_empty() {
            // Bytes after the 220 in clear text: someone on the path is injecting.
            return Err(ClientError::Connect(
                "server sent data after STARTTLS's 220".into(),
            ));
        }
        let io = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        let tls = timeout(
            self.timeout,
            tokio_rustls::TlsConnector::from(config).connect(name, io),
        )
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(|e| ClientError::Connect(format!("TLS: {e}")))?;
        self.stream = Box::new(tls);
        self.extensions.clear();
        Ok(None)
    }

    /// Says QUIT and closes without waiting for the 221: the work is done, and the reply has
    /// nothing to tell (waiting would cost a round trip and a wake-up per session).
    pub async fn quit(mut self) {
        self.timeout = self.timeout.min(Duration::from_secs(5));
        let _ = self.send_line("QUIT").await;
    }
}
