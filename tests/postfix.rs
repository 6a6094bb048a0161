//! Delivery to Debian's Postfix as the next hop (a private instance per test): XCLIENT and the
//! client's HELO in Postfix's own records, CHUNKING, DSN parameters, and a fresh connection
//! for each client's mail.

mod common;

use common::delivery::{HOSTNAME, delivery};
use common::postfix::Postfix;
use common::rt;
use smtp_auth_proxy::delivery::{
    Disposition, INLINE_BDAT, MessageOutcome, Notify, Origin, OutboundMessage, Recipient, Ret,
};

/// The one recipient of `r` was delivered (its outcome otherwise, with `what`).
fn assert_delivered(r: &MessageOutcome, what: &str) {
    assert_eq!(
        r.recipients[0].disposition,
        Disposition::Delivered,
        "{what}: {}",
        r.recipients[0]
    );
}

fn message(sender: &str, to: &str, origin: Origin, content: Vec<u8>) -> OutboundMessage {
    OutboundMessage {
        id: "TEST".into(),
        sender: sender.into(),
        recipients: vec![Recipient::new(to)],
        ret: None,
        envid: None,
        body: None,
        origin,
        content: content.into(),
    }
}

fn client(ip: &str, helo: &str, name: &str) -> Origin {
    Origin {
        client_ip: Some(ip.parse().unwrap()),
        client_port: Some(41000),
        helo: Some(helo.into()),
        esmtp: true,
        client_name: Some(name.into()),
        auth_user: None,
    }
}

const CONTENT: &[u8] = b"Subject: via postfix\r\nMessage-Id: <t1@origin.test>\r\n\r\nhello\r\n";

/// The queued message whose recipient is `to`.
fn queued<'a>(queue: &'a [serde_json::Value], to: &str) -> &'a serde_json::Value {
    queue
        .iter()
        .find(|m| m["recipients"][0]["address"] == to)
        .unwrap_or_else(|| panic!("no message for {to} in {queue:?}"))
}

#[test]
fn postfix_records_the_clients_helo_and_address_after_our_xclient() {
    let pf = Postfix::start("");
    let d = delivery(&format!(
        "Gateway = \"127.0.0.1:{}\"\nXCLIENT = ifavailable",
        pf.port
    ));
    let origin = client("203.0.113.5", "client-helo.example", "client.example");
    rt().block_on(async {
        let mut out = d.open("dest.test", "sender@origin.test").await.unwrap();
        let r = out
            .deliver(&message(
                "sender@origin.test",
                "rcpt@dest.test",
                origin,
                CONTENT.to_vec(),
            ))
            .await;
        assert_delivered(&r, "the message");
        assert!(r.recipients[0].text.contains("queued as"));
        out.quit().await;
    });
    let queue = pf.wait_queue(1);
    let id = queued(&queue, "rcpt@dest.test")["queue_id"]
        .as_str()
        .unwrap();
    let file = pf.postcat(id);
    assert!(
        file.contains("Received: from client-helo.example (client.example [203.0.113.5])"),
        "Postfix's Received: names the client's HELO, not ours:\n{file}"
    );
    assert!(
        !file.contains(HOSTNAME),
        "our own EHLO name is nowhere:\n{file}"
    );
    assert!(file.contains("named_attribute: helo_name=client-helo.example"));
    let held = pf.wait_log("hold: END-OF-MESSAGE", 1);
    assert!(
        held[0].contains("from client.example[203.0.113.5]")
            && held[0].contains("helo=<client-helo.example>"),
        "{held:?}"
    );
    let log = pf.log();
    assert!(
        !log.contains("improper command pipelining"),
        "Postfix offered PIPELINING, so a pipelined batch is proper:\n{log}"
    );
}

#[test]
fn each_clients_mail_gets_its_own_connection_since_postfix_takes_xclient_once() {
    let pf = Postfix::start("");
    let d = delivery(&format!(
        "Gateway = \"127.0.0.1:{}\"\nXCLIENT = required",
        pf.port
    ));
    rt().block_on(async {
        let mut out = d.open("dest.test", "").await.unwrap();
        let one = client("203.0.113.5", "one.example", "one.client.example");
        let two = client("198.51.100.7", "two.example", "two.client.example");
        for (origin, to) in [
            (one.clone(), "a@dest.test"),
            (one, "b@dest.test"),
            (two, "c@dest.test"),
        ] {
            let r = out
                .deliver(&message("s@origin.test", to, origin, CONTENT.to_vec()))
                .await;
            assert_delivered(&r, to);
        }
        out.quit().await;
    });
    let queue = pf.wait_queue(3);
    for (to, helo, addr) in [
        ("a@dest.test", "one.example", "203.0.113.5"),
        ("b@dest.test", "one.example", "203.0.113.5"),
        ("c@dest.test", "two.example", "198.51.100.7"),
    ] {
        let file = pf.postcat(queued(&queue, to)["queue_id"].as_str().unwrap());
        assert!(
            file.contains(&format!("Received: from {helo} ("))
                && file.contains(&format!("[{addr}])")),
            "{to}:\n{file}"
        );
    }
    // The same client's second message reused the connection; the other client got a new one.
    let sessions = pf.wait_log("xclient=", 2);
    assert!(
        sessions
            .iter()
            .any(|l| l.contains("[203.0.113.5]") && l.contains(" mail=2 ")),
        "{sessions:#?}"
    );
    assert!(
        sessions
            .iter()
            .any(|l| l.contains("[198.51.100.7]") && l.contains(" mail=1 ")),
        "{sessions:#?}"
    );
    assert_eq!(sessions.len(), 2, "{sessions:#?}");
}

