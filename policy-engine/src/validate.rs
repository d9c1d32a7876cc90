//! Semantic checks on a decoded pack: references, ranges and combinations that the types alone
//! cannot express. Every check reports and goes on; nothing here stops at the first problem.
//!
//! What is *not* checked here: entity names, regexes and term lists of the PII detector, which
//! are checked by compiling the detector (`compile`), so the rules live in one place.

use std::collections::BTreeSet;

use crate::decode::Sink;
use crate::diagnostic::{DiagnosticCode, PackDiagnostic};
use crate::pack::{
    BudgetEnforcerConfig, BudgetScope, BudgetWindow, ExhaustedAction, PackDocument, ProviderKind,
    RedactionStyle, AUDIT_LOGGER, BUDGET_ENFORCER, DEFAULT_PROVIDER, KNOWN_POLICIES,
    MAX_PREBORROW_FRACTION, PII_DETECTOR,
};
use crate::source_map::item;

use DiagnosticCode::{InvalidValue, MissingField, UnknownPolicy, UnknownReference, UnusedPolicy};

pub(crate) fn document(doc: &PackDocument, sink: &mut Sink<'_>) {
    meta(doc, sink);
    chain(doc, sink);
    providers_and_models(doc, sink);
    routing(doc, sink);
    if let Some(a) = &doc.policy.audit_logger {
        let p = "policy.audit-logger";
        if a.retention_days == 0 {
            err(
                sink,
                InvalidValue,
                &format!("{p}.retention_days"),
                "0",
                "at least 1 day",
            );
        }
        if a.queue_capacity == 0 {
            err(
                sink,
                InvalidValue,
                &format!("{p}.queue_capacity"),
                "0",
                "at least 1",
            );
        }
        if a.dir.trim().is_empty() {
            err(
                sink,
                InvalidValue,
                &format!("{p}.dir"),
                "an empty path",
                "a directory path",
            );
        }
    }
    if let Some(pii) = &doc.policy.pii_detector {
        if pii.redaction == RedactionStyle::Hash && pii.hash_key_env.is_none() {
            let d = PackDiagnostic::error(
                MissingField,
                "policy.pii-detector.hash_key_env",
                "`redaction: hash` needs a key",
            )
            .expected("the name of an environment variable holding the HMAC key")
            .help("add `hash_key_env: PALISADE_PII_HASH_KEY`");
            sink.emit(d, false);
        }
        if let Some(env) = &pii.hash_key_env {
            env_name(sink, "policy.pii-detector.hash_key_env", env);
        }
        let email_on = pii.effective_entities().iter().any(|e| e == "email");
        if !pii.obfuscated_emails && !email_on {
            let d = PackDiagnostic::warning(
                InvalidValue,
                "policy.pii-detector.obfuscated_emails",
                "`obfuscated_emails: false` has no effect: `email` is not in `entities`",
            )
            .help("remove `obfuscated_emails`, or add `email` to `entities`");
            sink.emit(d, false);
        }
        if pii.scan.is_empty() {
            err(
                sink,
                InvalidValue,
                "policy.pii-detector.scan",
                "an empty list",
                "request, response or both",
            );
        }
    }
    if let Some(b) = &doc.policy.budget_enforcer {
        budget(doc, b, sink);
    }
    for (i, t) in doc.tests.iter().enumerate() {
        if t.input.is_none() && t.messages.is_empty() {
            let d = PackDiagnostic::error(
                MissingField,
                item("tests", i),
                format!("test `{}` has no request", t.name),
            )
            .expected("`input: TEXT` or `messages: [{role, content}]`");
            sink.emit(d, false);
        }
    }
}

/// Tests may name environments; only the base document knows which exist (resolved documents
/// carry no `environments:` block), so this runs once, on the base.
pub(crate) fn test_environments(doc: &PackDocument, sink: &mut Sink<'_>) {
    for (i, t) in doc.tests.iter().enumerate() {
        for (j, env) in t.environments.iter().flatten().enumerate() {
            if !doc.environments.contains_key(env) {
                let known: Vec<&str> = doc.environments.keys().map(String::as_str).collect();
                let d = PackDiagnostic::error(
                    DiagnosticCode::UnknownEnvironment,
                    format!("tests[{i}].environments[{j}]"),
                    format!(
                        "test `{}` names an environment the pack does not declare",
                        t.name
                    ),
                )
                .found(env.clone())
                .expected(if known.is_empty() {
                    "an `environments:` block declaring it".to_owned()
                } else {
                    format!("one of {}", known.join(", "))
                });
                sink.emit(d, false);
            }
        }
    }
}

