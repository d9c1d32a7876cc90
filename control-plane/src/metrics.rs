//! The control plane's Prometheus metrics (`GET /metrics`): event ingest counters, and the
//! escalation queue by environment and version, read from the database at scrape time so every
//! control-plane process on one database reports the same queue.

use std::fmt::Write as _;

use prometheus::{Encoder as _, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::events::Ingested;

/// The escalation queue's gauges, written at scrape time.
const QUEUE_OPEN: &str = "palisade_escalations_open";
const QUEUE_OLDEST_AGE: &str = "palisade_escalations_oldest_open_age_seconds";

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    accepted: IntCounter,
    duplicates: IntCounter,
    escalations_opened: IntCounter,
    pub(crate) batches_refused: IntCounterVec,
    /// Event batches received, by form (`rows`, `objects`): gateways still on the object form
    /// are ones older than rows.
    pub(crate) batches: IntCounterVec,
    /// Event writes holding a database connection (`App::event_tasks`), set at scrape time.
    pub(crate) event_writes: IntGauge,
}

impl Metrics {
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let accepted = IntCounter::new(
            "palisade_cp_events_accepted_total",
            "Decision events stored (each request id once).",
        )?;
        let duplicates = IntCounter::new(
            "palisade_cp_events_duplicate_total",
            "Decision events received again for a stored request id (a retried batch) and skipped.",
        )?;
        let escalations_opened = IntCounter::new(
            "palisade_cp_escalations_opened_total",
            "Escalations opened by ingested events.",
        )?;
        let batches_refused = IntCounterVec::new(
            Opts::new(
                "palisade_cp_event_batches_refused_total",
                "Event batches refused whole, by error code.",
            ),
            &["code"],
        )?;
        let batches = IntCounterVec::new(
            Opts::new(
                "palisade_cp_event_batches_total",
                "Event batches received, by form: rows or objects.",
            ),
            &["format"],
        )?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(accepted.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        registry.register(Box::new(escalations_opened.clone()))?;
        let event_writes = IntGauge::new(
            "palisade_cp_event_writes_in_flight",
            "Event batch writes holding a database connection (waiting for their turn or writing).",
        )?;
        registry.register(Box::new(batches_refused.clone()))?;
        registry.register(Box::new(event_writes.clone()))?;
        Ok(Self {
            registry,
            accepted,
            duplicates,
            escalations_opened,
            batches_refused,
            batches,
            event_writes,
        })
    }

    pub(crate) fn ingested(&self, out: &Ingested) {
        self.accepted.inc_by(out.accepted as u64);
        self.duplicates.inc_by(out.duplicates as u64);
        self.escalations_opened
            .inc_by(out.escalations_opened as u64);
    }

    /// The text exposition: the registry, then the queue gauges from `queue` rows
    /// (environment, version, open escalations, oldest opening in Unix ms).
    pub(crate) fn render(&self, queue: &[(String, String, i64, i64)], now: i64) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        let mut text = String::from_utf8(buf).unwrap_or_default();
        let gauges = [
            (
                QUEUE_OPEN,
                "Escalations not yet resolved, by environment and version.",
            ),
            (
                QUEUE_OLDEST_AGE,
                "Age of the oldest unresolved escalation, by environment and version.",
            ),
        ];
        for (i, (name, help)) in gauges.into_iter().enumerate() {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (env, version, n, oldest) in queue {
                let value = if i == 0 {
                    *n as f64
                } else {
                    now.saturating_sub(*oldest).max(0) as f64 / 1000.0
                };
                let _ = writeln!(
                    text,
                    "{name}{{environment=\"{}\",version=\"{}\"}} {value}",
                    label(env),
                    label(version),
                );
            }
        }
        text
    }
}

/// A label value escaped for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
