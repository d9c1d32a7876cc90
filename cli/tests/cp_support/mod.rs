//! Shared harness of the `control_plane_*` tests: the real `palisade control-plane` binary on
//! port 0 over either backend (a SQLite file in a temporary directory, or a fresh database in a
//! PostgreSQL cluster shared by the tests of one test binary), the CLI run against it, a minimal
//! HTTP/1.1 client for the gateway protocol, and polling with deadlines instead of sleeps.
//!
//! Every test body is a `fn(Backend)`; [`on_both_backends!`] turns each into two `#[test]`s,
//! `NAME::sqlite` and `NAME::postgres`, so the whole suite runs against both databases. The
//! cluster is started by the first test that needs it and stopped when the last test holding it
//! ends (it is reference-counted, not a process-lifetime static, so no `postgres` outlives the
//! test binary).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::zombie_processes,
    reason = "each test file uses a different part of the harness; a child that never printed its address dies with the test process"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_support::PostgresServer;

/// For each named test body `fn NAME(Backend)`, a module `NAME` with the `#[test]`s `sqlite` and
/// `postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::cp_support::Backend::Sqlite);
                }

                #[test]
                fn postgres() {
                    super::$name($crate::cp_support::Backend::Postgres);
                }
            }
        )+
    };
}

/// The registry database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's registry: a SQLite file, or a database of its own in the shared cluster. Clones
/// name the same database (two control-plane processes on one registry).
#[derive(Debug, Clone)]
pub struct Database {
    pub backend: Backend,
    /// What `--database` is given.
    pub url: String,
    _cluster: Option<Arc<PostgresServer>>,
}

/// The test binary's PostgreSQL cluster, started on first use and stopped with its last user.
#[expect(
    clippy::disallowed_types,
    reason = "test harness on no async runtime; the lock is held only while a cluster starts"
)]
fn cluster() -> Arc<PostgresServer> {
    use std::sync::Mutex;
    static SHARED: Mutex<Weak<PostgresServer>> = Mutex::new(Weak::new());
    let mut slot = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(pg) = slot.upgrade() {
        return pg;
    }
    let pg = Arc::new(PostgresServer::start());
    *slot = Arc::downgrade(&pg);
    pg
}

impl Database {
    /// A new, empty registry for one test; a SQLite file goes into `dir`.
    pub fn fresh(backend: Backend, dir: &std::path::Path) -> Self {
        match backend {
            Backend::Sqlite => Self {
                backend,
                url: dir.join("registry.db").display().to_string(),
                _cluster: None,
            },
            Backend::Postgres => {
                static NEXT: AtomicU32 = AtomicU32::new(1);
                let pg = cluster();
                let name = format!("palisade_{}", NEXT.fetch_add(1, Ordering::Relaxed));
                Self {
                    backend,
                    url: pg.create_database(&name),
                    _cluster: Some(pg),
                }
            }
        }
    }

    /// Make every later admin-log insert fail, as a full disk or a revoked grant would.
    pub fn break_admin_log(&self) {
        match self.backend {
            Backend::Sqlite => self.execute(&[
                "CREATE TRIGGER log_full BEFORE INSERT ON admin_log BEGIN SELECT RAISE(ABORT, 'log full'); END",
            ]),
            Backend::Postgres => self.execute(&[
                "CREATE FUNCTION log_full() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'log full'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER log_full BEFORE INSERT ON admin_log FOR EACH ROW EXECUTE FUNCTION log_full()",
            ]),
        };
    }

    /// The registry's URL as sqlx takes it.
    fn sqlx_url(&self) -> String {
        match self.backend {
            Backend::Sqlite => format!("sqlite://{}", self.url),
            Backend::Postgres => self.url.clone(),
        }
    }

    /// Hold a lock that stops event writes for `hold`, from another connection, as a long
    /// transaction of someone with database access would: SQLite's write lock, Postgres's lock
    /// on the rollup table (event rows still insert; the rollups, written in commit order,
    /// wait). Returns once the lock is held; the thread lets it go after `hold`.
    pub fn hold_event_writes(&self, hold: Duration) -> std::thread::JoinHandle<()> {
        let url = self.sqlx_url();
        let statements: &[&str] = match self.backend {
            Backend::Sqlite => &["BEGIN IMMEDIATE"],
            Backend::Postgres => &["BEGIN", "LOCK TABLE event_rollups IN EXCLUSIVE MODE"],
        };
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            use sqlx::Connection as _;
            runtime().block_on(async {
                let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
                for sql in statements {
                    sqlx::query(sql).execute(&mut conn).await.unwrap();
                }
                held_tx.send(()).unwrap();
                tokio::time::sleep(hold).await;
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            });
        });
        held_rx.recv().unwrap();
        holder
    }

    /// Run statements on the registry directly, as someone with database access might.
    pub fn execute(&self, statements: &[&str]) -> u64 {
        let url = self.sqlx_url();
        runtime().block_on(async {
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            let mut affected = 0;
            for sql in statements {
                affected += sqlx::query(sql)
                    .execute(&pool)
                    .await
                    .unwrap()
                    .rows_affected();
            }
            pool.close().await;
            affected
        })
    }
}

