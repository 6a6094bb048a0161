//! Store and forward end to end, real parts only: the daemon binary with its spool and queue,
//! aiosmtpd next hops (tests/fixtures/smtp_server.py) that can be stopped, slowed or made to
//! refuse, dnsmasq answering MX on loopback, Python's smtplib and email packages as client and
//! MIME parser, a real tmpfs filled up, and the operator's `smtp-auth-proxy queue` commands.
//!
//! Every wait is for an event (a message at a next hop, a mainlog record, a log line, a file
//! gone) with a generous bound; sleeps only pace a load.

mod common;

use common::TempDir;
use common::daemon::{BIN, Client, Daemon, Upstream, dead_port, run};
use common::dnsmasq::{Dnsmasq, SERVFAIL_DOMAIN};
use common::tmpfs::Tmpfs;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long any one awaited event may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(40);

/// Polls `probe` until it gives a value; panics with `what` after [`WAIT`].
fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "waited {WAIT:?} in vain for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The message every test sends: its `X-Test-Id` tells the copies apart at the next hop.
fn content(tag: &str) -> String {
    format!(
        "From: <sender@origin.test>\r\nSubject: queue test {tag}\r\nX-Test-Id: {tag}\r\n\r\nbody of {tag}\r\nEND {tag}\r\n"
    )
}

/// One transaction on an open session: MAIL FROM `from` and RCPT TO each of `rcpts` (each an
/// address, optionally followed by ESMTP parameters), then the message tagged `tag`. Returns
/// the reply to the final dot.
fn transaction(c: &mut Client, from: &str, rcpts: &[&str], tag: &str) -> (u16, String) {
    let with_params = |cmd: &str, arg: &str| match arg.split_once(' ') {
        Some((addr, params)) => format!("{cmd}:<{addr}> {params}"),
        None => format!("{cmd}:<{arg}>"),
    };
    let line = with_params("MAIL FROM", from);
    let (code, text) = c.cmd(&line);
    assert_eq!(code, 250, "{line}: {text}");
    for r in rcpts {
        let line = with_params("RCPT TO", r);
        let (code, text) = c.cmd(&line);
        assert_eq!(code, 250, "{line}: {text}");
    }
    let (code, text) = c.cmd("DATA");
    assert_eq!(code, 354, "{text}");
    c.send_raw(content(tag).as_bytes());
    c.send_raw(b".\r\n");
    c.reply()
}

/// Sends one message in a session of its own; returns the queue id of the `250`.
fn queued(port: u16, from: &str, rcpts: &[&str], tag: &str) -> String {
    let (mut c, _) = Client::ehlo(port);
    let (code, text) = transaction(&mut c, from, rcpts, tag);
    assert_eq!(code, 250, "{tag}: {text}");
    c.cmd("QUIT");
    queue_id(&text)
}

fn queue_id(reply: &str) -> String {
    reply
        .split("queued as ")
        .nth(1)
        .unwrap_or_else(|| panic!("no queue id in {reply:?}"))
        .trim()
        .to_owned()
}

/// The `X-Test-Id` of a message the next hop took.
fn tag(m: &serde_json::Value) -> String {
    let data = m["data"].as_str().unwrap();
    data.lines()
        .find_map(|l| l.strip_prefix("X-Test-Id: "))
        .unwrap_or_else(|| panic!("no X-Test-Id in {data:?}"))
        .trim()
        .to_owned()
}

fn tags(msgs: &[serde_json::Value]) -> Vec<String> {
    msgs.iter().map(tag).collect()
}

/// Files in the spool's queue directory: the messages not yet final.
fn spooled(spoolbase: &Path) -> BTreeSet<String> {
    std::fs::read_dir(spoolbase.join("queue"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the spool holds none of the messages (every recipient final, the file gone).
fn wait_spool_empty(spoolbase: &Path) {
    wait_for("an empty spool", || {
        let left = spooled(spoolbase);
        left.is_empty().then_some(())
    });
}

/// `smtp-auth-proxy queue -c CONF ARGS`: exit code, standard output, standard error.
fn queue_cmd(conf: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("queue")
        .arg("-c")
        .arg(conf)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One mainlog record: its fields, split at every `@` that is not escaped, with `\@` and
/// `\\` undone (how a parser of Momentum's mainlog reads an address with a quoted `@`).
#[derive(Clone, Debug)]
struct Record(Vec<String>);

impl Record {
    fn parse(line: &str) -> Record {
        let mut fields = vec![String::new()];
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n @ ('@' | '\\')) => fields.last_mut().unwrap().push(n),
                    Some(n) => {
                        let f = fields.last_mut().unwrap();
                        f.push('\\');
                        f.push(n);
                    }
                    None => fields.last_mut().unwrap().push('\\'),
                },
                '@' => fields.push(String::new()),
                c => fields.last_mut().unwrap().push(c),
            }
        }
        Record(fields)
    }

    fn kind(&self) -> &str {
        self.0.get(4).map_or("", String::as_str)
    }

    fn id(&self) -> &str {
        &self.0[1]
    }
}

fn mainlog(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(Record::parse)
        .collect()
}

/// The records of message `id`, once `enough` says they are all there.
fn wait_records(path: &Path, id: &str, enough: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    wait_for(
        &format!("mainlog records of {id} in {}", path.display()),
        || {
            let mine: Vec<Record> = mainlog(path)
                .into_iter()
                .filter(|r| r.0.len() > 4 && r.id() == id)
                .collect();
            enough(&mine).then_some(mine)
        },
    )
}

fn kinds(records: &[Record]) -> String {
    records.iter().map(Record::kind).collect()
}

