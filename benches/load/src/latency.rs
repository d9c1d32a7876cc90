//! `palisade-stream-latency`: how much later streamed text reaches a caller through a target
//! than straight from the provider.
//!
//! Usage: `palisade-stream-latency N BASELINE_URL [NAME=URL ...]` — N streamed chat requests,
//! one at a time, to the baseline (the paced mock itself) and then to each target. For every
//! response it records when each piece of content text arrived. Reported per target:
//! time to first text (p50, p99) and what the target adds to it over the baseline's median;
//! the per-chunk lag — for each amount of text the baseline delivers, how much later the target
//! has delivered as much (p50, p99; meaningful when the target passes the text unchanged, as on
//! prose); the time to the whole answer; and the median number of events that carried text.

#![expect(clippy::print_stdout, reason = "a benchmark report")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// One response: when each content piece arrived (since the request was sent) and the text
/// length delivered by then.
struct Trace {
    arrivals: Vec<(Duration, usize)>,
    done: Duration,
}

impl Trace {
    fn first_text(&self) -> Option<Duration> {
        self.arrivals.first().map(|a| a.0)
    }

    /// When at least `len` bytes of text had arrived.
    fn time_of(&self, len: usize) -> Option<Duration> {
        self.arrivals.iter().find(|a| a.1 >= len).map(|a| a.0)
    }
}

const BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me something."}]}"#;

async fn trace(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
) -> Result<Trace, String> {
    let req = hyper::Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{url}: status {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut pending = Vec::new();
    let mut arrivals = Vec::new();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let at = started.elapsed();
        pending.extend_from_slice(&data);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let Some(json) = event.strip_prefix(b"data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(json) else {
                continue;
            };
            let text = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
            if !text.is_empty() {
                len += text.len();
                arrivals.push((at, len));
            }
        }
    }
    Ok(Trace {
        arrivals,
        done: started.elapsed(),
    })
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(n), Some(baseline)) = (
        args.first().and_then(|n| n.parse::<usize>().ok()),
        args.get(1),
    ) else {
        eprintln!("usage: palisade-stream-latency N BASELINE_URL [NAME=URL ...]");
        return std::process::ExitCode::from(2);
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut targets = vec![("direct".to_owned(), baseline.clone())];
    for a in &args[2..] {
        if let Some((name, url)) = a.split_once('=') {
            targets.push((name.to_owned(), url.to_owned()));
        }
    }
    let mut results: Vec<(String, Vec<Trace>)> = Vec::new();
    for (name, url) in &targets {
        let mut traces = Vec::with_capacity(n);
        for _ in 0..n {
            match trace(&client, url).await {
                Ok(t) => traces.push(t),
                Err(e) => {
                    eprintln!("{name}: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        results.push((name.clone(), traces));
    }
    let base = &results[0].1;
    let base_first = pct(
        base.iter().filter_map(Trace::first_text).map(ms).collect(),
        0.5,
    );
    // The baseline's median delivery curve: for each text length it reached, the median time.
    let lengths: Vec<usize> = base
        .first()
        .map(|t| t.arrivals.iter().map(|a| a.1).collect())
        .unwrap_or_default();
    let base_curve: Vec<f64> = lengths
        .iter()
        .map(|&l| {
            pct(
                base.iter().filter_map(|t| t.time_of(l)).map(ms).collect(),
                0.5,
            )
        })
        .collect();
    println!("| target | first text p50 | p99 | added p50 | added p99 | chunk lag p50 | chunk lag p99 | whole answer p50 | events with text |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, traces) in &results {
        let first: Vec<f64> = traces
            .iter()
            .filter_map(Trace::first_text)
            .map(ms)
            .collect();
        let added: Vec<f64> = first.iter().map(|f| f - base_first).collect();
        let mut lag = Vec::new();
        for t in traces {
            for (l, b) in lengths.iter().zip(&base_curve) {
                if let Some(at) = t.time_of(*l) {
                    lag.push(ms(at) - b);
                }
            }
        }
        let done: Vec<f64> = traces.iter().map(|t| ms(t.done)).collect();
        let events: Vec<f64> = traces.iter().map(|t| t.arrivals.len() as f64).collect();
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms | {:.0} |",
            pct(first.clone(), 0.5),
            pct(first, 0.99),
            pct(added.clone(), 0.5),
            pct(added, 0.99),
            pct(lag.clone(), 0.5),
            pct(lag, 0.99),
            pct(done, 0.5),
            pct(events, 0.5),
        );
    }
    std::process::ExitCode::SUCCESS
}
