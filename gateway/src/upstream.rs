//! The provider side: a per-thread pool of HTTP/1.1 connections, and per provider the parsed
//! base URL and the injected key.
//!
//! The caller's headers are never copied upstream: a request to the provider carries only
//! `content-type`, `accept` and the provider key read from the environment variable the pack
//! names (read when a pack is prepared, not per request). Connections are made with
//! TCP_NODELAY over plain TCP or rustls (webpki roots), through hyper-rustls' connector.
//!
//! The pool is this crate's own, on `hyper::client::conn::http1`: the server runs one
//! single-threaded runtime per core, so each serving thread keeps its idle connections in a
//! thread-local list per origin, with no lock and no cross-thread wake-up. A connection goes back
//! to the list when its response body has been read to the end ([`UpstreamBody`]); a body
//! dropped early (a client that left mid-stream) closes its connection instead, since the rest
//! of that answer is still on the wire. At most [`POOL_MAX_IDLE_PER_ORIGIN`] idle connections are
//! kept per origin and thread, and one idle longer than [`POOL_IDLE_TIMEOUT`] is closed rather
//! than reused. hyper-util's pooled client did the same job with a mutex-guarded pool and a task
//! spawned per request to watch for the connection becoming idle; this pool costs neither
//! (benches/README.md, Gateway). Upstream requests are HTTP/1.1 only (every provider speaks it);
//! the pools live outside the pack, so a reload does not drop warm connections.
//!
//! Not here: retries and fallbacks between deployments (`routing`, `proxy::forward_routed`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use policy_engine::pack::{ProviderKind, ProviderSpec, DEFAULT_ANTHROPIC_VERSION};
use tower_service::Service;

use crate::error::ApiError;
use crate::service::ApiRoute;

type Connector = HttpsConnector<HttpConnector>;
type Sender = SendRequest<Full<Bytes>>;

/// Idle connections kept per provider origin and serving thread.
pub(crate) const POOL_MAX_IDLE_PER_ORIGIN: usize = 256;
/// An idle connection older than this is closed instead of reused (providers close theirs
/// after a minute or two; reusing one they are closing fails the request).
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

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

/// A connector that connects within `connect_timeout`, HTTP/1.1 only (ALPN).
fn connector(connect_timeout: Duration) -> Result<Connector, UpstreamConfigError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .map_err(|e| UpstreamConfigError::Tls(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

struct Idle {
    sender: Sender,
    since: Instant,
}

#[derive(Default)]
struct ThreadPool {
    /// Connectors by connect timeout (a pack has one or two distinct values).
    connectors: Vec<(Duration, Connector)>,
    /// Idle connections by origin (`scheme://authority`), most recently used last.
    idle: HashMap<Box<str>, Vec<Idle>>,
}

thread_local! {
    static POOL: RefCell<ThreadPool> = RefCell::new(ThreadPool::default());
}

/// An idle connection to `origin` that is still open, newest first; stale ones are dropped.
fn checkout(origin: &str) -> Option<Sender> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.idle.get_mut(origin)?;
        while let Some(idle) = list.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(idle.sender);
            }
        }
        None
    })
}

/// Close this thread's idle connections that have been idle too long or were closed by the
/// provider. Checkout takes the newest first, so after a burst the oldest would otherwise sit
/// in the list (holding a socket) until the provider closes them.
pub(crate) fn sweep_idle() {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        for list in pool.idle.values_mut() {
            list.retain(|idle| {
                !idle.sender.is_closed() && idle.since.elapsed() < POOL_IDLE_TIMEOUT
            });
        }
    });
}

/// Put a connection whose last response was read to the end back in this thread's pool.
fn checkin(origin: &str, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if let Some(list) = pool.idle.get_mut(origin) {
            if list.len() < POOL_MAX_IDLE_PER_ORIGIN {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
            return;
        }
        pool.idle.insert(
            origin.into(),
            vec![Idle {
                sender,
                since: Instant::now(),
            }],
        );
    });
}

/// This thread's connector for `connect_timeout`, built on first use.
fn thread_connector(connect_timeout: Duration) -> Result<Connector, UpstreamConfigError> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if let Some((_, c)) = pool.connectors.iter().find(|(t, _)| *t == connect_timeout) {
            return Ok(c.clone());
        }
        let c = connector(connect_timeout)?;
        pool.connectors.push((connect_timeout, c.clone()));
        Ok(c)
    })
}

