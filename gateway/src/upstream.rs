//! The provider side: per-thread pools of HTTP/1.1 and HTTP/2 connections, and per provider the
//! parsed base URL and the injected key.
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
//! (benches/README.md, Gateway). The pools live outside the pack, so a reload does not drop warm
//! connections.
//!
//! A provider with `protocol: http2` is spoken to over HTTP/2 (ALPN `h2` over TLS, prior
//! knowledge over plain TCP): each serving thread keeps a list of connections per origin and
//! puts up to [`H2_STREAMS_PER_CONNECTION`] requests in flight on each, opening another only
//! when all are full, one connect at a time per origin (requests that find a connect under way
//! wait for it rather than open their own). A stream's slot is freed when its response body is
//! dropped; a body dropped early resets only its stream. So N concurrent streams hold N/100
//! provider connections instead of N, with one read buffer, one write buffer and one dispatch
//! channel each (`benches/README.md`, Streams at scale).
//!
//! Not here: retries and fallbacks between deployments (`routing`, `proxy::forward_routed`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
use hyper_util::rt::{TokioExecutor, TokioTimer};
use policy_engine::pack::{
    ProviderKind, ProviderProtocol, ProviderSpec, DEFAULT_ANTHROPIC_VERSION,
};
use tower_service::Service;

use crate::error::ApiError;
use crate::service::ApiRoute;

type Connector = HttpsConnector<HttpConnector>;
type Sender = SendRequest<Full<Bytes>>;
type Sender2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Requests in flight on one HTTP/2 provider connection before another is opened. RFC 9113
/// recommends that a peer allow at least 100 concurrent streams; a provider that allows fewer
/// makes the excess wait for a free stream on its connection.
pub(crate) const H2_STREAMS_PER_CONNECTION: usize = 100;
/// Flow-control windows of an HTTP/2 provider connection. A stream whose caller stops reading
/// holds at most the stream window in the gateway (HTTP/1 holds it in the kernel's socket
/// buffers instead); answers are generated far slower than either window drains. The
/// connection's window covers every stream's, so callers that stop reading cannot starve the
/// other streams of their connection (it is credit, not memory set aside).
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = H2_STREAM_WINDOW * H2_STREAMS_PER_CONNECTION as u32;
/// A ping every interval, idle or not, finds a dead HTTP/2 connection before requests are put
/// on it.
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

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

/// A connector that connects within `connect_timeout`, offering one HTTP version by ALPN.
fn connector(
    connect_timeout: Duration,
    protocol: ProviderProtocol,
) -> Result<Connector, UpstreamConfigError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|e| UpstreamConfigError::Tls(e.to_string()))?
        .https_or_http();
    Ok(match protocol {
        ProviderProtocol::Http1 => builder.enable_http1().wrap_connector(http),
        ProviderProtocol::Http2 => builder.enable_http2().wrap_connector(http),
    })
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// An HTTP/2 provider connection and the streams open on it.
struct H2Conn {
    sender: Sender2,
    open: Arc<AtomicUsize>,
    last_used: Instant,
}

/// One origin's HTTP/2 connections, and the connect under way, if any (requests that need a
/// connection wait on it instead of opening their own).
#[derive(Default)]
struct H2Origin {
    conns: Vec<H2Conn>,
    connecting: Option<Arc<tokio::sync::Notify>>,
    /// Counts connects begun, so a waiter knows whether the failure recorded is the one it
    /// waited for.
    attempt: u64,
    /// The last connect that failed, and how: its waiters fail with it rather than each try
    /// (and time out) in turn.
    failed: Option<(u64, ConnectFailure)>,
}

/// How a connect failed, for the requests that waited on it: the same error as the request
/// that made it.
#[derive(Debug, Clone)]
enum ConnectFailure {
    Timeout { ms: u64 },
    Upstream(String),
}

