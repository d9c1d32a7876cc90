//! The registry's storage: one sqlx `AnyPool` over SQLite (default) or Postgres, the schema
//! migrations that run at start-up, and the write lock.
//!
//! Portability rules, so that Postgres follows on the same code path: no query macros, `$N`
//! placeholders (sqlx's SQLite driver accepts them), `BIGINT` Unix milliseconds for time, `TEXT`
//! for everything else, no autoincrement (sequence numbers are computed inside the writing
//! transaction and guarded by a primary key), and `INSERT .. ON CONFLICT .. DO UPDATE` which both
//! accept. Writes go through [`Db::begin_write`], which serialises them inside this process and,
//! on Postgres, across processes too (a transaction-scoped advisory lock), so two control planes
//! on one database append to the pointer history and the admin log one after the other. Should a
//! writer ever bypass that lock, the primary key still refuses the second of two racing changes
//! rather than forking the chain. Migrations run at start-up under a session advisory lock on
//! Postgres, so two processes starting at once do not both create the schema (SQLite's own file
//! lock serialises them there). What this module does not do: pooling knobs or connection
//! retries.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions as _, Connection as _};
use std::str::FromStr as _;
use tokio::sync::{Mutex, MutexGuard};

/// A write transaction on the registry.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Each migration: a version and the statements that bring the schema to it.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE environments (
            name TEXT PRIMARY KEY,
            feeds_from TEXT,
            soak_ms BIGINT NOT NULL,
            deploy_role TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )",
            "CREATE TABLE pack_versions (
            pack TEXT NOT NULL,
            version TEXT NOT NULL,
            hash TEXT NOT NULL,
            yaml TEXT NOT NULL,
            author TEXT NOT NULL,
            note TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (pack, version)
        )",
            "CREATE TABLE deployments (
            environment TEXT NOT NULL,
            pack TEXT NOT NULL,
            seq BIGINT NOT NULL,
            version TEXT NOT NULL,
            hash TEXT NOT NULL,
            action TEXT NOT NULL,
            actor TEXT NOT NULL,
            note TEXT NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (environment, pack, seq)
        )",
            "CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL,
            role TEXT NOT NULL,
            environment TEXT,
            created_by TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT
        )",
            "CREATE TABLE gateways (
            id TEXT PRIMARY KEY,
            environment TEXT NOT NULL,
            pack TEXT NOT NULL,
            build TEXT NOT NULL,
            started_at TEXT NOT NULL,
            key_id TEXT NOT NULL,
            registered_at BIGINT NOT NULL,
            last_seen_at BIGINT NOT NULL,
            last_report_at BIGINT,
            active_version TEXT,
            active_hash TEXT,
            active_source TEXT,
            active_since BIGINT,
            attempt_version TEXT,
            attempt_result TEXT,
            attempt_error TEXT,
            report TEXT
        )",
            "CREATE TABLE admin_log (
            seq BIGINT PRIMARY KEY,
            at BIGINT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            environment TEXT,
            pack TEXT,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )",
            "CREATE INDEX admin_log_scope ON admin_log (environment, pack)",
        ],
    ),
    (
        2,
        &[
            "CREATE TABLE events (
            request_id TEXT PRIMARY KEY,
            at BIGINT NOT NULL,
            received_at BIGINT NOT NULL,
            environment TEXT NOT NULL,
            gateway TEXT NOT NULL,
            pack TEXT NOT NULL,
            version TEXT NOT NULL,
            hash TEXT NOT NULL,
            route TEXT NOT NULL,
            model_requested TEXT,
            model_used TEXT,
            caller TEXT,
            team TEXT,
            outcome TEXT NOT NULL,
            escalated BIGINT NOT NULL,
            status BIGINT NOT NULL,
            latency_us BIGINT NOT NULL,
            upstream_us BIGINT,
            input_tokens BIGINT,
            output_tokens BIGINT,
            cost_usd DOUBLE PRECISION,
            findings TEXT NOT NULL,
            redacted_text TEXT,
            redacted_response_text TEXT
        )",
            "CREATE INDEX events_env_at ON events (environment, at, request_id)",
            "CREATE INDEX events_env_version_at ON events (environment, version, at)",
            "CREATE INDEX events_env_outcome_at ON events (environment, outcome, at)",
            "CREATE INDEX events_env_caller_at ON events (environment, caller, at)",
            "CREATE INDEX events_received ON events (received_at, request_id)",
            "CREATE INDEX events_at ON events (at, request_id)",
            "CREATE TABLE event_entities (
            request_id TEXT NOT NULL,
            environment TEXT NOT NULL,
            at BIGINT NOT NULL,
            side TEXT NOT NULL,
            entity TEXT NOT NULL,
            findings BIGINT NOT NULL,
            PRIMARY KEY (request_id, side, entity)
        )",
            "CREATE INDEX event_entities_env ON event_entities (environment, entity, at)",
            "CREATE TABLE event_rollups (
            environment TEXT NOT NULL,
            pack TEXT NOT NULL,
            version TEXT NOT NULL,
            hash TEXT NOT NULL,
            span BIGINT NOT NULL,
            bucket BIGINT NOT NULL,
            outcome TEXT NOT NULL,
            requests BIGINT NOT NULL,
            escalated BIGINT NOT NULL,
            PRIMARY KEY (environment, pack, hash, span, bucket, outcome)
        )",
            "CREATE INDEX event_rollups_window ON event_rollups (environment, span, bucket)",
            "CREATE TABLE entity_rollups (
            environment TEXT NOT NULL,
            pack TEXT NOT NULL,
            version TEXT NOT NULL,
            hash TEXT NOT NULL,
            span BIGINT NOT NULL,
            bucket BIGINT NOT NULL,
            side TEXT NOT NULL,
            entity TEXT NOT NULL,
            findings BIGINT NOT NULL,
            requests BIGINT NOT NULL,
            PRIMARY KEY (environment, pack, hash, span, bucket, side, entity)
        )",
            "CREATE INDEX entity_rollups_window ON entity_rollups (environment, span, bucket)",
            "CREATE TABLE escalations (
            id TEXT PRIMARY KEY,
            environment TEXT NOT NULL,
            pack TEXT NOT NULL,
            version TEXT NOT NULL,
            hash TEXT NOT NULL,
            gateway TEXT NOT NULL,
            opened_at BIGINT NOT NULL,
            state TEXT NOT NULL,
            resolution TEXT,
            assignee TEXT,
            note TEXT,
            updated_at BIGINT NOT NULL,
            updated_by TEXT
        )",
            "CREATE INDEX escalations_queue ON escalations (environment, state, opened_at)",
            "ALTER TABLE environments ADD COLUMN event_retention_ms BIGINT",
            "ALTER TABLE environments ADD COLUMN min_requests BIGINT",
            "ALTER TABLE environments ADD COLUMN max_error_rate DOUBLE PRECISION",
            "ALTER TABLE environments ADD COLUMN max_escalation_rate DOUBLE PRECISION",
            "ALTER TABLE environments ADD COLUMN max_block_rate DOUBLE PRECISION",
        ],
    ),
    (
        3,
        &[
            // Console sessions: the token's hash (the token itself lives only in the browser's
            // cookie), the key it stands for and the CSRF token of its forms.
            "CREATE TABLE console_sessions (
            token_hash TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            csrf TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        )",
            // What the requests of a bucket cost: the console's spend and budget burn read it
            // instead of summing events (buckets written before this migration count 0).
            "ALTER TABLE event_rollups ADD COLUMN cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0",
        ],
    ),
    (
        4,
        &[
            // The calls a routed request made (retries, fallbacks) as a JSON list, when more
            // than one.
            "ALTER TABLE events ADD COLUMN attempts TEXT",
        ],
    ),
];

