//! The `budget-enforcer` policy: reserve an estimate before a request is forwarded, settle it to
//! the provider's reported usage afterwards, release it if the request fails.
//!
//! [`BudgetEnforcer`] is the facade the gateway's request hooks call. It is built from a
//! compiled pack's budget settings and model prices ([`BudgetPlan`](plan)) over a
//! [`BudgetStore`] (memory or Redis) and an injected [`Clock`]. For one request it finds every
//! applicable limit (environment, `key:ID`, `team:NAME`, `model:NAME`, each per window), charges
//! them all in one all-or-nothing store operation, and decides:
//!
//! * every limit fits → pass; the reservation carries what the tightest USD limit has left;
//! * a `degrade` limit does not fit → retry once with its `degrade_to` model (degrade limits now
//!   only counted), and tell the caller;
//! * a `block` limit does not fit → [`BudgetDecision::Block`] with the scope and the reset time;
//! * `alert` limits never refuse; crossing the soft threshold or the limit fires an alert once
//!   per window per limit;
//! * the store is unreachable → `fail_open` (pass, unenforced) or `fail_closed`
//!   ([`BudgetDecision::StoreUnavailable`]), counted either way.
//!
//! On Redis a reservation may be served from a slice this replica pre-borrowed
//! (`preborrow_fraction`, see [`lease`]), and a reservation that needs a round trip runs it on a
//! task of its own, so a caller cancelled mid-script cannot leak what the script reserved.
//!
//! The store should outlive the enforcer: a pack reload builds a new enforcer over the same
//! store, and counters are named by scope and window, not by amount, so spend survives it.
//! This module does not parse requests (the caller passes the estimate, see [`estimate`]) nor
//! render HTTP: a decision is a value, turned into a 429 at the gateway's edge.

pub mod estimate;
mod lease;
mod lease_settle;
pub mod memory;
pub mod metrics;
pub mod persist;
mod plan;
pub mod redis;
mod redis_scripts;
mod reservation;
pub mod store;
pub mod window;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use policy_engine::pack::{BudgetEnforcerConfig, BudgetScope, BudgetWindow, ExhaustedAction};
use policy_engine::{CompiledPack, ModelRoute};

pub use estimate::{estimate_input_tokens, estimate_texts, Price};
pub use memory::MemoryStore;
pub use metrics::{BudgetMetrics, DecisionLabel};
pub use plan::Dimension;
pub use redis::{RedisStore, StoreError};
pub use reservation::{AlertKind, BudgetAlert, Reservation};
pub use store::BudgetStore;
pub use window::{Clock, ManualClock, SystemClock, WindowSpan};

use estimate::micros_to_usd;
use plan::{BudgetPlan, Meter};
use reservation::{Held, HeldCharge};
use store::{Charge, Correction, LeaseRef, MeterKey, ReserveOutcome};

/// What the gateway knows about a request before forwarding it.
#[derive(Debug, Clone, Copy)]
pub struct BudgetRequest<'a> {
    pub key_id: &'a str,
    pub team: Option<&'a str>,
    pub model: &'a str,
    /// From [`estimate_texts`] or [`estimate_input_tokens`].
    pub est_input_tokens: u64,
    /// The request's `max_tokens`; `None` reserves the pack's `default_max_tokens`.
    pub max_output_tokens: Option<u64>,
}

/// Why a request is not sent. Not an error: the edge renders it (429 `budget_exceeded`, or 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetDecision {
    #[error("{} for {scope} ({window}), resets {}", if .rate.is_some() { "rate limit reached" } else { "budget exceeded" }, reset_display(*.reset_at))]
    Block {
        scope: BudgetScope,
        window: &'static str,
        /// Unix time the window resets; `None` for a `total` limit.
        reset_at: Option<i64>,
        /// Set when the limit is a rate limit (`window: minute`).
        rate: Option<RateLimit>,
    },
    /// The store is unreachable and the pack says `fail_closed`.
    #[error("budget store unavailable (fail_closed)")]
    StoreUnavailable,
}

/// What a caller refused by a rate limit is told: which limit (its dimension and size), when to
/// retry, and whether to wait for it here first (`on_exhausted: queue`, up to `queue_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub dim: Dimension,
    pub cap: u64,
    pub retry_after_secs: u64,
    pub queue_ms: Option<u64>,
    /// The request alone asks for more than the whole limit: no window will admit it.
    pub too_large: bool,
}

