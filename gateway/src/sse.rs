//! Relaying a provider's SSE stream: usage capture, the hidden usage chunk, and response-side
//! PII through the detector's incremental redactor — without buffering the stream.
//!
//! A task reads the provider body and feeds a bounded channel that is the caller's body. Each
//! upstream frame is split into complete events (`\n\n`); only an incomplete tail event waits
//! for the next frame. An event that needs no change is forwarded as the provider's bytes.
//! With response scanning on, each choice's `delta.content` (or legacy `text`) goes through its
//! own [`StreamRedactor`], which holds back at most `max_holdback_bytes` so that a card number
//! split across chunks is still caught; the held text is released into later chunks and
//! flushed into the chunk that carries the choice's `finish_reason`. Text already flushed
//! cannot be retracted, so `block` on a streamed response acts as `redact`.
//!
//! The usage chunk (`choices: []`, `usage: {...}`, requested upstream for budgets) is read for
//! the hooks and dropped unless the caller asked for it. Ending: a clean end settles the
//! request with that usage; an upstream error fails it (`StreamBroken`); a dropped caller body
//! (client gone) is noticed at once through `Sender::closed` and reported as a mid-stream
//! cancellation by the `Outcome` guard.
//!
//! Not here: tool-call argument deltas in streams are passed through unscanned.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use memchr::memmem;
use policy_engine::pii::{PiiDetector, RedactionSession, StreamRedactor};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::body::{GatewayBody, StreamError};
use crate::hooks::{Failure, Outcome, Settled, Usage};
use crate::metrics::Metrics;
use crate::pack::ActivePack;
use crate::policy;

/// Frames buffered between the stream task and the caller.
const CHANNEL_FRAMES: usize = 16;
/// An event larger than this is a broken stream, not something to buffer.
const MAX_EVENT_BYTES: usize = 1 << 20;
/// Choices per response a stream redactor is kept for.
const MAX_CHOICES: usize = 64;

/// Start relaying `upstream` to the caller; returns the caller's body.
pub(crate) fn relay(
    upstream: Incoming,
    mut outcome: Outcome,
    pack: Arc<ActivePack>,
    wants_usage: bool,
    metrics: Metrics,
    in_flight: crate::service::InFlight,
) -> GatewayBody {
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    outcome.streaming();
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let detector = if pack.scan_response {
            pack.compiled.pii.as_ref()
        } else {
            None
        };
        let mut proc = SseProcessor::new(detector, wants_usage);
        let result = pump(upstream, &tx, &mut proc).await;
        if let Some(report) = proc.report() {
            for (entity, n) in &report.findings {
                metrics
                    .pii_findings
                    .with_label_values(&[entity.as_str(), "response"])
                    .inc_by(u64::from(*n));
            }
            outcome.meta.pii_response = Some(report);
        }
        match result {
            Pump::Done => outcome.settle(&Settled {
                status: http::StatusCode::OK,
                usage: proc.usage,
            }),
            Pump::Broken(e) => {
                let _ = tx.send(Err(StreamError(e))).await;
                outcome.fail(&Failure::StreamBroken);
            }
            // The guard's drop reports the cancellation.
            Pump::Cancelled => drop(outcome),
        }
    });
    GatewayBody::channel(rx)
}

enum Pump {
    Done,
    Broken(String),
    Cancelled,
}

async fn pump(
    mut body: Incoming,
    tx: &mpsc::Sender<Result<Bytes, StreamError>>,
    proc: &mut SseProcessor<'_>,
) -> Pump {
    loop {
        let frame = tokio::select! {
            biased;
            () = tx.closed() => return Pump::Cancelled,
            f = body.frame() => f,
        };
        let out = match frame {
            None => {
                let tail = proc.finish();
                if !tail.is_empty() && tx.send(Ok(tail)).await.is_err() {
                    return Pump::Cancelled;
                }
                return Pump::Done;
            }
            Some(Err(e)) => return Pump::Broken(format!("provider stream failed: {e}")),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => match proc.push(data) {
                    Ok(out) => out,
                    Err(e) => return Pump::Broken(e),
                },
                Err(_) => continue,
            },
        };
        if !out.is_empty() && tx.send(Ok(out)).await.is_err() {
            return Pump::Cancelled;
        }
    }
}

