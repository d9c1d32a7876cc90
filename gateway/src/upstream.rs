//! The provider side: pooled HTTP clients, and per provider the parsed base URL and the
//! injected key.
//!
//! The caller's headers are never copied upstream: a request to the provider carries only
//! `content-type`, `accept` and the provider key read from the environment variable the pack
//! names (read when a pack is prepared, not per request). Clients are built with TCP_NODELAY,
//! a bounded idle pool and HTTP/1.1 + HTTP/2 (ALPN) over rustls with the webpki roots. There is
//! one client per serving thread and connect timeout (a thread-local): the server runs one
//! single-threaded runtime per core, and a connection pooled on the thread that uses it is
//! driven there too, with no cross-thread wake-ups on the request path. The pools live outside
//! the pack, so a reload does not drop warm connections.
//!
//! Not here: retries and fallbacks between providers (a failed upstream call is reported, not
//! retried, so a budget reservation is never charged twice).

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use policy_engine::pack::ProviderSpec;

use crate::error::ApiError;

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Idle connections kept per provider host. Bounds the pool; busy connections beyond it are
/// closed after use instead of being kept.
const POOL_MAX_IDLE_PER_HOST: usize = 512;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error("provider `{provider}`: base_url `{url}` is not an http(s) URL: {reason}")]
    BadUrl {
        provider: String,
        url: String,
        reason: String,
    },
    #[error("TLS setup for upstream clients failed: {0}")]
    Tls(String),
}

/// Build a client that connects within `connect_timeout`.
fn client(connect_timeout: Duration) -> Result<HttpClient, UpstreamConfigError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .map_err(|e| UpstreamConfigError::Tls(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}

/// One provider, ready to receive requests.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub(crate) name: String,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix of the base URL without a trailing slash, e.g. `/v1`.
    prefix: String,
    auth: Option<HeaderValue>,
    pub(crate) connect_timeout: Duration,
    pub(crate) first_byte_timeout: Duration,
}

thread_local! {
    /// This thread's clients, by connect timeout (a pack has one or two distinct values).
    static CLIENTS: std::cell::RefCell<Vec<(Duration, HttpClient)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's client for `connect_timeout`, built on first use.
fn thread_client(connect_timeout: Duration) -> Result<HttpClient, UpstreamConfigError> {
    CLIENTS.with(|cell| {
        let mut clients = cell.borrow_mut();
        if let Some((_, c)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
            return Ok(c.clone());
        }
        let c = client(connect_timeout)?;
        clients.push((connect_timeout, c.clone()));
        Ok(c)
    })
}

impl Upstream {
    /// `key` is the provider key, already read from the environment (`None`: send none).
    pub(crate) fn new(
        name: &str,
        spec: &ProviderSpec,
        key: Option<&str>,
    ) -> Result<Self, UpstreamConfigError> {
        let bad = |reason: &str| UpstreamConfigError::BadUrl {
            provider: name.to_owned(),
            url: spec.base_url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = spec.base_url.parse().map_err(|_| bad("unparseable"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad("scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let auth = match key {
            Some(k) => Some(
                HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| bad("the provider key holds characters a header cannot"))?,
            ),
            None => None,
        };
        let mut auth = auth;
        if let Some(v) = auth.as_mut() {
            v.set_sensitive(true);
        }
        Ok(Self {
            name: name.to_owned(),
            scheme,
            authority,
            prefix,
            auth,
            connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
            first_byte_timeout: Duration::from_millis(spec.first_byte_timeout_ms),
        })
    }

    fn uri(&self, path: &str) -> Result<Uri, ApiError> {
        let mut pq = String::with_capacity(self.prefix.len() + path.len());
        pq.push_str(&self.prefix);
        pq.push_str(path);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| ApiError::Upstream(format!("cannot build the provider URL: {e}")))
    }

    /// Send a request and wait for the response head, within the connect and first-byte
    /// timeouts.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        accept: Option<&HeaderValue>,
    ) -> Result<http::Response<Incoming>, ApiError> {
        let mut builder = Request::builder().method(method).uri(self.uri(path)?);
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(a) = accept {
            builder = builder.header(ACCEPT, a.clone());
        }
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let req = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ApiError::Upstream(format!("cannot build the provider request: {e}")))?;
        // The first-byte budget includes connecting; a connect timeout shorter than it fires
        // first and is reported as such.
        let budget = self.first_byte_timeout.max(self.connect_timeout);
        let client =
            thread_client(self.connect_timeout).map_err(|e| ApiError::Upstream(e.to_string()))?;
        match tokio::time::timeout(budget, client.request(req)).await {
            Err(_) => Err(ApiError::UpstreamTimeout {
                ms: u64::try_from(self.first_byte_timeout.as_millis()).unwrap_or(u64::MAX),
                phase: "first byte",
            }),
            Ok(Err(e)) if is_timeout(&e) => Err(ApiError::UpstreamTimeout {
                ms: u64::try_from(self.connect_timeout.as_millis()).unwrap_or(u64::MAX),
                phase: "connect",
            }),
            Ok(Err(e)) => Err(ApiError::Upstream(describe(&e, &self.name))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = s.source();
    }
    false
}

fn describe(e: &hyper_util::client::legacy::Error, provider: &str) -> String {
    let what = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = format!("provider `{provider}`: {what}");
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