fn reset_display(reset_at: Option<i64>) -> String {
    reset_at.map_or_else(|| "never".to_owned(), window::format_rfc3339)
}

#[derive(Debug)]
pub(crate) struct BudgetShared {
    plan: BudgetPlan,
    store: BudgetStore,
    clock: Arc<dyn Clock>,
    metrics: BudgetMetrics,
}

/// The budget policy of one compiled pack. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BudgetEnforcer {
    shared: Arc<BudgetShared>,
}

impl BudgetEnforcer {
    /// The enforcer of `pack`, or `None` when the pack has no budget settings.
    pub fn from_pack(
        pack: &CompiledPack,
        store: BudgetStore,
        clock: Arc<dyn Clock>,
        metrics: BudgetMetrics,
    ) -> Option<Self> {
        let plan = BudgetPlan::from_pack(pack, &metrics)?;
        Some(Self::with_plan(plan, store, clock, metrics))
    }

    /// An enforcer from the parts of a pack (for tests and tools without a compiled pack).
    pub fn new(
        pack_name: &str,
        environment: Option<&str>,
        config: &BudgetEnforcerConfig,
        models: &BTreeMap<String, ModelRoute>,
        store: BudgetStore,
        clock: Arc<dyn Clock>,
        metrics: BudgetMetrics,
    ) -> Self {
        let plan = BudgetPlan::new(pack_name, environment, config, models, &metrics);
        Self::with_plan(plan, store, clock, metrics)
    }

    fn with_plan(
        plan: BudgetPlan,
        store: BudgetStore,
        clock: Arc<dyn Clock>,
        metrics: BudgetMetrics,
    ) -> Self {
        if let BudgetStore::Redis(r) = &store {
            r.attach_metrics(&metrics);
        }
        Self {
            shared: Arc::new(BudgetShared {
                plan,
                store,
                clock,
                metrics,
            }),
        }
    }

    pub fn metrics(&self) -> &BudgetMetrics {
        &self.shared.metrics
    }

    /// Reserve the estimated cost of `req` against every applicable limit.
    ///
    /// On Redis the round trip runs on a task of its own, and this future waits for its answer
    /// for the store's `op_timeout`. A caller dropped mid-way (the client went away) or timed out
    /// leaves the task to finish the script it started; nobody takes the reservation, so the
    /// task drops it and its guard gives it back. A reservation served entirely from
    /// pre-borrowed slices is ready on the first poll and needs no task.
    pub async fn reserve(&self, req: &BudgetRequest<'_>) -> Result<Reservation, BudgetDecision> {
        let BudgetStore::Redis(redis) = &self.shared.store else {
            let attempt = self.attempt(req).await;
            return self.conclude(req, attempt);
        };
        let op_timeout = redis.op_timeout();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            let attempt = self.attempt(req).await;
            return self.conclude(req, attempt);
        };
        let owned = OwnedRequest::new(req);
        let this = self.clone();
        let mut run = Box::pin(async move { this.attempt(&owned.as_request()).await });
        let first = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
        if let Poll::Ready(attempt) = first {
            return self.conclude(req, attempt);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        crate::tasks::spawn_on(&rt, async move {
            // When nobody waits any more the attempt is dropped here, and a reservation with it.
            let _ = tx.send(run.await);
        });
        let error = match tokio::time::timeout(op_timeout, rx).await {
            Ok(Ok(attempt)) => return self.conclude(req, attempt),
            Ok(Err(_)) => StoreError::Lost,
            Err(_) => StoreError::Timeout(op_timeout),
        };
        self.store_failed(req, req.model, error)
    }

    /// [`BudgetEnforcer::reserve`] without a future, for a store that answers at once (the
    /// in-memory one): `None` on a store that needs a round trip. The request path then skips
    /// boxing a future and copying the request's strings into it.
    pub fn reserve_now(
        &self,
        req: &BudgetRequest<'_>,
    ) -> Option<Result<Reservation, BudgetDecision>> {
        if !matches!(self.shared.store, BudgetStore::Memory(_)) {
            return None;
        }
        let attempt = std::pin::pin!(self.attempt(req));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match attempt.poll(&mut cx) {
            Poll::Ready(attempt) => Some(self.conclude(req, attempt)),
            // Not reached: the memory store reserves within its first poll, so nothing was
            // reserved by the attempt dropped here; the caller goes the asynchronous way.
            Poll::Pending => None,
        }
    }

