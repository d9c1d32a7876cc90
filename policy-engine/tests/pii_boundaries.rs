//! Boundaries over the whole punctuation space: for every built-in entity, generated valid
//! values, and every pair of characters drawn from the stated boundary set (ASCII punctuation
//! other than the glue characters, Unicode opening and closing punctuation and quotes, CJK
//! punctuation, whitespace of every kind, the text's start and end) — plus Markdown and HTML
//! wrappers — the value is found with its exact span, redacting twice equals redacting once,
//! and streaming the text split at every byte equals redacting it whole. Obfuscated e-mail
//! addresses (`john [at] example [dot] com`) are values of `email` here too.
//!
//! The stated rule (`scanner::glued_before`): letters, digits and `_` glue a value to a word;
//! so do `]` before and `[` after it (a placeholder's edges) and a run of four or more `*`
//! (a mask). Nothing else does; runs of one to three `*` or `_` at a word's edge are Markdown
//! emphasis. Regression: `(4111 1111 1111 1111)`, `*4111 1111 1111 1111*`, `ssn: (123-45-6789)`,
//! `(203.0.113.7)`, `**ann@example.com**` and `10.1.2.3/24` went unredacted.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod corpus;

use corpus::Rng;
use policy_engine::pack::PiiDetectorConfig;
use policy_engine::pii::{PiiDetector, RedactionSession};

/// Characters that may stand right before or after any value (see the module docs).
const BOUNDARY: &[&str] = &[
    "", " ", "\n", "\t", "\r\n", "\u{A0}", "\u{3000}", "(", ")", "{", "}", "<", ">", "\"", "'",
    "`", "!", "?", ",", ";", "|", "=", "~", "^", "&", "%", "$", "#", "«", "»", "“", "”", "‘", "’",
    "「", "」", "【", "】", "（", "）", "《", "》", "、", "。", "，", "：", "*", "**", "***", "_",
    "__",
];

/// Wrappers around a value: Markdown, HTML, table cells.
const WRAPPERS: &[(&str, &str)] = &[
    ("*", "*"),
    ("**", "**"),
    ("***", "***"),
    ("_", "_"),
    ("__", "__"),
    ("`", "`"),
    ("[", "](https://example.org/x)"),
    ("| ", " |"),
    ("|", "|"),
    ("<td>", "</td>"),
    ("<b>", "</b>"),
    ("(", ")"),
    ("[", "]"),
    ("> ", "\n"),
    ("- ", "\n"),
    ("\"", "\""),
];

/// Characters that may not follow a value of this entity without changing what it is: a `.`,
/// `:` or `-` followed by more of the same kind continues an address or a number.
fn allowed_after(entity: &str, after: &str) -> bool {
    !(matches!(entity, "ip_address" | "phone") && after.starts_with(['.', ':', '-', '/']))
}

/// `%` is part of an e-mail address's local part; a number right after a currency sign or `#`
/// is a price or an id (`$4111…`, `#555-0134`), not a card or a phone number; the fullwidth
/// colon normalises to `:`, which continues an IPv6 address (`：2001:db8::1` reads `::2001…`).
fn allowed_before(entity: &str, before: &str) -> bool {
    let exception = matches!(
        (entity, before),
        ("email", "%")
            | ("ip_address", "：")
            | ("credit_card" | "phone" | "ssn" | "ip_address", "$" | "#")
    );
    !exception
}

/// Every entity's values, obfuscated e-mail addresses among them.
fn generators() -> impl Iterator<Item = &'static (&'static str, fn(&mut Rng) -> String)> {
    corpus::ENTITY_GENERATORS
        .iter()
        .chain(corpus::EXTRA_GENERATORS)
}

fn detector() -> PiiDetector {
    PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap()
}

fn check(det: &PiiDetector, entity: &str, value: &str, before: &str, after: &str) -> Vec<String> {
    let text = format!("see {before}{value}{after} now");
    let mut errors = Vec::new();
    let start = 4 + before.len();
    let spans: Vec<(String, usize, usize)> = det
        .find(&text)
        .iter()
        .map(|f| (det.entity_name(f.entity).to_owned(), f.start, f.end))
        .collect();
    if !spans.contains(&(entity.to_owned(), start, start + value.len())) {
        errors.push(format!(
            "{entity} {before:?}..{after:?}: {text:?}: found {spans:?}"
        ));
    }
    let once = det.redact(&text, &mut RedactionSession::new()).into_owned();
    let twice = det.redact(&once, &mut RedactionSession::new()).into_owned();
    if once != twice {
        errors.push(format!(
            "{entity} {before:?}..{after:?}: not idempotent: {once:?} -> {twice:?}"
        ));
    }
    errors
}

#[test]
fn every_value_is_found_between_every_pair_of_boundary_characters() {
    let det = detector();
    let mut rng = Rng::new(
        std::env::var("PII_BOUNDARY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(18),
    );
    let mut errors = Vec::new();
    for &(entity, generate) in generators() {
        for _ in 0..3 {
            let value = generate(&mut rng);
            for before in BOUNDARY {
                for after in BOUNDARY {
                    if allowed_after(entity, after) && allowed_before(entity, before) {
                        errors.extend(check(&det, entity, &value, before, after));
                    }
                }
            }
            for (open, close) in WRAPPERS {
                errors.extend(check(&det, entity, &value, open, close));
            }
        }
    }
    let mut kinds: Vec<String> = errors
        .iter()
        .map(|e| e.split(':').next().unwrap_or("").to_owned())
        .collect();
    kinds.sort();
    kinds.dedup();
    assert!(
        errors.is_empty(),
        "{} failures of {} kinds: {:#?}\nfirst: {:#?}",
        errors.len(),
        kinds.len(),
        kinds,
        &errors[..errors.len().min(5)]
    );
}

#[test]
fn the_stream_split_at_every_byte_equals_whole_text_redaction_at_the_edges() {
    let det = detector();
    let mut rng = Rng::new(19);
    for &(_, generate) in generators() {
        let value = generate(&mut rng);
        for (open, close) in WRAPPERS {
            let text = format!("a {open}{value}{close} b");
            let whole = det.redact(&text, &mut RedactionSession::new()).into_owned();
            for cut in 1..text.len() {
                if !text.is_char_boundary(cut) {
                    continue;
                }
                let mut s = RedactionSession::new();
                let mut st = det.stream();
                let mut out = String::new();
                st.push(&text[..cut], &mut s, &mut out);
                st.push(&text[cut..], &mut s, &mut out);
                st.finish(&mut s, &mut out);
                assert_eq!(out, whole, "{text:?} split at {cut}");
            }
        }
    }
}

/// A `*` run one space away from another run that stands alone is the tail of a masked value
/// (`**** **** *`), glued like the digits it replaced; next to an emphasis that touches a word
/// (`*a* *b*`) it is Markdown, and the value is found.
#[test]
fn mask_groups_glue_and_neighbouring_emphasis_does_not() {
    let det = detector();
    let found = |text: &str| -> Vec<&str> {
        det.find(text)
            .iter()
            .map(|f| det.entity_name(f.entity))
            .collect()
    };
    assert_eq!(
        found("paid **** **** *+49 30 8567051 today"),
        Vec::<&str>::new()
    );
    assert_eq!(found("call +49 30 8567051* **** now"), Vec::<&str>::new());
    assert_eq!(found("*note* *4111 1111 1111 1111* *end*"), ["credit_card"]);
    assert_eq!(found("**a** **+49 30 8567051**"), ["phone"]);
}
