//! Driving the real `palisade gateway` binary on port 0, in front of the mock provider of
//! `test-support`.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "shared test support: each test binary uses a different part"
)]

pub use test_support::{client, mock};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PROVIDER_KEY: &str = "sk-provider-secret";

/// A temp directory removed on drop.
pub struct Dir(pub tempfile::TempDir);

impl Dir {
    pub fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The same pack shape as the gateway's in-process tests.
pub fn pack(base_url: &str, version: &str, chain: &str, policy: &str) -> String {
    format!(
        "pack:\n  name: test\n  version: {version}\n  enabled: true\npolicies:\n  chain: [{chain}]\nproviders:\n  mock:\n    base_url: {base_url}\n    api_key_env: PALISADE_TEST_PROVIDER_KEY\n    connect_timeout_ms: 1000\n    first_byte_timeout_ms: 5000\nmodels:\n  gpt-4o-mini:\n    input_usd_per_mtok: 0.15\n    output_usd_per_mtok: 0.6\n  text-embedding-3-small: {{}}\n{policy}"
    )
}

/// A pack whose audit log makes every response wait for its record on disk (`on_queue_full:
/// block`, `fsync_interval_ms: 0`), written to `audit_dir`.
#[allow(dead_code, reason = "each test binary uses the helpers it needs")]
pub fn durable_audit_pack(base_url: &str, audit_dir: &Path) -> String {
    let policy = format!(
        "policy:\n  audit-logger:\n    dir: {}\n    fsync_interval_ms: 0\n    on_queue_full: block\n",
        audit_dir.display()
    );
    pack(base_url, "1.0.0", "audit-logger", &policy)
}

/// A running gateway process, killed (by its pid) on drop.
pub struct GatewayProcess {
    pub child: Child,
    pub url: String,
    /// The admin listener's URL, when started with `--admin-listen`.
    pub admin: Option<String>,
    pub stderr_path: PathBuf,
}

impl GatewayProcess {
    /// Start `palisade gateway --pack PACK --environment dev --listen 127.0.0.1:0 EXTRA...` and
    /// read the bound address from its first stdout line.
    pub fn start(pack: &Path, log_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(pack, log_dir, extra, &[])
    }

    /// [`GatewayProcess::start`] with extra environment variables.
    pub fn start_with_env(
        pack: &Path,
        log_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let stderr_path = log_dir.join(format!("gateway-{}.log", std::process::id()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(["gateway", "--pack"])
            .arg(pack)
            .args(["--environment", "dev", "--listen", "127.0.0.1:0"])
            .args(extra)
            // The pack's default audit dir is relative: keep it in the test's directory.
            .current_dir(log_dir)
            .env("PALISADE_TEST_PROVIDER_KEY", PROVIDER_KEY)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // With --admin-listen the next line names the admin listener.
        let admin = extra.contains(&"--admin-listen").then(|| {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            l.trim()
                .strip_prefix("palisade gateway admin (/status, /metrics) on ")
                .unwrap_or_else(|| panic!("unexpected second line {l:?}"))
                .to_owned()
        });
        let url = line
            .trim()
            .strip_prefix("palisade gateway listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; stderr: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            })
            .to_owned();
        Self {
            child,
            url,
            admin,
            stderr_path,
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Send SIGHUP and wait until `/status` reports the reload rejected; returns `/status`.
    pub async fn reload_rejected(&self) -> serde_json::Value {
        self.signal("HUP");
        let c = client::client();
        let url = self.api("/status");
        client::wait_until(Duration::from_secs(10), "the reload is rejected", || {
            let (c, u) = (c.clone(), url.clone());
            async move { client::get(&c, &u).await.json()["last_reload"]["result"] == "rejected" }
        })
        .await;
        client::get(&c, &url).await.json()
    }

    /// A chat completion through this gateway.
    pub async fn chat(&self, text: &str) -> client::Reply {
        let c = client::client();
        let body = client::chat("gpt-4o-mini", text, false);
        client::post(&c, &self.api("/v1/chat/completions"), &body, None).await
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Wait for the process to exit (after a signal), within `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the gateway did not exit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every line of the audit log in `dir`, parsed, in chain order (files from
/// `gateway::audit::files::list`). `tolerate_torn` skips a line that is not JSON (the torn tail
/// a crash leaves); otherwise such a line fails the test.
#[allow(dead_code, reason = "each test binary uses the helpers it needs")]
pub fn audit_lines(dir: &Path, tolerate_torn: bool) -> Vec<serde_json::Value> {
    let files = gateway::audit::files::list(dir).unwrap();
    let mut out = Vec::new();
    for f in files {
        for l in std::fs::read_to_string(&f).unwrap().lines() {
            match serde_json::from_str(l) {
                Ok(v) => out.push(v),
                Err(e) if !tolerate_torn => panic!("{}: not an audit line ({e}): {l}", f.display()),
                Err(_) => {}
            }
        }
    }
    out
}
