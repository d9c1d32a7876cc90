//! Decision-event benchmark of the control plane: ingest throughput from concurrent senders (as
//! gateways send: gzipped batches of 1,000), then seeding to a total, then query latency of
//! `GET /v1/events` and `GET /v1/events/summary` over what is stored.
//!
//!   palisade-events-bench URL GATEWAY_KEY ADMIN_KEY [SENDERS] [INGEST_EVENTS] [TOTAL]
//!
//! Prints one `RESULT` line per phase. Run through `benches/load/events.sh`, which starts the
//! control plane on SQLite or Postgres.
#![expect(
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "a benchmark client: it prints its report, reads the control plane's small answers whole, and awaits every sender task it spawns"
)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod stats;

use stats::percentile;

type Http = Client<HttpConnector, Full<Bytes>>;

const BATCH: u64 = 1000;
const OUTCOMES: [&str; 6] = [
    "allowed",
    "allowed",
    "redacted",
    "logged",
    "blocked",
    "upstream_error",
];
const ENTITIES: [&str; 4] = ["email", "credit_card", "us_ssn", "phone"];
const WINDOW_MS: u64 = 6 * 24 * 3600 * 1000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A cheap deterministic mix of `n` (splitmix64).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// When the events of a run happened. Gateways send their events in time order, within a second
/// or two of the request, so event times rise with `n` as they would from real senders: the
/// first `ingest` events (the ingest phase) in the last two seconds, the rest (the seed) evenly
/// over the six days up to now. Only the order of time matters here: events at random times make
/// every time-keyed index insert land on a random page, which no gateway does.
#[derive(Clone, Copy)]
struct Timeline {
    now: u64,
    ingest: u64,
    total: u64,
}

impl Timeline {
    fn at(self, n: u64, r: u64) -> u64 {
        if n < self.ingest {
            (self.now + n * 2000 / self.ingest.max(1)).saturating_sub(2000 + r % 50)
        } else {
            let seed = self.total.saturating_sub(self.ingest).max(1);
            let step = (n - self.ingest).saturating_mul(WINDOW_MS) / seed;
            (self.now + step).saturating_sub(WINDOW_MS + r % 50)
        }
    }
}

/// Event number `n`: in time order (see [`Timeline`]), 5 versions, 50 callers, 2 % escalated;
/// a row of a rows batch (version 2.0.0 shared) or an object.
fn event(n: u64, time: Timeline, rows: bool, out: &mut String) {
    let r = mix(n);
    let at = time.at(n, r);
    let version = (r >> 20) % 5;
    let escalated = (r >> 30).is_multiple_of(50);
    let outcome = if escalated {
        "escalated"
    } else {
        OUTCOMES[((r >> 36) % OUTCOMES.len() as u64) as usize]
    };
    let pii = if outcome == "allowed" || outcome == "upstream_error" {
        String::new()
    } else {
        format!(
            "\"{}\":{}",
            ENTITIES[((r >> 40) % ENTITIES.len() as u64) as usize],
            1 + (r >> 44) % 3
        )
    };
    let (caller, team) = ((r >> 48) % 50, (r >> 54) % 8);
    let (latency, upstream) = (500 + (r >> 8) % 2000, 300_000 + (r >> 12) % 900_000);
    let (input, output) = (10 + (r >> 16) % 500, 10 + (r >> 24) % 800);
    let _ = if rows {
        let (v, h) = if version == 0 {
            ("null".to_owned(), "null".to_owned())
        } else {
            (format!("\"2.{version}.0\""), format!("\"hash{version}\""))
        };
        let pii = if pii.is_empty() {
            "{}".to_owned()
        } else {
            format!("{{\"request\":{{{pii}}}}}")
        };
        write!(
            out,
            r#"["{n:016x}{r:016x}",{at},null,null,{v},{h},"/v1/chat/completions","gpt-4o-mini","gpt-4o-mini","app-{caller}","team-{team}","{outcome}",{escalated},200,{latency},{upstream},{input},{output},0.00012,{pii}]"#,
        )
    } else {
        write!(
            out,
            r#"{{"request_id":"{n:016x}{r:016x}","at_ms":{at},"environment":"dev","pack":"support","version":"2.{version}.0","hash":"hash{version}","route":"/v1/chat/completions","model_requested":"gpt-4o-mini","model_used":"gpt-4o-mini","caller":"app-{caller}","team":"team-{team}","outcome":"{outcome}","escalated":{escalated},"status":200,"latency_us":{latency},"upstream_us":{upstream},"input_tokens":{input},"output_tokens":{output},"cost_usd":0.00012,"pii":{{"request":{{{pii}}},"response":{{}}}}}}"#,
        )
    };
}

/// Gateways send rows to a control plane that reads them; `FORMAT=objects` sends the object
/// form instead.
fn rows() -> bool {
    std::env::var("FORMAT").map_or(true, |f| f != "objects")
}

