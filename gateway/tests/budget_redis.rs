//! Budgets across replicas, against a real `redis-server` on a free loopback port.
//!
//! Invariants: three replica *processes* sharing one Redis never admit more than the limit plus
//! the stated overshoot bound (`replicas × slice`, with slice 0 in this store: exactly the
//! limit); a dead Redis turns into `fail_open` or `fail_closed` as the pack says, counted; the
//! enforcer recovers by itself when Redis comes back on the same port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "tests fail loudly"
)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::budget::{
    BudgetDecision, BudgetEnforcer, BudgetMetrics, BudgetRequest, BudgetStore, DecisionLabel,
    RedisStore, SystemClock,
};
use policy_engine::pack::{
    BudgetEnforcerConfig, BudgetLimit, BudgetWindow, ExhaustedAction, StoreKind, StoreUnavailable,
};
use policy_engine::ModelRoute;

use test_support::{redis_ping as ping, RedisServer};

fn models() -> BTreeMap<String, ModelRoute> {
    let r = ModelRoute {
        name: "gpt-4o".into(),
        provider: "openai".into(),
        upstream_model: "gpt-4o".into(),
        input_usd_per_mtok: Some(2.5),
        output_usd_per_mtok: Some(10.0),
    };
    [("gpt-4o".to_owned(), r)].into_iter().collect()
}

fn enforcer(
    url: &str,
    usd: f64,
    on_unavailable: StoreUnavailable,
    op_timeout: Duration,
) -> BudgetEnforcer {
    let cfg = BudgetEnforcerConfig {
        store: StoreKind::Redis,
        on_store_unavailable: on_unavailable,
        limits: vec![BudgetLimit {
            scope: "environment".parse().unwrap(),
            window: BudgetWindow::Monthly,
            usd: Some(usd),
            tokens: None,
            on_exhausted: ExhaustedAction::Block,
            degrade_to: None,
        }],
        ..BudgetEnforcerConfig::default()
    };
    let store = RedisStore::open(url, op_timeout).unwrap();
    BudgetEnforcer::new(
        "support",
        Some("prod"),
        &cfg,
        &models(),
        BudgetStore::Redis(Arc::new(store)),
        Arc::new(SystemClock),
        BudgetMetrics::new().unwrap(),
    )
}

/// $0.0125: 1000 input + 1000 output tokens of gpt-4o.
const REQ: BudgetRequest<'static> = BudgetRequest {
    key_id: "k1",
    team: None,
    model: "gpt-4o",
    est_input_tokens: 1000,
    max_output_tokens: Some(1000),
};

/// Operation timeout of the failure test: how long a dead Redis may delay a decision.
const FAST: Duration = Duration::from_millis(300);

