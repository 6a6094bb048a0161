//! Listener options the Momentum 4.x manual prints that this server once ignored, end to end:
//! the daemon, a real next hop (aiosmtpd), swaks, and raw clients from chosen loopback
//! addresses where a session has to be held open.

mod common;

use common::TempDir;
use common::daemon::{Client, Daemon, Upstream, swaks};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A daemon relaying to a real next hop, with `global` settings and `listener` as the body of
/// ESMTP_Listener.
fn daemon(tag: &str, global: &str, listener: &str, listens: usize) -> (Upstream, Daemon) {
    let up = Upstream::start(&[]);
    let conf = format!(
        "Gateway = \"127.0.0.1:{}\"\n{global}\nESMTP_Listener {{\n{listener}\n}}\n",
        up.port
    );
    let d = Daemon::start(TempDir::new(tag), &conf, listens);
    (up, d)
}

fn connect(ip: &str, port: u16) -> Client {
    Client::from_stream(TcpStream::connect((ip, port)).unwrap())
}

/// Whether the server ended the connection (end of stream), not merely went quiet: the
/// client's read timeout (20 s) is far beyond any limit these tests set.
fn ended_by_server(c: &mut Client) -> bool {
    let mut b = [0u8; 256];
    matches!(c.stream.read(&mut b), Ok(0))
}

/// swaks saw the next hop's own 250 after DATA.
fn queued(transcript: &str) -> bool {
    transcript
        .lines()
        .any(|l| l.starts_with("<-  250 ") && l.contains(" queued as "))
}

fn refused_for_concurrency(transcript: &str) -> bool {
    transcript
        .lines()
        .any(|l| l.ends_with("421 4.4.5 Service unavailable, concurrency limit reached."))
}

#[test]
fn proxy_protocol_timeout_bounds_the_wait_for_the_header_and_nothing_else() {
    let (_up, d) = daemon(
        "ppto",
        "relay_hosts = ( \"203.0.113.0/24\" )",
        r#"
  Proxy_Protocol = true
  Listen "127.0.0.1:0" { Proxy_Protocol_Timeout = 1 }
  Listen "127.0.0.2:0" { Idle_Time = 1 }
"#,
        2,
    );
    let (timed, default) = (d.ports[0], d.ports[1]);
    const HEADER: &str = "PROXY TCP4 203.0.113.9 127.0.0.1 4444 25";

    // Part of a header, then nothing: closed after Proxy_Protocol_Timeout, without a banner,
    // long before Idle_Time (300 s by default) would.
    let mut c = connect("127.0.0.1", timed);
    c.send_raw(HEADER.as_bytes());
    d.wait_log("no PROXY protocol header within Proxy_Protocol_Timeout (1s)");
    assert!(ended_by_server(&mut c));

    // A whole header: from then on the session runs under Idle_Time, however long the
    // header timeout has been over, and the header's address is the client's.
    let mut c = connect("127.0.0.1", timed);
    c.send(HEADER);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("EHLO me").0, 250);
    assert_eq!(c.relay_code(), 250, "203.0.113.9 is in relay_hosts");

    // Unset, the wait is Momentum's 60 s, not Idle_Time: a header that takes longer than
    // Idle_Time still opens the session, and only then does Idle_Time apply.
    let mut c = connect("127.0.0.2", default);
    c.send_raw(HEADER.as_bytes());
    std::thread::sleep(Duration::from_millis(2500));
    c.send_raw(b"\r\n");
    assert_eq!(c.reply().0, 220);
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert!(ended_by_server(&mut c));
}

/// Connects from `from` and expects the greeting.
fn greeted(from: &str, port: u16) -> Client {
    let mut c = Client::connect_from(from, port);
    let (code, text) = c.reply();
    assert_eq!(code, 220, "from {from}: {text}");
    c
}

