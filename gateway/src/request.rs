//! Reading an API request body: the few facts the gateway needs, and the body sent upstream.
//!
//! Unknown fields pass through untouched. When no policy changes anything, the caller's bytes go
//! upstream as they are (no parse-and-reserialize round trip, no allocation): only the fields
//! the gateway reads are decoded, borrowed from the body. A full JSON tree is built only when
//! something must change: the request-side PII scan is on, the model is renamed for the
//! provider, or a stream's `stream_options` must be rewritten. The common streaming case — the
//! caller sent no `stream_options` — is a byte splice that adds
//! `"stream_options":{"include_usage":true}`, so the provider reports usage for budgets.
//!
//! Not here: what the PII policy does with the strings (`policy`).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// What the gateway reads from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestFacts {
    pub(crate) model: String,
    pub(crate) stream: bool,
    /// Whether the caller sent `stream_options` at all, and its `include_usage`.
    pub(crate) stream_options: Option<Option<bool>>,
    pub(crate) max_tokens: Option<u64>,
}

impl RequestFacts {
    /// The caller asked for the usage chunk of a stream.
    pub(crate) fn wants_usage(&self) -> bool {
        self.stream_options == Some(Some(true))
    }
}

/// A parsed request: its facts, and its tree when one was needed.
#[derive(Debug)]
pub(crate) struct ParsedRequest {
    pub(crate) facts: RequestFacts,
    pub(crate) tree: Option<Value>,
}

fn facts(peek: Peek<'_>) -> Result<RequestFacts, ApiError> {
    let model = peek
        .model
        .ok_or_else(|| ApiError::invalid_param("model", "you must provide a model parameter"))?;
    if model.is_empty() {
        return Err(ApiError::invalid_param(
            "model",
            "the model must not be empty",
        ));
    }
    Ok(RequestFacts {
        model: model.into_owned(),
        stream: peek.stream.unwrap_or(false),
        stream_options: peek.stream_options.map(|o| o.include_usage),
        max_tokens: peek.max_completion_tokens.or(peek.max_tokens),
    })
}

fn bad_json(e: &serde_json::Error) -> ApiError {
    ApiError::invalid(format!(
        "the request body is not a valid JSON object for this route: {e}"
    ))
}

/// Parse `body`; build the tree only when `want_tree`.
pub(crate) fn parse(body: &[u8], want_tree: bool) -> Result<ParsedRequest, ApiError> {
    if want_tree {
        let tree: Value = serde_json::from_slice(body).map_err(|e| bad_json(&e))?;
        if !tree.is_object() {
            return Err(ApiError::invalid("the request body must be a JSON object"));
        }
        let facts = facts(Peek::deserialize(&tree).map_err(|e| bad_json(&e))?)?;
        return Ok(ParsedRequest {
            facts,
            tree: Some(tree),
        });
    }
    let peek: Peek<'_> = serde_json::from_slice(body).map_err(|e| bad_json(&e))?;
    Ok(ParsedRequest {
        facts: facts(peek)?,
        tree: None,
    })
}

/// What must change in the body on its way upstream, besides PII.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rewrite<'a> {
    /// The provider's name for the model, when it differs.
    pub(crate) upstream_model: Option<&'a str>,
    /// Ask the provider for the usage chunk.
    pub(crate) include_usage: bool,
}

/// The body to send upstream. `tree_dirty` says a policy already changed the tree.
pub(crate) fn upstream_body(
    original: Bytes,
    parsed: &mut ParsedRequest,
    rewrite: Rewrite<'_>,
    tree_dirty: bool,
) -> Result<Bytes, ApiError> {
    let needs_usage = rewrite.include_usage && !parsed.facts.wants_usage();
    if parsed.tree.is_none() && rewrite.upstream_model.is_none() && !tree_dirty {
        if !needs_usage {
            return Ok(original);
        }
        if parsed.facts.stream_options.is_none() {
            if let Some(spliced) = splice_include_usage(&original) {
                return Ok(spliced);
            }
        }
    }
    // Rare path: edit the tree.
    let mut dirty = tree_dirty;
    let tree = match parsed.tree.as_mut() {
        Some(t) => t,
        None => {
            let t: Value = serde_json::from_slice(&original).map_err(|e| bad_json(&e))?;
            parsed.tree.insert(t)
        }
    };
    let Some(obj) = tree.as_object_mut() else {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    };
    if let Some(m) = rewrite.upstream_model {
        obj.insert("model".to_owned(), Value::String(m.to_owned()));
        dirty = true;
    }
    if needs_usage {
        let opts = obj
            .entry("stream_options")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !opts.is_object() {
            *opts = Value::Object(serde_json::Map::new());
        }
        if let Some(o) = opts.as_object_mut() {
            o.insert("include_usage".to_owned(), Value::Bool(true));
        }
        dirty = true;
    }
    if !dirty {
        return Ok(original);
    }
    serde_json::to_vec(tree)
        .map(Bytes::from)
        .map_err(|e| ApiError::invalid(format!("cannot re-encode the request: {e}")))
}

/// Insert the usage request right after the object's opening brace. `None` if the body does
/// not start with `{` (it was parsed as an object, so that means leading whitespace only).
fn splice_include_usage(body: &[u8]) -> Option<Bytes> {
    const FIELD: &[u8] = br#""stream_options":{"include_usage":true}"#;
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'{' {
        return None;
    }
    let rest = &body[open + 1..];
    let empty = rest
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'}');
    let mut out = BytesMut::with_capacity(body.len() + FIELD.len() + 1);
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(FIELD);
    if !empty {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(rest);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &[u8] =
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"x_unknown":1}"#;

    fn no_rewrite() -> Rewrite<'static> {
        Rewrite {
            upstream_model: None,
            include_usage: false,
        }
    }

    #[test]
    fn an_unchanged_request_is_forwarded_byte_for_byte() {
        let mut p = parse(CHAT, false).unwrap();
        assert_eq!(p.facts.model, "gpt-4o-mini");
        let out = upstream_body(Bytes::from_static(CHAT), &mut p, no_rewrite(), false).unwrap();
        assert_eq!(&out[..], CHAT);
    }

    #[test]
    fn streams_ask_for_usage_and_keep_every_other_field() {
        let body = br#" {"model":"m","stream":true,"messages":[]}"#;
        let mut p = parse(body, false).unwrap();
        let rw = Rewrite {
            upstream_model: None,
            include_usage: true,
        };
        let out = upstream_body(Bytes::from_static(body), &mut p, rw, false).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream"], true);
        assert_eq!(v["messages"], serde_json::json!([]));
    }

    #[test]
    fn an_explicit_include_usage_false_is_overridden_upstream() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#;
        let mut p = parse(body, false).unwrap();
        assert!(!p.facts.wants_usage());
        let rw = Rewrite {
            upstream_model: Some("m-2024"),
            include_usage: true,
        };
        let out = upstream_body(Bytes::from_static(body), &mut p, rw, false).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m-2024");
    }

    #[test]
    fn malformed_requests_get_specific_messages() {
        let cases: [&[u8]; 4] = [
            b"not json",
            b"[1,2]",
            br#"{"messages":[]}"#,
            br#"{"model":"m","stream":"yes"}"#,
        ];
        for body in cases {
            for tree in [false, true] {
                let err = parse(body, tree).unwrap_err();
                assert_eq!(
                    err.code(),
                    "invalid_request",
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}
