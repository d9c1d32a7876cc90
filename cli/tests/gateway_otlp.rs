//! Request traces over OTLP, received by a real OTLP receiver built from the official protobuf
//! definitions (`test_support::otlp`), over both protocols: one `CLIENT` span per request after
//! the GenAI conventions, continuing the caller's `traceparent`, with a child `apply_guardrail`
//! span per policy decision; the provider gets the request span's own `traceparent`; bad
//! exporter settings stop start-up with a clear error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::process::Command;
use std::time::Duration;

use gateway_support::mock::MockProvider;
use gateway_support::{pack, Dir, GatewayProcess};
use serde_json::json;
use test_support::client;
use test_support::otlp::{OtlpReceiver, ReceivedSpan};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

const POLICY: &str = "policy:\n  pii-detector:\n    action: redact\n    entities: [email]\n    scan: [request, response]\n  budget-enforcer:\n    limits:\n      - {scope: environment, window: daily, tokens: 1000000, on_exhausted: block}\n";

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    f: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {spans:#?}");
    found[0]
}

/// A receiver, a mock provider, and a gateway on the PII + budget pack exporting to the
/// receiver over `protocol`, with extra environment variables.
struct Traced {
    receiver: OtlpReceiver,
    mock: MockProvider,
    gw: GatewayProcess,
    _dir: Dir,
}

/// A mock provider and the PII + budget pack in a fresh directory.
async fn pii_budget_pack() -> (MockProvider, Dir, std::path::PathBuf) {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack(
            &mock.base_url(),
            "1.0.0",
            "pii-detector, budget-enforcer",
            POLICY,
        ),
    );
    (mock, dir, p)
}

async fn traced(protocol: &str, env: &[(&str, &str)]) -> Traced {
    let receiver = OtlpReceiver::start().await;
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let (mock, dir, p) = pii_budget_pack().await;
    let gw = GatewayProcess::start_with_env(
        &p,
        dir.path(),
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", protocol],
        env,
    );
    Traced {
        receiver,
        mock,
        gw,
        _dir: dir,
    }
}

async fn traces_over(protocol: &str) {
    let Traced {
        receiver,
        mock,
        mut gw,
        _dir,
    } = traced(protocol, &[]).await;
    let c = client::client();
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let r = client::post_with_headers(
        &c,
        &gw.api("/v1/chat/completions"),
        &client::chat("gpt-4o-mini", "mail ann@example.com please", false),
        &[("traceparent", &caller)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = client::post(
        &c,
        &gw.api("/v1/chat/completions"),
        &json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}),
        None,
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let streamed = client::post(
        &c,
        &gw.api("/v1/chat/completions"),
        &client::chat("gpt-4o-mini", "hello", true),
        None,
    )
    .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text());

    let metrics = client::get(&c, &gw.api("/metrics")).await.text();
    assert!(
        metrics.contains("palisade_otlp_spans_dropped_total 0"),
        "{metrics}"
    );
    // The spans are exported at the latest when the gateway drains.
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).await.success());
    let spans = receiver.wait_for(9, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 9, "{spans:#?}");
    assert!(spans.iter().all(|s| s.protocol == protocol));

    let chat = one(&spans, "the chat span", |s| {
        s.name == "chat gpt-4o-mini" && s.trace_id == CALLER_TRACE
    });
    assert_eq!(chat.kind, 3, "CLIENT");
    assert_eq!(chat.trace_id, CALLER_TRACE);
    assert_eq!(chat.parent_span_id, CALLER_SPAN);
    assert_eq!(chat.attr("gen_ai.operation.name"), "chat");
    assert_eq!(chat.attr("gen_ai.provider.name"), "mock");
    assert_eq!(chat.attr("gen_ai.request.model"), "gpt-4o-mini");
    assert_eq!(chat.attr("gen_ai.response.model"), "gpt-4o-mini");
    assert!(chat.attr("gen_ai.usage.input_tokens").as_i64().unwrap() > 0);
    assert_eq!(chat.attr("gen_ai.usage.output_tokens"), 7);
    assert_eq!(
        chat.attr("gen_ai.response.finish_reasons"),
        &json!(["stop"])
    );
    assert_eq!(chat.attr("http.response.status_code"), 200);
    assert_eq!(chat.attr("palisade.pack.name"), "test");
    assert_eq!(chat.attr("palisade.pack.version"), "1.0.0");
    assert_eq!(chat.resource["service.name"], "palisade-gateway");
    assert_eq!(chat.resource["deployment.environment.name"], "dev");
    assert!(chat.end_unix_nano >= chat.start_unix_nano);

    // The provider was called inside the request span.
    let sent = mock.received().await[0].traceparent.clone().unwrap();
    assert_eq!(sent, format!("00-{CALLER_TRACE}-{}-01", chat.span_id));

    let guard = |target: &str, guardian: &str| {
        one(&spans, &format!("{guardian} on {target}"), |s| {
            s.trace_id == CALLER_TRACE
                && s.attr("gen_ai.security.target.type") == target
                && s.attr("gen_ai.guardian.name") == guardian
        })
    };
    let request_pii = guard("llm_input", "pii-detector");
    assert_eq!(request_pii.name, "apply_guardrail pii-detector");
    assert_eq!(request_pii.kind, 1, "INTERNAL");
    assert_eq!(request_pii.parent_span_id, chat.span_id);
    assert_eq!(request_pii.trace_id, CALLER_TRACE);
    assert_eq!(request_pii.attr("gen_ai.operation.name"), "apply_guardrail");
    assert_eq!(request_pii.attr("gen_ai.security.decision.type"), "modify");
    assert_eq!(request_pii.attr("palisade.pii.entities"), &json!(["email"]));
    assert_eq!(request_pii.attr("palisade.pii.findings"), 1);
    assert_eq!(request_pii.attr("palisade.pack.version"), "1.0.0");
    let budget = guard("llm_input", "budget-enforcer");
    assert_eq!(budget.attr("gen_ai.security.decision.type"), "allow");
    assert_eq!(budget.parent_span_id, chat.span_id);
    let answer_pii = guard("llm_output", "pii-detector");
    assert_eq!(answer_pii.attr("gen_ai.security.decision.type"), "allow");

    // A streamed answer: its finish reason is read from the stream, its answer scan timed over it.
    let stream = one(&spans, "the streamed request", |s| {
        s.name == "chat gpt-4o-mini" && s.trace_id != CALLER_TRACE
    });
    assert!(stream.parent_span_id.is_empty());
    assert_eq!(
        stream.attr("gen_ai.response.finish_reasons"),
        &json!(["stop"])
    );
    let stream_scan = one(&spans, "the stream's answer scan", |s| {
        s.parent_span_id == stream.span_id && s.attr("gen_ai.security.target.type") == "llm_output"
    });
    assert_eq!(stream_scan.attr("gen_ai.security.decision.type"), "allow");
    assert!(stream_scan.end_unix_nano >= stream_scan.start_unix_nano);

    // A refused request is a span of its own trace, marked as an error.
    let failed = one(&spans, "the refused request", |s| s.name == "chat");
    assert_ne!(failed.trace_id, CALLER_TRACE);
    assert!(failed.parent_span_id.is_empty());
    assert_eq!(failed.status_code, 2, "ERROR");
    assert_eq!(failed.attr("error.type"), "model_not_allowed");
    assert_eq!(failed.attr("http.response.status_code"), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_a_grpc_otlp_receiver() {
    traces_over("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_an_http_protobuf_otlp_receiver() {
    traces_over("http/protobuf").await;
}

/// `OTEL_TRACES_SAMPLER` is honoured: an unsampled request records nothing, and the provider
/// still gets the trace context (marked not sampled), so the trace stays whole downstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_sampler_variables_decide_what_is_recorded() {
    let Traced {
        receiver,
        mock,
        mut gw,
        _dir,
    } = traced("http/protobuf", &[("OTEL_TRACES_SAMPLER", "always_off")]).await;
    for _ in 0..3 {
        assert_eq!(gw.chat("hello").await.status, 200);
    }
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).await.success());
    assert!(receiver.spans().await.is_empty());
    let sent = mock.received().await;
    assert_eq!(sent.len(), 3);
    for r in sent {
        let tp = r.traceparent.unwrap();
        assert_eq!(tp.len(), 55, "{tp}");
        assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
    }
}

