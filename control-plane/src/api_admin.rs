//! Keys and environments: `POST/GET /v1/keys`, `DELETE /v1/keys/{id}`, `GET/POST
//! /v1/environments`, `PATCH /v1/environments/{name}`. Changes need an unscoped admin key and are
//! written with their admin-log record in one transaction. The last active admin key cannot be
//! revoked, so a registry can never lock out its operators.

use palisade_wire::error::ErrorCode;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get, patch};
use axum::Router;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::adminlog::{self, Entry};
use crate::app::{shown_once, App, Scope};
use crate::envs::{self, Environment};
use crate::error::{json_response, ok, ApiError};
use crate::extract::{Json, Path, ServiceKey};
use crate::keys::{self, Caller, Role};

#[derive(Deserialize)]
pub(crate) struct NewKeyBody {
    pub role: String,
    pub environment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvBody {
    name: Option<String>,
    feeds_from: Option<String>,
    soak_ms: Option<i64>,
    deploy_role: Option<String>,
    /// Milliseconds; `0` restores the default.
    event_retention_ms: Option<i64>,
    /// Each threshold: a number sets it, `null` (or a negative number) clears it.
    #[serde(default, deserialize_with = "some")]
    min_requests: Option<Option<i64>>,
    #[serde(default, deserialize_with = "some")]
    max_error_rate: Option<Option<f64>>,
    #[serde(default, deserialize_with = "some")]
    max_escalation_rate: Option<Option<f64>>,
    #[serde(default, deserialize_with = "some")]
    max_block_rate: Option<Option<f64>>,
}

/// A present field (`null` included) is `Some`; an absent one stays `None` (the default).
fn some<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl EnvBody {
    /// Apply the settings this body names to `env`, or say which value is wrong.
    fn apply(&self, env: &mut Environment) -> Result<(), ApiError> {
        if let Some(ms) = self.event_retention_ms {
            if ms < 0 {
                return Err(ApiError::BadRequest(
                    "event_retention_ms must be 0 (the default) or a positive number of milliseconds".to_owned(),
                ));
            }
            env.event_retention_ms = (ms > 0).then_some(ms);
        }
        if let Some(n) = self.min_requests {
            env.evidence.min_requests = n.filter(|n| *n >= 0);
        }
        for (name, value, slot) in [
            (
                "max_error_rate",
                self.max_error_rate,
                &mut env.evidence.max_error_rate,
            ),
            (
                "max_escalation_rate",
                self.max_escalation_rate,
                &mut env.evidence.max_escalation_rate,
            ),
            (
                "max_block_rate",
                self.max_block_rate,
                &mut env.evidence.max_block_rate,
            ),
        ] {
            if let Some(v) = value {
                if v.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                    return Err(ApiError::BadRequest(format!(
                        "{name} must be a fraction from 0 to 1 (0.05 is 5 %), or null to clear it"
                    )));
                }
                *slot = v;
            }
        }
        Ok(())
    }
}

/// Routes under `/v1/keys` and `/v1/environments`.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/environments", get(environments).post(new_environment))
        .route("/v1/environments/{name}", patch(change_environment))
        .route("/v1/keys", get(list_keys).post(new_key))
        .route("/v1/keys/{id}", delete(revoke))
}

type AppState = State<Arc<App>>;

async fn environments(State(app): AppState, _: ServiceKey) -> Result<Response, ApiError> {
    let list = envs::list(&mut *app.db.read().await?).await?;
    let list: Vec<_> = list.iter().map(Environment::to_json).collect();
    ok(&json!({ "environments": list }))
}

async fn new_environment(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Json(body): Json<EnvBody>,
) -> Result<Response, ApiError> {
    let action = "environment.create";
    app.require_role(&caller, Role::Admin, Scope::Global, action, None)
        .await?;
    let env = create_env(&app, &caller, body).await?;
    Ok(json_response(StatusCode::CREATED, &env))
}

async fn change_environment(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Path(name): Path<String>,
    Json(body): Json<EnvBody>,
) -> Result<Response, ApiError> {
    let action = "environment.update";
    app.require_role(&caller, Role::Admin, Scope::Global, action, None)
        .await?;
    ok(&update_env(&app, &caller, &name, body).await?)
}

async fn list_keys(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
) -> Result<Response, ApiError> {
    ok(&json!({ "keys": list_keys_for(&app, &caller).await? }))
}

/// Every key without its secret (unscoped admin only; a refusal is recorded).
pub(crate) async fn list_keys_for(app: &App, caller: &Caller) -> Result<Vec<Value>, ApiError> {
    app.require_role(caller, Role::Admin, Scope::Global, "key.list", None)
        .await?;
    Ok(keys::list(&mut *app.db.read().await?).await?)
}

async fn new_key(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Json(body): Json<NewKeyBody>,
) -> Result<Response, ApiError> {
    let key = create_key(&app, &caller, body).await?;
    Ok(json_response(StatusCode::CREATED, &key))
}

async fn revoke(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    ok(&revoke_key(&app, &caller, &id).await?)
}

async fn record(
    app: &App,
    caller: &Caller,
    action: &str,
    environment: Option<&str>,
    detail: Value,
    tx: &mut crate::db::Tx,
) -> Result<(), ApiError> {
    let entry = Entry {
        actor: &caller.key_id,
        action,
        outcome: "ok",
        environment,
        pack: None,
        detail,
    };
    adminlog::append(tx, app.now(), &entry).await?;
    Ok(())
}

