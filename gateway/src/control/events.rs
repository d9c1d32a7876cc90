//! Decision events to the control plane: one per request, written as a row (see
//! [`palisade_wire::events::RowBatch`]) by the thread that served the request, batched, gzipped
//! and sent by one shipper task, off the request path.
//!
//! A serving thread writes its requests' rows into a chunk of its own (up to 64 rows, no lock,
//! no allocation per event beyond the chunk's growth) and queues the chunk when it is full and
//! on the thread's one-second housekeeping tick; any other thread queues each row at once. The
//! queue is bounded ([`EventSink::record`] never waits): when it is full — the control plane is
//! down or slower than the traffic — the chunk's events are dropped and counted
//! (`palisade_events_dropped_total`, `/status`, the report `palisade status` shows). The local
//! audit log stays the record of truth; events are the fleet view.
//!
//! The shipper sends a batch when it holds [`ShipperConfig::max_batch`] events or its oldest
//! chunk has waited [`ShipperConfig::flush_interval`]. A failed send (unreachable, timeout,
//! 5xx, 408, 429) is retried with exponential backoff and jitter, never sooner than the control
//! plane's `Retry-After` (a busy control plane answers 503 `BUSY` with one), holding that batch
//! while new events queue behind it; the control plane stores by request id, so a batch retried
//! after a lost acknowledgement is not counted twice. A batch the control plane refuses as
//! malformed or forbidden (another 4xx) would be refused again: it is dropped, counted and
//! logged. A control plane that does not list rows among its event formats (one older than
//! them) gets the object form, decoded from the rows. At shutdown, after the gateway drained and
//! its serving threads queued their last chunks, the shipper sends what is queued within a
//! deadline and counts the rest as dropped; nothing is kept on disk, so a restarted gateway
//! never resends what was acknowledged.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use palisade_wire::events::{DecodedRow, Findings, Outcome, Row, SharedText};
use policy_engine::pack::PiiAction;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tokio::sync::mpsc;

use super::client::{ControlClient, ControlError};
use crate::audit::{AuditRecord, OutcomeKind};
use crate::hooks::RequestMeta;
use crate::policy::PiiReport;

/// One decision event as this gateway builds it: borrowed from the request's audit record,
/// serialised into a row and dropped.
pub type DecisionEvent<'a> = palisade_wire::events::DecisionEvent<&'a str, &'a str>;

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
pub fn event<'a>(record: &'a AuditRecord, meta: &RequestMeta) -> DecisionEvent<'a> {
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    DecisionEvent {
        request_id: &record.request_id,
        at_ms,
        environment: &record.environment,
        pack: &record.pack.name,
        version: &record.pack.version,
        hash: &record.pack.hash,
        route: &record.route,
        model_requested: record.model_requested.as_deref(),
        model_used: record.model_used.as_deref(),
        caller: record.caller.key_id.as_deref(),
        team: record.caller.team.as_deref(),
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
        redacted_text: record.redacted_text.as_deref(),
        redacted_response_text: record.redacted_response_text.as_deref(),
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

/// Counters of the shipper, exported as metrics and in `/status`.
#[derive(Debug, Default)]
pub struct EventStats {
    pub shipped: AtomicU64,
    pub dropped: AtomicU64,
    pub send_failures: AtomicU64,
    /// Events in queued chunks (not counting a batch the shipper holds, nor rows a serving
    /// thread has not queued yet).
    pub queued: AtomicU64,
}

/// Rows of one or more events, written by one thread: the text they share is sent once per
/// batch, and a row whose text differs carries its own.
#[derive(Debug)]
pub struct Chunk {
    shared: SharedText<Arc<str>>,
    /// Rows joined with commas, without the brackets.
    rows: Vec<u8>,
    events: usize,
}

impl Chunk {
    /// An empty chunk sharing `e`'s text.
    pub fn new(e: &DecisionEvent<'_>) -> Self {
        Self {
            shared: SharedText {
                environment: Arc::from(e.environment),
                pack: Arc::from(e.pack),
                version: Arc::from(e.version),
                hash: Arc::from(e.hash),
            },
            rows: Vec::new(),
            events: 0,
        }
    }

    /// `e` as one more row.
    pub fn push(&mut self, e: &DecisionEvent<'_>) {
        if self.events > 0 {
            self.rows.push(b',');
        }
        let shared = self.shared.borrowed();
        // Only an I/O error can fail serialising, and a Vec has none.
        let _ = serde_json::to_writer(
            &mut self.rows,
            &Row {
                shared: &shared,
                event: e,
            },
        );
        self.events += 1;
    }
}

/// The request path's end of the queue.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Chunk>,
    stats: Arc<EventStats>,
    /// Rows a serving thread gathers before it queues them.
    chunk_rows: usize,
    capacity: usize,
}

