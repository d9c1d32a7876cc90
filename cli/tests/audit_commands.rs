//! `palisade audit verify|tail|query` on a real log written by the gateway's audit sink.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use gateway::audit::{AuditRecord, AuditSink, CallerRef, OutcomeKind, PolicyDecision, SystemClock};
use policy_engine::pack::AuditLoggerConfig;

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_log(dir: &Path) {
    let cfg = AuditLoggerConfig {
        dir: dir.display().to_string(),
        ..AuditLoggerConfig::default()
    };
    let (sink, handle) = AuditSink::start(&cfg, Arc::new(SystemClock)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (i, outcome) in [
            OutcomeKind::Allowed,
            OutcomeKind::BlockedPii,
            OutcomeKind::Redacted,
            OutcomeKind::Allowed,
        ]
        .into_iter()
        .enumerate()
        {
            let r = AuditRecord {
                request_id: format!("req-{i}"),
                caller: CallerRef {
                    key_id: Some(if i % 2 == 0 { "app-a" } else { "app-b" }.to_owned()),
                    team: None,
                },
                outcome,
                policies: vec![PolicyDecision {
                    policy: "pii-detector".into(),
                    decision: if i == 2 { "escalate" } else { "pass" }.into(),
                    ..Default::default()
                }],
                ..AuditRecord::default()
            };
            sink.record(r).await.unwrap();
        }
    });
    drop(sink);
    handle.join();
}

#[test]
fn verify_reports_the_count_and_then_the_tampered_line() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let d = dir.path().to_str().unwrap();
    let o = palisade(&["audit", "verify", d]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).starts_with("ok: 5 records (4 requests, 0 dropped under pressure) in 1 file(s) verified from the first record"), "{}", stdout(&o));

    let file = gateway::audit::files::list(dir.path()).unwrap().remove(0);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("blocked_pii", "allowed");
    std::fs::write(&file, text).unwrap();
    let o = palisade(&["audit", "verify", d]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:3: the record was edited", file.display())),
        "{err}"
    );
    let json = palisade(&["audit", "verify", d, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["error"]["line"].as_u64()),
        (Some(false), Some(3))
    );
}

#[test]
fn query_filters_by_key_and_action_and_tail_keeps_the_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let d = dir.path().to_str().unwrap();
    let blocked = stdout(&palisade(&["audit", "query", d, "--action", "blocked_pii"]));
    assert_eq!(blocked.lines().count(), 1);
    assert!(blocked.contains("\"request_id\":\"req-1\""));
    let escalated = stdout(&palisade(&["audit", "query", d, "--action", "escalate"]));
    assert!(
        escalated.contains("\"request_id\":\"req-2\"") && escalated.lines().count() == 1,
        "{escalated}"
    );
    let by_key = stdout(&palisade(&[
        "audit", "query", d, "--key", "app-b", "--since", "1h",
    ]));
    assert_eq!(by_key.lines().count(), 2, "{by_key}");
    let future = stdout(&palisade(&[
        "audit",
        "query",
        d,
        "--since",
        "2999-01-01T00:00:00Z",
    ]));
    assert!(future.is_empty());
    let tail = stdout(&palisade(&["audit", "tail", d, "-n", "2"]));
    let ids: Vec<&str> = tail
        .lines()
        .map(|l| {
            if l.contains("req-2") {
                "2"
            } else if l.contains("req-3") {
                "3"
            } else {
                "?"
            }
        })
        .collect();
    assert_eq!(ids, ["2", "3"]);
    let bad = palisade(&["audit", "query", d, "--since", "yesterdayish"]);
    assert_eq!(bad.status.code(), Some(2));
}
