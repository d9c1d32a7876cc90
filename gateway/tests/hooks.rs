//! The hooks see every request outcome exactly once: a recording enforcement in front of the mock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway::{Admit, Enforcement, Failure, Rejection, RejectionKind, Release, RequestMeta};
use http_body_util::BodyExt;
use support::client::{self, chat, post, wait_until};
use support::mock::MockProvider;
use support::{events_for, pack, Event, Recorder, TestGateway};

async fn terminal_events(
    rx: &std::sync::mpsc::Receiver<(String, Event)>,
    log: &mut Vec<(String, Event)>,
    id: &str,
) -> Vec<Event> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = events_for(rx, log, id);
        if ev.iter().any(|e| !matches!(e, Event::Admitted)) {
            // Give a (wrong) second terminal call a chance to show up before judging.
            tokio::task::yield_now().await;
            return events_for(rx, log, id);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no terminal event for {id}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn every_outcome_is_reported_exactly_once() {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let (rec, rx) = Recorder::new();
    let gw = TestGateway::start(&pack(&mock.base_url(), "1.0.0", "", ""), rec).await;
    let c = client::client();
    let url = gw.api("/v1/chat/completions");
    let mut log = Vec::new();

    // Allowed, JSON: admitted, then settled with the provider's usage.
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    let id = r.header("x-palisade-request-id").to_owned();
    let total = r.json()["usage"]["total_tokens"].as_u64();
    assert_eq!(
        terminal_events(&rx, &mut log, &id).await,
        [Event::Admitted, Event::Settled { usage_total: total }]
    );

    // Allowed, streamed: settled with the usage of the chunk the caller never saw.
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", true), None).await;
    let id = r.header("x-palisade-request-id").to_owned();
    let ev = terminal_events(&rx, &mut log, &id).await;
    assert!(
        matches!(ev.as_slice(), [Event::Admitted, Event::Settled { usage_total: Some(n) }] if *n > 0),
        "{ev:?}"
    );

    // Refused before admission.
    let r = post(&c, &url, &chat("not-in-pack", "hi", false), None).await;
    let id = r.header("x-palisade-request-id").to_owned();
    assert_eq!(
        terminal_events(&rx, &mut log, &id).await,
        [Event::Failed {
            what: "model_not_allowed".into(),
            admitted: false
        }]
    );

    // Provider error status.
    mock.set(|b| b.fail_status = Some(500)).await;
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.status, 500);
    let id = r.header("x-palisade-request-id").to_owned();
    assert_eq!(
        terminal_events(&rx, &mut log, &id).await,
        [
            Event::Admitted,
            Event::Failed {
                what: "upstream_status_500".into(),
                admitted: true
            }
        ]
    );
    mock.set(|b| b.fail_status = None).await;

    // Client cancelled mid-stream: read the first frame, then hang up.
    mock.set(|b| b.chunk_delay = Duration::from_millis(100))
        .await;
    let resp = client::send(
        &c,
        "POST",
        &url,
        Some(chat("gpt-4o-mini", "hi", true).to_string().as_bytes()),
        None,
    )
    .await;
    let id = resp.headers()["x-palisade-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    assert_eq!(
        terminal_events(&rx, &mut log, &id).await,
        [
            Event::Admitted,
            Event::Failed {
                what: "cancelled_mid_stream_true".into(),
                admitted: true
            }
        ]
    );
    gw.stop().await;

    // Nothing was reported twice, for any request.
    log.extend(rx.try_iter());
    let mut ids: Vec<&String> = log.iter().map(|(i, _)| i).collect();
    ids.dedup();
    for id in ids {
        let terminal = log
            .iter()
            .filter(|(i, e)| i == id && !matches!(e, Event::Admitted))
            .count();
        assert_eq!(terminal, 1, "request {id}: {log:?}");
    }
}

#[tokio::test]
async fn an_unreachable_provider_is_one_failure_after_admission() {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let (rec, rx) = Recorder::new();
    let gw = TestGateway::start(&pack(&dead, "1.0.0", "", ""), rec).await;
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", false),
        None,
    )
    .await;
    let id = r.header("x-palisade-request-id").to_owned();
    let mut log = Vec::new();
    assert_eq!(
        terminal_events(&rx, &mut log, &id).await,
        [
            Event::Admitted,
            Event::Failed {
                what: "upstream_error".into(),
                admitted: true
            }
        ]
    );
    gw.stop().await;
}

/// A budget that is always exhausted, deciding asynchronously.
#[derive(Debug)]
struct Exhausted;

impl Enforcement for Exhausted {
    fn admit(&self, _meta: &RequestMeta) -> Admit {
        Admit::Pending(Box::pin(async {
            tokio::task::yield_now().await;
            Err(Rejection::new(
                RejectionKind::BudgetExceeded,
                "the team's daily budget is spent",
            ))
        }))
    }

