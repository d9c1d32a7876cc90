//! The real gateway binary under the real control-plane binary: deploy → SYNCED and serving;
//! a pack the gateway refuses → REJECTED while the old version keeps serving; rollback flips it
//! back; a killed gateway turns OFFLINE; restarted with the control plane down, it serves its
//! persisted pack and says so (`source: persisted`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use cp_support::{
    eventually, pack, text, Backend, ControlPlane, ManagedGateway, ADMIN_KEY, PACK_V1,
};

fn start_gateway(cp_url: &str, key: &str, state_dir: &Path) -> ManagedGateway {
    ManagedGateway::start(cp_url, key, "dev", "support", state_dir, &[])
}

/// `GET path` → (status, `x-palisade-pack-version`, body).
fn get(addr: &str, path: &str) -> Option<(u16, Option<String>, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let version = head
        .lines()
        .find_map(|l| l.strip_prefix("x-palisade-pack-version: "))
        .map(str::to_owned);
    Some((status, version, body.to_owned()))
}

fn serving(addr: &str) -> Option<String> {
    get(addr, "/v1/models")
        .filter(|(s, ..)| *s == 200)
        .and_then(|(_, v, _)| v)
}

fn deploy(cp: &ControlPlane, version: &str) {
    let o = cp.cli(
        Some(ADMIN_KEY),
        &[
            "deploy",
            "support",
            version,
            "--environment",
            "dev",
            "--note",
            "dev rollout",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

fn only_gateway_state(cp: &ControlPlane) -> Option<String> {
    let s = cp.status_json();
    let gws: Vec<_> = s["entries"]
        .as_array()?
        .iter()
        .flat_map(|e| e["gateways"].as_array().cloned().unwrap_or_default())
        .collect();
    (gws.len() == 1).then(|| gws[0]["state"].as_str().unwrap_or("").to_owned())
}

#[test]
fn a_gateway_follows_its_control_plane_and_survives_its_absence() {
    let t = Duration::from_secs(30);
    let cp = ControlPlane::start(Backend::Sqlite, 200);
    let key = cp.create_key("gateway", Some("dev"));
    cp.push(PACK_V1);
    deploy(&cp, "1.0.0");
    let state = tempfile::tempdir().unwrap();

    let gw = start_gateway(&cp.url, &key, state.path());
    eventually(t, "the gateway serves 1.0.0", || {
        (serving(&gw.addr).as_deref() == Some("1.0.0")).then_some(())
    });
    eventually(t, "SYNCED", || {
        (only_gateway_state(&cp).as_deref() == Some("SYNCED")).then_some(())
    });
    let o = cp.cli(Some(ADMIN_KEY), &["status", "--environment", "dev"]);
    assert!(
        o.status.success(),
        "status exits 0 when all are SYNCED: {}",
        text(&o)
    );

    // A version the registry accepts but a gateway refuses to activate: disabled.
    let disabled =
        pack("1.1.0", 30).replace("  version: 1.1.0\n", "  version: 1.1.0\n  enabled: false\n");
    cp.push(&disabled);
    deploy(&cp, "1.1.0");
    eventually(t, "REJECTED", || {
        (only_gateway_state(&cp).as_deref() == Some("REJECTED")).then_some(())
    });
    assert_eq!(
        serving(&gw.addr).as_deref(),
        Some("1.0.0"),
        "the old version keeps serving"
    );
    let o = cp.cli(Some(ADMIN_KEY), &["status", "--environment", "dev"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("PACK_DISABLED"), "{}", text(&o));
    eventually(t, "the rejection in the metrics", || {
        get(&gw.addr, "/metrics").filter(|(_, _, m)| {
            m.contains("palisade_pack_rejected 1") && m.contains("palisade_pack_drift 1")
        })
    });

    let o = cp.cli(
        Some(ADMIN_KEY),
        &[
            "rollback",
            "support",
            "--environment",
            "dev",
            "--to",
            "1.0.0",
            "--note",
            "back to 1.0.0",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    eventually(t, "SYNCED after rollback", || {
        (only_gateway_state(&cp).as_deref() == Some("SYNCED")).then_some(())
    });

    cp.push(&pack("1.2.0", 60));
    deploy(&cp, "1.2.0");
    eventually(t, "the gateway serves 1.2.0", || {
        (serving(&gw.addr).as_deref() == Some("1.2.0")).then_some(())
    });
    eventually(t, "no drift in the metrics", || {
        get(&gw.addr, "/metrics").filter(|(_, _, m)| {
            m.contains("palisade_pack_drift 0") && m.contains("palisade_pack_rejected 0")
        })
    });

    drop(gw);
    eventually(t, "OFFLINE", || {
        (only_gateway_state(&cp).as_deref() == Some("OFFLINE")).then_some(())
    });

    // The control plane goes away; a restarted gateway serves what it persisted.
    let cp_url = cp.url.clone();
    drop(cp);
    let gw = start_gateway(&cp_url, &key, state.path());
    assert_eq!(
        serving(&gw.addr).as_deref(),
        Some("1.2.0"),
        "serving the persisted pack at once"
    );
    let (_, _, status) = get(&gw.addr, "/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["source_kind"], "persisted", "{status}");
}

#[test]
fn without_a_persisted_pack_and_no_control_plane_the_gateway_is_not_ready() {
    let state = tempfile::tempdir().unwrap();
    let gw = start_gateway("http://127.0.0.1:9", "pal_gateway_key", state.path());
    let (status, ..) = eventually(Duration::from_secs(10), "an answer", || {
        get(&gw.addr, "/readyz")
    });
    assert_eq!(status, 503);
    let (status, ..) = get(&gw.addr, "/healthz").unwrap();
    assert_eq!(status, 200);
}
