//! Typed event streams: Anthropic Messages (`event: content_block_delta` …) and OpenAI
//! Responses (`event: response.output_text.delta` …), read and edited in the relay's framing
//! ([`SseProcessor`], `format` other than chunks).
//!
//! Every event's `type` is read. Usage is taken from Anthropic's `message_start` and
//! `message_delta` (merged, the later count of a field winning) and from the Responses API's
//! terminal `response.completed` / `response.incomplete` / `response.failed`. With response
//! scanning on:
//!
//! - A text delta goes through the redactor of its stream of text, as a chat choice's content
//!   does: Anthropic's `text_delta`, `input_json_delta` (tool-call arguments as partial JSON)
//!   and `thinking_delta` per content block; every Responses `*.delta` event with a string
//!   `delta` (output text, function-call arguments, refusals, reasoning, transcripts) per
//!   (type, `output_index`, `content_index`/`summary_index`). The released text replaces the
//!   delta in place; an event whose text is all held back is not sent. A placeholder is
//!   `[EMAIL_1]`-like text without quotes or backslashes, so a redacted argument stays valid
//!   JSON.
//! - The end of a text stream (`content_block_stop`; a Responses `*.done` event; the terminal
//!   event; the provider's end) releases what its redactor holds, as one more delta event of
//!   the same kind ahead of it.
//! - Every other event — `message_start`, `content_block_start` (a tool call's name and input),
//!   `message_delta`, `error`, the Responses API's `*.done`, `output_item.*` and
//!   `response.completed` events, which repeat the whole text, and any type the gateway does not
//!   know — has every text string scanned whole, with the same session, so a value gets the
//!   placeholder its deltas got.
//!
//! Log probabilities repeat the text token by token, where a value split over tokens cannot be
//! found: with the answer scanned, a Responses event's top-level `logprobs` are emptied (those
//! nested in `response.completed` are scanned token by token). Redacted thinking text no longer
//! matches its `signature`: a caller that sends such a thinking block back in a later turn gets
//! Anthropic's refusal of the signature, the price of never passing a finding through.
//!
//! Not scanned: `response.audio.delta` (base64 audio), `signature_delta` and `ping`.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use policy_engine::pii::StreamRedactor;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::chunk::SseProcessor;
use super::framing::{data_lines, Data};
use super::StreamFormat;
use crate::json_splice::Present;
use crate::json_splice::{self, Splice};
use crate::openai::{usage_fields_raw, UsageFields};
use crate::policy;

/// Open streams of text (content blocks, output parts) one stream may have at once; one more
/// fails the stream rather than pass unscanned.
const MAX_OPEN_TEXTS: usize = 256;

/// The typed formats' per-stream state.
#[derive(Default)]
pub(crate) struct TypedState<'d> {
    open: Vec<OpenText<'d>>,
    usage: Option<UsageFields>,
}

struct OpenText<'d> {
    key: TextKey,
    redactor: StreamRedactor<'d>,
}

/// Which stream of text a delta belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TextKey {
    /// Anthropic: the delta's type (`text_delta`…); Responses: the event type without
    /// `.delta` (`response.output_text`…).
    family: Box<str>,
    /// Anthropic: the content block's `index`; Responses: `output_index`.
    index: u64,
    /// Responses: `content_index` or `summary_index`, by name.
    sub: Option<(&'static str, u64)>,
}

/// The fields of a typed event the relay reads, borrowed from it.
#[derive(Deserialize)]
struct EventPeek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    index: Present<'a>,
    #[serde(borrow, default)]
    delta: Present<'a>,
    #[serde(borrow, default)]
    usage: Present<'a>,
    #[serde(borrow, default)]
    message: Present<'a>,
    #[serde(borrow, default)]
    response: Present<'a>,
    #[serde(borrow, default)]
    output_index: Present<'a>,
    #[serde(borrow, default)]
    content_index: Present<'a>,
    #[serde(borrow, default)]
    summary_index: Present<'a>,
    #[serde(borrow, default)]
    item_id: Present<'a>,
    #[serde(borrow, default)]
    sequence_number: Present<'a>,
    #[serde(borrow, default)]
    logprobs: Present<'a>,
}

/// An Anthropic content-block delta.
#[derive(Deserialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Present<'a>,
    #[serde(borrow, default)]
    partial_json: Present<'a>,
    #[serde(borrow, default)]
    thinking: Present<'a>,
}

