//! Delivery end to end with real parts: dnsmasq on loopback answering MX/A/AAAA/null MX/
//! NXDOMAIN/SERVFAIL, and aiosmtpd (tests/fixtures/smtp_server.py) as the next hop, recording
//! what it received and how the bytes arrived.

mod common;

use common::TempDir;
use common::daemon::{Certs, Upstream, dead_port};
use common::delivery::{HOSTNAME, delivery};
use common::dnsmasq::{Dnsmasq, SERVFAIL_DOMAIN};
use common::rt;
use smtp_auth_proxy::delivery::{
    Body, Disposition, Origin, OutboundMessage, Outcome, Recipient, Stage,
};

fn message(id: &str, to: &[&str], content: &str) -> OutboundMessage {
    OutboundMessage {
        id: id.into(),
        sender: "sender@origin.test".into(),
        recipients: to.iter().map(|a| Recipient::new(*a)).collect(),
        ret: None,
        envid: None,
        body: None,
        origin: Origin::default(),
        content: content.as_bytes().into(),
    }
}

const CONTENT: &str = "Subject: hello\r\n\r\nbody line\r\n";

fn delivered(o: &Outcome) -> bool {
    o.disposition == Disposition::Delivered
}

/// The chunks the fixture read from client sockets, as (connection, text).
fn reads(path: &std::path::Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["conn"].as_u64().unwrap(),
                v["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn mail_goes_to_the_best_mail_exchanger_that_answers() {
    let up = Upstream::start(&[]);
    // The best MX has an address where nothing listens; the next one is the real server.
    let dns = Dnsmasq::start(&[
        "--mx-host=dest.test,mx1.dest.test,10",
        "--mx-host=dest.test,mx2.dest.test,20",
        "--host-record=mx1.dest.test,127.0.0.2",
        "--host-record=mx2.dest.test,127.0.0.1",
    ]);
    let d = delivery(&format!(
        "DNS_Nameservers = ( \"{}\" )\nRemote_SMTP_Port = {}",
        dns.addr(),
        up.port
    ));
    rt().block_on(async {
        let hops = d.next_hops("dest.test").await.unwrap();
        let names: Vec<&str> = hops.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["mx1.dest.test", "mx2.dest.test"]);
        let mut out = d.open("dest.test", "sender@origin.test").await.unwrap();
        assert_eq!(out.hop(), "mx2.dest.test");
        assert_eq!(out.remote().to_string(), format!("127.0.0.1:{}", up.port));
        let result = out
            .deliver(&message("M1", &["rcpt@dest.test"], CONTENT))
            .await;
        assert!(delivered(&result.recipients[0]), "{:?}", result.recipients);
        assert_eq!(
            result.recipients[0].to_string(),
            "250 2.0.0 queued by aiosmtpd"
        );
        assert!(result.bytes_sent > CONTENT.len() as u64);
        out.quit().await;
    });
    let got = up.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["to"][0], "rcpt@dest.test");
    assert_eq!(got[0]["from"], "sender@origin.test");
    assert_eq!(got[0]["helo"], HOSTNAME);
    assert!(got[0]["data"].as_str().unwrap().ends_with("body line\r\n"));
}

#[test]
fn a_domain_without_mx_receives_mail_at_its_own_address() {
    let up = Upstream::start(&[]);
    let dns = Dnsmasq::start(&["--host-record=plain.test,127.0.0.1"]);
    let d = delivery(&format!(
        "DNS_Nameservers = ( \"{}\" )\nRemote_SMTP_Port = {}",
        dns.addr(),
        up.port
    ));
    rt().block_on(async {
        let mut out = d.open("plain.test", "").await.unwrap();
        assert_eq!(out.hop(), "plain.test");
        let r = out
            .deliver(&message("M1", &["a@plain.test"], CONTENT))
            .await;
        assert!(delivered(&r.recipients[0]), "{:?}", r.recipients);
    });
    assert_eq!(up.messages().len(), 1);
}

