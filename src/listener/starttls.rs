//! STARTTLS (RFC 3207) and the TLS handshake shared with implicit TLS (`Use_SSL`).

use super::session::{Flow, Session};
use crate::model::listener::InjectionPolicy;
use crate::net::{BoxIo, Prefixed};
use crate::reply::Reply;
use crate::{log_info, log_warning};
use rustls::ServerConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// Runs the server side of a TLS handshake over `io`, `prefix` being bytes already read from
/// it. Returns the TLS stream and a description (`TLSv1_3 TLS13_AES_256_GCM_SHA384`).
pub async fn handshake(
    config: Arc<ServerConfig>,
    io: BoxIo,
    prefix: Vec<u8>,
    limit: Option<Duration>,
) -> Result<(BoxIo, String), String> {
    let acceptor = TlsAcceptor::from(config);
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let stream = super::connection::within(deadline, acceptor.accept(Prefixed::new(prefix, io)))
        .await
        .map_err(|()| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let (_, conn) = stream.get_ref();
    let info = format!(
        "{:?} {:?}",
        conn.protocol_version()
            .map_or(rustls::ProtocolVersion::Unknown(0), |v| v),
        conn.negotiated_cipher_suite()
            .map(|s| s.suite())
            .map_or(rustls::CipherSuite::Unknown(0), |s| s)
    )
    .replace("TLSv1_", "TLSv1.");
    Ok((Box::new(stream), info))
}

impl Session {
    pub async fn starttls(&mut self) -> Flow {
        if self.tls.is_some() {
            self.reject(503, (5, 5, 1), "TLS already active");
            return Flow::Continue;
        }
        let Some(key) = self
            .scope
            .tls
            .clone()
            .filter(|_| self.scope.starttls_available())
        else {
            self.reject(502, (5, 5, 1), "STARTTLS not available");
            return Flow::Continue;
        };
        if !self.helo.as_ref().is_some_and(|h| h.esmtp) {
            self.reject(503, (5, 5, 1), "Send EHLO first");
            return Flow::Continue;
        }
        // RFC 3207 §4.2 resets the session after the handshake; in the middle of a transaction
        // that would leave the next hop holding an envelope the client has forgotten. Postfix
        // refuses here too.
        if self.txn.is_some() {
            self.reject(
                503,
                (5, 5, 1),
                "STARTTLS not permitted inside a mail transaction",
            );
            return Flow::Continue;
        }
        // Commands pipelined behind STARTTLS were sent in clear text and could have been
        // injected by anyone on the path (CVE-2011-0411): Starttls_Injection_Policy decides.
        let mut prefix_allowed = false;
        if !self.conn.pending().is_empty() {
            match self.scope.injection_policy {
                InjectionPolicy::Reject => {
                    log_warning!(
                        "session {}: STARTTLS with pipelined commands from {}: rejected",
                        self.id,
                        self.client
                    );
                    self.reply(554, (5, 5, 1), "Commands pipelined after STARTTLS; closing");
                    return Flow::Close;
                }
                InjectionPolicy::Ignore => self.conn.discard_pending(),
                // The bytes after STARTTLS belong to the TLS stream; a client that pipelined
                // its handshake gets it, and clear-text commands simply fail the handshake.
                InjectionPolicy::Allow => prefix_allowed = true,
            }
        }
        let config = match self.rt.tls.get(&key) {
            Ok(c) => c,
            Err(e) => {
                log_warning!("session {}: STARTTLS: {e}", self.id);
                self.reply(454, (4, 7, 0), "TLS not available due to temporary reason");
                return Flow::Continue;
            }
        };
        self.conn.send(&Reply::new(
            220,
            crate::reply::Enhanced(2, 0, 0),
            "Ready to start TLS",
        ));
        if self.conn.flush().await.is_err() {
            return Flow::Close;
        }
        let (io, rest) = self.conn.take_io();
        let prefix = if prefix_allowed { rest } else { Vec::new() };
        let handshake = handshake(config, io, prefix, self.scope.idle_time).await;
        self.rt
            .metrics
            .tls(crate::metrics::Tls::Starttls, handshake.is_ok());
        match handshake {
            Ok((io, info)) => {
                log_info!("session {}: STARTTLS {info}", self.id);
                self.conn.replace_io(io);
                // RFC 3207 §4.2: forget everything learnt before TLS, the next hop's
                // connection included (it may hold state, or an AUTH upstream's session,
                // from before).
                self.helo = None;
                self.auth = None;
                self.txn = None;
                self.abandon_hop().await;
                self.conn.enhanced_codes = false;
                self.tls = Some(info);
                self.set_context("tls", "on");
                self.update_relay_context();
                Flow::Continue
            }
            Err(e) => {
                log_info!("session {}: {e}", self.id);
                Flow::Close
            }
        }
    }
}
