//! The operator's commands on a running daemon (`mailq`, `postqueue -f`, `postsuper -d`, and
//! Momentum's console `showqueue`, `retry`, `fail`): a Unix socket, `Spoolbase/control`, owned
//! by the daemon's user. One command line in; its answer, then a status line, out.
//!
//! | command | what it does |
//! |---|---|
//! | `list` | every queued message: id (`*` while a connection has it), size, arrival, sender, pending recipients, attempts, next attempt, last error |
//! | `show ID` | one message: its envelope and its header |
//! | `retry [ID...]` | tries now (all of them without ids) |
//! | `delete ID...` | removes without telling the sender |
//! | `bounce ID...` | fails the pending recipients and sends the sender a bounce |
//!
//! The answer's last line is `=== N`, N the exit status the command line tool gives: 0 done,
//! 1 an id not found or busy, 2 a bad command.

use super::{Done, Entry, QueueHandle, Which};
use crate::date::rfc5322_date;
use crate::spool::{MessageId, Spool};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket's name in the Spoolbase.
pub const SOCKET: &str = "control";
/// A command line is short; anything longer is not one.
const MAX_LINE: u64 = 64 * 1024;
/// A client that says nothing is let go.
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn socket_path(spoolbase: &Path) -> PathBuf {
    spoolbase.join(SOCKET)
}

/// Binds the control socket (replacing a stale one), for the daemon's user (and root) only.
/// Non-blocking, ready for [`serve`] on the daemon's runtime.
pub fn bind(spoolbase: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(spoolbase);
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Answers commands until the process ends.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    queue: QueueHandle,
    spool: Arc<Spool>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            crate::log_error!("queue control socket: {e}");
            return;
        }
    };
    while let Ok((stream, _)) = listener.accept().await {
        let (queue, spool) = (queue.clone(), spool.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TIMEOUT, answer(stream, &queue, &spool)).await;
        });
    }
}

async fn answer(stream: UnixStream, queue: &QueueHandle, spool: &Spool) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r)
        .take(MAX_LINE)
        .read_line(&mut line)
        .await?;
    let (text, status) = run(line.trim(), queue, spool).await;
    w.write_all(format!("{text}=== {status}\n").as_bytes())
        .await?;
    w.shutdown().await
}

/// One command: its output and exit status.
async fn run(line: &str, queue: &QueueHandle, spool: &Spool) -> (String, u8) {
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    let ids: Result<Vec<MessageId>, String> = args
        .iter()
        .map(|a| a.parse().map_err(|_| format!("`{a}` is not a queue id")))
        .collect();
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => return (format!("{e}\n"), 2),
    };
    match verb.as_str() {
        "list" => (listing(&queue.list().await, false), 0),
        "show" if ids.len() == 1 => show(ids[0], queue, spool).await,
        "retry" => {
            let which = if ids.is_empty() {
                Which::All
            } else {
                Which::Ids(ids)
            };
            report(queue.retry(which).await, "scheduled for delivery now")
        }
        "delete" if !ids.is_empty() => {
            report(queue.remove(Which::Ids(ids), false).await, "deleted")
        }
        "bounce" if !ids.is_empty() => report(
            queue.remove(Which::Ids(ids), true).await,
            "failed; the sender is told",
        ),
        _ => (
            "commands: list | show ID | retry [ID...] | delete ID... | bounce ID...\n".into(),
            2,
        ),
    }
}

fn report(results: Vec<(MessageId, Done)>, done: &str) -> (String, u8) {
    let mut out = String::new();
    let mut status = 0;
    for (id, d) in &results {
        let _ = match d {
            Done::Ok => writeln!(out, "{id}: {done}"),
            Done::NotFound => {
                status = 1;
                writeln!(out, "{id}: not in the queue")
            }
            Done::Busy => {
                status = 1;
                writeln!(
                    out,
                    "{id}: being delivered now; try again when the attempt is over"
                )
            }
        };
    }
    if results.is_empty() {
        out.push_str("the queue is empty\n");
    }
    (out, status)
}

