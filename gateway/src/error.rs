//! Every way an API request can be refused or fail, as one small enum with a stable code.
//!
//! Each variant knows its OpenAI error `code`, `type`, `param`, HTTP status, which side is to
//! blame and a low-cardinality metric label, so the edge (`respond::error_response`, the only
//! place an error becomes a response) and the hooks never match on message text. Policy
//! decisions are not errors until the edge decides to refuse: a PII block travels as a
//! [`crate::policy::Verdict`] and becomes [`ApiError::PiiBlocked`] only when it is enforced.
//! This module does not log: the edge does, once, with [`ApiError::detail`].
//!
//! What a caller reads never carries internals: a provider failure says which provider failed,
//! not the cause chain (host names, OS errors), and a gateway bug says it was logged under the
//! request id. The cause is kept for the log.

use http::StatusCode;

/// Who caused a failure; a metric label and a hint for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The caller sent something we refuse (bad key, bad JSON, too large).
    Client,
    /// The active pack refused it (PII block, model not allowed, budget).
    Policy,
    /// The provider failed or was too slow.
    Upstream,
    /// The gateway itself (no pack loaded, or a bug: an internal error).
    Gateway,
}

impl Blame {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Policy => "policy",
            Self::Upstream => "upstream",
            Self::Gateway => "gateway",
        }
    }
}

/// A refused or failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidApiKey(&'static str),
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("the request body is larger than the gateway's limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout { secs: u64 },
    #[error("the model `{model}` is not allowed by the active policy pack")]
    ModelNotAllowed { model: String },
    #[error("the {side} contains personal data ({entities}) and the active policy pack blocks it")]
    PiiBlocked {
        side: &'static str,
        entities: String,
    },
    #[error("{}", .0.message)]
    Rejected(Rejection),
    /// A field of the caller's format that the provider's format cannot carry.
    #[error("the request's `{field}` cannot be translated for this model's provider: {why}")]
    Untranslatable { field: String, why: String },
    /// The model's provider speaks another API family than the route.
    #[error("the model `{model}` is served by provider `{provider}` (kind `{kind}`), which does not speak {route}; call the route of its API family, or route the model to a provider of the other kind")]
    RouteNotServed {
        model: String,
        provider: String,
        kind: &'static str,
        route: &'static str,
    },
    #[error("the provider did not answer within {ms} ms ({phase})")]
    UpstreamTimeout { ms: u64, phase: &'static str },
    /// The provider failed; `detail` (the cause chain) is for the log only.
    #[error("the provider `{provider}` could not be reached or failed")]
    Upstream { provider: String, detail: String },
    /// A gateway bug, or a pack and request the gateway cannot reconcile; `0` is for the log.
    #[error("the gateway could not handle this request (an internal error, logged under the request id)")]
    Internal(String),
    #[error("unknown route; this gateway serves the OpenAI and Anthropic APIs under /v1")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("no policy pack is active yet")]
    NotReady,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn upstream(provider: &str, detail: impl Into<String>) -> Self {
        Self::Upstream {
            provider: provider.to_owned(),
            detail: detail.into(),
        }
    }

    /// What the log says: the cause for upstream and internal errors, the message otherwise.
    pub fn detail(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Upstream { detail, .. } | Self::Internal(detail) => detail.as_str().into(),
            other => other.to_string().into(),
        }
    }

    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param),
        }
    }

    /// The stable code in the error body; also the metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidApiKey(_) => "invalid_api_key",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::TooLarge { .. } => "request_too_large",
            Self::BodyTimeout { .. } => "request_timeout",
            Self::ModelNotAllowed { .. } => "model_not_allowed",
            Self::RouteNotServed { .. } => "route_not_served",
            Self::Untranslatable { .. } => "untranslatable_field",
            Self::PiiBlocked { .. } => "pii_blocked",
            Self::Rejected(r) => r.kind.code(),
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::Upstream { .. } => "upstream_error",
            Self::Internal(_) => "internal_error",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotReady => "pack_not_loaded",
        }
    }

    /// The status the OpenAI SDKs map to the right exception class.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidApiKey(_) => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest { .. }
            | Self::PiiBlocked { .. }
            | Self::RouteNotServed { .. }
            | Self::Untranslatable { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::Rejected(r) => r.kind.status(),
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Rejected(r) => r.kind.error_type(),
            Self::UpstreamTimeout { .. }
            | Self::Upstream { .. }
            | Self::Internal(_)
            | Self::NotReady => "api_error",
            Self::ModelNotAllowed { .. } => "permission_error",
            Self::InvalidApiKey(_) => "authentication_error",
            _ => "invalid_request_error",
        }
    }

    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::InvalidRequest { param, .. } => *param,
            Self::ModelNotAllowed { .. } | Self::RouteNotServed { .. } => Some("model"),
            _ => None,
        }
    }

    pub fn blame(&self) -> Blame {
        match self {
            Self::InvalidApiKey(_)
            | Self::InvalidRequest { .. }
            | Self::Untranslatable { .. }
            | Self::TooLarge { .. }
            | Self::BodyTimeout { .. }
            | Self::NotFound
            | Self::MethodNotAllowed => Blame::Client,
            Self::ModelNotAllowed { .. }
            | Self::RouteNotServed { .. }
            | Self::PiiBlocked { .. }
            | Self::Rejected(_) => Blame::Policy,
            Self::UpstreamTimeout { .. } | Self::Upstream { .. } => Blame::Upstream,
            Self::NotReady | Self::Internal(_) => Blame::Gateway,
        }
    }

    /// Whether an SDK should retry. Policy refusals never succeed on retry, nor does a request
    /// that hit a gateway bug, and the OpenAI SDKs retry 429 and 5xx unless told otherwise
    /// (`x-should-retry`).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::UpstreamTimeout { .. } | Self::Upstream { .. } | Self::NotReady
        ) || matches!(self, Self::Rejected(r) if r.kind.retryable() && !r.rate.is_some_and(|x| x.too_large))
    }
}

