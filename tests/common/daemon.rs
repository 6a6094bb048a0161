//! Running the real thing: the daemon binary, a real SMTP server (aiosmtpd) as next hop and
//! AUTH upstream, a raw SMTP client for exact protocol checks, and third-party clients.

use super::TempDir;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_smtp-auth-proxy");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smtp_server.py");

/// The daemon, started in the foreground on a config; killed when dropped.
pub struct Daemon {
    child: Child,
    /// The bound ports, in Listen order.
    pub ports: Vec<u16>,
    log: Arc<Mutex<String>>,
    pub dir: TempDir,
}

impl Daemon {
    /// Writes `conf` to `dir/ecelerity.conf` and starts the daemon on it; waits until each of
    /// `listens` Listen scopes reports its port.
    pub fn start(dir: TempDir, conf: &str, listens: usize) -> Daemon {
        Daemon::start_env(dir, conf, listens, &[])
    }

    /// As [`Daemon::start`], with extra environment variables.
    pub fn start_env(dir: TempDir, conf: &str, listens: usize, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(dir, conf, listens, |cmd| {
            cmd.envs(env.iter().copied());
        })
    }

    /// As [`Daemon::start`], with the command adjusted by `configure` first.
    pub fn start_with(
        dir: TempDir,
        conf: &str,
        listens: usize,
        configure: impl FnOnce(&mut Command),
    ) -> Daemon {
        // Each daemon has a spool of its own (a spool admits one daemon at a time).
        let conf = if conf.to_ascii_lowercase().contains("spoolbase") {
            conf.to_owned()
        } else {
            format!(
                "Spoolbase = \"{}\"\n{conf}",
                dir.path().join("spool").display()
            )
        };
        let path = dir.write("ecelerity.conf", &conf);
        let mut cmd = Command::new(BIN);
        configure(&mut cmd);
        let mut child = cmd
            .args(["-f", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("");
                    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap_or(0);
                    let _ = tx.send(port);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut ports = Vec::new();
        while ports.len() < listens {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(p) => ports.push(p),
                Err(_) => panic!(
                    "daemon did not start listening; its log:\n{}",
                    log.lock().unwrap()
                ),
            }
        }
        Daemon {
            child,
            ports,
            log,
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The configuration file it runs on (`dir/ecelerity.conf`).
    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("ecelerity.conf")
    }

    /// Sends the daemon `signal` (`libc::SIGTERM`, `libc::SIGHUP`, ...).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold it).
        let r = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits up to `limit` for the daemon to exit; its status, or `None` if it is still
    /// running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (log lines are written after replies are sent).
    pub fn wait_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "log never showed {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the daemon, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// The daemon's open descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// What the daemon's descriptors are and its TCP connections, for a failure message.
    pub fn fd_report(&self) -> String {
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        let tcp = String::from_utf8_lossy(&run("ss", &["-tanp"]).stdout)
            .lines()
            .filter(|l| l.contains(&format!("pid={},", self.pid())))
            .collect::<Vec<_>>()
            .join("\n");
        format!("descriptors {fds:?}\n{tcp}")
    }

    /// What the daemon holds now.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            rss_kib: self.rss_kib(),
            fds: self.open_fds(),
        }
    }

