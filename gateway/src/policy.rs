//! The PII policy on decoded JSON: which strings of a request or a response are scanned, and
//! what the pack's action does with them.
//!
//! Strings are scanned after JSON decoding (never raw bytes, where `\u0040` would hide an `@`).
//! On a request, every string value that can carry text is scanned, at any depth and in any
//! shape — message content as a string, parts or an unknown object, names, `user`, `metadata`,
//! `stop`, tool descriptions and arguments, schema descriptions, prompts, embedding inputs —
//! except the values of the [`not_text`] keys (model, roles, types, ids, enumerated settings,
//! and media payloads that a redaction would corrupt). A JSON answer is scanned the same way
//! ([`scan_response`]), and a provider's error body whole ([`scan_error_body`]). One
//! [`RedactionSession`] spans a whole request, so the same value gets the same placeholder in
//! every message. Actions: `redact` and `escalate` rewrite the strings, `log` only counts,
//! `block` refuses (the caller learns the entity types, never the values).
//!
//! No JSON tree is built: the strings are found in one pass over the body's bytes
//! (`json_splice::string_spans`), a string with escapes is decoded on its own, and a redacted
//! string goes back as a splice of that value's bytes, so the rest of the body is forwarded as
//! it came.
//!
//! The same walk gives the audit record its text when the pack sets `include_redacted_text`:
//! the scanned strings as they are after the scan (as they go on), one per line, bounded by
//! [`MAX_RECORDED_TEXT`].
//!
//! A provider's error body is scanned whole ([`scan_error_body`]): every string value at any
//! depth when it is JSON (object keys are not scanned), the text when it is not; a body that is
//! neither is withheld.
//!
//! Not here: streams (`sse`, through the detector's incremental redactor), and arrays of token
//! ids, which carry no text to scan.

use std::borrow::Cow;

use policy_engine::pack::PiiAction;
use policy_engine::pii::{PiiDetector, RedactionSession};
use serde_json::value::RawValue;

use crate::json_splice::{self, Key, Splice};

/// What a PII scan found on one side of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PiiReport {
    /// Entity name → findings. Empty when the side was scanned and clean.
    pub findings: Vec<(String, u32)>,
    /// What the policy did about it (`Log` when nothing was found).
    pub action: Option<PiiAction>,
    /// Whether text sent on was changed.
    pub redacted: bool,
}

impl PiiReport {
    pub fn total(&self) -> u32 {
        self.findings.iter().map(|(_, n)| n).sum()
    }
}

/// What the scan decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Strings were rewritten: the edits are in the returned [`Splice`].
    Redacted,
    /// Refuse; names the entity types found.
    Block(String),
}

/// Scan every string of a request body that can carry text, at any depth and in any shape
/// (message content as a string, parts or an object, names, tool descriptions and arguments,
/// `user`, `metadata`, `stop`, schema descriptions, prompts, embedding inputs…): everything but
/// the values of [`not_text`] keys. A shape the gateway does not know is scanned like any
/// other, never skipped. The edits apply to `body`.
pub(crate) fn scan_request(
    detector: &PiiDetector,
    body: &[u8],
    record_text: bool,
) -> Result<Scanned, serde_json::Error> {
    let mut spans = Vec::new();
    json_splice::string_spans(body, key_rule, &mut spans);
    let mut scan = SpliceScan::new(detector, body, record_text);
    for at in spans {
        scan.string(Some(serde_json::from_slice(&body[at])?));
    }
    Ok(scan.decide())
}

/// Fields whose string values are identifiers, enumerations or binary payloads, never text a
/// person wrote, and so are not scanned: the model, roles and types, ids (OpenAI's and
/// Anthropic's, the Responses API's item and call ids), enumerated settings, opaque signed
/// blobs (Anthropic's thinking `signature`, encrypted reasoning), and an image's `url`. Only a
/// string value is skipped: an object or list under such a key is scanned like any other (a
/// schema property named `id` has a description). Base64 media is left alone by its content,
/// not its key ([`opaque`]): Anthropic's `data` is base64 for an image and plain text for a text
/// document.
pub(crate) fn not_text(key: &str) -> bool {
    matches!(
        key,
        "model"
            | "role"
            | "type"
            | "id"
            | "tool_call_id"
            | "file_id"
            | "detail"
            | "format"
            | "voice"
            | "modalities"
            | "service_tier"
            | "reasoning_effort"
            | "encoding_format"
            | "url"
            | "object"
            | "system_fingerprint"
            | "finish_reason"
            | "stop_reason"
            | "status"
            | "item_id"
            | "call_id"
            | "response_id"
            | "previous_response_id"
            | "signature"
            | "encrypted_content"
            | "media_type"
    )
}

