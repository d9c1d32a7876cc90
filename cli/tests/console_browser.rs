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

use std::path::Path;
use std::process::Command;

use cp_support::{text, Backend, ControlPlane, ManagedGateway, ADMIN_KEY};
use gateway_support::{mock::MockProvider, pack};

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
    let gateway = |env: &str, dir: &Path| {
        let key = cp.create_key("gateway", Some(env));
        ManagedGateway::start(&cp.url, &key, env, "test", dir, &[])
    };
    let dev = gateway("dev", dirs[0].path());
    let staging = gateway("staging", dirs[1].path());

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
