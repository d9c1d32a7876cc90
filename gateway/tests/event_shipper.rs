//! The decision-event shipper against a control plane that is busy: a 503 with `Retry-After`
//! holds the batch back for at least that long, however short the shipper's own backoff.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::{Duration, Instant};

use gateway::control::events::{flush_thread, queue, serving_thread, DecisionEvent, ShipperConfig};
use gateway::control::ControlClient;
use palisade_wire::events::{Findings, Outcome};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

fn event(id: &str) -> DecisionEvent<'_> {
    DecisionEvent {
        request_id: id,
        at_ms: 1,
        environment: "dev",
        pack: "support",
        version: "1.0.0",
        hash: "h1",
        route: "/v1/chat/completions",
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

/// Read one HTTP/1.1 request (head and `Content-Length` body) from `conn`: its head, lower
/// case, and its body.
async fn read_request(conn: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
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
            return (head, buf[end + 4..end + 4 + length].to_vec());
        }
    }
}

/// Accept one request on `listener`, answer it 200 with `body`; its head and body.
async fn answer_one(listener: &TcpListener, body: &str) -> (String, Vec<u8>) {
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("a request came")
        .unwrap();
    let request = read_request(&mut conn).await;
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(answer.as_bytes()).await.unwrap();
    conn.shutdown().await.unwrap();
    request
}

/// Register with a control plane that answers `registered`, ship two events (the second of
/// another version), and return the batch's `Content-Type` and JSON.
async fn batch_after_registering(registered: &str) -> (String, serde_json::Value) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let client = ControlClient::new(&base, "pal_gateway_key").unwrap();
    let register = palisade_wire::gateway::Register {
        instance: palisade_wire::gateway::Instance {
            id: "gw-1".into(),
            environment: "dev".into(),
            pack: "support".into(),
            build: String::new(),
            started_at: String::new(),
        },
    };
    let registering = client.register(&register);
    let (registered, _) = tokio::join!(registering, answer_one(&listener, registered));
    registered.unwrap();

    let mut cfg = ShipperConfig::new("gw-1".to_owned());
    cfg.flush_interval = Duration::from_millis(10);
    let (sink, events) = queue(16_000);
    // As a serving thread does: rows held back in one chunk, queued on the tick.
    let serving = serving_thread();
    sink.push(&event("req-1"));
    let mut other = event("req-2");
    other.version = "2.0.0";
    sink.push(&other);
    assert_eq!(sink.queued(), 0, "held back on this thread");
    flush_thread();
    assert_eq!(sink.queued(), 2);
    drop(serving);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(events.ship(client, cfg).run(async {
        let _ = stop_rx.await;
    }));
    let (head, body) = answer_one(&listener, "{}").await;
    stop_tx.send(()).unwrap();
    tasks.join_all().await;
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .unwrap()
        .trim()
        .to_owned();
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut json).unwrap();
    (content_type, serde_json::from_str(&json).unwrap())
}

#[tokio::test]
async fn rows_go_only_to_a_control_plane_that_reads_them() {
    let (content_type, batch) =
        batch_after_registering(r#"{"report_interval_ms": 1000, "event_formats": ["rows"]}"#).await;
    assert_eq!(content_type, palisade_wire::events::ROWS_CONTENT_TYPE);
    assert_eq!(batch["shared"]["version"], "1.0.0", "{batch}");
    assert_eq!(batch["rows"][0][0], "req-1", "{batch}");
    assert_eq!(batch["rows"][0][4], serde_json::Value::Null, "{batch}");
    assert_eq!(batch["rows"][1][4], "2.0.0", "{batch}");

    // A control plane that does not list rows (one older than them) gets the object form.
    let (content_type, batch) = batch_after_registering(r#"{"report_interval_ms": 1000}"#).await;
    assert_eq!(content_type, "application/json");
    assert_eq!(batch["events"][1]["version"], "2.0.0", "{batch}");
    assert_eq!(batch["events"][0]["request_id"], "req-1", "{batch}");
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
    sink.push(&event("req-1"));
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
        let _ = read_request(&mut conn).await;
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
