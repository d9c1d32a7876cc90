//! Case folding of custom terms: the rule of `fold`, checked over every character, and terms
//! matching in other casings with spans on the original text.

use std::collections::BTreeMap;

use super::*;
use crate::pack::{PiiDetectorConfig, RedactionStyle};
use crate::pii::fold::{changes, fold_cased, fold_char, fold_term, max_match_len, Fold};

fn all_chars() -> impl Iterator<Item = char> {
    (0..=0x10FFFF_u32).filter_map(char::from_u32)
}

/// The grouping key the automaton sees: folded, then ASCII case ignored.
fn key(c: char) -> String {
    fold_term(c.encode_utf8(&mut [0; 4])).to_ascii_lowercase()
}

#[test]
fn caseless_shortcut_is_exact_and_folding_is_idempotent_and_bounded() {
    for c in all_chars().filter(|c| !c.is_ascii()) {
        let f = fold_char(c);
        assert_eq!(
            f,
            fold_cased(c),
            "shortcut differs at U+{:04X}",
            u32::from(c)
        );
        if let Fold::To(t) = f {
            assert_eq!(
                fold_char(t),
                Fold::Same,
                "U+{:04X} folds twice",
                u32::from(c)
            );
        }
        // A match covering `c` spans at most what `max_match_len` allows for its fold.
        assert!(
            c.len_utf8() <= max_match_len(&key(c)),
            "U+{:04X}",
            u32::from(c)
        );
    }
    // The first `s` of `ẞ`'s `ss`, where a misaligned match can end, covers all 3 bytes.
    assert!('ẞ'.len_utf8() <= max_match_len("s"));
}

#[test]
fn the_change_scan_skips_exactly_what_does_not_fold() {
    // Every character, interleaved with ASCII runs of every length mod 8.
    let mut text = String::new();
    for (k, c) in all_chars().enumerate() {
        text.push(c);
        text.push_str(&"ab"[..k % 3]);
        text.push_str(&"12345678"[..k % 9]);
    }
    let naive: Vec<(usize, char, Fold)> = text
        .char_indices()
        .map(|(i, c)| (i, c, fold_char(c)))
        .filter(|&(_, _, f)| f != Fold::Same)
        .collect();
    assert_eq!(changes(&text).collect::<Vec<_>>(), naive);
}

#[test]
fn folding_equals_unicode_simple_case_folding_plus_the_stated_additions() {
    // Every character that case-maps or is folded to, except the four the rule treats on
    // purpose (`ß`/`ẞ` → `ss`, `İ`/`ı` → `i`), grouped by fold: each group must be exactly
    // the set a `(?i)` regex — Unicode simple case folding — matches.
    // Characters newer than the regex crate's Unicode tables are left out (the standard
    // library may know a newer version).
    let extra = ['ß', 'ẞ', 'İ', 'ı'];
    let assigned = regex::Regex::new(r"\A\p{Assigned}\z").unwrap();
    let cased: Vec<char> = all_chars()
        .filter(|&c| {
            c.to_uppercase().ne([c]) || c.to_lowercase().ne([c]) || fold_char(c) != Fold::Same
        })
        .filter(|c| !extra.contains(c) && assigned.is_match(c.encode_utf8(&mut [0; 4])))
        .collect();
    let hay: String = cased.iter().collect();
    let mut groups: BTreeMap<String, Vec<char>> = BTreeMap::new();
    for &c in &cased {
        groups.entry(key(c)).or_default().push(c);
    }
    for (k, members) in &groups {
        let re =
            regex::Regex::new(&format!("(?i){}", regex::escape(&members[0].to_string()))).unwrap();
        let matched: Vec<char> = re
            .find_iter(&hay)
            .filter_map(|m| m.as_str().chars().next())
            .collect();
        assert_eq!(&matched, members, "fold {k:?}");
    }
    assert_eq!(fold_term("ßẞ"), "ssss");
    assert_eq!(fold_term("İı"), "ii");
}

fn terms_detector(terms: &[&str]) -> PiiDetector {
    let cfg = PiiDetectorConfig {
        entities: Some(vec!["name".into()]),
        custom: vec![custom("name", None, Some(terms))],
        ..Default::default()
    };
    PiiDetector::compile(&cfg, None).unwrap()
}

fn spans(d: &PiiDetector, text: &str) -> Vec<String> {
    d.find(text)
        .iter()
        .map(|f| text[f.start..f.end].to_owned())
        .collect()
}

