//! The gateway's shared state and the one place a pack is swapped in.
//!
//! "Infallible swap": [`GatewayState::activate`] takes an already prepared [`ActivePack`] and
//! does one `ArcSwapOption::store`; a request loads the `Arc` once when it starts and keeps it to
//! its end, so an in-flight request or an open stream finishes on the version it started with.
//! A rejected pack only updates the reload report and the metrics. The reload report and the
//! pack live in separate stores on purpose: a rejection must never touch the serving pack.
//!
//! Not here: reading files or deciding when to reload (`reload`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwapOption, Guard};

use crate::hooks::Enforcement;
use crate::keys::CallerAuth;
use crate::metrics::Metrics;
use crate::pack::{ActivePack, PrepareError};
use crate::service::RequestId;

/// The outcome of the last activation attempt, for `/status`.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    pub at: SystemTime,
    pub ok: bool,
    /// The version that was activated, when it was.
    pub version: Option<String>,
    /// One-line reason of a rejection.
    pub error: Option<String>,
}

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// The most time a request body may take to arrive, from its head (a client that stalls
    /// mid-upload gets 408 and frees its connection).
    pub body_timeout: std::time::Duration,
    /// Largest non-streamed provider answer read into memory.
    pub max_response_bytes: usize,
    /// A relayed stream's idle timeout and total size.
    pub stream: crate::sse::StreamLimits,
}

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct GatewayState {
    pack: ArcSwapOption<ActivePack>,
    last_reload: ArcSwapOption<ReloadReport>,
    pub(crate) environment: String,
    pub(crate) metrics: Metrics,
    pub(crate) auth: CallerAuth,
    pub(crate) enforcement: Arc<dyn Enforcement>,
    pub(crate) limits: Limits,
    id_seed: u64,
    id_counter: AtomicU64,
    /// Whether `/status` and `/metrics` answer on the public listener (see `admin`).
    pub(crate) ops_on_public: bool,
    /// The OTLP trace exporter, when traces are exported.
    pub(crate) traces: Option<crate::otel::Traces>,
    /// Each deployment's recent record (routing with alternatives); kept across reloads.
    pub(crate) health: crate::routing::Health,
}

impl GatewayState {
    pub fn new(
        environment: String,
        metrics: Metrics,
        auth: CallerAuth,
        enforcement: Arc<dyn Enforcement>,
        limits: Limits,
    ) -> Self {
        Self {
            pack: ArcSwapOption::empty(),
            last_reload: ArcSwapOption::empty(),
            environment,
            metrics,
            auth,
            enforcement,
            limits,
            id_seed: random_seed(),
            id_counter: AtomicU64::new(0),
            ops_on_public: true,
            traces: None,
            health: crate::routing::Health::default(),
        }
    }

    /// The active pack, for one request (cheap; no reference count change).
    pub(crate) fn pack_guard(&self) -> Guard<Option<Arc<ActivePack>>> {
        self.pack.load()
    }

    /// The active pack, owned.
    pub fn active(&self) -> Option<Arc<ActivePack>> {
        self.pack.load_full()
    }

    /// The environment whose overrides this gateway enforces.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    pub fn last_reload(&self) -> Option<Arc<ReloadReport>> {
        self.last_reload.load_full()
    }

    /// Swap in a prepared pack: one store.
    pub fn activate(&self, pack: ActivePack) {
        self.metrics.activated(&self.environment, &pack);
        let version = pack.version().to_owned();
        tracing::info!(
            pack = %pack.compiled.name,
            version = %version,
            hash = %pack.hash_hex,
            source = %pack.source,
            "policy pack activated"
        );
        let pack = Arc::new(pack);
        self.pack.store(Some(Arc::clone(&pack)));
        self.enforcement.pack_activated(&pack);
        self.last_reload.store(Some(Arc::new(ReloadReport {
            at: SystemTime::now(),
            ok: true,
            version: Some(version),
            error: None,
        })));
    }

    /// Record a rejected pack; the active one keeps serving.
    pub fn reject(&self, error: &PrepareError) {
        self.metrics.rejected();
        tracing::error!(
            error = %error,
            "policy pack rejected; the last good pack keeps serving"
        );
        self.last_reload.store(Some(Arc::new(ReloadReport {
            at: SystemTime::now(),
            ok: false,
            version: None,
            error: Some(error.summary()),
        })));
    }

    pub(crate) fn next_request_id(&self) -> RequestId {
        RequestId(
            self.id_seed,
            self.id_counter.fetch_add(1, Ordering::Relaxed),
        )
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Randomness without another dependency (request ids, retry jitter): std's hasher keys are
/// seeded from the OS.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}
