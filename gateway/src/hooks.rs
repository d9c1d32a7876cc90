//! Where the budget enforcer and the audit logger plug in: a [`Enforcement`] sees every API
//! request's outcome exactly once.
//!
//! The contract, for every request on an API route (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`) that arrives while a pack is active:
//!
//! 1. [`Enforcement::admit`] is called **at most once**, after authentication, parsing, the
//!    model allow-list and the request-side PII policy, right before the request is forwarded.
//!    It may refuse ([`Rejection`], e.g. `budget_exceeded`) and may be asynchronous
//!    ([`Admit::Pending`]) for a reservation in a shared store. What it returns
//!    ([`Admission`]) is handed back in the terminal call, so a reservation can be settled or
//!    released.
//! 2. Then **exactly one** terminal call: [`Enforcement::settled`] when the provider's answer
//!    was delivered (for a stream: the stream ended cleanly; it carries the provider-reported
//!    usage), or [`Enforcement::failed`] for everything else — a refusal by the gateway
//!    (before or after `admit`), a provider error status, a broken stream, or a client that went
//!    away (detected when the response body, or the handler future, is dropped unfinished).
//! 3. The terminal call is synchronous, but it returns a [`Release`]: [`Release::Now`] (no
//!    allocation), or [`Release::After`] with a future the gateway awaits before the caller gets
//!    the end of the response — for a JSON answer or an error, before the response is sent; for
//!    a stream, before its end, and before its terminal event (`data: [DONE]`) too when
//!    [`Enforcement::holds_stream_end`] said so when the stream started. This is how the
//!    audit logger with `on_queue_full: block` and `fsync_interval_ms: 0` makes a request's
//!    record durable before the request is acknowledged. The *work* must already be under way
//!    when the hook returns (the record queued): the future only waits for it, because the
//!    gateway may drop it unpolled — when the client has gone away, and always after the
//!    cancellation reported by the guard's `Drop`.
//!
//! Exactly-once is enforced by construction: the terminal call is made by consuming an
//! [`Outcome`] guard whose `Drop` reports cancellation if nothing else did. Requests refused with
//! `pack_not_loaded` (no pack yet) and ops routes are not reported.
//!
//! Hot-path cost: [`NoEnforcement`] makes none of these calls allocate. `admit` returns
//! [`Admit::Ready`] and the terminal calls return [`Release::Now`] without boxing; only an
//! enforcement that really waits boxes a future. The enforcement runs on the runtime threads: it must
//! not block (queue to a writer task instead). Several `Enforcement`s are combined by the caller
//! (e.g. a struct holding the budget enforcer and the audit sink that forwards each call); this
//! module does not impose an order.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use policy_engine::ModelRoute;

use crate::error::{ApiError, Rejection};
use crate::keys::Caller;
use crate::openai::Usage;
use crate::pack::ActivePack;
use crate::policy::PiiReport;
use crate::service::{ApiRoute, RequestId};

/// Everything known about a request when an `Enforcement` is called. Built once per request.
#[derive(Debug)]
pub struct RequestMeta {
    pub id: RequestId,
    pub route: ApiRoute,
    pub started: Instant,
    /// The pack version this request runs on, start to end.
    pub pack: Arc<ActivePack>,
    /// `None`: anonymous (loopback without a keys file) or not yet authenticated.
    pub caller: Option<Arc<Caller>>,
    /// The allowed model and its provider, once known.
    pub model: Option<ModelRoute>,
    pub stream: bool,
    /// `max_tokens` / `max_completion_tokens` as requested.
    pub max_tokens: Option<u64>,
    /// Size of the request body, a basis for input-token estimates before usage is known.
    pub request_bytes: usize,
    /// Request-side PII result (`None`: not scanned).
    pub pii_request: Option<PiiReport>,
    /// Response-side PII result (`None`: not scanned).
    pub pii_response: Option<PiiReport>,
    /// The request's scanned strings as sent upstream, only when the pack's audit logger sets
    /// `include_redacted_text` and the text went out without a finding in it (redacted, or
    /// clean); never raw text. `None` costs nothing.
    pub redacted_request: Option<String>,
    /// The same for the answer as the caller received it, when responses are scanned.
    pub redacted_response: Option<String>,
    /// Time spent waiting for the provider: until the whole answer for JSON, until the
    /// response head for a stream (`None`: never called).
    pub upstream_time: Option<std::time::Duration>,
    /// Every call to a provider when there was more than one (retries, fallbacks), in order.
    pub attempts: Vec<AttemptNote>,
    /// The model that served the request when a fallback did (budgets and the record use its
    /// name and price).
    pub served_model: Option<String>,
    /// The request's OpenTelemetry span, when traces are exported; ended with the outcome.
    /// Boxed: the meta moves with the request, and a pointer keeps it small when traces are off.
    pub(crate) trace: Option<Box<crate::otel::RequestTrace>>,
}

