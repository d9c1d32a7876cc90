//! The one audit record of a request, built in its terminal call from what the gateway knew.
//!
//! Decisions, never content: PII entity types and counts and the action, never a value; the
//! budget's decision and the deciding scope. The one exception is asked for by the pack:
//! with `include_redacted_text: true` the request path keeps the scanned strings as they went
//! upstream (`RequestMeta::redacted_request`) and, when responses are scanned, as the caller got
//! them (`redacted_response`) — only when they carry no finding (redacted or clean; a `log`
//! action that let a finding through records no text) — and they are copied into
//! `redacted_text` / `redacted_response_text`. Text that no detector scanned is raw, so it is
//! never recorded. With the setting off nothing is collected or allocated.
//!
//! Latency: `upstream_us` is the time waiting for the provider (the whole answer for JSON, the
//! response head for a stream); `gateway_us` is the rest of the request's life, which for a
//! stream includes relaying its body. A request that never reached the provider has
//! `upstream_us: None` and all its time counted as the gateway's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use policy_engine::pack::PiiAction;
use policy_engine::PolicyKind;

use crate::audit::{self, AuditRecord, BudgetNote, Latency, OutcomeKind, PolicyDecision};
use crate::budget::estimate::{micros_to_usd, Price};
use crate::error::ApiError;
use crate::error::RejectionKind;
use crate::hooks::{Failure, RequestMeta, Settled};

use super::PackPolicies;

pub(super) fn settled(
    meta: &RequestMeta,
    policies: &PackPolicies,
    settled: &Settled,
    budget: Option<BudgetNote>,
    model_used: Option<String>,
) -> AuditRecord {
    let redacted = [&meta.pii_request, &meta.pii_response]
        .into_iter()
        .flatten()
        .any(|r| r.redacted);
    let mut rec = base(meta, policies, budget, model_used);
    rec.outcome = if redacted {
        OutcomeKind::Redacted
    } else {
        OutcomeKind::Allowed
    };
    rec.status = settled.status.as_u16();
    rec.upstream_status = Some(settled.status.as_u16());
    if let Some(u) = settled.usage {
        rec.usage = Some(audit::TokenCounts {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        });
        rec.cost_usd = cost(
            meta,
            rec.model_used.as_deref(),
            u.prompt_tokens,
            u.completion_tokens,
        );
    }
    rec
}

pub(super) fn failed(
    meta: &RequestMeta,
    policies: &PackPolicies,
    failure: &Failure<'_>,
    budget: Option<BudgetNote>,
    model_used: Option<String>,
) -> AuditRecord {
    let mut rec = base(meta, policies, budget, model_used);
    let (outcome, status, upstream, code) = match failure {
        Failure::Refused(err) => (
            refused_outcome(err),
            err.status().as_u16(),
            None,
            err.code(),
        ),
        Failure::UpstreamStatus(s) => (
            OutcomeKind::UpstreamError,
            s.as_u16(),
            Some(s.as_u16()),
            "upstream_error",
        ),
        Failure::StreamBroken => (OutcomeKind::UpstreamError, 200, Some(200), "stream_broken"),
        Failure::Cancelled { mid_stream } => (
            OutcomeKind::Cancelled,
            if *mid_stream { 200 } else { 499 },
            mid_stream.then_some(200),
            "client_cancelled",
        ),
    };
    rec.outcome = outcome;
    rec.status = status;
    rec.upstream_status = upstream;
    rec.error_code = Some(code.into());
    if outcome == OutcomeKind::BlockedBudget {
        // The budget decided: its decision is in the note.
        if let Some(p) = rec
            .policies
            .iter_mut()
            .find(|p| p.policy == PolicyKind::BudgetEnforcer.name())
        {
            p.decision = "block".into();
        }
    }
    rec
}

fn refused_outcome(err: &ApiError) -> OutcomeKind {
    match err {
        ApiError::PiiBlocked { .. } => OutcomeKind::BlockedPii,
        ApiError::Rejected(r) if r.kind == RejectionKind::BudgetExceeded => {
            OutcomeKind::BlockedBudget
        }
        ApiError::Upstream { .. } | ApiError::UpstreamTimeout { .. } => OutcomeKind::UpstreamError,
        ApiError::Internal(_) => OutcomeKind::InternalError,
        _ => OutcomeKind::Rejected,
    }
}

