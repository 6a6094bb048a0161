//! Parse throughput: `cargo bench --bench parse`.
//!
//! Generates a large configuration in the shapes real files use (listeners with Peers, lists of
//! CIDRs, dictionaries, multi-line strings, comments, many module scopes) and prints MB/s for
//! the parser alone and for the whole load (parse + merge), best of several rounds.

use smtp_auth_proxy::config::{FileId, LoadOptions, load_str, parse};
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn generate(target_bytes: usize) -> String {
    let mut s = String::with_capacity(target_bytes + 4096);
    let mut i = 0u32;
    while s.len() < target_bytes {
        let _ = write!(
            s,
            r#"# block {i}: a listener with peers
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH LOGIN" "AUTH PLAIN" STARTTLS ENHANCEDSTATUSCODES )
  AuthLoginParameters = [
    uri = "smtp_auth_proxy://"
    log_authentication = "true"
  ]
  Listen "10.{a}.{b}.1:25" {{
    Idle_Time = 300 /* five minutes */
    Peer "10.{a}.{b}.0/24" {{ relay_hosts = ( 10.{a}.{b}.0/24, 192.0.2.{c}, fd82:7796:815b:af9d::{c} ) }}
  }}
}}
Datasource "ds{i}" {{
  uri = ( "pgsql:host=db{i}.example.com;dbname=auth;user=ec;password=secret" )
  cache_size = 1000 cache_life = 3600
}}
scriptlet "scriptlet" {{ script "s{i}" {{ source = "lua/policy_{i}" }} }}
domain "example{i}.com" {{ routes = ( "smtp://mx{i}.example.com:587?pref=10" ) }}
smtp_auth_proxy {{
  query = "SELECT host FROM auth_servers
           WHERE username = :username AND domain = :domain"
}}
"#,
            a = i % 250,
            b = (i / 250) % 250,
            c = i % 250 + 1,
        );
        i += 1;
    }
    s
}

/// Best time of `rounds` calls; the result is dropped outside the timed region, since freeing a
/// tree is not part of reading one.
fn best_of<T>(rounds: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let out = black_box(f());
            let elapsed = t.elapsed();
            drop(out);
            elapsed
        })
        .min()
        .unwrap()
}

fn main() {
    let text = generate(32 << 20);
    let mb = text.len() as f64 / 1e6;
    let opts = LoadOptions {
        search_path: Vec::new(),
        ..LoadOptions::default()
    };
    let parse_only = best_of(5, || parse::parse(black_box(&text), FileId(0)).unwrap());
    let full = best_of(5, || load_str("bench.conf", black_box(&text), &opts));
    assert!(
        !load_str("bench.conf", &text, &opts)
            .diagnostics
            .has_errors()
    );
    println!(
        "config size:            {mb:.1} MB ({} lines)",
        text.lines().count()
    );
    println!(
        "parse:                  {:.0} MB/s ({:.1} ms)",
        mb / parse_only.as_secs_f64(),
        parse_only.as_secs_f64() * 1e3
    );
    println!(
        "load (parse + merge):   {:.0} MB/s ({:.1} ms)",
        mb / full.as_secs_f64(),
        full.as_secs_f64() * 1e3
    );
}
