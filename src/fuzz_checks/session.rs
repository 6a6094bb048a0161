//! The session state machine under arbitrary client bytes: one whole session per input, from
//! the PROXY header (when the first byte picks that Listen) to the client's end of stream,
//! against a real configuration and a next hop on loopback.
//!
//! What must hold whatever the client sends:
//! - the session ends once the client has sent everything and closed (no hang, no panic);
//! - everything it writes is well-formed SMTP replies, at most one per line the client sent
//!   (plus the greeting and one closing 421);
//! - every message the client is told was accepted, the next hop accepted, and the other way
//!   round: nothing acknowledged that was not relayed, nothing relayed and left unacknowledged;
//! - nothing the client sends puts a line break where we did not: every log line (at debug
//!   level, acctlog included) is one line without control characters, every command line the
//!   next hop receives is a command we send, and our `Received:` field is exactly its three
//!   lines at the top of every message.

use crate::listener::Runtime;
use crate::listener::session::ClientAddr;
use crate::reply::Reply;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The text of the next hop's reply to a message it took; the client sees it relayed.
const QUEUED: &str = "queued as FUZZ";

/// A real session's time limit would be minutes; a fuzz input that takes this long is a hang.
const HANG: Duration = Duration::from_secs(20);

struct Harness {
    tokio: tokio::runtime::Runtime,
    rt: Arc<Runtime>,
    /// Messages the next hop accepted, for the run under way.
    accepted: Arc<AtomicU64>,
    /// What the next hop saw that we must never send, for the run under way.
    hop_violations: Arc<Mutex<Vec<String>>>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // Every line the daemon can log is produced, and kept for the check.
        crate::log::set_level(crate::log::Level::Debug);
        crate::log::capture();
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let accepted = Arc::new(AtomicU64::new(0));
        let hop_violations = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio
            .block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("bind the next hop");
        let port = listener.local_addr().expect("next hop address").port();
        tokio.spawn(next_hop(listener, accepted.clone(), hop_violations.clone()));
        let dir = std::env::temp_dir().join(format!("smtp-auth-proxy-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let users = dir.join("users");
        std::fs::write(&users, "alice:secret\n").expect("password file");
        let text = format!(
            r#"
Gateway = "127.0.0.1:{port}"
ESMTP_Listener {{
  SMTP_Extensions = ( "ENHANCEDSTATUSCODES" "AUTH LOGIN PLAIN CRAM-MD5" "XCLIENT"
                      "XREMOTEIP" "XSETCONTEXT" "XDUMPCONTEXT" "SIZE 100000" )
  AuthLoginParameters = [ uri = "file://{users}" ]
  AuthPlainParameters = [ uri = "file://{users}" ]
  AuthCramMD5Parameters = [ uri = "file://{users}" ]
  Auth_Failure_Limit = 0
  relay_hosts = ( "192.0.2.0/25" )
  Listen "127.0.0.1:0" {{ }}
  Listen "127.0.0.1:1" {{ Proxy_Protocol = true }}
}}
"#,
            users = users.display()
        );
        let loaded = crate::config::load_str("fuzz-session.conf", &text, &super::load_options());
        assert!(!loaded.diagnostics.has_errors(), "fuzz configuration");
        let (config, diags) = crate::model::build(&loaded.root, &loaded.sources);
        assert!(!diags.has_errors(), "fuzz configuration");
        let rt = crate::daemon::prepare(config, &Arc::default(), &Arc::default())
            .unwrap_or_else(|e| panic!("fuzz runtime: {e:?}"));
        crate::listener::control::install(rt.clone());
        Harness {
            tokio,
            rt,
            accepted,
            hop_violations,
        }
    })
}

