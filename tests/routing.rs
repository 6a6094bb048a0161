//! The outbound side of the model: Domain scopes, Gateway/Routes with `__mx__`, the remote
//! port, TLS, limits, timeouts, Prohibited_Hosts and the DNS servers, read as Momentum does.

mod common;

use common::TempDir;
use smtp_auth_proxy::model::outbound::{EhloHostname, OutboundTls, OutboundTlsVerify};
use smtp_auth_proxy::model::routing::{Lookup, NextHop, OutboundXclient, Route, Target};
use smtp_auth_proxy::model::{self, Config};
use std::time::Duration;

/// Something to serve, so that the only diagnostics are about the outbound options.
const LISTENER: &str = "\nESMTP_Listener { Listen \"127.0.0.1:25\" { } }\n";

fn build(text: &str) -> (Config, Vec<String>) {
    common::build(&format!("{text}{LISTENER}"))
}

fn has(msgs: &[String], needle: &str) -> bool {
    msgs.iter().any(|m| m.contains(needle))
}

fn host(h: &str, port: Option<u16>, pref: u64) -> Route {
    Route {
        target: Target::Host(NextHop {
            host: h.into(),
            port,
            lookup: Lookup::MxThenA,
        }),
        pref,
    }
}

fn mx(pref: u64) -> Route {
    Route {
        target: Target::Mx,
        pref,
    }
}

#[test]
fn without_any_routing_option_mail_goes_by_mx_with_momentums_defaults() {
    let (c, _) = build("");
    let s = c.routing.for_domain("example.com");
    assert_eq!(s.routes, [mx(0)]);
    assert_eq!(s.remote_smtp_port, 25);
    assert_eq!(s.tls, OutboundTls::No, "Momentum's TLS default is no");
    assert_eq!(s.tls_verify, OutboundTlsVerify::No);
    assert!(s.tls_ifavailable_fallback);
    assert_eq!(s.xclient, OutboundXclient::No);
    assert_eq!(s.max_outbound_connections, Some(32));
    assert_eq!(s.max_deliveries_per_connection, None);
    assert_eq!(s.ehlo_hostname, EhloHostname::Hostname);
    assert!(!s.send_8bitmime);
    assert_eq!(s.timeouts.connect, Duration::from_secs(300));
    assert_eq!(s.timeouts.body, Duration::from_secs(600));
    assert_eq!(s.timeouts.rset, Duration::from_secs(30));
    assert_eq!(s.idle_timeout, Duration::from_secs(5));
    assert_eq!(c.routing.server_max_outbound_connections, Some(75_000));
    assert!(c.routing.prohibited_hosts.is_empty(), "no default list");
    assert!(!c.routing.use_ipv6);
    assert!(c.routing.resolver.nameservers.is_none() && c.routing.resolver.resolv_conf.is_none());
}

#[test]
fn a_domain_scope_overrides_the_global_options_and_falls_back_to_them() {
    let (c, msgs) = build(
        r#"
Remote_SMTP_Port = 2525
TLS = ifavailable
Max_Outbound_Connections = 10
XCLIENT = ifavailable
Connect_Timeout = 20
Domain "Partner.example" {
  TLS = required
  TLS_Verify = host
  TLS_CA = "/etc/ssl/certs/ca-certificates.crt"
  Max_Outbound_Connections = -1
  Max_Deliveries_Per_Connection = 100
  XCLIENT = no
  EHLO_Hostname = __message__
  Body_Timeout = 90
  Send_8BitMime = ifavailable
}
"#,
    );
    assert!(!msgs.iter().any(|m| m.contains("error")), "{msgs:#?}");
    let p = c.routing.for_domain("partner.EXAMPLE.");
    assert_eq!(p.tls, OutboundTls::Required);
    assert_eq!(p.tls_verify, OutboundTlsVerify::Host);
    assert_eq!(p.max_outbound_connections, None, "-1: no limit");
    assert_eq!(p.max_deliveries_per_connection, Some(100));
    assert_eq!(p.xclient, OutboundXclient::No);
    assert_eq!(p.ehlo_hostname, EhloHostname::Message);
    assert_eq!(p.timeouts.body, Duration::from_secs(90));
    assert!(p.send_8bitmime);
    // Not set in the Domain: the global value.
    assert_eq!(p.remote_smtp_port, 2525);
    assert_eq!(p.timeouts.connect, Duration::from_secs(20));
    let other = c.routing.for_domain("other.example");
    assert_eq!(other.tls, OutboundTls::IfAvailable);
    assert_eq!(other.max_outbound_connections, Some(10));
    assert_eq!(other.xclient, OutboundXclient::IfAvailable);
    assert_eq!(other.timeouts.body, Duration::from_secs(600));
}

