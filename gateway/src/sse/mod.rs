//! Relaying a provider's SSE stream: usage capture, the hidden usage chunk, and response-side
//! PII through the detector's incremental redactor — without buffering the stream.
//!
//! A task reads the provider body and feeds a bounded channel that is the caller's body. Each
//! upstream frame is split into complete events (`\n\n`); only an incomplete tail event waits
//! for the next frame. An event that needs no change is forwarded as the provider's bytes.
//! With response scanning on, each choice's `delta.content` (or legacy `text`) goes through its
//! own [`StreamRedactor`], which holds back only what could still become a finding (on prose,
//! the last word; from an unconfirmed number, address or key on, at most `max_holdback_bytes`)
//! so that a card number split across chunks is still caught; released text goes out in the
//! chunk it arrived in or the next one, with the provider's chunk around it, the rest is flushed
//! into the chunk that carries the choice's `finish_reason`. A chunk whose only text is all held
//! back is not sent (no empty deltas the provider did not send). Text already flushed
//! cannot be retracted, so `block` on a streamed response acts as `redact`. A chunk is read
//! as raw fields borrowed from the event (as the request path does, `json_splice`) and only
//! the changed text is spliced back, so the rest of the event (other lines, unknown fields) is
//! the provider's bytes; a chunk with a repeated key breaks the stream rather than pass with one
//! copy unscanned.
//!
//! The usage chunk (`choices: []`, `usage: {...}`, requested upstream for budgets) is read for
//! the hooks and dropped unless the caller asked for it. Ending: a clean end settles the
//! request with that usage; an upstream error fails it (`StreamBroken`); a dropped caller body
//! (client gone) is noticed at once through `Sender::closed` and reported as a mid-stream
//! cancellation by the `Outcome` guard. The caller's body ends only after the settle's
//! `Release` resolved; when the enforcement asked for it (`holds_stream_end`, a durable audit
//! record), the output from the terminal `data: [DONE]` event on is held back until then too, so
//! a caller that saw `[DONE]` knows its record is on disk. Holding needs the `[DONE]` event
//! found, so frames that contain `[DONE]` leave the pass-through fast path in that mode only.
//! With `include_redacted_text` and response scanning, the text each choice streamed (as the
//! caller received it) is collected for the audit record.
//!
//! The provider's stream is bounded ([`StreamLimits`]): silent past the idle timeout, or longer
//! than the byte cap, it is ended by the gateway with an error event that says why.
//!
//! The parts: this module relays (the task, its limits and batching), `framing` finds events
//! and their `data` in the provider's bytes, `chunk` reads and edits one chunk (usage, text,
//! redaction).
//!
//! Anthropic's and the Responses API's streams are typed events (`typed`): the same framing,
//! limits and hold-back, with usage and text read from each event type.

mod chunk;
mod framing;
mod translate;
mod typed;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use prometheus::IntCounterVec;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::body::{GatewayBody, StreamError};
use crate::hooks::{Failure, Outcome, Settled};
use crate::pack::ActivePack;
use crate::upstream::UpstreamBody;

pub(crate) use chunk::SseProcessor;

/// How a provider's stream carries its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamFormat {
    /// Chat and completions chunks (`choices[].delta`), ended by `data: [DONE]`.
    Chunks,
    /// Anthropic Messages events (`content_block_delta`…), ended by `message_stop`.
    Anthropic,
    /// OpenAI Responses events (`response.output_text.delta`…), ended by `response.completed`.
    Responses,
}

impl StreamFormat {
    pub(crate) fn of(route: crate::service::ApiRoute) -> Self {
        use crate::service::ApiRoute;
        match route {
            ApiRoute::Messages | ApiRoute::CountTokens => Self::Anthropic,
            ApiRoute::Responses | ApiRoute::ResponseItem => Self::Responses,
            ApiRoute::ChatCompletions | ApiRoute::Completions | ApiRoute::Embeddings => {
                Self::Chunks
            }
        }
    }
}

/// Frames buffered between the stream task and the caller.
const CHANNEL_FRAMES: usize = 16;
/// Upstream frames gathered into one write at most (bounds the time-to-first-byte cost).
const MAX_BATCH_FRAMES: usize = 64;

/// The counters a stream moves after its head was sent: findings in the answer, and the
/// error it ended with (as the audit record's `error_code`).
pub(crate) struct StreamCounters {
    pub(crate) pii_findings: IntCounterVec,
    pub(crate) errors: IntCounterVec,
}

