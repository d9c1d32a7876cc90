//! The last stage: a resolved pack becomes a [`CompiledPack`], immutable and ready to share.
//!
//! Everything a request needs is built here, off the request path: the PII detector's automata
//! and regexes, the model table, the provider list. A gateway compiles a new version completely
//! before it swaps anything (fallible prepare, infallible swap), so a pack that fails here never
//! replaces a good one. Compilation errors are `POLICY_COMPILE_ERROR` with the path of the
//! setting that could not be built.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::canonical::{effective_hash, PackHash};
use crate::diagnostic::{DiagnosticCode, Diagnostics, PackDiagnostic};
use crate::pack::{
    AuditLoggerConfig, BudgetEnforcerConfig, ModelSpec, PackDocument, PackTest, ProviderSpec,
    RoutingSpec, AUDIT_LOGGER, BUDGET_ENFORCER, DEFAULT_PROVIDER, PII_DETECTOR,
};
use crate::pii::PiiDetector;

/// One policy of the chain, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    AuditLogger,
    PiiDetector,
    BudgetEnforcer,
}

impl PolicyKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::AuditLogger => AUDIT_LOGGER,
            Self::PiiDetector => PII_DETECTOR,
            Self::BudgetEnforcer => BUDGET_ENFORCER,
        }
    }
}

/// Inputs that are not pack content: secrets a policy needs, handed in by the caller.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// HMAC key for `redaction: hash`.
    pub pii_hash_key: Option<Vec<u8>>,
}

/// A model a caller may use, resolved to its provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRoute {
    pub name: String,
    /// The first deployment's provider and model name.
    pub provider: String,
    pub upstream_model: String,
    pub input_usd_per_mtok: Option<f64>,
    pub output_usd_per_mtok: Option<f64>,
    /// Where the model is served, at least one (a model without `deployments` has its
    /// `provider` as the only one). Shared: a request copies its route, not these.
    pub deployments: Arc<[Deployment]>,
    /// Models tried, in order, when every deployment of this one failed.
    pub fallbacks: Arc<[String]>,
}

/// One place that serves a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub provider: String,
    pub upstream_model: String,
    pub weight: u32,
    /// `provider/upstream_model`: its name in health, metrics and records.
    pub name: String,
}

impl Deployment {
    pub fn new(provider: &str, upstream_model: &str, weight: u32) -> Self {
        Self {
            provider: provider.to_owned(),
            upstream_model: upstream_model.to_owned(),
            weight,
            name: format!("{provider}/{upstream_model}"),
        }
    }
}

impl ModelRoute {
    /// Whether a request for this model can go to more than one place (so retrying elsewhere
    /// and taking a failing deployment out of rotation make sense).
    pub fn has_alternatives(&self) -> bool {
        self.deployments.len() > 1 || !self.fallbacks.is_empty()
    }
}

/// A pack ready to enforce: one environment's resolved document with every policy built.
#[derive(Debug)]
pub struct CompiledPack {
    pub name: String,
    pub version: String,
    pub enabled: bool,
    /// The environment it was resolved for (`None`: the base document).
    pub environment: Option<String>,
    /// Identity of the whole pack document (what the registry and the control plane compare).
    pub hash: PackHash,
    /// Identity of what this environment enforces.
    pub effective_hash: PackHash,
    pub chain: Vec<PolicyKind>,
    pub audit: Option<AuditLoggerConfig>,
    pub pii: Option<PiiDetector>,
    pub budget: Option<BudgetEnforcerConfig>,
    /// Allowed models; empty means any model goes to the default provider.
    pub models: BTreeMap<String, ModelRoute>,
    pub providers: BTreeMap<String, ProviderSpec>,
    /// Retries, deadline and circuit breaking for models with alternatives.
    pub routing: RoutingSpec,
    pub tests: Vec<PackTest>,
    /// The resolved document, for diffs and status pages.
    pub document: PackDocument,
}

