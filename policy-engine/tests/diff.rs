//! The semantic diff classifies each change as stricter, looser or neutral.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use policy_engine::diff::{diff, Effect, SemanticDiff};
use policy_engine::load;

const BASE: &str = "\
pack: {name: support, version: 1.0.0, description: Support baseline}
policies:
  chain: [audit-logger, pii-detector, budget-enforcer]
models:
  gpt-4o: {input_usd_per_mtok: 2.5, output_usd_per_mtok: 10}
  gpt-4o-mini: {input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}
policy:
  audit-logger: {retention_days: 30}
  pii-detector:
    action: log
    entities: [email, phone, credit_card]
  budget-enforcer:
    limits:
      - {scope: environment, window: monthly, usd: 100}
      - {scope: team:support, window: daily, tokens: 1000, on_exhausted: block}
environments:
  dev: {}
  prod:
    policy:
      pii-detector: {action: block}
";

fn between(old: &str, new: &str) -> SemanticDiff {
    let (a, b) = (load(old).unwrap(), load(new).unwrap());
    diff(&a.document, &b.document)
}

/// The one change of `d` at `path`, and its effect.
fn effect(d: &SemanticDiff, path: &str) -> Effect {
    let c: Vec<_> = d.changes.iter().filter(|c| c.path == path).collect();
    assert_eq!(c.len(), 1, "expected one change at {path}, got:\n{d}");
    c[0].effect
}

#[test]
fn identical_packs_have_no_changes() {
    let d = between(BASE, BASE);
    assert!(d.is_empty());
    assert_eq!(d.overall(), Effect::Neutral);
}

#[test]
fn pii_action_log_to_redact_is_stricter_and_back_is_looser() {
    let new = BASE.replace("action: log", "action: redact");
    assert_eq!(
        effect(&between(BASE, &new), "policy.pii-detector.action"),
        Effect::Stricter
    );
    assert_eq!(
        effect(&between(&new, BASE), "policy.pii-detector.action"),
        Effect::Looser
    );
}

#[test]
fn removing_an_entity_is_looser_and_adding_one_is_stricter() {
    let fewer = BASE.replace(
        "entities: [email, phone, credit_card]",
        "entities: [email, phone]",
    );
    assert_eq!(
        effect(
            &between(BASE, &fewer),
            "policy.pii-detector.entities.credit_card"
        ),
        Effect::Looser
    );
    assert_eq!(
        effect(
            &between(&fewer, BASE),
            "policy.pii-detector.entities.credit_card"
        ),
        Effect::Stricter
    );
}

#[test]
fn turning_obfuscated_emails_off_is_looser_and_back_on_stricter() {
    let off = BASE.replace(
        "    entities: [email, phone, credit_card]",
        "    entities: [email, phone, credit_card]\n    obfuscated_emails: false",
    );
    let path = "policy.pii-detector.obfuscated_emails";
    assert_eq!(effect(&between(BASE, &off), path), Effect::Looser);
    assert_eq!(effect(&between(&off, BASE), path), Effect::Stricter);
    let on = off.replace("obfuscated_emails: false", "obfuscated_emails: true");
    assert!(
        between(BASE, &on).is_empty(),
        "the default written out is no change"
    );
}

#[test]
fn reordering_entities_is_no_change() {
    let reordered = BASE.replace(
        "entities: [email, phone, credit_card]",
        "entities: [credit_card, email, phone]",
    );
    assert!(between(BASE, &reordered).is_empty());
}

#[test]
fn raising_a_budget_is_looser_and_lowering_it_stricter() {
    let raised = BASE.replace("usd: 100}", "usd: 5000}");
    let d = between(BASE, &raised);
    assert_eq!(
        effect(&d, "policy.budget-enforcer.limits.environment/monthly.usd"),
        Effect::Looser
    );
    assert_eq!(d.overall(), Effect::Looser);
    assert_eq!(
        effect(
            &between(&raised, BASE),
            "policy.budget-enforcer.limits.environment/monthly.usd"
        ),
        Effect::Stricter
    );
}

#[test]
fn removing_a_limit_is_one_looser_change() {
    let fewer = BASE.replace(
        "      - {scope: team:support, window: daily, tokens: 1000, on_exhausted: block}\n",
        "",
    );
    let d = between(BASE, &fewer);
    assert_eq!(d.summary.changes, 1, "{d}");
    assert_eq!(
        effect(&d, "policy.budget-enforcer.limits.team:support/daily"),
        Effect::Looser
    );
}

#[test]
fn block_to_alert_on_exhaustion_is_looser() {
    let alert = BASE.replace("on_exhausted: block", "on_exhausted: alert");
    assert_eq!(
        effect(
            &between(BASE, &alert),
            "policy.budget-enforcer.limits.team:support/daily.on_exhausted"
        ),
        Effect::Looser
    );
}

#[test]
fn shorter_retention_is_looser() {
    let shorter = BASE.replace("retention_days: 30", "retention_days: 7");
    assert_eq!(
        effect(
            &between(BASE, &shorter),
            "policy.audit-logger.retention_days"
        ),
        Effect::Looser
    );
}

#[test]
fn a_policy_dropped_from_the_chain_is_looser() {
    let dropped = BASE.replace(
        "chain: [audit-logger, pii-detector, budget-enforcer]",
        "chain: [audit-logger, pii-detector]",
    );
    let d = between(BASE, &dropped);
    assert_eq!(effect(&d, "policies.chain.budget-enforcer"), Effect::Looser);
}

