//! The active pack: a [`CompiledPack`] bundled with everything the request path derives from it
//! (header values, provider endpoints, and the policy enforcement's budget enforcer and audit
//! settings), prepared completely before it is swapped in.
//!
//! This is the "fallible prepare" half of a hot swap: [`prepare`] parses, validates, compiles,
//! refuses a disabled pack (`PACK_DISABLED`), checks that its audit directory can be written and
//! checks every provider's URL and key, and only a value
//! that made it through all of that can reach the store (see `state`). Provider keys are read
//! from the environment variables the pack names here, once per version, never per request.
//! It runs on a blocking thread during reloads (it is CPU work: regex and automaton builds).
//!
//! Not here: deciding when to reload (`reload`), or the swap itself (`state`).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;
use policy_engine::pack::{AuditLoggerConfig, ScanSide, DEFAULT_PROVIDER};
use policy_engine::{CompileOptions, CompiledPack, Diagnostics, PolicyKind};

use crate::upstream::{Upstream, UpstreamConfigError};

/// Where the active pack came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackSource {
    File(String),
    /// Sent by the control plane at this URL.
    ControlPlane(String),
    /// The last good pack persisted in this state directory, used while the control plane is
    /// unreachable.
    Persisted(String),
}

impl fmt::Display for PackSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file:{p}"),
            Self::ControlPlane(url) => write!(f, "control_plane:{url}"),
            Self::Persisted(dir) => write!(f, "persisted:{dir}"),
        }
    }
}

impl PackSource {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::ControlPlane(_) => "control_plane",
            Self::Persisted(_) => "persisted",
        }
    }
}

/// A pack ready to serve. Immutable; shared by every request that started on it.
#[derive(Debug)]
pub struct ActivePack {
    pub compiled: CompiledPack,
    pub source: PackSource,
    pub loaded_at: SystemTime,
    /// Lowercase hex of `compiled.hash`.
    pub hash_hex: String,
    pub(crate) version_header: HeaderValue,
    pub(crate) hash_header: HeaderValue,
    pub(crate) upstreams: HashMap<String, Arc<Upstream>>,
    pub(crate) scan_request: bool,
    pub(crate) scan_response: bool,
    /// What the policy enforcement derives from this version (budget enforcer, audit settings):
    /// built once, when the version is activated, and read by every request on it.
    pub(crate) policies: std::sync::OnceLock<crate::enforce::PackPolicies>,
}

impl ActivePack {
    pub fn version(&self) -> &str {
        &self.compiled.version
    }

    pub(crate) fn upstream(&self, provider: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(provider)
    }

    /// The model as a metric label: only the pack's own model names, everything else `other`.
    pub(crate) fn model_label<'a>(&'a self, model: &str) -> &'a str {
        match self.compiled.models.get_key_value(model) {
            Some((k, _)) => k.as_str(),
            None => "other",
        }
    }
}

/// Whether files can be created in `dir` (made if missing): a version whose audit log could not
/// be written is refused before it is swapped in, so the last good version keeps serving.
/// The probe's name is unique per check (process id and a counter): packs are prepared
/// concurrently (a reload beside a start-up, several gateways in one test process).
fn check_writable(dir: &Path) -> std::io::Result<()> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".write-probe-{}-{n}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Why a pack could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot read the pack {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Pack(Diagnostics),
    #[error("{0}")]
    Upstream(#[from] UpstreamConfigError),
    #[error("the audit directory `{dir}` cannot be written: {source}")]
    AuditDir { dir: String, source: std::io::Error },
}

impl PrepareError {
    /// One line for `/status` and logs.
    pub fn summary(&self) -> String {
        match self {
            Self::Pack(d) => d
                .first_error()
                .map_or_else(|| d.to_string(), ToString::to_string),
            other => other.to_string(),
        }
    }
}

/// Parse, validate, compile and wire up a pack for `environment`.
pub fn prepare(
    text: &str,
    environment: &str,
    source: PackSource,
) -> Result<ActivePack, PrepareError> {
    let loaded = policy_engine::load(text).map_err(PrepareError::Pack)?;
    let doc = loaded
        .resolve(Some(environment))
        .map_err(PrepareError::Pack)?;
    let pii_cfg = doc.policy.pii_detector.clone();
    let pii_hash_key = pii_cfg
        .as_ref()
        .and_then(|c| c.hash_key_env.as_deref())
        .and_then(|var| std::env::var(var).ok())
        .map(String::into_bytes);
    let compiled = loaded
        .compile(Some(environment), &CompileOptions { pii_hash_key })
        .map_err(PrepareError::Pack)?;
    compiled.check_activatable().map_err(PrepareError::Pack)?;

    let mut names: Vec<String> = compiled.providers.keys().cloned().collect();
    if names.is_empty() {
        names.push(DEFAULT_PROVIDER.to_owned());
    }
    let mut upstreams = HashMap::with_capacity(names.len());
    for name in names {
        let Some(mut spec) = compiled.provider(&name) else {
            continue;
        };
        if let Some(var) = spec.base_url_env.as_deref() {
            if let Some(url) = std::env::var(var).ok().filter(|u| !u.is_empty()) {
                tracing::info!(provider = %name, variable = %var, url = %url, "base_url taken from the environment");
                spec.base_url = url;
            }
        }
        let key = spec
            .api_key_env
            .as_deref()
            .and_then(|var| match std::env::var(var) {
                Ok(k) => Some(k),
                Err(_) => {
                    tracing::warn!(
                        provider = %name,
                        variable = %var,
                        "the provider key variable is not set; requests go upstream without a key"
                    );
                    None
                }
            });
        let up = Upstream::new(&name, &spec, key.as_deref())?;
        upstreams.insert(name, Arc::new(up));
    }

    if compiled.runs(PolicyKind::AuditLogger) {
        let dir = compiled
            .audit
            .as_ref()
            .map_or_else(|| AuditLoggerConfig::default().dir, |a| a.dir.clone());
        check_writable(Path::new(&dir)).map_err(|source| PrepareError::AuditDir { dir, source })?;
    }

    let scans = |side| compiled.pii.is_some() && pii_cfg.as_ref().is_some_and(|c| c.scans(side));
    let scan_request = scans(ScanSide::Request);
    let scan_response = scans(ScanSide::Response);
    let hash_hex = compiled.hash.to_string();
    let version_header = header_value(&compiled.version);
    let hash_header = header_value(&hash_hex);
    Ok(ActivePack {
        compiled,
        source,
        loaded_at: SystemTime::now(),
        hash_hex,
        version_header,
        hash_header,
        upstreams,
        scan_request,
        scan_response,
        policies: std::sync::OnceLock::new(),
    })
}

/// A pack version is free text; anything a header cannot carry is replaced.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| {
        let cleaned: String = s
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        HeaderValue::from_str(&cleaned).unwrap_or(HeaderValue::from_static("invalid"))
    })
}
