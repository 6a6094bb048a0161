//! The queue manager: one owner of the queue's state, driven by events (a message submitted, a
//! connection's report, a retry falling due, an operator's command).
//!
//! A message is split by recipient domain; each (message, domain) pair is a unit of work with
//! its own attempts and next attempt, so a message with three recipients and one transient
//! failure is tried again for that one only. Each domain has a queue of ready work and up to
//! `Max_Outbound_Connections` connections (`Server_Max_Outbound_Connections` in all); a
//! connection that finishes a message is given the domain's next ready one at once, so a
//! stream of mail to one place flows over a few long-lived connections.
//!
//! What an attempt changed is made durable before anything depends on it: a bounce is stored
//! before the recipient's failure is recorded (a crash between them repeats the bounce, never
//! loses it), and a message leaves the spool only when every recipient is final.

use super::bounce::{self, Reported};
use super::connection::{Connection, Report, Work};
use super::dsn::Action;
use super::mainlog::{self, Mainlog};
use super::schedule::{self, Next};
use super::{Done, Entry, QueueHandle, Request, Requeue, Which};
use crate::delivery::{Delivery, Disposition, Failure, MessageOutcome, Outcome, Stage};
use crate::metrics::{self, Metrics};
use crate::model::Config;
use crate::model::queue::{QueueSettings, RetryPolicy};
use crate::reply::Enhanced;
use crate::spool::{AttemptMeta, Content, Envelope, MessageId, Queued, RcptState, Spool};
use crate::{log_error, log_info, log_warning};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// The longest recipients whose bounce could not be stored wait before they fail (and are
/// reported) again; their domain's Retry_Interval when shorter.
const BOUNCE_RETRY: Duration = Duration::from_secs(60);

/// Work a connection may hold beyond the message it is on: one, so it never waits for the
/// manager between messages.
const CONNECTION_BACKLOG: usize = 1;

/// What the manager runs on; a reload (SIGHUP) brings a new one.
pub struct Settings {
    pub delivery: Delivery,
    pub global: QueueSettings,
    /// `Domain` scopes' queue settings, by lower-case domain.
    pub domains: HashMap<String, QueueSettings>,
    pub server_max_outbound_connections: Option<u32>,
    pub hostname: String,
    pub mainlog: mainlog::Target,
    pub heartbeat: Duration,
}

impl Settings {
    /// The queue's settings for `config`. Builds its resolver and its delivery (TLS
    /// configurations); their errors are the configuration's.
    pub fn from_config(config: &Config, hostname: &str) -> Result<Settings, String> {
        let resolver = crate::dns::Resolver::from_settings(&config.routing.resolver)?;
        let delivery = Delivery::new(&config.routing, Arc::new(resolver), hostname)?;
        let logger = config.ec_logger.as_ref();
        Ok(Settings {
            delivery,
            global: config.queue.clone(),
            domains: config
                .routing
                .domains
                .iter()
                .map(|d| (d.name.clone(), d.queue.clone()))
                .collect(),
            server_max_outbound_connections: config.routing.server_max_outbound_connections,
            hostname: hostname.to_owned(),
            mainlog: logger
                .and_then(|l| l.mainlog.as_ref())
                .map_or(mainlog::Target::Syslog, |p| {
                    mainlog::Target::File(p.value.clone())
                }),
            heartbeat: logger
                .and_then(|l| l.heartbeat.as_ref())
                .map_or(crate::model::queue::DEFAULT_HEARTBEAT, |h| h.value),
        })
    }

    fn policy(&self, domain: &str) -> RetryPolicy {
        match self.domains.get(domain) {
            Some(d) => d.resolve(Some(&self.global)),
            None => self.global.resolve(None),
        }
    }
}

/// One message's recipients for one domain.
struct Unit {
    rcpts: Vec<usize>,
    attempts: u32,
    /// When it is due again; `None`: ready (or on a connection).
    next: Option<SystemTime>,
    /// On a connection now.
    active: bool,
    last_error: Option<String>,
}

