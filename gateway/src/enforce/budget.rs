//! The budget side of the enforcement: reserve in `admit`, settle or release in the terminal call.
//!
//! A granted reservation becomes a [`Permit`] that the request owns ([`Admission::permit`],
//! kept in its `Outcome`) and hands back by value in its one terminal call, so every path ends
//! it exactly once and nothing is looked up again: `settled` settles to the provider's usage
//! (or, when the provider reported none, to the reservation itself — the estimate is kept as
//! spent, the conservative side), `failed` releases it. A request cancelled while reserving
//! either never holds a permit or holds one its `Outcome` will hand back; what a Redis script
//! reserved after its request was cancelled is given back by the enforcer
//! (`BudgetEnforcer::reserve`), and a [`Reservation`] that is dropped anyway releases itself. A
//! refusal names its limit in [`Rejection::limit`], which the terminal call reads back from the
//! refusal for the audit record.
//!
//! Input tokens are estimated from the request body's size, `ceil(bytes / 4)`
//! ([`estimate_input_tokens`] with no per-message overhead): the body includes JSON syntax and
//! the system prompt, so this over-estimates prose by the JSON framing (typically 30–60 bytes
//! per message) and under-estimates CJK text and code (see `budget::estimate`). Settling corrects
//! it to the provider's usage.
//!
//! Settling and releasing are asynchronous (a Redis round trip) while the hooks are not: they are
//! polled once in the hook, which finishes them for the memory store, and what is still pending
//! then runs on a task of the current runtime.

use std::fmt::Write as _;
use std::future::Future;
use std::task::{Context, Waker};

use crate::audit::BudgetNote;
use crate::budget::Reservation;
use crate::budget::{estimate_input_tokens, BudgetDecision, BudgetEnforcer, BudgetRequest};
use crate::error::{RateInfo, Rejection, RejectionKind};
use crate::hooks::{Admission, Admit, RequestMeta};
use crate::openai::Usage;

use super::BudgetSetup;

/// Caller id used for budgets when the gateway runs without keys.
const ANONYMOUS: &str = "anonymous";

/// A budget reservation between `admit` and the terminal call, owned by the request.
#[derive(Debug)]
pub struct Permit {
    enforcer: BudgetEnforcer,
    reservation: Reservation,
    est_input_tokens: u64,
    reserved_output_tokens: u64,
    pub(super) model_used: String,
}

impl Permit {
    /// What the audit record says about the budget.
    pub(super) fn note(&self) -> BudgetNote {
        let r = &self.reservation;
        let decision = if !r.enforced() {
            "unavailable_open"
        } else if r.degraded_from().is_some() {
            "degraded"
        } else if r.alerts().is_empty() {
            "reserved"
        } else {
            "alert"
        };
        BudgetNote {
            decision: decision.into(),
            scope: None,
            remaining_usd: r.remaining_usd(),
        }
    }
}

pub(super) fn admit(setup: &BudgetSetup, meta: &RequestMeta) -> Admit {
    let (enforcer, default_max_tokens) = match setup {
        BudgetSetup::NoStore { fail_open: true } => {
            return Admit::Ready(Ok(Admission::default()));
        }
        BudgetSetup::NoStore { fail_open: false } => {
            return Admit::Ready(Err(unavailable()));
        }
        BudgetSetup::Enforcer {
            enforcer,
            default_max_tokens,
        } => (enforcer, *default_max_tokens),
    };
    let key_id = meta.caller.as_ref().map_or(ANONYMOUS, |c| c.id.as_str());
    let team = meta
        .caller
        .as_ref()
        .map(|c| c.team.as_str())
        .filter(|t| !t.is_empty());
    let model = meta.model.as_ref().map_or("", |m| m.name.as_str());
    let ask = AdmissionAsk {
        est_input_tokens: estimate_input_tokens(meta.request_bytes, 0),
        max_output_tokens: meta.max_tokens,
        default_max_tokens,
    };
    let req = BudgetRequest {
        key_id,
        team,
        model,
        est_input_tokens: ask.est_input_tokens,
        max_output_tokens: ask.max_output_tokens,
    };
    // The in-memory store answers at once: no future to box, no strings to copy into one.
    if let Some(result) = enforcer.reserve_now(&req) {
        return Admit::Ready(ask.conclude(enforcer.clone(), result));
    }
    let (key_id, team, model) = (key_id.to_owned(), team.map(str::to_owned), model.to_owned());
    let enforcer = enforcer.clone();
    Admit::Pending(Box::pin(async move {
        let req = BudgetRequest {
            key_id: &key_id,
            team: team.as_deref(),
            model: &model,
            est_input_tokens: ask.est_input_tokens,
            max_output_tokens: ask.max_output_tokens,
        };
        let result = enforcer.reserve(&req).await;
        ask.conclude(enforcer, result)
    }))
}