/// A small Python script run with the given arguments; its standard output.
fn python(script: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A delivery status notification as Python's email package parses it (RFC 3464 / RFC 6522):
/// the top-level fields, the parts' content types, the per-message and per-recipient fields
/// of the `message/delivery-status` part, and the returned original as text.
fn parse_dsn(data: &str) -> serde_json::Value {
    const SCRIPT: &str = r#"
import email, email.policy, json, sys
m = email.message_from_string(sys.stdin.read(), policy=email.policy.compat32)
out = {"content_type": m.get_content_type(),
       "report_type": m.get_param("report-type"),
       "headers": {k: v for k, v in m.items()},
       "parts": [], "per_message": {}, "per_recipient": [], "returned": None}
for part in m.get_payload():
    ct = part.get_content_type()
    out["parts"].append(ct)
    if ct == "message/delivery-status":
        groups = part.get_payload()
        out["per_message"] = dict(groups[0].items())
        out["per_recipient"] = [dict(g.items()) for g in groups[1:]]
    elif ct == "message/rfc822":
        out["returned"] = part.get_payload()[0].as_string()
    elif ct == "text/rfc822-headers":
        out["returned"] = part.get_payload()
print(json.dumps(out))
"#;
    serde_json::from_str(&python(SCRIPT, &[], data)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. A drop-in file, delivery by MX.

/// A Momentum edge file as an operator has it: relaying for the local network, a logger, the
/// queue left to Momentum's defaults but for the retry interval, and no Gateway: mail goes by
/// MX. `DNS_Nameservers` and `Remote_SMTP_Port` point it at the test's DNS and next hops.
fn dropin_conf(dir: &Path, dns: &Dnsmasq, port: u16) -> String {
    format!(
        r#"# ecelerity.conf of an edge relay: the office network relays, mail goes out by MX.
Spoolbase = "{spool}"
relay_hosts = ( "127.0.0.0/8" "10.0.0.0/8" )
Server_Max_Outbound_Connections = 200
Max_Outbound_Connections = 20
Retry_Interval = 3600
Message_Expiration = 86400

DNS_Nameservers = ( "{dns}" )
Remote_SMTP_Port = {port}

ec_logger "ec_logger" {{
  mainlog = "{mainlog}"
  heartbeat = 60
}}

ESMTP_Listener {{
  SMTP_Extensions = ( "ENHANCEDSTATUSCODES" )
  Listen "127.0.0.1:0" {{ }}
}}
"#,
        spool = dir.join("spool").display(),
        dns = dns.addr(),
        mainlog = dir.join("mainlog.ec").display(),
    )
}

/// Mail for a domain goes to its best mail exchanger (the lowest preference, whatever order
/// DNS lists them in), and to the next one when the best refuses connections. The file has
/// no Gateway and passes `--check-config` as it is.
#[test]
fn a_dropin_file_with_relay_hosts_and_no_gateway_passes_the_check_and_delivers_by_mx() {
    // Two exchangers on one port, at two loopback addresses: mx-a (preference 10) and mx-b
    // (preference 20), listed worst first. fallback.test's best exchanger has an address
    // where nothing listens.
    let a = Upstream::start(&[]);
    let port = a.port.to_string();
    let b = Upstream::start_with(&[], &["--host", "127.0.0.2", "--port", &port]);
    let dns = Dnsmasq::start(&[
        "--mx-host=dest.test,mx-b.dest.test,20",
        "--mx-host=dest.test,mx-a.dest.test,10",
        "--host-record=mx-a.dest.test,127.0.0.1",
        "--host-record=mx-b.dest.test,127.0.0.2",
        "--mx-host=fallback.test,mx-dead.fallback.test,10",
        "--mx-host=fallback.test,mx-b.dest.test,20",
        "--host-record=mx-dead.fallback.test,127.0.0.4",
    ]);
    let dir = TempDir::new("q-dropin");
    let conf = dropin_conf(dir.path(), &dns, a.port);
    let path = dir.write("ecelerity.conf", &conf);
    let out = run(BIN, &["--check-config", "-c", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Configuration valid\n"
    );
    let d = Daemon::start(dir, &conf, 1);
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(queued(
            d.port(),
            "sender@origin.test",
            &["rcpt@dest.test"],
            &format!("mx-{n}"),
        ));
    }
    let got = a.wait_messages(3);
    assert_eq!(tags(&got), ["mx-1", "mx-2", "mx-3"]);
    assert_eq!(got[0]["to"][0], "rcpt@dest.test");
    assert_eq!(got[0]["from"], "sender@origin.test");
    assert!(
        dns.log().contains("query[MX] dest.test"),
        "MX was not asked:\n{}",
        dns.log()
    );
    assert!(b.messages().is_empty(), "the second exchanger got mail");
    // Another domain's best exchanger refuses connections: its second one takes the mail.
    let id = queued(
        d.port(),
        "sender@origin.test",
        &["rcpt@fallback.test"],
        "mx-fallback",
    );
    let got = b.wait_messages(1);
    assert_eq!(tags(&got), ["mx-fallback"]);
    let records = wait_records(&d.dir.path().join("mainlog.ec"), &id, |r| {
        kinds(r).contains('D')
    });
    assert_eq!(kinds(&records), "RD", "delivered on the first attempt");
    assert_eq!(records[1].0[11], "127.0.0.2");
}

/// The best mail exchanger goes away while the queue keeps an idle connection to it: the next
/// message for the domain does not wait `Retry_Interval` because that connection died; it goes
/// at once to the next exchanger, as on a first connection.
#[test]
fn a_mail_exchanger_gone_while_its_connection_waits_is_passed_over_for_the_next() {
    let a = Upstream::start(&[]);
    let port = a.port.to_string();
    let b = Upstream::start_with(&[], &["--host", "127.0.0.2", "--port", &port]);
    let dns = Dnsmasq::start(&[
        "--mx-host=dest.test,mx-a.dest.test,10",
        "--mx-host=dest.test,mx-b.dest.test,20",
        "--host-record=mx-a.dest.test,127.0.0.1",
        "--host-record=mx-b.dest.test,127.0.0.2",
    ]);
    let dir = TempDir::new("q-mxgone");
    let conf = dropin_conf(dir.path(), &dns, a.port);
    let d = Daemon::start(dir, &conf, 1);
    let log = d.dir.path().join("mainlog.ec");
    queued(d.port(), "sender@origin.test", &["rcpt@dest.test"], "first");
    assert_eq!(tags(&a.wait_messages(1)), ["first"]);
    // mx-a stops within the connection's Idle_Timeout (5 s): its connection ends, and new
    // ones are refused.
    drop(a);
    let id = queued(
        d.port(),
        "sender@origin.test",
        &["rcpt@dest.test"],
        "second",
    );
    let records = wait_records(&log, &id, |r| r.len() > 1);
    assert_eq!(kinds(&records), "RD", "deferred: {records:?}");
    assert_eq!(records[1].0[11], "127.0.0.2");
    assert_eq!(tags(&b.wait_messages(1)), ["second"]);
}

/// A domain that publishes a null MX (RFC 7505) accepts no mail: its message bounces on the
/// first attempt, and the sender (found by MX as well) gets the notice. A domain whose DNS
/// answers SERVFAIL is not failed: the message waits in the queue with the DNS error.
#[test]
fn a_null_mx_domain_bounces_at_once_and_servfail_defers() {
    let bounces = Upstream::start(&[]);
    let dns = Dnsmasq::start(&[
        "--mx-host=nomail.test,.,0",
        "--mx-host=origin.test,mx.origin.test,10",
        "--host-record=mx.origin.test,127.0.0.1",
    ]);
    let dir = TempDir::new("q-nullmx");
    let conf = dropin_conf(dir.path(), &dns, bounces.port);
    let d = Daemon::start(dir, &conf, 1);
    let log = d.dir.path().join("mainlog.ec");
    let spool = d.dir.path().join("spool");
    let id = queued(
        d.port(),
        "sender@origin.test",
        &["nobody@nomail.test"],
        "nullmx",
    );
    let records = wait_records(&log, &id, |r| kinds(r).contains('P'));
    let p = records.iter().find(|r| r.kind() == "P").unwrap();
    assert_eq!(p.0[5], "nomail.test");
    assert_eq!(p.0[10], "0", "given up on the first attempt: {p:?}");
    assert!(p.0[13].contains("null MX"), "{p:?}");
    assert!(!kinds(&records).contains('T'), "{records:?}");
    let dsn = bounces.wait_messages(1);
    assert_eq!(dsn[0]["from"], "<>", "the null reverse path");
    assert_eq!(dsn[0]["to"][0], "sender@origin.test");
    let report = parse_dsn(dsn[0]["data"].as_str().unwrap());
    let rcpt = &report["per_recipient"][0];
    assert_eq!(rcpt["Final-Recipient"], "rfc822; nobody@nomail.test");
    assert_eq!(rcpt["Action"], "failed");
    assert_eq!(rcpt["Status"], "5.1.10");
    wait_for("the null-MX message to leave the spool", || {
        (!spooled(&spool).contains(&id)).then_some(())
    });

    let id = queued(
        d.port(),
        "sender@origin.test",
        &[&format!("someone@{SERVFAIL_DOMAIN}")],
        "servfail",
    );
    let records = wait_records(&log, &id, |r| kinds(r).contains('T'));
    let t = records.iter().find(|r| r.kind() == "T").unwrap();
    assert!(t.0[13].contains("SERVFAIL"), "{t:?}");
    assert!(!kinds(&records).contains('P'), "{records:?}");
    let (code, list, err) = queue_cmd(&d.conf_path(), &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(list.contains(&id), "{list}");
    assert!(list.contains("SERVFAIL"), "{list}");
    assert!(spooled(&spool).contains(&id));
    assert_eq!(bounces.messages().len(), 1, "a deferral is not a bounce");
}

// ---------------------------------------------------------------------------------------------
// 2. A next hop that goes away for a while.

/// While the next hop is stopped every client still gets `250`; each message is tried, fails
/// (a `T` record), and is tried again; once the next hop is back on its port every message
/// arrives there, each exactly once, and its mainlog shows the `T` records, then one `D`.
/// (The outage is 15 s rather than the minute of the issue, with retries every 2 to 4 s: the
/// same behaviour, in CI time.)
#[test]
fn a_next_hop_stopped_for_a_while_costs_clients_nothing_and_every_message_arrives_once() {
    let up = Upstream::start(&[]);
    let port = up.port;
    let dir = TempDir::new("q-outage");
    let log = dir.path().join("mainlog.ec");
    let conf = format!(
        r#"Gateway = "127.0.0.1:{port}"
relay_hosts = ( "127.0.0.0/8" )
Retry_Interval = 2
Max_Retry_Interval = 4
ec_logger "ec_logger" {{ mainlog = "{}" }}
ESMTP_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
        log.display()
    );
    let d = Daemon::start(dir, &conf, 1);
    let first = queued(d.port(), "sender@origin.test", &["a@dest.test"], "before");
    up.wait_messages(1);
    wait_records(&log, &first, |r| kinds(r).contains('D'));
    let mut delivered = tags(&up.messages());
    drop(up);

    let outage = Instant::now();
    let mut ids = BTreeMap::new();
    let mut n = 0;
    while outage.elapsed() < Duration::from_secs(15) {
        n += 1;
        let t = format!("during-{n}");
        // Each message gets its 250 at once; the queue keeps it.
        ids.insert(
            queued(d.port(), "sender@origin.test", &["a@dest.test"], &t),
            t,
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for id in ids.keys() {
        wait_records(&log, id, |r| kinds(r).contains('T'));
    }
    let back = Upstream::start_with(&[], &["--port", &port.to_string()]);
    back.wait_messages(ids.len());
    wait_spool_empty(&d.dir.path().join("spool"));
    delivered.extend(tags(&back.messages()));
    let mut expected: Vec<String> = ids.values().cloned().collect();
    expected.push("before".into());
    expected.sort();
    delivered.sort();
    assert_eq!(delivered, expected, "each message exactly once");
    for id in ids.keys() {
        let records = wait_records(&log, id, |r| kinds(r).contains('D'));
        let k = kinds(&records);
        // R first, then one or more T, then exactly one D.
        assert!(
            k.starts_with("RT") && k.ends_with('D') && k.matches('D').count() == 1,
            "{id}: {k}"
        );
    }
    eprintln!("{} messages accepted during the outage", ids.len());
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL under load.

/// The load: `threads` clients with smtplib, each sending messages one after the other (five
/// per session) until the file `stop` exists, reconnecting when the daemon is gone. Prints
/// `ACK id` for each message that got 250.
const DRIVER: &str = r#"
import os, smtplib, sys, threading, time
port, threads, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
def client(n):
    seq = 0
    while not os.path.exists(stop):
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=20)
        except (smtplib.SMTPException, OSError):
            time.sleep(0.02)
            continue
        try:
            for _ in range(5):
                seq += 1
                tag = f"c{n}-{seq}"
                body = (f"From: <load@origin.test>\r\nSubject: load {tag}\r\nX-Test-Id: {tag}\r\n\r\n"
                        + ("line of the body\r\n" * 40) + f"END {tag}\r\n")
                s.sendmail("load@origin.test", [f"r{n}@dest.test"], body)
                say("ACK " + tag)
                if os.path.exists(stop):
                    break
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass
threads = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
for t in threads: t.start()
for t in threads: t.join()
say("DONE")
"#;

/// A small deterministic generator, seeded from the clock (the seed is printed so a failing
/// run can be repeated).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// The daemon is killed with SIGKILL at random moments while four clients send and the queue
/// delivers, and restarted on the same spool each time. Every message a client got `250` for
/// is delivered, complete; a message arrives twice only when it was in flight at a kill:
/// delivered by the life of the daemon that was killed before it recorded that, and again by
/// the next.
#[test]
fn sigkill_under_load_loses_no_acknowledged_message() {
    let up = Upstream::start(&[]);
    let dir = TempDir::new("q-sigkill");
    let spoolbase = dir.path().join("spool");
    let port = dead_port();
    let conf = format!(
        r#"Spoolbase = "{}"
Gateway = "127.0.0.1:{}"
relay_hosts = ( "127.0.0.0/8" )
Retry_Interval = 1
Max_Retry_Interval = 2
ESMTP_Listener {{ Listen "127.0.0.1:{port}" {{ }} }}
"#,
        spoolbase.display(),
        up.port
    );
    // Each life of the daemon says EHLO with a name of its own, so the next hop's record
    // tells which life delivered each copy.
    let start = |n: usize| {
        let conf = format!("EHLO_Hostname = \"life{n}.test\"\n{conf}");
        Daemon::start(TempDir::new(&format!("q-sigkill-run{n}")), &conf, 1)
    };
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let mut d = start(0);
    let stop = dir.path().join("stop");
    let mut driver = Command::new("python3")
        .arg("-c")
        .arg(DRIVER)
        .args([&port.to_string(), "4", stop.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let acked = acked.clone();
        let out = driver.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(t) = line.strip_prefix("ACK ") {
                    acked.lock().unwrap().push(t.to_owned());
                }
            }
        })
    };
    for n in 1..=5 {
        std::thread::sleep(rng.millis(300, 1500));
        let before = acked.lock().unwrap().len();
        drop(d); // SIGKILL, and reaped
        eprintln!("kill {n}: {before} acknowledged so far");
        d = start(n);
    }
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&stop, "").unwrap();
    assert!(driver.wait().unwrap().success());
    reader.join().unwrap();
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() > 20, "too little load: {}", acked.len());
    // Everything acknowledged arrives (the spool may hold more: messages whose 250 was lost
    // with the daemon).
    wait_for("every acknowledged message at the next hop", || {
        let got: BTreeSet<String> = tags(&up.messages()).into_iter().collect();
        acked.is_subset(&got).then_some(())
    });
    wait_spool_empty(&spoolbase);
    let msgs = up.messages();
    // Each message's copies, by the life of the daemon that delivered them.
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for m in &msgs {
        let t = tag(m);
        let data = m["data"].as_str().unwrap();
        assert!(
            data.ends_with(&format!("END {t}\r\n"))
                && data.matches("line of the body").count() == 40,
            "{t} arrived incomplete: {data:?}"
        );
        seen.entry(t)
            .or_default()
            .push(m["helo"].as_str().unwrap().to_owned());
    }
    let lives: BTreeSet<&String> = seen.values().flatten().collect();
    assert!(lives.len() > 1, "one life delivered everything: {lives:?}");
    let duplicates: Vec<(&String, &Vec<String>)> =
        seen.iter().filter(|(_, lives)| lives.len() > 1).collect();
    for (t, lives) in &duplicates {
        // In flight at a kill: delivered by the life that was killed before it could record
        // that, and again by a later one. One life never delivers a message twice.
        let distinct: BTreeSet<&String> = lives.iter().collect();
        assert_eq!(
            distinct.len(),
            lives.len(),
            "{t} delivered more than once by one life of the daemon: {lives:?}"
        );
    }
    let unacked = seen.keys().filter(|t| !acked.contains(*t)).count();
    eprintln!(
        "acknowledged {}, delivered {} distinct ({} not acknowledged: their 250 died with the daemon), duplicates {}",
        acked.len(),
        seen.len(),
        unacked,
        duplicates.len()
    );
    let corrupt = std::fs::read_dir(spoolbase.join("corrupt"))
        .unwrap()
        .count();
    eprintln!("{corrupt} half-written file(s) set aside by recovery");
}

// ---------------------------------------------------------------------------------------------
// 4. A full disk.

/// Fills the file system under `path` to the last byte; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    path
}

/// With its Spoolbase on a really full file system the daemon answers the final dot with
/// `452 4.3.1` (a small message failing at its commit, a large one failing as it spills to
/// disk, both read to their end), leaves no file behind, keeps the session, and once there
/// is room again accepts and delivers in the same session. A read-only spool is `451 4.3.0`.
#[test]
fn a_full_spool_answers_452_after_the_data_and_keeps_serving() {
    let dir = TempDir::new("q-full");
    let spoolbase = dir.path().join("spool");
    let Some(_fs) = Tmpfs::mount(&spoolbase, "2m") else {
        return;
    };
    let up = Upstream::start(&[]);
    let conf = format!(
        r#"Spoolbase = "{}"
Gateway = "127.0.0.1:{}"
relay_hosts = ( "127.0.0.0/8" )
ESMTP_Listener {{ SMTP_Extensions = ( "ENHANCEDSTATUSCODES" ) Listen "127.0.0.1:0" {{ }} }}
"#,
        spoolbase.display(),
        up.port
    );
    let d = Daemon::start(TempDir::new("q-full-d"), &conf, 1);
    let filler = fill(&spoolbase);
    let (mut c, _) = Client::ehlo(d.port());
    let (code, text) = transaction(&mut c, "sender@origin.test", &["a@dest.test"], "small");
    assert_eq!(
        (code, text.as_str()),
        (452, "4.3.1 Insufficient system storage, try again later\n")
    );
    // A message over the spool's 1 MiB memory threshold, written as it arrives.
    assert_eq!(c.cmd("MAIL FROM:<sender@origin.test>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<a@dest.test>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    c.send_raw(content("large").as_bytes());
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..(2 << 20) / line.len() {
        c.send_raw(line.as_bytes());
    }
    c.send_raw(b".\r\n");
    let (code, text) = c.reply();
    assert_eq!(
        (code, text.as_str()),
        (452, "4.3.1 Insufficient system storage, try again later\n")
    );
    assert!(
        spooled(&spoolbase).is_empty(),
        "a file was left: {:?}",
        spooled(&spoolbase)
    );
    assert_eq!(
        std::fs::read_dir(spoolbase.join("corrupt"))
            .unwrap()
            .count(),
        0
    );
    d.wait_log("not queued");
    // Room again: the same session goes on.
    std::fs::remove_file(&filler).unwrap();
    let (code, text) = transaction(&mut c, "sender@origin.test", &["a@dest.test"], "after");
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT");
    assert_eq!(tags(&up.wait_messages(1)), ["after"]);
    wait_spool_empty(&spoolbase);
    // A spool that cannot be written for another reason (read-only) is 451 4.3.0, and the
    // daemon takes mail again once it can write.
    let remount = |mode: &str| {
        let out = run(
            "mount",
            &[
                "-o",
                &format!("remount,{mode}"),
                spoolbase.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    remount("ro");
    let (mut c, _) = Client::ehlo(d.port());
    let (code, text) = transaction(&mut c, "sender@origin.test", &["a@dest.test"], "read-only");
    assert_eq!(
        (code, text.as_str()),
        (451, "4.3.0 Local error in processing, try again later\n")
    );
    remount("rw");
    let (code, text) = transaction(&mut c, "sender@origin.test", &["a@dest.test"], "writable");
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT");
    assert_eq!(tags(&up.wait_messages(2)), ["after", "writable"]);
}

/// A recipient refused while the spool is full: its bounce cannot be stored, so its failure
/// is not recorded either. The recipient stays queued (nothing is lost, nobody is told
/// twice), is tried again at its Retry_Interval once there is room, and the sender gets one
/// notice.
#[test]
fn a_failure_whose_bounce_cannot_be_stored_stays_queued_until_it_can() {
    let dir = TempDir::new("q-full-bounce");
    let spoolbase = dir.path().join("spool");
    let Some(_fs) = Tmpfs::mount(&spoolbase, "2m") else {
        return;
    };
    // Slow to refuse, so the spool can be filled while the attempt is under way.
    let next_hop = Upstream::start_with(
        &[],
        &[
            "--data-delay",
            "2",
            "--data-reply",
            "554 5.7.1 refused by policy",
        ],
    );
    let sender_mx = Upstream::start(&[]);
    let conf = format!(
        r#"Spoolbase = "{}"
Retry_Interval = 2
relay_hosts = ( "127.0.0.0/8" )
Domain "dest.test" {{ Gateway = "127.0.0.1:{}" }}
Domain "origin.test" {{ Gateway = "127.0.0.1:{}" }}
ESMTP_Listener {{ SMTP_Extensions = ( "ENHANCEDSTATUSCODES" ) Listen "127.0.0.1:0" {{ }} }}
"#,
        spoolbase.display(),
        next_hop.port,
        sender_mx.port
    );
    let d = Daemon::start(TempDir::new("q-full-bounce-d"), &conf, 1);
    let id = queued(d.port(), "sender@origin.test", &["a@dest.test"], "refused");
    let filler = fill(&spoolbase);
    d.wait_log("cannot store the bounce");
    assert!(
        spooled(&spoolbase).contains(&id),
        "the message left the spool"
    );
    assert!(sender_mx.messages().is_empty());
    std::fs::remove_file(&filler).unwrap();
    let bounces = sender_mx.wait_messages(1);
    assert_eq!(bounces.len(), 1);
    assert_eq!(bounces[0]["to"], serde_json::json!(["sender@origin.test"]));
    let data = bounces[0]["data"].as_str().unwrap();
    assert!(data.contains("554 5.7.1 refused by policy"), "{data}");
    wait_spool_empty(&spoolbase);
    // One notice only, however many attempts it took.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sender_mx.messages().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 5. Bounces.

/// A next hop refusing some recipients, a second one for the senders' domain (origin.test),
/// and a daemon routing to them by Domain scopes, with `extra` global options.
struct Bouncing {
    next_hop: Upstream,
    sender_mx: Upstream,
    d: Daemon,
    log: PathBuf,
}

fn bouncing(tag: &str, fixture: &[&str], extra: &dyn Fn(u16) -> String) -> Bouncing {
    let next_hop = Upstream::start_with(&[], fixture);
    let extra = extra(next_hop.port);
    let sender_mx = Upstream::start(&[]);
    let dir = TempDir::new(tag);
    let log = dir.path().join("mainlog.ec");
    let conf = format!(
        r#"relay_hosts = ( "127.0.0.0/8" )
{extra}
Domain "dest.test" {{ Gateway = "127.0.0.1:{}" }}
Domain "origin.test" {{ Gateway = "127.0.0.1:{}" }}
ec_logger "ec_logger" {{ mainlog = "{}" }}
ESMTP_Listener {{ SMTP_Extensions = ( "ENHANCEDSTATUSCODES" ) Listen "127.0.0.1:0" {{ }} }}
"#,
        next_hop.port,
        sender_mx.port,
        log.display()
    );
    let d = Daemon::start(dir, &conf, 1);
    Bouncing {
        next_hop,
        sender_mx,
        d,
        log,
    }
}

/// A recipient the next hop refuses with 550 at RCPT is reported to the sender in an RFC 3464
/// delivery status notification: `multipart/report` with the text, the
/// `message/delivery-status` fields for that recipient alone (ORCPT and ENVID carried back),
/// and the original returned; the other recipient is delivered.
#[test]
fn a_recipient_refused_at_rcpt_gets_the_sender_a_delivery_status_notification() {
    let b = bouncing(
        "q-dsn",
        &[
            "--rcpt-reply",
            "nobody@dest.test=550 5.1.1 <nobody@dest.test>: no such user",
        ],
        &|_| String::new(),
    );
    let id = queued(
        b.d.port(),
        "sender@origin.test ENVID=env-7",
        &[
            "ok@dest.test",
            "nobody@dest.test ORCPT=rfc822;nobody@dest.test",
        ],
        "refused",
    );
    let delivered = b.next_hop.wait_messages(1);
    assert_eq!(delivered[0]["to"], serde_json::json!(["ok@dest.test"]));
    let dsn = b.sender_mx.wait_messages(1);
    assert_eq!(
        dsn[0]["from"], "<>",
        "a notification has the null reverse path"
    );
    assert_eq!(dsn[0]["to"], serde_json::json!(["sender@origin.test"]));
    let r = parse_dsn(dsn[0]["data"].as_str().unwrap());
    assert_eq!(r["content_type"], "multipart/report");
    assert_eq!(r["report_type"], "delivery-status");
    assert_eq!(
        r["parts"],
        serde_json::json!(["text/plain", "message/delivery-status", "message/rfc822"])
    );
    assert_eq!(r["headers"]["To"], "<sender@origin.test>");
    assert_eq!(r["headers"]["Auto-Submitted"], "auto-replied");
    assert!(
        r["per_message"]["Reporting-MTA"]
            .as_str()
            .unwrap()
            .starts_with("dns; ")
    );
    assert_eq!(r["per_message"]["Original-Envelope-Id"], "env-7");
    assert!(r["per_message"]["Arrival-Date"].is_string());
    let rcpts = r["per_recipient"].as_array().unwrap();
    assert_eq!(rcpts.len(), 1, "only the failed recipient: {rcpts:?}");
    assert_eq!(rcpts[0]["Final-Recipient"], "rfc822; nobody@dest.test");
    assert_eq!(rcpts[0]["Original-Recipient"], "rfc822;nobody@dest.test");
    assert_eq!(rcpts[0]["Action"], "failed");
    assert_eq!(rcpts[0]["Status"], "5.1.1");
    assert_eq!(
        rcpts[0]["Diagnostic-Code"],
        "smtp; 550 5.1.1 <nobody@dest.test>: no such user"
    );
    assert!(rcpts[0]["Remote-MTA"].is_string(), "{rcpts:?}");
    let returned = r["returned"].as_str().unwrap();
    assert!(returned.contains("X-Test-Id: refused"), "{returned}");
    assert!(
        returned.contains("END refused"),
        "the whole original: {returned}"
    );
    let records = wait_records(&b.log, &id, |r| {
        kinds(r).contains('D') && kinds(r).contains('P')
    });
    assert_eq!(kinds(&records).matches('R').count(), 2);
    wait_spool_empty(&b.d.dir.path().join("spool"));
}

/// `NOTIFY=NEVER` on the refused recipient: the failure is recorded, and no notice is made.
#[test]
fn a_refused_recipient_with_notify_never_gets_the_sender_no_bounce() {
    let b = bouncing(
        "q-never",
        &["--rcpt-reply", "nobody@dest.test=550 5.1.1 no such user"],
        &|_| String::new(),
    );
    let spool = b.d.dir.path().join("spool");
    let id = queued(
        b.d.port(),
        "sender@origin.test",
        &["nobody@dest.test NOTIFY=NEVER"],
        "never",
    );
    wait_records(&b.log, &id, |r| kinds(r).contains('P'));
    // The failure's notice, had there been one, would be stored before the message leaves
    // the spool and queued before the listing is asked for.
    wait_for("the failed message to leave the spool", || {
        (!spooled(&spool).contains(&id)).then_some(())
    });
    let (code, list, err) = queue_cmd(&b.d.conf_path(), &["list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(list, "Mail queue is empty\n");
    assert!(b.sender_mx.messages().is_empty());
    assert!(
        !mainlog(&b.log)
            .iter()
            .any(|r| r.kind() == "R" && r.0.len() == 14 && r.0[11] == "internal"),
        "a notice was received into the queue"
    );
}

/// NOTIFY=SUCCESS for a recipient the next hop takes, when the next hop does not offer DSN
/// and so cannot be asked to report: the sender is told the message was relayed (RFC 3461
/// §4.1), for that recipient alone.
#[test]
fn notify_success_through_a_next_hop_without_dsn_gets_the_sender_a_relayed_notice() {
    let b = bouncing("q-relayed", &[], &|_| String::new());
    queued(
        b.d.port(),
        "sender@origin.test",
        &[
            "ok@dest.test NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ok@dest.test",
            "quiet@dest.test",
        ],
        "relayed",
    );
    let got = b.next_hop.wait_messages(1);
    assert_eq!(
        got[0]["to"],
        serde_json::json!(["ok@dest.test", "quiet@dest.test"])
    );
    let notice = b.sender_mx.wait_messages(1);
    assert_eq!(notice[0]["from"], "<>");
    let r = parse_dsn(notice[0]["data"].as_str().unwrap());
    assert_eq!(r["report_type"], "delivery-status");
    let rcpts = r["per_recipient"].as_array().unwrap();
    assert_eq!(rcpts.len(), 1, "{rcpts:?}");
    assert_eq!(rcpts[0]["Final-Recipient"], "rfc822; ok@dest.test");
    assert_eq!(rcpts[0]["Original-Recipient"], "rfc822;ok@dest.test");
    assert_eq!(rcpts[0]["Action"], "relayed");
    assert!(
        rcpts[0]["Status"].as_str().unwrap().starts_with("2."),
        "{rcpts:?}"
    );
    wait_spool_empty(&b.d.dir.path().join("spool"));
    assert_eq!(b.sender_mx.messages().len(), 1);
}

/// Three recipients, one deferred with 451 at RCPT: the first attempt delivers the message to
/// the other two; every retry offers the next hop only the deferred one, also after a restart
/// of the daemon (the spool keeps each recipient's state). Once the next hop takes it, the
/// message has been delivered twice (two transactions), never a third time, and each
/// recipient got it once.
#[test]
fn a_message_to_three_recipients_with_one_deferred_is_delivered_twice_never_three_times() {
    let dir = TempDir::new("q-three");
    let reads = dir.path().join("reads.jsonl");
    let reads_arg = reads.to_str().unwrap().to_owned();
    let first = Upstream::start_with(
        &[],
        &[
            "--rcpt-reply",
            "c@dest.test=451 4.2.0 try later",
            "--record-reads",
            &reads_arg,
        ],
    );
    let port = first.port;
    let log = dir.path().join("mainlog.ec");
    let spoolbase = dir.path().join("spool");
    let conf = format!(
        r#"Spoolbase = "{}"
Gateway = "127.0.0.1:{port}"
relay_hosts = ( "127.0.0.0/8" )
Retry_Interval = 1
Max_Retry_Interval = 1
Max_Retries = 50
ec_logger "ec_logger" {{ mainlog = "{}" }}
ESMTP_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
        spoolbase.display(),
        log.display()
    );
    let mut d = Daemon::start(TempDir::new("q-three-1"), &conf, 1);
    let id = queued(
        d.port(),
        "sender@origin.test",
        &["a@dest.test", "b@dest.test", "c@dest.test"],
        "three",
    );
    let got = first.wait_messages(1);
    assert_eq!(
        got[0]["to"],
        serde_json::json!(["a@dest.test", "b@dest.test"])
    );
    // Two more attempts for c alone; then the daemon stops, and starts again on its spool
    // when the next hop takes c.
    wait_records(&log, &id, |r| kinds(r).matches('T').count() >= 3);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).expect("the daemon stopped").success());
    assert_eq!(spooled(&spoolbase), BTreeSet::from([id.clone()]));
    let mut all = first.messages();
    drop(first);
    let second = Upstream::start_with(
        &[],
        &["--port", &port.to_string(), "--record-reads", &reads_arg],
    );
    let _d = Daemon::start(TempDir::new("q-three-2"), &conf, 1);
    let got = second.wait_messages(1);
    assert_eq!(got[0]["to"], serde_json::json!(["c@dest.test"]));
    wait_spool_empty(&spoolbase);
    all.extend(second.messages());
    assert_eq!(all.len(), 2, "delivered twice, never three times");
    let mut per_rcpt: BTreeMap<String, usize> = BTreeMap::new();
    for m in &all {
        for r in m["to"].as_array().unwrap() {
            *per_rcpt.entry(r.as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(
        per_rcpt,
        BTreeMap::from([
            ("a@dest.test".to_owned(), 1),
            ("b@dest.test".to_owned(), 1),
            ("c@dest.test".to_owned(), 1)
        ])
    );
    // What the next hop was offered, over every attempt: a and b once, c each time.
    let text = std::fs::read_to_string(&reads).unwrap();
    let offered = |who: &str| text.matches(&format!("RCPT TO:<{who}>")).count();
    assert_eq!(
        (offered("a@dest.test"), offered("b@dest.test")),
        (1, 1),
        "{text}"
    );
    assert!(offered("c@dest.test") >= 4, "{text}");
}

/// A recipient that is only ever deferred (452) is given up when its domain's `Max_Retries`
/// are used up, or when its `Message_Expiration` has passed (with unlimited retries), and the
/// sender's notice carries the last error the next hop gave.
#[test]
fn retries_used_up_or_an_expired_message_bounce_with_the_last_error() {
    let b = bouncing(
        "q-expire",
        &[
            "--rcpt-reply",
            "full@retries.test=452 4.2.2 <full@retries.test>: mailbox full",
            "--rcpt-reply",
            "full@expires.test=452 4.2.2 <full@expires.test>: mailbox full",
        ],
        &|port| {
            format!(
                r#"Retry_Interval = 1
Max_Retry_Interval = 1
Domain "retries.test" {{ Gateway = "127.0.0.1:{port}" Max_Retries = 2 }}
Domain "expires.test" {{ Gateway = "127.0.0.1:{port}" Max_Retries = none Message_Expiration = 3 }}"#
            )
        },
    );
    let retried = queued(
        b.d.port(),
        "sender@origin.test RET=HDRS",
        &["full@retries.test"],
        "retries",
    );
    let expired = queued(
        b.d.port(),
        "sender@origin.test",
        &["full@expires.test"],
        "expires",
    );
    let dsns = b.sender_mx.wait_messages(2);
    let mut by_original = HashMap::new();
    for m in &dsns {
        let r = parse_dsn(m["data"].as_str().unwrap());
        let returned = r["returned"].as_str().unwrap().to_owned();
        let t = if returned.contains("X-Test-Id: retries") {
            "retries"
        } else {
            "expires"
        };
        by_original.insert(t, r);
    }
    // RET=HDRS: the header comes back, not the body.
    let report = &by_original["retries"];
    assert_eq!(report["parts"][2], "text/rfc822-headers");
    assert!(!report["returned"].as_str().unwrap().contains("END retries"));
    let r = &report["per_recipient"][0];
    assert_eq!(r["Action"], "failed");
    assert_eq!(r["Final-Recipient"], "rfc822; full@retries.test");
    assert_eq!(
        r["Diagnostic-Code"],
        "smtp; 452 4.2.2 <full@retries.test>: mailbox full (given up after 3 attempts)"
    );
    let report = &by_original["expires"];
    assert_eq!(report["parts"][2], "message/rfc822");
    let r = &report["per_recipient"][0];
    assert_eq!(r["Action"], "failed");
    let diag = r["Diagnostic-Code"].as_str().unwrap();
    assert!(
        diag.starts_with("smtp; 452 4.2.2 <full@expires.test>: mailbox full (given up after"),
        "{diag}"
    );
    let records = wait_records(&b.log, &retried, |r| kinds(r).contains('P'));
    assert_eq!(kinds(&records), "RTTP", "two retries, then given up");
    let records = wait_records(&b.log, &expired, |r| kinds(r).contains('P'));
    let p = records.iter().find(|r| r.kind() == "P").unwrap();
    let waited: f64 = p.0[11].parse().unwrap();
    assert!(waited >= 3.0, "given up before Message_Expiration: {p:?}");
    assert!(b.next_hop.messages().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6. The queue commands.

/// The operator's commands on a running daemon: `list` shows deferred mail with its error,
/// `show` one message, `retry` sends it now that the next hop is back, `delete` removes one
/// without a word to anyone, `bounce` fails one with a notice to its sender.
#[test]
fn the_queue_commands_list_show_retry_delete_and_bounce_on_a_live_daemon() {
    let port = dead_port();
    let sender_mx = Upstream::start(&[]);
    let dir = TempDir::new("q-cmds");
    let log = dir.path().join("mainlog.ec");
    let conf = format!(
        r#"Gateway = "127.0.0.1:{port}"
relay_hosts = ( "127.0.0.0/8" )
Retry_Interval = 3600
Domain "origin.test" {{ Gateway = "127.0.0.1:{}" }}
ec_logger "ec_logger" {{ mainlog = "{}" }}
ESMTP_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
        sender_mx.port,
        log.display()
    );
    let d = Daemon::start(dir, &conf, 1);
    let spool = d.dir.path().join("spool");
    let conf_path = d.conf_path();
    let ids: Vec<String> = ["retried", "deleted", "bounced"]
        .iter()
        .map(|t| queued(d.port(), "sender@origin.test", &["x@dest.test"], t))
        .collect();
    for id in &ids {
        wait_records(&log, id, |r| kinds(r).contains('T'));
    }
    let (code, list, err) = queue_cmd(&conf_path, &["list"]);
    assert_eq!(code, 0, "{err}");
    for id in &ids {
        let block: Vec<&str> = list
            .lines()
            .skip_while(|l| !l.starts_with(id.as_str()))
            .take(3)
            .collect();
        assert!(block[0].contains("sender@origin.test"), "{list}");
        assert!(
            block[1].contains("refused") && block[1].contains("1 attempt(s)"),
            "{list}"
        );
        assert!(
            block[1].contains("next in 0:59:") || block[1].contains("next in 1:00:00"),
            "{list}"
        );
        assert_eq!(block[2].trim(), "x@dest.test", "{list}");
    }
    assert!(list.ends_with("in 3 message(s).\n"), "{list}");
    let (code, show, _) = queue_cmd(&conf_path, &["show", &ids[0]]);
    assert_eq!(code, 0);
    assert!(
        show.contains("X-Test-Id: retried") && show.contains("Received: from"),
        "{show}"
    );

    let up = Upstream::start_with(&[], &["--port", &port.to_string()]);
    let (code, out, _) = queue_cmd(&conf_path, &["retry", &ids[0]]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            format!("{}: scheduled for delivery now\n", ids[0]).as_str()
        )
    );
    assert_eq!(tags(&up.wait_messages(1)), ["retried"]);

    let (code, out, _) = queue_cmd(&conf_path, &["delete", &ids[1]]);
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{}: deleted\n", ids[1]).as_str())
    );
    let (code, out, _) = queue_cmd(&conf_path, &["bounce", &ids[2]]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            format!("{}: failed; the sender is told\n", ids[2]).as_str()
        )
    );
    let dsn = sender_mx.wait_messages(1);
    let r = parse_dsn(dsn[0]["data"].as_str().unwrap());
    assert!(
        r["returned"]
            .as_str()
            .unwrap()
            .contains("X-Test-Id: bounced")
    );
    assert_eq!(r["per_recipient"][0]["Action"], "failed");
    assert!(
        r["per_recipient"][0]["Diagnostic-Code"]
            .as_str()
            .unwrap()
            .contains("failed by the operator"),
        "{r}"
    );
    let (code, out, _) = queue_cmd(&conf_path, &["retry", &ids[1]]);
    assert_eq!(
        (code, out.as_str()),
        (1, format!("{}: not in the queue\n", ids[1]).as_str())
    );
    wait_spool_empty(&spool);
    let (_, list, _) = queue_cmd(&conf_path, &["list"]);
    assert_eq!(list, "Mail queue is empty\n");
    // Nothing else went anywhere: not the deleted one, not the bounced one, no second bounce.
    assert_eq!(tags(&up.messages()), ["retried"]);
    assert_eq!(sender_mx.messages().len(), 1);
}

/// With no daemon running, `queue list` says so and lists what the spool's files hold.
#[test]
fn queue_list_without_a_daemon_reads_the_spool() {
    let dir = TempDir::new("q-offline");
    let log = dir.path().join("mainlog.ec");
    let conf = format!(
        "Gateway = \"127.0.0.1:{}\"\nrelay_hosts = ( \"127.0.0.0/8\" )\nRetry_Interval = 3600\nec_logger \"ec_logger\" {{ mainlog = \"{}\" }}\nESMTP_Listener {{ Listen \"127.0.0.1:0\" {{ }} }}\n",
        dead_port(),
        log.display()
    );
    let mut d = Daemon::start(dir, &conf, 1);
    let id = queued(d.port(), "sender@origin.test", &["x@dest.test"], "offline");
    wait_records(&log, &id, |r| kinds(r).contains('T'));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).expect("the daemon stopped").success());
    let (code, list, err) = queue_cmd(&d.conf_path(), &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the daemon does not answer"), "{err}");
    assert!(
        list.contains(&id) && list.contains("sender@origin.test"),
        "{list}"
    );
    assert!(
        list.contains("refused") && list.contains("1 attempt(s)"),
        "{list}"
    );
    assert!(list.contains("x@dest.test"), "{list}");
    let (code, _, err) = queue_cmd(&d.conf_path(), &["retry"]);
    assert_eq!(code, 3, "{err}");
}

/// A message whose spool file was damaged while it waited (its content, too large to be held
/// in memory, is read back and fails its checksum) is not delivered, and its trouble is its
/// own: the domain's other mail, waiting behind it for the one connection allowed, is
/// delivered at once, not deferred with the damaged one's error.
#[test]
fn a_damaged_message_is_not_delivered_and_does_not_hold_back_the_others() {
    let port = dead_port();
    let dir = TempDir::new("q-damaged");
    let log = dir.path().join("mainlog.ec");
    let conf = format!(
        r#"Gateway = "127.0.0.1:{port}"
relay_hosts = ( "127.0.0.0/8" )
Retry_Interval = 3600
Max_Outbound_Connections = 1
ec_logger "ec_logger" {{ mainlog = "{}" }}
ESMTP_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
        log.display()
    );
    let d = Daemon::start(dir, &conf, 1);
    let spool = d.dir.path().join("spool");
    // Over the spool's 1 MiB memory threshold: delivery reads it back from its file.
    let (mut c, _) = Client::ehlo(d.port());
    assert_eq!(c.cmd("MAIL FROM:<sender@origin.test>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<x@dest.test>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    c.send_raw(content("damaged").as_bytes());
    let line = format!("{}\r\n", "y".repeat(998));
    for _ in 0..(3 << 19) / line.len() {
        c.send_raw(line.as_bytes());
    }
    c.send_raw(b".\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    let damaged = queue_id(&text);
    c.cmd("QUIT");
    let sound = queued(d.port(), "sender@origin.test", &["x@dest.test"], "sound");
    wait_records(&log, &damaged, |r| kinds(r).contains('T'));
    wait_records(&log, &sound, |r| kinds(r).contains('T'));
    // One byte of the large message's content changes on disk.
    let file = spool.join("queue").join(&damaged);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"yyyy")
        .expect("the content in the file");
    bytes[at + 2] = b'z';
    std::fs::write(&file, &bytes).unwrap();
    let up = Upstream::start_with(&[], &["--port", &port.to_string()]);
    let (code, out, err) = queue_cmd(&d.conf_path(), &["retry"]);
    assert_eq!(code, 0, "{out}{err}");
    let records = wait_records(&log, &sound, |r| kinds(r).contains('D'));
    assert_eq!(kinds(&records), "RTD", "held back: {records:?}");
    let records = wait_records(&log, &damaged, |r| kinds(r).matches('T').count() >= 2);
    assert!(
        records.last().unwrap().0[13].contains("spool"),
        "{records:?}"
    );
    assert_eq!(
        tags(&up.messages()),
        ["sound"],
        "the damaged message went out"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Signals.

/// SIGTERM: the listener closes at once; a delivery in flight to a slow next hop finishes
/// (and is not made again) and its connection ends with QUIT, though its `Idle_Timeout` would
/// keep it open past the stop's deadline; one the next hop never answers is cut at that
/// deadline and stays queued; the next start delivers it.
#[test]
fn sigterm_stops_accepting_lets_deliveries_finish_and_a_restart_delivers_the_rest() {
    let dir = TempDir::new("q-term");
    let reads = dir.path().join("slow-reads.jsonl");
    let slow = Upstream::start_with(
        &[],
        &[
            "--data-delay",
            "3",
            "--record-reads",
            reads.to_str().unwrap(),
        ],
    );
    let hang = Upstream::start_with(&[], &["--data-reply", "hang"]);
    let hang_port = hang.port;
    let spoolbase = dir.path().join("spool");
    let log = dir.path().join("mainlog.ec");
    let conf = format!(
        r#"Spoolbase = "{}"
relay_hosts = ( "127.0.0.0/8" )
Retry_Interval = 3600
Domain "slow.test" {{ Gateway = "127.0.0.1:{}" Idle_Timeout = 60 }}
Domain "hang.test" {{ Gateway = "127.0.0.1:{hang_port}" }}
ec_logger "ec_logger" {{ mainlog = "{}" }}
ESMTP_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
        spoolbase.display(),
        slow.port,
        log.display()
    );
    let mut d = Daemon::start(TempDir::new("q-term-1"), &conf, 1);
    let slow_id = queued(d.port(), "sender@origin.test", &["x@slow.test"], "slow");
    let hang_id = queued(d.port(), "sender@origin.test", &["y@hang.test"], "hang");
    // Both on their connections now.
    wait_for("both deliveries under way", || {
        let (_, list, _) = queue_cmd(&d.conf_path(), &["list"]);
        (list.contains(&format!("{slow_id}*")) && list.contains(&format!("{hang_id}*")))
            .then_some(())
    });
    assert!(
        slow.messages().is_empty(),
        "the slow one is still in flight"
    );
    d.signal(libc::SIGTERM);
    d.wait_log("SIGTERM: stopping");
    wait_for("the listener to close", || {
        TcpStream::connect(("127.0.0.1", d.port()))
            .is_err()
            .then_some(())
    });
    let status = d.wait_exit(WAIT).expect("the daemon stopped");
    assert!(status.success(), "{status}");
    assert_eq!(
        tags(&slow.messages()),
        ["slow"],
        "the delivery in flight finished"
    );
    let said = std::fs::read_to_string(&reads).unwrap();
    assert!(said.contains("QUIT"), "no QUIT after the delivery: {said}");
    assert_eq!(spooled(&spoolbase), BTreeSet::from([hang_id.clone()]));
    let records = mainlog(&log);
    assert!(records.iter().any(|r| r.kind() == "D" && r.id() == slow_id));
    assert!(
        !records
            .iter()
            .any(|r| r.0.len() > 4 && r.id() == hang_id && r.kind() != "R")
    );

    // The next hop answers again; the restart delivers what was left, and only that.
    drop(hang);
    let fixed = Upstream::start_with(&[], &["--port", &hang_port.to_string()]);
    let _d = Daemon::start(TempDir::new("q-term-2"), &conf, 1);
    assert_eq!(tags(&fixed.wait_messages(1)), ["hang"]);
    wait_spool_empty(&spoolbase);
    assert_eq!(slow.messages().len(), 1);
}

/// SIGHUP with a new Gateway for a Domain: mail queued for the old, dead route goes to the new
/// one at its next attempt (`queue retry` makes that now).
#[test]
fn sighup_with_a_new_gateway_applies_to_queued_mail() {
    let dead = dead_port();
    let live = Upstream::start(&[]);
    let dir = TempDir::new("q-hup");
    let spoolbase = dir.path().join("spool");
    let log = dir.path().join("mainlog.ec");
    let conf = |port: u16| {
        format!(
            r#"Spoolbase = "{}"
relay_hosts = ( "127.0.0.0/8" )
Retry_Interval = 3600
Domain "moved.test" {{ Gateway = "127.0.0.1:{port}" }}
ec_logger "ec_logger" {{ mainlog = "{}" }}
ESMTP_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
            spoolbase.display(),
            log.display()
        )
    };
    let d = Daemon::start(dir, &conf(dead), 1);
    let id = queued(d.port(), "sender@origin.test", &["x@moved.test"], "moved");
    wait_records(&log, &id, |r| kinds(r).contains('T'));
    std::fs::write(d.conf_path(), conf(live.port)).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("reconfigured");
    let (code, out, err) = queue_cmd(&d.conf_path(), &["retry"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(tags(&live.wait_messages(1)), ["moved"]);
    let records = wait_records(&log, &id, |r| kinds(r).contains('D'));
    assert_eq!(kinds(&records), "RTD");
    wait_spool_empty(&spoolbase);
}

/// SIGHUP while mail flows to a Domain's Gateway, with a new Gateway: a steady stream never
/// leaves the queue's connection to the old one idle long enough (`Idle_Timeout`) to close,
/// yet every message accepted after the reload goes to the new one.
#[test]
fn after_sighup_mail_that_keeps_flowing_leaves_the_old_gateway() {
    let old = Upstream::start(&[]);
    let new = Upstream::start(&[]);
    let dir = TempDir::new("q-hupflow");
    let spoolbase = dir.path().join("spool");
    let conf = |port: u16| {
        format!(
            r#"Spoolbase = "{}"
relay_hosts = ( "127.0.0.0/8" )
Domain "moved.test" {{ Gateway = "127.0.0.1:{port}" }}
ESMTP_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
            spoolbase.display()
        )
    };
    let d = Daemon::start(dir, &conf(old.port), 1);
    // One session per phase: a session begun on the old configuration is closed at its next
    // MAIL after a reload (Momentum's Reconfig_Message).
    let stream = |what: &str| {
        let (mut c, _) = Client::ehlo(d.port());
        for n in 0..8 {
            let (code, text) = transaction(
                &mut c,
                "sender@origin.test",
                &["x@moved.test"],
                &format!("{what}-{n}"),
            );
            assert_eq!(code, 250, "{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
        c.cmd("QUIT");
    };
    stream("before");
    old.wait_messages(8);
    std::fs::write(d.conf_path(), conf(new.port)).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("reconfigured");
    stream("after");
    let got = new.wait_messages(8);
    assert!(
        tags(&got).iter().all(|t| t.starts_with("after-")),
        "{:?}",
        tags(&got)
    );
    wait_spool_empty(&spoolbase);
    assert!(
        tags(&old.messages())
            .iter()
            .all(|t| t.starts_with("before-")),
        "{:?}",
        tags(&old.messages())
    );
    assert_eq!(new.messages().len(), 8);
}

// ---------------------------------------------------------------------------------------------
// 8. Connection limits.

/// A TCP relay in front of a next hop that counts the connections open through it at once. A
/// connection counts from its accept until the daemon's side reaches end of stream; when a new
/// one is accepted, the kernel is asked (MSG_PEEK) whether the others have already ended, so
/// that how fast this relay's threads notice does not matter.
struct CountingProxy {
    port: u16,
    max: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl CountingProxy {
    fn start(target: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let max = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (m, t) = (max.clone(), total.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                {
                    let mut open = open.lock().unwrap();
                    open.retain(|s| !at_eof(s));
                    open.push(client.try_clone().unwrap());
                    m.fetch_max(open.len(), Ordering::SeqCst);
                    t.fetch_add(1, Ordering::SeqCst);
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        CountingProxy { port, max, total }
    }
}

/// Whether the peer has closed its side (the next read would return end of stream).
fn at_eof(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a one-byte peek into a local buffer on a socket we hold.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

/// Copies `from` to `to` until end of stream, then passes the end on.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// `Max_Outbound_Connections = 1` in a Domain: while twenty messages flow to a slow next hop,
/// it never has more than one connection from us at a time (also not when
/// `Max_Deliveries_Per_Connection` makes us reconnect); another domain with a limit of 4,
/// under the same load, is seen using more than one, so the count can tell.
#[test]
fn max_outbound_connections_1_keeps_one_connection_at_a_time_while_twenty_messages_flow() {
    let up = Upstream::start_with(&[], &["--data-delay", "0.15"]);
    let one = CountingProxy::start(up.port);
    let four = CountingProxy::start(up.port);
    let dir = TempDir::new("q-limit");
    let conf = format!(
        r#"relay_hosts = ( "127.0.0.0/8" )
Domain "one.test" {{ Gateway = "127.0.0.1:{}" Max_Outbound_Connections = 1 Max_Deliveries_Per_Connection = 5 }}
Domain "four.test" {{ Gateway = "127.0.0.1:{}" Max_Outbound_Connections = 4 }}
ESMTP_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
        one.port, four.port
    );
    let d = Daemon::start(dir, &conf, 1);
    let port = d.port();
    let senders: Vec<_> = (0..4)
        .map(|n| {
            std::thread::spawn(move || {
                let (mut c, _) = Client::ehlo(port);
                for k in 0..5 {
                    for domain in ["one", "four"] {
                        let (code, text) = transaction(
                            &mut c,
                            "sender@origin.test",
                            &[&format!("r{n}@{domain}.test")],
                            &format!("{domain}-{n}-{k}"),
                        );
                        assert_eq!(code, 250, "{text}");
                    }
                }
                c.cmd("QUIT");
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let got = up.wait_messages(40);
    assert_eq!(got.len(), 40);
    wait_spool_empty(&d.dir.path().join("spool"));
    let (max1, total1) = (
        one.max.load(Ordering::SeqCst),
        one.total.load(Ordering::SeqCst),
    );
    let (max4, total4) = (
        four.max.load(Ordering::SeqCst),
        four.total.load(Ordering::SeqCst),
    );
    eprintln!(
        "one.test: at most {max1} of {total1} connections at once; four.test: {max4} of {total4}"
    );
    assert_eq!(max1, 1, "Max_Outbound_Connections = 1 exceeded");
    assert!(
        total1 >= 4,
        "20 messages, 5 per connection: {total1} connections"
    );
    assert!((2..=4).contains(&max4), "four.test: {max4} at once");
}

// ---------------------------------------------------------------------------------------------
// 9. The mainlog.

/// The mainlog file has Momentum's records, split at unescaped `@`: `R` (one per recipient,
/// fourteen fields, a quoted `@` in a local part escaped), `D` (twelve), `T` and `P`
/// (fourteen, with the stage, the retry count, the next hop's address and its reply), and the
/// heartbeat `M`.
#[test]
fn the_mainlog_has_r_d_t_and_p_records_in_momentums_field_layout() {
    let up = Upstream::start_with(
        &[],
        &[
            "--rcpt-reply",
            "refused@dest.test=550 5.1.1 no such user",
            "--rcpt-reply",
            "later@dest.test=451 4.3.0 try later",
        ],
    );
    let dir = TempDir::new("q-mainlog");
    let log = dir.path().join("mainlog.ec");
    let conf = format!(
        r#"Gateway = "127.0.0.1:{}"
relay_hosts = ( "127.0.0.0/8" )
Retry_Interval = 1
Max_Retries = 1
Generate_Bounces = false
ec_logger "ec_logger" {{ mainlog = "{}" heartbeat = 1 }}
ESMTP_Listener {{ Listen "127.0.0.1:0" {{ }} }}
"#,
        up.port,
        log.display()
    );
    let d = Daemon::start(dir, &conf, 1);
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let delivered = queued(
        d.port(),
        "info@origin.test",
        &["bob@dest.test", "\"odd@part\"@dest.test"],
        "layout-d",
    );
    let refused = queued(
        d.port(),
        "info@origin.test",
        &["refused@dest.test"],
        "layout-p",
    );
    let later = queued(
        d.port(),
        "info@origin.test",
        &["later@dest.test"],
        "layout-t",
    );

    let records = wait_records(&log, &delivered, |r| kinds(r).contains('D'));
    assert_eq!(kinds(&records), "RRD");
    for r in &records[..2] {
        assert_eq!(r.0.len(), 14, "{r:?}");
        let t: u64 = r.0[0].parse().unwrap();
        assert!(t >= started - 1, "{r:?}");
        assert_eq!(r.0[2], delivered, "the batch id is the message's own");
        assert!(!r.0[3].is_empty(), "the inbound connection id");
        assert_eq!(&r.0[7..10], ["info", "origin.test", "127.0.0.1"]);
        assert!(r.0[10].parse::<u64>().unwrap() > content("layout-d").len() as u64);
        assert_eq!(&r.0[11..], ["esmtp", "default", "default"]);
    }
    assert_eq!(&records[0].0[5..7], ["bob", "dest.test"]);
    assert_eq!(&records[1].0[5..7], ["\"odd@part\"", "dest.test"]);
    let dr = &records[2];
    assert_eq!(dr.0.len(), 12, "{dr:?}");
    assert_eq!(dr.0[5], "dest.test");
    assert_eq!(dr.0[6], records[0].0[10], "D gives the size R gave");
    assert_eq!(&dr.0[7..10], ["default", "default", "0"]);
    assert!(dr.0[10].parse::<f64>().unwrap() >= 0.0);
    assert_eq!(dr.0[11], "127.0.0.1");

    let records = wait_records(&log, &refused, |r| kinds(r).contains('P'));
    assert_eq!(kinds(&records), "RP");
    let p = &records[1];
    assert_eq!(p.0.len(), 14, "{p:?}");
    assert_eq!(&p.0[5..6], ["dest.test"]);
    assert_eq!(&p.0[7..9], ["default", "default"]);
    p.0[9].parse::<u8>().expect("a connection stage");
    assert_eq!(p.0[10], "0");
    assert_eq!(p.0[12], "127.0.0.1");
    assert_eq!(p.0[13], "550 5.1.1 no such user");

    let records = wait_records(&log, &later, |r| kinds(r).contains('P'));
    assert_eq!(kinds(&records), "RTP", "one retry, then given up");
    let (t, p) = (&records[1], &records[2]);
    assert_eq!(t.0.len(), 14, "{t:?}");
    assert_eq!((t.0[10].as_str(), t.0[12].as_str()), ("0", "127.0.0.1"));
    assert_eq!(t.0[13], "451 4.3.0 try later");
    assert_eq!(p.0[10], "1", "the P record counts the retry");
    assert!(p.0[13].starts_with("451 4.3.0 try later"), "{p:?}");

    wait_for("a heartbeat", || {
        mainlog(&log)
            .iter()
            .any(|r| r.0.len() == 5 && r.kind() == "M" && r.0[1..4].iter().all(String::is_empty))
            .then_some(())
    });
}
