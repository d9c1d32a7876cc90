//! What one audit record says about one request.
//!
//! A record holds decisions, never content: who called, which pack version and hash decided,
//! what each policy did (PII: entity types and counts and the action, never a value), what it
//! cost and how it ended. The only text it may carry is the *redacted* request and response, and
//! only when the pack sets `include_redacted_text`; without it the text fields are left out of
//! the line altogether. Field order is the serialisation order, which is part of the chained line
//! format: add fields at the end (a line is verified on its own bytes, so lines written before a
//! field existed still verify).
//!
//! The fields that repeat on every line are shared rather than copied: the pack's identity as
//! `Arc<str>` (cloned from the enforcement's state in the active pack), fixed words (route, policy names,
//! decisions, error codes) as `Cow::Borrowed` statics. A record is built on a serving thread and
//! freed on the audit writer's, so each allocation saved is a cross-thread free saved too.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub request_id: String,
    pub environment: Arc<str>,
    pub pack: PackRef,
    pub caller: CallerRef,
    /// `/v1/chat/completions`, … (a fixed set: the gateway's routes).
    pub route: Cow<'static, str>,
    pub model_requested: Option<String>,
    pub model_used: Option<String>,
    pub outcome: OutcomeKind,
    /// Status sent to the caller.
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub latency: Latency,
    pub usage: Option<TokenCounts>,
    pub cost_usd: Option<f64>,
    pub budget: Option<BudgetNote>,
    pub policies: Vec<PolicyDecision>,
    /// Passed redacted and marked for human review (`action: escalate`).
    pub escalated: bool,
    /// The redacted request text (the scanned strings as sent upstream, one per line), only with
    /// `include_redacted_text: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_text: Option<String>,
    /// Our error code (`pii_blocked`, `budget_exceeded`, …) when the request did not succeed.
    pub error_code: Option<Cow<'static, str>>,
    /// The redacted answer text as the caller received it, only with `include_redacted_text:
    /// true` and response scanning on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_response_text: Option<String>,
    /// Every call to a provider when there was more than one (retries, fallbacks), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
}

/// One call to a provider: the deployment (`provider/upstream_model`), how it ended (the HTTP
/// status, or the gateway's error code), and the time to its answer's head.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub deployment: String,
    pub outcome: String,
    pub ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub hash: Arc<str>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerRef {
    /// The caller key's id from the keys file (never the key or its hash); `None`: anonymous.
    pub key_id: Option<String>,
    pub team: Option<String>,
}

/// How the request ended. One per request, exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    #[default]
    Allowed,
    Redacted,
    BlockedPii,
    BlockedBudget,
    /// Refused before policies ran: bad key, model not allowed, malformed request.
    Rejected,
    UpstreamError,
    /// A gateway bug, or a pack and request it could not reconcile (500 `internal_error`).
    InternalError,
    /// The client went away before the response was complete.
    Cancelled,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Redacted => "redacted",
            Self::BlockedPii => "blocked_pii",
            Self::BlockedBudget => "blocked_budget",
            Self::Rejected => "rejected",
            Self::UpstreamError => "upstream_error",
            Self::InternalError => "internal_error",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Time spent in the gateway itself (policies, parsing, queuing), microseconds.
    pub gateway_us: u64,
    /// Time waiting for the provider, microseconds; `None` when it was never called.
    pub upstream_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCounts {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetNote {
    /// `reserved`, `blocked`, `degraded`, `alert`, `unavailable_open`, `unavailable_closed`, or
    /// `settled_on_reservation` when the provider reported no usage and the reservation was
    /// charged instead.
    pub decision: Cow<'static, str>,
    /// The deciding scope (`team:support/daily`), when a limit decided.
    pub scope: Option<String>,
    pub remaining_usd: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// `audit-logger`, `pii-detector`, `budget-enforcer`.
    pub policy: Cow<'static, str>,
    /// What the policy did: `pass`, `redact`, `block`, `log`, `escalate`, `degrade`, …
    pub decision: Cow<'static, str>,
    /// PII: entity type → count (request and response together).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entities: BTreeMap<String, u32>,
}
