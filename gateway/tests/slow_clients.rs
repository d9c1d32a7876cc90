//! Idle and slow clients are cut off: a connection that sends nothing or part of a head, a
//! keep-alive connection left idle, a body that stalls, and one address opening more than its
//! share of connections. Regression: the HTTP version sniffing read the first bytes with no
//! timer, so a silent connection held its slot forever and 10,000 of them stopped the gateway.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::NoEnforcement;
use support::mock::MockProvider;
use support::{pack, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn gateway(tweak: impl FnOnce(&mut gateway::GatewayConfig)) -> (MockProvider, TestGateway) {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let gw = TestGateway::start_with(
        &pack(&mock.base_url(), "1.0.0", "", ""),
        Arc::new(NoEnforcement),
        tweak,
    )
    .await;
    (mock, gw)
}

fn addr(gw: &TestGateway) -> String {
    gw.url.trim_start_matches("http://").to_owned()
}

/// Read until the peer closes; what it sent, and how long that took. Fails after 10 s.
async fn until_closed(s: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the gateway kept the connection open");
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// One keep-alive `GET /healthz` and its whole answer (the body is `ok\n`).
async fn healthz(s: &mut TcpStream) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"\r\n\r\nok\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_silent_connection_and_a_partial_head_are_closed_at_the_first_request_timeout() {
    let (_mock, gw) = gateway(|c| {
        c.server.first_request_timeout = Duration::from_millis(300);
    })
    .await;
    // Nothing at all; one byte of the HTTP/2 preface (what the version sniffing waits on); one
    // byte of an HTTP/1 request line.
    for sent in ["", "P", "G", "GET /healthz HTTP/1.1\r\nHost: x\r\n"] {
        let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
        s.write_all(sent.as_bytes()).await.unwrap();
        let (_, took) = until_closed(&mut s).await;
        assert!(
            took >= Duration::from_millis(250),
            "{sent:?}: closed after {took:?}"
        );
    }
    // A client that sends its request in time is served past that deadline.
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    assert!(healthz(&mut s).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = healthz(&mut s).await;
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "a served connection must outlive the first-request timeout: {again:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let (_mock, gw) = gateway(|c| {
        c.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    assert!(healthz(&mut s).await.starts_with("HTTP/1.1 200"));
    let (_, took) = until_closed(&mut s).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_never_reaches_the_provider() {
    let (mock, gw) = gateway(|c| {
        c.limits.body_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let (reply, took) = until_closed(&mut s).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"request_timeout\""), "{reply}");
    assert!(
        took >= Duration::from_millis(250),
        "answered after {took:?}"
    );
    assert_eq!(mock.api_calls(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let (_mock, gw) = gateway(|c| {
        c.server.max_connections_per_client = 3;
    })
    .await;
    // Four connections at once: whichever the serving threads accept last is closed without
    // an answer; the three others are served.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(TcpStream::connect(addr(&gw)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut replies = Vec::new();
    for s in &mut conns {
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        replies.push(got.starts_with(b"HTTP/1.1 200"));
    }
    assert_eq!(replies.iter().filter(|ok| **ok).count(), 3, "{replies:?}");
    drop(conns);
    // Once they are closed, a new connection is admitted again.
    support::client::wait_until(Duration::from_secs(5), "a freed slot", || async {
        let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got)).await;
        got.starts_with(b"HTTP/1.1 200")
    })
    .await;
    let metrics = String::from_utf8_lossy(&gw.state.metrics().render()).into_owned();
    assert!(
        metrics.contains("palisade_connections_refused_total 1"),
        "{metrics}"
    );
    gw.stop().await;
}

/// A provider that goes quiet mid-stream, or talks too long, is cut off: what was held back
/// goes out, then an error event says why, and the stream ends cleanly (no hang, no torn body).
#[tokio::test]
async fn a_stream_is_ended_cleanly_when_the_provider_goes_quiet_or_talks_too_long() {
    use support::client::{self, chat, post, sse_data};
    for (idle, max_bytes, code) in [
        (Duration::from_millis(150), 1 << 20, "stream_idle_timeout"),
        (Duration::from_secs(30), 600, "stream_too_long"),
    ] {
        let (mock, gw) = gateway(|c| {
            c.limits.stream = gateway::sse::StreamLimits {
                idle_timeout: idle,
                max_bytes,
            };
        })
        .await;
        mock.set(|b| {
            b.chunks = (0..8).map(|i| format!("word{i} ")).collect();
            b.chunk_delay = Duration::from_millis(if code == "stream_idle_timeout" {
                400
            } else {
                0
            });
        })
        .await;
        let started = Instant::now();
        let r = post(
            &client::client(),
            &gw.api("/v1/chat/completions"),
            &chat("gpt-4o-mini", "hi", true),
            None,
        )
        .await;
        assert_eq!(r.status, 200);
        let events = sse_data(&r.text());
        let last = events.last().cloned().unwrap_or_default();
        assert!(
            last.contains(&format!("\"code\":\"{code}\"")),
            "{code}: {events:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{code}: took {:?}",
            started.elapsed()
        );
        gw.stop().await;
    }
}
