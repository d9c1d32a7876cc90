//! The content hash is a pack's identity. Invariants, checked on random packs:
//! - *stability*: comments, key order, whitespace, flow vs block style and writing a default
//!   explicitly never change it;
//! - *sensitivity*: any change of meaning (one setting altered) always changes it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use proptest::prelude::*;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Spec {
    description: String,
    retention_days: u32,
    action: &'static str,
    entities: Vec<&'static str>,
    with_budget: bool,
    usd: u32,
    price: u32,
    prod_action: &'static str,
    test_text: String,
}

const ACTIONS: [&str; 4] = ["redact", "block", "log", "escalate"];
const ENTITIES: [&str; 5] = ["email", "phone", "credit_card", "ssn", "iban"];

fn spec() -> impl Strategy<Value = Spec> {
    (
        "[a-z ]{0,20}",
        1u32..400,
        0usize..4,
        proptest::sample::subsequence(ENTITIES.to_vec(), 1..=5),
        any::<bool>(),
        1u32..10_000,
        1u32..100,
        0usize..4,
        "[a-z]{1,12}",
    )
        .prop_map(|(d, r, a, e, b, usd, price, pa, t)| Spec {
            description: d,
            retention_days: r,
            action: ACTIONS[a],
            entities: e,
            with_budget: b,
            usd,
            price,
            prod_action: ACTIONS[pa],
            test_text: t,
        })
}

/// The pack as a JSON tree; `explicit` also writes fields whose value is the default.
fn tree(s: &Spec, explicit: bool) -> Value {
    let mut chain = vec!["audit-logger", "pii-detector"];
    let mut policy = json!({
        "audit-logger": { "retention_days": s.retention_days },
        "pii-detector": { "action": s.action, "entities": s.entities },
    });
    if s.with_budget {
        chain.push("budget-enforcer");
        policy["budget-enforcer"] =
            json!({ "limits": [{ "scope": "environment", "window": "monthly", "usd": s.usd }] });
    }
    if explicit {
        policy["audit-logger"]["on_queue_full"] = json!("block");
        policy["pii-detector"]["scan"] = json!(["request", "response"]);
        policy["pii-detector"]["redaction"] = json!("placeholder");
    }
    let mut pack = json!({ "name": "support", "version": "1.2.3", "description": s.description });
    if explicit {
        pack["enabled"] = json!(true);
    }
    json!({
        "pack": pack,
        "policies": { "chain": chain },
        "policy": policy,
        "models": { "gpt-4o": { "input_usd_per_mtok": s.price, "output_usd_per_mtok": s.price * 4 } },
        "environments": { "prod": { "policy": { "pii-detector": { "action": s.prod_action } } }, "dev": {} },
        "tests": [{ "name": "t", "input": s.test_text, "expect": "allow" }],
    })
}

/// Block-style YAML with every mapping's keys reversed, comments and blank lines sprinkled in.
fn yaml_style(v: &Value) -> String {
    fn reversed(v: &Value) -> serde_yaml::Value {
        match v {
            Value::Object(m) => {
                let mut out = serde_yaml::Mapping::new();
                for (k, child) in m.iter().rev() {
                    out.insert(serde_yaml::Value::from(k.as_str()), reversed(child));
                }
                serde_yaml::Value::Mapping(out)
            }
            Value::Array(a) => serde_yaml::Value::Sequence(a.iter().map(reversed).collect()),
            other => serde_yaml::to_value(other).unwrap(),
        }
    }
    let text = serde_yaml::to_string(&reversed(v)).unwrap();
    let mut out = String::from("# a comment before everything\n\n");
    for line in text.lines() {
        out.push_str(line);
        if line.ends_with(':') {
            out.push_str("   # trailing comment");
        }
        out.push_str("\n\n");
    }
    out
}

fn hash_of(text: &str) -> policy_engine::PackHash {
    match policy_engine::load(text) {
        Ok(p) => p.hash,
        Err(d) => panic!("pack did not load:\n{d}\n---\n{text}"),
    }
}

