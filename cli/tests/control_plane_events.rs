//! Decision events and the escalation queue through the real control-plane binary, on SQLite and
//! Postgres: batches are stored once by request id and refused whole when any event is bad (or
//! of another environment); `GET /v1/events` filters and pages newest first; the summary
//! compares versions; escalations move open → acknowledged → resolved by role, with every change
//! in the admin log; the runtime evidence gate refuses a promotion with the measured rates and
//! lets it through once they hold; retention deletes what is older than the environment keeps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use std::io::{Read as _, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cp_support::{eventually, text, Backend, ControlPlane, ADMIN_KEY, PACK_V1};
use serde_json::{json, Value};

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// One event of `dev` as a gateway sends it.
fn event(id: &str, version: &str, hash: &str, outcome: &str, at_ms: i64) -> Value {
    json!({
        "request_id": id, "at_ms": at_ms, "environment": "dev", "pack": "support",
        "version": version, "hash": hash, "route": "/v1/chat/completions",
        "model_requested": "gpt-4o", "model_used": "gpt-4o", "caller": "app-1", "team": "support",
        "outcome": outcome, "escalated": outcome == "escalated", "status": 200,
        "latency_us": 1500, "upstream_us": 1000, "input_tokens": 10, "output_tokens": 20,
        "cost_usd": 0.0001, "pii": { "request": {}, "response": {} },
    })
}

/// `n` allowed events of version 1.0.0, ids `PREFIX-0`…, a millisecond apart from `t0`.
fn allowed(prefix: &str, n: i64, t0: i64) -> Vec<Value> {
    (0..n)
        .map(|i| event(&format!("{prefix}-{i}"), "1.0.0", "h1", "allowed", t0 + i))
        .collect()
}

fn send(cp: &ControlPlane, key: &str, events: &[Value]) -> cp_support::HttpAnswer {
    cp.http(
        "POST",
        "/v1/events",
        Some(key),
        &[],
        Some(&json!({ "gateway": "gw-1", "events": events })),
    )
}