/// Why an `Enforcement` refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// 429 `budget_exceeded`.
    BudgetExceeded,
    /// 429 `rate_limited`: a per-minute limit; retry after its window resets.
    RateLimited,
    /// 503 `policy_unavailable`: a store the policy needs is down and it fails closed.
    Unavailable,
}

impl RejectionKind {
    pub fn code(self) -> &'static str {
        match self {
            Self::BudgetExceeded => "budget_exceeded",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "policy_unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BudgetExceeded | Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn error_type(self) -> &'static str {
        match self {
            Self::BudgetExceeded => "insufficient_quota",
            Self::RateLimited => "rate_limit_exceeded",
            Self::Unavailable => "api_error",
        }
    }

    pub fn retryable(self) -> bool {
        // A rate limit's window resets within a minute: SDKs back off and retry.
        matches!(self, Self::Unavailable | Self::RateLimited)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    /// Shown to the caller.
    pub message: String,
    /// The limit that refused it (`scope/window`, e.g. `team:support/daily`), for the record.
    pub limit: Option<String>,
    /// A rate limit's refusal: what the caller's SDK reads to back off.
    pub rate: Option<RateInfo>,
}

/// A rate limit that refused a request: sent as `retry-after` and the `x-ratelimit-*` (or
/// `anthropic-ratelimit-*`) headers clients read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// `requests`, `tokens` (or `usd`).
    pub dimension: &'static str,
    pub limit: u64,
    /// Whole seconds until the limit's window resets (at least 1).
    pub retry_after_secs: u64,
    /// `on_exhausted: queue`: how long the request may wait for the next window first.
    pub queue_ms: Option<u64>,
    /// The request alone asks for more than the whole limit (e.g. its `max_tokens`): retrying
    /// cannot help.
    pub too_large: bool,
}

impl Rejection {
    pub fn new(kind: RejectionKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            limit: None,
            rate: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RejectionKind;
    use super::*;

    #[test]
    fn every_code_has_the_status_an_sdk_expects() {
        let cases = [
            (ApiError::InvalidApiKey("x"), 401, "invalid_api_key"),
            (ApiError::invalid("x"), 400, "invalid_request"),
            (ApiError::TooLarge { limit: 1 }, 413, "request_too_large"),
            (ApiError::BodyTimeout { secs: 1 }, 408, "request_timeout"),
            (
                ApiError::ModelNotAllowed { model: "m".into() },
                403,
                "model_not_allowed",
            ),
            (
                ApiError::PiiBlocked {
                    side: "request",
                    entities: "email".into(),
                },
                400,
                "pii_blocked",
            ),
            (
                ApiError::Rejected(Rejection::new(RejectionKind::BudgetExceeded, "over")),
                429,
                "budget_exceeded",
            ),
            (
                ApiError::UpstreamTimeout {
                    ms: 1,
                    phase: "connect",
                },
                504,
                "upstream_timeout",
            ),
            (ApiError::upstream("p", "x"), 502, "upstream_error"),
            (ApiError::Internal("x".into()), 500, "internal_error"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{code}");
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn callers_read_no_internals_and_the_log_keeps_the_cause() {
        let up = ApiError::upstream("openai", "connection failed: tcp connect error: Connection refused (os error 111) to api.internal:443");
        assert_eq!(
            up.to_string(),
            "the provider `openai` could not be reached or failed"
        );
        assert!(up.detail().contains("os error 111"));
        let bug = ApiError::Internal("a response field lost its place".into());
        assert!(!bug.to_string().contains("field"), "{bug}");
        assert_eq!(bug.detail(), "a response field lost its place");
        assert_eq!(bug.blame(), Blame::Gateway);
        assert!(!bug.retryable());
    }

    #[test]
    fn policy_refusals_tell_sdks_not_to_retry() {
        let budget = ApiError::Rejected(Rejection::new(RejectionKind::BudgetExceeded, "over"));
        assert!(!budget.retryable());
        assert!(ApiError::upstream("p", "x").retryable());
    }
}
