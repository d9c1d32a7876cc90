//! Properties of the PII engine that must hold for every input.
//!
//! - Streaming equals whole-text redaction: for any text and any split into chunks (on char
//!   boundaries), the concatenated output of `StreamRedactor` equals `PiiDetector::redact` of
//!   the whole text, with the same session counts.
//! - The stream holds back at most `max_holdback_bytes()` of text without invisible characters.
//! - Redaction is idempotent: nothing is found in redacted text.
//! - `find` never panics and returns sorted, non-overlapping spans on char boundaries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod corpus;

use corpus::{
    generate, hard_negative, obfuscated_email, obfuscated_negative, Rng, ENTITY_GENERATORS,
};
use policy_engine::pack::{CustomEntity, PiiDetectorConfig, RedactionStyle, Validator};
use policy_engine::pii::{PiiDetector, RedactionSession};
use proptest::prelude::*;

/// The built-ins alone: the smallest look-ahead, so the tightest test of the scanner's bounds.
fn builtin_detector(style: RedactionStyle) -> PiiDetector {
    let cfg = PiiDetectorConfig {
        redaction: style,
        ..Default::default()
    };
    PiiDetector::compile(&cfg, Some(b"stream-test-key")).unwrap()
}

fn detector(style: RedactionStyle) -> PiiDetector {
    let mut emp = CustomEntity {
        name: "employee_id".into(),
        regex: Some(r"\bE\d{6}\b".into()),
        terms: None,
        validator: None,
        context: Some(vec!["employee".into()]),
    };
    let acct = CustomEntity {
        name: "account".into(),
        regex: Some(r"\bACC-\d{8,12}\b".into()),
        terms: None,
        validator: Some(Validator::Luhn),
        context: None,
    };
    let terms = CustomEntity {
        name: "codename".into(),
        regex: None,
        terms: Some(vec![
            "Project Falcon".into(),
            "bluebird".into(),
            "Müller".into(),
            "Straße".into(),
        ]),
        validator: None,
        context: None,
    };
    emp.context = Some(vec!["employee".into(), "staff".into()]);
    let cfg = PiiDetectorConfig {
        redaction: style,
        custom: vec![emp, acct, terms],
        ..Default::default()
    };
    PiiDetector::compile(&cfg, Some(b"stream-test-key")).unwrap()
}

/// A text of corpus sentences, entities, hard negatives, custom-entity bait, a bare phone
/// number after a phone word, and obfuscated e-mail addresses and their look-alikes (drawn
/// from a second generator, so the texts of the seeds kept below stay what they were around
/// them).
fn text_from(seed: u64, parts: usize) -> String {
    let mut rng = Rng::new(seed);
    let mut obfuscated = Rng::new(seed ^ 0x0BF5_CA7E);
    let mut out = String::new();
    for s in generate(seed, parts) {
        out.push_str(&s.text);
        match rng.below(6) {
            0 => out.push_str(" call 2025550143 employee E123456 "),
            1 => out.push_str(
                " ACC-79927398713 and bluebird, Project  Falcon, project falcon, MÜLLER, STRASSE ",
            ),
            2 => out.push_str(&hard_negative(&mut rng)),
            3 => out.push_str(&(ENTITY_GENERATORS[rng.below(7)].1)(&mut rng)),
            4 => out.push(' '),
            _ => {
                out.push(' ');
                if obfuscated.chance(70) {
                    out.push_str(&obfuscated_email(&mut obfuscated));
                } else {
                    out.push_str(&obfuscated_negative(&mut obfuscated));
                }
                out.push(' ');
            }
        }
    }
    out
}

/// Where the stream's hold-back starts on prose without triggers (see the property below):
/// the last word `w0`, or the word before it when `w0` may still become an at marker, or the
/// word before a bare `at` among the two words before `w0` — words separated by one to three
/// blanks, the earlier word ending in a letter or digit.
fn prose_hold_start(received: &str) -> usize {
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut end = received.len();
    while words.len() < 4 {
        let start = received[..end]
            .rfind(|c: char| c.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        words.push((start, end));
        let blanks = received[..start]
            .bytes()
            .rev()
            .take_while(|&b| b == b' ' || b == b'\t')
            .count()
            .min(3);
        let k = start - blanks;
        if blanks == 0 || k == 0 || received.as_bytes()[k - 1].is_ascii_whitespace() {
            break;
        }
        end = k;
    }
    let word = |i: usize| &received[words[i].0..words[i].1];
    let ends_alnum = |i: usize| {
        word(i)
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
    };
    let w0 = word(0).to_ascii_lowercase();
    let unbracketed = w0.strip_prefix(['(', '[', '{', '<']).unwrap_or(&w0);
    let mut start = words[0].0;
    if unbracketed.len() <= 2 && "at".starts_with(unbracketed) && words.len() > 1 && ends_alnum(1) {
        start = start.min(words[1].0);
    }
    for i in 1..=2 {
        if i + 1 < words.len() && word(i).eq_ignore_ascii_case("at") && ends_alnum(i + 1) {
            start = start.min(words[i + 1].0);
        }
    }
    start
}

/// Split `text` at the given fractions (snapped to char boundaries).
fn chunks(text: &str, cuts: &[usize]) -> Vec<String> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
    points.push(0);
    points.push(text.len());
    points.sort_unstable();
    for p in &mut points {
        while !text.is_char_boundary(*p) {
            *p -= 1;
        }
    }
    points
        .windows(2)
        .map(|w| text[w[0]..w[1]].to_owned())
        .collect()
}

