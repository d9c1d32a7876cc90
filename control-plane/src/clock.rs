//! The control plane's time source, injectable so that state and soak logic can be tested by
//! moving a clock instead of sleeping.
//!
//! Times are Unix milliseconds (`i64`) everywhere in the registry: both SQLite and Postgres store
//! them as `BIGINT` without time-zone questions. Gateways' own timestamps are stored as they sent
//! them and never used for decisions, so a gateway with a wrong clock cannot fake a soak.

use std::time::{SystemTime, UNIX_EPOCH};

/// Something that tells the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Render Unix milliseconds as RFC 3339 (UTC, milliseconds) for API responses.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}
