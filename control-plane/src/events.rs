//! Decision events: what every request through the fleet did, under which pack version.
//!
//! Gateways send batches (`POST /v1/events`, gzip allowed) of one event per request: identity
//! (request id, environment, pack, version, hash, route, models, caller and team), the outcome in
//! one word, the PII findings by side and entity (counts, never values), tokens, cost, status and
//! latency. A batch is checked whole before anything is written: a malformed event is a 400
//! naming it (`events[3].outcome`), a batch over [`MAX_BATCH_EVENTS`] a 413, an event for
//! another environment than the gateway key's a 403 — and nothing of that batch is stored.
//!
//! Storage is idempotent by request id: a batch sent again after a lost acknowledgement inserts
//! nothing twice (`ON CONFLICT DO NOTHING … RETURNING` tells which events are new), and only new
//! events move the rollups and open escalations, in the same transaction. Event writes commit
//! in the order of their stamps (`order`), not under the registry's write lock, so a burst of
//! events never queues behind (or delays) a deploy; on Postgres batches insert their rows in
//! parallel and take only the shared rollups and the commit in order.
//!
//! Time: `at` is the gateway's clock (when the request ended), clamped to the control plane's
//! receive time so a gateway clock running ahead cannot place events in the future; `received_at`
//! is the control plane's, and `--follow` reads by it, so late batches are not skipped.
//!
//! Queries: [`list`] filters and pages newest first by a `(at, request_id)` cursor;
//! [`summary`] reads the rollups (counts by outcome, findings by entity, per version, in minute
//! and hour buckets: hours for the middle of a window, minutes for its edges), so its cost
//! depends on the window's length and versions, not on the number of events.
//! Retention ([`prune`]) deletes per environment in bounded batches, each its own transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::HashSet;
use std::fmt::Write as _;

use palisade_wire::error::ErrorCode;
use palisade_wire::events::{DecodedRow, RowBatch, SharedText, ROWS_CONTENT_TYPE, ROWS_FORMAT};
pub use palisade_wire::events::{Findings, Ingested, Outcome};

/// An event as the control plane holds it: the text every event of a pack version shares is
/// one `Arc` per rows batch, not a copy per event.
pub type DecisionEvent = palisade_wire::events::DecisionEvent<Arc<str>>;
/// A decoded batch, of either form.
pub type Batch = palisade_wire::events::Batch<String, Vec<DecisionEvent>>;

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row as _};

use crate::clock::rfc3339;
use crate::error::ApiError;

/// The most events one batch may carry.
pub const MAX_BATCH_EVENTS: usize = 5000;
/// Events kept per environment unless its `event_retention_ms` says otherwise (7 days).
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Rows deleted per retention transaction.
pub const PRUNE_BATCH: i64 = 5000;
/// Rows per multi-row `INSERT` on SQLite (25 columns: 1,600 parameters, under its limit).
const ROWS_PER_INSERT: usize = 64;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// The rollups' bucket sizes: minutes for the edges of a window, hours for its middle.
const SPANS: [i64; 2] = [MINUTE_MS, HOUR_MS];

/// Every outcome's wire name, in order.
pub fn outcome_names() -> Vec<&'static str> {
    Outcome::ALL.iter().map(|o| o.as_str()).collect()
}

fn short(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{field} is {} bytes; at most {max}", value.len()));
    }
    Ok(())
}

fn identifier(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!("{field} must be 1 to {max} characters"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{field} must be printable ASCII without spaces"));
    }
    Ok(())
}

/// Why an event cannot be stored, if it cannot (its outcome was checked by decoding).
fn check(e: &DecisionEvent) -> Result<(), String> {
    identifier("request_id", &e.request_id, 64)?;
    identifier("environment", &e.environment, 32)?;
    identifier("pack", &e.pack, 128)?;
    identifier("version", &e.version, 64)?;
    identifier("hash", &e.hash, 128)?;
    identifier("route", &e.route, 128)?;
    for (field, v) in [
        ("model_requested", &e.model_requested),
        ("model_used", &e.model_used),
        ("caller", &e.caller),
        ("team", &e.team),
    ] {
        if let Some(v) = v {
            short(field, v, 256)?;
        }
    }
    for (field, v) in [
        ("redacted_text", &e.redacted_text),
        ("redacted_response_text", &e.redacted_response_text),
    ] {
        if let Some(v) = v {
            short(field, v, 64 << 10)?;
        }
    }
    if e.attempts.len() > palisade_wire::events::MAX_ATTEMPTS {
        return Err(format!(
            "attempts lists at most {} calls",
            palisade_wire::events::MAX_ATTEMPTS
        ));
    }
    for a in &e.attempts {
        short("attempts.deployment", &a.deployment, 512)?;
        short("attempts.outcome", &a.outcome, 64)?;
    }
    if e.at_ms <= 0 {
        return Err("at_ms must be a positive Unix time in milliseconds".to_owned());
    }
    if e.cost_usd.is_some_and(|c| !c.is_finite() || c < 0.0) {
        return Err("cost_usd must be a finite, non-negative number".to_owned());
    }
    for (side, map) in [("request", &e.pii.request), ("response", &e.pii.response)] {
        if map.len() > 64 {
            return Err(format!("pii.{side} names more than 64 entities"));
        }
        for entity in map.keys() {
            identifier(&format!("pii.{side} entity"), entity, 64)?;
        }
    }
    Ok(())
}

