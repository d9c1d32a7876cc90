//! Borrowed views into a JSON body, and rewriting it by splicing bytes.
//!
//! The request and response paths read a few fields of a body and may change a few strings.
//! Building a `serde_json::Value` tree for that, and re-encoding it, cost more CPU than the PII
//! scan itself (see benches/README.md, Gateway). Instead the fields are deserialized as
//! [`RawValue`]s borrowed from the body, so each one's place in the body is known, and the body
//! sent on is the original bytes with only the changed values replaced ([`Splice`]). Unknown
//! fields, key order, whitespace and escapes elsewhere pass byte for byte.
//!
//! A body is still fully validated: serde_json checks the syntax of every value it skips.
//! Objects are read into structs, so a repeated key (`{"content":"a","content":"b"}`) is an
//! error rather than a guess at which copy the provider will use — a scanner that reads one copy
//! while the provider reads the other would let text through unscanned.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Where `part`, borrowed from `base`, sits in `base`. `None` when it is not inside `base`.
pub(crate) fn span(base: &[u8], part: &RawValue) -> Option<Range<usize>> {
    let part = part.get();
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= base.len()).then_some(start..end)
}

/// What [`string_spans`] does with the value of an object key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// Its strings are text: found.
    Text,
    /// A string value is not text (an id, an enumeration, media) and is left out; an object or
    /// list under the key is still walked.
    Skip,
    /// An object value is free-form data (a tool call's `input`, whose keys the caller's schema
    /// chose): every string in it is found, whatever its keys are called.
    Free,
}

/// The byte ranges (quotes included) of every string value in `json`, at any depth, in document
/// order, except a string that is the value of an object key `rule` says to skip (an object
/// or array under such a key is still walked: in a JSON schema, a property named `id` holds a
/// description), and never inside an object under a [`Key::Free`] key; object keys themselves
/// are not values, and a repeated key's values are all there. One pass over the bytes, no
/// parse: `json` must already be known to be valid JSON (the request path has parsed it; an
/// error body is checked first).
pub(crate) fn string_spans(json: &[u8], rule: fn(&str) -> Key, out: &mut Vec<Range<usize>>) {
    // Open containers, `true` for an object; whether the next string is an object key; a
    // skipped key whose value has not begun yet; a free key whose value has not begun yet; the
    // depth of the free object being walked.
    let mut stack: Vec<bool> = Vec::new();
    let mut expect_key = false;
    let mut skip_next = false;
    let mut free_next = false;
    let mut free_at: Option<usize> = None;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i;
                let mut k = i + 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', json.get(k..).unwrap_or_default()) {
                        Some(at) if json[k + at] == b'\\' => k += at + 2,
                        Some(at) => {
                            k += at;
                            break;
                        }
                        None => {
                            k = json.len();
                            break;
                        }
                    }
                }
                let end = (k + 1).min(json.len());
                if expect_key {
                    let key =
                        std::str::from_utf8(&json[start + 1..k.min(json.len())]).unwrap_or("");
                    let r = if free_at.is_some() {
                        Key::Text
                    } else {
                        rule(key)
                    };
                    skip_next = r == Key::Skip;
                    free_next = r == Key::Free;
                    expect_key = false;
                } else {
                    free_next = false;
                    if !std::mem::take(&mut skip_next) {
                        out.push(start..end);
                    }
                }
                i = end;
                continue;
            }
            b @ (b'{' | b'[') => {
                skip_next = false;
                if std::mem::take(&mut free_next) && b == b'{' {
                    free_at = Some(stack.len());
                }
                stack.push(b == b'{');
                expect_key = b == b'{';
            }
            b'}' | b']' => {
                stack.pop();
                if free_at == Some(stack.len()) {
                    free_at = None;
                }
                expect_key = false;
            }
            b',' => expect_key = stack.last() == Some(&true),
            b':' => expect_key = false,
            // A number, `true`, `false` or `null` after a skipped key: its value, skipped.
            b if !b.is_ascii_whitespace() => {
                skip_next = false;
                free_next = false;
            }
            _ => {}
        }
        i += 1;
    }
}

