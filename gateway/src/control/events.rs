//! Decision events to the control plane: one per request, queued from the request's terminal
//! call without waiting, batched, gzipped and sent by one shipper task, off the request path.
//!
//! The queue is bounded ([`EventSink::push`] never waits): when it is full — the control plane
//! is down or slower than the traffic — the event is dropped and counted
//! (`palisade_events_dropped_total`, `/status`, the report `palisade status` shows). The local
//! audit log stays the record of truth; events are the fleet view.
//!
//! The shipper sends a batch when it holds [`ShipperConfig::max_batch`] events or its oldest
//! event has waited [`ShipperConfig::flush_interval`]. A failed send (unreachable, timeout,
//! 5xx, 408, 429) is retried with exponential backoff and jitter, never sooner than the control
//! plane's `Retry-After` (a busy control plane answers 503 `BUSY` with one), holding that batch
//! while new events queue behind it; the control plane stores by request id, so a batch retried after a
//! lost acknowledgement is not counted twice. A batch the control plane refuses as malformed
//! or forbidden (another 4xx) would be refused again: it is dropped, counted and logged. At
//! shutdown, after the gateway drained, the shipper sends what is queued within a deadline and
//! counts the rest as dropped; nothing is kept on disk, so a restarted gateway never resends
//! what was acknowledged.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use palisade_wire::events::{Batch, Findings, Outcome, RowBatch, Rows, SharedText};
use policy_engine::pack::PiiAction;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use serde::Serialize;
use tokio::sync::mpsc;

use super::client::{ControlClient, ControlError};
use crate::audit::{AuditRecord, OutcomeKind};
use crate::hooks::RequestMeta;
use crate::policy::PiiReport;

/// One decision event as this gateway builds and sends it.
pub type DecisionEvent = palisade_wire::events::DecisionEvent<Text>;

/// An event's text that every event of a pack version shares (environment, pack, version, hash:
/// `Arc`s of the active pack) or that is fixed (the route): cloned into each event without
/// copying, serialised as a plain string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Shared(Arc<str>),
    Fixed(std::borrow::Cow<'static, str>),
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Shared(s) => s,
            Self::Fixed(s) => s,
        }
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn side(report: Option<&PiiReport>) -> BTreeMap<String, u32> {
    report
        .map(|r| r.findings.iter().cloned().collect())
        .unwrap_or_default()
}

/// The event's one-word outcome: a refusal or failure first (what the caller got), then what
/// policy did to an answered request, strongest first.
fn outcome(record: &AuditRecord, meta: &RequestMeta) -> Outcome {
    match record.outcome {
        OutcomeKind::BlockedPii => return Outcome::Blocked,
        OutcomeKind::BlockedBudget => return Outcome::BudgetRefused,
        OutcomeKind::Rejected => return Outcome::Rejected,
        OutcomeKind::UpstreamError => return Outcome::UpstreamError,
        OutcomeKind::InternalError => return Outcome::InternalError,
        OutcomeKind::Cancelled => return Outcome::Cancelled,
        OutcomeKind::Allowed | OutcomeKind::Redacted => {}
    }
    let logged = [&meta.pii_request, &meta.pii_response]
        .into_iter()
        .flatten()
        .any(|r| r.action == Some(PiiAction::Log) && r.total() > 0);
    let degraded = record
        .budget
        .as_ref()
        .is_some_and(|b| b.decision == "degraded");
    if record.escalated {
        Outcome::Escalated
    } else if record.outcome == OutcomeKind::Redacted {
        Outcome::Redacted
    } else if logged {
        Outcome::Logged
    } else if degraded {
        Outcome::Degraded
    } else {
        Outcome::Allowed
    }
}

