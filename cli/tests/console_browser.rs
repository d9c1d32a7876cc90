//! The operator console in a real browser: Debian's Chromium driven by Playwright for Python
//! (`tests/python/console_e2e.py`) against the real control plane, two real gateways (dev and
//! staging) and the mock provider. The script walks the whole release as a user would — sign
//! in, deploy, edit with a typo and see the diagnostic at its line, save, review the stricter
//! diff, deploy and watch the gateway turn SYNCED, compare, promote through failing then passing
//! gates, roll back, resolve an escalation, create and revoke keys — and checks that a viewer
//! sees no enabled change and that forged changes are refused. Screenshots of every page land in
//! `target/tmp/console-screenshots/`.
//!
//! This test fails — it does not skip — when Playwright or Chromium is missing: `.ci/run`
//! installs both and names the browser in `PALISADE_CHROMIUM`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;
mod gateway_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use cp_support::{text, Backend, ControlPlane, ADMIN_KEY};
use gateway_support::{mock::MockProvider, pack, PROVIDER_KEY};

struct Gw {
    child: Child,
    url: String,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(cp_url: &str, key: &str, env: &str, dir: &Path) -> Gw {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["gateway", "--control-plane", cp_url, "-e", env])
        .args(["--pack", "test", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir)
        .current_dir(dir)
        .env("PALISADE_GATEWAY_KEY", key)
        .env("PALISADE_TEST_PROVIDER_KEY", PROVIDER_KEY)
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
    Gw { child, url }
}

fn chromium() -> String {
    std::env::var("PALISADE_CHROMIUM").unwrap_or_else(|_| {
        ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("chromium")
            .to_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_walks_the_release_in_the_console() {
    let mock = MockProvider::start().await;
    let cp = ControlPlane::start(Backend::Sqlite, 200);
    let policy = "policy:\n  pii-detector:\n    action: escalate\n    entities: [email]\n    scan: [request]\n";
    cp.push(&pack(
        &mock.base_url(),
        "1.0.0",
        "audit-logger, pii-detector",
        policy,
    ));
    // Prod: no soak (the test cannot wait a minute) and runtime evidence of one request.
    let o = cp.cli(
        Some(ADMIN_KEY),
        &[
            "environments",
            "set",
            "prod",
            "--soak-ms",
            "0",
            "--min-requests",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let viewer = cp.create_key("viewer", None);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let dev = start_gateway(
        &cp.url,
        &cp.create_key("gateway", Some("dev")),
        "dev",
        dirs[0].path(),
    );
    let staging = start_gateway(
        &cp.url,
        &cp.create_key("gateway", Some("staging")),
        "staging",
        dirs[1].path(),
    );

    let shots = concat!(env!("CARGO_TARGET_TMPDIR"), "/console-screenshots");
    let _ = std::fs::remove_dir_all(shots);
    std::fs::create_dir_all(shots).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/console_e2e.py");
    let (cp_url, dev_url, staging_url) = (cp.url.clone(), dev.url.clone(), staging.url.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("CP_URL", cp_url)
            .env("ADMIN_KEY", ADMIN_KEY)
            .env("VIEWER_KEY", viewer)
            .env("DEV_GATEWAY", dev_url)
            .env("STAGING_GATEWAY", staging_url)
            .env("SHOTS", shots)
            .env("CHROMIUM", chromium())
            .output()
            .expect("python3 with Playwright is required (pip install playwright)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "the console walk failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    for page in [
        "sign-in",
        "environments",
        "packs",
        "pack",
        "editor-typo",
        "deploy-review",
        "gateways-synced",
        "compare",
        "promote-refused",
        "promote-ready",
        "events",
        "escalations",
        "history",
        "keys-created",
        "viewer-environments",
    ] {
        let p = Path::new(shots).join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&p).is_ok_and(|m| m.len() > 1000),
            "no screenshot {}",
            p.display()
        );
    }
    drop((dev, staging));
}
