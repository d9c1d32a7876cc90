//! Wire compatibility: the official OpenAI Python SDK (from PyPI) runs chat, streaming,
//! embeddings and model listing through the real gateway binary and the mock provider.
//!
//! This test fails — it does not skip — when `python3` or the `openai` package is missing:
//! `.ci/run` installs it (`pip install -r .ci/python-requirements.txt`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use gateway_support::mock::MockProvider;
use gateway_support::{pack, Dir, GatewayProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_unchanged_through_the_gateway() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write("pack.yaml", &pack(&mock.base_url(), "1.0.0", "", ""));
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/openai_sdk_check.py"
    );
    let url = gw.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(&url)
            .output()
            .expect("python3 is required for the SDK test (pip install openai)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "OK",
        "the OpenAI SDK check failed (is `openai` installed? pip install openai)\nstdout: {stdout}\nstderr: {stderr}\ngateway log: {}",
        gw.stderr()
    );
    // The SDK's calls reached the provider (nothing answered locally but the model list).
    assert!(mock.api_calls() >= 4);
}
