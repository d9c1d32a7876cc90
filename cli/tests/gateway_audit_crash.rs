//! `kill -9` of a real `palisade gateway` while requests are in flight, with the audit log on
//! (`fsync_interval_ms: 0`, `on_queue_full: block`): the setting under which a response waits
//! until its record is written and fsynced (group commit: one write and one fsync per batch).
//!
//! What is guaranteed, and asserted:
//! * no acknowledged record is lost: every request whose complete response the client received
//!   before the kill is in the log — JSON answers (200), streams (200, `data: [DONE]` and the
//!   end of the body; the gateway holds both back until the record is on disk) and refusals
//!   (403 `model_not_allowed`, whose error response waits for its record too);
//! * the log on disk is a valid chain up to its last complete line; at most the final line may
//!   be torn (the writer died mid-`write`), so `palisade audit verify` may fail before a restart
//!   only on that tail — and a torn line never holds an acknowledged record, since the
//!   acknowledgement follows the complete write;
//! * a restart on the same directory cuts a torn tail off, says so with a `recovered` line,
//!   continues the chain, and `verify` then passes (when the kill tore nothing, the test appends
//!   the fragment such a kill leaves, so the recovery runs every time).
//!
//! Not asserted: anything about requests whose response had not fully arrived when the kill
//! landed (their records may or may not be in the log). The page cache survives SIGKILL, so what
//! a kill could lose is the writer's queue; the fsync is what makes the same hold for a machine
//! crash, which this test cannot stage.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_support::client::{self, chat, post, wait_until};
use gateway_support::mock::MockProvider;
use gateway_support::{durable_audit_pack, Dir, GatewayProcess};
use http_body_util::Full;
use hyper::Request;
use serde_json::Value;

/// What each load client sends, one request after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Stream,
    /// A model the pack does not allow: 403, refused before the provider.
    Refused,
}

const CLIENTS: [Kind; 5] = [
    Kind::Json,
    Kind::Json,
    Kind::Stream,
    Kind::Stream,
    Kind::Refused,
];

