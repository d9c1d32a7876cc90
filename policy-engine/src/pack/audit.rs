//! Settings of the `audit-logger` policy: where the per-request log goes and what it may hold.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLoggerConfig {
    /// Directory of the daily `audit-YYYY-MM-DD.jsonl` files, relative to the working directory.
    #[serde(default = "default_dir")]
    pub dir: String,
    /// Files older than this many days are deleted. Shortening it is a *looser* change.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// What the request path does when the writer's bounded queue is full.
    #[serde(default)]
    pub on_queue_full: QueueFullPolicy,
    #[serde(default = "default_fsync")]
    pub fsync_interval_ms: u64,
    /// Write the redacted request text into the record (never the raw text).
    #[serde(default)]
    pub include_redacted_text: bool,
    /// Capacity of the queue between the request path and the writer task.
    #[serde(default = "default_queue")]
    pub queue_capacity: u32,
}

impl Default for AuditLoggerConfig {
    fn default() -> Self {
        Self {
            dir: default_dir(),
            retention_days: default_retention(),
            on_queue_full: QueueFullPolicy::default(),
            fsync_interval_ms: default_fsync(),
            include_redacted_text: false,
            queue_capacity: default_queue(),
        }
    }
}

fn default_dir() -> String {
    "./audit".to_owned()
}
fn default_retention() -> u32 {
    30
}
fn default_fsync() -> u64 {
    100
}
fn default_queue() -> u32 {
    8192
}

/// `block`: the request waits for room (correctness first). `drop`: the record is dropped,
/// counted in a metric and in the next record, so the gap shows in the chain itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueFullPolicy {
    #[default]
    Block,
    Drop,
}
