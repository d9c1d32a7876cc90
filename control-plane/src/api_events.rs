//! The runtime view over HTTP: decision events in (`POST /v1/events`, gateway keys) and out
//! (`GET /v1/events`, `GET /v1/events/summary`), the escalation queue (`GET /v1/escalations`,
//! `GET /v1/escalations/{id}`, `POST /v1/escalations/{id}/ack|resolve`), and `GET /metrics` for
//! Prometheus.
//!
//! Time windows take `since` / `until` as a duration back from now (`15m`, `2h`) or an RFC 3339
//! time; a key scoped to one environment reads only that environment's events and escalations.

use std::io::Read as _;
use std::time::{Duration, UNIX_EPOCH};

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::error::{json_response, ApiError};
use crate::escalations::{self, Step};
use crate::events::{self, Cursor, Filter};
use crate::keys::{Caller, Role};
use crate::routes::viewer;
use crate::server::{Req, Resp};

/// Largest batch after decompression (a bound on what a small gzip body may expand to).
const MAX_DECOMPRESSED: u64 = 64 << 20;
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

fn ok(body: &Value) -> Result<Resp, ApiError> {
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    assignee: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    resolution: String,
    #[serde(default)]
    note: String,
}

/// The environment a read is about: the one asked for, which a scoped key must cover, or the
/// key's own.
fn scoped_environment<'a>(
    caller: &'a Caller,
    asked: Option<&'a str>,
) -> Result<Option<&'a str>, ApiError> {
    match (asked, caller.environment.as_deref()) {
        (Some(a), Some(own)) if a != own => Err(ApiError::Forbidden(format!(
            "this key is limited to environment {own}"
        ))),
        (Some(a), _) => Ok(Some(a)),
        (None, own) => Ok(own),
    }
}

/// `15m`, `2h` back from `now`, or an RFC 3339 time; Unix milliseconds.
fn instant(name: &str, value: &str, now: i64) -> Result<i64, ApiError> {
    if let Ok(d) = humantime::parse_duration(value) {
        return Ok(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        return Ok(i64::try_from(ms).unwrap_or(i64::MAX));
    }
    Err(ApiError::BadRequest(format!(
        "`{name}` `{value}` is neither a duration back from now (15m, 2h) nor an RFC 3339 time"
    )))
}

fn int(req: &Req, name: &str) -> Result<Option<i64>, ApiError> {
    req.query(name)
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::BadRequest(format!("`{name}` must be an integer, not `{v}`"))
            })
        })
        .transpose()
}

/// Routes under `/v1/events` and `/v1/escalations` (`rest` starts after `v1`).
pub(crate) async fn dispatch(app: &App, req: &Req, rest: &[&str]) -> Result<Resp, ApiError> {
    let m = &req.method;
    match rest {
        ["events"] if m == Method::POST => ingest(app, req).await,
        ["events"] if m == Method::GET => {
            let caller = viewer(app, req).await?;
            list_events(app, req, &caller).await
        }
        ["events", "summary"] if m == Method::GET => {
            let caller = viewer(app, req).await?;
            summary(app, req, &caller).await
        }
        ["escalations"] if m == Method::GET => {
            let caller = viewer(app, req).await?;
            let env = scoped_environment(&caller, req.query("environment"))?;
            let limit = int(req, "limit")?
                .unwrap_or(DEFAULT_PAGE)
                .clamp(1, MAX_PAGE);
            let list =
                escalations::list(&mut *app.db.read().await?, env, req.query("state"), limit)
                    .await?;
            ok(&json!({ "escalations": list }))
        }
        ["escalations", id] if m == Method::GET => {
            let caller = viewer(app, req).await?;
            let out = escalations::show(&mut *app.db.read().await?, id).await?;
            scoped_environment(&caller, out["environment"].as_str())?;
            ok(&out)
        }
        ["escalations", id, "ack"] if m == Method::POST => {
            let caller = viewer(app, req).await?;
            let body: AckBody = if req.body.is_empty() {
                AckBody::default()
            } else {
                req.json()?
            };
            let step = Step::Acknowledge {
                assignee: body.assignee,
            };
            ok(&escalations::act(app, &caller, id, step).await?)
        }
        ["escalations", id, "resolve"] if m == Method::POST => {
            let caller = viewer(app, req).await?;
            let body: ResolveBody = req.json()?;
            let step = Step::Resolve {
                resolution: body.resolution,
                note: body.note,
            };
            ok(&escalations::act(app, &caller, id, step).await?)
        }
        _ => Err(ApiError::not_found(
            "NOT_FOUND",
            format!("no route {} {}", req.method, req.path),
        )),
    }
}

/// The request body, gunzipped when it says so, within [`MAX_DECOMPRESSED`].
fn body_bytes(req: &Req) -> Result<std::borrow::Cow<'_, [u8]>, ApiError> {
    match req.header("content-encoding") {
        None | Some("identity") => Ok(std::borrow::Cow::Borrowed(&req.body)),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&req.body[..])
                .take(MAX_DECOMPRESSED + 1)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::BadRequest(format!("the gzip body does not decode: {e}")))?;
            if out.len() as u64 > MAX_DECOMPRESSED {
                return Err(ApiError::BodyTooLarge(
                    usize::try_from(MAX_DECOMPRESSED).unwrap_or(usize::MAX),
                ));
            }
            Ok(std::borrow::Cow::Owned(out))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "content-encoding `{other}` is not accepted; send gzip or identity"
        ))),
    }
}

