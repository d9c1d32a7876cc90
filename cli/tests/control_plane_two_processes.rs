//! Two control-plane processes on one PostgreSQL registry: they start at the same moment (the
//! migrations are taken in turn under an advisory lock), serve the same state, keep one unforked
//! admin-log chain when both are written to at once, and a gateway long-polling process B is
//! woken by a deploy made through process A (B re-reads the pointer while a poll waits).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use std::time::{Duration, Instant};

use cp_support::{pack, text, Backend, ControlPlane, Database, ADMIN_KEY, PACK_V1};
use serde_json::json;

#[test]
fn two_processes_on_one_postgres_serve_the_same_state_and_wake_each_others_pollers() {
    let dir_a = tempfile::tempdir().unwrap();
    let db = Database::fresh(Backend::Postgres, dir_a.path());
    let (db_b, dir_b) = (db.clone(), tempfile::tempdir().unwrap());
    // Both start on the empty database at once: one migrates and seeds, the other waits for it.
    let b = std::thread::spawn(move || ControlPlane::start_with(200, Some(ADMIN_KEY), dir_b, db_b));
    let a = ControlPlane::start_with(200, Some(ADMIN_KEY), dir_a, db);
    let b = b.join().unwrap();

    let envs = b.http("GET", "/v1/environments", Some(ADMIN_KEY), &[], None);
    assert_eq!(
        envs.body["environments"].as_array().unwrap().len(),
        3,
        "seeded once"
    );

    // A push through A is visible through B; a key created on B works on A.
    let v1 = a.push(PACK_V1);
    let o = b.cli(Some(ADMIN_KEY), &["versions", "support"]);
    assert!(
        o.status.success() && text(&o).contains("1.0.0"),
        "{}",
        text(&o)
    );
    let gw_key = b.create_key("gateway", Some("dev"));
    assert_eq!(a.register(&gw_key, "gw-1", "dev").status, 200);
    let o = a.cli(
        Some(ADMIN_KEY),
        &["deploy", "support", "1.0.0", "-e", "dev", "--note", "first"],
    );
    assert!(o.status.success(), "{}", text(&o));

    // A gateway long-polls B, already holding v1; the deploy of v2 goes through A.
    let v2 = a.push(&pack("1.1.0", 7));
    let (addr_b, key) = (b.addr.clone(), gw_key.clone());
    let etag = format!("\"{v1}\"");
    let poller = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = http_get(
            &addr_b,
            "/v1/gateways/desired?environment=dev&pack=support&wait=20",
            &key,
            &etag,
        );
        (answer, started.elapsed())
    });
    // Let the poll reach B and start waiting before the pointer moves (a poll that arrives
    // after the move answers at once, which would prove nothing).
    std::thread::park_timeout(Duration::from_millis(500));
    assert!(
        !poller.is_finished(),
        "the poll is held while nothing changes"
    );
    let o = a.cli(
        Some(ADMIN_KEY),
        &[
            "deploy", "support", "1.1.0", "-e", "dev", "--note", "second",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let ((status, body), waited) = poller.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["hash"], json!(v2));
    assert!(
        waited < Duration::from_secs(5),
        "B's poller was woken within its re-read interval, not at the end of the wait: {waited:?}"
    );

    // Writes through both processes at once keep one chain.
    let writers: Vec<_> = [&a, &b]
        .iter()
        .enumerate()
        .map(|(i, cp)| {
            let (url, dir) = (cp.url.clone(), cp.dir.path().to_owned());
            std::thread::spawn(move || {
                for n in 0..5 {
                    let file = dir.join(format!("p{i}{n}.yaml"));
                    std::fs::write(&file, pack(&format!("2.{i}.{n}"), 7)).unwrap();
                    let o = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
                        .args(["push", file.to_str().unwrap(), "--note", "concurrent"])
                        .env("PALISADE_CONTROL_PLANE", &url)
                        .env("PALISADE_SERVICE_KEY", ADMIN_KEY)
                        .output()
                        .unwrap();
                    assert!(o.status.success(), "{}", text(&o));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for cp in [&a, &b] {
        let v = cp.http("GET", "/v1/history/verify", Some(ADMIN_KEY), &[], None);
        assert_eq!(v.body["ok"], json!(true), "{}", v.body);
    }
    let (va, vb) = (
        a.http("GET", "/v1/history/verify", Some(ADMIN_KEY), &[], None),
        b.http("GET", "/v1/history/verify", Some(ADMIN_KEY), &[], None),
    );
    assert_eq!(va.body["head"], vb.body["head"]);
    let versions = b.http(
        "GET",
        "/v1/packs/support/versions",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(versions.body["versions"].as_array().unwrap().len(), 12);
}

/// A GET with a gateway key and `If-None-Match`; returns the status and the body text.
fn http_get(addr: &str, path: &str, key: &str, etag: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nIf-None-Match: {etag}\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}
