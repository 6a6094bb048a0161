//! MAIL (RFC 5321 §4.1.1.2): starts a transaction, at the next hop too when there is one.

use super::command::{Param, Path};
use super::relay::HopState;
use super::session::{Session, Transaction};
use crate::reply::{Enhanced, Reply};

impl Session {
    pub async fn mail(&mut self, from: Path, params: Vec<Param>) {
        if self.txn.is_some() {
            self.reject(503, (5, 5, 1), "Nested MAIL command");
            return;
        }
        let mut size = None;
        let mut body = None;
        for p in &params {
            match (p.keyword.as_str(), p.value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(n) => size = Some(n),
                    Err(_) => {
                        self.reject(501, (5, 5, 4), "Bad SIZE parameter");
                        return;
                    }
                },
                ("BODY", Some(v))
                    if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") =>
                {
                    body = Some(v.to_ascii_uppercase());
                }
                // RFC 4954 §5: accepted; not passed on, since this server does not vouch for
                // the identity the client claims the message was submitted by.
                ("AUTH", Some(_)) => {}
                _ => {
                    self.reject(
                        555,
                        (5, 5, 4),
                        format!("Unsupported parameter {}", p.keyword),
                    );
                    return;
                }
            }
        }
        if let (Some(n), Some(max)) = (size, self.scope.max_message_size)
            && n > max
        {
            self.reply(
                552,
                (5, 3, 4),
                "Message size exceeds fixed maximum message size",
            );
            return;
        }
        if !self.sending_limit_mail().await {
            return;
        }
        let mut txn = Transaction {
            from,
            params: Vec::new(),
            rcpts: Vec::new(),
            relayed: false,
        };
        match self.ensure_hop().await {
            HopState::None => {
                self.txn = Some(txn);
                self.reply(250, (2, 1, 0), "Sender OK");
            }
            HopState::Unavailable(r) => self.conn.send(&r),
            HopState::Ready => {
                let hop = self.hop.as_mut().expect("ensure_hop made it");
                if let Some(n) = size
                    && hop.extension("SIZE").is_some()
                {
                    txn.params.push(format!("SIZE={n}"));
                }
                if let Some(b) = body
                    && hop.extension("8BITMIME").is_some()
                {
                    txn.params.push(format!("BODY={b}"));
                }
                let mut line = format!("MAIL FROM:{}", txn.from);
                for p in &txn.params {
                    line.push(' ');
                    line.push_str(p);
                }
                if let Some(r) = self.hop_command(&line).await {
                    if r.is_positive() {
                        txn.relayed = true;
                        self.txn = Some(txn);
                    }
                    self.send_relayed(r);
                }
            }
        }
    }

    /// Passes a next hop's reply to the client. A reply without an enhanced code gets the
    /// generic one of its class, for a client that was offered ENHANCEDSTATUSCODES.
    pub fn send_relayed(&mut self, mut r: Reply) {
        if r.enhanced.is_none() {
            let class = (r.code / 100) as u8;
            if matches!(class, 2 | 4 | 5) {
                r.enhanced = Some(Enhanced(class, 0, 0));
            }
        }
        self.conn.send(&r);
    }
}