#[test]
fn routes_keep_mx_in_place_and_order_by_pref_then_listing() {
    let (c, msgs) = build(
        r#"Routes = ( "smtp://relay.example?pref=20&port=587" "__mx__" "smtp://10.0.0.9?pref=0&type=a" "[2001:db8::25]:26" )"#,
    );
    assert!(msgs.is_empty(), "{msgs:#?}");
    let routes = &c.routing.for_domain("x.example").routes;
    assert_eq!(
        routes[0],
        Route {
            target: Target::Host(NextHop {
                host: "10.0.0.9".into(),
                port: None,
                lookup: Lookup::A
            }),
            pref: 0
        }
    );
    assert_eq!(routes[1], mx(1));
    assert_eq!(routes[2], host("2001:db8::25", Some(26), 3));
    assert_eq!(routes[3], host("relay.example", Some(587), 20));
}

#[test]
fn the_most_specific_scope_with_gateway_or_routes_decides_the_route() {
    let (c, msgs) = build(
        r#"
Gateway = "smart.example"
Routes = ( "backup.example" )
Domain "local.example" { Routes = ( "__mx__" ) }
Domain "lmtp.example" { Gateway = "10.0.0.20:24" }
Domain "tls.example" { TLS = required }
"#,
    );
    assert!(
        has(
            &msgs,
            "test.conf:2:11: warning: both Gateway and Routes are set in the global scope"
        ),
        "{msgs:#?}"
    );
    assert_eq!(
        c.routing.for_domain("local.example").routes,
        [mx(0)],
        "a Domain's Routes is not overridden by the global Gateway"
    );
    assert_eq!(
        c.routing.for_domain("lmtp.example").routes,
        [host("10.0.0.20", Some(24), 0)]
    );
    assert_eq!(
        c.routing.for_domain("tls.example").routes,
        [
            host("smart.example", None, 0),
            host("backup.example", None, 1)
        ],
        "a Domain without routing options uses the global Gateway first, then the Routes"
    );
}

#[test]
fn a_recipient_address_literal_finds_the_domain_named_by_its_address() {
    let (c, msgs) = build(
        r#"
Domain "192.0.2.7" { Remote_SMTP_Port = 2525 }
Domain "[IPv6:2001:db8::7]" { Remote_SMTP_Port = 2526 }
"#,
    );
    assert!(msgs.is_empty(), "{msgs:#?}");
    assert_eq!(c.routing.for_domain("[192.0.2.7]").remote_smtp_port, 2525);
    assert_eq!(
        c.routing.for_domain("[ipv6:2001:DB8::7]").remote_smtp_port,
        2526
    );
}

#[test]
fn prohibited_and_skipped_hosts_and_the_dns_servers_are_read() {
    let (c, msgs) = build(
        r#"
Prohibited_Hosts = ( "127.0.0.0/8" "0.0.0.0" "fe80::a00:1" )
Skip_Hosts = ( 192.0.2.0/24 )
DNS_Nameservers = ( "127.0.0.1:5353" "::1" "[::1]:5354" )
Use_IPv6 = true
Server_Max_Outbound_Connections = 20000
"#,
    );
    assert!(msgs.is_empty(), "{msgs:#?}");
    let r = &c.routing;
    assert!(r.is_prohibited("127.3.4.5".parse().unwrap()));
    assert!(r.is_prohibited("0.0.0.0".parse().unwrap()));
    assert!(r.is_prohibited("fe80::a00:1".parse().unwrap()));
    assert!(!r.is_prohibited("192.0.2.1".parse().unwrap()));
    assert!(r.is_skipped("192.0.2.1".parse().unwrap()));
    let ns: Vec<String> = r
        .resolver
        .nameservers
        .as_ref()
        .unwrap()
        .value
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(ns, ["127.0.0.1:5353", "[::1]:53", "[::1]:5354"]);
    assert!(r.use_ipv6);
    assert_eq!(r.server_max_outbound_connections, Some(20_000));
}