/// How the scan treats an object key's value: [`not_text`] keys are skipped, and `input` (a
/// tool call's arguments as an object, Anthropic's `tool_use.input`) is free-form: every string
/// under it is text, whatever the caller's schema named its keys (`id`, `detail`, `data`…).
pub(crate) fn key_rule(key: &str) -> Key {
    if key == "input" {
        Key::Free
    } else if not_text(key) {
        Key::Skip
    } else {
        Key::Text
    }
}

/// Base64 media and other encoded blobs, which carry no readable text and which a "redacted"
/// chance digit run would corrupt: a `data:` URL with a base64 payload, or 256 or more
/// characters of the standard base64 alphabet with at least one `+` or `/` (API keys and ids
/// have neither, so they stay scanned).
pub(crate) fn opaque(text: &str) -> bool {
    let b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r');
    if let Some(rest) = text.strip_prefix("data:") {
        return rest
            .split_once(";base64,")
            .is_some_and(|(_, payload)| payload.bytes().all(b64));
    }
    text.len() >= 256 && text.bytes().all(b64) && text.bytes().any(|b| b == b'+' || b == b'/')
}

/// Scan every string of a non-streamed answer that can carry text, as on a request (message
/// content, refusals, reasoning, tool-call arguments, audio transcripts, logprob tokens…),
/// except the values of [`not_text`] keys. `body` must be valid JSON.
pub(crate) fn scan_response(
    detector: &PiiDetector,
    body: &[u8],
    record_text: bool,
) -> Result<Scanned, serde_json::Error> {
    scan_request(detector, body, record_text)
}

/// Scan every text string of one JSON value `json` (a stream event's data, known to be valid
/// JSON) with a stream's `session`, as a JSON answer is scanned; with `rewrite`, redactions go
/// into `splice` at `offset` + the string's place in `json` (the event's bytes around it).
pub(crate) fn scan_into(
    detector: &PiiDetector,
    json: &[u8],
    session: &mut RedactionSession,
    rewrite: bool,
    offset: usize,
    splice: &mut Splice,
) -> Result<(), serde_json::Error> {
    let mut spans = Vec::new();
    json_splice::string_spans(json, key_rule, &mut spans);
    for at in spans {
        let text: Cow<'_, str> = serde_json::from_slice(&json[at.clone()])?;
        if opaque(&text) {
            continue;
        }
        if let Cow::Owned(new) = detector.redact(&text, session) {
            if rewrite {
                splice.replace_string(offset + at.start..offset + at.end, &new);
            }
        }
    }
    Ok(())
}

/// Scan a provider's error body: every string value when it is JSON (error messages can echo
/// the prompt), the whole text otherwise. `None`: the body is neither JSON nor UTF-8 text, so it
/// cannot be scanned and must not be passed on.
pub(crate) fn scan_error_body(detector: &PiiDetector, body: &[u8]) -> Option<Scanned> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        let mut spans = Vec::new();
        json_splice::string_spans(body, |_| Key::Text, &mut spans);
        let mut scan = SpliceScan::new(detector, body, false);
        for at in spans {
            scan.string(Some(serde_json::from_slice(&body[at]).ok()?));
        }
        return Some(scan.decide());
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut session = RedactionSession::default();
    let out = detector.redact(text, &mut session);
    let rewrite = matches!(detector.action(), PiiAction::Redact | PiiAction::Escalate);
    let mut splice = Splice::default();
    let changed = matches!(out, Cow::Owned(_)) && rewrite;
    if changed {
        splice.replace(0..body.len(), out.into_owned().into_bytes());
    }
    let (verdict, report) = decide(detector.action(), &session, changed);
    Some(Scanned {
        verdict,
        report,
        splice,
        text: None,
    })
}

