//! `palisade up` as a new user runs it: one command starts the stack, a request through the
//! dev gateway succeeds (answered by the labelled mock provider, since no provider key is set),
//! and Ctrl-C (SIGINT) stops every process it started.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn children_of(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn up_starts_the_stack_serves_a_request_and_ctrl_c_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["up", "--port-base", "0", "--dir"])
        .arg(dir.path().join("stack"))
        .env_remove("OPENAI_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let mut dev = None;
    let mut mock_labelled = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("MOCK PROVIDER") {
            mock_labelled = true;
        }
        if let Some(rest) = line.trim().strip_prefix("dev      gateway ") {
            dev = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.contains("palisade status") {
            break;
        }
    }
    let dev = dev.expect("the dev gateway URL is printed");
    assert!(mock_labelled, "the mock provider is labelled as such");
    std::thread::spawn(move || for _ in lines {});

    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi, I am jane@example.com"}]}"#;
    let mut s = TcpStream::connect(dev.trim_start_matches("http://")).unwrap();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-palisade-pack-version: 2.3.0"),
        "{answer}"
    );
    assert!(answer.contains("local mock provider"), "{answer}");

    let children = children_of(up.id());
    assert_eq!(
        children.len(),
        4,
        "a control plane and three gateways: {children:?}"
    );
    Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = up.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "palisade up did not stop on SIGINT"
        );
        std::thread::park_timeout(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for pid in children {
        assert!(!alive(pid), "process {pid} outlived palisade up");
    }
}
