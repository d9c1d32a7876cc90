//! `palisade up` as a new user runs it, from a directory holding `configs/support.yaml`: one
//! command starts the stack, the file is what dev enforces (same hash as `palisade hash`), a
//! request through dev reaches the echoing mock provider, Ctrl-C (SIGINT) stops every process it
//! started, and a second start on the same directory resumes instead of starting over.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

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
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// A running `palisade up` and what its summary printed.
struct Up {
    child: Child,
    /// Summary lines by their first word (`control`, `pack`, `dev`, `staging`, `prod`, `MOCK`).
    lines: BTreeMap<String, String>,
}

impl Up {
    fn start(work: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["up", "--port-base", "0", "--dir", "stack"])
            .current_dir(work)
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut lines = BTreeMap::new();
        for line in out.by_ref() {
            let line = line.unwrap();
            if line.contains("palisade status") {
                break;
            }
            if let Some(first) = line.split_whitespace().next() {
                lines.insert(first.to_owned(), line.trim().to_owned());
            }
        }
        std::thread::spawn(move || for _ in out {});
        assert!(
            lines.contains_key("dev"),
            "the summary was printed: {lines:?}"
        );
        Self { child, lines }
    }

    fn url(&self, key: &str) -> String {
        self.lines[key]
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_owned()
    }

    /// `palisade ARGS` against this stack's control plane with its admin key.
    fn cli(&self, work: &Path, args: &[&str]) -> Output {
        let key = std::fs::read_to_string(work.join("stack/admin-key")).unwrap();
        Command::new(BIN)
            .args(args)
            .current_dir(work)
            .env("PALISADE_CONTROL_PLANE", self.url("control"))
            .env("PALISADE_SERVICE_KEY", key.trim())
            .output()
            .unwrap()
    }

    /// SIGINT, then every child must be gone.
    fn stop(&mut self) {
        let children = children_of(self.child.id());
        assert_eq!(
            children.len(),
            4,
            "a control plane and three gateways: {children:?}"
        );
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
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
}

/// A test that fails before `stop` still ends the stack it started: SIGINT, so `palisade up`
/// stops its control plane and gateways, then a kill if it hangs.
impl Drop for Up {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::park_timeout(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chat(gateway: &str, content: &str) -> String {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{content}"}}]}}"#
    );
    call(gateway, "POST", "/v1/chat/completions", &body)
}

fn call(gateway: &str, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(gateway.trim_start_matches("http://")).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn status_json(up: &Up, work: &Path) -> (Option<i32>, Value) {
    let o = up.cli(work, &["status", "--format", "json"]);
    (o.status.code(), serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn up_deploys_the_repository_file_serves_it_stops_cleanly_and_resumes() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    std::fs::create_dir(work.join("configs")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/support.yaml"),
        work.join("configs/support.yaml"),
    )
    .unwrap();

    let mut up = Up::start(work);
    assert!(
        up.lines["MOCK"].contains("OPENAI_BASE_URL"),
        "{:?}",
        up.lines
    );
    assert!(
        up.lines["pack"].contains("created (configs/support.yaml)"),
        "{:?}",
        up.lines
    );
    // The console's address and the key to sign in with are printed, and the key signs in.
    let key = std::fs::read_to_string(work.join("stack/admin-key")).unwrap();
    let console = up.url("console");
    assert!(up.lines["console"].contains(key.trim()), "{:?}", up.lines);
    let form = format!("key={}", key.trim());
    let mut s =
        TcpStream::connect(console.trim_start_matches("http://").trim_end_matches('/')).unwrap();
    write!(s, "POST /sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}", form.len()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert!(answer.contains("palisade_session="), "{answer}");
    // The mock echoes what it received: dev only logs, so the e-mail reached it.
    let answer = chat(&up.url("dev"), "Hi, I am jane@example.com");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-palisade-pack-version: 2.3.0"),
        "{answer}"
    );
    assert!(
        answer.contains("(no model was called) received: Hi, I am jane@example.com"),
        "{answer}"
    );
    // The mock answers every route the gateway serves, in each API's format.
    let claude = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hi there"}]}"#;
    let claude_stream = claude.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\"");
    let respond = r#"{"model":"gpt-4o-mini","input":"Hi there"}"#;
    let respond_stream = r#"{"model":"gpt-4o-mini","input":"Hi there","stream":true}"#;
    for (method, path, body, says) in [
        ("POST", "/v1/messages", claude, "\"type\":\"message\""),
        (
            "POST",
            "/v1/messages",
            claude_stream.as_str(),
            "event: message_stop",
        ),
        ("POST", "/v1/messages/count_tokens", claude, "input_tokens"),
        ("POST", "/v1/responses", respond, "\"output_text\""),
        (
            "POST",
            "/v1/responses",
            respond_stream,
            "event: response.completed",
        ),
        ("GET", "/v1/responses/resp_mock", "", "a stored response"),
        ("DELETE", "/v1/responses/resp_mock", "", "\"deleted\":true"),
        (
            "POST",
            "/v1/completions",
            r#"{"model":"gpt-4o-mini","prompt":"Hi there"}"#,
            "text_completion",
        ),
        (
            "POST",
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"Hi"}"#,
            "embedding",
        ),
    ] {
        let answer = call(&up.url("dev"), method, path, body);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{method} {path}: {answer}"
        );
        assert!(answer.contains(says), "{method} {path}: {answer}");
        let streamed = body.contains("\"stream\":true");
        if path != "/v1/messages/count_tokens"
            && method == "POST"
            && !path.ends_with("embeddings")
            && !streamed
        {
            assert!(
                answer.contains("no model was called"),
                "{method} {path}: {answer}"
            );
        }
    }
    // The deployed pack is the file: `palisade hash` on it is what dev enforces, and pushing
    // it again is a no-op, not a version conflict.
    let file_hash = stdout(&up.cli(work, &["hash", "configs/support.yaml"]));
    let file_hash = file_hash.split_whitespace().next().unwrap().to_owned();
    let (code, status) = status_json(&up, work);
    assert_eq!(
        code,
        Some(0),
        "staging and prod wait, dev is SYNCED: {status}"
    );
    let dev = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"] == "dev")
        .unwrap()
        .clone();
    assert_eq!(dev["desired"]["hash"], file_hash.as_str());
    let o = up.cli(work, &["push", "configs/support.yaml", "--note", "again"]);
    assert!(stdout(&o).starts_with("unchanged"), "{}", stdout(&o));