    fn failed(
        &self,
        _m: &RequestMeta,
        admission: Option<gateway::Admission>,
        f: &Failure<'_>,
    ) -> Release {
        assert!(admission.is_none());
        assert!(matches!(f, Failure::Refused(e) if e.code() == "budget_exceeded"));
        Release::Now
    }
}

#[tokio::test]
async fn enforcement_can_refuse_asynchronously_with_budget_exceeded() {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let gw = TestGateway::start(
        &pack(&mock.base_url(), "1.0.0", "", ""),
        Arc::new(Exhausted),
    )
    .await;
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "hi", false),
        None,
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "budget_exceeded");
    assert_eq!(r.json()["error"]["type"], "insufficient_quota");
    assert_eq!(r.header("x-should-retry"), "false");
    assert_eq!(mock.api_calls(), 0);
    let m = client::get(&c, &gw.api("/metrics")).await.text();
    assert!(
        m.contains("palisade_errors_total{blame=\"policy\",code=\"budget_exceeded\"} 1"),
        "{m}"
    );
    wait_until(Duration::from_secs(1), "nothing", || async { true }).await;
    gw.stop().await;
}

/// Releases every terminal call only after a few polls, counting the releases.
#[derive(Debug, Default)]
struct SlowRelease {
    released: Arc<AtomicU64>,
    hold_stream: bool,
}

impl SlowRelease {
    fn release(&self) -> Release {
        let released = Arc::clone(&self.released);
        Release::After(Box::pin(async move {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            released.fetch_add(1, Ordering::SeqCst);
        }))
    }
}

impl Enforcement for SlowRelease {
    fn settled(&self, _m: &RequestMeta, _a: gateway::Admission, _s: &gateway::Settled) -> Release {
        self.release()
    }

    fn failed(
        &self,
        _m: &RequestMeta,
        _a: Option<gateway::Admission>,
        _f: &Failure<'_>,
    ) -> Release {
        self.release()
    }

    fn holds_stream_end(&self, _meta: &RequestMeta) -> bool {
        self.hold_stream
    }
}

/// Read a stream frame by frame; returns the text and how many releases had happened when the
/// frame holding `[DONE]` arrived.
async fn read_stream(
    resp: hyper::Response<hyper::body::Incoming>,
    released: &AtomicU64,
) -> (String, Option<u64>) {
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut at_done = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
            if at_done.is_none() && text.contains("[DONE]") {
                at_done = Some(released.load(Ordering::SeqCst));
            }
        }
    }
    (text, at_done)
}

#[tokio::test]
async fn a_response_is_released_only_after_its_terminal_calls_release() {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let enforcement = Arc::new(SlowRelease {
        hold_stream: true,
        ..SlowRelease::default()
    });
    let released = Arc::clone(&enforcement.released);
    let gw = TestGateway::start(&pack(&mock.base_url(), "1.0.0", "", ""), enforcement).await;
    let c = client::client();
    let url = gw.api("/v1/chat/completions");

    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(released.load(Ordering::SeqCst), 1, "a JSON answer");
    let r = post(&c, &url, &chat("not-in-pack", "hi", false), None).await;
    assert_eq!(r.error_code(), "model_not_allowed");
    assert_eq!(released.load(Ordering::SeqCst), 2, "a refusal");
    mock.set(|b| b.fail_status = Some(500)).await;
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.status, 500);
    assert_eq!(released.load(Ordering::SeqCst), 3, "a provider error");
    mock.set(|b| b.fail_status = None).await;

    let body = chat("gpt-4o-mini", "hi", true).to_string();
    let resp = client::send(&c, "POST", &url, Some(body.as_bytes()), None).await;
    assert_eq!(resp.status(), 200);
    let (text, at_done) = read_stream(resp, &released).await;
    assert!(text.contains("Hello"), "{text}");
    assert_eq!(at_done, Some(4), "`[DONE]` went out before the release");
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_that_holds_nothing_back_still_ends_only_after_the_release() {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let enforcement = Arc::new(SlowRelease::default());
    let released = Arc::clone(&enforcement.released);
    let gw = TestGateway::start(&pack(&mock.base_url(), "1.0.0", "", ""), enforcement).await;
    let body = chat("gpt-4o-mini", "hi", true).to_string();
    let resp = client::send(
        &client::client(),
        "POST",
        &gw.api("/v1/chat/completions"),
        Some(body.as_bytes()),
        None,
    )
    .await;
    let (text, _) = read_stream(resp, &released).await;
    assert!(text.contains("[DONE]"), "{text}");
    assert_eq!(released.load(Ordering::SeqCst), 1, "the body ended first");
    gw.stop().await;
}
