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
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Where `part`, borrowed from `base`, sits in `base`. `None` when it is not inside `base`.
pub(crate) fn span(base: &[u8], part: &RawValue) -> Option<Range<usize>> {
    let part = part.get();
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= base.len()).then_some(start..end)
}

/// The items of a JSON array; empty for any other kind of value.
pub(crate) fn items(raw: &RawValue) -> Result<Vec<&RawValue>, serde_json::Error> {
    if raw.get().starts_with('[') {
        serde_json::from_str(raw.get())
    } else {
        Ok(Vec::new())
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

/// The decoded text of a JSON string (borrowed when it has no escapes); `None` for any other
/// kind of value.
pub(crate) fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(s).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// Replacements of byte ranges of one body, applied in one copy.
#[derive(Debug, Default)]
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
        if serde_json::to_writer(&mut encoded, text).is_ok() {
            self.edits.push((at, encoded));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// `body` with every replacement made. `None` if two replacements overlap or one lies
    /// outside `body` (a bug in the caller; nothing is sent then).
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
    use super::*;

    #[test]
    fn spans_point_into_the_body_and_splices_keep_every_other_byte() {
        #[derive(Deserialize)]
        struct Doc<'a> {
            #[serde(borrow)]
            list: &'a RawValue,
        }
        let body = br#"{ "list" : [ "a\u0040b" , 7 , {"x":1} ], "keep":"\n" }"#;
        let doc: Doc<'_> = serde_json::from_slice(body).unwrap();
        let items = items(doc.list).unwrap();
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
}
