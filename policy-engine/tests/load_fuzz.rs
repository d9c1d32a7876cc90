//! The pack loader on hostile input: arbitrary text, and a valid pack with random bytes
//! deleted, inserted or replaced. Invariant: `load` returns a pack or diagnostics — never a
//! panic — every diagnostic says what is wrong, and a pack that loads hashes the same twice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use policy_engine::load;
use proptest::prelude::*;

const VALID: &str = "\
pack: {name: fuzz, version: 1.0.0, enabled: true}
policies:
  chain: [audit-logger, pii-detector, budget-enforcer]
providers:
  openai: {base_url: 'https://api.example.test/v1', api_key_env: OPENAI_API_KEY}
models:
  gpt-4o-mini: {input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}
policy:
  audit-logger: {retention_days: 30}
  pii-detector:
    action: redact
    scan: [request, response]
    custom:
      - {name: ticket, regex: 'TKT-[0-9]{6}'}
      - {name: project, terms: [Project Falcon]}
  budget-enforcer:
    limits:
      - {scope: environment, window: daily, usd: 5, on_exhausted: block}
      - {scope: 'team:support', window: monthly, tokens: 100000, on_exhausted: block}
environments:
  prod:
    policy:
      pii-detector: {action: block}
tests:
  - {name: mail, input: 'mail ann@example.com', expect: redact, entities: [email]}
";

/// Tokens a pack is made of, so random text reaches past the YAML parser into validation.
const TOKENS: &[&str] = &[
    "pack:",
    "policies:",
    "chain:",
    "policy:",
    "providers:",
    "models:",
    "environments:",
    "tests:",
    "name:",
    "version:",
    "enabled:",
    "action:",
    "scan:",
    "limits:",
    "- ",
    "  ",
    "\n",
    ": ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    "\"",
    "&a ",
    "*a",
    "!!str ",
    "~",
    "1.0.0",
    "true",
    "-1",
    "1e400",
    "redact",
    "block",
    "pii-detector",
    "audit-logger",
    "budget-enforcer",
    "\u{feff}",
    "\\ud800",
    "é",
    "#",
    "---\n",
    "...\n",
];

fn check(text: &str) -> Result<(), TestCaseError> {
    match load(text) {
        Ok(p) => {
            let again = load(text).unwrap();
            prop_assert_eq!(p.hash, again.hash);
        }
        Err(d) => {
            prop_assert!(d.iter().next().is_some(), "refused without a diagnostic");
            for x in d.iter() {
                prop_assert!(!x.message.trim().is_empty(), "empty message at {}", x.path);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        check(&text)?;
    }

    #[test]
    fn pack_shaped_token_soup_never_panics(picks in proptest::collection::vec(0..TOKENS.len(), 0..120)) {
        let text: String = picks.iter().map(|&i| TOKENS[i]).collect();
        check(&text)?;
    }

    #[test]
    fn a_damaged_valid_pack_never_panics(
        edits in proptest::collection::vec(
            (any::<proptest::sample::Index>(), 0usize..8, prop_oneof![Just(None), any::<char>().prop_map(Some)]),
            1..6,
        )
    ) {
        let mut text = VALID.to_owned();
        for (at, len, with) in edits {
            let mut start = at.index(text.len() + 1);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            let with = with.map(String::from).unwrap_or_default();
            text.replace_range(start..end, &with);
        }
        check(&text)?;
    }
}

#[test]
fn the_undamaged_pack_loads() {
    let p = load(VALID).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.document.pack.name, "fuzz");
}

#[test]
fn a_mapping_where_a_word_belongs_says_what_is_expected() {
    let d = load(&VALID.replace("expect: redact", "expect: {action: redact}")).unwrap_err();
    let x = d
        .iter()
        .find(|x| x.path == "tests[0].expect")
        .unwrap_or_else(|| panic!("{d}"));
    let expected = x.expected.as_deref().unwrap_or_default();
    assert!(!expected.contains("Tagged"), "serde's words leak: {d}");
    for word in ["allow", "redact", "block", "escalate", "log"] {
        assert!(expected.contains(word), "{d}");
    }
}

#[test]
fn an_alias_bomb_is_refused() {
    // Nine levels of nine aliases: 387 million strings if expanded.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        let list = [prev.as_str(); 9].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{list}]\n"));
    }
    // Expanding it would take minutes and gigabytes; the loader refuses without expanding.
    assert!(load(&text).is_err());
}
