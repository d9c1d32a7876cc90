//! The per-gateway state machine and an environment's verification, as pure functions of what
//! the registry knows and an explicit `now` (so tests move time instead of sleeping).
//!
//! Rules, in the order they are applied:
//! 1. OFFLINE: nothing heard from the gateway (register or report) for more than 3 report
//!    intervals.
//! 2. SYNCED: its active hash equals the desired hash.
//! 3. REJECTED: its last attempt was a NACK of the desired version (with the error).
//! 4. PENDING: the desired version, or the gateway, is newer than the convergence window
//!    (3 report intervals) — it has not had time to answer yet. Also the state of every gateway
//!    of an (environment, pack) that has no desired version yet.
//! 5. STALE: otherwise — it had time, did not NACK, and still runs something else.
//!
//! An environment is *verified at hash H* when its desired hash is H, at least one gateway is
//! live (non-OFFLINE), every live gateway is SYNCED, and the soak has elapsed since the latest of:
//! the pointer moving to H and each live gateway becoming active on H (a gateway that restarts,
//! switches hash or comes back from OFFLINE starts its own clock again). Zero live gateways is
//! not verified: "every gateway" of an empty fleet proves nothing. Any later failure revokes
//! verification, because it is recomputed from current state on every question.

use serde::Serialize;

/// What a gateway is doing relative to its desired version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum GatewayState {
    Pending,
    Synced,
    Rejected,
    Stale,
    Offline,
}

impl GatewayState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Synced => "SYNCED",
            Self::Rejected => "REJECTED",
            Self::Stale => "STALE",
            Self::Offline => "OFFLINE",
        }
    }
}

/// The desired pointer of an (environment, pack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRef {
    pub version: String,
    pub hash: String,
    /// When the pointer moved to this hash (control-plane time, ms).
    pub since: i64,
}

/// What the registry knows about one gateway (control-plane times, ms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayFacts {
    pub registered_at: i64,
    pub last_seen_at: i64,
    pub active_hash: Option<String>,
    /// When it was first seen active on `active_hash`, continuously since.
    pub active_since: Option<i64>,
    pub attempt_version: Option<String>,
    /// `true` when the last attempt was a NACK.
    pub attempt_nack: bool,
}

/// Timing parameters of the state rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub report_interval_ms: i64,
    /// Silence after which a gateway is no longer part of the fleet at all (it stopped, or was
    /// replaced); at least the OFFLINE threshold.
    pub forget_after_ms: i64,
}

impl Timing {
    /// Silence longer than this is OFFLINE.
    pub fn offline_after_ms(self) -> i64 {
        self.report_interval_ms.saturating_mul(3)
    }

    /// Gateways last seen before this are forgotten.
    pub fn forgotten_before(self, now: i64) -> i64 {
        now.saturating_sub(self.forget_after_ms.max(self.offline_after_ms()))
    }

    /// A gateway has this long to converge on a new desired version before it is STALE.
    pub fn converge_within_ms(self) -> i64 {
        self.report_interval_ms.saturating_mul(3)
    }
}

/// Whether a gateway last heard from at `last_seen_at` is OFFLINE at `now`.
pub fn is_offline(now: i64, timing: Timing, last_seen_at: i64) -> bool {
    now.saturating_sub(last_seen_at) > timing.offline_after_ms()
}

/// The state of one gateway.
pub fn gateway_state(
    now: i64,
    timing: Timing,
    desired: Option<&DesiredRef>,
    gw: &GatewayFacts,
) -> GatewayState {
    if is_offline(now, timing, gw.last_seen_at) {
        return GatewayState::Offline;
    }
    let Some(desired) = desired else {
        return GatewayState::Pending;
    };
    if gw.active_hash.as_deref() == Some(desired.hash.as_str()) {
        return GatewayState::Synced;
    }
    if gw.attempt_nack && gw.attempt_version.as_deref() == Some(desired.version.as_str()) {
        return GatewayState::Rejected;
    }
    let newest = desired.since.max(gw.registered_at);
    if now.saturating_sub(newest) <= timing.converge_within_ms() {
        GatewayState::Pending
    } else {
        GatewayState::Stale
    }
}

/// Whether, and since when, an environment is verified at its desired hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// The hash the question was about.
    pub hash: String,
    pub verified: bool,
    /// Since when every condition but the soak has held; `None` when one does not hold now.
    pub holding_since: Option<i64>,
    pub soak_ms: i64,
    pub live_gateways: usize,
    pub synced_gateways: usize,
    /// Why it is not verified (empty when it is).
    pub reasons: Vec<String>,
}

/// Is the environment verified at `hash` for `soak_ms`, given its desired pointer and gateways?
pub fn verification(
    now: i64,
    timing: Timing,
    hash: &str,
    desired: Option<&DesiredRef>,
    gateways: &[(String, GatewayFacts)],
    soak_ms: i64,
) -> Verification {
    let mut reasons = Vec::new();
    let mut since = None;
    let (mut live, mut synced) = (0, 0);
    match desired {
        None => reasons.push("the environment has no desired version of this pack".to_owned()),
        Some(d) if d.hash != hash => reasons.push(format!(
            "the environment's desired version is {} ({}), not this hash",
            d.version,
            short(&d.hash)
        )),
        Some(d) => since = Some(d.since),
    }
    for (id, gw) in gateways {
        let state = gateway_state(now, timing, desired, gw);
        if state == GatewayState::Offline {
            continue;
        }
        live += 1;
        if state == GatewayState::Synced {
            synced += 1;
            since = since.map(|s: i64| s.max(gw.active_since.unwrap_or(now)));
        } else {
            reasons.push(format!("gateway {id} is {}", state.as_str()));
        }
    }
    if live == 0 {
        reasons.push("no live gateway reports for this environment and pack".to_owned());
    }
    let holding_since = if reasons.is_empty() { since } else { None };
    if let Some(s) = holding_since {
        let held = now.saturating_sub(s);
        if held < soak_ms {
            reasons.push(format!(
                "verified for {} of the {} soak",
                seconds(held),
                seconds(soak_ms)
            ));
        }
    }
    Verification {
        hash: hash.to_owned(),
        verified: reasons.is_empty(),
        holding_since,
        soak_ms,
        live_gateways: live,
        synced_gateways: synced,
        reasons,
    }
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