/// A thread's chunk and the sink it is for; queued if the thread ends holding it.
struct Pending(Option<(EventSink, Chunk)>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some((sink, chunk)) = self.0.take() {
            sink.queue(chunk);
        }
    }
}

thread_local! {
    static PENDING: RefCell<Pending> = const { RefCell::new(Pending(None)) };
    /// This thread queues its chunk on a tick of its own ([`serving_thread`]).
    static TICKING: Cell<bool> = const { Cell::new(false) };
}

/// While the guard lives, the current thread may hold rows back to queue them together: it
/// promises to call [`flush_thread`] at least once a second. Dropped, it queues what the thread
/// holds.
#[must_use = "the thread holds rows back only while the guard lives"]
#[derive(Debug)]
pub struct ServingThread(());

impl Drop for ServingThread {
    fn drop(&mut self) {
        let _ = TICKING.try_with(|t| t.set(false));
        flush_thread();
    }
}

/// Mark the current thread as a serving thread (see [`ServingThread`]).
pub fn serving_thread() -> ServingThread {
    TICKING.set(true);
    ServingThread(())
}

/// Queue the rows the current thread holds back. Serving threads call it on their housekeeping
/// tick and when they stop.
pub fn flush_thread() {
    if let Ok(Some((sink, chunk))) = PENDING.try_with(|p| p.borrow_mut().0.take()) {
        sink.queue(chunk);
    }
}

impl EventSink {
    /// The request's event, as a row of this thread's chunk. Never waits: a full queue drops
    /// and counts the chunk.
    pub fn record(&self, record: &AuditRecord, meta: &RequestMeta) {
        self.push(&event(record, meta));
    }

    /// `e` as a row of this thread's chunk (see [`EventSink::record`]).
    pub fn push(&self, e: &DecisionEvent<'_>) {
        let ticking = TICKING.try_with(Cell::get).unwrap_or(false);
        let held = PENDING.try_with(|cell| {
            let Pending(pending) = &mut *cell.borrow_mut();
            if pending
                .as_ref()
                .is_some_and(|(sink, _)| !Arc::ptr_eq(&sink.stats, &self.stats))
            {
                // Another gateway's sink on this thread (tests): its rows go first.
                if let Some((sink, chunk)) = pending.take() {
                    sink.queue(chunk);
                }
            }
            let (_, chunk) = pending.get_or_insert_with(|| (self.clone(), Chunk::new(e)));
            chunk.push(e);
            if chunk.events >= self.chunk_rows || !ticking {
                pending.take().map(|(_, chunk)| chunk)
            } else {
                None
            }
        });
        match held {
            Ok(Some(full)) => self.queue(full),
            Ok(None) => {}
            // The thread is ending and its chunk is gone already: this row goes alone.
            Err(_) => {
                let mut chunk = Chunk::new(e);
                chunk.push(e);
                self.queue(chunk);
            }
        }
    }

    /// Queue `chunk`, or drop and count it when the queue holds `capacity` events already.
    fn queue(&self, chunk: Chunk) {
        let n = chunk.events as u64;
        // Counted before it is sent, so the shipper never takes it before it counts.
        let before = self.stats.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > self.capacity as u64 || self.tx.try_send(chunk).is_err() {
            self.stats.queued.fetch_sub(n, Ordering::Relaxed);
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &Arc<EventStats> {
        &self.stats
    }

    /// Events waiting in the queue (not counting a batch the shipper holds).
    pub fn queued(&self) -> u64 {
        self.stats.queued.load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "shipped": load(&self.stats.shipped),
            "dropped": load(&self.stats.dropped),
            "send_failures": load(&self.stats.send_failures),
            "queued": self.queued(),
            "capacity": self.capacity,
        })
    }
}