#[test]
fn null_mx_and_a_missing_domain_fail_permanently_and_servfail_waits() {
    let dns = Dnsmasq::start(&["--mx-host=nomail.test,.,0"]);
    let d = delivery(&format!("DNS_Nameservers = ( \"{}\" )", dns.addr()));
    rt().block_on(async {
        let f = d.open("nomail.test", "").await.err().unwrap();
        assert_eq!(f.outcome.disposition, Disposition::Permanent);
        assert_eq!(
            f.outcome.to_string(),
            "550 5.1.10 Recipient domain nomail.test has a null MX: it accepts no mail"
        );
        assert!(f.remote.is_none(), "no connection was tried");
        let f = d.open("nowhere.test", "").await.err().unwrap();
        assert_eq!(f.outcome.disposition, Disposition::Permanent);
        assert_eq!(
            f.outcome.to_string(),
            "550 5.1.2 MX lookup for nowhere.test: no such domain"
        );
        let f = d.open(SERVFAIL_DOMAIN, "").await.err().unwrap();
        assert_eq!(f.outcome.disposition, Disposition::Transient);
        assert_eq!(
            f.outcome.to_string(),
            format!("451 4.4.3 MX lookup for {SERVFAIL_DOMAIN}: SERVFAIL")
        );
    });
}

#[test]
fn prohibited_hosts_deny_a_domain_and_skip_hosts_pass_over_one_exchanger() {
    let up = Upstream::start(&[]);
    let dns = Dnsmasq::start(&[
        "--mx-host=trick.test,mx.trick.test,10",
        "--host-record=mx.trick.test,127.0.0.9",
        "--mx-host=two.test,skipped.two.test,10",
        "--mx-host=two.test,kept.two.test,20",
        "--host-record=skipped.two.test,127.0.0.3",
        "--host-record=kept.two.test,127.0.0.1",
    ]);
    let d = delivery(&format!(
        "DNS_Nameservers = ( \"{}\" )\nRemote_SMTP_Port = {}\nProhibited_Hosts = ( 127.0.0.9 )\nSkip_Hosts = ( 127.0.0.3 )",
        dns.addr(),
        up.port
    ));
    rt().block_on(async {
        let f = d.open("trick.test", "").await.err().unwrap();
        assert_eq!(f.outcome.disposition, Disposition::Permanent);
        assert_eq!(
            f.outcome.to_string(),
            "550 5.4.4 Mail exchanger mx.trick.test [127.0.0.9] is in Prohibited_Hosts"
        );
        let hops = d.next_hops("two.test").await.unwrap();
        assert_eq!(hops.len(), 1);
        assert_eq!(hops[0].name, "kept.two.test");
    });
}

#[test]
fn a_domain_scope_routes_its_mail_and_routes_fall_through_to_mx_in_order() {
    let up = Upstream::start(&[]);
    let dns = Dnsmasq::start(&[
        "--mx-host=routed.test,mx.routed.test,10",
        "--host-record=mx.routed.test,127.0.0.1",
    ]);
    let dead = dead_port();
    let d = delivery(&format!(
        r#"DNS_Nameservers = ( "{dns}" )
Remote_SMTP_Port = {port}
Domain "routed.test" {{ Routes = ( "smtp://127.0.0.1?port={dead}" "__mx__" ) }}
Domain "gw.test" {{ Gateway = "127.0.0.1:{port}" }}
"#,
        dns = dns.addr(),
        port = up.port,
    ));
    rt().block_on(async {
        let hops = d.next_hops("routed.test").await.unwrap();
        let order: Vec<String> = hops
            .iter()
            .map(|h| format!("{}:{}", h.name, h.port))
            .collect();
        assert_eq!(
            order,
            [
                format!("127.0.0.1:{dead}"),
                format!("mx.routed.test:{}", up.port)
            ]
        );
        let mut out = d.open("routed.test", "").await.unwrap();
        assert_eq!(
            out.hop(),
            "mx.routed.test",
            "the dead route was passed over"
        );
        let r = out
            .deliver(&message("M1", &["x@routed.test"], CONTENT))
            .await;
        assert!(delivered(&r.recipients[0]));
        // No DNS record for gw.test at all: its Gateway is used, MX is not asked.
        let mut out = d.open("gw.test", "").await.unwrap();
        let r = out.deliver(&message("M2", &["y@gw.test"], CONTENT)).await;
        assert!(delivered(&r.recipients[0]));
    });
    assert!(!dns.log().contains("query[MX] gw.test"));
    assert_eq!(up.messages().len(), 2);
}