/// A JSON object read into `T` (whose fields borrow from `raw`); `None` for any other kind of
/// value.
pub(crate) fn object<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
) -> Result<Option<T>, serde_json::Error> {
    if raw.get().starts_with('{') {
        serde_json::from_str(raw.get()).map(Some)
    } else {
        Ok(None)
    }
}

/// A value read into `T` when it is a JSON object, and skipped (`None`) when it is any other
/// kind of value: [`object`] done while the enclosing value is parsed, instead of in a second
/// pass over its raw bytes. `T`'s fields may borrow [`RawValue`]s, and a repeated key is still an
/// error.
#[derive(Debug)]
pub(crate) struct Obj<T>(pub(crate) Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData))
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Obj(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }
}

/// A field's raw value when the key is there, `null` included (`Option<&RawValue>` reads
/// `null` as absent, and a key that is there must be replaced, not added a second time).
#[derive(Debug, Default)]
pub(crate) struct Present<'a>(pub(crate) Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|r| Present(Some(r)))
    }
}

/// The objects of a JSON array, each read into `T` in the same pass (other items skipped);
/// empty for any other kind of value: [`items`] + [`object`] without re-reading the bytes.
#[derive(Debug)]
pub(crate) struct Objects<T>(pub(crate) Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Objects<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectsVisitor(PhantomData))
    }
}

struct ObjectsVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectsVisitor<T> {
    type Value = Objects<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(64));
        while let Some(Obj(item)) = seq.next_element::<Obj<T>>()? {
            out.extend(item);
        }
        Ok(Objects(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Objects(Vec::new()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Objects(Vec::new()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Objects(Vec::new()))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Objects(Vec::new()))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Objects(Vec::new()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Objects(Vec::new()))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Objects(Vec::new()))
    }
}

/// The decoded text of a JSON string (borrowed when it has no escapes); `None` for any other
/// kind of value.
///
/// Decoding never fails on a string: an escape that is not Unicode (an unpaired UTF-16
/// surrogate such as `\ud800`, which JSON's grammar allows and `serde_json` refuses to decode)
/// becomes U+FFFD, which the PII matcher ignores like a zero-width character. So every string
/// the provider would read is scanned, in all that can be decoded of it — a string that could
/// not be decoded must never be a string that is not scanned.
pub(crate) fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        Some(Cow::Owned(unescape_lossy(inner)))
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// The text of a JSON string's contents (between its quotes), escapes decoded; what is not a
/// valid escape or not Unicode (a lone surrogate) becomes U+FFFD. Total: any input decodes.
pub(crate) fn unescape_lossy(inner: &str) -> String {
    let b = inner.as_bytes();
    let mut out = String::with_capacity(inner.len());
    let mut at = 0;
    while let Some(off) = memchr::memchr(b'\\', &b[at..]) {
        out.push_str(&inner[at..at + off]);
        at += off;
        let (c, used) = escape_at(b, at);
        out.push(c);
        at += used;
    }
    out.push_str(&inner[at..]);
    out
}

/// The character of the escape at `b[at]` (a backslash) and how many bytes it takes.
fn escape_at(b: &[u8], at: usize) -> (char, usize) {
    let simple = match b.get(at + 1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let Some(unit) = hex4(b, at + 2) else {
                return (char::REPLACEMENT_CHARACTER, 2);
            };
            if (0xD800..0xDC00).contains(&unit)
                && b.get(at + 6) == Some(&b'\\')
                && b.get(at + 7) == Some(&b'u')
            {
                if let Some(low @ 0xDC00..=0xDFFF) = hex4(b, at + 8) {
                    let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    return (char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 12);
                }
            }
            return (
                char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER),
                6,
            );
        }
        // A backslash ending the text, or a letter JSON does not allow: cannot come from a
        // value `serde_json` parsed, decoded all the same. A multi-byte character after it is
        // left to the next round (only the backslash is consumed).
        _ => return (char::REPLACEMENT_CHARACTER, 1),
    };
    (simple, 2)
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    let mut v = 0;
    for &d in digits {
        v = v * 16 + char::from(d).to_digit(16)?;
    }
    Some(v)
}

