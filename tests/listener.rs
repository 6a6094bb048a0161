//! The listener end to end: the daemon binary, clients nobody here wrote (swaks, curl,
//! Python's smtplib), and a real next hop and AUTH upstream (aiosmtpd).

mod common;

use common::TempDir;
use common::daemon::{
    Client, Daemon, SyslogSink, Upstream, dead_port, make_cert, run, run_words, swaks,
};
use std::time::{Duration, Instant};

/// A real next hop, and a daemon relaying to it with `global` settings and `listener` as the
/// body of ESMTP_Listener.
fn gatewayed(tag: &str, global: &str, listener: &str) -> (Upstream, Daemon) {
    let up = Upstream::start(&[]);
    let d = with_gateway(tag, up.port, global, listener, 1);
    (up, d)
}

/// A daemon relaying to `gateway`, with `listener` as the body of ESMTP_Listener.
fn with_gateway(tag: &str, gateway: u16, global: &str, listener: &str, listens: usize) -> Daemon {
    let conf =
        format!("Gateway = \"127.0.0.1:{gateway}\"\n{global}\nESMTP_Listener {{\n{listener}\n}}\n");
    Daemon::start(TempDir::new(tag), &conf, listens)
}

fn has_reply(transcript: &str, reply: &str) -> bool {
    transcript.lines().any(|l| {
        l.trim_start_matches(['<', '*', '-', '~', ' '])
            .starts_with(reply)
    })
}

/// swaks saw our 250 after DATA: the message is in the spool, the queue's to deliver.
fn queued(transcript: &str) -> bool {
    transcript
        .lines()
        .any(|l| l.starts_with("<-  250 ") && l.contains(" queued as "))
}

#[test]
fn relay_host_relays_without_auth_and_adds_received() {
    let (up, d) = gatewayed(
        "relayhost",
        "relay_hosts = ( \"127.0.0.0/8\" )",
        "Listen \"127.0.0.1:0\" { }",
    );
    let t = swaks(d.port(), "--to rcpt@remote.example --from a@b.example");
    assert!(queued(&t), "{t}");
    let msgs = up.wait_messages(1);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["to"][0], "rcpt@remote.example");
    let data = msgs[0]["data"].as_str().unwrap();
    assert!(data.starts_with("Received: from "), "{data}");
    assert!(data.contains("(smtp-auth-proxy) with ESMTP id"), "{data}");
}

#[test]
fn stranger_is_denied_at_rcpt_and_nothing_is_relayed() {
    let (up, d) = gatewayed(
        "stranger",
        "relay_hosts = ( \"10.0.0.0/8\" )\nrelay_domains = ( local.example )",
        "SMTP_Extensions = ( ENHANCEDSTATUSCODES )\nListen \"127.0.0.1:0\" { }",
    );
    let t = swaks(d.port(), "--to rcpt@remote.example");
    assert!(has_reply(&t, "550 5.7.1 relaying denied"), "{t}");
    // relay_domains: accepted from anyone.
    let t = swaks(d.port(), "--to someone@local.example");
    assert!(queued(&t), "{t}");
    let msgs = up.wait_messages(1);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["to"][0], "someone@local.example");
}

