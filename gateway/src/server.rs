//! The listener: accept, TLS, HTTP/1.1 + HTTP/2, timeouts, connection limit, graceful drain.
//!
//! Every accepted socket gets TCP_NODELAY. A connection is served by hyper-util's auto builder
//! (HTTP/1.1, or HTTP/2 by prior knowledge or ALPN). HTTP/1's header read timeout also bounds
//! how long an idle keep-alive connection may wait for its next request (hyper starts that timer
//! whenever it waits for a request head); HTTP/2 connections are pinged and closed when the
//! peer stops answering. The number of open connections is bounded by a semaphore: at the
//! limit, the gateway stops accepting (the kernel backlog absorbs the burst) rather than
//! failing requests it already holds. On shutdown the listener closes, every connection is told
//! to finish its in-flight requests (and open streams) and close, and the server waits for
//! them up to the drain timeout.
//!
//! Not here: what a request does (`service`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::service;
use crate::state::GatewayState;

/// Connection handling settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub http2_keepalive: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            http2_keepalive: Duration::from_secs(30),
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Serve until `shutdown` resolves, then drain.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<GatewayState>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.http2_keepalive))
        .keep_alive_timeout(settings.http2_keepalive)
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        let state = Arc::clone(&state);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, peer, tls, builder, state, watcher, settings).await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!("drain timeout reached; closing the remaining connections");
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<GatewayState>,
    watcher: hyper_util::server::graceful::Watcher,
    settings: ServerSettings,
) {
    let svc = service_fn(move |req| service::handle(Arc::clone(&state), req));
    let result = match tls {
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            watcher.watch(conn.into_owned()).await
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(settings.tls_handshake_timeout, acceptor.accept(stream)).await;
            let tls_stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(tls_stream), svc);
            watcher.watch(conn.into_owned()).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
