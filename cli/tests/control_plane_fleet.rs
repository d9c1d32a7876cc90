//! Gateway states and `palisade status` through the real binaries: SYNCED, REJECTED with its
//! error, OFFLINE after silence, and the exit code CI waits on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use std::time::Duration;

use cp_support::{ack, eventually, pack, text, Backend, ControlPlane, ADMIN_KEY, PACK_V1};
use serde_json::{json, Value};

fn a_gateway_that_stops_reporting_turns_offline_and_status_fails(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let hash = cp.push(PACK_V1);
    assert!(cp
        .cli(
            Some(ADMIN_KEY),
            &["deploy", "support", "1.0.0", "-e", "dev", "--note", "d"]
        )
        .status
        .success());
    let gk = cp.create_key("gateway", Some("dev"));
    let a = cp.register(&gk, "gw-a", "dev");
    assert_eq!(a.body["report_interval_ms"], 200);
    cp.report(
        &gk,
        "gw-a",
        "dev",
        Some(("1.0.0", &hash)),
        Some(ack("1.0.0")),
    );
    assert_eq!(cp.state_of("gw-a").as_deref(), Some("SYNCED"));
    let o = cp.cli(Some(ADMIN_KEY), &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("gw-a") && text(&o).contains("SYNCED"),
        "{}",
        text(&o)
    );

    // Silence: OFFLINE after 3 intervals (600 ms).
    eventually(Duration::from_secs(10), "OFFLINE", || {
        (cp.state_of("gw-a").as_deref() == Some("OFFLINE")).then_some(())
    });
    let o = cp.cli(Some(ADMIN_KEY), &["status", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["all_synced"], false);

    // It comes back. The report and the read race the 600 ms OFFLINE window on a loaded
    // machine, so a report is sent again until a read follows it in time.
    eventually(Duration::from_secs(10), "SYNCED after a report", || {
        cp.report(
            &gk,
            "gw-a",
            "dev",
            Some(("1.0.0", &hash)),
            Some(ack("1.0.0")),
        );
        (cp.state_of("gw-a").as_deref() == Some("SYNCED")).then_some(())
    });
}

fn a_nack_shows_rejected_with_the_error_while_the_old_version_keeps_serving(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let h1 = cp.push(PACK_V1);
    cp.push(&pack("1.1.0", 7));
    assert!(cp
        .cli(
            Some(ADMIN_KEY),
            &["deploy", "support", "1.0.0", "-e", "dev", "--note", "d"]
        )
        .status
        .success());
    let gk = cp.create_key("gateway", Some("dev"));
    cp.register(&gk, "gw-r", "dev");
    cp.report(&gk, "gw-r", "dev", Some(("1.0.0", &h1)), Some(ack("1.0.0")));
    assert!(cp
        .cli(
            Some(ADMIN_KEY),
            &["deploy", "support", "1.1.0", "-e", "dev", "--note", "d2"]
        )
        .status
        .success());
    assert_eq!(
        cp.state_of("gw-r").as_deref(),
        Some("PENDING"),
        "no answer yet"
    );

    let nack = json!({ "version": "1.1.0", "at": "2025-01-01T00:00:01Z", "result": "NACK",
        "error": { "code": "PACK_DISABLED", "path": "pack.enabled", "message": "the pack is disabled" } });
    cp.report(&gk, "gw-r", "dev", Some(("1.0.0", &h1)), Some(nack));
    let s = cp.status_json();
    let g = &s["entries"][0]["gateways"][0];
    assert_eq!(g["state"], "REJECTED");
    assert_eq!(g["last_attempt"]["error"]["code"], "PACK_DISABLED");
    assert_eq!(
        g["active"]["version"], "1.0.0",
        "still serving the old version"
    );
    let o = cp.cli(Some(ADMIN_KEY), &["status", "--environment", "dev"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("REJECTED") && text(&o).contains("PACK_DISABLED pack.enabled"),
        "{}",
        text(&o)
    );
}

fn a_gateway_that_does_not_converge_turns_stale(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let h1 = cp.push(PACK_V1);
    cp.push(&pack("1.1.0", 7));
    assert!(cp
        .cli(
            Some(ADMIN_KEY),
            &["deploy", "support", "1.0.0", "-e", "dev", "--note", "d"]
        )
        .status
        .success());
    let gk = cp.create_key("gateway", Some("dev"));
    cp.register(&gk, "gw-s", "dev");
    assert!(cp
        .cli(
            Some(ADMIN_KEY),
            &["deploy", "support", "1.1.0", "-e", "dev", "--note", "d2"]
        )
        .status
        .success());
    eventually(Duration::from_secs(10), "STALE", || {
        cp.report(&gk, "gw-s", "dev", Some(("1.0.0", &h1)), Some(ack("1.0.0")));
        (cp.state_of("gw-s").as_deref() == Some("STALE")).then_some(())
    });
}

fn gateway_keys_are_bound_to_their_environment(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let gk = cp.create_key("gateway", Some("dev"));
    assert_eq!(cp.register(&gk, "gw-x", "prod").status, 403);
    let h = cp.http("GET", "/v1/history", Some(ADMIN_KEY), &[], None);
    assert!(h.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "gateway.register" && r["outcome"] == "refused"));
    // A gateway key cannot read the registry or manage keys either.
    assert_eq!(
        cp.http("GET", "/v1/packs", Some(&gk), &[], None).status,
        403
    );
    assert_eq!(cp.http("GET", "/v1/keys", Some(&gk), &[], None).status, 403);
    // A service key cannot act as a gateway.
    assert_eq!(cp.register(ADMIN_KEY, "gw-y", "dev").status, 403);
    let o = cp.cli(Some(ADMIN_KEY), &["keys", "create", "--role", "gateway"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a gateway key needs an environment"
    );
}

on_both_backends!(
    a_gateway_that_stops_reporting_turns_offline_and_status_fails,
    a_nack_shows_rejected_with_the_error_while_the_old_version_keeps_serving,
    a_gateway_that_does_not_converge_turns_stale,
    gateway_keys_are_bound_to_their_environment,
);
