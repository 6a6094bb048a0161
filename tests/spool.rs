//! The spool on the real file system: round trips, in-place updates across reopening, damaged
//! files never delivered, a really full and a really read-only file system (tmpfs mounts),
//! a child process killed under load, and group commit's sync counts.
//!
//! Spools live under Cargo's target directory, on the project's disk, not under /tmp (which may
//! be a tmpfs, where syncs cost nothing and group commit would never gather a batch).

mod common;

use common::tmpfs::Tmpfs;
use proptest::prelude::*;
use smtp_auth_proxy::spool::{
    self, AttemptMeta, Body, Damage, Envelope, ErrorClass, ListEntry, MessageId, Notify, Origin,
    Queued, RcptState, Recipient, Ret, Spool, SpoolError, SpoolOptions,
};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A fresh spool directory on the project's disk, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "spool-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn envelope(spool: &Spool, recipients: usize) -> Envelope {
    Envelope {
        id: spool.next_id(),
        received: SystemTime::now(),
        sender: "sender@example.com".into(),
        recipients: (0..recipients)
            .map(|i| Recipient {
                address: format!("rcpt{i}@example.net"),
                notify: Notify(Notify::FAILURE | Notify::DELAY),
                orcpt: Some(format!("rfc822;rcpt{i}@example.net")),
                state: RcptState::Pending,
            })
            .collect(),
        ret: Some(Ret::Hdrs),
        envid: Some("QQ314159".into()),
        body: Body::EightBitMime,
        origin: Origin {
            client_ip: Some("192.0.2.7".parse().unwrap()),
            client_port: Some(40001),
            helo: Some("client.example.org".into()),
            client_name: None,
            auth_user: Some("alice".into()),
            session: "S1".into(),
            listen: "127.0.0.1:2525".into(),
            esmtp: true,
            tls: false,
        },
    }
}

fn content(id: MessageId, len: usize) -> Vec<u8> {
    let mut c = format!("Subject: {id}\r\n\r\n").into_bytes();
    let pattern = id.to_string();
    while c.len() < len {
        c.extend_from_slice(pattern.as_bytes());
        c.extend_from_slice(b"\r\n");
    }
    c
}

async fn store(spool: &Arc<Spool>, env: Envelope, bytes: &[u8]) -> Result<Queued, SpoolError> {
    let mut incoming = spool.begin(env);
    for chunk in bytes.chunks(8192) {
        incoming.write(chunk).await?;
    }
    incoming.commit().await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Opens the spool at `dir`. A test that runs a process (mount, the crash test's child) forks
/// this one, and the fork holds the lock of a spool open at that moment until it execs: such
/// a moment's `Locked` is waited out.
fn open(dir: &Path) -> (Arc<Spool>, spool::Recovered) {
    open_with(dir, SpoolOptions::default())
}

fn open_with(dir: &Path, options: SpoolOptions) -> (Arc<Spool>, spool::Recovered) {
    for _ in 0..100 {
        match Spool::open(dir, options.clone()) {
            Err(SpoolError::Locked(_)) => std::thread::sleep(Duration::from_millis(10)),
            other => return other.unwrap(),
        }
    }
    panic!("{} stays locked", dir.display())
}

fn queue_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(spool::QUEUE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn file_of(dir: &Path, id: MessageId) -> PathBuf {
    dir.join(spool::QUEUE_DIR).join(id.to_string())
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    let recipient = (
        any::<String>(),
        0u8..16,
        proptest::option::of(any::<String>()),
        prop_oneof![
            Just(RcptState::Pending),
            Just(RcptState::Delivered),
            Just(RcptState::Failed)
        ],
    )
        .prop_map(|(address, notify, orcpt, state)| Recipient {
            address,
            notify: Notify(notify),
            orcpt,
            state,
        });
    let ip = prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|a| Some(IpAddr::from(a))),
        any::<[u8; 16]>().prop_map(|a| Some(IpAddr::from(a))),
    ];
    let origin = (
        ip,
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        any::<String>(),
        any::<String>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                client_ip,
                client_port,
                helo,
                client_name,
                auth_user,
                session,
                listen,
                esmtp,
                tls,
            )| {
                Origin {
                    client_ip,
                    client_port,
                    helo,
                    client_name,
                    auth_user,
                    session,
                    listen,
                    esmtp,
                    tls,
                }
            },
        );
    (
        any::<u64>(),
        0u64..(1 << 40),
        0u32..1_000_000_000,
        any::<String>(),
        prop::collection::vec(recipient, 1..6),
        prop_oneof![Just(None), Just(Some(Ret::Full)), Just(Some(Ret::Hdrs))],
        proptest::option::of(any::<String>()),
        prop_oneof![
            Just(Body::Unspecified),
            Just(Body::SevenBit),
            Just(Body::EightBitMime)
        ],
        origin,
    )
        .prop_map(
            |(id, secs, nanos, sender, recipients, ret, envid, body, origin)| Envelope {
                id: MessageId::from_u64(id),
                received: UNIX_EPOCH + Duration::new(secs, nanos),
                sender,
                recipients,
                ret,
                envid,
                body,
                origin,
            },
        )
}

