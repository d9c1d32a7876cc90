//! Every diagnostic code fires on a crafted pack, at the right path, line and column.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use policy_engine::{load, DiagnosticCode, Diagnostics, PackDiagnostic, Severity};

fn errors_of(text: &str) -> Diagnostics {
    match load(text) {
        Ok(p) => panic!(
            "expected the pack to be refused, it loaded with hash {}",
            p.hash
        ),
        Err(d) => d,
    }
}

fn find<'a>(d: &'a Diagnostics, code: DiagnosticCode, path: &str) -> &'a PackDiagnostic {
    d.iter()
        .find(|x| x.code == code && x.path == path)
        .unwrap_or_else(|| panic!("no {code} at {path}; got:\n{d}"))
}

fn at(d: &PackDiagnostic) -> (usize, usize) {
    (d.line.expect("line"), d.column.expect("column"))
}

const SEED: &str = "\
pack:
  name: support-staging
  version: 2.3.0
  enabled: true
  description: Support staging baseline
policies:
  chain:
    - audit-logger
    - pii-detector
policy:
  audit-logger:
    retention_days: 30
  pii-detector:
    action: redact
";

#[test]
fn the_seed_document_from_the_deployment_guide_loads_unchanged() {
    let p = load(SEED).unwrap();
    assert_eq!(p.document.pack.name, "support-staging");
    assert_eq!(p.document.policies.chain, ["audit-logger", "pii-detector"]);
    assert_eq!(
        p.document
            .policy
            .audit_logger
            .as_ref()
            .unwrap()
            .retention_days,
        30
    );
    assert!(p.warnings.is_empty(), "{}", p.warnings);
}

#[test]
fn invalid_enum_value_names_path_position_and_allowed_values() {
    let d = errors_of(&SEED.replace("action: redact", "action: redcat"));
    let x = find(
        &d,
        DiagnosticCode::InvalidValue,
        "policy.pii-detector.action",
    );
    assert_eq!(at(x), (14, 13));
    assert_eq!(x.found.as_deref(), Some("redcat"));
    let expected = x.expected.as_deref().unwrap();
    for allowed in ["redact", "block", "log", "escalate"] {
        assert!(expected.contains(allowed), "{expected}");
    }
}

#[test]
fn obfuscated_emails_must_be_a_boolean() {
    let d = errors_of(&SEED.replace(
        "    action: redact\n",
        "    action: redact\n    obfuscated_emails: sometimes\n",
    ));
    let x = find(
        &d,
        DiagnosticCode::InvalidValue,
        "policy.pii-detector.obfuscated_emails",
    );
    assert_eq!(at(x), (15, 24));
    assert!(x.found.as_deref().unwrap().contains("sometimes"), "{x:?}");
}

#[test]
fn obfuscated_emails_off_without_the_email_entity_is_a_warning() {
    let p = load(&SEED.replace(
        "    action: redact\n",
        "    action: redact\n    entities: [phone]\n    obfuscated_emails: false\n",
    ))
    .unwrap();
    let w: Vec<_> = p.warnings.iter().collect();
    assert_eq!(w.len(), 1, "{}", p.warnings);
    assert_eq!(w[0].path, "policy.pii-detector.obfuscated_emails");
    assert_eq!(w[0].severity, Severity::Warning);
    let quiet = load(&SEED.replace(
        "    action: redact\n",
        "    action: redact\n    obfuscated_emails: false\n",
    ))
    .unwrap();
    assert!(quiet.warnings.is_empty(), "{}", quiet.warnings);
}

#[test]
fn unknown_field_points_at_the_key_and_lists_known_fields() {
    let d = errors_of(&SEED.replace(
        "    retention_days: 30",
        "    retention_days: 30\n    retension: 7",
    ));
    let x = find(
        &d,
        DiagnosticCode::UnknownField,
        "policy.audit-logger.retension",
    );
    assert_eq!(at(x), (13, 5));
    assert!(x.expected.as_deref().unwrap().contains("retention_days"));
}

