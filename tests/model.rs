//! The typed model: values, fallback, cross-references and warnings.

mod common;

use common::{TempDir, build, opts};
use smtp_auth_proxy::config;
use smtp_auth_proxy::model;
use smtp_auth_proxy::model::addr::{HostPort, ListenAddr};
use smtp_auth_proxy::model::datasource::DatasourceUri;
use smtp_auth_proxy::model::listener::{
    AuthBackend, Effective, InjectionPolicy, Mechanism, PeerRef, TlsVersions,
};
use smtp_auth_proxy::model::routing::OutboundXclient;
use std::net::IpAddr;
use std::time::Duration;

fn errors(msgs: &[String]) -> Vec<&String> {
    msgs.iter().filter(|m| m.contains(": error: ")).collect()
}

fn has(msgs: &[String], needle: &str) -> bool {
    msgs.iter().any(|m| m.contains(needle))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A minimal valid configuration to extend in tests.
const BASE: &str = r#"
smtp_auth_proxy { host = "127.0.0.1:2525" }
ESMTP_Listener {
  SMTP_Extensions = ( "AUTH LOGIN" )
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:25" { }
}
"#;

#[test]
fn vendor_smtp_auth_proxy_example_reads_verbatim() {
    let text = r#"
smtp_auth_proxy {
  # Host for forwarding the SMTP AUTH request.
  host = some.smtp.server
  port = 25
  timeout = 60

  # Optionally query a database to look up the SMTP server
  # for auth for a particular user.
  ds_cache = smtp_auth_proxy
  query = "SELECT host FROM auth_servers WHERE username = :username, localpart = :localpart, domain = :domain;"
}

Esmtp_Listener {
  SMTP_Extensions = ("AUTH LOGIN" XREMOTEIP XDUMPCONTEXT XCLIENT XSETCONTEXT)

  AuthLoginParameters = [
      log_authentication = "true"
      uri = "smtp_auth_proxy://"
  ]

  Listen ":25" {}
}
"#;
    let (c, msgs) = build(text);
    let p = c.auth_proxy.as_ref().unwrap();
    assert_eq!(
        p.hosts[0].value,
        HostPort {
            host: "some.smtp.server".into(),
            port: 25
        }
    );
    assert_eq!(p.timeout, Duration::from_secs(60));
    assert_eq!(p.ds_cache.as_ref().unwrap().value, "smtp_auth_proxy");
    assert_eq!(
        p.query.as_ref().unwrap().value.sql,
        "SELECT host FROM auth_servers WHERE username = ?, localpart = ?, domain = ?;",
        "SQL passed through as written, parameters rewritten"
    );
    let l = c.esmtp_listener.as_ref().unwrap();
    let ext = l.settings.smtp_extensions.as_ref().unwrap();
    assert_eq!(ext.auth, [Mechanism::Login]);
    assert!(ext.xremoteip && ext.xdumpcontext && ext.xclient && ext.xsetcontext && !ext.starttls);
    let auth = l.settings.auth_login.as_ref().unwrap();
    assert_eq!(auth.backend.value, AuthBackend::SmtpAuthProxy);
    assert!(auth.log_authentication);
    assert_eq!(
        l.listens[0].address.value,
        ListenAddr::Any {
            port: 25,
            ipv6_only: false
        }
    );
    // What --check-config must say about it: the missing Datasource, and the two dangers.
    assert_eq!(errors(&msgs).len(), 1, "{msgs:#?}");
    assert!(has(
        &msgs,
        "test.conf:10:14: error: ds_cache `smtp_auth_proxy` names no Datasource"
    ));
    assert!(has(
        &msgs,
        "test.conf:15:21: warning: DANGER: AUTH LOGIN is offered to Listen \"*:25\""
    ));
    assert!(has(
        &msgs,
        "DANGER: XCLIENT, XREMOTEIP, XSETCONTEXT are offered to every client"
    ));
}

#[test]
fn auth_tokens_merge_into_one_list() {
    let (c, _) = build(
        r#"ESMTP_Listener { SMTP_Extensions = ( "AUTH LOGIN" "AUTH PLAIN" "auth cram-md5" "AUTH LOGIN" ENHANCEDSTATUSCODES PIPELINING "8BITMIME" ) Listen ":25" {} }"#,
    );
    let ext = c
        .esmtp_listener
        .unwrap()
        .settings
        .smtp_extensions
        .unwrap()
        .value;
    assert_eq!(
        ext.auth,
        [Mechanism::Login, Mechanism::Plain, Mechanism::CramMd5]
    );
    assert!(ext.enhanced_status_codes);
}

#[test]
fn unimplemented_extensions_and_mechanisms_are_reported_not_advertised() {
    let (c, msgs) = build(
        r#"ESMTP_Listener { SMTP_Extensions = ( "AUTH DIGEST-MD5 LOGIN" CHUNKING ) Listen ":25" {} }"#,
    );
    let ext = c
        .esmtp_listener
        .unwrap()
        .settings
        .smtp_extensions
        .unwrap()
        .value;
    assert_eq!(ext.auth, [Mechanism::Login]);
    assert!(has(&msgs, "AUTH mechanism `DIGEST-MD5` is not implemented"));
    assert!(has(&msgs, "SMTP extension `CHUNKING` is not implemented"));
    let (_, msgs) = build(r#"ESMTP_Listener { SMTP_Extensions = ( "AUTH" ) Listen ":25" {} }"#);
    assert!(has(
        &msgs,
        "test.conf:1:38: error: `AUTH` needs a mechanism"
    ));
}

#[test]
fn fallback_listen_peer_listen_listener_peer_listener_global() {
    let (c, _) = build(
        r#"
relay_hosts = ( 192.0.2.0/24 )
Require_EHLO = yes
Gateway = "10.9.9.9:25"
ESMTP_Listener {
  Idle_Time = 100
  Max_Message_Size = 1000
  Peer "10.0.0.0/8" { Idle_Time = 200 Max_Message_Size = 2000 Banner_Hostname = "peer8" }
  Peer "10.1.0.0/16" { Idle_Time = 250 }
  Listen ":25" {
    Idle_Time = 300
    Peer "10.1.2.3" { Idle_Time = 400 }
  }
  Listen ":26" { relay_hosts = ( 10.0.0.0/8 ) }
}
"#,
    );
    let l = c.esmtp_listener.as_ref().unwrap();
    let l25 = &l.listens[0];
    let at = |listen, client: Option<&str>| Effective::new(&c.global, l, listen, client.map(ip));
    assert_eq!(
        at(l25, Some("10.1.2.3")).idle_time().unwrap().as_secs(),
        400,
        "Listen-level Peer first"
    );
    assert_eq!(
        at(l25, Some("10.1.2.4")).idle_time().unwrap().as_secs(),
        300,
        "then the Listen"
    );
    assert_eq!(at(l25, None).idle_time().unwrap().as_secs(), 300);
    assert_eq!(
        at(l25, Some("10.1.2.3")).max_message_size(),
        Some(2000),
        "then listener Peers"
    );
    assert_eq!(
        at(l25, Some("10.1.2.3")).banner_hostname(),
        Some("peer8"),
        "less specific Peer fills in"
    );
    assert_eq!(
        at(l25, Some("192.0.2.1")).max_message_size(),
        Some(1000),
        "then the listener"
    );
    let l26 = &l.listens[1];
    assert_eq!(
        at(l26, Some("10.1.9.9")).idle_time().unwrap().as_secs(),
        250,
        "most specific listener Peer"
    );
    assert_eq!(
        at(l26, Some("10.200.0.1")).idle_time().unwrap().as_secs(),
        200
    );
    assert!(at(l25, None).require_ehlo(), "global");
    // relay_hosts: a listener value replaces the global list, it does not add to it.
    let r25 = at(l25, None).relay_hosts().unwrap();
    assert!(r25.value.iter().any(|c| c.contains(ip("192.0.2.9"))));
    let r26 = at(l26, None).relay_hosts().unwrap();
    assert!(
        !r26.value.iter().any(|c| c.contains(ip("192.0.2.9")))
            && r26.value[0].contains(ip("10.3.3.3"))
    );
    assert_eq!(at(l26, None).idle_time().unwrap().as_secs(), 100);
}

#[test]
fn values_are_validated_where_written() {
    let cases = [
        (
            "relay_hosts = ( 10.0.0.0/8 mail.example.com )",
            "test.conf:1:28: error: `relay_hosts` takes IP addresses and CIDR blocks, not host names (`mail.example.com`)",
        ),
        (
            "relay_hosts = ( 10.0.0.300 )",
            "test.conf:1:17: error: `10.0.0.300` is not an IP address or CIDR block",
        ),
        (
            "ESMTP_Listener { Open_Relay = maybe }",
            "test.conf:1:31: error: `Open_Relay` takes a boolean",
        ),
        (
            "ESMTP_Listener { Listener_Sessions = 0 }",
            "test.conf:1:38: error: `Listener_Sessions` must be between 1 and",
        ),
        (
            "ESMTP_Listener { Idle_Time = soon }",
            "test.conf:1:30: error: `Idle_Time` takes a whole number, found `soon`",
        ),
        (
            "ESMTP_Listener { Listen \"mail:25\" {} }",
            "test.conf:1:18: error: Listen \"mail:25\": `mail` is not an IP address",
        ),
        (
            "ESMTP_Listener { Listen \"::1:25\" {} }",
            "test.conf:1:18: error: Listen \"::1:25\": an IPv6 address in Listen must be in brackets",
        ),
        (
            "ESMTP_Listener { Peer \"10.0.0.0/40\" {} }",
            "test.conf:1:18: error: Peer `10.0.0.0/40` is not an IP address or CIDR block",
        ),
        (
            "ESMTP_Listener { Starttls_Injection_Policy = drop }",
            "test.conf:1:46: error: `Starttls_Injection_Policy` takes one of allow, ignore, reject",
        ),
        (
            "ESMTP_Listener { TLS_Protocols = \"-ALL:+TLSv1.1\" }",
            "test.conf:1:34: error: `TLS_Protocols` leaves no TLS version",
        ),
        (
            "ESMTP_Listener { AuthLoginParameters = \"smtp_auth_proxy://\" }",
            "test.conf:1:40: error: `AuthLoginParameters` takes a dictionary",
        ),
        (
            "ESMTP_Listener { AuthLoginParameters = [ log_authentication = true ] }",
            "test.conf:1:40: error: `AuthLoginParameters` needs a `uri`",
        ),
        (
            "smtp_auth_proxy { host = ( a.example:25 \"bad host\" ) }",
            "test.conf:1:41: error: smtp_auth_proxy host: `bad host` is not a host name",
        ),
        (
            "smtp_auth_proxy { port = 70000 }",
            "test.conf:1:26: error: `port` must be between 1 and 65535",
        ),
        (
            "Gateway = \"#spe_relay\"",
            "test.conf:1:11: error: `Gateway = \"#spe_relay\"` names a Domain's routes",
        ),
        (
            "XCLIENT = sometimes",
            "test.conf:1:11: error: `XCLIENT` takes one of no, ifavailable, required",
        ),
        (
            "Datasource \"d\" { uri = ( \"pgsql:host=x;oops\" ) }",
            "test.conf:1:26: error: `oops` in datasource uri is not `key=value`",
        ),
    ];
    for (text, want) in cases {
        let (_, msgs) = build(text);
        assert!(
            msgs.iter().any(|m| m.starts_with(want)),
            "\ninput: {text}\n want: {want}\n  got: {msgs:#?}"
        );
    }
}

#[test]
fn booleans_in_every_spelling() {
    for (word, want) in [
        ("true", true),
        ("\"yes\"", true),
        ("On", true),
        ("enabled", true),
        ("1", true),
        ("false", false),
        ("NO", false),
        ("off", false),
        ("disabled", false),
        ("\"0\"", false),
    ] {
        let (c, _) = build(&format!("ESMTP_Listener {{ open_relay = {word} }}"));
        assert_eq!(
            c.esmtp_listener.unwrap().settings.open_relay.unwrap().value,
            want,
            "{word}"
        );
    }
}

#[test]
fn host_bits_and_listen_duplicates() {
    let (c, msgs) = build(
        "relay_hosts = ( 10.0.0.1/8 ) ESMTP_Listener { Listen \":25\" {} Listen \"*:25\" {} }",
    );
    assert_eq!(
        c.global.relay_hosts.unwrap().value[0].to_string(),
        "10.0.0.0/8"
    );
    assert!(has(
        &msgs,
        "warning: `10.0.0.1/8` has host bits set; read as `10.0.0.0/8`"
    ));
    assert!(
        has(
            &msgs,
            "test.conf:1:63: error: Listen `*:25` is the same address as the Listen at test.conf:1:47"
        ),
        "{msgs:#?}"
    );
}

#[test]
fn cross_references_are_checked() {
    let dir = TempDir::new("xref");
    let cases: &[(&str, &str)] = &[
        (
            "ESMTP_Listener { SMTP_Extensions = ( STARTTLS ) Listen \":25\" {} }",
            "error: STARTTLS is advertised to Listen \"*:25\" (clients matching no Peer) but TLS_Certificate and TLS_Key are not both set",
        ),
        (
            "ESMTP_Listener { Use_SSL = true Listen \":465\" {} }",
            "error: Use_SSL is on for Listen \"*:465\"",
        ),
        (
            "ESMTP_Listener { SMTP_Extensions = ( \"AUTH PLAIN\" ) Listen \":25\" {} }",
            "error: AUTH PLAIN is advertised to Listen \"*:25\" (clients matching no Peer) but no AuthPlainParameters names its back end",
        ),
        (
            "ESMTP_Listener { SMTP_Extensions = ( \"AUTH LOGIN\" ) AuthLoginParameters = [ uri = \"smtp_auth_proxy://\" ] Listen \":25\" {} }",
            "error: `smtp_auth_proxy://` is used but no `smtp_auth_proxy { }` scope configures it",
        ),
        (
            "ESMTP_Listener { AuthLoginParameters = [ uri = \"radius://\" ] Listen \":25\" {} }",
            "error: authentication back end `radius` is not implemented",
        ),
        (
            "ESMTP_Listener { AuthLoginParameters = [ uri = \"file:///nonexistent/passwd\" ] Listen \":25\" {} }",
            "error: cannot read password file /nonexistent/passwd",
        ),
        (
            "smtp_auth_proxy { }",
            "error: smtp_auth_proxy needs `host`, `ds_cache` with `query`, or both",
        ),
        (
            "smtp_auth_proxy { ds_cache = users } Datasource \"users\" { uri = ( \"ldap://x\" ) }",
            "error: ds_cache is set but smtp_auth_proxy has no `query` to run",
        ),
        (
            "smtp_auth_proxy { ds_cache = users query = \"q\" } Datasource \"users\" { uri = ( \"ldap://x\" ) }",
            "error: datasource driver `ldap:` is not implemented",
        ),
        (
            "ESMTP_Listener { TLS_Certificate = \"missing.pem\" TLS_Key = \"missing.key\" Listen \":25\" {} }",
            "missing.pem: No such file",
        ),
        (
            "",
            "error: no `ESMTP_Listener` scope: there is nothing to serve",
        ),
        (
            "ESMTP_Listener { Enable = false Listen \":25\" {} }",
            "error: ESMTP_Listener has no enabled `Listen` scope",
        ),
    ];
    for (text, want) in cases {
        let (_, msgs) = build(text);
        assert!(
            has(&msgs, want),
            "\ninput: {text}\n want: {want}\n  got: {msgs:#?}"
        );
    }
    // A certificate that is there but is not PEM is caught too.
    let cert = dir.write("c.pem", "not a certificate\n");
    let (_, msgs) = build(&format!(
        "ESMTP_Listener {{ TLS_Certificate = \"{}\" Listen \":25\" {{}} }}",
        cert.display()
    ));
    assert!(
        has(&msgs, "is not PEM: no `-----BEGIN CERTIFICATE-----` line"),
        "{msgs:#?}"
    );
}

#[test]
fn a_clean_configuration_has_no_errors_and_no_warnings() {
    let dir = TempDir::new("clean");
    let cert = dir.write(
        "tls/cert.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    );
    let key = dir.write(
        "tls/key.pem",
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    );
    let main = dir.write(
        "ecelerity.conf",
        r#"
Gateway = "[2001:db8::25]:2525"
XCLIENT = ifavailable
relay_domains = ( example.com *.example.net )
smtp_auth_proxy {
  host = ( "mx1.example.com:587" "[2001:db8::1]" )
  port = 2525
  timeout = 20
  tls = required
  tls_verify = host
  tls_ca = "tls/cert.pem"
  ds_cache = "upstreams"
  query = "SELECT host FROM auth_servers WHERE username = :username"
}
Datasource "upstreams" {
  uri = ( "sqlite:upstreams.sqlite" "odbc:DSN=users" "mysql:host=db;port=3306;dbname=a;user=u;password=p" )
  cache_size = 50
  cache_life = 60
  max_rows = -1
}
ESMTP_Listener {
  SMTP_Extensions = ( "AUTH LOGIN" "AUTH PLAIN" STARTTLS ENHANCEDSTATUSCODES )
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" log_authentication = "true" ]
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  TLS_Certificate = "tls/cert.pem"
  TLS_Key = "tls/key.pem"
  TLS_Protocols = "+ALL:-SSLv3:-TLSv1:-TLSv1.1"
  Starttls_Injection_Policy = ignore
  Listen "[::1]:2525" {
    Peer "10.0.0.0/8" { SMTP_Extensions = ( XCLIENT "AUTH LOGIN" STARTTLS ) relay_hosts = ( 10.0.0.0/8 ) }
  }
  Listen "/run/smtp-auth-proxy.sock" { }
}
Security { user = "smtp-auth-proxy" group = "smtp-auth-proxy" }
"#,
    );
    let loaded = config::load(&main, &opts());
    let (c, diags) = model::build(&loaded.root, &loaded.sources);
    let msgs: Vec<String> = diags
        .0
        .iter()
        .map(|d| d.render(&loaded.sources, false))
        .collect();
    assert!(msgs.is_empty(), "{msgs:#?}");
    let l = c.esmtp_listener.as_ref().unwrap();
    assert_eq!(
        l.settings.tls_certificate.as_ref().unwrap().value,
        cert,
        "relative to the file"
    );
    assert_eq!(l.settings.tls_key.as_ref().unwrap().value, key);
    assert_eq!(
        l.settings.tls_protocols.as_ref().unwrap().value,
        TlsVersions {
            tls12: true,
            tls13: true
        }
    );
    assert_eq!(
        l.settings.starttls_injection_policy.as_ref().unwrap().value,
        InjectionPolicy::Ignore
    );
    assert_eq!(
        l.listens[1].address.value,
        ListenAddr::Unix("/run/smtp-auth-proxy.sock".into())
    );
    let p = c.auth_proxy.as_ref().unwrap();
    let hosts: Vec<String> = p.hosts.iter().map(|h| h.value.to_string()).collect();
    assert_eq!(
        hosts,
        ["mx1.example.com:587", "[2001:db8::1]:2525"],
        "port fills in hosts without one"
    );
    let ds = c.datasource("upstreams").unwrap();
    assert_eq!(
        ds.uris[0].value,
        DatasourceUri::Sqlite(dir.path().join("upstreams.sqlite"))
    );
    assert_eq!(ds.uris[1].value, DatasourceUri::Odbc("DSN=users".into()));
    assert!(
        matches!(&ds.uris[2].value, DatasourceUri::Mysql(kv) if kv.contains(&("dbname".into(), "a".into())))
    );
    assert_eq!(
        (ds.cache_size, ds.cache_life, ds.max_rows),
        (50, Duration::from_secs(60), None)
    );
    assert_eq!(
        c.routing.gateway.as_ref().unwrap().value.to_string(),
        "[2001:db8::25]:2525"
    );
    assert_eq!(c.routing.xclient, OutboundXclient::IfAvailable);
    assert!(c.relay_domains.as_ref().unwrap().value[1].matches("mail.example.net"));
    assert_eq!(
        c.security.as_ref().unwrap().user.as_ref().unwrap().value,
        "smtp-auth-proxy"
    );
}

#[test]
fn x_extensions_in_a_peer_are_not_a_danger_but_in_a_catch_all_peer_they_are() {
    let base = BASE.replace(
        "Listen \"127.0.0.1:25\" { }",
        "Listen \"127.0.0.1:25\" { Peer \"PEER\" { SMTP_Extensions = ( XCLIENT XREMOTEIP ) } }",
    );
    let (_, msgs) = build(&base.replace("PEER", "10.0.0.5"));
    assert!(!has(&msgs, "XCLIENT"), "{msgs:#?}");
    let (_, msgs) = build(&base.replace("PEER", "0.0.0.0/0"));
    assert!(
        has(
            &msgs,
            "DANGER: XCLIENT, XREMOTEIP are offered to every client of Listen \"127.0.0.1:25\" (Peer \"0.0.0.0/0\")"
        ),
        "{msgs:#?}"
    );
}

#[test]
fn cleartext_auth_warning_follows_tls() {
    let (_, msgs) = build(BASE);
    assert!(has(
        &msgs,
        "DANGER: AUTH LOGIN is offered to Listen \"127.0.0.1:25\" (clients matching no Peer) with no TLS"
    ));
    let (_, msgs) = build(
        &BASE
            .replace("( \"AUTH LOGIN\" )", "( \"AUTH CRAM-MD5\" )")
            .replace("AuthLogin", "AuthCramMD5"),
    );
    assert!(
        !has(&msgs, "DANGER"),
        "CRAM-MD5 sends no password: {msgs:#?}"
    );
    let (_, msgs) = build(&BASE.replace("127.0.0.1:25", "/tmp/sap.sock"));
    assert!(
        !has(&msgs, "DANGER"),
        "a Unix socket does not cross the network: {msgs:#?}"
    );
}

#[test]
fn typos_are_errors_valid_momentum_names_are_warnings() {
    let (_, msgs) = build(&BASE.replace("Listen \"127.0.0.1:25\" { }", "Listen \"127.0.0.1:25\" { SMTP_Extentions = ( STARTTLS ) enabled = true TLS_Verify_Mode = require Frobnicate = 1 }"));
    assert!(
        has(
            &msgs,
            "error: unknown option `SMTP_Extentions` in Listen; did you mean `smtp_extensions`?"
        ),
        "{msgs:#?}"
    );
    assert!(has(
        &msgs,
        "error: listeners are switched with `Enable`, not `enabled`"
    ));
    assert!(has(
        &msgs,
        "warning: option `TLS_Verify_Mode` is not implemented by smtp-auth-proxy; ignored"
    ));
    assert!(has(
        &msgs,
        "warning: option `Frobnicate` in Listen is unknown to smtp-auth-proxy; ignored"
    ));
    let (_, msgs) = build(&format!(
        "{BASE}\nESMTP_Listner {{ }}\nscriptlet \"s\" {{ script \"a\" {{ source = \"x\" }} }}\nsmtp_auth_proxy {{ Gateway = x }}"
    ));
    assert!(
        has(
            &msgs,
            "error: unknown scope `ESMTP_Listner` in the global scope; did you mean `esmtp_listener`?"
        ),
        "{msgs:#?}"
    );
    assert!(has(
        &msgs,
        "warning: scope `scriptlet \"s\"` (1 option) is not implemented by smtp-auth-proxy; ignored"
    ));
    assert!(has(
        &msgs,
        "warning: `Gateway` is read in the global scope, not in smtp_auth_proxy; ignored here"
    ));
}

#[test]
fn options_valid_only_in_some_listener_scopes() {
    let (_, msgs) = build(&BASE.replace(
        "Listen \"127.0.0.1:25\" { }",
        "Listen \"127.0.0.1:25\" { Peer \"10.0.0.1\" { Enable = false Proxy_Protocol = true } }",
    ));
    assert!(
        has(
            &msgs,
            "warning: `Proxy_Protocol` is not read in Peer; ignored here"
        ),
        "{msgs:#?}"
    );
    assert!(has(
        &msgs,
        "warning: `Enable` is not read in Peer; ignored here"
    ));
    let (_, msgs) = build(&format!("Idle_Time = 5\n{BASE}"));
    assert!(
        has(
            &msgs,
            "test.conf:1:1: warning: `Idle_Time` is not read in the global scope"
        ),
        "{msgs:#?}"
    );
}

#[test]
fn mail_goes_by_mx_without_a_gateway_and_a_cram_md5_upstream_needs_a_host() {
    let dir = TempDir::new("nohop");
    let users = dir.write("users", "u:p\n");
    let (_, msgs) = build(&format!(
        r#"
relay_domains = ( example.com )
relay_hosts = ( 127.0.0.1 )
smtp_auth_proxy {{ ds_cache = "u" query = "SELECT h FROM t WHERE u = :username" }}
Datasource "u" {{ uri = ( "sqlite:/nonexistent/u.sqlite" ) }}
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" "AUTH CRAM-MD5" )
  AuthPlainParameters = [ uri = "file://{}" ]
  AuthCramMD5Parameters = [ uri = "smtp_auth_proxy://" ]
  Listen "127.0.0.1:25" {{ }}
}}
"#,
        users.display()
    ));
    // Without Gateway or Routes, relayed mail goes by MX, as Momentum's: no error for that.
    // A relay domain with no route of its own would loop back here by MX: a warning.
    assert_eq!(
        errors(&msgs),
        [
            "test.conf:9:35: error: AUTH CRAM-MD5 for Listen \"127.0.0.1:25\" (clients matching no Peer) goes to `smtp_auth_proxy://`, which needs `host` for it: the challenge is sent before the user name is known, so the per-user lookup cannot pick the upstream"
        ],
        "{msgs:#?}"
    );
    assert!(
        has(
            &msgs,
            "warning: relay_domains accepts mail for `example.com`, which has no route of its own"
        ),
        "{msgs:#?}"
    );
    // With a route for it, none of that.
    let (_, msgs) = build(&format!(
        r#"
Domain "example.com" {{ Gateway = "127.0.0.1:26" }}
relay_domains = ( example.com )
ESMTP_Listener {{
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "file://{}" ]
  Listen "127.0.0.1:25" {{ }}
}}
"#,
        users.display()
    ));
    assert!(errors(&msgs).is_empty(), "{msgs:#?}");
    assert!(!has(&msgs, "no route of its own"), "{msgs:#?}");
}

