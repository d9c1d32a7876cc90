//! One audit directory, one writer: a second gateway pointed at a directory another running
//! gateway writes refuses to start (two interleaved chains would verify as neither), and a
//! reload to an audit directory that cannot be written is a failed reload — the last good
//! version keeps serving and `/status` says why.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::path::Path;
use std::process::Command;

use gateway_support::mock::MockProvider;
use gateway_support::{pack, Dir, GatewayProcess, PROVIDER_KEY};

fn audit_pack(mock: &MockProvider, version: &str, dir: &Path) -> String {
    let policy = format!("policy:\n  audit-logger:\n    dir: {}\n", dir.display());
    pack(&mock.base_url(), version, "audit-logger", &policy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_audit_directory_refuses_to_start() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &audit_pack(&mock, "1.0.0", &dir.path().join("audit")),
    );
    let gw = GatewayProcess::start(&p, dir.path(), &[]);

    let second = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_palisade"))
        .args(["gateway", "--pack"])
        .arg(&p)
        .args([
            "--environment",
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(dir.path().join("state-2"))
        .env("PALISADE_TEST_PROVIDER_KEY", PROVIDER_KEY)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another running gateway"), "{err}");

    // The first one is untouched, and its lock goes with it: a new gateway may write there.
    let r = gw.chat("hi").await;
    assert_eq!(r.status, 200, "{}", r.text());
    drop(gw);
    let again = GatewayProcess::start(&p, dir.path(), &[]);
    assert_eq!(again.chat("hi").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_an_audit_directory_that_cannot_be_written_fails_and_the_old_version_serves() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &audit_pack(&mock, "1.0.0", &dir.path().join("audit")),
    );
    let gw = GatewayProcess::start(&p, dir.path(), &["--no-watch"]);
    // A directory below a regular file cannot be made, not even by root.
    let file = dir.write("not-a-directory", "x");
    std::fs::write(&p, audit_pack(&mock, "2.0.0", &file.join("audit"))).unwrap();
    let status = gw.reload_rejected().await;
    assert_eq!(status["version"], "1.0.0");
    let error = status["last_reload"]["error"].as_str().unwrap();
    assert!(
        error.contains("audit directory") && error.contains("not-a-directory"),
        "{status}"
    );
    let r = gw.chat("hi").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-palisade-pack-version"), "1.0.0");
}