/// Both sides, empty or not: the stored and answered shape does not depend on the wire's,
/// which leaves an empty side out.
fn findings_json(e: &DecisionEvent) -> String {
    #[derive(Serialize)]
    struct Stored<'a> {
        request: &'a BTreeMap<String, u32>,
        response: &'a BTreeMap<String, u32>,
    }
    serde_json::to_string(&Stored {
        request: &e.pii.request,
        response: &e.pii.response,
    })
    .unwrap_or_else(|_| "{}".to_owned())
}

/// A batch decoded, or a 400 naming where it is malformed.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match serde_json::from_slice(body) {
        Ok(b) => Ok(b),
        // Decoded again, tracking the path, only to say where it fails: tracking it on every
        // batch costs a fifth of decoding.
        Err(_) => {
            let de = &mut serde_json::Deserializer::from_slice(body);
            serde_path_to_error::deserialize(de).map_err(|e| {
                ApiError::BadRequest(format!(
                    "invalid event batch at `{}`: {}",
                    e.path(),
                    e.inner()
                ))
            })
        }
    }
}

/// The two forms of a batch, told apart by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchForm {
    /// [`RowBatch`] (`ROWS_CONTENT_TYPE`).
    Rows,
    /// `{"gateway": …, "events": [{…}]}`, any other type.
    Objects,
}

impl BatchForm {
    /// The form a `Content-Type` names (its media type, without parameters).
    pub(crate) fn of(content_type: Option<&str>) -> Self {
        let media = content_type
            .and_then(|t| t.split(';').next())
            .map(str::trim);
        if media.is_some_and(|t| t.eq_ignore_ascii_case(ROWS_CONTENT_TYPE)) {
            Self::Rows
        } else {
            Self::Objects
        }
    }

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Rows => ROWS_FORMAT,
            Self::Objects => "objects",
        }
    }

    /// The list's name in the body, for errors (`rows[3]`, `events[3]`).
    fn list(self) -> &'static str {
        match self {
            Self::Rows => "rows",
            Self::Objects => "events",
        }
    }
}

/// Decode and check a batch for a gateway key of `environment`: every event must be well-formed
/// and of that environment, or the batch is refused whole.
pub(crate) fn parse_batch(
    body: &[u8],
    form: BatchForm,
    key_environment: Option<&str>,
) -> Result<Batch, ApiError> {
    let batch = match form {
        BatchForm::Rows => decode::<
            RowBatch<String, SharedText<Arc<str>>, Vec<DecodedRow<Arc<str>>>>,
        >(body)
        .map(|b| Batch {
            gateway: b.gateway,
            events: b.rows.into_iter().map(|r| r.resolve(&b.shared)).collect(),
        })?,
        BatchForm::Objects => decode::<Batch>(body)?,
    };
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::TooLong {
            code: ErrorCode::BatchTooLarge,
            message: format!(
                "the batch holds {} events; at most {MAX_BATCH_EVENTS} are accepted",
                batch.events.len()
            ),
        });
    }
    identifier("gateway", &batch.gateway, 128).map_err(ApiError::BadRequest)?;
    let list = form.list();
    for (i, e) in batch.events.iter().enumerate() {
        check(e).map_err(|m| ApiError::BadRequest(format!("{list}[{i}]: {m}")))?;
        if let Some(env) = key_environment {
            if &*e.environment != env {
                return Err(ApiError::Forbidden(format!(
                    "{list}[{i}] is for environment {}; this gateway key may only send events of {env}",
                    e.environment
                )));
            }
        }
    }
    Ok(batch)
}

/// One value bound to a dynamically built statement.
#[derive(Debug, Clone)]
enum Bind<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    OptFloat(Option<f64>),
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(*s),
            Bind::OptText(s) => q.bind(*s),
            Bind::Int(i) => q.bind(*i),
            Bind::OptInt(i) => q.bind(*i),
            Bind::OptFloat(f) => q.bind(*f),
        };
    }
    q
}

/// How a multi-row statement numbers its parameters: `$N` (Postgres), or plain `?` in order
/// (SQLite, which resolves every `$N` by a linear scan of the statement's parameter names, so
/// binding numbered parameters costs the square of their count: 60 % of ingest at 3,600).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Params {
    Numbered,
    Positional,
}

impl Params {
    /// Rows per multi-row `INSERT`. Postgres takes up to 65,535 parameters and pays a round
    /// trip per statement inside the serialised ingest, so it gets 8× SQLite's rows (12,800
    /// parameters for events).
    fn rows(self) -> usize {
        match self {
            Self::Positional => ROWS_PER_INSERT,
            Self::Numbered => ROWS_PER_INSERT * 8,
        }
    }

