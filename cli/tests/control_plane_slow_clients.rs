//! The control plane cuts off idle and slow clients: a connection that sends nothing or part
//! of a head is closed at the first-request timeout, a stalled body gets 408 REQUEST_TIMEOUT.
//! Regression: a silent connection was held forever (hyper-util's version sniffing has no
//! timer), so enough of them exhausted the control plane's descriptors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cp_support::{Backend, ControlPlane, Database, ADMIN_KEY};

fn until_closed(s: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let r = s.read_to_end(&mut got);
    assert!(
        r.is_ok(),
        "the control plane kept the connection open: {r:?}"
    );
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn silent_connections_are_closed_and_a_stalled_body_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(Backend::Sqlite, dir.path());
    let cp = ControlPlane::start_with_args(
        1000,
        Some(ADMIN_KEY),
        dir,
        db,
        &[
            "--first-request-timeout",
            "300ms",
            "--body-timeout",
            "300ms",
        ],
    );
    for sent in ["", "P", "GET /v1/packs HTTP/1.1\r\n"] {
        let mut s = TcpStream::connect(&cp.addr).unwrap();
        s.write_all(sent.as_bytes()).unwrap();
        let (_, took) = until_closed(&mut s);
        assert!(
            took >= Duration::from_millis(250),
            "{sent:?}: closed after {took:?}"
        );
    }
    let mut s = TcpStream::connect(&cp.addr).unwrap();
    s.write_all(
        format!(
            "POST /v1/packs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: 50\r\n\r\n{{\"name\":"
        )
        .as_bytes(),
    )
    .unwrap();
    let (reply, _) = until_closed(&mut s);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("REQUEST_TIMEOUT"), "{reply}");
    cp.stop();
}

/// Regression: `--database sqlite:///path/cp.db` failed with "unable to open database file"
/// when the file did not exist yet, while the plain path created it.
#[test]
fn a_sqlite_url_creates_a_missing_database_file_like_a_plain_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new").join("cp.db");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut db = Database::fresh(Backend::Sqlite, dir.path());
    db.url = format!("sqlite://{}", file.display());
    let cp = ControlPlane::start_with_args(1000, Some(ADMIN_KEY), dir, db, &[]);
    assert!(file.exists(), "{} was not created", file.display());
    cp.stop();
}

/// Free text is bounded: a change note over 4 KiB is refused with 413 `NOTE_TOO_LONG` and
/// nothing is stored.
#[test]
fn an_oversized_change_note_is_refused_and_nothing_is_stored() {
    let cp = ControlPlane::start(Backend::Sqlite, 1000);
    let file = cp.file("v1.yaml", cp_support::PACK_V1);
    let long = "x".repeat(5000);
    let o = cp.cli(Some(ADMIN_KEY), &["push", &file, "--note", &long]);
    assert!(!o.status.success());
    assert!(
        cp_support::text(&o).contains("NOTE_TOO_LONG"),
        "{}",
        cp_support::text(&o)
    );
    let o = cp.cli(Some(ADMIN_KEY), &["versions", "support"]);
    assert!(
        cp_support::text(&o).contains("UNKNOWN_PACK"),
        "{}",
        cp_support::text(&o)
    );
    cp.stop();
}

/// Free text is printed safely: a note with an escape sequence, a newline and a bidi override
/// is shown with those characters escaped, never sent raw to the terminal.
#[test]
fn control_characters_in_a_note_are_escaped_when_printed() {
    let cp = ControlPlane::start(Backend::Sqlite, 1000);
    let file = cp.file("v1.yaml", cp_support::PACK_V1);
    let note = "ok\u{1b}[2J\ncleared\u{202E}txt";
    let o = cp.cli(Some(ADMIN_KEY), &["push", &file, "--note", note]);
    assert!(o.status.success(), "{}", cp_support::text(&o));
    let o = cp.cli(Some(ADMIN_KEY), &["versions", "support"]);
    let out = cp_support::text(&o);
    assert!(out.contains(r"ok\u{1b}[2J\u{a}cleared\u{202e}txt"), "{out}");
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{202E}'),
        "{out}"
    );
    cp.stop();
}