#[test]
fn with_pipelining_mail_rcpt_and_data_go_out_in_one_write() {
    let dir = TempDir::new("pipelining");
    let record = dir.path().join("reads.jsonl");
    let up = Upstream::start_with(
        &[],
        &["--pipelining", "--record-reads", record.to_str().unwrap()],
    );
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", up.port));
    rt().block_on(async {
        let mut out = d.open("any.test", "").await.unwrap();
        let r = out
            .deliver(&message(
                "M1",
                &["a@any.test", "b@any.test", "c@any.test"],
                CONTENT,
            ))
            .await;
        assert!(r.recipients.iter().all(delivered), "{:?}", r.recipients);
        out.quit().await;
    });
    let reads = reads(&record);
    let batch = reads
        .iter()
        .find(|(_, data)| data.starts_with("MAIL FROM:"))
        .map(|(_, d)| d.as_str())
        .expect("MAIL arrived");
    assert_eq!(
        batch,
        format!(
            "MAIL FROM:<sender@origin.test> SIZE={}\r\nRCPT TO:<a@any.test>\r\nRCPT TO:<b@any.test>\r\nRCPT TO:<c@any.test>\r\nDATA\r\n",
            CONTENT.len()
        ),
        "one read holds the whole envelope and DATA: {reads:#?}"
    );
    assert_eq!(up.messages()[0]["to"].as_array().unwrap().len(), 3);
}

#[test]
fn without_pipelining_each_command_waits_for_its_reply() {
    let dir = TempDir::new("no-pipelining");
    let record = dir.path().join("reads.jsonl");
    let up = Upstream::start_with(&[], &["--record-reads", record.to_str().unwrap()]);
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", up.port));
    rt().block_on(async {
        let mut out = d.open("any.test", "").await.unwrap();
        let r = out
            .deliver(&message("M1", &["a@any.test", "b@any.test"], CONTENT))
            .await;
        assert!(r.recipients.iter().all(delivered));
    });
    let lines: Vec<String> = reads(&record).into_iter().map(|(_, d)| d).collect();
    let at = lines.iter().position(|l| l.starts_with("MAIL")).unwrap();
    assert_eq!(
        &lines[at..at + 4],
        [
            &format!("MAIL FROM:<sender@origin.test> SIZE={}\r\n", CONTENT.len()),
            "RCPT TO:<a@any.test>\r\n",
            "RCPT TO:<b@any.test>\r\n",
            "DATA\r\n"
        ]
    );
}

