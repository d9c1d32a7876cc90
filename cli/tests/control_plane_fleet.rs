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

/// A gateway id belongs to the environment and key it registered with: another environment's
/// key cannot move it (by registering or reporting under its id), another key of its own
/// environment cannot take it over while it is live, each refusal is a 403 in the admin log,
/// and once it is OFFLINE a new key of its environment may take it over (a restart after a key
/// rotation).
fn a_gateway_id_belongs_to_its_environment_and_key(backend: Backend) {
    // Reports every 2 s: OFFLINE after 6 s, so "live" holds while the refusals are tried.
    let cp = ControlPlane::start(backend, 2000);
    let hash = cp.push(PACK_V1);
    let dev = cp.create_key("gateway", Some("dev"));
    let staging = cp.create_key("gateway", Some("staging"));
    let dev2 = cp.create_key("gateway", Some("dev"));
    assert_eq!(cp.register(&dev, "gw-a", "dev").status, 200);
    cp.report(
        &dev,
        "gw-a",
        "dev",
        Some(("1.0.0", &hash)),
        Some(ack("1.0.0")),
    );
    let report = |key: &str, env: &str| {
        let body = json!({
            "instance": {"id": "gw-a", "environment": env, "pack": "support", "build": "t"},
            "active": {"version": "1.0.0", "hash": hash, "source": "control_plane"},
        });
        cp.http(
            "POST",
            "/v1/gateways/gw-a/report",
            Some(key),
            &[],
            Some(&body),
        )
    };

    let r = cp.register(&staging, "gw-a", "staging");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.to_string().contains("belongs to environment dev"),
        "{}",
        r.body
    );
    assert_eq!(report(&staging, "staging").status, 403);
    let r = report(&dev2, "dev");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.to_string().contains("another key"), "{}", r.body);
    assert_eq!(cp.register(&dev2, "gw-a", "dev").status, 403);

    // Still dev's gateway, reporting as before.
    let s = cp.status_json();
    let env_of_gw_a: Vec<&Value> = s["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["gateways"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g["id"] == "gw-a"))
        })
        .map(|e| &e["environment"])
        .collect();
    assert_eq!(env_of_gw_a, [&json!("dev")], "{s}");
    assert_eq!(report(&dev, "dev").status, 204);
    let h = cp.http("GET", "/v1/history", Some(ADMIN_KEY), &[], None);
    let refused: Vec<&str> = h.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(
        refused.iter().filter(|a| **a == "gateway.report").count(),
        2,
        "{refused:?}"
    );
    assert_eq!(
        refused.iter().filter(|a| **a == "gateway.register").count(),
        2,
        "{refused:?}"
    );

    // OFFLINE: a new key of its environment takes it over.
    eventually(Duration::from_secs(30), "taken over once OFFLINE", || {
        (cp.register(&dev2, "gw-a", "dev").status == 200).then_some(())
    });
    assert_eq!(report(&dev2, "dev").status, 204);
    assert_eq!(report(&dev, "dev").status, 403);
}

/// `status` fails on what needs attention only: a live gateway that does not enforce its
/// environment's desired version, or an environment with a desired version and no live gateway.
/// An OFFLINE gateway beside a SYNCED one (a restarted gateway's old self) and an environment
/// with nothing deployed yet do not fail it; `gateways prune` forgets OFFLINE gateways at once
/// and `--forget-gateways-after` without a command.
fn offline_leftovers_do_not_fail_status_and_are_forgotten(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = cp_support::Database::fresh(backend, dir.path());
    let cp = ControlPlane::start_with_args(
        200,
        Some(ADMIN_KEY),
        dir,
        db,
        &["--forget-gateways-after", "3s"],
    );
    let hash = cp.push(PACK_V1);
    // The pointer moves, but with no gateway to enforce it `--wait` fails and says why.
    let o = cp.cli(
        Some(ADMIN_KEY),
        &[
            "deploy", "support", "1.0.0", "-e", "dev", "--note", "d", "--wait", "300ms",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("deploy dev: support nothing → 1.0.0")
            && text(&o).contains("no live gateway of dev runs support"),
        "{}",
        text(&o)
    );
    // Without a key, the error names the one variable the key is read from.
    let o = cp.cli(None, &["status"]);
    assert!(text(&o).contains("PALISADE_SERVICE_KEY"), "{}", text(&o));
    let dev = cp.create_key("gateway", Some("dev"));
    let staging = cp.create_key("gateway", Some("staging"));
    cp.register(&dev, "gw-old", "dev");
    cp.report(
        &dev,
        "gw-old",
        "dev",
        Some(("1.0.0", &hash)),
        Some(ack("1.0.0")),
    );
    eventually(Duration::from_secs(10), "gw-old OFFLINE", || {
        (cp.state_of("gw-old").as_deref() == Some("OFFLINE")).then_some(())
    });
    // Only the OFFLINE one: dev has a desired version and nothing enforces it.
    let o = cp.cli(Some(ADMIN_KEY), &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    cp.register(&dev, "gw-new", "dev");
    cp.register(&staging, "gw-staging", "staging");
    eventually(Duration::from_secs(10), "status exits 0", || {
        cp.report(
            &dev,
            "gw-new",
            "dev",
            Some(("1.0.0", &hash)),
            Some(ack("1.0.0")),
        );
        cp.report(&staging, "gw-staging", "staging", None, None);
        let o = cp.cli(Some(ADMIN_KEY), &["status", "--format", "json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let states: Vec<(String, String)> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| e["gateways"].as_array().cloned().unwrap_or_default())
            .map(|g| {
                (
                    g["id"].as_str().unwrap().to_owned(),
                    g["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want = [
            ("gw-new", "SYNCED"),
            ("gw-old", "OFFLINE"),
            ("gw-staging", "PENDING"),
        ];
        let shown = want
            .iter()
            .all(|(id, st)| states.iter().any(|(i, s)| i == id && s == st));
        (o.status.code() == Some(0) && v["all_synced"] == true && shown).then_some(())
    });

    // Pruning is an admin action; it forgets exactly the OFFLINE ones.
    let viewer = cp.create_key("viewer", None);
    assert_ne!(
        cp.cli(Some(&viewer), &["gateways", "prune"]).status.code(),
        Some(0)
    );
    let o = cp.cli(Some(ADMIN_KEY), &["gateways", "prune"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("forgot gw-old"), "{}", text(&o));
    assert_eq!(cp.state_of("gw-old"), None);

    // Silence past --forget-gateways-after: gone from the view without a command.
    eventually(Duration::from_secs(20), "gw-staging forgotten", || {
        cp.state_of("gw-staging").is_none().then_some(())
    });
}

on_both_backends!(
    offline_leftovers_do_not_fail_status_and_are_forgotten,
    a_gateway_that_stops_reporting_turns_offline_and_status_fails,
    a_nack_shows_rejected_with_the_error_while_the_old_version_keeps_serving,
    a_gateway_that_does_not_converge_turns_stale,
    gateway_keys_are_bound_to_their_environment,
    a_gateway_id_belongs_to_its_environment_and_key,
);
