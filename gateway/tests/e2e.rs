//! In-process end to end: client → gateway (port 0) → mock provider (port 0).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use gateway::NoEnforcement;
use serde_json::{json, Value};
use support::client::{self, chat, get, post, sse_data, sse_text, wait_until};
use support::mock::MockProvider;
use support::{pack, TestGateway};

const KEY_ENV: &str = "PALISADE_TEST_PROVIDER_KEY";
const PROVIDER_KEY: &str = "sk-provider-secret";

fn provider_key() {
    // Every test sets the same value, so concurrent tests agree.
    std::env::set_var(KEY_ENV, PROVIDER_KEY);
}

async fn setup(chain: &str, policy: &str) -> (MockProvider, TestGateway) {
    provider_key();
    let mock = MockProvider::start().await;
    let gw = TestGateway::start(
        &pack(&mock.base_url(), "1.0.0", chain, policy),
        Arc::new(NoEnforcement),
    )
    .await;
    (mock, gw)
}

fn assert_identity_headers(r: &client::Reply, version: &str) {
    assert_eq!(r.header("x-palisade-pack-version"), version);
    assert_eq!(r.header("x-palisade-pack-hash").len(), 64);
    assert_eq!(r.header("x-palisade-request-id").len(), 32);
}

#[tokio::test]
async fn chat_json_injects_the_provider_key_and_passes_unknown_fields_both_ways() {
    let (mock, gw) = setup("", "").await;
    let c = client::client();
    let mut body = chat("gpt-4o-mini", "How do I reset my password?", false);
    body["x_vendor_field"] = json!({"keep": [1, 2]});
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &body,
        Some("caller-key-never-forwarded"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_identity_headers(&r, "1.0.0");
    let v = r.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock provider."
    );
    assert_eq!(v["system_fingerprint"], "fp_mock");
    // The provider's request id goes on; its organisation and timing headers do not.
    assert_eq!(r.header("x-request-id"), "req_mock_1");
    assert!(r.headers.get("openai-processing-ms").is_none());
    let got = mock.last().await.unwrap();
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(
        got.authorization.as_deref(),
        Some("Bearer sk-provider-secret")
    );
    assert_eq!(
        got.body, body,
        "an unchanged request reaches the provider as sent"
    );
    gw.stop().await;
}

#[tokio::test]
async fn streams_ask_the_provider_for_usage_and_show_it_only_to_callers_who_asked() {
    let (mock, gw) = setup("", "").await;
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", true),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    assert_identity_headers(&r, "1.0.0");
    let body = r.text();
    assert_eq!(sse_text(&body), "Hello, world!");
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
    assert!(
        !body.contains("\"prompt_tokens\""),
        "usage chunk leaked: {body}"
    );
    let sent = mock.last().await.unwrap();
    assert_eq!(sent.body["stream_options"]["include_usage"], true);

    let mut asked = chat("gpt-4o-mini", "hi", true);
    asked["stream_options"] = json!({"include_usage": true});
    let r = post(&c, &gw.api("/v1/chat/completions"), &asked, None).await;
    let data = sse_data(&r.text());
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    gw.stop().await;
}