/// The main job with `deliver_through_upstream`: AUTH checked by the upstream, then the mail
/// goes through the very upstream session that accepted the AUTH, over STARTTLS, with Python's
/// smtplib.
#[test]
fn auth_through_the_upstream_then_relay_over_starttls() {
    let dir = TempDir::new("authproxy");
    let up = Upstream::start(&[("alice", "s3cret-pw")]);
    let (cert, key) = make_cert(dir.path());
    let conf = format!(
        r#"
smtp_auth_proxy {{ host = "127.0.0.1:{}" timeout = 10 deliver_through_upstream = true }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH LOGIN" "AUTH PLAIN" STARTTLS ENHANCEDSTATUSCODES )
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" log_authentication = "true" ]
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" log_authentication = "true" ]
  TLS_Certificate = "{}"
  TLS_Key = "{}"
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        up.port,
        cert.display(),
        key.display()
    );
    let syslog = SyslogSink::bind(dir.path().join("log.sock"));
    let d = Daemon::start_env(TempDir::new("authproxy-d"), &conf, 1, &[syslog.env()]);
    let script = r#"
import smtplib, ssl, sys
port = int(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.ehlo()
print("before-tls-auth", s.has_extn("auth"))
s.starttls(context=ctx)
s.ehlo()
print("after-tls-auth", s.esmtp_features.get("auth"))
try:
    s.login("alice", "wrong-pw")
except smtplib.SMTPAuthenticationError as e:
    print("bad", e.smtp_code, e.smtp_error.decode())
s.login("alice", "s3cret-pw")
print("good")
s.sendmail("alice@example.com", ["bob@remote.example"], "Subject: hi\r\n\r\nbody\r\n")
s.quit()
print("sent")
"#;
    let out = run("python3", &["-c", script, &d.port().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("before-tls-auth False"), "{text}");
    assert!(
        text.contains("after-tls-auth") && text.contains("LOGIN PLAIN"),
        "{text}"
    );
    assert!(
        text.contains("bad 535 5.7.8 Authentication credentials invalid"),
        "{text}"
    );
    assert!(text.contains("good") && text.contains("sent"), "{text}");
    let msgs = up.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0]["login"], "alice",
        "relayed through the AUTH session"
    );
    assert!(msgs[0]["data"].as_str().unwrap().contains("with ESMTPSA"));
    // acctlog, to syslog facility mail: the failed attempts (PLAIN, then smtplib's LOGIN
    // retry), then the good one.
    let acct: Vec<String> = std::iter::from_fn(|| syslog.recv())
        .filter(|l| l.contains("acctlog: "))
        .take(3)
        .collect();
    assert!(acct.iter().all(|l| l.starts_with("<22>")), "{acct:?}");
    assert!(
        acct[0].ends_with("@alice@0") && acct[2].ends_with("@alice@1"),
        "{acct:?}"
    );
    let log = d.log();
    assert!(
        !log.contains("s3cret-pw") && !log.contains("wrong-pw"),
        "{log}"
    );
}

#[test]
fn upstream_down_is_a_temporary_failure_never_535() {
    let conf = format!(
        r#"
smtp_auth_proxy {{ host = "127.0.0.1:{}" timeout = 5 }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        dead_port()
    );
    let d = Daemon::start(TempDir::new("updown"), &conf, 1);
    let t = swaks(d.port(), "-a PLAIN -au alice -ap pw --quit-after AUTH");
    assert!(has_reply(&t, "454 Temporary authentication failure"), "{t}");
}

#[test]
fn implicit_tls_with_curl_and_password_file() {
    let up = Upstream::start(&[]);
    let d_dir = TempDir::new("ssl");
    let (cert, key) = make_cert(d_dir.path());
    let users = d_dir.write("users", "# test users\ncarol:pa55\n");
    let conf = format!(
        r#"
Gateway = "127.0.0.1:{}"
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" "AUTH LOGIN" )
  AuthPlainParameters = [ uri = "file://{}" ]
  AuthLoginParameters = [ uri = "file://{}" ]
  Listen "127.0.0.1:0" {{
    Use_SSL = true
    TLS_Certificate = "{}"
    TLS_Key = "{}"
  }}
}}
"#,
        up.port,
        users.display(),
        users.display(),
        cert.display(),
        key.display()
    );
    let d = Daemon::start(d_dir, &conf, 1);
    let msg = d.dir.write("msg.txt", "Subject: via curl\r\n\r\nhello\r\n");
    let curl = |user: &str| {
        run_words(
            "curl",
            &format!(
                "-sS --insecure --url smtps://127.0.0.1:{} --user {user} \
                 --mail-from carol@example.com --mail-rcpt dave@remote.example \
                 --upload-file {}",
                d.port(),
                msg.display()
            ),
        )
    };
    let out = curl("carol:pa55");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = up.wait_messages(1);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0]["data"].as_str().unwrap().contains("with ESMTPSA"));
    let out = curl("carol:nope");
    assert!(!out.status.success());
    assert_eq!(up.messages().len(), 1);
}

#[test]
fn xclient_only_from_the_peer_that_has_it() {
    let (up, d) = gatewayed(
        "xclient",
        "relay_hosts = ( \"10.1.0.0/16\" )",
        r#"Peer "127.0.0.2" { SMTP_Extensions = ( XCLIENT ) }
           Listen "127.0.0.1:0" { }"#,
    );
    // From 127.0.0.2 (the trusted peer), swaks' XCLIENT moves the client into relay_hosts.
    let t = swaks(
        d.port(),
        "--local-interface 127.0.0.2 --xclient-addr 10.1.2.3 --to x@remote.example",
    );
    assert!(has_reply(&t, "220 "), "{t}");
    assert!(queued(&t), "{t}");
    // From 127.0.0.1, XCLIENT is neither advertised nor honoured.
    let (mut c, ehlo) = Client::ehlo(d.port());
    assert!(!ehlo.contains("XCLIENT"), "{ehlo}");
    assert_eq!(c.cmd("XCLIENT ADDR=10.1.2.3").0, 550);
    assert_eq!(c.relay_code(), 550);
    assert!(d.wait_log("XCLIENT refused").contains("127.0.0.1"));
    // From the trusted peer: not inside a transaction; LOGIN= means the proxy in front
    // authenticated the user, which lets the client relay from any address.
    let mut c = Client::connect_from("127.0.0.2", d.port());
    c.reply();
    c.cmd("EHLO me");
    c.cmd("MAIL FROM:<a@b.example>");
    assert_eq!(c.cmd("XCLIENT ADDR=10.1.2.3").0, 503);
    c.cmd("RSET");
    assert_eq!(c.cmd("XCLIENT ADDR=192.0.2.7 LOGIN=carol").0, 220);
    let (_, ehlo) = c.cmd("EHLO me");
    assert!(
        ehlo.contains("says EHLO to 192.0.2.7") && !ehlo.contains("XCLIENT"),
        "{ehlo}"
    );
    assert_eq!(c.relay_code(), 250);
    assert_eq!(up.wait_messages(1).len(), 1);
}