#[test]
fn every_problem_is_reported_at_once_not_just_the_first() {
    let text = SEED
        .replace("action: redact", "action: redcat\n    acton: block")
        .replace(
            "    - pii-detector",
            "    - pii-detector\n    - rate-limiter",
        )
        .replace("  enabled: true", "  enabled: true\n  colour: red");
    let d = errors_of(&text);
    find(
        &d,
        DiagnosticCode::InvalidValue,
        "policy.pii-detector.action",
    );
    find(
        &d,
        DiagnosticCode::UnknownField,
        "policy.pii-detector.acton",
    );
    find(&d, DiagnosticCode::UnknownPolicy, "policies.chain[2]");
    find(&d, DiagnosticCode::UnknownField, "pack.colour");
    assert!(d.errors().count() >= 4, "{d}");
}

#[test]
fn a_policy_in_the_chain_without_implementation_is_an_error() {
    let d = errors_of(&SEED.replace(
        "    - pii-detector",
        "    - pii-detector\n    - toxicity-filter",
    ));
    let x = find(&d, DiagnosticCode::UnknownPolicy, "policies.chain[2]");
    assert_eq!(at(x), (10, 7));
    assert_eq!(x.severity, Severity::Error);
}

#[test]
fn settings_for_an_unknown_policy_are_unknown_policy() {
    let d = errors_of(&format!("{SEED}  toxicity-filter:\n    threshold: 0.5\n"));
    let x = find(&d, DiagnosticCode::UnknownPolicy, "policy.toxicity-filter");
    assert_eq!(at(x), (15, 3));
}

#[test]
fn an_environment_does_not_configure_policies_the_pack_never_mentions() {
    let p = load("pack:\n  name: p\n  version: 1.0.0\npolicies:\n  chain: [pii-detector]\npolicy:\n  pii-detector:\n    action: redact\nenvironments:\n  dev: {}\n  prod:\n    policy:\n      pii-detector:\n        action: block\n").unwrap();
    assert!(
        p.warnings.is_empty(),
        "no UNUSED_POLICY for audit-logger or budget-enforcer: {:?}",
        p.warnings
    );
}

#[test]
fn a_configured_policy_missing_from_the_chain_is_a_warning_only() {
    let p = load(&format!("{SEED}  budget-enforcer: {{}}\n")).unwrap();
    let w = p
        .warnings
        .iter()
        .find(|d| d.code == DiagnosticCode::UnusedPolicy)
        .expect("warning");
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.path, "policy.budget-enforcer");
}

#[test]
fn a_newer_format_version_is_refused_before_anything_else() {
    let d = errors_of(&format!("format_version: 2\n{SEED}  unknown-thing: {{}}\n"));
    assert_eq!(d.len(), 1, "{d}");
    let x = find(&d, DiagnosticCode::UnsupportedPackVersion, "format_version");
    assert_eq!(at(x), (1, 17));
}

#[test]
fn a_key_written_into_the_pack_is_an_error_pointing_to_api_key_env() {
    let text = format!("{SEED}providers:\n  openai:\n    base_url: https://api.openai.com/v1\n    api_key: sk-proj-abcdefghijklmnopqrstuvwxyz0123\n");
    let d = errors_of(&text);
    let x = find(&d, DiagnosticCode::SecretInPack, "providers.openai.api_key");
    assert_eq!(at(x), (18, 14));
    assert!(x.help.as_deref().unwrap().contains("api_key_env"));
    // The diagnostic never carries the secret itself.
    let rendered = format!("{d}{}", serde_json::to_string(&d).unwrap());
    assert!(!rendered.contains("abcdefghijklmnop"), "{rendered}");
}

#[test]
fn a_key_pasted_into_api_key_env_is_caught_too() {
    let text = format!("{SEED}providers:\n  openai:\n    base_url: https://api.openai.com/v1\n    api_key_env: sk-abcdefghijklmnopqrstuvwxyz0123\n");
    let d = errors_of(&text);
    find(
        &d,
        DiagnosticCode::SecretInPack,
        "providers.openai.api_key_env",
    );
}

