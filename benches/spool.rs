//! Spool store cost: `cargo bench --bench spool`.
//!
//! Sessions on single-threaded tokio runtimes (as the daemon's serving threads; two here, or
//! one for c=1) store 4 KiB messages with two recipients as fast as their commits return, at
//! c = 1, 16 and 128 concurrent sessions, first through the spool (group commit: fdatasync per
//! file, one directory fsync per batch), then through the naive design in the same run (each
//! session, through tokio's blocking pool, creates and writes its file, fsyncs it and fsyncs
//! the directory). Prints messages/s, CPU per message (the whole process: user + system),
//! store latency p50/p99 (begin to commit returned), and syncs per message, counted by the
//! spool's own counters (for the naive design, by the bench). The spool lives under Cargo's
//! target directory, on the project's disk. Three rounds, the designs taking turns; each row
//! is the median round (by msg/s) with the range of msg/s over the rounds. `SPOOL_BENCH_C=16`
//! runs one concurrency only (for `strace -f -c` checks of the counts), `SPOOL_BENCH_DESIGN`
//! (`group` or `naive`) one design, `SPOOL_BENCH_ROUNDS` sets the rounds, `SPOOL_BENCH_DIR`
//! another file system to run on.

use smtp_auth_proxy::spool::{
    Body, Envelope, Notify, Origin, RcptState, Recipient, Spool, SpoolOptions,
};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const CONTENT: usize = 4096;

#[derive(Clone, Copy, PartialEq)]
enum Design {
    GroupCommit,
    Naive,
}

struct Figures {
    messages: u64,
    wall: Duration,
    /// User and system CPU time.
    cpu: (Duration, Duration),
    latencies: Vec<Duration>,
    file_syncs: u64,
    dir_syncs: u64,
    batches: u64,
}

/// The process's CPU time so far: user, system.
fn cpu_time() -> (Duration, Duration) {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(u.ru_utime), tv(u.ru_stime))
}

fn envelope(spool: &Spool) -> Envelope {
    Envelope {
        id: spool.next_id(),
        received: SystemTime::now(),
        sender: "sender@example.com".into(),
        recipients: (0..2)
            .map(|i| Recipient {
                address: format!("rcpt{i}@example.net"),
                notify: Notify::default(),
                orcpt: None,
                state: RcptState::Pending,
            })
            .collect(),
        ret: None,
        envid: None,
        body: Body::EightBitMime,
        origin: Origin {
            client_ip: Some("192.0.2.7".parse().unwrap()),
            client_port: Some(40001),
            helo: Some("client.example.org".into()),
            auth_user: Some("alice".into()),
            session: "S1".into(),
            listen: "127.0.0.1:25".into(),
            esmtp: true,
            ..Origin::default()
        },
    }
}

/// The naive design's store: the same bytes as a spool file of this message (prefix and
/// trailer included), fsync of the file, fsync of the directory, per message.
fn naive_store(dir: &Path, name: String, image: &[u8], syncs: &AtomicU64) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))?;
    f.write_all(image)?;
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    syncs.fetch_add(2, Ordering::Relaxed);
    Ok(())
}

