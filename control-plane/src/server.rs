//! The HTTP listener: hyper 1 through hyper-util (HTTP/1.1 and HTTP/2 on one port), a header read
//! timeout, a body size limit, and the conversion of a raw request into [`Req`].
//!
//! Bodies are read frame by frame up to [`MAX_BODY_BYTES`] (a pack is at most 1 MiB of YAML;
//! JSON escaping can grow it) and refused past that with 413. No TLS here: run the control plane
//! behind a TLS-terminating proxy or on a private network. Shutdown stops accepting; requests in
//! flight (long polls included) end with the process.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// A client has this long to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections at most; operators and a fleet of gateways fit well below it.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long a client may take: from accept to its first request head, and from a request's
/// head to the end of its body.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub first_request_timeout: Duration,
    pub body_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            first_request_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// A response body.
pub(crate) type Resp = Response<Full<Bytes>>;

/// A request, its body read.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub(crate) fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON of type `T`, or 400 naming what is wrong.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// Decode `%XX` (and, in a query component, `+` as a space).
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

async fn read_body(mut body: Incoming) -> Result<Bytes, ApiError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY_BYTES {
                return Err(ApiError::BodyTooLarge(MAX_BODY_BYTES));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

async fn handle(app: Arc<App>, req: Request<Incoming>, body_timeout: Duration) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(body_timeout, read_body(body)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => return ApiError::BodyTimeout(body_timeout.as_secs()).into_response(),
    };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parse_query(parts.uri.query()),
        headers: parts.headers,
        body,
    };
    match crate::routes::dispatch(&app, &req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(code = e.code(), path = %req.path, "request failed");
            e.into_response()
        }
    }
}

/// Accept connections on `listener` until `shutdown` completes.
///
/// Every connection is bounded: at most [`MAX_CONNECTIONS`] open (at the limit the loop stops
/// accepting and the kernel backlog holds the rest), its first request head complete within
/// the first-request timeout of accept (hyper-util's HTTP version sniffing has no timer of its
/// own, so a silent connection would otherwise be held forever), idle keep-alive and head reads
/// within [`HEADER_READ_TIMEOUT`], a body within the body timeout ([`ServeLimits`]). A failing
/// accept (a full descriptor table fails every one) backs off and is logged once per interval
/// with a count.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut failures = 0u64;
    let mut last_log: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    failures += 1;
                    if last_log.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY) {
                        tracing::warn!(error = %e, failures, "accept failed");
                        last_log = Some(Instant::now());
                        failures = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (app, builder) = (app.clone(), builder.clone());
        #[expect(
            clippy::disallowed_methods,
            reason = "a connection's task: bounded by its timeouts, ended with the process"
        )]
        tokio::spawn(async move {
            let _permit = permit;
            let served = Arc::new(AtomicBool::new(false));
            let seen = Arc::clone(&served);
            let service = service_fn(move |req| {
                seen.store(true, Ordering::Relaxed);
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(app, req, limits.body_timeout).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = &mut conn => r,
                () = tokio::time::sleep(limits.first_request_timeout) => {
                    if !served.load(Ordering::Relaxed) {
                        tracing::debug!(%peer, "no request within the first-request timeout; closed");
                        return;
                    }
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_decoded() {
        let q = parse_query(Some("environment=prod&pack=a%2Db&x=1+2&bad=%zz&end=%4"));
        assert_eq!(q[0], ("environment".into(), "prod".into()));
        assert_eq!(q[1], ("pack".into(), "a-b".into()));
        assert_eq!(q[2], ("x".into(), "1 2".into()));
        assert_eq!(q[3], ("bad".into(), "%zz".into()));
        assert_eq!(q[4], ("end".into(), "%4".into()));
        assert_eq!(percent_decode("gw%3A1+a", false), "gw:1+a");
    }
}