#[tokio::test]
async fn completions_embeddings_models_and_renamed_models() {
    let (mock, gw) = setup("", "").await;
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/completions"),
        &json!({"model": "gpt-4o-mini", "prompt": "Say hi"}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["text"],
        "Hello from the mock provider."
    );
    let r = post(
        &c,
        &gw.api("/v1/embeddings"),
        &json!({"model": "text-embedding-3-small", "input": ["a", "b"]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    assert_eq!(mock.last().await.unwrap().path, "/v1/embeddings");
    let r = get(&c, &gw.api("/v1/models")).await;
    assert_identity_headers(&r, "1.0.0");
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", "renamed", "text-embedding-3-small"]);
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("renamed", "hi", false),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        mock.last().await.unwrap().body["model"],
        "gpt-4o-mini-2024-07-18"
    );
    gw.stop().await;
}

#[tokio::test]
async fn refusals_are_openai_error_bodies_with_identity_headers_and_never_reach_the_provider() {
    provider_key();
    let mock = MockProvider::start().await;
    let gw = TestGateway::start_with(
        &pack(&mock.base_url(), "1.0.0", "", ""),
        Arc::new(NoEnforcement),
        |c| {
            c.limits.max_body_bytes = 2048;
        },
    )
    .await;
    let c = client::client();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            chat("gpt-5-secret", "hi", false).to_string().into_bytes(),
            403,
            "model_not_allowed",
        ),
        (b"{not json".to_vec(), 400, "invalid_request"),
        (br#"{"messages":[]}"#.to_vec(), 400, "invalid_request"),
        (
            chat("gpt-4o-mini", &"x".repeat(4096), false)
                .to_string()
                .into_bytes(),
            413,
            "request_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let r = client::collect(
            client::send(
                &c,
                "POST",
                &gw.api("/v1/chat/completions"),
                Some(&body),
                None,
            )
            .await,
        )
        .await;
        assert_eq!(r.status.as_u16(), status, "{}", r.text());
        assert_eq!(r.error_code(), code);
        let e = &r.json()["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(e["type"].is_string() && e.get("param").is_some());
        assert_identity_headers(&r, "1.0.0");
    }
    let r = get(&c, &gw.api("/v1/nope")).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "not_found")
    );
    assert_identity_headers(&r, "1.0.0");
    assert_eq!(mock.api_calls(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn caller_keys_are_checked_and_the_callers_authorization_is_never_forwarded() {
    provider_key();
    let mock = MockProvider::start().await;
    let dir = support::TempDir::new("keys");
    let keys = dir.write(
        "keys.yaml",
        &format!(
            "- {{id: app-1, team: support, sha256: {}}}\n",
            gateway::keys::sha256_hex("sk-caller-1")
        ),
    );
    let gw = TestGateway::start_with(
        &pack(&mock.base_url(), "1.0.0", "", ""),
        Arc::new(NoEnforcement),
        |c| {
            c.keys_path = Some(keys);
        },
    )
    .await;
    let c = client::client();
    let url = gw.api("/v1/chat/completions");
    for bad in [None, Some("sk-wrong")] {
        let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), bad).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (401, "invalid_api_key")
        );
        assert_identity_headers(&r, "1.0.0");
    }
    assert_eq!(mock.api_calls(), 0);
    let r = post(
        &c,
        &url,
        &chat("gpt-4o-mini", "hi", false),
        Some("sk-caller-1"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        mock.last().await.unwrap().authorization.as_deref(),
        Some("Bearer sk-provider-secret")
    );
    gw.stop().await;
}

#[tokio::test]
async fn anonymous_mode_is_refused_off_loopback() {
    provider_key();
    let dir = support::TempDir::new("anon");
    let p = dir.write("pack.yaml", &pack("http://127.0.0.1:9/v1", "1.0.0", "", ""));
    let mut config = gateway::GatewayConfig::new(p, "dev");
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = gateway::Gateway::bind(config, Arc::new(NoEnforcement))
        .await
        .unwrap_err();
    assert!(
        matches!(err, gateway::StartError::AnonymousOnPublicAddress(_)),
        "{err}"
    );
}

#[tokio::test]
async fn a_slow_provider_is_a_504_and_an_unreachable_one_a_502() {
    provider_key();
    let mock = MockProvider::start().await;
    mock.set(|b| b.head_delay = Duration::from_secs(5)).await;
    let text = pack(&mock.base_url(), "1.0.0", "", "")
        .replace("first_byte_timeout_ms: 2000", "first_byte_timeout_ms: 150");
    let gw = TestGateway::start(&text, Arc::new(NoEnforcement)).await;
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", false),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (504, "upstream_timeout")
    );
    assert_eq!(r.header("x-palisade-pack-version"), "1.0.0");
    gw.stop().await;

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let gw = TestGateway::start(&pack(&dead, "1.0.0", "", ""), Arc::new(NoEnforcement)).await;
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", false),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (502, "upstream_error")
    );
    // The caller learns which provider failed, not the cause chain (addresses, OS errors).
    assert_eq!(
        r.json()["error"]["message"],
        "the provider `mock` could not be reached or failed",
        "{}",
        r.text()
    );
    assert!(!r.text().contains("127.0.0.1") && !r.text().contains("os error"));
    gw.stop().await;
}