/// The event of a request, from its audit record and what the request path knew. Text only
/// where the record carries it (the pack's `include_redacted_text`).
pub fn event(record: &AuditRecord, meta: &RequestMeta) -> DecisionEvent {
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    DecisionEvent {
        request_id: record.request_id.clone(),
        at_ms,
        environment: Text::Shared(Arc::clone(&record.environment)),
        pack: Text::Shared(Arc::clone(&record.pack.name)),
        version: Text::Shared(Arc::clone(&record.pack.version)),
        hash: Text::Shared(Arc::clone(&record.pack.hash)),
        route: Text::Fixed(record.route.clone()),
        model_requested: record.model_requested.clone(),
        model_used: record.model_used.clone(),
        caller: record.caller.key_id.clone(),
        team: record.caller.team.clone(),
        outcome: outcome(record, meta),
        escalated: record.escalated,
        status: record.status,
        latency_us: record
            .latency
            .gateway_us
            .saturating_add(record.latency.upstream_us.unwrap_or(0)),
        upstream_us: record.latency.upstream_us,
        input_tokens: record.usage.map(|u| u.input_tokens),
        output_tokens: record.usage.map(|u| u.output_tokens),
        cost_usd: record.cost_usd,
        pii: Findings {
            request: side(meta.pii_request.as_ref()),
            response: side(meta.pii_response.as_ref()),
        },
        redacted_text: record.redacted_text.clone(),
        redacted_response_text: record.redacted_response_text.clone(),
        attempts: record
            .attempts
            .iter()
            .map(|a| palisade_wire::events::Attempt {
                deployment: a.deployment.clone(),
                outcome: a.outcome.clone(),
                ms: a.ms,
            })
            .collect(),
    }
}

/// Counters of the shipper, exported as metrics and in `/status` (what is queued is read from
/// the channel itself).
#[derive(Debug, Default)]
pub struct EventStats {
    pub shipped: AtomicU64,
    pub dropped: AtomicU64,
    pub send_failures: AtomicU64,
}

/// The request path's end of the queue.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<DecisionEvent>,
    stats: Arc<EventStats>,
}

impl EventSink {
    /// Queue an event, or drop and count it when the queue is full. Never waits.
    pub fn push(&self, event: DecisionEvent) {
        if self.tx.try_send(event).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &Arc<EventStats> {
        &self.stats
    }

    /// Events waiting in the queue (not counting a batch the shipper holds).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "shipped": load(&self.stats.shipped),
            "dropped": load(&self.stats.dropped),
            "send_failures": load(&self.stats.send_failures),
            "queued": self.queued(),
            "capacity": self.tx.max_capacity(),
        })
    }
}

/// How often a shipper holding events takes what has queued since (see [`EventShipper::run`]).
/// At 20 ms, the default queue of 20,000 events holds a million events a second between two
/// takes.
const COLLECT_TICK: Duration = Duration::from_millis(20);

/// How the shipper batches and retries.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// The gateway's instance id (the batch's `gateway`).
    pub gateway: String,
    pub max_batch: usize,
    pub flush_interval: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// At shutdown, how long the last batches may take.
    pub final_flush: Duration,
}

impl ShipperConfig {
    pub fn new(gateway: String) -> Self {
        Self {
            gateway,
            max_batch: 1000,
            flush_interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            final_flush: Duration::from_secs(3),
        }
    }
}

/// The shipper's end of the queue.
#[derive(Debug)]
pub struct EventShipper {
    rx: mpsc::Receiver<DecisionEvent>,
    stats: Arc<EventStats>,
    client: ControlClient,
    cfg: ShipperConfig,
}

/// The receiving end of the queue, before it has a client to ship with.
#[derive(Debug)]
pub struct EventQueue {
    rx: mpsc::Receiver<DecisionEvent>,
    stats: Arc<EventStats>,
}

impl EventQueue {
    /// The shipper that sends this queue's events through `client`.
    pub fn ship(self, client: ControlClient, cfg: ShipperConfig) -> EventShipper {
        EventShipper {
            rx: self.rx,
            stats: self.stats,
            client,
            cfg,
        }
    }
}