#[test]
fn tls_ciphers_map_to_what_rustls_offers() {
    let (c, msgs) = build(
        r#"ESMTP_Listener {
  TLS_Ciphers = "ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA:!aNULL"
  Listen ":25" { }
  Listen ":26" { TLS_Ciphers = "HIGH:!MD5" }
}"#,
    );
    let l = c.esmtp_listener.unwrap();
    assert_eq!(
        l.settings.tls_ciphers.unwrap().value.suites,
        Some(vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"])
    );
    assert_eq!(
        l.listens[1]
            .settings
            .tls_ciphers
            .as_ref()
            .unwrap()
            .value
            .suites,
        None
    );
    assert!(
        has(
            &msgs,
            "warning: `TLS_Ciphers`: AES128-SHA cannot be offered"
        ),
        "{msgs:#?}"
    );
}

#[test]
fn proxy_protocol_timeout_is_read_where_proxy_protocol_is() {
    // The 4.x reference page's example, verbatim.
    let (c, msgs) = build(
        r#"
smtp_auth_proxy { host = "127.0.0.1:2525" }
ESMTP_Listener {
  SMTP_Extensions = ( "AUTH LOGIN" )
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" ]
  Listen "10.0.0.5:25" {
    Proxy_Protocol = true
    Proxy_Protocol_Timeout = 10
  }
}
"#,
    );
    assert!(!has(&msgs, "Proxy_Protocol"), "{msgs:#?}");
    let l = c.esmtp_listener.as_ref().unwrap();
    assert!(l.proxy_protocol(&l.listens[0]));
    assert_eq!(
        l.proxy_protocol_timeout(&l.listens[0]),
        Some(Duration::from_secs(10))
    );
    // Set on the listener, for every Listen; 0 turns it off; unset it is Momentum's 60 s; where
    // no PROXY header is read it has no effect, and the check says so.
    let (c, msgs) = build(&BASE.replace(
        "Listen \"127.0.0.1:25\" { }",
        r#"Proxy_Protocol = true
  Proxy_Protocol_Timeout = 0
  Listen "127.0.0.1:25" { }
  Listen "127.0.0.1:26" { Proxy_Protocol_Timeout = 5 }
  Listen "127.0.0.1:27" { Proxy_Protocol = false Proxy_Protocol_Timeout = 5 }"#,
    ));
    let l = c.esmtp_listener.as_ref().unwrap();
    assert!(l.proxy_protocol(&l.listens[0]));
    assert_eq!(l.proxy_protocol_timeout(&l.listens[0]), None);
    assert_eq!(
        l.proxy_protocol_timeout(&l.listens[1]),
        Some(Duration::from_secs(5))
    );
    assert!(!l.proxy_protocol(&l.listens[2]));
    assert!(
        has(
            &msgs,
            "warning: `Proxy_Protocol_Timeout = 0` turns the timeout off"
        ),
        "{msgs:#?}"
    );
    assert!(
        has(
            &msgs,
            "warning: `Proxy_Protocol_Timeout` has no effect: Listen \"127.0.0.1:27\" reads no PROXY header"
        ),
        "{msgs:#?}"
    );
    let (c, _) = build(&BASE.replace(
        "Listen \"127.0.0.1:25\" { }",
        "Listen \"127.0.0.1:25\" { Proxy_Protocol = true }",
    ));
    let l = c.esmtp_listener.as_ref().unwrap();
    assert_eq!(
        l.proxy_protocol_timeout(&l.listens[0]),
        Some(Duration::from_secs(60))
    );
    let (_, msgs) = build(&BASE.replace(
        "Listen \"127.0.0.1:25\" { }",
        "Proxy_Protocol_Timeout = x Listen \"127.0.0.1:25\" { }",
    ));
    assert!(has(&msgs, "`Proxy_Protocol_Timeout`"), "{msgs:#?}");
}