/// One change of meaning, chosen by `which`.
fn mutate(s: &Spec, which: u8) -> Spec {
    let mut m = s.clone();
    match which % 8 {
        0 => m.retention_days += 1,
        1 => m.action = ACTIONS[(ACTIONS.iter().position(|a| *a == s.action).unwrap() + 1) % 4],
        2 => {
            if m.entities.len() > 1 {
                m.entities.pop();
            } else {
                m.entities = vec!["email", "ssn"]
                    .into_iter()
                    .filter(|e| *e != s.entities[0])
                    .take(1)
                    .collect();
            }
        }
        3 => m.with_budget = !m.with_budget,
        4 => m.price += 1,
        5 => m.description.push('x'),
        6 => {
            m.prod_action =
                ACTIONS[(ACTIONS.iter().position(|a| *a == s.prod_action).unwrap() + 1) % 4]
        }
        _ => m.test_text.push('y'),
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn formatting_never_changes_the_hash(s in spec()) {
        let canonical = hash_of(&serde_json::to_string(&tree(&s, false)).unwrap());
        prop_assert_eq!(canonical, hash_of(&yaml_style(&tree(&s, false))));
        prop_assert_eq!(canonical, hash_of(&serde_json::to_string_pretty(&tree(&s, true)).unwrap()));
        prop_assert_eq!(canonical, hash_of(&yaml_style(&tree(&s, true))));
    }

    #[test]
    fn any_change_of_meaning_changes_the_hash(s in spec(), which in any::<u8>()) {
        let m = mutate(&s, which);
        prop_assert_ne!(hash_of(&yaml_style(&tree(&s, false))), hash_of(&yaml_style(&tree(&m, false))));
    }
}

#[test]
fn the_sample_pack_hash_is_stable_across_runs() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/support.yaml"
    ))
    .unwrap();
    let a = hash_of(&text);
    let b = hash_of(&text.replace("# order of execution", "# a different comment"));
    assert_eq!(a, b);
    assert_eq!(a.to_string().len(), 64);
}

/// Regression: adding `preborrow_fraction` to format 1 must not change the hash of packs that do
/// not use it (a registry stores hashes; gateways recompute them and compare).
#[test]
fn a_pack_without_preborrow_fraction_keeps_its_hash_and_environments_may_override_it() {
    let base = "pack: {name: b, version: 1.0.0}\npolicies: {chain: [budget-enforcer]}\npolicy:\n  budget-enforcer:\n    store: redis\n    limits:\n      - {scope: environment, window: daily, tokens: 1000}\n";
    let p = policy_engine::load(base).unwrap();
    let canonical = policy_engine::canonical::canonical_json(&p.document, &Default::default());
    assert!(!canonical.contains("preborrow_fraction"), "{canonical}");
    let zero = base.replace(
        "store: redis\n",
        "store: redis\n    preborrow_fraction: 0\n",
    );
    assert_eq!(hash_of(base), hash_of(&zero));
    let on = base.replace(
        "store: redis\n",
        "store: redis\n    preborrow_fraction: 0.02\n",
    );
    assert_ne!(hash_of(base), hash_of(&on));
    // Set in one environment only: the path exists in the defaults-filled base.
    let prod = format!("{base}environments:\n  dev: {{}}\n  prod:\n    policy:\n      budget-enforcer:\n        preborrow_fraction: 0.02\n");
    let loaded = policy_engine::load(&prod).unwrap();
    let b = |env| {
        loaded
            .resolve(Some(env))
            .unwrap()
            .policy
            .budget_enforcer
            .as_ref()
            .unwrap()
            .preborrow_fraction
    };
    assert_eq!((b("dev"), b("prod")), (0.0, 0.02));
}

/// Regression: provider kinds, `anthropic_version`, request limits and `max_queue_ms` came after
/// packs were hashed; a pack that does not use them keeps the hash the release before them
/// computed (pinned), and one that does gets a different one.
#[test]
fn packs_without_the_later_settings_keep_the_hash_they_had() {
    let pack = "pack: {name: h, version: 1.0.0, enabled: true}
policies:
  chain: [audit-logger, pii-detector, budget-enforcer]
providers:
  openai: {base_url: \"https://api.openai.com/v1\", api_key_env: OPENAI_API_KEY}
models:
  gpt-4o-mini: {input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}
policy:
  audit-logger: {retention_days: 30}
  pii-detector: {action: redact}
  budget-enforcer:
    limits:
      - {scope: environment, window: daily, usd: 10, on_exhausted: block}
";
    let before = "c2dd71b09d422d436829052552e190879983f085cd377ecfe768245687f227ed";
    assert_eq!(hash_of(pack).to_string(), before);
    let explicit = pack
        .replace(
            "api_key_env: OPENAI_API_KEY}",
            "api_key_env: OPENAI_API_KEY, kind: openai}",
        )
        .replace(
            "  budget-enforcer:\n",
            "  budget-enforcer:\n    max_queue_ms: 2000\n",
        );
    assert_eq!(
        hash_of(&explicit).to_string(),
        before,
        "defaults written out"
    );
    for changed in [
        pack.replace(
            "api_key_env: OPENAI_API_KEY}",
            "api_key_env: OPENAI_API_KEY, kind: anthropic}",
        ),
        pack.replace("usd: 10,", "usd: 10, requests: 100,"),
        pack.replace(
            "  budget-enforcer:\n",
            "  budget-enforcer:\n    max_queue_ms: 500\n",
        ),
    ] {
        assert_ne!(hash_of(&changed).to_string(), before, "{changed}");
    }
}