#[test]
fn non_ascii_terms_match_in_any_casing_with_spans_on_the_original_text() {
    let d = terms_detector(&["Müller", "ÇAĞRI", "Straße", "Σωκράτης", "kelvin"]);
    assert_eq!(
        spans(&d, "Herr MÜLLER, herr müller, Frau MüLLeR."),
        ["MÜLLER", "müller", "MüLLeR"]
    );
    // Turkish: `Çağrı` in either locale's casing.
    assert_eq!(
        spans(&d, "Çağrı, çağrı, ÇAĞRI, Çağri ve ÇAĞRİ"),
        ["Çağrı", "çağrı", "ÇAĞRI", "Çağri", "ÇAĞRİ"]
    );
    assert_eq!(
        spans(&d, "STRASSE, strasse, STRAẞE, straße"),
        ["STRASSE", "strasse", "STRAẞE", "straße"]
    );
    // Final sigma, and the Kelvin sign folding to ASCII `k`.
    assert_eq!(
        spans(&d, "ΣΩΚΡΆΤΗΣ και σωκράτης· \u{212A}ELVIN"),
        ["ΣΩΚΡΆΤΗΣ", "σωκράτης", "\u{212A}ELVIN"]
    );
    // Spans are byte offsets into the original text, after characters of other lengths.
    let text = "İİ \u{212A}\u{212A} MÜLLER.";
    let f = d.find(text);
    assert_eq!((f[0].start, f[0].end), (12, 19));
}

#[test]
fn folded_terms_stay_word_bounded_and_never_match_part_of_a_character() {
    let d = terms_detector(&["Müller", "Straße", "s", "stras"]);
    assert_eq!(
        spans(&d, "Müllers Straßenbahn, MÜLLERIN"),
        Vec::<String>::new()
    );
    // `ß` folds to `ss`: neither `s` nor `stras` matches half of it.
    assert_eq!(spans(&d, "ß STRAß"), Vec::<String>::new());
    assert_eq!(spans(&d, "a s b"), ["s"]);
}

#[test]
fn folding_and_normalisation_together_map_spans_to_the_original() {
    let d = terms_detector(&["Müller"]);
    // Fullwidth letters and a zero-width space inside, uppercase umlaut.
    let text = "an ＭÜＬ\u{200B}ＬＥＲ heute";
    assert_eq!(spans(&d, text), ["ＭÜＬ\u{200B}ＬＥＲ"]);
}

#[test]
fn folded_terms_redact_idempotently_and_stream_like_whole_text() {
    let cfg = PiiDetectorConfig {
        redaction: RedactionStyle::Placeholder,
        custom: vec![custom("name", None, Some(&["Müller", "Çağrı", "Straße"]))],
        ..Default::default()
    };
    let d = PiiDetector::compile(&cfg, None).unwrap();
    let text = "Dear MÜLLER (çAĞRI) of STRASSE 5, Ｍüller and \u{212A}iss: call 555-234-5678 ÇAĞRI";
    let whole = d.redact(text, &mut RedactionSession::new()).into_owned();
    assert_eq!(
        whole,
        "Dear [NAME_1] ([NAME_2]) of [NAME_3] 5, [NAME_4] and \u{212A}iss: call [PHONE_1] [NAME_5]"
    );
    assert_eq!(d.find(&whole), vec![]);
}

#[test]
fn regression_stream_pausing_inside_a_character_still_folds_the_rest() {
    // The stream pauses the term pass `lookahead` bytes before the end of what it has, which
    // can be inside a multi-byte character; the rest of the text was then searched unfolded
    // and `MÜLLER` was missed (proptest seed 16004089008193061752).
    let d = terms_detector(&["Müller", "Straße"]);
    let text = "é日 MÜLLER, STRAẞE ü. ".repeat(6);
    let whole = d.redact(&text, &mut RedactionSession::new()).into_owned();
    assert_eq!(whole.matches("[NAME_").count(), 12, "{whole}");
    for size in 1..24 {
        let mut out = String::new();
        let mut s = RedactionSession::new();
        let mut st = d.stream();
        let mut at = 0;
        while at < text.len() {
            let mut end = (at + size).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            st.push(&text[at..end], &mut s, &mut out);
            at = end;
        }
        st.finish(&mut s, &mut out);
        assert_eq!(out, whole, "chunks of {size}");
    }
}

#[test]
fn term_look_ahead_covers_the_longest_folded_match() {
    // 128 bytes of `k`: up to 384 bytes of Kelvin signs; the stream must look that far.
    let long = "k".repeat(128);
    let d = terms_detector(&[long.as_str()]);
    assert_eq!(d.max_holdback_bytes(), (3 * 128 + 64 + 8 + 64) * 3);
    let text = format!("x {} y", "\u{212A}".repeat(128));
    let whole = d.redact(&text, &mut RedactionSession::new()).into_owned();
    assert_eq!(whole, "x [NAME_1] y");
    let mut out = String::new();
    let mut s = RedactionSession::new();
    let mut st = d.stream();
    for c in text.chars() {
        st.push(c.encode_utf8(&mut [0; 4]), &mut s, &mut out);
    }
    st.finish(&mut s, &mut out);
    assert_eq!(out, whole);
}
