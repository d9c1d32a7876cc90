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
            "mail John.Doe (AT) mail.example (DOT) org.",
            "John.Doe (AT) mail.example (DOT) org",
        ),
        ("mail jane At example dot com", "jane At example dot com"),
        (
            "mail jane at example [dot] com",
            "jane at example [dot] com",
        ),
        (
            "mail jane at mail.example DOT co",
            "jane at mail.example DOT co",
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
fn title_case_markers_are_found_and_other_mixed_case_is_not() {
    one(
        "mail John (At) Example (Dot) Com",
        "email",
        "John (At) Example (Dot) Com",
    );
    one(
        "mail john at example Dot com",
        "email",
        "john at example Dot com",
    );
    none("john (aT) example (dOt) com");
    none("john at example dOt com");
}

#[test]
fn word_lists_are_sorted_for_binary_search() {
    use crate::pii::obfuscated::{BARE_STOP_WORDS, COMMON_TLDS};
    assert!(COMMON_TLDS.is_sorted());
    assert!(BARE_STOP_WORDS.is_sorted());
}

/// A card masked with the mask style keeps its last four digits; right before an at marker
/// they must not become the local part a first pass did not see (the card ended where the
/// local part would start, so there was none).
#[test]
fn a_masked_cards_last_digits_do_not_become_a_local_part() {
    let cfg = PiiDetectorConfig {
        redaction: crate::pack::RedactionStyle::Mask,
        ..Default::default()
    };
    let d = PiiDetector::compile(&cfg, None).unwrap();
    for text in [
        "x 4111 1111 1111 1111{AT}example.com y",
        "x 4111 1111 1111 1111 [at] example.com y",
        "x 4111 1111 1111 1111-@AT-j.doe y",
    ] {
        let once = d.redact(text, &mut RedactionSession::new()).into_owned();
        assert!(once.starts_with("x **** **** **** 1111"), "{once}");
        assert_eq!(d.find(&once), vec![], "{text:?} -> {once:?}");
    }
}

/// A key glued by a `*` to an obfuscated address stays glued once the address is replaced:
/// by a placeholder (`*[EMAIL_1]`) or by a mask with a bracketed marker (`***{**}`).
#[test]
fn a_star_glued_to_a_replaced_address_still_glues() {
    for style in [
        crate::pack::RedactionStyle::Placeholder,
        crate::pack::RedactionStyle::Hash,
        crate::pack::RedactionStyle::Mask,
    ] {
        let cfg = PiiDetectorConfig {
            redaction: style,
            ..Default::default()
        };
        let d = PiiDetector::compile(&cfg, Some(b"k")).unwrap();
        for text in [
            "me].sk-ab12cd34ef56gh78ij90klme*john[at]j.doe* ",
            "sk-ab12cd34ef56gh78ij90kl*AT{AT}j.doe c",
        ] {
            let once = d.redact(text, &mut RedactionSession::new()).into_owned();
            assert_ne!(once, text, "{style:?}: the address is found");
            assert_eq!(d.find(&once), vec![], "{style:?}: {text:?} -> {once:?}");
        }
    }
}
