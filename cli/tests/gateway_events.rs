//! The real gateway under the real control plane ships one decision event per request: after a
//! deploy, `palisade events` and `events summary` show escalations under one version and blocks
//! under the next; the escalations wait in the queue. With the control plane down the gateway
//! keeps serving, holds what its buffer takes and counts what overflowed (`/status`, metrics,
//! `palisade status`); once it is back, every held event arrives and none twice. SIGTERM sends
//! what is queued before the gateway exits, and a restarted gateway resends nothing.
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
use std::time::Duration;

use cp_support::{eventually, text, Backend, ControlPlane, ManagedGateway, ADMIN_KEY};
use gateway_support::{client, mock::MockProvider, pack};
use serde_json::Value;

fn start_gateway(cp_url: &str, key: &str, dir: &Path, buffer: &str) -> ManagedGateway {
    ManagedGateway::start(
        cp_url,
        key,
        "dev",
        "test",
        dir,
        &["--events-buffer", buffer],
    )
}

fn policy(action: &str) -> String {
    format!("policy:\n  pii-detector:\n    action: {action}\n    entities: [email]\n    scan: [request]\n")
}

async fn status(gw: &ManagedGateway) -> Value {
    client::get(&client::client(), &format!("{}/status", gw.url))
        .await
        .json()
}

async fn chat(gw: &ManagedGateway, text: &str) -> u16 {
    let body = client::chat("gpt-4o-mini", text, false);
    client::post(
        &client::client(),
        &format!("{}/v1/chat/completions", gw.url),
        &body,
        None,
    )
    .await
    .status
    .as_u16()
}