/// Everything that does not depend on how the request ended.
fn base(
    meta: &RequestMeta,
    policies: &PackPolicies,
    budget: Option<BudgetNote>,
    model_used: Option<String>,
) -> AuditRecord {
    let model_requested = meta.model.as_ref().map(|m| m.name.clone());
    // A fallback that served the request is the model used; else the budget's (degraded) one.
    let model_used = meta
        .served_model
        .clone()
        .or(model_used)
        .or_else(|| model_requested.clone());
    let total = meta.started.elapsed();
    let upstream = meta.upstream_time;
    AuditRecord {
        request_id: meta.id.to_string(),
        environment: Arc::clone(&policies.audit_environment),
        pack: policies.audit_pack.clone(),
        caller: audit::CallerRef {
            key_id: meta.caller.as_ref().map(|c| c.id.clone()),
            team: meta
                .caller
                .as_ref()
                .map(|c| c.team.clone())
                .filter(|t| !t.is_empty()),
        },
        route: meta.route.path().into(),
        model_requested,
        model_used,
        latency: Latency {
            gateway_us: micros(total.saturating_sub(upstream.unwrap_or_default())),
            upstream_us: upstream.map(micros),
        },
        policies: decisions(meta, budget.as_ref()),
        escalated: escalated(meta),
        budget,
        redacted_text: meta.redacted_request.clone(),
        redacted_response_text: meta.redacted_response.clone(),
        attempts: meta
            .attempts
            .iter()
            .map(|a| audit::AttemptRecord {
                deployment: a.deployment.clone(),
                outcome: a.outcome.clone(),
                ms: a.ms,
            })
            .collect(),
        ..AuditRecord::default()
    }
}

/// One decision per policy of the chain, in chain order.
fn decisions(meta: &RequestMeta, budget: Option<&BudgetNote>) -> Vec<PolicyDecision> {
    meta.pack
        .compiled
        .chain
        .iter()
        .map(|kind| {
            let (decision, entities) = match kind {
                PolicyKind::AuditLogger => ("log", BTreeMap::new()),
                PolicyKind::PiiDetector => pii_decision(meta),
                PolicyKind::BudgetEnforcer => (
                    budget.map_or("skipped", |b| match &*b.decision {
                        "degraded" => "degrade",
                        "blocked" => "block",
                        "alert" => "alert",
                        "unavailable_open" => "fail_open",
                        "unavailable_closed" => "fail_closed",
                        _ => "pass",
                    }),
                    BTreeMap::new(),
                ),
            };
            PolicyDecision {
                policy: kind.name().into(),
                decision: decision.into(),
                entities,
            }
        })
        .collect()
}

/// Entity counts of both sides together, and what the policy did.
fn pii_decision(meta: &RequestMeta) -> (&'static str, BTreeMap<String, u32>) {
    let mut entities = BTreeMap::new();
    let mut action: Option<PiiAction> = None;
    let mut scanned = false;
    for report in [&meta.pii_request, &meta.pii_response]
        .into_iter()
        .flatten()
    {
        scanned = true;
        for (entity, n) in &report.findings {
            *entities.entry(entity.clone()).or_insert(0) += n;
        }
        if report.total() > 0 {
            // The strongest action taken on either side.
            action = match (action, report.action) {
                (Some(PiiAction::Block), _) | (_, Some(PiiAction::Block)) => Some(PiiAction::Block),
                (None, a) => a,
                (a, _) => a,
            };
        }
    }
    let decision = match action {
        Some(a) => a.as_str(),
        None if scanned => "pass",
        None => "skipped",
    };
    (decision, entities)
}

fn escalated(meta: &RequestMeta) -> bool {
    [&meta.pii_request, &meta.pii_response]
        .into_iter()
        .flatten()
        .any(|r| r.action == Some(PiiAction::Escalate) && r.total() > 0)
}

fn cost(meta: &RequestMeta, model: Option<&str>, input: u64, output: u64) -> Option<f64> {
    let route = meta.pack.compiled.models.get(model?)?;
    if route.input_usd_per_mtok.is_none() && route.output_usd_per_mtok.is_none() {
        return None;
    }
    let price = Price::from_usd_per_mtok(route.input_usd_per_mtok, route.output_usd_per_mtok);
    Some(micros_to_usd(price.cost_micros(input, output)))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