impl ConnectFailure {
    fn of(e: &ApiError) -> Self {
        match e {
            ApiError::UpstreamTimeout { ms, .. } => Self::Timeout { ms: *ms },
            other => Self::Upstream(other.detail().into_owned()),
        }
    }

    fn error(self, provider: &str) -> ApiError {
        match self {
            Self::Timeout { ms } => ApiError::UpstreamTimeout {
                ms,
                phase: "connect",
            },
            Self::Upstream(detail) => ApiError::upstream(provider, detail),
        }
    }
}

#[derive(Default)]
struct ThreadPool {
    /// Connectors by connect timeout and protocol (a pack has one or two distinct values).
    connectors: Vec<((Duration, ProviderProtocol), Connector)>,
    /// Idle connections by origin (`scheme://authority`), most recently used last.
    idle: HashMap<Box<str>, Vec<Idle>>,
    /// HTTP/2 connections by origin.
    h2: HashMap<Box<str>, H2Origin>,
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
        for origin in pool.h2.values_mut() {
            origin.conns.retain(|c| {
                !c.sender.is_closed()
                    && (c.open.load(Ordering::Relaxed) > 0
                        || c.last_used.elapsed() < POOL_IDLE_TIMEOUT)
            });
        }
    });
}

/// What a request finds in this thread's HTTP/2 pool for an origin.
enum H2Pick {
    /// A stream slot on an open connection.
    Ready(Sender2, H2Slot),
    /// A connect is under way (the `u64` is its attempt): wait for it, then pick again.
    Wait(tokio::sync::futures::OwnedNotified, u64),
    /// No connection has room and none is being opened: this request opens one, and wakes the
    /// waiters when done.
    Connect(Arc<tokio::sync::Notify>),
}

fn pick_h2(origin: &str) -> H2Pick {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let entry = match pool.h2.get_mut(origin) {
            Some(e) => e,
            None => pool.h2.entry(origin.into()).or_default(),
        };
        entry.conns.retain(|c| !c.sender.is_closed());
        if let Some(c) = entry
            .conns
            .iter_mut()
            .find(|c| c.open.load(Ordering::Relaxed) < H2_STREAMS_PER_CONNECTION)
        {
            c.last_used = Instant::now();
            return H2Pick::Ready(c.sender.clone(), H2Slot::take(&c.open));
        }
        match &entry.connecting {
            Some(n) => H2Pick::Wait(Arc::clone(n).notified_owned(), entry.attempt),
            None => {
                let n = Arc::new(tokio::sync::Notify::new());
                entry.connecting = Some(Arc::clone(&n));
                entry.attempt += 1;
                H2Pick::Connect(n)
            }
        }
    })
}

/// How the connect a waiter waited for failed, if it did.
fn failed_h2(origin: &str, attempt: u64) -> Option<ConnectFailure> {
    POOL.with(|pool| {
        let pool = pool.borrow();
        let (a, why) = pool.h2.get(origin)?.failed.as_ref()?;
        (*a == attempt).then(|| why.clone())
    })
}

/// Record the end of this thread's connect to `origin` (a new connection, or why it failed;
/// neither when the connecting request went away) and wake the requests waiting for it. The
/// connecting request takes the first slot.
fn connected_h2(
    origin: &str,
    outcome: Option<Result<Sender2, ConnectFailure>>,
    done: &Arc<tokio::sync::Notify>,
) -> Option<H2Slot> {
    // `try_with`: a connect dropped while its thread exits finds the pool already gone.
    let slot = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let entry = pool.h2.entry(origin.into()).or_default();
        // Only this connect's own mark: a connect that ended on another thread (it cannot,
        // on the serving threads' runtimes) must not clear a connect under way here.
        if entry
            .connecting
            .as_ref()
            .is_some_and(|n| Arc::ptr_eq(n, done))
        {
            entry.connecting = None;
        }
        let sender = match outcome? {
            Ok(sender) => sender,
            Err(why) => {
                entry.failed = Some((entry.attempt, why));
                return None;
            }
        };
        let open = Arc::new(AtomicUsize::new(0));
        let slot = H2Slot::take(&open);
        entry.conns.push(H2Conn {
            sender,
            open,
            last_used: Instant::now(),
        });
        Some(slot)
    });
    done.notify_waiters();
    slot.ok().flatten()
}

