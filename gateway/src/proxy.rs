//! One API request, start to end, on one pack version: authenticate, read, check the model,
//! run the request-side PII policy, ask the hooks to admit, forward, and deliver the answer
//! (scanned when the pack says so).
//!
//! The order is the chain's natural order for a gateway: cheap refusals first (key, size,
//! JSON, model), then PII (a blocked request never reaches the provider, nor a budget
//! reservation), then `admit` (budget) right before the provider is called, so a reservation
//! is only made for a request that will really be forwarded; the upstream body is built after
//! `admit`, because a budget may degrade the model (re-routed here, with response headers
//! saying so). Every early return is an
//! [`ApiError`]; `service` turns it into the response and the `failed` hook.
//!
//! Not here: SSE relaying (`sse`), the PII walk over JSON (`policy`), body rewriting
//! (`request`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use policy_engine::PolicyKind;

use crate::body::{read_limited, GatewayBody, ReadError};
use crate::error::ApiError;
use crate::error::Rejection;
use crate::hooks::{Admission, Failure, Outcome, RequestMeta, Settled};
use crate::json_splice::Splice;
use crate::pack::ActivePack;
use crate::policy::{self, Verdict};
use crate::request::{self, Rewrite};
use crate::respond::error_response_on;
use crate::routing;
use crate::service::InFlight;
use crate::service::{ApiRoute, Wire};
use crate::sse;
use crate::state::GatewayState;
use crate::translate::{self, Translation};
use crate::upstream::{PassHeaders, Target, Upstream, UpstreamBody};

/// Run an API request to its end: the response, with the outcome reported exactly once
/// (settled, failed, or moved into a stream's task that reports it when the stream ends).
pub(crate) async fn run<'p>(
    state: &GatewayState,
    pack: &'p Arc<ActivePack>,
    req: Request<Incoming>,
    mut outcome: Outcome,
    model_label: &mut &'p str,
    in_flight: InFlight,
) -> Response<GatewayBody> {
    let route = outcome.meta.route;
    let forwarded = match forward(state, pack, req, &mut outcome, model_label).await {
        Ok(f) => f,
        Err(err) => return refuse(state, outcome, &err).await,
    };
    let Forwarded {
        parts,
        body: upstream_body,
        sent,
        provider,
        budget_headers,
        wants_usage,
        record_text,
        translation,
        served,
    } = forwarded;
    let upstream_head = outcome.meta.upstream_time.unwrap_or_default();

    let is_sse = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));

    if parts.status.is_success() && is_sse {
        observe_overhead(state, outcome.meta.started, upstream_head, route);
        let body = sse::relay(
            upstream_body,
            outcome,
            Arc::clone(pack),
            wants_usage,
            record_text,
            sse::StreamCounters {
                pii_findings: state.metrics.pii_findings.clone(),
                errors: state.metrics.errors.clone(),
            },
            in_flight,
            state.limits.stream,
            translation,
        );
        let mut resp = with_headers(parts.status, &parts.headers, body);
        budget_headers.apply(&mut resp);
        served_header(served.as_ref(), &mut resp);
        return resp;
    }

    let answer = match read_limited(
        upstream_body,
        content_length(&parts.headers),
        state.limits.max_response_bytes,
    )
    .await
    {
        Ok(answer) => answer,
        Err(e) => {
            let err = ApiError::upstream(provider, format!("reading the answer failed: {e}"));
            return refuse(state, outcome, &err).await;
        }
    };
    let read_done = sent.elapsed();
    outcome.meta.upstream_time = Some(read_done);

    let answer = match translation {
        Some(t) if !parts.status.is_success() => t.error(answer, parts.status),
        Some(t) => match t.answer(&answer, provider) {
            Ok(a) => a,
            Err(err) => return refuse(state, outcome, &err).await,
        },
        None => answer,
    };
    if !parts.status.is_success() {
        let answer = match pack.compiled.pii.as_ref().filter(|_| pack.scan_response) {
            Some(det) => scan_error_body(state, det, provider, answer, &mut outcome.meta),
            None => answer,
        };
        outcome
            .fail(&Failure::UpstreamStatus(parts.status))
            .wait()
            .await;
        // Relayed as the provider sent it, and counted as the audit records it.
        state
            .metrics
            .errors
            .with_label_values(&["upstream_error", "upstream"])
            .inc();
        let mut resp = with_headers(parts.status, &parts.headers, GatewayBody::full(answer));
        budget_headers.apply(&mut resp);
        served_header(served.as_ref(), &mut resp);
        return resp;
    }

    let (answer, usage) = match finish_json(
        state,
        pack,
        provider,
        answer,
        &mut outcome.meta,
        record_text,
    ) {
        Ok(done) => done,
        Err(err) => return refuse(state, outcome, &err).await,
    };
    observe_overhead(state, outcome.meta.started, read_done, route);
    // The answer goes out only when the enforcement releases it (a durable audit record).
    outcome
        .settle(&Settled {
            status: parts.status,
            usage,
        })
        .wait()
        .await;
    drop(in_flight);
    let mut resp = with_headers(parts.status, &parts.headers, GatewayBody::full(answer));
    budget_headers.apply(&mut resp);
    served_header(served.as_ref(), &mut resp);
    resp
}