#[derive(Deserialize)]
struct WithUsage<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

/// The text field of an Anthropic delta type.
fn anthropic_field(kind: &str) -> Option<&'static str> {
    match kind {
        "text_delta" => Some("text"),
        "input_json_delta" => Some("partial_json"),
        "thinking_delta" => Some("thinking"),
        _ => None,
    }
}

fn number(p: &Present<'_>) -> Option<u64> {
    p.0.and_then(|r| serde_json::from_str::<u64>(r.get()).ok())
}

static MESSAGE_STOP: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"message_stop"));
static RESPONSE_END: LazyLock<[memmem::Finder<'static>; 3]> = LazyLock::new(|| {
    [
        memmem::Finder::new(b"response.completed"),
        memmem::Finder::new(b"response.incomplete"),
        memmem::Finder::new(b"response.failed"),
    ]
});

/// Whether `data` may hold the stream's terminal event.
pub(super) fn may_end(format: StreamFormat, data: &[u8]) -> bool {
    match format {
        StreamFormat::Anthropic => MESSAGE_STOP.find(data).is_some(),
        StreamFormat::Responses => RESPONSE_END.iter().any(|f| f.find(data).is_some()),
        StreamFormat::Chunks => false,
    }
}

fn is_terminal(format: StreamFormat, kind: &str) -> bool {
    match format {
        StreamFormat::Anthropic => kind == "message_stop",
        StreamFormat::Responses => matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed"
        ),
        StreamFormat::Chunks => false,
    }
}

/// The error event a stream the gateway ends carries, in the stream's format.
pub(super) fn error_event(format: StreamFormat, code: &str, message: &str, out: &mut BytesMut) {
    let (name, body) = match format {
        StreamFormat::Anthropic => (
            Some("error"),
            serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message, "code": code}}),
        ),
        StreamFormat::Responses => (
            Some("error"),
            serde_json::json!({"type": "error", "code": code, "message": message, "param": null}),
        ),
        StreamFormat::Chunks => (
            None,
            serde_json::json!({"error": {"message": message, "type": "api_error", "code": code}}),
        ),
    };
    write_named(name, &body, out);
}

/// One SSE event: an `event:` line when named, the data as one line of JSON.
pub(super) fn write_named(name: Option<&str>, data: &Value, out: &mut BytesMut) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    if let Ok(s) = serde_json::to_vec(data) {
        out.extend_from_slice(&s);
    }
    out.extend_from_slice(b"\n\n");
}