/// What a scan found and decided.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) verdict: Verdict,
    pub(crate) report: PiiReport,
    /// The redactions, as edits of the scanned body.
    pub(crate) splice: Splice,
    /// The scanned strings as they go on, one per line, when asked for and when they went on
    /// without a finding in them (redacted, or clean): `log` passes findings on unchanged and
    /// `block` sends nothing, so neither is recorded.
    pub(crate) text: Option<String>,
}

/// One scan over the decoded strings of a body: one redaction session (so equal values get
/// equal placeholders across messages), and strings rewritten — as splices into the body —
/// only when the action redacts.
struct SpliceScan<'d, 'b> {
    detector: &'d PiiDetector,
    body: &'b [u8],
    session: RedactionSession,
    rewrite: bool,
    splice: Splice,
    /// A finding whose string could not be placed in the body: never forward then.
    unplaced: bool,
    /// The strings as they go on, for the audit record.
    text: Option<RecordedText>,
}

impl<'d, 'b> SpliceScan<'d, 'b> {
    fn new(detector: &'d PiiDetector, body: &'b [u8], record_text: bool) -> Self {
        let rewrite = matches!(detector.action(), PiiAction::Redact | PiiAction::Escalate);
        Self {
            detector,
            body,
            session: RedactionSession::default(),
            rewrite,
            splice: Splice::default(),
            unplaced: false,
            text: record_text.then(RecordedText::default),
        }
    }

    /// Scan one value if it is a string.
    fn string(&mut self, raw: Option<&RawValue>) {
        let Some(raw) = raw else { return };
        let Some(text) = json_splice::string(raw) else {
            return;
        };
        if opaque(&text) {
            return;
        }
        let out = self.detector.redact(&text, &mut self.session);
        if let Cow::Owned(new) = &out {
            if self.rewrite {
                match json_splice::span(self.body, raw) {
                    Some(at) => self.splice.replace_string(at, new),
                    None => self.unplaced = true,
                }
            }
        }
        if let Some(recorded) = self.text.as_mut() {
            // Redacted when the action rewrites; otherwise the text is dropped in `decide`.
            recorded.line(&out);
        }
    }

    fn decide(self) -> Scanned {
        let changed = !self.splice.is_empty();
        let (mut verdict, report) = decide(self.detector.action(), &self.session, changed);
        if self.unplaced {
            // Cannot happen for values borrowed from the body; refuse rather than leak.
            let names: Vec<&str> = report.findings.iter().map(|(e, _)| e.as_str()).collect();
            verdict = Verdict::Block(names.join(", "));
        }
        let recordable = match &verdict {
            Verdict::Redacted => true,
            Verdict::Allow => report.findings.is_empty(),
            Verdict::Block(_) => false,
        };
        Scanned {
            text: self.text.filter(|_| recordable).map(RecordedText::finish),
            verdict,
            report,
            splice: self.splice,
        }
    }
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

#[cfg(test)]
mod opaque_tests {
    use super::opaque;