#[test]
fn xremoteip_moves_into_and_out_of_relay_hosts_and_context_commands() {
    let (_up, d) = gatewayed(
        "xremoteip",
        "relay_hosts = ( \"10.9.0.0/16\" )",
        r#"Peer "127.0.0.0/8" { SMTP_Extensions = ( XREMOTEIP XSETCONTEXT XDUMPCONTEXT ) }
           Listen "127.0.0.1:0" { }"#,
    );
    let (mut c, ehlo) = Client::ehlo(d.port());
    assert!(
        ehlo.contains("XREMOTEIP") && ehlo.contains("XDUMPCONTEXT"),
        "{ehlo}"
    );
    assert_eq!(c.cmd("XREMOTEIP 10.9.8.7").0, 250);
    assert_eq!(c.relay_code(), 250);
    // 10.9.8.7 matches no Peer: the X-commands went with the old address.
    assert_eq!(c.cmd("XREMOTEIP 127.0.0.1").0, 550);
    // Out of relay_hosts: 192.0.2.1 may not relay.
    let (mut c, _) = Client::ehlo(d.port());
    assert_eq!(c.cmd("XREMOTEIP 192.0.2.1").0, 250);
    assert_eq!(c.relay_code(), 550);
    assert_eq!(c.cmd("XDUMPCONTEXT").0, 550);

    let (mut c, _) = Client::ehlo(d.port());
    assert_eq!(c.cmd("XSETCONTEXT colour=blue+20green").0, 250);
    let (code, dump) = c.cmd("XDUMPCONTEXT");
    assert_eq!(code, 250);
    assert!(dump.contains("[connection] can_relay false\n"), "{dump}");
    assert!(dump.contains("[connection] colour blue green\n"), "{dump}");
    assert!(dump.ends_with("XDUMPCONTEXT complete\n"), "{dump}");
}

#[test]
fn proxy_protocol_v1_and_v2_set_the_client_address() {
    let (up, d) = gatewayed(
        "proxyproto",
        "relay_hosts = ( \"203.0.113.0/24\" )",
        "Listen \"127.0.0.1:0\" { Proxy_Protocol = true }",
    );
    for (version, family) in [("1", "TCP4"), ("2", "AF_INET")] {
        let via = |source: &str| {
            swaks(
                d.port(),
                &format!(
                    "--proxy-version {version} --proxy-family {family} --proxy-source {source} \
                     --proxy-source-port 4444 --proxy-dest 127.0.0.1 --proxy-dest-port 25 \
                     --to x@remote.example"
                ),
            )
        };
        let t = via("203.0.113.9");
        assert!(queued(&t), "v{version}: {t}");
        let t = via("198.51.100.1");
        assert!(has_reply(&t, "550"), "v{version}: {t}");
    }
    // No header: dropped without a banner.
    let mut c = Client::connect(d.port());
    c.send("EHLO me");
    assert!(c.closed());
    assert_eq!(up.wait_messages(2).len(), 2);
}