impl<'d> SseProcessor<'d> {
    /// One typed event (`data`: its data field, inside `event`).
    pub(super) fn typed_event(
        &mut self,
        event: &Bytes,
        data: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), String> {
        let peek = match serde_json::from_slice::<EventPeek<'_>>(data) {
            Ok(p) => p,
            // Nothing to scan: an event the relay cannot read passes as it came.
            Err(_) if self.detector.is_none() => {
                out.extend_from_slice(event);
                return Ok(());
            }
            Err(e) => return Err(format!("provider stream event cannot be scanned: {e}")),
        };
        if self.format == StreamFormat::Responses && self.detector.is_some() && !self.log_only() {
            // Log probabilities repeat the text token by token, where a value split over tokens
            // cannot be found: with the answer scanned they are emptied.
            if let Some(lp) = peek
                .logprobs
                .0
                .filter(|r| !matches!(r.get(), "[]" | "null"))
            {
                let at = json_splice::span(event, lp)
                    .ok_or_else(|| "internal: logprobs lost their place".to_owned())?;
                let mut strip = Splice::default();
                strip.replace(at, b"[]".to_vec());
                let stripped = strip
                    .apply(event)
                    .ok_or_else(|| "internal: logprobs lost their place".to_owned())?;
                let Data::One(data) = data_lines(&stripped) else {
                    return Err("internal: an edited event lost its data".to_owned());
                };
                return self.typed_event(&stripped, data, out);
            }
        }
        self.typed_usage(&peek);
        let kind = peek.kind.as_ref();
        let terminal = is_terminal(self.format, kind);
        if self.detector.is_none() {
            out.extend_from_slice(event);
            self.done_seen |= terminal;
            return Ok(());
        }
        let scan_err =
            |e: serde_json::Error| format!("provider stream event cannot be scanned: {e}");
        match self.format {
            StreamFormat::Anthropic => match kind {
                "content_block_delta"
                    if self.anthropic_delta(event, &peek, out).map_err(scan_err)? =>
                {
                    return Ok(());
                }
                "content_block_stop" => {
                    let index = number(&peek.index).unwrap_or(0);
                    self.flush_texts(|k| k.index == index, None, out);
                    out.extend_from_slice(event);
                    return Ok(());
                }
                "ping" => {
                    out.extend_from_slice(event);
                    return Ok(());
                }
                _ => {}
            },
            StreamFormat::Responses => {
                if kind == "response.audio.delta" {
                    // Base64 audio: no text, and an edit would corrupt it.
                    out.extend_from_slice(event);
                    return Ok(());
                }
                if let Some(family) = kind.strip_suffix(".delta") {
                    if family != "response.audio"
                        && self
                            .responses_delta(event, family, &peek, out)
                            .map_err(scan_err)?
                    {
                        return Ok(());
                    }
                } else if let Some(family) = kind.strip_suffix(".done") {
                    let index = number(&peek.output_index).unwrap_or(0);
                    let sub = sub_index(&peek);
                    self.flush_texts(
                        |k| &*k.family == family && k.index == index && k.sub == sub,
                        Some(&peek),
                        out,
                    );
                }
            }
            StreamFormat::Chunks => {}
        }
        if terminal {
            self.flush_texts(|_| true, Some(&peek), out);
        }
        // Scanned whole: every text string, with the stream's session.
        let offset = (data.as_ptr() as usize).wrapping_sub(event.as_ptr() as usize);
        let mut splice = Splice::default();
        let rewrite = !self.log_only();
        if let Some(det) = self.detector {
            policy::scan_into(det, data, &mut self.session, rewrite, offset, &mut splice)
                .map_err(scan_err)?;
        }
        emit(event, splice, out)?;
        self.done_seen |= terminal;
        Ok(())
    }

    /// Usage from the events that carry it.
    fn typed_usage(&mut self, peek: &EventPeek<'_>) {
        let holder = match (self.format, peek.kind.as_ref()) {
            (StreamFormat::Anthropic, "message_start") => peek.message.0,
            (StreamFormat::Anthropic, "message_delta") => {
                if let Some(f) = peek.usage.0.and_then(usage_fields_raw) {
                    self.merge_usage(f);
                }
                return;
            }
            (StreamFormat::Responses, k) if is_terminal(StreamFormat::Responses, k) => {
                peek.response.0
            }
            _ => None,
        };
        let fields = holder
            .and_then(|h| json_splice::object::<WithUsage<'_>>(h).ok().flatten())
            .and_then(|w| w.usage)
            .and_then(usage_fields_raw);
        if let Some(f) = fields {
            self.merge_usage(f);
        }
    }

    fn merge_usage(&mut self, f: UsageFields) {
        let merged = self.typed.usage.get_or_insert_with(UsageFields::default);
        merged.merge(f);
        self.usage = Some(merged.usage());
    }

    /// An Anthropic `content_block_delta`; false when its delta is of a kind that is scanned
    /// whole instead.
    fn anthropic_delta(
        &mut self,
        event: &Bytes,
        peek: &EventPeek<'_>,
        out: &mut BytesMut,
    ) -> Result<bool, serde_json::Error> {
        let Some(delta) = peek.delta.0 else {
            return Ok(false);
        };
        let Some(d) = json_splice::object::<BlockDelta<'_>>(delta)? else {
            return Ok(false);
        };
        let raw = match d.kind.as_ref() {
            "text_delta" => d.text.0,
            "input_json_delta" => d.partial_json.0,
            "thinking_delta" => d.thinking.0,
            _ => None,
        };
        let Some(raw) = raw else {
            return Ok(false);
        };
        let key = TextKey {
            family: d.kind.as_ref().into(),
            index: number(&peek.index).unwrap_or(0),
            sub: None,
        };
        let collect = d.kind == "text_delta";
        self.redact_delta(event, raw, key, collect, out)
    }

    /// A Responses `*.delta` event whose `delta` is a string; false otherwise.
    fn responses_delta(
        &mut self,
        event: &Bytes,
        family: &str,
        peek: &EventPeek<'_>,
        out: &mut BytesMut,
    ) -> Result<bool, serde_json::Error> {
        let Some(raw) = peek.delta.0.filter(|r| r.get().starts_with('"')) else {
            return Ok(false);
        };
        let key = TextKey {
            family: family.into(),
            index: number(&peek.output_index).unwrap_or(0),
            sub: sub_index(peek),
        };
        let collect = family == "response.output_text";
        self.redact_delta(event, raw, key, collect, out)
    }

    /// Run one delta's text (`raw`, a JSON string inside `event`) through its stream's
    /// redactor and write the event with what is released (nothing while all is held).
    fn redact_delta(
        &mut self,
        event: &Bytes,
        raw: &RawValue,
        key: TextKey,
        collect: bool,
        out: &mut BytesMut,
    ) -> Result<bool, serde_json::Error> {
        let (Some(detector), Some(original)) = (self.detector, json_splice::string(raw)) else {
            return Ok(false);
        };
        let at = match self.typed.open.iter().position(|o| o.key == key) {
            Some(at) => at,
            None => {
                if self.typed.open.len() >= MAX_OPEN_TEXTS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_OPEN_TEXTS} streams of text open at once"
                    )));
                }
                self.typed.open.push(OpenText {
                    key,
                    redactor: detector.stream(),
                });
                self.typed.open.len() - 1
            }
        };
        let mut text = String::new();
        self.typed.open[at]
            .redactor
            .push(&original, &mut self.session, &mut text);
        if collect {
            self.collect(0, &text);
        }
        if self.log_only() || original == text.as_str() {
            out.extend_from_slice(event);
        } else if !text.is_empty() {
            let at = json_splice::span(event, raw)
                .ok_or_else(|| serde::de::Error::custom("a delta lost its place"))?;
            let mut splice = Splice::default();
            splice.replace_string(at, &text);
            emit(event, splice, out).map_err(serde::de::Error::custom)?;
        }
        // All held back: the event is not sent (a later delta or the end releases the text).
        Ok(true)
    }

    /// End the streams of text `which` selects: what their redactors hold goes out as one more
    /// delta each, ahead of the event that ended them (`by`, whose ids it borrows).
    fn flush_texts(
        &mut self,
        which: impl Fn(&TextKey) -> bool,
        by: Option<&EventPeek<'_>>,
        out: &mut BytesMut,
    ) {
        let log_only = self.log_only();
        let mut i = 0;
        while i < self.typed.open.len() {
            if !which(&self.typed.open[i].key) {
                i += 1;
                continue;
            }
            let OpenText { key, mut redactor } = self.typed.open.remove(i);
            let mut text = String::new();
            redactor.finish(&mut self.session, &mut text);
            let collect = matches!(&*key.family, "text_delta" | "response.output_text");
            if collect {
                self.collect(0, &text);
            }
            if !log_only && !text.is_empty() {
                self.write_delta(&key, text, by, out);
            }
        }
    }

    /// A delta event of `key`'s kind carrying `text`.
    fn write_delta(
        &self,
        key: &TextKey,
        text: String,
        by: Option<&EventPeek<'_>>,
        out: &mut BytesMut,
    ) {
        match self.format {
            StreamFormat::Anthropic => {
                let field = anthropic_field(&key.family).unwrap_or("text");
                let mut delta = Map::new();
                delta.insert("type".into(), Value::String(key.family.to_string()));
                delta.insert(field.into(), Value::String(text));
                let data = serde_json::json!({"type": "content_block_delta", "index": key.index, "delta": delta});
                write_named(Some("content_block_delta"), &data, out);
            }
            StreamFormat::Responses | StreamFormat::Chunks => {
                let kind = format!("{}.delta", key.family);
                let mut data = Map::new();
                data.insert("type".into(), Value::String(kind.clone()));
                if let Some(id) = by.and_then(|p| p.item_id.0).and_then(json_splice::string) {
                    data.insert("item_id".into(), Value::String(id.into_owned()));
                }
                data.insert("output_index".into(), Value::from(key.index));
                if let Some((name, n)) = key.sub {
                    data.insert(name.into(), Value::from(n));
                }
                data.insert("delta".into(), Value::String(text));
                if &*key.family == "response.output_text" {
                    data.insert("logprobs".into(), Value::Array(Vec::new()));
                }
                if let Some(n) = by.and_then(|p| number(&p.sequence_number)) {
                    data.insert("sequence_number".into(), Value::from(n));
                }
                write_named(Some(&kind), &Value::Object(data), out);
            }
        }
    }

    /// The provider's stream ended: what every open stream of text holds goes out.
    pub(super) fn flush_typed(&mut self, out: &mut BytesMut) {
        self.flush_texts(|_| true, None, out);
    }
}