    #[test]
    fn base64_media_is_opaque_and_keys_and_text_are_not() {
        let image = "iVBORw0KGgo+/".repeat(30);
        assert!(opaque(&image));
        assert!(opaque("data:image/png;base64,iVBORw0KGgo4111111111111111"));
        // API keys and ids have no `+` or `/`: they stay scanned, however long.
        assert!(!opaque(&format!("sk-proj-{}", "a1B2c3".repeat(40))));
        assert!(!opaque(&"4111 1111 1111 1111 ".repeat(20)));
        assert!(!opaque("data:text/plain,jane@example.com"));
        assert!(!opaque(&"ab+/".repeat(10)), "too short to be media");
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use policy_engine::pack::PiiDetectorConfig;

    use super::*;
    use crate::request::{self, Rewrite};

    fn redact(body: &str) -> Result<(Verdict, String), crate::error::ApiError> {
        let det = PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap();
        let body = Bytes::copy_from_slice(body.as_bytes());
        let parsed = request::parse(&body)?;
        let scanned = scan_request(&det, &body, false)
            .map_err(|e| crate::error::ApiError::invalid(e.to_string()))?;
        let (verdict, splice) = (scanned.verdict, scanned.splice);
        let rw = Rewrite {
            upstream_model: None,
            include_usage: false,
        };
        let out = request::upstream_body(&body, &parsed, rw, splice)?;
        Ok((verdict, String::from_utf8(out.to_vec()).unwrap()))
    }

    #[test]
    fn only_the_redacted_strings_change_every_other_byte_is_forwarded_as_sent() {
        // Odd spacing, escapes elsewhere, key order, unknown fields: all kept byte for byte.
        let body = "{ \"x_first\" : [1, 2.50, {\"k\":\"\\u00e9\"}],\n  \"model\":\"gpt-4o-mini\",\"messages\" : [\n    {\"role\":\"user\", \"content\":\"mail ann\\u0040example.com\\n please\", \"name\":\"a\"},\n    {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"clean\"},{\"type\":\"text\",\"text\":\"ann@example.com\"}]},\n    {\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"t\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"to\\\":\\\"ann@example.com\\\"}\"}}]}\n  ] }";
        let (verdict, out) = redact(body).unwrap();
        assert_eq!(verdict, Verdict::Redacted);
        let expected = body
            .replace(
                "\"mail ann\\u0040example.com\\n please\"",
                "\"mail [EMAIL_1]\\n please\"",
            )
            .replace("\"text\":\"ann@example.com\"", "\"text\":\"[EMAIL_1]\"")
            .replace(
                "\"arguments\":\"{\\\"to\\\":\\\"ann@example.com\\\"}\"",
                "\"arguments\":\"{\\\"to\\\":\\\"[EMAIL_1]\\\"}\"",
            );
        assert_ne!(expected, body, "the test's replacements must apply");
        assert_eq!(out, expected);
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever escapes a string holds (lone surrogates among them), it is scanned: after a
        /// `redact` pass nothing in the forwarded string is a finding, and `block` refuses
        /// exactly the strings in which the decodable text has one.
        #[test]
        fn strings_with_any_escapes_are_never_forwarded_unscanned(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![
                        "ann@example.com", "4111 1111 1111 1111", "123-45-6789", "sk-proj-a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6",
                    ]).prop_map(str::to_owned),
                    proptest::prelude::any::<u16>().prop_map(|u| format!("\\u{u:04x}")),
                    proptest::sample::select(vec!["\\n", "\\\"", "\\\\", "\\/", "\\t", " ", "a", "@", "-", "1"]).prop_map(str::to_owned),
                ],
                0..12,
            )
        ) {
            let content: String = pieces.concat();
            let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}]}}"#);
            let det = PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap();
            let raw: Box<RawValue> = serde_json::from_str(&format!("\"{content}\"")).unwrap();
            let decoded = json_splice::string(&raw).unwrap().into_owned();
            let (verdict, out) = redact(&body).unwrap();
            let sent: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
            let forwarded = match sent.pointer("/messages/0/content").and_then(|c| c.as_str()) {
                Some(c) => c.to_owned(),
                // serde_json cannot read a lone surrogate: decode the way the scanner does.
                None => {
                    let at = out.find(r#""content":"#).unwrap() + r#""content":"#.len();
                    let end = out.rfind("}]}").unwrap();
                    let raw: Box<RawValue> = serde_json::from_str(&out[at..end]).unwrap();
                    json_splice::string(&raw).unwrap().into_owned()
                }
            };
            prop_assert!(det.find(&forwarded).is_empty(), "{content:?} -> {forwarded:?}");
            prop_assert_eq!(verdict == Verdict::Allow, det.find(&decoded).is_empty());
        }
    }

    #[test]
    fn a_clean_request_is_forwarded_unchanged_and_lists_of_token_ids_are_skipped() {
        let body = r#"{"model":"m","prompt":[[1,2,3],"no pii here"]}"#;
        let (verdict, out) = redact(body).unwrap();
        assert_eq!(verdict, Verdict::Allow);
        assert_eq!(out, body);
    }

    #[test]
    fn a_repeated_key_is_scanned_in_every_copy_never_half() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"ann@example.com","content":"ann@example.com"}]}"#;
        let (verdict, out) = redact(body).unwrap();
        assert_eq!(verdict, Verdict::Redacted);
        assert_eq!(out, body.replace("ann@example.com", "[EMAIL_1]"));
    }

    #[test]
    fn response_choices_are_redacted_in_place() {
        let det = PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap();
        let body = br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"call 415-555-0134"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#;
        let s = scan_response(&det, body, true).unwrap();
        assert_eq!(s.verdict, Verdict::Redacted);
        assert_eq!(s.report.findings, vec![("phone".to_owned(), 1)]);
        assert_eq!(s.text.as_deref(), Some("call [PHONE_1]"));
        let out = s.splice.apply(body).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"call [PHONE_1]"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#
        );
    }

    #[test]
    fn recorded_text_is_every_scanned_string_as_it_goes_on_one_per_line() {
        let det = PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap();
        let body = Bytes::from_static(br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi ann@example.com"},{"type":"image_url"}]},{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}]}"#);
        let s = scan_request(&det, &body, true).unwrap();
        // Every string that can carry text, the tool's name included; roles and types are not.
        assert_eq!(s.text.as_deref(), Some("Be brief.\nHi [EMAIL_1]\nf\n{}"));
        let s = scan_request(&det, &body, false).unwrap();
        assert_eq!(s.text, None);

        // `log` forwards the value unchanged: no text is recorded then.
        let cfg = PiiDetectorConfig {
            action: PiiAction::Log,
            ..PiiDetectorConfig::default()
        };
        let det = PiiDetector::compile(&cfg, None).unwrap();
        let s = scan_request(&det, &body, true).unwrap();
        assert_eq!(s.text, None);
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

    fn json_with_values() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z ]{0,12}".prop_map(Value::String),
            Just(Value::String("ann@example.com".to_owned())),
            Just(Value::String(
                "card 4111 1111 1111 1111, mail ann@example.com".to_owned()
            )),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(
                    "[a-z_]{1,8}".prop_filter("a text field", |k| !not_text(k)),
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// A personal value at any string position of an error body, at any depth, is redacted,
        /// and the body stays the same JSON around it.
        #[test]
        fn error_bodies_are_scanned_at_every_depth(v in json_with_values()) {
            let det = PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap();
            let body = v.to_string();
            let scanned = scan_error_body(&det, body.as_bytes()).unwrap();
            let out = match scanned.verdict {
                Verdict::Redacted => scanned.splice.apply(body.as_bytes()).unwrap(),
                _ => Bytes::from(body.clone()),
            };
            let text = std::str::from_utf8(&out).unwrap();
            prop_assert!(!text.contains("ann@example.com") && !text.contains("4111 1111"), "{}", text);
            let expected = body
                .replace("ann@example.com", "[EMAIL_1]")
                .replace("4111 1111 1111 1111", "[CREDIT_CARD_1]");
            let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let want: serde_json::Value = serde_json::from_str(&expected).unwrap();
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        /// A personal value at any string position of a request — any field, any depth, any
        /// shape, known or not — never reaches the provider under `redact`.
        #[test]
        fn a_value_anywhere_in_a_request_is_redacted(v in json_with_values(), at_top in any::<bool>()) {
            let request = if at_top {
                let mut o = serde_json::Map::new();
                o.insert("model".to_owned(), "gpt-4o-mini".into());
                o.insert("extra".to_owned(), v);
                serde_json::Value::Object(o)
            } else {
                serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": v}]})
            };
            let body = request.to_string();
            let (_, out) = redact(&body).unwrap();
            prop_assert!(!out.contains("ann@example.com") && !out.contains("4111 1111"), "{}", out);
            let got: serde_json::Value = serde_json::from_str(&out).unwrap();
            let want: serde_json::Value = serde_json::from_str(
                &body
                    .replace("ann@example.com", "[EMAIL_1]")
                    .replace("4111 1111 1111 1111", "[CREDIT_CARD_1]"),
            )
            .unwrap();
            prop_assert_eq!(got, want);
        }
    }
}
