//! Budgets across replicas, against a real `redis-server` on a free loopback port.
//!
//! Invariants: three replica *processes* sharing one Redis never admit more than the limit plus
//! the stated overshoot bound (`replicas × slice`; with slice 0: exactly the limit); a replica
//! whose leases Redis dropped overshoots by at most its slice; a reservation whose caller went
//! away while the script was queued is given back; a dead Redis turns into `fail_open` or
//! `fail_closed` as the pack says, counted; the enforcer recovers by itself when Redis comes back
//! on the same port.
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
        deployments: Vec::new().into(),
        fallbacks: Vec::new().into(),
    };
    [("gpt-4o".to_owned(), r)].into_iter().collect()
}

fn enforcer(
    url: &str,
    usd: f64,
    on_unavailable: StoreUnavailable,
    op_timeout: Duration,
) -> BudgetEnforcer {
    let store = Arc::new(RedisStore::open(url, op_timeout).unwrap());
    borrowing(store, usd, on_unavailable, 0.0)
}

/// An enforcer over `store` that may pre-borrow `fraction` of its one limit.
fn borrowing(
    store: Arc<RedisStore>,
    usd: f64,
    on_unavailable: StoreUnavailable,
    fraction: f64,
) -> BudgetEnforcer {
    let cfg = BudgetEnforcerConfig {
        store: StoreKind::Redis,
        on_store_unavailable: on_unavailable,
        preborrow_fraction: fraction,
        limits: vec![BudgetLimit {
            scope: "environment".parse().unwrap(),
            window: BudgetWindow::Monthly,
            usd: Some(usd),
            tokens: None,
            requests: None,
            on_exhausted: ExhaustedAction::Block,
            degrade_to: None,
        }],
        ..BudgetEnforcerConfig::default()
    };
    BudgetEnforcer::new(
        "support",
        Some("prod"),
        &cfg,
        &models(),
        BudgetStore::Redis(store),
        Arc::new(SystemClock),
        BudgetMetrics::new().unwrap(),
    )
}

fn counter_key() -> String {
    format!(
        "palisade:budget:{{support/prod}}:environment:monthly:usd:{}",
        month_start()
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
const PREBORROW: &str = "PALISADE_TEST_REPLICA_PREBORROW";

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Not a test on its own: the body of one replica process, run when the parent sets
/// `REPLICA_URL`. Fires 600 concurrent requests (with `PREBORROW` > 0: 16 workers in a loop),
/// settles each at its estimate, gives its pre-borrowed slices back, prints the counts.
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
    let fraction: f64 = std::env::var(PREBORROW).map_or(0.0, |f| f.parse().unwrap());
    let (admitted, local) = rt.block_on(async {
        // Generous: a loaded CI machine must not turn into a spurious fail_closed here.
        let store = Arc::new(RedisStore::open(&url, Duration::from_secs(10)).unwrap());
        let e = borrowing(
            Arc::clone(&store),
            5.0,
            StoreUnavailable::FailClosed,
            fraction,
        );
        // A start line shared by the three processes, so their bursts overlap.
        let wait = start_at.saturating_sub(unix_ms());
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        // Without borrowing: one burst of 600 at once. With it: 16 workers per replica, each
        // reserving and settling in a loop until refused — sustained load, so leases granted
        // along a round trip get used.
        let (workers, rounds) = if fraction > 0.0 { (16, 100) } else { (600, 1) };
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let e = e.clone();
                spawn(async move {
                    let mut n = 0;
                    for _ in 0..rounds {
                        match e.reserve(&REQ).await {
                            Ok(r) => {
                                e.settle(r, 1000, 1000).await;
                                n += 1;
                            }
                            Err(BudgetDecision::Block { .. }) => break,
                            Err(other) => panic!("unexpected {other:?}"),
                        }
                    }
                    n
                })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        store.close_leases().await;
        (n, e.metrics().preborrowed_reservations())
    });
    println!("ADMITTED={admitted} LOCAL={local}");
}

/// Run three replica processes at once against `redis`; what each admitted and served locally.
fn run_replicas(redis: &RedisServer, preborrow: f64) -> Vec<(u64, u64)> {
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
                .env(PREBORROW, preborrow.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |name: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.split(name).nth(1))
                    .unwrap_or_else(|| panic!("replica printed no {name}: {text}"))
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            let counts = (field("ADMITTED="), field("LOCAL="));
            println!(
                "replica admitted {} ({} from its lease)",
                counts.0, counts.1
            );
            counts
        })
        .collect()
}