#[test]
fn listener_sessions_in_a_peer_is_that_peers_own_budget() {
    // The 4.x reference page's example, verbatim (with what this server needs around it).
    let (c, msgs) = build(
        r#"
smtp_auth_proxy { host = "127.0.0.1:2525" }
ESMTP_Listener {
  SMTP_Extensions = ( "AUTH LOGIN" )
  AuthLoginParameters [ uri = "smtp_auth_proxy://" ]
  Listener_Sessions = 1800   # ceiling for this listener
  Idle_Time = 60

  Peer "10.0.0.0/8" {        # trusted senders: larger budget
    Listener_Sessions = 1500
    Idle_Time = 300
  }
  Peer "0.0.0.0/0" {         # everyone else: tighter cap, faster reaping
    Listener_Sessions = 600
    Idle_Time = 30
  }

  Listen ":25" {
    Listener_Sessions = 1800
    Idle_Time = 60
    Peer "10.1.0.0/16" { Idle_Time = 5 }
    Peer "10.2.0.0/16" { Listener_Sessions = 3 }
  }
}
"#,
    );
    assert!(!has(&msgs, "Listener_Sessions"), "{msgs:#?}");
    let l = c.esmtp_listener.as_ref().unwrap();
    let l25 = &l.listens[0];
    let cap = |client: &str| {
        l.session_cap_peer(l25, ip(client)).map(|r| {
            (
                r,
                l.peer(l25, r)
                    .settings
                    .listener_sessions
                    .as_ref()
                    .unwrap()
                    .value,
            )
        })
    };
    assert_eq!(
        cap("10.2.0.1"),
        Some((PeerRef::Listen(1), 3)),
        "the Listen's own Peer first"
    );
    assert_eq!(
        cap("10.1.0.1"),
        Some((PeerRef::Listener(0), 1500)),
        "a Peer without a cap falls back to the next that has one"
    );
    assert_eq!(cap("192.0.2.1"), Some((PeerRef::Listener(1), 600)));
    assert_eq!(
        l25.settings.listener_sessions.as_ref().unwrap().value,
        1800,
        "the Listen's ceiling stays its own"
    );
    // The dictionary without `=` reads as with it.
    let e = Effective::new(&c.global, l, l25, None);
    assert_eq!(
        e.auth_parameters(Mechanism::Login)
            .unwrap()
            .value
            .backend
            .value,
        AuthBackend::SmtpAuthProxy
    );
    let (c, _) = build(BASE);
    let l = c.esmtp_listener.as_ref().unwrap();
    assert_eq!(l.session_cap_peer(&l.listens[0], ip("10.0.0.1")), None);
}
