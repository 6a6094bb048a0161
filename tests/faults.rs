//! Faults that touch the machine's services, in a test binary of their own so that nothing
//! else runs while they do (cargo runs test binaries one after another).

mod common;

use common::TempDir;
use common::daemon::{Daemon, PSQL, Upstream, auth_plain};
use std::process::Command;
use std::time::{Duration, Instant};

fn psql(sql: &str) -> bool {
    Command::new("psql")
        .args(PSQL)
        .arg(sql)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cluster(action: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!(
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main {action}"
            ),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// PostgreSQL goes away and comes back: users with a cached answer keep logging in (stale),
/// others get 454, never 535; once the database is back, lookups work again.
#[test]
fn postgresql_outage_and_recovery() {
    let root = unsafe { libc::geteuid() } == 0;
    if !root
        || Command::new("pg_ctlcluster")
            .arg("--help")
            .output()
            .is_err()
    {
        eprintln!("SKIPPED: needs root and a local PostgreSQL cluster to stop and start");
        return;
    }
    if !psql("SELECT 1") {
        assert!(cluster("start"), "PostgreSQL would not start");
    }
    let up = Upstream::start(&[("alice", "pa"), ("bob", "pb")]);
    let table = format!("outage_{}", std::process::id());
    assert!(psql(&format!(
        "CREATE TABLE {table} (username VARCHAR(100), host VARCHAR(100));
         INSERT INTO {table} VALUES ('alice', '127.0.0.1:{0}'), ('bob', '127.0.0.1:{0}');",
        up.port
    )));
    let conf = format!(
        r#"
smtp_auth_proxy {{ timeout = 10 ds_cache = "pg" query = "SELECT host FROM {table} WHERE username = :username" }}
Datasource "pg" {{ uri = ( "pgsql:host=127.0.0.1;port=5432;dbname=test;user=postgres" ) cache_life = 1 }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:0" {{ }}
}}
"#
    );
    let d = Daemon::start_env(
        TempDir::new("pg-outage"),
        &conf,
        1,
        &[("SMTP_AUTH_PROXY_SYSLOG", "/nonexistent/log")],
    );
    assert_eq!(auth_plain(d.port(), "alice", "pa").0, 235);
    std::thread::sleep(Duration::from_millis(200));
    // One database connection now; the datasource may hold up to four (one per lookup thread,
    // each connecting on its first lookup), so after the outage up to three more are its own.
    let mut baseline = d.footprint();
    baseline.fds += 3;

    // Started again whatever happens below, for whatever runs after this test.
    struct StartAgain;
    impl Drop for StartAgain {
        fn drop(&mut self) {
            cluster("start");
        }
    }
    let _start_again = StartAgain;
    assert!(cluster("stop"), "PostgreSQL would not stop");
    std::thread::sleep(Duration::from_millis(1100));
    let during = (
        auth_plain(d.port(), "alice", "pa").0,
        auth_plain(d.port(), "bob", "pb").0,
    );
    assert!(cluster("start"), "PostgreSQL would not start again");
    // Back: the dropped connection is reopened on the next lookup.
    let start = Instant::now();
    let mut after = 0;
    while start.elapsed() < Duration::from_secs(20) {
        after = auth_plain(d.port(), "bob", "pb").0;
        if after == 235 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    psql(&format!("DROP TABLE {table}"));
    assert_eq!(
        during,
        (235, 454),
        "stale answer for alice, 454 for bob\n{}",
        d.log()
    );
    assert_eq!(after, 235, "{}", d.log());
    assert!(d.log().contains("(stale)"));
    // Dead database connections were replaced, not kept beside their replacements.
    d.assert_back_to(&baseline, "PostgreSQL outage");
}
