//! The gateway ↔ control-plane protocol: what a gateway registers, the desired version it
//! polls for, and the report it sends.
//!
//! The report follows OPA's status API plus Envoy's ACK/NACK: what the gateway was told to run
//! (`desired`), what it runs (`active`, with where it came from), and what happened the last time
//! it tried to change (`last_attempt`), so a rejection never looks like success.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub environment: String,
    pub pack: String,
    #[serde(default)]
    pub build: String,
    #[serde(default)]
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register {
    pub instance: Instance,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    #[serde(default)]
    pub report_interval_ms: Option<u64>,
    /// Event batch formats the control plane reads besides the object form
    /// ([`crate::events::ROWS_FORMAT`]); none from a control plane older than them.
    #[serde(default)]
    pub event_formats: Vec<String>,
}

/// `GET /v1/gateways/desired` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub pack: String,
    pub version: String,
    pub hash: String,
    pub yaml: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSeen {
    pub version: String,
    pub hash: String,
    pub seen_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActiveSource {
    ControlPlane,
    Persisted,
    File,
}

impl ActiveSource {
    /// The wire name (`control_plane`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ControlPlane => "control_plane",
            Self::Persisted => "persisted",
            Self::File => "file",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    pub version: String,
    pub hash: String,
    #[serde(default)]
    pub activated_at: String,
    pub source: ActiveSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptResult {
    #[serde(rename = "ACK")]
    Ack,
    #[serde(rename = "NACK")]
    Nack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub code: String,
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastAttempt {
    pub version: String,
    pub at: String,
    pub result: AttemptResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AttemptError>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub requests: u64,
    pub blocked: u64,
    pub redactions: u64,
    /// Audit records that are not in the log: dropped under `on_queue_full: drop`, or lost to
    /// failed writes.
    pub audit_dropped: u64,
    /// Decision events the control plane acknowledged, and those dropped (queue full, refused,
    /// undelivered at shutdown).
    #[serde(default)]
    pub events_shipped: u64,
    #[serde(default)]
    pub events_dropped: u64,
}

/// `POST /v1/gateways/{id}/report` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub instance: Instance,
    #[serde(default)]
    pub desired: Option<DesiredSeen>,
    #[serde(default)]
    pub active: Option<Active>,
    #[serde(default)]
    pub last_attempt: Option<LastAttempt>,
    #[serde(default)]
    pub counters: Counters,
}
