//! A full disk under the audit log: requests are still answered, the records that could not be
//! written are counted (`palisade_audit_records_lost_total`), no torn line is glued to a later
//! one, and when space returns the chain carries a `gap` line that `palisade audit verify`
//! reports as lost records after a write failure — not as tampering. The disk is a real tmpfs of
//! 256 KiB, filled by a file the test writes and then deletes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gateway_support::mock::MockProvider;
use gateway_support::{audit_lines, durable_audit_pack, Dir, GatewayProcess};
use test_support::client;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs (it needs root or CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write zeros to `path` until the file system says it is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = [0u8; 4096];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
            break;
        }
    }
    // Whatever is left below a whole chunk, byte by byte.
    while f.write_all(&[0]).is_ok() {}
}

async fn metric(gw: &GatewayProcess, name: &str) -> u64 {
    let c = client::client();
    let text = client::get(&c, &gw.api("/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_records_countably_and_the_chain_reports_a_gap_not_tampering() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "256k");
    let audit = disk.0.join("audit");
    let p = dir.write("pack.yaml", &durable_audit_pack(&mock.base_url(), &audit));
    let mut gw = GatewayProcess::start(&p, dir.path(), &[]);
    for i in 0..3 {
        let r = gw.chat(&format!("before {i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(metric(&gw, "palisade_audit_records_lost_total").await, 0);

    let filler = disk.0.join("filler");
    fill(&filler);
    // The provider has answered by the time the record is written: the caller gets the answer.
    // The first lines may still fit in the free end of the log file's last page; after that
    // every write fails, part-way through a line or at its start.
    const WHILE_FULL: u64 = 10;
    for i in 0..WHILE_FULL {
        let r = gw.chat(&format!("while full {i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let lost = metric(&gw, "palisade_audit_records_lost_total").await;
    assert!((5..=WHILE_FULL).contains(&lost), "{lost} lost");
    assert!(metric(&gw, "palisade_audit_write_errors_total").await >= lost);
    // Nothing of the failed writes stays in the file: every line on disk is whole.
    let on_disk = audit_lines(&audit, false);
    assert!(on_disk.last().unwrap()["record"]["request_id"].is_string());

    std::fs::remove_file(&filler).unwrap();
    for i in 0..2 {
        let r = gw.chat(&format!("after {i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(metric(&gw, "palisade_audit_records_lost_total").await, lost);

    // Full again, and stopped once space is back but before any request writes: the gap line
    // is written at shutdown, so the chain still says what was lost.
    fill(&filler);
    for i in 0..WHILE_FULL {
        let r = gw.chat(&format!("full again {i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let lost_again = metric(&gw, "palisade_audit_records_lost_total").await - lost;
    assert!((5..=WHILE_FULL).contains(&lost_again), "{lost_again} lost");
    std::fs::remove_file(&filler).unwrap();
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await.success());

    let lines = audit_lines(&audit, false);
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    let written_while_full = usize::try_from(WHILE_FULL - lost).unwrap();
    let mut expected = vec!["started"];
    expected.extend(std::iter::repeat_n("request", 3 + written_while_full));
    expected.extend(["gap", "request", "request"]);
    let written_again = usize::try_from(WHILE_FULL - lost_again).unwrap();
    expected.extend(std::iter::repeat_n("request", written_again));
    expected.push("gap");
    assert_eq!(kinds, expected, "{lines:#?}");
    assert_eq!(lines.last().unwrap()["lost_before"], lost_again);
    let gap_at = 4 + written_while_full;
    let gap = &lines[gap_at];
    assert_eq!(gap["lost_before"], lost);
    let note = gap["note"].as_str().unwrap();
    assert!(note.contains("No space left on device"), "{note}");

    let verify = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        out.contains(&format!(
            "gap: {lost} record(s) lost before seq {}",
            gap_at + 1
        )),
        "{out}"
    );
    assert!(out.contains("after a write failure at"), "{out}");

    let json = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["audit", "verify", "--format", "json"])
        .arg(&audit)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["report"]["lost"], lost + lost_again);
    assert_eq!(
        v["report"]["requests"],
        3 + WHILE_FULL - lost + 2 + WHILE_FULL - lost_again
    );
    assert_eq!(v["report"]["gaps"][0]["seq"], gap_at + 1);
    assert_eq!(v["report"]["gaps"][1]["lost"], lost_again);
}