    pub(crate) fn of(backend: crate::db::Backend) -> Self {
        match backend {
            crate::db::Backend::Sqlite => Self::Positional,
            crate::db::Backend::Postgres => Self::Numbered,
        }
    }
}

/// `($1, $2, …), ($n+1, …)` (or `(?, ?, …), …`) for `rows` rows of `cols` columns.
fn placeholders(rows: usize, cols: usize, params: Params) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            match params {
                Params::Numbered => {
                    let _ = write!(s, "${}", r * cols + c + 1);
                }
                Params::Positional => s.push('?'),
            }
        }
        s.push(')');
    }
    s
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const EVENT_COLUMNS: &str = "request_id, at, received_at, environment, gateway, pack, version, hash, route, model_requested, model_used, caller, team, outcome, escalated, status, latency_us, upstream_us, input_tokens, output_tokens, cost_usd, findings, redacted_text, redacted_response_text, attempts";
const EVENT_COLUMN_COUNT: usize = 25;

/// Store a checked batch in one transaction: the new events, their entity rows, the
/// escalations they open, and then — once `turn` says every earlier write has finished
/// (`order`) — the rollups, which all batches share. Events already stored (by request id) are
/// skipped entirely. A turn that fails fails the write with its own error.
pub(crate) async fn ingest<E: From<sqlx::Error>>(
    conn: &mut AnyConnection,
    batch: &Batch,
    now: i64,
    params: Params,
    turn: impl std::future::Future<Output = Result<(), E>>,
) -> Result<Ingested, E> {
    let mut out = Ingested::default();
    let mut new_ids: Vec<String> = Vec::with_capacity(batch.events.len());
    // One request id twice in one batch: the first wins, like a second batch would.
    let mut seen = HashSet::with_capacity(batch.events.len());
    let unique: Vec<&DecisionEvent> = batch
        .events
        .iter()
        .filter(|e| seen.insert(e.request_id.as_str()))
        .collect();
    for chunk in unique.chunks(params.rows()) {
        let findings: Vec<String> = chunk.iter().map(|e| findings_json(e)).collect();
        // Attempts as a JSON list, only for requests that made more than one.
        let attempts: Vec<Option<String>> = chunk
            .iter()
            .map(|e| {
                (!e.attempts.is_empty())
                    .then(|| serde_json::to_string(&e.attempts).unwrap_or_default())
            })
            .collect();
        let mut binds = Vec::with_capacity(chunk.len() * EVENT_COLUMN_COUNT);
        for ((e, findings), attempts) in chunk.iter().zip(&findings).zip(&attempts) {
            binds.extend([
                Bind::Text(&e.request_id),
                Bind::Int(e.at_ms.min(now)),
                Bind::Int(now),
                Bind::Text(&e.environment),
                Bind::Text(&batch.gateway),
                Bind::Text(&e.pack),
                Bind::Text(&e.version),
                Bind::Text(&e.hash),
                Bind::Text(&e.route),
                Bind::OptText(e.model_requested.as_deref()),
                Bind::OptText(e.model_used.as_deref()),
                Bind::OptText(e.caller.as_deref()),
                Bind::OptText(e.team.as_deref()),
                Bind::Text(e.outcome.as_str()),
                Bind::Int(i64::from(e.escalated)),
                Bind::Int(i64::from(e.status)),
                Bind::Int(to_i64(e.latency_us)),
                Bind::OptInt(e.upstream_us.map(to_i64)),
                Bind::OptInt(e.input_tokens.map(to_i64)),
                Bind::OptInt(e.output_tokens.map(to_i64)),
                Bind::OptFloat(e.cost_usd),
                Bind::Text(findings),
                Bind::OptText(e.redacted_text.as_deref()),
                Bind::OptText(e.redacted_response_text.as_deref()),
                Bind::OptText(attempts.as_deref()),
            ]);
        }
        let sql = format!(
            "INSERT INTO events ({EVENT_COLUMNS}) VALUES {} ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
            placeholders(chunk.len(), EVENT_COLUMN_COUNT, params)
        );
        let rows = bind_all(sqlx::query(&sql), &binds)
            .fetch_all(&mut *conn)
            .await?;
        for r in rows {
            new_ids.push(r.try_get("request_id")?);
        }
    }
    out.accepted = new_ids.len();
    out.duplicates = batch.events.len() - new_ids.len();
    if new_ids.is_empty() {
        return Ok(out);
    }
    // Only when some were stored already does it take a set to tell which are new.
    let fresh: Vec<&DecisionEvent> = if new_ids.len() == unique.len() {
        unique
    } else {
        let new: HashSet<&str> = new_ids.iter().map(String::as_str).collect();
        unique
            .into_iter()
            .filter(|e| new.contains(e.request_id.as_str()))
            .collect()
    };
    insert_entities(conn, &fresh, now, params).await?;
    out.escalations_opened = open_escalations(conn, &fresh, &batch.gateway, now, params).await?;
    turn.await?;
    upsert_rollups(conn, &fresh, now, params).await?;
    Ok(out)
}