proptest! {
    // Each case syncs real files and opens the spool twice: few cases, each a real round trip.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any envelope and content, kept in memory or spilled to the file, come back unchanged
    /// from the commit, from recovery after reopening, and from read-back.
    #[test]
    fn envelopes_and_content_come_back_exactly_after_reopening(
        env in arb_envelope(),
        bytes in prop::collection::vec(any::<u8>(), 0..6000),
        threshold in prop_oneof![Just(100usize), Just(1usize << 20)],
    ) {
        let dir = Dir::new("prop");
        let options = SpoolOptions { memory_threshold: threshold, ..SpoolOptions::default() };
        let rt = runtime();
        let (s, recovered) = open_with(&dir.0, options.clone());
        prop_assert!(recovered.queued.is_empty());
        let queued = rt.block_on(store(&s, env.clone(), &bytes)).unwrap();
        prop_assert_eq!(&*queued.envelope, &env);
        prop_assert_eq!(queued.size, bytes.len() as u64);
        if let Some(c) = &queued.content {
            prop_assert_eq!(&c[..], &bytes[..]);
        }
        drop(queued);
        drop(s);
        let (s, recovered) = open_with(&dir.0, options);
        prop_assert!(recovered.set_aside.is_empty());
        prop_assert_eq!(recovered.queued.len(), 1);
        let back = &recovered.queued[0];
        prop_assert_eq!(&*back.envelope, &env);
        prop_assert_eq!(back.meta.clone(), AttemptMeta::default());
        let read = rt.block_on(s.content(env.id)).unwrap();
        prop_assert_eq!(&read[..], &bytes[..]);
        if let Some(c) = &back.content {
            prop_assert_eq!(&c[..], &bytes[..]);
        }
        // A fresh id after reopening is above the one stored, whatever it was.
        prop_assert!(env.id.as_u64() == u64::MAX || s.next_id() > env.id);
    }
}

#[test]
fn recipient_states_and_retry_metadata_survive_reopening() {
    let dir = Dir::new("states");
    let rt = runtime();
    let (s, _) = open(&dir.0);
    let env = envelope(&s, 3);
    let id = env.id;
    let body = content(id, 2000);
    rt.block_on(store(&s, env, &body)).unwrap();
    let first = AttemptMeta {
        attempts: 1,
        next_attempt: Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
        last_error: Some("451 4.3.0 mailbox busy".into()),
    };
    rt.block_on(s.update(
        id,
        &[(0, RcptState::Delivered), (2, RcptState::Failed)],
        &first,
    ))
    .unwrap();
    assert_eq!(s.counters().updates, 1);
    drop(s);

    let (s, recovered) = open(&dir.0);
    let q = &recovered.queued[0];
    let states: Vec<RcptState> = q.envelope.recipients.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [RcptState::Delivered, RcptState::Pending, RcptState::Failed]
    );
    assert_eq!(q.envelope.pending().collect::<Vec<_>>(), [1]);
    assert_eq!(q.meta, first);

    // Metadata alone, then the last recipient: both read back after another reopening.
    let second = AttemptMeta {
        attempts: 2,
        next_attempt: None,
        last_error: Some("421 4.4.2 timeout".into()),
    };
    rt.block_on(s.update_meta(id, &second)).unwrap();
    rt.block_on(s.update(id, &[(1, RcptState::Delivered)], &second))
        .unwrap();
    assert!(matches!(
        rt.block_on(s.update(id, &[(3, RcptState::Delivered)], &second)),
        Err(SpoolError::NoSuchRecipient { index: 3, .. })
    ));
    drop(s);
    let (s, recovered) = open(&dir.0);
    let q = &recovered.queued[0];
    assert!(
        q.envelope
            .recipients
            .iter()
            .all(|r| r.state != RcptState::Pending)
    );
    assert_eq!(q.meta, second);
    assert_eq!(&rt.block_on(s.content(id)).unwrap()[..], &body[..]);
}

