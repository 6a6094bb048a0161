//! What operators watch: counters, gauges and latency histograms, served to Prometheus in its
//! text exposition format by [`http`] when a `Prometheus_Listener` is configured.
//!
//! The daemon creates one [`Metrics`] for its whole life and hands it to every configuration it
//! builds (a reload makes a new `listener::Runtime`, never new metrics, so counts survive it).
//! Counting is on the hot path, so it costs one relaxed atomic add and nothing else: every
//! label set an event can have is created up front (per mechanism and outcome here, per Listen,
//! upstream host and datasource when a configuration is built), and the handles kept; no lock
//! is taken and nothing is allocated per event. Labels are bounded by the configuration: never
//! a user name or a client address. Without a `Prometheus_Listener` nothing is counted at all.

pub mod histogram;
pub mod http;

use crate::model::listener::Mechanism;
use histogram::{Histogram, LOOKUP_BUCKETS, UPSTREAM_BUCKETS};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How an AUTH ended: Momentum's `EC_AUTH_OK`, `EC_AUTH_FAIL` and `EC_AUTH_ERROR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Pass, Outcome::Fail, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
        }
    }
}

/// Why a recipient was accepted, or that it was not (the option that decided).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay {
    RelayHosts,
    OpenRelay,
    Auth,
    RelayDomains,
    Postmaster,
    Denied,
}

impl Relay {
    const ALL: [Relay; 6] = [
        Relay::RelayHosts,
        Relay::OpenRelay,
        Relay::Auth,
        Relay::RelayDomains,
        Relay::Postmaster,
        Relay::Denied,
    ];

    fn label(self) -> &'static str {
        match self {
            Relay::RelayHosts => "relay_hosts",
            Relay::OpenRelay => "open_relay",
            Relay::Auth => "auth",
            Relay::RelayDomains => "relay_domains",
            Relay::Postmaster => "postmaster",
            Relay::Denied => "denied",
        }
    }
}

/// What a next-hop reply answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// Opening the connection: greeting, EHLO, XCLIENT.
    Connect,
    Mail,
    Rcpt,
    Data,
    /// The reply after the end of data: the next hop's verdict on the message.
    Message,
    Other,
}

impl NextHop {
    const ALL: [NextHop; 6] = [
        NextHop::Connect,
        NextHop::Mail,
        NextHop::Rcpt,
        NextHop::Data,
        NextHop::Message,
        NextHop::Other,
    ];

    /// The stage an envelope command line belongs to, by its verb.
    pub fn of_command(line: &str) -> NextHop {
        let verb = line.split(' ').next().unwrap_or(line);
        if verb.eq_ignore_ascii_case("MAIL") {
            NextHop::Mail
        } else if verb.eq_ignore_ascii_case("RCPT") {
            NextHop::Rcpt
        } else if verb.eq_ignore_ascii_case("DATA") {
            NextHop::Data
        } else {
            NextHop::Other
        }
    }

    fn label(self) -> &'static str {
        match self {
            NextHop::Connect => "connect",
            NextHop::Mail => "mail",
            NextHop::Rcpt => "rcpt",
            NextHop::Data => "data",
            NextHop::Message => "message",
            NextHop::Other => "other",
        }
    }
}

/// Reply classes; `error` is no reply at all (refused, reset, timed out, not SMTP).
const CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

fn class(code: Option<u16>) -> usize {
    match code {
        Some(200..=299) => 0,
        Some(300..=399) => 1,
        Some(400..=499) => 2,
        Some(500..=599) => 3,
        _ => 4,
    }
}

/// Which TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// A client's STARTTLS.
    Starttls,
    /// `Use_SSL`: TLS from the first byte.
    Implicit,
    /// Ours, to the AUTH upstream.
    Upstream,
}

impl Tls {
    const ALL: [Tls; 3] = [Tls::Starttls, Tls::Implicit, Tls::Upstream];

    fn label(self) -> &'static str {
        match self {
            Tls::Starttls => "starttls",
            Tls::Implicit => "implicit",
            Tls::Upstream => "upstream",
        }
    }
}

/// How a datasource lookup was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// From the cache, within `cache_life`.
    Hit,
    /// From the database (or its failure, with nothing cached to fall back on).
    Miss,
    /// The database failed and an answer past `cache_life` was served.
    Stale,
}

impl Cache {
    const ALL: [Cache; 3] = [Cache::Hit, Cache::Miss, Cache::Stale];