#[test]
fn chunking_and_the_dsn_parameters_reach_postfix() {
    let pf = Postfix::start("");
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", pf.port));
    let mut small = message("", "dsn@dest.test", Origin::default(), CONTENT.to_vec());
    small.ret = Some(Ret::Hdrs);
    small.envid = Some("env+id 1".into());
    small.recipients[0].notify = Some(Notify::On {
        success: true,
        failure: true,
        delay: false,
    });
    small.recipients[0].orcpt = Some("rfc822;Original@Origin.test".into());
    // Larger than what goes inline with the envelope: BDAT after the RCPT replies.
    let mut big_content = b"Subject: big\r\n\r\n".to_vec();
    while big_content.len() <= INLINE_BDAT * 2 {
        big_content.extend_from_slice(b".a line that needs no stuffing with BDAT\r\n");
    }
    let big = message(
        "s@origin.test",
        "big@dest.test",
        Origin::default(),
        big_content.clone(),
    );
    rt().block_on(async {
        let mut out = d.open("dest.test", "").await.unwrap();
        for m in [&small, &big] {
            let r = out.deliver(m).await;
            assert_delivered(&r, "the message");
            assert!(r.dsn_passed);
        }
        out.quit().await;
    });
    let queue = pf.wait_queue(2);
    let file = pf.postcat(
        queued(&queue, "dsn@dest.test")["queue_id"]
            .as_str()
            .unwrap(),
    );
    // Postfix's flags: RET=HDRS is 2; NOTIFY SUCCESS (2) and FAILURE (4) make 6.
    for want in [
        "sender: \n",
        "named_attribute: envelope_id=env+id 1",
        "named_attribute: ret_flags=2",
        "named_attribute: notify_flags=6",
        "named_attribute: dsn_orig_rcpt=rfc822;Original@Origin.test",
    ] {
        assert!(file.contains(want), "{want:?} in:\n{file}");
    }
    let big_entry = queued(&queue, "big@dest.test");
    let big_file = pf.postcat(big_entry["queue_id"].as_str().unwrap());
    assert!(big_file.contains(".a line that needs no stuffing with BDAT"));
    let done = pf.wait_log(" bdat=", 1);
    assert!(
        done[0].contains(" mail=2 rcpt=2 bdat=2 "),
        "both messages went by BDAT, on one connection: {done:?}"
    );
}

#[test]
fn a_message_larger_than_postfix_takes_fails_permanently_without_being_sent() {
    let pf = Postfix::start("message_size_limit = 2000");
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", pf.port));
    let mut large = b"Subject: large\r\n\r\n".to_vec();
    large.resize(3000, b'x');
    rt().block_on(async {
        let mut out = d.open("dest.test", "").await.unwrap();
        let r = out
            .deliver(&message(
                "s@origin.test",
                "large@dest.test",
                Origin::default(),
                large,
            ))
            .await;
        let o = &r.recipients[0];
        assert_eq!(o.disposition, Disposition::Permanent);
        assert_eq!(
            o.to_string(),
            "552 5.3.4 message of 3000 bytes exceeds the 2000 bytes 127.0.0.1 takes"
        );
        assert_eq!(r.bytes_sent, 0);
        let r = out
            .deliver(&message(
                "s@origin.test",
                "small@dest.test",
                Origin::default(),
                CONTENT.to_vec(),
            ))
            .await;
        assert_delivered(&r, "the message");
        out.quit().await;
    });
    let queue = pf.wait_queue(1);
    assert_eq!(queue.len(), 1);
    queued(&queue, "small@dest.test");
}

#[test]
fn a_connection_postfix_timed_out_while_idle_is_replaced_before_the_next_message() {
    let pf = Postfix::start("smtpd_timeout = 1s");
    let d = delivery(&format!("Gateway = \"127.0.0.1:{}\"", pf.port));
    rt().block_on(async {
        let mut out = d.open("dest.test", "").await.unwrap();
        let first = message(
            "s@origin.test",
            "first@dest.test",
            Origin::default(),
            CONTENT.to_vec(),
        );
        let r = out.deliver(&first).await;
        assert_eq!(r.recipients[0].disposition, Disposition::Delivered);
        // Longer than Postfix's smtpd_timeout: it says 421 and closes.
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let second = message(
            "s@origin.test",
            "second@dest.test",
            Origin::default(),
            CONTENT.to_vec(),
        );
        let r = out.deliver(&second).await;
        assert_delivered(&r, "the message");
        out.quit().await;
    });
    assert_eq!(pf.wait_queue(2).len(), 2);
    pf.wait_log("timeout after", 1);
}