/// What every session of one run shares.
#[derive(Clone)]
struct Load {
    design: Design,
    total: u64,
    spool: Arc<Spool>,
    queue: PathBuf,
    content: Arc<Vec<u8>>,
    /// A spool file's worth of bytes, for the naive design to write as much.
    image: Arc<Vec<u8>>,
    /// Messages begun, by all sessions.
    started: Arc<AtomicU64>,
    naive_syncs: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

impl Load {
    /// One session: stores messages one after the other until `total` have been begun.
    async fn session(self) {
        let mut mine = Vec::new();
        while self.started.fetch_add(1, Ordering::Relaxed) < self.total {
            let t = Instant::now();
            let env = envelope(&self.spool);
            match self.design {
                Design::GroupCommit => {
                    let mut incoming = self.spool.begin(env);
                    incoming.write(&self.content).await.unwrap();
                    incoming.commit().await.unwrap();
                }
                Design::Naive => {
                    let (image, syncs, queue) = (
                        self.image.clone(),
                        self.naive_syncs.clone(),
                        self.queue.clone(),
                    );
                    let name = env.id.to_string();
                    tokio::task::spawn_blocking(move || naive_store(&queue, name, &image, &syncs))
                        .await
                        .unwrap()
                        .unwrap();
                }
            }
            mine.push(t.elapsed());
        }
        self.latencies.lock().unwrap().extend(mine);
    }
}

fn run(base: &Path, design: Design, sessions: usize, total: u64) -> Figures {
    let _ = std::fs::remove_dir_all(base);
    let (spool, _) = Spool::open(base, SpoolOptions::default()).unwrap();
    let content: Arc<Vec<u8>> = Arc::new(
        b"Received: from client.example.org\r\nSubject: bench\r\n\r\n"
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'x', CONTENT))
            .collect(),
    );
    // The size of a spool file of this message.
    let image_len = 16 + 2 * 2 + 1024 + 200 + content.len() + 16;
    let load = Load {
        design,
        total,
        spool: spool.clone(),
        queue: base.join("queue"),
        content,
        image: Arc::new(vec![b'y'; image_len]),
        started: Arc::new(AtomicU64::new(0)),
        naive_syncs: Arc::new(AtomicU64::new(0)),
        latencies: Arc::new(Mutex::new(Vec::with_capacity(total as usize))),
    };
    let threads = sessions.min(2);
    let before = spool.counters();
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let load = load.clone();
            let mine = sessions / threads + usize::from(t < sessions % threads);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let tasks: Vec<_> = (0..mine)
                        .map(|_| tokio::task::spawn_local(load.clone().session()))
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let wall = t0.elapsed();
    let cpu1 = cpu_time();
    let cpu = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let after = spool.counters();
    let mut latencies = std::mem::take(&mut *load.latencies.lock().unwrap());
    latencies.sort();
    drop((spool, load.spool));
    let _ = std::fs::remove_dir_all(base);
    let naive = load.naive_syncs.load(Ordering::Relaxed);
    Figures {
        messages: latencies.len() as u64,
        wall,
        cpu,
        latencies,
        file_syncs: match design {
            Design::GroupCommit => after.file_syncs - before.file_syncs,
            Design::Naive => naive / 2,
        },
        dir_syncs: match design {
            Design::GroupCommit => after.directory_syncs - before.directory_syncs,
            Design::Naive => naive / 2,
        },
        batches: after.batches - before.batches,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let base: PathBuf = std::env::var_os("SPOOL_BENCH_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_TARGET_TMPDIR")).into(),
            PathBuf::from,
        )
        .join("spool-bench");
    let only: Option<usize> = std::env::var("SPOOL_BENCH_C")
        .ok()
        .and_then(|v| v.parse().ok());
    println!(
        "{CONTENT}-byte messages, 2 recipients, on {} ({} serving threads at most)",
        base.display(),
        2
    );
    println!(
        "{:>4} {:<13} {:>8} {:>9} {:>12} {:>10} {:>8} {:>9} {:>9} {:>11} {:>10} {:>8}",
        "c",
        "design",
        "msgs",
        "msg/s",
        "(rounds)",
        "CPU us/msg",
        "of it usr",
        "p50 ms",
        "p99 ms",
        "fdatasync/m",
        "dirsync/m",
        "msg/batch"
    );
    let design_only = match std::env::var("SPOOL_BENCH_DESIGN").as_deref() {
        Ok("group") => Some(Design::GroupCommit),
        Ok("naive") => Some(Design::Naive),
        _ => None,
    };
    let rounds: usize = std::env::var("SPOOL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for (c, total) in [(1usize, 400u64), (16, 3000), (128, 6000)] {
        if only.is_some_and(|o| o != c) {
            continue;
        }
        // The designs take turns, round after round, so that a change in the disk's load (it
        // is shared) falls on both; each row is the median round by msg/s.
        let mut runs: Vec<(Design, Vec<Figures>)> = [Design::GroupCommit, Design::Naive]
            .into_iter()
            .filter(|d| design_only.is_none_or(|o| o == *d))
            .map(|d| (d, Vec::new()))
            .collect();
        for _ in 0..rounds {
            for (design, figures) in runs.iter_mut() {
                figures.push(run(&base, *design, c, total));
            }
        }
        for (design, mut figures) in runs {
            let rate = |f: &Figures| f.messages as f64 / f.wall.as_secs_f64();
            figures.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
            let range = format!(
                "{:.0}-{:.0}",
                rate(&figures[0]),
                rate(&figures[figures.len() - 1])
            );
            let f = &figures[figures.len() / 2];
            let n = f.messages as f64;
            println!(
                "{:>4} {:<13} {:>8} {:>9.0} {:>12} {:>10.1} {:>8.1} {:>9.2} {:>9.2} {:>11.3} {:>10.3} {:>8}",
                c,
                match design {
                    Design::GroupCommit => "group commit",
                    Design::Naive => "naive",
                },
                f.messages,
                rate(f),
                range,
                (f.cpu.0 + f.cpu.1).as_secs_f64() * 1e6 / n,
                f.cpu.0.as_secs_f64() * 1e6 / n,
                percentile(&f.latencies, 0.50).as_secs_f64() * 1e3,
                percentile(&f.latencies, 0.99).as_secs_f64() * 1e3,
                f.file_syncs as f64 / n,
                f.dir_syncs as f64 / n,
                if design == Design::GroupCommit {
                    format!("{:.1}", n / f.batches.max(1) as f64)
                } else {
                    "1".into()
                },
            );
        }
    }
}