/// Append `text` as a JSON string: copied between quotes when nothing in it needs an escape,
/// else escaped by `serde_json` (so escapes are serde_json's by construction). The same bytes as
/// `serde_json::to_writer` either way: it escapes exactly `"`, `\\` and the control characters.
pub(crate) fn write_json_string(out: &mut Vec<u8>, text: &str) {
    if !needs_json_escape(text.as_bytes()) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, text).is_err() {
        // Not reached: writing a str into a Vec cannot fail.
        out.extend_from_slice(b"null");
    }
}

/// Whether `s` holds a byte JSON must escape. Checked 32 bytes at a time without an early exit
/// inside a block, which the compiler can turn into vector compares. (serde_json's escaper,
/// which goes a byte at a time, showed as 0.9 % of the full chain's CPU re-encoding redacted
/// messages; the load benchmark's A/B could not tell the two apart, so this is kept as the one
/// shared writer of the audit line and the splices, not as a measured speed-up.)
fn needs_json_escape(s: &[u8]) -> bool {
    let special = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let mut blocks = s.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(false, |m, &b| m | special(b)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| special(b))
}

/// Replacements of byte ranges of one body, applied in one copy.
#[derive(Debug, Default, Clone)]
pub(crate) struct Splice {
    edits: Vec<(Range<usize>, Vec<u8>)>,
}

impl Splice {
    /// Replace `at` with `with` (already encoded JSON). An empty range inserts.
    pub(crate) fn replace(&mut self, at: Range<usize>, with: Vec<u8>) {
        self.edits.push((at, with));
    }