#[test]
fn every_recipient_gets_its_own_outcome_and_the_next_message_uses_the_same_connection() {
    let dir = TempDir::new("outcomes");
    let record = dir.path().join("reads.jsonl");
    let up = Upstream::start_with(
        &[],
        &[
            "--pipelining",
            "--record-reads",
            record.to_str().unwrap(),
            "--rcpt-reply",
            "busy@x.test=450 4.2.1 Mailbox busy",
            "--rcpt-reply",
            "gone@x.test=550 5.1.1 No such user",
        ],
    );
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", up.port));
    rt().block_on(async {
        let mut out = d.open("x.test", "").await.unwrap();
        let r = out
            .deliver(&message(
                "M1",
                &["busy@x.test", "ok@x.test", "gone@x.test"],
                CONTENT,
            ))
            .await;
        let d: Vec<Disposition> = r.recipients.iter().map(|o| o.disposition).collect();
        assert_eq!(
            d,
            [
                Disposition::Transient,
                Disposition::Delivered,
                Disposition::Permanent
            ]
        );
        assert_eq!(r.recipients[0].to_string(), "450 4.2.1 Mailbox busy");
        assert_eq!(r.recipients[0].stage, Stage::RcptTo);
        assert!(r.recipients[0].remote);
        assert_eq!(r.recipients[2].to_string(), "550 5.1.1 No such user");
        // Only refused recipients: the transaction stays open, RSET goes before the next.
        let r = out.deliver(&message("M2", &["gone@x.test"], CONTENT)).await;
        assert_eq!(r.recipients[0].disposition, Disposition::Permanent);
        assert!(out.is_usable());
        let r = out.deliver(&message("M3", &["ok@x.test"], CONTENT)).await;
        assert!(delivered(&r.recipients[0]), "{:?}", r.recipients);
        assert_eq!(out.accepted(), 2, "M1 (for one recipient) and M3");
        out.quit().await;
    });
    let reads = reads(&record);
    let conns: std::collections::BTreeSet<u64> = reads.iter().map(|(c, _)| *c).collect();
    assert_eq!(conns.len(), 1, "three messages, one connection");
    assert!(
        reads
            .iter()
            .any(|(_, d)| d.starts_with("RSET\r\nMAIL FROM:")),
        "RSET pipelined before the message after a failed transaction: {reads:#?}"
    );
    let got = up.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["to"], serde_json::json!(["ok@x.test"]));
}

#[test]
fn the_reply_to_the_end_of_data_decides_for_the_accepted_recipients() {
    for (reply, want) in [
        ("554 5.7.1 Looks like spam", Disposition::Permanent),
        ("451 4.3.0 Try later", Disposition::Transient),
    ] {
        let up = Upstream::start_with(&[], &["--pipelining", "--data-reply", reply]);
        let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", up.port));
        rt().block_on(async {
            let mut out = d.open("x.test", "").await.unwrap();
            let r = out
                .deliver(&message("M1", &["a@x.test", "b@x.test"], CONTENT))
                .await;
            for o in &r.recipients {
                assert_eq!(o.disposition, want);
                assert_eq!(o.to_string(), reply);
                assert_eq!(o.stage, Stage::Confirmation);
            }
            assert!(out.is_usable());
        });
        assert!(up.messages().is_empty());
    }
}

#[test]
fn a_connection_lost_or_silent_at_the_end_of_data_leaves_the_recipients_to_try_again() {
    let up = Upstream::start_with(&[], &["--data-reply", "close"]);
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", up.port));
    rt().block_on(async {
        let mut out = d.open("x.test", "").await.unwrap();
        let r = out.deliver(&message("M1", &["a@x.test"], CONTENT)).await;
        assert_eq!(r.recipients[0].disposition, Disposition::Transient);
        assert!(!r.recipients[0].remote);
        assert!(!out.is_usable());
        let r = out.deliver(&message("M2", &["a@x.test"], CONTENT)).await;
        assert_eq!(r.recipients[0].disposition, Disposition::Transient);
        assert_eq!(r.bytes_sent, 0, "nothing is sent on a broken connection");
    });
    let up = Upstream::start_with(&[], &["--data-reply", "hang"]);
    let d = delivery(&format!(
        "Gateway = \"127.0.0.1:{}\"\nBody_Timeout = 1",
        up.port
    ));
    rt().block_on(async {
        let mut out = d.open("x.test", "").await.unwrap();
        let r = out.deliver(&message("M1", &["a@x.test"], CONTENT)).await;
        let o = &r.recipients[0];
        assert_eq!(o.disposition, Disposition::Transient);
        assert_eq!(o.stage, Stage::Confirmation);
        assert!(o.text.ends_with("timed out"), "{o}");
    });
}

#[test]
fn lines_starting_with_a_dot_arrive_unchanged() {
    let up = Upstream::start(&[]);
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", up.port));
    let content = "Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nlast";
    rt().block_on(async {
        let mut out = d.open("x.test", "").await.unwrap();
        let r = out.deliver(&message("M1", &["a@x.test"], content)).await;
        assert!(delivered(&r.recipients[0]));
    });
    assert_eq!(
        up.messages()[0]["data"],
        "Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nlast\r\n"
    );
}