#[test]
fn removal_takes_the_message_away_for_good() {
    let dir = Dir::new("remove");
    let rt = runtime();
    let (s, _) = open(&dir.0);
    let env = envelope(&s, 1);
    let id = env.id;
    rt.block_on(store(&s, env, b"Subject: x\r\n\r\nbody\r\n"))
        .unwrap();
    rt.block_on(s.remove(id)).unwrap();
    assert!(matches!(
        rt.block_on(s.remove(id)),
        Err(SpoolError::NotFound(i)) if i == id
    ));
    assert!(matches!(
        rt.block_on(s.content(id)),
        Err(SpoolError::NotFound(_))
    ));
    let c = s.counters();
    assert_eq!((c.removals, c.messages), (1, 1));
    drop(s);
    let (_s, recovered) = open(&dir.0);
    assert!(recovered.queued.is_empty());
    assert!(queue_files(&dir.0).is_empty());
}

/// A delivered message's file carries the next message (the same inode, overwritten, no
/// byte of the old one left), and the old bytes under a new name, as a crash could leave a
/// spare renamed before its new content reached the disk, are set aside, never delivered.
#[test]
fn a_removed_message_file_is_reused_and_its_old_bytes_never_pass_for_a_new_message() {
    use std::os::unix::fs::MetadataExt;
    let dir = Dir::new("reuse");
    let rt = runtime();
    let (s, _) = open(&dir.0);
    let first = envelope(&s, 1);
    let first_id = first.id;
    let long = content(first_id, 20_000);
    rt.block_on(store(&s, first, &long)).unwrap();
    let inode = std::fs::metadata(file_of(&dir.0, first_id)).unwrap().ino();
    let old_bytes = std::fs::read(file_of(&dir.0, first_id)).unwrap();
    rt.block_on(s.remove(first_id)).unwrap();
    let second = envelope(&s, 2);
    let second_id = second.id;
    let short = content(second_id, 300);
    rt.block_on(store(&s, second, &short)).unwrap();
    assert_eq!(s.counters().reused, 1);
    let path = file_of(&dir.0, second_id);
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
    assert!(std::fs::metadata(&path).unwrap().len() < old_bytes.len() as u64);
    drop(s);
    let (s, recovered) = open(&dir.0);
    assert_eq!(recovered.queued.len(), 1);
    assert_eq!(recovered.queued[0].id(), second_id);
    assert_eq!(&rt.block_on(s.content(second_id)).unwrap()[..], &short[..]);
    drop(s);
    // The old message's complete bytes under the new message's name.
    std::fs::write(&path, &old_bytes).unwrap();
    let (_s, recovered) = open(&dir.0);
    assert!(recovered.queued.is_empty());
    assert_eq!(recovered.set_aside.len(), 1);
    assert!(queue_files(&dir.0).is_empty());
}

/// A stored file, cut at every length short of its own, is never a message: recovery moves it
/// to corrupt/ each time. Content beyond a spill threshold is covered by a second message.
#[test]
fn a_file_cut_short_at_any_offset_is_never_recovered() {
    let dir = Dir::new("cut");
    let rt = runtime();
    let options = SpoolOptions {
        memory_threshold: 512,
        ..SpoolOptions::default()
    };
    let (s, _) = open_with(&dir.0, options);
    let mut images = Vec::new();
    for len in [300, 1500] {
        let env = envelope(&s, 2);
        let id = env.id;
        rt.block_on(store(&s, env, &content(id, len))).unwrap();
        images.push((id, std::fs::read(file_of(&dir.0, id)).unwrap()));
        rt.block_on(s.remove(id)).unwrap();
    }
    drop(s);
    let corrupt = dir.0.join(spool::CORRUPT_DIR);
    let mut cuts = 0;
    for (id, image) in &images {
        for cut in 0..image.len() {
            std::fs::write(file_of(&dir.0, *id), &image[..cut]).unwrap();
            let (_s, recovered) = open(&dir.0);
            assert!(
                recovered.queued.is_empty(),
                "{id} cut at {cut} of {} bytes was recovered",
                image.len()
            );
            assert_eq!(recovered.set_aside.len(), 1);
            assert!(matches!(
                recovered.set_aside[0].damage,
                Damage::Incomplete(_) | Damage::Corrupt(_)
            ));
            assert!(queue_files(&dir.0).is_empty());
            assert!(corrupt.join(id.to_string()).exists());
            std::fs::remove_file(corrupt.join(id.to_string())).unwrap();
            cuts += 1;
        }
        // The whole file is a message: the check above is not refusing everything.
        std::fs::write(file_of(&dir.0, *id), image).unwrap();
        let (_s, recovered) = open(&dir.0);
        assert_eq!(recovered.queued.len(), 1);
        assert_eq!(recovered.queued[0].id(), *id);
        std::fs::remove_file(file_of(&dir.0, *id)).unwrap();
    }
    eprintln!("{cuts} cut files, none recovered");
}