#[test]
fn a_description_edit_is_neutral() {
    let d = between(
        BASE,
        &BASE.replace("Support baseline", "Support baseline v2"),
    );
    assert_eq!(effect(&d, "pack.description"), Effect::Neutral);
    assert_eq!(d.overall(), Effect::Neutral);
    assert_eq!(
        (d.summary.stricter, d.summary.looser, d.summary.neutral),
        (0, 0, 1)
    );
}

#[test]
fn a_model_added_to_the_allow_list_is_looser() {
    let more = BASE.replace(
        "models:\n",
        "models:\n  o1: {input_usd_per_mtok: 15, output_usd_per_mtok: 60}\n",
    );
    let d = between(BASE, &more);
    assert_eq!(d.summary.changes, 1, "{d}");
    assert_eq!(effect(&d, "models.o1"), Effect::Looser);
}

#[test]
fn one_pack_in_two_environments() {
    let p = load(BASE).unwrap();
    let d = diff(
        p.resolve(Some("dev")).unwrap(),
        p.resolve(Some("prod")).unwrap(),
    );
    assert_eq!(effect(&d, "policy.pii-detector.action"), Effect::Stricter);
    let text = d.to_string();
    assert!(
        text.ends_with("1 change: 1 stricter, 0 looser, 0 neutral (overall: stricter)"),
        "{text}"
    );
}

#[test]
fn raising_the_preborrow_fraction_is_looser_and_lowering_it_is_stricter() {
    // Absent is the default 0: the canonical form leaves it out.
    let on = BASE.replace(
        "  budget-enforcer:\n",
        "  budget-enforcer:\n    preborrow_fraction: 0.01\n",
    );
    let more = on.replace("preborrow_fraction: 0.01", "preborrow_fraction: 0.05");
    let path = "policy.budget-enforcer.preborrow_fraction";
    assert_eq!(effect(&between(BASE, &on), path), Effect::Looser);
    assert_eq!(effect(&between(&on, &more), path), Effect::Looser);
    assert_eq!(effect(&between(&more, &on), path), Effect::Stricter);
    assert_eq!(effect(&between(&on, BASE), path), Effect::Stricter);
    let explicit_zero = on.replace("preborrow_fraction: 0.01", "preborrow_fraction: 0");
    assert!(between(BASE, &explicit_zero).is_empty());
}

#[test]
fn rate_limits_diff_like_budgets_and_queueing_sits_between_degrade_and_block() {
    let rpm = BASE.replace(
        "      - {scope: team:support, window: daily, tokens: 1000, on_exhausted: block}\n",
        "      - {scope: team:support, window: daily, tokens: 1000, on_exhausted: block}\n      - {scope: key:app-1, window: minute, requests: 60, on_exhausted: block}\n",
    );
    let d = between(BASE, &rpm);
    assert_eq!(
        effect(&d, "policy.budget-enforcer.limits.key:app-1/minute"),
        Effect::Stricter
    );
    let more = rpm.replace("requests: 60", "requests: 120");
    assert_eq!(
        effect(
            &between(&rpm, &more),
            "policy.budget-enforcer.limits.key:app-1/minute.requests"
        ),
        Effect::Looser
    );
    let queue = rpm.replace(
        "requests: 60, on_exhausted: block",
        "requests: 60, on_exhausted: queue",
    );
    assert_eq!(
        effect(
            &between(&rpm, &queue),
            "policy.budget-enforcer.limits.key:app-1/minute.on_exhausted"
        ),
        Effect::Looser
    );
    let waits = queue.replace(
        "  budget-enforcer:\n",
        "  budget-enforcer:\n    max_queue_ms: 5000\n",
    );
    assert_eq!(
        effect(
            &between(&queue, &waits),
            "policy.budget-enforcer.max_queue_ms"
        ),
        Effect::Looser
    );
}

#[test]
fn a_deployment_removed_is_stricter_and_fallbacks_weights_and_retries_are_neutral() {
    let base = "pack: {name: r, version: 1.0.0}\nproviders:\n  a: {base_url: \"https://a.example/v1\"}\n  b: {base_url: \"https://b.example/v1\"}\nmodels:\n  m1:\n    deployments: [{provider: a, weight: 3}, {provider: b}]\n  m2: {provider: b}\n";
    let one = base.replace(
        "[{provider: a, weight: 3}, {provider: b}]",
        "[{provider: a, weight: 3}]",
    );
    assert_eq!(
        effect(&between(base, &one), "models.m1.deployments.b/m1"),
        Effect::Stricter
    );
    assert_eq!(
        effect(&between(&one, base), "models.m1.deployments.b/m1"),
        Effect::Looser
    );
    let weights = base.replace("weight: 3", "weight: 1");
    assert_eq!(
        effect(
            &between(base, &weights),
            "models.m1.deployments.a/m1.weight"
        ),
        Effect::Neutral
    );
    let reordered = base.replace(
        "[{provider: a, weight: 3}, {provider: b}]",
        "[{provider: b}, {provider: a, weight: 3}]",
    );
    assert!(
        between(base, &reordered).is_empty(),
        "reordering deployments is no change"
    );
    let fallback = base.replace(
        "  m2: {provider: b}\n",
        "  m2: {provider: b, fallbacks: [m1]}\n",
    );
    let d = between(base, &fallback);
    assert!(d.changes.iter().all(|c| c.effect == Effect::Neutral), "{d}");
    let retries = format!("{base}routing: {{max_attempts: 4}}\n");
    let d = between(base, &retries);
    assert!(
        !d.is_empty() && d.changes.iter().all(|c| c.effect == Effect::Neutral),
        "{d}"
    );
}