struct Msg {
    envelope: Arc<Envelope>,
    content: Option<Content>,
    size: u64,
    states: Vec<RcptState>,
    units: HashMap<String, Unit>,
    /// Attempts made before this process started (from the spool's metadata).
    attempts_before: u32,
}

impl Msg {
    fn meta(&self) -> AttemptMeta {
        AttemptMeta {
            attempts: self.attempts_before
                + self.units.values().map(|u| u.attempts).max().unwrap_or(0),
            next_attempt: self.units.values().filter_map(|u| u.next).min(),
            last_error: self
                .units
                .values()
                .filter_map(|u| u.last_error.clone())
                .last(),
        }
    }
}

#[derive(Default)]
struct Dest {
    ready: VecDeque<MessageId>,
    connections: usize,
    /// Connections of this domain waiting for work.
    idle: Vec<u64>,
}

struct Task {
    domain: String,
    /// Taken (dropped) to let an idle connection go.
    tx: Option<mpsc::Sender<Work>>,
}

struct Manager {
    spool: Arc<Spool>,
    settings: Settings,
    metrics: Arc<Metrics>,
    mainlog: Mainlog,
    own: QueueHandle,
    messages: HashMap<MessageId, Msg>,
    dests: HashMap<String, Dest>,
    /// Deferred units, by when they fall due.
    timers: BTreeMap<(SystemTime, MessageId, String), ()>,
    tasks: HashMap<u64, Task>,
    next_task: u64,
    connections: usize,
    /// Domains with ready work that may be dispatched.
    dirty: Vec<String>,
    reports_tx: mpsc::UnboundedSender<Report>,
    /// Spool writes still under way (updates, removals, bounces).
    persisting: Arc<std::sync::atomic::AtomicUsize>,
    /// One lock per message with writes under way: its writes take turns.
    order: HashMap<MessageId, Arc<tokio::sync::Mutex<()>>>,
    stopping: bool,
}

pub(super) async fn run(
    spool: Arc<Spool>,
    recovered: Vec<Queued>,
    settings: Settings,
    metrics: Arc<Metrics>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    own: QueueHandle,
) {
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let mainlog = Mainlog::start(settings.mainlog.clone());
    let mut m = Manager {
        spool,
        settings,
        metrics,
        mainlog,
        own,
        messages: HashMap::new(),
        dests: HashMap::new(),
        timers: BTreeMap::new(),
        tasks: HashMap::new(),
        next_task: 1,
        connections: 0,
        dirty: Vec::new(),
        reports_tx,
        persisting: Arc::default(),
        order: HashMap::new(),
        stopping: false,
    };
    let count = recovered.len();
    for q in recovered {
        m.add(q, false);
    }
    if count > 0 {
        log_info!("queue: {count} message(s) recovered from the spool");
    }
    m.dispatch();
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + m.settings.heartbeat,
        m.settings.heartbeat,
    );
    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    let mut stop: Option<(tokio::time::Instant, tokio::sync::oneshot::Sender<()>)> = None;
    loop {
        let due = m.next_due();
        tokio::select! {
            r = requests.recv() => match r {
                Some(Request::Stop(deadline, done)) => {
                    m.stopping = true;
                    // Every connection is let go: an idle one at once, a busy one once its
                    // message is done (dropping their senders ends them), so each says QUIT
                    // rather than waiting out its Idle_Timeout and being cut at the deadline.
                    m.retire_connections();
                    stop = Some((deadline, done));
                }
                Some(r) => m.request(r),
                None => break,
            },
            Some(r) = reports.recv() => m.report(r),
            () = sleep_until(due) => m.fire_timers(),
            _ = heartbeat.tick() => m.mainlog.heartbeat(),
            _ = gauges.tick() => m.update_gauges(),
            () = sleep_until_instant(stop.as_ref().map(|s| s.0)) => break,
        }
        m.dispatch();
        if stop.is_some()
            && m.connections == 0
            && m.persisting.load(std::sync::atomic::Ordering::SeqCst) == 0
        {
            break;
        }
    }
    m.mainlog.flush();
    if let Some((_, done)) = stop {
        let _ = done.send(());
    }
}

