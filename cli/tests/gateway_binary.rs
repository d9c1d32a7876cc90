//! The real `palisade gateway` binary on port 0 against the mock provider: the issue's
//! "done when" list, start-up refusals, TLS + HTTP/2, and the metrics format.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_support::client::{self, chat, get, post, sse_text, wait_until};
use gateway_support::mock::MockProvider;
use gateway_support::{pack, Dir, GatewayProcess};

const EMAIL: &str = "jane.doe@example.com";

fn pii(action: &str) -> String {
    format!("policy:\n  pii-detector:\n    action: {action}\n    entities: [email, credit_card, phone]\n    scan: [request, response]\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_text_is_what_the_provider_receives() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "pii-detector", &pii("redact")),
    );
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", &format!("Reply to {EMAIL} please"), false),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = mock.last().await.unwrap();
    let content = got.body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!content.contains(EMAIL), "{content}");
    assert!(
        content.starts_with("Reply to ") && content.ends_with(" please"),
        "{content}"
    );
    assert_eq!(
        got.authorization.as_deref(),
        Some("Bearer sk-provider-secret")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_requests_never_reach_the_provider() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "pii-detector", &pii("block")),
    );
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    let c = client::client();
    for stream in [false, true] {
        let r = post(
            &c,
            &gw.api("/v1/chat/completions"),
            &chat("gpt-4o-mini", &format!("I am {EMAIL}"), stream),
            None,
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (400, "pii_blocked")
        );
        assert_eq!(r.header("x-palisade-pack-version"), "1.0.0");
    }
    assert_eq!(mock.api_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_number_split_across_sse_chunks_is_redacted_in_the_stream() {
    let mock = MockProvider::start().await;
    mock.set(|b| {
        b.chunks = vec![
            "Card: 4111 11".into(),
            "11 1111 ".into(),
            "1111, ok?".into(),
        ]
    })
    .await;
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "pii-detector", &pii("redact")),
    );
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "status?", true),
        None,
    )
    .await;
    let text = sse_text(&r.text());
    assert!(
        !text.contains("4111") && !text.contains("1111 1111"),
        "card leaked: {text}"
    );
    assert!(
        text.starts_with("Card: ") && text.ends_with(", ok?"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_continuous_load_drops_no_request_and_flips_the_version_header() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write("pack.yaml", &pack(&mock.base_url(), "1.0.0", "", ""));
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    let url = gw.api("/v1/chat/completions");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let seen_new = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..4 {
        let (stop, ok, seen_new, url) = (stop.clone(), ok.clone(), seen_new.clone(), url.clone());
        workers.push(gateway_support::client::spawn(async move {
            let c = client::client();
            let mut versions = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = post(&c, &url, &chat("gpt-4o-mini", "hi", i % 2 == 0), None).await;
                assert_eq!(
                    r.status,
                    200,
                    "a request failed during the reload: {}",
                    r.text()
                );
                if i % 2 == 0 {
                    assert_eq!(sse_text(&r.text()), "Hello, world!", "a stream was cut");
                }
                let v = r.header("x-palisade-pack-version").to_owned();
                if v == "2.0.0" {
                    seen_new.fetch_add(1, Ordering::SeqCst);
                }
                if versions.last() != Some(&v) {
                    versions.push(v);
                }
                ok.fetch_add(1, Ordering::SeqCst);
            }
            versions
        }));
    }
    wait_until(Duration::from_secs(10), "traffic flows", || {
        let ok = ok.clone();
        async move { ok.load(Ordering::SeqCst) > 20 }
    })
    .await;
    // An editor's save: truncate, then write in two parts (debounced into one reload).
    let text = pack(&mock.base_url(), "2.0.0", "", "");
    std::fs::write(&p, &text[..text.len() / 2]).unwrap();
    std::fs::write(&p, &text).unwrap();
    wait_until(Duration::from_secs(10), "every worker sees 2.0.0", || {
        let s = seen_new.clone();
        async move { s.load(Ordering::SeqCst) > 40 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let versions = w.await.unwrap();
        assert_eq!(versions.first().map(String::as_str), Some("1.0.0"));
        assert_eq!(
            versions.last().map(String::as_str),
            Some("2.0.0"),
            "{versions:?}"
        );
        assert!(
            versions.len() == 2,
            "the version flipped back and forth: {versions:?}"
        );
    }
    let total = ok.load(Ordering::SeqCst);
    // Every request the clients sent reached the provider exactly once and got a 200.
    assert_eq!(mock.api_calls(), total);
    let status = get(&client::client(), &gw.api("/status")).await.json();
    assert_eq!(status["version"], "2.0.0");
    assert!(
        gw.stderr().matches("policy pack rejected").count() == 0,
        "{}",
        gw.stderr()
    );
    // Regression: a log written to a pipe or a file carried ANSI colour codes, and the
    // no-keys warning came twice.
    assert!(!gw.stderr().contains('\u{1b}'), "{}", gw.stderr());
    assert_eq!(
        gw.stderr().matches("anonymously").count(),
        1,
        "{}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pack_is_rejected_and_the_old_version_keeps_serving_and_sighup_reloads() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write("pack.yaml", &pack(&mock.base_url(), "1.0.0", "", ""));
    let gw = GatewayProcess::start(&p, dir.path(), &["--no-watch"]);
    let c = client::client();
    std::fs::write(
        &p,
        "pack:\n  name: test\n  version: 9.0.0\npolicies:\n  chain: [pii-detectr]\n",
    )
    .unwrap();
    let status = gw.reload_rejected().await;
    assert_eq!(status["version"], "1.0.0");
    assert!(
        status["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains("UNKNOWN_POLICY"),
        "{status}"
    );
    let r = gw.chat("hi").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-palisade-pack-version"), "1.0.0");
    let m = get(&c, &gw.api("/metrics")).await.text();
    assert!(
        m.contains("palisade_pack_reloads_total{result=\"rejected\"} 1"),
        "{m}"
    );
    assert!(
        gw.stderr().contains("UNKNOWN_POLICY"),
        "the diagnostics are logged"
    );

    std::fs::write(&p, pack(&mock.base_url(), "1.1.0", "", "")).unwrap();
    gw.signal("HUP");
    let url = gw.api("/v1/chat/completions");
    wait_until(Duration::from_secs(10), "SIGHUP activates 1.1.0", || {
        let (c, u) = (c.clone(), url.clone());
        async move {
            post(&c, &u, &chat("gpt-4o-mini", "hi", false), None)
                .await
                .header("x-palisade-pack-version")
                == "1.1.0"
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_broken_pack_and_a_public_listener_without_keys() {
    let dir = Dir::new();
    let broken = dir.write("broken.yaml", "pack:\n  name: x\n  version: nope\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "gateway",
            "--environment",
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--pack",
        ])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("INVALID_VALUE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let good = dir.write("pack.yaml", &pack("http://127.0.0.1:9/v1", "1.0.0", "", ""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "gateway",
            "--environment",
            "dev",
            "--listen",
            "0.0.0.0:0",
            "--pack",
        ])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without --keys"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_open_stream_then_exits_zero() {
    let mock = MockProvider::start().await;
    mock.set(|b| b.chunk_delay = Duration::from_millis(50))
        .await;
    let dir = Dir::new();
    let p = dir.write("pack.yaml", &pack(&mock.base_url(), "1.0.0", "", ""));
    let mut gw = GatewayProcess::start(&p, dir.path(), &[]);
    let c = client::client();
    let resp = client::send(
        &c,
        "POST",
        &gw.api("/v1/chat/completions"),
        Some(chat("gpt-4o-mini", "hi", true).to_string().as_bytes()),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    gw.signal("TERM");
    let r = client::collect(resp).await;
    assert_eq!(sse_text(&r.text()), "Hello, world!");
    assert!(gw.wait_exit(Duration::from_secs(10)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_move_to_the_admin_listener() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write("pack.yaml", &pack(&mock.base_url(), "1.0.0", "", ""));
    let gw = GatewayProcess::start(&p, dir.path(), &["--admin-listen", "127.0.0.1:0"]);
    let admin = gw.admin.clone().unwrap();
    assert_ne!(admin, gw.url);
    let c = client::client();
    // The public listener serves the API and the probes, not the operator routes.
    for path in ["/status", "/metrics"] {
        let r = client::get(&c, &gw.api(path)).await;
        assert_eq!(r.status, 404, "{path} on the public listener");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(client::get(&c, &gw.api(path)).await.status, 200, "{path}");
    }
    // The admin listener serves them, and nothing else.
    let s = client::get(&c, &format!("{admin}/status")).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["version"], "1.0.0", "{}", s.text());
    let m = client::get(&c, &format!("{admin}/metrics")).await;
    assert_eq!(m.status, 200);
    assert!(m.text().contains("palisade_"), "{}", m.text());
    let r = client::get(&c, &format!("{admin}/v1/models")).await;
    assert_eq!(r.status, 404);
    let body = client::chat("gpt-4o-mini", "hi", false);
    let r = client::post(&c, &format!("{admin}/status"), &body, None).await;
    assert_eq!(r.status, 405);
    let r = client::post(&c, &gw.api("/v1/chat/completions"), &body, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_check() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write("pack.yaml", &pack(&mock.base_url(), "1.0.0", "", ""));
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    let c = client::client();
    let _ = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", false),
        None,
    )
    .await;
    let _ = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("nope", "hi", false),
        None,
    )
    .await;
    let m = get(&c, &gw.api("/metrics")).await.text();
    let metrics = dir.write("metrics.txt", &m);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", metrics.display()))
        .output()
        .expect("promtool is required (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_speaks_http2_and_http1() {
    let dir = Dir::new();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let gen = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is required for the TLS test");
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let mock = MockProvider::start().await;
    let p = dir.write("pack.yaml", &pack(&mock.base_url(), "1.0.0", "", ""));
    let gw = GatewayProcess::start(
        &p,
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(gw.url.starts_with("https://"), "{}", gw.url);
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let url = gw.api("/v1/models");
        let cert = cert.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", flag, "--cacert"])
                .arg(&cert)
                .args(["-w", "\n%{http_version} %{http_code}", &url])
                .output()
                .expect("curl is required for the TLS test")
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.ends_with(&format!("{want} 200")),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("gpt-4o-mini"));
    }
}

/// Regression: a gateway under a control plane it cannot reach, with no pack yet, kept retrying
/// its registration after SIGTERM and never exited.
#[tokio::test]
async fn a_managed_gateway_without_a_pack_stops_promptly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("PALISADE_GATEWAY_KEY", "gk_unreachable_test");
    // Port 9 (discard) on loopback: nothing listens, every registration fails.
    let mut gw = GatewayProcess::start(
        std::path::Path::new("support"),
        dir.path(),
        &[
            "--control-plane",
            "http://127.0.0.1:9",
            "--state-dir",
            &dir.path().display().to_string(),
        ],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}: {}", gw.stderr());
}

/// A warning from deep in the request path carries the request's span: its id (the one the
/// caller got in `x-palisade-request-id`), route, pack version and error code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failure_is_logged_under_the_request_span() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let dir = Dir::new();
    let p = dir.write("pack.yaml", &pack(&dead, "7.1.0", "", ""));
    let gw = GatewayProcess::start(&p, dir.path(), &[]);
    let r = gw.chat("hi").await;
    assert_eq!(r.status, 502);
    let id = r.header("x-palisade-request-id").to_owned();
    let mut line = String::new();
    for _ in 0..100 {
        line = gw
            .stderr()
            .lines()
            .find(|l| l.contains("request failed"))
            .unwrap_or_default()
            .to_owned();
        if !line.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for part in [
        format!("request_id=\"{id}\""),
        "route=\"chat_completions\"".to_owned(),
        "pack=\"7.1.0\"".to_owned(),
        "code=\"upstream_error\"".to_owned(),
        "connection failed".to_owned(),
    ] {
        assert!(line.contains(&part), "`{part}` missing from: {line}");
    }
}