/// How often a shipper holding events takes what has queued since (see [`EventShipper::run`]).
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
    rx: mpsc::Receiver<Chunk>,
    stats: Arc<EventStats>,
    client: ControlClient,
    cfg: ShipperConfig,
    /// A chunk taken while collecting that shares other text than the batch: the next batch's
    /// first.
    held: Option<Chunk>,
}

/// The receiving end of the queue, before it has a client to ship with.
#[derive(Debug)]
pub struct EventQueue {
    rx: mpsc::Receiver<Chunk>,
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
            held: None,
        }
    }
}

/// A queue of `capacity` events: the sink for the enforcement (built before the gateway
/// binds), the queue for the shipper (started once the gateway knows its instance id). Serving
/// threads queue chunks of up to 64 rows, a sixteenth of the capacity at most; the queue takes
/// a chunk while its events fit, and has a slot for every event, so a chunk of one row (a quiet
/// thread's tick) never takes the room of 64.
pub fn queue(capacity: usize) -> (EventSink, EventQueue) {
    let capacity = capacity.max(1);
    let chunk_rows = (capacity / 16).clamp(1, 64);
    let (tx, rx) = mpsc::channel(capacity);
    let stats = Arc::new(EventStats::default());
    (
        EventSink {
            tx,
            stats: Arc::clone(&stats),
            chunk_rows,
            capacity,
        },
        EventQueue { rx, stats },
    )
}

/// The chunks of one batch: all share the first one's text.
#[derive(Debug, Default)]
struct Gathered {
    chunks: Vec<Chunk>,
    events: usize,
}