async fn show(id: MessageId, queue: &QueueHandle, spool: &Spool) -> (String, u8) {
    let list = queue.list().await;
    let Some(entry) = list.iter().find(|e| e.id == id) else {
        return (format!("{id}: not in the queue\n"), 1);
    };
    let mut out = listing(std::slice::from_ref(entry), true);
    match spool.content(id).await {
        Ok(content) => {
            let header_end = content
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(content.len(), |i| i + 2);
            out.push('\n');
            // The header as stored; control characters are shown, never acted on.
            let header = String::from_utf8_lossy(&content[..header_end]);
            for l in header.split("\r\n").filter(|l| !l.is_empty()) {
                out.push_str(&crate::text::escape_controls(&l.replace('\t', "        ")));
                out.push('\n');
            }
        }
        Err(e) => {
            let _ = writeln!(out, "(content unreadable: {e})");
        }
    }
    (out, 0)
}

/// The queue as `mailq` shows it: one block per message.
pub fn listing(entries: &[Entry], full: bool) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out = String::from(
        "-Queue ID-       --Size-- ----Arrival Time---------- -Sender/Recipient------\n",
    );
    let now = SystemTime::now();
    let mut bytes = 0;
    for e in entries {
        bytes += e.size;
        let arrival = rfc5322_date(e.arrival);
        let arrival = arrival.trim_end_matches(" +0000");
        let _ = writeln!(
            out,
            "{}{} {:>8} {arrival:<26} {}",
            e.id,
            if e.active { "*" } else { " " },
            e.size,
            if e.sender.is_empty() {
                "MAILER-DAEMON"
            } else {
                &e.sender
            }
        );
        let mut why = Vec::new();
        if let Some(err) = &e.last_error {
            why.push(err.clone());
        }
        if e.attempts > 0 {
            why.push(format!("{} attempt(s)", e.attempts));
        }
        match e.next_attempt {
            Some(t) => {
                let wait = t.duration_since(now).unwrap_or_default().as_secs();
                why.push(format!(
                    "next in {}:{:02}:{:02}",
                    wait / 3600,
                    wait / 60 % 60,
                    wait % 60
                ));
            }
            None if e.active => why.push("being delivered".into()),
            None => why.push("ready".into()),
        }
        let _ = writeln!(
            out,
            "{:16}  ({})",
            "",
            crate::text::escape_controls(&why.join("; "))
        );
        for r in &e.pending {
            let _ = writeln!(out, "{:54}{r}", "");
        }
        if full {
            let _ = writeln!(out, "{:16}  arrived {}", "", rfc5322_date(e.arrival));
        }
    }
    let _ = writeln!(
        out,
        "-- {} KiB in {} message(s).",
        bytes.div_ceil(1024),
        entries.len()
    );
    out
}

/// The listing of a spool no daemon holds: what its files say.
pub fn listing_from_spool(entries: &[crate::spool::ListEntry]) -> String {
    let mut unreadable = Vec::new();
    let list: Vec<Entry> = entries
        .iter()
        .filter_map(|e| match e {
            crate::spool::ListEntry::Message {
                envelope,
                size,
                meta,
            } => Some(Entry {
                id: envelope.id,
                arrival: envelope.received,
                size: *size,
                sender: envelope.sender.clone(),
                pending: envelope
                    .pending()
                    .map(|i| envelope.recipients[i].address.clone())
                    .collect(),
                attempts: meta.attempts,
                next_attempt: meta.next_attempt,
                last_error: meta.last_error.clone(),
                active: false,
            }),
            crate::spool::ListEntry::Unreadable { name, damage } => {
                unreadable.push(format!("{name}: {damage}"));
                None
            }
        })
        .collect();
    let mut out = listing(&list, false);
    for u in unreadable {
        let _ = writeln!(out, "(unreadable: {})", crate::text::escape_controls(&u));
    }
    out
}

/// Sends one command to the daemon whose Spoolbase is `spoolbase`; its output and status.
/// `Err`: no daemon answers there.
pub fn request(spoolbase: &Path, command: &str) -> Result<(String, u8), String> {
    use std::io::{BufRead, Write};
    let path = socket_path(spoolbase);
    let mut s = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{command}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    let mut status = None;
    for line in std::io::BufReader::new(s).lines() {
        let line = line.map_err(|e| e.to_string())?;
        match line.strip_prefix("=== ") {
            Some(n) => status = n.trim().parse().ok(),
            None => {
                text.push_str(&line);
                text.push('\n');
            }
        }
    }
    Ok((text, status.ok_or("the daemon's answer was cut off")?))
}