/// One call to a provider: which deployment (`provider/upstream_model`), how it ended (the
/// HTTP status, or the gateway's error code), and how long it took to its answer's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptNote {
    pub deployment: String,
    pub outcome: String,
    pub ms: u64,
}

/// What an `Enforcement` returns from `admit`: the [`Permit`] the request then owns (a budget
/// reservation), handed back by value in the terminal call, and advice the proxy applies to the
/// forwarded request and the response. All three are `None` for an `Enforcement` that runs no
/// budget, so admitting costs no allocation.
#[derive(Debug, Default)]
pub struct Admission {
    /// What the enforcement holds for this request until it ends. A permit that is dropped
    /// instead of handed back (a request abandoned outside any runtime) gives its reservation
    /// back on its own.
    pub permit: Option<Permit>,
    /// Send this model of the pack instead of the requested one (a budget's `degrade_to`); the
    /// proxy re-routes to its provider, rewrites the JSON `model` and sets
    /// `x-palisade-budget-degraded: FROM->TO`. Not handed back in the terminal call.
    pub model_override: Option<String>,
    /// USD left in the tightest applicable limit, for `x-palisade-budget-remaining-usd`.
    pub remaining_usd: Option<f64>,
}

pub use crate::enforce::Permit;

/// The answer of `admit`: ready now (no allocation) or a future to await.
#[expect(
    clippy::large_enum_variant,
    reason = "the permit moves by value into the request's outcome once; boxing it would cost an allocation per request"
)]
pub enum Admit {
    Ready(Result<Admission, Rejection>),
    Pending(Pin<Box<dyn Future<Output = Result<Admission, Rejection>> + Send>>),
}

impl fmt::Debug for Admit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// What a terminal call returns: whether the end of the response must wait; see the module
/// docs. Whatever it waits for must already be under way: the future may be dropped unpolled.
#[must_use = "await `Release::wait` before the end of the response is released"]
pub enum Release {
    /// Nothing to wait for (no allocation).
    Now,
    /// Release the end of the response once this resolves.
    After(Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Release {
    /// Wait for the release (at once for [`Release::Now`]).
    pub async fn wait(self) {
        if let Self::After(fut) = self {
            fut.await;
        }
    }
}

impl fmt::Debug for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Now => f.write_str("Now"),
            Self::After(_) => f.write_str("After"),
        }
    }
}

/// How a request ended when it did not end with a delivered answer.
#[derive(Debug)]
pub enum Failure<'a> {
    /// The gateway refused or could not complete it; the error says why (code, status, blame).
    Refused(&'a ApiError),
    /// The provider answered with this non-success status; its body was passed to the caller.
    UpstreamStatus(StatusCode),
    /// The provider's stream broke off after the response had started.
    StreamBroken,
    /// The client went away: before the response head (`mid_stream: false`) or while the body
    /// was being delivered.
    Cancelled { mid_stream: bool },
}

/// How a delivered request ended.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    pub status: StatusCode,
    /// `None` when the provider reported none.
    pub usage: Option<Usage>,
}