async fn insert_entities(
    conn: &mut AnyConnection,
    events: &[&DecisionEvent],
    now: i64,
    params: Params,
) -> Result<(), sqlx::Error> {
    let mut rows: Vec<[Bind; 6]> = Vec::new();
    for e in events {
        for (side, map) in [("request", &e.pii.request), ("response", &e.pii.response)] {
            for (entity, n) in map {
                rows.push([
                    Bind::Text(&e.request_id),
                    Bind::Text(&e.environment),
                    Bind::Int(e.at_ms.min(now)),
                    Bind::Text(side),
                    Bind::Text(entity),
                    Bind::Int(i64::from(*n)),
                ]);
            }
        }
    }
    for chunk in rows.chunks(params.rows() * 3) {
        let binds: Vec<Bind> = chunk.iter().flat_map(|r| r.iter().cloned()).collect();
        let sql = format!(
            "INSERT INTO event_entities (request_id, environment, at, side, entity, findings) VALUES {} ON CONFLICT DO NOTHING",
            placeholders(chunk.len(), 6, params)
        );
        bind_all(sqlx::query(&sql), &binds)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Environment, pack, version, hash, span and bucket: the unit of the rollups.
type VersionBucket<'a> = (&'a str, &'a str, &'a str, &'a str, i64, i64);

/// A rollup key's values, in the order of the rollup tables' first six columns.
fn key_binds<'a>(&(env, pack, version, hash, span, bucket): &VersionBucket<'a>) -> [Bind<'a>; 6] {
    [
        Bind::Text(env),
        Bind::Text(pack),
        Bind::Text(version),
        Bind::Text(hash),
        Bind::Int(span),
        Bind::Int(bucket),
    ]
}

async fn upsert_rollups(
    conn: &mut AnyConnection,
    events: &[&DecisionEvent],
    now: i64,
    params: Params,
) -> Result<(), sqlx::Error> {
    // (version key, outcome) → (requests, escalated, cost)
    let mut outcomes: BTreeMap<(VersionBucket<'_>, &str), (i64, i64, f64)> = BTreeMap::new();
    // (version key, side, entity) → (findings, requests)
    let mut entities: BTreeMap<(VersionBucket<'_>, &str, &str), (i64, i64)> = BTreeMap::new();
    for (e, span) in events.iter().flat_map(|e| SPANS.map(|s| (e, s))) {
        let key = (
            &*e.environment,
            &*e.pack,
            &*e.version,
            &*e.hash,
            span,
            e.at_ms.min(now) / span * span,
        );
        let slot = outcomes.entry((key, e.outcome.as_str())).or_default();
        slot.0 += 1;
        slot.1 += i64::from(e.escalated);
        slot.2 += e.cost_usd.unwrap_or(0.0);
        for (side, map) in [("request", &e.pii.request), ("response", &e.pii.response)] {
            for (entity, n) in map {
                let slot = entities.entry((key, side, entity.as_str())).or_default();
                slot.0 += i64::from(*n);
                slot.1 += 1;
            }
        }
    }
    // In key order (the maps are ordered): two writers (two control planes on one Postgres)
    // that upsert the same rows lock them in the same order, so they queue instead of
    // deadlocking.
    let rows: Vec<_> = outcomes.into_iter().collect();
    for chunk in rows.chunks(params.rows()) {
        let mut binds = Vec::with_capacity(chunk.len() * 10);
        for ((key, outcome), (n, esc, cost)) in chunk {
            binds.extend(key_binds(key));
            binds.extend([
                Bind::Text(outcome),
                Bind::Int(*n),
                Bind::Int(*esc),
                Bind::OptFloat(Some(*cost)),
            ]);
        }
        let sql = format!(
            "INSERT INTO event_rollups (environment, pack, version, hash, span, bucket, outcome, requests, escalated, cost_usd) VALUES {} \
             ON CONFLICT (environment, pack, hash, span, bucket, outcome) DO UPDATE SET requests = event_rollups.requests + excluded.requests, escalated = event_rollups.escalated + excluded.escalated, cost_usd = event_rollups.cost_usd + excluded.cost_usd",
            placeholders(chunk.len(), 10, params)
        );
        bind_all(sqlx::query(&sql), &binds)
            .execute(&mut *conn)
            .await?;
    }
    let rows: Vec<_> = entities.into_iter().collect();
    for chunk in rows.chunks(params.rows()) {
        let mut binds = Vec::with_capacity(chunk.len() * 10);
        for ((key, side, entity), (n, requests)) in chunk {
            binds.extend(key_binds(key));
            binds.extend([
                Bind::Text(side),
                Bind::Text(entity),
                Bind::Int(*n),
                Bind::Int(*requests),
            ]);
        }
        let sql = format!(
            "INSERT INTO entity_rollups (environment, pack, version, hash, span, bucket, side, entity, findings, requests) VALUES {} \
             ON CONFLICT (environment, pack, hash, span, bucket, side, entity) DO UPDATE SET findings = entity_rollups.findings + excluded.findings, requests = entity_rollups.requests + excluded.requests",
            placeholders(chunk.len(), 10, params)
        );
        bind_all(sqlx::query(&sql), &binds)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn open_escalations(
    conn: &mut AnyConnection,
    events: &[&DecisionEvent],
    gateway: &str,
    now: i64,
    params: Params,
) -> Result<usize, sqlx::Error> {
    let escalated: Vec<&&DecisionEvent> = events.iter().filter(|e| e.escalated).collect();
    for chunk in escalated.chunks(params.rows()) {
        let mut binds = Vec::with_capacity(chunk.len() * 9);
        for e in chunk {
            binds.extend([
                Bind::Text(&e.request_id),
                Bind::Text(&e.environment),
                Bind::Text(&e.pack),
                Bind::Text(&e.version),
                Bind::Text(&e.hash),
                Bind::Text(gateway),
                Bind::Int(e.at_ms.min(now)),
                Bind::Text("open"),
                Bind::Int(now),
            ]);
        }
        let sql = format!(
            "INSERT INTO escalations (id, environment, pack, version, hash, gateway, opened_at, state, updated_at) VALUES {} ON CONFLICT (id) DO NOTHING",
            placeholders(chunk.len(), 9, params)
        );
        bind_all(sqlx::query(&sql), &binds)
            .execute(&mut *conn)
            .await?;
    }
    Ok(escalated.len())
}

/// Filters of `GET /v1/events` (all optional; a time window is `[since, until)`).
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub environment: Option<String>,
    pub pack: Option<String>,
    pub version: Option<String>,
    pub outcome: Option<String>,
    pub entity: Option<String>,
    pub caller: Option<String>,
    pub team: Option<String>,
    pub model: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Read in the order the control plane received events, after this `(received_at,
    /// request_id)` (`--follow`; an empty id means from that millisecond on). The answer is then
    /// oldest first, and `after` is not used.
    pub received_after: Option<(i64, String)>,
}

/// Where a page ends: the last event's `(at, request_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub request_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at, self.request_id)
    }

    pub fn decode(s: &str) -> Result<Self, ApiError> {
        let bad =
            || ApiError::BadRequest(format!("`cursor` `{s}` is not a cursor this API returned"));
        let (at, id) = s.split_once('.').ok_or_else(bad)?;
        let at = at.parse().map_err(|_| bad())?;
        identifier("cursor", id, 64).map_err(|_| bad())?;
        Ok(Self {
            at,
            request_id: id.to_owned(),
        })
    }
}

/// One page of events, newest first, and the cursor of the next page when there is one.
pub(crate) async fn list(
    conn: &mut AnyConnection,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<(Vec<Value>, Option<Cursor>), sqlx::Error> {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE 1 = 1");
    let mut binds = Vec::new();
    let text_filters = [
        ("e.environment", &filter.environment),
        ("e.pack", &filter.pack),
        ("e.version", &filter.version),
        ("e.outcome", &filter.outcome),
        ("e.caller", &filter.caller),
        ("e.team", &filter.team),
    ];
    for (column, value) in text_filters {
        if let Some(v) = value {
            binds.push(Bind::Text(v));
            let _ = write!(sql, " AND {column} = ${}", binds.len());
        }
    }
    if let Some(m) = &filter.model {
        // Asked for or served: either names the model.
        binds.push(Bind::Text(m));
        let n = binds.len();
        let _ = write!(
            sql,
            " AND (e.model_requested = ${n} OR e.model_used = ${n})"
        );
    }
    if let Some(entity) = &filter.entity {
        binds.push(Bind::Text(entity));
        let n = binds.len();
        let _ = write!(
            sql,
            " AND EXISTS (SELECT 1 FROM event_entities x WHERE x.request_id = e.request_id AND x.entity = ${n})"
        );
    }
    if let Some(t) = filter.since_ms {
        binds.push(Bind::Int(t));
        let _ = write!(sql, " AND e.at >= ${}", binds.len());
    }
    if let Some(t) = filter.until_ms {
        binds.push(Bind::Int(t));
        let _ = write!(sql, " AND e.at < ${}", binds.len());
    }
    if let Some((ms, id)) = &filter.received_after {
        binds.push(Bind::Int(*ms));
        let a = binds.len();
        binds.push(Bind::Text(id));
        let r = binds.len();
        binds.push(Bind::Int(limit + 1));
        let _ = write!(
            sql,
            " AND (e.received_at > ${a} OR (e.received_at = ${a} AND e.request_id > ${r})) ORDER BY e.received_at, e.request_id LIMIT ${}",
            binds.len()
        );
    } else {
        if let Some(c) = after {
            binds.push(Bind::Int(c.at));
            let a = binds.len();
            binds.push(Bind::Text(&c.request_id));
            let r = binds.len();
            let _ = write!(
                sql,
                " AND (e.at < ${a} OR (e.at = ${a} AND e.request_id < ${r}))"
            );
        }
        binds.push(Bind::Int(limit + 1));
        let _ = write!(
            sql,
            " ORDER BY e.at DESC, e.request_id DESC LIMIT ${}",
            binds.len()
        );
    }
    let rows = bind_all(sqlx::query(&sql), &binds)
        .fetch_all(&mut *conn)
        .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(rows.len());
    let mut last = None;
    for r in rows
        .iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
    {
        let (event, cursor) = event_json(r)?;
        out.push(event);
        last = Some(cursor);
    }
    Ok((out, if more { last } else { None }))
}

/// The event of one request, if it is stored.
pub(crate) async fn get(
    conn: &mut AnyConnection,
    request_id: &str,
) -> Result<Option<Value>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE request_id = $1"
    ))
    .bind(request_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref()
        .map(|r| event_json(r).map(|(v, _)| v))
        .transpose()
}

fn event_json(r: &sqlx::any::AnyRow) -> Result<(Value, Cursor), sqlx::Error> {
    let at: i64 = r.try_get("at")?;
    let id: String = r.try_get("request_id")?;
    let findings: String = r.try_get("findings")?;
    let findings: Value = serde_json::from_str(&findings).unwrap_or_else(|_| json!({}));
    let escalated: i64 = r.try_get("escalated")?;
    let mut v = json!({
        "request_id": id,
        "at": rfc3339(at),
        "at_ms": at,
        "received_at_ms": r.try_get::<i64, _>("received_at")?,
        "environment": r.try_get::<String, _>("environment")?,
        "gateway": r.try_get::<String, _>("gateway")?,
        "pack": r.try_get::<String, _>("pack")?,
        "version": r.try_get::<String, _>("version")?,
        "hash": r.try_get::<String, _>("hash")?,
        "route": r.try_get::<String, _>("route")?,
        "model_requested": r.try_get::<Option<String>, _>("model_requested")?,
        "model_used": r.try_get::<Option<String>, _>("model_used")?,
        "caller": r.try_get::<Option<String>, _>("caller")?,
        "team": r.try_get::<Option<String>, _>("team")?,
        "outcome": r.try_get::<String, _>("outcome")?,
        "escalated": escalated != 0,
        "status": r.try_get::<i64, _>("status")?,
        "latency_us": r.try_get::<i64, _>("latency_us")?,
        "upstream_us": r.try_get::<Option<i64>, _>("upstream_us")?,
        "input_tokens": r.try_get::<Option<i64>, _>("input_tokens")?,
        "output_tokens": r.try_get::<Option<i64>, _>("output_tokens")?,
        "cost_usd": r.try_get::<Option<f64>, _>("cost_usd")?,
        "pii": findings,
    });
    for field in ["redacted_text", "redacted_response_text"] {
        if let Some(t) = r.try_get::<Option<String>, _>(field)? {
            v[field] = json!(t);
        }
    }
    if let Some(a) = r.try_get::<Option<String>, _>("attempts")? {
        v["attempts"] = serde_json::from_str(&a).unwrap_or(Value::Null);
    }
    Ok((v, Cursor { at, request_id: id }))
}

/// Counts of one version over a window, from the rollups.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VersionCounts {
    pub pack: String,
    pub version: String,
    pub hash: String,
    pub requests: i64,
    pub outcomes: BTreeMap<String, i64>,
    pub escalated: i64,
    /// side → entity → findings.
    pub findings: BTreeMap<String, BTreeMap<String, i64>>,
    /// side → entity → requests with at least one finding of it.
    pub requests_with: BTreeMap<String, BTreeMap<String, i64>>,
}