/// Every byte of a stored file changed in turn: in the checksummed parts the file is set
/// aside; in a recipient's state pair that recipient reads as pending (delivered again rather
/// than lost); in a metadata slot the other slot is read. Nothing damaged is taken as good.
#[test]
fn a_changed_byte_anywhere_in_a_file_is_caught() {
    let dir = Dir::new("flip");
    let rt = runtime();
    let (s, _) = open(&dir.0);
    let env = envelope(&s, 3);
    let id = env.id;
    let body = content(id, 700);
    rt.block_on(store(&s, env, &body)).unwrap();
    let older = AttemptMeta {
        attempts: 1,
        next_attempt: None,
        last_error: Some("first".into()),
    };
    let newer = AttemptMeta {
        attempts: 2,
        next_attempt: None,
        last_error: Some("second".into()),
    };
    let done = [(0, RcptState::Delivered), (1, RcptState::Failed)];
    rt.block_on(s.update(id, &done, &older)).unwrap();
    rt.block_on(s.update(id, &done, &newer)).unwrap();
    let image = std::fs::read(file_of(&dir.0, id)).unwrap();
    drop(s);
    let states_at = 16..16 + 2 * 3;
    let slots_at = states_at.end..states_at.end + 1024;
    let (mut set_aside, mut pending, mut older_meta) = (0, 0, 0);
    for at in 0..image.len() {
        let mut damaged = image.clone();
        damaged[at] ^= if at % 2 == 0 { 0x01 } else { 0xA5 };
        std::fs::write(file_of(&dir.0, id), &damaged).unwrap();
        let (_s, recovered) = open(&dir.0);
        if states_at.contains(&at) {
            let q = &recovered.queued[0];
            let r = (at - 16) / 2;
            assert_eq!(
                q.envelope.recipients[r].state,
                RcptState::Pending,
                "byte {at}"
            );
            for (i, rcpt) in q.envelope.recipients.iter().enumerate() {
                if i != r {
                    let want = done
                        .iter()
                        .find(|d| d.0 == i)
                        .map_or(RcptState::Pending, |d| d.1);
                    assert_eq!(rcpt.state, want);
                }
            }
            pending += 1;
        } else if slots_at.contains(&at) {
            // The second update went to slot A (slot B had the first): damage in A reads B.
            let q = &recovered.queued[0];
            let in_newer = at < slots_at.start + 512;
            assert_eq!(
                q.meta,
                if in_newer {
                    older.clone()
                } else {
                    newer.clone()
                },
                "byte {at}"
            );
            older_meta += usize::from(in_newer);
        } else {
            assert!(
                recovered.queued.is_empty(),
                "byte {at} changed, file recovered"
            );
            assert_eq!(recovered.set_aside.len(), 1);
            std::fs::remove_file(dir.0.join(spool::CORRUPT_DIR).join(id.to_string())).unwrap();
            set_aside += 1;
        }
    }
    eprintln!(
        "{} bytes changed one at a time: {set_aside} files set aside, {pending} recipients read as pending, {older_meta} older metadata read",
        image.len()
    );
    assert_eq!(set_aside, image.len() - 6 - 1024);
}

