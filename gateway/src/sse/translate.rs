//! A provider's stream in the other format, rewritten event by event into the caller's before
//! the relay reads it (`crate::translate` for requests and JSON answers).
//!
//! Anthropic events to chat chunks: `message_start` opens with the assistant role;
//! `text_delta` is `delta.content`, `thinking_delta` `delta.reasoning_content`; a `tool_use`
//! block opens a `tool_calls` entry (id and name) whose `input_json_delta`s are its `arguments`;
//! `message_delta` gives the finish reason; `message_stop` ends with the usage chunk and
//! `[DONE]` (the relay hides the usage chunk unless the caller asked for it). Chat chunks to
//! Anthropic events: the first chunk opens `message_start`; content opens a text block, each
//! new tool call a `tool_use` block (the open block is stopped first); `[DONE]` ends with
//! `message_delta` (stop reason, usage) and `message_stop`. Errors become the caller's error
//! event. Only whole events are rewritten; an incomplete one waits for the next frame.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::framing::{data_lines, event_end_after, normalize_lone_cr, Data, MAX_EVENT_BYTES};
use super::typed::write_named as write;
use crate::translate::{anthropic_usage, chat_usage, finish_reason, stop_reason, Translation};

/// Rewrites a provider's stream into the caller's format.
pub(crate) struct StreamTranslator {
    way: Translation,
    pending: BytesMut,
    cr_checked: usize,
    searched: usize,
    id: String,
    model: Value,
    created: u64,
    /// Anthropic usage so far (both ways: read from events, or converted from the usage chunk).
    usage: Value,
    /// The provider reported usage (else none is made up: the stream settles on its
    /// reservation).
    usage_seen: bool,
    /// Anthropic → chat: content block index → tool call ordinal; chat → Anthropic: tool call
    /// index → content block index.
    tools: Vec<(u64, u64)>,
    next_tool: u64,
    finish: Option<String>,
    /// Chat → Anthropic: the open block (its index, and its tool call ordinal if a tool).
    open: Option<(u64, Option<u64>)>,
    next_block: u64,
    started: bool,
    done: bool,
}

impl StreamTranslator {
    pub(crate) fn new(way: Translation) -> Self {
        Self {
            way,
            pending: BytesMut::new(),
            cr_checked: 0,
            searched: 0,
            id: String::new(),
            model: Value::Null,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            usage: json!({}),
            usage_seen: false,
            tools: Vec::new(),
            next_tool: 0,
            finish: None,
            open: None,
            next_block: 0,
            started: false,
            done: false,
        }
    }

