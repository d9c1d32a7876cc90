//! Moving a pointer by hand: `deploy` (to a pushed version) and `rollback` (to a version the
//! environment ran before). Promotion, which needs evidence from another environment, is in
//! `promote`.
//!
//! Gates of a deploy: the actor's role and scope allow the environment (403, logged), and the
//! pack's tests pass when compiled for that environment (409 `DEPLOY_REFUSED`, logged, naming the
//! gate). A rollback checks only the role: it returns to a version this environment already ran,
//! and it must work when everything else is on fire. Every move is appended to the pointer history
//! and the admin log in one transaction, then waiting long polls are woken.

use palisade_wire::error::ErrorCode;
use serde_json::{json, Value};

use crate::adminlog::{self, Entry};
use crate::app::{App, Scope};
use crate::envs;
use crate::error::ApiError;
use crate::keys::Caller;
use crate::pointers::{self, Pointer};
use crate::registry::{self, StoredVersion};

/// The `tests` gate: compile the version for `environment` and run its tests.
pub(crate) fn tests_gate(version: &StoredVersion, environment: &str) -> Value {
    match version.load() {
        Ok(loaded) => pack_tests_gate(&loaded, environment),
        Err(e) => json!({ "gate": "tests", "passed": false, "detail": e.to_string() }),
    }
}

/// The `tests` gate of a loaded pack (a stored version, or the console editor's text).
pub(crate) fn pack_tests_gate(loaded: &policy_engine::LoadedPack, environment: &str) -> Value {
    match loaded.compile(Some(environment), &registry::compile_options()) {
        Err(d) => json!({
            "gate": "tests", "passed": false,
            "detail": format!("the pack does not compile for {environment}"),
            "diagnostics": d,
        }),
        Ok(compiled) => {
            let report = policy_engine::testing::run_tests(&compiled);
            // Every failing test with what it expected and what the pack decided, so a refusal
            // can be fixed without re-running the tests elsewhere.
            let failed: Vec<&policy_engine::testing::TestOutcome> =
                report.outcomes.iter().filter(|o| !o.passed).collect();
            json!({
                "gate": "tests",
                "passed": report.ok(),
                "detail": format!("{} passed, {} failed in {environment}", report.passed, report.failed),
                "failed_tests": failed,
            })
        }
    }
}

/// Whether every gate in a list passed.
pub(crate) fn all_passed(gates: &[Value]) -> bool {
    gates.iter().all(|g| g["passed"] == json!(true))
}

