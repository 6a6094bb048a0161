//! Debian's HAProxy in TCP mode in front of appliance instances, as the tests that put the
//! appliance behind a load balancer start it.

use super::TempDir;
use super::daemon::dead_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running HAProxy, stopped when dropped.
pub struct Haproxy {
    child: Child,
    /// Where clients connect.
    pub port: u16,
    _dir: TempDir,
}

impl Haproxy {
    /// HAProxy on a free loopback port, round robin over `servers`: each a port and the PROXY
    /// protocol keyword to send it (`send-proxy` or `send-proxy-v2`). Returns once it listens.
    pub fn start(servers: &[(u16, &str)]) -> Haproxy {
        let port = dead_port();
        let dir = TempDir::new("haproxy");
        let mut cfg = format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend smtp\n  bind 127.0.0.1:{port}\n  default_backend edges\n\
             backend edges\n  balance roundrobin\n"
        );
        for (i, (server, proxy)) in servers.iter().enumerate() {
            let name = char::from(b'a' + i as u8);
            cfg.push_str(&format!("  server {name} 127.0.0.1:{server} {proxy}\n"));
        }
        let cfg = dir.write("haproxy.cfg", &cfg);
        let child = Command::new("haproxy")
            .args(["-db", "-f", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let haproxy = Haproxy {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "haproxy did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