/// A request's stream on an HTTP/2 connection, given back when dropped (with the response
/// body, or with the request that failed).
#[derive(Debug)]
struct H2Slot(Arc<AtomicUsize>);

impl H2Slot {
    fn take(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(open))
    }
}

impl Drop for H2Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connect under way for this thread's HTTP/2 pool: if the request that opens it is dropped
/// before it finishes (the caller left, a timeout), the waiters are woken so one of them
/// connects instead.
struct Connecting<'a> {
    origin: &'a str,
    done: Option<Arc<tokio::sync::Notify>>,
}

impl Connecting<'_> {
    fn finish(mut self, outcome: Result<Sender2, ConnectFailure>) -> Option<H2Slot> {
        let done = self.done.take()?;
        connected_h2(self.origin, Some(outcome), &done)
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            connected_h2(self.origin, None, &done);
        }
    }
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

/// This thread's connector for `connect_timeout` and `protocol`, built on first use.
fn thread_connector(
    connect_timeout: Duration,
    protocol: ProviderProtocol,
) -> Result<Connector, UpstreamConfigError> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let key = (connect_timeout, protocol);
        if let Some((_, c)) = pool.connectors.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        let c = connector(connect_timeout, protocol)?;
        pool.connectors.push((key, c.clone()));
        Ok(c)
    })
}