/// Names of the gates that failed, for messages.
pub(crate) fn failed_names(gates: &[Value]) -> String {
    gates
        .iter()
        .filter(|g| g["passed"] != json!(true))
        .filter_map(|g| g["gate"].as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a move writes, besides the pointer itself.
pub(crate) struct Move<'a> {
    pub caller: &'a Caller,
    pub action: &'a str,
    pub note: &'a str,
    pub detail: Value,
}

/// Append the pointer move and its admin record in one transaction, then wake pollers.
pub(crate) async fn commit_move(
    app: &App,
    environment: &str,
    version: &StoredVersion,
    mv: Move<'_>,
) -> Result<Value, ApiError> {
    let now = app.now();
    let (guard, mut tx) = app.db.begin_write().await?;
    let previous = pointers::current(&mut tx, environment, &version.pack).await?;
    let mut pointer = Pointer {
        environment: environment.to_owned(),
        pack: version.pack.clone(),
        seq: 0,
        version: version.version.clone(),
        hash: version.hash.clone(),
        action: mv.action.to_owned(),
        actor: mv.caller.key_id.clone(),
        note: mv.note.to_owned(),
        at: now,
    };
    pointer.seq = pointers::append(&mut tx, &pointer).await?;
    let mut detail = mv.detail;
    detail["version"] = json!(version.version);
    detail["hash"] = json!(version.hash);
    detail["note"] = json!(mv.note);
    detail["previous"] = json!(previous
        .as_ref()
        .map(|p| json!({"version": p.version, "hash": p.hash})));
    let entry = Entry {
        actor: &mv.caller.key_id,
        action: mv.action,
        outcome: "ok",
        environment: Some(environment),
        pack: Some(&version.pack),
        detail,
    };
    adminlog::append(&mut tx, now, &entry).await?;
    tx.commit().await?;
    drop(guard);
    app.watch.notify(environment, &version.pack).await;
    Ok(json!({
        "status": "moved",
        "pointer": pointer.to_json(),
        "previous": previous.map(|p| p.to_json()),
    }))
}

fn require_note(note: &str) -> Result<(), ApiError> {
    if note.trim().is_empty() {
        return Err(ApiError::BadRequest("a change note is required".to_owned()));
    }
    Ok(())
}

/// Point `environment`'s `pack` at `version`.
pub(crate) async fn deploy(
    app: &App,
    caller: &Caller,
    pack: &str,
    version: &str,
    environment: &str,
    note: &str,
) -> Result<Value, ApiError> {
    let env = envs::require(&mut *app.db.read().await?, environment).await?;
    app.require_role(
        caller,
        env.deploy_role,
        Scope::Environment(environment),
        "deploy",
        Some(pack),
    )
    .await?;
    require_note(note)?;
    let target = registry::require(&mut *app.db.read().await?, pack, version).await?;
    let gates = vec![tests_gate(&target, environment)];
    if !all_passed(&gates) {
        let detail = json!({ "version": version, "gates": gates });
        app.log_refusal(caller, "deploy", Some(environment), Some(pack), detail)
            .await?;
        return Err(ApiError::Refused {
            code: ErrorCode::DeployRefused,
            status: http::StatusCode::CONFLICT,
            message: format!("deploy refused by gate(s): {}", failed_names(&gates)),
            gates: json!(gates),
        });
    }
    let mv = Move {
        caller,
        action: "deploy",
        note,
        detail: json!({ "gates": gates }),
    };
    commit_move(app, environment, &target, mv).await
}

/// Move `environment`'s `pack` back to `to`, or to the version it ran before the current one.
pub(crate) async fn rollback(
    app: &App,
    caller: &Caller,
    pack: &str,
    environment: &str,
    to: Option<&str>,
    note: &str,
) -> Result<Value, ApiError> {
    let env = envs::require(&mut *app.db.read().await?, environment).await?;
    app.require_role(
        caller,
        env.deploy_role,
        Scope::Environment(environment),
        "rollback",
        Some(pack),
    )
    .await?;
    require_note(note)?;
    let mut conn = app.db.read().await?;
    let hist = pointers::history(&mut conn, environment, pack).await?;
    let Some(current) = hist.first() else {
        return Err(ApiError::not_found(
            ErrorCode::NoDesiredVersion,
            format!("{environment} runs no version of {pack}"),
        ));
    };
    let target = match to {
        Some(v) if v == current.version => {
            return Err(ApiError::conflict(
                ErrorCode::AlreadyCurrent,
                format!("{environment} already runs {pack} {v}"),
            ))
        }
        Some(v) => hist
            .iter()
            .find(|p| p.version == v && !p.is_deactivation())
            .ok_or_else(|| {
                ApiError::conflict(
                    ErrorCode::NotInHistory,
                    format!("{environment} never ran {pack} {v}; use deploy for a new version"),
                )
            })?,
        None => hist
            .iter()
            .find(|p| p.version != current.version && !p.is_deactivation())
            .ok_or_else(|| {
                ApiError::conflict(
                    ErrorCode::NothingToRollBack,
                    format!("{environment} has run no other version of {pack}"),
                )
            })?,
    };
    let version = registry::require(&mut conn, pack, &target.version).await?;
    drop(conn);
    let detail = json!({ "from": { "version": current.version, "hash": current.hash } });
    let mv = Move {
        caller,
        action: "rollback",
        note,
        detail,
    };
    commit_move(app, environment, &version, mv).await
}