/// A collector that cannot be reached never fails a request: the spans it would have had are
/// dropped and counted, all four of each traced request (request span and three guardrails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_for_an_unreachable_collector_are_dropped_and_counted() {
    let (_mock, dir, p) = pii_budget_pack().await;
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gw = GatewayProcess::start_with_env(&p, dir.path(), &["--otlp-endpoint", &endpoint], &[]);
    for _ in 0..5 {
        assert_eq!(gw.chat("mail ann@example.com please").await.status, 200);
    }
    let c = client::client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = client::get(&c, &gw.api("/metrics")).await.text();
        if metrics.contains("palisade_otlp_spans_dropped_total 20") {
            assert!(
                metrics.contains("palisade_otlp_spans_exported_total 0"),
                "{metrics}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "20 spans not counted as dropped: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The protocol variable alone, with no endpoint, leaves traces off and the gateway starting, even
/// with a value it would refuse for an export (an inherited environment must not stop it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_variable_without_an_endpoint_is_ignored() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "pii-detector", ""),
    );
    let gw = GatewayProcess::start_with_env(
        &p,
        dir.path(),
        &[],
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
    );
    assert_eq!(gw.chat("hi").await.status, 200);
    assert!(mock.received().await[0].traceparent.is_none());
}

#[test]
fn bad_exporter_settings_stop_start_up_with_a_clear_error() {
    let dir = Dir::new();
    let p = dir.write(
        "pack.yaml",
        &pack("http://127.0.0.1:9/v1", "1.0.0", "pii-detector", ""),
    );
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let out = Command::new("timeout")
            .arg("30")
            .arg(env!("CARGO_BIN_EXE_palisade"))
            .args(["gateway", "--pack"])
            .arg(&p)
            .args(["--environment", "dev", "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .env("PALISADE_TEST_PROVIDER_KEY", "x")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(
        &[
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
            "--otlp-protocol",
            "thrift",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("use `grpc` or `http/protobuf`"), "{err}");
    // The standard variables are read too.
    let (code, err) = run(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("http/json"), "{err}");
    let (code, err) = run(&["--otlp-endpoint", "https://collector:4318"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a plain http:// URL"), "{err}");
}