/// A provider's response body. Over HTTP/1.1, reading it to the end returns its connection to
/// the pool, and dropping it early closes the connection; over HTTP/2, dropping it frees its
/// stream's slot (and resets the stream if it was not read to the end).
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    conn: Option<(Arc<str>, Sender)>,
    _stream: Option<H2Slot>,
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
    origin: Arc<str>,
    protocol: ProviderProtocol,
    /// The `host` header every request carries.
    host: HeaderValue,
    /// The wire format the provider speaks.
    pub(crate) kind: ProviderKind,
    /// The request target of each API route the provider speaks (`/v1/chat/completions`, …;
    /// absolute over HTTP/2, where it carries the scheme and authority), parsed once: a clone is a reference count, a parse per request was ~0.5 % of the full
    /// chain's CPU. `None`: a route of the other kind.
    targets: [Option<Uri>; ApiRoute::ALL.len()],
    /// The base URL's path (after the origin over HTTP/2), for targets built per request (a
    /// stored response's id).
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
        let origin: Arc<str> = format!("{scheme}://{authority}").into();
        let path = uri.path().trim_end_matches('/');
        // HTTP/2 sends the scheme and authority as pseudo-headers taken from the URI.
        let prefix = match spec.protocol {
            ProviderProtocol::Http1 => path.to_owned(),
            ProviderProtocol::Http2 => format!("{origin}{path}"),
        };
        let mut targets: [Option<Uri>; ApiRoute::ALL.len()] = Default::default();
        for r in ApiRoute::ALL {
            if r.wire().native_kind() == spec.kind {
                targets[r.index()] = Some(
                    Uri::try_from(format!("{prefix}{}", r.upstream_path()))
                        .map_err(|_| bad("the path cannot be a request target"))?,
                );
            }
        }
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
            protocol: spec.protocol,
            host,
            kind: spec.kind,
            targets,
            prefix: prefix.into_boxed_str(),
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
        if self.protocol == ProviderProtocol::Http1 {
            headers.insert(HOST, self.host.clone());
        }
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
        if self.protocol == ProviderProtocol::Http2 {
            // Boxed: inline, its connect and handshake state would grow every request's
            // future (and hyper keeps a box of that size per caller connection), HTTP/1.1 or not.
            let (resp, slot) = tokio::time::timeout(budget, Box::pin(self.exchange_h2(req)))
                .await
                .map_err(|_| first_byte)??;
            let (parts, inner) = resp.into_parts();
            return Ok(http::Response::from_parts(
                parts,
                UpstreamBody {
                    inner,
                    conn: None,
                    _stream: Some(slot),
                },
            ));
        }
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
        let conn = keep.then(|| (Arc::clone(&self.origin), sender));
        Ok(http::Response::from_parts(
            parts,
            UpstreamBody {
                inner,
                conn,
                _stream: None,
            },
        ))
    }

    /// Send `req` on a stream of this thread's HTTP/2 connections to the provider, opening one
    /// when none has room, and wait for the response head.
    async fn exchange_h2(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(http::Response<Incoming>, H2Slot), ApiError> {
        let (mut sender, slot) = loop {
            match pick_h2(&self.origin) {
                H2Pick::Ready(sender, slot) => break (sender, slot),
                H2Pick::Wait(connected, attempt) => {
                    connected.await;
                    if let Some(failure) = failed_h2(&self.origin, attempt) {
                        return Err(failure.error(&self.name));
                    }
                }
                H2Pick::Connect(done) => {
                    let connecting = Connecting {
                        origin: &self.origin,
                        done: Some(done),
                    };
                    let sender = self.connect_h2().await;
                    let slot = connecting.finish(match &sender {
                        Ok(s) => Ok(s.clone()),
                        Err(e) => Err(ConnectFailure::of(e)),
                    });
                    match (sender, slot) {
                        (Ok(sender), Some(slot)) => break (sender, slot),
                        (Err(e), _) => return Err(e),
                        (Ok(_), None) => {
                            return Err(ApiError::Internal(
                                "an HTTP/2 connection was made but not pooled".to_owned(),
                            ))
                        }
                    }
                }
            }
        };
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ApiError::upstream(&self.name, describe(&e, "request failed")))?;
        Ok((resp, slot))
    }

    /// A new HTTP/2 connection, its task spawned on this thread's runtime. The TCP connect, TLS
    /// and HTTP/2 handshakes together get the connect timeout: every request to the provider
    /// from this thread may be waiting on this one connect.
    async fn connect_h2(&self) -> Result<Sender2, ApiError> {
        let connect = async {
            let io = self.dial().await?;
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .keep_alive_interval(H2_PING_EVERY)
                .keep_alive_timeout(H2_PING_TIMEOUT)
                .keep_alive_while_idle(true)
                .handshake(io)
                .await
                .map_err(|e| {
                    ApiError::upstream(&self.name, describe(&e, "HTTP/2 handshake failed"))
                })
        };
        let (sender, conn) = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| ApiError::UpstreamTimeout {
                ms: u64::try_from(self.connect_timeout.as_millis()).unwrap_or(u64::MAX),
                phase: "connect",
            })??;
        self.drive(conn);
        Ok(sender)
    }

    /// A new HTTP/1.1 connection, its task spawned on this thread's runtime.
    async fn connect(&self) -> Result<Sender, ApiError> {
        let io = self.dial().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| ApiError::upstream(&self.name, describe(&e, "connection failed")))?;
        self.drive(conn);
        Ok(sender)
    }

    /// Run a connection's task on this thread's runtime until the provider or the pool closes it.
    fn drive(&self, conn: impl std::future::Future<Output = hyper::Result<()>> + Send + 'static) {
        let provider = self.name.clone();
        let exec = TokioExecutor::new();
        hyper::rt::Executor::execute(&exec, async move {
            if let Err(e) = conn.await {
                tracing::debug!(%provider, error = %e, "provider connection ended");
            }
        });
    }

    /// A TCP (and TLS) connection to the provider, within the connect timeout.
    async fn dial(&self) -> Result<<Connector as Service<Uri>>::Response, ApiError> {
        let mut connector = thread_connector(self.connect_timeout, self.protocol)
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
        Ok(io)
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