/// A next hop that takes everything: 250 to each envelope command, 354 to DATA, and
/// [`QUEUED`] (counted) at the end of each message.
async fn next_hop(
    listener: TcpListener,
    accepted: Arc<AtomicU64>,
    violations: Arc<Mutex<Vec<String>>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let accepted = accepted.clone();
        let violations = violations.clone();
        let violation = move |what: String| {
            violations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(what)
        };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            w.write_all(b"220 hop ESMTP\r\n").await?;
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await? == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                let verb = line.get(..4).unwrap_or(&line).to_ascii_uppercase();
                const SENT: [&[u8]; 8] = [
                    b"EHLO", b"HELO", b"XCLI", b"MAIL", b"RCPT", b"DATA", b"RSET", b"QUIT",
                ];
                if !SENT.contains(&verb.as_slice()) || !line.ends_with(b"\r\n") {
                    violation(format!("command line {:?}", String::from_utf8_lossy(&line)));
                }
                match verb.as_slice() {
                    b"EHLO" => w.write_all(b"250-hop\r\n250-PIPELINING\r\n250 XCLIENT ADDR NAME HELO PROTO LOGIN\r\n").await?,
                    b"QUIT" => {
                        w.write_all(b"221 bye\r\n").await?;
                        return Ok(());
                    }
                    b"XCLI" => w.write_all(b"220 hop ESMTP\r\n").await?,
                    b"DATA" => {
                        w.write_all(b"354 go on\r\n").await?;
                        let mut head = Vec::new();
                        loop {
                            line.clear();
                            if r.read_until(b'\n', &mut line).await? == 0 {
                                // Cut off mid-message: not accepted.
                                return Ok(());
                            }
                            if line == b".\r\n" {
                                break;
                            }
                            if head.len() < 4 {
                                head.push(String::from_utf8_lossy(&line).into_owned());
                            }
                        }
                        if let Some(why) = received_field_broken(&head) {
                            violation(why);
                        }
                        accepted.fetch_add(1, Ordering::SeqCst);
                        w.write_all(format!("250 2.0.0 {QUEUED}\r\n").as_bytes()).await?;
                    }
                    _ => w.write_all(b"250 2.0.0 ok\r\n").await?,
                }
            }
        });
    }
}

/// Our `Received:` field, as the first lines of a message: `Received: from`, a tab and `by`,
/// a tab and the date; then the client's own first line. `None` when it is so.
fn received_field_broken(head: &[String]) -> Option<String> {
    let ok = head.len() >= 3
        && head[0].starts_with("Received: from ")
        && head[1].starts_with("\tby ")
        && head[2].starts_with('\t')
        && head[2].ends_with(" +0000\r\n")
        && head[..3].iter().all(|l| {
            l.strip_suffix("\r\n")
                .is_some_and(|l| !l.contains(['\r', '\n']))
        });
    (!ok).then(|| format!("Received: field {head:?}"))
}

/// One session over an in-memory stream. The first byte picks the Listen: odd is the one
/// that reads a PROXY header first.
pub fn session(data: &[u8]) {
    let h = harness();
    let (listen, input) = match data.split_first() {
        Some((b, rest)) => (usize::from(b & 1), rest),
        None => (0, data),
    };
    h.accepted.store(0, Ordering::SeqCst);
    h.hop_violations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    let _ = crate::log::captured();
    let rt = h.rt.clone();
    let output = h.tokio.block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = ClientAddr {
            ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200))),
            port: Some(40000),
        };
        let session = tokio::spawn(crate::listener::server::start(
            rt,
            listen,
            "127.0.0.1:0".into(),
            Box::new(server),
            peer,
        ));
        let (mut r, mut w) = tokio::io::split(client);
        let write = async {
            // The session may close first (QUIT, too many errors): the rest is refused.
            let _ = w.write_all(input).await;
            let _ = w.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out).await;
            out
        };
        let (_, out) = tokio::time::timeout(HANG, async { tokio::join!(write, read) })
            .await
            .expect("the session did not end after the client closed");
        tokio::time::timeout(HANG, session)
            .await
            .expect("the session did not end after closing")
            .expect("the session panicked");
        out
    });
    let mut rest = output.as_slice();
    let mut replies = 0usize;
    let mut acknowledged = 0u64;
    while !rest.is_empty() {
        let (reply, used) = match Reply::parse(rest) {
            Ok(Some(r)) => r,
            other => panic!(
                "malformed output {other:?} at {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        assert!(
            (200..600).contains(&reply.code),
            "reply code {}",
            reply.code
        );
        if reply.code == 250 && reply.lines.iter().any(|l| l.contains(QUEUED)) {
            acknowledged += 1;
        }
        replies += 1;
        rest = &rest[used..];
    }
    let lines = input.iter().filter(|&&b| b == b'\n').count();
    assert!(
        replies <= lines + 2,
        "{replies} replies to {lines} lines: {:?}",
        String::from_utf8_lossy(&output)
    );
    assert_eq!(
        acknowledged,
        h.accepted.load(Ordering::SeqCst),
        "messages acknowledged to the client and taken by the next hop differ"
    );
    let violations = h
        .hop_violations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert!(
        violations.is_empty(),
        "the next hop got what we never send: {violations:?}"
    );
    for line in crate::log::captured() {
        assert!(
            !line.chars().any(char::is_control),
            "a log line with a control character: {line:?}"
        );
    }
}
