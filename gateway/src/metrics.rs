//! Prometheus metrics, with label values bounded by construction.
//!
//! Label values come only from fixed sets (routes, status codes, error codes, policy names and
//! actions, reload results) or from the active pack (its model names, its PII entity names, its
//! identity in `palisade_pack_info`); a model a caller invents is counted as `other`. No key
//! ids, no team names, no request ids. Latency is split in two histograms so the gateway's own
//! cost is visible apart from the provider's: `palisade_gateway_overhead_seconds` (time spent in
//! the gateway until the response head, minus the provider's time to its head) and
//! `palisade_upstream_seconds`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::pack::ActivePack;

/// Every metric the gateway exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pack_info: IntGaugeVec,
    reloads: IntCounterVec,
    last_reload_ok: IntGauge,
    pub(crate) requests: IntCounterVec,
    pub(crate) decisions: IntCounterVec,
    pub(crate) pii_findings: IntCounterVec,
    pub(crate) overhead: HistogramVec,
    pub(crate) upstream: HistogramVec,
    pub(crate) in_flight: IntGauge,
    pub(crate) errors: IntCounterVec,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics registration failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let pack_info = IntGaugeVec::new(
            Opts::new(
                "palisade_pack_info",
                "The active policy pack (value is always 1)",
            ),
            &["environment", "pack", "version", "hash"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "palisade_pack_reloads_total",
                "Pack activation attempts by result",
            ),
            &["result"],
        )?;
        let last_reload_ok = IntGauge::new(
            "palisade_pack_last_reload_success",
            "1 if the last pack activation attempt succeeded, 0 if it was rejected",
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "palisade_requests_total",
                "API requests by route, model and status",
            ),
            &["route", "model", "status"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "palisade_policy_decisions_total",
                "Policy decisions by policy and action",
            ),
            &["policy", "action"],
        )?;
        let pii_findings = IntCounterVec::new(
            Opts::new(
                "palisade_pii_findings_total",
                "PII findings by entity and side",
            ),
            &["entity", "side"],
        )?;
        let overhead = HistogramVec::new(
            HistogramOpts::new(
                "palisade_gateway_overhead_seconds",
                "Time spent in the gateway itself, excluding the provider",
            )
            .buckets(vec![
                10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3,
            ]),
            &["route"],
        )?;
        let upstream = HistogramVec::new(
            HistogramOpts::new(
                "palisade_upstream_seconds",
                "Provider latency until the response head",
            )
            .buckets(vec![
                1e-3, 5e-3, 10e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["route"],
        )?;
        let in_flight = IntGauge::new(
            "palisade_requests_in_flight",
            "API requests being served, streams included",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "palisade_errors_total",
                "Refused or failed API requests by error code and side to blame",
            ),
            &["code", "blame"],
        )?;
        registry.register(Box::new(pack_info.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_reload_ok.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(pii_findings.clone()))?;
        registry.register(Box::new(overhead.clone()))?;
        registry.register(Box::new(upstream.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        Ok(Self {
            registry,
            pack_info,
            reloads,
            last_reload_ok,
            requests,
            decisions,
            pii_findings,
            overhead,
            upstream,
            in_flight,
            errors,
        })
    }

    /// A pack became active: exactly one `palisade_pack_info` series remains.
    pub(crate) fn activated(&self, environment: &str, pack: &ActivePack) {
        self.pack_info.reset();
        self.pack_info
            .with_label_values(&[
                environment,
                pack.compiled.name.as_str(),
                pack.version(),
                pack.hash_hex.as_str(),
            ])
            .set(1);
        self.reloads.with_label_values(&["success"]).inc();
        self.last_reload_ok.set(1);
    }

    pub(crate) fn rejected(&self) {
        self.reloads.with_label_values(&["rejected"]).inc();
        self.last_reload_ok.set(0);
    }

    /// The registry, for observers that bring their own metrics (budget, audit).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail on I/O; a metric family error would be a bug here.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}
