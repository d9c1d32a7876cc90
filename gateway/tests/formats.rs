//! Anthropic Messages and OpenAI Responses through the gateway: the same chain as chat
//! completions (PII in requests, answers and streams, tool-call arguments included; usage read
//! for budgets), errors in each API's shape, and every route behind admission.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::sync::Arc;

use gateway::{ApiRoute, NoEnforcement};
use serde_json::{json, Value};
use support::client::{self, post_with_headers};
use support::mock::MockProvider;
use support::{events_for, Event, Recorder, TestGateway};

const EMAIL: &str = "jane.doe@example.com";

/// `gpt-4o-mini` on an `openai` provider, `claude-test` on an `anthropic` one (both the mock).
fn two_kinds(base_url: &str, chain: &str, policy: &str) -> String {
    format!(
        "pack:
  name: formats
  version: 1.0.0
  enabled: true
policies:
  chain: [{chain}]
providers:
  oai:
    base_url: {base_url}
    api_key_env: PALISADE_TEST_PROVIDER_KEY
    first_byte_timeout_ms: 2000
  claude:
    kind: anthropic
    base_url: {base_url}
    api_key_env: PALISADE_TEST_PROVIDER_KEY
    first_byte_timeout_ms: 2000
models:
  gpt-4o-mini:
    provider: oai
  claude-test:
    provider: claude
    upstream_model: claude-test-20250101
{policy}"
    )
}

/// A base64 "image" of 320 characters whose digits look like a card number.
fn image() -> String {
    let mut s = String::from("iVBORw0KGgo+4111111111111111/");
    while s.len() < 320 {
        s.push_str("AbCdEf0123456789+/");
    }
    s
}

fn redact_policy(action: &str) -> String {
    format!("policy:\n  pii-detector:\n    action: {action}\n    entities: [email, credit_card, phone]\n    scan: [request, response]\n")
}

async fn setup(chain: &str, policy: &str) -> (MockProvider, TestGateway) {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let gw = TestGateway::start(
        &two_kinds(&mock.base_url(), chain, policy),
        Arc::new(NoEnforcement),
    )
    .await;
    (mock, gw)
}