async fn serving(gw: &ManagedGateway, version: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while status(gw).await["version"] != version {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never served {version}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn deploy(cp: &ControlPlane, version: &str) {
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["deploy", "test", version, "-e", "dev", "--note", "rollout"],
    );
    assert!(o.status.success(), "{}", text(&o));
}

/// Every stored event of dev (the API pages at 1000; these tests stay below).
fn stored(cp: &ControlPlane) -> Vec<Value> {
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["events", "-e", "dev", "--limit", "1000", "--format", "json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_managed_gateway_ships_its_decisions_and_counts_what_it_could_not() {
    let t = Duration::from_secs(30);
    let mock = MockProvider::start().await;
    let cp = ControlPlane::start(Backend::Sqlite, 200);
    let key = cp.create_key("gateway", Some("dev"));
    let chain = "audit-logger, pii-detector";
    cp.push(&pack(&mock.base_url(), "1.0.0", chain, &policy("escalate")));
    cp.push(&pack(&mock.base_url(), "2.0.0", chain, &policy("block")));
    deploy(&cp, "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(&cp.url, &key, dir.path(), "40");
    serving(&gw, "1.0.0").await;

    for text in [
        "hello",
        "mail ann@example.com please",
        "hi",
        "bob@example.org",
        "bye",
    ] {
        assert_eq!(chat(&gw, text).await, 200);
    }
    deploy(&cp, "2.0.0");
    serving(&gw, "2.0.0").await;
    for (text, want) in [
        ("hello", 200),
        ("mail ann@example.com", 400),
        ("ann@example.com", 400),
        ("ok", 200),
    ] {
        assert_eq!(chat(&gw, text).await, want, "{text}");
    }

    let events = eventually(t, "9 events at the control plane", || {
        let e = stored(&cp);
        (e.len() == 9).then_some(e)
    });
    let by = |version: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e["version"] == version && e["outcome"] == outcome)
            .count()
    };
    assert_eq!((by("1.0.0", "escalated"), by("1.0.0", "allowed")), (2, 3));
    // A gateway and a control plane of one build exchange rows, not objects.
    let cp_metrics = client::get(&client::client(), &format!("{}/metrics", cp.url)).await;
    let cp_metrics = String::from_utf8_lossy(&cp_metrics.body).into_owned();
    assert!(
        cp_metrics.contains("palisade_cp_event_batches_total{format=\"rows\"}")
            && !cp_metrics.contains("format=\"objects\""),
        "{cp_metrics}"
    );
    assert_eq!((by("2.0.0", "blocked"), by("2.0.0", "allowed")), (2, 2));
    let escalated = events.iter().find(|e| e["outcome"] == "escalated").unwrap();
    assert_eq!(escalated["pii"]["request"]["email"], 1, "{escalated}");
    assert_eq!(escalated["route"], "/v1/chat/completions");
    assert_eq!(escalated["model_requested"], "gpt-4o-mini");
    assert!(
        escalated["input_tokens"].as_i64().unwrap() > 0,
        "{escalated}"
    );
    assert!(
        !escalated.to_string().contains("ann@example.com"),
        "never a value: {escalated}"
    );

    let o = cp.cli(
        Some(ADMIN_KEY),
        &["events", "summary", "-e", "dev", "--since", "1h"],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("1.0.0") && out.contains("40.00 %"),
        "2 of 5 escalated: {out}"
    );
    assert!(
        out.contains("2.0.0") && out.contains("50.00 %"),
        "2 of 4 blocked: {out}"
    );
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["escalations", "list", "-e", "dev", "--state", "open"],
    );
    assert_eq!(text(&o).matches("1.0.0").count(), 2, "{}", text(&o));
    let s = status(&gw).await;
    assert_eq!(
        (
            s["events"]["shipped"].as_u64(),
            s["events"]["dropped"].as_u64()
        ),
        (Some(9), Some(0)),
        "{s}"
    );

    // The control plane goes away: requests are served as before, and the buffer (40) holds
    // what the shipper's retried batch does not; the rest is counted.
    let addr = cp.addr.clone();
    let (cp_dir, db) = cp.stop();
    for i in 0..30 {
        assert_eq!(chat(&gw, &format!("while down {i}")).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..80 {
        assert_eq!(chat(&gw, &format!("still down {i}")).await, 200);
    }
    // A serving thread queues the rows it holds back on its one-second tick: after two, every
    // event is queued or counted as dropped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = status(&gw).await;
    let dropped = s["events"]["dropped"].as_u64().unwrap();
    assert!(dropped > 0 && dropped <= 80, "the overflow is counted: {s}");
    assert!(s["events"]["send_failures"].as_u64().unwrap() > 0, "{s}");
    let metrics = client::get(&client::client(), &format!("{}/metrics", gw.url)).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains(&format!("palisade_events_dropped_total {dropped}")),
        "{metrics}"
    );

    // Back on the same address: everything held arrives, nothing twice.
    let cp = ControlPlane::start_with_args(200, Some(ADMIN_KEY), cp_dir, db, &["--listen", &addr]);
    let want = 9 + 110 - dropped as usize;
    eventually(t, "the held events at the control plane", || {
        (stored(&cp).len() == want).then_some(())
    });
    let s = status(&gw).await;
    assert_eq!(s["events"]["shipped"].as_u64(), Some(want as u64), "{s}");
    eventually(t, "palisade status shows the drops", || {
        let o = cp.cli(Some(ADMIN_KEY), &["status", "-e", "dev"]);
        text(&o)
            .contains(&format!("{dropped} decision events dropped"))
            .then_some(())
    });

    // SIGTERM: what is queued is sent before the gateway exits.
    for i in 0..5 {
        assert_eq!(chat(&gw, &format!("last {i}")).await, 200);
    }
    let ok = Command::new("kill")
        .args(["-TERM", &gw.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut gw = gw;
    eventually(t, "the gateway exits", || gw.child.try_wait().unwrap());
    assert_eq!(
        stored(&cp).len(),
        want + 5,
        "the last events were flushed at shutdown"
    );

    // A restarted gateway resends nothing: only its own new requests arrive.
    drop(gw);
    let gw = start_gateway(&cp.url, &key, dir.path(), "40");
    serving(&gw, "2.0.0").await;
    assert_eq!(chat(&gw, "after restart").await, 200);
    eventually(t, "the new request's event", || {
        (stored(&cp).len() == want + 6).then_some(())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stored(&cp).len(), want + 6, "nothing else was sent");
}
