//! Console benchmark: server time of every console page on a large registry. Pushes VERSIONS
//! versions of one pack (4 at a time), deploys a share of them to dev, staging and prod, signs in
//! and times each page (21 loads, p50 and p99 of the time to the last byte on loopback). Run
//! after `palisade-events-bench` has filled the same control plane with decision events; through
//! `benches/load/console.sh`.
//!
//!   palisade-console-bench URL ADMIN_KEY [VERSIONS]
#![expect(
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "a benchmark client: it prints its report, reads the control plane's answers whole, and awaits every task it spawns"
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod stats;

use stats::percentile;

type Http = Client<HttpConnector, Full<Bytes>>;

fn pack(version: u64) -> String {
    format!(
        "pack:\n  name: bench\n  version: 1.0.{version}\n  enabled: true\n\
         policies:\n  chain: [audit-logger, pii-detector, budget-enforcer]\n\
         models:\n  gpt-4o-mini:\n    input_usd_per_mtok: 0.15\n    output_usd_per_mtok: 0.6\n\
         policy:\n  pii-detector:\n    action: {}\n    entities: [email, credit_card]\n\
         \x20 budget-enforcer:\n    limits:\n      - {{scope: environment, window: monthly, usd: {}}}\n\
         tests:\n  - name: clean\n    input: hello\n    expect: allow\n",
        if version.is_multiple_of(2) { "redact" } else { "block" },
        100 + version
    )
}

async fn send(
    http: &Http,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, Vec<(String, String)>, Bytes) {
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap_or_default();
    match http.request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, headers, body)
        }
        Err(e) => {
            eprintln!("{method} {url}: {e}");
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: palisade-console-bench URL ADMIN_KEY [VERSIONS]");
        std::process::exit(2);
    }
    let (url, admin) = (args[1].clone(), args[2].clone());
    let versions: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let bearer = format!("Bearer {admin}");

    // The registry: VERSIONS versions, 4 pushes at a time.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (http, url, bearer) = (http.clone(), url.clone(), bearer.clone());
        tasks.push(tokio::spawn(async move {
            let mut v = w;
            while v < versions {
                let body = serde_json::json!({ "yaml": pack(v), "note": "bench" }).to_string();
                let headers = [
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json"),
                ];
                let (status, _, b) =
                    send(&http, "POST", &format!("{url}/v1/packs"), &headers, body).await;
                if status >= 300 {
                    eprintln!("push 1.0.{v}: {status} {}", String::from_utf8_lossy(&b));
                    std::process::exit(1);
                }
                v += 4;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "RESULT phase=push versions={versions} per_s={:.0}",
        versions as f64 / secs
    );
    // Deploy history: every 50th version to dev, every 200th to staging and prod.
    for (env, every) in [("dev", 50), ("staging", 200), ("prod", 200)] {
        for v in (0..versions).step_by(every) {
            let body = serde_json::json!({ "pack": "bench", "version": format!("1.0.{v}"),
                "environment": env, "note": "bench" })
            .to_string();
            let headers = [
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ];
            let (status, _, b) =
                send(&http, "POST", &format!("{url}/v1/deploy"), &headers, body).await;
            if status >= 300 {
                eprintln!("deploy: {status} {}", String::from_utf8_lossy(&b));
                std::process::exit(1);
            }
        }
    }

    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, headers, _) = send(
        &http,
        "POST",
        &format!("{url}/sign-in"),
        &form,
        format!("key={admin}"),
    )
    .await;
    let cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .and_then(|(_, v)| v.split(';').next())
        .map(str::to_owned);
    let Some(cookie) = cookie.filter(|_| status == 303) else {
        eprintln!("sign-in failed: {status}");
        std::process::exit(1);
    };
    let last = versions.saturating_sub(1);
    let pages = [
        "/environments".to_owned(),
        "/packs".to_owned(),
        "/packs/bench".to_owned(),
        format!("/packs/bench/compare?from=1.0.0&to=1.0.{last}"),
        "/packs/bench/compare?from_env=staging&to_env=dev".to_owned(),
        format!("/packs/bench/edit?from=1.0.{last}"),
        format!("/packs/bench/deploy?version=1.0.{last}&environment=prod"),
        "/environments/prod/promote?pack=bench".to_owned(),
        "/gateways".to_owned(),
        "/events?environment=dev&since=1h".to_owned(),
        "/events?environment=dev&since=7d&outcome=escalated".to_owned(),
        "/escalations?state=open".to_owned(),
        "/history".to_owned(),
        "/keys".to_owned(),
    ];
    for page in &pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..21 {
            let t = Instant::now();
            let (status, _, body) = send(
                &http,
                "GET",
                &format!("{url}{page}"),
                &[("cookie", cookie.as_str())],
                String::new(),
            )
            .await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                eprintln!("{page}: {status} {}", String::from_utf8_lossy(&body));
                std::process::exit(1);
            }
            bytes = body.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "RESULT phase=page versions={versions} p50_ms={:.1} p99_ms={:.1} bytes={bytes} path={page}",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}
