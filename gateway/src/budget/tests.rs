//! Facade tests on the in-memory store, driven by a manual clock (no sleeping).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use policy_engine::pack::{
    BudgetEnforcerConfig, BudgetLimit, BudgetScope, BudgetWindow, ExhaustedAction,
};
use policy_engine::ModelRoute;

use super::window::days_from_civil;
use super::*;

/// 2025-06-30 12:00:00 UTC.
fn noon() -> i64 {
    days_from_civil(2025, 6, 30) * 86_400 + 12 * 3600
}

fn models() -> BTreeMap<String, ModelRoute> {
    let route = |name: &str, i: f64, o: f64| ModelRoute {
        name: name.into(),
        provider: "openai".into(),
        upstream_model: name.into(),
        input_usd_per_mtok: Some(i),
        output_usd_per_mtok: Some(o),
        deployments: Vec::new().into(),
        fallbacks: Vec::new().into(),
    };
    [
        ("gpt-4o".to_owned(), route("gpt-4o", 2.5, 10.0)),
        ("gpt-4o-mini".to_owned(), route("gpt-4o-mini", 0.15, 0.6)),
    ]
    .into_iter()
    .collect()
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

fn enforcer(
    limits: Vec<BudgetLimit>,
    store: BudgetStore,
    clock: Arc<ManualClock>,
) -> BudgetEnforcer {
    let cfg = BudgetEnforcerConfig {
        limits,
        ..BudgetEnforcerConfig::default()
    };
    BudgetEnforcer::new(
        "support",
        Some("prod"),
        &cfg,
        &models(),
        store,
        clock,
        BudgetMetrics::new().unwrap(),
    )
}

/// gpt-4o, 1000 input + 1000 output tokens = 2,500 + 10,000 µ$ = $0.0125.
fn req(key: &str) -> BudgetRequest<'_> {
    BudgetRequest {
        key_id: key,
        team: Some("support"),
        model: "gpt-4o",
        est_input_tokens: 1000,
        max_output_tokens: Some(1000),
    }
}