impl VersionCounts {
    fn rate(&self, n: i64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            n as f64 / self.requests as f64
        }
    }

    fn sum(&self, which: impl Fn(Outcome) -> bool) -> i64 {
        self.outcomes
            .iter()
            .filter(|(o, _)| Outcome::parse(o).is_some_and(&which))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn error_rate(&self) -> f64 {
        self.rate(self.sum(Outcome::is_error))
    }

    pub fn block_rate(&self) -> f64 {
        self.rate(self.sum(Outcome::is_block))
    }

    pub fn escalation_rate(&self) -> f64 {
        self.rate(self.escalated)
    }

    /// Every version's counts added up (`by=total`).
    pub fn total(versions: &[Self]) -> Self {
        let mut t = Self {
            pack: "*".to_owned(),
            version: "*".to_owned(),
            hash: "*".to_owned(),
            ..Self::default()
        };
        for v in versions {
            t.requests += v.requests;
            t.escalated += v.escalated;
            for (o, n) in &v.outcomes {
                *t.outcomes.entry(o.clone()).or_insert(0) += n;
            }
            for (into, from) in [
                (&mut t.findings, &v.findings),
                (&mut t.requests_with, &v.requests_with),
            ] {
                for (side, map) in from {
                    let slot = into.entry(side.clone()).or_default();
                    for (e, n) in map {
                        *slot.entry(e.clone()).or_insert(0) += n;
                    }
                }
            }
        }
        t
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!(self);
        v["rates"] = json!({
            "error": self.error_rate(),
            "escalation": self.escalation_rate(),
            "block": self.block_rate(),
        });
        v
    }
}