    /// Provider bytes in; the caller's events out (whole events only).
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<Bytes, String> {
        self.pending.extend_from_slice(data);
        self.cr_checked = normalize_lone_cr(&mut self.pending, self.cr_checked);
        let mut out = BytesMut::new();
        while let Some(end) = event_end_after(&self.pending, self.searched) {
            let event = self.pending.split_to(end);
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

    /// Whether the provider reported usage.
    pub(crate) fn usage_seen(&self) -> bool {
        self.usage_seen
    }

    /// The provider's stream ended: a last event without its blank line is still read.
    pub(crate) fn finish(&mut self) -> Result<Bytes, String> {
        let mut out = BytesMut::new();
        if !self.pending.is_empty() {
            let event = std::mem::take(&mut self.pending);
            self.event(&event, &mut out)?;
        }
        Ok(out.freeze())
    }

    fn event(&mut self, event: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let data = match data_lines(event) {
            Data::One(d) => d,
            Data::None => return Ok(()),
            Data::Many => return Err("provider stream event has several data lines".to_owned()),
        };
        if self.done {
            return Ok(());
        }
        if self.way == Translation::MessagesToChat && data.trim_ascii() == b"[DONE]" {
            self.end_message(out);
            return Ok(());
        }
        let v: Value = serde_json::from_slice(data).map_err(|e| {
            format!("provider stream event is not JSON, so it cannot be translated: {e}")
        })?;
        match self.way {
            Translation::ChatToMessages => self.anthropic_to_chat(&v, out),
            Translation::MessagesToChat => self.chat_to_anthropic(&v, out),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut BytesMut) {
        let c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        write(None, &c, out);
    }

    fn anthropic_to_chat(&mut self, v: &Value, out: &mut BytesMut) -> Result<(), String> {
        match v["type"].as_str().unwrap_or("") {
            "message_start" => {
                let m = &v["message"];
                self.id = format!("chatcmpl-{}", bounded(m["id"].as_str().unwrap_or("msg")));
                self.model = Value::String(bounded(m["model"].as_str().unwrap_or("")).to_owned());
                self.usage_seen |= m["usage"].is_object();
                merge(&mut self.usage, &m["usage"]);
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                let block = v["index"].as_u64().unwrap_or(0);
                if self.tools.len() >= MAX_TOOL_CALLS {
                    return Err(format!(
                        "more than {MAX_TOOL_CALLS} tool calls in one answer"
                    ));
                }
                let k = self.next_tool;
                self.next_tool += 1;
                self.tools.push((block, k));
                let b = &v["content_block"];
                self.chunk(
                    json!({"tool_calls": [{"index": k, "id": b["id"], "type": "function",
                                           "function": {"name": b["name"], "arguments": ""}}]}),
                    None,
                    out,
                );
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str().unwrap_or("") {
                    "text_delta" => self.chunk(json!({"content": d["text"]}), None, out),
                    "thinking_delta" => {
                        self.chunk(json!({"reasoning_content": d["thinking"]}), None, out);
                    }
                    "input_json_delta" => {
                        let block = v["index"].as_u64().unwrap_or(0);
                        if let Some(&(_, k)) = self.tools.iter().find(|(b, _)| *b == block) {
                            self.chunk(
                                json!({"tool_calls": [{"index": k, "function": {"arguments": d["partial_json"]}}]}),
                                None,
                                out,
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                self.usage_seen |= v["usage"].is_object();
                merge(&mut self.usage, &v["usage"]);
                if let Some(stop) = v["delta"]["stop_reason"].as_str() {
                    self.chunk(json!({}), Some(finish_reason(stop)), out);
                }
            }
            "message_stop" => {
                if let Some(usage) = chat_usage(&self.usage).filter(|_| self.usage_seen) {
                    let u = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                   "model": self.model, "choices": [], "usage": usage});
                    write(None, &u, out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            "error" => {
                let e = &v["error"];
                write(
                    None,
                    &json!({"error": {"message": e["message"], "type": e["type"], "code": e["type"]}}),
                    out,
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn start_block(&mut self, block: Value, tool: Option<u64>, out: &mut BytesMut) -> u64 {
        self.stop_block(out);
        let index = self.next_block;
        self.next_block += 1;
        write(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
            out,
        );
        self.open = Some((index, tool));
        index
    }

    fn stop_block(&mut self, out: &mut BytesMut) {
        if let Some((index, _)) = self.open.take() {
            write(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": index}),
                out,
            );
        }
    }

    fn chat_to_anthropic(&mut self, v: &Value, out: &mut BytesMut) -> Result<(), String> {
        if let Some(e) = v.get("error").filter(|e| e.is_object()) {
            write(
                Some("error"),
                &json!({"type": "error", "error": {"type": "api_error", "message": e["message"]}}),
                out,
            );
            return Ok(());
        }
        if !self.started {
            self.started = true;
            self.id = format!("msg_{}", bounded(v["id"].as_str().unwrap_or("chatcmpl")));
            self.model = Value::String(bounded(v["model"].as_str().unwrap_or("")).to_owned());
            write(
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}}}),
                out,
            );
        }
        if let Some(u) = anthropic_usage(&v["usage"]) {
            self.usage = u;
            self.usage_seen = true;
        }
        let Some(choice) = v["choices"].as_array().and_then(|c| c.first()) else {
            return Ok(());
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some((i, None)) => i,
                _ => self.start_block(json!({"type": "text", "text": ""}), None, out),
            };
            write(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
                out,
            );
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let k = call["index"].as_u64().unwrap_or(0);
            // A call opens its block once, on its index's first fragment (some providers repeat
            // the id on every fragment).
            let index = match (self.open, self.tools.iter().any(|(t, _)| *t == k)) {
                (Some((i, Some(open))), _) if open == k => i,
                (_, true) => {
                    return Err("provider streamed a tool call after the next one began".to_owned())
                }
                (_, false) => {
                    if self.tools.len() >= MAX_TOOL_CALLS {
                        return Err(format!(
                            "more than {MAX_TOOL_CALLS} tool calls in one answer"
                        ));
                    }
                    let block = self.start_block(
                        json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}}),
                        Some(k),
                        out,
                    );
                    self.tools.push((k, block));
                    block
                }
            };
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                write(
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                    out,
                );
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(bounded(f).to_owned());
            self.stop_block(out);
        }
        Ok(())
    }

    fn end_message(&mut self, out: &mut BytesMut) {
        self.stop_block(out);
        let stop = stop_reason(self.finish.as_deref().unwrap_or("stop"));
        // Anthropic's SDKs read `usage` on this event; without the provider's it says zero, and
        // the relay settles the stream on its reservation (`usage_seen`).
        let usage = if self.usage_seen {
            self.usage.clone()
        } else {
            json!({"output_tokens": 0})
        };
        write(
            Some("message_delta"),
            &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage}),
            out,
        );
        write(Some("message_stop"), &json!({"type": "message_stop"}), out);
        self.done = true;
    }
}

/// Most tool calls one translated answer may stream; more fail the stream.
const MAX_TOOL_CALLS: usize = 1024;

/// An id or model name copied into every rewritten event: at most 256 bytes of it (a provider
/// cannot make each small delta carry a megabyte).
fn bounded(s: &str) -> &str {
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Later usage fields over earlier ones.
fn merge(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            if !v.is_null() {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}
