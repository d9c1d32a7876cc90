//! The pack registry: push a version (validated and compiled first), list packs and versions,
//! show one, and diff two.
//!
//! A version is immutable: the exact YAML, its canonical hash, the author's key id, the note and
//! the time are stored once. Pushing an identical document (same name, version and hash) is a
//! no-op that says so; a different document under an existing name+version is refused with 409,
//! since gateways and history identify what runs by that pair. A pack with `enabled: false`
//! compiles and can be stored (the registry keeps it); gateways refuse to activate it.

use palisade_wire::error::ErrorCode;
use policy_engine::{validate_text, CompileOptions, Diagnostics, LoadedPack};
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row as _};

use crate::adminlog::{self, Entry};
use crate::app::{App, Scope};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::keys::{Caller, Role};

/// Options for compiling on the control plane. The real HMAC key for hashed redaction is a
/// secret of each gateway's environment; checking a pack must not need it.
pub(crate) fn compile_options() -> CompileOptions {
    CompileOptions {
        pii_hash_key: Some(b"palisade-control-plane-validation".to_vec()),
    }
}

/// A stored version.
#[derive(Debug, Clone)]
pub(crate) struct StoredVersion {
    pub pack: String,
    pub version: String,
    pub hash: String,
    pub yaml: String,
    pub author: String,
    pub note: String,
    pub created_at: i64,
}

impl StoredVersion {
    pub(crate) fn summary(&self) -> Value {
        json!({
            "pack": self.pack,
            "version": self.version,
            "hash": self.hash,
            "author": self.author,
            "note": self.note,
            "created_at": rfc3339(self.created_at),
        })
    }

    /// Load the stored text again (it compiled when it was pushed).
    pub(crate) fn load(&self) -> Result<LoadedPack, ApiError> {
        policy_engine::load(&self.yaml).map_err(ApiError::Compile)
    }
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<StoredVersion, sqlx::Error> {
    Ok(StoredVersion {
        pack: r.try_get("pack")?,
        version: r.try_get("version")?,
        hash: r.try_get("hash")?,
        yaml: r.try_get("yaml")?,
        author: r.try_get("author")?,
        note: r.try_get("note")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(crate) async fn get(
    conn: &mut AnyConnection,
    pack: &str,
    version: &str,
) -> Result<Option<StoredVersion>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT pack, version, hash, yaml, author, note, created_at FROM pack_versions WHERE pack = $1 AND version = $2",
    )
    .bind(pack)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The version or `404 UNKNOWN_PACK_VERSION`.
pub(crate) async fn require(
    conn: &mut AnyConnection,
    pack: &str,
    version: &str,
) -> Result<StoredVersion, ApiError> {
    get(conn, pack, version).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::UnknownPackVersion,
            format!("pack `{pack}` has no version `{version}`"),
        )
    })
}

/// Every version of a pack, oldest first.
pub(crate) async fn versions(
    conn: &mut AnyConnection,
    pack: &str,
) -> Result<Vec<StoredVersion>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT pack, version, hash, yaml, author, note, created_at FROM pack_versions WHERE pack = $1 ORDER BY created_at, version",
    )
    .bind(pack)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The newest `limit` versions of a pack, newest first.
pub(crate) async fn newest(
    conn: &mut AnyConnection,
    pack: &str,
    limit: i64,
) -> Result<Vec<StoredVersion>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT pack, version, hash, yaml, author, note, created_at FROM pack_versions WHERE pack = $1 ORDER BY created_at DESC, version DESC LIMIT $2",
    )
    .bind(pack)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// How many versions a pack has.
pub(crate) async fn count(conn: &mut AnyConnection, pack: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM pack_versions WHERE pack = $1")
        .bind(pack)
        .fetch_one(conn)
        .await?
        .try_get("n")
}

/// Every pack with its number of versions and its newest version.
pub(crate) async fn packs(conn: &mut AnyConnection) -> Result<Vec<Value>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT p.pack AS pack, COUNT(*) AS n, MAX(p.created_at) AS newest FROM pack_versions p GROUP BY p.pack ORDER BY p.pack",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let pack: String = r.try_get("pack")?;
        let latest = newest(conn, &pack, 1).await?.pop();
        out.push(json!({
            "pack": pack,
            "versions": r.try_get::<i64, _>("n")?,
            "latest": latest.map(|v| v.summary()),
        }));
    }
    Ok(out)
}

