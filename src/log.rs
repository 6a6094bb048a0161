//! The daemon's log. One line per event, never a secret (callers pass user names at most).
//!
//! Lines go to stderr, which is the journal under systemd; the syslog sink for daemon mode
//! plugs in here. Lines are gathered and written by one thread, a batch at a time, so a busy
//! daemon spends one system call per batch rather than one per line; a line waits at most
//! [`BATCH_DELAY`] before it is written.

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
    SYSLOG_FACILITY.store(facility, std::sync::atomic::Ordering::SeqCst);
    SYSLOG_MODE.store(true, std::sync::atomic::Ordering::SeqCst);
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

pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    if SYSLOG_MODE.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = syslog().send(facility(), level as u8, &args.to_string());
        return;
    }
    let tag = match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
    };
    let line = format!("smtp-auth-proxy[{}]: {tag}: {args}\n", pid());
    let sink = sink();
    let mut pending = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
    let was_empty = pending.is_empty();
    pending.extend_from_slice(line.as_bytes());
    if pending.len() > MAX_PENDING {
        // Logging faster than stderr takes it: write here rather than grow without bound.
        let _ = std::io::stderr().lock().write_all(&pending);
        pending.clear();
    } else if was_empty {
        sink.ready.notify_one();
    }
}

/// How long a line may wait to be written with others.
pub const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(10);
const MAX_PENDING: usize = 1 << 20;

struct Sink {
    pending: std::sync::Mutex<Vec<u8>>,
    ready: std::sync::Condvar,
}

fn sink() -> &'static Sink {
    static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();
    SINK.get_or_init(|| {
        let _ = std::thread::Builder::new().name("log".into()).spawn(|| {
            loop {
                let s = sink();
                let batch = {
                    let mut pending = s.pending.lock().unwrap_or_else(|p| p.into_inner());
                    while pending.is_empty() {
                        pending = s.ready.wait(pending).unwrap_or_else(|p| p.into_inner());
                    }
                    drop(pending);
                    std::thread::sleep(BATCH_DELAY);
                    std::mem::take(&mut *s.pending.lock().unwrap_or_else(|p| p.into_inner()))
                };
                let _ = std::io::stderr().lock().write_all(&batch);
            }
        });
        Sink {
            pending: std::sync::Mutex::new(Vec::new()),
            ready: std::sync::Condvar::new(),
        }
    })
}

/// Writes whatever is waiting; for the end of the process.
pub fn flush() {
    let batch = std::mem::take(&mut *sink().pending.lock().unwrap_or_else(|p| p.into_inner()));
    let _ = std::io::stderr().lock().write_all(&batch);
}

/// Momentum's acctlog line for one authentication attempt: to syslog, facility mail; to the
/// log when no syslog daemon listens, so that no attempt goes unrecorded.
pub fn acctlog(line: &str) {
    if !syslog().send(
        facility(),
        crate::syslog::SEVERITY_INFO,
        &format!("acctlog: {line}"),
    ) {
        write(Level::Info, format_args!("acctlog: {line}"));
    }
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
