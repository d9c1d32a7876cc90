//! Reserve + settle on the in-memory budget store: one thread, and several threads on the same
//! and on distinct scopes. Target: ≤ 5 µs per request. Numbers in `benches/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gateway::budget::{BudgetEnforcer, BudgetMetrics, BudgetRequest, BudgetStore, ManualClock};
use policy_engine::pack::{BudgetEnforcerConfig, BudgetLimit, BudgetWindow, ExhaustedAction};
use policy_engine::ModelRoute;

const THREADS: usize = 4;

/// The memory store never suspends, so one poll completes the future: no runtime in the way.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the in-memory store never waits"),
    }
}

fn limit(scope: &str, window: BudgetWindow, usd: Option<f64>, tokens: Option<u64>) -> BudgetLimit {
    BudgetLimit {
        scope: scope.parse().unwrap(),
        window,
        usd,
        tokens,
        requests: None,
        on_exhausted: ExhaustedAction::Block,
        degrade_to: None,
    }
}

/// The support pack's shape: an environment USD limit and a team token limit, plus one USD
/// limit per key `k0..k{THREADS}` so distinct-scope threads each have their own counter.
fn enforcer() -> BudgetEnforcer {
    let mut limits = vec![
        limit("environment", BudgetWindow::Monthly, Some(1e9), None),
        limit(
            "team:support",
            BudgetWindow::Daily,
            None,
            Some(u64::MAX / 4),
        ),
    ];
    for k in 0..THREADS {
        limits.push(limit(
            &format!("key:k{k}"),
            BudgetWindow::Daily,
            Some(1e9),
            None,
        ));
    }
    let cfg = BudgetEnforcerConfig {
        limits,
        ..BudgetEnforcerConfig::default()
    };
    let route = ModelRoute {
        name: "gpt-4o".into(),
        provider: "openai".into(),
        upstream_model: "gpt-4o".into(),
        input_usd_per_mtok: Some(2.5),
        output_usd_per_mtok: Some(10.0),
        deployments: Vec::new().into(),
        fallbacks: Vec::new().into(),
    };
    let models: BTreeMap<_, _> = [("gpt-4o".to_owned(), route)].into_iter().collect();
    BudgetEnforcer::new(
        "support",
        Some("prod"),
        &cfg,
        &models,
        BudgetStore::memory(),
        Arc::new(ManualClock::new(1_750_000_000)),
        BudgetMetrics::new().unwrap(),
    )
}

fn request(key: &str) -> BudgetRequest<'_> {
    BudgetRequest {
        key_id: key,
        team: Some("support"),
        model: "gpt-4o",
        est_input_tokens: 500,
        max_output_tokens: Some(256),
    }
}

fn one(e: &BudgetEnforcer, key: &str) {
    let r = ready(e.reserve(&request(key))).unwrap();
    ready(e.settle(r, 480, 200));
}

fn threaded(e: &BudgetEnforcer, iters: u64, distinct: bool) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let key = if distinct {
                format!("k{t}")
            } else {
                "k0".to_owned()
            };
            s.spawn(move || {
                for _ in 0..iters {
                    one(e, &key);
                }
            });
        }
    });
    // Wall time for `iters` requests on each thread: the latency one request sees.
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let e = enforcer();
    let mut g = c.benchmark_group("budget_reserve_settle");
    g.bench_function("single_thread", |b| b.iter(|| one(&e, "k0")));
    g.bench_function(BenchmarkId::new("threads_same_scope", THREADS), |b| {
        b.iter_custom(|iters| threaded(&e, iters, false));
    });
    g.bench_function(BenchmarkId::new("threads_distinct_scopes", THREADS), |b| {
        b.iter_custom(|iters| threaded(&e, iters, true));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