/// The gateway refuses or cannot complete the request: report it (the response waits for the
/// enforcement: a durable record), count it, log it under the request's span, answer with it.
async fn refuse(state: &GatewayState, outcome: Outcome, err: &ApiError) -> Response<GatewayBody> {
    let wire = outcome.meta.route.wire();
    outcome.fail(&Failure::Refused(err)).wait().await;
    state
        .metrics
        .errors
        .with_label_values(&[err.code(), err.blame().as_str()])
        .inc();
    tracing::Span::current().record("code", err.code());
    if matches!(err, ApiError::Internal(_)) {
        tracing::error!(error = %err.detail(), "internal error");
    } else if err.status().is_server_error() {
        tracing::warn!(error = %err.detail(), "request failed");
    } else {
        tracing::debug!(error = %err.detail(), "request refused");
    }
    error_response_on(err, wire)
}

/// A request the policies let through, and the provider's response head.
struct Forwarded<'p> {
    parts: http::response::Parts,
    body: UpstreamBody,
    sent: Instant,
    /// The provider's name, for errors.
    provider: &'p str,
    budget_headers: BudgetHeaders,
    wants_usage: bool,
    record_text: bool,
    /// The provider speaks the other format: its answer is translated into the caller's.
    translation: Option<Translation>,
    /// The deployment that answered, for `x-palisade-upstream` (routed requests).
    served: Option<HeaderValue>,
}

