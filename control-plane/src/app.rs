//! The control plane's shared state and the cross-cutting rules every handler uses: who is
//! calling, whether their role and scope allow an action, and recording a refusal.
//!
//! A refusal of a policy change (a viewer deploying, a gateway key pushing, a deployer touching
//! prod) is appended to the admin log before the 403 is returned. A missing or wrong key is a
//! 401 and is not logged: an unauthenticated caller must not be able to grow the log.

use std::sync::Arc;

use serde_json::json;

use crate::adminlog::{self, Entry};
use crate::clock::Clock;
use crate::db::{Db, OpenError};
use crate::envs;
use crate::error::ApiError;
use crate::keys::{self, Caller, NewKey, Role};
use crate::state::Timing;
use crate::watch::DesiredWatch;

/// How the control plane is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://…`, `postgres://…` or a SQLite file path.
    pub database: String,
    /// How often gateways are asked to report; OFFLINE is 3 intervals of silence.
    pub report_interval_ms: u64,
    /// The admin key to seed into an empty registry (from `PALISADE_ADMIN_KEY`); `None`
    /// generates one.
    pub admin_key: Option<String>,
    /// A gateway silent this long leaves the fleet view (status, promotion gates) and its row
    /// is deleted at the next registration.
    pub forget_gateways_after_ms: u64,
}

/// Default gateway report interval.
pub const DEFAULT_REPORT_INTERVAL_MS: u64 = 2000;
/// Default time after which a silent gateway is forgotten.
pub const DEFAULT_FORGET_GATEWAYS_AFTER_MS: u64 = 15 * 60 * 1000;

/// What an action needs from a key's environment scope.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Registry-wide data that does not change what runs anywhere (push): any scope.
    Registry,
    /// A change to one environment: the key's scope must cover it.
    Environment(&'a str),
    /// Keys and environments themselves: only an unscoped key.
    Global,
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    pub(crate) db: Db,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) watch: DesiredWatch,
    pub(crate) timing: Timing,
    pub(crate) metrics: crate::metrics::Metrics,
    /// The commit order of event writes (ingest and retention) within this process: stamps
    /// grow in commit order (`order`). On Postgres the primary key keeps concurrent processes
    /// idempotent.
    pub(crate) event_order: crate::order::CommitOrder,
    /// Event writes holding a connection (`order::MAX_WRITERS`).
    pub(crate) event_writers: Arc<tokio::sync::Semaphore>,
    /// Event writes in flight. Each runs on a task of its own, so a gateway that hangs up
    /// mid-write cannot cancel it between its commit and the end of its ticket (the order would
    /// then let later writes commit before it lands); shutdown waits for them
    /// ([`App::finish_event_writes`]).
    pub(crate) event_tasks: tokio_util::task::TaskTracker,
    /// The last whole-chain verification of the admin log and when it ran (the console's history
    /// page reuses it for [`CHAIN_CHECK_MAX_AGE_MS`]; the API verifies on every call).
    chain_check: arc_swap::ArcSwapOption<(i64, adminlog::ChainReport)>,
}

/// How old a chain verification the console shows may be.
pub(crate) const CHAIN_CHECK_MAX_AGE_MS: i64 = 60_000;

impl App {
    /// Open the registry, migrate it, and seed environments and the first admin key when empty.
    /// Returns the generated admin key when one was generated (print it once).
    pub async fn open(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Self>, Option<String>), StartError> {
        let db = Db::open(&config.database).await?;
        use sqlx::Row as _;
        let newest: i64 = sqlx::query("SELECT COALESCE(MAX(received_at), 0) AS newest FROM events")
            .fetch_one(&mut *db.read().await?)
            .await?
            .try_get("newest")?;
        let app = Self {
            db,
            clock,
            watch: DesiredWatch::default(),
            timing: Timing {
                report_interval_ms: i64::try_from(config.report_interval_ms.max(10))
                    .unwrap_or(i64::MAX),
                forget_after_ms: i64::try_from(config.forget_gateways_after_ms).unwrap_or(i64::MAX),
            },
            metrics: crate::metrics::Metrics::new()?,
            event_order: crate::order::CommitOrder::starting_at(newest),
            event_writers: Arc::new(tokio::sync::Semaphore::new(crate::order::MAX_WRITERS)),
            event_tasks: tokio_util::task::TaskTracker::new(),
            chain_check: arc_swap::ArcSwapOption::empty(),
        };
        let generated = app.seed(config.admin_key.as_deref()).await?;
        Ok((Arc::new(app), generated))
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// After the server stopped: let the event writes in flight finish (each is bounded by its
    /// turn timeout and its statements), within `deadline`.
    pub async fn finish_event_writes(&self, deadline: std::time::Duration) {
        self.event_tasks.close();
        if tokio::time::timeout(deadline, self.event_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                writes = self.event_tasks.len(),
                "event writes still running at shutdown; their batches are sent again"
            );
        }
    }

