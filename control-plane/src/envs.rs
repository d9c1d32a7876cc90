//! Environments: the promotion path (`feeds_from`), the soak time a source must be verified for
//! before promoting into an environment, and the role a deploy into it requires.
//!
//! On first start `dev`, `staging` (fed from dev, no soak) and `prod` (fed from staging, 60 s
//! soak, admin to deploy) are created. Soak and role are settings, not code, so tests and small
//! installations can choose other values. Deleting an environment is not offered: its history
//! must stay readable.

use serde_json::{json, Value};
use sqlx::{AnyConnection, Row as _};

use crate::error::ApiError;
use crate::keys::Role;

/// One environment's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub name: String,
    pub feeds_from: Option<String>,
    pub soak_ms: i64,
    pub deploy_role: Role,
}

impl Environment {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "feeds_from": self.feeds_from,
            "soak_ms": self.soak_ms,
            "deploy_role": self.deploy_role.as_str(),
        })
    }
}

/// The environments a fresh registry starts with.
pub fn defaults() -> Vec<Environment> {
    let env = |name: &str, from: Option<&str>, soak_ms, deploy_role| Environment {
        name: name.to_owned(),
        feeds_from: from.map(str::to_owned),
        soak_ms,
        deploy_role,
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
    })
}

pub async fn list(conn: &mut AnyConnection) -> Result<Vec<Environment>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT name, feeds_from, soak_ms, deploy_role FROM environments ORDER BY created_at, name",
    )
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn get(conn: &mut AnyConnection, name: &str) -> Result<Option<Environment>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT name, feeds_from, soak_ms, deploy_role FROM environments WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The environment or `404 UNKNOWN_ENVIRONMENT`.
pub async fn require(conn: &mut AnyConnection, name: &str) -> Result<Environment, ApiError> {
    get(conn, name).await?.ok_or_else(|| {
        ApiError::not_found("UNKNOWN_ENVIRONMENT", format!("no environment `{name}`"))
    })
}

pub async fn insert(
    conn: &mut AnyConnection,
    env: &Environment,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO environments (name, feeds_from, soak_ms, deploy_role, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&env.name)
    .bind(env.feeds_from.as_deref())
    .bind(env.soak_ms)
    .bind(env.deploy_role.as_str())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update(conn: &mut AnyConnection, env: &Environment) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE environments SET feeds_from = $1, soak_ms = $2, deploy_role = $3 WHERE name = $4",
    )
    .bind(env.feeds_from.as_deref())
    .bind(env.soak_ms)
    .bind(env.deploy_role.as_str())
    .bind(&env.name)
    .execute(conn)
    .await?;
    Ok(())
}
