//! Promotion: point the target environment at the version the source environment runs, when
//! every gate holds. A refusal evaluates and names every gate, not just the first that failed,
//! and is recorded in the admin log with that evidence; so is a promotion that happens.
//!
//! Gates:
//! - `path`: the target is fed from the source (`feeds_from`), so prod cannot skip staging.
//! - `role`: the actor's role meets the target's `deploy_role` and its scope covers the target.
//! - `tests`: the pack's tests pass when compiled for the target environment.
//! - `source_verified`: the source is verified at the hash it runs for the target's soak time
//!   (see `state` for the exact rule).
//! - `runtime_evidence`, only when the target sets thresholds (`envs::Evidence`): the source's
//!   decision events on the promoted version's exact hash, since the source's pointer reached
//!   that hash (whole minutes, from the rollups), have at least `min_requests` requests and error,
//!   escalation and block rates within their maxima. A refusal names each failing threshold
//!   with the measured value; the measurements are recorded with the promotion either way.
//!
//! A viewer or gateway key is refused before any gate (403): it may never change policy. When
//! the `role` gate fails the answer is 403, otherwise 409; the code is `PROMOTION_REFUSED`.

use palisade_wire::error::ErrorCode;
use serde_json::{json, Value};

use crate::app::App;
use crate::deploy::{all_passed, commit_move, failed_names, tests_gate, Move};
use crate::envs::{self, Environment};
use crate::error::ApiError;
use crate::fleet;
use crate::keys::{Caller, Role};
use crate::pointers;
use crate::registry;
use crate::state::verification;

fn gate(name: &str, passed: bool, detail: impl Into<String>) -> Value {
    json!({ "gate": name, "passed": passed, "detail": detail.into() })
}

fn role_gate(caller: &Caller, target: &Environment) -> Value {
    if !caller.role.at_least(target.deploy_role) {
        return gate(
            "role",
            false,
            format!(
                "{} needs the {} role; this key is {}",
                target.name,
                target.deploy_role.as_str(),
                caller.role.as_str()
            ),
        );
    }
    if !caller.covers(&target.name) {
        return gate(
            "role",
            false,
            format!(
                "this key is limited to {}",
                caller.environment.as_deref().unwrap_or("-")
            ),
        );
    }
    gate(
        "role",
        true,
        format!("{} may deploy to {}", caller.role.as_str(), target.name),
    )
}

fn path_gate(source: &Environment, target: &Environment) -> Value {
    let ok = target.feeds_from.as_deref() == Some(source.name.as_str());
    let detail = match &target.feeds_from {
        Some(f) if ok => format!("{} is fed from {f}", target.name),
        Some(f) => format!("{} is fed from {f}, not from {}", target.name, source.name),
        None => format!("{} is fed from no environment; use deploy", target.name),
    };
    gate("path", ok, detail)
}

/// Promote `pack` from `from` to `to`.
pub(crate) async fn promote(
    app: &App,
    caller: &Caller,
    pack: &str,
    from: &str,
    to: &str,
    note: &str,
) -> Result<Value, ApiError> {
    if !caller.role.at_least(Role::Deployer) {
        let reason = format!("a {} key cannot promote", caller.role.as_str());
        return Err(app
            .refuse(caller, "promote", Some(to), Some(pack), reason)
            .await);
    }
    if note.trim().is_empty() {
        return Err(ApiError::BadRequest("a change note is required".to_owned()));
    }
    let Plan { gates, version } = plan(app, caller, pack, from, to).await?;
    let version = match version {
        Some(v) if all_passed(&gates) => v,
        other => {
            let shown = other.as_ref().map(|v| v.version.as_str());
            return refuse(app, caller, pack, from, to, shown, gates).await;
        }
    };
    let mv = Move {
        caller,
        action: "promote",
        note,
        detail: json!({ "from": from, "gates": gates }),
    };
    commit_move(app, to, &version, mv).await
}

/// Every gate of promoting `pack` from `from` to `to` for `caller`, evaluated now, and the
/// version that would move (none when `from` runs none).
#[derive(Debug)]
pub(crate) struct Plan {
    pub gates: Vec<Value>,
    pub version: Option<registry::StoredVersion>,
}

