//! The extractors every handler takes its input through, so that no handler parses by hand and
//! every refusal is an [`ApiError`] in the one error shape:
//!
//! - [`AnyKey`] and [`ServiceKey`] authenticate the `Authorization` header (a handler that takes
//!   neither is public: `/healthz` and `/metrics`); roles beyond "a service key" are checked in
//!   the service functions, which record refusals in the admin log;
//! - [`Json`] reads the body within the body limit ([`axum::extract::DefaultBodyLimit`]) and the
//!   body deadline the listener set, then decodes it, naming the JSON path that is wrong;
//! - [`Query`] decodes the query string into a typed struct; an empty value (`?pack=`) is the
//!   same as an absent one, so a form or script that sends every field unfilters nothing;
//! - [`Path`] is axum's, with its refusal in the error shape.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::request::Parts;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::app::App;
use crate::error::ApiError;
use crate::keys::{Caller, Role};

/// When the request's body must have arrived, and the timeout that set it (the listener puts
/// one on every request).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyDeadline {
    pub at: Instant,
    pub timeout: std::time::Duration,
}

/// Any active key, gateway keys included.
#[derive(Debug)]
pub(crate) struct AnyKey(pub Caller);

impl FromRequestParts<Arc<App>> for AnyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        app.authenticate(header).await.map(Self)
    }
}

/// A service key of any role (gateway keys cannot read the registry).
#[derive(Debug)]
pub(crate) struct ServiceKey(pub Caller);

impl FromRequestParts<Arc<App>> for ServiceKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let AnyKey(caller) = AnyKey::from_request_parts(parts, app).await?;
        if caller.role == Role::Gateway {
            return Err(ApiError::Forbidden(
                "gateway keys can only register, poll, report and send events".to_owned(),
            ));
        }
        Ok(Self(caller))
    }
}

/// The whole body, read within the body limit and the listener's deadline.
#[derive(Debug)]
pub(crate) struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let deadline = req.extensions().get::<BodyDeadline>().copied();
        let read = Bytes::from_request(req, state);
        let bytes = match deadline {
            Some(d) => match tokio::time::timeout_at(d.at, read).await {
                Ok(r) => r,
                Err(_) => return Err(ApiError::BodyTimeout(d.timeout.as_secs())),
            },
            None => read.await,
        };
        bytes.map(Self).map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge(crate::server::MAX_BODY_BYTES)
            } else {
                ApiError::BadRequest(format!("reading the body: {}", e.body_text()))
            }
        })
    }
}

/// A JSON body of type `T`; 400 naming the path that does not fit.
#[derive(Debug)]
pub(crate) struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(body) = RawBody::from_request(req, state).await?;
        decode_json(&body).map(Self)
    }
}

/// Decode a JSON body, or 400 with the path of the value that does not fit.
pub(crate) fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::BadRequest(format!("invalid JSON body: {}", e.into_inner()))
        } else {
            ApiError::BadRequest(format!("invalid JSON body at `{path}`: {}", e.into_inner()))
        }
    })
}

/// The query string as `T`; empty values count as absent.
#[derive(Debug)]
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        let filled: Vec<&str> = raw
            .split('&')
            .filter(|p| p.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
            .collect();
        serde_urlencoded::from_str(&filled.join("&"))
            .map(Self)
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
    }
}

/// Path parameters, percent-decoded segment by segment (an encoded `/` stays in its segment).
#[derive(Debug)]
pub(crate) struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| Self(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}
