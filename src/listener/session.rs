//! One client's SMTP session: its state, the command loop, and the dispatch to the phase that
//! handles each command.

use super::Runtime;
use super::command::{self, Command, Invalid, Path};
use super::connection::{Connection, MAX_COMMAND_LINE, ReadError};
use super::policy::{self, XCommand};
use super::scope::ClientScope;
use crate::client::SmtpClient;
use crate::model::listener::Mechanism;
use crate::reply::{Enhanced, Reply};
use crate::{log_debug, log_info};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// After this many rejected commands the client is not worth serving (RFC 5321 §4.3.2 lets a
/// server end such a session); it protects the other sessions from a client spewing garbage.
const MAX_ERRORS: u32 = 10;

/// The client's address as the policy sees it: the socket's, or what a PROXY header,
/// XREMOTEIP or XCLIENT said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    /// `None` on a Unix socket.
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.ip, self.port) {
            (Some(IpAddr::V6(ip)), Some(p)) => write!(f, "[{ip}]:{p}"),
            (Some(ip), Some(p)) => write!(f, "{ip}:{p}"),
            (Some(ip), None) => write!(f, "{ip}"),
            (None, _) => f.write_str("unix"),
        }
    }
}

pub struct Helo {
    pub name: String,
    pub esmtp: bool,
}

pub struct Authenticated {
    pub user: String,
    pub mechanism: Mechanism,
}

/// A mail transaction, from MAIL to the end of DATA (or RSET).
pub struct Transaction {
    pub from: Path,
    pub mail: MailParams,
    /// Recipients accepted: into the spool, or by the upstream the session is bridged to.
    pub rcpts: Vec<Rcpt>,
    /// Bridged to the AUTH upstream (`deliver_through_upstream`): whether it holds this
    /// transaction's MAIL. Always false for mail going to the spool.
    pub relayed: bool,
}

/// The MAIL parameters this server understood.
#[derive(Clone, Debug, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: crate::spool::Body,
    /// DSN (RFC 3461): `RET=` and `ENVID=` (decoded).
    pub ret: Option<crate::spool::Ret>,
    pub envid: Option<String>,
}

/// An accepted recipient with its DSN parameters (RFC 3461 §4.1, §4.2).
#[derive(Clone, Debug)]
pub struct Rcpt {
    pub path: Path,
    pub notify: crate::spool::Notify,
    /// `ORCPT=` decoded from xtext: `rfc822;user@example.com`.
    pub orcpt: Option<String>,
}

pub enum Flow {
    Continue,
    Close,
}

pub struct Session {
    pub rt: Arc<Runtime>,
    pub conn: Connection,
    pub id: String,
    pub listen: usize,
    /// The Listen's address as acctlog writes it (`*:25`).
    pub local: String,
    pub client: ClientAddr,
    /// XCLIENT NAME, when a trusted peer told us the client's host name.
    pub client_name: Option<String>,
    pub scope: ClientScope,
    pub helo: Option<Helo>,
    /// Protocol version and cipher suite, once TLS is up.
    pub tls: Option<String>,
    pub auth: Option<Authenticated>,
    /// The connection context (`auth_status`, `can_relay`, XSETCONTEXT keys), in set order.
    pub context: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    pub txn: Option<Transaction>,
    /// The connection to the next hop, kept for the session's further transactions.
    pub hop: Option<SmtpClient>,
    pub messages: u32,
    /// The sending limits' hold on this session (slots, reservations), given back on drop.
    pub limits: crate::limits::SessionLimits,
    errors: u32,
}

impl Session {
    pub fn new(
        rt: Arc<Runtime>,
        conn: Connection,
        listen: usize,
        local: String,
        client: ClientAddr,
        scope: ClientScope,
    ) -> Session {
        let mut s = Session {
            id: rt.session_id(),
            rt,
            conn,
            listen,
            local,
            client,
            client_name: None,
            scope,
            helo: None,
            tls: None,
            auth: None,
            context: Vec::new(),
            txn: None,
            hop: None,
            messages: 0,
            limits: Default::default(),
            errors: 0,
        };
        s.conn.idle = s.scope.idle_time;
        s.update_relay_context();
        s
    }

    /// Queues a reply with an enhanced status code.
    pub fn reply(&mut self, code: u16, e: (u8, u16, u16), text: impl Into<Cow<'static, str>>) {
        self.conn
            .send(&Reply::new(code, Enhanced(e.0, e.1, e.2), text));
    }

