//! The gateway protocol: register, poll the desired version (ETag and long poll), report.
//!
//! `GET /v1/gateways/desired?environment=E&pack=P&wait=S` with `If-None-Match: "<hash>"`:
//! 200 with `{pack, version, hash, yaml}` and `ETag: "<hash>"` when the desired hash differs from
//! the one the gateway has; otherwise the request is held up to `wait` seconds (capped at 30)
//! until the pointer moves, then answered, or 304 when it did not. With nothing deployed the
//! answer (after the same wait) is 404 `NO_DESIRED_VERSION`. While waiting the pointer is re-read
//! every second as well as on this process's wake-ups, so a move made by another control-plane
//! process on the same database is seen within a second.

use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::time::{timeout, Instant};

use crate::app::App;
use crate::error::{json_response, ApiError};
use crate::fleet::{self, check_gateway_key, Instance, Report};
use crate::pointers;
use crate::registry;
use crate::server::{Req, Resp};

/// The longest a poll is held.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct RegisterBody {
    instance: Instance,
}

/// Routes under `/v1/gateways/`.
pub(crate) async fn dispatch(app: &App, req: &Req, rest: &[&str]) -> Result<Resp, ApiError> {
    let caller = app.authenticate(req.header("authorization")).await?;
    match (rest, &req.method) {
        (["prune"], &Method::POST) => Ok(json_response(
            StatusCode::OK,
            &fleet::prune(app, &caller).await?,
        )),
        (["register"], &Method::POST) => {
            let body: RegisterBody = req.json()?;
            let out = fleet::register(app, &caller, &body.instance).await?;
            Ok(json_response(StatusCode::OK, &out))
        }
        (["desired"], &Method::GET) => {
            let env = req
                .query("environment")
                .ok_or_else(|| ApiError::BadRequest("`environment` is required".to_owned()))?;
            let pack = req
                .query("pack")
                .ok_or_else(|| ApiError::BadRequest("`pack` is required".to_owned()))?;
            check_gateway_key(&caller, env)?;
            let wait = req
                .query("wait")
                .and_then(|w| w.parse::<f64>().ok())
                .filter(|w| w.is_finite() && *w > 0.0)
                .map_or(Duration::ZERO, |w| Duration::from_secs_f64(w).min(MAX_WAIT));
            let known = req.header("if-none-match").map(etag_value);
            desired(app, env, pack, known.as_deref(), wait).await
        }
        ([id, "report"], &Method::POST) => {
            let body: Report = req.json()?;
            fleet::report(app, &caller, id, &body).await?;
            let mut resp = json_response(StatusCode::NO_CONTENT, &json!(null));
            *resp.body_mut() = http_body_util::Full::default();
            resp.headers_mut().remove(http::header::CONTENT_TYPE);
            Ok(resp)
        }
        _ => Err(ApiError::not_found(
            "NOT_FOUND",
            format!("no route {} {}", req.method, req.path),
        )),
    }
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
) -> Result<Resp, ApiError> {
    let deadline = Instant::now() + wait;
    let mut rx = app.watch.subscribe(env, pack).await;
    loop {
        let current = pointers::current(&mut *app.db.read().await?, env, pack).await?;
        let differs = current.as_ref().map(|p| p.hash.as_str()) != known;
        let now = Instant::now();
        if differs || now >= deadline {
            return match current {
                None => Err(ApiError::not_found(
                    "NO_DESIRED_VERSION",
                    format!("nothing is deployed for {pack} in {env}"),
                )),
                Some(p) if !differs => {
                    let mut resp = json_response(StatusCode::NOT_MODIFIED, &json!(null));
                    *resp.body_mut() = http_body_util::Full::default();
                    resp.headers_mut().remove(http::header::CONTENT_TYPE);
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

fn set_etag(resp: &mut Resp, hash: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
}
