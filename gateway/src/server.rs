//! The listener: accept, TLS, HTTP/1.1 + HTTP/2, timeouts, connection limit, graceful drain.
//!
//! Thread per core: `threads` OS threads, each running its own single-threaded tokio runtime
//! with its own listening socket on the same address (`SO_REUSEPORT`), so the kernel spreads
//! new connections over the threads by their address hash. (One shared socket let whichever
//! thread was awake accept a whole burst: 16 connections opened at once all landed on one
//! thread, leaving the other cores idle.) `SO_REUSEPORT` lets another process of the same user
//! bind the port too; such a process could already read the gateway's memory. A connection, its requests, its
//! upstream connections (see `upstream`'s per-thread pools) and its SSE relay task all stay on
//! the thread that accepted it, so the request path has no work stealing and no cross-thread
//! wake-ups; that halved the CPU per request at one connection compared with tokio's
//! multi-thread scheduler (see benches/README.md). Every accepted socket gets TCP_NODELAY. A connection is served by hyper-util's auto builder
//! (HTTP/1.1, or HTTP/2 by prior knowledge or ALPN).
//!
//! No client holds a connection for free: the first request's head must be complete within
//! `first_request_timeout` of accept (a silent connection, or one that sends a byte of a
//! preface, is dropped); HTTP/1's header read timeout then bounds how long an idle keep-alive
//! connection may wait for its next request (hyper starts that timer whenever it waits for a
//! request head); a request body must arrive within the body timeout (`proxy`, 408); HTTP/2
//! connections are pinged and closed when the peer stops answering. The number of open
//! connections is bounded by a semaphore (at the limit, the gateway stops accepting and the
//! kernel backlog absorbs the burst rather than failing requests it already holds), and per
//! client address by a shared count: a connection over its address's cap is closed at accept
//! and counted in `palisade_connections_refused_total`. Accept failures (a full descriptor
//! table fails every accept) are logged once per interval with a count. On shutdown the listener closes, every connection is told
//! to finish its in-flight requests (and open streams) and close, and the server waits for
//! them up to the drain timeout.
//!
//! Not here: what a request does (`service`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::service;
use crate::state::GatewayState;

/// Connection handling settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// From accept to the first request's complete head: a client that connects and sends
    /// nothing, or part of a head, is cut off then. (hyper-util's HTTP version sniffing reads
    /// the first bytes without a timer of its own, so nothing else bounds that wait.)
    pub first_request_timeout: Duration,
    /// HTTP/1: how long a keep-alive connection may wait idle for its next request, and how
    /// long a request head may take once it began (hyper runs one timer for both).
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub http2_keepalive: Duration,
    pub max_connections: usize,
    /// Open connections one client address may hold; 0: no cap.
    pub max_connections_per_client: usize,
    pub drain_timeout: Duration,
    /// Serving threads; 0 means one per available core.
    pub threads: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            first_request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            http2_keepalive: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            drain_timeout: Duration::from_secs(30),
            threads: 0,
        }
    }
}

/// The first serving thread's listening socket. An exclusive bind first proves the port free:
/// with `SO_REUSEPORT` alone, a second gateway started on a busy port (another gateway's
/// included) would share it silently instead of failing. It also resolves port 0.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let probe = std::net::TcpListener::bind(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    bind_shared(addr)
}

/// A listening socket on `addr` that other serving threads may bind too (`SO_REUSEPORT`).
fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the kernel queues per listening socket.
const LISTEN_BACKLOG: u32 = 1024;

/// Serve until `shutdown` resolves, then drain, on `settings.threads` serving threads.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<GatewayState>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let threads = match settings.threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the listener's address");
            return;
        }
    };
    let mut first = match listener.into_std() {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the listener to the serving threads");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let clients = Arc::new(ClientCounts::new(settings.max_connections_per_client));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut finished = Vec::with_capacity(threads);
    for i in 0..threads {
        let l = match first.take() {
            Some(l) => l,
            None => match bind_shared(addr).and_then(TcpListener::into_std) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, %addr, "cannot open a listener for a serving thread");
                    break;
                }
            },
        };
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let (tls, state, permits, clients, stop) = (
            tls.clone(),
            Arc::clone(&state),
            Arc::clone(&permits),
            Arc::clone(&clients),
            stop_rx.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("palisade-io-{i}"))
            .spawn(move || {
                // Rows of decision events held back on this thread; its housekeeping tick
                // queues them every second.
                let serving = crate::control::events::serving_thread();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        rt.block_on(worker(l, tls, state, settings, permits, clients, stop));
                        // Requests cut off by the drain timeout end as their tasks are dropped.
                        drop(rt);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start a serving runtime"),
                }
                // Before the gateway counts as stopped: the shipper's final flush sends these.
                drop(serving);
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(_) => finished.push(done_rx),
            Err(e) => tracing::error!(error = %e, "cannot start a serving thread"),
        }
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for done in finished {
        let _ = done.await;
    }
}

