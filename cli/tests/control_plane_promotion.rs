//! Promotion gates and rollback through the real binaries. The source environment's gateways
//! are simulated with register/report calls in the gateway protocol.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use std::time::{Duration, Instant};

use cp_support::{ack, eventually, pack, text, Backend, ControlPlane, ADMIN_KEY, PACK_V1};
use serde_json::{json, Value};

fn gates(a: &Value) -> Vec<(String, bool)> {
    a["error"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["gate"].as_str().unwrap().to_owned(),
                g["passed"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn promote_http(cp: &ControlPlane, key: &str, from: &str, to: &str) -> (u16, Value) {
    let body = json!({ "pack": "support", "from": from, "to": to, "note": "promote for the test" });
    let a = cp.http("POST", "/v1/promote", Some(key), &[], Some(&body));
    (a.status, a.body)
}

fn promotion_is_refused_naming_every_failing_gate_then_allowed_after_soak_by_an_admin(
    backend: Backend,
) {
    let cp = ControlPlane::start(backend, 200);
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["environments", "set", "prod", "--soak-ms", "1500"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let hash = cp.push(PACK_V1);
    let deployer = cp.create_key("deployer", None);
    let o = cp.cli(
        Some(&deployer),
        &[
            "deploy",
            "support",
            "1.0.0",
            "--environment",
            "staging",
            "--note",
            "staging first",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    // A deployer, and nothing verified in staging: both gates named, and the refusal is 403.
    let o = cp.cli(
        Some(&deployer),
        &[
            "promote", "support", "--from", "staging", "--to", "prod", "--note", "ship it",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(out.contains("PROMOTION_REFUSED (403)"), "{out}");
    assert!(
        out.contains("gate role") && out.contains("needs the admin role"),
        "{out}"
    );
    assert!(
        out.contains("gate source_verified") && out.contains("no live gateway"),
        "{out}"
    );
    let (status, body) = promote_http(&cp, &deployer, "staging", "prod");
    assert_eq!(status, 403);
    assert_eq!(
        gates(&body),
        vec![
            ("path".into(), true),
            ("role".into(), false),
            ("tests".into(), true),
            ("source_verified".into(), false)
        ]
    );

    // Staging's gateway runs the hash: verified, but not yet for prod's soak.
    let gk = cp.create_key("gateway", Some("staging"));
    assert_eq!(cp.register(&gk, "stg-1", "staging").status, 200);
    cp.report(
        &gk,
        "stg-1",
        "staging",
        Some(("1.0.0", &hash)),
        Some(ack("1.0.0")),
    );
    let (status, body) = promote_http(&cp, ADMIN_KEY, "staging", "prod");
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        gates(&body)
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(g, _)| g.as_str())
            .collect::<Vec<_>>(),
        vec!["source_verified"]
    );
    assert!(body.to_string().contains("soak"), "{body}");
    // `--check` shows the same gates and moves nothing (no refusal recorded either).
    let refusals = |cp: &ControlPlane| {
        let o = cp.cli(Some(ADMIN_KEY), &["history", "--format", "json"]);
        text(&o).matches("\"refused\"").count()
    };
    let before = refusals(&cp);
    let check = [
        "promote", "support", "--from", "staging", "--to", "prod", "--check",
    ];
    let o = cp.cli(Some(ADMIN_KEY), &check);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("refused by its gates"), "{out}");
    assert!(
        out.contains("gate source_verified") && out.contains("FAILED"),
        "{out}"
    );
    assert!(out.contains("gate path") && out.contains("passed"), "{out}");
    assert_eq!(refusals(&cp), before, "a check is not an attempt");
    let a = cp.http(
        "GET",
        "/v1/promote/gates?pack=support&from=staging&to=prod",
        Some(&deployer),
        &[],
        None,
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.body["all_passed"], false);
    assert_eq!(a.body["version"], "1.0.0");

    // Keep reporting; once the soak has passed an admin's promotion goes through.
    let started = Instant::now();
    let out = eventually(Duration::from_secs(20), "the soak to pass", || {
        cp.report(
            &gk,
            "stg-1",
            "staging",
            Some(("1.0.0", &hash)),
            Some(ack("1.0.0")),
        );
        let o = cp.cli(
            Some(ADMIN_KEY),
            &[
                "promote",
                "support",
                "--from",
                "staging",
                "--to",
                "prod",
                "--note",
                "verified in staging",
            ],
        );
        o.status.success().then(|| text(&o))
    });
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "not before the soak"
    );
    assert!(
        out.contains("promote prod: support nothing → 1.0.0"),
        "{out}"
    );
    let pk = cp.create_key("gateway", Some("prod"));
    let a = cp.http(
        "GET",
        "/v1/gateways/desired?environment=prod&pack=support",
        Some(&pk),
        &[],
        None,
    );
    assert_eq!(a.body["hash"], hash.as_str());

    // The promotion and the refusals are in history, the promotion with its gate evidence.
    let h = cp.http(
        "GET",
        "/v1/history?environment=prod&pack=support",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    let recs = h.body["records"].as_array().unwrap();
    let ok = recs
        .iter()
        .find(|r| r["action"] == "promote" && r["outcome"] == "ok")
        .unwrap();
    let evidence = ok["detail"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "source_verified")
        .unwrap();
    assert_eq!(evidence["evidence"]["synced_gateways"], 1);
    assert!(recs
        .iter()
        .any(|r| r["action"] == "promote" && r["outcome"] == "refused"));
}

fn a_rejected_source_gateway_blocks_promotion_and_the_path_is_enforced(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let hash = cp.push(PACK_V1);
    assert!(cp
        .cli(
            Some(ADMIN_KEY),
            &["deploy", "support", "1.0.0", "-e", "dev", "--note", "dev"]
        )
        .status
        .success());
    let gk = cp.create_key("gateway", Some("dev"));
    cp.register(&gk, "dev-good", "dev");
    cp.register(&gk, "dev-bad", "dev");
    cp.report(
        &gk,
        "dev-good",
        "dev",
        Some(("1.0.0", &hash)),
        Some(ack("1.0.0")),
    );
    let nack = json!({ "version": "1.0.0", "at": "now", "result": "NACK",
        "error": { "code": "PACK_DISABLED", "path": "pack.enabled", "message": "disabled" } });
    cp.report(&gk, "dev-bad", "dev", None, Some(nack));
    let (status, body) = promote_http(&cp, ADMIN_KEY, "dev", "staging");
    assert_eq!(status, 409);
    let g = body["error"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "source_verified")
        .unwrap()
        .clone();
    assert_eq!(g["passed"], false);
    assert!(
        g["detail"]
            .as_str()
            .unwrap()
            .contains("dev-bad is REJECTED"),
        "{g}"
    );

    // dev → prod skips staging.
    let (status, body) = promote_http(&cp, ADMIN_KEY, "dev", "prod");
    assert_eq!(status, 409);
    assert!(gates(&body).contains(&("path".to_owned(), false)), "{body}");
}

fn rollback_moves_the_pointer_back_and_is_recorded(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    cp.push(PACK_V1);
    let h2 = cp.push(&pack("1.1.0", 7));
    for v in ["1.0.0", "1.1.0"] {
        let o = cp.cli(
            Some(ADMIN_KEY),
            &["deploy", "support", v, "-e", "dev", "--note", "step"],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let gk = cp.create_key("gateway", Some("dev"));
    let desired = |cp: &ControlPlane| {
        cp.http(
            "GET",
            "/v1/gateways/desired?environment=dev&pack=support",
            Some(&gk),
            &[],
            None,
        )
        .body["version"]
            .clone()
    };
    assert_eq!(desired(&cp), "1.1.0");

    // A gateway waiting on 1.1.0 wakes when the rollback lands.
    let inm = format!("\"{h2}\"");
    let waiter = std::thread::scope(|s| {
        let w = s.spawn(|| {
            let t = Instant::now();
            let a = cp.http(
                "GET",
                "/v1/gateways/desired?environment=dev&pack=support&wait=20",
                Some(&gk),
                &[("If-None-Match", &inm)],
                None,
            );
            (a.status, a.body["version"].clone(), t.elapsed())
        });
        let o = cp.cli(
            Some(ADMIN_KEY),
            &[
                "rollback",
                "support",
                "--environment",
                "dev",
                "--note",
                "1.1.0 is too loose",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("rollback dev: support 1.1.0 → 1.0.0"),
            "{}",
            text(&o)
        );
        w.join().unwrap()
    });
    assert_eq!((waiter.0, waiter.1.as_str()), (200, Some("1.0.0")));
    assert!(
        waiter.2 < Duration::from_secs(15),
        "the long poll answered on the move, not the timeout"
    );
    assert_eq!(desired(&cp), "1.0.0");

    let o = cp.cli(
        Some(ADMIN_KEY),
        &[
            "rollback", "support", "-e", "dev", "--to", "9.9.9", "--note", "x",
        ],
    );
    assert!(text(&o).contains("NOT_IN_HISTORY"), "{}", text(&o));

    let o = cp.cli(
        Some(ADMIN_KEY),
        &["history", "--environment", "dev", "--pack", "support"],
    );
    let out = text(&o);
    assert!(
        out.lines()
            .any(|l| l.contains("rollback") && l.contains(" ok ")),
        "{out}"
    );
    let d = cp.http(
        "GET",
        "/v1/deployments?environment=dev&pack=support",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    let seqs: Vec<(i64, String)> = d.body["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["seq"].as_i64().unwrap(),
                p["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seqs,
        vec![
            (3, "rollback".to_owned()),
            (2, "deploy".to_owned()),
            (1, "deploy".to_owned())
        ],
        "a forward move"
    );
}

on_both_backends!(
    promotion_is_refused_naming_every_failing_gate_then_allowed_after_soak_by_an_admin,
    a_rejected_source_gateway_blocks_promotion_and_the_path_is_enforced,
    rollback_moves_the_pointer_back_and_is_recorded,
);
