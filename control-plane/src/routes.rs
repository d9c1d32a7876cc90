//! The route table: method and path segments → handler. Written by hand (no framework) to keep
//! the dependency graph small; each arm authenticates and then calls one service function.
//!
//! Reads (packs, versions, diff, status, history, environments) need any service key; changes
//! check their role in the service function so that refusals are recorded. Key and environment
//! management is admin-only and unscoped. Gateway routes are in `api_gateway`.

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::adminlog;
use crate::api_admin;
use crate::api_gateway;
use crate::app::App;
use crate::deploy;
use crate::error::{json_response, ApiError};
use crate::import;
use crate::keys::{Caller, Role};
use crate::pointers;
use crate::promote;
use crate::registry;
use crate::server::{Req, Resp};

fn ok(body: &Value) -> Result<Resp, ApiError> {
    Ok(json_response(StatusCode::OK, body))
}

/// A service key of at least `viewer` (gateway keys cannot read the registry).
pub(crate) async fn viewer(app: &App, req: &Req) -> Result<Caller, ApiError> {
    let caller = app.authenticate(req.header("authorization")).await?;
    if caller.role == Role::Gateway {
        return Err(ApiError::Forbidden(
            "gateway keys can only register, poll, report and send events".to_owned(),
        ));
    }
    Ok(caller)
}

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

/// Route one request.
pub(crate) async fn dispatch(app: &App, req: &Req) -> Result<Resp, ApiError> {
    // Split first, then decode: a percent-encoded `/` inside a gateway id stays in its segment.
    let decoded: Vec<String> = req
        .path
        .trim_matches('/')
        .split('/')
        .map(|s| crate::server::percent_decode(s, false))
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let m = &req.method;
    match segments.as_slice() {
        ["healthz"] if m == Method::GET => ok(&json!({ "status": "ok" })),
        ["metrics"] if m == Method::GET => crate::api_events::metrics(app).await,
        ["v1", "gateways", ..] => api_gateway::dispatch(app, req, &segments[2..]).await,
        ["v1", "events", ..] | ["v1", "escalations", ..] => {
            crate::api_events::dispatch(app, req, &segments[1..]).await
        }
        ["v1", "keys", ..] | ["v1", "environments", ..] => {
            api_admin::dispatch(app, req, &segments[1..]).await
        }
        ["v1", "packs"] if m == Method::GET => {
            viewer(app, req).await?;
            ok(&json!({ "packs": registry::packs(&mut *app.db.read().await?).await? }))
        }
        ["v1", "packs"] if m == Method::POST => {
            let caller = app.authenticate(req.header("authorization")).await?;
            let body: PushBody = req.json()?;
            check_note(&body.note)?;
            let out = registry::push(app, &caller, &body.yaml, &body.note).await?;
            let status = if out["status"] == "created" {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(status, &out))
        }
        ["v1", "packs", pack, "versions"] if m == Method::GET => {
            viewer(app, req).await?;
            let list = registry::versions(&mut *app.db.read().await?, pack).await?;
            if list.is_empty() {
                return Err(ApiError::not_found(
                    "UNKNOWN_PACK",
                    format!("no pack `{pack}`"),
                ));
            }
            ok(
                &json!({ "pack": pack, "versions": list.iter().map(registry::StoredVersion::summary).collect::<Vec<_>>() }),
            )
        }
        ["v1", "packs", pack, "versions", version] if m == Method::GET => {
            viewer(app, req).await?;
            let v = registry::require(&mut *app.db.read().await?, pack, version).await?;
            let mut out = v.summary();
            out["yaml"] = json!(v.yaml);
            ok(&out)
        }
        ["v1", "packs", pack, "diff"] if m == Method::GET => {
            viewer(app, req).await?;
            ok(&diff(app, req, pack).await?)
        }
        ["v1", "deploy"] if m == Method::POST => {
            let caller = app.authenticate(req.header("authorization")).await?;
            let b: DeployBody = req.json()?;
            check_note(&b.note)?;
            ok(&deploy::deploy(app, &caller, &b.pack, &b.version, &b.environment, &b.note).await?)
        }
        ["v1", "promote"] if m == Method::POST => {
            let caller = app.authenticate(req.header("authorization")).await?;
            let b: PromoteBody = req.json()?;
            check_note(&b.note)?;
            ok(&promote::promote(app, &caller, &b.pack, &b.from, &b.to, &b.note).await?)
        }
        ["v1", "rollback"] if m == Method::POST => {
            let caller = app.authenticate(req.header("authorization")).await?;
            let b: RollbackBody = req.json()?;
            check_note(&b.note)?;
            ok(&deploy::rollback(
                app,
                &caller,
                &b.pack,
                &b.environment,
                b.to.as_deref(),
                &b.note,
            )
            .await?)
        }
        ["v1", "export"] if m == Method::GET => {
            viewer(app, req).await?;
            // The origin is the URL the caller reached this control plane by.
            let origin = req
                .header("host")
                .map_or_else(|| "unknown".to_owned(), |h| format!("http://{h}"));
            let manifest = import::export(app, required(req, "environment")?, origin).await?;
            ok(&json!(manifest))
        }
        ["v1", "import"] if m == Method::POST => {
            let caller = viewer(app, req).await?;
            let body: import::ImportRequest = req.json()?;
            ok(&import::import(app, &caller, &body).await?)
        }
        ["v1", "deployments"] if m == Method::GET => {
            viewer(app, req).await?;
            let (env, pack) = (required(req, "environment")?, required(req, "pack")?);
            let hist = pointers::history(&mut *app.db.read().await?, env, pack).await?;
            ok(
                &json!({ "deployments": hist.iter().map(pointers::Pointer::to_json).collect::<Vec<_>>() }),
            )
        }
        ["v1", "status"] if m == Method::GET => {
            viewer(app, req).await?;
            ok(&crate::fleet::status(app, req.query("environment")).await?)
        }
        ["v1", "history"] if m == Method::GET => {
            viewer(app, req).await?;
            let limit = req
                .query("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(1000_i64)
                .clamp(1, 10_000);
            let mut conn = app.db.read().await?;
            let records = adminlog::list(
                &mut conn,
                req.query("environment"),
                req.query("pack"),
                limit,
            )
            .await?;
            ok(&json!({ "records": records }))
        }
        ["v1", "history", "verify"] if m == Method::GET => {
            viewer(app, req).await?;
            ok(&json!(adminlog::verify(&mut *app.db.read().await?).await?))
        }
        _ => Err(ApiError::not_found(
            "NOT_FOUND",
            format!("no route {} {}", req.method, req.path),
        )),
    }
}

fn required<'a>(req: &'a Req, key: &str) -> Result<&'a str, ApiError> {
    req.query(key)
        .ok_or_else(|| ApiError::BadRequest(format!("query parameter `{key}` is required")))
}

