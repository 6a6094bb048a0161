//! Momentum's `mainlog`: one `@`-separated record per reception (`R`, one per recipient),
//! delivery (`D`), transient failure (`T`) and permanent failure (`P`), and a heartbeat (`M`),
//! in the field layout of Momentum's "mainlog" log-format page, so an operator's existing
//! parsers read ours. Where Momentum's fields name its own machinery (batch ids, MultiVIP
//! binding groups) we write what stands for it here: the message id as its own batch, and
//! `default` for both binding fields, as an unconfigured Momentum does.
//!
//! Fields are escaped as acctlog's are (`@` and `\` with a backslash, control characters as
//! `\xNN`): an address with a quoted `@` keeps its record's field count. Records go to the file
//! `ec_logger { mainlog = … }` names, or to syslog (facility mail) when none is named, from a
//! thread of their own: the queue never waits for the disk or syslogd. The writer lets records
//! gather for [`GATHER`] after each batch, so a busy queue wakes it a hundred times a second
//! rather than twice a message; a stop flushes what is waiting.

use crate::text::escape_field;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError, channel, sync_channel};
use std::time::{Duration, SystemTime};

/// Records waiting for the writer; past this they are dropped and counted.
const QUEUE: usize = 65_536;

/// How long the writer lets records gather after writing a batch. While it waits, senders
/// only queue (no wake-up system call); a record waits at most this long plus the write.
const GATHER: Duration = Duration::from_millis(10);

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Syslog,
}

enum Job {
    Line(String),
    /// Reopen (log rotation), possibly elsewhere.
    Reopen(Target),
    /// Write everything before this, then answer.
    Flush(Sender<()>),
}

/// The mainlog of a daemon. Cloned handles share the writer.
#[derive(Clone)]
pub struct Mainlog {
    jobs: SyncSender<Job>,
    dropped: Arc<AtomicU64>,
}

/// A reception, for its `R` records.
pub struct Reception<'a> {
    pub id: &'a str,
    pub connection: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [&'a str],
    pub client_ip: Option<std::net::IpAddr>,
    pub size: u64,
    /// `esmtp`, or `internal` for a bounce we generated.
    pub protocol: &'a str,
    pub received: SystemTime,
}

/// A delivery attempt's outcome for one destination, for its `D`, `T` or `P` record.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub id: String,
    /// The outbound connection's id (each attempt has its own).
    pub connection: String,
    pub domain: String,
    /// `D`: the message size; `T`/`P`: bytes sent before the failure (0: no connection).
    pub bytes: u64,
    /// Momentum's connection stage number (`T`/`P`).
    pub stage: u8,
    /// Attempts before this one (0 on the first).
    pub retries: u32,
    pub received: SystemTime,
    /// The address of the server that answered, if any.
    pub remote: Option<std::net::IpAddr>,
    /// The reply or error (`T`/`P`).
    pub error: String,
}

impl Mainlog {
    /// Starts the writer. A file that cannot be opened is reported by the writer and its
    /// records go to syslog until a reopen succeeds.
    pub fn start(target: Target) -> Mainlog {
        let (jobs, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let count = dropped.clone();
        let _ = std::thread::Builder::new()
            .name("mainlog".into())
            .spawn(move || writer(target, rx, count));
        Mainlog { jobs, dropped }
    }

    /// Opens the target afresh: after a log rotation (SIGHUP), or a new `mainlog` path.
    pub fn reopen(&self, target: Target) {
        let _ = self.jobs.try_send(Job::Reopen(target));
    }

    /// Waits (a second at most) until every record sent before is written: for a stop.
    pub fn flush(&self) {
        let (done, wait) = channel();
        if self.jobs.try_send(Job::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(1));
        }
    }

