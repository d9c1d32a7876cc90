//! The real `palisade gateway` binary with budgets and the audit log wired in (issues 5 and 6
//! from the outside): one audit record per request outcome and a log that verifies; exact
//! admission under concurrency; degrade; no leaked reservation on cancelled streams; spend kept
//! across a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::path::Path;
use std::time::Duration;

use gateway_support::client::{self, chat, get, post, wait_until};
use gateway_support::mock::MockProvider;
use gateway_support::{pack, Dir, GatewayProcess};
use serde_json::Value;

const EMAIL: &str = "jane.doe@example.com";

/// Extra models appended to the helper pack's `models:` map (its last key), then `policy`.
fn with_gpt_4o(policy: &str) -> String {
    format!("  gpt-4o:\n    input_usd_per_mtok: 2.5\n    output_usd_per_mtok: 10\n{policy}")
}

fn audit_policy(dir: &Path) -> String {
    format!(
        "  audit-logger:\n    dir: {}\n    fsync_interval_ms: 0\n",
        dir.display()
    )
}

/// Request records of the audit log in `dir`, in chain order.
fn request_records(dir: &Path) -> Vec<Value> {
    gateway_support::audit_lines(dir, false)
        .into_iter()
        .filter(|l| l["kind"] == "request")
        .map(|l| l["record"].clone())
        .collect()
}