    /// Counts a rejected command toward the session's error limit, and replies.
    pub fn reject(&mut self, code: u16, e: (u8, u16, u16), text: impl Into<Cow<'static, str>>) {
        self.errors += 1;
        self.reply(code, e, text);
    }

    pub async fn run(mut self) {
        log_debug!("session {}: connection from {}", self.id, self.client);
        self.greet();
        let mut phase = super::shutdown::subscribe();
        loop {
            let read = tokio::select! {
                r = self.conn.read_line(MAX_COMMAND_LINE) => r,
                // Stopping, past the drain deadline: between commands nothing is in flight,
                // so nothing acknowledged can be lost by closing here.
                () = super::shutdown::reached(&mut phase, super::shutdown::Phase::Closing) => {
                    self.reply(421, (4, 3, 2), "Service shutting down, try again later");
                    break;
                }
            };
            let line = match read {
                // AUTH's initial response is a credential: the line is wiped when done with.
                Ok(line) => zeroize::Zeroizing::new(line),
                Err(ReadError::TooLong) => {
                    self.reject(500, (5, 5, 2), "Line too long");
                    continue;
                }
                Err(ReadError::Idle) => {
                    self.reply(421, (4, 4, 2), "Idle timeout, closing connection");
                    break;
                }
                Err(ReadError::Closed | ReadError::Io(_)) => break,
            };
            let flow = match command::parse(&line) {
                Ok(cmd) => self.dispatch(cmd).await,
                Err(Invalid::Unknown(_)) => {
                    self.reject(500, (5, 5, 1), "Command unrecognized");
                    Flow::Continue
                }
                Err(Invalid::Syntax(why)) => {
                    self.reject(501, (5, 5, 4), format!("Syntax error: {why}"));
                    Flow::Continue
                }
                Err(Invalid::Address(why)) => {
                    self.reject(553, (5, 1, 3), format!("Bad address syntax: {why}"));
                    Flow::Continue
                }
            };
            if let Flow::Close = flow {
                break;
            }
            if self.errors >= MAX_ERRORS {
                self.reply(421, (4, 7, 0), "Too many errors, closing connection");
                break;
            }
        }
        self.conn.shutdown(self.tls.is_some()).await;
        self.abandon_hop().await;
        log_info!(
            "session {}: client={} helo={} tls={} user={} messages={}",
            self.id,
            self.client,
            self.helo.as_ref().map_or("-", |h| h.name.as_str()),
            self.tls.as_deref().unwrap_or("no"),
            self.auth.as_ref().map_or("-", |a| a.user.as_str()),
            self.messages
        );
    }

