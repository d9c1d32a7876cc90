//! Deployment pointers: which version each (environment, pack) should run, as an append-only
//! history whose newest row is the desired version.
//!
//! Every deploy, promotion and rollback appends a row (`seq` computed in the writing
//! transaction, guarded by the primary key), so rollback is a forward move and "what did prod run
//! last Tuesday" is a query. Gates and permissions are not checked here; see `deploy` and
//! `promote`.
//!
//! An import with `--replace` can take a pack out of an environment: that appends a row with the
//! action [`DEACTIVATE`] and no version, after which the environment has no desired version of
//! the pack (gateways get 404 `NO_DESIRED_VERSION` and keep what they run) until a later move.

use serde_json::{json, Value};
use sqlx::{AnyConnection, Row as _};

use crate::clock::rfc3339;
use crate::state::DesiredRef;

/// The action of a row that removes the environment's pointer for a pack.
pub(crate) const DEACTIVATE: &str = "deactivate";

/// One move of a pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    pub environment: String,
    pub pack: String,
    pub seq: i64,
    pub version: String,
    pub hash: String,
    pub action: String,
    pub actor: String,
    pub note: String,
    pub at: i64,
}

impl Pointer {
    /// Whether this row takes the pack out of the environment rather than naming a version.
    pub(crate) fn is_deactivation(&self) -> bool {
        self.action == DEACTIVATE
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "environment": self.environment,
            "pack": self.pack,
            "seq": self.seq,
            "version": self.version,
            "hash": self.hash,
            "action": self.action,
            "actor": self.actor,
            "note": self.note,
            "at": rfc3339(self.at),
        })
    }

    /// The desired reference the state rules use. `since` is when the pointer last moved to
    /// this hash: re-deploying the same hash does not move it.
    pub(crate) fn desired(&self, since: i64) -> DesiredRef {
        DesiredRef {
            version: self.version.clone(),
            hash: self.hash.clone(),
            since,
        }
    }
}

const COLUMNS: &str = "environment, pack, seq, version, hash, action, actor, note, at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Pointer, sqlx::Error> {
    Ok(Pointer {
        environment: r.try_get("environment")?,
        pack: r.try_get("pack")?,
        seq: r.try_get("seq")?,
        version: r.try_get("version")?,
        hash: r.try_get("hash")?,
        action: r.try_get("action")?,
        actor: r.try_get("actor")?,
        note: r.try_get("note")?,
        at: r.try_get("at")?,
    })
}

/// The newest pointer of an (environment, pack), unless that row deactivated it.
pub(crate) async fn current(
    conn: &mut AnyConnection,
    environment: &str,
    pack: &str,
) -> Result<Option<Pointer>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM deployments WHERE environment = $1 AND pack = $2 ORDER BY seq DESC LIMIT 1"
    ))
    .bind(environment)
    .bind(pack)
    .fetch_optional(conn)
    .await?;
    Ok(row
        .as_ref()
        .map(from_row)
        .transpose()?
        .filter(|p| !p.is_deactivation()))
}

/// The whole history of an (environment, pack), newest first.
pub(crate) async fn history(
    conn: &mut AnyConnection,
    environment: &str,
    pack: &str,
) -> Result<Vec<Pointer>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM deployments WHERE environment = $1 AND pack = $2 ORDER BY seq DESC"
    ))
    .bind(environment)
    .bind(pack)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The newest pointer of every (environment, pack) that has one, optionally of one environment.
pub(crate) async fn all_current(
    conn: &mut AnyConnection,
    environment: Option<&str>,
) -> Result<Vec<Pointer>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM deployments d WHERE ($1 IS NULL OR d.environment = $1)
         AND d.seq = (SELECT MAX(x.seq) FROM deployments x WHERE x.environment = d.environment AND x.pack = d.pack)
         AND d.action <> $2
         ORDER BY d.environment, d.pack"
    ))
    .bind(environment)
    .bind(DEACTIVATE)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The pointer with when it last moved to its hash (for the state rules).
pub(crate) async fn desired(
    conn: &mut AnyConnection,
    environment: &str,
    pack: &str,
) -> Result<Option<(Pointer, DesiredRef)>, sqlx::Error> {
    let hist = history(conn, environment, pack).await?;
    Ok(with_since(&hist))
}

/// From a newest-first history: the current pointer and the time it reached its hash (`None`
/// when there is none, or the newest row deactivated it).
pub(crate) fn with_since(hist: &[Pointer]) -> Option<(Pointer, DesiredRef)> {
    let cur = hist.first().filter(|p| !p.is_deactivation())?;
    let since = hist
        .iter()
        .take_while(|p| p.hash == cur.hash)
        .last()
        .map_or(cur.at, |p| p.at);
    Some((cur.clone(), cur.desired(since)))
}

/// Append a move inside the caller's transaction; returns its `seq`.
pub(crate) async fn append(conn: &mut AnyConnection, p: &Pointer) -> Result<i64, sqlx::Error> {
    let seq: i64 = sqlx::query(
        "SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM deployments WHERE environment = $1 AND pack = $2",
    )
    .bind(&p.environment)
    .bind(&p.pack)
    .fetch_one(&mut *conn)
    .await?
    .try_get("next")?;
    sqlx::query(&format!(
        "INSERT INTO deployments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&p.environment)
    .bind(&p.pack)
    .bind(seq)
    .bind(&p.version)
    .bind(&p.hash)
    .bind(&p.action)
    .bind(&p.actor)
    .bind(&p.note)
    .bind(p.at)
    .execute(conn)
    .await?;
    Ok(seq)
}