/// The per-stream state: framing, usage, redactors.
pub(crate) struct SseProcessor<'d> {
    detector: Option<&'d PiiDetector>,
    wants_usage: bool,
    pending: BytesMut,
    redactors: Vec<Option<StreamRedactor<'d>>>,
    session: RedactionSession,
    pub(crate) usage: Option<Usage>,
    finished: bool,
}

impl<'d> SseProcessor<'d> {
    pub(crate) fn new(detector: Option<&'d PiiDetector>, wants_usage: bool) -> Self {
        Self {
            detector,
            wants_usage,
            pending: BytesMut::new(),
            redactors: Vec::new(),
            session: RedactionSession::default(),
            usage: None,
            finished: false,
        }
    }

    /// The response-side PII result, when the stream was scanned.
    pub(crate) fn report(&self) -> Option<crate::hooks::PiiReport> {
        let d = self.detector?;
        let rewrites = d.action() != policy_engine::pack::PiiAction::Log;
        let found = self.session.counts().any(|(_, n)| n > 0);
        Some(policy::report(&self.session, d.action(), rewrites && found))
    }

    /// Process one upstream frame; returns the bytes for the caller.
    pub(crate) fn push(&mut self, data: Bytes) -> Result<Bytes, String> {
        // Fast path: nothing pending, the frame is whole events, and none needs a look.
        if self.pending.is_empty()
            && self.detector.is_none()
            && data.ends_with(b"\n\n")
            && memmem::find(&data, b"\"usage\"").is_none()
        {
            return Ok(data);
        }
        self.pending.extend_from_slice(&data);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end).freeze();
            self.event(&event, &mut out);
        }
        if self.pending.len() > MAX_EVENT_BYTES {
            return Err(format!(
                "provider sent an SSE event over {MAX_EVENT_BYTES} bytes"
            ));
        }
        Ok(out.freeze())
    }

    /// The provider's stream ended: flush an incomplete event and any held-back text.
    pub(crate) fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        if !self.pending.is_empty() {
            let event = std::mem::take(&mut self.pending).freeze();
            self.event(&event, &mut out);
        }
        self.flush_all(&mut out);
        out.freeze()
    }

    fn event(&mut self, event: &Bytes, out: &mut BytesMut) {
        let Some(data) = data_field(event) else {
            out.extend_from_slice(event);
            return;
        };
        if data.trim_ascii() == b"[DONE]" {
            self.flush_all(out);
            out.extend_from_slice(event);
            return;
        }
        let may_have_usage = memmem::find(data, b"\"usage\"").is_some();
        if self.detector.is_none() && !may_have_usage {
            out.extend_from_slice(event);
            return;
        }
        let Ok(mut chunk) = serde_json::from_slice::<Value>(data) else {
            out.extend_from_slice(event);
            return;
        };
        if let Some(u) = chunk.get("usage").and_then(parse_usage) {
            self.usage = Some(u);
            let no_choices = chunk
                .get("choices")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if no_choices && !self.wants_usage {
                return;
            }
        }
        if self.detector.is_some() && self.redact_chunk(&mut chunk) {
            write_event(&chunk, out);
        } else {
            out.extend_from_slice(event);
        }
    }

    /// Run each choice's text through its redactor; true when the chunk changed.
    fn redact_chunk(&mut self, chunk: &mut Value) -> bool {
        let Some(detector) = self.detector else {
            return false;
        };
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return false;
        };
        let mut changed = false;
        let log_only = detector.action() == policy_engine::pack::PiiAction::Log;
        for choice in choices {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(0);
            if index >= MAX_CHOICES {
                continue;
            }
            if self.redactors.len() <= index {
                self.redactors.resize_with(index + 1, || None);
            }
            let finishing = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some((holder, key)) = text_slot(choice) else {
                continue;
            };
            let original = match holder.remove(key) {
                Some(Value::String(t)) => Some(t),
                Some(other) => {
                    holder.insert(key.to_owned(), other);
                    continue;
                }
                None => None,
            };
            let redactor = self.redactors[index].get_or_insert_with(|| detector.stream());
            let mut text = String::new();
            if let Some(t) = &original {
                redactor.push(t, &mut self.session, &mut text);
            }
            if finishing {
                redactor.finish(&mut self.session, &mut text);
                self.redactors[index] = None;
            }
            if log_only {
                // `log` counts findings and never changes what the caller sees.
                if let Some(t) = original {
                    holder.insert(key.to_owned(), Value::String(t));
                }
                continue;
            }
            changed |= original.as_deref() != Some(text.as_str());
            if original.is_some() || !text.is_empty() {
                holder.insert(key.to_owned(), Value::String(text));
            }
        }
        changed
    }

    /// Emit what every redactor still holds, as one extra chunk per choice.
    fn flush_all(&mut self, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        for (index, slot) in self.redactors.iter_mut().enumerate() {
            let Some(mut r) = slot.take() else { continue };
            if self
                .detector
                .is_some_and(|d| d.action() == policy_engine::pack::PiiAction::Log)
            {
                let mut scratch = String::new();
                r.finish(&mut self.session, &mut scratch);
                continue;
            }
            let mut text = String::new();
            r.finish(&mut self.session, &mut text);
            if !text.is_empty() {
                let chunk = serde_json::json!({
                    "object": "chat.completion.chunk",
                    "choices": [{"index": index, "delta": {"content": text}, "finish_reason": null}],
                });
                write_event(&chunk, out);
            }
        }
    }
}