    /// Waits up to 10 s for the daemon to come back to `baseline`: no more descriptors than
    /// then (every session and upstream connection of the case closed) and resident memory
    /// within [`RSS_SLACK_KIB`]. Panics with the figures otherwise. Returns what it came back to.
    pub fn assert_back_to(&self, baseline: &Footprint, case: &str) -> Footprint {
        let start = Instant::now();
        loop {
            let now = self.footprint();
            if now.fds <= baseline.fds && now.rss_kib <= baseline.rss_kib + RSS_SLACK_KIB {
                eprintln!("{case}: back to {now:?} (baseline {baseline:?})");
                return now;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{case}: not back to baseline {baseline:?}, now {now:?}\n{}",
                self.fd_report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `case` once to warm up, then twice more, and checks each later run leaves the
    /// daemon where the first did ([`Daemon::assert_back_to`]). The warm-up matters: the first
    /// run grows what is meant to stay (each serving thread's runtime state, the allocator's
    /// arenas, caches and pools); a leak grows with every run.
    pub fn leaves_no_trace(&self, name: &str, mut case: impl FnMut(usize)) {
        case(0);
        std::thread::sleep(Duration::from_millis(200));
        let baseline = self.footprint();
        for round in 1..3 {
            case(round);
            self.assert_back_to(&baseline, &format!("{name}, run {}", round + 1));
        }
    }
}

/// How much more resident memory than its baseline a daemon may hold after a fault case:
/// allocator slack, well under what any buffer a case fills (a 1 MB line, a 200 KB message)
/// would leave behind if it were kept.
pub const RSS_SLACK_KIB: u64 = 512;

/// A daemon's resident memory and open descriptors at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    pub rss_kib: u64,
    pub fds: usize,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// aiosmtpd on a free port, recording accepted messages.
pub struct Upstream {
    child: Child,
    pub port: u16,
    spool: PathBuf,
    _dir: TempDir,
}

impl Upstream {
    /// Starts the server; `users` are the name/password pairs its AUTH accepts.
    pub fn start(users: &[(&str, &str)]) -> Upstream {
        Upstream::start_with(users, &[])
    }

    /// Starts the server with extra fixture options (`--xclient`).
    pub fn start_with(users: &[(&str, &str)], options: &[&str]) -> Upstream {
        let dir = TempDir::new("upstream");
        let spool = dir.path().join("spool.jsonl");
        let mut cmd = Command::new("python3");
        cmd.arg(FIXTURE).arg(&spool);
        for (u, p) in users {
            cmd.arg("--user").arg(format!("{u}:{p}"));
        }
        cmd.args(options);
        let mut child = cmd
            .stdout(Stdio::piped())
            // aiosmtpd's deprecation notes and its tracebacks for sessions our tests cut off.
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "python3 with aiosmtpd (pip install aiosmtpd, or apt install python3-aiosmtpd)",
            );
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("aiosmtpd fixture did not start: {first:?}"));
        Upstream {
            child,
            port,
            spool,
            _dir: dir,
        }
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.spool)
    }

