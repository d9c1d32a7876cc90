//! A pack's budget settings turned into meters: the per-request work done once, at load time.
//!
//! One configured limit becomes one meter per dimension it sets (a limit with both `usd` and
//! `tokens` is two meters). Each meter carries its stable counter name
//! (`palisade:budget:{PACK/ENV}:SCOPE:WINDOW:DIM`), its cap in micro-dollars or tokens, its
//! action and its pre-resolved metric handles, so a request only compares strings and adds
//! integers. Meters are ordered `degrade` first, then `block`, then `alert`: a request that would
//! exhaust a degrade limit is degraded before block limits are checked against the cheaper model.
//!
//! The counter name does not include the amount, so a reload that raises or lowers a limit keeps
//! the spend already counted.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use policy_engine::pack::{BudgetEnforcerConfig, BudgetScope, BudgetWindow, ExhaustedAction};
use policy_engine::{CompiledPack, ModelRoute};

use super::estimate::{micros_to_usd, usd_to_micros, Price};
use super::metrics::{BudgetMetrics, MeterGauges};

/// What a meter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Micro-dollars.
    Usd,
    Tokens,
    /// Requests: one per admitted request, whatever it used.
    Requests,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usd => "usd",
            Self::Tokens => "tokens",
            Self::Requests => "requests",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Meter {
    pub(crate) name: Arc<str>,
    pub(crate) scope: BudgetScope,
    pub(crate) window: BudgetWindow,
    pub(crate) dim: Dimension,
    pub(crate) cap: u64,
    /// What a replica may pre-borrow of this limit from Redis: `cap × preborrow_fraction`,
    /// rounded down (0: every reservation goes to Redis).
    pub(crate) slice: u64,
    /// `cap × soft_threshold`, rounded up.
    pub(crate) soft: u64,
    pub(crate) action: ExhaustedAction,
    pub(crate) degrade_to: Option<String>,
    /// Start of the last window in which the soft threshold / exhaustion was announced.
    pub(crate) soft_announced: AtomicI64,
    pub(crate) exhausted_announced: AtomicI64,
    pub(crate) gauges: MeterGauges,
}

impl Meter {
    pub(crate) fn applies(&self, key_id: &str, team: Option<&str>, model: &str) -> bool {
        match &self.scope {
            BudgetScope::Environment => true,
            BudgetScope::Key(k) => k == key_id,
            BudgetScope::Team(t) => team == Some(t.as_str()),
            BudgetScope::Model(m) => m == model,
        }
    }
}

/// Everything the enforcer needs from a compiled pack.
#[derive(Debug)]
pub(crate) struct BudgetPlan {
    pub(crate) meters: Vec<Meter>,
    pub(crate) prices: BTreeMap<String, Price>,
    pub(crate) default_max_tokens: u64,
    pub(crate) fail_open: bool,
    /// How long a request waits for an `on_exhausted: queue` limit's next window.
    pub(crate) max_queue_ms: u64,
}

impl BudgetPlan {
    pub(crate) fn new(
        pack_name: &str,
        environment: Option<&str>,
        cfg: &BudgetEnforcerConfig,
        models: &BTreeMap<String, ModelRoute>,
        metrics: &BudgetMetrics,
    ) -> Self {
        let env = environment.unwrap_or("_");
        let soft = if cfg.soft_threshold.is_finite() {
            cfg.soft_threshold.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let borrow = if cfg.preborrow_fraction.is_finite() {
            cfg.preborrow_fraction
                .clamp(0.0, policy_engine::pack::MAX_PREBORROW_FRACTION)
        } else {
            0.0
        };
        let mut meters = Vec::new();
        for limit in &cfg.limits {
            let dims = [
                limit.usd.map(|u| (Dimension::Usd, usd_to_micros(u))),
                limit.tokens.map(|t| (Dimension::Tokens, t)),
                limit.requests.map(|r| (Dimension::Requests, r)),
            ];
            for (dim, cap) in dims.into_iter().flatten() {
                let gauges = metrics.meter_gauges(&limit.scope, limit.window, dim);
                if gauges.remaining.get() == 0.0 && gauges.used_ratio.get() == 0.0 {
                    // A series no request has touched yet reads its whole limit, not 0 (which
                    // next to a used ratio of 0 contradicted itself). A series that was set
                    // keeps its value across reloads until the next request updates it.
                    gauges.remaining.set(match dim {
                        Dimension::Usd => micros_to_usd(cap),
                        #[expect(clippy::cast_precision_loss, reason = "a gauge; exact below 2^53")]
                        Dimension::Tokens | Dimension::Requests => cap as f64,
                    });
                }
                meters.push(Meter {
                    name: format!(
                        "palisade:budget:{{{pack_name}/{env}}}:{}:{}:{}",
                        limit.scope,
                        limit.window.as_str(),
                        dim.as_str()
                    )
                    .into(),
                    scope: limit.scope.clone(),
                    window: limit.window,
                    dim,
                    cap,
                    slice: slice_of(cap, borrow),
                    soft: soft_mark(cap, soft),
                    action: limit.on_exhausted,
                    degrade_to: limit.degrade_to.clone(),
                    soft_announced: AtomicI64::new(i64::MIN),
                    exhausted_announced: AtomicI64::new(i64::MIN),
                    gauges,
                });
            }
        }
        meters.sort_by_key(|m| match m.action {
            ExhaustedAction::Degrade => 0,
            ExhaustedAction::Block | ExhaustedAction::Queue => 1,
            ExhaustedAction::Alert => 2,
        });
        let prices = models
            .iter()
            .map(|(name, r)| {
                let p = Price::from_usd_per_mtok(r.input_usd_per_mtok, r.output_usd_per_mtok);
                (name.clone(), p)
            })
            .collect();
        Self {
            meters,
            prices,
            default_max_tokens: u64::from(cfg.default_max_tokens),
            max_queue_ms: cfg.max_queue_ms,
            fail_open: matches!(
                cfg.on_store_unavailable,
                policy_engine::pack::StoreUnavailable::FailOpen
            ),
        }
    }

    pub(crate) fn from_pack(pack: &CompiledPack, metrics: &BudgetMetrics) -> Option<Self> {
        let cfg = pack.budget.as_ref()?;
        Some(Self::new(
            &pack.name,
            pack.environment.as_deref(),
            cfg,
            &pack.models,
            metrics,
        ))
    }

    /// A model's price; an unknown model is free (the gateway refuses models the pack does not
    /// list before budgets run, and validation refuses USD limits on unpriced models).
    pub(crate) fn price(&self, model: &str) -> Price {
        self.prices.get(model).copied().unwrap_or_default()
    }
}

#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a threshold mark; `as` saturates and the fraction is clamped to [0, 1]"
)]
fn soft_mark(cap: u64, fraction: f64) -> u64 {
    ((cap as f64) * fraction).ceil() as u64
}

#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a slice of a cap; `as` saturates and the fraction is clamped to [0, 0.1]"
)]
fn slice_of(cap: u64, fraction: f64) -> u64 {
    ((cap as f64) * fraction).floor() as u64
}
