//! A reservation: budget taken before a request is forwarded, and the guard that gives it back.
//!
//! A [`Reservation`] is returned by `BudgetEnforcer::reserve` and must end in `settle` (to the
//! provider's reported usage) or `release` (the request failed, timed out or was cancelled). If
//! it is dropped instead — a handler returned early, a client went away mid-stream, a task was
//! aborted — its `Drop` releases it: synchronously on the in-memory store, on a task of the
//! current Tokio runtime for Redis. So no path leaks a reservation; drops are counted in
//! `palisade_budget_released_by_drop_total`, because a drop usually means a missing `release`.
//!
//! What it does not do: survive a process crash (the memory store then keeps the estimate as
//! spent, the conservative side; Redis keys expire with their window), or retry a settle that
//! Redis refused (counted in `palisade_budget_store_errors_total{op="settle"}` and logged).

use std::sync::Arc;

use policy_engine::pack::{BudgetScope, BudgetWindow};

use super::estimate::Price;
use super::lease::Lease;
use super::plan::Dimension;
use super::store::{BudgetStore, Correction, MeterKey};
use super::BudgetShared;

/// Why an alert fired. Each fires at most once per window per limit on a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// Usage crossed `soft_threshold` of the limit.
    SoftThreshold,
    /// The limit is used up; its action (`alert` or `degrade`) let the request pass.
    Exhausted,
}

/// An event for the gateway to log or forward.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetAlert {
    pub kind: AlertKind,
    pub scope: BudgetScope,
    pub window: BudgetWindow,
    pub dimension: Dimension,
    /// Counter value after this request's reservation (µ$ or tokens).
    pub used: u64,
    pub limit: u64,
}

#[derive(Debug)]
pub(crate) struct HeldCharge {
    pub(crate) key: MeterKey,
    pub(crate) meter: usize,
    pub(crate) dim: Dimension,
    pub(crate) reserved: u64,
    pub(crate) ttl_secs: Option<i64>,
    /// The pre-borrowed slice this charge was served from (Redis with `preborrow_fraction`).
    pub(crate) lease: Option<Arc<Lease>>,
}

#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) shared: Arc<BudgetShared>,
    pub(crate) charges: Vec<HeldCharge>,
    pub(crate) price: Price,
}

impl Held {
    /// Corrections that move each counter from the reserved amount to `actual`; a request
    /// counter keeps its one when the request was `served`, and gives it back when not.
    pub(crate) fn corrections(
        &self,
        actual_micros: u64,
        actual_tokens: u64,
        served: bool,
    ) -> Vec<Correction> {
        self.charges
            .iter()
            .map(|c| Correction {
                key: c.key.clone(),
                reserved: c.reserved,
                actual: match c.dim {
                    Dimension::Usd => actual_micros,
                    Dimension::Tokens => actual_tokens,
                    Dimension::Requests => u64::from(served),
                },
                ttl_secs: c.ttl_secs,
                lease: c.lease.clone(),
            })
            .collect()
    }

    /// Give everything back without awaiting: for `Drop`.
    fn release_detached(self) {
        self.shared.metrics.released_by_drop();
        let corrections = self.corrections(0, 0, false);
        if corrections.iter().all(Correction::is_noop) {
            return;
        }
        match &self.shared.store {
            BudgetStore::Memory(m) => {
                m.adjust(corrections.iter().map(|c| (&c.key, c.delta())));
            }
            BudgetStore::Redis(r) => match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    let store = Arc::clone(r);
                    let shared = Arc::clone(&self.shared);
                    crate::tasks::spawn_on(&handle, async move {
                        if let Err(e) = store.adjust(corrections).await {
                            shared.metrics.store_error("release", e.label());
                            tracing::warn!(error = %e, "budget: releasing a dropped reservation failed");
                        }
                    });
                }
                Err(_) => {
                    self.shared.metrics.store_error("release", "no_runtime");
                    tracing::warn!(
                        "budget: reservation dropped outside a runtime; it expires with its window"
                    );
                }
            },
        }
    }
}

/// Budget held for one request. End it with `settle` or `release`; dropping it releases it.
#[derive(Debug)]
pub struct Reservation {
    pub(crate) model: String,
    pub(crate) degraded_from: Option<String>,
    pub(crate) remaining_usd: Option<f64>,
    pub(crate) alerts: Vec<BudgetAlert>,
    pub(crate) enforced: bool,
    pub(crate) held: Option<Held>,
}

impl Reservation {
    /// The model to send upstream: the requested one, or `degrade_to` of an exhausted limit.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The model the caller asked for, when a `degrade` limit replaced it (for the response
    /// header that tells the caller).
    pub fn degraded_from(&self) -> Option<&str> {
        self.degraded_from.as_deref()
    }

    /// USD left in the tightest applicable USD limit after this reservation, for
    /// `x-palisade-budget-remaining-usd`. `None` when no USD limit applies.
    pub fn remaining_usd(&self) -> Option<f64> {
        self.remaining_usd
    }

    /// Alerts this request triggered (soft threshold, exhausted `alert`/`degrade` limits).
    pub fn alerts(&self) -> &[BudgetAlert] {
        &self.alerts
    }

    /// `false` when the store was unavailable and the pack said `fail_open`: nothing was
    /// checked, but usage is still recorded on settle if the store is back by then.
    pub fn enforced(&self) -> bool {
        self.enforced
    }

    /// Micro-dollars and tokens this reservation holds against its first counter of each kind.
    pub fn reserved(&self) -> (u64, u64) {
        let mut out = (0, 0);
        if let Some(h) = &self.held {
            for c in &h.charges {
                match c.dim {
                    Dimension::Usd => out.0 = out.0.max(c.reserved),
                    Dimension::Tokens => out.1 = out.1.max(c.reserved),
                    Dimension::Requests => {}
                }
            }
        }
        out
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.release_detached();
        }
    }
}