fn streamed(det: &PiiDetector, parts: &[String]) -> (String, RedactionSession, usize) {
    let mut session = RedactionSession::new();
    let mut out = String::new();
    let mut max_held = 0;
    let mut s = det.stream();
    for p in parts {
        s.push(p, &mut session, &mut out);
        max_held = max_held.max(s.held_back());
    }
    s.finish(&mut session, &mut out);
    (out, session, max_held)
}

/// 300 cases per property, unless `PROPTEST_CASES` asks for another number: CI runs the
/// default on a fixed `PROPTEST_RNG_SEED`; exploring other seeds with more cases is a developer
/// step (`ProptestConfig::with_cases` alone would ignore the variable).
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 300;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn stream_output_equals_whole_text_redaction(
        seed in any::<u64>(),
        parts in 1usize..12,
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        style in prop_oneof![Just(RedactionStyle::Placeholder), Just(RedactionStyle::Mask), Just(RedactionStyle::Hash)],
        with_custom in any::<bool>(),
    ) {
        let det = if with_custom { detector(style) } else { builtin_detector(style) };
        let text = text_from(seed, parts);
        let mut whole_session = RedactionSession::new();
        let whole = det.redact(&text, &mut whole_session).into_owned();
        let (out, session, _) = streamed(&det, &chunks(&text, &cuts));
        if out != whole {
            let i = out.bytes().zip(whole.bytes()).position(|(a, b)| a != b).unwrap_or(0);
            let (lo, hi) = (i.saturating_sub(80), i + 80);
            let at = |s: &str| s.get(lo..hi.min(s.len())).unwrap_or("?").to_owned();
            prop_assert!(false, "differ at {i}:\nstream {:?}\nwhole  {:?}", at(&out), at(&whole));
        }
        prop_assert_eq!(session.counts().collect::<Vec<_>>(), whole_session.counts().collect::<Vec<_>>());
    }

    #[test]
    fn stream_in_single_characters_equals_whole_text_redaction(seed in any::<u64>()) {
        let det = detector(RedactionStyle::Placeholder);
        let text = text_from(seed, 3);
        let parts: Vec<String> = text.chars().map(String::from).collect();
        let whole = det.redact(&text, &mut RedactionSession::new()).into_owned();
        prop_assert_eq!(streamed(&det, &parts).0, whole);
    }

    #[test]
    fn stream_holds_back_at_most_the_stated_bound(
        seed in any::<u64>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let det = detector(RedactionStyle::Placeholder);
        let text: String = text_from(seed, 8).chars().filter(|c| !matches!(c, '\u{200B}'..='\u{200F}' | '\u{FEFF}' | '\u{AD}' | '\u{2060}'..='\u{2064}')).collect();
        let parts = chunks(&text, &cuts);
        let largest_chunk = parts.iter().map(String::len).max().unwrap_or(0);
        let (_, _, max_held) = streamed(&det, &parts);
        // After a push the redactor holds what it cannot release yet; a chunk smaller than
        // the look-ahead is held whole until enough text follows.
        prop_assert!(max_held <= det.max_holdback_bytes().max(largest_chunk.min(det.max_holdback_bytes())),
            "held {max_held} > bound {}", det.max_holdback_bytes());
    }

    /// The release rule on text without triggers (no digit, `@`, `:`, key literal, bracketed
    /// `at` or written-out dot): after every push, the last word is held — the text after the
    /// last whitespace, which a later chunk could still continue into an e-mail address or a
    /// key — and no more, except where an obfuscated address may be under way: when that word
    /// could still become an at marker (empty, `a`, `at`, `(a`, …), also the word before it
    /// (`john [a…`, `john at`); when one of the two words before it is `at`, from the word
    /// before that `at` (`john at exa…`, `john at example d…`).
    #[test]
    fn prose_is_held_back_no_further_than_its_last_word(
        words in proptest::collection::vec(prop_oneof![
            6 => "[a-zA-Z,.!?'()]{1,12}",
            1 => prop_oneof![Just("at"), Just("AT"), Just("a"), Just("(a"), Just("(At"), Just("example"), Just("d"), Just("(do")].prop_map(String::from),
        ], 1..60),
        seps in proptest::collection::vec(prop_oneof![Just(" "), Just("\n"), Just("  "), Just("\t")], 60),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let det = builtin_detector(RedactionStyle::Placeholder);
        let text: String = words.iter().zip(&seps).flat_map(|(w, s)| [w.as_str(), *s]).collect();
        // Key literals without a digit are triggers too (`AKIA…`); this property is about prose.
        prop_assume!(!["AKIA", "ASIA", "AIza"].iter().any(|k| text.contains(k)));
        let lower = text.to_ascii_lowercase();
        prop_assume!(!["(at)", "(dot)", "dot "].iter().any(|m| lower.contains(m)));
        let mut session = RedactionSession::new();
        let mut st = det.stream();
        let mut out = String::new();
        let mut received = String::new();
        for part in chunks(&text, &cuts) {
            received.push_str(&part);
            st.push(&part, &mut session, &mut out);
            prop_assert_eq!(st.held_back(), received.len() - prose_hold_start(&received), "after {:?}", received);
        }
    }

    #[test]
    fn redaction_is_idempotent(seed in any::<u64>(), style in prop_oneof![Just(RedactionStyle::Placeholder), Just(RedactionStyle::Mask), Just(RedactionStyle::Hash)]) {
        let det = detector(style);
        let text = text_from(seed, 6);
        let once = det.redact(&text, &mut RedactionSession::new()).into_owned();
        prop_assert_eq!(det.find(&once), vec![], "{}", once);
    }

    #[test]
    fn find_never_panics_and_returns_ordered_spans_on_char_boundaries(text in "\\PC{0,300}|[0-9 +()@.:-]{0,120}|[\\x00-\\x7f]{0,200}") {
        let det = detector(RedactionStyle::Placeholder);
        let found = det.find(&text);
        let mut last = 0;
        for f in &found {
            prop_assert!(f.start >= last && f.start < f.end && f.end <= text.len());
            prop_assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
            last = f.end;
        }
        let (out, _, _) = streamed(&det, &chunks(&text, &[text.len() / 3, text.len() / 2]));
        prop_assert_eq!(out, det.redact(&text, &mut RedactionSession::new()).into_owned());
    }
}