fn audit_verify(dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value of `palisade_budget_remaining` for a limit, from `/metrics`.
async fn remaining(gw: &GatewayProcess, scope: &str, window: &str, unit: &str) -> Option<f64> {
    let m = get(&client::client(), &gw.api("/metrics")).await.text();
    m.lines()
        .filter(|l| l.starts_with("palisade_budget_remaining{"))
        .find(|l| {
            l.contains(&format!("scope=\"{scope}\""))
                && l.contains(&format!("window=\"{window}\""))
                && l.contains(&format!("unit=\"{unit}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn body_len(body: &Value) -> u64 {
    body.to_string().len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_writes_exactly_one_audit_record_and_the_log_verifies() {
    let mock = MockProvider::start().await;
    mock.set(|b| b.chunk_delay = Duration::from_millis(100))
        .await;
    let dir = Dir::new();
    let audit = dir.path().join("audit");
    let policies = |action: &str| {
        with_gpt_4o(&format!(
            "policy:\n{}  pii-detector:\n    action: {action}\n    entities: [email]\n    scan: [request]\n  budget-enforcer:\n    limits:\n      - {{scope: \"model:gpt-4o\", window: daily, tokens: 1, on_exhausted: block}}\n",
            audit_policy(&audit)
        ))
    };
    let chain = "audit-logger, pii-detector, budget-enforcer";
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", chain, &policies("redact")),
    );
    let state = dir.path().join("state");
    let mut gw = GatewayProcess::start(&p, dir.path(), &["--state-dir", state.to_str().unwrap()]);
    let c = client::client();
    let url = gw.api("/v1/chat/completions");

    let allowed = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let redacted = post(
        &c,
        &url,
        &chat("gpt-4o-mini", &format!("mail {EMAIL}"), false),
        None,
    )
    .await;
    assert_eq!(redacted.status, 200);
    let budget = post(&c, &url, &chat("gpt-4o", "hi", false), None).await;
    assert_eq!(
        (budget.status.as_u16(), budget.error_code().as_str()),
        (429, "budget_exceeded")
    );
    mock.set(|b| b.fail_status = Some(500)).await;
    let upstream = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(upstream.status, 500);
    mock.set(|b| b.fail_status = None).await;
    // Cancelled mid-stream: take the response head, then go away.
    let resp = client::send(
        &c,
        "POST",
        &url,
        Some(chat("gpt-4o-mini", "hi", true).to_string().as_bytes()),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    drop(resp);

    // Reload to a pack that blocks PII (the same audit directory keeps its writer).
    std::fs::write(
        &p,
        pack(&mock.base_url(), "2.0.0", chain, &policies("block")),
    )
    .unwrap();
    let status_url = gw.api("/status");
    wait_until(Duration::from_secs(10), "2.0.0 is active", || {
        let (c, u) = (c.clone(), status_url.clone());
        async move { get(&c, &u).await.json()["version"] == "2.0.0" }
    })
    .await;
    let blocked = post(
        &c,
        &url,
        &chat("gpt-4o-mini", &format!("mail {EMAIL}"), false),
        None,
    )
    .await;
    assert_eq!(blocked.error_code(), "pii_blocked");

    wait_until(Duration::from_secs(10), "six records are written", || {
        let audit = audit.clone();
        async move { request_records(&audit).len() >= 6 }
    })
    .await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await.success());

    let records = request_records(&audit);
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "allowed",
            "redacted",
            "blocked_budget",
            "upstream_error",
            "cancelled",
            "blocked_pii"
        ],
        "{records:#?}"
    );
    let red = &records[1];
    let pii = red["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "pii-detector")
        .unwrap();
    assert_eq!(pii["decision"], "redact");
    assert_eq!(pii["entities"]["email"], 1);
    let text = std::fs::read_dir(&audit)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(!text.contains(EMAIL), "raw PII in the audit log");
    assert_eq!(records[0]["pack"]["version"], "1.0.0");
    assert_eq!(records[5]["pack"]["version"], "2.0.0");
    assert_eq!(records[0]["usage"]["output_tokens"], 7);
    assert!(records[0]["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(records[2]["budget"]["scope"], "model:gpt-4o/daily");
    assert_eq!(records[2]["error_code"], "budget_exceeded");
    assert_eq!(records[3]["upstream_status"], 500);
    let (ok, out) = audit_verify(&audit);
    assert!(ok, "audit verify failed: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_worth_k_requests_admits_exactly_k_of_n_concurrent_ones() {
    const N: usize = 40;
    const K: u64 = 7;
    let mock = MockProvider::start().await;
    // Every admitted request is still in flight when the last one reserves.
    mock.set(|b| b.head_delay = Duration::from_millis(1500))
        .await;
    let mut body = chat("gpt-4o-mini", "How do I reset my password?", false);
    body["max_tokens"] = 50.into();
    let per = body_len(&body).div_ceil(4) + 50;
    let limit = K * per + per - 1;
    let dir = Dir::new();
    let policy = format!(
        "policy:\n  budget-enforcer:\n    limits:\n      - {{scope: environment, window: daily, tokens: {limit}, on_exhausted: block}}\n      - {{scope: environment, window: monthly, usd: 1000, on_exhausted: block}}\n"
    );
    // A USD limit needs every model priced.
    let text = pack(&mock.base_url(), "1.0.0", "budget-enforcer", &policy).replace(
        "text-embedding-3-small: {}",
        "text-embedding-3-small: {input_usd_per_mtok: 0.02, output_usd_per_mtok: 0}",
    );
    let p = dir.write("pack.yaml", &text);
    let state = dir.path().join("state");
    let gw = GatewayProcess::start(&p, dir.path(), &["--state-dir", state.to_str().unwrap()]);
    let url = gw.api("/v1/chat/completions");
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            gateway_support::client::spawn(async move {
                post(&client::client(), &url, &body, None).await
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => {
                admitted += 1;
                let left: f64 = r.header("x-palisade-budget-remaining-usd").parse().unwrap();
                assert!(left > 999.0 && left < 1000.0, "{left}");
            }
            429 => {
                assert_eq!(r.error_code(), "budget_exceeded");
                let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
                assert!(
                    msg.contains("environment") && msg.contains("daily"),
                    "{msg}"
                );
                assert!(msg.contains("resets"), "{msg}");
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert_eq!(admitted, K);
    assert_eq!(mock.api_calls(), K);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_rewrites_the_model_the_provider_receives_and_says_so() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let policy = with_gpt_4o(
        "policy:\n  budget-enforcer:\n    limits:\n      - {scope: environment, window: daily, tokens: 1, on_exhausted: degrade, degrade_to: gpt-4o-mini}\n",
    );
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "budget-enforcer", &policy),
    );
    let state = dir.path().join("state");
    let gw = GatewayProcess::start(&p, dir.path(), &["--state-dir", state.to_str().unwrap()]);
    let c = client::client();
    for stream in [false, true] {
        let r = post(
            &c,
            &gw.api("/v1/chat/completions"),
            &chat("gpt-4o", "hi", stream),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("x-palisade-budget-degraded"),
            "gpt-4o->gpt-4o-mini"
        );
        assert_eq!(mock.last().await.unwrap().body["model"], "gpt-4o-mini");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_streams_mid_way_leaks_no_reservation() {
    let mock = MockProvider::start().await;
    mock.set(|b| b.chunk_delay = Duration::from_millis(100))
        .await;
    let dir = Dir::new();
    let limit = 1_000_000u64;
    let policy = format!(
        "policy:\n  budget-enforcer:\n    limits:\n      - {{scope: environment, window: daily, tokens: {limit}, on_exhausted: block}}\n"
    );
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "budget-enforcer", &policy),
    );
    let state = dir.path().join("state");
    let gw = GatewayProcess::start(&p, dir.path(), &["--state-dir", state.to_str().unwrap()]);
    let c = client::client();
    let url = gw.api("/v1/chat/completions");
    // One settled request: the mock reports prompt = body bytes / 4, completion = 7.
    let body = chat("gpt-4o-mini", "hi", false);
    let r = post(&c, &url, &body, None).await;
    assert_eq!(r.status, 200);
    let settled = body_len(&body) / 4 + 7;
    let mut open = Vec::new();
    for _ in 0..10 {
        let resp = client::send(
            &c,
            "POST",
            &url,
            Some(chat("gpt-4o-mini", "hi", true).to_string().as_bytes()),
            None,
        )
        .await;
        assert_eq!(resp.status(), 200);
        open.push(resp);
    }
    let held = remaining(&gw, "environment", "daily", "tokens")
        .await
        .unwrap();
    assert!(
        held < (limit - settled) as f64,
        "streams hold reservations: {held}"
    );
    drop(open);
    let want = (limit - settled) as f64;
    wait_until(
        Duration::from_secs(10),
        "every stream's reservation is released",
        || {
            let gw = &gw;
            async move { remaining(gw, "environment", "daily", "tokens").await == Some(want) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_months_spend() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let limit = 1_000_000u64;
    let policy = format!(
        "policy:\n  budget-enforcer:\n    limits:\n      - {{scope: environment, window: monthly, tokens: {limit}, on_exhausted: block}}\n"
    );
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "budget-enforcer", &policy),
    );
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let body = chat("gpt-4o-mini", "hi", false);
    let spent = body_len(&body) / 4 + 7;
    for round in 1..=2u64 {
        let mut gw = GatewayProcess::start(&p, dir.path(), &args);
        let r = post(
            &client::client(),
            &gw.api("/v1/chat/completions"),
            &body,
            None,
        )
        .await;
        assert_eq!(r.status, 200);
        let want = (limit - round * spent) as f64;
        wait_until(Duration::from_secs(10), "the spend is counted", || {
            let gw = &gw;
            async move { remaining(gw, "environment", "monthly", "tokens").await == Some(want) }
        })
        .await;
        gw.signal("TERM");
        assert!(gw.wait_exit(Duration::from_secs(10)).await.success());
    }
    assert!(state.join("budget-state.json").exists());
}

/// One labelled counter from a `/metrics` text: the sum over every series of `name` whose labels
/// include all of `labels`.
fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Metrics and the audit log describe the same traffic: a workload of every outcome (allow,
/// redact, log, escalate, block, budget refusal, degrade, provider error), then every counter is
/// checked against the audit records of the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_audit_log_over_a_mixed_workload() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let audit = dir.path().join("audit");
    let models = "  gpt-4o:\n    input_usd_per_mtok: 2.5\n    output_usd_per_mtok: 10\n  gpt-4.1:\n    input_usd_per_mtok: 2\n    output_usd_per_mtok: 8\n";
    let policies = |action: &str| {
        format!(
            "{models}policy:\n{}  pii-detector:\n    action: {action}\n    entities: [email, credit_card]\n    scan: [request]\n  budget-enforcer:\n    limits:\n      - {{scope: \"model:gpt-4o\", window: daily, tokens: 1, on_exhausted: block}}\n      - {{scope: \"model:gpt-4.1\", window: daily, tokens: 1, on_exhausted: degrade, degrade_to: gpt-4o-mini}}\n",
            audit_policy(&audit)
        )
    };
    let chain = "audit-logger, pii-detector, budget-enforcer";
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", chain, &policies("redact")),
    );
    let state = dir.path().join("state");
    let mut gw = GatewayProcess::start(&p, dir.path(), &["--state-dir", state.to_str().unwrap()]);
    let c = client::client();
    let url = gw.api("/v1/chat/completions");
    let pii = format!("mail {EMAIL}, card 4111 1111 1111 1111");

    let mut sent = 0;
    for (model, text) in [
        ("gpt-4o-mini", "hi"),
        ("gpt-4o-mini", pii.as_str()),
        ("gpt-4o", "hi"),
        ("gpt-4.1", "hi"),
    ] {
        post(&c, &url, &chat(model, text, false), None).await;
        sent += 1;
    }
    mock.set(|b| b.fail_status = Some(503)).await;
    assert_eq!(
        post(&c, &url, &chat("gpt-4o-mini", "hi", false), None)
            .await
            .status,
        503
    );
    sent += 1;
    mock.set(|b| b.fail_status = None).await;
    // A request refused before any policy runs is an API error, counted and audited too.
    let bad = client::send(&c, "POST", &url, Some(b"{not json".as_slice()), None).await;
    assert_eq!(bad.status(), 400);
    drop(bad);
    sent += 1;

    for (version, action) in [("2.0.0", "log"), ("3.0.0", "escalate"), ("4.0.0", "block")] {
        std::fs::write(
            &p,
            pack(&mock.base_url(), version, chain, &policies(action)),
        )
        .unwrap();
        let status_url = gw.api("/status");
        wait_until(Duration::from_secs(10), "the new version is active", || {
            let (c, u) = (c.clone(), status_url.clone());
            async move { get(&c, &u).await.json()["version"] == version }
        })
        .await;
        post(&c, &url, &chat("gpt-4o-mini", &pii, false), None).await;
        post(&c, &url, &chat("gpt-4o-mini", "clean", false), None).await;
        sent += 2;
    }

    let metrics = get(&c, &gw.api("/metrics")).await.text();
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await.success());
    let records = request_records(&audit);
    let with = |f: &dyn Fn(&Value) -> bool| records.iter().filter(|r| f(r)).count() as u64;

    assert_eq!(records.len(), sent, "one record per request: {records:#?}");
    assert_eq!(
        counter(&metrics, "palisade_requests_total", &[]),
        sent as u64,
        "{metrics}"
    );
    for status in ["200", "400", "403", "429", "503"] {
        assert_eq!(
            counter(&metrics, "palisade_requests_total", &[("status", status)]),
            with(&|r| r["status"].as_u64().map(|s| s.to_string()).as_deref() == Some(status)),
            "requests with status {status}"
        );
    }
    let decision_of = |r: &Value, policy: &str| -> Option<String> {
        r["policies"]
            .as_array()?
            .iter()
            .find(|p| p["policy"] == policy)
            .and_then(|p| p["decision"].as_str().map(str::to_owned))
    };
    // The same words on both sides: `policies[].decision` is the metric's `action`.
    for action in ["pass", "redact", "log", "escalate", "block"] {
        let audited = with(&|r| decision_of(r, "pii-detector").as_deref() == Some(action));
        assert!(audited > 0, "the workload has a pii-detector `{action}`");
        assert_eq!(
            counter(
                &metrics,
                "palisade_policy_decisions_total",
                &[("policy", "pii-detector"), ("action", action)]
            ),
            audited,
            "pii-detector {action}:\n{metrics}"
        );
    }
    for action in ["pass", "block", "degrade"] {
        let audited = with(&|r| decision_of(r, "budget-enforcer").as_deref() == Some(action));
        assert!(audited > 0, "the workload has a budget-enforcer `{action}`");
        assert_eq!(
            counter(
                &metrics,
                "palisade_budget_decisions_total",
                &[("action", action)]
            ),
            audited,
            "budget-enforcer {action}:\n{metrics}"
        );
    }
    for entity in ["email", "credit_card"] {
        let audited: u64 = records
            .iter()
            .filter_map(|r| r["policies"].as_array())
            .flatten()
            .filter(|p| p["policy"] == "pii-detector")
            .filter_map(|p| p["entities"][entity].as_u64())
            .sum();
        assert!(audited > 0);
        assert_eq!(
            counter(
                &metrics,
                "palisade_pii_findings_total",
                &[("entity", entity), ("side", "request")]
            ),
            audited,
            "{entity} findings"
        );
    }
    let codes: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["error_code"].as_str())
        .collect();
    assert!(codes.len() >= 3, "{codes:?}");
    for code in codes {
        assert_eq!(
            counter(&metrics, "palisade_errors_total", &[("code", code)]),
            with(&|r| r["error_code"] == code),
            "errors with code {code}:\n{metrics}"
        );
    }
}

/// Usage is read from every format, so a budget settles on what the provider reported on each
/// route, and the record names the route; a stream whose provider never reports usage is
/// charged its reservation and its record says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_settles_on_its_reported_usage_or_says_it_did_not() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let audit = dir.path().join("audit");
    let base = mock.base_url();
    let text = format!(
        "pack:
  name: test
  version: 1.0.0
  enabled: true
policies:
  chain: [audit-logger, budget-enforcer]
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
    input_usd_per_mtok: 1
    output_usd_per_mtok: 2
  claude-test:
    provider: claude
    input_usd_per_mtok: 3
    output_usd_per_mtok: 15
policy:
{}  budget-enforcer:
    limits:
      - {{scope: environment, window: daily, tokens: 1000000, on_exhausted: block}}
",
        audit_policy(&audit)
    );
    let p = dir.write("pack.yaml", &text);
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    let c = client::client();
    let msg = serde_json::json!({"model": "claude-test", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&c, &gw.api("/v1/messages"), &msg, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = mock.last().await.unwrap().raw.len() as u64;
    let resp = serde_json::json!({"model": "gpt-4o-mini", "input": "hi", "stream": true});
    let r = post(&c, &gw.api("/v1/responses"), &resp, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&c, &gw.api("/v1/messages/count_tokens"), &msg, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A chat stream whose provider sends no usage chunk.
    mock.set(|b| {
        b.raw_stream = Some(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"
                .to_vec(),
        );
    })
    .await;
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", true),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut records = Vec::new();
    wait_until(Duration::from_secs(5), "four records", || {
        records = request_records(&audit);
        let n = records.len();
        async move { n == 4 }
    })
    .await;
    let by_route = |route: &str| {
        records
            .iter()
            .find(|r| r["route"] == route)
            .unwrap()
            .clone()
    };
    let m = by_route("/v1/messages");
    // The mock reports `input_tokens` (body/4) and 3 cache reads beside it, 7 output tokens.
    assert_eq!(m["usage"]["input_tokens"], sent / 4 + 3, "{m}");
    assert_eq!(m["usage"]["output_tokens"], 7);
    let cost = m["cost_usd"].as_f64().unwrap();
    let want = ((sent / 4 + 3) as f64 * 3.0 + 7.0 * 15.0) / 1e6;
    assert!((cost - want).abs() < 1e-9, "{cost} vs {want}");
    assert_eq!(m["budget"]["decision"], "reserved");
    let rs = by_route("/v1/responses");
    assert_eq!(rs["usage"]["output_tokens"], 4, "{rs}");
    let ct = by_route("/v1/messages/count_tokens");
    assert!(
        ct["budget"].is_null(),
        "counting tokens reserves nothing: {ct}"
    );
    let ch = by_route("/v1/chat/completions");
    assert!(ch["usage"].is_null(), "{ch}");
    assert_eq!(ch["budget"]["decision"], "settled_on_reservation", "{ch}");
}
