//! Deployments, fallbacks, retries and circuit breaking on the real gateway binary, against
//! mock providers that fail on purpose: 500s and 429s, a provider that stalls before its
//! headers, one that stalls mid-stream, one that refuses connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_support::client::{self, chat, get, post, wait_until};
use gateway_support::mock::MockProvider;
use gateway_support::{Dir, GatewayProcess};
use serde_json::Value;

/// A pack with providers `a` and `b` (and `dead`, a closed port), model `gpt-4o-mini` on the
/// deployments given, `gpt-4o` on `a` with `gpt-4o-mini` as its fallback, an audit log, and
/// `routing` settings.
fn routing_pack(a: &str, b: &str, deployments: &str, routing: &str, audit: &Path) -> String {
    format!(
        "pack:
  name: routed
  version: 1.0.0
  enabled: true
policies:
  chain: [audit-logger]
providers:
  a:
    base_url: {a}
    connect_timeout_ms: 300
    first_byte_timeout_ms: 400
  b:
    base_url: {b}
    connect_timeout_ms: 300
    first_byte_timeout_ms: 400
  dead:
    base_url: http://127.0.0.1:9/v1
    connect_timeout_ms: 300
models:
  gpt-4o-mini:
    deployments: [{deployments}]
  gpt-4o:
    provider: a
    fallbacks: [gpt-4o-mini]
routing:
{routing}
policy:
  audit-logger:
    dir: {}
    fsync_interval_ms: 0
",
        audit.display()
    )
}

const FAST_CIRCUIT: &str =
    "  circuit_failures: 3\n  circuit_cooldown_ms: 400\n  backoff_ms: 10\n  max_backoff_ms: 50";

struct Setup {
    a: MockProvider,
    b: MockProvider,
    gw: GatewayProcess,
    audit: std::path::PathBuf,
    _dir: Dir,
}

async fn setup(deployments: &str, routing: &str, extra: &[&str]) -> Setup {
    let (a, b) = (MockProvider::start().await, MockProvider::start().await);
    let dir = Dir::new();
    let audit = dir.path().join("audit");
    let p = dir.write(
        "pack.yaml",
        &routing_pack(&a.base_url(), &b.base_url(), deployments, routing, &audit),
    );
    let gw = GatewayProcess::start(&p, dir.path(), extra);
    Setup {
        a,
        b,
        gw,
        audit,
        _dir: dir,
    }
}

fn records(dir: &Path) -> Vec<Value> {
    gateway_support::audit_lines(dir, false)
        .into_iter()
        .filter(|l| l["kind"] == "request")
        .map(|l| l["record"].clone())
        .collect()
}

