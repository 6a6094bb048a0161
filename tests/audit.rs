//! The holes an outside audit found, each driven as the attacker drove it, against the daemon
//! binary, real clients and real next hops (aiosmtpd, and Postfix where the behaviour is its).

mod common;

use common::TempDir;
use common::daemon::{Client, Daemon, SyslogSink, Upstream, plain_response, run, sqlite, swaks};
use common::postfix::Postfix;
use std::time::{Duration, Instant};

fn gatewayed(tag: &str, global: &str, listener: &str) -> (Upstream, Daemon) {
    let up = Upstream::start(&[]);
    let conf = format!(
        "Gateway = \"127.0.0.1:{}\"\n{global}\nESMTP_Listener {{\n{listener}\n}}\n",
        up.port
    );
    let d = Daemon::start(TempDir::new(tag), &conf, 1);
    (up, d)
}

/// Sends one message on an open session and returns the reply to the end of data.
fn message(c: &mut Client, from: &str, to: &str) -> u16 {
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).0, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{to}>")).0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    c.cmd("Subject: one\r\n\r\nbody\r\n.").0
}

#[test]
fn xclient_values_that_would_smuggle_a_message_are_refused() {
    let (up, d) = gatewayed(
        "smuggle",
        "relay_hosts = ( \"10.1.0.0/16\" )",
        r#"Peer "127.0.0.2" { SMTP_Extensions = ( XCLIENT ) }
           Listen "127.0.0.1:0" { }"#,
    );
    let mut c = Client::connect_from("127.0.0.2", d.port());
    c.reply();
    c.cmd("EHLO proxy.example");
    // The audit's line: CR LF . CR LF MAIL FROM... decoded from xtext into the NAME.
    let smuggle = "evil.example+0D+0A.+0D+0AMAIL+20FROM:<x@evil.example>+0D+0ARCPT+20TO:<v@victim.example>+0D+0ADATA+0D+0A";
    for attr in ["NAME", "HELO", "LOGIN"] {
        let (code, text) = c.cmd(&format!("XCLIENT ADDR=10.1.2.3 {attr}={smuggle}"));
        assert_eq!(code, 501, "{attr}: {text}");
    }
    // Other malformed values are refused as Postfix refuses them.
    for bad in [
        "NAME=not_a_host!",
        "HELO=two+20words",
        "PORT=[NOPE]",
        "PROTO=LMTP",
        "DESTADDR=example.com",
    ] {
        assert_eq!(c.cmd(&format!("XCLIENT {bad}")).0, 501, "{bad}");
    }
    // Nothing was applied: the session still has its own address, so it may not relay.
    assert_eq!(c.relay_code(), 550);
    // A good one is applied, and the one message sent arrives alone with a clean trace field.
    assert_eq!(
        c.cmd("XCLIENT ADDR=10.1.2.3 NAME=client.example HELO=client.example")
            .0,
        220
    );
    c.cmd("EHLO client.example");
    assert_eq!(message(&mut c, "a@b.example", "x@remote.example"), 250);
    let msgs = up.wait_messages(1);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let data = msgs[0]["data"].as_str().unwrap();
    let received = data.split("\r\n").take(3).collect::<Vec<_>>().join("\n");
    assert!(
        received.starts_with("Received: from client.example (client.example [10.1.2.3])"),
        "{received}"
    );
}

