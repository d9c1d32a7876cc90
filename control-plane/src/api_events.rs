//! The runtime view over HTTP: decision events in (`POST /v1/events`, gateway keys) and out
//! (`GET /v1/events`, `GET /v1/events/summary`), the escalation queue (`GET /v1/escalations`,
//! `GET /v1/escalations/{id}`, `POST /v1/escalations/{id}/ack|resolve`), and `GET /metrics` for
//! Prometheus.
//!
//! Time windows take `since` / `until` as a duration back from now (`15m`, `2h`) or an RFC 3339
//! time; a key scoped to one environment reads only that environment's events and escalations.

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::error::{ok, ApiError};
use crate::escalations::{self, Step};
use crate::events::{self, Cursor, Filter};
use crate::extract::{decode_json, AnyKey, Json, Path, Query, RawBody, ServiceKey};
use crate::keys::{Caller, Role};

/// Largest batch after decompression (a bound on what a small gzip body may expand to).
const MAX_DECOMPRESSED: u64 = 64 << 20;
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

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
pub(crate) fn scoped_environment<'a>(
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

fn int(value: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::BadRequest(format!("`{name}` must be an integer, not `{v}`"))
            })
        })
        .transpose()
}

/// Routes under `/v1/events` and `/v1/escalations`, and `/metrics`.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/events", get(list_events).post(ingest))
        .route("/v1/events/summary", get(summary))
        .route("/v1/escalations", get(list_escalations))
        .route("/v1/escalations/{id}", get(show_escalation))
        .route("/v1/escalations/{id}/ack", post(ack))
        .route("/v1/escalations/{id}/resolve", post(resolve))
}

type AppState = State<Arc<App>>;

#[derive(Deserialize)]
struct EscalationQuery {
    environment: Option<String>,
    state: Option<String>,
    limit: Option<String>,
}

async fn list_escalations(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Query(q): Query<EscalationQuery>,
) -> Result<Response, ApiError> {
    let env = scoped_environment(&caller, q.environment.as_deref())?;
    let limit = int(q.limit.as_deref(), "limit")?
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, MAX_PAGE);
    let state = q.state.as_deref();
    let list = escalations::list(&mut *app.db.read().await?, env, state, limit).await?;
    ok(&json!({ "escalations": list }))
}

async fn show_escalation(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let out = escalations::show(&mut *app.db.read().await?, &id).await?;
    scoped_environment(&caller, out["environment"].as_str())?;
    ok(&out)
}

async fn ack(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // The body is optional: an empty one acknowledges without an assignee.
    let body: AckBody = if body.is_empty() {
        AckBody::default()
    } else {
        decode_json(&body)?
    };
    let step = Step::Acknowledge {
        assignee: body.assignee,
    };
    ok(&escalations::act(&app, &caller, &id, step).await?)
}

async fn resolve(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Path(id): Path<String>,
    Json(body): Json<ResolveBody>,
) -> Result<Response, ApiError> {
    let step = Step::Resolve {
        resolution: body.resolution,
        note: body.note,
    };
    ok(&escalations::act(&app, &caller, &id, step).await?)
}