fn meta(doc: &PackDocument, sink: &mut Sink<'_>) {
    let name = &doc.pack.name;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        err(
            sink,
            InvalidValue,
            "pack.name",
            name,
            "1-64 characters of a-z, 0-9, `-`, `_`, starting with a letter or digit",
        );
    }
    if semver::Version::parse(&doc.pack.version).is_err() {
        err(
            sink,
            InvalidValue,
            "pack.version",
            &doc.pack.version,
            "a semantic version such as 2.3.0",
        );
    }
    for env in doc.environments.keys() {
        if !env_ident(env) {
            err(
                sink,
                InvalidValue,
                &format!("environments.{env}"),
                env,
                "an environment name of a-z, 0-9 and `-`",
            );
        }
    }
}

fn chain(doc: &PackDocument, sink: &mut Sink<'_>) {
    let mut seen = BTreeSet::new();
    for (i, name) in doc.policies.chain.iter().enumerate() {
        let path = item("policies.chain", i);
        if !KNOWN_POLICIES.contains(&name.as_str()) {
            let d = PackDiagnostic::error(
                UnknownPolicy,
                path,
                format!("unknown policy `{name}` in the chain"),
            )
            .found(name.clone())
            .expected(format!("one of {}", KNOWN_POLICIES.join(", ")));
            sink.emit(d, false);
        } else if !seen.insert(name) {
            err(
                sink,
                InvalidValue,
                &path,
                name,
                "each policy at most once in the chain",
            );
        }
    }
    let s = &doc.policy;
    let configured = [
        (AUDIT_LOGGER, s.audit_logger.is_some()),
        (PII_DETECTOR, s.pii_detector.is_some()),
        (BUDGET_ENFORCER, s.budget_enforcer.is_some()),
    ];
    for (name, is_set) in configured {
        if is_set && !doc.in_chain(name) {
            let d = PackDiagnostic::warning(
                UnusedPolicy,
                format!("policy.{name}"),
                format!("`{name}` is configured but not in the chain, so it never runs"),
            )
            .help(format!(
                "add `{name}` to `policies.chain`, or remove its settings"
            ));
            sink.emit(d, true);
        }
    }
}

