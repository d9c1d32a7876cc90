//! `kill -9` of a real `palisade gateway` while requests are in flight, with the audit log on
//! (`fsync_interval_ms: 0`, `on_queue_full: block`).
//!
//! What is guaranteed, and all this test asserts:
//! * the log on disk is a valid chain up to its last complete line; at most the final line may
//!   be torn (the writer died mid-`write`), so `palisade audit verify` may fail before a restart
//!   only on that tail;
//! * a restart on the same directory cuts a torn tail off, says so with a `recovered` line,
//!   continues the chain, and `verify` then passes (when the kill tore nothing, the test appends
//!   the fragment such a kill leaves, so the recovery runs every time);
//! * no holes: a non-streaming request's record is queued (FIFO, one writer thread) before its
//!   response is sent, so for a client sending one request after another the requests it finds
//!   in the log are a prefix of the ones it was answered, in order — never a later one without
//!   an earlier one.
//!
//! Not guaranteed, so not asserted: that an answered request is in the log at all, however long
//! before the kill it was answered. The response does not wait for the write (the request path
//! never touches the disk), and SIGKILL loses whatever is still queued; the writer can fall
//! behind by hundreds of milliseconds on a busy machine (seen on 2 shared cores: 287 answered
//! requests missing, the oldest answered 335 ms before the kill). The page cache survives SIGKILL,
//! so what a kill loses is the unwritten queue; fsync only matters for a machine crash. The
//! observed lag is printed.
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
use gateway_support::{pack, Dir, GatewayProcess};
use http_body_util::Full;
use hyper::Request;
use serde_json::Value;

const CLIENTS: usize = 4;

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

/// One request; `Some(request id)` only when a 200 response arrived complete.
async fn try_chat(c: &client::TestClient, url: &str, body: &Bytes) -> Option<String> {
    let req = Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap();
    let resp = c.request(req).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let id = resp
        .headers()
        .get("x-palisade-request-id")?
        .to_str()
        .ok()?
        .to_owned();
    let bytes = gateway::body::read_limited(resp.into_body(), None, 1 << 20)
        .await
        .ok()?;
    // A body cut by the kill does not parse.
    serde_json::from_slice::<Value>(&bytes).ok()?;
    Some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_leaves_a_log_that_verifies_and_a_restart_continues_the_chain() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let audit = dir.path().join("audit");
    let policy = format!(
        "policy:\n  audit-logger:\n    dir: {}\n    fsync_interval_ms: 0\n    on_queue_full: block\n",
        audit.display()
    );
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "audit-logger", &policy),
    );
    let (first_dir, second_dir) = (dir.path().join("run1"), dir.path().join("run2"));
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::create_dir_all(&second_dir).unwrap();
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let mut gw = GatewayProcess::start(&p, &first_dir, &args);
    let url = gw.api("/v1/chat/completions");
    let body = Bytes::from(chat("gpt-4o-mini", "hi", false).to_string());

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            let (stop, done) = (stop.clone(), done.clone());
            tokio::spawn(async move {
                let c = client::client();
                // In order: (request id, when its response had fully arrived).
                let mut answered = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match try_chat(&c, &url, &body).await {
                        Some(id) => {
                            answered.push((id, Instant::now()));
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

    let killed_at = Instant::now();
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
    for (n, answered) in finished.iter().enumerate() {
        let logged: Vec<bool> = answered
            .iter()
            .map(|(id, _)| written.contains(id))
            .collect();
        let prefix = logged.iter().take_while(|l| **l).count();
        assert!(
            logged[prefix..].iter().all(|l| !l),
            "client {n}: request {} is logged but an earlier answered one ({}) is not",
            answered[prefix..]
                .iter()
                .zip(&logged[prefix..])
                .find(|(_, l)| **l)
                .map_or("?", |((id, _), _)| id.as_str()),
            answered[prefix].0
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
    // Not asserted (see the module docs): how far the log lagged behind the answers.
    let unlogged: Vec<Duration> = finished
        .iter()
        .flatten()
        .filter(|(id, _)| !written.contains(id))
        .map(|(_, at)| killed_at.saturating_duration_since(*at))
        .collect();
    eprintln!(
        "answered {}, answered but not logged {} (oldest answered {:?} before the kill), \
         torn by the kill itself: {torn}",
        finished.iter().map(Vec::len).sum::<usize>(),
        unlogged.len(),
        unlogged.iter().max(),
    );
}
