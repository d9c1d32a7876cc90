//! Providers (where traffic goes) and models (what may be called, at which price).

use serde::{Deserialize, Serialize};

/// The provider used when a pack declares none, or a model names none.
pub const DEFAULT_PROVIDER: &str = "openai";
pub const DEFAULT_PROVIDER_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_PROVIDER_KEY_ENV: &str = "OPENAI_API_KEY";

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// The HTTP version the gateway speaks to a provider.
///
/// `http1`: one HTTP/1.1 connection per request in flight (pooled between requests).
/// `http2`: HTTP/2 only (ALPN `h2` over TLS, prior knowledge over plain `http://`), with up to
/// 100 requests in flight on one connection, so concurrent streams share connections instead
/// of holding one each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderProtocol {
    #[default]
    Http1,
    Http2,
}

impl ProviderProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
        }
    }
}

/// The `anthropic-version` an `anthropic` provider gets when neither the caller nor the pack
/// names one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// The wire format the provider speaks: `openai` (chat completions, completions,
    /// embeddings, responses) or `anthropic` (messages). Decides the upstream paths and how
    /// the provider key is sent (`Authorization: Bearer` or `x-api-key`).
    #[serde(default)]
    pub kind: ProviderKind,
    /// `anthropic-version` sent to an `anthropic` provider when the caller sent none.
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Base URL including the API prefix, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// `http1` (the default) or `http2`.
    #[serde(default)]
    pub protocol: ProviderProtocol,
    /// Name of an environment variable that, when set and non-empty on the gateway, replaces
    /// `base_url` (how `palisade up` points the sample pack at its local mock, and how a
    /// deployment points at a regional or private endpoint without a second pack). The name is
    /// in the pack, so a reviewer sees that the address can come from the environment.
    #[serde(default)]
    pub base_url_env: Option<String>,
    /// Name of the environment variable that holds the provider key. The key itself never
    /// appears in a pack (`SECRET_IN_PACK`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_connect")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the response head (or the first streamed byte) arrives.
    #[serde(default = "default_first_byte")]
    pub first_byte_timeout_ms: u64,
}

fn default_connect() -> u64 {
    5_000
}
fn default_first_byte() -> u64 {
    60_000
}

impl ProviderSpec {
    /// OpenAI's public API with the key from `OPENAI_API_KEY`.
    pub fn default_openai() -> Self {
        Self {
            kind: ProviderKind::OpenAi,
            anthropic_version: None,
            base_url: DEFAULT_PROVIDER_BASE_URL.to_owned(),
            protocol: ProviderProtocol::Http1,
            base_url_env: None,
            api_key_env: Some(DEFAULT_PROVIDER_KEY_ENV.to_owned()),
            connect_timeout_ms: default_connect(),
            first_byte_timeout_ms: default_first_byte(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Provider name; defaults to the only provider, or `openai` when there is none.
    #[serde(default)]
    pub provider: Option<String>,
    /// USD per million input tokens.
    #[serde(default)]
    pub input_usd_per_mtok: Option<f64>,
    /// USD per million output tokens.
    #[serde(default)]
    pub output_usd_per_mtok: Option<f64>,
    /// Model name sent upstream, when it differs from the name callers use.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Several places that serve the model (instead of `provider`): requests are spread over
    /// them by weight, and one that fails is followed by the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeploymentSpec>,
    /// Models tried, in order, when every deployment of this one failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}

/// One place that serves a model: a provider, the model's name there, and its share of the
/// traffic among the model's deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub provider: String,
    /// The model's name at this provider; defaults to the model's `upstream_model` or name.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Relative share of requests (at least 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// How the gateway retries and takes failing deployments out of rotation. Applies to models
/// with more than one place to go (deployments, fallbacks); a model served by one deployment
/// is called once, as without this section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    /// Attempts per request in all (first try included); `0` means one per deployment and
    /// fallback deployment.
    #[serde(default)]
    pub max_attempts: u32,
    /// The whole request, every attempt and wait included, must have its answer's head by then.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// First wait before retrying the same deployment; doubles per retry, with full jitter.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Longest wait before a retry (a provider's `Retry-After` included).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Consecutive failures that take a deployment out of rotation.
    #[serde(default = "default_circuit_failures")]
    pub circuit_failures: u32,
    /// How long it stays out before one probe request is let through.
    #[serde(default = "default_circuit_cooldown_ms")]
    pub circuit_cooldown_ms: u64,
}

fn default_deadline_ms() -> u64 {
    120_000
}
fn default_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    2_000
}
fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_cooldown_ms() -> u64 {
    30_000
}

impl Default for RoutingSpec {
    fn default() -> Self {
        Self {
            max_attempts: 0,
            deadline_ms: default_deadline_ms(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            circuit_failures: default_circuit_failures(),
            circuit_cooldown_ms: default_circuit_cooldown_ms(),
        }
    }
}