/// Connects from `from` and expects the concurrency refusal, then the end of the connection.
fn refused(from: &str, port: u16) {
    let mut c = Client::connect_from(from, port);
    let (code, text) = c.reply();
    assert_eq!(
        (code, text.as_str()),
        (
            421,
            "4.4.5 Service unavailable, concurrency limit reached.\n"
        ),
        "from {from}"
    );
    assert!(ended_by_server(&mut c));
}

/// Connects from `from` until greeted: a slot given back when a session ends is free once
/// the server has seen the end.
fn greeted_once_free(from: &str, port: u16) -> Client {
    let start = Instant::now();
    loop {
        let mut c = Client::connect_from(from, port);
        if c.reply().0 == 220 {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no slot came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn listener_sessions_in_a_peer_caps_that_peers_clients_under_the_listen_ceiling() {
    let (up, d) = daemon(
        "peercap",
        "relay_hosts = ( \"127.0.0.0/8\" )",
        r#"
  Listener_Sessions = 4
  Peer "127.0.0.0/29" { Listener_Sessions = 2 }
  Listen "127.0.0.1:0" {
    Peer "127.0.0.16/30" { Listener_Sessions = 1 }
  }
"#,
        1,
    );
    let port = d.port();
    // The listener-level Peer's budget: two sessions, the third refused.
    let a1 = greeted("127.0.0.2", port);
    let _a2 = greeted("127.0.0.3", port);
    refused("127.0.0.4", port);
    let t = swaks(port, "--local-interface 127.0.0.5 --to x@remote.example");
    assert!(refused_for_concurrency(&t), "{t}");
    d.wait_log("Listener_Sessions of Peer \"127.0.0.0/29\" reached");
    // The Listen's own Peer has a budget of its own.
    let _b1 = greeted("127.0.0.17", port);
    refused("127.0.0.18", port);
    d.wait_log("Listener_Sessions of Peer \"127.0.0.16/30\" reached");
    // Clients matching no capped Peer are not held back by the Peers' budgets...
    let t = swaks(port, "--local-interface 127.0.0.9 --to x@remote.example");
    assert!(queued(&t), "{t}");
    assert_eq!(up.wait_messages(1).len(), 1);
    // ...but every session counts against the Listen's ceiling of four.
    let _c1 = greeted_once_free("127.0.0.9", port);
    refused("127.0.0.10", port);
    d.wait_log("Listener_Sessions of Listen reached");
    // A session of the full Peer ends: its slot, in both budgets, serves the next client.
    drop(a1);
    let mut a3 = greeted_once_free("127.0.0.6", port);
    assert_eq!(a3.cmd("EHLO me").0, 250);
    assert_eq!(a3.relay_code(), 250);
}

#[test]
fn a_peers_session_budget_counts_the_address_the_proxy_header_gives() {
    let (up, d) = daemon(
        "peercapproxy",
        "relay_hosts = ( \"198.51.100.0/24\" \"203.0.113.0/24\" )",
        r#"
  Listen "127.0.0.1:0" {
    Proxy_Protocol = true
    Peer "203.0.113.0/24" { Listener_Sessions = 1 }
  }
"#,
        1,
    );
    let port = d.port();
    let via = |source: &str| {
        swaks(
            port,
            &format!(
                "--proxy-version 2 --proxy-family AF_INET --proxy-source {source} \
                 --proxy-source-port 4444 --proxy-dest 127.0.0.1 --proxy-dest-port 25 \
                 --to x@remote.example"
            ),
        )
    };
    let mut held = connect("127.0.0.1", port);
    held.send("PROXY TCP4 203.0.113.9 127.0.0.1 4444 25");
    assert_eq!(held.reply().0, 220);
    let t = via("203.0.113.10");
    assert!(refused_for_concurrency(&t), "{t}");
    let t = via("198.51.100.1");
    assert!(queued(&t), "{t}");
    assert_eq!(up.wait_messages(1).len(), 1);
}