    /// The charges of `req` on `model`: its price, the meters that apply and one charge each.
    fn charges(
        &self,
        req: &BudgetRequest<'_>,
        model: &str,
        degraded: bool,
        now: i64,
    ) -> (Price, Vec<usize>, Vec<Charge>) {
        let sh = &self.shared;
        let output = req.max_output_tokens.unwrap_or(sh.plan.default_max_tokens);
        let tokens = req.est_input_tokens.saturating_add(output);
        let price = sh.plan.price(model);
        let micros = price.cost_micros(req.est_input_tokens, output);
        let meters: Vec<usize> = (0..sh.plan.meters.len())
            .filter(|&i| sh.plan.meters[i].applies(req.key_id, req.team, model))
            .collect();
        let charges = meters
            .iter()
            .map(|&i| charge(&sh.plan.meters[i], now, micros, tokens, degraded))
            .collect();
        (price, meters, charges)
    }

    /// Ask the store, degrading once if a `degrade` limit says so.
    async fn attempt(&self, req: &BudgetRequest<'_>) -> Attempt {
        let sh = &self.shared;
        let now = sh.clock.now_unix();
        let mut model = req.model;
        let mut degraded = false;
        loop {
            let (price, meters, charges) = self.charges(req, model, degraded, now);
            let outcome = if charges.is_empty() {
                Ok(ReserveOutcome::admitted(Vec::new()))
            } else {
                sh.store.reserve(&charges, now).await
            };
            match outcome {
                Ok(ReserveOutcome::Admitted { after, leases }) => {
                    return Attempt::Decided(Ok(
                        self.admitted(req, model, price, &meters, charges, &after, leases, now)
                    ));
                }
                Ok(ReserveOutcome::Rejected { index, .. }) => {
                    let Some(meter) = meters.get(index).map(|&i| &sh.plan.meters[i]) else {
                        sh.metrics.store_error("reserve", "bad_index");
                        return Attempt::Decided(Err(BudgetDecision::StoreUnavailable));
                    };
                    if meter.action == ExhaustedAction::Degrade && !degraded {
                        if let Some(to) = meter.degrade_to.as_deref() {
                            degraded = true;
                            model = to;
                            continue;
                        }
                    }
                    sh.metrics.decision(DecisionLabel::Block);
                    return Attempt::Decided(Err(BudgetDecision::Block {
                        scope: meter.scope.clone(),
                        window: meter.window.as_str(),
                        reset_at: WindowSpan::containing(meter.window, now).end,
                        rate: (meter.window == BudgetWindow::Minute).then(|| RateLimit {
                            dim: meter.dim,
                            cap: meter.cap,
                            retry_after_secs: WindowSpan::containing(meter.window, now)
                                .end
                                .map_or(60, |end| u64::try_from(end - now).unwrap_or(0).max(1)),
                            queue_ms: (meter.action == ExhaustedAction::Queue)
                                .then_some(sh.plan.max_queue_ms),
                            too_large: charges.get(index).is_some_and(|c| c.amount > meter.cap),
                        }),
                    }));
                }
                Err(error) => {
                    return Attempt::StoreFailed {
                        error,
                        model: model.to_owned(),
                    }
                }
            }
        }
    }

    fn conclude(
        &self,
        req: &BudgetRequest<'_>,
        attempt: Attempt,
    ) -> Result<Reservation, BudgetDecision> {
        match attempt {
            Attempt::Decided(r) => r,
            Attempt::StoreFailed { error, model } => self.store_failed(req, &model, error),
        }
    }

    /// The store did not answer: `fail_open` or `fail_closed`, as the pack says.
    fn store_failed(
        &self,
        req: &BudgetRequest<'_>,
        model: &str,
        e: StoreError,
    ) -> Result<Reservation, BudgetDecision> {
        let sh = &self.shared;
        sh.metrics.store_error("reserve", e.label());
        if !sh.plan.fail_open {
            sh.metrics.decision(DecisionLabel::FailClosed);
            tracing::warn!(error = %e, "budget store unavailable: failing closed");
            return Err(BudgetDecision::StoreUnavailable);
        }
        sh.metrics.decision(DecisionLabel::FailOpen);
        tracing::warn!(error = %e, "budget store unavailable: failing open");
        // Nothing was charged; settle still records the real usage if it can.
        let now = sh.clock.now_unix();
        let (price, meters, charges) = self.charges(req, model, model != req.model, now);
        let held = charges
            .into_iter()
            .zip(&meters)
            .map(|(c, &meter)| HeldCharge {
                key: c.key,
                meter,
                dim: sh.plan.meters[meter].dim,
                reserved: 0,
                ttl_secs: c.ttl_secs,
                lease: None,
            })
            .collect();
        Ok(Reservation {
            model: model.to_owned(),
            degraded_from: (model != req.model).then(|| req.model.to_owned()),
            remaining_usd: None,
            alerts: Vec::new(),
            enforced: false,
            held: Some(Held {
                shared: Arc::clone(sh),
                charges: held,
                price,
            }),
        })
    }

