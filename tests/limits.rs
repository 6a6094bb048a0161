//! Sending limits with real clients, a real next hop (aiosmtpd) and, for the shared counters, a
//! real `redis-server` started by each test on a port of its own (never the machine's 6379):
//! each limit refusing at its count and recovering after its window, two instances behind
//! HAProxy enforcing one limit through one Redis, an AUTH lockout crossing instances, Redis
//! stopped and started under load (failure_mode open and closed) with nothing lost, and a
//! user's own limits from a SQLite `limits_query`.

mod common;

use common::daemon::{Client, Daemon, Upstream, dead_port, plain_response, run, sqlite};
use common::haproxy::Haproxy;
use common::{TempDir, build, load_text};
use smtp_auth_proxy::model::limits::{FailureMode, Measure, Rate, Subject};
use smtp_auth_proxy::model::listener::Effective;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` of the test's own: no persistence, stopped and started at will.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// `None` (the test skips) where redis-server is not installed.
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let mut r = Redis {
            port: dead_port(),
            child: None,
        };
        r.run();
        Some(r)
    }

    fn run(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while self.cli(&["PING"]) != "PONG" {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec!["-p", &port];
        all.extend(args);
        String::from_utf8_lossy(&run("redis-cli", &all).stdout)
            .trim()
            .to_owned()
    }

    fn conf(&self, extra: &str) -> String {
        format!(
            "Shared_Counters {{ uri = \"redis://127.0.0.1:{}/0\" {extra} }}",
            self.port
        )
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A daemon relaying to `up` (the Gateway), with AUTH PLAIN against a password file of
/// alice/bob/carol, `global` options at the top and `listener` options in ESMTP_Listener.
fn daemon(tag: &str, up: &Upstream, global: &str, listener: &str, listen: &str) -> Daemon {
    let dir = TempDir::new(tag);
    let pw = dir.write("passwords", "alice:pa\nbob:pb\ncarol:pc\n");
    let conf = format!(
        r#"
Gateway = "127.0.0.1:{}"
{global}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" ENHANCEDSTATUSCODES )
  AuthPlainParameters = [ uri = "file://{}" ]
  {listener}
  Listen "127.0.0.1:0" {{ {listen} }}
}}
"#,
        up.port,
        pw.display()
    );
    Daemon::start(dir, &conf, 1)
}

/// A greeted client from `from` (a loopback address), authenticated as `user` when given.
fn session(port: u16, from: &str, user: Option<&str>) -> Client {
    let mut c = Client::connect_from(from, port);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("EHLO me").0, 250);
    if let Some(u) = user {
        let pw = format!("p{}", &u[..1]);
        let (code, text) = c.cmd(&format!("AUTH PLAIN {}", plain_response(u, &pw)));
        assert_eq!(code, 235, "{text}");
    }
    c
}

/// How one message went: the replies to MAIL, each RCPT and the end of DATA.
#[derive(Debug)]
struct Sent {
    mail: (u16, String),
    rcpts: Vec<(u16, String)>,
    data: Option<u16>,
}

/// MAIL, `rcpts` recipients, and DATA if any recipient was accepted.
fn send(c: &mut Client, rcpts: usize) -> Sent {
    let mail = c.cmd("MAIL FROM:<s@sender.example>");
    if mail.0 != 250 {
        return Sent {
            mail,
            rcpts: Vec::new(),
            data: None,
        };
    }
    let rcpts: Vec<(u16, String)> = (0..rcpts)
        .map(|i| c.cmd(&format!("RCPT TO:<r{i}@remote.example>")))
        .collect();
    let data = if rcpts.iter().any(|r| r.0 == 250) {
        assert_eq!(c.cmd("DATA").0, 354);
        Some(c.cmd("Subject: limits\r\n\r\nhello\r\n.").0)
    } else {
        c.cmd("RSET");
        None
    };
    Sent { mail, rcpts, data }
}

/// One session, one message to one recipient; the MAIL reply.
fn one_message(port: u16, from: &str, user: Option<&str>) -> (u16, String) {
    let mut c = session(port, from, user);
    let s = send(&mut c, 1);
    if s.mail.0 == 250 {
        assert_eq!(s.data, Some(250), "{s:?}");
    }
    c.cmd("QUIT");
    s.mail
}

/// Waits (up to `within`) until `try_it` is true; panics otherwise.
fn eventually(within: Duration, what: &str, mut try_it: impl FnMut() -> bool) {
    let start = Instant::now();
    while !try_it() {
        assert!(start.elapsed() < within, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn limits_fall_back_from_peer_to_listen_to_listener_to_global_and_bad_values_are_pointed_at() {
    let (config, msgs) = build(
        r#"
User_Message_Limit = ( "100/3600" "1000/86400" )
Address_Session_Limit = 4
Shared_Counters { uri = "redis://127.0.0.1:6399/2" timeout = 0.25 failure_mode = closed }
ESMTP_Listener {
  User_Recipient_Limit = "50/60"
  Listen "127.0.0.1:2525" {
    User_Message_Limit = "10/60"
    Peer "10.0.0.0/8" { User_Message_Limit = "0" Relay_Hosts_Message_Limit = "5" }
  }
}
"#,
    );
    assert!(msgs.is_empty(), "{msgs:#?}");
    let l = config.esmtp_listener.as_ref().unwrap();
    let e = |ip: &str| Effective::new(&config.global, l, &l.listens[0], Some(ip.parse().unwrap()));
    let rate = |count, secs| Rate {
        count,
        window: Duration::from_secs(secs),
    };
    let outside = e("192.0.2.1");
    assert_eq!(
        outside.rates(Subject::User, Measure::Messages),
        [rate(10, 60)]
    );
    assert_eq!(
        outside.rates(Subject::User, Measure::Recipients),
        [rate(50, 60)]
    );
    assert_eq!(outside.sessions(Subject::Address), Some(4));
    let inside = e("10.1.2.3");
    assert_eq!(inside.rates(Subject::User, Measure::Messages), []);
    assert_eq!(
        inside.rates(Subject::RelayHosts, Measure::Messages),
        [rate(5, 1)],
        "a bare count is per second, as Momentum's throttles read"
    );
    let global = Effective::new(&config.global, l, &l.listens[0], None);
    assert_eq!(
        global.rates(Subject::User, Measure::Messages),
        [rate(10, 60)]
    );
    let shared = config.shared_counters.unwrap();
    assert_eq!(shared.timeout, Duration::from_millis(250));
    assert_eq!(shared.failure_mode, FailureMode::Closed);

    for (text, needle) in [
        (r#"User_Message_Limit = "0/60""#, "would refuse all mail"),
        (r#"User_Message_Limit = "ten/60""#, "is not `count/seconds`"),
        (r#"Address_Recipient_Limit = "5/0""#, "the window must be"),
        ("User_Session_Limit = many", "takes a whole number"),
        (
            r#"Shared_Counters { uri = "http://cache" }"#,
            "takes a Redis URI",
        ),
        ("Shared_Counters { }", "needs a `uri`"),
        (
            r#"Shared_Counters { uri = "redis://c" failure_mode = maybe }"#,
            "one of open, closed",
        ),
        (
            r#"Shared_Counters { uri = "redis://c" timeout = 0 }"#,
            "seconds from 0.001",
        ),
    ] {
        let loaded = load_text(text);
        let (_, diags) = smtp_auth_proxy::model::build(&loaded.root, &loaded.sources);
        let rendered: Vec<String> = diags
            .errors()
            .map(|d| d.render(&loaded.sources, false))
            .collect();
        assert!(
            rendered
                .iter()
                .any(|m| m.contains(needle) && m.starts_with("test.conf:1:")),
            "{text}: {rendered:#?}"
        );
    }
}

#[test]
fn a_users_message_limit_refuses_at_mail_logs_once_and_recovers_after_its_window() {
    let up = Upstream::start(&[]);
    let d = daemon("user-msgs", &up, "", r#"User_Message_Limit = "3/3""#, "");
    for _ in 0..3 {
        assert_eq!(one_message(d.port(), "127.0.0.1", Some("alice")).0, 250);
    }
    let mut c = session(d.port(), "127.0.0.1", Some("alice"));
    for _ in 0..3 {
        let (code, text) = c.cmd("MAIL FROM:<s@sender.example>");
        assert_eq!(code, 452, "{text}");
        assert!(text.starts_with("4.7.1 "), "{text}");
        assert!(text.contains("User_Message_Limit 3/3"), "{text}");
    }
    // Another user from the same address is not this user.
    assert_eq!(one_message(d.port(), "127.0.0.1", Some("bob")).0, 250);
    let log = d.wait_log("sending limit User_Message_Limit 3/3 reached for user=alice");
    assert_eq!(
        count(&log, "sending limit User_Message_Limit"),
        1,
        "one line per window, not per attempt:\n{log}"
    );
    // The window slides: a little over three seconds after the first message, room again.
    eventually(Duration::from_secs(6), "alice sends again", || {
        c.cmd("MAIL FROM:<s@sender.example>").0 == 250
    });
    c.cmd("RSET");
    assert_eq!(
        up.wait_messages(4).len(),
        4,
        "refused MAILs left nothing behind"
    );
}

#[test]
fn a_recipient_over_the_limit_is_refused_at_rcpt_and_the_others_are_delivered() {
    let up = Upstream::start(&[]);
    let d = daemon(
        "user-rcpts",
        &up,
        "",
        r#"User_Recipient_Limit = "2/60""#,
        "",
    );
    let mut c = session(d.port(), "127.0.0.1", Some("alice"));
    let s = send(&mut c, 3);
    let codes: Vec<u16> = s.rcpts.iter().map(|r| r.0).collect();
    assert_eq!(codes, [250, 250, 452], "{s:?}");
    assert!(
        s.rcpts[2]
            .1
            .contains("4.7.1 Recipient limit reached (User_Recipient_Limit 2/60)")
    );
    assert_eq!(s.data, Some(250));
    let msgs = up.wait_messages(1);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["to"].as_array().unwrap().len(), 2);
    // The next message has no recipient left; a transaction given up gives back its own.
    let s = send(&mut c, 1);
    assert_eq!(s.rcpts[0].0, 452);
}

#[test]
fn an_address_limit_counts_every_sender_from_it() {
    let up = Upstream::start(&[]);
    let d = daemon("addr", &up, "", r#"Address_Message_Limit = "2/60""#, "");
    assert_eq!(one_message(d.port(), "127.0.0.7", Some("alice")).0, 250);
    assert_eq!(one_message(d.port(), "127.0.0.7", Some("bob")).0, 250);
    let (code, text) = one_message(d.port(), "127.0.0.7", Some("carol"));
    assert_eq!(code, 452, "{text}");
    assert!(text.contains("Address_Message_Limit 2/60"), "{text}");
    assert_eq!(one_message(d.port(), "127.0.0.8", Some("carol")).0, 250);
    let log = d.wait_log("reached for address=127.0.0.7");
    assert!(log.contains("user=carol client=127.0.0.7"), "{log}");
}

#[test]
fn a_relay_hosts_entry_is_counted_as_one_client_and_a_peer_can_lift_a_limit() {
    let up = Upstream::start(&[]);
    let d = daemon(
        "relay-hosts",
        &up,
        r#"relay_hosts = ( "127.0.0.16/30" "127.0.0.20" )"#,
        r#"Relay_Hosts_Message_Limit = "2/60"
  Peer "127.0.0.20" { Relay_Hosts_Message_Limit = "0" }"#,
        "",
    );
    assert_eq!(one_message(d.port(), "127.0.0.17", None).0, 250);
    assert_eq!(one_message(d.port(), "127.0.0.18", None).0, 250);
    let (code, text) = one_message(d.port(), "127.0.0.17", None);
    assert_eq!(code, 452, "{text}");
    assert!(text.contains("Relay_Hosts_Message_Limit 2/60"), "{text}");
    assert!(
        d.wait_log("reached for relay_hosts=127.0.0.16/30")
            .contains("client=127.0.0.17")
    );
    for _ in 0..3 {
        assert_eq!(one_message(d.port(), "127.0.0.20", None).0, 250);
    }
}

#[test]
fn concurrent_sessions_are_limited_per_user_and_per_address() {
    let up = Upstream::start(&[]);
    let d = daemon(
        "sessions",
        &up,
        "",
        r#"User_Session_Limit = 1
  Address_Session_Limit = 2"#,
        "",
    );
    let port = d.port();
    let mut a = session(port, "127.0.0.3", Some("alice"));
    assert_eq!(send(&mut a, 1).data, Some(250));
    // A second session of alice's, from elsewhere, may not send while the first is open.
    let mut b = session(port, "127.0.0.4", Some("alice"));
    let (code, text) = b.cmd("MAIL FROM:<s@sender.example>");
    assert_eq!(code, 452, "{text}");
    assert!(text.contains("User_Session_Limit 1"), "{text}");
    // Two sessions from 127.0.0.3 (alice's, bob's): a third from there is one too many.
    let mut c = session(port, "127.0.0.3", Some("bob"));
    assert_eq!(send(&mut c, 1).data, Some(250));
    let mut e = session(port, "127.0.0.3", Some("carol"));
    let (code, text) = e.cmd("MAIL FROM:<s@sender.example>");
    assert_eq!(code, 452, "{text}");
    assert!(text.contains("Address_Session_Limit 2"), "{text}");
    // The first session ends: its slots are free for the others.
    a.cmd("QUIT");
    eventually(
        Duration::from_secs(5),
        "alice's second session sends",
        || {
            let ok = b.cmd("MAIL FROM:<s@sender.example>").0 == 250;
            b.cmd("RSET");
            ok
        },
    );
    c.cmd("QUIT");
    eventually(Duration::from_secs(5), "carol sends", || {
        let ok = e.cmd("MAIL FROM:<s@sender.example>").0 == 250;
        e.cmd("RSET");
        ok
    });
}

#[test]
fn a_users_own_limits_come_from_a_sqlite_limits_query() {
    let up = Upstream::start(&[("alice", "pa"), ("bob", "pb"), ("carol", "pc")]);
    let dir = TempDir::new("limits-query");
    let db = dir.path().join("users.sqlite");
    sqlite(
        &db,
        &format!(
            "CREATE TABLE users (username TEXT, host TEXT, msgs TEXT, sessions INTEGER);
             INSERT INTO users VALUES ('alice', '127.0.0.1:{0}', '1/600', NULL);
             INSERT INTO users VALUES ('bob', '127.0.0.1:{0}', NULL, NULL);
             INSERT INTO users VALUES ('carol', '127.0.0.1:{0}', '0', 1);",
            up.port
        ),
    );
    let conf = format!(
        r#"
smtp_auth_proxy {{
  timeout = 5 ds_cache = "users" deliver_through_upstream = true
  query = "SELECT host FROM users WHERE username = :username"
  limits_query = "SELECT msgs AS user_message_limit, sessions AS user_session_limit FROM users WHERE username = :username"
}}
Datasource "users" {{ uri = ( "sqlite:{}" ) }}
User_Message_Limit = "2/600"
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" ENHANCEDSTATUSCODES )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        db.display()
    );
    let d = Daemon::start(dir, &conf, 1);
    let port = d.port();
    // alice's own limit is one message.
    assert_eq!(one_message(port, "127.0.0.1", Some("alice")).0, 250);
    let (code, text) = one_message(port, "127.0.0.1", Some("alice"));
    assert_eq!(code, 452);
    assert!(text.contains("User_Message_Limit 1/600"), "{text}");
    // bob's column is NULL: the configuration's two.
    assert_eq!(one_message(port, "127.0.0.1", Some("bob")).0, 250);
    assert_eq!(one_message(port, "127.0.0.1", Some("bob")).0, 250);
    let (code, text) = one_message(port, "127.0.0.1", Some("bob"));
    assert_eq!(code, 452);
    assert!(text.contains("User_Message_Limit 2/600"), "{text}");
    // carol: no message limit at all, but one session at a time.
    let mut first = session(port, "127.0.0.1", Some("carol"));
    for _ in 0..3 {
        assert_eq!(send(&mut first, 1).data, Some(250));
    }
    let (code, text) = one_message(port, "127.0.0.1", Some("carol"));
    assert_eq!(code, 452);
    assert!(text.contains("User_Session_Limit 1"), "{text}");
    assert_eq!(up.wait_messages(6).len(), 6);
}

#[test]
fn two_instances_behind_haproxy_sharing_one_redis_enforce_one_limit() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        eprintln!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
        return;
    }
    let Some(redis) = Redis::start() else { return };
    let up = Upstream::start(&[]);
    let global = redis.conf("");
    let limit = r#"User_Message_Limit = "5/600""#;
    let a = daemon("lb-a", &up, &global, limit, "Proxy_Protocol = true");
    let b = daemon("lb-b", &up, &global, limit, "Proxy_Protocol = true");
    let haproxy = Haproxy::start(&[(a.port(), "send-proxy-v2"), (b.port(), "send-proxy-v2")]);
    let front = haproxy.port;
    // Six clients at once, two messages each, through both instances: five in all get through.
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                (0..2)
                    .map(|_| one_message(front, "127.0.0.1", Some("alice")).0)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let codes: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(codes.iter().filter(|&&c| c == 250).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 452).count(), 7, "{codes:?}");
    assert_eq!(up.wait_messages(5).len(), 5);
    // Both instances served alice, and both counted into the one Redis window.
    for d in [&a, &b] {
        d.wait_log("user=alice");
    }
    assert_eq!(
        redis
            .cli(&["HVALS", "sap:w:m:600:u:alice"])
            .lines()
            .map(|n| n.parse::<u32>().unwrap())
            .sum::<u32>(),
        5
    );
}

#[test]
fn an_address_locked_out_by_auth_failures_on_one_instance_is_locked_out_on_the_other() {
    let Some(redis) = Redis::start() else { return };
    let up = Upstream::start(&[]);
    let global = redis.conf("");
    let a = daemon("lock-a", &up, &global, "Auth_Failure_Limit = 2", "");
    let b = daemon("lock-b", &up, &global, "Auth_Failure_Limit = 2", "");
    let auth = |d: &Daemon, from: &str, pw: &str| {
        let mut c = session(d.port(), from, None);
        c.cmd(&format!("AUTH PLAIN {}", plain_response("alice", pw)))
    };
    assert_eq!(auth(&a, "127.0.0.9", "guess1").0, 535);
    assert_eq!(auth(&a, "127.0.0.9", "guess2").0, 535);
    // On the other instance, from the guesser's address: refused unchecked, the right
    // password included.
    let (code, text) = auth(&b, "127.0.0.9", "pa");
    assert_eq!(code, 454, "{text}");
    assert!(
        text.contains("Too many failed authentication attempts"),
        "{text}"
    );
    // The owner from elsewhere is not locked out.
    assert_eq!(auth(&b, "127.0.0.10", "pa").0, 235);
}

/// Sends `total` messages, one session each, as alice, telling `progress` how far it got.
/// Returns how many got 250 at the end of DATA, and every refusal's reply.
fn load(port: u16, total: usize, progress: &AtomicUsize) -> (usize, Vec<(u16, String)>) {
    let mut accepted = 0;
    let mut refused = Vec::new();
    for i in 0..total {
        progress.store(i, Ordering::SeqCst);
        let mut c = Client::connect(port);
        assert_eq!(c.reply().0, 220);
        c.cmd("EHLO me");
        let r = c.cmd(&format!("AUTH PLAIN {}", plain_response("alice", "pa")));
        if r.0 != 235 {
            refused.push(r);
            continue;
        }
        let s = send(&mut c, 1);
        match s.data {
            Some(250) => accepted += 1,
            _ => refused.push(s.rcpts.first().cloned().unwrap_or(s.mail)),
        }
        c.cmd("QUIT");
    }
    progress.store(total, Ordering::SeqCst);
    (accepted, refused)
}

/// Redis stopped a third of the way through a load and started again at two thirds.
fn redis_outage_under_load(mode: &str) -> (Redis, Daemon, Upstream, usize, Vec<(u16, String)>) {
    let mut redis = Redis::start().expect("checked by the caller");
    let up = Upstream::start(&[]);
    let global = redis.conf(&format!("timeout = 0.2 failure_mode = {mode}"))
        + "\nPrometheus_Listener { Listen \"127.0.0.1:0\" { } }";
    let d = daemon(
        &format!("outage-{mode}"),
        &up,
        &global,
        r#"User_Message_Limit = "1000/600""#,
        "",
    );
    let port = d.port();
    let progress = Arc::new(AtomicUsize::new(0));
    let p = progress.clone();
    let driver = std::thread::spawn(move || load(port, 60, &p));
    let wait_for = |n: usize| {
        eventually(Duration::from_secs(60), "the load goes on", || {
            progress.load(Ordering::SeqCst) >= n
        })
    };
    wait_for(20);
    redis.stop();
    wait_for(40);
    redis.run();
    let (mut accepted, mut refused) = driver.join().unwrap();
    // The daemon notices within a second of Redis's return; more mail until it has.
    let sent = AtomicUsize::new(0);
    eventually(Duration::from_secs(10), "recovery logged", || {
        let (a, r) = load(port, 1, &sent);
        accepted += a;
        refused.extend(r);
        d.log().contains("answering again")
    });
    // Nothing lost: every message the client got 250 for reached the next hop.
    assert_eq!(up.wait_messages(accepted).len(), accepted, "{refused:?}");
    // Logged once when it went, once when it came back; counting again afterwards.
    let log = d.log();
    assert_eq!(count(&log, "counters unavailable"), 1, "{log}");
    assert_eq!(count(&log, "answering again"), 1, "{log}");
    assert!(
        redis.cli(&["EXISTS", "sap:w:m:600:u:alice"]) == "1",
        "counted in Redis again after the restart"
    );
    (redis, d, up, accepted, refused)
}

#[test]
fn redis_stopped_and_started_under_load_fails_open_and_loses_nothing() {
    if Redis::start().is_none() {
        return;
    }
    let (_redis, _d, _up, accepted, refused) = redis_outage_under_load("open");
    // failure_mode = open: the outage refused nothing.
    assert!(refused.is_empty(), "{refused:?}");
    assert!(accepted >= 60);
}

#[test]
fn redis_stopped_and_started_under_load_fails_closed_and_loses_nothing() {
    if Redis::start().is_none() {
        return;
    }
    let (_redis, d, up, accepted, refused) = redis_outage_under_load("closed");
    // failure_mode = closed: temporary refusals while Redis was away, nothing else.
    assert!(!refused.is_empty(), "the outage refused nothing");
    for (code, text) in &refused {
        assert!(
            (*code == 451 && text.contains("4.7.1 Sending limits cannot be checked"))
                || (*code == 454 && text.contains("4.7.0")),
            "{code} {text}"
        );
    }
    assert!(accepted + refused.len() >= 60);
    // Mail flows again without a restart.
    assert_eq!(one_message(d.port(), "127.0.0.1", Some("alice")).0, 250);
    assert_eq!(up.wait_messages(accepted + 1).len(), accepted + 1);
    // Counted: the exchanges that failed, and the mail refused for want of them.
    let metrics = scrape(&d);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    assert!(value("smtp_auth_proxy_shared_counters_errors_total") >= refused.len() as f64);
    let at_mail = refused.iter().filter(|r| r.0 == 451).count();
    assert_eq!(
        value("smtp_auth_proxy_sending_limit_refusals_total"),
        at_mail as f64
    );
}

/// The daemon's /metrics (its port from the log), with curl.
fn scrape(d: &Daemon) -> String {
    let needle = "serving metrics on 127.0.0.1:";
    let log = d.wait_log(needle);
    let rest = &log[log.rfind(needle).unwrap() + needle.len()..];
    let port = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap();
    let out = run(
        "curl",
        &["-sSf", &format!("http://127.0.0.1:{port}/metrics")],
    );
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}
