//! Three real `palisade gateway` processes sharing one Redis for a `store: redis` budget: the
//! cap holds across replicas exactly without pre-borrowing (overshoot bound `replicas × slice`
//! with slice 0), and within `limit + replicas × slice` with it; a dead Redis turns a
//! `fail_closed` pack into 503 `policy_unavailable`, and a Redis brought back on the same port is
//! picked up without restarting the gateways; clients that give up while Redis is busy leave
//! nothing reserved.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::path::Path;
use std::time::Duration;

use gateway_support::client::{self, chat, post, wait_until};
use gateway_support::mock::MockProvider;
use gateway_support::{pack, Dir, GatewayProcess};
use test_support::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateway_processes_sharing_one_redis_never_exceed_the_limit() {
    const N: usize = 30;
    const K: u64 = 5;
    let mut redis = RedisServer::start();
    let mock = MockProvider::start().await;
    // Every admitted request is still in flight when the last one reserves, so settling (which
    // gives back the unused part of the estimate) cannot open room mid-test.
    mock.set(|b| b.head_delay = Duration::from_millis(2000))
        .await;
    let mut body = chat("gpt-4o-mini", "How do I reset my password?", false);
    body["max_tokens"] = 50.into();
    let per = (body.to_string().len() as u64).div_ceil(4) + 50;
    let limit = K * per + per - 1;
    let policy = format!(
        "policy:\n  budget-enforcer:\n    store: redis\n    on_store_unavailable: fail_closed\n    limits:\n      - {{scope: environment, window: daily, tokens: {limit}, on_exhausted: block}}\n"
    );
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "budget-enforcer", &policy),
    );
    let redis_url = redis.url();
    let gateways: Vec<GatewayProcess> = (0..3)
        .map(|i| {
            // One directory each: the helper names its log file by the test's pid.
            let own = dir.path().join(format!("gw{i}"));
            std::fs::create_dir_all(&own).unwrap();
            let state = own.join("state");
            GatewayProcess::start(
                &p,
                &own,
                &[
                    "--redis",
                    &redis_url,
                    "--state-dir",
                    state.to_str().unwrap(),
                ],
            )
        })
        .collect();
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| g.api("/v1/chat/completions"))
        .collect();

    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (url, body) = (urls[i % urls.len()].clone(), body.clone());
            gateway_support::client::spawn(async move {
                post(&client::client(), &url, &body, None).await
            })
        })
        .collect();
    let mut admitted = 0;
    let mut per_gateway = [0u64; 3];
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => {
                admitted += 1;
                per_gateway[i % 3] += 1;
            }
            429 => assert_eq!(r.error_code(), "budget_exceeded", "{}", r.text()),
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert_eq!(admitted, K, "admitted per gateway: {per_gateway:?}");
    assert_eq!(mock.api_calls(), K);

    // Redis goes away: the pack fails closed on every replica.
    mock.set(|b| b.head_delay = Duration::ZERO).await;
    let port = redis.port();
    redis.kill();
    // The same request as above: one without `max_tokens` reserves `default_max_tokens` (1024),
    // more than this whole limit.
    let probe = body;
    for url in &urls {
        let r = post(&client::client(), url, &probe, None).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (503, "policy_unavailable"),
            "{}",
            r.text()
        );
    }

    // Back on the same port (empty): every gateway reconnects by itself.
    let _redis = RedisServer::start_on(port).expect("the redis port was taken meanwhile");
    for url in &urls {
        wait_until(
            Duration::from_secs(20),
            "the gateway admits again after Redis returned",
            || {
                let (url, probe) = (url.clone(), probe.clone());
                async move {
                    post(&client::client(), &url, &probe, None)
                        .await
                        .status
                        .as_u16()
                        == 200
                }
            },
        )
        .await;
    }
    drop(gateways);
}

fn start_gateways(n: usize, pack: &Path, dir: &Dir, redis_url: &str) -> Vec<GatewayProcess> {
    (0..n)
        .map(|i| {
            // One directory each: the helper names its log file by the test's pid.
            let own = dir.path().join(format!("gw{i}"));
            std::fs::create_dir_all(&own).unwrap();
            let state = own.join("state");
            GatewayProcess::start(
                pack,
                &own,
                &["--redis", redis_url, "--state-dir", state.to_str().unwrap()],
            )
        })
        .collect()
}

