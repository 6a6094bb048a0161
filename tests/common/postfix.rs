//! A private Postfix instance (Debian's package), for tests where the next hop's behaviour is
//! Postfix's own: its own configuration and queue directories in a temporary directory, one
//! smtpd on a free loopback port, mail relayed on to `relayhost` (a test server) so the
//! message as Postfix wrote it can be read there.

use super::TempDir;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Postfix {
    pub port: u16,
    pub dir: TempDir,
}

/// The services a relaying Postfix needs, with smtpd on `port` only.
fn master_cf(port: u16) -> String {
    let mut cf = format!("127.0.0.1:{port} inet n - n - - smtpd\n");
    for (name, kind, private, limit) in [
        ("pickup", "unix", "n", "1"),
        ("cleanup", "unix", "n", "0"),
        ("qmgr", "unix", "n", "1"),
        ("rewrite", "unix", "-", "-"),
        ("bounce", "unix", "-", "0"),
        ("defer", "unix", "-", "0"),
        ("trace", "unix", "-", "0"),
        ("verify", "unix", "-", "1"),
        ("proxymap", "unix", "-", "-"),
        ("smtp", "unix", "-", "-"),
        ("relay", "unix", "-", "-"),
        ("showq", "unix", "n", "-"),
        ("error", "unix", "-", "-"),
        ("retry", "unix", "-", "-"),
        ("discard", "unix", "-", "-"),
        ("anvil", "unix", "-", "1"),
        ("scache", "unix", "-", "1"),
        ("postlog", "unix-dgram", "n", "1"),
    ] {
        let program = match name {
            "rewrite" => "trivial-rewrite",
            "defer" | "trace" => "bounce",
            "relay" => "smtp",
            "retry" => "error",
            "postlog" => "postlogd",
            other => other,
        };
        cf.push_str(&format!(
            "{name} {kind} {private} - n - {limit} {program}\n"
        ));
    }
    cf
}

impl Postfix {
    /// Starts Postfix relaying everything to `127.0.0.1:relay_port`, with `extra` lines for
    /// main.cf. `None` (and a loud SKIPPED line) where Postfix cannot run: not installed, or
    /// not root (its master process must start as root).
    pub fn start(relay_port: u16, extra: &str) -> Option<Postfix> {
        if !Path::new("/usr/sbin/postfix").exists() || unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: Postfix needs /usr/sbin/postfix and root (apt install postfix)");
            return None;
        }
        let dir = TempDir::new("postfix");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display().to_string();
        dir.write(
            "main.cf",
            &format!(
                "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
alias_maps =
alias_database =
smtp_tls_security_level = none
smtpd_tls_security_level = none
{extra}
"
            ),
        );
        dir.write("master.cf", &master_cf(port));
        for sub in ["queue", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // The data directory belongs to the mail owner.
        let _ = Command::new("chown")
            .args(["postfix", &format!("{d}/data")])
            .status();
        let out = Command::new("postfix")
            .args(["-c", &d, "start"])
            .output()
            .unwrap();
        let postfix = Postfix { port, dir };
        assert!(
            out.status.success(),
            "postfix start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            postfix.log()
        );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "Postfix did not listen:\n{}",
                postfix.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(postfix)
    }

    /// Postfix's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .args(["-c", &self.dir.path().display().to_string(), "stop"])
            .output();
    }
}