/// Texts the properties once failed on, by generator seed and style, kept as plain tests: the
/// seed is the generated `seed` argument, which proptest's regression file cannot name.
const IDEMPOTENCE_REGRESSIONS: &[(u64, RedactionStyle)] = &[
    // `07700 900253 693-63-5518` read as one over-long cluster, so only the SSN was found and
    // `07700 900253` turned into a phone after redaction.
    (13_198_043_420_273_521_417, RedactionStyle::Placeholder),
    // `…zrT1-800-467-5057`: the key takes the `1`; `-800-467-5057` is glued to the key, and
    // was read as a phone once the key became `[API_KEY_1]`.
    (16_990_245_712_013_809_374, RedactionStyle::Placeholder),
    // A masked value ending in one `*` right before a glued phone: `… **** *+49 30 …`.
    (16_367_953_370_871_867_143, RedactionStyle::Mask),
];

#[test]
fn regression_generated_texts_redact_idempotently() {
    for &(seed, style) in IDEMPOTENCE_REGRESSIONS {
        let det = detector(style);
        let text = text_from(seed, 6);
        let once = det.redact(&text, &mut RedactionSession::new()).into_owned();
        assert_eq!(det.find(&once), vec![], "seed {seed}: {once}");
    }
}

/// Streams the properties once failed on: (generator seed, parts, one character per chunk
/// rather than the whole text in one chunk), with the custom entities and placeholders.
const STREAM_REGRESSIONS: &[(u64, usize, bool)] = &[
    // `MÜLLER` missed by the stream: a pass paused inside a multi-byte character, and the
    // term pass then searched the rest of the text without case folding.
    (16_004_089_008_193_061_752, 3, true),
    (6_077_304_454_660_604_689, 7, false),
];

#[test]
fn regression_generated_texts_stream_like_whole_text() {
    let det = detector(RedactionStyle::Placeholder);
    for &(seed, parts, by_char) in STREAM_REGRESSIONS {
        let text = text_from(seed, parts);
        let whole = det.redact(&text, &mut RedactionSession::new()).into_owned();
        let chunked: Vec<String> = if by_char {
            text.chars().map(String::from).collect()
        } else {
            vec![text.clone()]
        };
        assert_eq!(streamed(&det, &chunked).0, whole, "seed {seed}");
    }
}