#[test]
fn a_corrupted_message_read_back_is_refused() {
    let dir = Dir::new("readback");
    let rt = runtime();
    let (s, _) = open(&dir.0);
    let env = envelope(&s, 1);
    let id = env.id;
    rt.block_on(store(&s, env, &content(id, 5000))).unwrap();
    let path = file_of(&dir.0, id);
    let mut image = std::fs::read(&path).unwrap();
    let at = image.len() - 100;
    image[at] ^= 0x20;
    std::fs::write(&path, &image).unwrap();
    match rt.block_on(s.content(id)) {
        Err(SpoolError::Damaged {
            damage: Damage::Corrupt(why),
            ..
        }) => assert!(why.contains("checksum"), "{why}"),
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn a_large_message_goes_to_its_file_as_it_arrives_and_memory_stays_bounded() {
    let dir = Dir::new("spill");
    let rt = runtime();
    let threshold = 64 * 1024;
    let options = SpoolOptions {
        memory_threshold: threshold,
        ..SpoolOptions::default()
    };
    let (s, _) = open_with(&dir.0, options);
    let env = envelope(&s, 1);
    let id = env.id;
    let body = content(id, 5 << 20);
    let chunk = 16 * 1024;
    let queued = rt.block_on(async {
        let mut incoming = s.begin(env);
        let mut most = 0;
        for c in body.chunks(chunk) {
            incoming.write(c).await.unwrap();
            most = most.max(incoming.buffered());
        }
        // The file grew while the message came in; memory never held more than the
        // threshold (with the envelope) or one spill chunk.
        let on_disk = std::fs::metadata(file_of(&dir.0, id)).unwrap().len();
        assert!(
            on_disk > 4 << 20,
            "only {on_disk} bytes on disk before commit"
        );
        assert!(most <= threshold + 2048 + chunk, "held {most} bytes");
        assert!(
            most >= threshold,
            "held only {most} bytes: nothing was kept in memory"
        );
        incoming.commit().await.unwrap()
    });
    assert_eq!(queued.size, body.len() as u64);
    assert!(queued.content.is_none());
    assert_eq!(&rt.block_on(s.content(id)).unwrap()[..], &body[..]);
}

#[test]
fn a_message_dropped_before_its_commit_leaves_no_file() {
    let dir = Dir::new("drop");
    let rt = runtime();
    let options = SpoolOptions {
        memory_threshold: 1024,
        ..SpoolOptions::default()
    };
    let (s, _) = open_with(&dir.0, options);
    let kept = rt.block_on(async {
        let env = envelope(&s, 1);
        let abandoned = env.id;
        let mut incoming = s.begin(env);
        incoming.write(&content(abandoned, 10_000)).await.unwrap();
        assert_eq!(queue_files(&dir.0), [abandoned.to_string()]);
        drop(incoming);
        // Jobs run in order: once a later commit returns, the abandoned file is gone.
        store(&s, envelope(&s, 1), b"x\r\n").await.unwrap().id()
    });
    assert_eq!(queue_files(&dir.0), [kept.to_string()]);
}

#[test]
fn content_held_in_memory_stays_under_its_cap() {
    let dir = Dir::new("cap");
    let rt = runtime();
    let options = SpoolOptions {
        held_content_cap: 16 * 1024,
        ..SpoolOptions::default()
    };
    let (s, _) = open_with(&dir.0, options);
    let queued: Vec<Queued> = (0..10)
        .map(|_| {
            let env = envelope(&s, 1);
            let id = env.id;
            rt.block_on(store(&s, env, &content(id, 4000))).unwrap()
        })
        .collect();
    let held = queued.iter().filter(|q| q.content.is_some()).count();
    assert!((2..10).contains(&held), "{held} held");
    assert!(s.held_bytes() <= 16 * 1024);
    drop(queued);
    assert_eq!(s.held_bytes(), 0);
}

#[test]
fn a_second_opener_of_the_same_spool_is_refused() {
    let dir = Dir::new("lock");
    let (s, _) = open(&dir.0);
    assert!(matches!(
        Spool::open(&dir.0, SpoolOptions::default()),
        Err(SpoolError::Locked(_))
    ));
    drop(s);
    let _again = open(&dir.0);
}

#[test]
fn the_listing_shows_stored_messages_and_a_message_being_received() {
    let dir = Dir::new("list");
    let rt = runtime();
    let options = SpoolOptions {
        memory_threshold: 100,
        ..SpoolOptions::default()
    };
    let (s, _) = open_with(&dir.0, options);
    rt.block_on(async {
        let env = envelope(&s, 2);
        let stored = env.id;
        store(&s, env, &content(stored, 3000)).await.unwrap();
        let meta = AttemptMeta {
            attempts: 3,
            next_attempt: None,
            last_error: Some("451 later".into()),
        };
        s.update_meta(stored, &meta).await.unwrap();
        let env = envelope(&s, 1);
        let receiving = env.id;
        let mut incoming = s.begin(env);
        incoming.write(&content(receiving, 3000)).await.unwrap();
        let list = spool::list(&dir.0).unwrap();
        assert_eq!(list.len(), 2);
        match &list[0] {
            ListEntry::Message {
                envelope,
                size,
                meta: m,
            } => {
                assert_eq!(envelope.id, stored);
                assert_eq!(envelope.recipients.len(), 2);
                assert!(*size >= 3000);
                assert_eq!(m, &meta);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &list[1],
            ListEntry::Unreadable { name, damage: Damage::Incomplete(_) } if *name == receiving.to_string()
        ));
    });
}

#[test]
fn many_concurrent_commits_cost_far_fewer_directory_syncs_than_messages() {
    let dir = Dir::new("group");
    let rt = runtime();
    let (s, _) = open(&dir.0);
    // One at a time: each message is a batch of its own.
    for _ in 0..20 {
        let env = envelope(&s, 1);
        let id = env.id;
        rt.block_on(store(&s, env, &content(id, 1000))).unwrap();
    }
    let alone = s.counters();
    assert_eq!((alone.messages, alone.directory_syncs), (20, 20));
    // 400 sessions committing at once.
    rt.block_on(async {
        let tasks: Vec<_> = (0..400)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    let env = envelope(&s, 2);
                    let id = env.id;
                    store(&s, env, &content(id, 1000)).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let c = s.counters();
    let messages = c.messages - alone.messages;
    let dir_syncs = c.directory_syncs - alone.directory_syncs;
    eprintln!(
        "400 concurrent commits: {messages} messages, {} file syncs, {dir_syncs} directory syncs, {} batches",
        c.file_syncs - alone.file_syncs,
        c.batches - alone.batches
    );
    assert_eq!(messages, 400);
    assert_eq!(c.file_syncs - alone.file_syncs, 400);
    assert!(dir_syncs * 10 <= messages, "{dir_syncs} directory syncs");
    assert_eq!(queue_files(&dir.0).len(), 420);
}

/// A tmpfs really filled up: the commit that does not fit answers "full" (the session's
/// `452 4.3.1`), leaves no file, and once space is freed the spool takes mail again. Both
/// ways a message can hit the wall: whole in memory at commit, and spilled while arriving.
#[test]
fn a_full_file_system_answers_full_and_leaves_no_file() {
    let dir = Dir::new("full");
    let Some(fs) = Tmpfs::mount(&dir.0, "512k") else {
        return;
    };
    let root = fs.path();
    let rt = runtime();
    let options = SpoolOptions {
        memory_threshold: 96 * 1024,
        ..SpoolOptions::default()
    };
    let (s, _) = open_with(root, options);
    for spilled in [false, true] {
        let mut stored = Vec::new();
        let error = loop {
            let env = envelope(&s, 1);
            let id = env.id;
            let len = if spilled { 200 * 1024 } else { 64 * 1024 };
            match rt.block_on(store(&s, env, &content(id, len))) {
                Ok(_) => stored.push(id.to_string()),
                Err(e) => break e,
            }
            assert!(stored.len() < 100, "the tmpfs never filled");
        };
        eprintln!(
            "spilled={spilled}: {} messages stored, then: {error}",
            stored.len()
        );
        assert!(error.is_full(), "{error}");
        assert_eq!(error.class(), ErrorClass::Full);
        assert!(error.to_string().contains("spool full"));
        assert_eq!(queue_files(root), stored, "a failed message left a file");
        for id in &stored {
            rt.block_on(s.remove(id.parse().unwrap())).unwrap();
        }
    }
    // Space again: the same spool takes mail.
    let env = envelope(&s, 1);
    let id = env.id;
    rt.block_on(store(&s, env, &content(id, 64 * 1024)))
        .unwrap();
    assert_eq!(queue_files(root), [id.to_string()]);
}

/// The spool's file system remounted read-only under it: commits answer read-only (the
/// session's `451 4.3.0`), leave nothing, and work again once it is writable.
#[test]
fn a_read_only_spool_answers_read_only_and_recovers() {
    let dir = Dir::new("ro");
    let Some(fs) = Tmpfs::mount(&dir.0, "1m") else {
        return;
    };
    let root = fs.path();
    let rt = runtime();
    let (s, _) = open(root);
    let env = envelope(&s, 1);
    let before = env.id;
    rt.block_on(store(&s, env, b"x\r\n")).unwrap();
    fs.remount("ro");
    let env = envelope(&s, 1);
    let error = rt.block_on(store(&s, env, b"y\r\n")).unwrap_err();
    eprintln!("read-only: {error}");
    assert_eq!(error.class(), ErrorClass::ReadOnly);
    assert!(!error.is_full());
    let error = rt.block_on(s.remove(before)).unwrap_err();
    assert_eq!(error.class(), ErrorClass::ReadOnly);
    fs.remount("rw");
    assert_eq!(queue_files(root), [before.to_string()]);
    let env = envelope(&s, 1);
    rt.block_on(store(&s, env, b"z\r\n")).unwrap();
    assert_eq!(queue_files(root).len(), 2);
}

/// Where the child process of the permission test finds its spool.
const PERMISSION_CHILD_DIR: &str = "SPOOL_PERMISSION_CHILD_DIR";

/// The child of `a_spool_the_daemon_user_may_not_write_answers_permission`, run as `nobody`:
/// opens the spool and tries to store a message, printing the error's class.
#[test]
#[ignore = "the permission test runs it as its child process, as another user"]
fn child_process_for_the_permission_test() {
    let Ok(dir) = std::env::var(PERMISSION_CHILD_DIR) else {
        eprintln!("not run: this is the permission test's child process");
        return;
    };
    let rt = runtime();
    let (s, _) = open(Path::new(&dir));
    let env = envelope(&s, 1);
    match rt.block_on(store(&s, env, b"x\r\n")) {
        Ok(q) => println!("STORED {}", q.id()),
        Err(e) => println!("CLASS {:?} {e}", e.class()),
    }
}

/// A spool owned by root, readable but not writable by the daemon's user (the child runs as
/// `nobody`): the commit answers a permission error and leaves nothing.
#[test]
fn a_spool_the_daemon_user_may_not_write_answers_permission() {
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--help").output().is_err() {
        eprintln!("SKIPPED: needs root and setpriv to run the child as another user");
        return;
    }
    let dir = Dir::new("perm");
    drop(open(&dir.0));
    use std::os::unix::fs::PermissionsExt;
    for d in [dir.0.clone(), dir.0.join(spool::QUEUE_DIR)] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_for_the_permission_test",
            "--ignored",
            "--nocapture",
        ])
        .env(PERMISSION_CHILD_DIR, &dir.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CLASS ") || l.starts_with("STORED "))
        .unwrap_or_else(|| {
            panic!(
                "the child said nothing useful: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("as nobody: {line}");
    assert!(line.starts_with("CLASS Permission "), "{line}");
    assert!(line.contains("spool not writable"), "{line}");
    assert!(queue_files(&dir.0).is_empty());
}

/// Where the child process of the crash test writes its spool.
const CHILD_DIR: &str = "SPOOL_CRASH_CHILD_DIR";

/// The child of `messages_committed_before_a_sigkill_survive_it`: stores messages from 32
/// concurrent tasks until killed, printing `A id` once a commit returned, `U id` once recipient
/// 0's update returned, `r id` before a removal and `R id` once it returned. Run only by that test.
#[test]
#[ignore = "the crash test runs it as its child process"]
fn child_process_for_the_crash_test() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        eprintln!("not run: this is the crash test's child process");
        return;
    };
    let options = SpoolOptions {
        memory_threshold: 4096,
        ..SpoolOptions::default()
    };
    let (s, _) = open_with(Path::new(&dir), options);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = move |what: &str, id: MessageId| {
        use std::io::Write as _;
        let mut o = out.lock().unwrap();
        let _ = writeln!(o, "{what} {id}");
        let _ = o.flush();
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..32u64)
            .map(|task| {
                let s = s.clone();
                let say = say.clone();
                tokio::spawn(async move {
                    for n in 0u64.. {
                        let env = envelope(&s, 2);
                        let id = env.id;
                        // Sizes from a few hundred bytes to past the spill threshold.
                        let len = 200 + ((id.as_u64() ^ (task * 7919 + n)) % 20_000) as usize;
                        // Content arrives in pieces, as from a client: at any moment
                        // most tasks are in the middle of a message.
                        let mut incoming = s.begin(env);
                        for piece in content(id, len).chunks(2048) {
                            incoming.write(piece).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        incoming.commit().await.unwrap();
                        say("A", id);
                        match n % 3 {
                            1 => {
                                s.update(id, &[(0, RcptState::Delivered)], &AttemptMeta::default())
                                    .await
                                    .unwrap();
                                say("U", id);
                            }
                            2 => {
                                say("r", id);
                                s.remove(id).await.unwrap();
                                say("R", id);
                            }
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// A small random source for the kill times (the seed is printed).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A child process storing messages under load is killed with SIGKILL at random moments, five
/// times over one spool. After each kill, recovery finds every message whose commit had
/// returned, intact, with the updates that had returned, and none that had been removed; no
/// incomplete file is ever queued.
#[test]
fn messages_committed_before_a_sigkill_survive_it() {
    let dir = Dir::new("crash");
    let exe = std::env::current_exe().unwrap();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill times from seed {seed}");
    let mut acked = std::collections::BTreeMap::new();
    let mut removed = std::collections::BTreeSet::new();
    let mut removing = std::collections::BTreeSet::new();
    let (mut total_set_aside, mut total_acked) = (0, 0);
    for round in 0..5 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_process_for_the_crash_test",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("A ") {
                    let _ = started_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        // The clock starts at the first commit, so that the kill falls while messages are
        // being stored, not while the child is still recovering the spool.
        started
            .recv_timeout(Duration::from_secs(60))
            .expect("the child committed nothing");
        let wait = 20 + next_random(&mut seed) % 600;
        std::thread::sleep(Duration::from_millis(wait));
        // SAFETY: a signal to our own child, by its id.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut round_acked = 0;
        for line in &lines {
            let Some((what, id)) = line.split_once(' ') else {
                continue;
            };
            let Ok(id) = id.parse::<MessageId>() else {
                continue;
            };
            match what {
                "A" => {
                    acked.insert(id, false);
                    round_acked += 1;
                }
                "U" => {
                    acked.insert(id, true);
                }
                "r" => {
                    removing.insert(id);
                }
                "R" => {
                    removed.insert(id);
                }
                _ => {}
            }
        }
        assert!(
            round_acked > 0,
            "the child committed nothing before the kill"
        );
        total_acked += round_acked;

        let rt = runtime();
        let (s, recovered) = open(&dir.0);
        total_set_aside += recovered.set_aside.len();
        for a in &recovered.set_aside {
            assert!(
                matches!(a.damage, Damage::Incomplete(_)),
                "a damaged, not just incomplete, file: {a:?}"
            );
            let id: MessageId = a.name.parse().unwrap();
            assert!(
                !acked.contains_key(&id),
                "acknowledged {id} was set aside: {a:?}"
            );
        }
        let present: std::collections::BTreeMap<MessageId, &Queued> =
            recovered.queued.iter().map(|q| (q.id(), q)).collect();
        for (id, updated) in &acked {
            if removed.contains(id) {
                assert!(!present.contains_key(id), "removed {id} came back");
                continue;
            }
            if removing.contains(id) {
                // Its removal was under way at the kill: gone or not, either is right.
                continue;
            }
            let q = present
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged {id} lost"));
            if *updated {
                assert_eq!(q.envelope.recipients[0].state, RcptState::Delivered);
            }
        }
        // Every queued message, acknowledged or not, is whole: its content is what was sent.
        for q in &recovered.queued {
            let body = rt.block_on(s.content(q.id())).unwrap();
            assert!(body.starts_with(format!("Subject: {}\r\n", q.id()).as_bytes()));
            assert_eq!(&body[..], &content(q.id(), q.size as usize)[..]);
        }
        eprintln!(
            "round {round}: killed {wait} ms after its first commit; {round_acked} acknowledged this round, {} queued \
             after recovery ({} acknowledged and not removed in all), {} incomplete set aside",
            recovered.queued.len(),
            acked.keys().filter(|id| !removed.contains(id)).count(),
            recovered.set_aside.len()
        );
    }
    // The kills did catch messages half-written (otherwise this test proved less than it says).
    assert!(
        total_set_aside > 0,
        "no kill caught a message being written"
    );
    eprintln!(
        "in all: {total_acked} acknowledged, {} of them removed, none lost; {total_set_aside} \
         incomplete files set aside, none delivered",
        removed.len()
    );
}
