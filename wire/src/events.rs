//! Decision events: one per request, sent by a gateway to `POST /v1/events` in batches.
//!
//! [`DecisionEvent`] is generic over its text type so that each side holds the shape in the form
//! it needs: the gateway serialises events built from shared (`Arc<str>`) and static strings
//! without copying them, the control plane decodes them into `String`s. Unknown fields are
//! ignored on decode, so a newer gateway may send more than an older control plane reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a request ended, in one word: a refusal or failure first (what the caller got), then
/// what policy did to an answered request, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    Redacted,
    Logged,
    Escalated,
    Degraded,
    Blocked,
    BudgetRefused,
    Rejected,
    UpstreamError,
    InternalError,
    Cancelled,
}

impl Outcome {
    /// Every outcome, in the order above.
    pub const ALL: [Self; 11] = [
        Self::Allowed,
        Self::Redacted,
        Self::Logged,
        Self::Escalated,
        Self::Degraded,
        Self::Blocked,
        Self::BudgetRefused,
        Self::Rejected,
        Self::UpstreamError,
        Self::InternalError,
        Self::Cancelled,
    ];

    /// The wire name (`budget_refused`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Redacted => "redacted",
            Self::Logged => "logged",
            Self::Escalated => "escalated",
            Self::Degraded => "degraded",
            Self::Blocked => "blocked",
            Self::BudgetRefused => "budget_refused",
            Self::Rejected => "rejected",
            Self::UpstreamError => "upstream_error",
            Self::InternalError => "internal_error",
            Self::Cancelled => "cancelled",
        }
    }

    /// The outcome named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// A failure of the gateway or its provider (the error rate of a summary).
    pub fn is_error(self) -> bool {
        matches!(self, Self::UpstreamError | Self::InternalError)
    }

    /// A refusal by policy (the block rate of a summary).
    pub fn is_block(self) -> bool {
        matches!(self, Self::Blocked | Self::BudgetRefused)
    }
}

/// PII findings of one request by side: entity → count (never a value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    #[serde(default)]
    pub request: BTreeMap<String, u32>,
    #[serde(default)]
    pub response: BTreeMap<String, u32>,
}

/// One decision event. `S` is the text of the fields every event of a pack version shares
/// (environment, pack, version, hash, route).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionEvent<S = String> {
    pub request_id: String,
    /// Unix milliseconds, the gateway's clock, when the request ended.
    pub at_ms: i64,
    pub environment: S,
    pub pack: S,
    pub version: S,
    pub hash: S,
    pub route: S,
    #[serde(default)]
    pub model_requested: Option<String>,
    #[serde(default)]
    pub model_used: Option<String>,
    #[serde(default)]
    pub caller: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    pub outcome: Outcome,
    #[serde(default)]
    pub escalated: bool,
    pub status: u16,
    pub latency_us: u64,
    #[serde(default)]
    pub upstream_us: Option<u64>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub pii: Findings,
    /// Only when the pack's audit settings put redacted text in the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_response_text: Option<String>,
    /// Every call to a provider when there was more than one (retries, fallbacks), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

/// One call to a provider: its deployment (`provider/upstream_model`), how it ended (the HTTP
/// status, or the gateway's error code) and the time to its answer's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub deployment: String,
    pub outcome: String,
    pub ms: u64,
}

/// Most attempts an event may list (the gateway makes at most 10).
pub const MAX_ATTEMPTS: usize = 16;

/// `POST /v1/events` body: the sending gateway's id and its events. `G` and `E` let a sender
/// serialise borrowed data (`Batch<&str, &[DecisionEvent<T>]>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch<G = String, E = Vec<DecisionEvent>> {
    pub gateway: G,
    pub events: E,
}

/// `POST /v1/events` answer: what ingesting a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingested {
    pub accepted: usize,
    pub duplicates: usize,
    pub escalations_opened: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_by_their_wire_names() {
        for o in Outcome::ALL {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("fine"), None);
    }

    #[test]
    fn a_borrowed_batch_decodes_as_an_owned_one() {
        let e: DecisionEvent<&str> = DecisionEvent {
            request_id: "r1".into(),
            at_ms: 1,
            environment: "dev",
            pack: "p",
            version: "1.0.0",
            hash: "h",
            route: "/v1/chat/completions",
            model_requested: None,
            model_used: None,
            caller: None,
            team: None,
            outcome: Outcome::BudgetRefused,
            escalated: false,
            status: 429,
            latency_us: 5,
            upstream_us: None,
            input_tokens: None,
            output_tokens: None,
            cost_usd: None,
            pii: Findings::default(),
            redacted_text: None,
            redacted_response_text: None,
            attempts: Vec::new(),
        };
        let events = [e];
        let sent = serde_json::to_string(&Batch {
            gateway: "gw",
            events: &events[..],
        })
        .unwrap();
        assert!(sent.contains("\"outcome\":\"budget_refused\""), "{sent}");
        let got: Batch = serde_json::from_str(&sent).unwrap();
        assert_eq!(got.events[0].environment, "dev");
        assert_eq!(got.events[0].outcome, Outcome::BudgetRefused);
    }
}