/// Everything up to the provider's response head: authenticate, read, check the model, the
/// request-side PII policy, admission, the upstream call. Any error is the request's refusal.
async fn forward<'p>(
    state: &GatewayState,
    pack: &'p Arc<ActivePack>,
    req: Request<Incoming>,
    o: &mut Outcome,
    model_label: &mut &'p str,
) -> Result<Forwarded<'p>, ApiError> {
    let route = o.meta.route;
    o.meta.caller = state.auth.authenticate(req.headers())?;
    let mut pass = PassHeaders::from_request(req.headers());
    if !route.spends() {
        return forward_item(state, pack, req, o, pass).await;
    }
    let declared_length = content_length(req.headers());
    let limit = state.limits.max_body_bytes;
    let body_timeout = state.limits.body_timeout;
    let body = tokio::time::timeout(
        body_timeout,
        read_limited(req.into_body(), declared_length, limit),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout {
        secs: body_timeout.as_secs(),
    })?
    .map_err(|e| match e {
        ReadError::TooLarge { limit } => ApiError::TooLarge { limit },
        ReadError::Io(m) => ApiError::invalid(m),
    })?;
    o.meta.request_bytes = body.len();

    let detector = pack.compiled.pii.as_ref().filter(|_| pack.scan_request);
    let parsed = request::parse(&body)?;
    o.meta.stream = parsed.facts.stream && route.streams();
    o.meta.max_tokens = parsed.facts.max_tokens;
    let model_route =
        pack.compiled
            .route(&parsed.facts.model)
            .ok_or_else(|| ApiError::ModelNotAllowed {
                model: parsed.facts.model.clone(),
            })?;
    *model_label = pack.model_label(&model_route.name);
    // A routed model is checked per deployment when it is sent (any one that serves the route
    // will do); a model with one deployment is refused here, before any reservation.
    let routed = |m: &policy_engine::ModelRoute| {
        m.has_alternatives() || pack.compiled.routing.max_attempts > 1
    };
    let resolved = if routed(&model_route) {
        None
    } else {
        Some(resolve(pack, &model_route, route)?)
    };

    let mut splice = Splice::default();
    let record_text = records_text(pack);
    if let Some(det) = detector {
        let timed = crate::otel::recording(o.meta.trace.as_deref()).then(Instant::now);
        let scanned = policy::scan_request(det, &body, record_text)
            .map_err(|e| ApiError::invalid(format!("the request body cannot be scanned: {e}")))?;
        count_scan(state, det, "request", &scanned, Some("pass"));
        if let (Some(t), Some(from)) = (&mut o.meta.trace, timed) {
            t.mark(crate::otel::Decision::RequestScan, from);
        }
        o.meta.pii_request = Some(scanned.report);
        o.meta.redacted_request = scanned.text;
        match scanned.verdict {
            Verdict::Allow => {}
            Verdict::Redacted => splice = scanned.splice,
            Verdict::Block(entities) => {
                return Err(ApiError::PiiBlocked {
                    side: "request",
                    entities,
                });
            }
        }
    }
    let stream = o.meta.stream;
    o.meta.model = Some(model_route.clone().into_owned());
    // Counting tokens spends none: no budget reservation (the request still passed the key,
    // model and PII checks above).
    let advice = if route == ApiRoute::CountTokens {
        Admission::default()
    } else {
        let timed = crate::otel::recording(o.meta.trace.as_deref()).then(Instant::now);
        let admitted = admit_or_queue(o).await;
        if let (Some(t), Some(from)) = (&mut o.meta.trace, timed) {
            t.mark(crate::otel::Decision::Budget, from);
        }
        admitted.map_err(ApiError::Rejected)?
    };
    let budget_headers = BudgetHeaders::new(&model_route.name, &advice);
    let (model_route, resolved) = match advice.model_override.as_deref() {
        Some(to) if to != model_route.name => {
            *model_label = pack.model_label(to);
            let degraded = pack.compiled.route(to).ok_or_else(|| {
                ApiError::Internal(format!(
                    "the budget degrades to `{to}`, which the pack does not allow"
                ))
            })?;
            // The degraded model may sit on another provider.
            let resolved = if routed(&degraded) {
                None
            } else {
                Some(resolve(pack, &degraded, route)?)
            };
            (degraded, resolved)
        }
        _ => (model_route, resolved),
    };
    let Some((upstream, translation)) = resolved else {
        let m = pack.compiled.models.get(&model_route.name).ok_or_else(|| {
            ApiError::Internal(format!(
                "routed model `{}` is not in the pack",
                model_route.name
            ))
        })?;
        let call = Call {
            body: &body,
            parsed: &parsed,
            stream,
            route,
            record_text,
        };
        return forward_routed(state, pack, o, call, splice, m, pass, budget_headers).await;
    };
    let rename = (model_route.upstream_model != parsed.facts.model)
        .then_some(model_route.upstream_model.as_str());
    let upstream_body = request::upstream_body(
        &body,
        &parsed,
        Rewrite {
            upstream_model: rename,
            include_usage: asks_usage(route, stream, translation),
        },
        splice,
    )?;
    let (upstream_body, upstream_route) = to_provider(translation, route, upstream_body)?;

    pass.traceparent = o.meta.trace.as_mut().map(|t| {
        t.served(&upstream.name, &model_route.upstream_model);
        t.traceparent().clone()
    });
    let sent = Instant::now();
    let resp = upstream
        .send(
            Method::POST,
            Target::Route(upstream_route),
            Some(upstream_body),
            &pass,
        )
        .await;
    o.meta.upstream_time = Some(head_time(state, o.meta.route, sent));
    let (parts, body) = resp?.into_parts();
    Ok(Forwarded {
        parts,
        body,
        sent,
        provider: &upstream.name,
        budget_headers,
        wants_usage: parsed.facts.wants_usage(),
        record_text,
        translation,
        served: None,
    })
}

/// `x-palisade-upstream: provider/upstream_model` on a routed request's response: which
/// deployment answered.
fn served_header(served: Option<&HeaderValue>, resp: &mut Response<GatewayBody>) {
    if let Some(v) = served {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-palisade-upstream"), v.clone());
    }
}

/// What every attempt of a routed request sends, borrowed from the request.
struct Call<'a, 'b> {
    body: &'a Bytes,
    parsed: &'a request::ParsedRequest<'b>,
    stream: bool,
    route: ApiRoute,
    record_text: bool,
}

