//! The decision-event queue and shipper against a control plane played by the test: a busy
//! control plane's `Retry-After` is honoured, rows go only to a control plane that reads them
//! (and fall back to objects when one refuses them), chunks of different versions go in batches
//! of their own, and the queue holds its capacity in events, counting what it drops.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::{Duration, Instant};

use gateway::control::events::{
    flush_thread, queue, serving_thread, DecisionEvent, EventQueue, ShipperConfig,
};
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

/// The shipper's settings with a 10 ms flush interval.
fn config() -> ShipperConfig {
    let mut cfg = ShipperConfig::new("gw-1".to_owned());
    cfg.flush_interval = Duration::from_millis(10);
    cfg
}

/// A shipper running on the test's runtime until stopped.
struct Shipping {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinSet<()>,
}

impl Shipping {
    fn start(events: EventQueue, client: ControlClient, cfg: ShipperConfig) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut task = tokio::task::JoinSet::new();
        task.spawn(events.ship(client, cfg).run(async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Stop it, and wait for its final flush.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.join_all().await;
    }
}

/// Register with a control plane that answers `registered`, ship two events (the second of
/// another version), and return the batch's `Content-Type` and JSON.
async fn batch_after_registering(registered: &str) -> (String, serde_json::Value) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = registered_with(&listener, registered).await;

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
    let shipper = Shipping::start(events, client, cfg);
    let batch = answer(&listener, "200 OK", "{}").await;
    shipper.stop().await;
    batch
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
    let shipper = Shipping::start(events, client, cfg);

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
    shipper.stop().await;
}

/// Accept one request, answer it `status` with `body`: the request's `Content-Type` and JSON
/// (gunzipped when it is gzip).
async fn answer(listener: &TcpListener, status: &str, body: &str) -> (String, serde_json::Value) {
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("a request came")
        .unwrap();
    let (head, raw) = read_request(&mut conn).await;
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(reply.as_bytes()).await.unwrap();
    conn.shutdown().await.unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut json = String::new();
    if std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut json)
        .is_err()
    {
        json = String::from_utf8_lossy(&raw).into_owned();
    }
    (
        content_type,
        serde_json::from_str(&json).unwrap_or_default(),
    )
}

/// A client registered with the control plane on `listener`, which answers `registered`.
async fn registered_with(listener: &TcpListener, registered: &str) -> ControlClient {
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
    let (answer, _) = tokio::join!(
        client.register(&register),
        answer(listener, "200 OK", registered)
    );
    answer.unwrap();
    client
}

/// A client registered with the control plane on `listener`, which lists rows.
async fn registered_for_rows(listener: &TcpListener) -> ControlClient {
    let client = registered_with(listener, r#"{"event_formats": ["rows"]}"#).await;
    assert!(client.reads_rows());
    client
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn a_control_plane_that_refuses_rows_gets_the_batch_again_as_objects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = registered_for_rows(&listener).await;
    let (sink, events) = queue(16);
    sink.push(&event("req-1"));
    let shipper = Shipping::start(events, client.clone(), config());
    // What an older control plane says to rows: the object form's field is missing.
    let (content_type, _) = answer(
        &listener,
        "400 Bad Request",
        r#"{"error":{"code":"BAD_REQUEST","message":"invalid event batch at `.`: missing field `events`"}}"#,
    )
    .await;
    assert_eq!(content_type, palisade_wire::events::ROWS_CONTENT_TYPE);
    let (content_type, batch) = answer(&listener, "200 OK", "{}").await;
    assert_eq!(content_type, "application/json");
    assert_eq!(batch["events"][0]["request_id"], "req-1", "{batch}");
    let stats = sink.stats();
    wait_for("the batch counted as shipped", || load(&stats.shipped) == 1).await;
    assert_eq!(load(&stats.dropped), 0);
    assert!(!client.reads_rows(), "objects from then on");
    shipper.stop().await;
}

#[tokio::test]
async fn chunks_of_other_versions_go_in_batches_of_their_own_and_count_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = registered_for_rows(&listener).await;
    let (sink, events) = queue(16);
    // Not a serving thread: each row is a chunk of its own.
    sink.push(&event("req-1"));
    let mut other = event("req-2");
    other.version = "2.0.0";
    sink.push(&other);
    sink.push(&event("req-3"));
    assert_eq!(sink.queued(), 3);
    let shipper = Shipping::start(events, client, config());
    let mut got = Vec::new();
    for _ in 0..3 {
        let (_, batch) = answer(&listener, "200 OK", "{}").await;
        for row in batch["rows"].as_array().unwrap() {
            let version = row[4]
                .as_str()
                .unwrap_or(batch["shared"]["version"].as_str().unwrap());
            got.push(format!("{}@{version}", row[0].as_str().unwrap()));
        }
        if got.len() == 3 {
            break;
        }
    }
    assert_eq!(got, ["req-1@1.0.0", "req-2@2.0.0", "req-3@1.0.0"]);
    let stats = sink.stats();
    wait_for("all three counted as shipped", || load(&stats.shipped) == 3).await;
    assert_eq!((sink.queued(), load(&stats.dropped)), (0, 0));
    shipper.stop().await;
}

#[test]
fn the_queue_holds_its_capacity_in_events_and_counts_the_rest() {
    let (sink, _events) = queue(10);
    for i in 0..15 {
        sink.push(&event(&format!("req-{i}")));
    }
    assert_eq!((sink.queued(), load(&sink.stats().dropped)), (10, 5));

    // A serving thread holds rows back in chunks (here of 2: a sixteenth of 32) and queues
    // the rest when its guard goes.
    let (sink, _events) = queue(32);
    let serving = serving_thread();
    for i in 0..5 {
        sink.push(&event(&format!("req-{i}")));
    }
    assert_eq!(sink.queued(), 4);
    drop(serving);
    assert_eq!(sink.queued(), 5);
    assert_eq!(load(&sink.stats().dropped), 0);
}

#[test]
fn a_serving_thread_that_ends_queues_what_it_held() {
    let (sink, _events) = queue(1000);
    let on_thread = sink.clone();
    std::thread::spawn(move || {
        // Never dropped: only the thread's end can queue the row.
        std::mem::forget(serving_thread());
        on_thread.push(&event("req-1"));
        assert_eq!(on_thread.queued(), 0);
    })
    .join()
    .unwrap();
    assert_eq!(sink.queued(), 1);
}
