//! The escalation queue: one review item per request whose policy escalated, opened when its
//! event is ingested (`events::ingest`) and named by that request's id.
//!
//! States run `open` → `acknowledged` → `resolved`, or `open` → `resolved`; a resolution says
//! `expected`, `false_positive` or `policy_change_needed`, with an optional note. Deployers and
//! admins whose key covers the escalation's environment may act, viewers read; every change,
//! and every refused attempt, is written to the admin log in the change's transaction.

use palisade_wire::error::ErrorCode;
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row as _};

use crate::adminlog::{self, Entry};
use crate::app::{App, Scope};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::keys::{Caller, Role};
use crate::routes::check_note;

/// How an escalation was settled.
pub(crate) const RESOLUTIONS: &[&str] = &["expected", "false_positive", "policy_change_needed"];
/// The states, in order.
pub(crate) const STATES: &[&str] = &["open", "acknowledged", "resolved"];

const COLUMNS: &str = "id, environment, pack, version, hash, gateway, opened_at, state, resolution, assignee, note, updated_at, updated_by";

fn to_json(r: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    let opened: i64 = r.try_get("opened_at")?;
    let updated: i64 = r.try_get("updated_at")?;
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "request_id": r.try_get::<String, _>("id")?,
        "environment": r.try_get::<String, _>("environment")?,
        "pack": r.try_get::<String, _>("pack")?,
        "version": r.try_get::<String, _>("version")?,
        "hash": r.try_get::<String, _>("hash")?,
        "gateway": r.try_get::<String, _>("gateway")?,
        "opened_at": rfc3339(opened),
        "opened_at_ms": opened,
        "state": r.try_get::<String, _>("state")?,
        "resolution": r.try_get::<Option<String>, _>("resolution")?,
        "assignee": r.try_get::<Option<String>, _>("assignee")?,
        "note": r.try_get::<Option<String>, _>("note")?,
        "updated_at": rfc3339(updated),
        "updated_by": r.try_get::<Option<String>, _>("updated_by")?,
    }))
}

/// Escalations, oldest open first (the order a reviewer works in).
pub(crate) async fn list(
    conn: &mut AnyConnection,
    environment: Option<&str>,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>, ApiError> {
    if let Some(s) = state {
        if !STATES.contains(&s) {
            return Err(ApiError::BadRequest(format!(
                "state `{s}` is not one of {}",
                STATES.join(", ")
            )));
        }
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM escalations WHERE ($1 = '' OR environment = $1) AND ($2 = '' OR state = $2) ORDER BY opened_at, id LIMIT $3"
    ))
    .bind(environment.unwrap_or(""))
    .bind(state.unwrap_or(""))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(to_json).collect::<Result<_, _>>()?)
}

async fn get(conn: &mut AnyConnection, id: &str) -> Result<Value, ApiError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM escalations WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::UnknownEscalation,
                format!("no escalation `{id}`"),
            )
        })?;
    Ok(to_json(&row)?)
}

/// One escalation with the event that opened it (when retention has not removed it yet).
pub(crate) async fn show(conn: &mut AnyConnection, id: &str) -> Result<Value, ApiError> {
    let mut out = get(conn, id).await?;
    out["event"] = crate::events::get(conn, id).await?.unwrap_or(Value::Null);
    Ok(out)
}

/// A reviewer's step.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Acknowledge { assignee: Option<String> },
    Resolve { resolution: String, note: String },
}

/// Apply `step` to escalation `id` for `caller`; returns the escalation after it.
pub(crate) async fn act(
    app: &App,
    caller: &Caller,
    id: &str,
    step: Step,
) -> Result<Value, ApiError> {
    let (action, wanted_from): (&str, &[&str]) = match &step {
        Step::Acknowledge { .. } => ("escalation.ack", &["open"]),
        Step::Resolve { resolution, note } => {
            if !RESOLUTIONS.contains(&resolution.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "resolution `{resolution}` is not one of {}",
                    RESOLUTIONS.join(", ")
                )));
            }
            check_note(note)?;
            ("escalation.resolve", &["open", "acknowledged"])
        }
    };
    let before = get(&mut *app.db.read().await?, id).await?;
    let env = before["environment"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let pack = before["pack"].as_str().unwrap_or_default().to_owned();
    app.require_role(
        caller,
        Role::Deployer,
        Scope::Environment(&env),
        action,
        Some(&pack),
    )
    .await?;
    let now = app.now();
    let (_guard, mut tx) = app.db.begin_write().await?;
    // Read the state again inside the write lock: two reviewers racing see one winner.
    let current = get(&mut tx, id).await?;
    let state = current["state"].as_str().unwrap_or_default().to_owned();
    if !wanted_from.contains(&state.as_str()) {
        return Err(ApiError::conflict(
            ErrorCode::EscalationState,
            format!(
                "escalation {id} is {state}{}; {action} needs it {}",
                current["updated_by"]
                    .as_str()
                    .map(|b| format!(" (by {b})"))
                    .unwrap_or_default(),
                wanted_from.join(" or ")
            ),
        ));
    }
    let detail = match &step {
        Step::Acknowledge { assignee } => {
            let assignee = assignee.clone().unwrap_or_else(|| caller.key_id.clone());
            sqlx::query("UPDATE escalations SET state = 'acknowledged', assignee = $1, updated_at = $2, updated_by = $3 WHERE id = $4")
                .bind(&assignee)
                .bind(now)
                .bind(&caller.key_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            json!({ "escalation": id, "from": state, "to": "acknowledged", "assignee": assignee, "version": current["version"] })
        }
        Step::Resolve { resolution, note } => {
            sqlx::query("UPDATE escalations SET state = 'resolved', resolution = $1, note = $2, updated_at = $3, updated_by = $4 WHERE id = $5")
                .bind(resolution)
                .bind(note)
                .bind(now)
                .bind(&caller.key_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            json!({ "escalation": id, "from": state, "to": "resolved", "resolution": resolution, "note": note, "version": current["version"] })
        }
    };
    let entry = Entry {
        actor: &caller.key_id,
        action,
        outcome: "ok",
        environment: Some(&env),
        pack: Some(&pack),
        detail,
    };
    adminlog::append(&mut tx, now, &entry).await?;
    let after = get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(after)
}

/// Open escalations per environment and version: how many, and the oldest's opening time.
pub(crate) async fn queue(
    conn: &mut AnyConnection,
) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT environment, version, COUNT(*) AS n, MIN(opened_at) AS oldest FROM escalations WHERE state <> 'resolved' GROUP BY environment, version",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("environment")?,
                r.try_get("version")?,
                r.try_get("n")?,
                r.try_get("oldest")?,
            ))
        })
        .collect()
}