fn providers_and_models(doc: &PackDocument, sink: &mut Sink<'_>) {
    for (name, p) in &doc.providers {
        let path = format!("providers.{name}");
        if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
            err(
                sink,
                InvalidValue,
                &format!("{path}.base_url"),
                &p.base_url,
                "an http:// or https:// URL",
            );
        }
        if let Some(env) = &p.api_key_env {
            env_name(sink, &format!("{path}.api_key_env"), env);
        }
        if let Some(env) = &p.base_url_env {
            env_name(sink, &format!("{path}.base_url_env"), env);
        }
        if p.anthropic_version.is_some() && p.kind != ProviderKind::Anthropic {
            let d = PackDiagnostic::error(
                InvalidValue,
                format!("{path}.anthropic_version"),
                format!("`anthropic_version` applies to `kind: anthropic` providers; `{name}` is `kind: {}`", p.kind.as_str()),
            )
            .help("set `kind: anthropic`, or remove `anthropic_version`");
            sink.emit(d, true);
        }
        if p.connect_timeout_ms == 0 || p.first_byte_timeout_ms == 0 {
            err(
                sink,
                InvalidValue,
                &path,
                "a zero timeout",
                "timeouts of at least 1 ms",
            );
        }
    }
    for (name, m) in &doc.models {
        let path = format!("models.{name}");
        if let Some(provider) = &m.provider {
            let known = if doc.providers.is_empty() {
                provider == DEFAULT_PROVIDER
            } else {
                doc.providers.contains_key(provider)
            };
            if !known {
                let allowed: Vec<&str> = if doc.providers.is_empty() {
                    vec![DEFAULT_PROVIDER]
                } else {
                    doc.providers.keys().map(String::as_str).collect()
                };
                let d = PackDiagnostic::error(
                    UnknownReference,
                    format!("{path}.provider"),
                    format!("model `{name}` names an unknown provider"),
                )
                .found(provider.clone())
                .expected(format!("one of {}", allowed.join(", ")));
                sink.emit(d, false);
            }
        } else if doc.providers.len() > 1 && m.deployments.is_empty() {
            let d = PackDiagnostic::error(
                MissingField,
                format!("{path}.provider"),
                format!("model `{name}` must name its provider"),
            )
            .expected(format!(
                "one of {}",
                doc.providers.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            sink.emit(d, false);
        }
        for (field, price) in [
            ("input_usd_per_mtok", m.input_usd_per_mtok),
            ("output_usd_per_mtok", m.output_usd_per_mtok),
        ] {
            if let Some(p) = price {
                if !(p.is_finite() && p >= 0.0) {
                    err(
                        sink,
                        InvalidValue,
                        &format!("{path}.{field}"),
                        &p.to_string(),
                        "a price of 0 or more USD per million tokens",
                    );
                }
            }
        }
    }
}

/// Most attempts a request may make: each holds the caller's connection open.
const MAX_ATTEMPTS: u32 = 10;

/// Deployments, fallbacks and the routing section: known providers and models, weights of at
/// least 1, no model that falls back (directly or not) to itself, sane retry bounds.
fn routing(doc: &PackDocument, sink: &mut Sink<'_>) {
    let provider_known = |p: &str| {
        if doc.providers.is_empty() {
            p == DEFAULT_PROVIDER
        } else {
            doc.providers.contains_key(p)
        }
    };
    let allowed_providers = || {
        if doc.providers.is_empty() {
            DEFAULT_PROVIDER.to_owned()
        } else {
            doc.providers.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    for (name, m) in &doc.models {
        let path = format!("models.{name}");
        if m.provider.is_some() && !m.deployments.is_empty() {
            let d = PackDiagnostic::error(
                InvalidValue,
                format!("{path}.provider"),
                format!("model `{name}` sets both `provider` and `deployments`"),
            )
            .help("list the provider as one of the deployments instead");
            sink.emit(d, true);
        }
        let mut seen = BTreeSet::new();
        for (i, dep) in m.deployments.iter().enumerate() {
            let at = item(&format!("{path}.deployments"), i);
            let model = dep.upstream_model.as_deref().unwrap_or(name);
            if !seen.insert((dep.provider.as_str(), model)) {
                err(
                    sink,
                    InvalidValue,
                    &at,
                    &format!("{}/{model}", dep.provider),
                    "each provider and upstream model once",
                );
            }
            if !provider_known(&dep.provider) {
                let d = PackDiagnostic::error(
                    UnknownReference,
                    format!("{at}.provider"),
                    format!("a deployment of `{name}` names an unknown provider"),
                )
                .found(dep.provider.clone())
                .expected(format!("one of {}", allowed_providers()));
                sink.emit(d, false);
            }
            if dep.weight == 0 {
                err(
                    sink,
                    InvalidValue,
                    &format!("{at}.weight"),
                    "0",
                    "a weight of at least 1",
                );
            }
        }
        for (i, f) in m.fallbacks.iter().enumerate() {
            let at = item(&format!("{path}.fallbacks"), i);
            if !doc.models.contains_key(f) {
                let d = PackDiagnostic::error(
                    UnknownReference,
                    at,
                    format!("`{name}` falls back to `{f}`, which is not in `models`"),
                )
                .found(f.clone())
                .expected(format!(
                    "one of {}",
                    doc.models.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                sink.emit(d, false);
            }
        }
        if let Some(cycle) = fallback_cycle(doc, name) {
            let d = PackDiagnostic::error(
                InvalidValue,
                format!("{path}.fallbacks"),
                format!("`{name}` falls back to itself: {}", cycle.join(" -> ")),
            )
            .help("a fallback chain must end; remove one of the links");
            sink.emit(d, false);
        }
    }
    let r = &doc.routing;
    if r.max_attempts > MAX_ATTEMPTS {
        err(
            sink,
            InvalidValue,
            "routing.max_attempts",
            &r.max_attempts.to_string(),
            &format!("at most {MAX_ATTEMPTS} attempts (0: one per deployment)"),
        );
    }
    if r.deadline_ms == 0 {
        err(
            sink,
            InvalidValue,
            "routing.deadline_ms",
            "0",
            "at least 1 ms",
        );
    }
    if r.circuit_failures == 0 {
        err(
            sink,
            InvalidValue,
            "routing.circuit_failures",
            "0",
            "at least 1 failure",
        );
    }
    if r.max_backoff_ms < r.backoff_ms {
        err(
            sink,
            InvalidValue,
            "routing.max_backoff_ms",
            &r.max_backoff_ms.to_string(),
            "at least `backoff_ms`",
        );
    }
}

/// The fallback path from `start` back to itself, if there is one.
fn fallback_cycle(doc: &PackDocument, start: &str) -> Option<Vec<String>> {
    fn walk(
        doc: &PackDocument,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let Some(m) = doc.models.get(at) else {
            return false;
        };
        for f in &m.fallbacks {
            if f == start {
                path.push(f.clone());
                return true;
            }
            if seen.insert(f.clone()) {
                path.push(f.clone());
                if walk(doc, start, f, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    walk(doc, start, start, &mut path, &mut seen).then_some(path)
}

fn budget(doc: &PackDocument, b: &BudgetEnforcerConfig, sink: &mut Sink<'_>) {
    let base = "policy.budget-enforcer";
    if !(b.soft_threshold > 0.0 && b.soft_threshold <= 1.0) {
        err(
            sink,
            InvalidValue,
            &format!("{base}.soft_threshold"),
            &b.soft_threshold.to_string(),
            "a fraction in (0, 1]",
        );
    }
    if b.default_max_tokens == 0 {
        err(
            sink,
            InvalidValue,
            &format!("{base}.default_max_tokens"),
            "0",
            "at least 1",
        );
    }
    let f = b.preborrow_fraction;
    if !(f.is_finite() && (0.0..=MAX_PREBORROW_FRACTION).contains(&f)) {
        let d = PackDiagnostic::error(
            InvalidValue,
            format!("{base}.preborrow_fraction"),
            "a replica may pre-borrow only a small slice of a limit",
        )
        .found(f.to_string())
        .expected(format!("a fraction in [0, {MAX_PREBORROW_FRACTION}]"))
        .help("the worst-case overshoot across replicas is replicas × preborrow_fraction × limit; 0 reserves in Redis on every request");
        sink.emit(d, false);
    }
    let mut keys = BTreeSet::new();
    for (i, l) in b.limits.iter().enumerate() {
        let path = item(&format!("{base}.limits"), i);
        if !keys.insert(l.key()) {
            err(
                sink,
                InvalidValue,
                &format!("{path}.scope"),
                &l.key(),
                "one limit per scope and window",
            );
        }
        if l.usd.is_none() && l.tokens.is_none() && l.requests.is_none() {
            let d = PackDiagnostic::error(
                MissingField,
                format!("{path}.usd"),
                "a limit needs an amount",
            )
            .expected("`usd`, `tokens`, `requests`, or several");
            sink.emit(d, false);
        }
        if l.on_exhausted == ExhaustedAction::Queue && l.window != BudgetWindow::Minute {
            let d = PackDiagnostic::error(
                InvalidValue,
                format!("{path}.on_exhausted"),
                "`on_exhausted: queue` waits for the next window, which only a rate limit's is near",
            )
            .found("queue")
            .expected("`window: minute` with `queue`, or `block`, `degrade` or `alert`");
            sink.emit(d, false);
        }
        if let Some(usd) = l.usd {
            if !(usd.is_finite() && usd >= 0.0) {
                err(
                    sink,
                    InvalidValue,
                    &format!("{path}.usd"),
                    &usd.to_string(),
                    "0 or more USD",
                );
            }
            if doc.models.is_empty() {
                let d = PackDiagnostic::error(
                    InvalidValue,
                    format!("{path}.usd"),
                    "a USD limit cannot be enforced without prices",
                )
                .expected("a `models:` list with input_usd_per_mtok and output_usd_per_mtok")
                .help("list the allowed models with their prices, or limit `tokens` instead");
                sink.emit(d, false);
            }
            for (name, m) in &doc.models {
                if m.input_usd_per_mtok.is_none() || m.output_usd_per_mtok.is_none() {
                    let d = PackDiagnostic::error(
                        MissingField,
                        format!("models.{name}"),
                        format!("model `{name}` has no price, but a USD limit applies to it"),
                    )
                    .expected("input_usd_per_mtok and output_usd_per_mtok");
                    sink.emit(d, true);
                }
            }
        }
        if let BudgetScope::Model(m) = &l.scope {
            model_ref(doc, sink, &format!("{path}.scope"), m);
        }
        match (l.on_exhausted, &l.degrade_to) {
            (ExhaustedAction::Degrade, None) => {
                let d = PackDiagnostic::error(
                    MissingField,
                    format!("{path}.degrade_to"),
                    "`on_exhausted: degrade` needs a model to degrade to",
                )
                .expected("a model name");
                sink.emit(d, false);
            }
            (_, Some(m)) => model_ref(doc, sink, &format!("{path}.degrade_to"), m),
            _ => {}
        }
    }
}

fn model_ref(doc: &PackDocument, sink: &mut Sink<'_>, path: &str, model: &str) {
    if !doc.models.is_empty() && !doc.models.contains_key(model) {
        let d = PackDiagnostic::error(
            UnknownReference,
            path,
            format!("`{model}` is not in `models`"),
        )
        .found(model.to_owned())
        .expected(format!(
            "one of {}",
            doc.models.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        sink.emit(d, false);
    }
}

fn env_name(sink: &mut Sink<'_>, path: &str, name: &str) {
    if crate::secrets::looks_like_secret(name) {
        return; // reported as SECRET_IN_PACK already
    }
    let ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        err(
            sink,
            InvalidValue,
            path,
            name,
            "an environment variable name such as OPENAI_API_KEY",
        );
    }
}

pub(crate) fn env_ident(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn err(sink: &mut Sink<'_>, code: DiagnosticCode, path: &str, found: &str, expected: &str) {
    let d = PackDiagnostic::error(code, path, format!("invalid value for {path}"))
        .found(crate::decode::shorten(found))
        .expected(expected.to_owned());
    sink.emit(d, false);
}
