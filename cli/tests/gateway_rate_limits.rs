//! Rate limits (`window: minute` limits of the `budget-enforcer`) on the real gateway binary:
//! exact on one replica under 1,000 concurrent requests, a token rate that counts each request's
//! reservation at admission, the headers clients back off by (OpenAI's and Anthropic's), a
//! queue that waits up to its bound, and three replicas on one `redis-server` held to the limit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_support::client::{self, chat, post, post_with_headers};
use gateway_support::mock::MockProvider;
use gateway_support::{pack, Dir, GatewayProcess};
use test_support::RedisServer;

/// Wait until the current minute has at least `room` seconds left, so a burst of requests is
/// counted in one rate-limit window.
async fn within_one_minute(room: u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let into = secs % 60.0;
    if into > 60.0 - room as f64 {
        tokio::time::sleep(Duration::from_secs_f64(60.0 - into + 0.2)).await;
    }
}

fn limits_pack(base_url: &str, limits: &str, extra: &str) -> String {
    pack(
        base_url,
        "1.0.0",
        "budget-enforcer",
        &format!("policy:\n  budget-enforcer:\n{extra}    limits:\n{limits}"),
    )
}

fn gateway(dir: &Dir, text: &str, extra: &[&str]) -> GatewayProcess {
    let p = dir.write("pack.yaml", text);
    let mut args = vec!["--max-connections-per-client", "0"];
    args.extend_from_slice(extra);
    GatewayProcess::start(&p, dir.path(), &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_of_k_admits_exactly_k_of_1000_concurrent_requests() {
    const N: usize = 1000;
    const K: u64 = 37;
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let limits = format!(
        "      - {{scope: environment, window: minute, requests: {K}, on_exhausted: block}}\n"
    );
    let gw = gateway(&dir, &limits_pack(&mock.base_url(), &limits, ""), &[]);
    let url = gw.api("/v1/chat/completions");
    let body = chat("gpt-4o-mini", "hi", false);
    within_one_minute(15).await;
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            client::spawn(async move { post(&client::client(), &url, &body, None).await })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => admitted += 1,
            429 => {
                assert_eq!(r.error_code(), "rate_limited", "{}", r.text());
                let retry: u64 = r.header("retry-after").parse().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
                assert_eq!(r.header("x-ratelimit-limit-requests"), K.to_string());
                assert_eq!(r.header("x-ratelimit-remaining-requests"), "0");
                assert_eq!(r.header("x-ratelimit-reset-requests"), format!("{retry}s"));
                // SDKs back off and retry a rate limit (unlike a budget).
                assert!(r.headers.get("x-should-retry").is_none());
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert_eq!(admitted, K);
    assert_eq!(mock.api_calls(), K);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rate_counts_each_reservation_at_admission_with_anthropic_headers() {
    const N: usize = 30;
    const K: u64 = 4;
    let mock = MockProvider::start().await;
    // Admitted requests are still in flight when the last one asks: nothing has settled.
    mock.set(|b| b.head_delay = Duration::from_millis(1500))
        .await;
    let dir = Dir::new();
    let base = mock.base_url();
    let body = serde_json::json!({"model": "claude-test", "max_tokens": 100,
                                  "messages": [{"role": "user", "content": "How do I reset my password?"}]});
    let per = (body.to_string().len() as u64).div_ceil(4) + 100;
    let limit = K * per + per - 1;
    let text = format!(
        "pack:
  name: test
  version: 1.0.0
  enabled: true
policies:
  chain: [budget-enforcer]
providers:
  claude:
    kind: anthropic
    base_url: {base}
models:
  claude-test: {{}}
policy:
  budget-enforcer:
    limits:
      - {{scope: model:claude-test, window: minute, tokens: {limit}, on_exhausted: block}}
"
    );
    let gw = gateway(&dir, &text, &[]);
    let url = gw.api("/v1/messages");
    within_one_minute(10).await;
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            client::spawn(
                async move { post_with_headers(&client::client(), &url, &body, &[]).await },
            )
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => admitted += 1,
            429 => {
                assert_eq!(
                    r.json()["error"]["type"],
                    "rate_limit_error",
                    "{}",
                    r.text()
                );
                assert_eq!(r.json()["error"]["code"], "rate_limited");
                assert_eq!(
                    r.header("anthropic-ratelimit-tokens-limit"),
                    limit.to_string()
                );
                assert_eq!(r.header("anthropic-ratelimit-tokens-remaining"), "0");
                assert!(r.header("anthropic-ratelimit-tokens-reset").ends_with('Z'));
                assert!(!r.header("retry-after").is_empty());
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert_eq!(admitted, K, "each in-flight request holds its reservation");
    // A request that alone asks for more than the limit can never pass: SDKs must not retry.
    let mut huge = body.clone();
    huge["max_tokens"] = (limit + 1).into();
    let r = post_with_headers(&client::client(), &url, &huge, &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-should-retry"), "false");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alone"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_waits_for_the_next_minute_within_its_bound_and_is_refused_beyond_it() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let limits = "      - {scope: environment, window: minute, requests: 1, on_exhausted: queue}\n";
    let gw = gateway(
        &dir,
        &limits_pack(&mock.base_url(), limits, "    max_queue_ms: 8000\n"),
        &[],
    );
    let url = gw.api("/v1/chat/completions");
    let body = chat("gpt-4o-mini", "hi", false);
    // About four seconds before a minute ends: the first request takes the minute's one slot,
    // the second waits for the next minute and is admitted there.
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let to_end = 60.0 - secs % 60.0;
    tokio::time::sleep(Duration::from_secs_f64((to_end - 4.0).rem_euclid(60.0))).await;
    let first = post(&client::client(), &url, &body, None).await;
    let asked = Instant::now();
    let queued = post(&client::client(), &url, &body, None).await;
    let waited = asked.elapsed();
    assert_eq!(
        (first.status.as_u16(), queued.status.as_u16()),
        (200, 200),
        "{}",
        queued.text()
    );
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(8),
        "waited {waited:?}"
    );
    // The new minute's slot is taken and its end is further than the queue's bound: the
    // refusal is at once, not after a pointless wait.
    let asked = Instant::now();
    let refused = post(&client::client(), &url, &body, None).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.error_code(), "rate_limited");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(mock.api_calls(), 2);
}

fn start_replicas(n: usize, pack: &Path, dir: &Dir, redis_url: &str) -> Vec<GatewayProcess> {
    (0..n)
        .map(|i| {
            let own = dir.path().join(format!("gw{i}"));
            std::fs::create_dir_all(&own).unwrap();
            GatewayProcess::start(
                pack,
                &own,
                &["--redis", redis_url, "--max-connections-per-client", "0"],
            )
        })
        .collect()
}

/// Three replicas on one Redis: a per-minute request limit holds across them exactly (each
/// admission is one atomic reservation in Redis; with `preborrow_fraction` the stated bound is
/// `limit + replicas × slice`, as for budgets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_redis_admit_exactly_the_rate_limit() {
    const N: usize = 300;
    const K: u64 = 23;
    let redis = RedisServer::start();
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let limits = format!(
        "      - {{scope: environment, window: minute, requests: {K}, on_exhausted: block}}\n"
    );
    let p = dir.write(
        "pack.yaml",
        &limits_pack(&mock.base_url(), &limits, "    store: redis\n"),
    );
    let gateways = start_replicas(3, &p, &dir, &redis.url());
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| g.api("/v1/chat/completions"))
        .collect();
    let body = chat("gpt-4o-mini", "hi", false);
    within_one_minute(15).await;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (url, body) = (urls[i % 3].clone(), body.clone());
            client::spawn(async move { post(&client::client(), &url, &body, None).await })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => admitted += 1,
            429 => assert_eq!(r.error_code(), "rate_limited", "{}", r.text()),
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert_eq!(admitted, K);
    assert_eq!(mock.api_calls(), K);
    drop(gateways);
}