/// Whether a provider's answer may be retried elsewhere: it is refused for now (429) or failed
/// (5xx), and nothing of it has reached the caller yet.
fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// A model with deployments or fallbacks: try its candidates (`routing::candidates`) until one
/// answers with something other than 429/5xx, or a connect error or first-byte timeout, within
/// `max_attempts` and the routing deadline. A retry of the same deployment waits (exponential
/// backoff with jitter, at least the provider's `Retry-After`); moving to another does not. A
/// failure counts against the deployment's health, an answer clears it. Nothing is retried once
/// the answer's head was accepted: from then on the caller receives it (a stream that breaks
/// later is not retried). The budget reservation made at admission covers every attempt.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, each a different concern"
)]
async fn forward_routed<'p>(
    state: &GatewayState,
    pack: &'p Arc<ActivePack>,
    o: &mut Outcome,
    call: Call<'_, '_>,
    splice: Splice,
    model: &'p policy_engine::ModelRoute,
    mut pass: PassHeaders,
    budget_headers: BudgetHeaders,
) -> Result<Forwarded<'p>, ApiError> {
    let spec = pack.compiled.routing;
    let started = Instant::now();
    let deadline = started + Duration::from_millis(spec.deadline_ms);
    let route = call.route;
    let candidates: Vec<(routing::Candidate<'p>, Option<Translation>)> =
        routing::candidates(pack, model, o.meta.id.1, &state.health, started)
            .into_iter()
            .filter_map(|c| translate::reach(c.upstream, route).map(|t| (c, t)))
            .collect();
    if candidates.is_empty() {
        return Err(ApiError::RouteNotServed {
            model: model.name.clone(),
            provider: model.provider.clone(),
            kind: "any",
            route: route.path(),
        });
    }
    let attempts = match spec.max_attempts {
        0 => candidates.len(),
        n => n as usize,
    };
    let mut failed: Option<ApiError> = None;
    for n in 0..attempts {
        let (c, translation) = &candidates[n % candidates.len()];
        let name = c.name();
        let rename = (c.deployment.upstream_model != call.parsed.facts.model)
            .then_some(c.deployment.upstream_model.as_str());
        let upstream_body = request::upstream_body_again(
            call.body,
            call.parsed,
            Rewrite {
                upstream_model: rename,
                include_usage: asks_usage(route, call.stream, *translation),
            },
            &splice,
        )?;
        let (upstream_body, upstream_route) = to_provider(*translation, route, upstream_body)?;
        pass.traceparent = o.meta.trace.as_mut().map(|t| {
            t.served(&c.upstream.name, &c.deployment.upstream_model);
            t.traceparent().clone()
        });
        let sent = Instant::now();
        state.health.sending(name, &spec, sent);
        let left = deadline.saturating_duration_since(sent);
        let send = c.upstream.send(
            Method::POST,
            Target::Route(upstream_route),
            Some(upstream_body),
            &pass,
        );
        // The provider's own timeouts end the call first unless the deadline is nearer: only
        // then is a timer of its own armed.
        let resp = if left >= c.upstream.head_budget() {
            send.await
        } else {
            tokio::time::timeout(left, send).await.unwrap_or_else(|_| {
                Err(ApiError::UpstreamTimeout {
                    ms: spec.deadline_ms,
                    phase: "routing deadline",
                })
            })
        };
        let head = head_time(state, route, sent);
        let ms = u64::try_from(head.as_millis()).unwrap_or(u64::MAX);
        // The wait before the next attempt: a backoff (at least the provider's Retry-After) when
        // it goes to the same deployment again or starts another pass, none otherwise. An
        // attempt after which no other fits in the deadline is the last: its answer stands.
        let next = &candidates[(n + 1) % candidates.len()].0;
        let wait = if next.deployment == c.deployment || (n + 1) % candidates.len() == 0 {
            let retry_after = match &resp {
                Ok(r) if retryable_status(r.status()) => r
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
                _ => None,
            };
            let seed = o.meta.id.1 ^ (n as u64);
            routing::backoff(
                &spec,
                u32::try_from(n + 1).unwrap_or(u32::MAX),
                seed,
                retry_after,
            )
        } else {
            Duration::ZERO
        };
        let last = n + 1 == attempts || Instant::now() + wait >= deadline;
        match resp {
            Ok(resp) if !retryable_status(resp.status()) || last => {
                let status = resp.status();
                if retryable_status(status) {
                    let out = state.health.failure(name, &spec, Instant::now());
                    state.metrics.deployment_up(name, !out);
                } else if state.health.success(name) {
                    state.metrics.deployment_up(name, true);
                }
                state.metrics.attempt(name, status.as_str());
                // The attempts are on the record when there was more than one.
                if !o.meta.attempts.is_empty() {
                    note(o, name, status.as_str(), ms);
                }
                // The provider's share of the request: every attempt and wait, not only the
                // last head (the rest is the gateway's own overhead).
                o.meta.upstream_time = Some(started.elapsed());
                if c.model.name != model.name {
                    o.meta.served_model = Some(c.model.name.clone());
                }
                let (parts, body) = resp.into_parts();
                return Ok(Forwarded {
                    parts,
                    body,
                    sent,
                    provider: &c.upstream.name,
                    budget_headers,
                    wants_usage: call.parsed.facts.wants_usage(),
                    record_text: call.record_text,
                    translation: *translation,
                    served: HeaderValue::from_str(name).ok(),
                });
            }
            Ok(resp) => {
                let out = state.health.failure(name, &spec, Instant::now());
                state.metrics.deployment_up(name, !out);
                state.metrics.attempt(name, resp.status().as_str());
                note(o, name, resp.status().as_str(), ms);
                let retry_after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                failed = Some(ApiError::upstream(
                    &c.upstream.name,
                    format!("answered {} on every attempt", resp.status()),
                ));
                // Dropping the body closes its connection: the rest of that answer is unread.
                drop(resp);
                retry_after
            }
            Err(e @ (ApiError::Upstream { .. } | ApiError::UpstreamTimeout { .. })) => {
                let out = state.health.failure(name, &spec, Instant::now());
                state.metrics.deployment_up(name, !out);
                state.metrics.attempt(name, e.code());
                note(o, name, e.code(), ms);
                if last {
                    return Err(e);
                }
                failed = Some(e);
                None
            }
            Err(e) => return Err(e),
        };
        if last {
            break;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    Err(failed.unwrap_or_else(|| ApiError::upstream(&model.provider, "no attempt was made")))
}

/// Record one attempt of a routed request.
fn note(o: &mut Outcome, deployment: &str, outcome: &str, ms: u64) {
    o.meta.attempts.push(crate::hooks::AttemptNote {
        deployment: deployment.to_owned(),
        outcome: outcome.to_owned(),
        ms,
    });
}

/// The provider's time to a response head since `sent`, observed in its route's histogram.
fn head_time(state: &GatewayState, route: ApiRoute, sent: Instant) -> Duration {
    let head = sent.elapsed();
    state.metrics.upstream(route).observe(head.as_secs_f64());
    head
}

/// The provider of `model`, and how `route` reaches it: natively, or translated between chat
/// completions and Anthropic Messages; a clear refusal for any other pair (before any budget
/// is reserved).
fn resolve<'p>(
    pack: &'p ActivePack,
    model: &policy_engine::ModelRoute,
    route: ApiRoute,
) -> Result<(&'p Arc<Upstream>, Option<Translation>), ApiError> {
    let upstream = pack.upstream(&model.provider).ok_or_else(|| {
        ApiError::Internal(format!(
            "the pack routes `{}` to provider `{}`, which it does not define",
            model.name, model.provider
        ))
    })?;
    match translate::reach(upstream, route) {
        Some(t) => Ok((upstream, t)),
        None => Err(ApiError::RouteNotServed {
            model: model.name.clone(),
            provider: upstream.name.clone(),
            kind: upstream.kind.as_str(),
            route: route.path(),
        }),
    }
}

/// A stored response (`GET`/`DELETE /v1/responses/{id}`): authenticated (done by the caller),
/// sent to the pack's `openai` provider — the one named by `x-palisade-provider` when the pack
/// has several — and its answer scanned like any other. No model, no budget: it spends no
/// tokens.
async fn forward_item<'p>(
    state: &GatewayState,
    pack: &'p Arc<ActivePack>,
    req: Request<Incoming>,
    o: &mut Outcome,
    pass: PassHeaders,
) -> Result<Forwarded<'p>, ApiError> {
    let method = req.method().clone();
    let tail = crate::service::response_item_tail(req.uri().path(), method == Method::GET)
        .ok_or(ApiError::NotFound)?;
    let target = match req.uri().query() {
        Some(q) => format!("responses/{tail}?{q}"),
        None => format!("responses/{tail}"),
    };
    let named = req
        .headers()
        .get("x-palisade-provider")
        .map(|v| v.to_str().unwrap_or_default());
    let mut speaking = pack
        .upstreams
        .values()
        .filter(|u| u.speaks(ApiRoute::Responses));
    let upstream = match named {
        Some(name) => pack
            .upstream(name)
            .filter(|u| u.speaks(ApiRoute::Responses))
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "x-palisade-provider",
                    format!("`{name}` is not an `openai` provider of the active pack"),
                )
            })?,
        None => match (speaking.next(), speaking.next()) {
            (Some(u), None) => u,
            (None, _) => {
                return Err(ApiError::invalid(
                    "the active pack has no `openai` provider to hold stored responses",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_param(
                    "x-palisade-provider",
                    "the active pack has several `openai` providers: name the one that holds \
                     this response in the `x-palisade-provider` header",
                ))
            }
        },
    };
    let sent = Instant::now();
    let resp = upstream
        .send(method, Target::Below(&target), None, &pass)
        .await;
    o.meta.upstream_time = Some(head_time(state, o.meta.route, sent));
    let (parts, body) = resp?.into_parts();
    Ok(Forwarded {
        parts,
        body,
        sent,
        provider: &upstream.name,
        budget_headers: BudgetHeaders::default(),
        wants_usage: false,
        record_text: records_text(pack),
        translation: None,
        served: None,
    })
}

