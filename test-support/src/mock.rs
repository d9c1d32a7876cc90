//! A mock provider for tests: the real JSON and SSE wire formats of OpenAI's chat,
//! completions, embeddings and Responses APIs and of Anthropic's Messages API, on port 0,
//! recording what it received. Every test that needs a provider uses this one: the gateway's
//! in-process tests and the CLI's binary tests.
//!
//! Chat streams: a role chunk, one chunk per `Behaviour::chunks` entry, a finish chunk, the
//! usage chunk when the request set `stream_options.include_usage`, then `data: [DONE]`.
//! Anthropic streams (`/messages`): `message_start`, a text block with one `text_delta` per
//! chunk, a `tool_use` block with one `input_json_delta` per `Behaviour::tool_args` piece when
//! set, `message_delta` with usage, `message_stop`. Responses streams (`/responses`):
//! `response.created`, the message item with one `response.output_text.delta` per chunk and
//! its `.done` events, a `function_call` item with one `response.function_call_arguments.delta`
//! per tool piece when set, `response.completed` with usage. Errors in each API's shape.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

/// What the mock does; changeable while it runs.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Content pieces of a streamed answer, one SSE event each.
    pub chunks: Vec<String>,
    /// The `chunks` are written into the events as they are, between the quotes of the JSON
    /// string (escapes as given, e.g. a lone surrogate `\\ud800` that serde_json cannot write).
    pub chunks_escaped: bool,
    /// Content of a JSON answer.
    pub reply: String,
    /// A JSON answer's whole body, sent as it is instead of one built around `reply`.
    pub raw_reply: Option<String>,
    /// A streamed answer's whole body (`text/event-stream`), sent as it is in one write.
    pub raw_stream: Option<Vec<u8>>,
    /// Answer every API call with this status and an OpenAI error body.
    pub fail_status: Option<u16>,
    /// The failure's body instead of the OpenAI error (`application/json` when it starts with
    /// `{`, `text/html` otherwise).
    pub fail_body: Option<Vec<u8>>,
    /// Wait before the response head.
    pub head_delay: Duration,
    /// Wait between streamed events.
    pub chunk_delay: Duration,
    /// With `fail_status`: fail only the first this many API calls (0: every one).
    pub fail_first: u64,
    /// A `retry-after` header (seconds) on failures.
    pub retry_after: Option<u64>,
    /// Answer with a tool call (`lookup`) whose arguments are these pieces joined; a stream
    /// sends one argument delta per piece.
    pub tool_args: Option<Vec<String>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            chunks: vec!["Hello".into(), ", ".into(), "world".into(), "!".into()],
            chunks_escaped: false,
            reply: "Hello from the mock provider.".into(),
            raw_reply: None,
            raw_stream: None,
            fail_status: None,
            fail_body: None,
            head_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            tool_args: None,
            fail_first: 0,
            retry_after: None,
        }
    }
}

/// One request as the provider received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    /// `x-api-key`, as Anthropic's API takes the key.
    pub x_api_key: Option<String>,
    /// `anthropic-version`.
    pub anthropic_version: Option<String>,
    pub method: String,
    /// The HTTP version the request came in (`HTTP/2.0` from a provider on `protocol: http2`).
    pub version: hyper::Version,
    /// The `host` header, or over HTTP/2 the `:authority`.
    pub authority: Option<String>,
    /// The W3C trace context the gateway sent, if any.
    pub traceparent: Option<String>,
    pub body: Value,
    /// The body's bytes as they arrived (`body` is `null` when they are not JSON `serde_json`
    /// reads, e.g. with a lone surrogate escape).
    pub raw: Bytes,
}

#[derive(Debug, Default)]
struct Shared {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    api_calls: AtomicU64,
    streams_finished: AtomicU64,
    connections: AtomicU64,
}

/// A running mock provider.
#[derive(Debug, Clone)]
pub struct MockProvider {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl MockProvider {
    /// Start on 127.0.0.1:0 in the current runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        super::client::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = Arc::clone(&s);
                super::client::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&s), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, shared }
    }

    /// Base URL as a pack's provider `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub async fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut *self.shared.behaviour.lock().await);
    }

    pub async fn received(&self) -> Vec<Received> {
        self.shared.received.lock().await.clone()
    }

    pub async fn last(&self) -> Option<Received> {
        self.shared.received.lock().await.last().cloned()
    }

    /// API calls received (chat, completions, embeddings).
    pub fn api_calls(&self) -> u64 {
        self.shared.api_calls.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Streams whose every event was written.
    pub fn streams_finished(&self) -> u64 {
        self.shared.streams_finished.load(Ordering::SeqCst)
    }
}

