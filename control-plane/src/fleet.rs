//! Gateways as the control plane sees them: registration, status reports, and the status
//! matrix (per environment and pack: the desired version and every gateway's state).
//!
//! The protocol types accept unknown fields, so gateways may send more than this version reads.
//! Gateways' own timestamps are stored as sent and shown, never used for decisions: OFFLINE,
//! PENDING/STALE and soak times run on the control plane's clock. A gateway that registers again
//! (a restart) starts over: its active hash is forgotten until it reports, so a restart restarts
//! its soak. Refusals of reports (wrong environment for the key) are 403 without an admin-log
//! record, since a misconfigured gateway would otherwise write one every interval; refused
//! registrations are recorded.
//!
//! A gateway id belongs to the environment and the key it registered with: a registration or
//! report under that id for another environment, or with another key while the gateway is
//! still live, is refused (403) and recorded in the admin log — otherwise a key for one
//! environment could move another environment's gateway and restart its soak. A gateway that
//! went OFFLINE may be taken over by a new key of its environment (a restart after a key
//! rotation).
//!
//! A gateway silent for longer than the forget time (`--forget-gateways-after`, 15 minutes by
//! default) is no longer part of the fleet: status and promotion gates leave it out, and its row
//! is deleted at the next registration. `POST /v1/gateways/prune` forgets every OFFLINE one now.

use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use crate::adminlog::{self, Entry};
use crate::app::{App, Scope};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::keys::{Caller, Role};
use crate::pointers;
use crate::state::{gateway_state, is_offline, verification, GatewayFacts, GatewayState};

use palisade_wire::gateway::AttemptResult;
pub(crate) use palisade_wire::gateway::{Instance, Report};