    // The user moves dev on; a restart must not move it back.
    let edited = std::fs::read_to_string(work.join("configs/support.yaml"))
        .unwrap()
        .replace("  version: 2.3.0\n", "  version: 2.4.0\n");
    std::fs::write(work.join("configs/support.yaml"), edited).unwrap();
    assert!(up
        .cli(work, &["push", "configs/support.yaml", "--note", "edit"])
        .status
        .success());
    let o = up.cli(
        work,
        &[
            "deploy", "support", "2.4.0", "-e", "dev", "--note", "mine", "--wait", "20s",
        ],
    );
    assert!(o.status.success(), "{}", stdout(&o));
    up.stop();

    let mut up = Up::start(work);
    assert!(up.lines["pack"].contains("unchanged"), "{:?}", up.lines);
    assert!(up.lines["dev"].contains("support 2.4.0"), "{:?}", up.lines);
    assert!(
        up.lines["staging"].contains("nothing deployed yet"),
        "{:?}",
        up.lines
    );
    let answer = chat(&up.url("dev"), "hello");
    assert!(
        answer.contains("x-palisade-pack-version: 2.4.0"),
        "{answer}"
    );
    // One gateway key per environment, reused; the previous run's gateways (other ports) are
    // OFFLINE and do not fail `status` once the new ones are SYNCED.
    let keys = stdout(&up.cli(work, &["keys", "list"]));
    assert_eq!(keys.matches(" gateway ").count(), 3, "{keys}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, status) = status_json(&up, work);
        if code == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "status never exited 0: {status}");
        std::thread::park_timeout(Duration::from_millis(200));
    }
    up.stop();
}

#[test]
fn up_refuses_a_pack_whose_provider_cannot_be_pointed_at_the_mock() {
    let work = tempfile::tempdir().unwrap();
    let pack = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/support.yaml"
    ))
    .unwrap();
    let without: String = pack
        .lines()
        .filter(|l| !l.contains("base_url_env: OPENAI_BASE_URL"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(work.path().join("pack.yaml"), without).unwrap();
    let o = Command::new(BIN)
        .args([
            "up",
            "--port-base",
            "0",
            "--dir",
            "stack",
            "--pack",
            "pack.yaml",
        ])
        .current_dir(work.path())
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("provider `openai` has no base_url_env")
            && err.contains("base_url_env: OPENAI_BASE_URL"),
        "{err}"
    );
}