/// Validate, compile and store a pushed document.
pub(crate) async fn push(
    app: &App,
    caller: &Caller,
    yaml: &str,
    note: &str,
) -> Result<Value, ApiError> {
    app.require_role(caller, Role::Deployer, Scope::Registry, "push", None)
        .await?;
    if note.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "a change note is required: say the intent and the target environment".to_owned(),
        ));
    }
    let (loaded, diags) = validate_text(yaml, &compile_options());
    let loaded = match loaded {
        Some(l) if !diags.has_errors() => l,
        _ => return Err(ApiError::Compile(diags)),
    };
    let warnings: Diagnostics = Diagnostics(diags.warnings().cloned().collect());
    let (pack, version) = (&loaded.document.pack.name, &loaded.document.pack.version);
    let hash = loaded.hash.to_string();
    let now = app.now();
    let (_guard, mut tx) = app.db.begin_write().await?;
    if let Some(existing) = get(&mut tx, pack, version).await? {
        if existing.hash == hash {
            return Ok(json!({
                "status": "unchanged",
                "message": format!("{pack} {version} is already in the registry with this content"),
                "pack": pack, "version": version, "hash": hash, "warnings": warnings,
            }));
        }
        return Err(ApiError::conflict(
            ErrorCode::VersionConflict,
            format!(
                "{pack} {version} already exists with another content (hash {}); versions are immutable, bump pack.version",
                existing.hash
            ),
        ));
    }
    let stored = StoredVersion {
        pack: pack.clone(),
        version: version.clone(),
        hash: hash.clone(),
        yaml: yaml.to_owned(),
        author: caller.key_id.clone(),
        note: note.to_owned(),
        created_at: now,
    };
    insert(&mut tx, &stored).await?;
    let entry = Entry {
        actor: &caller.key_id,
        action: "push",
        outcome: "ok",
        environment: None,
        pack: Some(pack),
        detail: json!({ "version": version, "hash": hash, "note": note }),
    };
    adminlog::append(&mut tx, now, &entry).await?;
    let environments = crate::envs::list(&mut tx).await?;
    tx.commit().await?;
    // The pack's own tests in every environment, shown now: a version is immutable, and one
    // whose tests fail in an environment can never be deployed there.
    let tests: serde_json::Map<String, Value> = environments
        .iter()
        .map(|e| (e.name.clone(), crate::deploy::tests_gate(&stored, &e.name)))
        .collect();
    Ok(json!({
        "status": "created", "pack": pack, "version": version, "hash": hash, "warnings": warnings,
        "tests": tests,
    }))
}

/// Store a new version inside the caller's transaction (the caller checked it compiles and that
/// the name+version is free).
pub(crate) async fn insert(conn: &mut AnyConnection, v: &StoredVersion) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pack_versions (pack, version, hash, yaml, author, note, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&v.pack)
    .bind(&v.version)
    .bind(&v.hash)
    .bind(&v.yaml)
    .bind(&v.author)
    .bind(&v.note)
    .bind(v.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Semantic diff of two stored versions, each resolved for its environment (`None`: the base).
pub(crate) fn diff(
    old: &StoredVersion,
    old_env: Option<&str>,
    new: &StoredVersion,
    new_env: Option<&str>,
) -> Result<Value, ApiError> {
    let (a, b) = (old.load()?, new.load()?);
    let (da, db) = (
        a.resolve(old_env).map_err(ApiError::Compile)?,
        b.resolve(new_env).map_err(ApiError::Compile)?,
    );
    let d = policy_engine::diff::diff(da, db);
    Ok(json!({
        "from": { "version": old.version, "hash": old.hash, "environment": old_env },
        "to": { "version": new.version, "hash": new.hash, "environment": new_env },
        "changes": d.changes,
        "summary": d.summary,
        "overall": d.overall(),
        "text": d.to_string(),
    }))
}