/// Callbacks that see every API request outcome exactly once; see the module docs.
pub trait Enforcement: Send + Sync + fmt::Debug + 'static {
    /// Called at most once, before forwarding. The default admits everything.
    fn admit(&self, _meta: &RequestMeta) -> Admit {
        Admit::Ready(Ok(Admission::default()))
    }

    /// The answer was delivered (or is about to be: the end of the response waits for the
    /// returned [`Release`]).
    fn settled(&self, _meta: &RequestMeta, _admission: Admission, _settled: &Settled) -> Release {
        Release::Now
    }

    /// The request ended any other way. `admission` is `Some` iff `admit` accepted it. When a
    /// response is still to be sent (a refusal, a provider error status), it waits for the
    /// returned [`Release`]; after a cancellation or a broken stream nobody waits for it.
    fn failed(
        &self,
        _meta: &RequestMeta,
        _admission: Option<Admission>,
        _failure: &Failure<'_>,
    ) -> Release {
        Release::Now
    }

    /// Asked once when a streamed answer starts: whether the terminal call will return
    /// [`Release::After`], so the stream must hold back its terminal event (`data: [DONE]`) until
    /// the release. Without it the stream's last events go out before the terminal call and only
    /// the end of the body waits. The default holds nothing.
    fn holds_stream_end(&self, _meta: &RequestMeta) -> bool {
        false
    }

    /// A pack version became active (at start-up inside `Gateway::bind`, and after every
    /// reload's swap). Runs on the activating task: slow work (files, connections) belongs on a
    /// blocking task, except for the first pack, when nothing is served yet.
    fn pack_activated(&self, _pack: &Arc<ActivePack>) {}

    /// Register the enforcement's metrics in the gateway's registry; called once by `Gateway::bind`.
    fn register_metrics(&self, _registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        Ok(())
    }

    /// The decision-event queue, when events are shipped to a control plane (`/status` and
    /// the agent's report show its counters).
    fn event_sink(&self) -> Option<&crate::control::events::EventSink> {
        None
    }

    /// The audit log's counters, when the enforcement writes one (the agent reports records
    /// that never reached it).
    fn audit_stats(&self) -> Option<&crate::audit::AuditStats> {
        None
    }
}

/// Observes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnforcement;

impl Enforcement for NoEnforcement {}

/// The exactly-once guard: consumed by `settle` or `fail`; dropped unconsumed it reports
/// [`Failure::Cancelled`].
#[derive(Debug)]
pub(crate) struct Outcome {
    enforcement: Arc<dyn Enforcement>,
    pub(crate) meta: RequestMeta,
    admission: Option<Admission>,
    mid_stream: bool,
    done: bool,
}

impl Outcome {
    pub(crate) fn new(enforcement: Arc<dyn Enforcement>, meta: RequestMeta) -> Self {
        Self {
            enforcement,
            meta,
            admission: None,
            mid_stream: false,
            done: false,
        }
    }

    /// Ask the enforcement; at most once per request. Returns the admission's advice (the model
    /// override moves out; the rest is handed back in the terminal call).
    pub(crate) async fn admit(&mut self) -> Result<Admission, Rejection> {
        debug_assert!(self.admission.is_none());
        let mut admission = match self.enforcement.admit(&self.meta) {
            Admit::Ready(r) => r?,
            Admit::Pending(fut) => fut.await?,
        };
        let advice = Admission {
            permit: None,
            model_override: admission.model_override.take(),
            remaining_usd: admission.remaining_usd,
        };
        self.admission = Some(admission);
        Ok(advice)
    }

    /// From now on a drop means the client left while the body was being delivered. Returns
    /// whether the stream must hold back its terminal event for the terminal call's release.
    pub(crate) fn streaming(&mut self) -> bool {
        self.mid_stream = true;
        self.enforcement.holds_stream_end(&self.meta)
    }

    /// Report the delivered answer; await the [`Release`] before the response's end goes out.
    pub(crate) fn settle(mut self, settled: &Settled) -> Release {
        self.done = true;
        if let Some(t) = self.meta.trace.take() {
            t.end(&self.meta, crate::otel::Ended::Settled(settled));
        }
        let admission = self.admission.take().unwrap_or_default();
        self.enforcement.settled(&self.meta, admission, settled)
    }

    /// Report a failure; await the [`Release`] before a response that is still sent.
    pub(crate) fn fail(mut self, failure: &Failure<'_>) -> Release {
        self.done = true;
        if let Some(t) = self.meta.trace.take() {
            t.end(&self.meta, crate::otel::Ended::Failed(failure));
        }
        let admission = self.admission.take();
        self.enforcement.failed(&self.meta, admission, failure)
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.done {
            let failure = Failure::Cancelled {
                mid_stream: self.mid_stream,
            };
            if let Some(t) = self.meta.trace.take() {
                t.end(&self.meta, crate::otel::Ended::Failed(&failure));
            }
            let admission = self.admission.take();
            // Nobody is left to answer: the release is not waited for (see `Release`).
            drop(self.enforcement.failed(&self.meta, admission, &failure));
        }
    }
}
