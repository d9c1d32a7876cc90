//! One stream chunk read and edited: the fields the relay needs borrowed from the event
//! (`openai::ChunkPeek`), usage captured, each choice's text through its own [`StreamRedactor`], and
//! only changed text spliced back ([`SseProcessor`]).

use bytes::{Bytes, BytesMut};
use policy_engine::pii::{PiiDetector, RedactionSession, StreamRedactor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::framing::{
    data_lines, event_end_after, has_finish_reason, has_usage_object, normalize_lone_cr, Data,
    DONE, MAX_EVENT_BYTES,
};
use crate::json_splice::{self, Objects, Splice};
use crate::openai::{
    parse_usage_raw, ChunkPeek, Delta, FinishReasons, FunctionPeek, StreamChoice, ToolCallPeek,
    Usage, TEXT_FIELDS,
};
use crate::policy::{self, RecordedText};

use super::StreamFormat;

/// Choices per response a stream redactor is kept for; a higher index fails the stream.
const MAX_CHOICES: usize = 64;

/// Most tool calls per choice whose arguments get a redactor each; a call beyond this fails the
/// stream rather than pass unscanned.
const MAX_TOOL_CALLS: usize = 128;

/// The per-stream state: framing, usage, redactors.
pub(crate) struct SseProcessor<'d> {
    /// The event format: chat/completions chunks, or Anthropic's or the Responses API's typed
    /// events (`typed`).
    pub(super) format: StreamFormat,
    pub(super) typed: super::typed::TypedState<'d>,
    /// The provider's stream in the other format, rewritten into the caller's first.
    pub(crate) translate: Option<Box<super::translate::StreamTranslator>>,
    pub(super) detector: Option<&'d PiiDetector>,
    wants_usage: bool,
    pending: BytesMut,
    /// Per choice, one redactor per [`TEXT_FIELDS`] entry.
    redactors: Vec<[Option<StreamRedactor<'d>>; 4]>,
    /// Per choice, one redactor per streamed tool call (its `function.arguments`, by index).
    tool_redactors: Vec<Vec<Option<StreamRedactor<'d>>>>,
    pub(super) session: RedactionSession,
    pub(crate) usage: Option<Usage>,
    pub(super) finished: bool,
    /// Look for the terminal `[DONE]` event even on the fast path.
    pub(crate) watch_done: bool,
    /// The `[DONE]` event has been processed (only tracked with `watch_done`, or when it came
    /// through the slow path).
    pub(crate) done_seen: bool,
    /// Collect the choices' finish reasons (for the request's trace span): events that carry
    /// one leave the fast path.
    pub(crate) watch_finish: bool,
    pub(crate) finish_reasons: Vec<String>,
    /// Per choice, the text the caller received, for the audit record (`None`: not collected).
    pub(crate) texts: Option<Vec<RecordedText>>,
    /// Whether the stream's first bytes were looked at for a byte-order mark.
    started: bool,
    /// Bytes of `pending` already checked for lone carriage returns.
    cr_checked: usize,
    /// Bytes of `pending` already searched for an event end.
    searched: usize,
}

/// A UTF-8 byte-order mark, which SSE drops at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl<'d> SseProcessor<'d> {
    #[cfg(test)]
    pub(crate) fn new(detector: Option<&'d PiiDetector>, wants_usage: bool) -> Self {
        Self::with_format(StreamFormat::Chunks, detector, wants_usage)
    }

    pub(crate) fn with_format(
        format: StreamFormat,
        detector: Option<&'d PiiDetector>,
        wants_usage: bool,
    ) -> Self {
        Self {
            format,
            typed: super::typed::TypedState::default(),
            translate: None,
            detector,
            wants_usage,
            pending: BytesMut::new(),
            redactors: Vec::new(),
            tool_redactors: Vec::new(),
            session: RedactionSession::default(),
            usage: None,
            finished: false,
            watch_done: false,
            done_seen: false,
            watch_finish: false,
            finish_reasons: Vec::new(),
            texts: None,
            started: false,
            cr_checked: 0,
            searched: 0,
        }
    }

    /// The collected text for the audit record: every choice's text, one after the other
    /// (separated by a newline), when it carries no finding as the caller received it — that
    /// is, unless the action is `log` and something was found.
    pub(crate) fn recorded_text(&mut self, report: &crate::policy::PiiReport) -> Option<String> {
        let texts = self.texts.take()?;
        if !report.findings.is_empty() && !report.redacted {
            return None;
        }
        let mut out = RecordedText::default();
        for t in texts {
            out.line(&t.finish());
        }
        Some(out.finish())
    }

    /// Collect streamed text of choice `index`.
    pub(super) fn collect(&mut self, index: usize, text: &str) {
        let Some(texts) = self.texts.as_mut() else {
            return;
        };
        if texts.len() <= index {
            texts.resize_with(index + 1, RecordedText::default);
        }
        texts[index].push(text);
    }

    /// The finish reasons of a chunk's choices (an unreadable chunk adds none).
    fn read_finish_reasons(&mut self, data: &[u8]) {
        if let Ok(c) = serde_json::from_slice::<FinishReasons>(data) {
            self.finish_reasons
                .extend(c.choices.into_iter().filter_map(|c| c.finish_reason));
        }
    }

    /// The pack's PII action is `log`: findings are counted, what the caller sees never changes.
    pub(super) fn log_only(&self) -> bool {
        self.detector
            .is_some_and(|d| d.action() == policy_engine::pack::PiiAction::Log)
    }

    /// The response-side PII result, when the stream was scanned.
    pub(crate) fn report(&self) -> Option<crate::policy::PiiReport> {
        let d = self.detector?;
        let rewrites = d.action() != policy_engine::pack::PiiAction::Log;
        let found = self.session.counts().any(|(_, n)| n > 0);
        Some(policy::report(&self.session, d.action(), rewrites && found))
    }

    /// Process one upstream frame; returns the bytes for the caller.
    pub(crate) fn push(&mut self, data: Bytes) -> Result<Bytes, String> {
        let data = match self.translate.as_mut() {
            Some(t) => t.push(&data)?,
            None => data,
        };
        // Fast path: nothing pending, the frame is whole events, and none needs a look.
        if self.pending.is_empty()
            && self.detector.is_none()
            && data.ends_with(b"\n\n")
            && !has_usage_object(&data)
            && !(self.watch_done && self.may_end(&data))
            && !(self.watch_finish && has_finish_reason(&data))
        {
            return Ok(data);
        }
        self.pending.extend_from_slice(&data);
        let mut out = BytesMut::new();
        if !self.started {
            // A byte-order mark opens the stream, or a prefix of one may (wait for more).
            if self.pending.len() < BOM.len() && BOM.starts_with(&self.pending) {
                return Ok(out.freeze());
            }
            if self.pending.starts_with(BOM) {
                let _ = self.pending.split_to(BOM.len());
            }
            self.started = true;
        }
        // Line ends in any of SSE's three forms: a lone CR becomes LF before framing, so an event
        // ended by CRs is found (and scanned) like any other.
        self.cr_checked = normalize_lone_cr(&mut self.pending, self.cr_checked);
        while let Some(end) = event_end_after(&self.pending, self.searched) {
            let event = self.pending.split_to(end).freeze();
            self.cr_checked = self.cr_checked.saturating_sub(end);
            self.searched = 0;
            self.event(&event, &mut out)?;
        }
        self.searched = self.pending.len();
        if self.pending.len() > MAX_EVENT_BYTES {
            return Err(format!(
                "provider sent an SSE event over {MAX_EVENT_BYTES} bytes"
            ));
        }
        Ok(out.freeze())
    }

    /// The provider's stream ended: flush an incomplete event and any held-back text.
    pub(crate) fn finish(&mut self) -> Result<Bytes, String> {
        if let Some(mut t) = self.translate.take() {
            let tail = t.finish()?;
            let mut out = BytesMut::from(&self.push(tail)?[..]);
            out.extend_from_slice(&self.finish()?);
            if !t.usage_seen() {
                // The provider reported none; what the rewritten events said is not usage.
                self.usage = None;
            }
            return Ok(out.freeze());
        }
        let mut out = BytesMut::new();
        if self.pending.last() == Some(&b'\r') {
            // A CR that ended the stream ends a line.
            if let Some(last) = self.pending.last_mut() {
                *last = b'\n';
            }
        }
        if !self.pending.is_empty() {
            let event = std::mem::take(&mut self.pending).freeze();
            self.event(&event, &mut out)?;
        }
        self.flush_all(&mut out);
        Ok(out.freeze())
    }

    fn event(&mut self, event: &Bytes, out: &mut BytesMut) -> Result<(), String> {
        let data = match data_lines(event) {
            Data::One(d) => d,
            // Comments (keep-alives) and events without data carry no model text.
            Data::None => {
                out.extend_from_slice(event);
                return Ok(());
            }
            // Text split over several data lines cannot be scanned in place: fail closed.
            Data::Many if self.detector.is_some() => {
                return Err(
                    "provider stream event has several data lines; it cannot be scanned".to_owned(),
                )
            }
            Data::Many => {
                out.extend_from_slice(event);
                return Ok(());
            }
        };
        if self.format != StreamFormat::Chunks {
            return self.typed_event(event, data, out);
        }
        if data.trim_ascii() == b"[DONE]" {
            self.flush_all(out);
            out.extend_from_slice(event);
            self.done_seen = true;
            return Ok(());
        }
        if self.watch_finish && has_finish_reason(data) {
            self.read_finish_reasons(data);
        }
        let may_have_usage = has_usage_object(data);
        if self.detector.is_none() && !may_have_usage {
            out.extend_from_slice(event);
            return Ok(());
        }
        let chunk = match serde_json::from_slice::<ChunkPeek<'_>>(data) {
            Ok(c) => c,
            // Not JSON, and nothing to scan (only usage was looked for): forwarded as it came.
            Err(e) if (e.is_syntax() || e.is_eof()) && self.detector.is_none() => {
                out.extend_from_slice(event);
                return Ok(());
            }
            // Not JSON while answers are scanned: text the scan cannot read never passes.
            Err(e) if e.is_syntax() || e.is_eof() => {
                return Err(format!(
                    "provider stream chunk is not JSON, so it cannot be scanned: {e}"
                ))
            }
            // JSON the scan cannot read unambiguously (a repeated key): fail closed.
            Err(e) => return Err(format!("provider stream chunk cannot be scanned: {e}")),
        };
        if let Some(u) = chunk.usage.and_then(parse_usage_raw) {
            self.usage = Some(u);
            let no_choices = chunk.choices.as_ref().is_none_or(|c| c.0.is_empty());
            if no_choices && !self.wants_usage {
                return Ok(());
            }
        }
        let mut splice = Splice::default();
        if let (Some(det), Some(_)) = (self.detector, chunk.error.0) {
            // An error event can echo the prompt: every string of it is scanned.
            let offset = (data.as_ptr() as usize).wrapping_sub(event.as_ptr() as usize);
            let rewrite = !self.log_only();
            policy::scan_into(det, data, &mut self.session, rewrite, offset, &mut splice)
                .map_err(|e| format!("provider stream chunk cannot be scanned: {e}"))?;
        } else if self.detector.is_some() {
            let withheld = self
                .redact_chunk(event, chunk.choices.as_ref(), &mut splice, out)
                .map_err(|e| format!("provider stream chunk cannot be scanned: {e}"))?;
            if withheld && chunk.usage.is_none() {
                // Its only text is held back (a word a later chunk may still turn into a
                // finding): an empty delta would tell the caller nothing.
                return Ok(());
            }
        }
        if splice.is_empty() {
            out.extend_from_slice(event);
        } else {
            let edited = splice
                .apply(event)
                .ok_or_else(|| "internal: a stream chunk field lost its place".to_owned())?;
            out.extend_from_slice(&edited);
        }
        Ok(())
    }

    /// Run each choice's text through its redactor; the changes go into `splice` (of `event`,
    /// from which `choices` borrows). True when the chunk carries nothing but text that is all
    /// held back: every choice is a bare `delta.content` whose text the redactor kept.
    fn redact_chunk(
        &mut self,
        event: &[u8],
        choices: Option<&Objects<StreamChoice<'_>>>,
        splice: &mut Splice,
        before: &mut BytesMut,
    ) -> Result<bool, serde_json::Error> {
        let (Some(detector), Some(choices)) = (self.detector, choices) else {
            return Ok(false);
        };
        let log_only = self.log_only();
        let mut withheld = !choices.0.is_empty() && !log_only;
        for c in &choices.0 {
            // Cleared below only for a choice whose whole content is held back.
            let was_withheld = withheld;
            withheld = false;
            let index = c
                .index
                .0
                .and_then(|i| serde_json::from_str::<u64>(i.get()).ok())
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(0);
            if index >= MAX_CHOICES {
                // Never passed unscanned: the stream ends instead.
                return Err(serde::de::Error::custom(format!(
                    "a choice index of {MAX_CHOICES} or more"
                )));
            }
            if self.redactors.len() <= index {
                self.redactors.resize_with(index + 1, Default::default);
            }
            let finishing = c.finish_reason.0.is_some_and(|f| f.get() != "null");
            if !log_only {
                // Log probabilities repeat the text token by token, where a value split over
                // tokens cannot be found: with the answer scanned they are not sent.
                if let Some(lp) = c.logprobs.0.filter(|r| r.get() != "null") {
                    let at = json_splice::span(event, lp)
                        .ok_or_else(|| serde::de::Error::custom("logprobs lost their place"))?;
                    splice.replace(at, b"null".to_vec());
                }
            }
            // Where the text lives: `text` (completions) or the delta's text fields (chat).
            let (slots, holder, tool_calls) = match c.text.0 {
                Some(t) => ([Some(t), None, None, None], None, None),
                None => {
                    let Some(delta) = c.delta.0 else {
                        if finishing {
                            self.finish_tool_calls(index, before);
                        }
                        continue;
                    };
                    let Some(d) = json_splice::object::<Delta<'_>>(delta)? else {
                        if finishing {
                            self.finish_tool_calls(index, before);
                        }
                        continue;
                    };
                    (d.fields(), Some(delta), d.tool_calls.0)
                }
            };
            for (field, slot) in slots.into_iter().enumerate() {
                let original = match slot {
                    Some(raw) => match json_splice::string(raw) {
                        Some(t) => Some(t),
                        // `null` or another kind of value: nothing to scan here.
                        None => continue,
                    },
                    None => None,
                };
                // A field this choice never streamed has no redactor to push or flush; the
                // answer's field always has one (a finishing chunk flushes it).
                if original.is_none() && field > 0 && self.redactors[index][field].is_none() {
                    continue;
                }
                let redactor =
                    self.redactors[index][field].get_or_insert_with(|| detector.stream());
                let mut text = String::new();
                if let Some(t) = &original {
                    redactor.push(t, &mut self.session, &mut text);
                }
                if finishing {
                    redactor.finish(&mut self.session, &mut text);
                    self.redactors[index][field] = None;
                }
                if field == 0 {
                    self.collect(index, &text);
                }
                if log_only || original.as_deref() == Some(text.as_str()) {
                    // `log` counts findings and never changes what the caller sees.
                    continue;
                }
                if field == 0 {
                    withheld = was_withheld
                        && text.is_empty()
                        && !finishing
                        && original.as_deref().is_some_and(|o| !o.is_empty())
                        && holder.is_some_and(only_content)
                        && c.text.0.is_none();
                }
                match (slot, holder) {
                    (Some(raw), _) => {
                        let at = json_splice::span(event, raw).ok_or_else(|| {
                            serde::de::Error::custom("a text field lost its place")
                        })?;
                        splice.replace_string(at, &text);
                    }
                    // Held-back text released into a chunk without this key: add it.
                    (None, Some(delta)) if !text.is_empty() => {
                        let at = json_splice::span(event, delta)
                            .ok_or_else(|| serde::de::Error::custom("a delta lost its place"))?;
                        let empty = delta.get()[1..].trim_start().starts_with('}');
                        let pos = at.start + 1;
                        // Keys added at one place follow each other: a comma between them, and
                        // after the last one when the delta has keys of its own.
                        let mut key = Vec::new();
                        if empty && splice.inserts_at(pos) {
                            key.push(b',');
                        }
                        key.extend_from_slice(format!("\"{}\":", TEXT_FIELDS[field]).as_bytes());
                        serde_json::to_writer(&mut key, &text).map_err(serde::de::Error::custom)?;
                        if !empty {
                            key.push(b',');
                        }
                        splice.replace(pos..pos, key);
                    }
                    _ => {}
                }
            }
            if holder.is_some() {
                self.redact_tool_calls(event, index, tool_calls, finishing, splice, before)?;
            }
        }
        Ok(withheld)
    }

    /// Run each streamed tool call's `function.arguments` (`calls`: the delta's `tool_calls`)
    /// through its own redactor (a value
    /// split across chunks is found); the released text replaces the piece in place (an empty
    /// string while it is held). When the choice finishes, what a call still holds goes out in
    /// a chunk of its own, written to `before` (ahead of the finishing chunk).
    fn redact_tool_calls(
        &mut self,
        event: &[u8],
        index: usize,
        calls: Option<&RawValue>,
        finishing: bool,
        splice: &mut Splice,
        before: &mut BytesMut,
    ) -> Result<(), serde_json::Error> {
        let Some(detector) = self.detector else {
            return Ok(());
        };
        let log_only = self.log_only();
        if self.tool_redactors.len() <= index {
            self.tool_redactors.resize_with(index + 1, Vec::new);
        }
        if let Some(raw) = calls.filter(|r| r.get().starts_with('[')) {
            let list: Objects<ToolCallPeek<'_>> = serde_json::from_str(raw.get())?;
            for call in &list.0 {
                let k = call
                    .index
                    .0
                    .and_then(|i| serde_json::from_str::<u64>(i.get()).ok())
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(0);
                let Some(args) = call
                    .function
                    .0
                    .map(json_splice::object::<FunctionPeek<'_>>)
                    .transpose()?
                    .flatten()
                    .and_then(|f| f.arguments.0)
                else {
                    continue;
                };
                let Some(original) = json_splice::string(args) else {
                    continue;
                };
                if k >= MAX_TOOL_CALLS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_TOOL_CALLS} tool calls in one choice"
                    )));
                }
                let calls = &mut self.tool_redactors[index];
                if calls.len() <= k {
                    calls.resize_with(k + 1, || None);
                }
                let redactor = calls[k].get_or_insert_with(|| detector.stream());
                let mut text = String::new();
                redactor.push(&original, &mut self.session, &mut text);
                if finishing {
                    redactor.finish(&mut self.session, &mut text);
                    calls[k] = None;
                }
                if log_only || original == text.as_str() {
                    continue;
                }
                let at = json_splice::span(event, args).ok_or_else(|| {
                    serde::de::Error::custom("tool call arguments lost their place")
                })?;
                splice.replace_string(at, &text);
            }
        }
        if finishing {
            self.finish_tool_calls(index, before);
        }
        Ok(())
    }

    /// Choice `index` finished: what its tool calls still hold goes out, a chunk per call.
    fn finish_tool_calls(&mut self, index: usize, out: &mut BytesMut) {
        let log_only = self.log_only();
        let Some(calls) = self.tool_redactors.get_mut(index) else {
            return;
        };
        for (k, slot) in calls.iter_mut().enumerate() {
            let Some(mut r) = slot.take() else { continue };
            let mut text = String::new();
            r.finish(&mut self.session, &mut text);
            if !log_only && !text.is_empty() {
                write_event(&tool_call_chunk(index, k, text), out);
            }
        }
    }

    /// Whether `data` may hold the stream's terminal event (`[DONE]`, Anthropic's
    /// `message_stop`, the Responses API's `response.completed`…).
    fn may_end(&self, data: &[u8]) -> bool {
        match self.format {
            StreamFormat::Chunks => DONE.find(data).is_some(),
            _ => super::typed::may_end(self.format, data),
        }
    }

    /// Emit what every redactor still holds, as one extra chunk per choice.
    fn flush_all(&mut self, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        if self.format != StreamFormat::Chunks {
            self.flush_typed(out);
            return;
        }
        self.finished = true;
        let log_only = self.log_only();
        for index in 0..self.redactors.len() {
            for (field, name) in TEXT_FIELDS.iter().enumerate() {
                let Some(mut r) = self.redactors[index][field].take() else {
                    continue;
                };
                let mut text = String::new();
                r.finish(&mut self.session, &mut text);
                if field == 0 {
                    self.collect(index, &text);
                }
                if log_only || text.is_empty() {
                    continue;
                }
                let mut delta = serde_json::Map::new();
                delta.insert((*name).to_owned(), Value::String(text));
                let chunk = serde_json::json!({
                    "object": "chat.completion.chunk",
                    "choices": [{"index": index, "delta": delta, "finish_reason": null}],
                });
                write_event(&chunk, out);
            }
        }
        for index in 0..self.tool_redactors.len() {
            self.finish_tool_calls(index, out);
        }
    }
}

