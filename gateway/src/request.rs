//! Reading an API request body: the few facts the gateway needs, and the body sent upstream.
//!
//! Unknown fields pass through untouched, byte for byte. The body is parsed once into borrowed
//! views (`json_splice`): the facts the gateway reads are decoded, and the fields it may
//! rewrite (`model`, `stream_options`) are kept as raw values that know their place in the body
//! (the PII scan walks the body's strings itself, `policy::scan_request`). When nothing changes, the caller's bytes go upstream as
//! they are; otherwise only the changed values are spliced in — a renamed `model`, a redacted
//! string, `"stream_options":{"include_usage":true}` added after the opening brace so the
//! provider reports usage for budgets. No JSON tree is built on this path.
//!
//! Not here: what the PII policy does with the strings (`policy`).

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::ApiError;
use crate::json_splice::{self, Splice};
use crate::openai::{RequestPeek, StreamOptions};

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

/// A parsed request: its facts, and the raw values a policy may scan or the gateway rewrite,
/// borrowed from the body.
#[derive(Debug)]
pub(crate) struct ParsedRequest<'b> {
    pub(crate) facts: RequestFacts,
    model: Option<&'b RawValue>,
    stream_options: Option<&'b RawValue>,
}

fn bad_json(e: &serde_json::Error) -> ApiError {
    ApiError::invalid(format!(
        "the request body is not a valid JSON object for this route: {e}"
    ))
}