impl Gathered {
    /// Take `chunk` if it shares this batch's text; give it back if not.
    fn take(&mut self, chunk: Chunk) -> Option<Chunk> {
        if self
            .chunks
            .first()
            .is_some_and(|c| c.shared != chunk.shared)
        {
            return Some(chunk);
        }
        self.events += chunk.events;
        self.chunks.push(chunk);
        None
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.events = 0;
    }
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
    /// Idle, the shipper waits for a chunk; once it holds one, it takes what is queued every
    /// [`COLLECT_TICK`] instead of waking for each chunk, which would wake this runtime's worker
    /// from the serving threads.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut stopping = false;
        let mut batch = Gathered::default();
        while !stopping {
            // A held chunk was counted out of the queue when it was taken.
            let first = match self.held.take() {
                Some(c) => Some(c),
                None => tokio::select! {
                    c = self.rx.recv() => c.inspect(|c| self.took(c)),
                    () = &mut stop => None,
                },
            };
            let Some(first) = first else { break };
            let _ = batch.take(first);
            let deadline = tokio::time::Instant::now() + self.cfg.flush_interval;
            loop {
                stopping = !self.gather(&mut batch);
                let now = tokio::time::Instant::now();
                if stopping
                    || self.held.is_some()
                    || batch.events >= self.cfg.max_batch
                    || now >= deadline
                {
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

    /// Take what is queued into `batch` without waiting, until it is full or a chunk shares
    /// other text (held for the next batch). False once the queue is closed and empty.
    fn gather(&mut self, batch: &mut Gathered) -> bool {
        while batch.events < self.cfg.max_batch && self.held.is_none() {
            match self.rx.try_recv() {
                Ok(c) => {
                    self.took(&c);
                    self.held = batch.take(c);
                }
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn took(&self, chunk: &Chunk) {
        self.stats
            .queued
            .fetch_sub(chunk.events as u64, Ordering::Relaxed);
    }

    /// Send `batch` until it is acknowledged or refused (it is then empty), or `stop` resolves
    /// (returns false; the batch is kept for the final flush).
    async fn send_until_done(
        &self,
        batch: &mut Gathered,
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
                        .fetch_add(batch.events as u64, Ordering::Relaxed);
                    batch.clear();
                    return true;
                }
                Sent::Refused(e) => {
                    tracing::error!(error = %e, events = batch.events, "the control plane refused a batch of decision events; dropped");
                    self.stats
                        .dropped
                        .fetch_add(batch.events as u64, Ordering::Relaxed);
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
                    tracing::warn!(error = %e, events = batch.events, retry_in_ms = backoff.max(asked).as_millis() as u64, "sending decision events failed; retrying");
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
    async fn final_flush(mut self, mut batch: Gathered) {
        let deadline = tokio::time::Instant::now() + self.cfg.final_flush;
        self.rx.close();
        loop {
            self.gather(&mut batch);
            if batch.events == 0 {
                match self.held.take() {
                    Some(c) => {
                        let _ = batch.take(c);
                    }
                    None => return,
                }
            }
            let sent = tokio::time::timeout_at(deadline, self.send(&batch)).await;
            match sent {
                Ok(Sent::Acknowledged) => {
                    self.stats
                        .shipped
                        .fetch_add(batch.events as u64, Ordering::Relaxed);
                    batch.clear();
                }
                _ => {
                    let mut lost = batch.events as u64;
                    lost += self.held.take().map_or(0, |c| c.events as u64);
                    while let Ok(c) = self.rx.try_recv() {
                        self.took(&c);
                        lost += c.events as u64;
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

    async fn send(&self, batch: &Gathered) -> Sent {
        let rows = self.client.reads_rows();
        match self.send_as(batch, rows).await {
            // A control plane that listed rows may have been replaced by an older one (a
            // rollback, or both behind one address): the same batch as objects, and objects
            // from then on, until the gateway registers again.
            Sent::Refused(ControlError::Status { status, .. })
                if rows && (status == 400 || status == 415) =>
            {
                tracing::warn!(
                    status,
                    "the control plane refused a batch of rows; sending decision events as objects"
                );
                self.client.forget_rows();
                self.send_as(batch, false).await
            }
            sent => sent,
        }
    }

    async fn send_as(&self, batch: &Gathered, rows: bool) -> Sent {
        let body = match encode(&self.cfg.gateway, &batch.chunks, rows) {
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

/// Chunks that share their text (the first's) as one gzipped batch: rows
/// (`{"gateway": …, "shared": {…}, "rows": [[…], …]}`) when the control plane reads them, else
/// the object form (`{"gateway": …, "events": [{…}, …]}`), decoded from the rows.
pub fn encode(gateway: &str, chunks: &[Chunk], rows: bool) -> Result<Bytes, String> {
    let Some(first) = chunks.first() else {
        return Err("an empty batch".to_owned());
    };
    let size: usize = chunks.iter().map(|c| c.rows.len() + 1).sum();
    let mut json = Vec::with_capacity(size + 512);
    let err = |e: serde_json::Error| e.to_string();
    json.extend_from_slice(b"{\"gateway\":");
    serde_json::to_writer(&mut json, gateway).map_err(err)?;
    if rows {
        json.extend_from_slice(b",\"shared\":");
        serde_json::to_writer(&mut json, &first.shared).map_err(err)?;
        json.extend_from_slice(b",\"rows\":[");
        for (i, c) in chunks.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            json.extend_from_slice(&c.rows);
        }
        json.push(b']');
    } else {
        let mut events = Vec::new();
        for c in chunks {
            let mut list = Vec::with_capacity(c.rows.len() + 2);
            list.push(b'[');
            list.extend_from_slice(&c.rows);
            list.push(b']');
            let decoded: Vec<DecodedRow<Arc<str>>> = serde_json::from_slice(&list).map_err(err)?;
            events.extend(decoded.into_iter().map(|r| r.resolve(&c.shared)));
        }
        json.extend_from_slice(b",\"events\":");
        serde_json::to_writer(&mut json, &events).map_err(err)?;
    }
    json.push(b'}');
    // Serialised first, then compressed in one write: each write into the encoder is a
    // deflate call.
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
