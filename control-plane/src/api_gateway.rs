//! The gateway protocol: register, poll the desired version (ETag and long poll), report.
//!
//! `GET /v1/gateways/desired?environment=E&pack=P&wait=S` with `If-None-Match: "<hash>"`:
//! 200 with `{pack, version, hash, yaml}` and `ETag: "<hash>"` when the desired hash differs from
//! the one the gateway has; otherwise the request is held up to `wait` seconds (capped at 30)
//! until the pointer moves, then answered, or 304 when it did not. With nothing deployed the
//! answer (after the same wait) is 404 `NO_DESIRED_VERSION`. While waiting the pointer is re-read
//! every second as well as on this process's wake-ups, so a move made by another control-plane
//! process on the same database is seen within a second.

use palisade_wire::error::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::time::{timeout, Instant};

use crate::app::App;
use crate::error::{json_response, ok, ApiError};
use crate::extract::{AnyKey, Json, Path, Query};
use crate::fleet::{self, check_gateway_key, Report};
use crate::pointers;
use crate::registry;
use palisade_wire::gateway::Register;

/// The longest a poll is held.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);

/// Routes under `/v1/gateways/`.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/gateways/prune", post(prune))
        .route("/v1/gateways/register", post(register))
        .route("/v1/gateways/desired", get(poll))
        .route("/v1/gateways/{id}/report", post(report))
}

async fn prune(State(app): State<Arc<App>>, AnyKey(caller): AnyKey) -> Result<Response, ApiError> {
    ok(&fleet::prune(&app, &caller).await?)
}

async fn register(
    State(app): State<Arc<App>>,
    AnyKey(caller): AnyKey,
    Json(body): Json<Register>,
) -> Result<Response, ApiError> {
    ok(&fleet::register(&app, &caller, &body.instance).await?)
}

#[derive(Deserialize)]
struct PollQuery {
    environment: Option<String>,
    pack: Option<String>,
    wait: Option<String>,
}

async fn poll(
    State(app): State<Arc<App>>,
    AnyKey(caller): AnyKey,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let env = q
        .environment
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("`environment` is required".to_owned()))?;
    let pack = q
        .pack
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("`pack` is required".to_owned()))?;
    check_gateway_key(&caller, env)?;
    let wait = q
        .wait
        .and_then(|w| w.parse::<f64>().ok())
        .filter(|w| w.is_finite() && *w > 0.0)
        .map_or(Duration::ZERO, |w| Duration::from_secs_f64(w).min(MAX_WAIT));
    let known = headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(etag_value);
    desired(&app, env, pack, known.as_deref(), wait).await
}

async fn report(
    State(app): State<Arc<App>>,
    AnyKey(caller): AnyKey,
    Path(id): Path<String>,
    Json(body): Json<Report>,
) -> Result<Response, ApiError> {
    fleet::report(&app, &caller, &id, &body).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `"abc"`, `W/"abc"` or `abc` → `abc`.
fn etag_value(v: &str) -> String {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

async fn desired(
    app: &App,
    env: &str,
    pack: &str,
    known: Option<&str>,
    wait: Duration,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + wait;
    let mut rx = app.watch.subscribe(env, pack).await;
    loop {
        let current = pointers::current(&mut *app.db.read().await?, env, pack).await?;
        let differs = current.as_ref().map(|p| p.hash.as_str()) != known;
        let now = Instant::now();
        if differs || now >= deadline {
            return match current {
                None => Err(ApiError::not_found(
                    ErrorCode::NoDesiredVersion,
                    format!("nothing is deployed for {pack} in {env}"),
                )),
                Some(p) if !differs => {
                    let mut resp = StatusCode::NOT_MODIFIED.into_response();
                    set_etag(&mut resp, &p.hash);
                    Ok(resp)
                }
                Some(p) => {
                    let v = registry::require(&mut *app.db.read().await?, pack, &p.version).await?;
                    let body = json!({ "pack": pack, "version": v.version, "hash": v.hash, "yaml": v.yaml });
                    let mut resp = json_response(StatusCode::OK, &body);
                    set_etag(&mut resp, &v.hash);
                    Ok(resp)
                }
            };
        }
        let slice = (deadline - now).min(Duration::from_secs(1));
        // A wake-up, a closed channel or the slice ending all lead to a fresh read.
        let _woken = timeout(slice, rx.changed()).await;
    }
}

fn set_etag(resp: &mut Response, hash: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
}
