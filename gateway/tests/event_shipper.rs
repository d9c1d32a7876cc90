//! The decision-event shipper against a control plane that is busy: a 503 with `Retry-After`
//! holds the batch back for at least that long, however short the shipper's own backoff.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::{Duration, Instant};

use gateway::control::events::{queue, ShipperConfig, Text};
use gateway::control::ControlClient;
use palisade_wire::events::{DecisionEvent, Findings, Outcome};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

fn event(id: &str) -> DecisionEvent<Text> {
    let fixed = |s: &'static str| Text::Fixed(s.into());
    DecisionEvent {
        request_id: id.to_owned(),
        at_ms: 1,
        environment: fixed("dev"),
        pack: fixed("support"),
        version: fixed("1.0.0"),
        hash: fixed("h1"),
        route: fixed("/v1/chat/completions"),
        model_requested: None,
        model_used: None,
        caller: None,
        team: None,
        outcome: Outcome::Allowed,
        escalated: false,
        status: 200,
        latency_us: 1,
        upstream_us: None,
        input_tokens: None,
        output_tokens: None,
        cost_usd: None,
        pii: Findings::default(),
        redacted_text: None,
        redacted_response_text: None,
        attempts: Vec::new(),
    }
}

/// Read one HTTP/1.1 request (head and `Content-Length` body) from `conn`.
async fn read_request(conn: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the shipper hung up mid-request");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + length {
            return;
        }
    }
}

#[tokio::test]
async fn a_busy_control_plane_is_retried_no_sooner_than_it_asks() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let client = ControlClient::new(&base, "pal_gateway_key").unwrap();
    let mut cfg = ShipperConfig::new("gw-1".to_owned());
    // Without `Retry-After` the shipper would be back within milliseconds.
    cfg.flush_interval = Duration::from_millis(10);
    cfg.min_backoff = Duration::from_millis(10);
    let (sink, events) = queue(16);
    sink.push(event("req-1"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shipper = events.ship(client, cfg);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(shipper.run(async {
        let _ = stop_rx.await;
    }));

    let mut arrivals = Vec::new();
    for answer in [
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    ] {
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the shipper sent the batch")
            .unwrap();
        read_request(&mut conn).await;
        arrivals.push(Instant::now());
        conn.write_all(answer.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
    }
    let waited = arrivals[1] - arrivals[0];
    assert!(
        waited >= Duration::from_millis(950),
        "the batch came back after {waited:?}, before the 1 s the control plane asked for"
    );
    let stats = sink.stats();
    tokio::time::timeout(Duration::from_secs(5), async {
        while stats.shipped.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the batch counted as shipped once acknowledged");
    assert_eq!(
        stats
            .send_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    stop_tx.send(()).unwrap();
    tasks.join_next().await.unwrap().unwrap();
}
