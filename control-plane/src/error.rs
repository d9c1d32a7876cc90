//! Every way an API call can fail, and the one place where a failure becomes an HTTP response.
//!
//! Each variant has a stable `code` (clients and scripts match on it, never on the message) and a
//! status. Handlers return `Result<_, ApiError>`; its [`IntoResponse`] renders
//! `{"error":{"code","message",...}}` with extra members (diagnostics, gates) where the variant
//! has them. Storage errors are logged here with their cause and shown to the caller only as
//! `STORAGE_ERROR`, so SQL text and file paths never leave the process.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use palisade_wire::error::{ErrorAnswer, ErrorBody, ErrorCode};
use policy_engine::Diagnostics;
use serde_json::{json, Value};

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid key")]
    InvalidKey,
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    NotFound { code: ErrorCode, message: String },
    #[error("{0}")]
    BadRequest(String),
    /// A known path asked with a method it does not take.
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A field longer than its limit (a change note).
    #[error("{message}")]
    TooLong { code: ErrorCode, message: String },
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    #[error("the pack does not compile")]
    Compile(Diagnostics),
    /// A pack inside a manifest that does not compile; `pack` names it.
    #[error("pack `{pack}` in the manifest does not compile")]
    CompileIn {
        pack: String,
        diagnostics: Diagnostics,
    },
    /// A request that is well-formed but cannot be acted on (a manifest of a newer format, a
    /// manifest whose hashes do not match its packs).
    #[error("{message}")]
    Unprocessable { code: ErrorCode, message: String },
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    /// A deploy or promotion that one or more gates refused; `gates` names every gate.
    #[error("{message}")]
    Refused {
        code: ErrorCode,
        status: StatusCode,
        message: String,
        gates: Value,
    },
    /// Too busy to do it now; nothing was changed. The caller may send it again after
    /// `retry_after_s` (the `Retry-After` header).
    #[error("{message}")]
    Busy { message: String, retry_after_s: u64 },
    #[error("storage error: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidKey => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge(_) | Self::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Compile(_) | Self::CompileIn { .. } | Self::Unprocessable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Refused { status, .. } => *status,
            Self::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code, also a low-cardinality label for logs and metrics.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidKey => ErrorCode::InvalidServiceKey,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound { code, .. }
            | Self::TooLong { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::Refused { code, .. } => *code,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Self::BodyTooLarge(_) => ErrorCode::BodyTooLarge,
            Self::BodyTimeout(_) => ErrorCode::RequestTimeout,
            Self::Compile(_) | Self::CompileIn { .. } => ErrorCode::PolicyCompileError,
            Self::Storage(_) => ErrorCode::StorageError,
            Self::Busy { .. } => ErrorCode::Busy,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The `{"error": …}` body ([`ErrorAnswer`]), with the members the variant carries.
    pub(crate) fn body(&self) -> Value {
        let mut detail = serde_json::Map::new();
        let message = match self {
            Self::Storage(e) => {
                tracing::error!(error = %e, "storage error");
                "the registry's storage failed; nothing was changed".to_owned()
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "internal error".to_owned()
            }
            Self::Compile(d) => {
                detail.insert("diagnostics".to_owned(), json!(d));
                format!("the pack does not compile: {} error(s)", d.errors().count())
            }
            Self::CompileIn { pack, diagnostics } => {
                detail.insert("pack".to_owned(), json!(pack));
                detail.insert("diagnostics".to_owned(), json!(diagnostics));
                format!(
                    "pack `{pack}` in the manifest does not compile: {} error(s)",
                    diagnostics.errors().count()
                )
            }
            Self::Refused { gates, .. } => {
                detail.insert("gates".to_owned(), gates.clone());
                self.to_string()
            }
            _ => self.to_string(),
        };
        json!(ErrorAnswer {
            error: ErrorBody {
                code: self.code(),
                message,
                detail,
            },
        })
    }
}

/// An event write whose turn did not come: nothing of it was stored, and the gateway sends the
/// batch again after `Retry-After`.
impl From<crate::order::TurnTimeout> for ApiError {
    fn from(e: crate::order::TurnTimeout) -> Self {
        tracing::warn!(error = %e, "event batch not stored; the gateway sends it again");
        Self::Busy {
            message: "earlier event batches are still being stored; send this one again".to_owned(),
            retry_after_s: 1,
        }
    }
}

/// The only place an error becomes a response.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::debug!(code = self.code().as_str(), "request failed");
        let mut resp = json_response(self.status(), &self.body());
        if let Self::Busy { retry_after_s, .. } = &self {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        resp
    }
}

/// A JSON response with the given status.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// 200 with a JSON body.
pub(crate) fn ok(body: &Value) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, body))
}
