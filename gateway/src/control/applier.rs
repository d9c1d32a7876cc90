//! The gateway's side of the agent contract: a document from the control plane (or the state
//! directory) goes through the same prepare-then-swap path as a pack file, and the outcome is
//! turned into an ACK (version and hash) or a NACK (the first diagnostic's code, path and
//! message). Two gauges make the control-plane view scrapeable: `palisade_pack_drift` (1 while a
//! desired hash is known and not the active one) and `palisade_pack_rejected` (1 while the last
//! attempt at the desired version was refused).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use policy_engine::DiagnosticCode;
use prometheus::IntGauge;

use super::agent::{Applied, PackApplier};
use super::events::EventStats;
use crate::pack::{self, PackSource, PrepareError};
use crate::state::GatewayState;
use palisade_wire::gateway::{ActiveSource, AttemptError, AttemptResult, Counters, Report};

#[derive(Debug)]
pub struct GatewayApplier {
    state: Arc<GatewayState>,
    control_plane: String,
    state_dir: String,
    drift: IntGauge,
    rejected: IntGauge,
}

impl GatewayApplier {
    pub fn new(
        state: Arc<GatewayState>,
        control_plane: &str,
        state_dir: &str,
    ) -> Result<Self, prometheus::Error> {
        let drift = IntGauge::new(
            "palisade_pack_drift",
            "1 while the active pack hash differs from the desired one",
        )?;
        let rejected = IntGauge::new(
            "palisade_pack_rejected",
            "1 while the desired pack version was rejected (NACK)",
        )?;
        state
            .metrics()
            .registry()
            .register(Box::new(drift.clone()))?;
        state
            .metrics()
            .registry()
            .register(Box::new(rejected.clone()))?;
        Ok(Self {
            state,
            control_plane: control_plane.to_owned(),
            state_dir: state_dir.to_owned(),
            drift,
            rejected,
        })
    }
}

impl PackApplier for GatewayApplier {
    async fn apply(&self, yaml: String, source: ActiveSource) -> Result<Applied, AttemptError> {
        let origin = match source {
            ActiveSource::Persisted => PackSource::Persisted(self.state_dir.clone()),
            ActiveSource::ControlPlane | ActiveSource::File => {
                PackSource::ControlPlane(self.control_plane.clone())
            }
        };
        let environment = self.state.environment().to_owned();
        let prepared =
            tokio::task::spawn_blocking(move || pack::prepare(&yaml, &environment, origin)).await;
        let prepared = match prepared {
            Ok(r) => r,
            Err(e) => {
                return Err(AttemptError {
                    code: "INTERNAL".to_owned(),
                    path: String::new(),
                    message: format!("pack preparation task failed: {e}"),
                });
            }
        };
        match prepared {
            Ok(p) => {
                let applied = Applied {
                    version: p.version().to_owned(),
                    hash: p.hash_hex.clone(),
                };
                self.state.activate(p);
                Ok(applied)
            }
            Err(e) => {
                self.state.reject(&e);
                Err(attempt_error(&e))
            }
        }
    }

    fn counters(&self) -> Counters {
        let (requests, blocked, redactions) = self.state.metrics().totals();
        let events = self.state.enforcement.event_sink().map(|s| s.stats());
        let audit = self.state.enforcement.audit_stats();
        let load =
            |f: fn(&EventStats) -> &AtomicU64| events.map_or(0, |s| f(s).load(Ordering::Relaxed));
        Counters {
            requests,
            blocked,
            redactions,
            audit_dropped: audit.map_or(0, |s| {
                s.dropped.load(Ordering::Relaxed) + s.lost.load(Ordering::Relaxed)
            }),
            events_shipped: load(|s| &s.shipped),
            events_dropped: load(|s| &s.dropped),
        }
    }

    fn observe(&self, report: &Report) {
        let active = report.active.as_ref().map(|a| a.hash.as_str());
        let desired = report.desired.as_ref().map(|d| d.hash.as_str());
        self.drift
            .set(i64::from(desired.is_some() && desired != active));
        let nacked = report.last_attempt.as_ref().is_some_and(|a| {
            a.result == AttemptResult::Nack
                && report
                    .desired
                    .as_ref()
                    .is_some_and(|d| d.version == a.version)
        });
        self.rejected.set(i64::from(nacked && desired != active));
    }
}

fn attempt_error(e: &PrepareError) -> AttemptError {
    match e {
        PrepareError::Pack(d) => match d.first_error() {
            Some(first) => AttemptError {
                code: first.code.as_str().to_owned(),
                path: first.path.clone(),
                message: first.message.clone(),
            },
            None => AttemptError {
                code: DiagnosticCode::PolicyCompileError.as_str().to_owned(),
                path: String::new(),
                message: d.to_string(),
            },
        },
        other => AttemptError {
            code: "PACK_UNUSABLE".to_owned(),
            path: String::new(),
            message: other.summary(),
        },
    }
}