/// Parse `body`: one pass, no tree.
pub(crate) fn parse(body: &[u8]) -> Result<ParsedRequest<'_>, ApiError> {
    // A derived struct also accepts a JSON array (as a tuple); an API request is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Err(e) => bad_json(&e),
                Ok(_) => ApiError::invalid("the request body must be a JSON object"),
            },
        );
    }
    let peek: RequestPeek<'_> = serde_json::from_slice(body).map_err(|e| bad_json(&e))?;
    let model = match peek.model {
        None => {
            return Err(ApiError::invalid_param(
                "model",
                "you must provide a model parameter",
            ))
        }
        Some(raw) => json_splice::string(raw)
            .ok_or_else(|| ApiError::invalid_param("model", "the model must be a string"))?,
    };
    if model.is_empty() {
        return Err(ApiError::invalid_param(
            "model",
            "the model must not be empty",
        ));
    }
    let stream_options = match peek.stream_options.0 {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(
            serde_json::from_str::<StreamOptions>(raw.get())
                .map_err(|e| ApiError::invalid_param("stream_options", e.to_string()))?
                .include_usage,
        ),
    };
    Ok(ParsedRequest {
        facts: RequestFacts {
            model: model.into_owned(),
            stream: peek.stream.unwrap_or(false),
            stream_options,
            max_tokens: peek
                .max_completion_tokens
                .or(peek.max_output_tokens)
                .or(peek.max_tokens),
        },
        model: peek.model,
        stream_options: peek.stream_options.0,
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

/// The body to send upstream: `original` (a cheap clone) when nothing changes, else
/// `original` with `splice` (the policies' edits) and the gateway's own rewrites applied.
pub(crate) fn upstream_body(
    original: &Bytes,
    parsed: &ParsedRequest<'_>,
    rewrite: Rewrite<'_>,
    mut splice: Splice,
) -> Result<Bytes, ApiError> {
    let needs_usage = rewrite.include_usage && !parsed.facts.wants_usage();
    if splice.is_empty() && rewrite.upstream_model.is_none() && !needs_usage {
        return Ok(original.clone());
    }
    rewrites(original, parsed, rewrite, &mut splice)?;
    splice.apply(original).ok_or_else(lost)
}

/// [`upstream_body`] for a request that may be sent more than once (to several deployments):
/// the policies' edits are borrowed, not consumed.
pub(crate) fn upstream_body_again(
    original: &Bytes,
    parsed: &ParsedRequest<'_>,
    rewrite: Rewrite<'_>,
    policy_edits: &Splice,
) -> Result<Bytes, ApiError> {
    let mut own = Splice::default();
    rewrites(original, parsed, rewrite, &mut own)?;
    if policy_edits.is_empty() && own.is_empty() {
        return Ok(original.clone());
    }
    policy_edits.apply_with(own, original).ok_or_else(lost)
}

fn lost() -> ApiError {
    ApiError::Internal("a request field lost its place".to_owned())
}

/// The gateway's own edits of the body, added to `splice`: the provider's model name, and
/// `stream_options.include_usage` for a stream when usage is needed.
fn rewrites(
    original: &Bytes,
    parsed: &ParsedRequest<'_>,
    rewrite: Rewrite<'_>,
    splice: &mut Splice,
) -> Result<(), ApiError> {
    let needs_usage = rewrite.include_usage && !parsed.facts.wants_usage();
    if let Some(m) = rewrite.upstream_model {
        let at = parsed
            .model
            .and_then(|r| json_splice::span(original, r))
            .ok_or_else(lost)?;
        splice.replace_string(at, m);
    }
    if needs_usage {
        match parsed.stream_options {
            None => {
                const FIELD: &[u8] = br#""stream_options":{"include_usage":true}"#;
                let open = original
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .ok_or_else(lost)?;
                let empty = original
                    .iter()
                    .skip(open + 1)
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| *b == b'}');
                let mut field = FIELD.to_vec();
                if !empty {
                    field.push(b',');
                }
                splice.replace(open + 1..open + 1, field);
            }
            Some(raw) => {
                // Rare: the caller sent `stream_options` without `include_usage: true`.
                let at = json_splice::span(original, raw).ok_or_else(lost)?;
                let mut opts = match serde_json::from_str::<Value>(raw.get()) {
                    Ok(Value::Object(o)) => o,
                    _ => serde_json::Map::new(),
                };
                opts.insert("include_usage".to_owned(), Value::Bool(true));
                let encoded = serde_json::to_vec(&opts)
                    .map_err(|e| ApiError::invalid(format!("cannot re-encode the request: {e}")))?;
                splice.replace(at, encoded);
            }
        }
    }
    Ok(())
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
        let body = Bytes::from_static(CHAT);
        let p = parse(&body).unwrap();
        assert_eq!(p.facts.model, "gpt-4o-mini");
        let out = upstream_body(&body, &p, no_rewrite(), Splice::default()).unwrap();
        assert_eq!(&out[..], CHAT);
    }

    #[test]
    fn streams_ask_for_usage_and_keep_every_other_field() {
        let body = Bytes::from_static(br#" {"model":"m","stream":true,"messages":[]}"#);
        let p = parse(&body).unwrap();
        let rw = Rewrite {
            upstream_model: None,
            include_usage: true,
        };
        let out = upstream_body(&body, &p, rw, Splice::default()).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream"], true);
        assert_eq!(v["messages"], serde_json::json!([]));
    }

    #[test]
    fn an_explicit_include_usage_false_is_overridden_upstream() {
        for body in [
            &br#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}"#[..],
            br#"{"model":"m","stream":true,"stream_options":null}"#,
        ] {
            let body = Bytes::copy_from_slice(body);
            let p = parse(&body).unwrap();
            assert!(!p.facts.wants_usage());
            let rw = Rewrite {
                upstream_model: Some("m-2024"),
                include_usage: true,
            };
            let out = upstream_body(&body, &p, rw, Splice::default()).unwrap();
            // Still one `stream_options` key: a strict parser would refuse two.
            let text = std::str::from_utf8(&out).unwrap();
            assert_eq!(text.matches("stream_options").count(), 1, "{text}");
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], true);
            assert_eq!(v["model"], "m-2024");
        }
    }

    #[test]
    fn malformed_requests_get_specific_messages() {
        let cases: [(&[u8], &str); 7] = [
            (b"not json", "not a valid JSON object"),
            (b"[1,2]", "must be a JSON object"),
            (br#"["gpt-4o", true]"#, "must be a JSON object"),
            (br#"{"messages":[]}"#, "must provide a model"),
            (br#"{"model":"m","stream":"yes"}"#, "invalid type"),
            (br#"{"model":7}"#, "must be a string"),
            (br#"{"model":"m","model":"n"}"#, "duplicate field"),
        ];
        for (body, says) in cases {
            let err = parse(body).unwrap_err();
            assert_eq!(
                err.code(),
                "invalid_request",
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(
                err.to_string().contains(says),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
