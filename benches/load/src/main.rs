//! `palisade-load-mock`: a minimal, fast mock of an OpenAI-compatible provider for the load
//! benchmark (`benches/load/run.sh`).
//!
//! It answers `POST …/chat/completions` (and Anthropic's `POST …/messages`, the same text in
//! that format) with a `chat.completion` (usage included) or, with
//! `"stream": true`, an SSE stream: a role chunk, `MOCK_CHUNKS` content chunks, a finish
//! chunk, the usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`.
//! `GET /mock/stats` returns request counters so the driver can check that every client
//! request reached the provider exactly once. `POST /v1/traces` is an OTLP/HTTP sink (it
//! counts the bytes and answers 200), for gateways exporting traces in `ab.sh`. It runs on one thread (`MOCK_THREADS`=1 by
//! default) so it leaves the second core to the gateway and wrk, and it prints its bound
//! address on stdout (`MOCK_ADDR`, default `127.0.0.1:0`). Not a test fixture: the tests have
//! their own recording mock in `gateway/tests/support/mock.rs`.
//!
//! For the streaming-latency benchmark (`stream-latency.sh`): `MOCK_CHUNK_DELAY_MS` waits that
//! long before each content chunk (the role chunk goes at once), as a model generating tokens
//! does, and `MOCK_TEXT` picks what the chunks say: `prose` (default; no digit, `@` or key
//! prefix), `pii` (an e-mail address and a phone number in every sentence), `card` (prose with
//! one card number split over three chunks).

#![expect(
    clippy::print_stdout,
    reason = "prints its bound address for the driver script"
)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

type RespBody = Either<Full<Bytes>, Either<QueueBody, PacedBody>>;

#[derive(Debug, Default)]
struct Stats {
    chat: AtomicU64,
    stream: AtomicU64,
    /// OTLP/HTTP bytes received on `/v1/traces`.
    trace_bytes: AtomicU64,
}

/// Pre-built SSE frames, yielded one by one.
#[derive(Debug)]
struct QueueBody(VecDeque<Bytes>);

impl Body for QueueBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

const WORDS: [&str; 8] = [
    "Hello",
    "! This",
    " is a",
    " mock",
    " response",
    " from the",
    " benchmark",
    " upstream.",
];
const CONTENT: &str = "Hello! This is a mock response from the benchmark upstream.";

const PII_WORDS: [&str; 10] = [
    "Please",
    " write",
    " to ann",
    "@example",
    ".com or",
    " call",
    " +1 415",
    " 555 0134",
    " any time",
    " today. ",
];
const CARD_WORDS: [&str; 10] = [
    "Your", " card", " 4111", " 1111 11", "11 1111", " was", " charged", " for the", " order",
    " today. ",
];

/// The content pieces of a stream of `n` chunks in `mode` (`MOCK_TEXT`).
fn pieces(mode: &str, n: usize) -> Vec<&'static str> {
    let words: &[&str] = match mode {
        "pii" => &PII_WORDS,
        "card" => &CARD_WORDS,
        _ => &WORDS,
    };
    (0..n)
        .map(|i| match (mode, i >= words.len()) {
            // One card per stream; then prose.
            ("card", true) => WORDS[i % WORDS.len()],
            _ => words[i % words.len()],
        })
        .collect()
}

