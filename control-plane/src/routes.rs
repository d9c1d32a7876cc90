//! The route table: every path and method of the control plane's API, on axum.
//!
//! Handlers take their input through the extractors in [`crate::extract`]: a handler that
//! takes [`ServiceKey`] or [`AnyKey`] cannot run unauthenticated, and every refusal (unknown
//! route, wrong method, bad query, bad body) is an [`ApiError`] in the one error shape. Reads
//! (packs, versions, diff, status, history, environments) need any service key; changes check
//! their role in the service function so that refusals are recorded in the admin log. Key and
//! environment routes are in `api_admin`, gateway routes in `api_gateway`, events and
//! escalations in `api_events`, the console's pages in `console`. Changes take [`AnyKey`] so that
//! a gateway key's attempt is refused in the service function and recorded like any other.

use palisade_wire::error::ErrorCode;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http::{Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::json;

use crate::adminlog;
use crate::app::App;
use crate::deploy;
use crate::error::{json_response, ok, ApiError};
use crate::extract::{AnyKey, Json, Path, Query, ServiceKey};
use crate::import;
use crate::pointers;
use crate::promote;
use crate::registry;

/// The whole HTTP face: API, console and the refusals for everything else.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { ok(&json!({ "status": "ok" })) }))
        .route("/v1/packs", get(packs).post(push))
        .route("/v1/packs/{pack}/versions", get(versions))
        .route("/v1/packs/{pack}/versions/{version}", get(version))
        .route("/v1/packs/{pack}/diff", get(diff))
        .route("/v1/deploy", post(deploy))
        .route("/v1/promote", post(promote))
        .route("/v1/promote/gates", get(promote_gates))
        .route("/v1/rollback", post(rollback))
        .route("/v1/export", get(export))
        .route("/v1/import", post(import))
        .route("/v1/deployments", get(deployments))
        .route("/v1/status", get(status))
        .route("/v1/history", get(history))
        .route("/v1/history/verify", get(verify))
        .merge(crate::api_gateway::routes())
        .merge(crate::api_events::routes())
        .merge(crate::api_admin::routes())
        .merge(crate::console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(crate::server::MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(
        ErrorCode::NotFound,
        format!("no route {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} does not take {method}", uri.path()))
}

type AppState = State<Arc<App>>;

#[derive(Deserialize)]
struct PushBody {
    yaml: String,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
struct DeployBody {
    pack: String,
    version: String,
    environment: String,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
struct PromoteBody {
    pack: String,
    from: String,
    to: String,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
struct RollbackBody {
    pack: String,
    environment: String,
    to: Option<String>,
    #[serde(default)]
    note: String,
}

async fn packs(State(app): AppState, _: ServiceKey) -> Result<Response, ApiError> {
    ok(&json!({ "packs": registry::packs(&mut *app.db.read().await?).await? }))
}

async fn push(
    State(app): AppState,
    AnyKey(caller): AnyKey,
    Json(body): Json<PushBody>,
) -> Result<Response, ApiError> {
    check_note(&body.note)?;
    let out = registry::push(&app, &caller, &body.yaml, &body.note).await?;
    let status = if out["status"] == "created" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &out))
}

async fn versions(
    State(app): AppState,
    _: ServiceKey,
    Path(pack): Path<String>,
) -> Result<Response, ApiError> {
    let list = registry::versions(&mut *app.db.read().await?, &pack).await?;
    if list.is_empty() {
        return Err(ApiError::not_found(
            ErrorCode::UnknownPack,
            format!("no pack `{pack}`"),
        ));
    }
    let summaries: Vec<_> = list.iter().map(registry::StoredVersion::summary).collect();
    ok(&json!({ "pack": pack, "versions": summaries }))
}

async fn version(
    State(app): AppState,
    _: ServiceKey,
    Path((pack, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let v = registry::require(&mut *app.db.read().await?, &pack, &version).await?;
    let mut out = v.summary();
    out["yaml"] = json!(v.yaml);
    ok(&out)
}

async fn deploy(
    State(app): AppState,
    AnyKey(caller): AnyKey,
    Json(b): Json<DeployBody>,
) -> Result<Response, ApiError> {
    check_note(&b.note)?;
    ok(&deploy::deploy(&app, &caller, &b.pack, &b.version, &b.environment, &b.note).await?)
}

async fn promote(
    State(app): AppState,
    AnyKey(caller): AnyKey,
    Json(b): Json<PromoteBody>,
) -> Result<Response, ApiError> {
    check_note(&b.note)?;
    ok(&promote::promote(&app, &caller, &b.pack, &b.from, &b.to, &b.note).await?)
}

#[derive(Deserialize)]
struct GatesQuery {
    pack: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `GET /v1/promote/gates?pack=P&from=A&to=B`: every gate of that promotion for this key,
/// evaluated now; nothing moves and nothing is recorded.
async fn promote_gates(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Query(q): Query<GatesQuery>,
) -> Result<Response, ApiError> {
    let pack = required(q.pack.as_deref(), "pack")?;
    let from = required(q.from.as_deref(), "from")?;
    let to = required(q.to.as_deref(), "to")?;
    let plan = promote::plan(&app, &caller, pack, from, to).await?;
    ok(&json!({
        "pack": pack, "from": from, "to": to,
        "version": plan.version.map(|v| v.version),
        "all_passed": deploy::all_passed(&plan.gates),
        "gates": plan.gates,
    }))
}

async fn rollback(
    State(app): AppState,
    AnyKey(caller): AnyKey,
    Json(b): Json<RollbackBody>,
) -> Result<Response, ApiError> {
    check_note(&b.note)?;
    let to = b.to.as_deref();
    ok(&deploy::rollback(&app, &caller, &b.pack, &b.environment, to, &b.note).await?)
}

#[derive(Deserialize)]
struct EnvironmentQuery {
    environment: Option<String>,
    pack: Option<String>,
}

impl EnvironmentQuery {
    fn environment(&self) -> Result<&str, ApiError> {
        required(self.environment.as_deref(), "environment")
    }

    fn pack(&self) -> Result<&str, ApiError> {
        required(self.pack.as_deref(), "pack")
    }
}

fn required<'a>(value: Option<&'a str>, key: &str) -> Result<&'a str, ApiError> {
    value.ok_or_else(|| ApiError::BadRequest(format!("query parameter `{key}` is required")))
}

async fn export(
    State(app): AppState,
    _: ServiceKey,
    Query(q): Query<EnvironmentQuery>,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    // The origin is the URL the caller reached this control plane by.
    let origin = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| "unknown".to_owned(), |h| format!("http://{h}"));
    let manifest = import::export(&app, q.environment()?, origin).await?;
    ok(&json!(manifest))
}

async fn import(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Json(body): Json<import::ImportRequest>,
) -> Result<Response, ApiError> {
    ok(&import::import(&app, &caller, &body).await?)
}

async fn deployments(
    State(app): AppState,
    _: ServiceKey,
    Query(q): Query<EnvironmentQuery>,
) -> Result<Response, ApiError> {
    let hist = pointers::history(&mut *app.db.read().await?, q.environment()?, q.pack()?).await?;
    let list: Vec<_> = hist.iter().map(pointers::Pointer::to_json).collect();
    ok(&json!({ "deployments": list }))
}

async fn status(
    State(app): AppState,
    _: ServiceKey,
    Query(q): Query<EnvironmentQuery>,
) -> Result<Response, ApiError> {
    ok(&crate::fleet::status(&app, q.environment.as_deref()).await?)
}

#[derive(Deserialize)]
struct HistoryQuery {
    environment: Option<String>,
    pack: Option<String>,
    limit: Option<String>,
}

async fn history(
    State(app): AppState,
    _: ServiceKey,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = q
        .limit
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000_i64)
        .clamp(1, 10_000);
    let mut conn = app.db.read().await?;
    let env = q.environment.as_deref();
    let records = adminlog::list(&mut conn, env, q.pack.as_deref(), limit).await?;
    ok(&json!({ "records": records }))
}

async fn verify(State(app): AppState, _: ServiceKey) -> Result<Response, ApiError> {
    ok(&json!(adminlog::verify(&mut *app.db.read().await?).await?))
}

#[derive(Deserialize)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
    environment: Option<String>,
    from_env: Option<String>,
    to_env: Option<String>,
}

/// `GET /v1/packs/{pack}/diff?from=V1&to=V2[&environment=E]` or `?from_env=A&to_env=B`.
async fn diff(
    State(app): AppState,
    _: ServiceKey,
    Path(pack): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Result<Response, ApiError> {
    let mut conn = app.db.read().await?;
    if let (Some(a), Some(b)) = (q.from_env.as_deref(), q.to_env.as_deref()) {
        let old = running(&mut conn, a, &pack).await?;
        let new = running(&mut conn, b, &pack).await?;
        return ok(&registry::diff(&old, Some(a), &new, Some(b))?);
    }
    let from = required(q.from.as_deref(), "from")?;
    let to = required(q.to.as_deref(), "to")?;
    let old = registry::require(&mut conn, &pack, from).await?;
    let new = registry::require(&mut conn, &pack, to).await?;
    let env = q.environment.as_deref();
    ok(&registry::diff(&old, env, &new, env)?)
}

/// The version an environment's pointer names, or 404 `NO_DESIRED_VERSION`.
pub(crate) async fn running(
    conn: &mut sqlx::AnyConnection,
    env: &str,
    pack: &str,
) -> Result<registry::StoredVersion, ApiError> {
    let p = pointers::current(conn, env, pack).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::NoDesiredVersion,
            format!("{env} runs no version of {pack}"),
        )
    })?;
    registry::require(conn, pack, &p.version).await
}

/// The longest change note accepted, in bytes: a paragraph, not a document.
pub(crate) const MAX_NOTE_BYTES: usize = 4096;

/// Refuse a change note over [`MAX_NOTE_BYTES`] (413 `NOTE_TOO_LONG`).
pub(crate) fn check_note(note: &str) -> Result<(), ApiError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(ApiError::TooLong {
            code: ErrorCode::NoteTooLong,
            message: format!(
                "the change note is {} bytes; at most {MAX_NOTE_BYTES} are accepted",
                note.len()
            ),
        });
    }
    Ok(())
}
