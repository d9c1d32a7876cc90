//! The HTTP listener: hyper 1 through hyper-util (HTTP/1.1 and HTTP/2 on one port) serving the
//! axum router of [`crate::routes`], with the connection limits axum's own `serve` lacks: a
//! connection cap, a first-request timeout, a header read timeout and a body deadline.
//!
//! Bodies are read up to [`MAX_BODY_BYTES`] (a pack is at most 1 MiB of YAML; JSON escaping can
//! grow it) and refused past that with 413. No TLS here: run the control plane behind a
//! TLS-terminating proxy or on a private network. Shutdown stops accepting; requests in flight
//! (long polls included) end with the process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service as _;

use crate::app::App;
use crate::extract::BodyDeadline;

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
    let router = crate::routes::router(app);
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
        let (router, builder) = (router.clone(), builder.clone());
        #[expect(
            clippy::disallowed_methods,
            reason = "a connection's task: bounded by its timeouts, ended with the process"
        )]
        tokio::spawn(async move {
            let _permit = permit;
            let served = Arc::new(AtomicBool::new(false));
            let seen = Arc::clone(&served);
            let service = service_fn(move |mut req: Request<Incoming>| {
                seen.store(true, Ordering::Relaxed);
                req.extensions_mut().insert(BodyDeadline {
                    at: tokio::time::Instant::now() + limits.body_timeout,
                    timeout: limits.body_timeout,
                });
                // The router is always ready; its error type is `Infallible`.
                router.clone().call(req)
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