/// A provider's response body. Reading it to the end returns its connection to the pool;
/// dropping it early closes the connection.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    conn: Option<(std::sync::Arc<str>, Sender)>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some((origin, sender)) = self.conn.take() {
            checkin(&origin, sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One provider, ready to receive requests.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub(crate) name: String,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// `scheme://authority`: the pool key.
    origin: std::sync::Arc<str>,
    /// The `host` header every request carries.
    host: HeaderValue,
    /// The wire format the provider speaks.
    pub(crate) kind: ProviderKind,
    /// The request target of each API route the provider speaks (`/v1/chat/completions`, …),
    /// parsed once: a clone is a reference count, a parse per request was ~0.5 % of the full
    /// chain's CPU. `None`: a route of the other kind.
    targets: [Option<Uri>; ApiRoute::ALL.len()],
    /// The base URL's path, for targets built per request (a stored response's id).
    prefix: Box<str>,
    /// The provider key as its kind sends it: `authorization: Bearer …` or `x-api-key: …`.
    auth: Option<(HeaderName, HeaderValue)>,
    /// `anthropic-version` for an `anthropic` provider when the caller sent none.
    anthropic_version: Option<HeaderValue>,
    pub(crate) connect_timeout: Duration,
    pub(crate) first_byte_timeout: Duration,
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
        let prefix = uri.path().trim_end_matches('/');
        let mut targets: [Option<Uri>; ApiRoute::ALL.len()] = Default::default();
        for r in ApiRoute::ALL {
            if r.wire().native_kind() == spec.kind {
                targets[r.index()] = Some(
                    Uri::try_from(format!("{prefix}{}", r.upstream_path()))
                        .map_err(|_| bad("the path cannot be a request target"))?,
                );
            }
        }
        let origin: std::sync::Arc<str> = format!("{scheme}://{authority}").into();
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad("the host cannot be sent as a header"))?;
        let auth = match key {
            Some(k) => {
                let (name, value) = match spec.kind {
                    ProviderKind::OpenAi => (AUTHORIZATION, format!("Bearer {k}")),
                    ProviderKind::Anthropic => (X_API_KEY, k.to_owned()),
                };
                let mut v = HeaderValue::from_str(&value)
                    .map_err(|_| bad("the provider key holds characters a header cannot"))?;
                v.set_sensitive(true);
                Some((name, v))
            }
            None => None,
        };
        let anthropic_version = match spec.kind {
            ProviderKind::Anthropic => Some(
                HeaderValue::from_str(
                    spec.anthropic_version
                        .as_deref()
                        .unwrap_or(DEFAULT_ANTHROPIC_VERSION),
                )
                .map_err(|_| bad("`anthropic_version` cannot be sent as a header"))?,
            ),
            ProviderKind::OpenAi => None,
        };
        Ok(Self {
            name: name.to_owned(),
            scheme,
            authority,
            origin,
            host,
            kind: spec.kind,
            targets,
            prefix: prefix.into(),
            auth,
            anthropic_version,
            connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
            first_byte_timeout: Duration::from_millis(spec.first_byte_timeout_ms),
        })
    }

    /// How long a call may take to its answer's head before the provider's own timeouts end it.
    pub(crate) fn head_budget(&self) -> Duration {
        self.first_byte_timeout.max(self.connect_timeout)
    }

    /// Whether the provider speaks `route` natively.
    pub(crate) fn speaks(&self, route: ApiRoute) -> bool {
        self.targets[route.index()].is_some()
    }

    /// Send a request and wait for the response head, within the connect and first-byte
    /// timeouts.
    pub(crate) async fn send(
        &self,
        method: Method,
        target: Target<'_>,
        body: Option<Bytes>,
        pass: &PassHeaders,
    ) -> Result<http::Response<UpstreamBody>, ApiError> {
        // HTTP/1 over a connection: origin-form target, and the host as a header.
        let uri = match target {
            Target::Route(route) => self.targets[route.index()].clone(),
            Target::Below(tail) => Uri::try_from(format!("{}/{tail}", self.prefix)).ok(),
        }
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "provider `{}` (kind {}) has no target for this route",
                self.name,
                self.kind.as_str()
            ))
        })?;
        let has_body = body.is_some();
        let mut req = Request::new(Full::new(body.unwrap_or_default()));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.reserve(4);
        headers.insert(HOST, self.host.clone());
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(a) = &pass.accept {
            headers.insert(ACCEPT, a.clone());
        }
        if let Some((name, value)) = &self.auth {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(tp) = &pass.traceparent {
            headers.insert(TRACEPARENT, tp.clone());
        }
        if self.kind == ProviderKind::Anthropic {
            if let Some(v) = pass
                .anthropic_version
                .as_ref()
                .or(self.anthropic_version.as_ref())
            {
                headers.insert(ANTHROPIC_VERSION, v.clone());
            }
            if let Some(v) = &pass.anthropic_beta {
                headers.insert(ANTHROPIC_BETA, v.clone());
            }
        }
        // The first-byte budget includes connecting; a connect timeout shorter than it fires
        // first and is reported as such.
        let budget = self.head_budget();
        let first_byte = ApiError::UpstreamTimeout {
            ms: u64::try_from(self.first_byte_timeout.as_millis()).unwrap_or(u64::MAX),
            phase: "first byte",
        };
        let exchange = async {
            let mut sender = match checkout(&self.origin) {
                Some(s) => s,
                None => self.connect().await?,
            };
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| ApiError::upstream(&self.name, describe(&e, "request failed")))?;
            Ok::<_, ApiError>((resp, sender))
        };
        let (resp, sender) = tokio::time::timeout(budget, exchange)
            .await
            .map_err(|_| first_byte)??;
        let (parts, inner) = resp.into_parts();
        // A connection the provider is closing after this answer is not pooled.
        let keep = !parts
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let conn = keep.then(|| (std::sync::Arc::clone(&self.origin), sender));
        Ok(http::Response::from_parts(
            parts,
            UpstreamBody { inner, conn },
        ))
    }

    /// A new connection, its task spawned on this thread's runtime.
    async fn connect(&self) -> Result<Sender, ApiError> {
        let mut connector = thread_connector(self.connect_timeout)
            .map_err(|e| ApiError::upstream(&self.name, e.to_string()))?;
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| ApiError::upstream(&self.name, format!("cannot build the URL: {e}")))?;
        let io = std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .and(Ok(()));
        let io = match io {
            Ok(()) => connector.call(uri).await,
            Err(e) => Err(e),
        };
        let io = io.map_err(|e| {
            if is_timeout(e.as_ref()) {
                ApiError::UpstreamTimeout {
                    ms: u64::try_from(self.connect_timeout.as_millis()).unwrap_or(u64::MAX),
                    phase: "connect",
                }
            } else {
                ApiError::upstream(&self.name, describe(e.as_ref(), "connection failed"))
            }
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| ApiError::upstream(&self.name, describe(&e, "connection failed")))?;
        let provider = self.name.clone();
        let exec = TokioExecutor::new();
        hyper::rt::Executor::execute(&exec, async move {
            if let Err(e) = conn.await {
                tracing::debug!(%provider, error = %e, "provider connection ended");
            }
        });
        Ok(sender)
    }
}

/// Where a request goes below the provider's base URL.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The route's own path.
    Route(ApiRoute),
    /// A path built per request (`responses/{id}`), already checked to be safe.
    Below(&'a str),
}

/// The caller's headers that go on to the provider: what it accepts, the trace context, and
/// the Anthropic version and beta flags (an Anthropic SDK sends them; to an `anthropic`
/// provider only).
#[derive(Debug, Default)]
pub(crate) struct PassHeaders {
    pub(crate) accept: Option<HeaderValue>,
    pub(crate) traceparent: Option<HeaderValue>,
    pub(crate) anthropic_version: Option<HeaderValue>,
    pub(crate) anthropic_beta: Option<HeaderValue>,
}

impl PassHeaders {
    pub(crate) fn from_request(headers: &http::HeaderMap) -> Self {
        Self {
            accept: headers.get(ACCEPT).cloned(),
            traceparent: None,
            anthropic_version: headers.get(ANTHROPIC_VERSION).cloned(),
            anthropic_beta: headers.get(ANTHROPIC_BETA).cloned(),
        }
    }
}

const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
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

fn describe(e: &(dyn std::error::Error + 'static), what: &str) -> String {
    let mut msg = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
