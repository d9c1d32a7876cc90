//! The PII policy on decoded JSON: which strings of a request or a response are scanned, and
//! what the pack's action does with them.
//!
//! Strings are scanned after JSON decoding (never raw bytes, where `\u0040` would hide an `@`):
//! chat message `content` as a string and as content parts (`text`), tool-call and legacy
//! function-call `arguments`, the completions `prompt`, embeddings `input`; on the response
//! side, chat `message.content` and tool-call arguments, completions `text`. One
//! [`RedactionSession`] spans a whole request, so the same value gets the same placeholder in
//! every message. Actions: `redact` and `escalate` rewrite the strings, `log` only counts,
//! `block` refuses (the caller learns the entity types, never the values).
//!
//! The same walk gives the audit record its text when the pack sets `include_redacted_text`
//! ([`request_text`], [`response_text`]): the scanned strings as they are after the scan, one per
//! line, bounded by [`MAX_RECORDED_TEXT`].
//!
//! Not here: streams (`sse`, through the detector's incremental redactor), and arrays of token
//! ids, which carry no text to scan.

use std::borrow::Cow;

use policy_engine::pack::PiiAction;
use policy_engine::pii::{PiiDetector, RedactionSession};
use serde_json::Value;

use crate::hooks::{ApiRoute, PiiReport};

/// What the scan decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Strings were rewritten.
    Redacted,
    /// Refuse; names the entity types found.
    Block(String),
}

/// Scan a request tree in place.
pub(crate) fn scan_request(
    detector: &PiiDetector,
    route: ApiRoute,
    tree: &mut Value,
) -> (Verdict, PiiReport) {
    let mut scan = TreeScan::new(detector);
    request_strings(route, tree, &mut |s| scan.visit(s));
    scan.decide()
}

/// Scan a non-streamed response tree in place.
pub(crate) fn scan_response(
    detector: &PiiDetector,
    route: ApiRoute,
    tree: &mut Value,
) -> (Verdict, PiiReport) {
    let mut scan = TreeScan::new(detector);
    response_strings(route, tree, &mut |s| scan.visit(s));
    scan.decide()
}

/// The strings [`scan_request`] scans, as they are now — after it, as they go upstream — one
/// per line, for the audit record's `include_redacted_text`.
pub(crate) fn request_text(route: ApiRoute, tree: &mut Value) -> String {
    let mut text = RecordedText::default();
    request_strings(route, tree, &mut |s| text.line(s));
    text.finish()
}

/// The strings [`scan_response`] scans, as they are now, one per line.
pub(crate) fn response_text(route: ApiRoute, tree: &mut Value) -> String {
    let mut text = RecordedText::default();
    response_strings(route, tree, &mut |s| text.line(s));
    text.finish()
}

/// Most bytes of text one side of a request puts into its audit record; the rest is cut off
/// (at a character boundary) and the cut marked, so one huge prompt cannot make a huge line.
pub(crate) const MAX_RECORDED_TEXT: usize = 256 * 1024;

/// Text collected for an audit record, bounded by [`MAX_RECORDED_TEXT`].
#[derive(Debug, Default)]
pub(crate) struct RecordedText {
    text: String,
    truncated: bool,
}

impl RecordedText {
    /// Append `s` as it is.
    pub(crate) fn push(&mut self, s: &str) {
        if self.truncated {
            return;
        }
        let room = MAX_RECORDED_TEXT.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
            return;
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&s[..cut]);
        self.text.push_str(" …[truncated]");
        self.truncated = true;
    }

    /// Append `s` as a line of its own.
    pub(crate) fn line(&mut self, s: &str) {
        if !self.text.is_empty() {
            self.push("\n");
        }
        self.push(s);
    }

    pub(crate) fn finish(self) -> String {
        self.text
    }
}

fn request_strings(route: ApiRoute, tree: &mut Value, visit: &mut impl FnMut(&mut String)) {
    match route {
        ApiRoute::ChatCompletions => {
            for msg in array_mut(tree, "messages") {
                content_strings(msg.get_mut("content"), visit);
                tool_call_arguments(msg, visit);
            }
        }
        ApiRoute::Completions => strings_or_list(tree.get_mut("prompt"), visit),
        ApiRoute::Embeddings => strings_or_list(tree.get_mut("input"), visit),
    }
}

fn response_strings(route: ApiRoute, tree: &mut Value, visit: &mut impl FnMut(&mut String)) {
    for choice in array_mut(tree, "choices") {
        match route {
            ApiRoute::ChatCompletions => {
                if let Some(msg) = choice.get_mut("message") {
                    content_strings(msg.get_mut("content"), visit);
                    tool_call_arguments(msg, visit);
                }
            }
            ApiRoute::Completions => {
                if let Some(Value::String(s)) = choice.get_mut("text") {
                    visit(s);
                }
            }
            ApiRoute::Embeddings => {}
        }
    }
}

