//! The metrics endpoint end to end: real clients (Python's smtplib, raw sockets) drive known
//! traffic through the daemon, and the counts read back over HTTP with curl must be exactly
//! what they did; the exposition passes `promtool check metrics`; bad requests get their
//! status; a reload moves the endpoint; the `Prometheus_Listener` scope is checked like the
//! rest of the configuration.

mod common;

use common::daemon::{Certs, Client, Daemon, Upstream, auth_plain, dead_port, run, sqlite};
use common::{TempDir, build};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The port of the daemon's metrics endpoint, from its log.
fn metrics_port(d: &Daemon, ip: &str) -> u16 {
    let needle = format!("serving metrics on {ip}:");
    let log = d.wait_log(&needle);
    let rest = &log[log.rfind(&needle).unwrap() + needle.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `GET /metrics` with curl.
fn scrape(ip: &str, port: u16) -> String {
    let out = run("curl", &["-sSf", &format!("http://{ip}:{port}/metrics")]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of one series (`name{labels}` exactly as exposed).
fn value(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// Scrapes until `series` reads `want` (sessions end a little after their client does).
fn settle(ip: &str, port: u16, series: &str, want: f64) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(ip, port);
        if value(&text, series) == want {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{series} never became {want}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `promtool check metrics` on an exposition; panics with its complaints.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The client side of the traffic, in Python's smtplib: one step per run, its reply codes
/// printed as `name=code` lines.
const CLIENT: &str = r#"
import base64, smtplib, socket, ssl, sys
port, step, arg = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def smtp(src):
    s = smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(src, 0))
    s.ehlo()
    return s
def tls(s):
    s.starttls(context=ctx)
    s.ehlo()
def plain(s, user, pw):
    return s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{pw}".encode()).decode())[0]
def say(name, code):
    print(f"{name}={code}", flush=True)
if step == "alice":
    s = smtp("127.0.0.1"); tls(s)
    say("bad", plain(s, "alice", "wrong"))
    say("good", plain(s, "alice", "pw"))
    say("mail", s.mail("alice@example.com")[0])
    say("rcpt", s.rcpt("bob@remote.example")[0])
    say("data", s.data(arg.encode())[0])
    s.quit()
elif step in ("127.0.0.2", "127.0.0.3"):
    s = smtp(step)
    say("mail", s.mail("robot@example.com")[0])
    say("rcpt", s.rcpt("bob@remote.example")[0])
    s.quit()
elif step == "unauthenticated":
    s = smtp("127.0.0.1")
    say("xclient", s.docmd("XCLIENT", "ADDR=192.0.2.1")[0])
    say("mail", s.mail("someone@example.com")[0])
    say("denied", s.rcpt("bob@remote.example")[0])
    say("domain", s.rcpt("y@local.example")[0])
    say("postmaster", s.rcpt("postmaster")[0])
    s.quit()
elif step == "mallory":
    s = smtp("127.0.0.4"); tls(s)
    for i in range(4):
        say(f"try{i}", plain(s, "mallory", "guess"))
    s.quit()
elif step == "login":
    s = smtp("127.0.0.5"); tls(s)
    say("user", s.docmd("AUTH", "LOGIN " + base64.b64encode(b"alice").decode())[0])
    say("login", s.docmd(base64.b64encode(b"pw").decode())[0])
    s.quit()
elif step == "implicit":
    a = ctx.wrap_socket(socket.socket(socket.AF_UNIX))
    a.connect(arg)
    fa = a.makefile("rb")
    say("banner", fa.readline()[:3].decode())
    b = socket.socket(socket.AF_UNIX); b.connect(arg)
    say("second", b.makefile("rb").readline()[:3].decode())
    b.close()
    a.sendall(b"QUIT\r\n")
    say("quit", fa.readline()[:3].decode())
    a.close()
elif step == "not-tls":
    c = socket.socket(socket.AF_UNIX); c.connect(arg)
    c.sendall(b"EHLO not-a-tls-client\r\n\r\n")
    while c.recv(4096):
        pass
    say("closed", 0)
"#;

/// Runs one step of [`CLIENT`]; returns its `name=code` pairs.
fn client(port: u16, step: &str, arg: &str) -> Vec<(String, String)> {
    let out = run("python3", &["-c", CLIENT, &port.to_string(), step, arg]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{step}: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn code(replies: &[(String, String)], name: &str) -> String {
    replies
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {replies:?}"))
        .1
        .clone()
}

fn class(code: &str) -> String {
    format!("{}xx", &code[..1])
}

#[test]
fn counts_read_back_over_http_are_exactly_the_traffic_real_clients_made() {
    let dir = TempDir::new("metrics");
    let certs = Certs::new(dir.path());
    let up = Upstream::start_with(
        &[("alice", "pw")],
        &[
            "--tls",
            certs.cert.to_str().unwrap(),
            certs.key.to_str().unwrap(),
        ],
    );
    let dead = dead_port();
    let live = up.port;
    let smtps = dir.path().join("smtps.sock");
    let conf = format!(
        r#"
Gateway = "127.0.0.1:{up}"
relay_hosts = ( "127.0.0.2/32" )
relay_domains = ( "local.example" )
smtp_auth_proxy {{ host = ( "127.0.0.1:{dead}" "127.0.0.1:{up}" ) timeout = 10 pool = 0 }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH LOGIN" "AUTH PLAIN" STARTTLS ENHANCEDSTATUSCODES )
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" ]
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  TLS_Certificate = "{cert}"
  TLS_Key = "{key}"
  Auth_Failure_Limit = 3
  Listen "127.0.0.1:0" {{
    Peer "127.0.0.3/32" {{ open_relay = true }}
  }}
  Listen "{smtps}" {{
    Use_SSL = true
    Listener_Sessions = 1
  }}
}}
Prometheus_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
        up = up.port,
        cert = certs.cert.display(),
        key = certs.key.display(),
        smtps = smtps.display(),
    );
    let d = Daemon::start(TempDir::new("metrics-d"), &conf, 2);
    let port = d.port();
    let mp = metrics_port(&d, "127.0.0.1");
    let before = scrape("127.0.0.1", mp);
    promtool_check(&before);
    let tcp = "listen=\"127.0.0.1:0\"";
    let unix = format!("listen=\"{}\"", smtps.display());
    assert_eq!(
        value(&before, &format!("smtp_auth_proxy_sessions_total{{{tcp}}}")),
        0.0
    );

    // Alice: a wrong password, the right one, then a message over the Gateway. Each AUTH
    // finds the first host dead and asks the second over STARTTLS.
    let message = "Subject: metrics\r\n\r\n.a line that starts with a dot\r\nbody\r\n";
    let alice = client(port, "alice", message);
    assert_eq!(code(&alice, "bad"), "535");
    assert_eq!(code(&alice, "good"), "235");
    assert_eq!(code(&alice, "data"), "250");
    // The queue delivers it to the Gateway (before the upstream, which is also the Gateway,
    // goes away below).
    up.wait_messages(1);
    // A relay host, and a Peer with open_relay: no AUTH needed.
    let relay_host = client(port, "127.0.0.2", "");
    let open_relay = client(port, "127.0.0.3", "");
    // Without AUTH: an X-command refused, one recipient denied, relay_domains and
    // <postmaster> accepted (each passed to the next hop, whose answer is relayed).
    let unauthenticated = client(port, "unauthenticated", "");
    assert_eq!(code(&unauthenticated, "xclient"), "550");
    assert_eq!(code(&unauthenticated, "denied"), "550");
    // Mallory guesses: three failures (the third after the throttle's delay), then refused
    // without the upstream being asked.
    let mallory = client(port, "mallory", "");
    let tries: Vec<String> = (0..4).map(|i| code(&mallory, &format!("try{i}"))).collect();
    assert_eq!(tries, ["535", "535", "535", "454"]);
    // A STARTTLS whose handshake is garbage.
    let (mut c, _) = Client::ehlo(port);
    assert_eq!(c.cmd("STARTTLS").0, 220);
    c.send_raw(b"this is not a TLS ClientHello\r\n");
    assert!(c.closed());
    // Implicit TLS on the Unix socket, whose Listener_Sessions (1) refuses a second client.
    let implicit = client(0, "implicit", smtps.to_str().unwrap());
    assert_eq!(
        [
            code(&implicit, "banner"),
            code(&implicit, "second"),
            code(&implicit, "quit")
        ],
        ["220", "421", "221"]
    );
    settle(
        "127.0.0.1",
        mp,
        &format!("smtp_auth_proxy_sessions_open{{{unix}}}"),
        0.0,
    );
    client(0, "not-tls", smtps.to_str().unwrap());
    // The upstream goes away: AUTH LOGIN meets no host that can decide.
    drop(up);
    let login = client(port, "login", "");
    assert_eq!(code(&login, "login"), "454");

    let text = settle(
        "127.0.0.1",
        mp,
        &format!("smtp_auth_proxy_sessions_open{{{tcp}}}"),
        0.0,
    );
    promtool_check(&text);
    let v = |series: &str| value(&text, series);
    let dead = format!("127.0.0.1:{dead}");
    let good = format!("127.0.0.1:{live}");
    let expected: Vec<(String, f64)> = vec![
        // alice, 127.0.0.2, 127.0.0.3, unauthenticated, mallory, the failed STARTTLS, login.
        (format!("smtp_auth_proxy_sessions_total{{{tcp}}}"), 7.0),
        (format!("smtp_auth_proxy_sessions_total{{{unix}}}"), 2.0),
        (
            format!("smtp_auth_proxy_sessions_refused_total{{{unix}}}"),
            1.0,
        ),
        (
            format!("smtp_auth_proxy_sessions_refused_total{{{tcp}}}"),
            0.0,
        ),
        (format!("smtp_auth_proxy_sessions_open{{{unix}}}"), 0.0),
        (auth("PLAIN", "pass"), 1.0),
        (auth("PLAIN", "fail"), 4.0),
        (auth("PLAIN", "error"), 0.0),
        (auth("LOGIN", "error"), 1.0),
        (auth("LOGIN", "pass"), 0.0),
        ("smtp_auth_proxy_auth_throttled_total".into(), 1.0),
        // Every AUTH that reached the back end tried the dead host first.
        (upstream(&dead, "error"), 6.0),
        (upstream(&good, "pass"), 1.0),
        (upstream(&good, "fail"), 4.0),
        (upstream(&good, "error"), 1.0),
        (
            format!("smtp_auth_proxy_upstream_auth_duration_seconds_count{{upstream=\"{good}\"}}"),
            6.0,
        ),
        (
            format!("smtp_auth_proxy_upstream_auth_duration_seconds_count{{upstream=\"{dead}\"}}"),
            6.0,
        ),
        (relay("auth"), 1.0),
        (relay("relay_hosts"), 1.0),
        (relay("open_relay"), 1.0),
        (relay("relay_domains"), 1.0),
        (relay("postmaster"), 1.0),
        (relay("denied"), 1.0),
        (
            "smtp_auth_proxy_xcommand_refusals_total{command=\"XCLIENT\"}".into(),
            1.0,
        ),
        ("smtp_auth_proxy_messages_relayed_total".into(), 1.0),
        (
            "smtp_auth_proxy_relayed_message_bytes_total".into(),
            message.len() as f64,
        ),
        // Mail goes into the spool, not to a next hop in the session: the queue delivered
        // alice's message, one recipient.
        (hop("connect", "2xx"), 0.0),
        (hop("data", "3xx"), 0.0),
        (hop("message", "2xx"), 0.0),
        (
            "smtp_auth_proxy_deliveries_total{outcome=\"delivered\"}".into(),
            1.0,
        ),
        (
            "smtp_auth_proxy_deliveries_total{outcome=\"deferred\"}".into(),
            0.0,
        ),
        // alice, mallory and the AUTH LOGIN client.
        (tls("starttls", "ok"), 3.0),
        (tls("starttls", "failed"), 1.0),
        (tls("implicit", "ok"), 1.0),
        (tls("implicit", "failed"), 1.0),
        // One per AUTH that reached the live upstream while it was up.
        (tls("upstream", "ok"), 5.0),
        (tls("upstream", "failed"), 0.0),
        (
            "smtp_auth_proxy_reloads_total{result=\"success\"}".into(),
            0.0,
        ),
        ("smtp_auth_proxy_config_last_reload_successful".into(), 1.0),
    ];
    for (series, want) in &expected {
        assert_eq!(v(series), *want, "{series}\n{text}");
    }
    // No session spoke to a next hop itself: MAIL and RCPT were answered here, for the
    // spool.
    for (replies, steps) in [
        (&alice, &["mail", "rcpt"][..]),
        (&relay_host, &["mail", "rcpt"][..]),
        (&open_relay, &["mail", "rcpt"][..]),
        (&unauthenticated, &["mail", "domain", "postmaster"][..]),
    ] {
        for step in steps {
            assert_eq!(class(&code(replies, step)), "2xx", "{step}");
        }
    }
    for command in ["mail", "rcpt"] {
        for c in ["2xx", "4xx", "5xx", "error"] {
            assert_eq!(v(&hop(command, c)), 0.0, "{command} {c}\n{text}");
        }
    }
}

fn auth(mechanism: &str, outcome: &str) -> String {
    format!(
        "smtp_auth_proxy_auth_attempts_total{{mechanism=\"{mechanism}\",outcome=\"{outcome}\"}}"
    )
}

fn upstream(host: &str, outcome: &str) -> String {
    format!("smtp_auth_proxy_upstream_auth_total{{upstream=\"{host}\",outcome=\"{outcome}\"}}")
}

fn relay(decision: &str) -> String {
    format!("smtp_auth_proxy_relay_decisions_total{{decision=\"{decision}\"}}")
}

fn hop(command: &str, class: &str) -> String {
    format!("smtp_auth_proxy_next_hop_replies_total{{command=\"{command}\",class=\"{class}\"}}")
}

fn tls(kind: &str, result: &str) -> String {
    format!("smtp_auth_proxy_tls_handshakes_total{{kind=\"{kind}\",result=\"{result}\"}}")
}

#[test]
fn datasource_lookups_count_hits_misses_and_stale_answers() {
    let a = Upstream::start(&[("alice@a.example", "pa")]);
    let b = Upstream::start(&[("bob", "pb")]);
    let dir = TempDir::new("metrics-ds");
    let db = dir.path().join("upstreams.sqlite");
    sqlite(
        &db,
        &format!(
            "CREATE TABLE auth_servers (username TEXT, host TEXT);
             INSERT INTO auth_servers VALUES ('alice@a.example', '127.0.0.1:{}');",
            a.port
        ),
    );
    let conf = format!(
        r#"
Datasource "up" {{ uri = ( "sqlite:{db}" ) cache_life = 1 }}
smtp_auth_proxy {{
  host = "127.0.0.1:{b}" timeout = 5 ds_cache = "up" pool = 0
  query = "SELECT host FROM auth_servers WHERE username = :username"
}}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:0" {{ }}
}}
Prometheus_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
        db = db.display(),
        b = b.port
    );
    let d = Daemon::start(TempDir::new("metrics-ds-d"), &conf, 1);
    let mp = metrics_port(&d, "127.0.0.1");
    // Looked up (miss), then from the cache (hit); bob has no row: the configured host.
    assert_eq!(auth_plain(d.port(), "alice@a.example", "pa").0, 235);
    assert_eq!(auth_plain(d.port(), "alice@a.example", "pa").0, 235);
    assert_eq!(auth_plain(d.port(), "bob", "pb").0, 235);
    // The database breaks: alice's expired answer is served (stale); dave has none (454).
    sqlite(&db, "DROP TABLE auth_servers;");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(auth_plain(d.port(), "alice@a.example", "pa").0, 235);
    assert_eq!(auth_plain(d.port(), "dave", "x").0, 454);
    let text = scrape("127.0.0.1", mp);
    promtool_check(&text);
    let cache = |result: &str| {
        value(
            &text,
            &format!(
                "smtp_auth_proxy_datasource_cache_total{{datasource=\"up\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(
        (cache("hit"), cache("miss"), cache("stale")),
        (1.0, 3.0, 1.0)
    );
    assert_eq!(
        value(
            &text,
            "smtp_auth_proxy_datasource_lookup_errors_total{datasource=\"up\"}"
        ),
        2.0
    );
    // Four queries reached the database: alice, bob, alice again once expired, dave.
    assert_eq!(
        value(
            &text,
            "smtp_auth_proxy_datasource_lookup_duration_seconds_count{datasource=\"up\"}"
        ),
        4.0
    );
    // A host a datasource named is counted as `datasource`; the configured one by name.
    assert_eq!(value(&text, &upstream("datasource", "pass")), 3.0, "{text}");
    assert_eq!(
        value(&text, &upstream(&format!("127.0.0.1:{}", b.port), "pass")),
        1.0
    );
    assert_eq!(value(&text, &auth("PLAIN", "error")), 1.0);
}

/// Sends `request` raw and reads the whole response until the server closes (or 5 s).
fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_endpoint_answers_bad_requests_with_their_status_and_keeps_serving() {
    let conf = r#"
ESMTP_Listener { Listen "127.0.0.1:0" { } }
Prometheus_Listener { Listen "127.0.0.1:0" { } }
"#;
    let d = Daemon::start(TempDir::new("metrics-http"), conf, 1);
    let mp = metrics_port(&d, "127.0.0.1");
    let cases: Vec<(&[u8], &str)> = vec![
        (b"garbage\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"),
        (b"GET /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "),
        (b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", "HTTP/1.1 505 "),
        (
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 405 Method Not Allowed\r\n",
        ),
        (
            b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\n",
        ),
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
    ];
    for (request, status) in cases {
        let response = raw(mp, request);
        assert!(
            response.starts_with(status),
            "{:?} -> {response}",
            String::from_utf8_lossy(request)
        );
        assert!(response.contains("Connection: close\r\n"), "{response}");
    }
    // A head that never ends within the limit: 431, and the connection closed.
    let mut long = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    while long.len() < 10_000 {
        long.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert!(raw(mp, &long).starts_with("HTTP/1.1 431 "));
    // HEAD: the headers GET would send, no body.
    let head = raw(
        mp,
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (headers, body) = head.split_once("\r\n\r\n").unwrap();
    assert!(headers.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(headers.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 1000, "{headers}");
    assert_eq!(body, "");
    // Keep-alive: two requests pipelined on one connection, both answered, the second
    // closing; a HTTP/1.0 request closes unless asked to keep the connection.
    let two = raw(
        mp,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics?again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(two.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{two}");
    let old = raw(mp, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(old.starts_with("HTTP/1.1 200 OK\r\n") && old.contains("Connection: close\r\n"));
    // And a scraper still gets its metrics.
    assert!(scrape("127.0.0.1", mp).contains("smtp_auth_proxy_build_info{version="));
}

#[test]
fn a_reload_moves_the_endpoint_and_counts_its_result() {
    let conf = |metrics: &str| {
        format!(
            "ESMTP_Listener {{ Listen \"127.0.0.1:0\" {{ }} }}\nPrometheus_Listener {{ Listen \"{metrics}\" {{ }} }}\n"
        )
    };
    let d = Daemon::start(TempDir::new("metrics-reload"), &conf("127.0.0.1:0"), 1);
    let hup = || run("kill", &["-HUP", &d.pid().to_string()]);
    let old = metrics_port(&d, "127.0.0.1");
    d.dir.write("ecelerity.conf", &conf("127.0.0.2:0"));
    hup();
    d.wait_log("reconfigured (generation");
    let new = metrics_port(&d, "127.0.0.2");
    let text = scrape("127.0.0.2", new);
    assert_eq!(
        value(&text, "smtp_auth_proxy_reloads_total{result=\"success\"}"),
        1.0
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", old)).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the old address still serves metrics"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // An invalid file: counted as a failure, and the endpoint serves on.
    d.dir.write(
        "ecelerity.conf",
        "ESMTP_Listener {\n  Open_Relay = perhaps\n}\n",
    );
    hup();
    d.wait_log("Reconfigure failed: ");
    let text = scrape("127.0.0.2", new);
    assert_eq!(
        value(&text, "smtp_auth_proxy_reloads_total{result=\"failure\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "smtp_auth_proxy_config_last_reload_successful"),
        0.0
    );
}

/// The one error `text` has.
fn error_of(text: &str) -> String {
    let (_, msgs) = build(text);
    let errors: Vec<&String> = msgs.iter().filter(|m| m.contains(": error: ")).collect();
    assert_eq!(errors.len(), 1, "{msgs:#?}");
    errors[0].clone()
}

#[test]
fn the_prometheus_listener_scope_is_checked_with_file_positions() {
    let base = "ESMTP_Listener { Listen \"127.0.0.1:25\" { } }\n";
    assert_eq!(
        error_of(&format!(
            "{base}Prometheus_Listener {{\n  Listen \"/run/metrics.sock\" {{ }}\n}}\n"
        )),
        "test.conf:3:3: error: Prometheus_Listener Listen \"/run/metrics.sock\": metrics are served over TCP; give `address:port`"
    );
    assert_eq!(
        error_of(&format!(
            "{base}Prometheus_Listener {{\n  Listen \"localhost:9725\" {{ }}\n}}\n"
        )),
        "test.conf:3:3: error: Prometheus_Listener Listen \"localhost:9725\": `localhost` is not an IP address (Listen binds addresses, not host names)"
    );
    assert_eq!(
        error_of(&format!(
            "{base}Prometheus_Listener {{ Listen \"127.0.0.1:25\" {{ }} }}\n"
        )),
        "test.conf:2:23: error: Prometheus_Listener Listen `127.0.0.1:25` is the address of the ESMTP_Listener Listen at test.conf:1:18"
    );
    assert_eq!(
        error_of(&format!(
            "{base}Prometheus_Listener {{\n  Listen \"127.0.0.1:9725\" {{ Enable = maybe }}\n}}\n"
        )),
        "test.conf:3:38: error: `Enable` takes a boolean (true/false, yes/no, on/off, enabled/disabled, 1/0), found `maybe`"
    );
    assert!(
        error_of(&format!(
            "{base}Prometheus_Listener {{ Listen \"127.0.0.1:9725\" {{ Enabel = false }} }}\n"
        ))
        .contains("did you mean `enable`?")
    );
    // A wildcard address is allowed, with a warning; a disabled Listen serves nothing.
    let (config, msgs) = build(&format!(
        "{base}Prometheus_Listener {{ Listen \":9725\" {{ }} Listen \"127.0.0.1:9726\" {{ Enable = false }} }}\n"
    ));
    assert!(!msgs.iter().any(|m| m.contains(": error: ")), "{msgs:#?}");
    assert!(
        msgs.iter().any(|m| m
            .contains("warning: Prometheus_Listener Listen \"*:9725\" serves metrics to anyone")),
        "{msgs:#?}"
    );
    let p = config.prometheus_listener.unwrap();
    let served: Vec<String> = p.enabled_listens().map(|a| a.to_string()).collect();
    assert_eq!(served, ["*:9725"]);
}

/// The example rules' unit test: an upstream whose every attempt errors while another
/// answers, and 20 % of AUTH ending in 454; the reload alert stays quiet.
const ALERT_TESTS: &str = r#"
rule_files: [ RULES ]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'smtp_auth_proxy_upstream_auth_total{instance="edge1",upstream="10.0.0.5:25",outcome="error"}'
        values: '0+10x30'
      - series: 'smtp_auth_proxy_upstream_auth_total{instance="edge1",upstream="10.0.0.5:25",outcome="pass"}'
        values: '0x30'
      - series: 'smtp_auth_proxy_upstream_auth_total{instance="edge1",upstream="10.0.0.6:25",outcome="pass"}'
        values: '0+10x30'
      - series: 'smtp_auth_proxy_upstream_auth_total{instance="edge1",upstream="10.0.0.6:25",outcome="error"}'
        values: '0+1x30'
      - series: 'smtp_auth_proxy_auth_attempts_total{instance="edge1",mechanism="PLAIN",outcome="error"}'
        values: '0+2x30'
      - series: 'smtp_auth_proxy_auth_attempts_total{instance="edge1",mechanism="PLAIN",outcome="pass"}'
        values: '0+8x30'
      - series: 'smtp_auth_proxy_config_last_reload_successful{instance="edge1"}'
        values: '1x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: SmtpAuthProxyUpstreamDown
        exp_alerts:
          - exp_labels: { severity: critical, instance: edge1, upstream: "10.0.0.5:25" }
            exp_annotations:
              summary: "edge1: upstream 10.0.0.5:25 gives no AUTH verdict"
              description: "Every AUTH attempt on it in the last 5 minutes failed (refused, timed out, TLS or protocol error). Later hosts in `host` are tried in turn; users routed to it by a datasource get 454."
      - eval_time: 20m
        alertname: SmtpAuthProxyAuthErrorRatio
        exp_alerts:
          - exp_labels: { severity: warning, instance: edge1 }
            exp_annotations:
              summary: "edge1: 20% of AUTH attempts end in 454"
              description: "The back end could not decide. smtp_auth_proxy_upstream_auth_total by upstream and smtp_auth_proxy_datasource_lookup_errors_total tell which part is failing."
      - eval_time: 20m
        alertname: SmtpAuthProxyReloadFailed
        exp_alerts: []
"#;

#[test]
fn the_example_alerts_pass_promtool_and_fire_on_a_dead_upstream_and_many_auth_errors() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/prometheus-alerts.yml");
    let out = run("promtool", &["check", "rules", rules]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Every metric the rules use is one the daemon exports.
    // (A family shows once it has a series: one upstream and one datasource make them.)
    let metrics = smtp_auth_proxy::metrics::Metrics::new();
    let _handles = (metrics.upstream("x:25"), metrics.datasource("x"));
    let exported = metrics.encode();
    let text = std::fs::read_to_string(rules).unwrap();
    let used: std::collections::BTreeSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("smtp_auth_proxy_"))
        .collect();
    assert!(used.len() >= 3, "{used:?}");
    for name in used {
        assert!(
            exported.contains(&format!("# TYPE {name} ")),
            "{name} is not exported"
        );
    }
    let dir = TempDir::new("alerts");
    let tests = dir.write("tests.yml", &ALERT_TESTS.replace("RULES", rules));
    let out = run("promtool", &["test", "rules", tests.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