#[test]
fn xclient_carries_the_client_and_the_ehlo_after_it_names_the_clients_helo() {
    let up = Upstream::start_with(&[], &["--xclient", "--pipelining"]);
    let d = delivery(&format!(
        "Gateway = \"127.0.0.1:{}\"\nXCLIENT = ifavailable",
        up.port
    ));
    let mut first = message("M1", &["a@x.test"], CONTENT);
    first.origin = Origin {
        client_ip: Some("203.0.113.5".parse().unwrap()),
        client_port: Some(40123),
        helo: Some("client-one.example".into()),
        esmtp: true,
        client_name: None,
        auth_user: Some("alice".into()),
    };
    let mut second = message("M2", &["b@x.test"], CONTENT);
    second.origin = Origin {
        client_ip: Some("2001:db8::7".parse().unwrap()),
        helo: Some("client-two.example".into()),
        ..Origin::default()
    };
    rt().block_on(async {
        let mut out = d.open("x.test", "").await.unwrap();
        for m in [&first, &second] {
            let r = out.deliver(m).await;
            assert!(delivered(&r.recipients[0]), "{:?}", r.recipients);
        }
    });
    let got = up.messages();
    assert_eq!(
        got[0]["xclient"],
        "ADDR=203.0.113.5 PORT=40123 NAME=[UNAVAILABLE] HELO=client-one.example PROTO=ESMTP LOGIN=alice"
    );
    assert_eq!(got[0]["helo"], "client-one.example");
    assert_eq!(
        got[1]["xclient"],
        "ADDR=IPV6:2001:db8::7 PORT=[UNAVAILABLE] NAME=[UNAVAILABLE] HELO=client-two.example PROTO=SMTP"
    );
    assert_eq!(got[1]["helo"], "client-two.example");
}

#[test]
fn xclient_required_refuses_a_next_hop_without_it() {
    let up = Upstream::start(&[]);
    let d = delivery(&format!(
        "Gateway = \"127.0.0.1:{}\"\nXCLIENT = required",
        up.port
    ));
    rt().block_on(async {
        let f = d.open("x.test", "").await.err().unwrap();
        assert_eq!(f.outcome.disposition, Disposition::Transient);
        assert!(
            f.outcome.text.contains("does not offer XCLIENT"),
            "{}",
            f.outcome
        );
    });
}

#[test]
fn starttls_is_used_when_offered_and_required_tls_waits_for_a_next_hop_with_it() {
    let dir = TempDir::new("outbound-tls");
    let certs = Certs::new(dir.path());
    let tls_up = Upstream::start_with(
        &[],
        &[
            "--tls",
            certs.cert.to_str().unwrap(),
            certs.key.to_str().unwrap(),
        ],
    );
    let plain_up = Upstream::start(&[]);
    // The certificate names `localhost`: the route reaches the server by that name.
    let dns = Dnsmasq::start(&["--host-record=localhost,127.0.0.1"]);
    let d = delivery(&format!(
        r#"TLS = ifavailable
DNS_Nameservers = ( "{dns}" )
Domain "tls.test" {{ Gateway = "127.0.0.1:{tls}" }}
Domain "verified.test" {{
  Routes = ( "smtp://localhost?port={tls}&type=a" )
  TLS = required
  TLS_Verify = host
  TLS_CA = "{ca}"
}}
Domain "plain.test" {{ Gateway = "127.0.0.1:{plain}" TLS = required }}
Domain "maybe.test" {{ Gateway = "127.0.0.1:{plain}" }}
"#,
        tls = tls_up.port,
        plain = plain_up.port,
        ca = certs.ca.display(),
        dns = dns.addr(),
    ));
    rt().block_on(async {
        let mut out = d.open("tls.test", "").await.unwrap();
        assert!(out.is_tls());
        let r = out.deliver(&message("M1", &["a@tls.test"], CONTENT)).await;
        assert!(delivered(&r.recipients[0]) && r.tls);
        let mut out = d.open("verified.test", "").await.unwrap();
        assert!(
            out.is_tls(),
            "the certificate names localhost, signed by the test CA"
        );
        let r = out
            .deliver(&message("M2", &["b@verified.test"], CONTENT))
            .await;
        assert!(delivered(&r.recipients[0]));
        let f = d.open("plain.test", "").await.err().unwrap();
        assert_eq!(f.outcome.disposition, Disposition::Transient);
        assert_eq!(f.outcome.enhanced.unwrap().to_string(), "4.7.4");
        assert!(f.outcome.text.contains("does not offer STARTTLS"));
        let out = d.open("maybe.test", "").await.unwrap();
        assert!(!out.is_tls(), "ifavailable goes on in clear text");
    });
    let got = tls_up.messages();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m["tls"] == true));
}

