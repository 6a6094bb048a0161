//! The proxy engine end to end: verdicts from real and misbehaving upstreams, failover,
//! upstream STARTTLS, CRAM-MD5 relayed, and per-user upstreams from ODBC datasources.

mod common;

use common::TempDir;
use common::daemon::{
    Certs, Client, Daemon, PSQL, SyslogSink, Upstream, auth_plain, dead_port, run, sqlite, swaks,
};
use common::fake_upstream::{Behaviour, FakeUpstream};
use std::time::{Duration, Instant};

/// A daemon whose AUTH PLAIN/LOGIN (and CRAM-MD5, where a fixed `host` can serve it) go to
/// `smtp_auth_proxy { <proxy> }`, with `extra` global lines (Datasource scopes).
fn proxy_daemon(tag: &str, proxy: &str, extra: &str) -> Daemon {
    proxy_daemon_env(
        tag,
        proxy,
        extra,
        &[("SMTP_AUTH_PROXY_SYSLOG", "/nonexistent/log")],
    )
}

fn proxy_daemon_env(tag: &str, proxy: &str, extra: &str, env: &[(&str, &str)]) -> Daemon {
    let cram = if proxy.contains("host =") {
        "\"AUTH CRAM-MD5\""
    } else {
        ""
    };
    let conf = format!(
        r#"
{extra}
smtp_auth_proxy {{ {proxy} }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" "AUTH LOGIN" {cram} ENHANCEDSTATUSCODES )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" log_authentication = "true" ]
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" log_authentication = "true" ]
  AuthCramMD5Parameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:0" {{ }}
}}
"#
    );
    Daemon::start_env(TempDir::new(tag), &conf, 1, env)
}

#[test]
fn verdicts_from_misbehaving_upstreams() {
    let cases: Vec<(&str, Behaviour, u16)> = vec![
        ("accept", Behaviour::Accept, 235),
        ("reject", Behaviour::Reject, 535),
        ("tempfail", Behaviour::TempFail, 454),
        ("slow", Behaviour::Slow(Duration::from_secs(3)), 454),
        ("drop", Behaviour::DropMidReply, 454),
        ("garbage", Behaviour::Garbage, 454),
    ];
    for (name, behaviour, expected) in cases {
        let up = FakeUpstream::start(behaviour);
        let d = proxy_daemon(
            name,
            // No pool: ready connections held per serving thread would blur the count.
            &format!("host = \"127.0.0.1:{}\" timeout = 1 pool = 0", up.port),
            "",
        );
        // No connection, task or buffer left behind by a session that met this upstream.
        d.leaves_no_trace(name, |_| {
            let port = d.port();
            let attempts: Vec<_> = (0..3)
                .map(|_| std::thread::spawn(move || auth_plain(port, "user", "pw")))
                .collect();
            // Meanwhile other clients are served as usual.
            let (mut other, _) = Client::ehlo(port);
            assert_eq!(other.cmd("NOOP").0, 250, "{name}");
            for a in attempts {
                let (code, text) = a.join().unwrap();
                assert_eq!(code, expected, "{name}: {text}");
            }
        });
        if name == "slow" {
            assert!(
                d.wait_log("acctlog:").contains("@T@"),
                "timeouts are T in acctlog"
            );
        }
    }
    let d = proxy_daemon(
        "refused",
        &format!("host = \"127.0.0.1:{}\"", dead_port()),
        "",
    );
    d.leaves_no_trace("refused", |_| {
        assert_eq!(auth_plain(d.port(), "user", "pw").0, 454);
    });
}

#[test]
fn host_list_fails_over_on_error_but_not_on_fail() {
    let good = FakeUpstream::start(Behaviour::Accept);
    let bad = FakeUpstream::start(Behaviour::Reject);
    let d = proxy_daemon(
        "failover",
        &format!(
            "host = ( \"127.0.0.1:{}\" \"127.0.0.1:{}\" ) timeout = 5",
            dead_port(),
            good.port
        ),
        "",
    );
    assert_eq!(auth_plain(d.port(), "u", "p").0, 235);
    let good2 = FakeUpstream::start(Behaviour::Accept);
    let d = proxy_daemon(
        "nofailover",
        &format!(
            "host = ( \"127.0.0.1:{}\" \"127.0.0.1:{}\" )",
            bad.port, good2.port
        ),
        "",
    );
    assert_eq!(auth_plain(d.port(), "u", "p").0, 535);
    assert_eq!(
        good2.connections(),
        0,
        "a fail is final: no other host is asked"
    );
}

