//! Behind a load balancer: HAProxy (Debian's, started by the test) in front of two appliance
//! instances that take the PROXY protocol and share one PostgreSQL datasource. A binary of its
//! own, so the database-outage test never runs at the same time.

mod common;

use common::TempDir;
use common::daemon::{Client, Daemon, PSQL, Upstream, plain_response};
use common::haproxy::Haproxy;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn two_instances_behind_haproxy_share_a_postgresql_datasource() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        eprintln!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
        return;
    }
    let psql = |sql: &str| {
        Command::new("psql")
            .args(PSQL)
            .arg(sql)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !psql("SELECT 1") {
        eprintln!("SKIPPED: no PostgreSQL at 127.0.0.1:5432");
        return;
    }
    let up = Upstream::start(&[("alice", "pa")]);
    let table = format!("lb_{}", std::process::id());
    assert!(psql(&format!(
        "CREATE TABLE {table} (username VARCHAR(100), host VARCHAR(100));
         INSERT INTO {table} VALUES ('alice', '127.0.0.1:{}');",
        up.port
    )));
    // Only 127.0.0.5 may relay: an instance can tell it only from the PROXY header, since
    // HAProxy itself connects from 127.0.0.1.
    let conf = format!(
        r#"
Gateway = "127.0.0.1:{}"
relay_hosts = ( "127.0.0.5" )
smtp_auth_proxy {{ timeout = 10 ds_cache = "pg" query = "SELECT host FROM {table} WHERE username = :username" }}
Datasource "pg" {{ uri = ( "pgsql:host=127.0.0.1;port=5432;dbname=test;user=postgres" ) }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:0" {{ Proxy_Protocol = true }}
}}
"#,
        up.port
    );
    let a = Daemon::start(TempDir::new("lb-a"), &conf, 1);
    let b = Daemon::start(TempDir::new("lb-b"), &conf, 1);
    let haproxy = Haproxy::start(&[(a.port(), "send-proxy-v2"), (b.port(), "send-proxy")]);
    let front = haproxy.port;
    let session = |from: &str| {
        let mut c = Client::connect_from(from, front);
        assert_eq!(c.reply().0, 220);
        assert_eq!(c.cmd("EHLO me").0, 250);
        c
    };
    // Round robin over both instances: each sees the client's own address.
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(session("127.0.0.5").relay_code());
        codes.push(session("127.0.0.6").relay_code());
    }
    assert_eq!(codes, [250, 550].repeat(4));
    // Both instances served, and the addresses they logged are the clients' own (session
    // lines are written when sessions end, so wait for them).
    let served = |log: &str| log.contains("client=127.0.0.5:") || log.contains("client=127.0.0.6:");
    let start = Instant::now();
    while !(served(&a.log()) && served(&b.log())) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // AUTH through either instance: the upstream comes from the one shared database.
    for _ in 0..2 {
        let mut c = session("127.0.0.6");
        let (code, _) = c.cmd(&format!("AUTH PLAIN {}", plain_response("alice", "pa")));
        assert_eq!(code, 235);
    }
    psql(&format!("DROP TABLE {table}"));
}