/// `GET /v1/packs/{pack}/diff?from=V1&to=V2[&environment=E]` or `?from_env=A&to_env=B`.
async fn diff(app: &App, req: &Req, pack: &str) -> Result<Value, ApiError> {
    let mut conn = app.db.read().await?;
    if let (Some(a), Some(b)) = (req.query("from_env"), req.query("to_env")) {
        let old = running(&mut conn, a, pack).await?;
        let new = running(&mut conn, b, pack).await?;
        return registry::diff(&old, Some(a), &new, Some(b));
    }
    let (from, to) = (required(req, "from")?, required(req, "to")?);
    let old = registry::require(&mut conn, pack, from).await?;
    let new = registry::require(&mut conn, pack, to).await?;
    let env = req.query("environment");
    registry::diff(&old, env, &new, env)
}

/// The version an environment's pointer names.
async fn running(
    conn: &mut sqlx::AnyConnection,
    env: &str,
    pack: &str,
) -> Result<registry::StoredVersion, ApiError> {
    let p = pointers::current(conn, env, pack).await?.ok_or_else(|| {
        ApiError::not_found(
            "NO_DESIRED_VERSION",
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
            code: "NOTE_TOO_LONG",
            message: format!(
                "the change note is {} bytes; at most {MAX_NOTE_BYTES} are accepted",
                note.len()
            ),
        });
    }
    Ok(())
}
