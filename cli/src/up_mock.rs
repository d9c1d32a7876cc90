//! The local mock provider of `palisade up`, used only when no provider key is set so that a
//! new user can send a request through the whole stack with nothing to sign up for.
//!
//! It is labelled everywhere it shows: every answer says in its text that no model was called,
//! and `palisade up` prints that it is running. (A header would not do: the gateway passes on
//! only the provider headers a client needs.)
//! Its answer echoes the last message it received, so a new user sees what the provider got
//! after the gateway's policies (an e-mail redacted in staging, passed through in dev).
//! It speaks every wire format the gateway relays: chat completions as JSON and as SSE (with the
//! usage chunk when `stream_options.include_usage` is set), completions, embeddings, the model
//! list, the Responses API (JSON, SSE, stored responses) and Anthropic's Messages API (JSON,
//! SSE, `count_tokens`). It is not a test double for the test suite; those live with the tests.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const LABEL: &str = "Palisade's local mock provider (no model was called) received:";

/// The echo: the label and the text of the last message (chat) or the prompt (completions).
fn answer(input: &Value) -> String {
    let text = |v: &Value| -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str().or_else(|| p.as_str()))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    };
    let received = match input["messages"].as_array().and_then(|m| m.last()) {
        Some(m) => text(&m["content"]),
        None => match input["input"].as_array().and_then(|m| m.last()) {
            // Responses: the last input item's content.
            Some(item) => text(&item["content"]),
            None => text(input.get("prompt").unwrap_or(&input["input"])),
        },
    };
    format!("{LABEL} {received}")
}

/// Serve on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        #[expect(
            clippy::disallowed_methods,
            reason = "a mock connection's task, ended with `up`"
        )]
        tokio::spawn(async move {
            let svc = service_fn(handle);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[expect(
    clippy::disallowed_methods,
    reason = "the body is wrapped in Limited, so collecting is bounded"
)]
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let body = match Limited::new(req.into_body(), 16 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "application/json",
                json!({"error": {"message": "too large"}}).to_string(),
            ))
        }
    };
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = input["model"].as_str().unwrap_or("mock-model").to_owned();
    let answer = match (method, path.as_str()) {
        (Method::GET, p) if p.ends_with("/models") => reply(StatusCode::OK, "application/json", json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "palisade-mock"}]}).to_string()),
        (Method::POST, p) if p.ends_with("/chat/completions") && input["stream"] == true => {
            let usage = input["stream_options"]["include_usage"] == true;
            reply(StatusCode::OK, "text/event-stream", sse(&model, &answer(&input), usage))
        }
        (Method::POST, p) if p.ends_with("/chat/completions") => reply(StatusCode::OK, "application/json", json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer(&input)}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
        }).to_string()),
        (Method::POST, p) if p.ends_with("/completions") => reply(StatusCode::OK, "application/json", json!({
            "id": "cmpl-mock", "object": "text_completion", "created": 0, "model": model,
            "choices": [{"index": 0, "text": answer(&input), "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
        }).to_string()),
        (Method::POST, p) if p.ends_with("/messages/count_tokens") => reply(StatusCode::OK, "application/json", json!({"input_tokens": 12}).to_string()),
        (Method::POST, p) if p.ends_with("/messages") && input["stream"] == true => {
            reply(StatusCode::OK, "text/event-stream", anthropic_sse(&model, &answer(&input)))
        }
        (Method::POST, p) if p.ends_with("/messages") => reply(StatusCode::OK, "application/json", json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": answer(&input)}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 16},
        }).to_string()),
        (Method::POST, p) if p.ends_with("/responses") && input["stream"] == true => {
            reply(StatusCode::OK, "text/event-stream", responses_sse(&model, &answer(&input)))
        }
        (Method::POST, p) if p.ends_with("/responses") => reply(StatusCode::OK, "application/json", response_object(&model, &answer(&input)).to_string()),
        (Method::GET, p) if p.contains("/responses/") => reply(StatusCode::OK, "application/json", response_object("mock-model", &format!("{LABEL} a stored response")).to_string()),
        (Method::DELETE, p) if p.contains("/responses/") => reply(StatusCode::OK, "application/json", json!({"id": "resp_mock", "object": "response.deleted", "deleted": true}).to_string()),
        (Method::POST, p) if p.ends_with("/embeddings") => reply(StatusCode::OK, "application/json", json!({
            "object": "list", "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 0.1, 0.2]}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }).to_string()),
        _ => reply(StatusCode::NOT_FOUND, "application/json", json!({"error": {"message": "the mock provider has no such route", "type": "invalid_request_error"}}).to_string()),
    };
    Ok(answer)
}

fn sse(model: &str, answer: &str, usage: bool) -> String {
    let mut out = String::new();
    let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    out.push_str(&format!(
        "data: {}\n\n",
        chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    ));
    for word in answer.split_inclusive(' ') {
        out.push_str(&format!(
            "data: {}\n\n",
            chunk(json!({"content": word}), Value::Null)
        ));
    }
    out.push_str(&format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
    if usage {
        let u = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28}});
        out.push_str(&format!("data: {u}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// Anthropic's stream: one text block, a word per `text_delta`.
fn anthropic_sse(model: &str, answer: &str) -> String {
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    );
    out.push_str(&ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    for word in answer.split_inclusive(' ') {
        out.push_str(&ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}})));
    }
    out.push_str(&ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push_str(&ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 16}})));
    out.push_str(&ev("message_stop", json!({"type": "message_stop"})));
    out
}

fn response_object(model: &str, answer: &str) -> Value {
    json!({
        "id": "resp_mock", "object": "response", "created_at": 0, "status": "completed", "model": model,
        "output": [{"id": "msg_mock", "type": "message", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": answer, "annotations": []}]}],
        "usage": {"input_tokens": 12, "output_tokens": 16, "total_tokens": 28},
    })
}

/// The Responses API's stream: the message item, a word per `response.output_text.delta`.
fn responses_sse(model: &str, answer: &str) -> String {
    let mut seq = 0;
    let mut ev = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        format!("event: {name}\ndata: {data}\n\n")
    };
    let mut created = response_object(model, "");
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    let mut out = ev("response.created", json!({"response": created}));
    out.push_str(&ev("response.output_item.added", json!({"output_index": 0, "item": {"id": "msg_mock", "type": "message", "status": "in_progress", "role": "assistant", "content": []}})));
    for word in answer.split_inclusive(' ') {
        out.push_str(&ev(
            "response.output_text.delta",
            json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": word}),
        ));
    }
    out.push_str(&ev(
        "response.output_text.done",
        json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "text": answer}),
    ));
    out.push_str(&ev(
        "response.completed",
        json!({"response": response_object(model, answer)}),
    ));
    out
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}