/// The request body, gunzipped when it says so, within [`MAX_DECOMPRESSED`].
fn body_bytes<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, ApiError> {
    let encoding = headers
        .get(http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    match encoding {
        None | Some("identity") => Ok(std::borrow::Cow::Borrowed(body)),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
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

async fn ingest(
    State(app): AppState,
    AnyKey(caller): AnyKey,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    if caller.role != Role::Gateway {
        return Err(ApiError::Forbidden(
            "only gateway keys send decision events".to_owned(),
        ));
    }
    let body = body_bytes(&headers, &body)?;
    let form = events::BatchForm::of(
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    app.metrics.batches.with_label_values(&[form.label()]).inc();
    let batch = match events::parse_batch(&body, form, caller.environment.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            app.metrics
                .batches_refused
                .with_label_values(&[e.code().as_str()])
                .inc();
            if e.status() == StatusCode::FORBIDDEN {
                tracing::warn!(key = %caller.key_id, error = %e, "event batch for another environment refused");
            }
            return Err(e);
        }
    };
    // Waiting for a writer's place and a connection ends with the caller; from its ticket on, a
    // write runs on a task of its own and is never cancelled (see `store`).
    let permit = Arc::clone(&app.event_writers)
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(format!("the event writers closed: {e}")))?;
    let tx = app.db.pool().begin().await?;
    let writing = Arc::clone(&app);
    let out = app
        .event_tasks
        .spawn(async move {
            let _permit = permit;
            store(&writing, tx, &batch).await
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the event write task failed: {e}")))??;
    ok(&json!(out))
}

/// Store a batch in its place in the commit order (`order`), in `tx`, and count it. A turn not
/// reached in time is 503 `BUSY` with `Retry-After`: nothing was stored and the gateway sends
/// the batch again.
async fn store(
    app: &App,
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    batch: &events::Batch,
) -> Result<events::Ingested, ApiError> {
    // Taken with a connection in hand, so a write waiting for its turn never holds back an
    // earlier one waiting for a connection. The stamp is the events' `received_at`.
    let ticket = app.event_order.take(app.now());
    let backend = app.db.backend();
    if backend == crate::db::Backend::Sqlite {
        // One writer: nothing is written before the turn.
        ticket.turn().await?;
    }
    let out = events::ingest(
        &mut tx,
        batch,
        ticket.stamp,
        events::Params::of(backend),
        async {
            if backend == crate::db::Backend::Sqlite {
                Ok(())
            } else {
                ticket.turn().await.map_err(ApiError::from)
            }
        },
    )
    .await?;
    tx.commit().await?;
    drop(ticket);
    app.metrics.ingested(&out);
    Ok(out)
}

/// The query of `GET /v1/events` and `GET /v1/events/summary`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventQuery {
    pub environment: Option<String>,
    pub pack: Option<String>,
    pub version: Option<String>,
    pub outcome: Option<String>,
    pub entity: Option<String>,
    pub caller: Option<String>,
    pub team: Option<String>,
    pub model: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub received_after: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
    pub by: Option<String>,
}

/// The filter a query names, checked against the caller's scope.
pub(crate) fn filter(q: EventQuery, caller: &Caller, now: i64) -> Result<Filter, ApiError> {
    let outcome = q.outcome;
    if let Some(o) = &outcome {
        if events::Outcome::parse(o).is_none() {
            return Err(ApiError::BadRequest(format!(
                "outcome `{o}` is not one of {}",
                events::outcome_names().join(", ")
            )));
        }
    }
    Ok(Filter {
        environment: scoped_environment(caller, q.environment.as_deref())?.map(str::to_owned),
        pack: q.pack,
        version: q.version,
        outcome,
        entity: q.entity,
        caller: q.caller,
        team: q.team,
        model: q.model,
        since_ms: q.since.map(|v| instant("since", &v, now)).transpose()?,
        until_ms: q.until.map(|v| instant("until", &v, now)).transpose()?,
        received_after: q
            .received_after
            .as_deref()
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

async fn list_events(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Query(mut q): Query<EventQuery>,
) -> Result<Response, ApiError> {
    let now = app.now();
    let limit = int(q.limit.take().as_deref(), "limit")?
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, MAX_PAGE);
    let cursor = q.cursor.take().as_deref().map(Cursor::decode).transpose()?;
    let filter = filter(q, &caller, now)?;
    let (list, next) =
        events::list(&mut *app.db.read().await?, &filter, cursor.as_ref(), limit).await?;
    ok(&json!({
        "events": list,
        "next_cursor": next.map(|c| c.encode()),
        "now_ms": now,
    }))
}

async fn summary(
    State(app): AppState,
    ServiceKey(caller): ServiceKey,
    Query(q): Query<EventQuery>,
) -> Result<Response, ApiError> {
    let now = app.now();
    let env = scoped_environment(&caller, q.environment.as_deref())?.ok_or_else(|| {
        ApiError::BadRequest("query parameter `environment` is required".to_owned())
    })?;
    let since = instant("since", q.since.as_deref().unwrap_or("1h"), now)?;
    let until = q
        .until
        .as_deref()
        .map(|v| instant("until", v, now))
        .transpose()?
        .unwrap_or(now + 1);
    let by = q.by.as_deref().unwrap_or("version");
    if !matches!(by, "version" | "total") {
        return Err(ApiError::BadRequest(format!(
            "`by` must be version or total, not `{by}`"
        )));
    }
    let versions = events::summary(
        &mut *app.db.read().await?,
        env,
        q.pack.as_deref(),
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
async fn metrics(State(app): AppState) -> Result<Response, ApiError> {
    let queue = escalations::queue(&mut *app.db.read().await?).await?;
    let now = app.now();
    // Every event write runs as one task of `event_tasks`, from its ticket to its commit.
    app.metrics
        .event_writes
        .set(i64::try_from(app.event_tasks.len()).unwrap_or(i64::MAX));
    let text = app.metrics.render(&queue, now);
    let content_type = [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    Ok((content_type, text).into_response())
}