/// The typed events of an SSE body: (event name, data).
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_else(|_| panic!("not JSON: {d}"));
                }
            }
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn anthropic_messages_reach_an_anthropic_provider_redacted_with_its_headers() {
    let (mock, gw) = setup("pii-detector", &redact_policy("redact")).await;
    let c = client::client();
    let body = json!({
        "model": "claude-test",
        "max_tokens": 100,
        "system": [{"type": "text", "text": format!("Customer: {EMAIL}")}],
        "messages": [
            {"role": "user", "content": format!("write to {EMAIL}")},
            // Tool input is the caller's schema: keys named like ids or settings are text there.
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                               "input": {"email": EMAIL, "detail": EMAIL, "id": EMAIL, "data": {"url": EMAIL}}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": format!("found {EMAIL}")},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image()}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": format!("Contract for {EMAIL}")}}
            ]}
        ]
    });
    let r = post_with_headers(
        &c,
        &gw.api("/v1/messages"),
        &body,
        &[
            ("x-api-key", "caller-key"),
            ("anthropic-version", "2023-06-01"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = mock.last().await.unwrap();
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(got.x_api_key.as_deref(), Some("sk-provider-secret"));
    assert_eq!(
        got.authorization, None,
        "an Anthropic provider gets x-api-key only"
    );
    assert_eq!(got.anthropic_version.as_deref(), Some("2023-06-01"));
    assert_eq!(got.body["model"], "claude-test-20250101");
    assert!(got.body.get("stream_options").is_none());
    let sent = got.body.to_string();
    assert!(!sent.contains(EMAIL), "{sent}");
    assert_eq!(
        got.body["messages"][2]["content"][1]["source"]["data"],
        image(),
        "media is left alone"
    );
    assert_eq!(r.json()["type"], "message");
    assert_eq!(
        r.json()["content"][0]["text"],
        "Hello from the mock provider."
    );
}

#[tokio::test]
async fn the_anthropic_version_defaults_when_the_caller_sends_none() {
    let (mock, gw) = setup("", "").await;
    let c = client::client();
    let body = json!({"model": "claude-test", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let r = post_with_headers(&c, &gw.api("/v1/messages"), &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.last().await.unwrap().anthropic_version.as_deref(),
        Some("2023-06-01")
    );
    let r = post_with_headers(
        &c,
        &gw.api("/v1/messages/count_tokens"),
        &json!({"model": "claude-test", "messages": [{"role": "user", "content": format!("to {EMAIL}")}]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(mock.last().await.unwrap().path, "/v1/messages/count_tokens");
}

#[tokio::test]
async fn an_anthropic_stream_is_redacted_across_deltas_text_and_tool_input() {
    let (mock, gw) = setup("pii-detector", &redact_policy("redact")).await;
    mock.set(|b| {
        b.chunks = vec!["Mail jane.d".into(), "oe@exam".into(), "ple.com now".into()];
        b.tool_args = Some(vec![
            "{\"to\": \"jane".into(),
            ".doe@ex".into(),
            "ample.com\", \"n\": 1}".into(),
        ]);
    })
    .await;
    let c = client::client();
    let body = json!({"model": "claude-test", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = post_with_headers(&c, &gw.api("/v1/messages"), &body, &[]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(!text.contains("jane"), "{text}");
    let evs = events(&text);
    let mut answer = String::new();
    let mut args = String::new();
    for (name, data) in &evs {
        assert_eq!(
            name,
            data["type"].as_str().unwrap(),
            "event name matches type"
        );
        if name == "content_block_delta" {
            match data["delta"]["type"].as_str().unwrap() {
                "text_delta" => answer.push_str(data["delta"]["text"].as_str().unwrap()),
                "input_json_delta" => {
                    args.push_str(data["delta"]["partial_json"].as_str().unwrap())
                }
                other => panic!("unexpected delta {other}"),
            }
        }
    }
    assert!(
        answer.starts_with("Mail ") && answer.ends_with(" now"),
        "{answer}"
    );
    assert!(answer.contains("EMAIL"), "{answer}");
    let input: Value = serde_json::from_str(&args).expect("redacted arguments stay valid JSON");
    assert!(input["to"].as_str().unwrap().contains("EMAIL"), "{input}");
    assert_eq!(input["n"], 1);
    // Every held-back piece came out before its block's stop, and the stream ends as it began.
    assert_eq!(evs.last().unwrap().0, "message_stop");
    let stop_of_1 = evs
        .iter()
        .position(|(n, d)| n == "content_block_stop" && d["index"] == 1)
        .unwrap();
    let last_args = evs
        .iter()
        .rposition(|(n, d)| n == "content_block_delta" && d["index"] == 1)
        .unwrap();
    assert!(last_args < stop_of_1);
}

#[tokio::test]
async fn usage_is_read_from_every_format_for_the_settlement() {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let (rec, rx) = Recorder::new();
    let gw = TestGateway::start(&two_kinds(&mock.base_url(), "", ""), rec).await;
    let c = client::client();
    let mut log = Vec::new();
    let cases = [
        (
            "/v1/messages",
            json!({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude-test", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "hi"}),
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "hi", "stream": true}),
        ),
    ];
    for (path, body) in cases {
        let r = post_with_headers(&c, &gw.api(path), &body, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let id = r.header("x-palisade-request-id").to_owned();
        let sent = mock.last().await.unwrap().raw.len() as u64;
        let input = sent / 4;
        let stream = body["stream"] == true;
        // The mock: Anthropic reports 3 cache-read tokens beside `input_tokens`; output 7
        // (JSON) or one per streamed piece (4 chunks).
        let output = if stream { 4 } else { 7 };
        let cache = if path == "/v1/messages" { 3 } else { 0 };
        let want = input + cache + output;
        client::wait_until(std::time::Duration::from_secs(5), "settled", || {
            let got = events_for(&rx, &mut log, &id);
            async move {
                got.contains(&Event::Settled {
                    usage_total: Some(want),
                })
            }
        })
        .await;
    }
}

#[tokio::test]
async fn responses_json_stream_and_stored_items_are_scanned() {
    let (mock, gw) = setup("pii-detector", &redact_policy("redact")).await;
    let c = client::client();
    mock.set(|b| {
        b.reply = format!("Write to {EMAIL}.");
        b.chunks = vec!["to ja".into(), "ne.doe@example".into(), ".com!".into()];
        b.tool_args = Some(vec![
            "{\"email\":\"jane.doe@".into(),
            "example.com\"}".into(),
        ]);
    })
    .await;
    let body = json!({"model": "gpt-4o-mini", "instructions": format!("Reply to {EMAIL}"),
                      "input": [{"role": "user", "content": [{"type": "input_text", "text": format!("I am {EMAIL}")}]},
                                {"type": "function_call_output", "call_id": "call_1", "output": format!("{{\"owner\":\"{EMAIL}\"}}")}],
                      "max_output_tokens": 50});
    let r = post_with_headers(&c, &gw.api("/v1/responses"), &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = mock.last().await.unwrap();
    assert_eq!(got.path, "/v1/responses");
    assert_eq!(
        got.authorization.as_deref(),
        Some("Bearer sk-provider-secret")
    );
    assert!(!got.body.to_string().contains(EMAIL), "{}", got.body);
    assert!(got.body.get("stream_options").is_none());
    assert!(!r.text().contains(EMAIL), "{}", r.text());
    let args = r.json()["output"][1]["arguments"]
        .as_str()
        .unwrap()
        .to_owned();
    serde_json::from_str::<Value>(&args).expect("valid JSON after redaction");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post_with_headers(&c, &gw.api("/v1/responses"), &streamed, &[]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(!text.contains("jane"), "{text}");
    let evs = events(&text);
    let mut answer = String::new();
    let mut call = String::new();
    for (name, d) in &evs {
        assert_eq!(name, d["type"].as_str().unwrap());
        match name.as_str() {
            "response.output_text.delta" => answer.push_str(d["delta"].as_str().unwrap()),
            "response.function_call_arguments.delta" => call.push_str(d["delta"].as_str().unwrap()),
            "response.output_text.done" => assert_eq!(d["text"].as_str().unwrap(), answer),
            "response.function_call_arguments.done" => {
                assert_eq!(d["arguments"].as_str().unwrap(), call);
            }
            _ => {}
        }
    }
    assert!(
        answer.contains("EMAIL") && answer.ends_with('!'),
        "{answer}"
    );
    serde_json::from_str::<Value>(&call).expect("streamed arguments stay valid JSON");
    let done = &evs.last().unwrap().1;
    assert_eq!(done["type"], "response.completed");
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap(),
        answer,
        "the completed response repeats the text as the deltas gave it"
    );

    // A stored response: fetched and deleted through the gateway, its answer scanned.
    let get = client::collect(
        client::send(&c, "GET", &gw.api("/v1/responses/resp_abc-1"), None, None).await,
    )
    .await;
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.json()["id"], "resp_abc-1");
    assert!(!get.text().contains(EMAIL), "{}", get.text());
    let del = client::collect(
        client::send(
            &c,
            "DELETE",
            &gw.api("/v1/responses/resp_abc-1"),
            None,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(del.status, 200);
    let last = mock.last().await.unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", "/v1/responses/resp_abc-1")
    );
    // Only ids reach the provider's path.
    let bad = client::collect(
        client::send(&c, "GET", &gw.api("/v1/responses/..%2Fadmin"), None, None).await,
    )
    .await;
    assert_eq!(bad.status, 404);
}

#[tokio::test]
async fn errors_on_anthropic_routes_have_anthropics_shape() {
    let (mock, gw) = setup("pii-detector", &redact_policy("block")).await;
    let c = client::client();
    let msg = |model: &str, text: &str| json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": text}]});
    let r = post_with_headers(
        &c,
        &gw.api("/v1/messages"),
        &msg("claude-test", &format!("to {EMAIL}")),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["error"]["code"], "pii_blocked");
    let r = post_with_headers(&c, &gw.api("/v1/messages"), &msg("nope", "hi"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["type"].as_str()),
        (403, Some("permission_error"))
    );
    // A route with no translation to the model's provider: refused, naming both.
    let r = post_with_headers(
        &c,
        &gw.api("/v1/responses"),
        &json!({"model": "claude-test", "input": "hi"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "route_not_served");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/responses"));
    // A field the other format cannot carry: refused by name, never dropped.
    let r = post_with_headers(
        &c,
        &gw.api("/v1/chat/completions"),
        &json!({"model": "claude-test", "logprobs": true, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(
        r.json()["error"]["code"],
        "untranslatable_field",
        "{}",
        r.text()
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`logprobs`"));
    let mut top_k = msg("gpt-4o-mini", "hi");
    top_k["top_k"] = json!(5);
    let r = post_with_headers(&c, &gw.api("/v1/messages"), &top_k, &[]).await;
    assert_eq!(
        r.json()["error"]["code"],
        "untranslatable_field",
        "{}",
        r.text()
    );
    assert_eq!(r.json()["type"], "error");
    assert_eq!(mock.api_calls(), 0);
    // The provider's own error passes in its own shape.
    mock.set(|b| b.fail_status = Some(529)).await;
    let r = post_with_headers(&c, &gw.api("/v1/messages"), &msg("claude-test", "hi"), &[]).await;
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["error"]["type"], "api_error");
}

/// Every API route the gateway serves is behind the chain: without a key nothing reaches the
/// provider, and with a key a blocked prompt does not either.
#[tokio::test]
async fn every_route_goes_through_admission_first() {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let dir = support::TempDir::new("routes");
    let keys = dir.write(
        "keys.yaml",
        &format!(
            "- {{id: app-1, team: support, sha256: {}}}\n",
            gateway::keys::sha256_hex("test")
        ),
    );
    let gw = TestGateway::start_with(
        &two_kinds(&mock.base_url(), "pii-detector", &redact_policy("block")),
        Arc::new(NoEnforcement),
        |cfg| cfg.keys_path = Some(keys.clone()),
    )
    .await;
    let c = client::client();
    let blocked = format!("mail {EMAIL}");
    for route in ApiRoute::ALL {
        let (method, path, body) = match route {
            ApiRoute::ChatCompletions => (
                "POST",
                route.path().to_owned(),
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": blocked}]}),
            ),
            ApiRoute::Completions => (
                "POST",
                route.path().to_owned(),
                json!({"model": "gpt-4o-mini", "prompt": blocked}),
            ),
            ApiRoute::Embeddings => (
                "POST",
                route.path().to_owned(),
                json!({"model": "gpt-4o-mini", "input": blocked}),
            ),
            ApiRoute::Messages | ApiRoute::CountTokens => (
                "POST",
                route.path().to_owned(),
                json!({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": blocked}]}),
            ),
            ApiRoute::Responses => (
                "POST",
                route.path().to_owned(),
                json!({"model": "gpt-4o-mini", "input": blocked}),
            ),
            ApiRoute::ResponseItem => ("GET", "/v1/responses/resp_1".to_owned(), Value::Null),
        };
        let bytes = body.to_string();
        let payload = (method == "POST").then_some(bytes.as_bytes());
        let anon =
            client::collect(client::send(&c, method, &gw.api(&path), payload, None).await).await;
        assert_eq!(anon.status, 401, "{path} without a key: {}", anon.text());
        if route.spends() {
            let r = client::collect(
                client::send(&c, method, &gw.api(&path), payload, Some("test")).await,
            )
            .await;
            assert_eq!(r.status, 400, "{path} with PII: {}", r.text());
            assert!(r.text().contains("pii_blocked"), "{path}: {}", r.text());
        }
        assert_eq!(mock.api_calls(), 0, "{path} reached the provider");
    }
    // Anthropic's SDKs send the key as `x-api-key`: it authenticates like a bearer token.
    let clean = json!({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = post_with_headers(
        &c,
        &gw.api("/v1/messages"),
        &clean,
        &[("x-api-key", "test")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_with_headers(
        &c,
        &gw.api("/v1/messages"),
        &clean,
        &[("x-api-key", "wrong")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn the_openai_format_is_translated_to_an_anthropic_provider_and_back() {
    let (mock, gw) = setup("pii-detector", &redact_policy("redact")).await;
    mock.set(|b| {
        b.reply = "Sure.".into();
        b.tool_args = Some(vec!["{\"to\": \"jane".into(), ".doe@example.com\"}".into()]);
    })
    .await;
    let c = client::client();
    let body = json!({
        "model": "claude-test", "max_completion_tokens": 99, "temperature": 0.2, "stop": "END",
        "user": "u-1", "parallel_tool_calls": false,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": format!("mail {EMAIL}")},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "find", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
    });
    let r = post_with_headers(&c, &gw.api("/v1/chat/completions"), &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = mock.last().await.unwrap();
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(got.x_api_key.as_deref(), Some("sk-provider-secret"));
    let sent = &got.body;
    assert_eq!(sent["model"], "claude-test-20250101");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 99);
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["metadata"]["user_id"], "u-1");
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(sent["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(
        sent["messages"][0]["content"][1]["source"]["media_type"],
        "image/png"
    );
    assert_eq!(sent["messages"][1]["content"][0]["input"], json!({"q": 1}));
    assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], "call_1");
    assert!(
        !got.body.to_string().contains(EMAIL),
        "redacted before translation"
    );
    let a = r.json();
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["choices"][0]["message"]["content"], "Sure.");
    assert_eq!(a["choices"][0]["finish_reason"], "tool_calls");
    let args: Value = serde_json::from_str(
        a["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(args["to"].as_str().unwrap().contains("EMAIL"), "{args}");
    let input = got.raw.len() as u64 / 4;
    assert_eq!(
        a["usage"]["prompt_tokens"],
        input + 3,
        "cache reads are prompt tokens"
    );
    assert_eq!(a["usage"]["prompt_tokens_details"]["cached_tokens"], 3);

    // Streamed: Anthropic events become chat chunks, usage chunk on request.
    mock.set(|b| b.chunks = vec!["Hel".into(), "lo ja".into(), "ne.doe@example.com".into()])
        .await;
    let r = post_with_headers(
        &c,
        &gw.api("/v1/chat/completions"),
        &json!({"model": "claude-test", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(!text.contains("jane"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = client::sse_data(&text)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(client::sse_text(&text), "Hello [EMAIL_1]");
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert!(serde_json::from_str::<Value>(&args).unwrap()["to"]
        .as_str()
        .unwrap()
        .contains("EMAIL"));
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5, "{usage}");
    assert!(mock
        .last()
        .await
        .unwrap()
        .body
        .get("stream_options")
        .is_none());

    // The provider's error, in OpenAI's shape.
    mock.set(|b| b.fail_status = Some(529)).await;
    let r = post_with_headers(
        &c,
        &gw.api("/v1/chat/completions"),
        &json!({"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["error"]["message"], "mock failure", "{}", r.text());
}

#[tokio::test]
async fn the_anthropic_format_is_translated_to_an_openai_provider_and_back() {
    let (mock, gw) = setup("pii-detector", &redact_policy("redact")).await;
    mock.set(|b| {
        b.reply = "Sure.".into();
        b.chunks = vec!["Hi ".into(), "there".into()];
        b.tool_args = Some(vec!["{\"to\": \"jane.doe@".into(), "example.com\"}".into()]);
    })
    .await;
    let c = client::client();
    let body = json!({
        "model": "gpt-4o-mini", "max_tokens": 50, "system": [{"type": "text", "text": "Be brief."}],
        "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "lookup"},
        "messages": [
            {"role": "user", "content": format!("mail {EMAIL}")},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"}]},
        ],
    });
    let r = post_with_headers(&c, &gw.api("/v1/messages"), &body, &[("x-api-key", "k")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = mock.last().await.unwrap();
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(
        got.authorization.as_deref(),
        Some("Bearer sk-provider-secret")
    );
    let sent = &got.body;
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        sent["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{\"q\":1}"
    );
    assert_eq!(
        sent["messages"][3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "found"})
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "function", "function": {"name": "lookup"}})
    );
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["user"], "u-1");
    assert!(!sent.to_string().contains(EMAIL));
    let a = r.json();
    assert_eq!(a["type"], "message");
    assert_eq!(a["content"][0], json!({"type": "text", "text": "Sure."}));
    assert_eq!(a["content"][1]["type"], "tool_use");
    assert!(a["content"][1]["input"]["to"]
        .as_str()
        .unwrap()
        .contains("EMAIL"));
    assert_eq!(a["stop_reason"], "tool_use");
    assert_eq!(a["usage"]["output_tokens"], 7);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post_with_headers(&c, &gw.api("/v1/messages"), &streamed, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        mock.last().await.unwrap().body["stream_options"],
        json!({"include_usage": true})
    );
    let evs = events(&r.text());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    let text: String = evs
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hi there");
    let args: String = evs
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert!(
        serde_json::from_str::<Value>(&args).unwrap()["to"]
            .as_str()
            .unwrap()
            .contains("EMAIL"),
        "{args}"
    );
    let delta = &evs.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 2);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 2);
    // Blocks open and close in order: text 0, tool 1.
    let starts: Vec<u64> = evs
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d["index"].as_u64().unwrap())
        .collect();
    let stops: Vec<u64> = evs
        .iter()
        .filter(|(n, _)| n == "content_block_stop")
        .map(|(_, d)| d["index"].as_u64().unwrap())
        .collect();
    assert_eq!((starts, stops), (vec![0, 1], vec![0, 1]));

    // The provider's error, in Anthropic's shape.
    mock.set(|b| b.fail_status = Some(500)).await;
    let r = post_with_headers(&c, &gw.api("/v1/messages"), &body, &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["type"], "error", "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "api_error");
    assert_eq!(r.json()["error"]["message"], "mock failure");
}