/// The value of the first `name` sample on a gateway's `/metrics` (0 when absent).
async fn metric(g: &GatewayProcess, name: &str) -> f64 {
    let text = client::get(&client::client(), &g.api("/metrics"))
        .await
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn tokens_counter_key() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "palisade:budget:{{test/dev}}:environment:daily:tokens:{}",
        now / 86_400 * 86_400
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateway_processes_preborrowing_stay_within_limit_plus_replicas_times_slice() {
    const REPLICAS: u64 = 3;
    const K: u64 = 50;
    const N: usize = 150;
    let redis = RedisServer::start();
    let mock = MockProvider::start().await;
    // Admitted requests stay in flight, so admitted spend = admitted × estimate.
    mock.set(|b| b.head_delay = Duration::from_millis(4000))
        .await;
    let mut body = chat("gpt-4o-mini", "How do I reset my password?", false);
    body["max_tokens"] = 50.into();
    let per = (body.to_string().len() as u64).div_ceil(4) + 50;
    let limit = K * per + per - 1;
    let slice = limit / 10;
    let policy = format!(
        "policy:\n  budget-enforcer:\n    store: redis\n    preborrow_fraction: 0.1\n    limits:\n      - {{scope: environment, window: daily, tokens: {limit}, on_exhausted: block}}\n"
    );
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "budget-enforcer", &policy),
    );
    let gateways = start_gateways(REPLICAS as usize, &p, &dir, &redis.url());
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| g.api("/v1/chat/completions"))
        .collect();
    let fire = |range: std::ops::Range<usize>| -> Vec<_> {
        range
            .map(|i| {
                let (url, body) = (urls[i % urls.len()].clone(), body.clone());
                gateway_support::client::spawn(async move {
                    post(&client::client(), &url, &body, None).await
                })
            })
            .collect()
    };
    // One request per gateway first: its round trip also leases each replica a slice.
    let mut tasks = fire(0..REPLICAS as usize);
    for g in &gateways {
        wait_until(Duration::from_secs(10), "the first reservation", || async {
            metric(g, "palisade_budget_decisions_total{action=\"pass\"}").await >= 1.0
        })
        .await;
    }
    tasks.extend(fire(REPLICAS as usize..N));
    let mut admitted = 0u64;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => admitted += 1,
            429 => assert_eq!(r.error_code(), "budget_exceeded", "{}", r.text()),
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    let mut local = 0.0;
    for g in &gateways {
        local += metric(g, "palisade_budget_preborrowed_total").await;
    }
    let spend = admitted * per;
    println!(
        "admitted {admitted} × {per} = {spend} tokens against a limit of {limit} (slice {slice}, \
         bound {}): overshoot {}, {local} reservations from leases",
        limit + REPLICAS * slice,
        spend as i64 - limit as i64
    );
    assert!(
        spend <= limit + REPLICAS * slice,
        "overshoot past the bound"
    );
    // Budget stranded in other replicas' leases may refuse early, by about as much.
    assert!(
        spend + REPLICAS * (slice + per) >= limit,
        "admitted only {admitted}"
    );
    assert!(local >= 1.0, "no reservation was served from a lease");
    assert_eq!(mock.api_calls(), admitted);
}

