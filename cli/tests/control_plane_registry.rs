//! The registry and keys through the real binaries: push, versions, deploy, identical push,
//! broken pack, immutability, remote diff, 401 and 403 (logged).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use cp_support::{pack, text, Backend, ControlPlane, ADMIN_KEY, PACK_V1};
use serde_json::{json, Value};

fn push_then_versions_then_deploy_and_the_gateway_sees_it(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let file = cp.file("v1.yaml", PACK_V1);
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["push", &file, "--note", "baseline for dev"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("pushed support 1.0.0"), "{}", text(&o));

    let o = cp.cli(Some(ADMIN_KEY), &["versions", "support"]);
    assert!(
        o.status.success() && text(&o).contains("1.0.0") && text(&o).contains("baseline for dev"),
        "{}",
        text(&o)
    );

    let o = cp.cli(
        Some(ADMIN_KEY),
        &[
            "deploy",
            "support",
            "1.0.0",
            "--environment",
            "dev",
            "--note",
            "first deploy",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("deploy dev: support nothing → 1.0.0"),
        "{}",
        text(&o)
    );

    let gk = cp.create_key("gateway", Some("dev"));
    let a = cp.http(
        "GET",
        "/v1/gateways/desired?environment=dev&pack=support",
        Some(&gk),
        &[],
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["version"], "1.0.0");
    assert_eq!(a.body["yaml"], PACK_V1, "the exact YAML is served");
    let hash = a.body["hash"].as_str().unwrap().to_owned();
    assert_eq!(a.header("etag"), Some(format!("\"{hash}\"").as_str()));

    let inm = format!("\"{hash}\"");
    let a = cp.http(
        "GET",
        "/v1/gateways/desired?environment=dev&pack=support&wait=0",
        Some(&gk),
        &[("If-None-Match", &inm)],
        None,
    );
    assert_eq!(a.status, 304);

    let a = cp.http(
        "GET",
        "/v1/gateways/desired?environment=staging&pack=support",
        Some(&gk),
        &[],
        None,
    );
    assert_eq!(a.status, 403, "a dev gateway key cannot poll staging");
    let sk = cp.create_key("gateway", Some("staging"));
    let a = cp.http(
        "GET",
        "/v1/gateways/desired?environment=staging&pack=support",
        Some(&sk),
        &[],
        None,
    );
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (404, Some("NO_DESIRED_VERSION"))
    );
}