/// What `admit` needs to turn the store's answer into an admission.
#[derive(Debug, Clone, Copy)]
struct AdmissionAsk {
    est_input_tokens: u64,
    max_output_tokens: Option<u64>,
    default_max_tokens: u64,
}

impl AdmissionAsk {
    /// Turn a granted reservation into the request's permit, or a refusal into a rejection.
    fn conclude(
        self,
        enforcer: BudgetEnforcer,
        result: Result<Reservation, BudgetDecision>,
    ) -> Result<Admission, Rejection> {
        match result {
            Ok(reservation) => Ok(Admission {
                model_override: reservation
                    .degraded_from()
                    .map(|_| reservation.model().to_owned()),
                remaining_usd: reservation.remaining_usd(),
                permit: Some(Permit {
                    enforcer,
                    model_used: reservation.model().to_owned(),
                    reservation,
                    est_input_tokens: self.est_input_tokens,
                    reserved_output_tokens: self
                        .max_output_tokens
                        .unwrap_or(self.default_max_tokens),
                }),
            }),
            Err(decision @ BudgetDecision::Block { .. }) => {
                let mut limit = String::with_capacity(32);
                let mut rate = None;
                if let BudgetDecision::Block {
                    scope,
                    window,
                    rate: r,
                    ..
                } = &decision
                {
                    let _ = write!(limit, "{scope}/{window}");
                    rate = r.map(|r| RateInfo {
                        dimension: r.dim.as_str(),
                        limit: r.cap,
                        retry_after_secs: r.retry_after_secs,
                        queue_ms: r.queue_ms,
                        too_large: r.too_large,
                    });
                }
                let kind = if rate.is_some() {
                    RejectionKind::RateLimited
                } else {
                    RejectionKind::BudgetExceeded
                };
                let mut message = decision.to_string();
                if rate.is_some_and(|r| r.too_large) {
                    message.push_str(
                        "; this request alone asks for more than the whole limit (lower max_tokens or split it)",
                    );
                }
                let mut rejection = Rejection::new(kind, message);
                rejection.limit = Some(limit);
                rejection.rate = rate;
                Err(rejection)
            }
            Err(BudgetDecision::StoreUnavailable) => Err(unavailable()),
        }
    }
}

fn unavailable() -> Rejection {
    Rejection::new(
        RejectionKind::Unavailable,
        "the budget store is unavailable and the pack fails closed; retry later",
    )
}

/// Settle to the provider's usage, or to the reservation when it reported none; priced at
/// `served_model` when a fallback model served the request.
pub(super) fn settle(mut held: Permit, usage: Option<Usage>, served_model: Option<&str>) {
    let (input, output) = match usage {
        Some(u) => (u.prompt_tokens, u.completion_tokens),
        None => (held.est_input_tokens, held.reserved_output_tokens),
    };
    if let Some(model) = served_model {
        held.enforcer.reprice(&mut held.reservation, model);
    }
    spawn_or_drop(held, move |enforcer, reservation| async move {
        enforcer.settle(reservation, input, output).await;
    });
}

/// Give the reservation back.
pub(super) fn release(held: Permit) {
    spawn_or_drop(held, |enforcer, reservation| async move {
        enforcer.release(reservation).await;
    });
}

fn spawn_or_drop<F, Fut>(held: Permit, f: F)
where
    F: FnOnce(BudgetEnforcer, Reservation) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            // The memory store finishes on the first poll: run that here instead of paying for
            // a task. A future still pending (a Redis round trip) goes to a task, whose first
            // poll registers its real waker (the no-op one is never woken, and a future must
            // register the waker of each poll that returns `Pending`).
            let mut settle = Box::pin(f(held.enforcer, held.reservation));
            let mut cx = Context::from_waker(Waker::noop());
            if settle.as_mut().poll(&mut cx).is_pending() {
                crate::tasks::spawn_on(&rt, tracing::Instrument::in_current_span(settle));
            }
        }
        // Outside a runtime the reservation's drop guard releases it.
        Err(_) => drop(held),
    }
}
