//! Delivery: from a queued message to the next hop, as Momentum routes it.
//!
//! [`Delivery::open`] resolves a recipient domain's next hops (its `Domain` scope's or the
//! global `Gateway`/`Routes`, else its MX; `Skip_Hosts` and `Prohibited_Hosts` applied) and
//! connects to the first address that answers, with EHLO, STARTTLS as `TLS` asks, and the
//! XCLIENT check. [`Outbound::deliver`] then sends messages on that connection one after the
//! other, each with XCLIENT for its own client and MAIL/RCPT/DATA pipelined, and reports an
//! [`Outcome`] per recipient. Limits on connections (`Max_Outbound_Connections`,
//! `Server_Max_Outbound_Connections`) and retries belong to the queue manager above.
//!
//! Every wait is bounded by Momentum's per-stage timeouts (`Connect_Timeout`,
//! `EHLO_Timeout`, `MAILFROM_Timeout`, `RCPTTO_Timeout`, `Body_Timeout`, `RSET_Timeout`).

mod conn;
mod content;
pub mod message;
pub mod outcome;
pub mod route;
mod session;
mod tls;
mod transaction;

pub use message::{Body, Notify, Origin, OutboundMessage, Recipient, Ret};
pub use outcome::{Disposition, Failure, MessageOutcome, Outcome, Stage};
pub use route::Hop;
pub use session::Outbound;
pub use transaction::INLINE_BDAT;

use crate::dns::Resolver;
use crate::log_info;
use crate::model::outbound::Routing;
use crate::model::outbound::{DomainSettings, EhloHostname};
use session::NotReady;
use std::net::SocketAddr;
use std::sync::Arc;

/// What every connection of one configuration shares.
pub(crate) struct Ctx {
    routing: Routing,
    resolver: Arc<Resolver>,
    /// This machine's name, for `EHLO_Hostname = __hostname__`.
    hostname: String,
    tls: tls::TlsConfigs,
}

/// The delivery side of one configuration.
#[derive(Clone)]
pub struct Delivery {
    ctx: Arc<Ctx>,
}

impl Delivery {
    /// Builds delivery for `routing`. Fails when a TLS configuration it asks for cannot be
    /// built (an unreadable `TLS_CA`).
    pub fn new(
        routing: &Routing,
        resolver: Arc<Resolver>,
        hostname: &str,
    ) -> Result<Delivery, String> {
        let mut all: Vec<DomainSettings> = routing
            .domains
            .iter()
            .map(|d| routing.for_domain(&d.name))
            .collect();
        all.push(routing.for_domain(""));
        let tls = tls::TlsConfigs::build(&all)?;
        Ok(Delivery {
            ctx: Arc::new(Ctx {
                routing: routing.clone(),
                resolver,
                hostname: hostname.to_owned(),
                tls,
            }),
        })
    }

    /// The settings in force for `domain` (limits and timeouts for the queue manager).
    pub fn settings(&self, domain: &str) -> DomainSettings {
        self.ctx.routing.for_domain(domain)
    }

    /// Where mail for `domain` would go, in order; `Err` is the outcome for its recipients
    /// (permanent for a null MX, a domain that does not exist, or a prohibited host).
    pub async fn next_hops(&self, domain: &str) -> Result<Vec<Hop>, Outcome> {
        let settings = self.settings(domain);
        route::next_hops(&self.ctx.resolver, &self.ctx.routing, &settings, domain).await
    }

    /// Opens a connection for mail to `domain`: each address of each next hop in turn until
    /// one is ready. `first_sender` is the envelope sender of the first message, for
    /// `EHLO_Hostname = __message__`.
    pub async fn open(&self, domain: &str, first_sender: &str) -> Result<Outbound, Failure> {
        let settings = self.settings(domain);
        let hops = route::next_hops(&self.ctx.resolver, &self.ctx.routing, &settings, domain)
            .await
            .map_err(|outcome| Failure {
                outcome,
                remote: None,
            })?;
        self.open_hops(domain, &hops, first_sender).await
    }

    /// As [`Delivery::open`], with next hops already resolved.
    pub async fn open_hops(
        &self,
        domain: &str,
        hops: &[Hop],
        first_sender: &str,
    ) -> Result<Outbound, Failure> {
        let settings = self.settings(domain);
        let ehlo = self.ehlo_name(&settings, first_sender);
        let mut last = None;
        for hop in hops {
            for ip in &hop.addrs {
                let addr = SocketAddr::new(*ip, hop.port);
                for plain_only in [false, true] {
                    let attempt = Outbound::establish(
                        self.ctx.clone(),
                        settings.clone(),
                        &hop.name,
                        addr,
                        &ehlo,
                        plain_only,
                    )
                    .await;
                    match attempt {
                        Ok(out) => return Ok(out),
                        Err(NotReady::RetryPlain(f)) => {
                            log_info!(
                                "delivery to {domain}: {}; trying again without TLS",
                                f.outcome
                            );
                            last = Some(f);
                        }
                        Err(NotReady::Failed(f)) => {
                            // The queue logs the attempt's outcome; each address tried is
                            // worth a line only when looking closely.
                            crate::log_debug!("delivery to {domain}: {}", f.outcome);
                            last = Some(f);
                            break;
                        }
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| Failure {
            outcome: Outcome::transient(
                crate::reply::Enhanced(4, 4, 4),
                format!("no address to deliver mail for {domain} to"),
                Stage::NotConnected,
            ),
            remote: None,
        }))
    }

    /// The name to say EHLO with, as `EHLO_Hostname` asks.
    fn ehlo_name(&self, settings: &DomainSettings, first_sender: &str) -> String {
        match &settings.ehlo_hostname {
            EhloHostname::Hostname => self.ctx.hostname.clone(),
            EhloHostname::Name(n) => n.clone(),
            EhloHostname::Message => first_sender
                .rsplit_once('@')
                .map(|(_, d)| d)
                .filter(|d| crate::model::addr::is_hostname(d))
                .unwrap_or(&self.ctx.hostname)
                .to_owned(),
        }
    }
}