async fn ingest(app: &App, req: &Req) -> Result<Resp, ApiError> {
    let caller = app.authenticate(req.header("authorization")).await?;
    if caller.role != Role::Gateway {
        return Err(ApiError::Forbidden(
            "only gateway keys send decision events".to_owned(),
        ));
    }
    let body = body_bytes(req)?;
    let batch = match events::parse_batch(&body, caller.environment.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            app.metrics
                .batches_refused
                .with_label_values(&[e.code()])
                .inc();
            if e.status() == StatusCode::FORBIDDEN {
                tracing::warn!(key = %caller.key_id, error = %e, "event batch for another environment refused");
            }
            return Err(e);
        }
    };
    let out = {
        let _ingest = app.ingest_lock.lock().await;
        // Read inside the lock: receive times then grow in commit order, which `--follow` reads by.
        let now = app.now();
        let mut tx = app.db.pool().begin().await?;
        let out =
            events::ingest(&mut tx, &batch, now, events::Params::of(app.db.backend())).await?;
        tx.commit().await?;
        out
    };
    app.metrics.ingested(&out);
    ok(&json!(out))
}

fn filter(req: &Req, caller: &Caller, now: i64) -> Result<Filter, ApiError> {
    let text = |k: &str| req.query(k).map(str::to_owned);
    let outcome = text("outcome");
    if let Some(o) = &outcome {
        if !events::OUTCOMES.contains(&o.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "outcome `{o}` is not one of {}",
                events::OUTCOMES.join(", ")
            )));
        }
    }
    Ok(Filter {
        environment: scoped_environment(caller, req.query("environment"))?.map(str::to_owned),
        pack: text("pack"),
        version: text("version"),
        outcome,
        entity: text("entity"),
        caller: text("caller"),
        team: text("team"),
        model: text("model"),
        since_ms: req
            .query("since")
            .map(|v| instant("since", v, now))
            .transpose()?,
        until_ms: req
            .query("until")
            .map(|v| instant("until", v, now))
            .transpose()?,
        received_after: req
            .query("received_after")
            .map(received_cursor)
            .transpose()?,
    })
}

/// `MS.ID` or `MS.` (from that millisecond on).
fn received_cursor(s: &str) -> Result<(i64, String), ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "`received_after` `{s}` must be MILLISECONDS.REQUEST_ID (the id may be empty)"
        ))
    };
    let (ms, id) = s.split_once('.').ok_or_else(bad)?;
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok((ms.parse().map_err(|_| bad())?, id.to_owned()))
}

async fn list_events(app: &App, req: &Req, caller: &Caller) -> Result<Resp, ApiError> {
    let now = app.now();
    let filter = filter(req, caller, now)?;
    let limit = int(req, "limit")?
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, MAX_PAGE);
    let cursor = req.query("cursor").map(Cursor::decode).transpose()?;
    let (list, next) =
        events::list(&mut *app.db.read().await?, &filter, cursor.as_ref(), limit).await?;
    ok(&json!({
        "events": list,
        "next_cursor": next.map(|c| c.encode()),
        "now_ms": now,
    }))
}

async fn summary(app: &App, req: &Req, caller: &Caller) -> Result<Resp, ApiError> {
    let now = app.now();
    let env = scoped_environment(caller, req.query("environment"))?.ok_or_else(|| {
        ApiError::BadRequest("query parameter `environment` is required".to_owned())
    })?;
    let since = instant("since", req.query("since").unwrap_or("1h"), now)?;
    let until = req
        .query("until")
        .map(|v| instant("until", v, now))
        .transpose()?
        .unwrap_or(now + 1);
    let by = req.query("by").unwrap_or("version");
    if !matches!(by, "version" | "total") {
        return Err(ApiError::BadRequest(format!(
            "`by` must be version or total, not `{by}`"
        )));
    }
    let versions = events::summary(
        &mut *app.db.read().await?,
        env,
        req.query("pack"),
        None,
        since,
        until,
    )
    .await?;
    let rows: Vec<Value> = if by == "total" {
        vec![events::VersionCounts::total(&versions).to_json()]
    } else {
        versions
            .iter()
            .map(events::VersionCounts::to_json)
            .collect()
    };
    ok(&json!({
        "environment": env,
        "since": crate::clock::rfc3339(since),
        "until": crate::clock::rfc3339(until),
        "by": by,
        "rows": rows,
    }))
}

/// `GET /metrics`: the control plane's own counters and the escalation queue by environment
/// and version (read from the database at scrape time).
pub(crate) async fn metrics(app: &App) -> Result<Resp, ApiError> {
    let queue = escalations::queue(&mut *app.db.read().await?).await?;
    let now = app.now();
    let text = app.metrics.render(&queue, now);
    let mut resp = json_response(StatusCode::OK, &Value::Null);
    *resp.body_mut() = http_body_util::Full::new(bytes::Bytes::from(text));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(resp)
}