/// Start relaying `upstream` to the caller; returns the caller's body. `record_text`: the
/// pack's audit logger wants the redacted text (`include_redacted_text`).
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, each argument a different concern"
)]
pub(crate) fn relay(
    upstream: UpstreamBody,
    mut outcome: Outcome,
    pack: Arc<ActivePack>,
    wants_usage: bool,
    record_text: bool,
    counters: StreamCounters,
    in_flight: crate::service::InFlight,
    limits: StreamLimits,
    translation: Option<crate::translate::Translation>,
) -> GatewayBody {
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    let hold_end = outcome.streaming();
    let span = tracing::Span::current();
    #[expect(
        clippy::disallowed_methods,
        reason = "a stream's relay: it feeds the response body, so the connection's drain waits for it"
    )]
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let detector = if pack.scan_response {
            pack.compiled.pii.as_ref()
        } else {
            None
        };
        let format = StreamFormat::of(outcome.meta.route);
        let mut proc = SseProcessor::with_format(format, detector, wants_usage);
        proc.translate = translation.map(|t| Box::new(translate::StreamTranslator::new(t)));
        if hold_end {
            proc.watch_done = true;
        }
        let recording = crate::otel::recording(outcome.meta.trace.as_deref());
        proc.watch_finish = recording;
        if record_text && detector.is_some() {
            proc.texts = Some(Vec::new());
        }
        let mut held = Batch::default();
        // The chunk loop runs outside the request's span (entering it on every poll costs a
        // microsecond or more per stream); the end of the stream, which settles and logs, runs
        // inside it.
        let pumped_from = recording.then(std::time::Instant::now);
        let result = pump(upstream, &tx, &mut proc, &mut held, limits).await;
        async move {
            if let Some(report) = proc.report() {
                for (entity, n) in &report.findings {
                    counters
                        .pii_findings
                        .with_label_values(&[entity.as_str(), "response"])
                        .inc_by(u64::from(*n));
                }
                outcome.meta.redacted_response = proc.recorded_text(&report);
                outcome.meta.pii_response = Some(report);
            }
            if let Some(t) = &mut outcome.meta.trace {
                if let (Some(from), true) = (pumped_from, detector.is_some()) {
                    // The answer was scanned as it streamed.
                    t.mark(crate::otel::Decision::ResponseScan, from);
                }
                t.finish_reasons(proc.finish_reasons.drain(..));
            }
            match result {
                Pump::Done => {
                    // The last bytes (and the body's end, when this task drops `tx`) wait for the
                    // enforcement's release.
                    outcome
                        .settle(&Settled {
                            status: http::StatusCode::OK,
                            usage: proc.usage,
                        })
                        .wait()
                        .await;
                    if let Some(last) = held.take() {
                        let _ = tx.send(Ok(last)).await;
                    }
                }
                Pump::Broken(e) => {
                    if let Some(last) = held.take() {
                        let _ = tx.send(Ok(last)).await;
                    }
                    let _ = tx.send(Err(StreamError(e))).await;
                    // The caller's response is already broken: nothing waits for the release.
                    drop(outcome.fail(&Failure::StreamBroken));
                    stream_broken(&counters);
                }
                Pump::Cut(why) => {
                    // The provider went quiet or talked too long: what was held back goes out
                    // (redacted), then an error event says why, and the stream ends cleanly.
                    tracing::warn!(
                        code = why.code(),
                        "stream ended by the gateway: {}",
                        why.message()
                    );
                    let mut out = BytesMut::new();
                    if let Ok(rest) = proc.finish() {
                        out.extend_from_slice(&rest);
                    }
                    typed::error_event(format, why.code(), &why.message(), &mut out);
                    if let Some(last) = held.take() {
                        let _ = tx.send(Ok(last)).await;
                    }
                    let _ = tx.send(Ok(out.freeze())).await;
                    drop(outcome.fail(&Failure::StreamBroken));
                    stream_broken(&counters);
                }
                // The guard's drop reports the cancellation.
                Pump::Cancelled => drop(outcome),
            }
        }
        .instrument(span)
        .await;
    });
    GatewayBody::channel(rx)
}

/// A stream the provider broke or the gateway cut: `stream_broken`, blamed on the provider.
fn stream_broken(counters: &StreamCounters) {
    counters
        .errors
        .with_label_values(&["stream_broken", "upstream"])
        .inc();
}

enum Pump {
    Done,
    Broken(String),
    /// Ended by the gateway's own limits.
    Cut(Cut),
    Cancelled,
}

/// Bounds on one relayed stream: how long the provider may stay silent between frames, and
/// how many bytes it may send in all.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub idle_timeout: std::time::Duration,
    pub max_bytes: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            // Reasoning models may think for minutes between tokens.
            idle_timeout: std::time::Duration::from_secs(300),
            max_bytes: 64 << 20,
        }
    }
}

/// Why the gateway ended a stream.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Idle(std::time::Duration),
    TooLong(usize),
}

impl Cut {
    fn code(self) -> &'static str {
        match self {
            Self::Idle(_) => "stream_idle_timeout",
            Self::TooLong(_) => "stream_too_long",
        }
    }

    fn message(self) -> String {
        match self {
            Self::Idle(d) => format!(
                "the provider sent nothing for {} ms; the gateway ended the stream",
                d.as_millis()
            ),
            Self::TooLong(n) => format!(
                "the provider's stream passed the gateway's limit of {n} bytes; the gateway ended it"
            ),
        }
    }
}