/// One serving thread: accept until told to stop, then drain its own connections.
async fn worker(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<GatewayState>,
    settings: ServerSettings,
    permits: Arc<Semaphore>,
    clients: Arc<ClientCounts>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listener");
            return;
        }
    };
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
    #[expect(
        clippy::disallowed_methods,
        reason = "the serving thread's tick: lives as long as its runtime and holds nothing to flush"
    )]
    tokio::spawn(housekeeping());
    let graceful = GracefulShutdown::new();
    let mut accept_errors = RateLimitedLog::new("accept failed");
    let mut refused = RateLimitedLog::new("connection refused");
    let stopping = stop.wait_for(|s| *s);
    tokio::pin!(stopping);
    loop {
        let permit = tokio::select! {
            _ = &mut stopping => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut stopping => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning, and log once per
                // interval (a full descriptor table fails every accept).
                accept_errors.failed(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(client) = clients.admit(peer.ip()) else {
            state.metrics.connections_refused.inc();
            refused.failed(&std::io::Error::other(format!(
                "{} holds {} connections, the per-client cap",
                peer.ip(),
                settings.max_connections_per_client
            )));
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        let state = Arc::clone(&state);
        let tls = tls.clone();
        #[expect(
            clippy::disallowed_methods,
            reason = "a connection's task: the graceful-shutdown watcher it holds makes the drain wait for it"
        )]
        tokio::spawn(async move {
            let _held = (permit, client);
            connection(stream, peer, tls, builder, state, watcher, settings).await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("serving thread drained"),
        () = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!("drain timeout reached; closing the remaining connections");
        }
    }
}

/// How often a serving thread does its housekeeping.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// A serving thread's periodic work, for as long as its runtime lives: closing upstream
/// connections idle for too long, and queueing the decision events it holds back. The tick has a second job. tokio's timer wakes its I/O driver
/// (an eventfd write, plus an extra event on the next `epoll_wait`) whenever a timer is armed
/// that is due before the driver's planned wake-up; hyper arms a 30 s header-read timer each
/// time a keep-alive connection waits for its next request, and with no earlier timer pending
/// that meant one wake-up per request. With this tick pending, the planned wake-up is never
/// more than a second away.
async fn housekeeping() {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        crate::upstream::sweep_idle();
        crate::control::events::flush_thread();
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
    let deadline = tokio::time::Instant::now() + settings.first_request_timeout;
    let served = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&served);
    let svc = service_fn(move |req| {
        seen.store(true, Ordering::Relaxed);
        service::handle(Arc::clone(&state), req)
    });
    let result = match tls {
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            first_request_within(deadline, &served, watcher.watch(conn.into_owned())).await
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
            first_request_within(deadline, &served, watcher.watch(conn.into_owned())).await
        }
    };
    match result {
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        None => tracing::debug!(%peer, "no request within the first-request timeout; closed"),
        Some(Ok(())) => {}
    }
}

/// Drive `conn`, but drop it (closing the socket) when no request head has arrived by
/// `deadline`; once one has, the connection runs under hyper's own timers.
async fn first_request_within<F: Future>(
    deadline: tokio::time::Instant,
    served: &AtomicBool,
    conn: F,
) -> Option<F::Output> {
    tokio::pin!(conn);
    tokio::select! {
        r = &mut conn => return Some(r),
        () = tokio::time::sleep_until(deadline) => {}
    }
    if served.load(Ordering::Relaxed) {
        Some(conn.await)
    } else {
        None
    }
}

/// Open connections per client address, shared by the serving threads.
#[derive(Debug)]
pub(crate) struct ClientCounts {
    cap: usize,
    open: DashMap<IpAddr, usize>,
}

impl ClientCounts {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            open: DashMap::new(),
        }
    }

    /// Count a new connection from `ip`, or `None` when it already holds `cap` of them.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        if self.cap == 0 {
            return Some(ClientSlot(None));
        }
        let mut n = self.open.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        drop(n);
        Some(ClientSlot(Some((Arc::clone(self), ip))))
    }
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot(Option<(Arc<ClientCounts>, IpAddr)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((counts, ip)) = self.0.take() {
            counts.open.remove_if_mut(&ip, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

/// A warning that can fire thousands of times a second (every accept failing while the
/// descriptor table is full): logged at most once per interval, with the count since.
#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    what: &'static str,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    const EVERY: Duration = Duration::from_secs(5);

    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            last: None,
            suppressed: 0,
        }
    }

    pub(crate) fn failed(&mut self, e: &std::io::Error) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            self.suppressed += 1;
            return;
        }
        let what = self.what;
        tracing::warn!(error = %e, times_since_last_log = self.suppressed + 1, "{what}");
        self.last = Some(now);
        self.suppressed = 0;
    }
}
