//! OAuth 2.0 bearer tokens relayed end to end: OAUTHBEARER (RFC 7628) and XOAUTH2 from real
//! clients (Python's smtplib with an authobject, curl's --oauth2-bearer) through the daemon to
//! an upstream that checks signed tokens (aiosmtpd, tests/fixtures/smtp_server.py --oauth):
//! passes, the upstream's error challenge and final reply, upstreams that are down or lack the
//! mechanism, per-user upstreams from a datasource, the AUTH line limit, malformed responses,
//! logs without tokens, throttling, the pool, and the configuration's checks.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::TempDir;
use common::daemon::{Client, Daemon, Upstream, dead_port, run, sqlite};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/oauth_client.py"
);
const SECRET: &str = "the provider's signing key";
const ALICE: &str = "alice@example.com";
const MECHANISMS: [&str; 2] = ["OAUTHBEARER", "XOAUTH2"];

/// An upstream offering OAUTHBEARER and XOAUTH2 that checks tokens signed with `secret`.
fn oauth_upstream(secret: &str) -> Upstream {
    Upstream::start_with(&[], &["--oauth", secret])
}

/// A token for `user`, signed with `secret` (`options`: --expires-in, --size, --busy).
fn mint(secret: &str, user: &str, options: &[&str]) -> String {
    let mut args = vec![CLIENT, "mint", secret, user];
    args.extend(options);
    let out = run("python3", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// AUTH through smtplib's `auth()`: the final code and text, and the error challenge the
/// client saw (decoded JSON, or null).
fn smtplib(port: u16, mechanism: &str, user: &str, token: &str, two_step: bool) -> Value {
    let port = port.to_string();
    let mut args = vec![CLIENT, "auth", &port, mechanism, user, token];
    if two_step {
        args.push("--two-step");
    }
    let out = run("python3", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The client's response, before base64, as oauth_client.py builds it.
fn response(mechanism: &str, user: &str, token: &str) -> String {
    match mechanism {
        "OAUTHBEARER" => {
            format!("n,a={user},\x01host=localhost\x01port=587\x01auth=Bearer {token}\x01\x01")
        }
        _ => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
    }
}

/// A daemon offering both mechanisms through `smtp_auth_proxy { <proxy> }`, with `extra`
/// global lines and `listener` lines in ESMTP_Listener.
fn token_daemon(tag: &str, proxy: &str, extra: &str, listener: &str) -> Daemon {
    token_daemon_env(tag, proxy, extra, listener, &[])
}

fn token_daemon_env(
    tag: &str,
    proxy: &str,
    extra: &str,
    listener: &str,
    env: &[(&str, &str)],
) -> Daemon {
    let conf = format!(
        r#"
{extra}
smtp_auth_proxy {{ {proxy} }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH OAUTHBEARER" "AUTH XOAUTH2" ENHANCEDSTATUSCODES )
  AuthOauthbearerParameters = [ uri = "smtp_auth_proxy://" log_authentication = "true" ]
  AuthXoauth2Parameters = [ uri = "smtp_auth_proxy://" log_authentication = "true" ]
  {listener}
  Listen "127.0.0.1:0" {{ }}
}}
"#
    );
    let mut env = env.to_vec();
    env.push(("SMTP_AUTH_PROXY_SYSLOG", "/nonexistent/log"));
    Daemon::start_env(TempDir::new(tag), &conf, 1, &env)
}

/// Many failures from one address are the point of several tests here: no throttling there.
const NO_THROTTLE: &str = "Auth_Failure_Limit = 0";

fn host(up: &Upstream) -> String {
    format!("host = \"127.0.0.1:{}\"", up.port)
}

#[test]
fn smtplib_passes_with_good_tokens_and_sees_the_upstreams_error_challenge_for_bad_ones() {
    let up = oauth_upstream(SECRET);
    let d = token_daemon(
        "smtplib",
        &host(&up),
        "Prometheus_Listener { Listen \"127.0.0.1:0\" { } }",
        NO_THROTTLE,
    );
    let good = mint(SECRET, ALICE, &[]);
    let bad = [
        ("wrongly signed", mint("another key", ALICE, &[])),
        ("expired", mint(SECRET, ALICE, &["--expires-in", "-60"])),
        ("another user's", mint(SECRET, "bob@example.com", &[])),
    ];
    let busy = mint(SECRET, ALICE, &["--busy"]);
    for mechanism in MECHANISMS {
        for two_step in [false, true] {
            let case = format!("{mechanism}, two-step {two_step}");
            let r = smtplib(d.port(), mechanism, ALICE, &good, two_step);
            assert_eq!(r["code"], 235, "{case}: {r}");
            assert_eq!(r["error_challenge"], Value::Null, "{case}: {r}");
            for (what, token) in &bad {
                let r = smtplib(d.port(), mechanism, ALICE, token, two_step);
                assert_eq!(r["code"], 535, "{case}, {what} token: {r}");
                assert_eq!(r["text"], "5.7.8 Authentication credentials invalid");
                assert_eq!(
                    r["error_challenge"]["status"], "invalid_token",
                    "{case}, {what} token: the upstream's error challenge, relayed: {r}"
                );
                assert_eq!(r["error_challenge"]["schemes"], "bearer", "{r}");
            }
            // The provider cannot check tokens now: its final 454 is a temporary failure.
            let r = smtplib(d.port(), mechanism, ALICE, &busy, two_step);
            assert_eq!(r["code"], 454, "{case}: {r}");
            assert_eq!(r["text"], "4.7.0 Temporary authentication failure");
            assert_eq!(r["error_challenge"]["status"], "temporarily_unavailable");
        }
    }
    // The upstream got each response as the client sent it, and each client's answer to the
    // error challenge: OAUTHBEARER's ^A, XOAUTH2's empty line.
    let records = up.token_auths();
    assert_eq!(records.len(), 2 * 2 * 5, "{records:#?}");
    for (i, r) in records.iter().enumerate() {
        let mechanism = MECHANISMS[i / 10];
        let token = match i % 5 {
            0 => &good,
            4 => &busy,
            n => &bad[n - 1].1,
        };
        assert_eq!(r["mechanism"], mechanism);
        assert_eq!(
            r["response"],
            response(mechanism, ALICE, token),
            "record {i}"
        );
        let (answer, verdict) = match (i % 5, mechanism) {
            (0, _) => (Value::Null, "pass"),
            (4, "OAUTHBEARER") => ("\x01".into(), "454"),
            (4, _) => ("".into(), "454"),
            (_, "OAUTHBEARER") => ("\x01".into(), "535"),
            _ => ("".into(), "535"),
        };
        assert_eq!(r["answer"], answer, "record {i}: {r}");
        assert_eq!(r["verdict"], verdict, "record {i}: {r}");
    }
    // Counted per mechanism and outcome, and for the upstream by its final reply.
    let text = scrape(&d);
    for mechanism in MECHANISMS {
        for (outcome, n) in [("pass", 2.0), ("fail", 6.0), ("error", 2.0)] {
            let series = format!(
                "smtp_auth_proxy_auth_attempts_total{{mechanism=\"{mechanism}\",outcome=\"{outcome}\"}}"
            );
            assert_eq!(value(&text, &series), n, "{series}\n{text}");
        }
    }
    for (outcome, n) in [("pass", 4.0), ("fail", 12.0), ("error", 4.0)] {
        let series = format!(
            "smtp_auth_proxy_upstream_auth_total{{upstream=\"127.0.0.1:{}\",outcome=\"{outcome}\"}}",
            up.port
        );
        assert_eq!(value(&text, &series), n, "{series}\n{text}");
    }
}

/// The metrics endpoint's exposition, read with curl.
fn scrape(d: &Daemon) -> String {
    let needle = "serving metrics on 127.0.0.1:";
    let log = d.wait_log(needle);
    let rest = &log[log.find(needle).unwrap() + needle.len()..];
    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let out = run(
        "curl",
        &["-sSf", &format!("http://127.0.0.1:{port}/metrics")],
    );
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn value(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no series {series}"))
        .parse()
        .unwrap()
}

/// curl with `--oauth2-bearer`, sending one message; its exit code and its `-v` transcript.
fn curl(port: u16, user: &str, token: &str, mail: &Path, options: &[&str]) -> (i32, String) {
    let url = format!("smtp://127.0.0.1:{port}");
    let login = format!("{user}:");
    let mut args = vec![
        "-sS",
        "-v",
        "--url",
        &url,
        "--mail-from",
        user,
        "--mail-rcpt",
        "friend@remote.example",
        "-u",
        &login,
        "--oauth2-bearer",
        token,
        "-T",
        mail.to_str().unwrap(),
    ];
    args.extend(options);
    let out = run("curl", &args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_sends_mail_through_the_upstream_that_accepted_its_token() {
    let up = oauth_upstream(SECRET);
    let good = mint(SECRET, ALICE, &[]);
    let bad = mint("another key", ALICE, &[]);
    // The mail goes through the upstream session that accepted the token: the bridge.
    let proxy = format!("{} deliver_through_upstream = true", host(&up));
    // curl prefers OAUTHBEARER; a daemon offering only XOAUTH2 makes it use that.
    let both = token_daemon("curl", &proxy, "", NO_THROTTLE);
    let xoauth2 = Daemon::start_env(
        TempDir::new("curl-xoauth2"),
        &format!(
            r#"
smtp_auth_proxy {{ {proxy} }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH XOAUTH2" )
  AuthXoauth2Parameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:0" {{ }}
}}
"#
        ),
        1,
        &[("SMTP_AUTH_PROXY_SYSLOG", "/nonexistent/log")],
    );
    let mail = both.dir.write(
        "mail.txt",
        "Subject: token\r\n\r\nsent with a bearer token\r\n",
    );
    let cases = [
        (&both, "OAUTHBEARER", &[][..]),
        (&both, "OAUTHBEARER", &["--sasl-ir"][..]),
        (&xoauth2, "XOAUTH2", &[][..]),
        (&xoauth2, "XOAUTH2", &["--sasl-ir"][..]),
    ];
    for (i, (d, mechanism, options)) in cases.iter().enumerate() {
        let (code, transcript) = curl(d.port(), ALICE, &good, &mail, options);
        assert_eq!(code, 0, "{mechanism} {options:?}:\n{transcript}");
        assert!(
            transcript.contains(&format!("> AUTH {mechanism}")),
            "{transcript}"
        );
        // The message went through the upstream that accepted the token.
        let messages = up.messages();
        assert_eq!(messages.len(), i + 1, "{messages:#?}");
        assert_eq!(messages[i]["login"], ALICE);
        assert!(
            messages[i]["data"]
                .as_str()
                .unwrap()
                .contains("sent with a bearer token")
        );
        let (code, transcript) = curl(d.port(), ALICE, &bad, &mail, options);
        // curl: (67) Login denied.
        assert_eq!(code, 67, "{mechanism} {options:?}:\n{transcript}");
        let challenge = transcript
            .lines()
            .find_map(|l| l.strip_prefix("< 334 ").filter(|c| !c.is_empty()))
            .unwrap_or_else(|| panic!("no error challenge:\n{transcript}"));
        let json: Value = serde_json::from_slice(&B64.decode(challenge.trim()).unwrap()).unwrap();
        assert_eq!(json["status"], "invalid_token");
        if *mechanism == "OAUTHBEARER" {
            // The dummy response, relayed, and the upstream's final reply.
            let lines: Vec<&str> = transcript.lines().map(str::trim_end).collect();
            assert!(
                lines
                    .windows(2)
                    .any(|w| w[0] == "> AQ==" && w[1].starts_with("< 535 5.7.8")),
                "{transcript}"
            );
        } else {
            // curl (7.88) gives up on XOAUTH2's error challenge without answering; the refused
            // token is a failure all the same.
            d.wait_log("AUTH XOAUTH2 user=alice@example.com fail");
        }
    }
    assert_eq!(
        up.messages().len(),
        cases.len(),
        "no mail after a refused token"
    );
}

#[test]
fn an_upstream_that_is_down_or_lacks_the_mechanism_is_a_454_never_a_535() {
    let good = mint(SECRET, ALICE, &[]);
    let down = token_daemon(
        "down",
        &format!("host = \"127.0.0.1:{}\" timeout = 5", dead_port()),
        "",
        NO_THROTTLE,
    );
    // An upstream that takes passwords only.
    let passwords = Upstream::start(&[(ALICE, "pw")]);
    let lacking = token_daemon("lacking", &host(&passwords), "", NO_THROTTLE);
    for d in [&down, &lacking] {
        for mechanism in MECHANISMS {
            for two_step in [false, true] {
                let r = smtplib(d.port(), mechanism, ALICE, &good, two_step);
                assert_eq!(r["code"], 454, "{mechanism}: {r}");
                assert_eq!(r["text"], "4.7.0 Temporary authentication failure");
            }
        }
    }
    lacking.wait_log("upstream does not offer AUTH OAUTHBEARER");
    lacking.wait_log("upstream does not offer AUTH XOAUTH2");
    assert!(
        lacking
            .wait_log("acctlog:")
            .contains("@alice\\@example.com@0"),
        "an error is logged as not authenticated"
    );
}

#[test]
fn the_user_in_the_token_response_picks_the_upstream_through_the_datasource() {
    // Two providers with keys of their own: a token passes only at the one that signed it.
    let a = oauth_upstream("provider A's key");
    let b = oauth_upstream("provider B's key");
    let dir = TempDir::new("oauth-ds");
    let db = dir.path().join("upstreams.sqlite");
    sqlite(
        &db,
        &format!(
            "CREATE TABLE auth_servers (username TEXT, host TEXT);
             INSERT INTO auth_servers VALUES ('alice@a.example', '127.0.0.1:{}');
             INSERT INTO auth_servers VALUES ('carol@a.example', '127.0.0.1:{}');",
            a.port,
            dead_port()
        ),
    );
    let ds = format!(
        "Datasource \"up\" {{ uri = ( \"sqlite:{}\" ) }}",
        db.display()
    );
    let proxy = format!(
        "{} timeout = 5 ds_cache = \"up\" query = \"SELECT host FROM auth_servers WHERE username = :username\"",
        host(&b)
    );
    let d = token_daemon("oauth-ds", &proxy, &ds, NO_THROTTLE);
    let alice_a = mint("provider A's key", "alice@a.example", &[]);
    let alice_b = mint("provider B's key", "alice@a.example", &[]);
    let bob_b = mint("provider B's key", "bob@b.example", &[]);
    for mechanism in MECHANISMS {
        for two_step in [false, true] {
            let auth = |user: &str, token: &str| {
                smtplib(d.port(), mechanism, user, token, two_step)["code"].clone()
            };
            assert_eq!(auth("alice@a.example", &alice_a), 235, "row: provider A");
            assert_eq!(
                auth("alice@a.example", &alice_b),
                535,
                "B's token went to A, which refused it"
            );
            assert_eq!(
                auth("bob@b.example", &bob_b),
                235,
                "no row: the fixed host B"
            );
            assert_eq!(
                auth("carol@a.example", &alice_a),
                454,
                "the row names a dead upstream"
            );
        }
    }
    let users = |up: &Upstream| -> Vec<String> {
        up.token_auths()
            .iter()
            .map(|r| r["response"].as_str().unwrap().to_owned())
            .map(|r| {
                let user = r
                    .split(['=', ',', '\x01'])
                    .nth(if r.starts_with('n') { 2 } else { 1 });
                user.unwrap().to_owned()
            })
            .collect()
    };
    assert!(
        users(&a).iter().all(|u| u == "alice@a.example"),
        "{:?}",
        users(&a)
    );
    assert!(
        users(&b).iter().all(|u| u == "bob@b.example"),
        "{:?}",
        users(&b)
    );
    assert_eq!(users(&a).len(), 8);
    assert_eq!(users(&b).len(), 4);
}

#[test]
fn tokens_of_real_sizes_pass_and_lines_over_12288_octets_are_refused() {
    let up = oauth_upstream(SECRET);
    let d = token_daemon("sizes", &host(&up), "", NO_THROTTLE);
    // What providers issue: 2-4 KB.
    for size in ["2048", "4096"] {
        let token = mint(SECRET, ALICE, &["--size", size]);
        for mechanism in MECHANISMS {
            for two_step in [false, true] {
                let r = smtplib(d.port(), mechanism, ALICE, &token, two_step);
                assert_eq!(r["code"], 235, "{size} octets, {mechanism}: {r}");
            }
        }
    }
    // A token that fills the AUTH line almost to RFC 4954's 12288 octets still passes.
    for mechanism in MECHANISMS {
        let long = mint(
            SECRET,
            ALICE,
            &["--size", &longest_token(mechanism).to_string()],
        );
        let encoded = B64.encode(response(mechanism, ALICE, &long));
        let line = format!("AUTH {mechanism} {encoded}");
        assert!(
            (12280..=12288).contains(&line.len()),
            "{} octets",
            line.len()
        );
        let (mut c, _) = Client::ehlo(d.port());
        assert_eq!(c.cmd(&line).0, 235, "{} octets", line.len());
        let (mut c, _) = Client::ehlo(d.port());
        assert_eq!(c.cmd(&format!("AUTH {mechanism}")).0, 334);
        assert_eq!(c.cmd(&encoded).0, 235);
    }
    let seen = up.token_auths().len();
    // Past it, the line is refused as a LOGIN or PLAIN one is, and the session goes on.
    for mechanism in MECHANISMS {
        let size = (longest_token(mechanism) + 16).to_string();
        let longer = mint(SECRET, ALICE, &["--size", &size]);
        let encoded = B64.encode(response(mechanism, ALICE, &longer));
        let (mut c, _) = Client::ehlo(d.port());
        let (code, text) = c.cmd(&format!("AUTH {mechanism} {encoded}"));
        assert_eq!((code, text.trim()), (500, "5.5.2 Line too long"));
        assert_eq!(c.cmd("NOOP").0, 250);
        assert_eq!(c.cmd(&format!("AUTH {mechanism}")).0, 334);
        let (code, text) = c.cmd(&encoded);
        assert_eq!(
            (code, text.trim()),
            (500, "5.5.6 Authentication exchange line too long")
        );
        assert_eq!(c.cmd("NOOP").0, 250);
    }
    assert_eq!(
        up.token_auths().len(),
        seen,
        "nothing over the limit went upstream"
    );
}

/// The longest token whose AUTH line (with the initial response) fits in 12288 octets.
fn longest_token(mechanism: &str) -> usize {
    let room = 12288 - format!("AUTH {mechanism} ").len();
    room / 4 * 3 - response(mechanism, ALICE, "").len()
}

#[test]
fn malformed_responses_get_501_and_reach_no_upstream() {
    let up = oauth_upstream(SECRET);
    let d = token_daemon("malformed", &host(&up), "", NO_THROTTLE);
    let token = mint(SECRET, ALICE, &[]);
    let cases = [
        ("OAUTHBEARER", format!("n,,\x01auth=Bearer {token}\x01\x01")),
        (
            "OAUTHBEARER",
            format!("p=tls-unique,a={ALICE},\x01auth=Bearer {token}\x01\x01"),
        ),
        (
            "OAUTHBEARER",
            format!("n,a=al=ice,\x01auth=Bearer {token}\x01\x01"),
        ),
        (
            "OAUTHBEARER",
            format!("n,a={ALICE},\x01host=localhost\x01\x01"),
        ),
        (
            "OAUTHBEARER",
            format!("n,a={ALICE},auth=Bearer {token}\x01\x01"),
        ),
        ("OAUTHBEARER", "\x01".to_owned()),
        ("XOAUTH2", format!("auth=Bearer {token}\x01\x01")),
        ("XOAUTH2", format!("user={ALICE}\x01auth=Bearer {token}")),
    ];
    for (mechanism, raw) in &cases {
        let encoded = B64.encode(raw);
        let (mut c, _) = Client::ehlo(d.port());
        let (code, text) = c.cmd(&format!("AUTH {mechanism} {encoded}"));
        assert_eq!(
            (code, text.trim()),
            (501, "5.5.2 Cannot decode the response"),
            "{raw:?}"
        );
        assert_eq!(c.cmd(&format!("AUTH {mechanism}")).0, 334);
        assert_eq!(c.cmd(&encoded).0, 501, "{raw:?}");
    }
    for mechanism in MECHANISMS {
        let (mut c, _) = Client::ehlo(d.port());
        assert_eq!(c.cmd(&format!("AUTH {mechanism} not*base64")).0, 501);
        assert_eq!(c.cmd(&format!("AUTH {mechanism}")).0, 334);
        let (code, text) = c.cmd("*");
        assert_eq!((code, text.trim()), (501, "5.0.0 Authentication cancelled"));
    }
    assert_eq!(up.token_auths(), Vec::<Value>::new());
}

#[test]
fn a_client_that_cancels_the_error_challenge_gets_501_and_the_upstream_hears_the_cancel() {
    let up = oauth_upstream(SECRET);
    let d = token_daemon("cancel", &host(&up), "", NO_THROTTLE);
    let bad = mint("another key", ALICE, &[]);
    for (mechanism, answer, reply) in [
        ("OAUTHBEARER", "*", "5.0.0 Authentication cancelled"),
        ("XOAUTH2", "*", "5.0.0 Authentication cancelled"),
        ("XOAUTH2", "not*base64", "5.5.2 Cannot decode the response"),
    ] {
        let (mut c, _) = Client::ehlo(d.port());
        let (code, challenge) = c.cmd(&format!(
            "AUTH {mechanism} {}",
            B64.encode(response(mechanism, ALICE, &bad))
        ));
        assert_eq!(code, 334);
        let json: Value = serde_json::from_slice(&B64.decode(challenge.trim()).unwrap()).unwrap();
        assert_eq!(json["status"], "invalid_token");
        let (code, text) = c.cmd(answer);
        assert_eq!((code, text.trim()), (501, reply));
        assert_eq!(c.cmd("NOOP").0, 250);
    }
    // The refused token counts as a failure all the same.
    let log = d.wait_log("AUTH XOAUTH2 user=alice@example.com fail");
    assert_eq!(log.matches("@alice\\@example.com@0").count(), 3, "{log}");
    let start = Instant::now();
    while up.token_auths().len() < 3 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let verdicts: Vec<Value> = up
        .token_auths()
        .iter()
        .map(|r| r["verdict"].clone())
        .collect();
    assert_eq!(verdicts, ["cancelled", "cancelled", "cancelled"]);
}

#[test]
fn the_token_reaches_no_log_line_and_acctlog_names_the_user() {
    let up = oauth_upstream(SECRET);
    let d = token_daemon(
        "token-log",
        &format!("{} debug_level = DEBUG", host(&up)),
        "",
        NO_THROTTLE,
    );
    let good = mint(SECRET, ALICE, &[]);
    let bad = mint("another key", ALICE, &[]);
    assert_eq!(
        smtplib(d.port(), "OAUTHBEARER", ALICE, &good, false)["code"],
        235
    );
    assert_eq!(smtplib(d.port(), "XOAUTH2", ALICE, &bad, true)["code"], 535);
    d.wait_log("AUTH OAUTHBEARER user=alice@example.com pass");
    let log = d.wait_log("AUTH XOAUTH2 user=alice@example.com fail");
    let acctlog: Vec<&str> = log.lines().filter(|l| l.contains("acctlog:")).collect();
    assert_eq!(acctlog.len(), 2, "{log}");
    assert!(
        acctlog[0].ends_with("@alice\\@example.com@1"),
        "{}",
        acctlog[0]
    );
    assert!(
        acctlog[1].ends_with("@alice\\@example.com@0"),
        "{}",
        acctlog[1]
    );
    for (mechanism, token) in [("OAUTHBEARER", &good), ("XOAUTH2", &bad)] {
        // No part of the token, nor of the response that carries it, in any line.
        for part in token.split('.').chain([B64
            .encode(response(mechanism, ALICE, token))
            .get(..24)
            .unwrap()])
        {
            assert!(!log.contains(part), "{part} in the log:\n{log}");
        }
    }
}

#[test]
fn failed_tokens_count_toward_the_auth_failure_limit() {
    let up = oauth_upstream(SECRET);
    let d = token_daemon("throttle", &host(&up), "", "Auth_Failure_Limit = 2");
    let good = mint(SECRET, ALICE, &[]);
    let bad = mint("another key", ALICE, &[]);
    assert_eq!(
        smtplib(d.port(), "OAUTHBEARER", ALICE, &bad, false)["code"],
        535
    );
    assert_eq!(smtplib(d.port(), "XOAUTH2", ALICE, &bad, true)["code"], 535);
    // Two failures from this address: even a good token is refused now, unchecked.
    let r = smtplib(d.port(), "OAUTHBEARER", ALICE, &good, false);
    assert_eq!(r["code"], 454, "{r}");
    assert_eq!(
        r["text"],
        "4.7.0 Too many failed authentication attempts, try again later"
    );
    d.wait_log("AUTH refused without checking");
    assert_eq!(up.token_auths().len(), 2, "the upstream was not asked");
}

#[test]
fn pooled_upstream_connections_carry_tokens() {
    let up = oauth_upstream(SECRET);
    // One serving thread: each thread has its own pool.
    let d = token_daemon_env(
        "oauth-pool",
        &format!("{} pool = 1", host(&up)),
        "",
        NO_THROTTLE,
        &[("SMTP_AUTH_PROXY_THREADS", "1")],
    );
    let good = mint(SECRET, ALICE, &[]);
    let bad = mint("another key", ALICE, &[]);
    // The first AUTH opens its own connection, and one for the pool.
    assert_eq!(
        smtplib(d.port(), "OAUTHBEARER", ALICE, &good, false)["code"],
        235
    );
    for (mechanism, token, code) in [("XOAUTH2", &good, 235), ("OAUTHBEARER", &bad, 535)] {
        std::thread::sleep(Duration::from_millis(500));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert_eq!(
            smtplib(d.port(), mechanism, ALICE, token, true)["code"],
            code
        );
        // The upstream connection said EHLO before this client connected: a pooled one.
        let last = up.token_auths().pop().unwrap();
        assert!(last["ehlo_at"].as_f64().unwrap() < now, "{last}");
    }
}

#[test]
fn a_password_file_for_a_token_mechanism_is_a_configuration_error() {
    let dir = TempDir::new("oauth-file");
    for (option, mechanism) in [
        ("AuthXoauth2Parameters", "XOAUTH2"),
        ("AuthOauthbearerParameters", "OAUTHBEARER"),
    ] {
        let conf = dir.write(
            "ecelerity.conf",
            &format!(
                r#"smtp_auth_proxy {{ host = "127.0.0.1:2525" }}
Gateway = "127.0.0.1:2526"
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH {mechanism}" )
  {option} = [ uri = "file:///etc/passwords" ]
  Listen "127.0.0.1:25" {{ }}
}}
"#
            ),
        );
        let out = run(
            common::daemon::BIN,
            &["--check-config", "-c", conf.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let col = format!("  {option} = [ uri = ").len() + 1;
        let want = format!(
            "{}:5:{col}: error: `{option}`: a password file cannot check an OAuth 2.0 bearer token; only the upstream can (uri = \"smtp_auth_proxy://\")\n",
            conf.display()
        );
        assert!(stderr.contains(&want), "{stderr}");
        assert_eq!(stderr.matches(": error: ").count(), 1, "{stderr}");
    }
}