    /// Delete every environment's decision events past its retention, in bounded batches (each
    /// its own transaction, taking the ingest lock only for that batch, so ingest goes on in
    /// between). Returns the events deleted.
    pub async fn prune_events(&self) -> Result<u64, sqlx::Error> {
        let list = envs::list(&mut *self.db.read().await?).await?;
        let mut total = 0;
        for env in list {
            loop {
                let cutoff = env.retention_cutoff(self.now());
                let n = {
                    let _writer = self.event_writers.acquire().await;
                    let mut tx = self.db.pool().begin().await?;
                    let ticket = self.event_order.take(self.now());
                    ticket
                        .turn()
                        .await
                        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                    let n = crate::events::prune(&mut tx, &env.name, cutoff).await?;
                    tx.commit().await?;
                    n
                };
                total += n;
                if n < crate::events::PRUNE_BATCH.unsigned_abs() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        if self.db.backend() == crate::db::Backend::Sqlite {
            // Keep the query planner's statistics current as the events table grows (Postgres
            // does this in autovacuum); cheap when nothing changed much.
            sqlx::query("PRAGMA optimize")
                .execute(&mut *self.db.read().await?)
                .await?;
        }
        Ok(total)
    }

    async fn seed(&self, admin_key: Option<&str>) -> Result<Option<String>, StartError> {
        let now = self.now();
        let (_guard, mut tx) = self.db.begin_write().await?;
        if envs::list(&mut tx).await?.is_empty() {
            for env in envs::defaults() {
                envs::insert(&mut tx, &env, now).await?;
                let entry = Entry {
                    actor: "bootstrap",
                    action: "environment.create",
                    outcome: "ok",
                    environment: Some(&env.name),
                    pack: None,
                    detail: env.to_json(),
                };
                adminlog::append(&mut tx, now, &entry).await?;
            }
        }
        let mut generated = None;
        if keys::count(&mut tx).await? == 0 {
            let key = match admin_key {
                Some(k) if keys::acceptable_secret(k) => keys::from_secret(k.to_owned()),
                Some(_) => return Err(StartError::AdminKey),
                None => {
                    let k = keys::generate().map_err(|e| StartError::Random(e.to_string()))?;
                    generated = Some(k.secret.clone());
                    k
                }
            };
            keys::insert(&mut tx, &key, Role::Admin, None, "bootstrap", now).await?;
            let entry = Entry {
                actor: "bootstrap",
                action: "key.create",
                outcome: "ok",
                environment: None,
                pack: None,
                detail: json!({ "id": key.id, "role": "admin", "seeded_from_env": admin_key.is_some() }),
            };
            adminlog::append(&mut tx, now, &entry).await?;
        }
        tx.commit().await?;
        Ok(generated)
    }

    /// A verification of the whole admin-log chain no older than `max_age_ms`, and when it ran:
    /// the cached one, or a fresh one (which is then cached).
    pub(crate) async fn chain_report(
        &self,
        max_age_ms: i64,
    ) -> Result<(adminlog::ChainReport, i64), sqlx::Error> {
        let now = self.now();
        if let Some(c) = self.chain_check.load_full() {
            if now - c.0 <= max_age_ms {
                return Ok((c.1.clone(), c.0));
            }
        }
        let report = adminlog::verify(&mut *self.db.read().await?).await?;
        self.chain_check
            .store(Some(std::sync::Arc::new((now, report.clone()))));
        Ok((report, now))
    }

    /// The caller behind an `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let mut conn = self.db.read().await?;
        keys::authenticate(&mut conn, authorization).await
    }

    /// Allow `caller` to do `action` if its role is at least `required` and its scope fits;
    /// otherwise record the refusal and return 403.
    pub async fn require_role(
        &self,
        caller: &Caller,
        required: Role,
        scope: Scope<'_>,
        action: &str,
        pack: Option<&str>,
    ) -> Result<(), ApiError> {
        let environment = match scope {
            Scope::Environment(e) => Some(e),
            _ => None,
        };
        let scope_ok = match scope {
            Scope::Registry => true,
            Scope::Environment(e) => caller.covers(e),
            Scope::Global => caller.environment.is_none(),
        };
        if caller.role.at_least(required) && scope_ok {
            return Ok(());
        }
        let reason = if !caller.role.at_least(required) {
            format!(
                "a {} key cannot {action}; it needs the {} role",
                caller.role.as_str(),
                required.as_str()
            )
        } else {
            format!(
                "this key is limited to environment {}",
                caller.environment.as_deref().unwrap_or("-")
            )
        };
        Err(self.refuse(caller, action, environment, pack, reason).await)
    }

    /// Record a refused attempt and return the 403 for it. If even the record cannot be
    /// written, the caller still gets a refusal (a storage error).
    pub async fn refuse(
        &self,
        caller: &Caller,
        action: &str,
        environment: Option<&str>,
        pack: Option<&str>,
        reason: String,
    ) -> ApiError {
        let detail = json!({ "reason": reason, "role": caller.role.as_str() });
        if let Err(e) = self
            .log_refusal(caller, action, environment, pack, detail)
            .await
        {
            return ApiError::Storage(e);
        }
        ApiError::Forbidden(reason)
    }

    /// Append a refused attempt to the admin log in its own transaction.
    pub async fn log_refusal(
        &self,
        caller: &Caller,
        action: &str,
        environment: Option<&str>,
        pack: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let now = self.now();
        let (_guard, mut tx) = self.db.begin_write().await?;
        let entry = Entry {
            actor: &caller.key_id,
            action,
            outcome: "refused",
            environment,
            pack,
            detail,
        };
        adminlog::append(&mut tx, now, &entry).await?;
        tx.commit().await
    }
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot seed the registry: {0}")]
    Seed(#[from] sqlx::Error),
    #[error("PALISADE_ADMIN_KEY must be 16 to 256 printable characters without spaces")]
    AdminKey,
    #[error("cannot generate the admin key: {0}")]
    Random(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A new key to show once: the id and the secret.
pub fn shown_once(key: &NewKey) -> serde_json::Value {
    json!({ "id": key.id, "key": key.secret })
}
