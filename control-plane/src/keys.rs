//! Service and gateway keys: generation, storage as SHA-256, authentication, roles.
//!
//! A key is `pal_` followed by 64 hex digits (32 bytes from the operating system's random source).
//! It is shown once, at creation; the registry keeps only its SHA-256. The key's id is
//! `key_` + the first 12 hex digits of that hash, so a presented key is found by id and then its
//! full hash compared in constant time (`subtle`). Revealing a hash prefix of a 256-bit random
//! secret reveals nothing useful. A key seeded from `PALISADE_ADMIN_KEY` may have any shape of
//! 16 to 256 characters.
//!
//! Roles are ordered `viewer < deployer < admin`; a `gateway` key is outside that order and can
//! only register, poll and report for its environment. An environment scope on a service key
//! limits what it may change (reads stay global). Not here: key expiry and rotation schedules.

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row as _};
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Deployer,
    Admin,
    /// Register and report for one environment; never an operator.
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Deployer => "deployer",
            Self::Admin => "admin",
            Self::Gateway => "gateway",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "deployer" => Some(Self::Deployer),
            "admin" => Some(Self::Admin),
            "gateway" => Some(Self::Gateway),
            _ => None,
        }
    }

    /// Whether a service key of this role meets `required` (a service role).
    pub fn at_least(self, required: Role) -> bool {
        self != Self::Gateway && self >= required
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    /// Environment scope; `None` means every environment.
    pub environment: Option<String>,
}

impl Caller {
    /// Whether this caller's scope covers `environment`.
    pub fn covers(&self, environment: &str) -> bool {
        self.environment.as_deref().is_none_or(|e| e == environment)
    }
}

/// A new key, the only time its secret exists outside the caller's hands.
#[derive(Debug)]
pub struct NewKey {
    pub id: String,
    pub secret: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn key_id(hash: &str) -> String {
    format!("key_{}", hash.get(..12).unwrap_or(hash))
}

/// Generate a fresh key.
pub fn generate() -> Result<NewKey, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("no randomness for a key: {e}")))?;
    Ok(from_secret(format!("pal_{}", hex(&bytes))))
}

/// A key from a given secret (the seeded admin key).
pub fn from_secret(secret: String) -> NewKey {
    NewKey {
        id: key_id(&key_hash(&secret)),
        secret,
    }
}

/// Whether a secret given by an operator is acceptable as a key.
pub fn acceptable_secret(secret: &str) -> bool {
    (16..=256).contains(&secret.len()) && secret.chars().all(|c| c.is_ascii_graphic())
}

/// Store a key's hash.
pub async fn insert(
    conn: &mut AnyConnection,
    key: &NewKey,
    role: Role,
    environment: Option<&str>,
    created_by: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, key_hash, role, environment, created_by, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, NULL)",
    )
    .bind(&key.id)
    .bind(key_hash(&key.secret))
    .bind(role.as_str())
    .bind(environment)
    .bind(created_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Find the caller behind an `Authorization: Bearer` value.
pub async fn authenticate(
    conn: &mut AnyConnection,
    authorization: Option<&str>,
) -> Result<Caller, ApiError> {
    let secret = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| acceptable_secret(s))
        .ok_or(ApiError::InvalidKey)?;
    let hash = key_hash(secret);
    let row = sqlx::query(
        "SELECT key_hash, role, environment FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(key_id(&hash))
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::InvalidKey)?;
    let stored: String = row.try_get("key_hash")?;
    if !bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(ApiError::InvalidKey);
    }
    let role: String = row.try_get("role")?;
    Ok(Caller {
        key_id: key_id(&hash),
        role: Role::parse(&role).ok_or(ApiError::InvalidKey)?,
        environment: row.try_get("environment")?,
    })
}

/// The active key `id` as a caller (a console session stands for its key; revoking the key
/// ends the session).
pub async fn caller_by_id(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<Caller>, sqlx::Error> {
    let row =
        sqlx::query("SELECT role, environment FROM api_keys WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let role: String = row.try_get("role")?;
    Ok(Role::parse(&role).map(|role| Caller {
        key_id: id.to_owned(),
        role,
        environment: row.try_get("environment").ok().flatten(),
    }))
}

/// A random hex token of 32 bytes and its SHA-256 hash (console sessions and CSRF tokens).
pub fn token() -> Result<(String, String), ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("no randomness for a token: {e}")))?;
    let t = hex(&bytes);
    let h = key_hash(&t);
    Ok((t, h))
}

/// The SHA-256 hash of a token, as stored.
pub fn token_hash(token: &str) -> String {
    key_hash(token)
}

/// How many keys exist at all (zero on a fresh registry).
pub async fn count(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
        .fetch_one(conn)
        .await?
        .try_get("n")
}

/// Active admin keys other than `except`.
pub async fn other_admins(conn: &mut AnyConnection, except: &str) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL AND id <> $1",
    )
    .bind(except)
    .fetch_one(conn)
    .await?
    .try_get("n")
}

/// Every key, without secrets.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, role, environment, created_by, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let revoked: Option<i64> = r.try_get("revoked_at")?;
            Ok(serde_json::json!({
                "id": r.try_get::<String, _>("id")?,
                "role": r.try_get::<String, _>("role")?,
                "environment": r.try_get::<Option<String>, _>("environment")?,
                "created_by": r.try_get::<String, _>("created_by")?,
                "created_at": crate::clock::rfc3339(r.try_get("created_at")?),
                "revoked_at": revoked.map(crate::clock::rfc3339),
            }))
        })
        .collect()
}

/// Revoke a key; `Ok(false)` when no active key has that id.
pub async fn revoke(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// The role of a key by id, if it exists and is active.
pub async fn role_of(conn: &mut AnyConnection, id: &str) -> Result<Option<Role>, sqlx::Error> {
    let row = sqlx::query("SELECT role FROM api_keys WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(r) => Role::parse(&r.try_get::<String, _>("role")?),
        None => None,
    })
}