fn identical_push_is_a_noop_and_a_changed_document_under_the_same_version_is_409(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let file = cp.file("v1.yaml", PACK_V1);
    assert!(cp
        .cli(Some(ADMIN_KEY), &["push", &file, "--note", "for dev"])
        .status
        .success());
    // Comments and key order do not change the identity.
    let same = cp.file("same.yaml", &format!("# a comment\n{PACK_V1}"));
    let o = cp.cli(Some(ADMIN_KEY), &["push", &same, "--note", "again"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("unchanged"), "{}", text(&o));

    let changed = pack("1.0.0", 7);
    let a = cp.http(
        "POST",
        "/v1/packs",
        Some(ADMIN_KEY),
        &[],
        Some(&json!({ "yaml": changed, "note": "sneaky" })),
    );
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (409, Some("VERSION_CONFLICT"))
    );

    let a = cp.http(
        "POST",
        "/v1/packs",
        Some(ADMIN_KEY),
        &[],
        Some(&json!({ "yaml": PACK_V1, "note": "  " })),
    );
    assert_eq!(a.status, 400, "a note is required: {}", a.body);

    let a = cp.http(
        "GET",
        "/v1/packs/support/versions",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(a.body["versions"].as_array().unwrap().len(), 1);
}

fn broken_pack_is_refused_with_422_and_every_diagnostic(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let broken = "pack:\n  name: support\n  version: 1.0.0\npolicies:\n  chain: [audit-logger, no-such-policy]\npolicy:\n  audit-logger:\n    on_queue_full: explode\n";
    let a = cp.http(
        "POST",
        "/v1/packs",
        Some(ADMIN_KEY),
        &[],
        Some(&json!({ "yaml": broken, "note": "broken" })),
    );
    assert_eq!(a.status, 422, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "POLICY_COMPILE_ERROR");
    let diags = a.body["error"]["diagnostics"].as_array().unwrap();
    assert!(
        diags.len() >= 2,
        "every diagnostic, not the first: {diags:?}"
    );
    assert!(diags
        .iter()
        .all(|d| d["code"].is_string() && d["path"].is_string()));

    let file = cp.file("broken.yaml", broken);
    let o = cp.cli(Some(ADMIN_KEY), &["push", &file, "--note", "broken"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("POLICY_COMPILE_ERROR"), "{}", text(&o));
    assert!(text(&o).contains("UNKNOWN_POLICY"), "{}", text(&o));
}

fn missing_or_wrong_key_is_401_invalid_service_key(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    for key in [
        None,
        Some("pal_0000000000000000000000000000000000000000000000000000000000000000"),
        Some("short"),
    ] {
        let a = cp.http("GET", "/v1/packs", key, &[], None);
        assert_eq!(a.status, 401);
        assert_eq!(a.body["error"]["code"], "INVALID_SERVICE_KEY");
    }
    let o = cp.cli(None, &["versions", "support"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("INVALID_SERVICE_KEY"), "{}", text(&o));
}

/// The router's refusals keep the one error shape: an unknown route is 404, a known path with
/// a method it does not take is 405, a body that is not the JSON asked for names the field, and
/// a percent-encoded path segment is decoded whole.
fn unknown_routes_wrong_methods_and_bad_bodies_are_refused_in_the_error_shape(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let a = cp.http("GET", "/v1/nothing-here", Some(ADMIN_KEY), &[], None);
    assert_eq!(
        (a.status, &a.body["error"]["code"]),
        (404, &json!("NOT_FOUND"))
    );
    let a = cp.http("DELETE", "/v1/packs", Some(ADMIN_KEY), &[], None);
    assert_eq!(a.status, 405, "{:?}", a.body);
    assert_eq!(a.body["error"]["code"], "METHOD_NOT_ALLOWED");
    let a = cp.http(
        "POST",
        "/v1/packs",
        Some(ADMIN_KEY),
        &[],
        Some(&json!({ "yaml": 7 })),
    );
    assert_eq!(a.status, 400);
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`yaml`"), "{message}");
    // `%2F` stays inside the pack name: no pack has that name.
    let a = cp.http(
        "GET",
        "/v1/packs/sup%2Fport/versions",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(a.status, 404);
    assert_eq!(a.body["error"]["message"], "no pack `sup/port`");
    // Authentication runs before the body is read: a bad key with a bad body is 401.
    let a = cp.http("POST", "/v1/deploy", Some("short"), &[], Some(&json!([])));
    assert_eq!(a.status, 401);
}

fn refused_records(cp: &ControlPlane, action: &str) -> Vec<Value> {
    let h = cp.http("GET", "/v1/history", Some(ADMIN_KEY), &[], None);
    h.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action && r["outcome"] == "refused")
        .cloned()
        .collect()
}

fn viewer_key_cannot_deploy_and_the_attempt_is_logged(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    cp.push(PACK_V1);
    let viewer = cp.create_key("viewer", None);
    let o = cp.cli(
        Some(&viewer),
        &[
            "deploy",
            "support",
            "1.0.0",
            "--environment",
            "dev",
            "--note",
            "try",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FORBIDDEN (403)"), "{}", text(&o));
    let refused = refused_records(&cp, "deploy");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["environment"], "dev");
    // Viewers can still read.
    assert!(cp
        .cli(Some(&viewer), &["versions", "support"])
        .status
        .success());

    let gateway = cp.create_key("gateway", Some("dev"));
    let a = cp.http(
        "POST",
        "/v1/packs",
        Some(&gateway),
        &[],
        Some(&json!({ "yaml": PACK_V1, "note": "x" })),
    );
    assert_eq!(a.status, 403);
    assert_eq!(refused_records(&cp, "push").len(), 1);

    let deployer = cp.create_key("deployer", None);
    let o = cp.cli(
        Some(&deployer),
        &[
            "deploy",
            "support",
            "1.0.0",
            "--environment",
            "prod",
            "--note",
            "skip the line",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "prod needs admin: {}", text(&o));
    let o = cp.cli(
        Some(&deployer),
        &[
            "deploy",
            "support",
            "1.0.0",
            "--environment",
            "dev",
            "--note",
            "fine",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let scoped = cp.create_key("deployer", Some("dev"));
    let o = cp.cli(
        Some(&scoped),
        &[
            "deploy",
            "support",
            "1.0.0",
            "--environment",
            "staging",
            "--note",
            "out of scope",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("limited to environment dev"),
        "{}",
        text(&o)
    );
}

fn remote_diff_of_two_versions_says_looser(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    cp.push(PACK_V1);
    cp.push(&pack("1.1.0", 7));
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["diff", "support", "1.0.0", "1.1.0", "--format", "json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["overall"], "looser");
    assert_eq!(v["summary"]["looser"], 1);
    let o = cp.cli(Some(ADMIN_KEY), &["diff", "support", "1.0.0", "1.1.0"]);
    assert!(text(&o).contains("retention_days"), "{}", text(&o));
}

fn keys_are_shown_once_listed_without_secrets_and_revocable(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let viewer = cp.create_key("viewer", None);
    assert!(viewer.starts_with("pal_") && viewer.len() == 68, "{viewer}");
    let o = cp.cli(Some(ADMIN_KEY), &["keys", "list"]);
    assert!(o.status.success());
    assert!(
        !text(&o).contains(&viewer),
        "a listing never shows a secret"
    );
    let id = text(&o)
        .lines()
        .find(|l| l.contains("viewer"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(cp
        .cli(Some(ADMIN_KEY), &["keys", "revoke", &id])
        .status
        .success());
    assert_eq!(
        cp.http("GET", "/v1/packs", Some(&viewer), &[], None).status,
        401
    );
    assert_eq!(
        cp.cli(Some(&viewer), &["keys", "list"]).status.code(),
        Some(1)
    );
}

fn first_start_without_admin_key_prints_a_generated_one_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = cp_support::Database::fresh(backend, dir.path());
    let cp = ControlPlane::start_with(200, None, dir, db);
    let line = cp
        .stdout_lines
        .iter()
        .find(|l| l.contains("admin key"))
        .expect("the key is printed");
    let key = line.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(
        cp.http("GET", "/v1/packs", Some(&key), &[], None).status,
        200
    );
    let (dir, db) = cp.stop();
    let cp = ControlPlane::start_with(200, None, dir, db);
    assert!(
        !cp.stdout_lines.iter().any(|l| l.contains("admin key")),
        "shown once: {:?}",
        cp.stdout_lines
    );
    assert_eq!(
        cp.http("GET", "/v1/packs", Some(&key), &[], None).status,
        200
    );
}

/// A pack whose own tests fail in one environment: the push shows the results per environment
/// and names the failing test, and the deploy refusal names it again with what it expected and
/// what the pack decided.
fn failing_pack_tests_are_shown_at_push_and_named_at_deploy(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    let yaml = "pack:\n  name: support\n  version: 1.0.0\npolicies:\n  chain: [pii-detector]\npolicy:\n  pii-detector:\n    action: redact\nenvironments:\n  dev: {}\n  staging: {}\n  prod:\n    policy:\n      pii-detector:\n        action: log\ntests:\n  - name: cards are redacted\n    input: my card 4111 1111 1111 1111\n    expect: redact\n    entities: [credit_card]\n";
    let file = cp.file("tested.yaml", yaml);
    let o = cp.cli(Some(ADMIN_KEY), &["push", &file, "--note", "tests"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("tests dev        1 passed, 0 failed in dev"),
        "{out}"
    );
    assert!(
        out.contains(
            "tests prod       FAILED: 0 passed, 1 failed in prod; it cannot be deployed to prod"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "test `cards are redacted`: expected redact [credit_card], got log [credit_card]"
        ),
        "{out}"
    );
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["deploy", "support", "1.0.0", "-e", "prod", "--note", "try"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("gate tests            FAILED  0 passed, 1 failed in prod")
            && text(&o).contains(
                "test `cards are redacted`: expected redact [credit_card], got log [credit_card]"
            ),
        "{}",
        text(&o)
    );
}

on_both_backends!(
    failing_pack_tests_are_shown_at_push_and_named_at_deploy,
    push_then_versions_then_deploy_and_the_gateway_sees_it,
    identical_push_is_a_noop_and_a_changed_document_under_the_same_version_is_409,
    broken_pack_is_refused_with_422_and_every_diagnostic,
    missing_or_wrong_key_is_401_invalid_service_key,
    unknown_routes_wrong_methods_and_bad_bodies_are_refused_in_the_error_shape,
    viewer_key_cannot_deploy_and_the_attempt_is_logged,
    remote_diff_of_two_versions_says_looser,
    keys_are_shown_once_listed_without_secrets_and_revocable,
    first_start_without_admin_key_prints_a_generated_one_once,
);