/// Admission, waiting out a rate limit that says `on_exhausted: queue`: the request sleeps until
/// the limit's window resets and asks again, for at most the pack's `max_queue_ms` in all (then
/// the refusal stands). A queued request holds no reservation while it waits.
async fn admit_or_queue(o: &mut Outcome) -> Result<Admission, Rejection> {
    let mut deadline: Option<Instant> = None;
    loop {
        let refusal = match o.admit().await {
            Ok(advice) => return Ok(advice),
            Err(r) => r,
        };
        let Some((queue_ms, retry_after)) = refusal
            .rate
            .filter(|rate| !rate.too_large)
            .and_then(|rate| rate.queue_ms.map(|q| (q, rate.retry_after_secs)))
        else {
            return Err(refusal);
        };
        let now = Instant::now();
        let until = *deadline.get_or_insert(now + Duration::from_millis(queue_ms));
        // The window resets within `retry_after` whole seconds: a wait that ends well before
        // then cannot be admitted, so the refusal stands at once.
        let wait = Duration::from_secs(retry_after);
        if now + wait > until + Duration::from_secs(1) {
            return Err(refusal);
        }
        tokio::time::sleep(wait).await;
    }
}

/// What a budget tells the caller: `x-palisade-budget-remaining-usd` (tightest USD limit) and
/// `x-palisade-budget-degraded: FROM->TO`. Empty, and allocation-free, when no budget runs.
#[derive(Debug, Default)]
struct BudgetHeaders {
    remaining: Option<HeaderValue>,
    degraded: Option<HeaderValue>,
}