/// Relay until the provider's stream ends. Output from the `[DONE]` event on goes into `held`
/// instead when `proc.watch_done` is set.
async fn pump(
    mut body: UpstreamBody,
    tx: &mpsc::Sender<Result<Bytes, StreamError>>,
    proc: &mut SseProcessor<'_>,
    held: &mut Batch,
    limits: StreamLimits,
) -> Pump {
    // One timer for the whole stream. A frame only notes when it came; the timer is moved
    // when it fires early (re-arming it on every frame would cost a timer-wheel update each).
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut last_frame = tokio::time::Instant::now();
    let mut total = 0usize;
    loop {
        let first = tokio::select! {
            biased;
            () = tx.closed() => return Pump::Cancelled,
            f = body.frame() => f,
            () = &mut idle => {
                let due = last_frame + limits.idle_timeout;
                if due <= tokio::time::Instant::now() {
                    return Pump::Cut(Cut::Idle(limits.idle_timeout));
                }
                idle.as_mut().reset(due);
                continue;
            }
        };
        last_frame = tokio::time::Instant::now();
        if over_limit(&first, &mut total, limits.max_bytes) {
            return Pump::Cut(Cut::TooLong(limits.max_bytes));
        }
        // Take every frame that is already here too, so one write carries them all: a provider
        // writes each SSE event as its own chunk, and relaying them one by one would cost a
        // syscall (and a TCP segment) per event.
        let mut batch = Batch::default();
        let mut end = step(first, proc, &mut batch);
        // hyper's connection task hands the body over chunk by chunk, so a
        // frame that is already in our socket buffer needs that task to run once more: let it
        // run once, and stop batching as soon as that brings nothing new.
        let mut yielded = false;
        while end.is_none() && batch.frames < MAX_BATCH_FRAMES {
            match try_frame(&mut body) {
                Some(f) => {
                    if over_limit(&f, &mut total, limits.max_bytes) {
                        return Pump::Cut(Cut::TooLong(limits.max_bytes));
                    }
                    end = step(f, proc, &mut batch);
                    yielded = false;
                }
                None if !yielded => {
                    run_others_once().await;
                    yielded = true;
                }
                None => break,
            }
        }
        if let Some(out) = batch.take() {
            if proc.watch_done && proc.done_seen {
                held.push(out);
            } else if tx.send(Ok(out)).await.is_err() {
                return Pump::Cancelled;
            }
        }
        if let Some(end) = end {
            return end;
        }
    }
}

type UpstreamFrame = Option<Result<http_body::Frame<Bytes>, hyper::Error>>;

/// Count a frame's bytes into `total`; true once it passes `max`.
fn over_limit(frame: &UpstreamFrame, total: &mut usize, max: usize) -> bool {
    if let Some(Ok(f)) = frame {
        *total = total.saturating_add(f.data_ref().map_or(0, Bytes::len));
    }
    *total > max
}

/// Handle one upstream frame; `Some` when the stream ended.
fn step(frame: UpstreamFrame, proc: &mut SseProcessor<'_>, batch: &mut Batch) -> Option<Pump> {
    match frame {
        None => match proc.finish() {
            Ok(out) => {
                batch.push(out);
                Some(Pump::Done)
            }
            Err(e) => Some(Pump::Broken(e)),
        },
        Some(Err(e)) => Some(Pump::Broken(format!("provider stream failed: {e}"))),
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => match proc.push(data) {
                Ok(out) => {
                    batch.push(out);
                    None
                }
                Err(e) => Some(Pump::Broken(e)),
            },
            Err(_) => None,
        },
    }
}

/// Let the tasks already queued on this thread (the provider connection's, woken by
/// [`try_frame`] asking for the next chunk) run before this one continues. Unlike
/// `tokio::task::yield_now`, which defers the task until the runtime has polled its I/O driver
/// (an `epoll_wait` system call per yield, eight per streamed answer), this goes straight to the
/// back of the run queue.
async fn run_others_once() {
    let mut woke = false;
    std::future::poll_fn(|cx| {
        if woke {
            std::task::Poll::Ready(())
        } else {
            woke = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// The next frame if it is already available, without waiting.
fn try_frame(body: &mut UpstreamBody) -> Option<UpstreamFrame> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match http_body::Body::poll_frame(std::pin::Pin::new(body), &mut cx) {
        std::task::Poll::Ready(f) => Some(f),
        std::task::Poll::Pending => None,
    }
}

/// Output of several frames, copied only when there is more than one.
#[derive(Default)]
struct Batch {
    first: Option<Bytes>,
    more: Option<BytesMut>,
    frames: usize,
}

impl Batch {
    fn push(&mut self, b: Bytes) {
        self.frames += 1;
        if b.is_empty() {
            return;
        }
        match (&mut self.first, &mut self.more) {
            (None, None) => self.first = Some(b),
            (Some(f), None) => {
                let mut m = BytesMut::with_capacity(f.len() + b.len() * 4);
                m.extend_from_slice(f);
                m.extend_from_slice(&b);
                self.first = None;
                self.more = Some(m);
            }
            (_, Some(m)) => m.extend_from_slice(&b),
        }
    }

    fn take(&mut self) -> Option<Bytes> {
        match (self.first.take(), self.more.take()) {
            (_, Some(m)) => Some(m.freeze()),
            (f, None) => f,
        }
    }
}
