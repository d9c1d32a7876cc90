//! `palisade validate|hash|diff|test` driven as a user would: the real binary, real files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const BROKEN: &str = "pack:\n  name: support\n  version: 2.3.0\npolicies:\n  chain: [audit-logger]\npolicy:\n  audit-logger:\n    retention_days: 30\n    on_queue_full: explode\n";

#[test]
fn every_sample_pack_validates() {
    let mut files: Vec<String> = std::fs::read_dir(configs())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let args: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(String::as_str))
        .collect();
    let o = palisade(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ok: "),
        "{}",
        text(&o)
    );
}

#[test]
fn a_broken_pack_fails_with_the_precise_message_and_exit_code_1() {
    let f = write_temp("broken.yaml", BROKEN);
    let o = palisade(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error[INVALID_VALUE]: invalid value for policy.audit-logger.on_queue_full"),
        "{err}"
    );
    assert!(err.contains(&format!("{}:9:20", f.display())), "{err}");
    assert!(err.contains("9 |     on_queue_full: explode"), "{err}");
    assert!(
        err.contains("  |                    ^^^^^^^ found `explode`, expected block or drop"),
        "{err}"
    );
}

#[test]
fn validate_json_output_is_machine_readable() {
    let f = write_temp("broken-json.yaml", BROKEN);
    let o = palisade(&["validate", "--format", "json", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &v[0]["diagnostics"][0];
    assert_eq!(d["code"], "INVALID_VALUE");
    assert_eq!(d["path"], "policy.audit-logger.on_queue_full");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(9), Some(20))
    );
    assert_eq!(d["severity"], "error");
    assert_eq!(v[0]["ok"], false);
}

#[test]
fn hash_ignores_comments_and_follows_the_environment() {
    let sample = std::fs::read_to_string(configs().join("support.yaml")).unwrap();
    let commented = write_temp(
        "commented.yaml",
        &format!("# reviewed by security\n{sample}\n# end\n"),
    );
    let a = palisade(&["hash", configs().join("support.yaml").to_str().unwrap()]);
    let b = palisade(&["hash", commented.to_str().unwrap()]);
    let first = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(
        a.status.success() && b.status.success(),
        "{}{}",
        text(&a),
        text(&b)
    );
    assert_eq!(first(&a), first(&b));
    let prod = palisade(&[
        "hash",
        "-e",
        "prod",
        configs().join("support.yaml").to_str().unwrap(),
    ]);
    let dev = palisade(&[
        "hash",
        "-e",
        "dev",
        configs().join("support.yaml").to_str().unwrap(),
    ]);
    assert_ne!(first(&prod), first(&dev));
    let unknown = palisade(&[
        "hash",
        "-e",
        "prdo",
        configs().join("support.yaml").to_str().unwrap(),
    ]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("UNKNOWN_ENVIRONMENT"),
        "{}",
        text(&unknown)
    );
}

#[test]
fn diff_between_environments_reports_effects_and_a_summary() {
    let f = configs().join("support.yaml");
    let o = palisade(&[
        "diff",
        f.to_str().unwrap(),
        "--from-env",
        "dev",
        "--to-env",
        "prod",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("stricter  policy.pii-detector.action: \"log\" -> \"block\""),
        "{out}"
    );
    assert!(
        out.contains(
            "looser    policy.budget-enforcer.limits.environment/monthly.usd: 100.0 -> 5000.0"
        ),
        "{out}"
    );
    assert!(out.contains("overall: looser"), "{out}");
    let json = palisade(&[
        "diff",
        f.to_str().unwrap(),
        "--from-env",
        "dev",
        "--to-env",
        "prod",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v["summary"]["stricter"].as_u64().unwrap() >= 1);
    assert_eq!(v["overall"], "looser");
}

#[test]
fn diff_of_two_files() {
    let sample = std::fs::read_to_string(configs().join("support.yaml")).unwrap();
    let looser = write_temp(
        "looser.yaml",
        &sample.replace("retention_days: 30", "retention_days: 7"),
    );
    let o = palisade(&[
        "diff",
        configs().join("support.yaml").to_str().unwrap(),
        looser.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("looser    policy.audit-logger.retention_days: 30 -> 7"),
        "{out}"
    );
    assert!(
        out.contains("1 change: 0 stricter, 1 looser, 0 neutral"),
        "{out}"
    );
}

#[test]
fn pack_tests_pass_on_the_sample_and_a_wrong_expectation_fails_loudly() {
    let f = configs().join("support.yaml");
    for (env, passed) in [("dev", 2), ("staging", 3), ("prod", 2)] {
        let o = palisade(&["test", f.to_str().unwrap(), "-e", env]);
        assert!(o.status.success(), "{env}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!("{passed} passed, 0 failed")),
            "{env}: {out}"
        );
    }
    let sample = std::fs::read_to_string(&f).unwrap();
    let wrong = write_temp(
        "wrong.yaml",
        &sample.replace("expect: allow", "expect: block"),
    );
    let o = palisade(&["test", wrong.to_str().unwrap(), "-e", "staging"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("test clean question passes ... FAILED"),
        "{out}"
    );
    assert!(out.contains("expected block, got allow"), "{out}");
}