#[test]
fn upstream_starttls_and_certificate_checks() {
    let dir = TempDir::new("uptls");
    let certs = Certs::new(dir.path());
    let up = Upstream::start_with(
        &[("alice", "pw")],
        &[
            "--tls",
            certs.cert.to_str().unwrap(),
            certs.key.to_str().unwrap(),
        ],
    );
    let ca = certs.ca.display();
    let cases = [
        // Opportunistic by default: STARTTLS, then AUTH inside it.
        (format!("host = \"127.0.0.1:{}\"", up.port), 235),
        // Without TLS this upstream offers no AUTH: the proxy cannot decide.
        (format!("host = \"127.0.0.1:{}\" tls = no", up.port), 454),
        (
            format!(
                "host = \"localhost:{}\" tls_verify = host tls_ca = \"{ca}\"",
                up.port
            ),
            235,
        ),
        // The chain is checked, not the name (an upstream addressed by IP).
        (
            format!(
                "host = \"127.0.0.1:{}\" tls_verify = ca tls_ca = \"{ca}\"",
                up.port
            ),
            235,
        ),
        // The system's CAs do not know the test CA.
        (
            format!("host = \"localhost:{}\" tls_verify = host", up.port),
            454,
        ),
    ];
    for (i, (proxy, expected)) in cases.iter().enumerate() {
        // No pool: ready connections held per serving thread would blur the count.
        let d = proxy_daemon(&format!("uptls{i}"), &format!("{proxy} pool = 0"), "");
        // A handshake that fails leaves nothing behind either.
        d.leaves_no_trace(proxy, |_| {
            let (code, text) = auth_plain(d.port(), "alice", "pw");
            assert_eq!(code, *expected, "{proxy}: {text}\n{}", d.log());
        });
    }
    // tls = required against an upstream without STARTTLS.
    let plain = Upstream::start(&[("alice", "pw")]);
    let d = proxy_daemon(
        "tlsreq",
        &format!("host = \"127.0.0.1:{}\" tls = required", plain.port),
        "",
    );
    assert_eq!(auth_plain(d.port(), "alice", "pw").0, 454);
}

#[test]
fn cram_md5_is_relayed_to_the_upstream() {
    let up = FakeUpstream::start(Behaviour::CramMd5 {
        user: "carol".into(),
        password: "tanstaaf".into(),
    });
    let d = proxy_daemon("cram", &format!("host = \"127.0.0.1:{}\"", up.port), "");
    let t = swaks(
        d.port(),
        "-a CRAM-MD5 -au carol -ap tanstaaf --quit-after AUTH",
    );
    assert!(t.contains("235 2.7.0"), "{t}");
    let t = swaks(
        d.port(),
        "-a CRAM-MD5 -au carol -ap wrong --quit-after AUTH",
    );
    assert!(t.contains("535 5.7.8"), "{t}");
}

#[test]
fn sqlite_datasource_picks_the_upstream_per_user() {
    let a = Upstream::start(&[("alice@a.example", "pa")]);
    let b = Upstream::start(&[("bob", "pb")]);
    let dir = TempDir::new("sqlite-ds");
    let db = dir.path().join("upstreams.sqlite");
    sqlite(
        &db,
        &format!(
            "CREATE TABLE auth_servers (username TEXT, localpart TEXT, domain TEXT, host TEXT);
             INSERT INTO auth_servers VALUES ('alice@a.example', 'alice', 'a.example', '127.0.0.1:{}');
             INSERT INTO auth_servers VALUES ('carol', 'carol', '', '127.0.0.1:{}');",
            a.port,
            dead_port()
        ),
    );
    let ds = format!(
        "Datasource \"up\" {{ uri = ( \"sqlite:{}\" ) cache_life = 1 }}",
        db.display()
    );
    let proxy = format!(
        "host = \"127.0.0.1:{}\" timeout = 5 ds_cache = \"up\"
         query = \"SELECT host FROM auth_servers WHERE localpart = :localpart AND domain = :domain\"",
        b.port
    );
    let d = proxy_daemon("sqlite-ds", &proxy, &ds);
    assert_eq!(
        auth_plain(d.port(), "alice@a.example", "pa").0,
        235,
        "row: upstream A"
    );
    assert_eq!(auth_plain(d.port(), "alice@a.example", "pb").0, 535);
    assert_eq!(
        auth_plain(d.port(), "bob", "pb").0,
        235,
        "no row: the fixed host B"
    );
    assert_eq!(
        auth_plain(d.port(), "carol", "x").0,
        454,
        "row names a dead upstream"
    );
    // The database breaks: the cached answer (past cache_life) is served, and said to be stale.
    sqlite(&db, "DROP TABLE auth_servers;");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(auth_plain(d.port(), "alice@a.example", "pa").0, 235);
    assert!(d.wait_log("(stale)").contains("alice@a.example"));
    // A user never looked up gets a temporary failure, not a 535 and not the default host.
    assert_eq!(auth_plain(d.port(), "dave", "x").0, 454);
}

