//! The admin listener: `/status` and `/metrics` (and the probes) on an address of their own,
//! so a gateway on a public address does not tell anyone who asks which pack it runs, its
//! counters and its reload errors.
//!
//! Where they are served:
//! - public listener on loopback, no `--admin-listen`: on the public listener (a developer's
//!   gateway, as `palisade up` runs it);
//! - `--admin-listen ADDR`: only there;
//! - public listener not on loopback, no `--admin-listen`: only on [`DEFAULT_ADMIN_LISTEN`]
//!   (loopback), never on the public listener.
//!
//! `/healthz` and `/readyz` stay on the public listener too (orchestrators probe it; they say
//! nothing but "up" and "ready"). The admin listener is plain HTTP/1.1 with the same kind of
//! limits as any listener: at most [`MAX_ADMIN_CONNECTIONS`] connections, a head within
//! [`ADMIN_HEADER_TIMEOUT`], no request body read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::body::GatewayBody;
use crate::error::ApiError;
use crate::ops;
use crate::respond::error_response;
use crate::state::GatewayState;

/// Where `/status` and `/metrics` go when the public listener is not on loopback and no
/// `--admin-listen` was given.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);
/// Open admin connections at most (Prometheus and an operator need a handful).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// A client has this long from accept to a complete request head, and between requests.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The address of the admin listener, if one is needed: `admin` when given, else the default
/// when the public listener is not on loopback.
pub fn admin_address(public: SocketAddr, admin: Option<SocketAddr>) -> Option<SocketAddr> {
    admin.or_else(|| (!public.ip().is_loopback()).then_some(DEFAULT_ADMIN_LISTEN))
}

/// Answer one admin request.
fn route(state: &GatewayState, req: &Request<Incoming>) -> Response<GatewayBody> {
    let pack = state.active();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => ops::status(state, pack.as_deref()),
        (&Method::GET, "/metrics") => ops::metrics(state),
        (&Method::GET, "/healthz") => ops::healthz(),
        (&Method::GET, "/readyz") => ops::readyz(pack.as_deref()),
        (_, "/status" | "/metrics" | "/healthz" | "/readyz") => {
            error_response(&ApiError::MethodNotAllowed)
        }
        _ => error_response(&ApiError::NotFound),
    }
}

/// Serve the admin routes on `listener` until the process ends. Each connection's task ends
/// with its connection (bounded by the header timeout and the connection cap).
pub(crate) async fn serve(listener: TcpListener, state: Arc<GatewayState>) {
    let permits = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        #[expect(
            clippy::disallowed_methods,
            reason = "an admin connection's task: bounded by its timeouts, ended with its connection"
        )]
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let resp = route(&state, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_routes_leave_a_public_listener() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let chosen: SocketAddr = "10.0.0.5:9000".parse().unwrap();
        assert_eq!(admin_address(loopback, None), None);
        assert_eq!(admin_address(public, None), Some(DEFAULT_ADMIN_LISTEN));
        assert_eq!(admin_address(loopback, Some(chosen)), Some(chosen));
        assert_eq!(admin_address(public, Some(chosen)), Some(chosen));
    }
}