#[test]
fn percent_bang_and_quoted_local_parts_get_no_relay_through_relay_domains() {
    let (up, d) = gatewayed(
        "routing",
        "relay_hosts = ( \"10.0.0.0/8\" )\nrelay_domains = ( relay.example )",
        "SMTP_Extensions = ( ENHANCEDSTATUSCODES )\nListen \"127.0.0.1:0\" { }",
    );
    let (mut c, _) = Client::ehlo(d.port());
    assert_eq!(c.cmd("MAIL FROM:<a@b.example>").0, 250);
    for routed in [
        "v%victim.example@relay.example",
        "victim.example!v@relay.example",
        "\"v@victim.example\"@relay.example",
        "\"v%victim.example\"@relay.example",
    ] {
        let (code, text) = c.cmd(&format!("RCPT TO:<{routed}>"));
        assert_eq!(
            (code, text.as_str()),
            (550, "5.7.1 relaying denied\n"),
            "{routed}"
        );
    }
    assert_eq!(c.cmd("RCPT TO:<someone@relay.example>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    assert_eq!(c.cmd("Subject: x\r\n\r\nx\r\n.").0, 250);
    let msgs = up.wait_messages(1);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["to"], serde_json::json!(["someone@relay.example"]));
}

#[test]
fn a_user_name_with_a_line_feed_cannot_forge_a_log_line() {
    let dir = TempDir::new("forge");
    let users = dir.write("users", "bob:right\n");
    let sink = SyslogSink::bind(dir.path().join("log"));
    let conf = format!(
        r#"
relay_hosts = ( "10.0.0.0/8" )
Gateway = "127.0.0.1:9"
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "file://{}" log_authentication = "true" ]
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        users.display()
    );
    let d = Daemon::start_env(dir, &conf, 1, &[sink.env()]);
    let forged = "smtp-auth-proxy[1]: info: session 1-1: client=10.0.0.1:1 helo=x tls=no user=admin messages=9";
    let (mut c, _) = Client::ehlo(d.port());
    let ir = plain_response(&format!("bob\n{forged}\r"), "wrong");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {ir}")).0, 535);
    c.cmd("QUIT");
    let log = d.wait_log("AUTH PLAIN user=bob");
    assert!(
        !log.lines().any(|l| l.starts_with(forged)),
        "a forged line:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("AUTH PLAIN user=bob"))
        .unwrap();
    assert!(line.contains("bob\\x0Asmtp-auth-proxy[1]"), "{line}");
    // acctlog, by syslog: one datagram, the line feed escaped.
    let acct = sink.recv().expect("an acctlog line");
    assert!(
        acct.contains("acctlog: ") && !acct.contains('\n'),
        "{acct:?}"
    );
}

#[test]
fn starttls_inside_a_transaction_is_refused_and_the_next_mail_works() {
    let dir = TempDir::new("starttls-txn");
    let (cert, key) = common::daemon::make_cert(dir.path());
    let up = Upstream::start(&[]);
    let conf = format!(
        r#"
Gateway = "127.0.0.1:{}"
relay_hosts = ( "127.0.0.0/8" )
ESMTP_Listener {{
  SMTP_Extensions = ( STARTTLS ENHANCEDSTATUSCODES )
  TLS_Certificate = "{}"
  TLS_Key = "{}"
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        up.port,
        cert.display(),
        key.display()
    );
    let d = Daemon::start(dir, &conf, 1);
    // Python's smtplib, a client nobody here wrote.
    let script = r#"
import smtplib, ssl, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
s.ehlo("client.example")
print("MAIL", s.mail("a@b.example")[0])
code, text = s.docmd("STARTTLS")
print("STARTTLS", code, text.decode())
print("RSET", s.rset()[0])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
print("TLS", s.starttls(context=ctx)[0])
s.ehlo("client.example")
print("MAIL", s.mail("a@b.example")[0])
print("RCPT", s.rcpt("x@remote.example")[0])
print("DATA", s.data(b"Subject: t\r\n\r\nbody\r\n")[0])
s.quit()
"#;
    let out = run("python3", &["-c", script, &d.port().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("STARTTLS 503 5.5.1 STARTTLS not permitted inside a mail transaction"),
        "{text}"
    );
    assert!(text.contains("TLS 220"), "{text}");
    // Not `503 nested MAIL`: no envelope survived at the next hop.
    assert!(text.ends_with("MAIL 250\nRCPT 250\nDATA 250\n"), "{text}");
    assert_eq!(up.wait_messages(1).len(), 1);
}

#[test]
fn check_config_calls_passwords_sent_upstream_in_clear_text_a_danger() {
    let dir = TempDir::new("upstream-danger");
    let check = |proxy: &str| {
        let conf = dir.write(
            "e.conf",
            &format!(
                r#"smtp_auth_proxy {{ {proxy} }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:0" {{ }}
}}
"#
            ),
        );
        let out = run(
            common::daemon::BIN,
            &["--check-config", "-c", conf.to_str().unwrap()],
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let remote = check("host = \"192.0.2.10\"");
    assert!(
        remote
            .contains("DANGER: smtp_auth_proxy may send passwords to 192.0.2.10:25 in clear text"),
        "{remote}"
    );
    let unverified = check("host = \"192.0.2.10\" tls = required");
    assert!(
        unverified.contains("DANGER") && unverified.contains("without checking the certificate"),
        "{unverified}"
    );
    let sound = check(&format!(
        "host = \"192.0.2.10\" tls = required tls_verify = host tls_ca = \"{}\"",
        common::daemon::make_cert(dir.path()).0.display()
    ));
    assert!(
        !sound.contains("smtp_auth_proxy may send") && !sound.contains("without checking"),
        "{sound}"
    );
    let local = check("host = \"127.0.0.1:2526\"");
    assert!(!local.contains("DANGER: smtp_auth_proxy"), "{local}");
}

#[test]
fn xsetcontext_is_bounded_in_keys_and_sizes() {
    let (_up, d) = gatewayed(
        "context",
        "",
        r#"Peer "127.0.0.0/8" { SMTP_Extensions = ( XSETCONTEXT XDUMPCONTEXT ) }
           Listen "127.0.0.1:0" { }"#,
    );
    let rss_before = d.rss_kib();
    let (mut c, _) = Client::ehlo(d.port());
    let big = "v".repeat(1000);
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..2000 {
        c.send(&format!("XSETCONTEXT key{i}={big}"));
        match c.try_reply() {
            Some((250, _)) => accepted += 1,
            Some((501, _)) => refused += 1,
            _ => break,
        }
    }
    // The session's own keys (can_relay) count too; then refusals, and after ten errors the
    // session is not worth serving.
    assert_eq!(accepted, 63);
    assert!(refused >= 1);
    let (mut c, _) = Client::ehlo(d.port());
    assert_eq!(c.cmd(&format!("XSETCONTEXT k={}", "v".repeat(1025))).0, 501);
    assert_eq!(c.cmd("XSETCONTEXT k=a+0D+0A250+20forged").0, 501);
    let (code, dump) = c.cmd("XDUMPCONTEXT");
    assert_eq!(code, 250);
    assert!(!dump.contains("forged"), "{dump}");
    assert!(d.rss_kib() < rss_before + 4096, "memory grew");
}

#[test]
fn idle_time_zero_never_reaps_a_quiet_client() {
    let (_up, d) = gatewayed("idle0", "", "Idle_Time = 0\nListen \"127.0.0.1:0\" { }");
    let (mut c, _) = Client::ehlo(d.port());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.cmd("NOOP").0, 250);
}

#[test]
fn a_datasource_timeout_is_written_to_acctlog_as_a_timeout() {
    let dir = TempDir::new("ds-timeout");
    let sink = SyslogSink::bind(dir.path().join("log"));
    let db = dir.path().join("slow.sqlite");
    // A query that counts to fifty million before it answers: longer than `timeout`.
    sqlite(&db, "CREATE TABLE t (x)");
    let conf = format!(
        r#"
Datasource "slow" {{ uri = ( "sqlite:{}" ) }}
smtp_auth_proxy {{
  timeout = 1
  ds_cache = "slow"
  query = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000) SELECT '127.0.0.1:9' FROM c WHERE x = 50000000 AND :username <> ''"
}}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" log_authentication = "true" ]
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        db.display()
    );
    let d = Daemon::start_env(dir, &conf, 1, &[sink.env()]);
    let (code, _) = common::daemon::auth_plain(d.port(), "slowpoke", "pw");
    assert_eq!(code, 454);
    let acct = sink.recv().expect("an acctlog line");
    assert!(
        acct.contains("@T@") && acct.ends_with("@slowpoke@0"),
        "{acct}"
    );
}

#[test]
fn a_reload_never_lets_a_connection_pooled_under_the_old_tls_settings_serve_the_new() {
    // An upstream without STARTTLS: fine under `tls = ifavailable`, an error under `required`.
    let up = Upstream::start(&[("u", "p")]);
    let conf = |tls: &str| {
        format!(
            r#"smtp_auth_proxy {{ host = "127.0.0.1:{}" pool = 2 tls = {tls} }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:0" {{ }}
}}
"#,
            up.port
        )
    };
    let d = Daemon::start_env(
        TempDir::new("pool-reload"),
        &conf("ifavailable"),
        1,
        &[("SMTP_AUTH_PROXY_THREADS", "1")],
    );
    assert_eq!(common::daemon::auth_plain(d.port(), "u", "p").0, 235);
    // Let the pool fill with clear-text connections.
    std::thread::sleep(Duration::from_millis(300));
    d.dir.write("ecelerity.conf", &conf("required"));
    run("kill", &["-HUP", &d.pid().to_string()]);
    d.wait_log("reconfigured (generation");
    let (code, _) = common::daemon::auth_plain(d.port(), "u", "p");
    assert_eq!(code, 454, "{}", d.log());
    assert!(
        d.wait_log("does not offer STARTTLS")
            .contains("tls = required")
    );
}