/// A runtime for a test's direct database work, with sqlx's drivers installed.
fn runtime() -> tokio::runtime::Runtime {
    sqlx::any::install_default_drivers();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub const ADMIN_KEY: &str = "pal_test_admin_key_0123456789abcdef";

pub const PACK_V1: &str = "pack:\n  name: support\n  version: 1.0.0\npolicies:\n  chain: [audit-logger, budget-enforcer]\npolicy:\n  audit-logger:\n    retention_days: 30\n  budget-enforcer: {}\n";

/// `PACK_V1` with another version and a shorter retention (looser).
pub fn pack(version: &str, retention_days: u32) -> String {
    PACK_V1.replace("1.0.0", version).replace(
        "retention_days: 30",
        &format!("retention_days: {retention_days}"),
    )
}

pub struct ControlPlane {
    child: Child,
    pub url: String,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub db: Database,
    pub stdout_lines: Vec<String>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `palisade gateway --control-plane …` process, killed (by its pid) on drop.
pub struct ManagedGateway {
    pub child: Child,
    /// `http://ADDR`.
    pub url: String,
    /// `ADDR`.
    pub addr: String,
}

impl Drop for ManagedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ManagedGateway {
    /// Start a gateway of `pack` in `env` under the control plane at `cp_url` with the gateway
    /// key `key`, its state (and the pack's relative audit directory) in `dir`, and read its
    /// address from its first line. `PALISADE_TEST_PROVIDER_KEY` is set for packs that use it.
    pub fn start(
        cp_url: &str,
        key: &str,
        env: &str,
        pack: &str,
        dir: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(["gateway", "--control-plane", cp_url, "--environment", env])
            .args(["--pack", pack, "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir)
            .args(extra)
            .current_dir(dir)
            .env("PALISADE_GATEWAY_KEY", key)
            .env("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("palisade gateway listening on ")
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned();
        let addr = url.trim_start_matches("http://").to_owned();
        Self { child, url, addr }
    }
}

pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl ControlPlane {
    /// A control plane with the test admin key on a fresh registry of `backend`.
    pub fn start(backend: Backend, report_interval_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::fresh(backend, dir.path());
        Self::start_with(report_interval_ms, Some(ADMIN_KEY), dir, db)
    }

    /// Another control-plane process on the same registry as `self`.
    pub fn start_another(&self, report_interval_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_with(report_interval_ms, Some(ADMIN_KEY), dir, self.db.clone())
    }

    pub fn start_with(
        report_interval_ms: u64,
        admin_key: Option<&str>,
        dir: tempfile::TempDir,
        db: Database,
    ) -> Self {
        Self::start_with_args(report_interval_ms, admin_key, dir, db, &[])
    }

    /// Like [`start_with`](Self::start_with), with more command-line arguments.
    pub fn start_with_args(
        report_interval_ms: u64,
        admin_key: Option<&str>,
        dir: tempfile::TempDir,
        db: Database,
        extra: &[&str],
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
        cmd.arg("control-plane");
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.arg("--database")
            .arg(&db.url)
            .args(["--report-interval-ms", &report_interval_ms.to_string()])
            .args(extra)
            .env_remove("PALISADE_ADMIN_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(k) = admin_key {
            cmd.env("PALISADE_ADMIN_KEY", k);
        }
        let mut child = cmd.spawn().expect("start the control plane");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the control plane printed its address in time");
            lines.push(line.clone());
            if let Some(url) = line.strip_prefix("palisade control-plane listening on ") {
                let addr = url.trim_start_matches("http://").to_owned();
                return Self {
                    child,
                    url: url.to_owned(),
                    addr,
                    dir,
                    db,
                    stdout_lines: lines,
                };
            }
        }
    }

    /// Stop the process and hand back its directory and database (to restart on them).
    pub fn stop(mut self) -> (tempfile::TempDir, Database) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        (std::mem::replace(&mut self.dir, dir), self.db.clone())
    }

    /// Run `palisade ARGS` against this control plane with `key` as PALISADE_SERVICE_KEY.
    pub fn cli(&self, key: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
        cmd.args(args)
            .env("PALISADE_CONTROL_PLANE", &self.url)
            .env_remove("PALISADE_SERVICE_KEY");
        if let Some(k) = key {
            cmd.env("PALISADE_SERVICE_KEY", k);
        }
        cmd.output().expect("run palisade")
    }

    /// Write `text` to a file in the test directory and return its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// Create a key with the admin key; returns the secret.
    pub fn create_key(&self, role: &str, environment: Option<&str>) -> String {
        let mut args = vec!["keys", "create", "--role", role];
        if let Some(e) = environment {
            args.extend(["--environment", e]);
        }
        let o = self.cli(Some(ADMIN_KEY), &args);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    }

    /// One HTTP/1.1 request with `Connection: close`, a JSON body and a JSON answer.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> HttpAnswer {
        let payload = body.map(Value::to_string).unwrap_or_default();
        let bearer = key.map(|k| format!("Bearer {k}"));
        let mut all: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("Authorization", b))
            .into_iter()
            .collect();
        all.extend_from_slice(headers);
        let (status, headers, body) = self.http_text(method, path, &all, &payload);
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap()
        };
        HttpAnswer {
            status,
            headers,
            body,
        }
    }

    /// One HTTP/1.1 request with a raw body; the answer's status, headers and body as text.
    pub fn http_text(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    pub fn register(&self, key: &str, id: &str, env: &str) -> HttpAnswer {
        let body = json!({ "instance": instance(id, env) });
        self.http("POST", "/v1/gateways/register", Some(key), &[], Some(&body))
    }

    /// A status report: active on `active` (version, hash), last attempt `attempt`.
    pub fn report(
        &self,
        key: &str,
        id: &str,
        env: &str,
        active: Option<(&str, &str)>,
        attempt: Option<Value>,
    ) -> HttpAnswer {
        let body = json!({
            "instance": instance(id, env),
            "desired": active.map(|(v, h)| json!({ "version": v, "hash": h, "seen_at": "2025-01-01T00:00:00Z" })),
            "active": active.map(|(v, h)| json!({ "version": v, "hash": h, "activated_at": "2025-01-01T00:00:00Z", "source": "control_plane" })),
            "last_attempt": attempt,
            "counters": { "requests": 10, "blocked": 1, "redactions": 2, "audit_dropped": 0 },
        });
        let a = self.http(
            "POST",
            &format!("/v1/gateways/{id}/report"),
            Some(key),
            &[],
            Some(&body),
        );
        assert_eq!(a.status, 204, "report: {}", a.body);
        a
    }

    /// The status matrix as JSON (admin key).
    pub fn status_json(&self) -> Value {
        self.http("GET", "/v1/status", Some(ADMIN_KEY), &[], None)
            .body
    }

    /// The state the status shows for gateway `id`.
    pub fn state_of(&self, id: &str) -> Option<String> {
        let s = self.status_json();
        s["entries"]
            .as_array()?
            .iter()
            .flat_map(|e| e["gateways"].as_array().cloned().unwrap_or_default())
            .find(|g| g["id"] == id)
            .and_then(|g| g["state"].as_str().map(str::to_owned))
    }

    /// Push `yaml` with the admin key; returns the hash.
    pub fn push(&self, yaml: &str) -> String {
        let a = self.http(
            "POST",
            "/v1/packs",
            Some(ADMIN_KEY),
            &[],
            Some(&json!({ "yaml": yaml, "note": "test push for dev" })),
        );
        assert!(
            a.status == 201 || a.status == 200,
            "push: {} {}",
            a.status,
            a.body
        );
        a.body["hash"].as_str().unwrap().to_owned()
    }
}

pub fn instance(id: &str, env: &str) -> Value {
    json!({ "id": id, "environment": env, "pack": "support", "build": "test", "started_at": "2025-01-01T00:00:00Z" })
}

pub fn ack(version: &str) -> Value {
    json!({ "version": version, "at": "2025-01-01T00:00:00Z", "result": "ACK" })
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Poll `f` until it returns `Some`, or fail after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // A short pause between polls of a condition with a deadline, not a wait for an event.
        std::thread::park_timeout(Duration::from_millis(50));
    }
}