    fn send(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.jobs.try_send(Job::Line(line)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `R` records, one per recipient.
    pub fn reception(&self, r: &Reception) {
        let (slocal, sdomain) = split(r.sender);
        let ip = r
            .client_ip
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        for rcpt in r.recipients {
            let (local, domain) = split(rcpt);
            self.send(format!(
                "{}@{id}@{id}@{conn}@R@{}@{}@{}@{}@{ip}@{}@{}@default@default",
                secs(r.received),
                escape_field(local),
                escape_field(domain),
                escape_field(slocal),
                escape_field(sdomain),
                r.size,
                r.protocol,
                id = r.id,
                conn = escape_field(r.connection),
            ));
        }
    }

    /// `D`: delivered.
    pub fn delivery(&self, a: &Attempt) {
        self.send(format!(
            "{}@{id}@{id}@{}@D@{}@{}@default@default@{}@{}@{}",
            secs(SystemTime::now()),
            escape_field(&a.connection),
            escape_field(&a.domain),
            a.bytes,
            a.retries,
            since(a.received),
            remote(a),
            id = a.id,
        ));
    }

    /// `T`: a transient failure; the message will be tried again.
    pub fn transient(&self, a: &Attempt) {
        self.failure('T', a);
    }

    /// `P`: a permanent failure; the recipients are given up (and bounced).
    pub fn permanent(&self, a: &Attempt) {
        self.failure('P', a);
    }

    fn failure(&self, kind: char, a: &Attempt) {
        self.send(format!(
            "{}@{id}@{id}@{}@{kind}@{}@{}@default@default@{}@{}@{}@{}@{}",
            secs(SystemTime::now()),
            escape_field(&a.connection),
            escape_field(&a.domain),
            a.bytes,
            a.stage,
            a.retries,
            since(a.received),
            remote(a),
            escape_field(&a.error),
            id = a.id,
        ));
    }

    /// `M`: the periodic heartbeat.
    pub fn heartbeat(&self) {
        self.send(format!("{}@@@@M", secs(SystemTime::now())));
    }
}

fn split(address: &str) -> (&str, &str) {
    address.rsplit_once('@').unwrap_or((address, ""))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since reception, to the millisecond as Momentum writes them.
fn since(received: SystemTime) -> String {
    let d = SystemTime::now()
        .duration_since(received)
        .unwrap_or_default();
    format!("{:.3}", d.as_secs_f64())
}

fn remote(a: &Attempt) -> String {
    a.remote.map_or_else(String::new, |ip| ip.to_string())
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
}

fn writer(target: Target, jobs: Receiver<Job>, dropped: Arc<AtomicU64>) {
    let syslog = crate::syslog::Syslog::new("smtp-auth-proxy-mainlog", crate::log::pid());
    let mut file: Option<File> = None;
    let reopen = |target: &Target, file: &mut Option<File>| {
        *file = match target {
            Target::File(path) => match open(path) {
                Ok(f) => Some(f),
                Err(e) => {
                    crate::log_error!(
                        "mainlog {}: {e}; records go to syslog meanwhile",
                        path.display()
                    );
                    None
                }
            },
            Target::Syslog => None,
        };
    };
    reopen(&target, &mut file);
    let mut batch = String::new();
    while let Ok(first) = jobs.recv() {
        let mut next = Some(first);
        // Everything already waiting goes out in one write.
        while let Some(job) = next {
            match job {
                Job::Line(line) => match &file {
                    Some(_) => {
                        batch.push_str(&line);
                        batch.push('\n');
                    }
                    None => {
                        let _ = syslog.send(
                            crate::syslog::FACILITY_MAIL,
                            crate::syslog::SEVERITY_INFO,
                            &line,
                        );
                    }
                },
                Job::Reopen(t) => {
                    flush(&mut file, &mut batch);
                    reopen(&t, &mut file);
                }
                Job::Flush(done) => {
                    flush(&mut file, &mut batch);
                    let _ = done.send(());
                }
            }
            next = jobs.try_recv().ok();
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            crate::log_warning!("mainlog: {lost} record(s) dropped: the log did not keep up");
        }
        flush(&mut file, &mut batch);
        std::thread::sleep(GATHER);
    }
    flush(&mut file, &mut batch);
}

fn flush(file: &mut Option<File>, batch: &mut String) {
    if let Some(f) = file
        && !batch.is_empty()
        && let Err(e) = f.write_all(batch.as_bytes())
    {
        crate::log_error!("mainlog: {e}");
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait_for(path: &std::path::Path, lines: usize) -> Vec<String> {
        for _ in 0..200 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= lines {
                return text.lines().map(str::to_owned).collect();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("mainlog never had {lines} lines");
    }

    /// A writer to a fresh file in a directory of its own: (directory, file, mainlog).
    fn started(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, Mainlog) {
        let dir = std::env::temp_dir().join(format!("mainlog-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mainlog.ec");
        let _ = std::fs::remove_file(&path);
        let log = Mainlog::start(Target::File(path.clone()));
        (dir, path, log)
    }

    #[test]
    fn a_flush_writes_what_was_sent_before_it_even_while_the_writer_gathers() {
        let (dir, path, log) = started("flush");
        log.heartbeat();
        // Written: the writer now lets the next records gather.
        wait_for(&path, 1);
        log.heartbeat();
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_follow_momentums_field_layout() {
        let (dir, path, log) = started("layout");
        let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_064_868_656);
        log.reception(&Reception {
            id: "0A0B0C0D0E0F1011",
            connection: "1F4-7",
            sender: "info@postalengine.com",
            recipients: &["bob@example.fict", "\"odd@local\"@example.fict"],
            client_ip: Some("10.0.1.1".parse().unwrap()),
            size: 201,
            protocol: "esmtp",
            received,
        });
        let attempt = Attempt {
            id: "0A0B0C0D0E0F1011".into(),
            connection: "out-3".into(),
            domain: "example.fict".into(),
            bytes: 0,
            stage: 0,
            retries: 2,
            received,
            remote: None,
            error: "451 4.4.1 connection refused\r\nforged".into(),
        };
        log.transient(&attempt);
        log.delivery(&Attempt {
            bytes: 266,
            remote: Some("10.0.0.1".parse().unwrap()),
            ..attempt
        });
        log.heartbeat();
        let lines = wait_for(&path, 5);
        assert_eq!(
            lines[0],
            "1064868656@0A0B0C0D0E0F1011@0A0B0C0D0E0F1011@1F4-7@R@bob@example.fict@info@postalengine.com@10.0.1.1@201@esmtp@default@default"
        );
        // The quoted `@` is escaped: the record keeps its fourteen fields for a splitter
        // that honours the backslash.
        assert!(
            lines[1].contains("@R@\"odd\\@local\"@example.fict@"),
            "{}",
            lines[1]
        );
        let t: Vec<&str> = lines[2].split('@').collect();
        assert_eq!(
            &t[4..11],
            &["T", "example.fict", "0", "default", "default", "0", "2"]
        );
        assert!(
            t[13].starts_with("451 4.4.1 connection refused\\x0d"),
            "{}",
            lines[2]
        );
        let d: Vec<&str> = lines[3].split('@').collect();
        assert_eq!(d.len(), 12, "{}", lines[3]);
        assert_eq!(
            &d[4..10],
            &["D", "example.fict", "266", "default", "default", "2"]
        );
        assert_eq!(d[11], "10.0.0.1");
        assert!(lines[4].ends_with("@@@@M"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