#[test]
fn base_url_env_must_name_a_variable_not_hold_a_url() {
    let text = format!("{SEED}providers:\n  openai:\n    base_url: https://api.openai.com/v1\n    base_url_env: http://127.0.0.1:8090/v1\n");
    let d = errors_of(&text);
    let x = find(
        &d,
        DiagnosticCode::InvalidValue,
        "providers.openai.base_url_env",
    );
    assert!(
        x.expected
            .as_deref()
            .unwrap_or("")
            .contains("environment variable name"),
        "{d}"
    );
}

#[test]
fn the_parse_error_never_echoes_the_document() {
    let text =
        "pack:\n  name: x\n  secret_note: sk-abcdefghijklmnopqrstuvwxyz0123\n  version: [1, 2\n";
    let d = errors_of(text);
    let x = find(&d, DiagnosticCode::YamlSyntax, "");
    assert!(x.line.is_some());
    assert!(!format!("{d}").contains("abcdefghijklmnop"), "{d}");
}

#[test]
fn overriding_a_path_that_does_not_exist_is_an_error_in_the_override_block() {
    let text = format!(
        "{SEED}environments:\n  prod:\n    policy:\n      pii-detector:\n        actoin: block\n"
    );
    let d = errors_of(&text);
    let x = find(
        &d,
        DiagnosticCode::UnknownOverridePath,
        "environments.prod.policy.pii-detector.actoin",
    );
    assert_eq!(at(x), (19, 9));
}

#[test]
fn an_invalid_value_in_an_override_points_into_the_override() {
    let text = format!(
        "{SEED}environments:\n  prod:\n    policy:\n      pii-detector:\n        action: shout\n"
    );
    let d = errors_of(&text);
    let x = find(
        &d,
        DiagnosticCode::InvalidValue,
        "environments.prod.policy.pii-detector.action",
    );
    assert_eq!(at(x), (19, 17));
}

#[test]
fn an_undeclared_environment_is_unknown_environment() {
    let text = format!("{SEED}environments:\n  dev: {{}}\n  prod: {{}}\n");
    let p = load(&text).unwrap();
    let d = p.resolve(Some("prdo")).unwrap_err();
    let x = find(&d, DiagnosticCode::UnknownEnvironment, "environments");
    assert_eq!(x.found.as_deref(), Some("prdo"));
    assert!(x.expected.as_deref().unwrap().contains("prod"));
    assert_eq!(at(x), (15, 1));
}

#[test]
fn a_pack_without_environments_applies_everywhere() {
    let p = load(SEED).unwrap();
    assert_eq!(p.resolve(Some("prod")).unwrap(), &p.document);
}

#[test]
fn references_to_unknown_models_and_providers_are_reported() {
    let text = format!(
        "{SEED}  budget-enforcer:\n    limits:\n      - {{scope: environment, window: daily, usd: 5, on_exhausted: degrade, degrade_to: gpt-5-tiny}}\nmodels:\n  gpt-4o:\n    provider: azure\n    input_usd_per_mtok: 2.5\n    output_usd_per_mtok: 10\n"
    )
    .replace("    - pii-detector", "    - pii-detector\n    - budget-enforcer");
    let d = errors_of(&text);
    find(
        &d,
        DiagnosticCode::UnknownReference,
        "models.gpt-4o.provider",
    );
    find(
        &d,
        DiagnosticCode::UnknownReference,
        "policy.budget-enforcer.limits[0].degrade_to",
    );
}

#[test]
fn a_usd_limit_without_prices_is_a_diagnostic() {
    let text = format!("{SEED}  budget-enforcer:\n    limits:\n      - scope: environment\n        window: monthly\n        usd: 100\n")
        .replace("    - pii-detector", "    - pii-detector\n    - budget-enforcer");
    let d = errors_of(&text);
    let x = find(
        &d,
        DiagnosticCode::InvalidValue,
        "policy.budget-enforcer.limits[0].usd",
    );
    assert_eq!(at(x), (20, 14));
}