/// A queue of `capacity` events: the sink for the enforcement (built before the gateway
/// binds), the queue for the shipper (started once the gateway knows its instance id).
pub fn queue(capacity: usize) -> (EventSink, EventQueue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let stats = Arc::new(EventStats::default());
    (
        EventSink {
            tx,
            stats: Arc::clone(&stats),
        },
        EventQueue { rx, stats },
    )
}

/// What became of one send.
enum Sent {
    Acknowledged,
    /// Refused as it is: sending it again would be refused again.
    Refused(ControlError),
    Failed(ControlError),
}

impl EventShipper {
    /// Ship until `stop` resolves, then send what is queued within the final-flush deadline.
    ///
    /// Idle, the shipper waits for an event; once it holds one, it takes what is queued every
    /// [`COLLECT_TICK`] instead of waking for each event. A wake-up per event is a wake-up per
    /// request: the serving threads would unpark this runtime's worker on every request, which
    /// cost more gateway CPU than building, encoding and sending the events together.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut stopping = false;
        let mut batch = Vec::with_capacity(self.cfg.max_batch);
        while !stopping {
            if batch.is_empty() {
                let first = tokio::select! {
                    e = self.rx.recv() => e,
                    () = &mut stop => None,
                };
                let Some(first) = first else { break };
                batch.push(first);
            }
            let deadline = tokio::time::Instant::now() + self.cfg.flush_interval;
            loop {
                while batch.len() < self.cfg.max_batch {
                    match self.rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            stopping = true;
                            break;
                        }
                    }
                }
                let now = tokio::time::Instant::now();
                if stopping || batch.len() >= self.cfg.max_batch || now >= deadline {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(deadline.min(now + COLLECT_TICK)) => {}
                    () = &mut stop => { stopping = true; break; }
                }
            }
            // A resolved `stop` is never polled again: the final flush takes over.
            if stopping || !self.send_until_done(&mut batch, &mut stop).await {
                break;
            }
        }
        self.final_flush(batch).await;
    }

    /// Send `batch` until it is acknowledged or refused (it is then empty), or `stop` resolves
    /// (returns false; the batch is kept for the final flush).
    async fn send_until_done(
        &self,
        batch: &mut Vec<DecisionEvent>,
        stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        let mut backoff = self.cfg.min_backoff;
        loop {
            // A busy control plane says when to come back (`Retry-After`): not sooner.
            let mut asked = Duration::ZERO;
            match self.send(batch).await {
                Sent::Acknowledged => {
                    self.stats
                        .shipped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return true;
                }
                Sent::Refused(e) => {
                    tracing::error!(error = %e, events = batch.len(), "the control plane refused a batch of decision events; dropped");
                    self.stats
                        .dropped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return true;
                }
                Sent::Failed(e) => {
                    self.stats.send_failures.fetch_add(1, Ordering::Relaxed);
                    if let ControlError::Status {
                        retry_after: Some(d),
                        ..
                    } = &e
                    {
                        asked = *d;
                    }
                    tracing::warn!(error = %e, events = batch.len(), retry_in_ms = backoff.max(asked).as_millis() as u64, "sending decision events failed; retrying");
                }
            }
            let pause = jitter(backoff).max(asked);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.as_mut() => return false,
            }
            backoff = (backoff * 2).min(self.cfg.max_backoff);
        }
    }

    /// After the gateway drained: one attempt per batch for what is left, within the deadline;
    /// what is not acknowledged then is counted as dropped.
    async fn final_flush(mut self, mut batch: Vec<DecisionEvent>) {
        let deadline = tokio::time::Instant::now() + self.cfg.final_flush;
        self.rx.close();
        loop {
            while batch.len() < self.cfg.max_batch {
                match self.rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            let sent = tokio::time::timeout_at(deadline, self.send(&batch)).await;
            match sent {
                Ok(Sent::Acknowledged) => {
                    self.stats
                        .shipped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
                _ => {
                    let mut lost = batch.len() as u64;
                    while self.rx.try_recv().is_ok() {
                        lost += 1;
                    }
                    self.stats.dropped.fetch_add(lost, Ordering::Relaxed);
                    tracing::warn!(
                        lost,
                        "decision events not delivered before shutdown; counted as dropped"
                    );
                    return;
                }
            }
        }
    }

    async fn send(&self, batch: &[DecisionEvent]) -> Sent {
        let rows = self.client.reads_rows();
        let body = match encode(&self.cfg.gateway, batch, rows) {
            Ok(b) => b,
            Err(e) => return Sent::Refused(ControlError::Protocol(e)),
        };
        match self.client.send_events(body, rows).await {
            Ok(()) => Sent::Acknowledged,
            Err(e @ ControlError::Status { status, .. })
                if (400..500).contains(&status) && status != 408 && status != 429 =>
            {
                Sent::Refused(e)
            }
            Err(e) => Sent::Failed(e),
        }
    }
}

/// The batch as gzipped JSON: rows (`{"gateway": …, "shared": {…}, "rows": [[…], …]}`, the
/// shared text of the first event) when the control plane reads them, else the object form
/// (`{"gateway": …, "events": [{…}, …]}`).
pub fn encode(gateway: &str, batch: &[DecisionEvent], rows: bool) -> Result<Bytes, String> {
    // Serialise first, then compress in one write: serde_json writes in small pieces, and each
    // write into the encoder is a deflate call (streaming into it spent a third of a busy
    // gateway's CPU in the compressor's setup).
    let json = match batch.first() {
        Some(first) if rows => {
            let shared = SharedText::of(first);
            serde_json::to_vec(&RowBatch {
                gateway,
                shared: &shared,
                rows: Rows {
                    shared: &shared,
                    events: batch,
                },
            })
        }
        _ => serde_json::to_vec(&Batch {
            gateway,
            events: batch,
        }),
    }
    .map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::fast(),
    );
    gz.write_all(&json).map_err(|e| e.to_string())?;
    gz.finish().map(Bytes::from).map_err(|e| e.to_string())
}

