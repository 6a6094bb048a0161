//! DNS for delivery against a real DNS server (dnsmasq on loopback): MX order, implicit MX,
//! null MX, NXDOMAIN, SERVFAIL and a server that never answers.

mod common;

use common::rt;

use common::dnsmasq::{Dnsmasq, SERVFAIL_DOMAIN, TIMEOUT_DOMAIN};
use smtp_auth_proxy::dns::{Exchanger, LookupError, MxAnswer, Resolver};
use std::net::IpAddr;
use std::time::Duration;

fn resolver(dns: &Dnsmasq) -> Resolver {
    Resolver::with_nameservers(&[dns.addr()], Duration::from_millis(500), 1)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn mx_hosts_come_best_first_with_equal_preferences_in_random_order() {
    let dns = Dnsmasq::start(&[
        "--mx-host=multi.test,backup.multi.test,20",
        "--mx-host=multi.test,a.multi.test,10",
        "--mx-host=multi.test,b.multi.test,10",
    ]);
    let r = resolver(&dns);
    let mut first_seen = std::collections::BTreeSet::new();
    rt().block_on(async {
        for _ in 0..40 {
            let MxAnswer::Exchangers(mx) = r.mx("multi.test").await.unwrap() else {
                panic!("MX records expected");
            };
            let prefs: Vec<u16> = mx.iter().map(|m| m.preference).collect();
            assert_eq!(prefs, [10, 10, 20]);
            assert_eq!(
                mx[2],
                Exchanger {
                    preference: 20,
                    host: "backup.multi.test".into()
                }
            );
            first_seen.insert(mx[0].host.clone());
        }
    });
    assert_eq!(
        first_seen.into_iter().collect::<Vec<_>>(),
        ["a.multi.test", "b.multi.test"],
        "both equal-preference hosts come first in some answers"
    );
}

#[test]
fn a_domain_without_mx_is_its_own_exchanger_and_its_addresses_are_found() {
    let dns = Dnsmasq::start(&["--host-record=plain.test,127.0.0.5,::5"]);
    let r = resolver(&dns);
    rt().block_on(async {
        assert_eq!(r.mx("plain.test").await, Ok(MxAnswer::Implicit));
        assert_eq!(
            r.addresses("plain.test", false).await,
            Ok(vec![ip("127.0.0.5")]),
            "IPv4 only unless IPv6 is asked for"
        );
        assert_eq!(
            r.addresses("plain.test.", true).await,
            Ok(vec![ip("127.0.0.5"), ip("::5")])
        );
        assert_eq!(
            r.addresses("192.0.2.9", true).await,
            Ok(vec![ip("192.0.2.9")])
        );
    });
}

#[test]
fn a_null_mx_is_its_own_answer() {
    let dns = Dnsmasq::start(&[
        "--mx-host=nomail.test,.,0",
        "--host-record=nomail.test,127.0.0.6",
    ]);
    let r = resolver(&dns);
    rt().block_on(async {
        assert_eq!(r.mx("nomail.test").await, Ok(MxAnswer::NullMx));
    });
}

#[test]
fn a_domain_that_does_not_exist_is_a_permanent_answer() {
    let dns = Dnsmasq::start(&["--mx-host=mxonly.test,mail.elsewhere.test,10"]);
    let r = resolver(&dns);
    rt().block_on(async {
        let e = r.mx("nowhere.test").await.unwrap_err();
        assert!(matches!(e, LookupError::NoSuchDomain(_)), "{e:?}");
        assert!(e.is_permanent());
        assert_eq!(e.to_string(), "MX lookup for nowhere.test: no such domain");
        // A name with MX records but no address: no data, also permanent.
        let e = r.addresses("mxonly.test", true).await.unwrap_err();
        assert!(matches!(e, LookupError::NoData(_)), "{e:?}");
        assert!(e.is_permanent());
    });
}

#[test]
fn servfail_is_a_temporary_failure() {
    let dns = Dnsmasq::start(&[]);
    let r = resolver(&dns);
    rt().block_on(async {
        let e = r.mx(SERVFAIL_DOMAIN).await.unwrap_err();
        assert!(!e.is_permanent(), "{e:?}");
        assert!(e.to_string().contains("SERVFAIL"), "{e}");
        let e = r
            .addresses(&format!("mx.{SERVFAIL_DOMAIN}"), false)
            .await
            .unwrap_err();
        assert!(!e.is_permanent(), "{e:?}");
    });
    assert!(
        dns.log()
            .contains(&format!("validation {SERVFAIL_DOMAIN} is ABANDONED")),
        "the SERVFAIL came from dnsmasq's validation:\n{}",
        dns.log()
    );
}

#[test]
fn a_server_that_never_answers_is_a_temporary_failure() {
    let dns = Dnsmasq::start(&[]);
    let r = resolver(&dns);
    rt().block_on(async {
        let e = r.mx(TIMEOUT_DOMAIN).await.unwrap_err();
        assert!(!e.is_permanent(), "{e:?}");
    });
}

#[test]
fn the_configured_name_servers_are_the_ones_asked() {
    let dns = Dnsmasq::start(&["--mx-host=conf.test,mx.conf.test,5"]);
    let loaded = common::load_text(&format!(
        "DNS_Nameservers = ( \"{}\" )\nESMTP_Listener {{ Listen \"127.0.0.1:25\" {{ }} }}\n",
        dns.addr()
    ));
    let (config, diags) = smtp_auth_proxy::model::build(&loaded.root, &loaded.sources);
    assert!(!diags.has_errors(), "{:#?}", diags.0);
    let settings = config.routing.resolver;
    let r = Resolver::from_settings(&settings).unwrap();
    rt().block_on(async {
        assert_eq!(
            r.mx("conf.test").await,
            Ok(MxAnswer::Exchangers(vec![Exchanger {
                preference: 5,
                host: "mx.conf.test".into()
            }]))
        );
    });
    assert!(dns.log().contains("query[MX] conf.test from 127.0.0.1"));
}