fn batch(first: u64, count: u64, time: Timeline) -> Bytes {
    let rows = rows();
    let mut json = String::with_capacity(count as usize * 520);
    json.push_str(if rows {
        r#"{"gateway":"bench","shared":{"environment":"dev","pack":"support","version":"2.0.0","hash":"hash0"},"rows":["#
    } else {
        r#"{"gateway":"bench","events":["#
    });
    for i in 0..count {
        if i > 0 {
            json.push(',');
        }
        event(first + i, time, rows, &mut json);
    }
    json.push_str("]}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = std::io::Write::write_all(&mut gz, json.as_bytes());
    Bytes::from(gz.finish().unwrap_or_default())
}

async fn post(http: &Http, url: &str, key: &str, body: Bytes) -> Result<(), String> {
    let req = hyper::Request::post(format!("{url}/v1/events"))
        .header("authorization", format!("Bearer {key}"))
        .header(
            "content-type",
            if rows() {
                "application/vnd.palisade.event-rows+json"
            } else {
                "application/json"
            },
        )
        .header("content-encoding", "gzip")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = http.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

/// Send events `[from, to)` from `senders` concurrent senders; returns events per second and
/// each batch's time to its acknowledgement (ms, sorted).
async fn send_range(
    http: &Http,
    url: &str,
    key: &str,
    senders: u64,
    time: Timeline,
    (from, to): (u64, u64),
) -> (f64, Vec<f64>) {
    let next = Arc::new(AtomicU64::new(from));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (http, url, key, next) = (
            http.clone(),
            url.to_owned(),
            key.to_owned(),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= to {
                    return times;
                }
                // Encoding is the sender's work, as on a gateway; it runs here off the clock
                // of no one but this process.
                let body = batch(first, BATCH.min(to - first), time);
                let sent = Instant::now();
                // A busy control plane (503 `BUSY`) asks for the batch again, as a gateway
                // would send it; the time counts until it is stored.
                let posted = loop {
                    match post(&http, &url, &key, body.clone()).await {
                        Err(e) if e.starts_with("503") => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        done => break done,
                    }
                };
                times.push(sent.elapsed().as_secs_f64() * 1000.0);
                if let Err(e) = posted {
                    eprintln!("batch at {first} failed: {e}");
                    std::process::exit(1);
                }
            }
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.unwrap_or_default());
    }
    times.sort_by(f64::total_cmp);
    ((to - from) as f64 / start.elapsed().as_secs_f64(), times)
}

async fn get_ms(http: &Http, url: &str, key: &str, path: &str) -> f64 {
    let start = Instant::now();
    let req = hyper::Request::get(format!("{url}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap_or_default();
    let ok = match http.request(req).await {
        Ok(resp) => {
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            status.is_success()
        }
        Err(_) => false,
    };
    if !ok {
        eprintln!("query {path} failed");
        std::process::exit(1);
    }
    start.elapsed().as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: palisade-events-bench URL GATEWAY_KEY ADMIN_KEY [SENDERS] [INGEST_EVENTS] [TOTAL]");
        std::process::exit(2);
    }
    let (url, gw_key, admin) = (&args[1], &args[2], &args[3]);
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (senders, ingest, total) = (arg(4, 4), arg(5, 200_000), arg(6, 5_000_000));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);

    let time = Timeline {
        now: now_ms(),
        ingest,
        total,
    };
    // The control plane's CPU over the ingest, when events.sh names its process (`CP_PID`).
    let cp_ticks = || {
        let pid = std::env::var("CP_PID").ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    };
    let before = cp_ticks();
    let (rate, _) = send_range(&http, url, gw_key, senders, time, (0, ingest)).await;
    let cpu = match (before, cp_ticks()) {
        // Linux counts CPU time in ticks of 1/100 s.
        (Some(a), Some(b)) => format!(
            " cp_cpu_us_per_event={:.1}",
            (b - a) as f64 * 1e4 / ingest as f64
        ),
        _ => String::new(),
    };
    println!("RESULT phase=ingest senders={senders} events={ingest} events_per_s={rate:.0}{cpu}");
    if total > ingest {
        let (rate, _) = send_range(&http, url, gw_key, senders, time, (ingest, total)).await;
        println!(
            "RESULT phase=seed events={} events_per_s={rate:.0}",
            total - ingest
        );
    }
    let queries = [
        "/v1/events?environment=dev&limit=100",
        "/v1/events?environment=dev&outcome=escalated&limit=100",
        "/v1/events?environment=dev&entity=us_ssn&limit=100",
        "/v1/events?environment=dev&version=2.3.0&caller=app-7&limit=100",
        "/v1/events?environment=dev&team=team-3&model=gpt-4o-mini&since=1h&limit=100",
        "/v1/events/summary?environment=dev&since=1h",
        "/v1/events/summary?environment=dev&since=24h",
        "/v1/events/summary?environment=dev&since=7d",
    ];
    for q in queries {
        let mut times = Vec::new();
        for _ in 0..21 {
            times.push(get_ms(&http, url, admin, q).await);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "RESULT phase=query stored={total} p50_ms={:.1} p99_ms={:.1} path={q}",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    // Retention while ingesting (`RETAIN_DAYS`, with the control plane deleting every second):
    // the same ingest before and while the events older than that are deleted.
    if let Some(days) = std::env::var("RETAIN_DAYS")
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
    {
        let timed = |phase: &str, rate: f64, times: &[f64]| {
            println!(
                "RESULT phase={phase} events={ingest} events_per_s={rate:.0} batch_p50_ms={:.1} batch_p99_ms={:.1} batch_max_ms={:.1}",
                percentile(times, 0.5),
                percentile(times, 0.99),
                times.last().copied().unwrap_or_default()
            );
        };
        let range = (total, total + ingest);
        let (rate, times) = send_range(&http, url, gw_key, senders, time, range).await;
        timed("ingest_before_retention", rate, &times);
        let body = format!(r#"{{"event_retention_ms": {}}}"#, days * 24 * 3600 * 1000);
        let req = hyper::Request::patch(format!("{url}/v1/environments/dev"))
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default();
        match http.request(req).await {
            Ok(r) if r.status().is_success() => {}
            other => {
                eprintln!("setting the retention failed: {other:?}");
                std::process::exit(1);
            }
        }
        // The control plane's next deletion round starts within its one-second interval.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let range = (total + ingest, total + 2 * ingest);
        let (rate, times) = send_range(&http, url, gw_key, senders, time, range).await;
        timed("ingest_during_retention", rate, &times);
    }
}