#[test]
fn body_and_size_parameters_follow_what_the_next_hop_offers() {
    let up = Upstream::start(&[]);
    let d = delivery(&format!(
        "Gateway = \"127.0.0.1:{}\"\nSend_8BitMime = ifavailable",
        up.port
    ));
    let eight = "Subject: caf\u{e9}\r\n\r\n\u{e9}t\u{e9}\r\n";
    let mut declared = message("M2", &["b@x.test"], CONTENT);
    declared.body = Some(Body::SevenBit);
    rt().block_on(async {
        let mut out = d.open("x.test", "").await.unwrap();
        for m in [&message("M1", &["a@x.test"], eight), &declared] {
            let r = out.deliver(m).await;
            assert!(delivered(&r.recipients[0]), "{:?}", r.recipients);
        }
    });
    let got = up.messages();
    assert_eq!(
        got[0]["mail_options"],
        serde_json::json!([format!("SIZE={}", eight.len()), "BODY=8BITMIME"])
    );
    assert_eq!(
        got[1]["mail_options"],
        serde_json::json!([format!("SIZE={}", CONTENT.len()), "BODY=7BIT"])
    );
}

#[test]
fn a_next_hop_that_does_not_answer_is_a_transient_failure_naming_it() {
    let dead = dead_port();
    let d = delivery(&format!("Gateway = \"127.0.0.1:{dead}\""));
    rt().block_on(async {
        let f = d.open("x.test", "").await.err().unwrap();
        assert_eq!(f.outcome.disposition, Disposition::Transient);
        assert_eq!(f.outcome.stage, Stage::NotConnected);
        assert_eq!(f.remote.unwrap().to_string(), format!("127.0.0.1:{dead}"));
        assert!(
            f.outcome.to_string().starts_with(&format!(
                "451 4.4.1 connect to 127.0.0.1 [127.0.0.1:{dead}]"
            )),
            "{}",
            f.outcome
        );
    });
}

#[test]
fn aaaa_records_are_used_only_with_use_ipv6() {
    let dns = Dnsmasq::start(&[
        "--host-record=six.test,::1",
        "--host-record=both.test,127.0.0.1,::1",
    ]);
    let without = delivery(&format!("DNS_Nameservers = ( \"{}\" )", dns.addr()));
    let with = delivery(&format!(
        "DNS_Nameservers = ( \"{}\" )\nUse_IPv6 = true",
        dns.addr()
    ));
    rt().block_on(async {
        let o = without.next_hops("six.test").await.unwrap_err();
        assert_eq!(o.disposition, Disposition::Permanent, "{o}");
        assert_eq!(
            o.to_string(),
            "550 5.1.2 A lookup for six.test: no A record"
        );
        let hops = with.next_hops("six.test").await.unwrap();
        assert_eq!(hops[0].addrs, ["::1".parse::<std::net::IpAddr>().unwrap()]);
        let hops = with.next_hops("both.test").await.unwrap();
        let addrs: Vec<String> = hops[0].addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1", "::1"], "IPv4 first");
        let hops = without.next_hops("both.test").await.unwrap();
        assert_eq!(hops[0].addrs.len(), 1);
    });
}