#[test]
fn three_replica_processes_never_exceed_the_limit() {
    let redis = RedisServer::start();
    let total: u64 = run_replicas(&redis, 0.0).iter().map(|c| c.0).sum();
    // $5.00 / $0.0125 = 400 requests; overshoot bound replicas × slice = 3 × 0.
    assert_eq!(
        total, 400,
        "1,800 requests from 3 processes against a budget of 400"
    );
    assert_eq!(
        redis.get(&counter_key()),
        5_000_000,
        "exactly the limit, in micro-dollars"
    );
}

#[test]
fn three_replica_processes_preborrowing_stay_within_limit_plus_replicas_times_slice() {
    let redis = RedisServer::start();
    let counts = run_replicas(&redis, 0.1);
    let total: u64 = counts.iter().map(|c| c.0).sum();
    let local: u64 = counts.iter().map(|c| c.1).sum();
    // Slice: 10 % of $5.00 = $0.50 = 40 requests. Bound: 400 + 3 × 40. Budget stranded in other
    // replicas' unused leases can refuse requests early, by at most the same amount.
    println!("admitted {total} of 400 (overshoot bound 120), {local} from leases");
    assert!(total <= 400 + 3 * 40, "admitted {total}");
    assert!(total >= 400 - 3 * 40, "admitted {total}");
    assert!(local > 0, "no reservation was served from a lease");
    // Every reservation settled and every lease given back: the counter is exactly the spend.
    assert_eq!(redis.get(&counter_key()), total as i64 * 12_500);
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
    assert_eq!(redis.get(&counter_key()), 2 * 12_500);
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
    let key = counter_key();
    let (held_tx, mut held_rx) = tokio::sync::mpsc::channel(20);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (e, held_tx) = (e.clone(), held_tx.clone());
            spawn(async move {
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

/// Regression: a reserve future dropped while its script waited in Redis used to leave that
/// reservation charged until the window's key expired (nobody knew the script ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserves_cancelled_while_the_script_is_queued_leak_no_reservation() {
    let redis = RedisServer::start();
    let e = enforcer(
        &redis.url(),
        100.0,
        StoreUnavailable::FailClosed,
        Duration::from_secs(10),
    );
    // Connect and load the script first, so the requests below reach Redis at once.
    let r = reserve_until_ok(&e).await;
    e.release(r).await;
    assert_eq!(redis.get(&counter_key()), 0);

    let stall = redis.stall(Duration::from_millis(1500));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let e = e.clone();
            spawn(async move {
                let _r = e.reserve(&REQ).await;
                panic!("the script cannot have answered: redis is busy");
            })
        })
        .collect();
    // The scripts are on their way (each reserve has been polled and sent its EVALSHA).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for t in tasks {
        t.abort();
        assert!(t.await.unwrap_err().is_cancelled());
    }
    // Redis wakes up and runs all 20 scripts; their reservations must come back.
    let deadline = Instant::now() + Duration::from_secs(15);
    while e.metrics().drop_releases() < 20 {
        assert!(
            Instant::now() < deadline,
            "only {} given back",
            e.metrics().drop_releases()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while redis.get(&counter_key()) != 0 {
        assert!(Instant::now() < deadline, "reservations leaked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stall);
}

/// Regression, same leak through the timeout: a reply later than `op_timeout` is still read and
/// the reservation given back, while the caller was told `fail_closed` on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_answered_after_the_timeout_is_given_back() {
    let redis = RedisServer::start();
    let e = enforcer(&redis.url(), 100.0, StoreUnavailable::FailClosed, FAST);
    let r = reserve_until_ok(&e).await;
    e.release(r).await;
    let stall = redis.stall(Duration::from_millis(700));
    let started = Instant::now();
    assert_eq!(
        e.reserve(&REQ).await.unwrap_err(),
        BudgetDecision::StoreUnavailable
    );
    assert!(started.elapsed() < Duration::from_millis(600));
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.metrics().drop_releases() < 1 || redis.get(&counter_key()) != 0 {
        assert!(Instant::now() < deadline, "the late reservation leaked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stall);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preborrowed_reservations_skip_the_round_trip_and_go_back_at_shutdown() {
    let redis = RedisServer::start();
    let store = Arc::new(RedisStore::open(&redis.url(), Duration::from_secs(10)).unwrap());
    // $5.00, slice 10 % = $0.50 = 40 requests of $0.0125.
    let e = borrowing(Arc::clone(&store), 5.0, StoreUnavailable::FailClosed, 0.1);
    let first = e.reserve(&REQ).await.unwrap();
    assert_eq!(
        redis.get(&counter_key()),
        12_500 + 500_000,
        "request + slice"
    );
    assert_eq!(store.leased_balance(), 500_000);
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(e.reserve(&REQ).await.unwrap());
    }
    assert_eq!(e.metrics().preborrowed_reservations(), 40);
    assert_eq!(store.leased_balance(), 0);
    assert_eq!(redis.get(&counter_key()), 12_500 + 500_000, "no round trip");
    // Released: back into the lease, no round trip.
    for r in held.drain(..20) {
        e.release(r).await;
    }
    assert_eq!(store.leased_balance(), 20 * 12_500);
    // Settled below the estimate: Redis learns the actual usage ($0.00625 each).
    for r in held.drain(..) {
        e.settle(r, 500, 500).await;
    }
    e.settle(first, 500, 500).await;
    // Settles of leased reservations go to Redis in batches.
    store.flush_settles().await;
    assert_eq!(
        redis.get(&counter_key()),
        21 * 6_250 + 20 * 12_500,
        "spend + the lease's unused balance"
    );
    store.close_leases().await;
    assert_eq!(redis.get(&counter_key()), 21 * 6_250, "exactly the spend");
}

/// The overshoot formula's worst case, made to happen: a replica stalls with a whole slice in
/// flight, Redis drops its lease, another replica fills the budget, then the stalled requests
/// settle. The limit is passed by that slice and no more.
#[test]
fn a_stalled_replica_overshoots_by_at_most_its_slice() {
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(1000);
    let open = |url: &str| {
        Arc::new(
            RedisStore::open(url, Duration::from_secs(10))
                .unwrap()
                .with_lease_ttl(ttl),
        )
    };
    // Replica A runs on its own runtime; not driving it is a stall (its sweeper stops too).
    let rt_a = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store_a = rt_a.block_on(async { open(&redis.url()) });
    let a = borrowing(Arc::clone(&store_a), 5.0, StoreUnavailable::FailClosed, 0.1);
    let held_a: Vec<_> = rt_a.block_on(async {
        let mut v = Vec::new();
        for _ in 0..41 {
            v.push(a.reserve(&REQ).await.unwrap());
        }
        v
    });
    assert_eq!(
        a.metrics().preborrowed_reservations(),
        40,
        "one slice in flight"
    );
    assert_eq!(redis.get(&counter_key()), 41 * 12_500);

    let rt_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admitted_b = rt_b.block_on(async {
        // Past A's lease TTL: Redis drops it, with the 40 reservations it held.
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        let b = borrowing(open(&redis.url()), 5.0, StoreUnavailable::FailClosed, 0.1);
        let mut held = Vec::new();
        while let Ok(r) = b.reserve(&REQ).await {
            held.push(r);
        }
        let n = held.len() as i64;
        std::mem::forget(held);
        n
    });
    // B admitted up to the limit as Redis saw it: A's direct reservation + B's = $5.00.
    assert_eq!(12_500 + admitted_b * 12_500, 5_000_000);
    rt_a.block_on(async {
        for r in held_a {
            a.settle(r, 1000, 1000).await;
        }
        store_a.flush_settles().await;
    });
    let total = redis.get(&counter_key());
    let (limit, slice) = (5_000_000, 500_000);
    println!(
        "counter {total}: limit {limit} + {} (bound: replicas × slice = 2 × {slice})",
        total - limit
    );
    assert_eq!(
        total,
        limit + slice,
        "A's lease held exactly one slice in flight"
    );
    assert!(total <= limit + 2 * slice);
}

/// A test's own task (bare `tokio::spawn` is banned in the workspace, see `clippy.toml`).
#[expect(clippy::disallowed_methods, reason = "tests own their tasks")]
fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}