    fn label(self) -> &'static str {
        match self {
            Cache::Hit => "hit",
            Cache::Miss => "miss",
            Cache::Stale => "stale",
        }
    }
}

/// How a delivery attempt from the spool ended (for the spool's delivery code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// A temporary failure: the message stays queued.
    Deferred,
    /// A permanent failure: the message leaves the queue undelivered.
    Failed,
}

impl Delivery {
    const ALL: [Delivery; 3] = [Delivery::Delivered, Delivery::Deferred, Delivery::Failed];

    fn label(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Deferred => "deferred",
            Delivery::Failed => "failed",
        }
    }
}

/// The mechanisms counted, each with its slot. A new mechanism fails to compile in [`slot`]
/// until it is added here.
const MECHANISMS: [Mechanism; 5] = [
    Mechanism::Login,
    Mechanism::Plain,
    Mechanism::CramMd5,
    Mechanism::OAuthBearer,
    Mechanism::XOAuth2,
];

fn slot(m: Mechanism) -> usize {
    match m {
        Mechanism::Login => 0,
        Mechanism::Plain => 1,
        Mechanism::CramMd5 => 2,
        Mechanism::OAuthBearer => 3,
        Mechanism::XOAuth2 => 4,
    }
}

const X_COMMANDS: [&str; 4] = ["XCLIENT", "XREMOTEIP", "XSETCONTEXT", "XDUMPCONTEXT"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenLabel {
    listen: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    mechanism: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOutcome {
    upstream: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatasourceLabel {
    datasource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    datasource: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplyLabels {
    command: &'static str,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the daemon exports, and the handles to count them.
pub struct Metrics {
    /// Whether anything is counted (a `Prometheus_Listener` is configured).
    on: Arc<AtomicBool>,
    registry: Registry,
    sessions_open: Family<ListenLabel, Gauge>,
    sessions: Family<ListenLabel, Counter>,
    sessions_refused: Family<ListenLabel, Counter>,
    auth: [[Counter; 3]; MECHANISMS.len()],
    auth_throttled: Counter,
    upstream_auth: Family<UpstreamOutcome, Counter>,
    upstream_latency: HistogramFamily<UpstreamLabel>,
    cache: Family<CacheLabels, Counter>,
    lookup_errors: Family<DatasourceLabel, Counter>,
    lookup_latency: HistogramFamily<DatasourceLabel>,
    relay: [Counter; Relay::ALL.len()],
    x_refused: [Counter; X_COMMANDS.len()],
    messages: Counter,
    bytes: Counter,
    next_hop: [[Counter; CLASSES.len()]; NextHop::ALL.len()],
    tls: [[Counter; 2]; Tls::ALL.len()],
    reloads: [Counter; 2],
    last_reload_ok: Gauge,
    last_reload_time: FloatGauge,
    sending_limit_refusals: Counter,
    shared_counters_errors: Counter,
    queue_messages: Gauge,
    queue_oldest: FloatGauge,
    /// The spool's own counts (messages stored, file syncs, directory syncs), and the values
    /// last added, so that each update adds what is new.
    spool: [Counter; 3],
    spool_seen: [AtomicU64; 3],
    deliveries: [Counter; Delivery::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family registered, the fixed label sets created; counting starts switched off.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("smtp_auth_proxy");
        let sessions_open = Family::<ListenLabel, Gauge>::default();
        r.register(
            "sessions_open",
            "Client sessions open now, per Listen",
            sessions_open.clone(),
        );
        let sessions = Family::<ListenLabel, Counter>::default();
        r.register(
            "sessions",
            "Client connections accepted and served, per Listen",
            sessions.clone(),
        );
        let sessions_refused = Family::<ListenLabel, Counter>::default();
        r.register(
            "sessions_refused",
            "Client connections refused with 421 because Listener_Sessions was reached, per Listen",
            sessions_refused.clone(),
        );
        let auth_family = Family::<AuthLabels, Counter>::default();
        r.register(
            "auth_attempts",
            "AUTH exchanges a back end decided, by mechanism and outcome (pass 235, fail 535, error 454)",
            auth_family.clone(),
        );
        let auth = MECHANISMS.map(|m| {
            Outcome::ALL.map(|o| {
                auth_family.get_or_create_owned(&AuthLabels {
                    mechanism: m.name(),
                    outcome: o.label(),
                })
            })
        });
        let auth_throttled = Counter::default();
        r.register(
            "auth_throttled",
            "AUTH attempts refused with 454 by Auth_Failure_Limit without asking the back end",
            auth_throttled.clone(),
        );
        let upstream_auth = Family::<UpstreamOutcome, Counter>::default();
        r.register(
            "upstream_auth",
            "AUTH attempts on each upstream host (a configured host, or datasource for a host a datasource named), by outcome",
            upstream_auth.clone(),
        );
        let upstream_latency: HistogramFamily<UpstreamLabel> =
            Family::new_with_constructor(|| Histogram::new(UPSTREAM_BUCKETS));
        r.register(
            "upstream_auth_duration_seconds",
            "Time from the start of an AUTH attempt on an upstream host to its verdict or error",
            upstream_latency.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        r.register(
            "datasource_cache",
            "Datasource lookups by how they were answered: hit (cached), miss (asked the database), stale (database failed, expired answer served)",
            cache.clone(),
        );
        let lookup_errors = Family::<DatasourceLabel, Counter>::default();
        r.register(
            "datasource_lookup_errors",
            "Datasource queries that failed or timed out",
            lookup_errors.clone(),
        );
        let lookup_latency: HistogramFamily<DatasourceLabel> =
            Family::new_with_constructor(|| Histogram::new(LOOKUP_BUCKETS));
        r.register(
            "datasource_lookup_duration_seconds",
            "Time a datasource query took, queueing for a connection included",
            lookup_latency.clone(),
        );
        let relay_family = Family::<DecisionLabel, Counter>::default();
        r.register(
            "relay_decisions",
            "RCPT relay decisions: granted by relay_hosts, open_relay, auth, relay_domains or postmaster, or denied",
            relay_family.clone(),
        );
        let relay = Relay::ALL.map(|d| {
            relay_family.get_or_create_owned(&DecisionLabel {
                decision: d.label(),
            })
        });
        let x_family = Family::<CommandLabel, Counter>::default();
        r.register(
            "xcommand_refusals",
            "X-commands refused because the client's scope does not offer them",
            x_family.clone(),
        );
        let x_refused =
            X_COMMANDS.map(|c| x_family.get_or_create_owned(&CommandLabel { command: c }));
        let messages = Counter::default();
        r.register(
            "messages_relayed",
            "Messages the next hop accepted at the end of DATA",
            messages.clone(),
        );
        let bytes = Counter::default();
        r.register(
            "relayed_message_bytes",
            "Size of the messages the next hop accepted, as the client sent them",
            bytes.clone(),
        );
        let hop_family = Family::<ReplyLabels, Counter>::default();
        r.register(
            "next_hop_replies",
            "Next-hop replies by command and class (error: no reply, the connection failed)",
            hop_family.clone(),
        );
        let next_hop = NextHop::ALL.map(|h| {
            CLASSES.map(|c| {
                hop_family.get_or_create_owned(&ReplyLabels {
                    command: h.label(),
                    class: c,
                })
            })
        });
        let tls_family = Family::<TlsLabels, Counter>::default();
        r.register(
            "tls_handshakes",
            "TLS handshakes by kind (starttls, implicit, upstream) and result (ok, failed)",
            tls_family.clone(),
        );
        let tls = Tls::ALL.map(|k| {
            ["ok", "failed"].map(|result| {
                tls_family.get_or_create_owned(&TlsLabels {
                    kind: k.label(),
                    result,
                })
            })
        });
        let reload_family = Family::<ResultLabel, Counter>::default();
        r.register(
            "reloads",
            "Configuration reloads (SIGHUP) by result: success, or failure (the old configuration serves on)",
            reload_family.clone(),
        );
        let reloads = ["success", "failure"]
            .map(|result| reload_family.get_or_create_owned(&ResultLabel { result }));
        let last_reload_ok = Gauge::default();
        r.register(
            "config_last_reload_successful",
            "1 if the last configuration reload succeeded (or none was tried), 0 if it failed",
            last_reload_ok.clone(),
        );
        let last_reload_time = FloatGauge::default();
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded, in seconds since the epoch",
            last_reload_time.clone(),
        );
        let sending_limit_refusals = Counter::default();
        r.register(
            "sending_limit_refusals",
            "Messages or recipients refused because a sending limit was reached",
            sending_limit_refusals.clone(),
        );
        let shared_counters_errors = Counter::default();
        r.register(
            "shared_counters_errors",
            "Exchanges with the Shared_Counters store (Redis) that failed or timed out, or were not tried during an outage",
            shared_counters_errors.clone(),
        );
        let queue_messages = Gauge::default();
        r.register(
            "queue_messages",
            "Messages in the spool waiting for delivery",
            queue_messages.clone(),
        );
        let queue_oldest = FloatGauge::default();
        r.register(
            "queue_oldest_message_age_seconds",
            "Age of the oldest message in the spool (0 when it is empty)",
            queue_oldest.clone(),
        );
        let spool: [Counter; 3] = Default::default();
        for (c, (name, help)) in spool.iter().zip([
            (
                "spool_messages_stored",
                "Messages the spool made durable (each acknowledged with 250)",
            ),
            (
                "spool_file_syncs",
                "fdatasync calls of the spool's message files",
            ),
            (
                "spool_directory_syncs",
                "fsync calls of the spool's queue directory (one serves a whole group commit)",
            ),
        ]) {
            r.register(name, help, c.clone());
        }
        let delivery_family = Family::<OutcomeLabel, Counter>::default();
        r.register(
            "deliveries",
            "Delivery attempts from the spool by outcome: delivered, deferred (temporary failure), failed (permanent)",
            delivery_family.clone(),
        );
        let deliveries = Delivery::ALL
            .map(|d| delivery_family.get_or_create_owned(&OutcomeLabel { outcome: d.label() }));
        let build = Family::<VersionLabel, Gauge>::default();
        r.register(
            "build_info",
            "The running version, as a label; the value is always 1",
            build.clone(),
        );
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        Metrics {
            on: Arc::new(AtomicBool::new(false)),
            registry: r,
            sessions_open,
            sessions,
            sessions_refused,
            auth,
            auth_throttled,
            upstream_auth,
            upstream_latency,
            cache,
            lookup_errors,
            lookup_latency,
            relay,
            x_refused,
            messages,
            bytes,
            next_hop,
            tls,
            reloads,
            last_reload_ok,
            last_reload_time,
            sending_limit_refusals,
            shared_counters_errors,
            queue_messages,
            queue_oldest,
            spool,
            spool_seen: Default::default(),
            deliveries,
        }
    }

    /// Switches counting on or off (on while a `Prometheus_Listener` is configured).
    pub fn set_enabled(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The counters of one Listen, by its configured address.
    pub fn listen(&self, listen: &str) -> ListenCounters {
        let label = ListenLabel {
            listen: listen.to_owned(),
        };
        ListenCounters {
            on: self.on.clone(),
            open: self.sessions_open.get_or_create_owned(&label),
            total: self.sessions.get_or_create_owned(&label),
            refused: self.sessions_refused.get_or_create_owned(&label),
        }
    }

    /// The counters of one upstream host (`host:port` as configured, or `datasource`).
    pub fn upstream(&self, upstream: &str) -> UpstreamCounters {
        UpstreamCounters {
            on: self.on.clone(),
            outcomes: Outcome::ALL.map(|o| {
                self.upstream_auth.get_or_create_owned(&UpstreamOutcome {
                    upstream: upstream.to_owned(),
                    outcome: o.label(),
                })
            }),
            latency: self.upstream_latency.get_or_create_owned(&UpstreamLabel {
                upstream: upstream.to_owned(),
            }),
        }
    }

    /// The counters of one `Datasource`, by name.
    pub fn datasource(&self, name: &str) -> DatasourceCounters {
        let label = DatasourceLabel {
            datasource: name.to_owned(),
        };
        DatasourceCounters {
            on: self.on.clone(),
            cache: Cache::ALL.map(|c| {
                self.cache.get_or_create_owned(&CacheLabels {
                    datasource: name.to_owned(),
                    result: c.label(),
                })
            }),
            errors: self.lookup_errors.get_or_create_owned(&label),
            latency: self.lookup_latency.get_or_create_owned(&label),
        }
    }

    /// An AUTH a back end decided (or could not).
    pub fn auth(&self, mechanism: Mechanism, outcome: Outcome) {
        if self.enabled() {
            self.auth[slot(mechanism)][outcome as usize].inc();
        }
    }

    /// An AUTH refused by `Auth_Failure_Limit` before any back end was asked.
    pub fn auth_throttled(&self) {
        if self.enabled() {
            self.auth_throttled.inc();
        }
    }

    pub fn relay(&self, decision: Relay) {
        if self.enabled() {
            self.relay[decision as usize].inc();
        }
    }

    /// An X-command (by its name, `XCLIENT`…) refused to a client whose scope lacks it.
    pub fn x_command_refused(&self, command: &str) {
        let i = X_COMMANDS.iter().position(|c| *c == command);
        debug_assert!(i.is_some(), "{command} is not an X-command counted here");
        if let Some(i) = i.filter(|_| self.enabled()) {
            self.x_refused[i].inc();
        }
    }

    /// A message the next hop accepted, `bytes` long as the client sent it.
    pub fn message_relayed(&self, bytes: u64) {
        if self.enabled() {
            self.messages.inc();
            self.bytes.inc_by(bytes);
        }
    }

    /// A next-hop reply (`None`: no reply, the connection failed).
    pub fn next_hop(&self, stage: NextHop, code: Option<u16>) {
        if self.enabled() {
            self.next_hop[stage as usize][class(code)].inc();
        }
    }

    pub fn tls(&self, kind: Tls, ok: bool) {
        if self.enabled() {
            self.tls[kind as usize][usize::from(!ok)].inc();
        }
    }

    /// The configuration in force was loaded now (at start, and after each good reload).
    pub fn loaded(&self) {
        self.last_reload_ok.set(1);
        self.last_reload_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
    }

    /// A reload (SIGHUP) ended; a good one is also [`Metrics::loaded`].
    pub fn reload(&self, ok: bool) {
        if !self.enabled() {
            return;
        }
        self.reloads[usize::from(!ok)].inc();
        if ok {
            self.loaded();
        } else {
            self.last_reload_ok.set(0);
        }
    }

    /// For the sending limits: a message or recipient refused because a limit was reached.
    pub fn sending_limit_refused(&self) {
        if self.enabled() {
            self.sending_limit_refusals.inc();
        }
    }

    /// An exchange with the Shared_Counters store that failed (or was not tried: it is down).
    pub fn shared_counters_error(&self) {
        if self.enabled() {
            self.shared_counters_errors.inc();
        }
    }

    /// For the spool: what it holds now, and the age of its oldest message (`None`: empty).
    pub fn set_queue(&self, messages: u64, oldest: Option<Duration>) {
        if self.enabled() {
            self.queue_messages
                .set(i64::try_from(messages).unwrap_or(i64::MAX));
            self.queue_oldest
                .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
        }
    }

    /// For the spool: its counts since it was opened (messages stored, file syncs, directory
    /// syncs), read now and then; the counters go up by what is new.
    pub fn set_spool(&self, counts: [u64; 3]) {
        if self.enabled() {
            for ((c, seen), now) in self.spool.iter().zip(&self.spool_seen).zip(counts) {
                let before = seen.swap(now, Ordering::Relaxed);
                c.inc_by(now.saturating_sub(before));
            }
        }
    }

    /// For the spool's delivery: how one delivery attempt ended.
    pub fn delivery(&self, outcome: Delivery) {
        if self.enabled() {
            self.deliveries[outcome as usize].inc();
        }
    }
}

/// One Listen's session counters.
#[derive(Clone)]
pub struct ListenCounters {
    on: Arc<AtomicBool>,
    open: Gauge,
    total: Counter,
    refused: Counter,
}

impl ListenCounters {
    /// A session starts; it counts as open until the returned value is dropped.
    pub fn session(&self) -> OpenSession {
        if !self.on.load(Ordering::Relaxed) {
            return OpenSession(None);
        }
        self.total.inc();
        self.open.inc();
        OpenSession(Some(self.open.clone()))
    }

    /// A connection refused because `Listener_Sessions` was reached.
    pub fn refused(&self) {
        if self.on.load(Ordering::Relaxed) {
            self.refused.inc();
        }
    }
}

/// An open session, as counted (only a session that was counted is uncounted when it ends).
pub struct OpenSession(Option<Gauge>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.dec();
        }
    }
}

/// One upstream host's counters.
pub struct UpstreamCounters {
    on: Arc<AtomicBool>,
    outcomes: [Counter; 3],
    latency: Histogram,
}

impl UpstreamCounters {
    /// An AUTH attempt on this host starts now.
    pub fn attempt(&self) -> UpstreamAttempt<'_> {
        UpstreamAttempt {
            counters: self,
            started: self.on.load(Ordering::Relaxed).then(Instant::now),
        }
    }
}

/// An AUTH attempt on one upstream host, timed from its start. One dropped without
/// [`UpstreamAttempt::finish`] is an error: whatever ended it (a refused connection, a timeout
/// that cancelled it) left no verdict.
pub struct UpstreamAttempt<'a> {
    counters: &'a UpstreamCounters,
    started: Option<Instant>,
}

impl UpstreamAttempt<'_> {
    /// The host gave its verdict.
    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    /// The attempt goes on elsewhere (a CRAM-MD5 challenge: the verdict is counted when the
    /// client's answer comes back); nothing is counted for this part.
    pub fn hand_over(mut self) {
        self.started = None;
    }

    fn record(&mut self, outcome: Outcome) {
        if let Some(t) = self.started.take() {
            self.counters.outcomes[outcome as usize].inc();
            self.counters.latency.observe(t.elapsed());
        }
    }
}

impl Drop for UpstreamAttempt<'_> {
    fn drop(&mut self) {
        self.record(Outcome::Error);
    }
}