/// Only gateway keys, and only for their environment.
pub(crate) fn check_gateway_key(caller: &Caller, environment: &str) -> Result<(), ApiError> {
    if caller.role != Role::Gateway {
        return Err(ApiError::Forbidden(
            "this endpoint needs a gateway key".to_owned(),
        ));
    }
    if !caller.covers(environment) {
        return Err(ApiError::Forbidden(format!(
            "this gateway key is for environment {}, not {environment}",
            caller.environment.as_deref().unwrap_or("-")
        )));
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

fn validate(instance: &Instance) -> Result<(), ApiError> {
    if !valid_id(&instance.id) {
        return Err(ApiError::BadRequest(
            "instance.id must be 1 to 128 printable ASCII characters".to_owned(),
        ));
    }
    if instance.pack.is_empty() || instance.environment.is_empty() {
        return Err(ApiError::BadRequest(
            "instance.environment and instance.pack are required".to_owned(),
        ));
    }
    Ok(())
}

/// Why `id` may not be written by `caller` for `instance`, when it may not: it belongs to another
/// environment, or to another key and is still live.
fn ownership_conflict(
    row: Option<&AnyRow>,
    app: &App,
    caller: &Caller,
    i: &Instance,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let Some(row) = row else {
        return Ok(None);
    };
    let environment: String = row.try_get("environment")?;
    let key_id: Option<String> = row.try_get("key_id")?;
    let last_seen: i64 = row.try_get("last_seen_at")?;
    Ok(if environment != i.environment {
        Some(format!(
            "gateway `{}` belongs to environment {environment}, not {}",
            i.id, i.environment
        ))
    } else if key_id.as_deref() != Some(caller.key_id.as_str())
        && !is_offline(now, app.timing, last_seen)
    {
        Some(format!(
            "gateway `{}` is live under another key; a new key may take it over once it is OFFLINE",
            i.id
        ))
    } else {
        None
    })
}

/// The row of gateway `id` as the ownership check and a report read it.
async fn known_gateway(conn: &mut AnyConnection, id: &str) -> Result<Option<AnyRow>, sqlx::Error> {
    sqlx::query("SELECT environment, pack, key_id, last_seen_at, active_hash, active_since FROM gateways WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The refusal of a write to another environment's or another key's gateway: 403, recorded.
async fn refuse_conflict(
    app: &App,
    caller: &Caller,
    action: &str,
    i: &Instance,
    reason: String,
) -> ApiError {
    let detail = json!({ "reason": reason, "instance": i.id });
    match app
        .log_refusal(caller, action, Some(&i.environment), Some(&i.pack), detail)
        .await
    {
        Ok(()) => ApiError::Forbidden(reason),
        Err(e) => e.into(),
    }
}

async fn upsert_registration(
    conn: &mut AnyConnection,
    caller: &Caller,
    i: &Instance,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO gateways (id, environment, pack, build, started_at, key_id, registered_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (id) DO UPDATE SET environment = excluded.environment, pack = excluded.pack,
           build = excluded.build, started_at = excluded.started_at, key_id = excluded.key_id,
           registered_at = excluded.registered_at, last_seen_at = excluded.last_seen_at,
           last_report_at = NULL, active_version = NULL, active_hash = NULL, active_source = NULL,
           active_since = NULL, attempt_version = NULL, attempt_result = NULL, attempt_error = NULL,
           report = NULL",
    )
    .bind(&i.id)
    .bind(&i.environment)
    .bind(&i.pack)
    .bind(&i.build)
    .bind(i.started_at.to_string())
    .bind(&caller.key_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// `POST /v1/gateways/register`.
pub(crate) async fn register(
    app: &App,
    caller: &Caller,
    instance: &Instance,
) -> Result<Value, ApiError> {
    validate(instance)?;
    if let Err(e) = check_gateway_key(caller, &instance.environment) {
        let detail = json!({ "reason": e.to_string(), "instance": instance.id });
        app.log_refusal(
            caller,
            "gateway.register",
            Some(&instance.environment),
            Some(&instance.pack),
            detail,
        )
        .await?;
        return Err(e);
    }
    crate::envs::require(&mut *app.db.read().await?, &instance.environment).await?;
    let now = app.now();
    let (guard, mut tx) = app.db.begin_write().await?;
    let known = known_gateway(&mut tx, &instance.id).await?;
    if let Some(reason) = ownership_conflict(known.as_ref(), app, caller, instance, now)? {
        drop((tx, guard));
        return Err(refuse_conflict(app, caller, "gateway.register", instance, reason).await);
    }
    // Registrations are when fleets churn (a pod replaced, a local restart on a new port), so
    // this is where gateways silent past the forget time are dropped: the table stays bounded.
    sqlx::query("DELETE FROM gateways WHERE last_seen_at < $1")
        .bind(app.timing.forgotten_before(now))
        .execute(&mut *tx)
        .await?;
    upsert_registration(&mut tx, caller, instance, now).await?;
    tx.commit().await?;
    Ok(json!({
        "report_interval_ms": app.timing.report_interval_ms,
        "event_formats": [palisade_wire::events::ROWS_FORMAT],
    }))
}

/// `POST /v1/gateways/{id}/report`.
pub(crate) async fn report(
    app: &App,
    caller: &Caller,
    id: &str,
    r: &Report,
) -> Result<(), ApiError> {
    validate(&r.instance)?;
    if r.instance.id != id {
        return Err(ApiError::BadRequest(
            "instance.id differs from the id in the path".to_owned(),
        ));
    }
    check_gateway_key(caller, &r.instance.environment)?;
    let now = app.now();
    let (guard, mut tx) = app.db.begin_write().await?;
    let known = known_gateway(&mut tx, id).await?;
    if let Some(reason) = ownership_conflict(known.as_ref(), app, caller, &r.instance, now)? {
        drop((tx, guard));
        return Err(refuse_conflict(app, caller, "gateway.report", &r.instance, reason).await);
    }
    let (prev_hash, prev_since, prev_seen) = match &known {
        Some(row)
            if row.try_get::<String, _>("environment")? == r.instance.environment
                && row.try_get::<String, _>("pack")? == r.instance.pack =>
        {
            (
                row.try_get::<Option<String>, _>("active_hash")?,
                row.try_get::<Option<i64>, _>("active_since")?,
                row.try_get::<i64, _>("last_seen_at")?,
            )
        }
        // Unknown, or moved to another environment/pack: a report doubles as registration.
        _ => {
            upsert_registration(&mut tx, caller, &r.instance, now).await?;
            (None, None, now)
        }
    };
    let active = r.active.as_ref();
    let active_hash = active.map(|a| a.hash.as_str());
    let continuous = prev_hash.is_some()
        && prev_hash.as_deref() == active_hash
        && !is_offline(now, app.timing, prev_seen);
    let since = if active.is_none() {
        None
    } else if continuous {
        prev_since
    } else {
        Some(now)
    };
    let attempt = r.last_attempt.as_ref();
    let result = attempt.map(|a| match a.result {
        AttemptResult::Ack => "ACK",
        AttemptResult::Nack => "NACK",
    });
    let report = json!({ "desired": r.desired, "active": r.active, "last_attempt": r.last_attempt,
        "counters": r.counters, "build": r.instance.build });
    sqlx::query(
        "UPDATE gateways SET last_seen_at = $1, last_report_at = $1, active_version = $2, active_hash = $3,
           active_source = $4, active_since = $5, attempt_version = $6, attempt_result = $7,
           attempt_error = $8, report = $9, build = $10 WHERE id = $11",
    )
    .bind(now)
    .bind(active.map(|a| a.version.as_str()))
    .bind(active_hash)
    .bind(active.map(|a| a.source.as_str()))
    .bind(since)
    .bind(attempt.map(|a| a.version.as_str()))
    .bind(result)
    .bind(
        attempt
            .and_then(|a| a.error.as_ref())
            .map(|e| json!(e).to_string()),
    )
    .bind(report.to_string())
    .bind(&r.instance.build)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One gateway row: the facts the state rules use and what the status shows.
#[derive(Debug, Clone)]
pub(crate) struct GatewayRow {
    pub id: String,
    pub environment: String,
    pub pack: String,
    pub facts: GatewayFacts,
    pub shown: Value,
}

/// Gateways, optionally of one environment and/or pack, ordered by id.
pub(crate) async fn gateways(
    conn: &mut AnyConnection,
    environment: Option<&str>,
    pack: Option<&str>,
    seen_since: i64,
) -> Result<Vec<GatewayRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, environment, pack, build, registered_at, last_seen_at, last_report_at, active_version,
           active_hash, active_source, active_since, attempt_version, attempt_result, attempt_error, report
         FROM gateways WHERE ($1 IS NULL OR environment = $1) AND ($2 IS NULL OR pack = $2) AND last_seen_at >= $3
         ORDER BY environment, pack, id",
    )
    .bind(environment)
    .bind(pack)
    .bind(seen_since)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| {
        let attempt_result: Option<String> = r.try_get("attempt_result")?;
        let error: Option<String> = r.try_get("attempt_error")?;
        let report: Option<String> = r.try_get("report")?;
        let facts = GatewayFacts {
            registered_at: r.try_get("registered_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
            active_hash: r.try_get("active_hash")?,
            active_since: r.try_get("active_since")?,
            attempt_version: r.try_get("attempt_version")?,
            attempt_nack: attempt_result.as_deref() == Some("NACK"),
        };
        let last_report: Option<i64> = r.try_get("last_report_at")?;
        let parsed = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Value>(&s).ok());
        let report = parsed(report);
        let shown = json!({
            "build": r.try_get::<String, _>("build")?,
            "last_seen_at": rfc3339(facts.last_seen_at),
            "last_report_at": last_report.map(rfc3339),
            "active": { "version": r.try_get::<Option<String>, _>("active_version")?, "hash": facts.active_hash,
                        "source": r.try_get::<Option<String>, _>("active_source")?, "since": facts.active_since.map(rfc3339) },
            "last_attempt": { "version": facts.attempt_version, "result": attempt_result, "error": parsed(error) },
            "counters": report.as_ref().map(|r| r["counters"].clone()),
        });
        Ok(GatewayRow { id: r.try_get("id")?, environment: r.try_get("environment")?, pack: r.try_get("pack")?, facts, shown })
    }).collect()
}

/// The status matrix.
pub(crate) async fn status(app: &App, environment: Option<&str>) -> Result<Value, ApiError> {
    let mut conn = app.db.read().await?;
    let now = app.now();
    let mut pairs: Vec<(String, String)> = pointers::all_current(&mut conn, environment)
        .await?
        .into_iter()
        .map(|p| (p.environment, p.pack))
        .collect();
    let gws = gateways(
        &mut conn,
        environment,
        None,
        app.timing.forgotten_before(now),
    )
    .await?;
    pairs.extend(gws.iter().map(|g| (g.environment.clone(), g.pack.clone())));
    pairs.sort();
    pairs.dedup();
    let mut entries = Vec::new();
    // Healthy: every (environment, pack) with a desired version has a live gateway and every
    // live one is SYNCED. OFFLINE gateways are shown but do not count (they are forgotten after
    // a while); an environment nothing is deployed to yet is waiting, not failing.
    let mut all_synced = true;
    for (env, pack) in pairs {
        let desired = pointers::desired(&mut conn, &env, &pack).await?;
        let desired_ref = desired.as_ref().map(|(_, d)| d);
        let mine: Vec<&GatewayRow> = gws
            .iter()
            .filter(|g| g.environment == env && g.pack == pack)
            .collect();
        let mut shown = Vec::new();
        let mut live = 0;
        for g in &mine {
            let state = gateway_state(now, app.timing, desired_ref, &g.facts);
            if state != GatewayState::Offline {
                live += 1;
                all_synced &= desired_ref.is_none() || state == GatewayState::Synced;
            }
            let mut v = g.shown.clone();
            v["id"] = json!(g.id);
            v["state"] = json!(state);
            shown.push(v);
        }
        let facts: Vec<(String, GatewayFacts)> = mine
            .iter()
            .map(|g| (g.id.clone(), g.facts.clone()))
            .collect();
        all_synced &= desired_ref.is_none() || live > 0;
        let verified =
            desired_ref.map(|d| verification(now, app.timing, &d.hash, Some(d), &facts, 0));
        entries.push(json!({
            "environment": env,
            "pack": pack,
            "desired": desired.as_ref().map(|(p, d)| json!({"version": p.version, "hash": p.hash, "since": rfc3339(d.since)})),
            "verified_since": verified.and_then(|v| v.holding_since).map(rfc3339),
            "gateways": shown,
        }));
    }
    Ok(
        json!({ "all_synced": all_synced, "report_interval_ms": app.timing.report_interval_ms, "entries": entries }),
    )
}

/// `POST /v1/gateways/prune`: forget every OFFLINE gateway now (admin), instead of waiting for
/// the forget time. Returns the ids removed.
pub(crate) async fn prune(app: &App, caller: &Caller) -> Result<Value, ApiError> {
    app.require_role(caller, Role::Admin, Scope::Global, "gateway.prune", None)
        .await?;
    let now = app.now();
    let cutoff = now.saturating_sub(app.timing.offline_after_ms());
    let (_guard, mut tx) = app.db.begin_write().await?;
    let ids: Vec<String> =
        sqlx::query("SELECT id FROM gateways WHERE last_seen_at < $1 ORDER BY id")
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
    sqlx::query("DELETE FROM gateways WHERE last_seen_at < $1")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    let entry = Entry {
        actor: &caller.key_id,
        action: "gateway.prune",
        outcome: "ok",
        environment: None,
        pack: None,
        detail: json!({ "removed": ids }),
    };
    adminlog::append(&mut tx, now, &entry).await?;
    tx.commit().await?;
    Ok(json!({ "removed": ids }))
}
