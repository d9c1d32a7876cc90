//! `palisade scan` driven through the real binary: stdin in, stdout out, exit code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::Write;
use std::process::{Command, Stdio};

fn scan(args: &[&str], stdin: &str) -> (String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("scan")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_owned();
    let writer = std::thread::spawn(move || input.write_all(data.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn jsonl_writes_one_result_per_line_with_byte_offsets() {
    let input = concat!(
        r#"{"text": "contact me: jane@example.com"}"#,
        "\n",
        r#"{"text": "カード４１１１ １１１１ １１１１ １１１１です"}"#,
        "\n",
        r#"{"text": "nothing here"}"#,
        "\n",
    );
    let (out, code) = scan(&["--jsonl"], input);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0]["findings"],
        serde_json::json!([{"entity": "email", "start": 12, "end": 28}])
    );
    assert_eq!(lines[0]["redacted"], "contact me: [EMAIL_1]");
    let text = "カード４１１１ １１１１ １１１１ １１１１です";
    let f = &lines[1]["findings"][0];
    let (s, e) = (
        f["start"].as_u64().unwrap() as usize,
        f["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(f["entity"], "credit_card");
    assert_eq!(&text[s..e], "４１１１ １１１１ １１１１ １１１１");
    assert_eq!(
        lines[2],
        serde_json::json!({"findings": [], "redacted": "nothing here"})
    );
}

#[test]
fn jsonl_malformed_line_gets_an_error_line_and_the_run_continues() {
    let input = "{\"text\": \"a@b.io\"}\nnot json\n{\"txt\": 1}\n{\"text\": \"078-05-1120\"}\n";
    let (out, code) = scan(&["--jsonl"], input);
    assert_eq!(code, 1, "a malformed line makes the exit code 1");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[1]["error"].as_str().unwrap().starts_with("line 2:"));
    assert!(lines[2]["error"].as_str().unwrap().starts_with("line 3:"));
    assert_eq!(lines[3]["redacted"], "[SSN_1]");
}

#[test]
fn jsonl_streams_many_lines_in_order() {
    let input: String = (0..20_000)
        .map(|i| format!("{{\"text\": \"user{i}@example.com #{i}\"}}\n"))
        .collect();
    let (out, code) = scan(&["--jsonl"], &input);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 20_000);
    assert!(
        lines[19_999].contains("\"redacted\":\"[EMAIL_1] #19999\""),
        "{}",
        lines[19_999]
    );
}

#[test]
fn plain_mode_lists_findings_without_values_and_prints_redacted_text() {
    let (out, code) = scan(&[], "mail a@b.io and call +44 20 7946 0958\n");
    assert_eq!(code, 0);
    assert!(out.contains("email        5..11"), "{out}");
    assert!(out.contains("phone        21..37"), "{out}");
    assert!(!out.contains("a@b.io"), "values are never echoed: {out}");
    assert!(
        out.ends_with("mail [EMAIL_1] and call [PHONE_1]\n"),
        "{out}"
    );
}