/// What the rollups say about `environment` over `[since, until)` (whole minutes: a window
/// starts at the beginning of the minute `since` falls in), per pack version; `hash` narrows it
/// to one version's exact hash.
pub(crate) async fn summary(
    conn: &mut AnyConnection,
    environment: &str,
    pack: Option<&str>,
    hash: Option<&str>,
    since_ms: i64,
    until_ms: i64,
) -> Result<Vec<VersionCounts>, sqlx::Error> {
    // Whole hours in the middle from the hourly rows, the edges from the minute rows.
    let from = since_ms / MINUTE_MS * MINUTE_MS;
    let (mut a, mut b) = (
        (from + HOUR_MS - 1) / HOUR_MS * HOUR_MS,
        until_ms / HOUR_MS * HOUR_MS,
    );
    if a >= b {
        (a, b) = (until_ms, until_ms);
    }
    let mut by: BTreeMap<(String, String, String), VersionCounts> = BTreeMap::new();
    let scope = " WHERE environment = $1 AND ($4 = '' OR pack = $4) AND ($5 = '' OR hash = $5) \
        AND ((span = $6 AND ((bucket >= $2 AND bucket < $7) OR (bucket >= $8 AND bucket < $3))) \
          OR (span = $9 AND bucket >= $7 AND bucket < $8))";
    let binds = [
        Bind::Text(environment),
        Bind::Int(from),
        Bind::Int(until_ms),
        Bind::Text(pack.unwrap_or("")),
        Bind::Text(hash.unwrap_or("")),
        Bind::Int(MINUTE_MS),
        Bind::Int(a),
        Bind::Int(b),
        Bind::Int(HOUR_MS),
    ];
    let sql = format!(
        "SELECT pack, version, hash, outcome, CAST(SUM(requests) AS BIGINT) AS n, CAST(SUM(escalated) AS BIGINT) AS esc FROM event_rollups{scope} GROUP BY pack, version, hash, outcome"
    );
    for r in bind_all(sqlx::query(&sql), &binds)
        .fetch_all(&mut *conn)
        .await?
    {
        let key = version_of(&r)?;
        let n: i64 = r.try_get("n")?;
        let esc: i64 = r.try_get("esc")?;
        let c = by.entry(key.clone()).or_insert_with(|| VersionCounts {
            pack: key.0,
            version: key.1,
            hash: key.2,
            ..VersionCounts::default()
        });
        c.requests += n;
        c.escalated += esc;
        *c.outcomes.entry(r.try_get("outcome")?).or_insert(0) += n;
    }
    let sql = format!(
        "SELECT pack, version, hash, side, entity, CAST(SUM(findings) AS BIGINT) AS f, CAST(SUM(requests) AS BIGINT) AS n FROM entity_rollups{scope} GROUP BY pack, version, hash, side, entity"
    );
    for r in bind_all(sqlx::query(&sql), &binds)
        .fetch_all(&mut *conn)
        .await?
    {
        let key = version_of(&r)?;
        if let Some(c) = by.get_mut(&key) {
            let side: String = r.try_get("side")?;
            let entity: String = r.try_get("entity")?;
            c.findings
                .entry(side.clone())
                .or_default()
                .insert(entity.clone(), r.try_get("f")?);
            c.requests_with
                .entry(side)
                .or_default()
                .insert(entity, r.try_get("n")?);
        }
    }
    let mut out: Vec<VersionCounts> = by.into_values().collect();
    out.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.version.cmp(&b.version)));
    Ok(out)
}