/// Evaluate every gate without moving anything or recording anything: the promote dialog and
/// `GET /v1/promote/gates` show this before anyone asks for the move.
pub(crate) async fn plan(
    app: &App,
    caller: &Caller,
    pack: &str,
    from: &str,
    to: &str,
) -> Result<Plan, ApiError> {
    let mut conn = app.db.read().await?;
    let source = envs::require(&mut conn, from).await?;
    let target = envs::require(&mut conn, to).await?;
    let mut gates = vec![path_gate(&source, &target), role_gate(caller, &target)];
    let desired = pointers::desired(&mut conn, from, pack).await?;
    let Some((pointer, desired_ref)) = desired else {
        gates.push(gate(
            "tests",
            false,
            format!("{from} runs no version of {pack} to test"),
        ));
        gates.push(gate(
            "source_verified",
            false,
            format!("{from} runs no version of {pack}"),
        ));
        return Ok(Plan {
            gates,
            version: None,
        });
    };
    let version = registry::require(&mut conn, pack, &pointer.version).await?;
    gates.push(tests_gate(&version, to));
    let gws = fleet::gateways(
        &mut conn,
        Some(from),
        Some(pack),
        app.timing.forgotten_before(app.now()),
    )
    .await?;
    drop(conn);
    let facts: Vec<_> = gws.into_iter().map(|g| (g.id, g.facts)).collect();
    let v = verification(
        app.now(),
        app.timing,
        &version.hash,
        Some(&desired_ref),
        &facts,
        target.soak_ms,
    );
    let detail = if v.verified {
        format!(
            "{from} verified at {} on {} gateway(s) for the {} ms soak",
            version.version, v.synced_gateways, v.soak_ms
        )
    } else {
        v.reasons.join("; ")
    };
    let mut g = gate("source_verified", v.verified, detail);
    g["evidence"] = json!(v);
    gates.push(g);
    if target.evidence.is_set() {
        gates
            .push(evidence_gate(app, from, pack, &version.hash, desired_ref.since, &target).await?);
    }
    Ok(Plan {
        gates,
        version: Some(version),
    })
}

/// The runtime evidence gate (see the module docs).
async fn evidence_gate(
    app: &App,
    from: &str,
    pack: &str,
    hash: &str,
    since: i64,
    target: &Environment,
) -> Result<Value, ApiError> {
    let counts = crate::events::summary(
        &mut *app.db.read().await?,
        from,
        Some(pack),
        Some(hash),
        since,
        app.now() + 1,
    )
    .await?;
    let c = crate::events::VersionCounts::total(&counts);
    let t = target.evidence;
    let mut failing = Vec::new();
    if let Some(min) = t.min_requests {
        if c.requests < min {
            failing.push(format!(
                "{} requests, fewer than the {min} required",
                c.requests
            ));
        }
    }
    for (name, measured, max) in [
        ("error rate", c.error_rate(), t.max_error_rate),
        (
            "escalation rate",
            c.escalation_rate(),
            t.max_escalation_rate,
        ),
        ("block rate", c.block_rate(), t.max_block_rate),
    ] {
        if let Some(max) = max {
            if measured > max {
                failing.push(format!(
                    "{name} {:.2} % above the maximum {:.2} %",
                    measured * 100.0,
                    max * 100.0
                ));
            }
        }
    }
    let passed = failing.is_empty();
    let detail = if passed {
        format!(
            "{from} served {} requests on this hash since {}: error {:.2} %, escalation {:.2} %, block {:.2} %",
            c.requests,
            crate::clock::rfc3339(since),
            c.error_rate() * 100.0,
            c.escalation_rate() * 100.0,
            c.block_rate() * 100.0
        )
    } else {
        format!("{from}: {}", failing.join("; "))
    };
    let mut g = gate("runtime_evidence", passed, detail);
    g["evidence"] = json!({
        "since": crate::clock::rfc3339(since),
        "hash": hash,
        "requests": c.requests,
        "outcomes": c.outcomes,
        "error_rate": c.error_rate(),
        "escalation_rate": c.escalation_rate(),
        "block_rate": c.block_rate(),
        "thresholds": {
            "min_requests": t.min_requests,
            "max_error_rate": t.max_error_rate,
            "max_escalation_rate": t.max_escalation_rate,
            "max_block_rate": t.max_block_rate,
        },
    });
    Ok(g)
}

async fn refuse(
    app: &App,
    caller: &Caller,
    pack: &str,
    from: &str,
    to: &str,
    version: Option<&str>,
    gates: Vec<Value>,
) -> Result<Value, ApiError> {
    let detail = json!({ "from": from, "version": version, "gates": gates });
    app.log_refusal(caller, "promote", Some(to), Some(pack), detail)
        .await?;
    let role_failed = gates
        .iter()
        .any(|g| g["gate"] == "role" && g["passed"] != json!(true));
    Err(ApiError::Refused {
        code: ErrorCode::PromotionRefused,
        status: if role_failed {
            http::StatusCode::FORBIDDEN
        } else {
            http::StatusCode::CONFLICT
        },
        message: format!(
            "promotion of {pack} from {from} to {to} refused by gate(s): {}",
            failed_names(&gates)
        ),
        gates: json!(gates),
    })
}
