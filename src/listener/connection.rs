//! Framing for one client connection: command lines in, replies out, message data streamed.
//!
//! Replies are buffered and written when the client has no complete command waiting, which is
//! how RFC 2920 wants a server to answer a pipelined group. Every wait for the client (reading,
//! and writing to one that does not read) is bounded by `Idle_Time`. Memory is bounded too: an
//! over-long line is discarded as it arrives, never collected.

use crate::net::BoxIo;
use crate::reply::Reply;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

/// Runs `fut` until `deadline`, or to its end when there is none (`Idle_Time = 0`).
/// `Err(())`: the deadline passed first.
pub async fn within<F: std::future::Future>(
    deadline: Option<Instant>,
    fut: F,
) -> Result<F::Output, ()> {
    match deadline {
        Some(d) => timeout_at(d, fut).await.map_err(|_| ()),
        None => Ok(fut.await),
    }
}

/// RFC 4954 §4 lets an AUTH line (with its initial response) reach 12288 octets, the longest
/// command line any extension in use here needs; RFC 5321's 512 is too short for it.
pub const MAX_COMMAND_LINE: usize = 12288;

/// Room for the next read of message data: large reads, few system calls.
const DATA_CHUNK: usize = 8192;
/// Room for the next read of commands: a session waiting for its next command keeps this
/// much, which is what an idle connection costs (10,000 of them are an edge server's day).
const COMMAND_CHUNK: usize = 1024;

#[derive(Debug)]
pub enum ReadError {
    /// The client said nothing for `Idle_Time`.
    Idle,
    /// The client closed the connection (or reset it).
    Closed,
    /// A line longer than the limit; it has been discarded up to its end.
    TooLong,
    Io(io::Error),
}

pub struct Connection {
    io: BoxIo,
    rbuf: Vec<u8>,
    /// Start of the unconsumed bytes in `rbuf`.
    rpos: usize,
    wbuf: Vec<u8>,
    /// `Idle_Time`; `None` (`Idle_Time = 0`) waits for ever.
    pub idle: Option<Duration>,
    /// Whether the client was offered ENHANCEDSTATUSCODES (replies carry them only then).
    pub enhanced_codes: bool,
}

impl Connection {
    pub fn new(io: BoxIo, idle: Option<Duration>) -> Connection {
        Connection {
            io,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            idle,
            enhanced_codes: false,
        }
    }

    /// Queues a reply; it goes out at the next flush or read that would wait.
    pub fn send(&mut self, reply: &Reply) {
        reply.write_to(&mut self.wbuf, self.enhanced_codes);
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let deadline = self.deadline();
        let io = &mut self.io;
        let wbuf = &self.wbuf;
        let result = within(deadline, async {
            io.write_all(wbuf).await?;
            io.flush().await
        })
        .await;
        self.wbuf.clear();
        match result {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client does not read its replies",
            )),
        }
    }

    /// Bytes received and not yet consumed: commands the client pipelined.
    pub fn pending(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    /// Drops whatever the client has pipelined.
    pub fn discard_pending(&mut self) {
        self.rbuf.clear();
        self.rpos = 0;
    }

    /// When a wait starting now must end: `Idle_Time` from now, or never.
    fn deadline(&self) -> Option<Instant> {
        self.idle.map(|d| Instant::now() + d)
    }

    /// Reads more bytes into the buffer, flushing queued replies first, by `deadline`.
    /// Returns how many.
    async fn fill(&mut self, room: usize, deadline: Option<Instant>) -> Result<usize, ReadError> {
        self.flush().await.map_err(ReadError::Io)?;
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        // read_buf fills spare capacity: no zeroing of the buffer before every read.
        self.rbuf.reserve(room);
        let n = match within(deadline, self.io.read_buf(&mut self.rbuf)).await {
            Err(_) => return Err(ReadError::Idle),
            Ok(Err(e)) => {
                return Err(match e.kind() {
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => {
                        ReadError::Closed
                    }
                    _ => ReadError::Io(e),
                });
            }
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(ReadError::Closed);
        }
        Ok(n)
    }

    /// Reads one line, without its line ending (CRLF, or a bare LF from a sloppy client).
    /// The whole line must arrive within `Idle_Time`: a client trickling a byte now and then
    /// (slow loris) does not hold its session for ever.
    pub async fn read_line(&mut self, max: usize) -> Result<Vec<u8>, ReadError> {
        let deadline = self.deadline();
        let mut scanned = 0;
        loop {
            let pending = &self.rbuf[self.rpos..];
            if let Some(nl) = pending[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + nl;
                let mut line = pending[..end].to_vec();
                self.rpos += end + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > max {
                    return Err(ReadError::TooLong);
                }
                return Ok(line);
            }
            if pending.len() > max + 1 {
                self.skip_line(deadline).await?;
                return Err(ReadError::TooLong);
            }
            scanned = pending.len();
            self.fill(COMMAND_CHUNK, deadline).await?;
        }
    }

    /// Discards input up to and including the next LF.
    async fn skip_line(&mut self, deadline: Option<Instant>) -> Result<(), ReadError> {
        loop {
            let pending = &self.rbuf[self.rpos..];
            if let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                self.rpos += nl + 1;
                return Ok(());
            }
            self.discard_pending();
            self.fill(COMMAND_CHUNK, deadline).await?;
        }
    }

    /// Message data: the buffered bytes, or the next bytes from the client if none are
    /// buffered. The caller says how many it used with [`Connection::consume`].
    pub async fn data_chunk(&mut self) -> Result<&[u8], ReadError> {
        if self.rpos == self.rbuf.len() {
            self.fill(DATA_CHUNK, self.deadline()).await?;
        }
        Ok(&self.rbuf[self.rpos..])
    }

    pub fn consume(&mut self, n: usize) {
        self.rpos += n;
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
    }

    /// Takes the stream and the bytes read past the last consumed one, for a TLS upgrade;
    /// [`Connection::replace_io`] puts the upgraded stream back.
    pub fn take_io(&mut self) -> (BoxIo, Vec<u8>) {
        let rest = self.rbuf.split_off(self.rpos);
        self.discard_pending();
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        (io, rest)
    }

    /// Puts a (new) stream back, keeping settings.
    pub fn replace_io(&mut self, io: BoxIo) {
        self.io = io;
        self.discard_pending();
    }

    /// Writes what is queued. Over TLS, also sends close_notify; plain TCP needs nothing
    /// more, since dropping the socket closes it (one system call fewer per session).
    pub async fn shutdown(&mut self, tls: bool) {
        let _ = self.flush().await;
        if tls {
            let _ = timeout(Duration::from_secs(5), self.io.shutdown()).await;
        }
    }
}