impl CompiledPack {
    /// Where a request for `model` goes, or `None` when the pack does not allow it. Borrowed
    /// from the pack's model list; made up (owned) only for a pack without one.
    pub fn route(&self, model: &str) -> Option<Cow<'_, ModelRoute>> {
        if self.models.is_empty() {
            let provider = self
                .providers
                .keys()
                .next()
                .map_or(DEFAULT_PROVIDER, String::as_str);
            return Some(Cow::Owned(ModelRoute {
                name: model.to_owned(),
                provider: provider.to_owned(),
                upstream_model: model.to_owned(),
                input_usd_per_mtok: None,
                output_usd_per_mtok: None,
                deployments: Arc::from([Deployment::new(provider, model, 1)]),
                fallbacks: Arc::from([]),
            }));
        }
        self.models.get(model).map(Cow::Borrowed)
    }

    /// The provider spec for a provider name (the implicit OpenAI default included).
    pub fn provider(&self, name: &str) -> Option<ProviderSpec> {
        match self.providers.get(name) {
            Some(p) => Some(p.clone()),
            None if self.providers.is_empty() && name == DEFAULT_PROVIDER => {
                Some(ProviderSpec::default_openai())
            }
            None => None,
        }
    }

    pub fn runs(&self, policy: PolicyKind) -> bool {
        self.chain.contains(&policy)
    }

    /// A gateway activates only enabled packs; a disabled one is rejected like a bad one.
    pub fn check_activatable(&self) -> Result<(), Diagnostics> {
        if self.enabled {
            return Ok(());
        }
        Err(PackDiagnostic::error(
            DiagnosticCode::PackDisabled,
            "pack.enabled",
            "the pack is disabled (`enabled: false`) and cannot be activated",
        )
        .found("false")
        .expected("true")
        .into())
    }
}

/// Compile a resolved document. `hash` is the whole pack's identity, computed at load time.
pub(crate) fn compile(
    doc: &PackDocument,
    environment: Option<&str>,
    hash: PackHash,
    options: &CompileOptions,
) -> Result<CompiledPack, Diagnostics> {
    let mut errors = Diagnostics::default();
    let chain: Vec<PolicyKind> = doc
        .policies
        .chain
        .iter()
        .filter_map(|p| match p.as_str() {
            AUDIT_LOGGER => Some(PolicyKind::AuditLogger),
            PII_DETECTOR => Some(PolicyKind::PiiDetector),
            BUDGET_ENFORCER => Some(PolicyKind::BudgetEnforcer),
            _ => None,
        })
        .collect();
    let pii = match (
        &doc.policy.pii_detector,
        chain.contains(&PolicyKind::PiiDetector),
    ) {
        (Some(cfg), true) => match PiiDetector::compile(cfg, options.pii_hash_key.as_deref()) {
            Ok(d) => Some(d),
            Err(list) => {
                for e in list {
                    let path = if e.path.is_empty() {
                        "policy.pii-detector".to_owned()
                    } else {
                        format!("policy.pii-detector.{}", e.path)
                    };
                    let mut d =
                        PackDiagnostic::error(DiagnosticCode::PolicyCompileError, path, e.message);
                    if let Some(x) = e.expected {
                        d = d.expected(x);
                    }
                    errors.push(d);
                }
                None
            }
        },
        _ => None,
    };
    if errors.has_errors() {
        return Err(errors);
    }
    let default_provider = doc
        .providers
        .keys()
        .next()
        .map_or(DEFAULT_PROVIDER, String::as_str);
    let models = doc
        .models
        .iter()
        .map(|(name, m): (&String, &ModelSpec)| {
            let upstream_model = m.upstream_model.clone().unwrap_or_else(|| name.clone());
            let deployments: Vec<Deployment> = if m.deployments.is_empty() {
                vec![Deployment::new(
                    m.provider.as_deref().unwrap_or(default_provider),
                    &upstream_model,
                    1,
                )]
            } else {
                m.deployments
                    .iter()
                    .map(|d| {
                        Deployment::new(
                            &d.provider,
                            d.upstream_model.as_deref().unwrap_or(&upstream_model),
                            d.weight.max(1),
                        )
                    })
                    .collect()
            };
            let route = ModelRoute {
                name: name.clone(),
                provider: deployments[0].provider.clone(),
                upstream_model: deployments[0].upstream_model.clone(),
                input_usd_per_mtok: m.input_usd_per_mtok,
                output_usd_per_mtok: m.output_usd_per_mtok,
                deployments: deployments.into(),
                fallbacks: m.fallbacks.clone().into(),
            };
            (name.clone(), route)
        })
        .collect();
    Ok(CompiledPack {
        name: doc.pack.name.clone(),
        version: doc.pack.version.clone(),
        enabled: doc.pack.enabled,
        environment: environment.map(str::to_owned),
        hash,
        effective_hash: effective_hash(doc),
        audit: doc
            .policy
            .audit_logger
            .clone()
            .filter(|_| chain.contains(&PolicyKind::AuditLogger)),
        budget: doc
            .policy
            .budget_enforcer
            .clone()
            .filter(|_| chain.contains(&PolicyKind::BudgetEnforcer)),
        chain,
        pii,
        models,
        providers: doc.providers.clone(),
        routing: doc.routing,
        tests: doc.tests.clone(),
        document: doc.clone(),
    })
}
