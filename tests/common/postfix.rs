//! Debian's Postfix as a next hop: a private instance started from a temp configuration
//! directory (`postfix -c DIR start`) on a free port, with its own queue and log file.
//!
//! It lets 127.0.0.0/8 use XCLIENT, relays for `dest.test`, and puts every accepted message on
//! hold, so a test reads it back with `postcat` and `postqueue -j`. Its smtpd logs an `info`
//! record (with the client's HELO) for each RCPT, and holds at end of data with another.
//! Needs the `postfix` user and the setgid `postdrop` group that Debian's package creates.

use super::TempDir;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postfix {
    pub port: u16,
    pub dir: TempDir,
}

impl Postfix {
    /// Starts an instance; `extra` lines are added to its main.cf.
    pub fn start(extra: &str) -> Postfix {
        let dir = TempDir::new("postfix");
        let root = dir.path().to_path_buf();
        let port = super::daemon::dead_port();
        let data = root.join("data");
        std::fs::create_dir_all(root.join("queue")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let (uid, gid) = postfix_ids();
        std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
        let r = root.display();
        dir.write(
            "main.cf",
            &format!(
                "compatibility_level = 3.6
queue_directory = {r}/queue
data_directory = {r}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.test
mydomain = pf.test
myorigin = pf.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = dest.test
smtpd_peername_lookup = no
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = check_client_access static:INFO, reject_unauth_destination
smtpd_end_of_data_restrictions = check_client_access static:HOLD
maillog_file = {r}/maillog
maillog_file_prefixes = {r}
alias_maps =
alias_database =
{extra}
"
            ),
        );
        dir.write(
            "master.cf",
            &format!(
                "127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
            ),
        );
        let pf = Postfix { port, dir };
        let out = pf.postfix(&["start"]);
        assert!(
            out.status.success(),
            "postfix start failed (Debian's postfix package must be installed): {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            pf.log()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "postfix did not listen:\n{}",
                pf.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pf
    }

    fn config(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn postfix(&self, args: &[&str]) -> std::process::Output {
        Command::new("postfix")
            .arg("-c")
            .arg(self.config())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the postfix command")
    }

    /// Its log file so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits until the log has `count` lines containing `needle`; returns those lines.
    pub fn wait_log(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines: Vec<String> = self
                .log()
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_owned)
                .collect();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "postfix never logged {count} × {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The queue as `postqueue -j` lists it, once it holds `count` messages.
    pub fn wait_queue(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("postqueue")
                .arg("-c")
                .arg(self.config())
                .arg("-j")
                .output()
                .expect("postqueue");
            let queue: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if queue.len() >= count {
                return queue;
            }
            assert!(
                Instant::now() < deadline,
                "postfix queue never held {count} messages: {queue:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postcat` of one queued message: envelope records and content.
    pub fn postcat(&self, queue_id: &str) -> String {
        let out = Command::new("postcat")
            .arg("-c")
            .arg(self.config())
            .args(["-q", queue_id])
            .output()
            .expect("postcat");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.postfix(&["stop"]);
    }
}

/// The uid and gid of the `postfix` user.
fn postfix_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postfix:"))
        .expect("a postfix user (Debian's postfix package creates it)");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}