/// Every line of the audit log in `dir`, in chain order; a torn last line is skipped.
fn lines(dir: &Path) -> Vec<Value> {
    gateway_support::audit_lines(dir, true)
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

fn newest_file(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .max()
        .unwrap()
}

/// One request; `Some(request id)` only when its whole response arrived: the expected status,
/// and a body that ended cleanly and is complete (JSON that parses; a stream through `[DONE]`).
async fn try_request(c: &client::TestClient, url: &str, kind: Kind) -> Option<String> {
    let body = match kind {
        Kind::Json => chat("gpt-4o-mini", "hi", false),
        Kind::Stream => chat("gpt-4o-mini", "hi", true),
        Kind::Refused => chat("not-in-pack", "hi", false),
    };
    let req = Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = c.request(req).await.ok()?;
    let want = if kind == Kind::Refused { 403 } else { 200 };
    if resp.status() != want {
        return None;
    }
    let id = resp
        .headers()
        .get("x-palisade-request-id")?
        .to_str()
        .ok()?
        .to_owned();
    // A body cut by the kill ends in an error here.
    let bytes = gateway::body::read_limited(resp.into_body(), None, 1 << 20)
        .await
        .ok()?;
    match kind {
        Kind::Stream => {
            let text = std::str::from_utf8(&bytes).ok()?;
            text.trim_end().ends_with("data: [DONE]").then_some(())?;
        }
        Kind::Json | Kind::Refused => {
            serde_json::from_slice::<Value>(&bytes).ok()?;
        }
    }
    Some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_record_and_a_restart_continues_the_chain() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let audit = dir.path().join("audit");
    let p = dir.write("pack.yaml", &durable_audit_pack(&mock.base_url(), &audit));
    let (first_dir, second_dir) = (dir.path().join("run1"), dir.path().join("run2"));
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::create_dir_all(&second_dir).unwrap();
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let mut gw = GatewayProcess::start(&p, &first_dir, &args);
    let url = gw.api("/v1/chat/completions");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = CLIENTS
        .iter()
        .map(|&kind| {
            let url = url.clone();
            let (stop, done) = (stop.clone(), done.clone());
            gateway_support::client::spawn(async move {
                let c = client::client();
                // In order: the request ids whose whole response arrived.
                let mut answered = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match try_request(&c, &url, kind).await {
                        Some(id) => {
                            answered.push(id);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        None => break,
                    }
                }
                answered
            })
        })
        .collect();
    // Load for a while, so plenty of responses end well before the kill.
    let load_started = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "a second of load, 100 answers",
        || {
            let done = done.clone();
            async move {
                done.load(Ordering::Relaxed) >= 100
                    && load_started.elapsed() >= Duration::from_secs(1)
            }
        },
    )
    .await;

    gw.signal("KILL");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success(), "SIGKILL must not look like a clean exit");
    stop.store(true, Ordering::Relaxed);
    let mut finished = Vec::new();
    for c in clients {
        finished.push(c.await.unwrap());
    }
    assert!(
        finished.iter().all(|c| !c.is_empty()),
        "a client got no answer before the kill"
    );

    // Before a restart a torn final line is the only acceptable failure.
    let (ok_before, out_before) = audit_verify(&audit);
    let before = lines(&audit);
    let last_seq_before = before.last().unwrap()["seq"].as_u64().unwrap();
    if !ok_before {
        eprintln!("verify before the restart failed (a torn tail is allowed): {out_before}");
    }

    let written: HashSet<String> = before
        .iter()
        .filter(|l| l["kind"] == "request")
        .map(|l| l["record"]["request_id"].as_str().unwrap().to_owned())
        .collect();
    for (kind, answered) in CLIENTS.iter().zip(&finished) {
        let missing: Vec<&String> = answered
            .iter()
            .filter(|id| !written.contains(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "{kind:?} client: {} of {} answered requests have no record in the log after the kill: {missing:?}",
            missing.len(),
            answered.len()
        );
    }

    // A real SIGKILL rarely lands inside the writer's one `write` per batch; when it did not,
    // leave the tail such a kill would, so the restart's recovery runs every time.
    let torn = !ok_before;
    if !torn {
        let newest = newest_file(&audit);
        let mut text = std::fs::read(&newest).unwrap();
        text.extend_from_slice(
            b"{\"seq\":99999,\"ts\":\"2026-11-22T12:00:00.000Z\",\"kind\":\"req",
        );
        std::fs::write(&newest, text).unwrap();
    }

    // Restart on the same directory: the writer recovers and continues the chain.
    let gw = GatewayProcess::start(&p, &second_dir, &args);
    let restart_line = before.len();
    wait_until(
        Duration::from_secs(10),
        "the restarted writer's first line",
        || {
            let audit = audit.clone();
            async move { lines(&audit).len() > restart_line }
        },
    )
    .await;
    let after = lines(&audit);
    let first_new = &after[restart_line];
    let kind = first_new["kind"].as_str().unwrap();
    assert_eq!(first_new["seq"].as_u64().unwrap(), last_seq_before + 1);
    assert_eq!(kind, "recovered", "{first_new}");
    assert!(
        first_new["note"]
            .as_str()
            .unwrap()
            .contains("discarded a torn line"),
        "{first_new}"
    );
    let r = post(
        &client::client(),
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", false),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-palisade-request-id").to_owned();
    wait_until(Duration::from_secs(10), "the new request's record", || {
        let (audit, id) = (audit.clone(), id.clone());
        async move {
            lines(&audit)
                .iter()
                .any(|l| l["kind"] == "request" && l["record"]["request_id"] == id.as_str())
        }
    })
    .await;
    let (ok, out) = audit_verify(&audit);
    assert!(
        ok,
        "audit verify after the restart failed: {out}\nbefore the restart: {out_before}"
    );
    eprintln!(
        "answered before the kill (every one logged): {:?}; records in the log: {}; torn by the kill itself: {torn}",
        CLIENTS.iter().zip(&finished).map(|(k, a)| (k, a.len())).collect::<Vec<_>>(),
        written.len(),
    );
}
