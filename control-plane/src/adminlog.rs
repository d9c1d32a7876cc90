//! The admin log: every change to policy, environments and keys, and every refused attempt, in
//! the registry database, hash-chained.
//!
//! Each record's `hash` is SHA-256 over the previous record's hash, a newline, and the record's
//! canonical JSON (a struct serialised in declaration order; `detail` is hashed as the exact text
//! stored). A change and its record are written in one transaction by the caller of [`append`],
//! so a record that cannot be written refuses the change. Sequence numbers are computed inside
//! that transaction; two writers racing for one number collide on the primary key and one of them
//! is refused, so the chain never forks. [`verify`] recomputes the chain and names the first
//! record that does not match. What the chain cannot show on its own: the removal of the newest
//! records (keep the head hash from `GET /v1/history/verify` somewhere else to detect that).

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row as _};

use crate::clock::rfc3339;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What is being recorded.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    /// `ok` for a change that happened, `refused` for an attempt that did not.
    pub outcome: &'a str,
    pub environment: Option<&'a str>,
    pub pack: Option<&'a str>,
    pub detail: Value,
}

/// The hashed form of a record; field order is part of the chain's definition.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    at: i64,
    actor: &'a str,
    action: &'a str,
    outcome: &'a str,
    environment: Option<&'a str>,
    pack: Option<&'a str>,
    detail: &'a str,
}

fn chain_hash(prev: &str, record: &Canonical<'_>) -> String {
    let body = serde_json::to_string(record).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Append `entry` inside the caller's transaction; returns its sequence number.
pub async fn append(
    conn: &mut AnyConnection,
    at: i64,
    entry: &Entry<'_>,
) -> Result<i64, sqlx::Error> {
    let last = sqlx::query("SELECT seq, hash FROM admin_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (seq, prev) = match last {
        Some(r) => (
            r.try_get::<i64, _>("seq")? + 1,
            r.try_get::<String, _>("hash")?,
        ),
        None => (1, GENESIS.to_owned()),
    };
    let detail = entry.detail.to_string();
    let record = Canonical {
        seq,
        at,
        actor: entry.actor,
        action: entry.action,
        outcome: entry.outcome,
        environment: entry.environment,
        pack: entry.pack,
        detail: &detail,
    };
    let hash = chain_hash(&prev, &record);
    sqlx::query(
        "INSERT INTO admin_log (seq, at, actor, action, outcome, environment, pack, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(seq)
    .bind(at)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.outcome)
    .bind(entry.environment)
    .bind(entry.pack)
    .bind(&detail)
    .bind(&prev)
    .bind(&hash)
    .execute(conn)
    .await?;
    Ok(seq)
}

/// Records, oldest first, optionally only those about one environment and/or pack.
pub async fn list(
    conn: &mut AnyConnection,
    environment: Option<&str>,
    pack: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, at, actor, action, outcome, environment, pack, detail, hash FROM admin_log
         WHERE ($1 IS NULL OR environment = $1) AND ($2 IS NULL OR pack = $2)
         ORDER BY seq DESC LIMIT $3",
    )
    .bind(environment)
    .bind(pack)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            let detail: String = r.try_get("detail")?;
            Ok(json!({
                "seq": r.try_get::<i64, _>("seq")?,
                "at": rfc3339(r.try_get("at")?),
                "actor": r.try_get::<String, _>("actor")?,
                "action": r.try_get::<String, _>("action")?,
                "outcome": r.try_get::<String, _>("outcome")?,
                "environment": r.try_get::<Option<String>, _>("environment")?,
                "pack": r.try_get::<Option<String>, _>("pack")?,
                "detail": serde_json::from_str::<Value>(&detail).unwrap_or(Value::String(detail)),
                "hash": r.try_get::<String, _>("hash")?,
            }))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    out.reverse();
    Ok(out)
}

/// The result of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub ok: bool,
    pub records: i64,
    /// Hash of the newest record (the genesis value for an empty log).
    pub head: String,
    /// The first record that does not match, and why.
    pub broken_at: Option<i64>,
    pub problem: Option<String>,
}

/// Recompute the whole chain.
pub async fn verify(conn: &mut AnyConnection) -> Result<ChainReport, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, at, actor, action, outcome, environment, pack, detail, prev_hash, hash
         FROM admin_log ORDER BY seq",
    )
    .fetch_all(conn)
    .await?;
    let mut prev = GENESIS.to_owned();
    for (expected_seq, r) in (1_i64..).zip(rows.iter()) {
        let seq: i64 = r.try_get("seq")?;
        let (environment, pack): (Option<String>, Option<String>) =
            (r.try_get("environment")?, r.try_get("pack")?);
        let (actor, action, outcome, detail): (String, String, String, String) = (
            r.try_get("actor")?,
            r.try_get("action")?,
            r.try_get("outcome")?,
            r.try_get("detail")?,
        );
        let record = Canonical {
            seq,
            at: r.try_get("at")?,
            actor: &actor,
            action: &action,
            outcome: &outcome,
            environment: environment.as_deref(),
            pack: pack.as_deref(),
            detail: &detail,
        };
        let (stored_prev, stored): (String, String) = (r.try_get("prev_hash")?, r.try_get("hash")?);
        let problem = if seq != expected_seq {
            Some(format!("expected record {expected_seq}, found {seq}"))
        } else if stored_prev != prev {
            Some("prev_hash does not match the previous record".to_owned())
        } else if chain_hash(&prev, &record) != stored {
            Some("the record's content does not match its hash".to_owned())
        } else {
            None
        };
        if problem.is_some() {
            return Ok(ChainReport {
                ok: false,
                records: i64::try_from(rows.len()).unwrap_or(i64::MAX),
                head: prev,
                broken_at: Some(seq),
                problem,
            });
        }
        prev = stored;
    }
    Ok(ChainReport {
        ok: true,
        records: i64::try_from(rows.len()).unwrap_or(i64::MAX),
        head: prev,
        broken_at: None,
        problem: None,
    })
}
