//! `include_redacted_text` from the outside: the real `palisade gateway` binary, a prompt and
//! answers holding e-mail addresses, and the audit lines on disk. With the setting on, a record
//! carries the request text exactly as the provider received it (placeholders, never the
//! address) and the answer as the caller received it, JSON and streamed; under `log` (which lets
//! the address through) no text is recorded; with the setting off the text fields are absent.
//!
//! The pack uses `fsync_interval_ms: 0` with the default `on_queue_full: block`, so a record is
//! on disk before its response arrives: the test reads the log right after each response,
//! without polling.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::path::Path;
use std::time::Duration;

use gateway_support::client::{self, chat, get, post, sse_text, wait_until};
use gateway_support::mock::MockProvider;
use gateway_support::{pack, Dir, GatewayProcess};
use serde_json::Value;

const EMAIL: &str = "jane.doe@example.com";
const REPLY_EMAIL: &str = "support.team@example.org";
const STREAM_EMAIL: &str = "bob.smith@example.net";

fn policy(audit: &Path, action: &str, include_text: bool) -> String {
    format!(
        "policy:\n  audit-logger:\n    dir: {}\n    fsync_interval_ms: 0\n    include_redacted_text: {include_text}\n  pii-detector:\n    action: {action}\n    entities: [email]\n    scan: [request, response]\n",
        audit.display()
    )
}

/// The request records in the log, in chain order.
fn records(audit: &Path) -> Vec<Value> {
    gateway_support::audit_lines(audit, false)
        .into_iter()
        .filter(|l| l["kind"] == "request")
        .map(|l| l["record"].clone())
        .collect()
}

/// The record of request `id`, which must already be on disk.
fn record_of(audit: &Path, id: &str) -> Value {
    records(audit)
        .into_iter()
        .find(|r| r["request_id"] == id)
        .unwrap_or_else(|| panic!("no record of {id} when its response had arrived"))
}

/// The strings of the request's messages as the provider received them, one per line.
fn received_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_carries_the_redacted_text_only_when_asked_and_never_a_raw_value() {
    let mock = MockProvider::start().await;
    mock.set(|b| {
        b.reply = format!("Write to {REPLY_EMAIL} today.");
        b.chunks = vec![
            "Contact ".into(),
            "bob.smith@exa".into(),
            "mple.net".into(),
            " now.".into(),
        ];
    })
    .await;
    let dir = Dir::new();
    let audit = dir.path().join("audit");
    let chain = "audit-logger, pii-detector";
    let p = dir.write(
        "pack.yaml",
        &pack(
            &mock.base_url(),
            "1.0.0",
            chain,
            &policy(&audit, "redact", true),
        ),
    );
    let mut gw = GatewayProcess::start(&p, dir.path(), &[]);
    let c = client::client();
    let url = gw.api("/v1/chat/completions");
    let prompt = format!("Please reply to {EMAIL} about the invoice");

    // JSON: the request text as sent upstream, the answer as the caller got it.
    let r = post(&c, &url, &chat("gpt-4o-mini", &prompt, false), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = record_of(&audit, r.header("x-palisade-request-id"));
    let sent = received_text(&mock.last().await.unwrap().body);
    assert!(
        sent.contains("[EMAIL_1]") && !sent.contains(EMAIL),
        "{sent}"
    );
    assert_eq!(rec["redacted_text"], sent.as_str(), "{rec}");
    let answer = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!answer.contains(REPLY_EMAIL), "{answer}");
    assert_eq!(rec["redacted_response_text"], answer.as_str(), "{rec}");

    // Streamed: the answer's text is collected across chunks (the address was split in two).
    let r = post(&c, &url, &chat("gpt-4o-mini", &prompt, true), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = record_of(&audit, r.header("x-palisade-request-id"));
    let streamed = sse_text(&r.text());
    assert!(
        streamed.starts_with("Contact [EMAIL") && !streamed.contains(STREAM_EMAIL),
        "{streamed}"
    );
    assert_eq!(rec["redacted_response_text"], streamed.as_str(), "{rec}");
    assert_eq!(
        rec["redacted_text"],
        received_text(&mock.last().await.unwrap().body).as_str()
    );

    // `log` sends the address on unchanged: no text may be recorded.
    std::fs::write(
        &p,
        pack(
            &mock.base_url(),
            "2.0.0",
            chain,
            &policy(&audit, "log", true),
        ),
    )
    .unwrap();
    wait_for_version(&gw, "2.0.0").await;
    let r = post(&c, &url, &chat("gpt-4o-mini", &prompt, false), None).await;
    assert_eq!(r.status, 200);
    let rec = record_of(&audit, r.header("x-palisade-request-id"));
    assert_eq!(rec["pack"]["version"], "2.0.0");
    assert!(rec.get("redacted_text").is_none(), "{rec}");
    assert!(rec.get("redacted_response_text").is_none(), "{rec}");

    // The setting off: no text fields at all, even for a clean request.
    std::fs::write(
        &p,
        pack(
            &mock.base_url(),
            "3.0.0",
            chain,
            &policy(&audit, "redact", false),
        ),
    )
    .unwrap();
    wait_for_version(&gw, "3.0.0").await;
    for text in [prompt.as_str(), "hello"] {
        let r = post(&c, &url, &chat("gpt-4o-mini", text, false), None).await;
        assert_eq!(r.status, 200);
        let rec = record_of(&audit, r.header("x-palisade-request-id"));
        assert_eq!(rec["pack"]["version"], "3.0.0");
        assert!(rec.get("redacted_text").is_none(), "{rec}");
        assert!(rec.get("redacted_response_text").is_none(), "{rec}");
    }

    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await.success());
    let log: String = gateway::audit::files::list(&audit)
        .unwrap()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for raw in [EMAIL, REPLY_EMAIL, STREAM_EMAIL, "bob.smith@exa"] {
        assert!(!log.contains(raw), "raw value {raw} in the audit log");
    }
    assert_eq!(records(&audit).len(), 5);
}

async fn wait_for_version(gw: &GatewayProcess, version: &str) {
    let status = gw.api("/status");
    wait_until(Duration::from_secs(10), "the new pack is active", || {
        let status = status.clone();
        async move { get(&client::client(), &status).await.json()["version"] == version }
    })
    .await;
}
