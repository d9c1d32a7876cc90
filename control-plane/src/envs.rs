//! Environments: the promotion path (`feeds_from`), the soak time a source must be verified for
//! before promoting into an environment, the role a deploy into it requires, how long its
//! decision events are kept, and the runtime evidence a promotion into it needs (`Evidence`:
//! thresholds on the source's traffic under the version being promoted; unset means no gate).
//!
//! On first start `dev`, `staging` (fed from dev, no soak) and `prod` (fed from staging, 60 s
//! soak, admin to deploy) are created. Soak and role are settings, not code, so tests and small
//! installations can choose other values. Deleting an environment is not offered: its history
//! must stay readable.

use palisade_wire::error::ErrorCode;
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row as _};

use crate::error::ApiError;
use crate::keys::Role;

/// One environment's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub feeds_from: Option<String>,
    pub soak_ms: i64,
    pub deploy_role: Role,
    /// How long its decision events are kept (`None`: `events::DEFAULT_RETENTION_MS`).
    pub event_retention_ms: Option<i64>,
    /// What a promotion into this environment needs from the source's traffic.
    pub evidence: Evidence,
}

/// The runtime evidence gate of promotions into an environment: over the source's events on the
/// promoted version's exact hash since it was deployed there, at least `min_requests` requests,
/// and error, escalation and block rates at most the given fractions. Each unset threshold is
/// not checked; with none set there is no gate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evidence {
    pub min_requests: Option<i64>,
    pub max_error_rate: Option<f64>,
    pub max_escalation_rate: Option<f64>,
    pub max_block_rate: Option<f64>,
}

impl Evidence {
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }
}

impl Environment {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "feeds_from": self.feeds_from,
            "soak_ms": self.soak_ms,
            "deploy_role": self.deploy_role.as_str(),
            "event_retention_ms": self.event_retention_ms,
            "evidence": {
                "min_requests": self.evidence.min_requests,
                "max_error_rate": self.evidence.max_error_rate,
                "max_escalation_rate": self.evidence.max_escalation_rate,
                "max_block_rate": self.evidence.max_block_rate,
            },
        })
    }

    /// Events older than this (Unix ms) are deleted at `now`.
    pub fn retention_cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(
            self.event_retention_ms
                .unwrap_or(crate::events::DEFAULT_RETENTION_MS),
        )
    }
}

/// The environments a fresh registry starts with.
pub fn defaults() -> Vec<Environment> {
    let env = |name: &str, from: Option<&str>, soak_ms, deploy_role| Environment {
        name: name.to_owned(),
        feeds_from: from.map(str::to_owned),
        soak_ms,
        deploy_role,
        event_retention_ms: None,
        evidence: Evidence::default(),
    };
    vec![
        env("dev", None, 0, Role::Deployer),
        env("staging", Some("dev"), 0, Role::Deployer),
        env("prod", Some("staging"), 60_000, Role::Admin),
    ]
}

/// Environment names: lowercase letters, digits and `-`, up to 32 characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The role for deploying: a service role, never `gateway` or `viewer`.
pub fn parse_deploy_role(s: &str) -> Result<Role, ApiError> {
    match Role::parse(s) {
        Some(r @ (Role::Deployer | Role::Admin)) => Ok(r),
        _ => Err(ApiError::BadRequest(format!(
            "deploy_role must be deployer or admin, not `{s}`"
        ))),
    }
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<Environment, sqlx::Error> {
    let role: String = r.try_get("deploy_role")?;
    Ok(Environment {
        name: r.try_get("name")?,
        feeds_from: r.try_get("feeds_from")?,
        soak_ms: r.try_get("soak_ms")?,
        deploy_role: Role::parse(&role).unwrap_or(Role::Admin),
        event_retention_ms: r.try_get("event_retention_ms")?,
        evidence: Evidence {
            min_requests: r.try_get("min_requests")?,
            max_error_rate: r.try_get("max_error_rate")?,
            max_escalation_rate: r.try_get("max_escalation_rate")?,
            max_block_rate: r.try_get("max_block_rate")?,
        },
    })
}

const COLUMNS: &str = "name, feeds_from, soak_ms, deploy_role, event_retention_ms, min_requests, max_error_rate, max_escalation_rate, max_block_rate";

pub async fn list(conn: &mut AnyConnection) -> Result<Vec<Environment>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM environments ORDER BY created_at, name"
    ))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn get(conn: &mut AnyConnection, name: &str) -> Result<Option<Environment>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM environments WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The environment or `404 UNKNOWN_ENVIRONMENT`.
pub async fn require(conn: &mut AnyConnection, name: &str) -> Result<Environment, ApiError> {
    get(conn, name).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::UnknownEnvironment,
            format!("no environment `{name}`"),
        )
    })
}

pub async fn insert(
    conn: &mut AnyConnection,
    env: &Environment,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO environments (name, feeds_from, soak_ms, deploy_role, created_at, event_retention_ms, min_requests, max_error_rate, max_escalation_rate, max_block_rate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&env.name)
    .bind(env.feeds_from.as_deref())
    .bind(env.soak_ms)
    .bind(env.deploy_role.as_str())
    .bind(now)
    .bind(env.event_retention_ms)
    .bind(env.evidence.min_requests)
    .bind(env.evidence.max_error_rate)
    .bind(env.evidence.max_escalation_rate)
    .bind(env.evidence.max_block_rate)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update(conn: &mut AnyConnection, env: &Environment) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE environments SET feeds_from = $1, soak_ms = $2, deploy_role = $3, event_retention_ms = $4, min_requests = $5, max_error_rate = $6, max_escalation_rate = $7, max_block_rate = $8 WHERE name = $9",
    )
    .bind(env.feeds_from.as_deref())
    .bind(env.soak_ms)
    .bind(env.deploy_role.as_str())
    .bind(env.event_retention_ms)
    .bind(env.evidence.min_requests)
    .bind(env.evidence.max_error_rate)
    .bind(env.evidence.max_escalation_rate)
    .bind(env.evidence.max_block_rate)
    .bind(&env.name)
    .execute(conn)
    .await?;
    Ok(())
}