/// Regression: a client that went away while its reserve script waited in a busy Redis left the
/// reservation charged (the script still ran; nobody released it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_give_up_while_redis_is_busy_leave_nothing_reserved() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await;
    let body = chat("gpt-4o-mini", "How do I reset my password?", false);
    let policy = "policy:\n  budget-enforcer:\n    store: redis\n    limits:\n      - {scope: environment, window: daily, tokens: 1000000, on_exhausted: block}\n";
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "budget-enforcer", policy),
    );
    let gateways = start_gateways(1, &p, &dir, &redis.url());
    let url = gateways[0].api("/v1/chat/completions");
    // Connected, script loaded, one request settled.
    wait_until(Duration::from_secs(20), "a first request", || {
        let (url, body) = (url.clone(), body.clone());
        async move { post(&client::client(), &url, &body, None).await.status == 200 }
    })
    .await;
    // The settle runs after the response, and the tokens metric counts it before its script
    // reaches Redis: wait until the counter holds the settled tokens, or `spent` could be the
    // estimate the settle is about to correct.
    let key = tokens_counter_key();
    wait_until(
        Duration::from_secs(20),
        "the first request settled in redis",
        || async {
            let text = client::get(&client::client(), &gateways[0].api("/metrics"))
                .await
                .text();
            let settled: f64 = text
                .lines()
                .filter(|l| l.starts_with("palisade_budget_tokens_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            #[expect(clippy::cast_precision_loss, reason = "small token counts")]
            let in_redis = redis.get(&key) as f64;
            settled > 0.0 && in_redis == settled
        },
    )
    .await;
    let spent = redis.get(&key);
    assert!(spent > 0);
    let drops = metric(&gateways[0], "palisade_budget_released_by_drop_total").await;

    let stall = redis.stall(Duration::from_millis(2000));
    let gave_up: Vec<_> = (0..10)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            gateway_support::client::spawn(async move {
                let c = client::client();
                tokio::time::timeout(Duration::from_millis(200), post(&c, &url, &body, None))
                    .await
                    .is_err()
            })
        })
        .collect();
    for t in gave_up {
        assert!(t.await.unwrap(), "answered while redis was busy");
    }
    drop(stall);
    // Redis runs the queued scripts; every one of those reservations comes back.
    wait_until(
        Duration::from_secs(20),
        "the cancelled reservations given back",
        || async {
            metric(&gateways[0], "palisade_budget_released_by_drop_total").await >= drops + 10.0
                && redis.get(&key) == spent
        },
    )
    .await;
    assert_eq!(
        mock.api_calls(),
        1,
        "no cancelled request reached the provider"
    );
}

/// A settle still waiting on a busy Redis when the gateway is told to stop lands: the counter
/// holds the request's real usage, not the estimate it reserved. (The gateway awaits its
/// tracked settle tasks at drain; Redis also runs a command it already received, so this shows
/// the outcome rather than which of the two delivered it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_in_flight_at_shutdown_is_finished_before_exit() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await;
    let body = chat("gpt-4o-mini", "How do I reset my password?", false);
    let policy = "policy:\n  budget-enforcer:\n    store: redis\n    limits:\n      - {scope: environment, window: daily, tokens: 1000000, on_exhausted: block}\n";
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "budget-enforcer", policy),
    );
    let mut gateways = start_gateways(1, &p, &dir, &redis.url());
    let url = gateways[0].api("/v1/chat/completions");
    let key = tokens_counter_key();
    let first = post(&client::client(), &url, &body, None).await;
    assert_eq!(first.status, 200);
    wait_until(
        Duration::from_secs(20),
        "the first request settled",
        || async {
            let text = client::get(&client::client(), &gateways[0].api("/metrics"))
                .await
                .text();
            let settled: f64 = text
                .lines()
                .filter(|l| l.starts_with("palisade_budget_tokens_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            #[expect(clippy::cast_precision_loss, reason = "small token counts")]
            let in_redis = redis.get(&key) as f64;
            settled > 0.0 && in_redis == settled
        },
    )
    .await;
    let one = redis.get(&key);

    // Reserved while Redis is free; answered while it is busy, so the settle waits on Redis.
    mock.set(|b| b.head_delay = Duration::from_millis(600))
        .await;
    let second = {
        let (url, body) = (url.clone(), body.clone());
        gateway_support::client::spawn(async move {
            post(&client::client(), &url, &body, None).await.status
        })
    };
    // Stall only once the reservation is in Redis (a loaded machine may take longer than the
    // answer's delay to get there; a reserve caught by the stall would be another test).
    wait_until(
        Duration::from_secs(10),
        "the second request reserved",
        || async { redis.get(&key) > one },
    )
    .await;
    let stall = redis.stall(Duration::from_millis(2500));
    assert_eq!(second.await.unwrap(), 200);
    gateways[0].signal("TERM");
    assert!(gateways[0]
        .wait_exit(Duration::from_secs(20))
        .await
        .success());
    drop(stall);
    assert_eq!(
        redis.get(&key),
        2 * one,
        "the second request's settle corrected its reservation to the same usage as the first"
    );
}