#[test]
fn invalid_semver_and_bad_types_are_invalid_value() {
    let d = errors_of(
        &SEED
            .replace("version: 2.3.0", "version: two")
            .replace("retention_days: 30", "retention_days: thirty"),
    );
    find(&d, DiagnosticCode::InvalidValue, "pack.version");
    let x = find(
        &d,
        DiagnosticCode::InvalidValue,
        "policy.audit-logger.retention_days",
    );
    assert_eq!(at(x), (12, 21));
}

#[test]
fn a_missing_pack_block_is_missing_field() {
    let d = errors_of("policies:\n  chain: []\n");
    find(&d, DiagnosticCode::MissingField, "pack");
}

#[test]
fn a_disabled_pack_loads_but_cannot_be_activated() {
    let p = load(
        &SEED
            .replace("enabled: true", "enabled: false")
            .replace("    - pii-detector\n", "")
            .replace("  pii-detector:\n    action: redact\n", ""),
    )
    .unwrap();
    let c = p.compile(None, &Default::default()).unwrap();
    let d = c.check_activatable().unwrap_err();
    find(&d, DiagnosticCode::PackDisabled, "pack.enabled");
}

#[test]
fn a_preborrow_fraction_outside_0_to_0_1_is_invalid_value_naming_the_range() {
    for bad in ["0.5", "-0.01", ".nan"] {
        let text =
            format!("{SEED}  budget-enforcer:\n    store: redis\n    preborrow_fraction: {bad}\n")
                .replace(
                    "    - pii-detector",
                    "    - pii-detector\n    - budget-enforcer",
                );
        let d = errors_of(&text);
        let x = find(
            &d,
            DiagnosticCode::InvalidValue,
            "policy.budget-enforcer.preborrow_fraction",
        );
        assert_eq!(at(x), (18, 25), "{bad}");
        assert_eq!(
            x.expected.as_deref(),
            Some("a fraction in [0, 0.1]"),
            "{bad}"
        );
    }
    let ok = format!("{SEED}  budget-enforcer:\n    store: redis\n    preborrow_fraction: 0.1\n")
        .replace(
            "    - pii-detector",
            "    - pii-detector\n    - budget-enforcer",
        );
    load(&ok).unwrap();
}