async fn check_feeds_from(
    tx: &mut crate::db::Tx,
    from: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    if let Some(f) = from {
        if f == name {
            return Err(ApiError::BadRequest(
                "an environment cannot feed itself".to_owned(),
            ));
        }
        envs::require(tx, f).await?;
    }
    Ok(())
}

async fn create_env(app: &App, caller: &Caller, body: EnvBody) -> Result<Value, ApiError> {
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::BadRequest("`name` is required".to_owned()))?;
    if !envs::valid_name(&name) {
        return Err(ApiError::BadRequest(
            "environment names are 1-32 of a-z, 0-9 and -".to_owned(),
        ));
    }
    let mut env = Environment {
        name,
        feeds_from: body.feeds_from.clone(),
        soak_ms: body.soak_ms.unwrap_or(0).max(0),
        deploy_role: envs::parse_deploy_role(body.deploy_role.as_deref().unwrap_or("deployer"))?,
        event_retention_ms: None,
        evidence: envs::Evidence::default(),
    };
    body.apply(&mut env)?;
    let (_guard, mut tx) = app.db.begin_write().await?;
    if envs::get(&mut tx, &env.name).await?.is_some() {
        return Err(ApiError::conflict(
            ErrorCode::EnvironmentExists,
            format!("environment {} exists", env.name),
        ));
    }
    check_feeds_from(&mut tx, env.feeds_from.as_deref(), &env.name).await?;
    envs::insert(&mut tx, &env, app.now()).await?;
    record(
        app,
        caller,
        "environment.create",
        Some(&env.name),
        env.to_json(),
        &mut tx,
    )
    .await?;
    tx.commit().await?;
    Ok(env.to_json())
}

async fn update_env(
    app: &App,
    caller: &Caller,
    name: &str,
    body: EnvBody,
) -> Result<Value, ApiError> {
    let (_guard, mut tx) = app.db.begin_write().await?;
    let before = envs::require(&mut tx, name).await?;
    let mut env = before.clone();
    body.apply(&mut env)?;
    if let Some(s) = body.soak_ms {
        env.soak_ms = s.max(0);
    }
    if let Some(r) = body.deploy_role.as_deref() {
        env.deploy_role = envs::parse_deploy_role(r)?;
    }
    if let Some(f) = body.feeds_from {
        env.feeds_from = Some(f).filter(|f| !f.is_empty());
    }
    check_feeds_from(&mut tx, env.feeds_from.as_deref(), name).await?;
    envs::update(&mut tx, &env).await?;
    let detail = json!({ "before": before.to_json(), "after": env.to_json() });
    record(
        app,
        caller,
        "environment.update",
        Some(name),
        detail,
        &mut tx,
    )
    .await?;
    tx.commit().await?;
    Ok(env.to_json())
}

/// Create a key (unscoped admin only); the answer carries its secret, shown this once.
pub(crate) async fn create_key(
    app: &App,
    caller: &Caller,
    body: NewKeyBody,
) -> Result<Value, ApiError> {
    app.require_role(caller, Role::Admin, Scope::Global, "key.create", None)
        .await?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "role must be viewer, deployer, admin or gateway, not `{}`",
            body.role
        ))
    })?;
    if role == Role::Gateway && body.environment.is_none() {
        return Err(ApiError::BadRequest(
            "a gateway key needs an environment".to_owned(),
        ));
    }
    let key = keys::generate()?;
    let (_guard, mut tx) = app.db.begin_write().await?;
    if let Some(e) = &body.environment {
        envs::require(&mut tx, e).await?;
    }
    keys::insert(
        &mut tx,
        &key,
        role,
        body.environment.as_deref(),
        &caller.key_id,
        app.now(),
    )
    .await?;
    let detail = json!({ "id": key.id, "role": role.as_str(), "environment": body.environment });
    record(
        app,
        caller,
        "key.create",
        body.environment.as_deref(),
        detail,
        &mut tx,
    )
    .await?;
    tx.commit().await?;
    let mut out = shown_once(&key);
    out["role"] = json!(role.as_str());
    out["environment"] = json!(body.environment);
    Ok(out)
}

/// Revoke a key (unscoped admin only); never the last active admin key.
pub(crate) async fn revoke_key(app: &App, caller: &Caller, id: &str) -> Result<Value, ApiError> {
    app.require_role(caller, Role::Admin, Scope::Global, "key.revoke", None)
        .await?;
    let (_guard, mut tx) = app.db.begin_write().await?;
    let role = keys::role_of(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::UnknownKey, format!("no active key {id}")))?;
    if role == Role::Admin && keys::other_admins(&mut tx, id).await? == 0 {
        return Err(ApiError::conflict(
            ErrorCode::LastAdminKey,
            "the last admin key cannot be revoked",
        ));
    }
    keys::revoke(&mut tx, id, app.now()).await?;
    record(
        app,
        caller,
        "key.revoke",
        None,
        json!({ "id": id, "role": role.as_str() }),
        &mut tx,
    )
    .await?;
    tx.commit().await?;
    Ok(json!({ "id": id, "revoked": true }))
}