/// One scan over the decoded strings of a JSON tree: one redaction session (so equal values get
/// equal placeholders across messages), and strings rewritten only when the action redacts.
struct TreeScan<'d> {
    detector: &'d PiiDetector,
    session: RedactionSession,
    rewrite: bool,
    changed: bool,
}

impl<'d> TreeScan<'d> {
    fn new(detector: &'d PiiDetector) -> Self {
        let rewrite = matches!(detector.action(), PiiAction::Redact | PiiAction::Escalate);
        Self {
            detector,
            session: RedactionSession::default(),
            rewrite,
            changed: false,
        }
    }

    fn visit(&mut self, s: &mut String) {
        if let Some(new) = redacted(self.detector, s, &mut self.session) {
            if self.rewrite {
                *s = new;
                self.changed = true;
            }
        }
    }

    fn decide(self) -> (Verdict, PiiReport) {
        decide(self.detector.action(), &self.session, self.changed)
    }
}

/// The redacted text, or `None` when the detector found nothing.
fn redacted(detector: &PiiDetector, s: &str, session: &mut RedactionSession) -> Option<String> {
    match detector.redact(s, session) {
        Cow::Borrowed(_) => None,
        Cow::Owned(new) => Some(new),
    }
}

pub(crate) fn report(session: &RedactionSession, action: PiiAction, redacted: bool) -> PiiReport {
    let findings: Vec<(String, u32)> = session
        .counts()
        .filter(|(_, n)| *n > 0)
        .map(|(e, n)| (e.to_owned(), n))
        .collect();
    PiiReport {
        action: Some(if findings.is_empty() {
            PiiAction::Log
        } else {
            action
        }),
        findings,
        redacted,
    }
}

fn decide(action: PiiAction, session: &RedactionSession, changed: bool) -> (Verdict, PiiReport) {
    let report = report(session, action, changed);
    let verdict = if report.findings.is_empty() {
        Verdict::Allow
    } else if action == PiiAction::Block {
        let names: Vec<&str> = report.findings.iter().map(|(e, _)| e.as_str()).collect();
        Verdict::Block(names.join(", "))
    } else if changed {
        Verdict::Redacted
    } else {
        Verdict::Allow
    };
    (verdict, report)
}

fn array_mut<'v>(tree: &'v mut Value, key: &str) -> impl Iterator<Item = &'v mut Value> {
    tree.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}

/// A `content` value: a string, or a list of parts whose `text` fields are strings.
fn content_strings(content: Option<&mut Value>, visit: &mut impl FnMut(&mut String)) {
    match content {
        Some(Value::String(s)) => visit(s),
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(Value::String(s)) = part.get_mut("text") {
                    visit(s);
                }
            }
        }
        _ => {}
    }
}

fn tool_call_arguments(msg: &mut Value, visit: &mut impl FnMut(&mut String)) {
    for call in array_mut(msg, "tool_calls") {
        if let Some(Value::String(s)) = call
            .get_mut("function")
            .and_then(|f| f.get_mut("arguments"))
        {
            visit(s);
        }
    }
    if let Some(Value::String(s)) = msg
        .get_mut("function_call")
        .and_then(|f| f.get_mut("arguments"))
    {
        visit(s);
    }
}

/// A string, or a list whose string items are visited (token-id lists are skipped).
fn strings_or_list(v: Option<&mut Value>, visit: &mut impl FnMut(&mut String)) {
    match v {
        Some(Value::String(s)) => visit(s),
        Some(Value::Array(items)) => {
            for item in items {
                if let Value::String(s) = item {
                    visit(s);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_text_is_every_scanned_string_one_per_line() {
        let mut tree = serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi [EMAIL_1]"}, {"type": "image_url"}]},
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}
            ]
        });
        assert_eq!(
            request_text(ApiRoute::ChatCompletions, &mut tree),
            "Be brief.\nHi [EMAIL_1]\n{}"
        );
        let mut tree = serde_json::json!({"choices": [{"text": "a"}, {"text": "b"}]});
        assert_eq!(response_text(ApiRoute::Completions, &mut tree), "a\nb");
    }

    #[test]
    fn recorded_text_is_cut_at_a_character_boundary_and_marked_once() {
        let mut t = RecordedText::default();
        t.push(&"a".repeat(MAX_RECORDED_TEXT - 1));
        // `é` takes two bytes: it does not fit into the one byte left.
        t.push("é and more");
        t.line("not recorded");
        let s = t.finish();
        assert!(s.ends_with("a …[truncated]"), "{}", &s[s.len() - 20..]);
        assert_eq!(s.len(), MAX_RECORDED_TEXT - 1 + " …[truncated]".len());
    }
}
