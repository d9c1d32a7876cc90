//! Every way an API call can fail, and the one place where a failure becomes an HTTP response.
//!
//! Each variant has a stable `code` (clients and scripts match on it, never on the message) and a
//! status. Handlers return `Result<_, ApiError>`; its [`IntoResponse`] renders
//! `{"error":{"code","message",...}}` with extra members (diagnostics, gates) where the variant
//! has them. Storage errors are logged here with their cause and shown to the caller only as
//! `STORAGE_ERROR`, so SQL text and file paths never leave the process.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
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
    NotFound { code: &'static str, message: String },
    #[error("{0}")]
    BadRequest(String),
    /// A known path asked with a method it does not take.
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A field longer than its limit (a change note).
    #[error("{message}")]
    TooLong { code: &'static str, message: String },
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
    Unprocessable { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A deploy or promotion that one or more gates refused; `gates` names every gate.
    #[error("{message}")]
    Refused {
        code: &'static str,
        status: StatusCode,
        message: String,
        gates: Value,
    },
    #[error("storage error: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
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
            Self::Storage(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code, also a low-cardinality label for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidKey => "INVALID_SERVICE_KEY",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound { code, .. }
            | Self::TooLong { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unprocessable { code, .. } => code,
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            Self::BodyTooLarge(_) => "BODY_TOO_LARGE",
            Self::BodyTimeout(_) => "REQUEST_TIMEOUT",
            Self::Compile(_) | Self::CompileIn { .. } => "POLICY_COMPILE_ERROR",
            Self::Refused { code, .. } => code,
            Self::Storage(_) => "STORAGE_ERROR",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The `{"error": …}` body.
    pub(crate) fn body(&self) -> Value {
        let mut error = json!({ "code": self.code() });
        match self {
            Self::Storage(e) => {
                tracing::error!(error = %e, "storage error");
                error["message"] = json!("the registry's storage failed; nothing was changed");
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                error["message"] = json!("internal error");
            }
            Self::Compile(d) => {
                error["message"] = json!(format!(
                    "the pack does not compile: {} error(s)",
                    d.errors().count()
                ));
                error["diagnostics"] = json!(d);
            }
            Self::CompileIn { pack, diagnostics } => {
                error["message"] = json!(format!(
                    "pack `{pack}` in the manifest does not compile: {} error(s)",
                    diagnostics.errors().count()
                ));
                error["pack"] = json!(pack);
                error["diagnostics"] = json!(diagnostics);
            }
            Self::Refused { gates, .. } => {
                error["message"] = json!(self.to_string());
                error["gates"] = gates.clone();
            }
            _ => error["message"] = json!(self.to_string()),
        }
        json!({ "error": error })
    }
}

/// The only place an error becomes a response.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::debug!(code = self.code(), "request failed");
        json_response(self.status(), &self.body())
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