impl BudgetHeaders {
    fn new(requested: &str, advice: &Admission) -> Self {
        let remaining = advice.remaining_usd.and_then(usd_header);
        let degraded = advice
            .model_override
            .as_deref()
            .filter(|to| *to != requested)
            .and_then(|to| HeaderValue::from_str(&format!("{requested}->{to}")).ok());
        Self {
            remaining,
            degraded,
        }
    }

    fn apply(&self, resp: &mut Response<GatewayBody>) {
        if let Some(v) = &self.remaining {
            resp.headers_mut()
                .insert(HeaderName::from_static(REMAINING_HEADER), v.clone());
        }
        if let Some(v) = &self.degraded {
            resp.headers_mut()
                .insert(HeaderName::from_static(DEGRADED_HEADER), v.clone());
        }
    }
}

/// `usd` with six decimals, as `format!("{usd:.6}")` writes it. Remaining budgets are whole
/// micro-dollars converted to `f64`, which round back exactly below a billion dollars, so the
/// digits are written from the integer (float formatting was ~1 % of the full chain's CPU);
/// anything else goes through `format!`.
fn usd_header(usd: f64) -> Option<HeaderValue> {
    const MICROS: f64 = 1e6;
    let micros = (usd * MICROS).round();
    if !(0.0..1e15).contains(&micros) {
        return HeaderValue::from_str(&format!("{usd:.6}")).ok();
    }
    let micros = micros as u64;
    let mut out = [0u8; 24];
    let mut ints = itoa::Buffer::new();
    let whole = ints.format(micros / 1_000_000).as_bytes();
    out[..whole.len()].copy_from_slice(whole);
    out[whole.len()] = b'.';
    let mut frac = micros % 1_000_000;
    let end = whole.len() + 7;
    for i in (whole.len() + 1..end).rev() {
        out[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    HeaderValue::from_bytes(&out[..end]).ok()
}

const REMAINING_HEADER: &str = "x-palisade-budget-remaining-usd";
const DEGRADED_HEADER: &str = "x-palisade-budget-degraded";

/// Whether the pack's audit logger records the redacted text (`include_redacted_text`).
fn records_text(pack: &ActivePack) -> bool {
    let c = &pack.compiled;
    c.audit.as_ref().is_some_and(|a| a.include_redacted_text) && c.runs(PolicyKind::AuditLogger)
}

/// A JSON answer: read its usage, scan it when the pack says so. An answer that is not a JSON
/// object passes unchanged (there are no decoded strings to scan); an object that cannot be read
/// (broken JSON, a repeated key) while a scan is required is refused rather than passed
/// unscanned.
fn finish_json(
    state: &GatewayState,
    pack: &ActivePack,
    provider: &str,
    answer: Bytes,
    meta: &mut RequestMeta,
    record_text: bool,
) -> Result<(Bytes, Option<crate::openai::Usage>), ApiError> {
    let detector = pack.compiled.pii.as_ref().filter(|_| pack.scan_response);
    let peek = serde_json::from_slice::<crate::openai::Answer<'_>>(&answer);
    let usage = peek
        .as_ref()
        .ok()
        .and_then(|a| a.usage)
        .and_then(crate::openai::parse_usage_raw);
    if let (Some(t), Ok(Some(choices))) = (&mut meta.trace, peek.as_ref().map(|a| a.choices)) {
        t.finish_reasons_from(choices);
    }
    let Some(det) = detector else {
        return Ok((answer, usage));
    };
    // Every JSON answer is scanned, whatever its shape; one that is not JSON cannot be, and is
    // refused rather than passed unscanned. An object the peek read is JSON already; only
    // another shape (a list, a string) or a broken body needs the check.
    let unscannable = |e: serde_json::Error| {
        ApiError::upstream(
            provider,
            format!("the answer cannot be scanned for PII: {e}"),
        )
    };
    if peek.is_err() {
        serde_json::from_slice::<serde::de::IgnoredAny>(&answer).map_err(unscannable)?;
    }
    let timed = crate::otel::recording(meta.trace.as_deref()).then(Instant::now);
    let scanned = policy::scan_response(det, &answer, record_text).map_err(unscannable)?;
    if let (Some(t), Some(from)) = (&mut meta.trace, timed) {
        t.mark(crate::otel::Decision::ResponseScan, from);
    }
    count_scan(state, det, "response", &scanned, None);
    meta.pii_response = Some(scanned.report);
    meta.redacted_response = scanned.text;
    match scanned.verdict {
        Verdict::Allow => Ok((answer, usage)),
        Verdict::Redacted => {
            let redacted = scanned
                .splice
                .apply(&answer)
                .ok_or_else(|| ApiError::Internal("a response field lost its place".to_owned()))?;
            Ok((redacted, usage))
        }
        Verdict::Block(entities) => Err(ApiError::PiiBlocked {
            side: "response",
            entities,
        }),
    }
}

/// A provider's error body under response scanning: every string scanned (error messages can
/// echo the prompt), redacted under `redact` and `escalate`; under `block`, or when the body
/// is neither JSON nor text, it is replaced by the gateway's own error naming the provider.
fn scan_error_body(
    state: &GatewayState,
    det: &policy_engine::pii::PiiDetector,
    provider: &str,
    answer: Bytes,
    meta: &mut RequestMeta,
) -> Bytes {
    let withheld = |why: &str| {
        let message = format!(
            "the provider `{provider}` answered with an error whose body was withheld: {why}"
        );
        let body = match meta.route.wire() {
            Wire::OpenAi => {
                serde_json::json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_error"}})
            }
            Wire::Anthropic => {
                serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message, "code": "upstream_error"}})
            }
        };
        Bytes::from(body.to_string())
    };
    let Some(scanned) = policy::scan_error_body(det, &answer) else {
        return withheld("it could not be scanned for personal data");
    };
    count_scan(state, det, "response", &scanned, None);
    meta.pii_response = Some(scanned.report);
    match scanned.verdict {
        Verdict::Allow => answer,
        Verdict::Redacted => scanned
            .splice
            .apply(&answer)
            .unwrap_or_else(|| withheld("it could not be redacted")),
        Verdict::Block(entities) => withheld(&format!("it contained personal data ({entities})")),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Count one scan in the metrics, in the audit record's words: its findings by entity and side,
/// and its decision — `block` when refused, the pack's action when something was found (`log`
/// lets findings through unchanged and is counted as `log`), `clean` when nothing was (requests
/// count `pass`; answers count no decision then).
fn count_scan(
    state: &GatewayState,
    det: &policy_engine::pii::PiiDetector,
    side: &str,
    scanned: &policy::Scanned,
    clean: Option<&str>,
) {
    for (entity, n) in &scanned.report.findings {
        state
            .metrics
            .pii_findings
            .with_label_values(&[entity.as_str(), side])
            .inc_by(u64::from(*n));
    }
    let action = match scanned.verdict {
        Verdict::Block(_) => Some("block"),
        _ if !scanned.report.findings.is_empty() => Some(det.action().as_str()),
        _ => clean,
    };
    if let Some(action) = action {
        state.metrics.pii_decision(action);
    }
}

fn observe_overhead(
    state: &GatewayState,
    started: Instant,
    upstream: std::time::Duration,
    route: ApiRoute,
) {
    let total = started.elapsed();
    state
        .metrics
        .overhead(route)
        .observe(total.saturating_sub(upstream).as_secs_f64());
}

/// The provider's headers a client needs, and no others: the body's type and caching, the
/// provider's request id (for support tickets), and what SDKs read to back off (`retry-after`,
/// `retry-after-ms`, `x-should-retry`, rate-limit headers). Everything else — organisation and
/// project ids, server and proxy headers, cookies, hop-by-hop headers, the length (the body may
/// have changed) — stays at the gateway.
fn with_headers(
    status: StatusCode,
    upstream: &HeaderMap,
    body: GatewayBody,
) -> Response<GatewayBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (name, value) in upstream {
        if passes_to_client(name.as_str()) {
            h.append(name.clone(), value.clone());
        }
    }
    resp
}

