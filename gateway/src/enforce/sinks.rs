//! The audit sinks of the enforcement: one writer per distinct audit directory, swapped in when a
//! reload changes `dir`, and the audit counters in the gateway's registry.
//!
//! The first pack's sink starts inside `Gateway::bind` (blocking file I/O is fine there:
//! nothing is served yet), so a directory that cannot be opened stops start-up. A reload that
//! changes `dir` starts the new sink on the blocking pool, off the request path; the old sink
//! keeps taking records until the new one is up, then it is swapped out (its writer is joined
//! at shutdown). If two reloads race, only the latest one's sink is kept.
//!
//! Hooks are synchronous, so records go in without waiting when there is room.
//! [`AuditSinks::submit`] (the default settings, and `drop`) uses [`AuditSink::record_now`]: a
//! full queue under `on_queue_full: drop` drops and counts the record; under `block` it returns
//! a [`Release`] that waits for room, and the request's response waits for it — the request
//! blocks, as the setting says, and records waiting for room are bounded by the requests in
//! flight (no task per record). [`AuditSinks::submit_durable`] (`block` with
//! `fsync_interval_ms: 0`) queues with [`AuditSink::record_now_durable`] and returns a
//! [`Release`] that resolves when the writer has written and fsynced the record's batch (after
//! waiting for room, when the queue was full): the response waits for that, never the hook. A
//! request that goes away while its record waits (cancelled) leaves the record queued if there
//! is room then, otherwise counted as dropped and noted in the chain (`dropped_before`).
//! A record whose write or fsync failed is logged with its request id and the response is sent
//! anyway: the provider has answered (and charged) by then, and withholding the answer would not
//! undo that; `palisade_audit_write_errors_total` counts the failures.
//!
//! Counters (`palisade_audit_records_written_total`, `palisade_audit_records_dropped_total`,
//! `palisade_audit_write_errors_total`) come from one [`AuditStats`] shared by every sink, so
//! they never go down when a sink is replaced; `palisade_audit_records_lost_total` counts records
//! that never reached the log: their write failed (the chain carries a `gap` line for them once
//! writing resumes), or they found no running writer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use policy_engine::pack::AuditLoggerConfig;

use crate::audit::{
    AuditError, AuditRecord, AuditSink, AuditStats, DurablyQueued, Enqueued, WriterHandle,
};
use crate::clock::Clock;
use crate::hooks::Release;
use crate::metrics::{read_field, AtomicCounters};

/// The audit log of the first pack could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("the audit log in `{dir}` cannot be started: {source}")]
pub struct AuditStartError {
    pub dir: String,
    pub source: AuditError,
}

#[derive(Debug)]
struct ActiveSink {
    dir: String,
    sink: AuditSink,
}

#[derive(Debug)]
pub(super) struct AuditSinks {
    inner: Arc<SinksState>,
}

#[derive(Debug)]
struct SinksState {
    clock: Arc<dyn Clock>,
    current: ArcSwapOption<ActiveSink>,
    stats: Arc<AuditStats>,
    /// Writers to join at shutdown, by generation.
    writers: DashMap<u64, WriterHandle>,
    generation: AtomicU64,
    started_once: AtomicBool,
    startup_error: ArcSwapOption<AuditStartError>,
}

impl AuditSinks {
    pub(super) fn new(clock: Arc<dyn Clock>) -> Result<Self, prometheus::Error> {
        Ok(Self {
            inner: Arc::new(SinksState {
                clock,
                current: ArcSwapOption::empty(),
                stats: Arc::new(AuditStats::default()),
                writers: DashMap::new(),
                generation: AtomicU64::new(0),
                started_once: AtomicBool::new(false),
                startup_error: ArcSwapOption::empty(),
            }),
        })
    }

    pub(super) fn stats(&self) -> &AuditStats {
        &self.inner.stats
    }

    pub(super) fn startup_error(&self) -> Option<Arc<AuditStartError>> {
        self.inner.startup_error.load_full()
    }

    /// Make sure a sink writes to `cfg.dir`: nothing to do when one does; the first time,
    /// start it here; afterwards, on the blocking pool.
    pub(super) fn ensure(&self, cfg: &AuditLoggerConfig) {
        if self
            .inner
            .current
            .load()
            .as_ref()
            .is_some_and(|s| s.dir == cfg.dir)
        {
            return;
        }
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let first = !self.inner.started_once.swap(true, Ordering::AcqRel);
        let shared = Arc::clone(&self.inner);
        let cfg = cfg.clone();
        let rt = tokio::runtime::Handle::try_current();
        match rt {
            Ok(rt) if !first => {
                rt.spawn_blocking(move || shared.start(&cfg, generation, false));
            }
            _ => self.inner.start(&cfg, generation, first),
        }
    }