const REPLICA_URL: &str = "PALISADE_TEST_REPLICA_REDIS_URL";
const START_AT_MS: &str = "PALISADE_TEST_REPLICA_START_AT_MS";

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Not a test on its own: the body of one replica process, run when the parent sets
/// `REPLICA_URL`. Fires 600 concurrent requests, settles each at its estimate, prints the count.
#[test]
fn replica_process() {
    let Ok(url) = std::env::var(REPLICA_URL) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start_at: u128 = std::env::var(START_AT_MS).unwrap().parse().unwrap();
    let admitted = rt.block_on(async {
        let e = // Generous: a loaded CI machine must not turn into a spurious fail_closed here.
        enforcer(&url, 5.0, StoreUnavailable::FailClosed, Duration::from_secs(10));
        // A start line shared by the three processes, so their bursts overlap.
        let wait = start_at.saturating_sub(unix_ms());
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        let tasks: Vec<_> = (0..600)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move {
                    match e.reserve(&REQ).await {
                        Ok(r) => {
                            e.settle(r, 1000, 1000).await;
                            1
                        }
                        Err(BudgetDecision::Block { .. }) => 0,
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        n
    });
    println!("ADMITTED={admitted}");
}

#[test]
fn three_replica_processes_never_exceed_the_limit() {
    let redis = RedisServer::start();
    let exe = std::env::current_exe().unwrap();
    let start_at = unix_ms() + 1500;
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "replica_process",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(REPLICA_URL, redis.url())
                .env(START_AT_MS, start_at.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let n: u64 = text
            .lines()
            .find_map(|l| l.split("ADMITTED=").nth(1))
            .unwrap_or_else(|| panic!("replica printed no count: {text}"))
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        println!("replica admitted {n}");
        total += n;
    }
    // $5.00 / $0.0125 = 400 requests; overshoot bound replicas × slice = 3 × 0.
    assert_eq!(
        total, 400,
        "1,800 requests from 3 processes against a budget of 400"
    );
    let start = month_start();
    let key = format!("palisade:budget:{{support/prod}}:environment:monthly:usd:{start}");
    assert_eq!(
        redis.get(&key),
        5_000_000,
        "exactly the limit, in micro-dollars"
    );
}

fn month_start() -> i64 {
    gateway::budget::WindowSpan::containing(
        BudgetWindow::Monthly,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
    .start
}

async fn reserve_until_ok(e: &BudgetEnforcer) -> gateway::budget::Reservation {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match e.reserve(&REQ).await {
            Ok(r) if r.enforced() => return r,
            other => {
                assert!(Instant::now() < deadline, "did not recover: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn dead_redis_fails_closed_or_open_and_recovery_is_automatic() {
    let redis = RedisServer::start();
    let port = redis.port();
    let closed = enforcer(&redis.url(), 100.0, StoreUnavailable::FailClosed, FAST);
    let open = enforcer(&redis.url(), 100.0, StoreUnavailable::FailOpen, FAST);
    // Polled: on a loaded machine the first connection may take longer than FAST.
    let r = reserve_until_ok(&closed).await;
    closed.settle(r, 1000, 1000).await;
    let r = reserve_until_ok(&open).await;
    assert!(r.enforced());
    open.release(r).await;

    drop(redis);
    assert_eq!(
        closed.reserve(&REQ).await.unwrap_err(),
        BudgetDecision::StoreUnavailable
    );
    assert!(closed.metrics().decisions(DecisionLabel::FailClosed) >= 1);
    let r = open.reserve(&REQ).await.unwrap();
    assert!(!r.enforced(), "passed without a check");
    assert!(open.metrics().decisions(DecisionLabel::FailOpen) >= 1);
    drop(r);

    // Same port, fresh (empty) server: both recover without being rebuilt.
    let redis = restart_on(port);
    let r = reserve_until_ok(&closed).await;
    closed.settle(r, 1000, 1000).await;
    let r = reserve_until_ok(&open).await;
    open.settle(r, 1000, 1000).await;
    let key = format!(
        "palisade:budget:{{support/prod}}:environment:monthly:usd:{}",
        month_start()
    );
    assert_eq!(redis.get(&key), 2 * 12_500);
}

fn restart_on(port: u16) -> RedisServer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = RedisServer::start_on(port) {
            return s;
        }
        assert!(Instant::now() < deadline, "port {port} did not free up");
    }
}

#[test]
fn server_guard_helpers_work() {
    let redis = RedisServer::start();
    assert!(ping(redis.port()));
    assert_eq!(redis.get("absent"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_streams_leak_no_reservation_in_redis() {
    let redis = RedisServer::start();
    let e = enforcer(
        &redis.url(),
        100.0,
        StoreUnavailable::FailClosed,
        Duration::from_secs(10),
    );
    let key = format!(
        "palisade:budget:{{support/prod}}:environment:monthly:usd:{}",
        month_start()
    );
    let (held_tx, mut held_rx) = tokio::sync::mpsc::channel(20);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (e, held_tx) = (e.clone(), held_tx.clone());
            tokio::spawn(async move {
                let _r = e.reserve(&REQ).await.unwrap();
                held_tx.send(()).await.unwrap();
                // A stream that never finishes; the client goes away (abort below).
                std::future::pending::<()>().await;
            })
        })
        .collect();
    for _ in 0..20 {
        held_rx.recv().await.unwrap();
    }
    assert_eq!(redis.get(&key), 20 * 12_500);
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.get(&key) != 0 {
        assert!(Instant::now() < deadline, "reservations leaked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(e.metrics().drop_releases(), 20);
}