#[tokio::test]
async fn provider_errors_pass_through_with_their_status() {
    let (mock, gw) = setup("", "").await;
    mock.set(|b| b.fail_status = Some(429)).await;
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", false),
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 429);
    assert_eq!(r.error_code(), "mock_failure");
    assert_identity_headers(&r, "1.0.0");
    gw.stop().await;
}

#[tokio::test]
async fn ops_routes_say_what_runs() {
    let (_mock, gw) = setup("", "").await;
    let c = client::client();
    let _ = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", false),
        None,
    )
    .await;
    let _ = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("invented-model", "hi", false),
        None,
    )
    .await;
    let s = get(&c, &gw.api("/status")).await;
    assert_identity_headers(&s, "1.0.0");
    let s = s.json();
    assert_eq!(s["environment"], "dev");
    assert_eq!(s["pack"], "test");
    assert_eq!(s["version"], "1.0.0");
    assert_eq!(s["hash"].as_str().unwrap().len(), 64);
    assert!(s["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert!(s["source"].as_str().unwrap().starts_with("file:"));
    assert_eq!(s["last_reload"]["result"], "success");
    assert!(s["last_reload"]["error"].is_null());
    let m = get(&c, &gw.api("/metrics")).await.text();
    let hash = s["hash"].as_str().unwrap();
    assert!(m.contains(&format!("palisade_pack_info{{environment=\"dev\",hash=\"{hash}\",pack=\"test\",version=\"1.0.0\"}} 1")), "{m}");
    assert!(m.contains("palisade_requests_total{model=\"gpt-4o-mini\",route=\"chat_completions\",status=\"200\"} 1"), "{m}");
    assert!(
        m.contains(
            "palisade_requests_total{model=\"other\",route=\"chat_completions\",status=\"403\"} 1"
        ),
        "{m}"
    );
    assert!(m.contains("palisade_gateway_overhead_seconds_bucket"));
    assert!(m.contains("palisade_upstream_seconds_bucket"));
    assert!(m.contains("palisade_requests_in_flight 0"));
    assert!(
        !m.contains("invented-model"),
        "unbounded label value leaked"
    );
    assert_eq!(get(&c, &gw.api("/healthz")).await.status, 200);
    assert_eq!(get(&c, &gw.api("/readyz")).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_reload_flips_the_version_and_a_broken_pack_keeps_the_old_one_serving() {
    let (mock, gw) = setup("", "").await;
    let c = client::client();
    let url = gw.api("/v1/chat/completions");
    std::fs::write(gw.path(), pack(&mock.base_url(), "2.0.0", "", "")).unwrap();
    gateway::reload::reload_file(&gw.state, gw.path())
        .await
        .unwrap();
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.header("x-palisade-pack-version"), "2.0.0");

    std::fs::write(
        gw.path(),
        "pack:\n  name: test\n  version: 3.0.0\npolicies:\n  chain: [no-such-policy]\n",
    )
    .unwrap();
    let err = gateway::reload::reload_file(&gw.state, gw.path())
        .await
        .unwrap_err();
    assert!(
        err.summary().contains("UNKNOWN_POLICY"),
        "{}",
        err.summary()
    );
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-palisade-pack-version"), "2.0.0");
    let s = get(&c, &gw.api("/status")).await.json();
    assert_eq!(s["version"], "2.0.0");
    assert_eq!(s["last_reload"]["result"], "rejected");
    assert!(s["last_reload"]["error"]
        .as_str()
        .unwrap()
        .contains("UNKNOWN_POLICY"));
    let m = get(&c, &gw.api("/metrics")).await.text();
    assert!(
        m.contains("palisade_pack_reloads_total{result=\"rejected\"} 1"),
        "{m}"
    );
    assert!(m.contains("palisade_pack_last_reload_success 0"));

    // A disabled pack is rejected like a broken one.
    std::fs::write(
        gw.path(),
        pack(&mock.base_url(), "4.0.0", "", "").replace("enabled: true", "enabled: false"),
    )
    .unwrap();
    let err = gateway::reload::reload_file(&gw.state, gw.path())
        .await
        .unwrap_err();
    assert!(err.summary().contains("PACK_DISABLED"), "{}", err.summary());
    gw.stop().await;
}

#[tokio::test]
async fn the_file_watcher_reloads_after_an_edit() {
    provider_key();
    let mock = MockProvider::start().await;
    let gw = TestGateway::start_with(
        &pack(&mock.base_url(), "1.0.0", "", ""),
        Arc::new(NoEnforcement),
        |c| {
            c.watch = true;
            c.reload_debounce = Duration::from_millis(50);
        },
    )
    .await;
    std::fs::write(gw.path(), pack(&mock.base_url(), "1.1.0", "", "")).unwrap();
    let state = Arc::clone(&gw.state);
    wait_until(
        Duration::from_secs(10),
        "the watcher activates 1.1.0",
        || {
            let v = state.active().map(|p| p.version().to_owned());
            async move { v.as_deref() == Some("1.1.0") }
        },
    )
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_drains_an_open_stream() {
    let (mock, gw) = setup("", "").await;
    mock.set(|b| b.chunk_delay = Duration::from_millis(40))
        .await;
    let c = client::client();
    let resp = client::send(
        &c,
        "POST",
        &gw.api("/v1/chat/completions"),
        Some(chat("gpt-4o-mini", "hi", true).to_string().as_bytes()),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let stopping = support::client::spawn(gw.stop());
    let r = client::collect(resp).await;
    assert_eq!(sse_text(&r.text()), "Hello, world!");
    stopping.await.unwrap();
}

/// Start a streamed answer and leave once its head has arrived.
async fn abandon_a_stream(c: &client::TestClient, url: &str) {
    let resp = client::send(
        c,
        "POST",
        url,
        Some(chat("gpt-4o-mini", "hi", true).to_string().as_bytes()),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn provider_connections_are_reused_after_whole_answers_and_closed_after_abandoned_streams() {
    provider_key();
    let mock = MockProvider::start().await;
    // One serving thread: one upstream pool, so every count below is exact.
    let gw = TestGateway::start_with(
        &pack(&mock.base_url(), "1.0.0", "", ""),
        Arc::new(NoEnforcement),
        |c| c.server.threads = 1,
    )
    .await;
    let c = client::client();
    let url = gw.api("/v1/chat/completions");
    for stream in [false, true, false, true, false] {
        let r = post(&c, &url, &chat("gpt-4o-mini", "hi", stream), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(mock.api_calls(), 5);
    assert_eq!(
        mock.connections(),
        1,
        "answers read to the end return their connection"
    );

    // A client that leaves mid-stream: the rest of that answer is still on the wire, so its
    // connection must not serve the next request.
    mock.set(|b| b.chunk_delay = Duration::from_millis(200))
        .await;
    abandon_a_stream(&c, &url).await;
    mock.set(|b| b.chunk_delay = Duration::ZERO).await;
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.connections(),
        2,
        "an abandoned stream's connection is not reused"
    );
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.connections(), 2);
    gw.stop().await;
}

/// `pack` with the provider on `protocol: http2`.
fn http2_pack(base_url: &str, chain: &str, policy: &str) -> String {
    let p = pack(base_url, "1.0.0", chain, policy);
    let with = p.replace(
        "    api_key_env: PALISADE_TEST_PROVIDER_KEY\n",
        "    api_key_env: PALISADE_TEST_PROVIDER_KEY\n    protocol: http2\n",
    );
    assert_ne!(with, p);
    with
}

#[tokio::test]
async fn an_http2_provider_carries_concurrent_streams_on_shared_connections() {
    provider_key();
    let mock = MockProvider::start().await;
    mock.set(|b| b.chunk_delay = Duration::from_millis(100))
        .await;
    // One serving thread: one pool, so the connection count is exact. The answers are scanned,
    // so every stream goes through the stream redactor as well.
    let gw = TestGateway::start_with(
        &http2_pack(
            &mock.base_url(),
            "pii-detector",
            "policy:\n  pii-detector:\n    action: redact\n    scan: [request, response]\n",
        ),
        Arc::new(NoEnforcement),
        |c| c.server.threads = 1,
    )
    .await;
    let url = gw.api("/v1/chat/completions");
    // 150 streams open at once: 100 fit on the first connection, the other 50 on a second.
    let mut streams = Vec::new();
    for i in 0..150 {
        let url = url.clone();
        streams.push(support::client::spawn(async move {
            let c = client::client();
            let body = chat(
                "gpt-4o-mini",
                &format!("hi {i}, I am ann@example.com"),
                true,
            );
            post(&c, &url, &body, None).await
        }));
    }
    for s in streams {
        let r = s.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(sse_text(&r.text()), "Hello, world!");
    }
    assert_eq!(mock.api_calls(), 150);
    assert_eq!(
        mock.connections(),
        2,
        "150 concurrent streams need two provider connections at 100 streams each"
    );
    let received = mock.received().await;
    assert!(received.iter().all(|r| r.version == hyper::Version::HTTP_2
        && r.authority.as_deref() == Some(mock.addr.to_string().as_str())
        && r.authorization.as_deref() == Some(format!("Bearer {PROVIDER_KEY}").as_str())));
    let messages = received[0].body["messages"].as_array().unwrap();
    let prompt = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(prompt.ends_with("I am [EMAIL_1]"), "{prompt}");

    // A caller that leaves mid-stream resets only its stream: the connection serves on.
    let c = client::client();
    abandon_a_stream(&c, &url).await;
    mock.set(|b| b.chunk_delay = Duration::ZERO).await;
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from the mock provider."
    );
    assert_eq!(
        mock.connections(),
        2,
        "an abandoned stream keeps its connection"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_http2_provider_that_cannot_be_reached_fails_every_waiting_request_at_once() {
    provider_key();
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = TestGateway::start_with(
        &http2_pack(&format!("http://127.0.0.1:{port}/v1"), "", ""),
        Arc::new(NoEnforcement),
        |c| c.server.threads = 1,
    )
    .await;
    let url = gw.api("/v1/chat/completions");
    let mut calls = Vec::new();
    for _ in 0..5 {
        let url = url.clone();
        calls.push(support::client::spawn(async move {
            let c = client::client();
            post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await
        }));
    }
    for call in calls {
        let r = call.await.unwrap();
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "upstream_error", "{}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("mock"), "{message}");
        assert!(
            !message.contains("127.0.0.1"),
            "no address leaks: {message}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_second_gateway_on_a_busy_port_fails_to_start_instead_of_sharing_it() {
    provider_key();
    let mock = MockProvider::start().await;
    let text = pack(&mock.base_url(), "1.0.0", "", "");
    // Several serving threads: several listening sockets on one port (SO_REUSEPORT).
    let first =
        TestGateway::start_with(&text, Arc::new(NoEnforcement), |c| c.server.threads = 3).await;
    let addr: std::net::SocketAddr = first.url.trim_start_matches("http://").parse().unwrap();
    let mut config = gateway::GatewayConfig::new(&first.pack_path, "dev");
    config.listen = addr;
    config.watch = false;
    let second = gateway::Gateway::bind(config, Arc::new(NoEnforcement)).await;
    match second {
        Err(gateway::StartError::Bind { addr: a, source }) => {
            assert_eq!(a, addr);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}");
        }
        Err(e) => panic!("expected a bind error, got {e}"),
        Ok(_) => panic!("a second gateway bound {addr}, which the first one serves"),
    }
    // The first one still answers on every thread's socket.
    let c = client::client();
    for _ in 0..12 {
        let r = post(
            &c,
            &first.api("/v1/chat/completions"),
            &chat("gpt-4o-mini", "hi", false),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    first.stop().await;
}