/// Where a choice's streamed text lives: `delta.content` (chat) or `text` (completions).
fn text_slot(choice: &mut Value) -> Option<(&mut serde_json::Map<String, Value>, &'static str)> {
    let obj = choice.as_object_mut()?;
    if obj.contains_key("text") {
        return Some((obj, "text"));
    }
    let delta = obj.get_mut("delta")?.as_object_mut()?;
    Some((delta, "content"))
}

fn write_event(chunk: &Value, out: &mut BytesMut) {
    out.extend_from_slice(b"data: ");
    if let Ok(s) = serde_json::to_vec(chunk) {
        out.extend_from_slice(&s);
    }
    out.extend_from_slice(b"\n\n");
}

/// End of the first complete event (after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `data:` payload of an event with a single data line (what providers send).
fn data_field(event: &[u8]) -> Option<&[u8]> {
    let mut found = None;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            if found.is_some() {
                return None; // multi-line data: pass through untouched
            }
            found = Some(rest.strip_prefix(b" ").unwrap_or(rest));
        }
    }
    found
}

pub(crate) fn parse_usage(v: &Value) -> Option<Usage> {
    let o = v.as_object()?;
    let n = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
        total_tokens: n("total_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str) -> String {
        format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
            serde_json::to_string(content).unwrap()
        )
    }

    const USAGE: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\n";

    #[test]
    fn events_pass_through_unchanged_and_usage_is_hidden_unless_asked() {
        let mut p = SseProcessor::new(None, false);
        let a = chunk("Hello");
        assert_eq!(p.push(Bytes::from(a.clone())).unwrap(), a.as_bytes());
        let out = p
            .push(Bytes::from(format!("{USAGE}data: [DONE]\n\n")))
            .unwrap();
        assert_eq!(&out[..], b"data: [DONE]\n\n");
        assert_eq!(p.usage.unwrap().total_tokens, 8);

        let mut p = SseProcessor::new(None, true);
        let out = p.push(Bytes::from_static(USAGE.as_bytes())).unwrap();
        assert_eq!(&out[..], USAGE.as_bytes());
    }

    #[test]
    fn an_event_split_across_frames_is_reassembled() {
        let mut p = SseProcessor::new(None, false);
        let whole = format!("{}{USAGE}", chunk("Hi"));
        let (a, b) = whole.split_at(whole.len() - 20);
        let mut out = p.push(Bytes::from(a.to_owned())).unwrap().to_vec();
        out.extend_from_slice(&p.push(Bytes::from(b.to_owned())).unwrap());
        out.extend_from_slice(&p.finish());
        assert_eq!(out, chunk("Hi").as_bytes());
        assert_eq!(p.usage.unwrap().prompt_tokens, 3);
    }

    #[test]
    fn crlf_framed_events_are_split() {
        assert_eq!(event_end(b"data: x\r\n\r\ndata: y"), Some(11));
        assert_eq!(data_field(b"data: x\r\n\r\n"), Some(&b"x"[..]));
    }
}
