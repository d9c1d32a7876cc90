//! Prometheus metrics, with label values bounded by construction.
//!
//! Label values come only from fixed sets (routes, status codes, error codes, policy names and
//! actions, reload results) or from the active pack (its model names, its PII entity names, its
//! identity in `palisade_pack_info`); a model a caller invents is counted as `other`. No key
//! ids, no team names, no request ids. Latency is split in two histograms so the gateway's own
//! cost is visible apart from the provider's: `palisade_gateway_overhead_seconds` (time spent in
//! the gateway until the response head, minus the provider's time to its head) and
//! `palisade_upstream_seconds`.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::pack::ActivePack;
use crate::service::ApiRoute;

/// What `palisade_policy_decisions_total{policy="pii-detector"}` counts, resolved up front.
/// The same words as the audit record's `policies[].decision`.
const PII_ACTIONS: [&str; 5] = ["pass", "redact", "block", "log", "escalate"];

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
    pub(crate) in_flight: IntGauge,
    pub(crate) errors: IntCounterVec,
    /// Calls to a deployment of a model with alternatives, by how they ended.
    attempts: IntCounterVec,
    /// Each routed deployment's circuit: 1 in rotation, 0 out (set at scrape time).
    deployment_up: prometheus::IntGaugeVec,
    /// Connections closed at accept because their client address held the per-client cap.
    pub(crate) connections_refused: IntCounter,
    /// Label handles of the series every request records, resolved once: recording is then an
    /// atomic add, not a label hash and a map lookup under the vector's lock (~1 % of the
    /// full chain's CPU).
    overhead_by_route: Vec<Histogram>,
    upstream_by_route: Vec<Histogram>,
    pii_decisions: [IntCounter; 5],
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
        let attempts = IntCounterVec::new(
            Opts::new(
                "palisade_upstream_attempts_total",
                "Calls to the deployments of models with deployments or fallbacks, by deployment (provider/upstream_model) and outcome (HTTP status or error code)",
            ),
            &["deployment", "outcome"],
        )?;
        let deployment_up = prometheus::IntGaugeVec::new(
            Opts::new(
                "palisade_deployment_up",
                "Whether a routed deployment is in rotation (1) or taken out by its circuit breaker (0); only deployments that have failed are listed",
            ),
            &["deployment"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(deployment_up.clone()))?;
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
        let connections_refused = IntCounter::new(
            "palisade_connections_refused_total",
            "Connections closed at accept: the client address held its per-client cap",
        )?;
        registry.register(Box::new(connections_refused.clone()))?;
        let by_route = |vec: &HistogramVec| -> Result<Vec<Histogram>, prometheus::Error> {
            ApiRoute::ALL
                .iter()
                .map(|r| vec.get_metric_with_label_values(&[r.as_str()]))
                .collect()
        };
        let overhead_by_route = by_route(&overhead)?;
        let upstream_by_route = by_route(&upstream)?;
        let [a, b, c, d, e] =
            PII_ACTIONS.map(|a| decisions.get_metric_with_label_values(&["pii-detector", a]));
        let pii_decisions = [a?, b?, c?, d?, e?];
        Ok(Self {
            registry,
            pack_info,
            reloads,
            last_reload_ok,
            requests,
            decisions,
            pii_findings,
            in_flight,
            errors,
            connections_refused,
            overhead_by_route,
            upstream_by_route,
            pii_decisions,
            attempts,
            deployment_up,
        })
    }

    /// Whether a routed deployment is in rotation, after a call's result.
    pub(crate) fn deployment_up(&self, deployment: &str, up: bool) {
        self.deployment_up
            .with_label_values(&[deployment])
            .set(i64::from(up));
    }

    /// Count one call to a routed deployment.
    pub(crate) fn attempt(&self, deployment: &str, outcome: &str) {
        self.attempts
            .with_label_values(&[deployment, outcome])
            .inc();
    }

    /// The gateway's own time on a request of `route`.
    pub(crate) fn overhead(&self, route: ApiRoute) -> &Histogram {
        &self.overhead_by_route[route.index()]
    }

    /// The provider's time to its response head on a request of `route`.
    pub(crate) fn upstream(&self, route: ApiRoute) -> &Histogram {
        &self.upstream_by_route[route.index()]
    }

    /// Count one decision of the PII detector (`pass` or its configured action).
    pub(crate) fn pii_decision(&self, action: &str) {
        match PII_ACTIONS.iter().position(|a| *a == action) {
            Some(i) => self.pii_decisions[i].inc(),
            None => self
                .decisions
                .with_label_values(&["pii-detector", action])
                .inc(),
        }
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

    /// The registry, for components that export their own metrics (control-plane agent).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Totals for the control-plane report: requests, blocked and redacted decisions.
    pub fn totals(&self) -> (u64, u64, u64) {
        let sum = |families: Vec<prometheus::proto::MetricFamily>, want: Option<&str>| -> u64 {
            families
                .iter()
                .flat_map(|f| f.get_metric())
                .filter(|m| {
                    want.is_none_or(|w| {
                        m.get_label()
                            .iter()
                            .any(|l| l.name() == "action" && l.value() == w)
                    })
                })
                .map(|m| m.get_counter().get_value())
                .map(|v| {
                    if v.is_finite() && v > 0.0 {
                        v as u64
                    } else {
                        0
                    }
                })
                .sum()
        };
        (
            sum(self.requests.collect(), None),
            sum(self.decisions.collect(), Some("block")),
            sum(self.decisions.collect(), Some("redact")),
        )
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

/// Reads the current value of one counter kept elsewhere.
pub(crate) type ReadCounter = Box<dyn Fn() -> u64 + Send + Sync>;

/// A [`ReadCounter`] of one atomic field of a shared stats struct.
pub(crate) fn read_field<S: Send + Sync + 'static>(
    stats: &std::sync::Arc<S>,
    field: fn(&S) -> &std::sync::atomic::AtomicU64,
) -> ReadCounter {
    let stats = std::sync::Arc::clone(stats);
    Box::new(move || field(&stats).load(std::sync::atomic::Ordering::Relaxed))
}

/// Counters whose values live in atomics of another part (the audit writer's, the trace
/// exporter's), read when scraped. They only go up: the parts keep their atomics across
/// replacements (a reload's new audit sink shares the old one's). Each scrape builds its
/// families from the values it reads, so concurrent scrapes cannot add a difference twice.
pub(crate) struct AtomicCounters {
    counters: Vec<(Opts, ReadCounter)>,
    descs: Vec<prometheus::core::Desc>,
}

impl AtomicCounters {
    /// One counter per `(name, help, read)`.
    pub(crate) fn new(list: Vec<(&str, &str, ReadCounter)>) -> Result<Self, prometheus::Error> {
        let mut counters = Vec::with_capacity(list.len());
        let mut descs = Vec::with_capacity(list.len());
        for (name, help, read) in list {
            let opts = Opts::new(name, help);
            descs.extend(
                IntCounter::with_opts(opts.clone())?
                    .desc()
                    .into_iter()
                    .cloned(),
            );
            counters.push((opts, read));
        }
        Ok(Self { counters, descs })
    }
}

impl Collector for AtomicCounters {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut out = Vec::with_capacity(self.counters.len());
        for (opts, read) in &self.counters {
            if let Ok(counter) = IntCounter::with_opts(opts.clone()) {
                counter.inc_by(read());
                out.extend(counter.collect());
            }
        }
        out
    }
}