/// A chunk that carries the rest of tool call `k`'s arguments for choice `index`.
fn tool_call_chunk(index: usize, k: usize, arguments: String) -> Value {
    serde_json::json!({
        "object": "chat.completion.chunk",
        "choices": [{
            "index": index,
            "delta": {"tool_calls": [{"index": k, "function": {"arguments": arguments}}]},
            "finish_reason": null,
        }],
    })
}

/// Whether a delta object has no key but `content` (no role, tool calls or refusal to keep).
fn only_content(delta: &RawValue) -> bool {
    use std::collections::HashMap;
    serde_json::from_str::<HashMap<std::borrow::Cow<'_, str>, serde::de::IgnoredAny>>(delta.get())
        .is_ok_and(|keys| keys.len() == 1 && keys.contains_key("content"))
}

pub(super) fn write_event(chunk: &Value, out: &mut BytesMut) {
    out.extend_from_slice(b"data: ");
    if let Ok(s) = serde_json::to_vec(chunk) {
        out.extend_from_slice(&s);
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::framing::{data_field, event_end, MAX_EVENT_BYTES};
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
        out.extend_from_slice(&p.finish().unwrap());
        assert_eq!(out, chunk("Hi").as_bytes());
        assert_eq!(p.usage.unwrap().prompt_tokens, 3);
    }

    #[test]
    fn only_a_usage_object_counts_as_usage() {
        assert!(has_usage_object(
            br#"{"choices":[],"usage":{"total_tokens":1}}"#
        ));
        assert!(has_usage_object(br#"{"usage" : {"a":1}}"#));
        assert!(!has_usage_object(
            br#"{"choices":[{"delta":{"content":"x"}}],"usage":null}"#
        ));
        assert!(!has_usage_object(br#"{"content":"the \"usage\": {x}"}"#));
    }

    #[test]
    fn crlf_framed_events_are_split() {
        assert_eq!(event_end(b"data: x\r\n\r\ndata: y"), Some(11));
        assert_eq!(data_field(b"data: x\r\n\r\n"), Some(&b"x"[..]));
    }

    fn redacting() -> PiiDetector {
        PiiDetector::compile(&policy_engine::pack::PiiDetectorConfig::default(), None).unwrap()
    }

    /// Every byte of `stream` through a scanning processor, split at `at`; the caller's bytes
    /// or the error that ended the stream.
    fn scanned(stream: &[u8], at: usize) -> Result<String, String> {
        let det = redacting();
        let mut p = SseProcessor::new(Some(&det), false);
        let mut out = p.push(Bytes::copy_from_slice(&stream[..at]))?.to_vec();
        out.extend_from_slice(&p.push(Bytes::copy_from_slice(&stream[at..]))?);
        out.extend_from_slice(&p.finish()?);
        Ok(String::from_utf8(out).unwrap())
    }

    const FINDING: &str = r#"data: {"choices":[{"index":0,"delta":{"content":"mail ann@example.com"},"finish_reason":"stop"}]}"#;

    #[test]
    fn carriage_return_framing_and_a_byte_order_mark_are_scanned_like_any_stream() {
        for stream in [
            format!("{FINDING}\r\rdata: [DONE]\r\r"),
            format!("\u{feff}{FINDING}\n\ndata: [DONE]\n\n"),
            format!("\u{feff}{FINDING}\r\n\r\ndata: [DONE]\r\n\r\n"),
            format!(": keep-alive\r{FINDING}\r\r"),
        ] {
            for at in 0..=stream.len() {
                let out = scanned(stream.as_bytes(), at).unwrap();
                assert!(!out.contains("ann@example.com"), "split at {at}: {out:?}");
                assert!(out.contains("[EMAIL_1]"), "split at {at}: {out:?}");
            }
        }
    }

    #[test]
    fn events_the_scan_cannot_read_end_the_stream_when_answers_are_scanned() {
        let multi = "data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"ann@example.com\"}}]}\n\n";
        let not_json = "data: mail ann@example.com\n\n";
        for stream in [multi, not_json] {
            let err = scanned(stream.as_bytes(), 0).unwrap_err();
            assert!(err.contains("cannot be scanned"), "{err}");
            // Without a response scan they are relayed as they came.
            let mut p = SseProcessor::new(None, true);
            let out = p.push(Bytes::from_static(stream.as_bytes())).unwrap();
            assert_eq!(&out[..], stream.as_bytes());
        }
    }

    #[test]
    fn only_the_scanned_text_is_rewritten_other_event_bytes_are_kept() {
        let det = redacting();
        let mut p = SseProcessor::new(Some(&det), false);
        // An `id:` line, odd spacing and unknown fields survive; the e-mail is redacted in place.
        let event = "id: 7\ndata: {\"choices\":[{\"index\":0, \"delta\":{\"content\":\"mail ann@example.com now\"},\"finish_reason\":\"stop\",\"x\":[1]}],\"y\":\"\\u00e9\"}\n\n";
        let out = p.push(Bytes::from_static(event.as_bytes())).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            event.replace("mail ann@example.com now", "mail [EMAIL_1] now")
        );
    }

    #[test]
    fn held_back_text_is_released_into_a_finishing_chunk_without_content() {
        let det = redacting();
        let finishing = |delta: &str| {
            Bytes::from(format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":\"stop\"}}]}}\n\n"
            ))
        };
        for delta in [
            "{}",
            "{ }",
            "{\"role\":\"assistant\"}",
            "{\"content\":null}",
        ] {
            let mut p = SseProcessor::new(Some(&det), false);
            // A number at the end of a chunk may go on in the next one: it is held back.
            let first = p.push(Bytes::from(chunk("Call 415-555-0134"))).unwrap();
            let last = p.push(finishing(delta)).unwrap();
            let all = format!(
                "{}{}",
                std::str::from_utf8(&first).unwrap(),
                std::str::from_utf8(&last).unwrap()
            );
            assert!(!all.contains("415-555-0134"), "{delta}: {all}");
            let data = |b: &[u8]| -> Value {
                serde_json::from_slice(b.strip_prefix(b"data: ").unwrap().trim_ascii()).unwrap()
            };
            let v = data(&last);
            if delta.contains("null") {
                // A `content: null` key is left alone (never added a second time); the held
                // text comes in an extra chunk at the end.
                assert_eq!(v["choices"][0]["delta"]["content"], Value::Null, "{v}");
                let rest = p.finish().unwrap();
                assert!(std::str::from_utf8(&rest).unwrap().contains("[PHONE_1]"));
            } else {
                let first = data(&first);
                let streamed = format!(
                    "{}{}",
                    first["choices"][0]["delta"]["content"].as_str().unwrap(),
                    v["choices"][0]["delta"]["content"].as_str().unwrap()
                );
                assert_eq!(streamed, "Call [PHONE_1]", "{delta}: {v}");
                assert_eq!(v["choices"][0]["finish_reason"], "stop");
                assert!(p.finish().unwrap().is_empty());
            }
        }
    }

    #[test]
    fn a_chunk_with_a_repeated_key_breaks_the_stream_instead_of_passing_unscanned() {
        let det = redacting();
        let mut p = SseProcessor::new(Some(&det), false);
        let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\",\"content\":\"ann@example.com\"}}]}\n\n";
        let err = p.push(Bytes::from_static(event.as_bytes())).unwrap_err();
        assert!(err.contains("duplicate field `content`"), "{err}");
        // Without a detector nothing is scanned, so nothing needs reading.
        let mut p = SseProcessor::new(None, false);
        assert_eq!(
            p.push(Bytes::from_static(event.as_bytes())).unwrap(),
            event.as_bytes()
        );
    }

    /// `[EMAIL_2]` → `[EMAIL]`: placeholders numbered in one session across fields compare equal
    /// to those of a session per field.
    fn unnumbered(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '_' && chars.peek().is_some_and(char::is_ascii_digit) {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    continue;
                }
                out.push('_');
                out.push_str(&digits);
                continue;
            }
            out.push(c);
        }
        out
    }

    /// Run a whole provider stream through a processor, in frames cut at `cuts` (byte offsets).
    fn run_split(
        det: Option<&PiiDetector>,
        stream: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, Option<Usage>), String> {
        let mut p = SseProcessor::new(det, true);
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            let cut = cut.clamp(at, stream.len());
            out.extend_from_slice(&p.push(Bytes::copy_from_slice(&stream[at..cut]))?);
            at = cut;
        }
        out.extend_from_slice(&p.finish()?);
        Ok((out, p.usage.take()))
    }

    /// Run `stream` whole and cut at `cuts`: the caller's bytes must be the same; returns the
    /// whole output's JSON events (`[DONE]` left out).
    fn same_however_split(
        det: &PiiDetector,
        stream: &[u8],
        cuts: &mut Vec<proptest::sample::Index>,
    ) -> Result<Vec<Value>, TestCaseError> {
        let whole = run_split(Some(det), stream, &[]).unwrap();
        let mut offsets: Vec<usize> = cuts.drain(..).map(|i| i.index(stream.len() + 1)).collect();
        offsets.sort_unstable();
        let split = run_split(Some(det), stream, &offsets).unwrap();
        prop_assert_eq!(
            String::from_utf8_lossy(&split.0),
            String::from_utf8_lossy(&whole.0)
        );
        Ok(String::from_utf8_lossy(&whole.0)
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .collect())
    }

    /// A provider stream of text chunks (some with personal data, some split inside a value),
    /// a usage chunk and `[DONE]`, framed with `\n\n` or `\r\n\r\n`.
    fn provider_stream(pieces: &[&str], crlf: bool) -> Vec<u8> {
        let mut s = String::new();
        for piece in pieces {
            s.push_str(&chunk(piece));
        }
        s.push_str(USAGE);
        s.push_str("data: [DONE]\n\n");
        if crlf {
            s = s.replace("\n\n", "\r\n\r\n");
        }
        s.into_bytes()
    }

    const PIECES: &[&str] = &[
        "Hello ",
        "mail ann@exa",
        "mple.com or call ",
        "415-555-",
        "0134. Card ",
        "4111 1111 1111 1111",
        " and ",
        "nothing else",
        ".",
        " ü and 雪 ",
        "sk-proj-abcdefghij",
        "klmnopqrstuvwx",
        " ok",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The relay's output is a function of the provider's events, not of how its bytes were
        /// cut into frames: any split gives the same bytes (redaction and hold-back included)
        /// and the same usage as the whole stream in one frame.
        #[test]
        fn output_is_the_same_however_the_stream_is_split(
            picks in proptest::collection::vec(0..PIECES.len(), 1..12),
            mut cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24),
            crlf in any::<bool>(),
            scan in any::<bool>(),
        ) {
            let det = redacting();
            let det = scan.then_some(&det);
            let pieces: Vec<&str> = picks.iter().map(|&i| PIECES[i]).collect();
            let stream = provider_stream(&pieces, crlf);
            let whole = run_split(det, &stream, &[]).unwrap();
            let mut offsets: Vec<usize> = cuts.drain(..).map(|i| i.index(stream.len() + 1)).collect();
            offsets.sort_unstable();
            let split = run_split(det, &stream, &offsets).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&split.0), String::from_utf8_lossy(&whole.0));
            prop_assert_eq!(split.1, whole.1);
            prop_assert!(whole.1.is_some());
            // What the caller reads is the provider's text redacted as one whole text.
            let events = String::from_utf8_lossy(&whole.0).replace("\r\n", "\n");
            let streamed: String = events
                .split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
                .collect();
            let text: String = pieces.concat();
            let expected = match det {
                Some(det) => det.redact(&text, &mut RedactionSession::default()).into_owned(),
                None => text,
            };
            prop_assert_eq!(streamed, expected);
        }

        /// A refusal and reasoning text stream like the answer does: each field has its own
        /// redactor, so a value split across chunks of one field is found, whatever the
        /// interleaving with the other fields and however the bytes are cut.
        #[test]
        fn refusal_and_reasoning_text_are_redacted_across_chunks(
            picks in proptest::collection::vec((0..3usize, 0..PIECES.len()), 1..14),
            mut cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..16),
        ) {
            let det = redacting();
            let mut stream = String::new();
            for &(field, piece) in &picks {
                stream.push_str(&format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"{}\":{}}},\"finish_reason\":null}}]}}\n\n",
                    TEXT_FIELDS[field],
                    serde_json::to_string(PIECES[piece]).unwrap()
                ));
            }
            stream.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
            let parsed = same_however_split(&det, stream.as_bytes(), &mut cuts)?;
            for (field, name) in TEXT_FIELDS.iter().enumerate().take(3) {
                let streamed: String = parsed
                    .iter()
                    .filter_map(|v| v["choices"][0]["delta"][name].as_str().map(str::to_owned))
                    .collect();
                let text: String = picks.iter().filter(|(f, _)| *f == field).map(|&(_, p)| PIECES[p]).collect();
                let expected = det.redact(&text, &mut RedactionSession::default()).into_owned();
                prop_assert_eq!(unnumbered(&streamed), unnumbered(&expected), "field {}", name);
            }
        }

        /// Tool-call arguments stream like text: each call of each choice has its own redactor,
        /// so a value split across argument pieces is found, whatever the interleaving of calls
        /// and however the bytes are cut; the caller's accumulated arguments of every call are
        /// the redaction of that call's whole arguments, and no value leaves unredacted.
        #[test]
        fn tool_call_arguments_are_redacted_across_chunks(
            picks in proptest::collection::vec((0..3usize, 0..PIECES.len()), 1..14),
            mut cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..16),
            delta_on_finish in any::<bool>(),
        ) {
            let det = redacting();
            let mut stream = String::from(
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},\"finish_reason\":null}]}\n\n",
            );
            for &(call, piece) in &picks {
                stream.push_str(&format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{call},\"function\":{{\"arguments\":{}}}}}]}},\"finish_reason\":null}}]}}\n\n",
                    serde_json::to_string(PIECES[piece]).unwrap()
                ));
            }
            let finish_delta = if delta_on_finish { "\"delta\":{}," } else { "" };
            stream.push_str(&format!(
                "data: {{\"choices\":[{{\"index\":0,{finish_delta}\"finish_reason\":\"tool_calls\"}}]}}\n\ndata: [DONE]\n\n"
            ));
            let parsed = same_however_split(&det, stream.as_bytes(), &mut cuts)?;
            // Every argument piece comes before the chunk that finishes the choice.
            let finish_at = parsed.iter().position(|v| v["choices"][0]["finish_reason"] == "tool_calls");
            prop_assert_eq!(finish_at, Some(parsed.len() - 1));
            for call in 0..3 {
                let streamed: String = parsed
                    .iter()
                    .filter_map(|v| v["choices"][0]["delta"]["tool_calls"].as_array())
                    .flatten()
                    .filter(|t| t["index"] == call)
                    .filter_map(|t| t["function"]["arguments"].as_str().map(str::to_owned))
                    .collect();
                let text: String = picks.iter().filter(|(c, _)| *c == call).map(|&(_, p)| PIECES[p]).collect();
                let expected = det.redact(&text, &mut RedactionSession::default()).into_owned();
                prop_assert_eq!(unnumbered(&streamed), unnumbered(&expected), "call {}", call);
            }
        }

        /// Arbitrary bytes from a provider, in arbitrary frames: the parser returns output or an
        /// error and never panics, and it never holds more than one event's bound.
        #[test]
        fn arbitrary_provider_bytes_never_panic(
            frames in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![
                        4 => any::<u8>(),
                        2 => Just(b'\n'),
                        1 => Just(b'\r'),
                        1 => Just(b'{'),
                        1 => Just(b'"'),
                    ],
                    0..64,
                ),
                0..8,
            ),
            prefix in prop_oneof![Just(&b""[..]), Just(&b"data: "[..]), Just(&b"data: {\"choices\":[{\"delta\":{\"content\":\""[..])],
            scan in any::<bool>(),
        ) {
            let det = redacting();
            let mut p = SseProcessor::new(scan.then_some(&det), false);
            let mut first = true;
            for frame in frames {
                let mut bytes = Vec::new();
                if first {
                    bytes.extend_from_slice(prefix);
                    first = false;
                }
                bytes.extend_from_slice(&frame);
                if p.push(Bytes::from(bytes)).is_err() {
                    return Ok(());
                }
                prop_assert!(p.pending.len() <= MAX_EVENT_BYTES);
            }
            let _ = p.finish();
        }
    }
}