async fn ask(s: &Setup, model: &str) -> client::Reply {
    post(
        &client::client(),
        &s.gw.api("/v1/chat/completions"),
        &chat(model, "hi", false),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spread_by_weight_and_say_which_deployment_served_them() {
    let s = setup(
        "{provider: a, weight: 3}, {provider: b, weight: 1}",
        FAST_CIRCUIT,
        &[],
    )
    .await;
    for _ in 0..40 {
        let r = ask(&s, "gpt-4o-mini").await;
        assert_eq!(r.status, 200);
        let served = r.header("x-palisade-upstream").to_owned();
        assert!(
            served == "a/gpt-4o-mini" || served == "b/gpt-4o-mini",
            "{served}"
        );
    }
    let (a, b) = (s.a.api_calls(), s.b.api_calls());
    assert_eq!(a + b, 40);
    assert!((28..=32).contains(&a), "a served {a}, b {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deployment_is_retried_elsewhere_taken_out_and_brought_back() {
    let s = setup("{provider: a}, {provider: b}", FAST_CIRCUIT, &[]).await;
    s.a.set(|b| b.fail_status = Some(500)).await;
    for _ in 0..8 {
        let r = ask(&s, "gpt-4o-mini").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-palisade-upstream"), "b/gpt-4o-mini");
    }
    // Three failures opened a's circuit: it was not called again.
    assert_eq!(s.a.api_calls(), 3, "a is out of rotation after 3 failures");
    let status = get(&client::client(), &s.gw.api("/status")).await.json();
    let a_state = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deployment"] == "a/gpt-4o-mini")
        .unwrap()
        .clone();
    assert_eq!(a_state["state"], "open", "{status}");
    let metrics = get(&client::client(), &s.gw.api("/metrics")).await.text();
    assert!(
        metrics.contains("palisade_deployment_up{deployment=\"a/gpt-4o-mini\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "palisade_upstream_attempts_total{deployment=\"a/gpt-4o-mini\",outcome=\"500\"} 3"
    ));
    // Every attempt is on the record.
    let recs = records(&s.audit);
    let retried = recs
        .iter()
        .find(|r| r["attempts"].as_array().is_some_and(|a| a.len() == 2))
        .unwrap();
    assert_eq!(retried["attempts"][0]["deployment"], "a/gpt-4o-mini");
    assert_eq!(retried["attempts"][0]["outcome"], "500");
    assert_eq!(retried["attempts"][1]["outcome"], "200");
    // a recovers; after the cooldown one probe goes to it and brings it back.
    s.a.set(|b| b.fail_status = None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_until(Duration::from_secs(5), "a serves again", || async {
        ask(&s, "gpt-4o-mini").await;
        s.a.api_calls() > 3
    })
    .await;
    // Healthy again: no longer listed as failing, and up.
    let status = get(&client::client(), &s.gw.api("/status")).await.json();
    assert!(
        status["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["deployment"] != "a/gpt-4o-mini"),
        "{status}"
    );
    let metrics = get(&client::client(), &s.gw.api("/metrics")).await.text();
    assert!(
        metrics.contains("palisade_deployment_up{deployment=\"a/gpt-4o-mini\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_before_headers_and_a_refused_connection_are_retried_elsewhere() {
    let s = setup("{provider: a}, {provider: b}", FAST_CIRCUIT, &[]).await;
    s.a.set(|b| b.head_delay = Duration::from_millis(1500))
        .await;
    let started = Instant::now();
    let r = ask(&s, "gpt-4o-mini").await;
    assert_eq!(r.status, 200);
    // Whichever was picked first, b answered; if a went first it timed out at its first byte.
    assert_eq!(r.header("x-palisade-upstream"), "b/gpt-4o-mini");
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    let s = setup("{provider: dead}, {provider: b}", FAST_CIRCUIT, &[]).await;
    for _ in 0..4 {
        let r = ask(&s, "gpt-4o-mini").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-palisade-upstream"), "b/gpt-4o-mini");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_retried_after_the_first_byte_of_a_stream() {
    let s = setup(
        "{provider: a}, {provider: b}",
        FAST_CIRCUIT,
        &["--stream-idle-timeout", "300ms"],
    )
    .await;
    // Each event 2 s apart: the head and the first event arrive, then the stream stalls.
    for m in [&s.a, &s.b] {
        m.set(|b| b.chunk_delay = Duration::from_secs(2)).await;
    }
    let r = post(
        &client::client(),
        &s.gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", true),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("stream_idle_timeout"), "{}", r.text());
    assert_eq!(
        s.a.api_calls() + s.b.api_calls(),
        1,
        "the broken stream was not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_route_is_exhausted_the_caller_gets_an_openai_error() {
    let s = setup("{provider: a}, {provider: b}", FAST_CIRCUIT, &[]).await;
    for m in [&s.a, &s.b] {
        m.set(|b| b.fail_status = Some(503)).await;
    }
    let r = ask(&s, "gpt-4o-mini").await;
    // The last deployment's own answer, as the provider sent it.
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "mock_failure", "{}", r.text());
    assert_eq!(s.a.api_calls() + s.b.api_calls(), 2);
    let s = setup(
        "{provider: dead}, {provider: dead, upstream_model: other}",
        FAST_CIRCUIT,
        &[],
    )
    .await;
    let r = ask(&s, "gpt-4o-mini").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_error");
    assert_eq!(r.json()["error"]["type"], "api_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_model_serves_when_the_model_fails_and_is_recorded() {
    let s = setup("{provider: b}", FAST_CIRCUIT, &[]).await;
    s.a.set(|b| b.fail_status = Some(500)).await;
    let r = ask(&s, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-palisade-upstream"), "b/gpt-4o-mini");
    assert_eq!(s.b.last().await.unwrap().body["model"], "gpt-4o-mini");
    let mut recs = Vec::new();
    wait_until(Duration::from_secs(5), "the record", || {
        recs = records(&s.audit);
        let n = recs.len();
        async move { n == 1 }
    })
    .await;
    assert_eq!(recs[0]["model_requested"], "gpt-4o");
    assert_eq!(recs[0]["model_used"], "gpt-4o-mini");
    assert_eq!(recs[0]["attempts"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_on_the_same_deployment_after_its_retry_after() {
    let s = setup(
        "{provider: a}",
        "  max_attempts: 2\n  backoff_ms: 10\n  max_backoff_ms: 3000",
        &[],
    )
    .await;
    s.a.set(|b| {
        b.fail_status = Some(429);
        b.fail_first = 1;
        b.retry_after = Some(1);
    })
    .await;
    let started = Instant::now();
    let r = ask(&s, "gpt-4o-mini").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.a.api_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_whose_retry_after_passes_the_deadline_is_the_callers_answer() {
    let s = setup(
        "{provider: a}",
        "  max_attempts: 2\n  deadline_ms: 2000\n  backoff_ms: 10\n  max_backoff_ms: 10000",
        &[],
    )
    .await;
    s.a.set(|b| {
        b.fail_status = Some(429);
        b.retry_after = Some(5);
    })
    .await;
    let started = Instant::now();
    let r = ask(&s, "gpt-4o-mini").await;
    // No retry fits before the deadline: the provider's own 429 and Retry-After, at once.
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), "5");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.a.api_calls(), 1);
}