    /// Replace `at` with `text` encoded as a JSON string.
    pub(crate) fn replace_string(&mut self, at: Range<usize>, text: &str) {
        let mut encoded = Vec::with_capacity(text.len() + 2);
        write_json_string(&mut encoded, text);
        self.edits.push((at, encoded));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Whether something is already inserted at `at`.
    pub(crate) fn inserts_at(&self, at: usize) -> bool {
        self.edits.iter().any(|(r, _)| r.start == at && r.end == at)
    }

    /// `body` with every replacement made. `None` if two replacements overlap or one lies
    /// outside `body` (a bug in the caller; nothing is sent then).
    /// `body` with this splice's replacements and `extra`'s made (this one is kept, to be
    /// applied again with other extras).
    pub(crate) fn apply_with(&self, extra: Splice, body: &[u8]) -> Option<Bytes> {
        let mut edits: Vec<&(Range<usize>, Vec<u8>)> =
            self.edits.iter().chain(extra.edits.iter()).collect();
        edits.sort_by_key(|(r, _)| (r.start, r.end));
        let grow: usize = edits.iter().map(|(_, w)| w.len()).sum();
        let mut out = Vec::with_capacity(body.len() + grow);
        let mut at = 0;
        for (range, with) in edits {
            out.extend_from_slice(body.get(at..range.start)?);
            out.extend_from_slice(with);
            at = range.end;
        }
        out.extend_from_slice(body.get(at..)?);
        Some(Bytes::from(out))
    }

    pub(crate) fn apply(mut self, body: &[u8]) -> Option<Bytes> {
        self.edits.sort_by_key(|(r, _)| (r.start, r.end));
        let grow: usize = self.edits.iter().map(|(_, w)| w.len()).sum();
        let mut out = Vec::with_capacity(body.len() + grow);
        let mut at = 0;
        for (range, with) in &self.edits {
            out.extend_from_slice(body.get(at..range.start)?);
            out.extend_from_slice(with);
            at = range.end;
        }
        out.extend_from_slice(body.get(at..)?);
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn json_strings_are_written_as_serde_json_writes_them(
            text in prop_oneof![
                any::<String>(),
                "[ -~]{0,80}",
                "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é]{0,70}",
            ]
        ) {
            let mut ours = Vec::new();
            write_json_string(&mut ours, &text);
            prop_assert_eq!(ours, serde_json::to_vec(&text).unwrap());
        }
    }

    proptest! {
        /// Every string `serde_json` decodes, ours decodes to the same text.
        #[test]
        fn strings_decode_as_serde_json_decodes_them(text in any::<String>(), ascii_only in any::<bool>()) {
            let json = if ascii_only {
                // Every non-ASCII character as a `\u` escape (surrogate pairs above the BMP).
                let mut j = String::from("\"");
                for unit in text.encode_utf16() {
                    match unit {
                        0x20..=0x7e if unit != 0x22 && unit != 0x5c => j.push(char::from(u8::try_from(unit).unwrap())),
                        _ => j.push_str(&format!("\\u{unit:04x}")),
                    }
                }
                j.push('"');
                j
            } else {
                serde_json::to_string(&text).unwrap()
            };
            let raw: Box<RawValue> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(string(&raw).unwrap(), text);
        }

        /// Any escapes at all, lone surrogates among them: decoding gives a text, never `None`.
        #[test]
        fn strings_with_any_escape_always_decode(units in proptest::collection::vec(any::<u16>(), 0..12), plain in "[a-z@. ]{0,8}") {
            let mut json = String::from("\"");
            json.push_str(&plain);
            for u in &units {
                json.push_str(&format!("\\u{u:04X}"));
            }
            json.push_str(&plain);
            json.push('"');
            let raw: Box<RawValue> = serde_json::from_str(&json).unwrap();
            let decoded = string(&raw).unwrap();
            let expected: String = char::decode_utf16(units.iter().copied())
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect();
            prop_assert_eq!(decoded, format!("{plain}{expected}{plain}"));
        }
    }

    #[test]
    fn a_lone_surrogate_decodes_to_the_replacement_character_not_to_nothing() {
        for (json, text) in [
            (r#""a\ud800b""#, "a\u{fffd}b"),
            (r#""\udc00""#, "\u{fffd}"),
            (r#""\ud800\ud800\udc00""#, "\u{fffd}\u{10000}"),
            (r#""x\ud83d\u0041""#, "x\u{fffd}A"),
        ] {
            let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
            assert_eq!(string(&raw).unwrap(), text, "{json}");
        }
    }

    #[test]
    fn spans_point_into_the_body_and_splices_keep_every_other_byte() {
        #[derive(Deserialize)]
        struct Doc<'a> {
            #[serde(borrow)]
            list: &'a RawValue,
        }
        let body = br#"{ "list" : [ "a\u0040b" , 7 , {"x":1} ], "keep":"\n" }"#;
        let doc: Doc<'_> = serde_json::from_slice(body).unwrap();
        let items: Vec<&RawValue> = serde_json::from_str(doc.list.get()).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(string(items[0]).unwrap(), "a@b");
        assert!(string(items[1]).is_none());
        let at = span(body, items[0]).unwrap();
        assert_eq!(&body[at.clone()], br#""a\u0040b""#);
        let mut s = Splice::default();
        s.replace_string(at, "[EMAIL_1] \"q\"");
        let out = s.apply(body).unwrap();
        assert_eq!(
            &out[..],
            br#"{ "list" : [ "[EMAIL_1] \"q\"" , 7 , {"x":1} ], "keep":"\n" }"#
        );
    }

    #[test]
    fn overlapping_edits_are_refused_not_applied() {
        let mut s = Splice::default();
        s.replace(0..4, b"x".to_vec());
        s.replace(2..6, b"y".to_vec());
        assert!(s.apply(b"0123456789").is_none());
        let mut s = Splice::default();
        s.replace(8..20, b"x".to_vec());
        assert!(s.apply(b"0123456789").is_none());
    }

    #[derive(Debug, Deserialize)]
    struct Item<'a> {
        #[serde(borrow, default)]
        text: Option<&'a RawValue>,
    }

    #[derive(Debug, Deserialize)]
    struct Doc<'a> {
        #[serde(borrow, default)]
        list: Option<Objects<Item<'a>>>,
        #[serde(borrow, default)]
        one: Option<Obj<Item<'a>>>,
    }

    #[test]
    fn objects_read_in_one_pass_skip_other_items_and_keep_their_place() {
        let body = br#"{"list":[{"text":"a\u0040b"},7,"s",null,[{"text":"no"}],{"x":{"y":[1]},"text":"c"}],"one":{"text":"d"}}"#;
        let doc: Doc<'_> = serde_json::from_slice(body).unwrap();
        let texts: Vec<&RawValue> = doc.list.unwrap().0.iter().filter_map(|i| i.text).collect();
        assert_eq!(texts.len(), 2, "only the objects of the list are read");
        assert_eq!(string(texts[0]).unwrap(), "a@b");
        assert_eq!(&body[span(body, texts[1]).unwrap()], br#""c""#);
        let one = doc.one.unwrap().0.unwrap().text.unwrap();
        assert_eq!(&body[span(body, one).unwrap()], br#""d""#);
        for other in [
            r#"{"list":"s","one":[1]}"#,
            r#"{"list":{"text":"x"},"one":3}"#,
            r#"{"list":null}"#,
        ] {
            let doc: Doc<'_> = serde_json::from_str(other).unwrap();
            assert!(doc.list.is_none_or(|l| l.0.is_empty()), "{other}");
            assert!(doc.one.is_none_or(|o| o.0.is_none()), "{other}");
        }
        let broken = r#"{"list":[{"text":"a"},{"text":]}"#;
        assert!(serde_json::from_str::<Doc<'_>>(broken).is_err());
        let repeated = r#"{"list":[{"text":"a","text":"b"}]}"#;
        let err = serde_json::from_str::<Doc<'_>>(repeated).unwrap_err();
        assert!(err.to_string().contains("duplicate field `text`"), "{err}");
        let repeated = r#"{"one":{"text":"a","text":"b"}}"#;
        assert!(serde_json::from_str::<Doc<'_>>(repeated).is_err());
    }

    #[test]
    fn a_repeated_key_is_an_error_not_a_guess() {
        #[derive(Debug, Deserialize)]
        struct Msg<'a> {
            #[serde(borrow, default)]
            #[expect(dead_code, reason = "only the parse result matters")]
            content: Option<&'a RawValue>,
        }
        let raw: &RawValue = serde_json::from_str(r#"{"content":"a","content":"b"}"#).unwrap();
        assert!(object::<Msg<'_>>(raw).is_err());
    }

    /// The strings of `v` a walk of the tree finds, skipping string values of `Skip` keys
    /// (never inside an object under a `Free` key).
    fn tree_strings(
        v: &serde_json::Value,
        rule: fn(&str) -> Key,
        free: bool,
        out: &mut Vec<String>,
    ) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| tree_strings(x, rule, free, out)),
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    let r = if free { Key::Text } else { rule(k) };
                    if !(r == Key::Skip && x.is_string()) {
                        tree_strings(x, rule, free || (r == Key::Free && x.is_object()), out);
                    }
                }
            }
            _ => {}
        }
    }

    fn json_tree() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\\\\"{}\\[\\]:, a-z]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\\\\\" ]{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The one-pass scan finds exactly the strings a walk of the parsed tree finds, keys
        /// with awkward characters and strings with escapes included, and skips what it must.
        #[test]
        fn string_spans_are_the_strings_of_the_tree(v in json_tree(), pretty in any::<bool>()) {
            let rule: fn(&str) -> Key = |k| match k.as_bytes().first() {
                Some(b'a') => Key::Skip,
                Some(b'b') => Key::Free,
                _ => Key::Text,
            };
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            let mut spans = Vec::new();
            super::string_spans(text.as_bytes(), rule, &mut spans);
            let found: Vec<String> = spans
                .into_iter()
                .map(|r| serde_json::from_str::<String>(&text[r]).unwrap())
                .collect();
            let mut want = Vec::new();
            tree_strings(&v, rule, false, &mut want);
            prop_assert_eq!(found, want);
        }
    }
}