/// `d` scaled by a factor in [0.5, 1.0), so gateways that failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    let unit = (crate::state::random_seed() >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(0.5 + unit / 2.0)
}

/// Exposes the queue's counters at scrape time.
#[derive(Debug)]
pub struct EventMetrics {
    sink: EventSink,
    shipped: prometheus::IntCounter,
    dropped: prometheus::IntCounter,
    failures: prometheus::IntCounter,
    queued: prometheus::IntGauge,
}

impl EventMetrics {
    pub fn new(sink: EventSink) -> Result<Self, prometheus::Error> {
        Ok(Self {
            sink,
            shipped: prometheus::IntCounter::new(
                "palisade_events_shipped_total",
                "Decision events the control plane acknowledged.",
            )?,
            dropped: prometheus::IntCounter::new(
                "palisade_events_dropped_total",
                "Decision events dropped: queue full, refused by the control plane, or undelivered at shutdown.",
            )?,
            failures: prometheus::IntCounter::new(
                "palisade_events_send_failures_total",
                "Failed attempts to send a batch of decision events (each retried).",
            )?,
            queued: prometheus::IntGauge::new(
                "palisade_events_queued",
                "Decision events waiting to be sent.",
            )?,
        })
    }
}

impl Collector for EventMetrics {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.shipped.desc(),
            self.dropped.desc(),
            self.failures.desc(),
            self.queued.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let set = |c: &prometheus::IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        let stats = self.sink.stats();
        set(&self.shipped, load(&stats.shipped));
        set(&self.dropped, load(&stats.dropped));
        set(&self.failures, load(&stats.send_failures));
        self.queued
            .set(i64::try_from(self.sink.queued()).unwrap_or(i64::MAX));
        [
            self.shipped.collect(),
            self.dropped.collect(),
            self.failures.collect(),
            self.queued.collect(),
        ]
        .concat()
    }
}
