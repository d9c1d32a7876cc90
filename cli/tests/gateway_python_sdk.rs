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

/// Run `tests/python/SCRIPT GATEWAY_URL`, which prints OK when every check held.
async fn run_check(gw: &GatewayProcess, script: &'static str) {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let url = gw.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&path)
            .arg(&url)
            .output()
            .expect("python3 is required for the SDK tests (.ci/python-requirements.txt)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "OK",
        "{script} failed (are the SDKs of .ci/python-requirements.txt installed?)\nstdout: {stdout}\nstderr: {stderr}\ngateway log: {}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_unchanged_through_the_gateway() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write("pack.yaml", &pack(&mock.base_url(), "1.0.0", "", ""));
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    run_check(&gw, "openai_sdk_check.py").await;
    // The SDK's calls reached the provider (nothing answered locally but the model list).
    assert!(mock.api_calls() >= 4);
}

/// The official Anthropic SDK on `/v1/messages` and the OpenAI SDK on `/v1/responses`, with
/// PII in prompts, answers, streams and tool-call arguments split across stream events: the SDKs
/// work unchanged, read only redacted text, and the provider never receives the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_and_the_responses_api_work_unchanged_and_scanned() {
    let mock = MockProvider::start().await;
    mock.set(|b| {
        b.reply = "Write to jane.doe@example.com.".into();
        b.chunks = vec!["Mail jane.d".into(), "oe@exam".into(), "ple.com now".into()];
        b.tool_args = Some(vec![
            "{\"to\": \"jane.".into(),
            "doe@exa".into(),
            "mple.com\", \"n\": 1}".into(),
        ]);
    })
    .await;
    let dir = Dir::new();
    let base = mock.base_url();
    let text = format!(
        "pack:
  name: test
  version: 1.0.0
  enabled: true
policies:
  chain: [pii-detector]
providers:
  oai:
    base_url: {base}
    api_key_env: PALISADE_TEST_PROVIDER_KEY
  claude:
    kind: anthropic
    base_url: {base}
    api_key_env: PALISADE_TEST_PROVIDER_KEY
models:
  gpt-4o-mini:
    provider: oai
  claude-test:
    provider: claude
policy:
  pii-detector:
    action: redact
    entities: [email]
    scan: [request, response]
"
    );
    let p = dir.write("pack.yaml", &text);
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    run_check(&gw, "formats_sdk_check.py").await;
    let received = mock.received().await;
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    for want in [
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
        "/v1/responses/resp_mock",
    ] {
        assert!(paths.contains(&want), "{want} not reached: {paths:?}");
    }
    for r in &received {
        assert!(
            !String::from_utf8_lossy(&r.raw).contains("jane.doe@example.com"),
            "{} received the address: {}",
            r.path,
            String::from_utf8_lossy(&r.raw)
        );
    }
}