#[test]
fn routes_of_equal_preference_share_the_load() {
    let d = delivery(
        r#"Routes = ( "smtp://127.0.0.2?pref=5&port=2525" "smtp://127.0.0.3?pref=5&port=2525" "smtp://127.0.0.4?pref=9&port=2525" )"#,
    );
    let mut firsts = std::collections::BTreeSet::new();
    rt().block_on(async {
        for _ in 0..40 {
            let hops = d.next_hops("any.test").await.unwrap();
            assert_eq!(hops.len(), 3);
            assert_eq!(hops[2].name, "127.0.0.4", "the worse preference stays last");
            firsts.insert(hops[0].name.clone());
        }
    });
    assert_eq!(
        firsts.into_iter().collect::<Vec<_>>(),
        ["127.0.0.2", "127.0.0.3"]
    );
}

#[test]
fn a_421_ends_the_connection_and_leaves_open_recipients_to_try_again() {
    let up = Upstream::start_with(
        &[],
        &[
            "--pipelining",
            "--rcpt-reply",
            "b@x.test=421 4.3.2 Shutting down",
        ],
    );
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", up.port));
    rt().block_on(async {
        let mut out = d.open("x.test", "").await.unwrap();
        let r = out
            .deliver(&message(
                "M1",
                &["a@x.test", "b@x.test", "c@x.test"],
                CONTENT,
            ))
            .await;
        for o in &r.recipients {
            assert_eq!(o.disposition, Disposition::Transient, "{o}");
            assert_eq!(o.to_string(), "421 4.3.2 Shutting down");
        }
        assert!(!out.is_usable());
    });
    assert!(up.messages().is_empty());
}

#[test]
fn an_international_address_waits_for_a_next_hop_with_smtputf8() {
    let up = Upstream::start(&[]);
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", up.port));
    rt().block_on(async {
        let mut out = d.open("x.test", "").await.unwrap();
        let r = out
            .deliver(&message("M1", &["jos\u{e9}@x.test"], CONTENT))
            .await;
        let o = &r.recipients[0];
        assert_eq!(o.disposition, Disposition::Permanent);
        assert_eq!(o.enhanced.unwrap().to_string(), "5.6.7");
        assert_eq!(r.bytes_sent, 0);
        assert!(out.is_usable());
    });
}

#[test]
fn a_failed_tls_handshake_falls_back_to_clear_text_unless_told_not_to() {
    let dir = TempDir::new("tls-fallback");
    let certs = Certs::new(dir.path());
    let other = TempDir::new("tls-other-ca");
    let other_ca = Certs::new(other.path()).ca;
    let up = Upstream::start_with(
        &[],
        &[
            "--tls",
            certs.cert.to_str().unwrap(),
            certs.key.to_str().unwrap(),
        ],
    );
    // The certificate does not chain to `other_ca`: the handshake fails on our side.
    let d = delivery(&format!(
        r#"Gateway = "127.0.0.1:{port}"
TLS = ifavailable
TLS_Verify = ca
TLS_CA = "{ca}"
Domain "strict.test" {{ TLS_Ifavailable_Fallback = false }}
"#,
        port = up.port,
        ca = other_ca.display()
    ));
    rt().block_on(async {
        let mut out = d.open("lenient.test", "").await.unwrap();
        assert!(!out.is_tls());
        let r = out
            .deliver(&message("M1", &["a@lenient.test"], CONTENT))
            .await;
        assert!(delivered(&r.recipients[0]) && !r.tls);
        let f = d.open("strict.test", "").await.err().unwrap();
        assert_eq!(f.outcome.disposition, Disposition::Transient);
        assert_eq!(f.outcome.stage, Stage::TlsHandshake);
        assert_eq!(f.outcome.enhanced.unwrap().to_string(), "4.7.5");
    });
    let got = up.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["tls"], false);
}
