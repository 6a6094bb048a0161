//! The session state machine under arbitrary client bytes: one whole session per input, from
//! the PROXY header (when the first byte picks that Listen) to the client's end of stream,
//! against a real configuration and a real spool in a temporary directory.
//!
//! What must hold whatever the client sends:
//! - the session ends once the client has sent everything and closed (no hang, no panic);
//! - everything it writes is well-formed SMTP replies, at most one per line the client sent
//!   (plus the greeting and one closing 421);
//! - every message the client is told was queued is in the spool and was handed to the queue,
//!   and the other way round: nothing acknowledged that was not stored, nothing stored and
//!   left unacknowledged;
//! - nothing the client sends puts a line break where we did not: every log line (at debug
//!   level, acctlog included) is one line without control characters, and our `Received:`
//!   field is exactly its three lines at the top of every stored message.

use crate::listener::session::ClientAddr;
use crate::listener::{Runtime, Services, Store};
use crate::queue::{Inbox, QueueHandle};
use crate::reply::Reply;
use crate::spool::Spool;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the client is told when its message is in the spool.
const QUEUED: &str = "queued as ";

/// A real session's time limit would be minutes; a fuzz input that takes this long is a hang.
const HANG: Duration = Duration::from_secs(20);

struct Harness {
    tokio: tokio::runtime::Runtime,
    rt: Arc<Runtime>,
    spool: Arc<Spool>,
    /// What the sessions hand to the queue.
    inbox: Mutex<Inbox>,
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
        let dir = std::env::temp_dir().join(format!("smtp-auth-proxy-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let users = dir.join("users");
        std::fs::write(&users, "alice:secret\n").expect("password file");
        let text = format!(
            r#"
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
        let (spool, _) = Spool::open(&dir.join("spool"), Default::default()).expect("the spool");
        let (queue, inbox) = QueueHandle::channel();
        let services = Services {
            store: Some(Store {
                spool: spool.clone(),
                queue,
            }),
            ..Services::default()
        };
        let rt = tokio
            .block_on(async { crate::daemon::prepare(config, &services) })
            .unwrap_or_else(|e| panic!("fuzz runtime: {e:?}"));
        crate::listener::control::install(rt.clone());
        Harness {
            tokio,
            rt,
            spool,
            inbox: Mutex::new(inbox),
        }
    })
}

/// Our `Received:` field, as the first lines of a message: `Received: from`, a tab and `by`,
/// a tab and the date; then the client's own first line. `None` when it is so.
fn received_field_broken(content: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    let head: Vec<&str> = text.splitn(4, "\r\n").take(3).collect();
    let ok = head.len() == 3
        && head[0].starts_with("Received: from ")
        && head[1].starts_with("\tby ")
        && head[2].starts_with('\t')
        && head[2].ends_with(" +0000")
        && head.iter().all(|l| !l.contains(['\r', '\n']));
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
    // What the sessions queued: as many as were acknowledged, each with a sound trace field;
    // then gone again, so a long run does not fill the disk.
    let mut inbox = h.inbox.lock().unwrap_or_else(|p| p.into_inner());
    let mut queued = Vec::new();
    while let Some(q) = inbox.try_submitted() {
        queued.push(q);
    }
    assert_eq!(
        acknowledged,
        queued.len() as u64,
        "messages acknowledged to the client and handed to the queue differ"
    );
    for q in &queued {
        let content = q.content.clone().expect("small messages stay in memory");
        if let Some(why) = received_field_broken(&content) {
            panic!("a stored message's trace field is broken: {why}");
        }
        h.tokio
            .block_on(h.spool.remove(q.id()))
            .expect("remove a fuzzed message from the spool");
    }
    for line in crate::log::captured() {
        assert!(
            !line.chars().any(char::is_control),
            "a log line with a control character: {line:?}"
        );
    }
}
