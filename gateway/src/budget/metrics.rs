//! Prometheus metrics of the budget enforcer, with bounded label sets.
//!
//! Spend and tokens are labelled by scope *kind* (environment, key, team, model), never by key
//! id or team name; the remaining-budget gauge is labelled by *configured* scope and window, so
//! its cardinality is the number of limits in the pack, not the number of callers; so is
//! `palisade_budget_used_ratio{scope,window,unit}`, the used fraction the alert rules read. Decisions are
//! labelled by action. Every label handle used on the request path is resolved once, here or
//! when a pack is planned, so recording costs an atomic add.
//!
//! What it does not do: remove the gauge series of a limit deleted by a reload (it keeps its last
//! value until the process restarts), or register itself: the gateway calls
//! [`BudgetMetrics::register`] on its registry.

use policy_engine::pack::{BudgetScope, BudgetWindow};
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry};

use super::plan::Dimension;

/// What a reservation ended in, as counted by `palisade_budget_decisions_total{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionLabel {
    Pass,
    Alert,
    Degrade,
    Block,
    FailOpen,
    FailClosed,
}

impl DecisionLabel {
    const ALL: [Self; 6] = [
        Self::Pass,
        Self::Alert,
        Self::Degrade,
        Self::Block,
        Self::FailOpen,
        Self::FailClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Alert => "alert",
            Self::Degrade => "degrade",
            Self::Block => "block",
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

const SCOPE_KINDS: [&str; 4] = ["environment", "key", "team", "model"];

fn kind_index(scope: &BudgetScope) -> usize {
    match scope {
        BudgetScope::Environment => 0,
        BudgetScope::Key(_) => 1,
        BudgetScope::Team(_) => 2,
        BudgetScope::Model(_) => 3,
    }
}

/// Gauges of one configured limit and dimension.
#[derive(Debug, Clone)]
pub(crate) struct MeterGauges {
    pub(crate) remaining: Gauge,
    pub(crate) used_ratio: Gauge,
}

/// The enforcer's metrics. Create once per process and share.
#[derive(Debug, Clone)]
pub struct BudgetMetrics {
    spend_usd: prometheus::CounterVec,
    tokens: IntCounterVec,
    remaining: GaugeVec,
    used_ratio: GaugeVec,
    decisions: IntCounterVec,
    soft: IntCounterVec,
    store_errors: IntCounterVec,
    released_by_drop: IntCounter,
    preborrowed: IntCounter,
    spend_by_kind: [prometheus::Counter; 4],
    tokens_by_kind: [IntCounter; 4],
    soft_by_kind: [IntCounter; 4],
    decision_handles: [IntCounter; 6],
}

impl BudgetMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let spend_usd = prometheus::CounterVec::new(
            Opts::new(
                "palisade_budget_spend_usd_total",
                "Settled spend in USD, by scope kind of the limits it counted against.",
            ),
            &["scope_kind"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "palisade_budget_tokens_total",
                "Settled tokens (input + output), by scope kind.",
            ),
            &["scope_kind"],
        )?;
        let remaining = GaugeVec::new(
            Opts::new(
                "palisade_budget_remaining",
                "What is left of each configured limit in its current window (USD or tokens).",
            ),
            &["scope", "window", "unit"],
        )?;
        let used_ratio = GaugeVec::new(
            Opts::new(
                "palisade_budget_used_ratio",
                "Used fraction of each configured limit in its current window (1 = exhausted).",
            ),
            &["scope", "window", "unit"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "palisade_budget_decisions_total",
                "Budget decisions by action.",
            ),
            &["action"],
        )?;
        let soft = IntCounterVec::new(
            Opts::new(
                "palisade_budget_soft_threshold_total",
                "Soft-threshold alerts (once per window per limit), by scope kind.",
            ),
            &["scope_kind"],
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "palisade_budget_store_errors_total",
                "Failed budget store operations, by operation and error kind.",
            ),
            &["op", "error"],
        )?;
        let released_by_drop = IntCounter::new(
            "palisade_budget_released_by_drop_total",
            "Reservations neither settled nor released, given back by their drop guard.",
        )?;
        let preborrowed = IntCounter::new(
            "palisade_budget_preborrowed_total",
            "Reservations admitted from slices pre-borrowed from Redis, without a round trip.",
        )?;
        let spend_by_kind = SCOPE_KINDS.map(|k| spend_usd.with_label_values(&[k]));
        let tokens_by_kind = SCOPE_KINDS.map(|k| tokens.with_label_values(&[k]));
        let soft_by_kind = SCOPE_KINDS.map(|k| soft.with_label_values(&[k]));
        let decision_handles =
            DecisionLabel::ALL.map(|d| decisions.with_label_values(&[d.as_str()]));
        Ok(Self {
            spend_usd,
            tokens,
            remaining,
            used_ratio,
            decisions,
            soft,
            store_errors,
            released_by_drop,
            preborrowed,
            spend_by_kind,
            tokens_by_kind,
            soft_by_kind,
            decision_handles,
        })
    }

    /// Register every budget metric on `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.spend_usd.clone()))?;
        registry.register(Box::new(self.tokens.clone()))?;
        registry.register(Box::new(self.remaining.clone()))?;
        registry.register(Box::new(self.used_ratio.clone()))?;
        registry.register(Box::new(self.decisions.clone()))?;
        registry.register(Box::new(self.soft.clone()))?;
        registry.register(Box::new(self.store_errors.clone()))?;
        registry.register(Box::new(self.released_by_drop.clone()))?;
        registry.register(Box::new(self.preborrowed.clone()))?;
        Ok(())
    }

    pub(crate) fn meter_gauges(
        &self,
        scope: &BudgetScope,
        window: BudgetWindow,
        dim: Dimension,
    ) -> MeterGauges {
        let scope = scope.to_string();
        let labels = [scope.as_str(), window.as_str(), dim.as_str()];
        MeterGauges {
            remaining: self.remaining.with_label_values(&labels),
            used_ratio: self.used_ratio.with_label_values(&labels),
        }
    }

    pub(crate) fn decision(&self, d: DecisionLabel) {
        let i = DecisionLabel::ALL.iter().position(|x| *x == d).unwrap_or(0);
        if let Some(c) = self.decision_handles.get(i) {
            c.inc();
        }
    }

    pub(crate) fn spend(&self, scope: &BudgetScope, usd: f64, tokens: u64) {
        let i = kind_index(scope);
        if let Some(c) = self.spend_by_kind.get(i) {
            c.inc_by(usd.max(0.0));
        }
        if let Some(c) = self.tokens_by_kind.get(i) {
            c.inc_by(tokens);
        }
    }

    pub(crate) fn soft_threshold(&self, scope: &BudgetScope) {
        if let Some(c) = self.soft_by_kind.get(kind_index(scope)) {
            c.inc();
        }
    }

    pub(crate) fn store_error(&self, op: &str, error: &str) {
        self.store_errors.with_label_values(&[op, error]).inc();
    }

    pub(crate) fn released_by_drop(&self) {
        self.released_by_drop.inc();
    }

    pub(crate) fn preborrowed(&self) {
        self.preborrowed.inc();
    }

    /// Count of decisions with `action` (for tests and status pages).
    pub fn decisions(&self, d: DecisionLabel) -> u64 {
        self.decisions.with_label_values(&[d.as_str()]).get()
    }

    /// Count of soft-threshold alerts of a scope kind.
    pub fn soft_alerts(&self, scope_kind: &str) -> u64 {
        self.soft.with_label_values(&[scope_kind]).get()
    }

    /// Reservations released by their drop guard.
    pub fn drop_releases(&self) -> u64 {
        self.released_by_drop.get()
    }

    /// Reservations admitted from pre-borrowed slices, without a round trip.
    pub fn preborrowed_reservations(&self) -> u64 {
        self.preborrowed.get()
    }
}
