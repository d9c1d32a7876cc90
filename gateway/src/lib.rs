//! Palisade's data plane: an OpenAI-compatible proxy that runs the compiled policy chain on
//! every request.
//!
//! Applications point an OpenAI SDK's `base_url` at the gateway. Each request loads the active
//! [`ActivePack`] once from an `ArcSwap` and runs on that version to its end: authentication
//! against hashed caller keys ([`keys`]), the model allow-list, the PII policy on decoded JSON
//! strings ([`policy`]), the hooks where budgets and audit plug in ([`hooks`]), the provider
//! call with the provider's key injected ([`upstream`]), and response scanning — JSON, or SSE
//! through the incremental redactor ([`sse`]). Packs are prepared off the request path and
//! swapped in one store ([`state`], [`reload`]); `/status` and `/metrics` say what runs.
//!
//! Start one with [`Gateway::bind`] then [`Gateway::run`]; `palisade gateway` is a thin CLI over
//! exactly that. The budget enforcer and the audit logger plug in as [`Enforcement`]s
//! handed to [`Gateway::bind`] ([`enforce::PolicyEnforcement`] combines both and follows pack
//! reloads); the audit log's writer lives in [`audit`], and [`control`] keeps
//! a gateway on the version its control plane wants.

pub mod admin;
pub mod audit;
pub mod body;
pub mod budget;
pub mod clock;
pub mod control;
pub mod enforce;
pub mod error;
pub mod hooks;
mod json_splice;
pub mod keys;
pub mod metrics;
mod openai;
mod ops;
pub mod otel;
pub mod pack;
pub mod policy;
mod proxy;
pub mod reload;
mod request;
mod respond;
pub mod routing;
pub mod server;
mod service;
pub mod sse;
pub mod state;
pub mod tasks;
pub mod tls;
mod translate;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use error::ApiError;
pub use error::{Rejection, RejectionKind};
pub use hooks::{
    Admission, Admit, AttemptNote, Enforcement, Failure, NoEnforcement, Permit, Release,
    RequestMeta, Settled,
};
pub use keys::{CallerAuth, KeyTable};
pub use openai::Usage;
pub use pack::{ActivePack, PackSource, PrepareError};
pub use policy::PiiReport;
pub use server::ServerSettings;
pub use service::{ApiRoute, RequestId};
pub use state::{GatewayState, Limits, ReloadReport};

/// Default request body limit: 8 MiB (long conversations with base64 images stay under it).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;
/// Largest non-streamed provider answer held in memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 << 20;

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Where `/status` and `/metrics` are served (`admin::admin_address` says when they need
    /// an address of their own).
    pub admin_listen: Option<SocketAddr>,
    pub pack_path: PathBuf,
    pub environment: String,
    /// Caller keys file; `None` runs anonymous, allowed only on loopback.
    pub keys_path: Option<PathBuf>,
    /// PEM certificate chain and private key for TLS on the listener.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
    pub server: ServerSettings,
    /// Quiet time after the last file event before a reload starts.
    pub reload_debounce: Duration,
    /// Watch the pack file (SIGHUP reloads either way).
    pub watch: bool,
    /// The pack is supplied from outside (the control-plane agent): no file is read or watched,
    /// and the gateway starts not ready until the first pack is applied. `pack_path` is unused.
    pub managed: bool,
    /// Export a trace span per API request over OTLP (`None`: off).
    pub otlp: Option<otel::OtlpConfig>,
}

impl GatewayConfig {
    pub fn new(pack_path: impl Into<PathBuf>, environment: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: None,
            pack_path: pack_path.into(),
            environment: environment.into(),
            keys_path: None,
            tls: None,
            limits: Limits {
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                body_timeout: Duration::from_secs(30),
                max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
                stream: sse::StreamLimits::default(),
            },
            server: ServerSettings::default(),
            reload_debounce: Duration::from_millis(250),
            watch: true,
            managed: false,
            otlp: None,
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the policy pack cannot be activated:\n{0}")]
    Pack(#[from] PrepareError),
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error(transparent)]
    Otlp(#[from] otel::OtlpError),
    #[error("cannot listen on {addr} for /status and /metrics (--admin-listen): {source}")]
    BindAdmin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to listen on {0} without --keys: anonymous callers are allowed only on a loopback address"
    )]
    AnonymousOnPublicAddress(SocketAddr),
}