/// Whether a provider response header goes on to the caller (names arrive lowercase).
fn passes_to_client(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "cache-control"
            | "retry-after"
            | "retry-after-ms"
            | "x-should-retry"
            | "x-request-id"
            | "request-id"
    ) || name.starts_with("x-ratelimit-")
        || name.starts_with("anthropic-ratelimit-")
}

/// Whether a stream's request must ask for the usage chunk: chat and completions streams report
/// usage only when asked; Anthropic's and the Responses API's always do (a translated request
/// asks in its own format).
fn asks_usage(route: ApiRoute, stream: bool, translation: Option<Translation>) -> bool {
    stream
        && translation.is_none()
        && matches!(route, ApiRoute::ChatCompletions | ApiRoute::Completions)
}

/// The body and route the provider gets: the caller's, or translated into its format.
fn to_provider(
    translation: Option<Translation>,
    route: ApiRoute,
    body: Bytes,
) -> Result<(Bytes, ApiRoute), ApiError> {
    match translation {
        Some(t) => Ok((t.request(&body)?, t.upstream_route())),
        None => Ok((body, route)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::usd_header;

    proptest! {
        #[test]
        fn usd_header_writes_what_format_writes(micros in 0u64..2_000_000_000_000_000) {
            let usd = micros as f64 / 1e6;
            let header = usd_header(usd).unwrap();
            prop_assert_eq!(header.to_str().unwrap(), format!("{usd:.6}"));
        }
    }

    #[test]
    fn usd_header_edges() {
        for usd in [
            0.0,
            0.000_001,
            0.5,
            1.0,
            999_999.999_999,
            1e9 - 1e-6,
            5e9,
            f64::MAX,
        ] {
            assert_eq!(
                usd_header(usd).unwrap().to_str().unwrap(),
                format!("{usd:.6}")
            );
        }
        assert!(usd_header(f64::NAN).is_some());
    }
}