    #[expect(clippy::too_many_arguments, reason = "one private step of reserve")]
    fn admitted(
        &self,
        req: &BudgetRequest<'_>,
        model: &str,
        price: Price,
        meters: &[usize],
        charges: Vec<Charge>,
        after: &[u64],
        leases: Vec<Option<LeaseRef>>,
        now: i64,
    ) -> Reservation {
        let sh = &self.shared;
        let mut alerts = Vec::new();
        let mut remaining_usd: Option<u64> = None;
        let mut alerted_exhausted = false;
        for (&i, &used) in meters.iter().zip(after) {
            let m = &sh.plan.meters[i];
            let left = m.cap.saturating_sub(used);
            set_gauge(m, left);
            if m.dim == Dimension::Usd {
                remaining_usd = Some(remaining_usd.map_or(left, |r| r.min(left)));
            }
            let start = WindowSpan::containing(m.window, now).start;
            if used > m.cap {
                alerted_exhausted |= m.action == ExhaustedAction::Alert;
                if m.exhausted_announced.fetch_max(start, Ordering::AcqRel) < start {
                    tracing::warn!(scope = %m.scope, window = m.window.as_str(), dimension = m.dim.as_str(), used, limit = m.cap, "budget exhausted; {:?} lets requests pass", m.action);
                    alerts.push(alert(m, AlertKind::Exhausted, used));
                }
            } else if used >= m.soft && m.soft_announced.fetch_max(start, Ordering::AcqRel) < start
            {
                sh.metrics.soft_threshold(&m.scope);
                tracing::info!(scope = %m.scope, window = m.window.as_str(), dimension = m.dim.as_str(), used, limit = m.cap, "budget soft threshold crossed");
                alerts.push(alert(m, AlertKind::SoftThreshold, used));
            }
        }
        let degraded_from = (model != req.model).then(|| req.model.to_owned());
        if !leases.is_empty() && leases.iter().all(Option::is_some) {
            sh.metrics.preborrowed();
        }
        sh.metrics.decision(if degraded_from.is_some() {
            DecisionLabel::Degrade
        } else if alerted_exhausted {
            DecisionLabel::Alert
        } else {
            DecisionLabel::Pass
        });
        let mut leases = leases.into_iter();
        let held = charges
            .into_iter()
            .zip(meters)
            .map(|(c, &meter)| HeldCharge {
                key: c.key,
                meter,
                dim: sh.plan.meters[meter].dim,
                reserved: c.amount,
                ttl_secs: c.ttl_secs,
                lease: leases.next().flatten().map(|l| l.0),
            })
            .collect();
        Reservation {
            model: model.to_owned(),
            degraded_from,
            remaining_usd: remaining_usd.map(micros_to_usd),
            alerts,
            enforced: true,
            held: Some(Held {
                shared: Arc::clone(sh),
                charges: held,
                price,
            }),
        }
    }

    /// Price a reservation's settlement at `model` (a fallback model served the request); a
    /// model the pack does not price keeps the reservation's price.
    pub fn reprice(&self, reservation: &mut Reservation, model: &str) {
        if let (Some(held), Some(price)) = (
            reservation.held.as_mut(),
            self.shared.plan.prices.get(model),
        ) {
            held.price = *price;
        }
    }

    /// Correct a reservation to the provider's reported usage (for streams, the final usage
    /// chunk). Usage above the estimate is added even past a limit: it was spent.
    pub async fn settle(
        &self,
        mut reservation: Reservation,
        input_tokens: u64,
        output_tokens: u64,
    ) {
        let Some(held) = reservation.held.take() else {
            return;
        };
        let micros = held.price.cost_micros(input_tokens, output_tokens);
        let tokens = input_tokens.saturating_add(output_tokens);
        let mut kinds_seen = [false; 4];
        for c in &held.charges {
            let m = &held.shared.plan.meters[c.meter];
            let k = scope_kind_index(&m.scope);
            if let Some(seen) = kinds_seen.get_mut(k) {
                if !*seen {
                    *seen = true;
                    held.shared
                        .metrics
                        .spend(&m.scope, micros_to_usd(micros), tokens);
                }
            }
        }
        self.apply(&held, held.corrections(micros, tokens, true), "settle")
            .await;
    }