/// A rollup row's pack, version and hash.
fn version_of(r: &sqlx::any::AnyRow) -> Result<(String, String, String), sqlx::Error> {
    Ok((
        r.try_get("pack")?,
        r.try_get("version")?,
        r.try_get("hash")?,
    ))
}

/// Delete one bounded batch of `environment`'s data older than `before`; returns the events
/// deleted (0 when nothing is left to delete).
pub(crate) async fn prune(
    conn: &mut AnyConnection,
    environment: &str,
    before: i64,
) -> Result<u64, sqlx::Error> {
    let events = sqlx::query(
        "DELETE FROM events WHERE request_id IN (SELECT request_id FROM events WHERE environment = $1 AND at < $2 LIMIT $3)",
    )
    .bind(environment)
    .bind(before)
    .bind(PRUNE_BATCH)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM event_entities WHERE request_id IN (SELECT request_id FROM event_entities WHERE environment = $1 AND at < $2 LIMIT $3)",
    )
    .bind(environment)
    .bind(before)
    .bind(PRUNE_BATCH)
    .execute(&mut *conn)
    .await?;
    if events < PRUNE_BATCH.unsigned_abs() {
        // Rollups are a few rows per bucket and version: once the events are gone, the buckets
        // wholly before the cutoff go in one statement each.
        for table in ["event_rollups", "entity_rollups"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE environment = $1 AND bucket + span <= $2"
            ))
            .bind(environment)
            .bind(before)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(events)
}