    /// Queue a record; under `on_queue_full: block` with a full queue, the release waits for
    /// room (see the module docs).
    pub(super) fn submit(&self, record: AuditRecord) -> Release {
        let Some(active) = self.inner.current.load_full() else {
            self.inner.lost();
            tracing::error!(request_id = %record.request_id, "no audit writer is running: record lost");
            return Release::Now;
        };
        match active.sink.record_now(record) {
            Ok(Enqueued::Queued | Enqueued::Dropped) => Release::Now,
            Ok(Enqueued::Full(pending)) => {
                let shared = Arc::clone(&self.inner);
                Release::After(Box::pin(async move {
                    if pending.queue().await.is_err() {
                        shared.lost();
                    }
                }))
            }
            Err(e) => {
                self.inner.lost();
                tracing::error!(error = %e, "audit record lost");
                Release::Now
            }
        }
    }

    /// Queue a record and return a release that resolves once its line is written and fsynced.
    /// With a full queue the release first waits for room; dropped before that, the record is
    /// queued if there is room, else counted as dropped and noted in the chain.
    pub(super) fn submit_durable(&self, record: AuditRecord) -> Release {
        let Some(active) = self.inner.current.load_full() else {
            self.inner.lost();
            tracing::error!(request_id = %record.request_id, "no audit writer is running: record lost");
            return Release::Now;
        };
        let request_id = record.request_id.clone();
        let ack = match active.sink.record_now_durable(record) {
            Ok(DurablyQueued::Queued(ack)) => ack,
            Ok(DurablyQueued::Full { pending, ack }) => {
                let shared = Arc::clone(&self.inner);
                return Release::After(Box::pin(async move {
                    if pending.queue().await.is_err() {
                        shared.lost();
                        tracing::error!(request_id, "audit writer stopped: record lost");
                        return;
                    }
                    if let Err(e) = ack.durable().await {
                        tracing::error!(request_id, error = %e, "audit record not confirmed on disk; the response is sent anyway");
                    }
                }));
            }
            Err(e) => {
                self.inner.lost();
                tracing::error!(request_id, error = %e, "audit record lost");
                return Release::Now;
            }
        };
        Release::After(Box::pin(async move {
            if let Err(e) = ack.durable().await {
                tracing::error!(request_id, error = %e, "audit record not confirmed on disk; the response is sent anyway");
            }
        }))
    }

    /// Stop taking records, let every writer flush, and join them.
    pub(super) fn shutdown(&self) {
        self.inner.current.store(None);
        let keys: Vec<u64> = self.inner.writers.iter().map(|e| *e.key()).collect();
        for k in keys {
            if let Some((_, w)) = self.inner.writers.remove(&k) {
                w.join();
            }
        }
    }

    pub(super) fn register(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        registry.register(Box::new(stats_collector(&self.inner.stats)?))
    }
}

impl SinksState {
    /// Count a record that found no running writer.
    fn lost(&self) {
        self.stats.lost.fetch_add(1, Ordering::Relaxed);
    }

    fn start(&self, cfg: &AuditLoggerConfig, generation: u64, first: bool) {
        match AuditSink::start_with_stats(cfg, Arc::clone(&self.clock), Arc::clone(&self.stats)) {
            Ok((sink, writer)) => {
                if self.generation.load(Ordering::Acquire) != generation {
                    // A later reload wins; this writer stops as soon as its sink is dropped.
                    drop(sink);
                    writer.join();
                    return;
                }
                self.writers.insert(generation, writer);
                self.current.store(Some(Arc::new(ActiveSink {
                    dir: cfg.dir.clone(),
                    sink,
                })));
                tracing::info!(dir = %cfg.dir, "audit log writing");
            }
            Err(source) => {
                tracing::error!(dir = %cfg.dir, error = %source, "the audit log cannot be started; the previous one (if any) keeps taking records");
                if first {
                    self.startup_error.store(Some(Arc::new(AuditStartError {
                        dir: cfg.dir.clone(),
                        source,
                    })));
                }
            }
        }
    }
}

/// The shared [`AuditStats`] as counters, read at scrape time.
fn stats_collector(stats: &Arc<AuditStats>) -> Result<AtomicCounters, prometheus::Error> {
    let read = |f: fn(&AuditStats) -> &AtomicU64| read_field(stats, f);
    AtomicCounters::new(vec![
        (
            "palisade_audit_records_written_total",
            "Audit records written to the log.",
            read(|s| &s.written),
        ),
        (
            "palisade_audit_records_dropped_total",
            "Audit records dropped because the queue was full under `on_queue_full: drop`.",
            read(|s| &s.dropped),
        ),
        (
            "palisade_audit_write_errors_total",
            "Failed writes or fsyncs of the audit log (each may hold a batch of records).",
            read(|s| &s.write_errors),
        ),
        (
            "palisade_audit_records_lost_total",
            "Audit records that never reached the log: their write failed (a full disk), or no writer was running.",
            read(|s| &s.lost),
        ),
    ])
}