#[test]
fn a_provider_kind_must_be_known_and_anthropic_settings_need_the_anthropic_kind() {
    let with = |provider: &str| {
        SEED.replace(
            "policy:\n",
            &format!("providers:\n  p:\n    base_url: https://x.example/v1\n{provider}policy:\n"),
        )
    };
    let d = errors_of(&with("    kind: azure\n"));
    let x = find(&d, DiagnosticCode::InvalidValue, "providers.p.kind");
    assert_eq!(x.found.as_deref(), Some("azure"));
    let expected = x.expected.as_deref().unwrap();
    assert!(
        expected.contains("openai") && expected.contains("anthropic"),
        "{expected}"
    );
    let d = errors_of(&with("    anthropic_version: \"2023-06-01\"\n"));
    let x = find(
        &d,
        DiagnosticCode::InvalidValue,
        "providers.p.anthropic_version",
    );
    assert!(x.message.contains("kind: anthropic"), "{x:?}");
    let ok = load(&with(
        "    kind: anthropic\n    anthropic_version: \"2023-06-01\"\n",
    ));
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn a_provider_protocol_is_http1_or_http2_and_the_default_keeps_the_hash() {
    let with = |provider: &str| {
        SEED.replace(
            "policy:\n",
            &format!("providers:\n  p:\n    base_url: https://x.example/v1\n{provider}policy:\n"),
        )
    };
    let d = errors_of(&with("    protocol: http3\n"));
    let x = find(&d, DiagnosticCode::InvalidValue, "providers.p.protocol");
    assert_eq!(x.found.as_deref(), Some("http3"));
    let expected = x.expected.as_deref().unwrap();
    assert!(
        expected.contains("http1") && expected.contains("http2"),
        "{expected}"
    );
    let plain = load(&with("")).unwrap();
    let http1 = load(&with("    protocol: http1\n")).unwrap();
    let http2 = load(&with("    protocol: http2\n")).unwrap();
    assert_eq!(
        plain.hash, http1.hash,
        "the default, written or not, is one pack"
    );
    assert_ne!(plain.hash, http2.hash);
}

#[test]
fn a_rate_limit_may_count_requests_and_only_a_minute_window_queues() {
    let with = |limit: &str| {
        format!("pack: {{name: r, version: 1.0.0}}\npolicies: {{chain: [budget-enforcer]}}\npolicy:\n  budget-enforcer:\n    limits:\n      - {limit}\n")
    };
    assert!(load(&with(
        "{scope: key:app-1, window: minute, requests: 60, tokens: 90000, on_exhausted: queue}"
    ))
    .is_ok());
    let d = errors_of(&with(
        "{scope: environment, window: daily, requests: 60, on_exhausted: queue}",
    ));
    let x = find(
        &d,
        DiagnosticCode::InvalidValue,
        "policy.budget-enforcer.limits[0].on_exhausted",
    );
    assert!(
        x.expected.as_deref().unwrap().contains("window: minute"),
        "{x:?}"
    );
    let d = errors_of(&with(
        "{scope: environment, window: minute, on_exhausted: block}",
    ));
    let x = find(
        &d,
        DiagnosticCode::MissingField,
        "policy.budget-enforcer.limits[0].usd",
    );
    assert!(x.expected.as_deref().unwrap().contains("requests"), "{x:?}");
}

#[test]
fn deployments_and_fallbacks_are_checked_with_paths() {
    let pack = |models: &str, routing: &str| {
        format!("pack: {{name: r, version: 1.0.0}}\nproviders:\n  a: {{base_url: \"https://a.example/v1\"}}\n  b: {{base_url: \"https://b.example/v1\"}}\nmodels:\n{models}{routing}")
    };
    let ok = pack(
        "  m1:\n    deployments: [{provider: a, weight: 3}, {provider: b, upstream_model: m1-b}]\n    fallbacks: [m2]\n  m2: {provider: b}\n",
        "routing: {max_attempts: 3, deadline_ms: 5000}\n",
    );
    let loaded = load(&ok).unwrap();
    let compiled = loaded.compile(None, &Default::default()).unwrap();
    let m1 = &compiled.models["m1"];
    assert_eq!(m1.deployments.len(), 2);
    assert_eq!(m1.deployments[1].upstream_model, "m1-b");
    assert_eq!(&*m1.fallbacks, ["m2".to_owned()]);
    assert_eq!(compiled.routing.max_attempts, 3);
    let d = errors_of(&pack(
        "  m1:\n    deployments: [{provider: nope}, {provider: a, weight: 0}]\n",
        "",
    ));
    let x = find(
        &d,
        DiagnosticCode::UnknownReference,
        "models.m1.deployments[0].provider",
    );
    assert_eq!(x.found.as_deref(), Some("nope"));
    find(
        &d,
        DiagnosticCode::InvalidValue,
        "models.m1.deployments[1].weight",
    );
    let d = errors_of(&pack(
        "  m1: {provider: a, fallbacks: [m2]}\n  m2: {provider: b, fallbacks: [m3]}\n  m3: {provider: a, fallbacks: [m1, ghost]}\n",
        "",
    ));
    let x = find(&d, DiagnosticCode::InvalidValue, "models.m1.fallbacks");
    assert!(x.message.contains("m1 -> m2 -> m3 -> m1"), "{}", x.message);
    find(
        &d,
        DiagnosticCode::UnknownReference,
        "models.m3.fallbacks[1]",
    );
    let d = errors_of(&pack(
        "  m1: {provider: a, deployments: [{provider: b}]}\n",
        "routing: {backoff_ms: 500, max_backoff_ms: 100}\n",
    ));
    find(&d, DiagnosticCode::InvalidValue, "models.m1.provider");
    find(&d, DiagnosticCode::InvalidValue, "routing.max_backoff_ms");
}