/// SSE frames with a pause before each content chunk (the first frame, the role chunk, goes
/// at once).
#[derive(Debug)]
struct PacedBody {
    frames: VecDeque<Bytes>,
    delay: std::time::Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    sent: usize,
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent > 0 && !self.frames.is_empty() {
            let delay = self.delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        self.sent += 1;
        Poll::Ready(self.frames.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn json_resp(status: StatusCode, v: &Value) -> Response<RespBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// How streams are shaped (from the environment).
#[derive(Debug, Clone)]
struct StreamShape {
    chunks: usize,
    delay: std::time::Duration,
    text: String,
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<Stats>,
    shape: Arc<StreamShape>,
) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET && path == "/mock/stats" {
        let v = json!({"chat": st.chat.load(Relaxed), "stream": st.stream.load(Relaxed), "trace_bytes": st.trace_bytes.load(Relaxed)});
        return Ok(json_resp(StatusCode::OK, &v));
    }
    if req.method() == Method::POST && path == "/v1/traces" {
        // An OTLP/HTTP sink for gateways that export traces: read and count, answer with an
        // empty (valid) ExportTraceServiceResponse.
        #[expect(clippy::disallowed_methods, reason = "bounded by Limited")]
        let n = Limited::new(req.into_body(), 16 << 20)
            .collect()
            .await
            .map_or(0, |b| b.to_bytes().len());
        st.trace_bytes.fetch_add(n as u64, Relaxed);
        let mut r: Response<RespBody> = Response::new(Either::Left(Full::new(Bytes::new())));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-protobuf"),
        );
        return Ok(r);
    }
    let anthropic = path.ends_with("/messages");
    if req.method() != Method::POST || !(path.ends_with("/chat/completions") || anthropic) {
        let v =
            json!({"error": {"message": "mock: no such route", "type": "invalid_request_error"}});
        return Ok(json_resp(StatusCode::NOT_FOUND, &v));
    }
    #[expect(clippy::disallowed_methods, reason = "bounded by Limited")]
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        let v = json!({"error": {"message": "mock: bad json", "type": "invalid_request_error"}});
        return Ok(json_resp(StatusCode::BAD_REQUEST, &v));
    };
    let n = st.chat.fetch_add(1, Relaxed);
    if anthropic && parsed.get("stream").and_then(Value::as_bool) != Some(true) {
        let v = json!({
            "id": format!("msg_mock{n:012}"), "type": "message", "role": "assistant", "model": parsed.get("model"),
            "content": [{"type": "text", "text": CONTENT}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 250, "output_tokens": 12},
        });
        return Ok(json_resp(StatusCode::OK, &v));
    }
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock");
    let id = format!("chatcmpl-mock{n:012}");
    let usage = json!({"prompt_tokens": 250, "completion_tokens": 12, "total_tokens": 262});
    if !parsed
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        let v = json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": CONTENT, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        });
        return Ok(json_resp(StatusCode::OK, &v));
    }
    st.stream.fetch_add(1, Relaxed);
    if anthropic {
        return Ok(stream_resp(anthropic_frames(&shape, model), &shape));
    }
    let include_usage = parsed
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
               "system_fingerprint": "fp_mock",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut frames = VecDeque::new();
    frames.push_back(sse(&chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )));
    for piece in pieces(&shape.text, shape.chunks) {
        frames.push_back(sse(&chunk(json!({ "content": piece }), Value::Null)));
    }
    frames.push_back(sse(&chunk(json!({}), json!("stop"))));
    if include_usage {
        frames.push_back(sse(&json!({"id": id, "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": model, "choices": [], "usage": usage})));
    }
    frames.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    Ok(stream_resp(frames, &shape))
}

/// Anthropic's stream of the same text: message start, one text block of the same pieces as a
/// chat stream, the usage, the stop.
fn anthropic_frames(shape: &StreamShape, model: &str) -> VecDeque<Bytes> {
    let ev = |name: &str, v: &Value| Bytes::from(format!("event: {name}\ndata: {v}\n\n"));
    let mut frames = VecDeque::new();
    frames.push_back(ev("message_start", &json!({"type": "message_start", "message": {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 250, "output_tokens": 1}}})));
    frames.push_back(ev("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    for piece in pieces(&shape.text, shape.chunks) {
        frames.push_back(ev("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})));
    }
    frames.push_back(ev(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    frames.push_back(ev("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 12}})));
    frames.push_back(ev("message_stop", &json!({"type": "message_stop"})));
    frames
}

fn stream_resp(frames: VecDeque<Bytes>, shape: &StreamShape) -> Response<RespBody> {
    let body = if shape.delay.is_zero() {
        Either::Left(QueueBody(frames))
    } else {
        Either::Right(PacedBody {
            frames,
            delay: shape.delay,
            sleep: None,
            sent: 0,
        })
    };
    let mut r = Response::new(Either::Right(body));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

async fn serve(addr: String, shape: StreamShape) -> std::io::Result<()> {
    let shape = Arc::new(shape);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "palisade-load-mock listening on http://{}",
        listener.local_addr()?
    );
    let st = Arc::new(Stats::default());
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let st = Arc::clone(&st);
        let shape = Arc::clone(&shape);
        #[expect(
            clippy::disallowed_methods,
            reason = "a mock connection's task, ended with the process"
        )]
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |r| handle(r, Arc::clone(&st), Arc::clone(&shape)));
            // HTTP/1.1, and HTTP/2 by prior knowledge (a gateway provider with `protocol: http2`).
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let addr = std::env::var("MOCK_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let threads = env_usize("MOCK_THREADS", 1).max(1);
    let shape = StreamShape {
        chunks: env_usize("MOCK_CHUNKS", 5),
        delay: std::time::Duration::from_millis(env_usize("MOCK_CHUNK_DELAY_MS", 0) as u64),
        text: std::env::var("MOCK_TEXT").unwrap_or_else(|_| "prose".into()),
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let result = rt.and_then(|rt| rt.block_on(serve(addr, shape)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-load-mock: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