    /// The messages accepted, once there are at least `n` (the queue delivers after the
    /// client's `250`); panics after 20 s.
    pub fn wait_messages(&self, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the next hop got {} message(s), not {n}",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// With `--oauth`: one record per token AUTH so far (mechanism, the response as received,
    /// the answer to the error challenge, the verdict, when EHLO and AUTH came).
    pub fn token_auths(&self) -> Vec<serde_json::Value> {
        let mut path = self.spool.clone().into_os_string();
        path.push(".auth");
        read_jsonl(Path::new(&path))
    }
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in syslog daemon: a datagram socket the daemon is pointed at with
/// `SMTP_AUTH_PROXY_SYSLOG`.
pub struct SyslogSink {
    pub path: PathBuf,
    socket: std::os::unix::net::UnixDatagram,
}

impl SyslogSink {
    pub fn bind(path: PathBuf) -> SyslogSink {
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // Writable by anyone, as /dev/log is: a daemon that dropped root still logs.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        SyslogSink { path, socket }
    }

    /// The next message, or `None` after 10 s.
    pub fn recv(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    pub fn env(&self) -> (&'static str, &str) {
        ("SMTP_AUTH_PROXY_SYSLOG", self.path.to_str().unwrap())
    }
}

/// A port with nothing listening (bound, then released): for a server the test starts on it,
/// or for a next hop that is down.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A certificate and key for `localhost` / 127.0.0.1, made with the openssl command.
pub fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let c = Certs::new(dir);
    (c.cert, c.key)
}

/// A test CA and a server certificate it signed (`localhost`, `127.0.0.1`).
pub struct Certs {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Certs {
    pub fn new(dir: &Path) -> Certs {
        let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        for cmd in [
            format!(
                "req -x509 {ec} -days 2 -subj /CN=test-ca -keyout {} -out {}",
                p("ca.key"),
                p("ca.pem")
            ),
            format!(
                "req {ec} -subj /CN=localhost -keyout {} -out {}",
                p("key.pem"),
                p("leaf.csr")
            ),
            format!(
                "x509 -req -in {} -CA {} -CAkey {} -CAcreateserial -days 2 -extfile {} -out {}",
                p("leaf.csr"),
                p("ca.pem"),
                p("ca.key"),
                p("leaf.ext"),
                p("cert.pem")
            ),
        ] {
            let out = run_words("openssl", &cmd);
            assert!(
                out.status.success(),
                "openssl {cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
        }
    }
}

/// Runs a command with `args` split at whitespace.
pub fn run_words(program: &str, args: &str) -> Output {
    run(program, &args.split_whitespace().collect::<Vec<_>>())
}

/// Runs a command, returning its output; stdout and stderr are both kept.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Runs `sql` on the SQLite file `db` through Python's sqlite3 (the test's own tool; the
/// daemon reads the file through the SQLite ODBC driver).
pub fn sqlite(db: &std::path::Path, sql: &str) {
    let out = run(
        "python3",
        &[
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
            db.to_str().unwrap(),
            sql,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// swaks against the daemon, with `args` split at whitespace; returns its transcript.
pub fn swaks(port: u16, args: &str) -> String {
    let server = format!("127.0.0.1:{port}");
    let mut all = vec!["--server", &server, "--timeout", "20"];
    all.extend(args.split_whitespace());
    let out = run("swaks", &all);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A raw SMTP client, for exact replies.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::from_stream(TcpStream::connect(("127.0.0.1", port)).unwrap())
    }

    /// Connects from a chosen loopback address (127.0.0.0/8 is all ours on Linux).
    pub fn connect_from(local: &str, port: u16) -> Client {
        let ip: IpAddr = local.parse().unwrap();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::new(ip, 0).into()).unwrap();
        sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        Client::from_stream(sock.into())
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one whole reply: its code and all its lines (text after `ddd-`/`ddd `).
    pub fn reply(&mut self) -> (u16, String) {
        self.try_reply().expect("a reply, not end of stream")
    }

    /// `None` when the server closed the connection instead.
    pub fn try_reply(&mut self) -> Option<(u16, String)> {
        let mut text = String::new();
        loop {
            let line = self.line()?;
            let code: u16 = line[..3]
                .parse()
                .unwrap_or_else(|_| panic!("bad reply {line:?}"));
            text.push_str(line.get(4..).unwrap_or(""));
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some((code, text));
            }
        }
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends a command and returns its reply.
    pub fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(line);
        self.reply()
    }

    /// Connects, reads the greeting and says EHLO; returns the client and the EHLO reply.
    pub fn ehlo(port: u16) -> (Client, String) {
        let mut c = Client::connect(port);
        assert_eq!(c.reply().0, 220);
        let (code, ehlo) = c.cmd("EHLO me");
        assert_eq!(code, 250, "{ehlo}");
        (c, ehlo)
    }

    /// MAIL and RCPT to a remote recipient; returns the RCPT reply code, then resets.
    pub fn relay_code(&mut self) -> u16 {
        self.cmd("MAIL FROM:<a@b.example>");
        let code = self.cmd("RCPT TO:<x@remote.example>").0;
        self.cmd("RSET");
        code
    }

    /// Whether the server has closed the connection (reads until EOF or timeout).
    pub fn closed(&mut self) -> bool {
        self.line().is_none()
    }
}

/// psql's arguments for the machine's PostgreSQL (trust auth, database `test`), before the SQL.
pub const PSQL: &[&str] = &[
    "-h",
    "127.0.0.1",
    "-U",
    "postgres",
    "-d",
    "test",
    "-v",
    "ON_ERROR_STOP=1",
    "-c",
];

/// AUTH PLAIN's initial response for `user` and `password`.
pub fn plain_response(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// Connects, says EHLO, and AUTH PLAIN with an initial response; returns the reply.
pub fn auth_plain(port: u16, user: &str, password: &str) -> (u16, String) {
    let (mut c, _) = Client::ehlo(port);
    c.cmd(&format!("AUTH PLAIN {}", plain_response(user, password)))
}