#[test]
fn bad_outbound_values_are_errors_at_their_place() {
    let cases = [
        (
            "TLS = maybe",
            "test.conf:1:7: error: `TLS` takes one of no, ifavailable, required, found `maybe`",
        ),
        (
            "Domain \"a.example\" {\n  TLS_Verify = sometimes\n}",
            "test.conf:2:16: error: `TLS_Verify` takes one of no, ca, host, optional",
        ),
        (
            "Max_Outbound_Connections = 0",
            "test.conf:1:28: error: `Max_Outbound_Connections = 0` would never deliver; write -1 for no limit",
        ),
        (
            "Remote_SMTP_Port = 0",
            "test.conf:1:20: error: `Remote_SMTP_Port` must be between 1 and 65535",
        ),
        (
            "DNS_Nameservers = ( \"127.0.0.1:5353\" dns.example )",
            "test.conf:1:38: error: `dns.example` is not a name server address",
        ),
        (
            "Prohibited_Hosts = ( localhost )",
            "test.conf:1:22: error: `Prohibited_Hosts` takes IP addresses and CIDR blocks, not host names",
        ),
        (
            "EHLO_Hostname = \"bad name\"",
            "test.conf:1:17: error: `EHLO_Hostname` takes a host name, an address literal",
        ),
        (
            "Domain { TLS = required }",
            "test.conf:1:1: error: `Domain` needs the domain it applies to",
        ),
        (
            "Domain \"not a domain\" { }",
            "test.conf:1:1: error: `Domain \"not a domain\"`: not a domain name",
        ),
        (
            "Domain \"/example[.]com$/\" { Gateway = \"10.0.0.1\" }",
            "test.conf:1:1: error: regex Domain scopes (`Domain \"/example[.]com$/\"`) are not implemented; its Gateway/Routes would be ignored",
        ),
        (
            "Domain \"a.example\" { Routes = ( \"smtp://x.example?type=srv\" ) }",
            "test.conf:1:33: error: route parameter `type=srv` is not implemented",
        ),
        (
            "Domain \"a.example\" { Gatway = \"10.0.0.1\" }",
            "test.conf:1:22: error: unknown option `Gatway` in Domain; did you mean `gateway`?",
        ),
        (
            "Prohibited_Hosts = ( 10.0.0.0/8 )\nGateway = \"10.1.2.3:25\"",
            "test.conf:2:11: error: next hop 10.1.2.3:25 is in Prohibited_Hosts",
        ),
        (
            "Resolv_Conf = \"/etc/resolv.conf\"\nDNS_Nameservers = ( 127.0.0.1 )",
            "test.conf:2:19: error: DNS_Nameservers and Resolv_Conf (at test.conf:1:15) both name the DNS servers",
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
fn a_second_scope_for_the_same_domain_is_refused() {
    let (_, msgs) = build("Domain \"a.example\" { }\nDomain \"A.example\" { TLS = required }");
    assert!(
        has(
            &msgs,
            "test.conf:2:1: error: a second Domain scope for `a.example` (the first is at test.conf:1:1)"
        ),
        "{msgs:#?}"
    );
}

#[test]
fn momentum_domain_options_not_implemented_are_warnings_and_regex_domains_without_routes_too() {
    let (c, msgs) = build(
        "Domain \"a.example\" { Outbound_Throttle_Messages = \"60/3\" }\nDomain \"/x/\" { Max_Outbound_Connections = 3 }",
    );
    assert!(!msgs.iter().any(|m| m.contains(": error: ")), "{msgs:#?}");
    assert!(
        has(
            &msgs,
            "test.conf:1:22: warning: option `Outbound_Throttle_Messages` is not implemented by smtp-auth-proxy; ignored"
        ),
        "{msgs:#?}"
    );
    assert!(has(
        &msgs,
        "test.conf:2:1: warning: regex Domain scopes (`Domain \"/x/\"`) are not implemented; ignored"
    ));
    assert_eq!(c.routing.domains.len(), 1);
}

#[test]
fn a_resolv_conf_that_cannot_be_read_is_an_error_and_a_relative_one_is_found_beside_the_file() {
    let (_, msgs) = build("Resolv_Conf = \"/nonexistent/resolv.conf\"");
    assert!(
        has(
            &msgs,
            "test.conf:1:15: error: cannot read Resolv_Conf /nonexistent/resolv.conf"
        ),
        "{msgs:#?}"
    );
    let dir = TempDir::new("routing");
    dir.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:1\n");
    let conf = dir.write(
        "ecelerity.conf",
        &format!("Resolv_Conf = \"resolv.conf\"\n{LISTENER}"),
    );
    let loaded = smtp_auth_proxy::config::load(&conf, &common::opts());
    let (c, diags) = model::build(&loaded.root, &loaded.sources);
    assert!(!diags.has_errors(), "{:#?}", diags.0);
    assert_eq!(
        c.routing.resolver.resolv_conf.unwrap().value,
        dir.path().join("resolv.conf")
    );
}