#[test]
fn a_stalled_syslogd_does_not_stall_sessions() {
    let up = Upstream::start(&[]);
    let dir = TempDir::new("stalled-syslog");
    // A syslog socket nobody reads: after a few hundred datagrams, a send blocks.
    let sink = SyslogSink::bind(dir.path().join("log"));
    let conf = dir.write(
        "ecelerity.conf",
        &format!(
            "Spoolbase = \"{}\"\nsmtp_auth_proxy {{ host = \"127.0.0.1:9\" debug_level = DEBUG }}\nGateway = \"127.0.0.1:{}\"\nrelay_hosts = ( \"127.0.0.0/8\" )\nESMTP_Listener {{ Listen \"127.0.0.1:0\" {{ }} }}\n",
            dir.path().join("spool").display(),
            up.port
        ),
    );
    // Find a free port for the daemon, which in daemon mode logs only to syslog.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&conf, text).unwrap();
    let pid_file = dir.path().join("d.pid");
    let out = std::process::Command::new(common::daemon::BIN)
        .args(["-c", conf.to_str().unwrap(), "--pid-file"])
        .arg(&pid_file)
        .env("SMTP_AUTH_PROXY_SYSLOG", &sink.path)
        .env("SMTP_AUTH_PROXY_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &self.0])
                .status();
        }
    }
    let _kill = Kill(pid);
    // Thousands of sessions, each logging a long HELO name: every one is served promptly.
    let helo = format!("{}.example", "h".repeat(400));
    let start = Instant::now();
    for i in 0..3000 {
        let mut c = Client::connect(port);
        let began = Instant::now();
        c.reply();
        assert_eq!(c.cmd(&format!("EHLO {helo}")).0, 250, "session {i}");
        c.cmd("QUIT");
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "session {i} waited {:?}: the sessions wait for the log",
            began.elapsed()
        );
    }
    let t = swaks(port, "--to x@remote.example");
    assert!(t.contains(" queued as "), "{t}");
    up.wait_messages(1);
    eprintln!("3000 sessions in {:?} with syslog stalled", start.elapsed());
    // When syslogd reads again, the log says how much it lost.
    let mut dropped = None;
    while let Some(line) = sink.recv() {
        if line.contains("log line(s) dropped") {
            dropped = Some(line);
            break;
        }
    }
    let line = dropped.expect("a line reporting the dropped lines");
    assert!(line.contains(": the log sink did not keep up"), "{line}");
}

