//! A small JSON client for the control plane's gateway endpoints.
//!
//! One pooled hyper client; every call has a deadline (the long poll's own wait plus a margin),
//! and answers are read through a size limit. The gateway key travels as a bearer token and is
//! never logged. Plain `http://` only for now: TLS to the control plane goes through the same
//! rustls connector as the provider client once both are in one place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use palisade_wire::events::{ROWS_CONTENT_TYPE, ROWS_FORMAT};
use palisade_wire::gateway::{Desired, Register, Registered, Report};

/// Largest answer read from the control plane (a pack document is well below this).
const MAX_ANSWER: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid control plane URL `{0}`: expected http://HOST:PORT")]
    Url(String),
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    #[error("control plane answered {status}: {body}")]
    Status {
        status: u16,
        body: String,
        /// The answer's `Retry-After` in seconds, when it has one (a busy control plane).
        retry_after: Option<Duration>,
    },
    #[error("control plane answer is not what the protocol says: {0}")]
    Protocol(String),
    #[error("control plane did not answer within {0:?}")]
    Timeout(Duration),
}

/// What a poll for the desired version found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredAnswer {
    Changed(Desired),
    NotModified,
    NothingDeployed,
}

#[derive(Debug, Clone)]
pub struct ControlClient {
    base: String,
    key: String,
    http: Client<HttpConnector, Full<Bytes>>,
    /// The control plane said, when this gateway last registered, that it reads event batches
    /// as rows (shared by every clone: the agent registers, the shipper sends).
    reads_rows: Arc<AtomicBool>,
}

impl ControlClient {
    pub fn new(base: &str, key: &str) -> Result<Self, ControlError> {
        let base = base.trim_end_matches('/');
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(ControlError::Url(base.to_owned()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2)
            .build(connector);
        Ok(Self {
            base: base.to_owned(),
            key: key.to_owned(),
            http,
            reads_rows: Arc::new(AtomicBool::new(false)),
        })
    }

    pub async fn register(&self, body: &Register) -> Result<Registered, ControlError> {
        let answer = self
            .call(
                Method::POST,
                "/v1/gateways/register",
                Some(body),
                None,
                Duration::from_secs(10),
            )
            .await?;
        let registered: Registered = parse(&expect_ok(answer)?)?;
        let rows = registered.event_formats.iter().any(|f| f == ROWS_FORMAT);
        self.reads_rows.store(rows, Ordering::Relaxed);
        Ok(registered)
    }

    /// Whether the control plane reads event batches as rows (as of the last registration).
    pub fn reads_rows(&self) -> bool {
        self.reads_rows.load(Ordering::Relaxed)
    }

    /// Send event batches as objects until the next registration says otherwise.
    pub fn forget_rows(&self) {
        self.reads_rows.store(false, Ordering::Relaxed);
    }

    /// Long-poll for the desired version; `known` is the hash already seen (`If-None-Match`).
    pub async fn desired(
        &self,
        environment: &str,
        pack: &str,
        known: Option<&str>,
        wait: Duration,
    ) -> Result<DesiredAnswer, ControlError> {
        let path = format!(
            "/v1/gateways/desired?environment={}&pack={}&wait={}",
            enc(environment),
            enc(pack),
            wait.as_secs()
        );
        let etag = known.map(|h| format!("\"{h}\""));
        let answer = self
            .call::<()>(
                Method::GET,
                &path,
                None,
                etag.as_deref(),
                wait + Duration::from_secs(10),
            )
            .await?;
        match answer.status {
            StatusCode::OK => Ok(DesiredAnswer::Changed(parse(&answer.body)?)),
            StatusCode::NOT_MODIFIED => Ok(DesiredAnswer::NotModified),
            StatusCode::NOT_FOUND => Ok(DesiredAnswer::NothingDeployed),
            _ => Err(status_error(answer)),
        }
    }

    pub async fn report(&self, id: &str, body: &Report) -> Result<(), ControlError> {
        let path = format!("/v1/gateways/{}/report", enc(id));
        let answer = self
            .call(
                Method::POST,
                &path,
                Some(body),
                None,
                Duration::from_secs(10),
            )
            .await?;
        expect_ok(answer).map(drop)
    }

    /// `POST /v1/events` with a gzipped batch (rows, or the object form); `Ok` once the control
    /// plane stored it.
    pub async fn send_events(&self, gzipped: Bytes, rows: bool) -> Result<(), ControlError> {
        let content_type = if rows {
            ROWS_CONTENT_TYPE
        } else {
            "application/json"
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/v1/events", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key))
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Full::new(gzipped))
            .map_err(|e| ControlError::Url(e.to_string()))?;
        expect_ok(self.exchange(req, Duration::from_secs(10)).await?).map(drop)
    }

    async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        if_none_match: Option<&str>,
        deadline: Duration,
    ) -> Result<Answer, ControlError> {
        let bytes = match body {
            Some(b) => Bytes::from(
                serde_json::to_vec(b).map_err(|e| ControlError::Protocol(e.to_string()))?,
            ),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ControlError::Url(e.to_string()))?;
        self.exchange(req, deadline).await
    }

    /// Send `req` and read the answer within `deadline`.
    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
        deadline: Duration,
    ) -> Result<Answer, ControlError> {
        #[expect(
            clippy::disallowed_methods,
            reason = "the body is wrapped in Limited, so collecting is bounded"
        )]
        let work = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ControlError::Unreachable(e.to_string()))?;
            let status = resp.status();
            // Seconds only: the HTTP-date form is not something the control plane sends.
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(60)));
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| ControlError::Protocol(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| ControlError::Timeout(deadline))?
    }
}

/// A control-plane answer: its status, `Retry-After` (seconds) and body.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
}

/// The body of a 2xx answer; any other is an error.
fn expect_ok(answer: Answer) -> Result<Bytes, ControlError> {
    if answer.status.is_success() {
        Ok(answer.body)
    } else {
        Err(status_error(answer))
    }
}

fn status_error(answer: Answer) -> ControlError {
    let text = String::from_utf8_lossy(&answer.body);
    let short: String = text.chars().take(300).collect();
    ControlError::Status {
        status: answer.status.as_u16(),
        body: short,
        retry_after: answer.retry_after,
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(bytes).map_err(|e| ControlError::Protocol(e.to_string()))
}

/// Percent-encode a query or path value (environment and pack names are plain already; this
/// keeps an odd instance id from breaking the URL).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
