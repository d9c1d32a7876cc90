//! The README's quick start, run as written: `palisade up` in a directory holding the
//! repository's `configs/`, then the shell block marked `readme-test` executed verbatim by bash
//! (`set -euo pipefail`, so every command must succeed), with `palisade` on the PATH as
//! `cargo install` puts it there. The stack uses the README's fixed ports (8070, 8081–8083,
//! 8090), which lie outside the range the kernel hands out for port 0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../README.md");
const MARKER: &str = "<!-- readme-test:";

/// The `sh` block after the marker.
fn quick_start_block() -> &'static str {
    let after = &README[README
        .find(MARKER)
        .expect("the README marks its tested block")..];
    let start = after
        .find("```sh\n")
        .expect("an sh block follows the marker")
        + 6;
    let len = after[start..].find("```").expect("the block ends");
    &after[start..start + len]
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::park_timeout(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_quick_start_runs_verbatim() {
    // The first block is the two commands; `cargo install` is what built this binary.
    assert!(
        README.contains("cargo install --locked --path cli && palisade up\n")
            && README.contains("\nbash .ci/run\n"),
        "the README's two commands"
    );
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    std::fs::create_dir(work.join("configs")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/support.yaml"),
        work.join("configs/support.yaml"),
    )
    .unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_palisade")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut up = Command::new("palisade")
        .arg("up")
        .current_dir(work)
        .env("PATH", &path)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = up.stdout.take().unwrap();
    let up = Stop(up);
    let mut lines = BufReader::new(out).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("palisade status") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});

    let script = format!("set -euo pipefail\n{}", quick_start_block());
    let o = Command::new("bash")
        .args(["-c", &script])
        .current_dir(work)
        .env("PATH", &path)
        .env_remove("PALISADE_SERVICE_KEY")
        .env_remove("PALISADE_CONTROL_PLANE")
        .output()
        .unwrap();
    drop(up);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the block failed:\n{out}\n{err}");
    // What the comments in the block say happens.
    for expected in [
        "received: I am jane@example.com, card 4111 1111 1111 1111",
        "received: I am [EMAIL_1], card [CREDIT_CARD_1]",
        "\"code\":\"pii_blocked\"",
        "\"outcome\":\"redacted\"",
        "staging: 1 gateway(s) enforce it",
        "stricter  policy.pii-detector.action",
        "pushed support 2.4.0",
        "dev: 1 gateway(s) enforce it",
    ] {
        assert!(
            out.contains(expected),
            "`{expected}` missing from:\n{out}\n{err}"
        );
    }
    assert_eq!(
        out.matches("(no model was called)").count(),
        2,
        "prod's request never reached the provider:\n{out}"
    );
}