/// Requests per bucket and version of `environment` over `[since, until)` for the console's
/// charts: minute buckets for a window of up to six hours, hour buckets beyond (a chart of a
/// week has 168 points, not 10,080). `(bucket start ms, version, outcome, requests)`.
pub(crate) async fn per_bucket(
    conn: &mut AnyConnection,
    environment: &str,
    since_ms: i64,
    until_ms: i64,
) -> Result<Vec<(i64, String, String, i64)>, sqlx::Error> {
    let span = if until_ms - since_ms <= 6 * HOUR_MS {
        MINUTE_MS
    } else {
        HOUR_MS
    };
    let rows = sqlx::query(
        "SELECT bucket, version, outcome, CAST(SUM(requests) AS BIGINT) AS n FROM event_rollups \
         WHERE environment = $1 AND span = $2 AND bucket >= $3 AND bucket < $4 \
         GROUP BY bucket, version, outcome ORDER BY bucket, version, outcome",
    )
    .bind(environment)
    .bind(span)
    .bind(since_ms / span * span)
    .bind(until_ms)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("bucket")?,
                r.try_get("version")?,
                r.try_get("outcome")?,
                r.try_get("n")?,
            ))
        })
        .collect()
}

/// Requests and the cost the gateways reported for them, per hour of `environment` from the
/// hour starting at `since_ms` (a day's or a month's start) until now, from the hourly
/// rollups: `(hour start ms, requests, cost)`, oldest first.
pub(crate) async fn spend_per_hour(
    conn: &mut AnyConnection,
    environment: &str,
    since_ms: i64,
) -> Result<Vec<(i64, i64, f64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT bucket, CAST(SUM(requests) AS BIGINT) AS n, \
         CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost \
         FROM event_rollups WHERE environment = $1 AND span = $2 AND bucket >= $3 \
         GROUP BY bucket ORDER BY bucket",
    )
    .bind(environment)
    .bind(HOUR_MS)
    .bind(since_ms / HOUR_MS * HOUR_MS)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("bucket")?, r.try_get("n")?, r.try_get("cost")?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(
            placeholders(2, 3, Params::Numbered),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(placeholders(1, 2, Params::Positional), "(?, ?)");
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            at: 1_733_000_000_123,
            request_id: "00ab".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "x.y", "12", "12.", "12.a b"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    fn event() -> Value {
        json!({"request_id": "r1", "at_ms": 1, "environment": "dev", "pack": "p", "version": "1",
               "hash": "h", "route": "/v1/chat/completions", "outcome": "allowed", "status": 200,
               "latency_us": 5})
    }

    #[test]
    fn a_batch_is_refused_whole_naming_the_bad_event() {
        let mut bad = event();
        bad["outcome"] = json!("fine");
        let body = json!({"gateway": "g", "events": [event(), bad]}).to_string();
        let err = parse_batch(body.as_bytes(), BatchForm::Objects, Some("dev")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid event batch at `events[1].outcome`: unknown variant `fine`"),
            "{err}"
        );

        let mut typo = event();
        typo["status"] = json!("ok");
        let body = json!({"gateway": "g", "events": [typo]}).to_string();
        let err = parse_batch(body.as_bytes(), BatchForm::Objects, Some("dev")).unwrap_err();
        assert!(err.to_string().contains("events[0].status"), "{err}");

        let body = json!({"gateway": "g", "events": [event()]}).to_string();
        let err = parse_batch(body.as_bytes(), BatchForm::Objects, Some("prod")).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
        assert!(parse_batch(body.as_bytes(), BatchForm::Objects, Some("dev")).is_ok());
    }

    fn row(id: &str, env: Value) -> Value {
        json!([id, 1, env, null, null, null, "/v1/chat/completions", "m", "m", "app", null, "allowed", false, 200,
               5, 4, 1, 2, 0.5, {"request": {"email": 1}}])
    }

    #[test]
    fn a_rows_batch_takes_the_shared_text_and_is_refused_whole_naming_the_bad_row() {
        let shared = json!({"environment": "dev", "pack": "p", "version": "1", "hash": "h"});
        let body = json!({"gateway": "g", "shared": shared, "rows": [row("r1", Value::Null)]});
        let batch = parse_batch(body.to_string().as_bytes(), BatchForm::Rows, Some("dev")).unwrap();
        let e = &batch.events[0];
        assert_eq!((&*e.environment, &*e.pack, &*e.hash), ("dev", "p", "h"));
        assert_eq!(e.pii.request.get("email"), Some(&1));
        assert_eq!(e.cost_usd, Some(0.5));
        // The object form of the same body is not a batch.
        assert!(parse_batch(body.to_string().as_bytes(), BatchForm::Objects, Some("dev")).is_err());

        let mut bad = row("r2", Value::Null);
        bad[11] = json!("fine");
        let body = json!({"gateway": "g", "shared": shared, "rows": [row("r1", Value::Null), bad]});
        let err =
            parse_batch(body.to_string().as_bytes(), BatchForm::Rows, Some("dev")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "invalid event batch at `rows[1][11]`: outcome: unknown variant `fine`"
            ),
            "{err}"
        );

        let body = json!({"gateway": "g", "shared": shared, "rows": [row("r1", json!("prod"))]});
        let err =
            parse_batch(body.to_string().as_bytes(), BatchForm::Rows, Some("dev")).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
        assert!(
            err.to_string()
                .starts_with("rows[0] is for environment prod"),
            "{err}"
        );
    }
}
