//! An upstream that misbehaves on purpose (slow, cut off, 4xx, garbage), or speaks CRAM-MD5,
//! which aiosmtpd does not: the cases a real server library will not produce on demand.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 235 for every AUTH.
    Accept,
    /// 235 for every AUTH, but a connection idle for this long is closed.
    AcceptClosingIdle(Duration),
    /// 535 for every AUTH.
    Reject,
    /// 454 for every AUTH.
    TempFail,
    /// Greets only after this long.
    Slow(Duration),
    /// Cuts the EHLO reply off in the middle and closes.
    DropMidReply,
    /// Answers with something that is not SMTP.
    Garbage,
    /// A next hop that takes MAIL, RCPT and DATA, then goes away in the middle of the data.
    DropDuringData,
    /// AUTH CRAM-MD5 for one user and password (RFC 2195).
    CramMd5 { user: String, password: String },
}

pub struct FakeUpstream {
    pub port: u16,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

impl FakeUpstream {
    pub fn start(behaviour: Behaviour) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                count.fetch_add(1, Ordering::SeqCst);
                let b = behaviour.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &b);
                });
            }
        });
        FakeUpstream { port, connections }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(mut s: TcpStream, b: &Behaviour) -> std::io::Result<()> {
    if let Behaviour::AcceptClosingIdle(idle) = b {
        s.set_read_timeout(Some(*idle))?;
    }
    let mut r = BufReader::new(s.try_clone()?);
    match b {
        Behaviour::Slow(d) => std::thread::sleep(*d),
        Behaviour::Garbage => {
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
        _ => {}
    }
    s.write_all(b"220 fake ESMTP\r\n")?;
    let mut line = String::new();
    let mut challenge = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            if let Behaviour::DropMidReply = b {
                s.write_all(b"250-fake\r\n250-AUTH PL")?;
                return Ok(());
            }
            let mech = match b {
                Behaviour::CramMd5 { .. } => "CRAM-MD5",
                _ => "PLAIN LOGIN",
            };
            format!("250-fake\r\n250 AUTH {mech}\r\n")
        } else if upper.starts_with("AUTH CRAM-MD5") {
            challenge = "<4711.1700000000@fake>".into();
            format!("334 {}\r\n", B64.encode(&challenge))
        } else if upper.starts_with("AUTH") || (!challenge.is_empty() && !upper.contains(' ')) {
            match b {
                Behaviour::Accept | Behaviour::AcceptClosingIdle(_) => "235 2.7.0 ok\r\n".into(),
                Behaviour::Reject => "535 5.7.8 no\r\n".into(),
                Behaviour::TempFail => "454 4.7.0 try later\r\n".into(),
                Behaviour::CramMd5 { user, password } => {
                    let answer = String::from_utf8(B64.decode(cmd.trim()).unwrap_or_default())
                        .unwrap_or_default();
                    let expected = format!(
                        "{user} {}",
                        smtp_auth_proxy::auth::file::cram_md5(password, &challenge)
                    );
                    if answer == expected {
                        "235 2.7.0 ok\r\n".into()
                    } else {
                        "535 5.7.8 no\r\n".into()
                    }
                }
                _ => "502 no\r\n".into(),
            }
        } else if upper.starts_with("DATA") {
            s.write_all(b"354 go ahead\r\n")?;
            if let Behaviour::DropDuringData = b {
                line.clear();
                r.read_line(&mut line)?;
                return Ok(());
            }
            // Take the message and accept it.
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 || line == ".\r\n" {
                    break;
                }
            }
            "250 2.0.0 queued by fake\r\n".into()
        } else if upper.starts_with("QUIT") {
            s.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            "250 ok\r\n".into()
        };
        s.write_all(reply.as_bytes())?;
    }
}