#[test]
fn pipelined_session_and_starttls_injection() {
    let up = Upstream::start(&[]);
    let d_dir = TempDir::new("pipe");
    let (cert, key) = make_cert(d_dir.path());
    let conf = format!(
        r#"
Gateway = "127.0.0.1:{}"
relay_hosts = ( "127.0.0.0/8" )
ESMTP_Listener {{
  SMTP_Extensions = ( STARTTLS )
  TLS_Certificate = "{}"
  TLS_Key = "{}"
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        up.port,
        cert.display(),
        key.display()
    );
    let d = Daemon::start(d_dir, &conf, 1);
    let t = swaks(
        d.port(),
        "--pipeline --to a@remote.example,b@remote.example",
    );
    assert!(queued(&t), "{t}");
    // The whole session in one write.
    let mut c = Client::connect(d.port());
    c.reply();
    c.send_raw(
        b"EHLO me\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@remote.example>\r\nRCPT TO:<bad address>\r\nDATA\r\nSubject: p\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    );
    let codes: Vec<u16> = (0..7).map(|_| c.reply().0).collect();
    assert_eq!(codes, [250, 250, 250, 553, 354, 250, 221]);
    let msgs = up.wait_messages(2);
    assert_eq!(msgs.len(), 2);
    // The queue may deliver them in either order; the dot-stuffed line arrives as one dot.
    let p = msgs
        .iter()
        .find(|m| m["data"].as_str().unwrap().contains("Subject: p"))
        .expect("the pipelined message");
    assert!(p["data"].as_str().unwrap().ends_with("\r\n.dot\r\n"), "{p}");
    // A command pipelined behind STARTTLS: rejected and closed (Starttls_Injection_Policy).
    let mut c = Client::connect(d.port());
    c.reply();
    c.cmd("EHLO me");
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n");
    assert_eq!(c.reply().0, 554);
    assert!(c.closed());
}

#[test]
fn size_limits_line_limits_and_idle_timeout() {
    let (up, d) = gatewayed(
        "limits",
        "relay_hosts = ( \"127.0.0.0/8\" )",
        "SMTP_Extensions = ( ENHANCEDSTATUSCODES )\nMax_Message_Size = 1000\nIdle_Time = 2\nListen \"127.0.0.1:0\" { }",
    );
    let mut c = Client::connect(d.port());
    c.reply();
    let (_, ehlo) = c.cmd("EHLO me");
    assert!(ehlo.contains("SIZE 1000"), "{ehlo}");
    assert_eq!(c.cmd("MAIL FROM:<a@b.example> SIZE=5000").0, 552);
    // An over-long command line: refused, and the session goes on.
    let long = format!("NOOP {}", "x".repeat(100_000));
    let (code, text) = c.cmd(&long);
    assert_eq!((code, text.as_str()), (500, "5.5.2 Line too long\n"));
    assert_eq!(c.cmd("NOOP").0, 250);
    // A message over Max_Message_Size: 552 after the data, and the next hop has nothing.
    c.cmd("MAIL FROM:<a@b.example>");
    c.cmd("RCPT TO:<x@remote.example>");
    assert_eq!(c.cmd("DATA").0, 354);
    c.send_raw(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "y".repeat(5000)).as_bytes());
    let (code, text) = c.reply();
    assert_eq!(
        (code, text.as_str()),
        (
            552,
            "5.3.4 Message size exceeds fixed maximum message size\n"
        )
    );
    assert_eq!(c.cmd("NOOP").0, 250);
    assert!(up.messages().is_empty());
    // Idle_Time: 421 and closed.
    let started = Instant::now();
    let (code, _) = c.reply();
    assert_eq!(code, 421);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(c.closed());
}

#[test]
fn listener_sessions_caps_concurrent_sessions() {
    let d = with_gateway(
        "cap",
        dead_port(),
        "relay_hosts = ( \"127.0.0.0/8\" )",
        "Listener_Sessions = 2\nListen \"127.0.0.1:0\" { }",
        1,
    );
    let mut a = Client::connect(d.port());
    let mut b = Client::connect(d.port());
    assert_eq!(a.reply().0, 220);
    assert_eq!(b.reply().0, 220);
    let mut c = Client::connect(d.port());
    let (code, text) = c.reply();
    assert_eq!(code, 421);
    assert!(text.contains("4.4.5"), "{text}");
    drop(a);
    // The slot comes back once the first session ends.
    let start = Instant::now();
    loop {
        let mut e = Client::connect(d.port());
        if e.reply().0 == 220 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next hop is down, yet mail is taken: the spool holds it until it can be delivered.
    b.cmd("EHLO me");
    assert_eq!(b.cmd("MAIL FROM:<a@b.example>").0, 250);
}

#[test]
fn hostile_clients_do_not_stall_others_or_grow_memory() {
    let (up, d) = gatewayed(
        "hostile",
        "relay_hosts = ( \"127.0.0.0/8\" )",
        "Listen \"127.0.0.1:0\" { }",
    );
    d.leaves_no_trace("hostile clients", |round| {
        // Half-open connections that never speak.
        let idle: Vec<Client> = (0..50).map(|_| Client::connect(d.port())).collect();
        // Binary garbage: answered with 5xx, then cut off after too many errors.
        let mut g = Client::connect(d.port());
        g.reply();
        g.send_raw(&[0xff, 0x00, 0x13, 0x37, b'\r', b'\n'].repeat(20));
        let mut codes = Vec::new();
        while let Some((code, _)) = g.try_reply() {
            codes.push(code);
        }
        assert!(
            codes.iter().take(10).all(|&c| c == 501 || c == 500),
            "{codes:?}"
        );
        assert_eq!(codes.last(), Some(&421));
        // A 10 MB line, and 1 MB lines several times over from several clients: each is
        // answered 500 and none is held in memory.
        let handles: Vec<_> = [(10 << 20, 1), (1 << 20, 5), (1 << 20, 5), (1 << 20, 5)]
            .into_iter()
            .map(|(len, times)| {
                let port = d.port();
                std::thread::spawn(move || {
                    let mut c = Client::connect(port);
                    c.reply();
                    for _ in 0..times {
                        c.send_raw(&vec![b'A'; len]);
                        c.send_raw(b"\r\n");
                        assert_eq!(c.reply().0, 500);
                    }
                    assert_eq!(c.cmd("NOOP").0, 250);
                })
            })
            .collect();
        // Meanwhile an honest client gets its mail through.
        let t = swaks(d.port(), "--to x@remote.example");
        assert!(queued(&t), "{t}");
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(up.wait_messages(round + 1).len(), round + 1);
        drop(idle);
    });
}

#[test]
fn cram_md5_from_a_password_file_on_a_unix_socket_and_require_ehlo() {
    let d_dir = TempDir::new("cram");
    let users = d_dir.write("users", "bob:tanstaaf\n");
    let sock = d_dir.path().join("smtp.sock");
    let conf = format!(
        r#"
Gateway = "127.0.0.1:{}"
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH CRAM-MD5" )
  AuthCramMD5Parameters = [ uri = "file://{}" ]
  Require_EHLO = true
  Listen "127.0.0.1:0" {{ }}
  Listen "{}" {{ }}
}}
"#,
        dead_port(),
        users.display(),
        sock.display()
    );
    let d = Daemon::start(d_dir, &conf, 2);
    let t = swaks(
        d.port(),
        "-a CRAM-MD5 -au bob -ap tanstaaf --quit-after AUTH",
    );
    assert!(has_reply(&t, "235 "), "{t}");
    let t = swaks(d.port(), "-a CRAM-MD5 -au bob -ap nope --quit-after AUTH");
    assert!(has_reply(&t, "535 "), "{t}");
    let out = run(
        "swaks",
        &[
            "--socket",
            sock.to_str().unwrap(),
            "-a",
            "CRAM-MD5",
            "-au",
            "bob",
            "-ap",
            "tanstaaf",
            "--quit-after",
            "AUTH",
        ],
    );
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(has_reply(&t, "235 "), "{t}");
    // Require_EHLO: MAIL first is out of sequence.
    let mut c = Client::connect(d.port());
    c.reply();
    assert_eq!(c.cmd("MAIL FROM:<a@b.example>").0, 503);
    assert_eq!(c.cmd("HELO me").0, 250);
    // AUTH needs EHLO, not HELO.
    assert_eq!(c.cmd("AUTH CRAM-MD5").0, 503);
}

#[test]
fn auth_waits_for_starttls_and_injected_commands_are_ignored_when_told() {
    let d_dir = TempDir::new("tlsfirst");
    let (cert, key) = make_cert(d_dir.path());
    let users = d_dir.write("users", "erin:pw\n");
    let conf = format!(
        r#"
Gateway = "127.0.0.1:{}"
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" STARTTLS )
  AuthPlainParameters = [ uri = "file://{}" ]
  TLS_Certificate = "{}"
  TLS_Key = "{}"
  Starttls_Injection_Policy = ignore
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        dead_port(),
        users.display(),
        cert.display(),
        key.display()
    );
    let d = Daemon::start(d_dir, &conf, 1);
    let mut c = Client::connect(d.port());
    c.reply();
    let (_, ehlo) = c.cmd("EHLO me");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(c.cmd("AUTH PLAIN AGVyaW4AcHc=").0, 538);
    // With `ignore`, the clear-text command pipelined behind STARTTLS is dropped: the first
    // reply inside TLS is the EHLO's, not an answer to the injected AUTH.
    let script = r#"
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l.strip())
        if l[3:4] != "-":
            return lines
reply(); s.sendall(b"EHLO me\r\n"); reply()
s.sendall(b"STARTTLS\r\nAUTH PLAIN AGVyaW4AcHc=\r\n")
print("starttls", reply()[0][:3])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s); f = t.makefile("rb")
t.sendall(b"EHLO me\r\n")
print("first", reply()[0])
"#;
    let out = run("python3", &["-c", script, &d.port().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("starttls 220"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("says EHLO to"), "{text}");
    let t = swaks(d.port(), "--tls -a PLAIN -au erin -ap pw --quit-after AUTH");
    assert!(has_reply(&t, "235 "), "{t}");
    assert!(d.wait_log("STARTTLS TLSv1.3").contains("STARTTLS"));
}

#[test]
fn outbound_xclient_tells_the_next_hop_who_the_client_was() {
    let up = Upstream::start_with(&[], &["--xclient"]);
    let d = with_gateway(
        "xclient-out",
        up.port,
        "relay_hosts = ( \"127.0.0.0/8\" )\nXCLIENT = ifavailable",
        "Listen \"127.0.0.1:0\" { }",
        1,
    );
    let t = swaks(d.port(), "--ehlo client.example --to x@remote.example");
    assert!(queued(&t), "{t}");
    let msgs = up.wait_messages(1);
    let x = msgs[0]["xclient"].as_str().unwrap();
    assert!(x.contains("ADDR=127.0.0.1"), "{x}");
    assert!(
        x.contains("HELO=client.example") && x.contains("PROTO=ESMTP"),
        "{x}"
    );
    assert!(
        x.contains("NAME=[UNAVAILABLE]") && !x.contains("LOGIN="),
        "{x}"
    );
    // `required` with a next hop that lacks XCLIENT: the message waits in the queue (a
    // temporary failure of delivery), it is not relayed without.
    let plain = Upstream::start(&[]);
    let d = with_gateway(
        "xclient-req",
        plain.port,
        "relay_hosts = ( \"127.0.0.0/8\" )\nXCLIENT = required",
        "Listen \"127.0.0.1:0\" { }",
        1,
    );
    let t = swaks(d.port(), "--to x@remote.example");
    assert!(queued(&t), "{t}");
    assert!(d.wait_log("XCLIENT").contains("does not offer XCLIENT"));
    assert!(plain.messages().is_empty());
}

#[test]
fn sigterm_drains_sessions_and_refuses_new_ones() {
    let (up, d) = gatewayed(
        "drain",
        "relay_hosts = ( \"127.0.0.0/8\" )",
        "Listen \"127.0.0.1:0\" { }",
    );
    // A session in the middle of a transaction when the stop comes.
    let (mut c, _) = Client::ehlo(d.port());
    assert_eq!(c.cmd("MAIL FROM:<a@b.example>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<x@remote.example>").0, 250);
    run("kill", &["-TERM", &d.pid().to_string()]);
    d.wait_log("SIGTERM: stopping");
    // No new connections...
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", d.port())).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(5), "still accepting");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...while the open session finishes its message, which the next hop takes.
    assert_eq!(c.cmd("DATA").0, 354);
    c.send_raw(b"Subject: drain\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    assert_eq!(c.cmd("QUIT").0, 221);
    d.wait_log("stopped");
    assert_eq!(up.wait_messages(1).len(), 1);
}

#[test]
fn sessions_still_open_after_the_drain_deadline_get_421() {
    let up = Upstream::start(&[]);
    let conf = format!(
        "Gateway = \"127.0.0.1:{}\"\nrelay_hosts = ( \"127.0.0.0/8\" )\nESMTP_Listener {{ Listen \"127.0.0.1:0\" {{ }} }}\n",
        up.port
    );
    let d = Daemon::start_env(
        TempDir::new("drain421"),
        &conf,
        1,
        &[("SMTP_AUTH_PROXY_DRAIN_SECONDS", "1")],
    );
    let (mut c, _) = Client::ehlo(d.port());
    run("kill", &["-TERM", &d.pid().to_string()]);
    let (code, text) = c.reply();
    assert_eq!(
        (code, text.as_str()),
        (421, "Service shutting down, try again later\n")
    );
    assert!(c.closed());
    d.wait_log("stopped");
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    use std::os::unix::process::CommandExt;
    let up = Upstream::start(&[]);
    let conf = format!(
        "Gateway = \"127.0.0.1:{}\"\nESMTP_Listener {{ Listen \"127.0.0.1:0\" {{ }} }}\n",
        up.port
    );
    // Started with a soft limit of 256, below any hard limit.
    let d = Daemon::start_with(TempDir::new("nofile"), &conf, 1, |cmd| {
        // SAFETY: only setrlimit runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = 256.min(lim.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    // "Max open files <soft> <hard> files"
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "{line}");
    assert_ne!(fields[3], "256", "{line}");
    let log = d.wait_log("open file limit: ");
    assert!(
        log.contains(&format!("open file limit: {}", fields[3])),
        "{log}"
    );
}

#[test]
fn repeated_auth_failures_are_slowed_then_refused() {
    let up = Upstream::start(&[]);
    let dir = TempDir::new("throttle");
    let users = dir.write("users", "eve:right\nfrank:right\n");
    let conf = format!(
        r#"
Gateway = "127.0.0.1:{}"
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "file://{}" ]
  Auth_Failure_Limit = 4
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        up.port,
        users.display()
    );
    let d = Daemon::start(dir, &conf, 1);
    let attempt = |from: &str, user: &str, pw: &str| {
        let mut c = Client::connect_from(from, d.port());
        c.reply();
        c.cmd("EHLO me");
        let ir = common::daemon::plain_response(user, pw);
        c.cmd(&format!("AUTH PLAIN {ir}")).0
    };
    for _ in 0..4 {
        assert_eq!(attempt("127.0.0.1", "eve", "wrong"), 535);
    }
    // At the limit: that address is refused without checking, even with the right password,
    // and for any user...
    assert_eq!(attempt("127.0.0.1", "eve", "right"), 454);
    assert_eq!(attempt("127.0.0.1", "frank", "right"), 454);
    // ...but the failures under eve's name do not lock eve out: from another address her own
    // password works (slowed by a second, her name being under attack).
    let start = Instant::now();
    assert_eq!(attempt("127.0.0.3", "eve", "right"), 235);
    assert!(start.elapsed() >= Duration::from_millis(900));
    // Anyone else is unaffected.
    assert_eq!(attempt("127.0.0.4", "frank", "right"), 235);
    assert!(d.wait_log("too many failures").contains("user=eve"));
}

#[test]
fn sighup_reloads_a_valid_configuration_and_keeps_the_old_one_on_errors() {
    let up = Upstream::start(&[]);
    let dir = TempDir::new("reload");
    let sock = dir.path().join("added.sock");
    let conf = |relay: &str, extra_listen: &str| {
        format!(
            "Gateway = \"127.0.0.1:{}\"\nrelay_hosts = ( \"{relay}\" )\nESMTP_Listener {{\n  Listen \"127.0.0.1:0\" {{ }}\n{extra_listen}\n}}\n",
            up.port
        )
    };
    // Two serving threads whatever the machine: a reload binds every added Listen once per
    // thread, and that path must be the one tested.
    let d = Daemon::start_env(
        dir,
        &conf("127.0.0.0/8", ""),
        1,
        &[("SMTP_AUTH_PROXY_THREADS", "2")],
    );
    let hup = || run("kill", &["-HUP", &d.pid().to_string()]);
    let (mut old, _) = Client::ehlo(d.port());
    assert_eq!(old.relay_code(), 250);

    // An invalid file: the error is logged with its position, the old configuration serves on.
    d.dir.write(
        "ecelerity.conf",
        "ESMTP_Listener {\n  Open_Relay = perhaps\n}\n",
    );
    hup();
    let log = d.wait_log("Reconfigure failed: ");
    assert!(log.contains("ecelerity.conf:2:16: error:"), "{log}");
    assert_eq!(old.relay_code(), 250);

    // A valid one: relay_hosts changes and a Listen is added.
    let listen = format!("  Listen \"{}\" {{ }}", sock.display());
    d.dir.write("ecelerity.conf", &conf("10.0.0.0/8", &listen));
    hup();
    d.wait_log("reconfigured (generation");
    // The session from before answers Reconfig_Message at its next RSET, and closes.
    let (code, text) = old.cmd("RSET");
    assert_eq!(
        (code, text.as_str()),
        (421, "4.3.2 Reconfiguration in progress\n")
    );
    assert!(old.closed());
    // New sessions run on the new configuration: 127.0.0.1 is no relay host any more.
    let (mut new, _) = Client::ehlo(d.port());
    assert_eq!(new.relay_code(), 550);
    let mut unix = std::os::unix::net::UnixStream::connect(&sock).expect("the added Listen");
    let mut greeting = [0u8; 3];
    std::io::Read::read_exact(&mut unix, &mut greeting).unwrap();
    assert_eq!(&greeting, b"220");

    // And removed again.
    d.dir.write("ecelerity.conf", &conf("10.0.0.0/8", ""));
    hup();
    d.wait_log("no longer listening on");
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still accepting on the removed Listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn daemon_mode_forks_logs_to_syslog_writes_a_pid_file_and_drops_privileges() {
    let up = Upstream::start(&[]);
    let dir = TempDir::new("daemon");
    let sink = SyslogSink::bind(dir.path().join("log"));
    let root = unsafe { libc::geteuid() } == 0;
    // As root, the daemon gives up root for `nobody` once its socket is bound.
    let security = if root {
        "Security { user = nobody group = nogroup }"
    } else {
        ""
    };
    let conf = dir.write(
        "ecelerity.conf",
        &format!(
            "{security}\nSpoolbase = \"{}\"\nGateway = \"127.0.0.1:{}\"\nrelay_hosts = ( \"127.0.0.0/8\" )\nESMTP_Listener {{ Listen \"127.0.0.1:0\" {{ }} }}\n",
            dir.path().join("spool").display(),
            up.port
        ),
    );
    let pid_file = dir.path().join("daemon.pid");
    let out = std::process::Command::new(common::daemon::BIN)
        .args([
            "-c",
            conf.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ])
        .args(["--syslog-ident", "sap-test", "--syslog-facility", "local3"])
        .env("SMTP_AUTH_PROXY_SYSLOG", &sink.path)
        .output()
        .unwrap();
    // The starting process waits until the daemon serves, then exits 0.
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .arg(self.0.to_string())
                .status();
        }
    }
    let _kill = Kill(pid);
    let port: u16 = loop {
        let line = sink.recv().expect("the daemon's log, by syslog");
        if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
            // local3 (19) * 8 + info (6), under the identity given.
            assert!(
                line.starts_with("<158>") && line.contains(" sap-test["),
                "{line}"
            );
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let t = swaks(port, "--to x@remote.example");
    assert!(queued(&t), "{t}");
    if root {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "{uid}"
        );
    }
    // A bind failure is reported by the starting process, with exit status 1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let conf2 = dir.write(
        "taken.conf",
        &format!(
            "Spoolbase = \"{}\"\nGateway = \"127.0.0.1:{}\"\nESMTP_Listener {{ Listen \"127.0.0.1:{}\" {{ }} }}\n",
            dir.path().join("spool2").display(),
            up.port,
            taken.local_addr().unwrap().port()
        ),
    );
    let out = std::process::Command::new(common::daemon::BIN)
        .args(["-c", conf2.to_str().unwrap(), "--pid-file"])
        .arg(dir.path().join("taken.pid"))
        .env("SMTP_AUTH_PROXY_SYSLOG", &sink.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot bind"));
}

#[test]
fn slow_pipelined_and_vanishing_clients() {
    let (up, d) = gatewayed(
        "faults",
        "relay_hosts = ( \"127.0.0.0/8\" )",
        "Idle_Time = 2\nListen \"127.0.0.1:0\" { }",
    );
    d.leaves_no_trace("slow, pipelining and vanishing clients", |round| {
        // 10,000 commands in one go: every one answered, in order.
        let (mut c, _) = Client::ehlo(d.port());
        c.send_raw(&b"NOOP\r\n".repeat(10_000));
        for _ in 0..10_000 {
            assert_eq!(c.reply().0, 250);
        }
        assert_eq!(c.cmd("QUIT").0, 221);
        // A byte a second never completes a line within Idle_Time: 421, whatever the trickle.
        let (mut slow, _) = Client::ehlo(d.port());
        let started = Instant::now();
        let mut code = None;
        for b in b"NOOP and on and on\r\n" {
            slow.send_raw(&[*b]);
            std::thread::sleep(Duration::from_millis(500));
            slow.stream
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            if let Some((c, _)) = slow.try_reply() {
                code = Some(c);
                break;
            }
        }
        assert_eq!(code, Some(421), "after {:?}", started.elapsed());
        // A client that vanishes in the middle of DATA: the next hop keeps nothing.
        let (mut gone, _) = Client::ehlo(d.port());
        gone.cmd("MAIL FROM:<a@b.example>");
        gone.cmd("RCPT TO:<x@remote.example>");
        assert_eq!(gone.cmd("DATA").0, 354);
        gone.send_raw(b"Subject: half\r\n\r\nthe first half of a message\r\n");
        drop(gone);
        // And the others go on.
        let t = swaks(d.port(), "--to y@remote.example");
        assert!(queued(&t), "{t}");
        let msgs = up.wait_messages(round + 1);
        assert_eq!(msgs.len(), round + 1);
        assert!(msgs.iter().all(|m| m["to"][0] == "y@remote.example"));
    });
}

#[test]
fn a_next_hop_that_goes_away_during_data_leaves_the_message_queued() {
    use common::fake_upstream::{Behaviour, FakeUpstream};
    let hop = FakeUpstream::start(Behaviour::DropDuringData);
    let d = with_gateway(
        "hopgone",
        hop.port,
        "relay_hosts = ( \"127.0.0.0/8\" )\nRetry_Interval = 3600",
        "SMTP_Extensions = ( ENHANCEDSTATUSCODES )\nListen \"127.0.0.1:0\" { }",
        1,
    );
    d.leaves_no_trace("next hop gone during DATA", |run| {
        let (mut c, _) = Client::ehlo(d.port());
        assert_eq!(c.cmd("MAIL FROM:<a@b.example>").0, 250);
        assert_eq!(c.cmd("RCPT TO:<x@remote.example>").0, 250);
        assert_eq!(c.cmd("DATA").0, 354);
        c.send_raw(format!("Subject: lost\r\n\r\n{}\r\n.\r\n", "z".repeat(20_000)).as_bytes());
        // The spool has it: the client is done, and the queue keeps it for a retry.
        let (code, text) = c.reply();
        assert!(code == 250 && text.contains("queued as"), "{code} {text}");
        assert_eq!(c.cmd("QUIT").0, 221);
        // One more deferral in the log for each run.
        let start = Instant::now();
        while d.log().matches(": deferred for remote.example").count() <= run {
            assert!(start.elapsed() < Duration::from_secs(10), "{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}