/// A bound gateway, ready to run.
pub struct Gateway {
    state: Arc<GatewayState>,
    listener: TcpListener,
    /// The admin listener and its address, when `/status` and `/metrics` have one.
    admin: Option<(TcpListener, SocketAddr)>,
    tls: Option<TlsAcceptor>,
    config: GatewayConfig,
    local_addr: SocketAddr,
    triggers: reload::Triggers,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Load keys, TLS and the pack, then bind. Nothing is served until [`Gateway::run`].
    pub async fn bind(
        config: GatewayConfig,
        enforcement: Arc<dyn Enforcement>,
    ) -> Result<Self, StartError> {
        let auth = match &config.keys_path {
            Some(p) => CallerAuth::Keys(Arc::new(KeyTable::from_file(p)?)),
            None if config.listen.ip().is_loopback() => {
                tracing::warn!(
                    listen = %config.listen,
                    "NO CALLER KEYS: every caller is accepted anonymously (loopback only); pass --keys to authenticate callers"
                );
                CallerAuth::Anonymous
            }
            None => return Err(StartError::AnonymousOnPublicAddress(config.listen)),
        };
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls::acceptor(cert, key)?),
            None => None,
        };
        let metrics = metrics::Metrics::new()?;
        enforcement
            .register_metrics(metrics.registry())
            .map_err(metrics::MetricsError::from)?;
        let admin_addr = admin::admin_address(config.listen, config.admin_listen);
        let mut state = GatewayState::new(
            config.environment.clone(),
            metrics,
            auth,
            enforcement,
            config.limits,
        );
        state.ops_on_public = admin_addr.is_none();
        state.traces = config.otlp.as_ref().map(otel::Traces::start).transpose()?;
        if let Some(t) = &state.traces {
            t.register(state.metrics.registry())
                .map_err(metrics::MetricsError::from)?;
        }
        let state = Arc::new(state);
        let admin = match admin_addr {
            Some(addr) => {
                let bind_err = |source| StartError::BindAdmin { addr, source };
                let l = TcpListener::bind(addr).await.map_err(bind_err)?;
                let local = l.local_addr().map_err(bind_err)?;
                Some((l, local))
            }
            None => None,
        };
        // Watch before the first read, so no edit falls between the two.
        let triggers = reload::Triggers::new(&config.pack_path, config.watch && !config.managed);
        if !config.managed {
            let first = reload::prepare_file(&state, &config.pack_path).await?;
            state.activate(first);
        }
        let listener = server::bind(config.listen).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok(Self {
            state,
            listener,
            admin,
            tls,
            config,
            local_addr,
            triggers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    pub fn state(&self) -> &Arc<GatewayState> {
        &self.state
    }

    /// `http://ADDR` of the admin listener, when `/status` and `/metrics` have one.
    pub fn admin_url(&self) -> Option<String> {
        self.admin.as_ref().map(|(_, a)| format!("http://{a}"))
    }

    /// Serve (and watch the pack) until `shutdown` resolves, then drain in-flight requests.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // The admin listener lives as long as the gateway serves; its handle ends it.
        let admin = self.admin.take().map(|(listener, _)| {
            #[expect(
                clippy::disallowed_methods,
                reason = "the admin listener: its JoinHandle is kept and aborted when serving ends"
            )]
            let h = tokio::spawn(admin::serve(listener, Arc::clone(&self.state)));
            AbortOnDrop(h)
        });
        let state = Arc::clone(&self.state);
        self.serve(shutdown).await;
        drop(admin);
        // Export the spans of the drained requests; the SDK's shutdown blocks.
        if state.traces.is_some() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(t) = &state.traces {
                    t.shutdown();
                }
            })
            .await;
        }
    }

    async fn serve(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(());
        if self.config.managed {
            server::serve(
                self.listener,
                self.tls,
                self.state,
                self.config.server,
                shutdown,
            )
            .await;
            return;
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "the reload watcher: its JoinHandle is kept and ended at shutdown"
        )]
        let watcher = tokio::spawn(reload::watch(
            Arc::clone(&self.state),
            self.config.pack_path.clone(),
            self.config.reload_debounce,
            self.triggers,
            async move {
                let _ = stop_rx.changed().await;
            },
        ));
        server::serve(
            self.listener,
            self.tls,
            self.state,
            self.config.server,
            shutdown,
        )
        .await;
        drop(stop_tx);
        let _ = watcher.await;
    }
}