type MockBody = http_body_util::Either<Full<Bytes>, ChannelBody>;

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let traceparent = header("traceparent");
    let x_api_key = header("x-api-key");
    let anthropic_version = header("anthropic-version");
    let method = req.method().to_string();
    let version = req.version();
    let authority = header("host").or_else(|| req.uri().authority().map(ToString::to_string));
    let is_get = req.method() == hyper::Method::GET;
    let bytes = crate::client::read_body(req.into_body()).await;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if is_get && path.ends_with("/models") {
        return Ok(json_response(
            200,
            &json!({"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":0,"owned_by":"mock"}]}),
        ));
    }
    let call = shared.api_calls.fetch_add(1, Ordering::SeqCst) + 1;
    shared.received.lock().await.push(Received {
        path: path.clone(),
        authorization,
        x_api_key,
        anthropic_version,
        method: method.clone(),
        version,
        authority,
        traceparent,
        body: body.clone(),
        raw: bytes.clone(),
    });
    let behaviour = shared.behaviour.lock().await.clone();
    if !behaviour.head_delay.is_zero() {
        tokio::time::sleep(behaviour.head_delay).await;
    }
    if let (Some(status), Some(body)) = (behaviour.fail_status, &behaviour.fail_body) {
        let mut resp = json_response(status, &Value::Null);
        *resp.body_mut() = http_body_util::Either::Left(Full::new(Bytes::from(body.clone())));
        if !body.starts_with(b"{") {
            resp.headers_mut()
                .insert("content-type", "text/html".parse().unwrap());
        }
        return Ok(resp);
    }
    let anthropic = path.ends_with("/messages") || path.ends_with("/messages/count_tokens");
    let fails = behaviour.fail_first == 0 || call <= behaviour.fail_first;
    if let Some(status) = behaviour.fail_status.filter(|_| fails) {
        let body = if anthropic {
            json!({"type":"error","error":{"type":"api_error","message":"mock failure"}})
        } else {
            json!({"error":{"message":"mock failure","type":"server_error","param":null,"code":"mock_failure"}})
        };
        let mut resp = json_response(status, &body);
        if let Some(secs) = behaviour.retry_after {
            resp.headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
        }
        return Ok(resp);
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let prompt_tokens = (bytes.len() / 4) as u64;
    if path.ends_with("/embeddings") {
        let n = match body.get("input") {
            Some(Value::Array(a)) => a.len(),
            _ => 1,
        };
        let data: Vec<Value> = (0..n)
            .map(|i| json!({"object":"embedding","index":i,"embedding":[0.1,0.2,0.3]}))
            .collect();
        return Ok(json_response(
            200,
            &json!({
                "object":"list","data":data,"model":model,
                "usage":{"prompt_tokens":prompt_tokens,"total_tokens":prompt_tokens}
            }),
        ));
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if path.ends_with("/messages/count_tokens") {
        return Ok(json_response(200, &json!({"input_tokens": prompt_tokens})));
    }
    if let Some(id) = path.split("/responses/").nth(1) {
        if method == "DELETE" {
            return Ok(json_response(
                200,
                &json!({"id": id, "object": "response.deleted", "deleted": true}),
            ));
        }
        let mut stored = responses_answer(&behaviour, "gpt-4o-mini", 10);
        stored["id"] = json!(id);
        return Ok(json_response(200, &stored));
    }
    if path.ends_with("/messages") || path.ends_with("/responses") {
        if !stream {
            let answer = match &behaviour.raw_reply {
                Some(raw) => serde_json::from_str(raw).unwrap_or(Value::Null),
                None if anthropic => anthropic_answer(&behaviour, &model, prompt_tokens),
                None => responses_answer(&behaviour, &model, prompt_tokens),
            };
            return Ok(json_response(200, &answer));
        }
        let events = if anthropic {
            anthropic_events(&behaviour, &model, prompt_tokens)
        } else {
            responses_events(&behaviour, &model, prompt_tokens)
        };
        return Ok(send_events(&shared, &behaviour, events));
    }
    let legacy = path.ends_with("/completions") && !path.ends_with("/chat/completions");
    if !stream {
        if let Some(raw) = &behaviour.raw_reply {
            let mut resp = json_response(200, &Value::Null);
            *resp.body_mut() = http_body_util::Either::Left(Full::new(Bytes::from(raw.clone())));
            return Ok(resp);
        }
        let choice = if legacy {
            json!({"index":0,"text":behaviour.reply,"logprobs":null,"finish_reason":"stop"})
        } else if let Some(args) = tool_arguments(&behaviour) {
            json!({"index":0,"message":{"role":"assistant","content":behaviour.reply,"refusal":null,
                   "tool_calls":[{"id":"call_mock","type":"function","function":{"name":"lookup","arguments":args}}]},
                   "logprobs":null,"finish_reason":"tool_calls"})
        } else {
            json!({"index":0,"message":{"role":"assistant","content":behaviour.reply,"refusal":null},"logprobs":null,"finish_reason":"stop"})
        };
        return Ok(json_response(
            200,
            &json!({
                "id":"chatcmpl-mock","object": if legacy {"text_completion"} else {"chat.completion"},
                "created":1_700_000_000,"model":model,"system_fingerprint":"fp_mock",
                "choices":[choice],
                "usage":{"prompt_tokens":prompt_tokens,"completion_tokens":7,"total_tokens":prompt_tokens+7}
            }),
        ));
    }
    if let Some(raw) = &behaviour.raw_stream {
        let mut resp = json_response(200, &Value::Null);
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        *resp.body_mut() = http_body_util::Either::Left(Full::new(Bytes::from(raw.clone())));
        return Ok(resp);
    }
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let shared2 = Arc::clone(&shared);
    super::client::spawn(async move {
        let usage_null = if include_usage {
            json!({"usage": null})
        } else {
            json!({})
        };
        let chunk = |delta: Value, finish: Value| {
            let mut c = json!({
                "id":"chatcmpl-mock","object":"chat.completion.chunk","created":1_700_000_000,
                "model":model,"system_fingerprint":"fp_mock",
                "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}]
            });
            if let (Some(o), Some(u)) = (c.as_object_mut(), usage_null.as_object()) {
                o.extend(u.clone());
            }
            c
        };
        let mut events = vec![chunk(json!({"role":"assistant","content":""}), Value::Null)];
        for (i, piece) in behaviour.chunks.iter().enumerate() {
            let content = if behaviour.chunks_escaped {
                format!("\u{1}{i}")
            } else {
                piece.clone()
            };
            events.push(chunk(json!({ "content": content }), Value::Null));
        }
        if let Some(pieces) = &behaviour.tool_args {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_mock", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in pieces {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        } else {
            events.push(chunk(json!({}), json!("stop")));
        }
        if include_usage {
            events.push(json!({
                "id":"chatcmpl-mock","object":"chat.completion.chunk","created":1_700_000_000,
                "model":model,"system_fingerprint":"fp_mock","choices":[],
                "usage":{"prompt_tokens":prompt_tokens,"completion_tokens":behaviour.chunks.len(),"total_tokens":prompt_tokens + behaviour.chunks.len() as u64,"prompt_tokens_details":{"cached_tokens":2}}
            }));
        }
        for (i, e) in events.into_iter().enumerate() {
            if !behaviour.chunk_delay.is_zero() {
                tokio::time::sleep(behaviour.chunk_delay).await;
            }
            let mut e = e.to_string();
            if behaviour.chunks_escaped && (1..=behaviour.chunks.len()).contains(&i) {
                e = e.replace(
                    &format!("\\u0001{}\"", i - 1),
                    &format!("{}\"", behaviour.chunks[i - 1]),
                );
            }
            if tx
                .send(Bytes::from(format!("data: {e}\n\n")))
                .await
                .is_err()
            {
                return;
            }
        }
        if tx
            .send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .is_ok()
        {
            shared2.streams_finished.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut resp = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
    resp.headers_mut().insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().unwrap(),
    );
    resp.headers_mut()
        .insert("cache-control", "no-cache".parse().unwrap());
    provider_headers(resp.headers_mut());
    Ok(resp)
}

/// A stream of ready SSE events (`event:` and `data:` lines), written one by one.
fn send_events(
    shared: &Arc<Shared>,
    behaviour: &Behaviour,
    events: Vec<String>,
) -> Response<MockBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let shared = Arc::clone(shared);
    let delay = behaviour.chunk_delay;
    super::client::spawn(async move {
        for e in events {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Bytes::from(e)).await.is_err() {
                return;
            }
        }
        shared.streams_finished.fetch_add(1, Ordering::SeqCst);
    });
    let mut resp = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
    resp.headers_mut().insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().unwrap(),
    );
    provider_headers(resp.headers_mut());
    resp
}