fn used(store: &BudgetStore, name_suffix: &str, start: i64) -> u64 {
    let BudgetStore::Memory(m) = store else {
        panic!("memory store expected")
    };
    m.snapshot()
        .into_iter()
        .filter(|c| c.name.ends_with(name_suffix) && c.window_start == start)
        .map(|c| c.used)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_admit_exactly_k() {
    // $1.00 is worth exactly 80 requests of $0.0125.
    let store = BudgetStore::memory();
    let e = enforcer(
        vec![limit("environment", BudgetWindow::Daily, Some(1.0), None)],
        store.clone(),
        Arc::new(ManualClock::new(noon())),
    );
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (e, admitted) = (e.clone(), Arc::clone(&admitted));
        tasks.push(spawn(async move {
            if let Ok(r) = e.reserve(&req("k1")).await {
                admitted.fetch_add(1, Ordering::Relaxed);
                // Keep the reservation held: it is the budget in flight.
                std::mem::forget(r);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 80);
    assert_eq!(e.metrics().decisions(DecisionLabel::Block), 920);
}

#[tokio::test]
async fn settle_moves_the_counter_to_actual_usage() {
    let store = BudgetStore::memory();
    let clock = Arc::new(ManualClock::new(noon()));
    let e = enforcer(
        vec![limit(
            "environment",
            BudgetWindow::Monthly,
            Some(10.0),
            Some(1_000_000),
        )],
        store.clone(),
        clock,
    );
    let start = days_from_civil(2025, 6, 1) * 86_400;
    let r = e.reserve(&req("k1")).await.unwrap();
    assert_eq!(r.reserved(), (12_500, 2000));
    assert_eq!(used(&store, ":usd", start), 12_500);
    // The provider reported 800 input and 200 output tokens: 2,000 + 2,000 µ$.
    e.settle(r, 800, 200).await;
    assert_eq!(used(&store, ":usd", start), 4_000);
    assert_eq!(used(&store, ":tokens", start), 1_000);
    assert_eq!(e.metrics().drop_releases(), 0);
}

#[tokio::test]
async fn release_and_drop_guard_return_the_reservation() {
    let store = BudgetStore::memory();
    let e = enforcer(
        vec![limit("key:k1", BudgetWindow::Daily, Some(1.0), None)],
        store.clone(),
        Arc::new(ManualClock::new(noon())),
    );
    let r = e.reserve(&req("k1")).await.unwrap();
    e.release(r).await;
    assert_eq!(used(&store, ":usd", noon() - 12 * 3600), 0);
    {
        let _r = e.reserve(&req("k1")).await.unwrap();
        assert_eq!(used(&store, ":usd", noon() - 12 * 3600), 12_500);
        // Dropped here, as when a client cancels a stream mid-way.
    }
    assert_eq!(used(&store, ":usd", noon() - 12 * 3600), 0);
    assert_eq!(e.metrics().drop_releases(), 1);
}

#[tokio::test]
async fn cancelled_request_futures_leak_nothing() {
    let store = BudgetStore::memory();
    let e = enforcer(
        vec![limit("environment", BudgetWindow::Daily, Some(1.0), None)],
        store.clone(),
        Arc::new(ManualClock::new(noon())),
    );
    for _ in 0..50 {
        let e2 = e.clone();
        let task = spawn(async move {
            let _r = e2.reserve(&req("k1")).await.unwrap();
            // Never completes: the "stream" is aborted below while the reservation is held.
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        task.abort();
        let _ = task.await;
    }
    assert_eq!(used(&store, ":usd", noon() - 12 * 3600), 0);
}

#[tokio::test]
async fn block_names_scope_window_and_reset_time() {
    let e = enforcer(
        vec![limit("team:support", BudgetWindow::Daily, Some(0.02), None)],
        BudgetStore::memory(),
        Arc::new(ManualClock::new(noon())),
    );
    let _held = e.reserve(&req("k1")).await.unwrap();
    let err = e.reserve(&req("k1")).await.unwrap_err();
    let tomorrow = days_from_civil(2025, 7, 1) * 86_400;
    assert_eq!(
        err,
        BudgetDecision::Block {
            scope: BudgetScope::Team("support".into()),
            window: "daily",
            reset_at: Some(tomorrow),
            rate: None,
        }
    );
    assert!(err.to_string().contains("2025-07-01T00:00:00Z"), "{err}");
}

#[tokio::test]
async fn window_rollover_reopens_the_budget_without_sleeping() {
    let clock = Arc::new(ManualClock::new(noon()));
    let e = enforcer(
        vec![limit("environment", BudgetWindow::Daily, Some(0.02), None)],
        BudgetStore::memory(),
        Arc::clone(&clock) as Arc<ManualClock>,
    );
    e.settle(e.reserve(&req("k1")).await.unwrap(), 1000, 1000)
        .await;
    assert!(e.reserve(&req("k1")).await.is_err());
    clock.advance(12 * 3600 - 1);
    assert!(
        e.reserve(&req("k1")).await.is_err(),
        "23:59:59 is still today"
    );
    clock.advance(1);
    assert!(
        e.reserve(&req("k1")).await.is_ok(),
        "midnight UTC opens a new window"
    );
}

#[tokio::test]
async fn degrade_rewrites_the_model_and_block_still_applies_to_the_cheaper_one() {
    let mut team = limit("team:support", BudgetWindow::Daily, None, Some(3000));
    team.on_exhausted = ExhaustedAction::Degrade;
    team.degrade_to = Some("gpt-4o-mini".into());
    let e = enforcer(
        vec![
            team,
            limit("environment", BudgetWindow::Daily, Some(0.02), None),
        ],
        BudgetStore::memory(),
        Arc::new(ManualClock::new(noon())),
    );
    let first = e.reserve(&req("k1")).await.unwrap();
    assert_eq!((first.model(), first.degraded_from()), ("gpt-4o", None));
    // 2000 of 3000 tokens used: the next gpt-4o request does not fit and is degraded.
    let second = e.reserve(&req("k1")).await.unwrap();
    assert_eq!(second.model(), "gpt-4o-mini");
    assert_eq!(second.degraded_from(), Some("gpt-4o"));
    assert!(second
        .alerts()
        .iter()
        .any(|a| a.kind == AlertKind::Exhausted && a.scope == BudgetScope::Team("support".into())));
    // Environment: $0.0125 + mini's $0.00075 spent of $0.02; the tightest USD limit reports it.
    let left = second.remaining_usd().unwrap();
    assert!((left - (0.02 - 0.0125 - 0.00075)).abs() < 1e-9, "{left}");
    assert_eq!(e.metrics().decisions(DecisionLabel::Degrade), 1);
}

#[tokio::test]
async fn alert_limits_pass_and_announce_once_per_window() {
    let clock = Arc::new(ManualClock::new(noon()));
    let mut l = limit("key:k1", BudgetWindow::Daily, Some(0.02), None);
    l.on_exhausted = ExhaustedAction::Alert;
    let e = enforcer(
        vec![l],
        BudgetStore::memory(),
        Arc::clone(&clock) as Arc<ManualClock>,
    );
    let mut exhausted = 0;
    for _ in 0..5 {
        let r = e.reserve(&req("k1")).await.unwrap();
        exhausted += r
            .alerts()
            .iter()
            .filter(|a| a.kind == AlertKind::Exhausted)
            .count();
        std::mem::forget(r);
    }
    assert_eq!(exhausted, 1, "announced once, passed every time");
    assert_eq!(e.metrics().decisions(DecisionLabel::Alert), 4);
    clock.advance(86_400);
    let mut r = Vec::new();
    for _ in 0..2 {
        r.push(e.reserve(&req("k1")).await.unwrap());
    }
    assert_eq!(
        r[1].alerts()[0].kind,
        AlertKind::Exhausted,
        "again in the next window"
    );
}

#[tokio::test]
async fn soft_threshold_fires_once_per_window() {
    let clock = Arc::new(ManualClock::new(noon()));
    // Soft mark at 80% of $0.05 = $0.04: crossed by the 4th request of $0.0125.
    let e = enforcer(
        vec![limit("environment", BudgetWindow::Daily, Some(0.05), None)],
        BudgetStore::memory(),
        Arc::clone(&clock) as Arc<ManualClock>,
    );
    let mut soft_at = Vec::new();
    for i in 0..4 {
        let r = e.reserve(&req("k1")).await.unwrap();
        if r.alerts()
            .iter()
            .any(|a| a.kind == AlertKind::SoftThreshold)
        {
            soft_at.push(i);
        }
        e.settle(r, 1000, 1000).await;
    }
    assert_eq!(soft_at, vec![3]);
    assert_eq!(e.metrics().soft_alerts("environment"), 1);
    clock.advance(86_400);
    for _ in 0..4 {
        let r = e.reserve(&req("k1")).await.unwrap();
        e.settle(r, 1000, 1000).await;
    }
    assert_eq!(
        e.metrics().soft_alerts("environment"),
        2,
        "once more in the new window"
    );
}

#[tokio::test]
async fn only_applicable_scopes_count_and_the_tightest_decides() {
    let store = BudgetStore::memory();
    let e = enforcer(
        vec![
            limit("environment", BudgetWindow::Monthly, Some(100.0), None),
            limit("key:k1", BudgetWindow::Daily, Some(0.02), None),
            limit("model:gpt-4o-mini", BudgetWindow::Daily, Some(0.0), None),
        ],
        store.clone(),
        Arc::new(ManualClock::new(noon())),
    );
    let r = e.reserve(&req("k1")).await.unwrap();
    assert!((r.remaining_usd().unwrap() - 0.0075).abs() < 1e-9);
    // k2 has no key limit; gpt-4o is not gpt-4o-mini.
    let r2 = e.reserve(&req("k2")).await.unwrap();
    assert!((r2.remaining_usd().unwrap() - (100.0 - 0.025)).abs() < 1e-9);
    assert!(matches!(
        e.reserve(&req("k1")).await,
        Err(BudgetDecision::Block {
            scope: BudgetScope::Key(_),
            ..
        })
    ));
}

#[tokio::test]
async fn spend_survives_a_pack_reload_over_the_same_store() {
    let store = BudgetStore::memory();
    let clock = Arc::new(ManualClock::new(noon()));
    let l = || {
        vec![limit(
            "environment",
            BudgetWindow::Monthly,
            Some(0.02),
            None,
        )]
    };
    let before = enforcer(l(), store.clone(), Arc::clone(&clock) as Arc<ManualClock>);
    before
        .settle(before.reserve(&req("k1")).await.unwrap(), 1000, 1000)
        .await;
    let after = enforcer(l(), store, clock);
    assert!(after.reserve(&req("k1")).await.is_err());
}

#[test]
fn from_pack_reads_the_support_pack() {
    // The shape of configs/support.yaml, without the PII policy (built on another branch).
    let text = "
pack: {name: support, version: 2.3.0}
policies: {chain: [budget-enforcer]}
models:
  gpt-4o: {input_usd_per_mtok: 2.5, output_usd_per_mtok: 10.0}
  gpt-4o-mini: {input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}
policy:
  budget-enforcer:
    limits:
      - {scope: environment, window: monthly, usd: 100, on_exhausted: block}
environments:
  prod:
    policy:
      budget-enforcer:
        limits:
          - {scope: environment, window: monthly, usd: 5000, on_exhausted: block}
          - {scope: team:support, window: daily, tokens: 20000000, on_exhausted: degrade, degrade_to: gpt-4o-mini}
";
    let loaded = policy_engine::load(text).unwrap();
    let pack = loaded
        .compile(Some("prod"), &policy_engine::CompileOptions::default())
        .unwrap();
    let e = BudgetEnforcer::from_pack(
        &pack,
        BudgetStore::memory(),
        Arc::new(SystemClock),
        BudgetMetrics::new().unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = e.shared.plan.meters.iter().map(|m| &*m.name).collect();
    assert_eq!(
        names,
        [
            "palisade:budget:{support/prod}:team:support:daily:tokens",
            "palisade:budget:{support/prod}:environment:monthly:usd",
        ]
    );
}

/// Regression: before any request touched it, a limit's remaining gauge read 0 while its used
/// ratio read 0 too; it reads the whole limit now, and the usage once a request settles.
#[tokio::test]
async fn an_untouched_limit_reports_its_whole_budget_as_remaining() {
    let clock = Arc::new(ManualClock::new(noon()));
    let metrics = BudgetMetrics::new().unwrap();
    let registry = prometheus::Registry::new();
    metrics.register(&registry).unwrap();
    let cfg = BudgetEnforcerConfig {
        limits: vec![
            limit("environment", BudgetWindow::Monthly, Some(100.0), None),
            limit("team:support", BudgetWindow::Daily, None, Some(2_000_000)),
        ],
        ..BudgetEnforcerConfig::default()
    };
    let _e = BudgetEnforcer::new(
        "support",
        Some("prod"),
        &cfg,
        &models(),
        BudgetStore::memory(),
        clock,
        metrics,
    );
    let gauge = |scope: &str| {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "palisade_budget_remaining")
            .flat_map(|f| f.get_metric().to_vec())
            .find(|m| m.get_label().iter().any(|l| l.value() == scope))
            .map(|m| m.get_gauge().get_value())
    };
    assert_eq!(gauge("environment"), Some(100.0));
    assert_eq!(gauge("team:support"), Some(2_000_000.0));
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

#[tokio::test]
async fn a_minute_rate_limit_counts_requests_refuses_with_a_retry_time_and_rolls_over() {
    let clock = Arc::new(ManualClock::new(noon() + 45));
    let mut rpm = limit("key:k1", BudgetWindow::Minute, None, None);
    rpm.requests = Some(2);
    let e = enforcer(vec![rpm], BudgetStore::memory(), Arc::clone(&clock));
    let a = e.reserve(&req("k1")).await.unwrap();
    let b = e.reserve(&req("k1")).await.unwrap();
    // Another key is not counted against k1's limit.
    let _other = e.reserve(&req("k2")).await.unwrap();
    let err = e.reserve(&req("k1")).await.unwrap_err();
    let BudgetDecision::Block { window, rate, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*window, "minute");
    let rate = rate.unwrap();
    assert_eq!(
        (rate.dim, rate.cap, rate.retry_after_secs, rate.queue_ms),
        (Dimension::Requests, 2, 15, None)
    );
    assert!(err.to_string().starts_with("rate limit reached"), "{err}");
    // Settling does not give a request back: it was served.
    e.settle(a, 10, 10).await;
    assert!(e.reserve(&req("k1")).await.is_err());
    // A released reservation (the request was never served) does.
    e.release(b).await;
    let c = e.reserve(&req("k1")).await.unwrap();
    assert!(e.reserve(&req("k1")).await.is_err());
    // The next minute is a new window.
    clock.advance(15);
    assert!(e.reserve(&req("k1")).await.is_ok());
    e.release(c).await;
}

#[tokio::test]
async fn a_request_a_fallback_served_is_settled_at_the_fallbacks_price() {
    let store = BudgetStore::memory();
    let e = enforcer(
        vec![limit(
            "environment",
            BudgetWindow::Monthly,
            Some(10.0),
            None,
        )],
        store.clone(),
        Arc::new(ManualClock::new(noon())),
    );
    let start = days_from_civil(2025, 6, 1) * 86_400;
    let mut r = e.reserve(&req("k1")).await.unwrap();
    // Reserved at gpt-4o's price; gpt-4o-mini served: 800 × 0.15 + 200 × 0.6 = 240 µ$.
    e.reprice(&mut r, "gpt-4o-mini");
    e.settle(r, 800, 200).await;
    assert_eq!(used(&store, ":usd", start), 240);
    // An unpriced model keeps the reservation's price (gpt-4o: 2,000 + 2,000 µ$).
    let mut r = e.reserve(&req("k1")).await.unwrap();
    e.reprice(&mut r, "unknown");
    e.settle(r, 800, 200).await;
    assert_eq!(used(&store, ":usd", start), 4_240);
}
