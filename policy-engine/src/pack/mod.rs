//! The policy pack document, format version 1, as raw serde types.
//!
//! These types are the *first stage* of a pack's life: what the YAML says, with defaults filled.
//! Every struct denies unknown fields, so a typo (`acton: block`) is a diagnostic instead of a
//! policy silently falling back to its default. Nothing here validates cross-references (a chain
//! naming a policy, a model naming a provider): that is `validate`'s job, which collects every
//! problem at once. Nothing here is compiled either: regexes and automata are built by `compile`.
//!
//! Serialisation of these types *is* the canonical form (see `canonical`): fields that are
//! optional serialise as `null` rather than being skipped, so every path an environment override
//! may address exists in the defaults-filled tree.

mod audit;
mod budget;
mod models;
mod pii;
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use audit::{AuditLoggerConfig, QueueFullPolicy};
pub use budget::{
    BudgetEnforcerConfig, BudgetLimit, BudgetScope, BudgetWindow, ExhaustedAction, StoreKind,
    StoreUnavailable, MAX_PREBORROW_FRACTION,
};
pub use models::{
    DeploymentSpec, ModelSpec, ProviderKind, ProviderProtocol, ProviderSpec, RoutingSpec,
    DEFAULT_ANTHROPIC_VERSION, DEFAULT_PROVIDER, DEFAULT_PROVIDER_BASE_URL,
    DEFAULT_PROVIDER_KEY_ENV,
};
pub use pii::{
    CustomEntity, PiiAction, PiiDetectorConfig, RedactionStyle, ScanSide, Validator,
    BUILTIN_ENTITIES,
};
pub use tests::{PackTest, TestMessage, TestVerdict};

/// The only pack format this build understands. A document declaring a higher
/// `format_version` is refused with `UNSUPPORTED_PACK_VERSION` instead of being half-read.
pub const FORMAT_VERSION: u32 = 1;

/// The names of every policy this build implements, in their canonical order.
pub const KNOWN_POLICIES: [&str; 3] = [AUDIT_LOGGER, PII_DETECTOR, BUDGET_ENFORCER];
pub const AUDIT_LOGGER: &str = "audit-logger";
pub const PII_DETECTOR: &str = "pii-detector";
pub const BUDGET_ENFORCER: &str = "budget-enforcer";

/// One whole pack document after parsing, defaults filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackDocument {
    #[serde(default = "default_format_version")]
    pub format_version: u32,
    pub pack: PackMeta,
    #[serde(default)]
    pub policies: Policies,
    #[serde(default)]
    pub policy: PolicySettings,
    /// Provider name → where to send traffic. Empty means "OpenAI's public API".
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSpec>,
    /// Allowed model name → provider and prices. Empty means "any model is allowed".
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
    /// Retries, deadlines and circuit breaking for models with deployments or fallbacks.
    #[serde(default)]
    pub routing: RoutingSpec,
    /// Environment name → a partial document merged over this one. Kept as raw YAML here;
    /// `environments::resolve` merges and re-validates it.
    #[serde(default)]
    pub environments: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub tests: Vec<PackTest>,
}

fn default_format_version() -> u32 {
    FORMAT_VERSION
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackMeta {
    /// Stable identity across versions and environments.
    pub name: String,
    /// Semver chosen by the author.
    pub version: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub description: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Order of execution on the request path.
    #[serde(default)]
    pub chain: Vec<String>,
}

/// Settings per policy. A policy listed in the chain with no settings runs with its defaults;
/// settings for a policy that is not in the chain are kept but warned about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    #[serde(rename = "audit-logger", default)]
    pub audit_logger: Option<AuditLoggerConfig>,
    #[serde(rename = "pii-detector", default)]
    pub pii_detector: Option<PiiDetectorConfig>,
    #[serde(rename = "budget-enforcer", default)]
    pub budget_enforcer: Option<BudgetEnforcerConfig>,
}

impl PackDocument {
    /// True when `name` is in the chain.
    pub fn in_chain(&self, name: &str) -> bool {
        self.policies.chain.iter().any(|p| p == name)
    }

    /// Fill defaults that depend on other parts of the document: a policy in the chain with no
    /// settings gets its default settings, so the canonical form (and the hash) does not depend
    /// on whether an author wrote `pii-detector: {}` or nothing at all.
    pub fn fill_defaults(&mut self) {
        let s = &mut self.policy;
        if self.policies.chain.iter().any(|p| p == AUDIT_LOGGER) && s.audit_logger.is_none() {
            s.audit_logger = Some(AuditLoggerConfig::default());
        }
        if self.policies.chain.iter().any(|p| p == PII_DETECTOR) && s.pii_detector.is_none() {
            s.pii_detector = Some(PiiDetectorConfig::default());
        }
        if self.policies.chain.iter().any(|p| p == BUDGET_ENFORCER) && s.budget_enforcer.is_none() {
            s.budget_enforcer = Some(BudgetEnforcerConfig::default());
        }
    }
}