    async fn dispatch(&mut self, cmd: Command) -> Flow {
        if self.scope.require_ehlo
            && self.helo.is_none()
            && !matches!(
                cmd,
                Command::Helo(_)
                    | Command::Ehlo(_)
                    | Command::Quit
                    | Command::Noop
                    | Command::Rset
                    | Command::Help
                    | Command::Starttls
                    | Command::Xclient(_)
                    | Command::Xremoteip(_)
            )
        {
            // Require_EHLO: the ref page says 501, the responses table `550 5.5.1`; RFC 5321
            // calls a command out of sequence 503, which is what this is.
            self.reject(503, (5, 5, 1), "Send HELO/EHLO first");
            return Flow::Continue;
        }
        if matches!(cmd, Command::Mail { .. } | Command::Rset)
            && self.rt.generation != super::control::generation()
        {
            // Started under a configuration since reloaded: Momentum checks at MAIL and RSET,
            // answers 421 with Reconfig_Message, and closes; the client reconnects to the new.
            let message = self.rt.reconfig_message(self.listen);
            self.conn.send(&Reply::plain(421, message));
            return Flow::Close;
        }
        match cmd {
            // The phases that talk to a next hop or an upstream are boxed: their futures are
            // large, and a session waiting for its next command should not carry them (an
            // idle connection costs what its waiting future weighs).
            Command::Helo(name) => Box::pin(self.helo(name, false)).await,
            Command::Ehlo(name) => Box::pin(self.helo(name, true)).await,
            Command::Starttls => return Box::pin(self.starttls()).await,
            Command::Auth { mechanism, initial } => {
                return Box::pin(self.auth(&mechanism, initial)).await;
            }
            Command::Mail { from, params } => Box::pin(self.mail(from, params)).await,
            Command::Rcpt { to, params } => Box::pin(self.rcpt(to, params)).await,
            Command::Data => return Box::pin(self.data()).await,
            Command::Bdat => self.reject(502, (5, 5, 1), "BDAT not implemented"),
            Command::Rset => Box::pin(self.rset()).await,
            Command::Noop => self.reply(250, (2, 0, 0), "OK"),
            Command::Quit => {
                let host = self.scope.hostname.clone();
                self.reply(221, (2, 0, 0), format!("{host} closing connection"));
                return Flow::Close;
            }
            Command::Vrfy => self.reply(
                252,
                (2, 5, 2),
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Command::Expn => self.reject(502, (5, 5, 1), "EXPN not implemented"),
            Command::Help => self.reply(
                214,
                (2, 0, 0),
                "See RFC 5321: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS AUTH",
            ),
            Command::Xclient(attrs) => {
                if self.x_permitted(XCommand::Xclient) {
                    self.xclient(attrs);
                }
            }
            Command::Xremoteip(addr) => {
                if self.x_permitted(XCommand::Xremoteip) {
                    self.xremoteip(&addr);
                }
            }
            Command::Xsetcontext(pairs) => {
                if self.x_permitted(XCommand::Xsetcontext) {
                    self.xsetcontext(pairs);
                }
            }
            Command::Xdumpcontext => {
                if self.x_permitted(XCommand::Xdumpcontext) {
                    self.xdumpcontext();
                }
            }
        }
        Flow::Continue
    }

    /// Refuses an X-command the client's scope does not advertise, and logs it: these are
    /// trusted commands, and an attempt from elsewhere is worth an operator's attention.
    fn x_permitted(&mut self, cmd: XCommand) -> bool {
        if policy::x_command_permitted(&self.scope.extensions, cmd) {
            return true;
        }
        self.rt.metrics.x_command_refused(cmd.name());
        crate::log_warning!(
            "session {}: {} refused: not offered to {}",
            self.id,
            cmd.name(),
            self.client
        );
        self.reject(550, (5, 7, 0), format!("{} not permitted", cmd.name()));
        false
    }

    /// RSET: ends the transaction here and at the next hop.
    async fn rset(&mut self) {
        self.reset_transaction().await;
        self.reply(250, (2, 0, 0), "Reset OK");
    }

    /// Drops the current transaction, telling the next hop if it holds one.
    pub async fn reset_transaction(&mut self) {
        if let Some(txn) = self.txn.take()
            && txn.relayed
            && let Some(hop) = self.hop.as_mut()
        {
            match hop.command("RSET").await {
                Ok(r) if r.is_positive() => {}
                _ => self.abandon_hop().await,
            }
        }
    }

    /// Closes the next-hop connection (QUIT when it is idle; a connection dropped mid-DATA
    /// makes the next hop discard the partial message, which is what an abort must do).
    pub async fn abandon_hop(&mut self) {
        if let Some(hop) = self.hop.take() {
            hop.quit().await;
        }
    }

    /// Applies a new client address (PROXY header, XREMOTEIP, XCLIENT): the Peer scope, the
    /// extensions and the relay right all follow the address.
    pub fn set_client(&mut self, client: ClientAddr) {
        self.client = client;
        self.scope = ClientScope::resolve(&self.rt, self.listen, client.ip);
        self.conn.idle = self.scope.idle_time;
        self.update_relay_context();
    }

    /// Whether AUTH is offered to this client now (its mechanisms, and TLS first where
    /// STARTTLS is available).
    pub fn auth_offer(&self) -> policy::AuthOffer {
        policy::auth_offer(
            !self.scope.mechanisms.is_empty(),
            self.scope.starttls_available(),
            self.tls.is_some(),
        )
    }

    pub fn can_relay(&self) -> bool {
        policy::can_relay(self.scope.relay, self.auth.is_some())
    }

    pub fn update_relay_context(&mut self) {
        let v = if self.can_relay() { "true" } else { "false" };
        self.set_context("can_relay", v);
    }

    /// Sets a context key. Our own keys and most values are fixed words, borrowed: every
    /// session sets several, and copying them was an allocation each.
    pub fn set_context(
        &mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) {
        let (key, value) = (key.into(), value.into());
        match self.context.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.context.push((key, value)),
        }
    }
}
