//! The admin log's hash chain: intact after real changes, and an edited row is detected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use cp_support::{text, Backend, ControlPlane, ADMIN_KEY, PACK_V1};

fn tampering_with_an_admin_log_row_is_detected(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    cp.push(PACK_V1);
    assert!(cp
        .cli(
            Some(ADMIN_KEY),
            &["deploy", "support", "1.0.0", "-e", "dev", "--note", "d"]
        )
        .status
        .success());
    let o = cp.cli(Some(ADMIN_KEY), &["history", "--verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).starts_with("ok: 6 record(s)"), "{}", text(&o));

    let o = cp.cli(Some(ADMIN_KEY), &["history"]);
    assert!(
        text(&o).contains("deploy") && text(&o).contains("push"),
        "{}",
        text(&o)
    );

    // Rewrite the deploy's note, as someone with database access might.
    let changed = cp.db.execute(&[
        "UPDATE admin_log SET detail = replace(detail, '\"note\":\"d\"', '\"note\":\"approved by the CISO\"') WHERE action = 'deploy'",
    ]);
    assert_eq!(changed, 1);
    let o = cp.cli(Some(ADMIN_KEY), &["history", "--verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("BROKEN at record 6"), "{}", text(&o));
    let v = cp.http("GET", "/v1/history/verify", Some(ADMIN_KEY), &[], None);
    assert_eq!(
        (v.body["ok"].as_bool(), v.body["broken_at"].as_i64()),
        (Some(false), Some(6))
    );
}

fn a_change_whose_admin_record_cannot_be_written_is_refused(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    cp.push(PACK_V1);
    cp.db.break_admin_log();
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["deploy", "support", "1.0.0", "-e", "dev", "--note", "d"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("STORAGE_ERROR"), "{}", text(&o));
    let d = cp.http(
        "GET",
        "/v1/deployments?environment=dev&pack=support",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(
        d.body["deployments"].as_array().unwrap().len(),
        0,
        "the pointer did not move"
    );
    let v2 = cp_support::pack("1.1.0", 7);
    let a = cp.http(
        "POST",
        "/v1/packs",
        Some(ADMIN_KEY),
        &[],
        Some(&serde_json::json!({ "yaml": v2, "note": "n" })),
    );
    assert_eq!(a.status, 500);
    let v = cp.http(
        "GET",
        "/v1/packs/support/versions",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(
        v.body["versions"].as_array().unwrap().len(),
        1,
        "the version was not stored"
    );
}

on_both_backends!(
    tampering_with_an_admin_log_row_is_detected,
    a_change_whose_admin_record_cannot_be_written_is_refused,
);