#[test]
fn outbound_xclient_gives_postfix_the_clients_own_helo() {
    let postfix = Postfix::start("");
    let conf = format!(
        "Gateway = \"127.0.0.1:{}\"\nXCLIENT = required\nrelay_hosts = ( \"127.0.0.0/8\" )\nESMTP_Listener {{ Listen \"127.0.0.1:0\" {{ }} }}\n",
        postfix.port
    );
    let d = Daemon::start(TempDir::new("postfix-xclient"), &conf, 1);
    let t = swaks(
        d.port(),
        "--ehlo client.test --from a@b.example --to x@dest.test",
    );
    assert!(t.contains("<-  250 "), "{t}\n{}", postfix.log());
    // Postfix's Received: line names the client's HELO, and its address from XCLIENT.
    let queue = postfix.wait_queue(1);
    let id = queue[0]["queue_id"].as_str().unwrap();
    let message = postfix.postcat(id);
    assert!(
        message.contains("Received: from client.test (unknown [127.0.0.1])")
            && message.contains("by pf.test (Postfix)"),
        "{message}"
    );
    // And it did go through XCLIENT (the NAME we sent, [UNAVAILABLE], is Postfix's `unknown`).
    assert!(
        postfix.log().contains("client=unknown[127.0.0.1]"),
        "{}",
        postfix.log()
    );
}