    /// Give a reservation back: the request failed, timed out or was cancelled.
    pub async fn release(&self, mut reservation: Reservation) {
        let Some(held) = reservation.held.take() else {
            return;
        };
        self.apply(&held, held.corrections(0, 0, false), "release")
            .await;
    }

    async fn apply(&self, held: &Held, corrections: Vec<Correction>, op: &str) {
        // A fail-open reservation released, or a settle that matched its estimate: no round trip.
        if corrections.iter().all(Correction::is_noop) {
            return;
        }
        match held.shared.store.adjust(corrections).await {
            Ok(after) => {
                for (c, used) in held.charges.iter().zip(after) {
                    let m = &held.shared.plan.meters[c.meter];
                    set_gauge(m, m.cap.saturating_sub(used));
                }
            }
            Err(e) => {
                held.shared.metrics.store_error(op, e.label());
                tracing::warn!(error = %e, op, "budget store unavailable: usage not recorded");
            }
        }
    }
}

fn charge(m: &Meter, now: i64, micros: u64, tokens: u64, degraded: bool) -> Charge {
    let span = WindowSpan::containing(m.window, now);
    let cap = match m.action {
        ExhaustedAction::Block | ExhaustedAction::Queue => Some(m.cap),
        ExhaustedAction::Degrade if !degraded => Some(m.cap),
        ExhaustedAction::Degrade | ExhaustedAction::Alert => None,
    };
    Charge {
        key: MeterKey {
            name: Arc::clone(&m.name),
            window_start: span.start,
        },
        amount: match m.dim {
            Dimension::Usd => micros,
            Dimension::Tokens => tokens,
            Dimension::Requests => 1,
        },
        cap,
        ttl_secs: span.ttl_from(now),
        window_end: span.end,
        slice: m.slice,
    }
}

/// How one attempt to reserve ended, before `fail_open` / `fail_closed` is applied.
enum Attempt {
    Decided(Result<Reservation, BudgetDecision>),
    StoreFailed { error: StoreError, model: String },
}

/// A [`BudgetRequest`] the reserve task can own.
struct OwnedRequest {
    key_id: String,
    team: Option<String>,
    model: String,
    est_input_tokens: u64,
    max_output_tokens: Option<u64>,
}

impl OwnedRequest {
    fn new(r: &BudgetRequest<'_>) -> Self {
        Self {
            key_id: r.key_id.to_owned(),
            team: r.team.map(str::to_owned),
            model: r.model.to_owned(),
            est_input_tokens: r.est_input_tokens,
            max_output_tokens: r.max_output_tokens,
        }
    }

    fn as_request(&self) -> BudgetRequest<'_> {
        BudgetRequest {
            key_id: &self.key_id,
            team: self.team.as_deref(),
            model: &self.model,
            est_input_tokens: self.est_input_tokens,
            max_output_tokens: self.max_output_tokens,
        }
    }
}

fn alert(m: &Meter, kind: AlertKind, used: u64) -> BudgetAlert {
    BudgetAlert {
        kind,
        scope: m.scope.clone(),
        window: m.window,
        dimension: m.dim,
        used,
        limit: m.cap,
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a gauge; exact below 2^53 tokens"
)]
fn set_gauge(m: &Meter, left: u64) {
    m.gauges.remaining.set(match m.dim {
        Dimension::Usd => micros_to_usd(left),
        Dimension::Tokens | Dimension::Requests => left as f64,
    });
    // Used fraction of the limit, for the alert rules (1 = exhausted; a zero limit is exhausted).
    let used = m.cap.saturating_sub(left);
    m.gauges.used_ratio.set(if m.cap == 0 {
        1.0
    } else {
        used as f64 / m.cap as f64
    });
}

fn scope_kind_index(scope: &BudgetScope) -> usize {
    match scope {
        BudgetScope::Environment => 0,
        BudgetScope::Key(_) => 1,
        BudgetScope::Team(_) => 2,
        BudgetScope::Model(_) => 3,
    }
}