/// Failure to open or migrate the registry.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration {version} failed: {source}")]
    Migrate {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
}

/// Advisory-lock key of the schema migrations (any constant; "palisade" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x7061_6c69_7361_6401;
/// Advisory-lock key every write transaction takes on Postgres.
const WRITE_LOCK: i64 = 0x7061_6c69_7361_6402;

/// Which database the registry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a normalised URL names.
    pub fn of(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// The registry database.
#[derive(Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    write: Mutex<()>,
}

/// `postgres://…` URLs pass unchanged; anything else is SQLite, created when missing — a file
/// path, or a `sqlite:` URL without a `mode` (one with a `mode` keeps it, e.g. `mode=ro`), so
/// `sqlite:///var/lib/palisade/cp.db` behaves like the plain path.
pub fn normalize_url(database: &str) -> String {
    if ["postgres://", "postgresql://"]
        .iter()
        .any(|p| database.starts_with(p))
    {
        return database.to_owned();
    }
    if !database.starts_with("sqlite:") {
        return format!("sqlite://{database}?mode=rwc");
    }
    let has_mode = database
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("mode=")));
    if has_mode || database.contains(":memory:") {
        database.to_owned()
    } else if database.contains('?') {
        format!("{database}&mode=rwc")
    } else {
        format!("{database}?mode=rwc")
    }
}