fn sse(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The tool call's arguments as one string, when the behaviour has one.
fn tool_arguments(b: &Behaviour) -> Option<String> {
    b.tool_args.as_ref().map(|pieces| pieces.concat())
}

/// An Anthropic Messages answer.
fn anthropic_answer(b: &Behaviour, model: &str, input_tokens: u64) -> Value {
    let mut content = vec![json!({"type": "text", "text": b.reply})];
    if let Some(args) = tool_arguments(b) {
        let input: Value = serde_json::from_str(&args).unwrap_or_else(|_| json!({}));
        content.push(
            json!({"type": "tool_use", "id": "toolu_mock", "name": "lookup", "input": input}),
        );
    }
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": content,
        "stop_reason": if b.tool_args.is_some() { "tool_use" } else { "end_turn" },
        "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 7,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3}
    })
}

/// An Anthropic Messages stream.
fn anthropic_events(b: &Behaviour, model: &str, input_tokens: u64) -> Vec<String> {
    let mut out = vec![sse(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3}}}),
    )];
    out.push(sse(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    out.push(sse("ping", &json!({"type": "ping"})));
    for piece in &b.chunks {
        out.push(sse(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    out.push(sse(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    if let Some(pieces) = &b.tool_args {
        out.push(sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_mock", "name": "lookup", "input": {}}}),
        ));
        for piece in pieces {
            out.push(sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        out.push(sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    out.push(sse(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": if b.tool_args.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null},
                "usage": {"output_tokens": b.chunks.len() + b.tool_args.as_ref().map_or(0, Vec::len)}}),
    ));
    out.push(sse("message_stop", &json!({"type": "message_stop"})));
    out
}

fn responses_message(text: &str, status: &str) -> Value {
    json!({"id": "msg_mock", "type": "message", "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn responses_call(arguments: &str, status: &str) -> Value {
    json!({"id": "fc_mock", "type": "function_call", "call_id": "call_mock", "name": "lookup",
           "arguments": arguments, "status": status})
}

fn responses_object(model: &str, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": "resp_mock", "object": "response", "created_at": 1_700_000_000, "status": status,
        "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
        "model": model, "output": output, "parallel_tool_calls": true,
        "previous_response_id": null, "temperature": 1.0, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": usage, "metadata": {}
    })
}

fn responses_usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
           "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 2},
           "total_tokens": input_tokens + output_tokens})
}

/// A Responses API answer.
fn responses_answer(b: &Behaviour, model: &str, input_tokens: u64) -> Value {
    let mut output = vec![responses_message(&b.reply, "completed")];
    if let Some(args) = tool_arguments(b) {
        output.push(responses_call(&args, "completed"));
    }
    responses_object(model, "completed", output, responses_usage(input_tokens, 7))
}

/// A Responses API stream.
fn responses_events(b: &Behaviour, model: &str, input_tokens: u64) -> Vec<String> {
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut push = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        out.push(sse(name, &data));
    };
    let text: String = b.chunks.concat();
    push(
        "response.created",
        json!({"response": responses_object(model, "in_progress", vec![], Value::Null)}),
    );
    push(
        "response.in_progress",
        json!({"response": responses_object(model, "in_progress", vec![], Value::Null)}),
    );
    push(
        "response.output_item.added",
        json!({"output_index": 0, "item": {"id": "msg_mock", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
    );
    push(
        "response.content_part.added",
        json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
    );
    for piece in &b.chunks {
        push(
            "response.output_text.delta",
            json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
        );
    }
    push(
        "response.output_text.done",
        json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
    );
    push(
        "response.content_part.done",
        json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
    );
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": responses_message(&text, "completed")}),
    );
    let mut output = vec![responses_message(&text, "completed")];
    if let Some(pieces) = &b.tool_args {
        let args = pieces.concat();
        push(
            "response.output_item.added",
            json!({"output_index": 1, "item": responses_call("", "in_progress")}),
        );
        for piece in pieces {
            push(
                "response.function_call_arguments.delta",
                json!({"item_id": "fc_mock", "output_index": 1, "delta": piece}),
            );
        }
        push(
            "response.function_call_arguments.done",
            json!({"item_id": "fc_mock", "output_index": 1, "arguments": args}),
        );
        push(
            "response.output_item.done",
            json!({"output_index": 1, "item": responses_call(&args, "completed")}),
        );
        output.push(responses_call(&args, "completed"));
    }
    let output_tokens = (b.chunks.len() + b.tool_args.as_ref().map_or(0, Vec::len)) as u64;
    push(
        "response.completed",
        json!({"response": responses_object(model, "completed", output, responses_usage(input_tokens, output_tokens))}),
    );
    out
}

fn json_response(status: u16, v: &Value) -> Response<MockBody> {
    let mut resp = Response::new(http_body_util::Either::Left(Full::new(Bytes::from(
        v.to_string(),
    ))));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    provider_headers(resp.headers_mut());
    resp
}

/// Headers a real provider sends with every answer: some a client uses, some it must not see.
fn provider_headers(h: &mut hyper::HeaderMap) {
    for (name, value) in [
        ("openai-processing-ms", "1"),
        ("openai-organization", "org-mock-secret"),
        ("openai-project", "proj_mock_secret"),
        ("x-request-id", "req_mock_1"),
        ("x-ratelimit-remaining-requests", "99"),
        ("server", "mock-provider/1.0"),
    ] {
        h.insert(name, value.parse().unwrap());
    }
}

/// A body fed by a channel.
#[derive(Debug)]
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}
