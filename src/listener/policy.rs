//! Every policy decision of the listener, in one place, each named after the option that
//! drives it: who may relay (`open_relay`, `relay_hosts`, authentication, `relay_domains`),
//! who may use the X-commands (`SMTP_Extensions` placement), and where AUTH is offered.
//!
//! The address these decisions use is always the session's effective client address: the PROXY
//! header's, then XREMOTEIP's or XCLIENT's, as Momentum documents for relay_hosts and Peer
//! matching. The session recomputes its scope whenever that address changes.

use super::command::Path;
use crate::model::addr::Cidr;
use crate::model::listener::{Effective, Extensions};
use crate::model::routing::DomainPattern;
use std::net::IpAddr;

/// The relay right a client has before it authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayRight {
    /// `open_relay = true` in the client's scope.
    OpenRelay,
    /// The client's address is in the effective `relay_hosts` (this block).
    RelayHost(Cidr),
    None,
}

/// `open_relay` and `relay_hosts`. A listener's relay_hosts replaces the global list (the
/// effective lookup returns the most specific one). A client on a Unix socket has no address,
/// so only open_relay can grant it relaying.
pub fn relay_right(e: &Effective, client: Option<IpAddr>) -> RelayRight {
    if e.open_relay().is_some_and(|o| o.value) {
        return RelayRight::OpenRelay;
    }
    let hosts = e.relay_hosts().map(|h| h.value.as_slice()).unwrap_or(&[]);
    match client.and_then(|ip| hosts.iter().find(|c| c.contains(ip))) {
        Some(c) => RelayRight::RelayHost(*c),
        None => RelayRight::None,
    }
}

/// May this client relay at all (`can_relay` in the connection context)? Relay hosts and open
/// relay need no authentication; anyone else needs it.
pub fn can_relay(right: RelayRight, authenticated: bool) -> bool {
    right != RelayRight::None || authenticated
}

/// Why a recipient is accepted; `None` means `550 5.7.1 relaying denied`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcptGrant {
    /// The client may relay (open_relay, relay_hosts or AUTH).
    Relay,
    /// The recipient's domain is in `relay_domains`, accepted from anyone.
    RelayDomain,
    /// `<postmaster>`, which RFC 5321 §4.5.1 requires every server to accept.
    Postmaster,
}

pub fn rcpt_grant(
    can_relay: bool,
    relay_domains: Option<&[DomainPattern]>,
    to: &Path,
) -> Option<RcptGrant> {
    if can_relay {
        return Some(RcptGrant::Relay);
    }
    match to {
        Path::Postmaster => Some(RcptGrant::Postmaster),
        Path::Mailbox(m) if routes_onward(&m.local) => None,
        Path::Mailbox(m) => relay_domains
            .unwrap_or(&[])
            .iter()
            .any(|p| p.matches(&m.domain))
            .then_some(RcptGrant::RelayDomain),
        Path::Null => None,
    }
}

/// Whether a local part asks the receiving system to route the mail on: the percent hack
/// (`user%elsewhere@here`), a UUCP bang path (`elsewhere!user@here`), or an address inside a
/// quoted local part (`"user@elsewhere"@here`). A next hop that honours any of these (Postfix
/// does for its own domains) would relay for anyone who can reach a relay_domains address, so
/// without a relay right such recipients are refused, as Postfix's `reject_unauth_destination`
/// refuses them. Checked on the local part as written, quotes and escapes included.
pub fn routes_onward(local: &str) -> bool {
    local.contains(['%', '!', '@'])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XCommand {
    Xclient,
    Xremoteip,
    Xsetcontext,
    Xdumpcontext,
}

impl XCommand {
    pub fn name(self) -> &'static str {
        match self {
            XCommand::Xclient => "XCLIENT",
            XCommand::Xremoteip => "XREMOTEIP",
            XCommand::Xsetcontext => "XSETCONTEXT",
            XCommand::Xdumpcontext => "XDUMPCONTEXT",
        }
    }
}

/// An X-command is honoured only where the client's effective `SMTP_Extensions` lists it:
/// placing it in a trusted Peer is Momentum's only access control for these commands.
pub fn x_command_permitted(ext: &Extensions, cmd: XCommand) -> bool {
    match cmd {
        XCommand::Xclient => ext.xclient,
        XCommand::Xremoteip => ext.xremoteip,
        XCommand::Xsetcontext => ext.xsetcontext,
        XCommand::Xdumpcontext => ext.xdumpcontext,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOffer {
    Offered,
    /// Configured, but STARTTLS is available and not yet done: passwords wait for TLS
    /// (RFC 4954 §6: `538 5.7.11 Encryption required for requested authentication mechanism`).
    StarttlsFirst,
    NotOffered,
}

/// Where AUTH is offered. With STARTTLS available, AUTH waits for it, so no password crosses
/// the network in clear text by a client's mistake; without STARTTLS, the configuration asked
/// for clear-text AUTH (and `--check-config` warned about it).
pub fn auth_offer(has_mechanisms: bool, starttls_available: bool, tls_active: bool) -> AuthOffer {
    if !has_mechanisms {
        AuthOffer::NotOffered
    } else if starttls_available && !tls_active {
        AuthOffer::StarttlsFirst
    } else {
        AuthOffer::Offered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::command::Mailbox;

    fn to(domain: &str) -> Path {
        Path::Mailbox(Mailbox {
            local: "u".into(),
            domain: domain.into(),
        })
    }

    #[test]
    fn recipients() {
        let domains = [DomainPattern::Exact("example.com".into())];
        assert_eq!(rcpt_grant(true, None, &to("x.org")), Some(RcptGrant::Relay));
        assert_eq!(rcpt_grant(false, Some(&domains), &to("x.org")), None);
        assert_eq!(
            rcpt_grant(false, Some(&domains), &to("EXAMPLE.com")),
            Some(RcptGrant::RelayDomain)
        );
        assert_eq!(
            rcpt_grant(false, None, &Path::Postmaster),
            Some(RcptGrant::Postmaster)
        );
    }

    #[test]
    fn relay_domains_do_not_open_sender_specified_routing() {
        let domains = [DomainPattern::Exact("relay.example".into())];
        let local = |l: &str| {
            Path::Mailbox(Mailbox {
                local: l.into(),
                domain: "relay.example".into(),
            })
        };
        for routed in [
            "v%victim.example",
            "victim.example!v",
            "\"v@victim.example\"",
        ] {
            assert_eq!(
                rcpt_grant(false, Some(&domains), &local(routed)),
                None,
                "{routed}"
            );
            // A client with a relay right may send to anything anyway.
            assert_eq!(
                rcpt_grant(true, Some(&domains), &local(routed)),
                Some(RcptGrant::Relay)
            );
        }
        assert_eq!(
            rcpt_grant(false, Some(&domains), &local("plain.user+tag")),
            Some(RcptGrant::RelayDomain)
        );
    }

    #[test]
    fn auth_waits_for_tls() {
        assert_eq!(auth_offer(true, true, false), AuthOffer::StarttlsFirst);
        assert_eq!(auth_offer(true, true, true), AuthOffer::Offered);
        assert_eq!(auth_offer(true, false, false), AuthOffer::Offered);
        assert_eq!(auth_offer(false, true, true), AuthOffer::NotOffered);
    }
}
