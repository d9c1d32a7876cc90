//! Obfuscated e-mail addresses: the forms found, the precision guard, the span, the setting.

use super::*;

#[test]
fn bracketed_and_bare_forms_are_found_with_the_whole_span() {
    for (text, value) in [
        (
            "mail john [at] example [dot] com now",
            "john [at] example [dot] com",
        ),
        ("mail john(at)example.com now", "john(at)example.com"),
        (
            "mail john at example dot com now",
            "john at example dot com",
        ),
        (
            "mail john{at}example{dot}com now",
            "john{at}example{dot}com",
        ),
        (
            "mail john <at> example <dot> com now",
            "john <at> example <dot> com",
        ),
        (
            "mail john [AT] example [DOT] co [DOT] uk now",
            "john [AT] example [DOT] co [DOT] uk",
        ),
        (
            "mail John.Doe (At) mail.example (Dot) org.",
            "John.Doe (At) mail.example (Dot) org",
        ),
        (
            "mail j_doe+x  [at]  example.co [dot] uk",
            "j_doe+x  [at]  example.co [dot] uk",
        ),
        (
            "mail jane AT mail DOT example DOT de",
            "jane AT mail DOT example DOT de",
        ),
        ("(john(at)example(dot)io)", "john(at)example(dot)io"),
        (
            "mail john\t[at]\texample[dot]travel",
            "john\t[at]\texample[dot]travel",
        ),
    ] {
        one(text, "email", value);
    }
}

#[test]
fn bare_at_needs_a_written_out_dot_a_common_tld_and_a_real_local_part() {
    for text in [
        "look at the dot product",
        "meet me at home dot",
        "meet at example dot",
        "the docs are available at example.com",
        "I work at example.com and live at home",
        "find us at example dot com",
        "I'm at example dot com",
        "john at example dot product",
        "john at example dot at",
        "5 at example dot com",
        "john  at\nexample dot com",
    ] {
        none(text);
    }
}

#[test]
fn bracketed_markers_need_a_domain_of_two_labels_and_an_alphabetic_tld() {
    for text in [
        "(at) least one",
        "at least [at] most",
        "john [at] example",
        "john [at] example [dot] c",
        "john [at] example [dot] c0m",
        "john (at] example.com",
        "john [at] example (dot] com",
        "john [ at ] example.com",
        "john    [at] example.com",
        "[T_1] [at] example [dot] com",
        "**** [at] example [dot] com",
    ] {
        none(text);
    }
}

#[test]
fn a_replacement_after_a_written_out_dot_keeps_the_address_unfound() {
    none("john [at] example [dot] io [dot] [T_1]");
    none("john at example dot com dot *");
}

#[test]
fn obfuscated_addresses_are_redacted_whole() {
    let d = det();
    let mut s = RedactionSession::new();
    let out = d.redact("write to john [at] example [dot] com today", &mut s);
    assert_eq!(out, "write to [EMAIL_1] today");
}

#[test]
fn the_pack_setting_turns_obfuscated_addresses_off_and_keeps_real_ones() {
    let cfg = PiiDetectorConfig {
        obfuscated_emails: false,
        ..Default::default()
    };
    let d = PiiDetector::compile(&cfg, None).unwrap();
    assert_eq!(d.find("john [at] example [dot] com"), vec![]);
    assert_eq!(d.find("john at example dot com"), vec![]);
    assert_eq!(d.find("john@example.com").len(), 1);
    let without_email = PiiDetectorConfig {
        entities: Some(vec!["phone".into()]),
        ..Default::default()
    };
    let d = PiiDetector::compile(&without_email, None).unwrap();
    assert_eq!(d.find("john [at] example [dot] com"), vec![]);
}

#[test]
fn word_lists_are_sorted_for_binary_search() {
    use crate::pii::obfuscated::{BARE_STOP_WORDS, COMMON_TLDS};
    assert!(COMMON_TLDS.is_sorted());
    assert!(BARE_STOP_WORDS.is_sorted());
}