async fn sleep_until(t: Option<SystemTime>) {
    match t {
        Some(t) => {
            let d = t
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(d).await
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_instant(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl Manager {
    /// Takes a message in: a new one (with its mainlog reception records) or one recovered.
    fn add(&mut self, q: Queued, new: bool) {
        let id = q.id();
        let e = q.envelope.clone();
        let mut units: HashMap<String, Unit> = HashMap::new();
        for i in e.pending() {
            units
                .entry(domain_of(&e.recipients[i].address))
                .or_insert_with(|| Unit {
                    rcpts: Vec::new(),
                    attempts: 0,
                    next: q.meta.next_attempt.filter(|t| *t > SystemTime::now()),
                    active: false,
                    last_error: q.meta.last_error.clone(),
                })
                .rcpts
                .push(i);
        }
        if new {
            let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
            self.mainlog.reception(&mainlog::Reception {
                id: &id.to_string(),
                connection: &e.origin.session,
                sender: &e.sender,
                recipients: &rcpts,
                client_ip: e.origin.client_ip,
                size: q.size,
                protocol: if e.origin.listen == "internal" {
                    "internal"
                } else {
                    "esmtp"
                },
                received: e.received,
            });
        }
        if units.is_empty() {
            // Every recipient is final already (a crash before its removal): finish it.
            self.persist(id, Vec::new(), AttemptMeta::default(), true, Vec::new());
            return;
        }
        for (domain, unit) in &units {
            match unit.next {
                Some(t) => {
                    self.timers.insert((t, id, domain.clone()), ());
                }
                None => self.make_ready(id, domain),
            }
        }
        self.messages.insert(
            id,
            Msg {
                states: e.recipients.iter().map(|r| r.state).collect(),
                envelope: e,
                content: q.content,
                size: q.size,
                units,
                attempts_before: q.meta.attempts,
            },
        );
    }

    fn make_ready(&mut self, id: MessageId, domain: &str) {
        self.dests
            .entry(domain.to_owned())
            .or_default()
            .ready
            .push_back(id);
        if !self.dirty.iter().any(|d| d == domain) {
            self.dirty.push(domain.to_owned());
        }
    }

    fn next_due(&self) -> Option<SystemTime> {
        self.timers.keys().next().map(|(t, _, _)| *t)
    }

    fn fire_timers(&mut self) {
        let now = SystemTime::now();
        while let Some((key, ())) = self.timers.first_key_value() {
            if key.0 > now {
                break;
            }
            let (t, id, domain) = self.timers.pop_first().expect("looked at it").0;
            let Some(unit) = self
                .messages
                .get_mut(&id)
                .and_then(|m| m.units.get_mut(&domain))
            else {
                continue;
            };
            if unit.next == Some(t) {
                unit.next = None;
                self.make_ready(id, &domain);
            }
        }
    }

    /// Gives ready work to idle connections, then to new ones, within the limits.
    fn dispatch(&mut self) {
        if self.stopping {
            return;
        }
        let server_max = self
            .settings
            .server_max_outbound_connections
            .map_or(usize::MAX, |n| n as usize);
        for domain in std::mem::take(&mut self.dirty) {
            let max = self
                .settings
                .delivery
                .settings(&domain)
                .max_outbound_connections
                .map_or(usize::MAX, |n| n as usize);
            while let Some(dest) = self.dests.get_mut(&domain) {
                let Some(&id) = dest.ready.front() else {
                    break;
                };
                let idle = dest.idle.pop();
                if idle.is_none() && (dest.connections >= max || self.connections >= server_max) {
                    break;
                }
                dest.ready.pop_front();
                let Some(work) = self.take_work(id, &domain) else {
                    if let Some(t) = idle {
                        self.dests.get_mut(&domain).expect("here").idle.push(t);
                    }
                    continue;
                };
                match idle {
                    Some(task) => {
                        let tx = self.tasks.get(&task).and_then(|t| t.tx.clone());
                        let sent = match tx {
                            Some(tx) => tx.try_send(work).map_err(|e| e.into_inner()),
                            None => Err(work),
                        };
                        if let Err(work) = sent {
                            // A connection closing as it was given work: it hands back
                            // anything in its channel, but this never got in.
                            self.untake(work);
                        }
                    }
                    None => self.open(domain.clone(), work),
                }
            }
        }
    }

    /// Marks a ready unit as on a connection and makes its work.
    fn take_work(&mut self, id: MessageId, domain: &str) -> Option<Work> {
        let msg = self.messages.get_mut(&id)?;
        let unit = msg.units.get_mut(domain)?;
        if unit.active || unit.next.is_some() {
            return None;
        }
        unit.active = true;
        Some(Work {
            id,
            domain: domain.to_owned(),
            envelope: msg.envelope.clone(),
            content: msg.content.clone(),
            rcpts: unit.rcpts.clone(),
        })
    }

    /// Work that did not reach a connection goes back to the front of its queue.
    fn untake(&mut self, work: Work) {
        if let Some(u) = self
            .messages
            .get_mut(&work.id)
            .and_then(|m| m.units.get_mut(&work.domain))
        {
            u.active = false;
        }
        let dest = self.dests.entry(work.domain.clone()).or_default();
        dest.ready.push_front(work.id);
        if !self.dirty.contains(&work.domain) {
            self.dirty.push(work.domain);
        }
    }

    fn open(&mut self, domain: String, first: Work) {
        let task = self.next_task;
        self.next_task += 1;
        let (tx, rx) = mpsc::channel(CONNECTION_BACKLOG);
        self.tasks.insert(
            task,
            Task {
                domain: domain.clone(),
                tx: Some(tx),
            },
        );
        self.dests.entry(domain).or_default().connections += 1;
        self.connections += 1;
        let c = Connection {
            task,
            delivery: self.settings.delivery.clone(),
            spool: self.spool.clone(),
            reports: self.reports_tx.clone(),
        };
        tokio::spawn(c.run(first, rx));
    }

    /// Every connection finishes what it holds and closes; none is given more work.
    fn retire_connections(&mut self) {
        for dest in self.dests.values_mut() {
            dest.idle.clear();
        }
        for t in self.tasks.values_mut() {
            t.tx = None;
        }
    }

    fn report(&mut self, r: Report) {
        match r {
            Report::Tried {
                task,
                work,
                result,
                connection,
                hop,
                unreachable,
            } => {
                let domain = work.domain.clone();
                let failure = result.as_ref().err().map(|f| f.outcome.clone());
                self.tried(work, result, &connection, hop.as_deref());
                if let Some(outcome) = failure.filter(|_| unreachable) {
                    // The destination could not be reached: its other ready work would fail
                    // the same way now, and is given the same outcome (counted as an attempt)
                    // rather than a connection each to fail with.
                    self.fail_ready(&domain, &connection, outcome);
                } else if !self.stopping
                    && let Some(t) = self.tasks.get(&task)
                    && t.tx.is_some()
                {
                    let d = t.domain.clone();
                    self.dests.entry(d.clone()).or_default().idle.push(task);
                    if !self.dirty.contains(&d) {
                        self.dirty.push(d);
                    }
                }
            }
            Report::Closed { task, returned } => {
                if let Some(t) = self.tasks.remove(&task)
                    && let Some(dest) = self.dests.get_mut(&t.domain)
                {
                    dest.connections = dest.connections.saturating_sub(1);
                    dest.idle.retain(|x| *x != task);
                    if !dest.ready.is_empty() && !self.dirty.contains(&t.domain) {
                        self.dirty.push(t.domain);
                    }
                }
                self.connections = self.connections.saturating_sub(1);
                for w in returned {
                    self.untake(w);
                }
            }
        }
    }

    /// What one attempt of `work` came to, recipient by recipient.
    fn tried(
        &mut self,
        work: Work,
        result: Result<MessageOutcome, Failure>,
        connection: &str,
        hop: Option<&str>,
    ) {
        let policy = self.settings.policy(&work.domain);
        let now = SystemTime::now();
        let (outcomes, remote, bytes, dsn_passed): (Vec<Outcome>, _, u64, bool) = match &result {
            Ok(o) => (
                o.recipients.clone(),
                Some(o.remote.ip()),
                o.bytes_sent,
                o.dsn_passed,
            ),
            Err(f) => (
                vec![f.outcome.clone(); work.rcpts.len()],
                f.remote.map(|r| r.ip()),
                0,
                false,
            ),
        };
        let mut delivered: Vec<(usize, Outcome)> = Vec::new();
        let mut failed: Vec<(usize, Outcome)> = Vec::new();
        let mut transient: Vec<(usize, Outcome)> = Vec::new();
        for (&i, o) in work.rcpts.iter().zip(&outcomes) {
            match o.disposition {
                Disposition::Delivered => delivered.push((i, o.clone())),
                Disposition::Permanent => failed.push((i, o.clone())),
                Disposition::Transient => transient.push((i, o.clone())),
            }
        }
        let Some(msg) = self.messages.get_mut(&work.id) else {
            return;
        };
        let Some(unit) = msg.units.get_mut(&work.domain) else {
            return;
        };
        unit.active = false;
        unit.attempts += 1;
        let attempts = msg.attempts_before + unit.attempts;
        let record = |o: &Outcome, size: u64| mainlog::Attempt {
            id: work.id.to_string(),
            connection: connection.to_owned(),
            domain: work.domain.clone(),
            bytes: if o.disposition == Disposition::Delivered {
                size
            } else {
                bytes
            },
            stage: o.stage.code(),
            retries: attempts - 1,
            received: msg.envelope.received,
            remote,
            error: o.to_string(),
        };
        let mut retry_at = None;
        if let Some((_, first)) = transient.first() {
            match schedule::after_failure(&policy, attempts, msg.envelope.received, now) {
                Next::RetryAt(t) => {
                    log_info!(
                        "queue {}: deferred for {} ({} recipient(s), attempt {attempts}): {first}; next attempt in {} s",
                        work.id,
                        work.domain,
                        transient.len(),
                        t.duration_since(now).unwrap_or_default().as_secs()
                    );
                    self.mainlog.transient(&record(first, msg.size));
                    unit.rcpts = transient.iter().map(|(i, _)| *i).collect();
                    unit.next = Some(t);
                    unit.last_error = Some(first.to_string());
                    retry_at = Some(t);
                }
                Next::GiveUp => {
                    for (i, mut o) in transient.drain(..) {
                        o.disposition = Disposition::Permanent;
                        o.text = format!("{} (given up after {attempts} attempts)", o.text);
                        failed.push((i, o));
                    }
                }
            }
        }
        if let Some((_, o)) = delivered.first() {
            crate::log_debug!(
                "queue {}: delivered to {} recipient(s) at {} via {}: {o}",
                work.id,
                delivered.len(),
                work.domain,
                hop.unwrap_or("-")
            );
            self.mainlog.delivery(&record(o, msg.size));
        }
        if let Some((_, o)) = failed.first() {
            log_info!(
                "queue {}: failed for {} ({} recipient(s)): {o}",
                work.id,
                work.domain,
                failed.len()
            );
            self.mainlog.permanent(&record(o, msg.size));
        }
        if retry_at.is_none() {
            msg.units.remove(&work.domain);
        }
        for (i, _) in &delivered {
            msg.states[*i] = RcptState::Delivered;
        }
        for (i, _) in &failed {
            msg.states[*i] = RcptState::Failed;
        }
        // Notices for the sender: failures, and successes at next hops that could not be
        // asked to report them (RFC 3461 §4.1's "relayed").
        let hop = hop.map(str::to_owned);
        let mut notices: Vec<(usize, Action, Outcome, Option<String>)> = Vec::new();
        if policy.generate_bounces {
            notices.extend(
                failed
                    .iter()
                    .filter(|(i, _)| bounce::wanted(&msg.envelope, *i, Action::Failed))
                    .map(|(i, o)| (*i, Action::Failed, o.clone(), hop.clone())),
            );
        }
        if !dsn_passed {
            notices.extend(
                delivered
                    .iter()
                    .filter(|(i, _)| bounce::wanted(&msg.envelope, *i, Action::Relayed))
                    .map(|(i, o)| (*i, Action::Relayed, o.clone(), hop.clone())),
            );
        }
        let changes: Vec<(usize, RcptState)> = delivered
            .iter()
            .map(|(i, _)| (*i, RcptState::Delivered))
            .chain(failed.iter().map(|(i, _)| (*i, RcptState::Failed)))
            .collect();
        let meta = msg.meta();
        let finished = msg.units.is_empty();
        if let Some(t) = retry_at {
            self.timers.insert((t, work.id, work.domain.clone()), ());
        }
        for (count, what) in [
            (delivered.len(), metrics::Delivery::Delivered),
            (transient.len(), metrics::Delivery::Deferred),
            (failed.len(), metrics::Delivery::Failed),
        ] {
            for _ in 0..count {
                self.metrics.delivery(what);
            }
        }
        self.persist(work.id, changes, meta, finished, notices);
        if finished {
            self.messages.remove(&work.id);
        }
    }

    /// Applies a connection failure to the rest of a domain's ready work.
    fn fail_ready(&mut self, domain: &str, connection: &str, outcome: Outcome) {
        let Some(dest) = self.dests.get_mut(domain) else {
            return;
        };
        let ready: Vec<MessageId> = dest.ready.drain(..).collect();
        for id in ready {
            let Some(work) = self.take_work(id, domain) else {
                continue;
            };
            let failure = Failure {
                outcome: outcome.clone(),
                remote: None,
            };
            self.tried(work, Err(failure), connection, None);
        }
    }

    /// Makes an attempt's results durable, in the order that loses nothing: notices to the
    /// sender first, then the recipients' states, then (all final) the message's removal.
    /// One message's writes run one after the other (a removal never overtakes an update, or
    /// the read of the content a bounce quotes); different messages' run side by side and
    /// share the spool's group commits. A bounce that cannot be stored (a full disk) leaves
    /// its recipients pending: their failure is not recorded, and they are handed back to the
    /// queue to fail (and be reported) again a minute later.
    fn persist(
        &mut self,
        id: MessageId,
        changes: Vec<(usize, RcptState)>,
        meta: AttemptMeta,
        finished: bool,
        notices: Vec<(usize, Action, Outcome, Option<String>)>,
    ) {
        let spool = self.spool.clone();
        let own = self.own.clone();
        let hostname = self.settings.hostname.clone();
        let msg = self.messages.get(&id);
        let envelope = msg.map(|m| m.envelope.clone());
        let content = msg.and_then(|m| m.content.clone());
        let size = msg.map_or(0, |m| m.size);
        let order = self.order.entry(id).or_default().clone();
        if finished {
            // No write for this message comes after this one.
            self.order.remove(&id);
        }
        let persisting = self.persisting.clone();
        persisting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            let _turn = order.lock().await;
            let mut changes = changes;
            let mut finished = finished;
            if !notices.is_empty()
                && let Some(envelope) = &envelope
            {
                let text = match &content {
                    Some(c) => Ok(c.clone()),
                    None => spool.content(id).await,
                };
                let stored = match text {
                    Ok(c) => {
                        let reported: Vec<Reported> = notices
                            .iter()
                            .map(|(i, a, o, hop)| Reported {
                                index: *i,
                                action: *a,
                                outcome: o,
                                remote_mta: hop.clone(),
                            })
                            .collect();
                        bounce::store(&spool, &hostname, envelope, &c, &reported).await
                    }
                    Err(e) => Err(e),
                };
                match stored {
                    Ok(q) => {
                        log_info!(
                            "queue {id}: notice {} to <{}> ({} recipient(s))",
                            q.envelope.id,
                            envelope.sender,
                            notices.len()
                        );
                        own.submit(q);
                    }
                    Err(e) => {
                        // Without its bounce a failure must not be recorded: those recipients
                        // stay pending (on disk and in the queue) and fail again later, when
                        // the spool may have room. What was delivered is still recorded.
                        let unreported: Vec<usize> = notices
                            .iter()
                            .filter(|(_, a, _, _)| *a == Action::Failed)
                            .map(|(i, _, _, _)| *i)
                            .collect();
                        log_error!(
                            "queue {id}: cannot store the bounce: {e}; {} recipient(s) kept for a retry",
                            unreported.len()
                        );
                        changes.retain(|(i, _)| !unreported.contains(i));
                        finished = false;
                        own.requeue(Requeue {
                            envelope: envelope.clone(),
                            content: content.clone(),
                            size,
                            recorded: changes.clone(),
                            rcpts: unreported,
                        });
                    }
                }
            }
            let result = if finished {
                spool.remove(id).await
            } else if changes.is_empty() {
                spool.update_meta(id, &meta).await
            } else {
                spool.update(id, &changes, &meta).await
            };
            if let Err(e) = result {
                log_error!("queue {id}: recording the attempt: {e}");
            }
            persisting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }

    /// Recipients handed back by a persist task whose bounce could not be stored.
    fn requeue(&mut self, r: Requeue) {
        let Requeue {
            envelope,
            content,
            size,
            recorded,
            rcpts,
        } = r;
        let id = envelope.id;
        let msg = self.messages.entry(id).or_insert_with(|| {
            // The manager let go of it (every other recipient was final): its states are
            // the spool's, with this attempt's results on top.
            let mut states: Vec<RcptState> = envelope.recipients.iter().map(|r| r.state).collect();
            for (i, state) in &recorded {
                states[*i] = *state;
            }
            Msg {
                states,
                envelope: envelope.clone(),
                content,
                size,
                units: HashMap::new(),
                attempts_before: 0,
            }
        });
        let mut due = Vec::new();
        for i in rcpts {
            msg.states[i] = RcptState::Pending;
            let domain = domain_of(&envelope.recipients[i].address);
            let unit = msg.units.entry(domain.clone()).or_insert_with(|| Unit {
                rcpts: Vec::new(),
                attempts: 0,
                next: None,
                active: false,
                last_error: Some("the bounce could not be stored".into()),
            });
            if !unit.rcpts.contains(&i) {
                unit.rcpts.push(i);
            }
            if unit.next.is_none() && !unit.active && !due.contains(&domain) {
                due.push(domain);
            }
        }
        for domain in due {
            let wait = self
                .settings
                .policy(&domain)
                .retry_interval
                .min(BOUNCE_RETRY);
            let at = SystemTime::now() + wait;
            if let Some(unit) = self
                .messages
                .get_mut(&id)
                .and_then(|m| m.units.get_mut(&domain))
            {
                unit.next = Some(at);
            }
            self.timers.insert((at, id, domain), ());
        }
    }

    fn request(&mut self, r: Request) {
        match r {
            Request::Submit(q) => self.add(q, true),
            Request::Requeue(r) => self.requeue(r),
            Request::List(tx) => {
                let _ = tx.send(self.entries());
            }
            Request::Retry(which, tx) => {
                let _ = tx.send(self.retry(which));
            }
            Request::Remove {
                which,
                bounce,
                done,
            } => {
                let _ = done.send(self.remove(which, bounce));
            }
            Request::Reconfigure(s) => {
                // A reload is also when logs have been rotated: reopen, wherever it goes now.
                self.mainlog.reopen(s.mainlog.clone());
                self.settings = *s;
                // New routes and limits apply from the next connection. The connections
                // open now take no more work: under a steady flow one never idles long enough
                // to close, and the old routes would live on with it.
                self.retire_connections();
                self.dirty = self.dests.keys().cloned().collect();
            }
            Request::Stop(..) => unreachable!("handled by the loop"),
        }
    }

    fn ids(&self, which: &Which) -> Vec<MessageId> {
        match which {
            Which::All => {
                let mut v: Vec<MessageId> = self.messages.keys().copied().collect();
                v.sort();
                v
            }
            Which::Ids(ids) => ids.clone(),
        }
    }

    fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .messages
            .iter()
            .map(|(id, m)| {
                let meta = m.meta();
                Entry {
                    id: *id,
                    arrival: m.envelope.received,
                    size: m.size,
                    sender: m.envelope.sender.clone(),
                    pending: m
                        .units
                        .values()
                        .flat_map(|u| u.rcpts.iter())
                        .map(|&i| m.envelope.recipients[i].address.clone())
                        .collect(),
                    attempts: meta.attempts,
                    next_attempt: meta.next_attempt,
                    last_error: meta.last_error,
                    active: m.units.values().any(|u| u.active),
                }
            })
            .collect();
        out.sort_by_key(|e| e.id);
        out
    }

    fn retry(&mut self, which: Which) -> Vec<(MessageId, Done)> {
        let mut out = Vec::new();
        for id in self.ids(&which) {
            let Some(m) = self.messages.get_mut(&id) else {
                out.push((id, Done::NotFound));
                continue;
            };
            let mut due = Vec::new();
            for (domain, u) in &mut m.units {
                if let Some(t) = u.next.take() {
                    self.timers.remove(&(t, id, domain.clone()));
                    due.push(domain.clone());
                }
            }
            for d in due {
                self.make_ready(id, &d);
            }
            out.push((id, Done::Ok));
        }
        out
    }

    fn remove(&mut self, which: Which, bounce: bool) -> Vec<(MessageId, Done)> {
        let mut out = Vec::new();
        for id in self.ids(&which) {
            let Some(m) = self.messages.get(&id) else {
                out.push((id, Done::NotFound));
                continue;
            };
            if m.units.values().any(|u| u.active) {
                out.push((id, Done::Busy));
                continue;
            }
            let m = self.messages.remove(&id).expect("looked it up");
            for (domain, u) in &m.units {
                if let Some(t) = u.next {
                    self.timers.remove(&(t, id, domain.clone()));
                }
            }
            for dest in self.dests.values_mut() {
                dest.ready.retain(|r| *r != id);
            }
            let pending: Vec<usize> = m.units.values().flat_map(|u| u.rcpts.clone()).collect();
            let outcome = Outcome::permanent(
                550,
                Enhanced(5, 0, 0),
                if bounce {
                    "failed by the operator"
                } else {
                    "deleted by the operator"
                },
                Stage::NotConnected,
            );
            for domain in m.units.keys() {
                self.mainlog.permanent(&mainlog::Attempt {
                    id: id.to_string(),
                    connection: String::new(),
                    domain: domain.clone(),
                    bytes: 0,
                    stage: 0,
                    retries: m.meta().attempts,
                    received: m.envelope.received,
                    remote: None,
                    error: outcome.to_string(),
                });
            }
            log_warning!(
                "queue {id}: {} by the operator ({} recipient(s) pending)",
                if bounce { "failed" } else { "deleted" },
                pending.len()
            );
            let notices = if bounce {
                pending
                    .iter()
                    .filter(|&&i| bounce::wanted(&m.envelope, i, Action::Failed))
                    .map(|&i| (i, Action::Failed, outcome.clone(), None))
                    .collect()
            } else {
                Vec::new()
            };
            // The message is gone from memory: the persist task needs it back briefly.
            self.messages.insert(id, m);
            self.persist(id, Vec::new(), AttemptMeta::default(), true, notices);
            self.messages.remove(&id);
            out.push((id, Done::Ok));
        }
        out
    }

    fn update_gauges(&self) {
        let oldest = self
            .messages
            .values()
            .map(|m| m.envelope.received)
            .min()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        self.metrics.set_queue(self.messages.len() as u64, oldest);
        let c = self.spool.counters();
        self.metrics
            .set_spool([c.messages, c.file_syncs, c.directory_syncs]);
    }
}