/// One datasource's counters.
pub struct DatasourceCounters {
    on: Arc<AtomicBool>,
    cache: [Counter; 3],
    errors: Counter,
    latency: Histogram,
}

impl DatasourceCounters {
    pub fn cache(&self, result: Cache) {
        if self.on.load(Ordering::Relaxed) {
            self.cache[result as usize].inc();
        }
    }

    /// A database query starts now.
    pub fn query(&self) -> Query<'_> {
        Query {
            counters: self,
            started: self.on.load(Ordering::Relaxed).then(Instant::now),
        }
    }
}

/// A datasource query, timed from its start; dropped unfinished, it failed.
pub struct Query<'a> {
    counters: &'a DatasourceCounters,
    started: Option<Instant>,
}

impl Query<'_> {
    pub fn finish(mut self, ok: bool) {
        self.record(ok);
    }

    fn record(&mut self, ok: bool) {
        if let Some(t) = self.started.take() {
            self.counters.latency.observe(t.elapsed());
            if !ok {
                self.counters.errors.inc();
            }
        }
    }
}

impl Drop for Query<'_> {
    fn drop(&mut self) {
        self.record(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mechanism_has_its_own_slot() {
        for (i, m) in MECHANISMS.iter().enumerate() {
            assert_eq!(slot(*m), i, "{m:?}");
        }
    }

    #[test]
    fn nothing_is_counted_while_switched_off() {
        let m = Metrics::new();
        let listen = m.listen("127.0.0.1:25");
        m.auth(Mechanism::Plain, Outcome::Pass);
        drop(listen.session());
        assert!(m.encode().contains(
            "smtp_auth_proxy_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"pass\"} 0\n"
        ));
        m.set_enabled(true);
        m.auth(Mechanism::Plain, Outcome::Pass);
        let open = listen.session();
        // Switched off while the session is open: its end is still uncounted.
        m.set_enabled(false);
        let text = m.encode();
        assert!(text.contains(
            "smtp_auth_proxy_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"pass\"} 1\n"
        ));
        assert!(text.contains("smtp_auth_proxy_sessions_open{listen=\"127.0.0.1:25\"} 1\n"));
        drop(open);
        assert!(
            m.encode()
                .contains("smtp_auth_proxy_sessions_open{listen=\"127.0.0.1:25\"} 0\n")
        );
    }

    #[test]
    fn an_upstream_attempt_dropped_without_a_verdict_is_an_error() {
        let m = Metrics::new();
        m.set_enabled(true);
        let up = m.upstream("mx.example:25");
        drop(up.attempt());
        up.attempt().finish(Outcome::Pass);
        up.attempt().hand_over();
        let text = m.encode();
        for (outcome, n) in [("error", 1), ("pass", 1), ("fail", 0)] {
            let line = format!(
                "smtp_auth_proxy_upstream_auth_total{{upstream=\"mx.example:25\",outcome=\"{outcome}\"}} {n}\n"
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert_eq!(up.latency.count(), 2);
    }

    #[test]
    fn next_hop_stages_and_classes() {
        assert_eq!(NextHop::of_command("MAIL FROM:<a@b>"), NextHop::Mail);
        assert_eq!(NextHop::of_command("rcpt TO:<a@b>"), NextHop::Rcpt);
        assert_eq!(NextHop::of_command("RSET"), NextHop::Other);
        assert_eq!(CLASSES[class(Some(250))], "2xx");
        assert_eq!(CLASSES[class(Some(354))], "3xx");
        assert_eq!(CLASSES[class(Some(451))], "4xx");
        assert_eq!(CLASSES[class(Some(554))], "5xx");
        assert_eq!(CLASSES[class(None)], "error");
        assert_eq!(CLASSES[class(Some(999))], "error");
    }
}
