//! A real DNS server for the delivery tests: dnsmasq on loopback, on a free port.
//!
//! Two dnsmasq processes make the answers the tests need:
//! - the front one serves the records a test gives (`--mx-host`, `--host-record`, …) and
//!   answers NXDOMAIN for any other name under `.test`;
//! - it validates DNSSEC for what it forwards, and forwards `servfail.example` to a second
//!   dnsmasq whose unsigned answer cannot be proved insecure: the front one gives up on it and
//!   answers SERVFAIL, as a validating resolver does for a broken delegation;
//! - `timeout.example` is forwarded to a UDP socket held open here that never answers.

use super::TempDir;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The root zone's KSK-2017, as a DS record: any anchor works, since nothing here can prove
/// a chain to it; this one is the real root's.
const ROOT_ANCHOR: &str =
    ".,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

/// A name answered SERVFAIL.
pub const SERVFAIL_DOMAIN: &str = "servfail.example";
/// A name whose questions are never answered.
pub const TIMEOUT_DOMAIN: &str = "timeout.example";

pub struct Dnsmasq {
    front: Child,
    upstream: Child,
    pub port: u16,
    /// Never answers: where `timeout.example` questions go.
    _silent: UdpSocket,
    dir: TempDir,
}

impl Dnsmasq {
    /// Starts the servers with `records`, dnsmasq options such as
    /// `--mx-host=mx.test,mail.mx.test,10` or `--host-record=mail.mx.test,127.0.0.1`.
    pub fn start(records: &[&str]) -> Dnsmasq {
        let dir = TempDir::new("dnsmasq");
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let (upstream, up_port) = spawn_on_free_port(&dir.0, "upstream", |port| {
            vec![
                format!("--port={port}"),
                format!("--mx-host={SERVFAIL_DOMAIN},mx.{SERVFAIL_DOMAIN},10"),
            ]
        });
        let (front, port) = spawn_on_free_port(&dir.0, "front", |port| {
            let mut args = vec![
                format!("--port={port}"),
                "--local=/test/".into(),
                "--dnssec".into(),
                format!("--trust-anchor={ROOT_ANCHOR}"),
                format!("--server=127.0.0.1#{up_port}"),
                format!("--server=/{TIMEOUT_DOMAIN}/127.0.0.1#{silent_port}"),
            ];
            args.extend(records.iter().map(|r| r.to_string()));
            args
        });
        Dnsmasq {
            front,
            upstream,
            port,
            _silent: silent,
            dir,
        }
    }

    /// `127.0.0.1:port`, as `DNS_Nameservers` takes it.
    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// The front server's query log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("front.log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        for child in [&mut self.front, &mut self.upstream] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a dnsmasq with `args(port)` on a port that was free a moment ago, trying again on
/// another if something took it meanwhile; returns once it answers queries.
fn spawn_on_free_port(dir: &Path, name: &str, args: impl Fn(u16) -> Vec<String>) -> (Child, u16) {
    for _ in 0..5 {
        let port = {
            // dnsmasq needs the port free for both UDP and TCP.
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            port
        };
        let mut child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--log-queries",
            ])
            .arg(format!(
                "--pid-file={}",
                dir.join(format!("{name}.pid")).display()
            ))
            .arg(format!(
                "--log-facility={}",
                dir.join(format!("{name}.log")).display()
            ))
            .args(args(port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .expect("dnsmasq (apt install dnsmasq-base)");
        if answers(port, &mut child) {
            return (child, port);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("dnsmasq did not start");
}

/// Waits until the server answers a question (any answer), or has exited.
fn answers(port: u16, child: &mut Child) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // A query for `ready.test` A, id 0x5150, recursion desired.
    let mut q = vec![0x51, 0x50, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let _ = sock.send_to(&q, ("127.0.0.1", port));
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && n >= 2
            && buf[..2] == [0x51, 0x50]
        {
            return true;
        }
    }
    false
}
