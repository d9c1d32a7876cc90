//! Building responses: the one place an [`ApiError`] becomes an HTTP response, and the headers
//! every response carries.
//!
//! Error bodies follow OpenAI's shape, `{"error":{"message","type","param","code"}}`, and on
//! Anthropic's routes Anthropic's, `{"type":"error","error":{"type","message"}}`, so each SDK
//! raises its usual exception classes. Policy refusals add `x-should-retry: false`, which the
//! OpenAI SDKs honour, so a blocked prompt or an exhausted budget is not retried in a loop.
//! Every response — success, error, ops route — gets `x-palisade-request-id`,
//! `x-palisade-pack-version` and `x-palisade-pack-hash` from [`stamp`].

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::body::GatewayBody;
use crate::error::ApiError;
use crate::pack::ActivePack;
use crate::service::{RequestId, Wire};

pub(crate) static REQUEST_ID: HeaderName = HeaderName::from_static("x-palisade-request-id");
pub(crate) static PACK_VERSION: HeaderName = HeaderName::from_static("x-palisade-pack-version");
pub(crate) static PACK_HASH: HeaderName = HeaderName::from_static("x-palisade-pack-hash");
static SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_PACK: HeaderValue = HeaderValue::from_static("none");

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

/// The only conversion from an error to a response.
pub(crate) fn error_response(err: &ApiError) -> Response<GatewayBody> {
    let envelope = ErrorEnvelope {
        error: ErrorBody {
            message: err.to_string(),
            kind: err.error_type(),
            param: err.param(),
            code: err.code(),
        },
    };
    error_with_body(err, Wire::OpenAi, &envelope)
}

/// An error's response around its body in one API's shape: its status, JSON, whether SDKs
/// should retry, and a rate limit's back-off headers.
fn error_with_body(err: &ApiError, wire: Wire, envelope: &impl Serialize) -> Response<GatewayBody> {
    let body = serde_json::to_vec(envelope).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(GatewayBody::full(body));
    *resp.status_mut() = err.status();
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    if !err.retryable() {
        resp.headers_mut()
            .insert(SHOULD_RETRY.clone(), HeaderValue::from_static("false"));
    }
    rate_headers(err, wire, &mut resp);
    resp
}

/// A rate limit's refusal tells clients when to come back: `retry-after` (seconds), and the
/// headers each API's clients read — OpenAI's `x-ratelimit-limit-*`, `-remaining-*` and
/// `-reset-*` (`12s`), or Anthropic's `anthropic-ratelimit-*-limit`, `-remaining`, `-reset`
/// (RFC 3339) — for the limit's dimension (`requests` or `tokens`).
fn rate_headers(err: &ApiError, wire: Wire, resp: &mut Response<GatewayBody>) {
    let ApiError::Rejected(r) = err else { return };
    let Some(rate) = r.rate else { return };
    let h = resp.headers_mut();
    h.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(rate.retry_after_secs),
    );
    let dim = rate.dimension;
    if dim == "usd" {
        // Clients know requests and tokens; a dollar rate has only its retry time.
        return;
    }
    let mut put = |name: String, value: String| {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            h.insert(n, v);
        }
    };
    match wire {
        Wire::OpenAi => {
            put(format!("x-ratelimit-limit-{dim}"), rate.limit.to_string());
            put(format!("x-ratelimit-remaining-{dim}"), "0".to_owned());
            put(
                format!("x-ratelimit-reset-{dim}"),
                format!("{}s", rate.retry_after_secs),
            );
        }
        Wire::Anthropic => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .saturating_add(rate.retry_after_secs);
            put(
                format!("anthropic-ratelimit-{dim}-limit"),
                rate.limit.to_string(),
            );
            put(
                format!("anthropic-ratelimit-{dim}-remaining"),
                "0".to_owned(),
            );
            put(
                format!("anthropic-ratelimit-{dim}-reset"),
                crate::budget::window::format_rfc3339(i64::try_from(reset).unwrap_or(i64::MAX)),
            );
        }
    }
}

/// Anthropic's error shape, `{"type":"error","error":{"type","message"}}`, with the gateway's
/// stable `code` beside them (the Anthropic SDKs read the type and raise by status).
#[derive(Serialize)]
struct AnthropicEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    error: AnthropicError<'a>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: String,
    code: &'a str,
}

/// Anthropic's error type for a status.
pub(crate) fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 | 405 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An error in the shape of the route's API family: OpenAI's, or Anthropic's on `/v1/messages`.
pub(crate) fn error_response_on(err: &ApiError, wire: Wire) -> Response<GatewayBody> {
    if wire == Wire::OpenAi {
        return error_response(err);
    }
    let envelope = AnthropicEnvelope {
        kind: "error",
        error: AnthropicError {
            kind: anthropic_error_type(err.status()),
            message: err.to_string(),
            code: err.code(),
        },
    };
    error_with_body(err, wire, &envelope)
}

/// A JSON response with a status.
pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    resp
}

pub(crate) fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Add the identity headers to a response.
pub(crate) fn stamp(resp: &mut Response<GatewayBody>, id: RequestId, pack: Option<&ActivePack>) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_bytes(&id.hex()) {
        h.insert(REQUEST_ID.clone(), v);
    }
    match pack {
        Some(p) => {
            h.insert(PACK_VERSION.clone(), p.version_header.clone());
            h.insert(PACK_HASH.clone(), p.hash_header.clone());
        }
        None => {
            h.insert(PACK_VERSION.clone(), NO_PACK);
            h.insert(PACK_HASH.clone(), NO_PACK);
        }
    }
}