fn sub_index(peek: &EventPeek<'_>) -> Option<(&'static str, u64)> {
    number(&peek.content_index)
        .map(|n| ("content_index", n))
        .or_else(|| number(&peek.summary_index).map(|n| ("summary_index", n)))
}

/// `event` with `splice` applied, into `out`.
fn emit(event: &Bytes, splice: Splice, out: &mut BytesMut) -> Result<(), String> {
    if splice.is_empty() {
        out.extend_from_slice(event);
        return Ok(());
    }
    let edited = splice
        .apply(event)
        .ok_or_else(|| "internal: a stream event field lost its place".to_owned())?;
    out.extend_from_slice(&edited);
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use policy_engine::pii::{PiiDetector, RedactionSession};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::super::chunk::SseProcessor;
    use super::super::StreamFormat;

    fn redacting() -> PiiDetector {
        PiiDetector::compile(&policy_engine::pack::PiiDetectorConfig::default(), None).unwrap()
    }

    fn sse(name: &str, data: &Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    /// An Anthropic stream: a text block of `text` pieces, a tool-use block of `args` pieces.
    fn anthropic(text: &[String], args: &[String]) -> String {
        let mut s = sse(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "m", "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        );
        s += &sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        for t in text {
            s += &sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
            );
        }
        s += &sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        );
        s += &sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}}),
        );
        for a in args {
            s += &sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": a}}),
            );
        }
        s += &sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 1}),
        );
        s += &sse(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
        );
        s += &sse("message_stop", &json!({"type": "message_stop"}));
        s
    }

    /// A Responses stream: output text of `text` pieces, a function call of `args` pieces.
    fn responses(text: &[String], args: &[String]) -> String {
        let mut s = sse(
            "response.created",
            &json!({"type": "response.created", "response": {"id": "r", "output": [], "usage": null}}),
        );
        for t in text {
            s += &sse(
                "response.output_text.delta",
                &json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": t}),
            );
        }
        s += &sse(
            "response.output_text.done",
            &json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": text.concat()}),
        );
        for a in args {
            s += &sse(
                "response.function_call_arguments.delta",
                &json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": a}),
            );
        }
        s += &sse(
            "response.function_call_arguments.done",
            &json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1, "arguments": args.concat()}),
        );
        s += &sse(
            "response.completed",
            &json!({"type": "response.completed", "response": {"id": "r", "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": text.concat()}]},
                       {"type": "function_call", "call_id": "call_1", "arguments": args.concat()}],
            "usage": {"input_tokens": 9, "output_tokens": 12, "total_tokens": 21}}}),
        );
        s
    }

    fn run(
        format: StreamFormat,
        det: &PiiDetector,
        stream: &[u8],
        cuts: &[usize],
    ) -> (String, u64) {
        let mut p = SseProcessor::with_format(format, Some(det), false);
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            let cut = cut.clamp(at, stream.len());
            out.extend_from_slice(&p.push(Bytes::copy_from_slice(&stream[at..cut])).unwrap());
            at = cut;
        }
        out.extend_from_slice(&p.finish().unwrap());
        (
            String::from_utf8(out).unwrap(),
            p.usage.unwrap().total_tokens,
        )
    }

    /// Every event's data, with its `event:` name checked against its `type`.
    fn datas(out: &str) -> Vec<Value> {
        out.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(
                    name.strip_prefix("event: ").unwrap(),
                    v["type"].as_str().unwrap()
                );
                v
            })
            .collect()
    }

    /// `s` cut at the char boundaries nearest to `cuts` (as fractions of its length).
    fn pieces(s: &str, cuts: &[proptest::sample::Index]) -> Vec<String> {
        let mut at: Vec<usize> = cuts
            .iter()
            .map(|i| {
                let mut k = i.index(s.len() + 1);
                while !s.is_char_boundary(k) {
                    k -= 1;
                }
                k
            })
            .collect();
        at.sort_unstable();
        at.dedup();
        let mut out = Vec::new();
        let mut from = 0;
        for k in at.into_iter().chain(std::iter::once(s.len())) {
            out.push(s[from..k].to_owned());
            from = k;
        }
        out
    }

    /// Builds a provider stream from text pieces and argument pieces.
    type Build = fn(&[String], &[String]) -> String;

    const TEXT: &str = "Mail ann@example.com or call 415-555-0134 now, ü 雪.";
    const ARGS: &str = r#"{"to": "ann@example.com", "card": "4111 1111 1111 1111", "n": 2}"#;

    #[test]
    fn logprobs_are_emptied_and_audio_passes_when_answers_are_scanned() {
        let det = redacting();
        let audio = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAESsAACJWAAACABAAZGF0YQAAAAA4111111111111111";
        let stream = sse(
            "response.output_text.delta",
            &json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0,
            "delta": "Hi ", "logprobs": [{"token": "ann@example.com", "logprob": -0.1, "top_logprobs": []}]}),
        ) + &sse(
            "response.audio.delta",
            &json!({"type": "response.audio.delta", "delta": audio}),
        ) + &sse(
            "response.completed",
            &json!({"type": "response.completed", "response": {"usage": {"input_tokens": 1, "output_tokens": 1}}}),
        );
        let (out, _) = run(StreamFormat::Responses, &det, stream.as_bytes(), &[]);
        assert!(!out.contains("ann@example.com"), "{out}");
        let events = datas(&out);
        let of = |t: &str| events.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
        let text = of("response.output_text.delta");
        assert!(text.iter().all(|e| e["logprobs"] == json!([])), "{out}");
        let said: String = text.iter().map(|e| e["delta"].as_str().unwrap()).collect();
        assert_eq!(said, "Hi ");
        assert_eq!(
            of("response.audio.delta")[0]["delta"],
            audio,
            "audio is not text"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Tool-call arguments and text split across events anywhere, and the stream's bytes
        /// cut into frames anywhere: what the caller receives is the same as for the whole
        /// text in one event — the values redacted, the arguments valid JSON — and the usage
        /// is read.
        #[test]
        fn typed_streams_are_redacted_however_split(
            anthropic_format in any::<bool>(),
            text_cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
            arg_cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
            mut frame_cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..16),
        ) {
            let det = redacting();
            let (format, build): (StreamFormat, Build) = if anthropic_format {
                (StreamFormat::Anthropic, anthropic)
            } else {
                (StreamFormat::Responses, responses)
            };
            let whole = build(&[TEXT.to_owned()], &[ARGS.to_owned()]);
            let split = build(&pieces(TEXT, &text_cuts), &pieces(ARGS, &arg_cuts));
            let mut frames: Vec<usize> = frame_cuts.drain(..).map(|i| i.index(split.len() + 1)).collect();
            frames.sort_unstable();
            let (reference, _) = run(format, &det, whole.as_bytes(), &[]);
            let (out, total) = run(format, &det, split.as_bytes(), &frames);
            prop_assert_eq!(total, 21);
            let (mut text, mut args) = (String::new(), String::new());
            let (mut ref_text, mut ref_args) = (String::new(), String::new());
            for (events, text, args) in [(datas(&out), &mut text, &mut args), (datas(&reference), &mut ref_text, &mut ref_args)] {
                for v in events {
                    match v["type"].as_str().unwrap() {
                        "content_block_delta" if v["index"] == 0 => text.push_str(v["delta"]["text"].as_str().unwrap()),
                        "content_block_delta" => args.push_str(v["delta"]["partial_json"].as_str().unwrap()),
                        "response.output_text.delta" => text.push_str(v["delta"].as_str().unwrap()),
                        "response.function_call_arguments.delta" => args.push_str(v["delta"].as_str().unwrap()),
                        "response.function_call_arguments.done" => prop_assert_eq!(v["arguments"].as_str().unwrap(), args.as_str()),
                        "response.output_text.done" => prop_assert_eq!(v["text"].as_str().unwrap(), text.as_str()),
                        _ => {}
                    }
                }
            }
            let expected = det.redact(TEXT, &mut RedactionSession::default()).into_owned();
            prop_assert_eq!(&text, &expected);
            prop_assert_eq!(&text, &ref_text);
            prop_assert_eq!(&args, &ref_args);
            prop_assert!(!out.contains("ann@example.com") && !out.contains("4111 1111"), "{}", out);
            let parsed: Value = serde_json::from_str(&args).map_err(|e| TestCaseError::fail(format!("{e}: {args}")))?;
            prop_assert_eq!(&parsed["n"], &json!(2));
            prop_assert!(parsed["to"].as_str().unwrap().contains("EMAIL"), "{}", parsed);
        }
    }
}