/// `GET path` as text (the metrics exposition is not JSON).
fn get_text(cp: &ControlPlane, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(&cp.addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// `dev`'s summary of the last three hours.
fn summary_3h(cp: &ControlPlane) -> Value {
    cp.http(
        "GET",
        "/v1/events/summary?environment=dev&since=3h",
        Some(ADMIN_KEY),
        &[],
        None,
    )
    .body
}

fn ids(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request_id"].as_str().unwrap().to_owned())
        .collect()
}

fn events_are_stored_once_filtered_paged_and_summarised(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let gw = cp.create_key("gateway", Some("dev"));
    let t0 = now_ms() - 60_000;
    let mut batch = Vec::new();
    for (i, (version, outcome)) in [
        ("1.0.0", "allowed"),
        ("1.0.0", "redacted"),
        ("1.0.0", "blocked"),
        ("2.0.0", "escalated"),
        ("2.0.0", "escalated"),
        ("2.0.0", "allowed"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = event(
            &format!("req-{i}"),
            version,
            &format!("hash-{version}"),
            outcome,
            t0 + i as i64,
        );
        if outcome != "allowed" {
            e["pii"]["request"] = json!({ "email": 2 });
        }
        batch.push(e);
    }
    batch[1]["pii"]["response"] = json!({ "us_ssn": 1 });
    // A routed request that was retried lists its attempts.
    let attempts = json!([
        {"deployment": "azure-east/gpt-4o", "outcome": "503", "ms": 12},
        {"deployment": "openai/gpt-4o", "outcome": "200", "ms": 340},
    ]);
    batch[0]["attempts"] = attempts.clone();
    let a = send(&cp, &gw, &batch);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["accepted"], 6);
    assert_eq!(a.body["escalations_opened"], 2);
    let reader = cp.create_key("viewer", None);
    let all = cp
        .http(
            "GET",
            "/v1/events?environment=dev&limit=100",
            Some(&reader),
            &[],
            None,
        )
        .body;
    let listed: Vec<&Value> = all["events"].as_array().unwrap().iter().collect();
    let req0 = listed.iter().find(|e| e["request_id"] == "req-0").unwrap();
    assert_eq!(req0["attempts"], attempts);
    let req1 = listed.iter().find(|e| e["request_id"] == "req-1").unwrap();
    assert!(req1.get("attempts").is_none(), "{req1}");

    // A retried batch (its acknowledgement lost) is not counted twice.
    let a = send(&cp, &gw, &batch);
    assert_eq!(
        (a.body["accepted"].clone(), a.body["duplicates"].clone()),
        (json!(0), json!(6))
    );

    // Refused whole: a bad event names itself and the good one beside it is not stored.
    let mut bad = event("req-bad", "1.0.0", "hash-1.0.0", "fine", t0);
    let a = send(
        &cp,
        &gw,
        &[
            event("req-new", "1.0.0", "hash-1.0.0", "allowed", t0),
            bad.clone(),
        ],
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid event batch at `events[1].outcome`: unknown variant `fine`"),
        "{}",
        a.body
    );
    bad["outcome"] = json!("allowed");
    bad["status"] = json!("ok");
    let a = send(&cp, &gw, &[bad]);
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events[0].status"),
        "{}",
        a.body
    );
    // Another environment's events, and keys that are not gateway keys, are refused.
    let mut prod = event("req-prod", "1.0.0", "h", "allowed", t0);
    prod["environment"] = json!("prod");
    assert_eq!(send(&cp, &gw, &[prod]).status, 403);
    let viewer = cp.create_key("viewer", None);
    assert_eq!(
        send(&cp, &viewer, &[event("req-v", "1.0.0", "h", "allowed", t0)]).status,
        403
    );
    let many: Vec<Value> = (0..5001)
        .map(|i| event(&format!("m{i}"), "1.0.0", "h", "allowed", t0))
        .collect();
    let a = send(&cp, &gw, &many);
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (413, Some("BATCH_TOO_LARGE"))
    );

    // Newest first, paged by cursor, nothing twice.
    let p1 = cp
        .http(
            "GET",
            "/v1/events?environment=dev&limit=4",
            Some(&viewer),
            &[],
            None,
        )
        .body;
    assert_eq!(ids(&p1), ["req-5", "req-4", "req-3", "req-2"]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = cp
        .http(
            "GET",
            &format!("/v1/events?environment=dev&limit=4&cursor={cursor}"),
            Some(&viewer),
            &[],
            None,
        )
        .body;
    assert_eq!(ids(&p2), ["req-1", "req-0"]);
    assert!(p2["next_cursor"].is_null());
    let e0 = &p2["events"][1];
    assert_eq!(
        (
            e0["caller"].as_str(),
            e0["team"].as_str(),
            e0["input_tokens"].as_i64()
        ),
        (Some("app-1"), Some("support"), Some(10))
    );

    let q = |query: &str| {
        ids(&cp
            .http(
                "GET",
                &format!("/v1/events?{query}"),
                Some(&viewer),
                &[],
                None,
            )
            .body)
    };
    assert_eq!(q("environment=dev&outcome=escalated"), ["req-4", "req-3"]);
    assert_eq!(q("environment=dev&entity=us_ssn"), ["req-1"]);
    assert_eq!(
        q("environment=dev&version=1.0.0&entity=email"),
        ["req-2", "req-1"]
    );
    assert_eq!(
        q("environment=dev&since=1s").len(),
        0,
        "all are a minute old"
    );
    assert_eq!(q("environment=dev&since=2m").len(), 6);
    assert_eq!(
        cp.http("GET", "/v1/events?outcome=nope", Some(&viewer), &[], None)
            .status,
        400
    );
    // A key scoped to another environment cannot read dev's events.
    let prod_viewer = cp.create_key("viewer", Some("prod"));
    assert_eq!(
        cp.http(
            "GET",
            "/v1/events?environment=dev",
            Some(&prod_viewer),
            &[],
            None
        )
        .status,
        403
    );
    assert_eq!(
        ids(&cp
            .http("GET", "/v1/events", Some(&prod_viewer), &[], None)
            .body)
        .len(),
        0
    );

    let s = cp
        .http(
            "GET",
            "/v1/events/summary?environment=dev&since=1h",
            Some(&viewer),
            &[],
            None,
        )
        .body;
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{s}");
    let v2 = rows.iter().find(|r| r["version"] == "2.0.0").unwrap();
    assert_eq!(v2["requests"], 3);
    assert_eq!(v2["outcomes"]["escalated"], 2);
    assert!((v2["rates"]["escalation"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    let v1 = rows.iter().find(|r| r["version"] == "1.0.0").unwrap();
    assert!((v1["rates"]["block"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(v1["findings"]["request"]["email"], 4);
    assert_eq!(v1["findings"]["response"]["us_ssn"], 1);
    let total = cp
        .http(
            "GET",
            "/v1/events/summary?environment=dev&by=total",
            Some(&viewer),
            &[],
            None,
        )
        .body;
    assert_eq!(total["rows"][0]["requests"], 6);

    // The CLI shows the same.
    let o = cp.cli(
        Some(&viewer),
        &["events", "-e", "dev", "--outcome", "blocked"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("req-2") && !out.contains("req-3"), "{out}");
    let o = cp.cli(
        Some(&viewer),
        &["events", "summary", "-e", "dev", "--since", "1h"],
    );
    let out = text(&o);
    assert!(
        o.status.success() && out.contains("2.0.0") && out.contains("66.67 %"),
        "{out}"
    );
    // --follow prints the backlog oldest first, then what arrives.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "events", "-e", "dev", "--follow", "--format", "json", "--limit", "2",
        ])
        .env("PALISADE_CONTROL_PLANE", &cp.url)
        .env("PALISADE_SERVICE_KEY", &viewer)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    let mut next_id = || {
        let line = lines.next().unwrap().unwrap();
        serde_json::from_str::<Value>(&line).unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        (next_id(), next_id()),
        ("req-4".to_owned(), "req-5".to_owned())
    );
    let late = event("req-late", "2.0.0", "hash-2.0.0", "allowed", t0 - 30_000);
    assert_eq!(send(&cp, &gw, &[late]).status, 200);
    assert_eq!(
        next_id(),
        "req-late",
        "an event with an older time, received later, is printed"
    );
    let _ = follow.kill();
    let _ = follow.wait();

    let o = cp.cli(
        Some(&viewer),
        &["events", "-e", "dev", "--format", "json", "--limit", "2"],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ids(&v), ["req-5", "req-4"]);

    // A window across whole hours counts each event once: hours from the hourly rollups, the
    // edges from the minute rollups.
    let now = now_ms();
    let older = [
        event("h-90", "3.0.0", "hash-3", "allowed", now - 90 * 60_000),
        event("h-150", "3.0.0", "hash-3", "allowed", now - 150 * 60_000),
        event("h-170", "3.0.0", "hash-3", "blocked", now - 170 * 60_000),
    ];
    assert_eq!(send(&cp, &gw, &older).status, 200);
    let v3 = |since: &str| {
        let s = cp
            .http(
                "GET",
                &format!("/v1/events/summary?environment=dev&since={since}"),
                Some(&viewer),
                &[],
                None,
            )
            .body;
        s["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == "3.0.0")
            .map_or(0, |r| r["requests"].as_i64().unwrap())
    };
    assert_eq!((v3("2h"), v3("160m"), v3("3h"), v3("10h")), (1, 2, 3, 3));
}

fn escalations_move_by_role_and_are_logged(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let gw = cp.create_key("gateway", Some("dev"));
    let t0 = now_ms() - 5_000;
    let batch: Vec<Value> = (0..3)
        .map(|i| event(&format!("esc-{i}"), "2.0.0", "hash-2", "escalated", t0 + i))
        .collect();
    assert_eq!(send(&cp, &gw, &batch).status, 200);
    assert_metrics(
        &cp,
        &[
            "palisade_escalations_open{environment=\"dev\",version=\"2.0.0\"} 3",
            "palisade_cp_events_accepted_total 3",
        ],
    );

    let viewer = cp.create_key("viewer", None);
    let deployer = cp.create_key("deployer", Some("dev"));
    let o = cp.cli(
        Some(&viewer),
        &["escalations", "list", "-e", "dev", "--state", "open"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).matches("esc-").count(), 3, "{}", text(&o));

    // A viewer reads but cannot act; the refusal is in the admin log.
    let o = cp.cli(Some(&viewer), &["escalations", "ack", "esc-0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("FORBIDDEN"), "{}", text(&o));
    let o = cp.cli(Some(&deployer), &["escalations", "ack", "esc-0"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cp.cli(Some(&deployer), &["escalations", "ack", "esc-0"]);
    assert!(
        text(&o).contains("ESCALATION_STATE"),
        "a second ack conflicts: {}",
        text(&o)
    );
    let o = cp.cli(
        Some(&deployer),
        &["escalations", "resolve", "esc-0", "--as", "fine"],
    );
    assert!(text(&o).contains("resolution `fine`"), "{}", text(&o));
    let o = cp.cli(
        Some(&deployer),
        &[
            "escalations",
            "resolve",
            "esc-0",
            "--as",
            "false_positive",
            "--note",
            "test card number",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let shown = cp
        .http("GET", "/v1/escalations/esc-0", Some(&viewer), &[], None)
        .body;
    assert_eq!(shown["state"], "resolved");
    assert_eq!(shown["resolution"], "false_positive");
    assert_eq!(shown["note"], "test card number");
    assert_eq!(
        shown["event"]["request_id"], "esc-0",
        "the event that opened it: {shown}"
    );
    // An open one can be resolved without an ack; a resolved one cannot be acked.
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["escalations", "resolve", "esc-1", "--as", "expected"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!cp
        .cli(Some(&deployer), &["escalations", "ack", "esc-1"])
        .status
        .success());
    assert_eq!(
        cp.http("GET", "/v1/escalations/nope", Some(&viewer), &[], None)
            .status,
        404
    );

    let open = cp
        .http(
            "GET",
            "/v1/escalations?environment=dev&state=open",
            Some(&viewer),
            &[],
            None,
        )
        .body;
    assert_eq!(open["escalations"].as_array().unwrap().len(), 1);
    assert_metrics(
        &cp,
        &["palisade_escalations_open{environment=\"dev\",version=\"2.0.0\"} 1"],
    );

    let h = cp
        .http(
            "GET",
            "/v1/history?environment=dev",
            Some(ADMIN_KEY),
            &[],
            None,
        )
        .body;
    let actions: Vec<(String, String)> = h["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("escalation."))
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("escalation.ack", "refused"),
        ("escalation.ack", "ok"),
        ("escalation.resolve", "ok"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, o)| (a.as_str(), o.as_str()) == want),
            "{want:?} in {actions:?}"
        );
    }
    let v = cp
        .http("GET", "/v1/history/verify", Some(ADMIN_KEY), &[], None)
        .body;
    assert_eq!(v["ok"], true, "{v}");
}

fn promotion_needs_runtime_evidence_when_the_target_asks(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let gw = cp.create_key("gateway", Some("dev"));
    let hash = cp.push(PACK_V1);
    let o = cp.cli(
        Some(ADMIN_KEY),
        &[
            "deploy", "support", "1.0.0", "-e", "dev", "--note", "to dev",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // One gateway in dev, SYNCED on that hash (staging has no soak).
    assert_eq!(cp.register(&gw, "gw-1", "dev").status, 200);
    cp.report(
        &gw,
        "gw-1",
        "dev",
        Some(("1.0.0", &hash)),
        Some(cp_support::ack("1.0.0")),
    );
    let o = cp.cli(
        Some(ADMIN_KEY),
        &[
            "environments",
            "set",
            "staging",
            "--min-requests",
            "5",
            "--max-escalation-rate",
            "0.2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("≥5 requests, escalations ≤20.00 %"),
        "{}",
        text(&o)
    );
    let promote = || {
        cp.cli(
            Some(ADMIN_KEY),
            &[
                "promote", "support", "--from", "dev", "--to", "staging", "--note", "go",
            ],
        )
    };
    let t = now_ms();
    let batch = |from: usize, outcomes: &[&str]| -> Vec<Value> {
        outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                event(
                    &format!("p-{}", from + i),
                    "1.0.0",
                    &hash,
                    o,
                    t + (from + i) as i64,
                )
            })
            .collect()
    };
    // Events of another hash do not count as evidence for this one.
    let mut other = batch(100, &["allowed"; 6]);
    for e in &mut other {
        e["hash"] = json!("some-other-hash");
    }
    assert_eq!(send(&cp, &gw, &other).status, 200);
    assert_eq!(
        send(&cp, &gw, &batch(0, &["allowed", "escalated", "allowed"])).status,
        200
    );
    let o = promote();
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("runtime_evidence") && out.contains("3 requests, fewer than the 5 required"),
        "{out}"
    );
    assert!(
        out.contains("escalation rate 33.33 % above the maximum 20.00 %"),
        "{out}"
    );

    assert_eq!(
        send(
            &cp,
            &gw,
            &batch(
                3,
                &[
                    "allowed",
                    "escalated",
                    "allowed",
                    "allowed",
                    "allowed",
                    "allowed",
                    "allowed"
                ]
            )
        )
        .status,
        200
    );
    let o = promote();
    assert!(
        o.status.success(),
        "10 requests, 20 % escalated: {}",
        text(&o)
    );
    let h = cp
        .http(
            "GET",
            "/v1/history?environment=staging",
            Some(ADMIN_KEY),
            &[],
            None,
        )
        .body;
    let rec = h["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "promote" && r["outcome"] == "ok")
        .unwrap()
        .clone();
    let detail: Value = match &rec["detail"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        v => v.clone(),
    };
    let gate = detail["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "runtime_evidence")
        .unwrap();
    assert_eq!(gate["evidence"]["requests"], 10, "{gate}");
    assert_eq!(gate["passed"], true);
}

fn retention_deletes_what_the_environment_no_longer_keeps(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = cp_support::Database::fresh(backend, dir.path());
    let cp = ControlPlane::start_with_args(
        200,
        Some(ADMIN_KEY),
        dir,
        db,
        &["--event-prune-interval", "200ms"],
    );
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["environments", "set", "dev", "--event-retention", "1h"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let gw = cp.create_key("gateway", Some("dev"));
    let now = now_ms();
    let mut batch = vec![event("fresh", "1.0.0", "h", "allowed", now)];
    batch.extend((0..30).map(|i| {
        event(
            &format!("old-{i}"),
            "1.0.0",
            "h",
            "escalated",
            now - 2 * 3600 * 1000 + i,
        )
    }));
    assert_eq!(send(&cp, &gw, &batch).status, 200);
    eventually(Duration::from_secs(30), "old events deleted", || {
        let v = cp
            .http(
                "GET",
                "/v1/events?environment=dev",
                Some(ADMIN_KEY),
                &[],
                None,
            )
            .body;
        (ids(&v) == ["fresh"]).then_some(())
    });
    let s = summary_3h(&cp);
    assert_eq!(
        s["rows"][0]["requests"], 1,
        "the rollups of deleted minutes go too: {s}"
    );
    // Escalations are review items: they outlive the events that opened them.
    let esc = cp
        .http(
            "GET",
            "/v1/escalations?environment=dev",
            Some(ADMIN_KEY),
            &[],
            None,
        )
        .body;
    assert_eq!(esc["escalations"].as_array().unwrap().len(), 30);
}

/// Gateways sending at once: every batch is stored, and a reader paging by receive time while
/// they write (as `--follow` does) sees every event exactly once. On Postgres the batches write
/// their rows in parallel and commit in the order of their receive stamps, so no batch commits
/// behind a later-stamped one the reader has already passed.
fn concurrent_batches_are_followed_without_gaps(backend: Backend) {
    const SENDERS: usize = 6;
    const BATCHES: usize = 8;
    const PER_BATCH: usize = 40;
    let cp = ControlPlane::start(backend, 200);
    let gw = cp.create_key("gateway", Some("dev"));
    let t0 = now_ms() - 60_000;
    let done = std::sync::atomic::AtomicBool::new(false);
    let (seen, sent) = std::thread::scope(|scope| {
        let follower = scope.spawn(|| {
            let mut seen: Vec<String> = Vec::new();
            let mut cursor = "0.".to_owned();
            loop {
                let last_round = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = cp.http(
                    "GET",
                    &format!("/v1/events?environment=dev&received_after={cursor}&limit=200"),
                    Some(ADMIN_KEY),
                    &[],
                    None,
                );
                assert_eq!(page.status, 200, "{}", page.body);
                let events = page.body["events"].as_array().unwrap().clone();
                for e in &events {
                    let id = e["request_id"].as_str().unwrap().to_owned();
                    cursor = format!("{}.{id}", e["received_at_ms"]);
                    seen.push(id);
                }
                if events.is_empty() {
                    if last_round {
                        return seen;
                    }
                    std::thread::park_timeout(Duration::from_millis(2));
                }
            }
        });
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let (cp, gw) = (&cp, &gw);
                scope.spawn(move || {
                    let mut sent = 0;
                    for b in 0..BATCHES {
                        let batch: Vec<Value> = (0..PER_BATCH)
                            .map(|i| {
                                let at = t0 + i64::try_from(b * PER_BATCH + i).unwrap();
                                event(&format!("s{s}-b{b}-{i}"), "1.0.0", "hash-1", "allowed", at)
                            })
                            .collect();
                        let answer = send(cp, gw, &batch);
                        assert_eq!(answer.status, 200, "{}", answer.body);
                        sent += answer.body["accepted"].as_u64().unwrap();
                    }
                    sent
                })
            })
            .collect();
        // Joined before any is unwrapped: a sender that failed must still stop the reader.
        let results: Vec<_> = senders.into_iter().map(|h| h.join()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = follower.join().unwrap();
        let sent: u64 = results.into_iter().map(Result::unwrap).sum();
        (seen, sent)
    });
    let total = SENDERS * BATCHES * PER_BATCH;
    assert_eq!(sent, u64::try_from(total).unwrap());
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event is read twice");
    assert_eq!(seen.len(), total, "the reader saw every event");
    let s = summary_3h(&cp);
    let counted: u64 = s["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted,
        u64::try_from(total).unwrap(),
        "the rollups count each event once: {s}"
    );
}

/// A batch whose turn does not come in time (an earlier batch is stuck behind a lock someone
/// else holds) is refused with 503 `BUSY` and `Retry-After`, stores nothing, and is stored
/// once when sent again; the stuck batch lands when the lock goes.
fn a_batch_that_cannot_get_its_turn_is_busy_and_stored_when_sent_again(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let gw = cp.create_key("gateway", Some("dev"));
    let t0 = now_ms() - 60_000;
    let first = allowed("first", 5, t0);
    let second = allowed("second", 5, t0 + 10);
    let holder = cp.db.hold_event_writes(Duration::from_secs(4));
    let (stuck, refused) = std::thread::scope(|scope| {
        let stuck = scope.spawn(|| send(&cp, &gw, &first));
        // The second batch takes its ticket once the first holds one (and waits on the lock).
        one_write_in_flight(&cp);
        let refused = send(&cp, &gw, &second);
        (stuck.join().unwrap(), refused)
    });
    holder.join().unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "BUSY", "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(stuck.status, 200, "{}", stuck.body);
    assert_eq!(stuck.body["accepted"], 5, "{}", stuck.body);
    let again = send(&cp, &gw, &second);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["accepted"], 5, "{}", again.body);
    let mut got = dev_ids(&cp);
    got.sort();
    let mut want: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|e| e["request_id"].as_str().unwrap().to_owned())
        .collect();
    want.sort();
    assert_eq!(got, want, "each event stored once");
}

/// A gateway that hangs up while its batch is being written does not cancel the write: the
/// batch is stored and counted (a resend would then find it there), and its place in the
/// commit order ends only after its commit.
fn a_batch_whose_sender_hangs_up_mid_write_is_still_stored(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let gw = cp.create_key("gateway", Some("dev"));
    let t0 = now_ms() - 60_000;
    let batch = allowed("left", 5, t0);
    let body = json!({ "gateway": "gw-1", "events": batch }).to_string();
    let holder = cp.db.hold_event_writes(Duration::from_millis(1500));
    let mut s = std::net::TcpStream::connect(&cp.addr).unwrap();
    write!(
        s,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Hang up once the write has started (it waits on the lock).
    one_write_in_flight(&cp);
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    holder.join().unwrap();
    let stored = eventually(Duration::from_secs(10), "the batch stored", || {
        let got = dev_ids(&cp);
        (got.len() == 5).then_some(got)
    });
    assert!(
        stored.iter().all(|id| id.starts_with("left-")),
        "{stored:?}"
    );
    assert_metrics(
        &cp,
        &[
            "palisade_cp_events_accepted_total 5",
            "palisade_cp_event_writes_in_flight 0",
        ],
    );
}

on_both_backends!(
    a_batch_whose_sender_hangs_up_mid_write_is_still_stored,
    a_batch_that_cannot_get_its_turn_is_busy_and_stored_when_sent_again,
    concurrent_batches_are_followed_without_gaps,
    events_are_stored_once_filtered_paged_and_summarised,
    escalations_move_by_role_and_are_logged,
    promotion_needs_runtime_evidence_when_the_target_asks,
    retention_deletes_what_the_environment_no_longer_keeps,
);

/// Every line in the control plane's `/metrics`.
fn assert_metrics(cp: &ControlPlane, lines: &[&str]) {
    let metrics = get_text(cp, "/metrics");
    for line in lines {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

/// Wait until one event write holds a connection (it waits on the lock held elsewhere).
fn one_write_in_flight(cp: &ControlPlane) {
    eventually(Duration::from_secs(3), "a write in flight", || {
        get_text(cp, "/metrics")
            .contains("palisade_cp_event_writes_in_flight 1")
            .then_some(())
    });
}

/// The request ids of dev's newest 50 events.
fn dev_ids(cp: &ControlPlane) -> Vec<String> {
    let listed = cp.http(
        "GET",
        "/v1/events?environment=dev&limit=50",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    ids(&listed.body)
}