impl Db {
    /// Connect and bring the schema up to date.
    pub async fn open(database: &str) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let url = normalize_url(database);
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| OpenError::Url(e.to_string()))?
            .disable_statement_logging();
        let sqlite = Backend::of(&url) == Backend::Sqlite;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        // 64 MiB of page cache per connection (the default is 2 MiB): event
                        // ingest touches several indexes per row, and with the default cache
                        // most of its time went to reading and writing pages through the kernel.
                        sqlx::query("PRAGMA cache_size = -65536")
                            .execute(&mut *conn)
                            .await?;
                        // Statement journals (a multi-row upsert keeps one) in memory, not in
                        // temporary files: 16 % of ingest was writing them.
                        sqlx::query("PRAGMA temp_store = MEMORY")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        let backend = Backend::of(&url);
        if backend == Backend::Sqlite {
            // Readers do not block the writer's commit in WAL mode.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(OpenError::Connect)?;
        }
        let db = Self {
            pool,
            backend,
            write: Mutex::new(()),
        };
        db.migrate().await?;
        Ok(db)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection for reads.
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// Start a write transaction. The guard serialises writers of this process; on Postgres the
    /// transaction also holds an advisory lock until it ends, which serialises the writers of
    /// every process on the database.
    pub async fn begin_write(&self) -> Result<(MutexGuard<'_, ()>, Tx), sqlx::Error> {
        let guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            advisory_lock(&mut tx, "pg_advisory_xact_lock", WRITE_LOCK).await?;
        }
        Ok((guard, tx))
    }

    async fn migrate(&self) -> Result<(), OpenError> {
        let mut conn = self.pool.acquire().await.map_err(fail(0))?;
        if self.backend == Backend::Postgres {
            advisory_lock(&mut conn, "pg_advisory_lock", MIGRATION_LOCK)
                .await
                .map_err(fail(0))?;
        }
        let outcome = migrate_on(&mut conn).await;
        if self.backend == Backend::Postgres {
            // Closing the connection would release the lock too; unlock so the pooled
            // connection goes back clean.
            let unlocked = advisory_lock(&mut conn, "pg_advisory_unlock", MIGRATION_LOCK).await;
            if let Err(e) = unlocked {
                conn.detach();
                tracing::warn!(error = %e, "could not release the migration lock; connection closed");
            }
        }
        outcome
    }
}

fn fail(version: i64) -> impl FnOnce(sqlx::Error) -> OpenError {
    move |source| OpenError::Migrate { version, source }
}

/// `SELECT <function>(key)`, wrapped so that the row holds a type every driver of `Any` decodes
/// (the lock functions return `void` or `boolean`).
async fn advisory_lock(
    conn: &mut AnyConnection,
    function: &str,
    key: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "SELECT 1 AS locked FROM (SELECT {function}($1)) AS l"
    ))
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Apply every migration not yet recorded, each in its own transaction.
async fn migrate_on(conn: &mut AnyConnection) -> Result<(), OpenError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(fail(0))?;
    for (version, statements) in MIGRATIONS {
        if applied(conn, *version).await.map_err(fail(*version))? {
            continue;
        }
        let mut tx = conn.begin().await.map_err(fail(*version))?;
        for sql in *statements {
            sqlx::query(sql)
                .execute(&mut *tx)
                .await
                .map_err(fail(*version))?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(crate::clock::Clock::now_ms(&crate::clock::SystemClock))
            .execute(&mut *tx)
            .await
            .map_err(fail(*version))?;
        tx.commit().await.map_err(fail(*version))?;
    }
    Ok(())
}

async fn applied(conn: &mut AnyConnection, version: i64) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
        .bind(version)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}
