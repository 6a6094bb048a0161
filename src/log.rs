//! The daemon's log. One line per event, never a secret (callers pass user names at most).
//!
//! Lines go to stderr, which is the journal under systemd, or to syslog in daemon mode. Lines
//! are gathered and written by one thread, a batch at a time, so a busy daemon spends one system
//! call per batch rather than one per line, and a sink that stalls (a full pipe, a stuck
//! syslogd) stalls only that thread: past a bound, lines are dropped and the count reported.
//! A line waits at most [`BATCH_DELAY`] before it is written.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// The process id, read once (it is in every line).
pub fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Daemon mode: lines go to syslog instead of stderr, one datagram each, with `ident` and
/// `facility` (RFC 5424 number; mail, 2, by default). acctlog lines use the same.
pub fn to_syslog(ident: &str, facility: u8) {
    let _ = SYSLOG.set(crate::syslog::Syslog::new(ident, pid()));
    SYSLOG_FACILITY.store(facility, Ordering::SeqCst);
    SYSLOG_MODE.store(true, Ordering::SeqCst);
}

static SYSLOG_MODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static SYSLOG_FACILITY: AtomicU8 = AtomicU8::new(crate::syslog::FACILITY_MAIL);
static SYSLOG: std::sync::OnceLock<crate::syslog::Syslog> = std::sync::OnceLock::new();

fn syslog() -> &'static crate::syslog::Syslog {
    SYSLOG.get_or_init(|| crate::syslog::Syslog::new("smtp-auth-proxy", pid()))
}

fn facility() -> u8 {
    SYSLOG_FACILITY.load(Ordering::Relaxed)
}

/// Queues one line. Whatever the text holds, it stays one line: control characters (a CR or
/// LF in a client's user name or HELO) are escaped here, for every line of every kind.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let text = args.to_string();
    let text = match crate::text::escape_controls(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    };
    push(Entry {
        kind: Kind::Log(level),
        text,
    });
}

fn push(e: Entry) {
    if CAPTURING.load(Ordering::Relaxed) {
        let mut c = CAPTURED.lock().unwrap_or_else(|p| p.into_inner());
        c.push(e.text);
        return;
    }
    queue().push(e);
}

static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static CAPTURED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// For the fuzz checks: lines are kept in memory, exactly as they would be written, instead of
/// going to a sink; [`captured`] hands them over.
#[doc(hidden)]
pub fn capture() {
    CAPTURING.store(true, Ordering::SeqCst);
}

#[doc(hidden)]
pub fn captured() -> Vec<String> {
    std::mem::take(&mut *CAPTURED.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Momentum's acctlog line for one authentication attempt: to syslog, facility mail; to the
/// log when no syslog daemon listens, so that no attempt goes unrecorded.
pub fn acctlog(line: &str) {
    push(Entry {
        kind: Kind::Acct,
        text: crate::text::escape_controls(line).into_owned(),
    });
}

/// How long a line may wait to be written with others.
pub const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(10);
/// Bytes of lines waiting to be written; past this, new lines are dropped (and counted) rather
/// than let a stalled stderr or syslogd stall the sessions that log.
const MAX_PENDING: usize = 1 << 20;

enum Kind {
    Log(Level),
    Acct,
}

struct Entry {
    kind: Kind,
    text: String,
}

#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    bytes: usize,
    dropped: u64,
}

/// The lines waiting for the writer thread. Serving threads only ever take this lock and push:
/// the writing (a pipe, a journal, a syslog socket, any of which can block) happens on the
/// writer thread alone.
struct Queue {
    pending: std::sync::Mutex<Pending>,
    ready: std::sync::Condvar,
}

impl Queue {
    fn push(&self, e: Entry) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if p.bytes + e.text.len() > MAX_PENDING {
            p.dropped += 1;
            return;
        }
        let was_empty = p.entries.is_empty();
        p.bytes += e.text.len();
        p.entries.push(e);
        if was_empty {
            self.ready.notify_one();
        }
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn queue() -> &'static Queue {
    static QUEUE: std::sync::OnceLock<Queue> = std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let _ = std::thread::Builder::new().name("log".into()).spawn(writer);
        Queue {
            pending: std::sync::Mutex::new(Pending::default()),
            ready: std::sync::Condvar::new(),
        }
    })
}

/// The writer thread: waits for lines, lets more gather for [`BATCH_DELAY`], writes them all.
fn writer() {
    loop {
        let q = queue();
        {
            let mut p = q.pending.lock().unwrap_or_else(|p| p.into_inner());
            while p.entries.is_empty() && p.dropped == 0 {
                p = q.ready.wait(p).unwrap_or_else(|p| p.into_inner());
            }
        }
        std::thread::sleep(BATCH_DELAY);
        emit(q.take());
    }
}

fn emit(batch: Pending) {
    let syslog_mode = SYSLOG_MODE.load(Ordering::Relaxed);
    let mut stderr = Vec::new();
    let mut line = |level: Level, text: &str| {
        if syslog_mode {
            let _ = syslog().send(facility(), level as u8, text);
        } else {
            let tag = match level {
                Level::Error => "error",
                Level::Warning => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
            };
            let _ = writeln!(stderr, "smtp-auth-proxy[{}]: {tag}: {text}", pid());
        }
    };
    for e in &batch.entries {
        match e.kind {
            Kind::Log(level) => line(level, &e.text),
            Kind::Acct => {
                let acct = format!("acctlog: {}", e.text);
                if !syslog().send(facility(), crate::syslog::SEVERITY_INFO, &acct) {
                    line(Level::Info, &acct);
                }
            }
        }
    }
    if batch.dropped > 0 {
        line(
            Level::Warning,
            &format!(
                "{} log line(s) dropped: the log sink did not keep up",
                batch.dropped
            ),
        );
    }
    if !stderr.is_empty() {
        let _ = std::io::stderr().lock().write_all(&stderr);
    }
}

/// Writes whatever is waiting; for the end of the process.
pub fn flush() {
    emit(queue().take());
}

#[macro_export]
macro_rules! log_error {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! log_warning {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warning, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! log_info {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! log_debug {
    ($($t:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::write($crate::log::Level::Debug, format_args!($($t)*))
        }
    };
}