#[test]
fn check_datasources_prepares_the_query() {
    let dir = TempDir::new("checkds");
    let db = dir.path().join("u.sqlite");
    sqlite(
        &db,
        "CREATE TABLE auth_servers (username TEXT, localpart TEXT, domain TEXT, host TEXT);",
    );
    let conf = |query: &str| {
        dir.write(
            "e.conf",
            &format!(
                r#"
smtp_auth_proxy {{ host = "127.0.0.1:2525" ds_cache = "up" query = "{query}" }}
Datasource "up" {{ uri = ( "sqlite:{}" ) }}
ESMTP_Listener {{ Listen "127.0.0.1:2525" {{ }} }}
"#,
                db.display()
            ),
        )
    };
    // The vendor's example query, as published: the database refuses it, with file:line.
    let path = conf(
        "SELECT host FROM auth_servers WHERE username = :username, localpart = :localpart, domain = :domain;",
    );
    let out = run(
        common::daemon::BIN,
        &["--check-datasources", "-c", path.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("e.conf:2:") && err.contains("syntax error"),
        "{err}"
    );
    let path =
        conf("SELECT host FROM auth_servers WHERE username = :username AND domain = :domain");
    let out = run(
        common::daemon::BIN,
        &["--check-datasources", "-c", path.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs SQL through a database's own command-line client; `false` if it cannot be reached
/// even after trying to start the server (as this machine's services start).
fn sql_client(program: &str, args: &[&str], sql: &str) -> bool {
    let attempt = || {
        std::process::Command::new(program)
            .args(args)
            .arg(sql)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if attempt() {
        return true;
    }
    let start = match program {
        "psql" => {
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main start"
        }
        _ => "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    };
    let _ = std::process::Command::new("sh")
        .args(["-c", start])
        .status();
    for _ in 0..50 {
        if attempt() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The per-user lookup against a real database server through its ODBC driver.
fn server_datasource(kind: &str, program: &str, args: &[&str], uri: &str) {
    if which(program).is_none() {
        // A machine without the server installed: nothing to test against. CI installs both.
        eprintln!("SKIPPED: {program} not installed, no {kind} datasource test");
        return;
    }
    let a = Upstream::start(&[("alice@a.example", "pa")]);
    let table = format!("auth_servers_{}", std::process::id());
    let create = format!(
        "CREATE TABLE {table} (username VARCHAR(200), host VARCHAR(200));
         INSERT INTO {table} VALUES ('alice@a.example', '127.0.0.1:{}');",
        a.port
    );
    assert!(
        sql_client(program, args, &create),
        "{kind}: cannot create the test table"
    );
    let ds = format!("Datasource \"up\" {{ uri = ( \"{uri}\" ) }}");
    let proxy = format!(
        "timeout = 15 ds_cache = \"up\" query = \"SELECT host FROM {table} WHERE username = :username\""
    );
    let d = proxy_daemon(kind, &proxy, &ds);
    let results = (
        auth_plain(d.port(), "alice@a.example", "pa").0,
        auth_plain(d.port(), "alice@a.example", "wrong").0,
        // No row and no `host`: a fail.
        auth_plain(d.port(), "nobody@a.example", "x").0,
    );
    sql_client(program, args, &format!("DROP TABLE {table}"));
    assert_eq!(results, (235, 535, 535), "{kind}\n{}", d.log());
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([std::path::PathBuf::from("/usr/sbin")])
            .map(|p| p.join(program))
            .find(|p| p.exists())
    })
}

#[test]
fn postgresql_datasource() {
    server_datasource(
        "postgresql",
        "psql",
        PSQL,
        "pgsql:host=127.0.0.1;port=5432;dbname=test;user=postgres;password=",
    );
}

#[test]
fn mariadb_datasource() {
    server_datasource(
        "mariadb",
        "mariadb",
        &["-h", "127.0.0.1", "-u", "root", "test", "-e"],
        "mysql:host=127.0.0.1;port=3306;dbname=test;user=root;password=",
    );
}

#[test]
fn acctlog_goes_to_syslog_and_survives_a_syslogd_restart() {
    let up = FakeUpstream::start(Behaviour::Accept);
    let dir = TempDir::new("syslog");
    let sink = SyslogSink::bind(dir.path().join("log"));
    let d = proxy_daemon_env(
        "syslog",
        &format!("host = \"127.0.0.1:{}\"", up.port),
        "",
        &[sink.env()],
    );
    assert_eq!(auth_plain(d.port(), "erin@example.com", "pw").0, 235);
    let line = sink.recv().expect("an acctlog line");
    assert!(
        line.starts_with("<22>"),
        "facility mail, severity info: {line}"
    );
    assert!(
        line.contains("acctlog: ") && line.ends_with("@erin\\@example.com@1"),
        "{line}"
    );
    assert!(!line.contains("pw@"), "{line}");
    // syslogd restarts: a new socket at the same path gets the next line.
    let path = sink.path.clone();
    drop(sink);
    let sink = SyslogSink::bind(path);
    assert_eq!(auth_plain(d.port(), "erin@example.com", "pw").0, 235);
    assert!(
        sink.recv()
            .expect("a line after the restart")
            .contains("@erin\\@example.com@1")
    );
}

#[test]
fn pooled_connections_closed_by_the_upstream_are_replaced() {
    // The upstream drops any connection idle for a second, as a strict idle timeout would.
    let up = FakeUpstream::start(Behaviour::AcceptClosingIdle(Duration::from_millis(1000)));
    // One serving thread: each thread has its own pool, and the count below is for one.
    let d = proxy_daemon_env(
        "pool",
        &format!("host = \"127.0.0.1:{}\" pool = 2", up.port),
        "",
        &[
            ("SMTP_AUTH_PROXY_THREADS", "1"),
            ("SMTP_AUTH_PROXY_SYSLOG", "/nonexistent/log"),
        ],
    );
    assert_eq!(auth_plain(d.port(), "u", "p").0, 235);
    // The login's own connection and two opened ahead for the pool.
    let start = Instant::now();
    while up.connections() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the pool was not filled"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(up.connections(), 3);
    // Its connections die while they wait.
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..4 {
        assert_eq!(auth_plain(d.port(), "u", "p").0, 235);
    }
    // And a pooled connection that is alive is used: fewer connections than sessions plus
    // the pool's refills would be impossible otherwise.
    // Give the pool time to refill (well inside the upstream's idle second), then measure.
    std::thread::sleep(Duration::from_millis(200));
    let before = up.connections();
    assert_eq!(auth_plain(d.port(), "u", "p").0, 235);
    assert!(
        up.connections() - before <= 2,
        "one AUTH opened {} connections",
        up.connections() - before
    );
}

#[test]
fn debug_level_sets_how_much_is_logged() {
    let up = FakeUpstream::start(Behaviour::Accept);
    let d = proxy_daemon(
        "debuglevel",
        &format!("host = \"127.0.0.1:{}\" debug_level = DEBUG", up.port),
        "",
    );
    assert_eq!(auth_plain(d.port(), "u", "p").0, 235);
    // Passing AUTH attempts are logged at debug only.
    let log = d.wait_log("AUTH PLAIN user=u pass");
    let line = log
        .lines()
        .find(|l| l.contains("AUTH PLAIN user=u pass"))
        .unwrap();
    assert!(line.contains(": debug: session "), "{line}");
}
