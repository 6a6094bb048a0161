//! TLS session resumption on the listener's side, with Python's ssl module (OpenSSL) as the
//! client: a client that comes back resumes its session, however many other handshakes the
//! daemon made in between and whichever serving thread takes the new connection.

mod common;

use common::TempDir;
use common::daemon::{Daemon, make_cert, run};

/// STARTTLS sessions against `port`: one whose session is kept, `between` full handshakes of
/// other clients, then the first client back with its session, then ten returns in a row,
/// each with the session of the one before. Prints the version, then how the comeback went
/// and how many of the ten resumed.
const CLIENT: &str = r#"
import socket, ssl, sys
port, version, between = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if version == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
else:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3

def reply(f):
    while True:
        line = f.readline()
        if len(line) < 4:
            sys.exit("connection closed")
        if line[3:4] != b"-":
            return line[:3]

def visit(saved=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    f = s.makefile("rb")
    reply(f)
    s.sendall(b"EHLO client.example\r\n"); reply(f)
    s.sendall(b"STARTTLS\r\n")
    assert reply(f) == b"220"
    t = ctx.wrap_socket(s, server_hostname="localhost", session=saved)
    tf = t.makefile("rb")
    # TLS 1.3 tickets come after the handshake: the EHLO reply is read after them.
    t.sendall(b"EHLO client.example\r\n"); reply(tf)
    t.sendall(b"QUIT\r\n"); reply(tf)
    out = (t.session, t.session_reused, t.version())
    t.close()
    return out

first, _, v = visit()
for _ in range(between):
    visit()
saved, reused, _ = visit(first)
print(v, "comeback", "resumed" if reused else "full")
count = 0
for _ in range(10):
    saved, reused, _ = visit(saved)
    count += reused
print("in a row", count)
"#;

fn daemon(tag: &str) -> Daemon {
    let dir = TempDir::new(tag);
    let (cert, key) = make_cert(dir.path());
    let conf = format!(
        r#"
ESMTP_Listener {{
  SMTP_Extensions = ( STARTTLS )
  TLS_Certificate = "{}"
  TLS_Key = "{}"
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        cert.display(),
        key.display()
    );
    // Two serving threads: a returning client lands on either.
    Daemon::start_env(
        TempDir::new(&format!("{tag}-d")),
        &conf,
        1,
        &[("SMTP_AUTH_PROXY_THREADS", "2")],
    )
}

fn visits(d: &Daemon, version: &str, between: usize) -> String {
    let out = run(
        "python3",
        &[
            "-c",
            CLIENT,
            &d.port().to_string(),
            version,
            &between.to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_tls13_client_resumes_after_hundreds_of_other_handshakes_on_either_thread() {
    let d = daemon("resume13");
    // 300 handshakes of two tickets each: more than any bounded session cache holds.
    let text = visits(&d, "1.3", 300);
    assert!(text.starts_with("TLSv1.3 comeback resumed"), "{text}");
    assert!(text.contains("in a row 10"), "{text}");
}

#[test]
fn a_tls12_client_resumes_with_a_ticket_after_hundreds_of_other_handshakes() {
    let d = daemon("resume12");
    let text = visits(&d, "1.2", 300);
    assert!(text.starts_with("TLSv1.2 comeback resumed"), "{text}");
    assert!(text.contains("in a row 10"), "{text}");
}
