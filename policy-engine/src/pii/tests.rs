//! Unit tests of the engine: one assertion per rule the module docs state.

use super::*;
use crate::pack::{CustomEntity, PiiDetectorConfig, RedactionStyle, Validator};

fn det() -> PiiDetector {
    PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap()
}

fn found(text: &str) -> Vec<(String, String)> {
    let d = det();
    d.find(text)
        .iter()
        .map(|f| {
            (
                d.entity_name(f.entity).to_owned(),
                text[f.start..f.end].to_owned(),
            )
        })
        .collect()
}

fn one(text: &str, entity: &str, value: &str) {
    assert_eq!(
        found(text),
        vec![(entity.to_owned(), value.to_owned())],
        "in {text:?}"
    );
}

fn none(text: &str) {
    assert_eq!(found(text), vec![], "in {text:?}");
}

#[test]
fn finds_each_builtin_entity() {
    one(
        "mail jane.doe+x@example.co.uk now",
        "email",
        "jane.doe+x@example.co.uk",
    );
    one("call (555) 234-5678 today", "phone", "(555) 234-5678");
    one("call +44 20 7946 0958.", "phone", "+44 20 7946 0958");
    one("ruf +49 (0)30 1234567 an", "phone", "+49 (0)30 1234567");
    one("tel 03-1234-5678", "phone", "03-1234-5678");
    one(
        "card 4111 1111 1111 1111 ok",
        "credit_card",
        "4111 1111 1111 1111",
    );
    one("amex 3782-822463-10005", "credit_card", "3782-822463-10005");
    one("ssn 078-05-1120", "ssn", "078-05-1120");
    one(
        "iban DE89 3704 0044 0532 0130 00 thanks",
        "iban",
        "DE89 3704 0044 0532 0130 00",
    );
    one(
        "iban GB82WEST12345698765432.",
        "iban",
        "GB82WEST12345698765432",
    );
    one("host 192.168.1.20 up", "ip_address", "192.168.1.20");
    one(
        "v6 2001:db8::8a2e:370:7334 up",
        "ip_address",
        "2001:db8::8a2e:370:7334",
    );
    one(
        "key sk-proj-abcdEFGH1234ijklMNOP5678qrstUVWX90yz",
        "api_key",
        "sk-proj-abcdEFGH1234ijklMNOP5678qrstUVWX90yz",
    );
    one(
        "aws AKIAIOSFODNN7EXAMPLE",
        "api_key",
        "AKIAIOSFODNN7EXAMPLE",
    );
}

#[test]
fn ssn_shaped_number_is_one_ssn_not_also_a_phone() {
    one("078-05-1120", "ssn", "078-05-1120");
}

#[test]
fn invalid_ssn_areas_groups_and_serials_are_rejected() {
    for s in [
        "000-12-3456",
        "666-12-3456",
        "912-12-3456",
        "123-00-4567",
        "123-45-0000",
    ] {
        none(s);
    }
}

#[test]
fn digits_inside_an_iban_are_not_a_card() {
    // The BBAN of this IBAN starts with the Luhn-valid Visa number 4111 1111 1111 1111.
    let text = "pay DE89 4111 1111 1111 1111 11 today";
    one(text, "iban", "DE89 4111 1111 1111 1111 11");
    // With a wrong check digit it is no IBAN, and the card inside it is what remains.
    one(
        "pay DE88 4111 1111 1111 1111 11 today",
        "credit_card",
        "4111 1111 1111 1111",
    );
}

#[test]
fn hard_negatives_are_not_reported() {
    for s in [
        "order 4111111111111112 shipped",
        "on 2023-01-15 at 10:30:45",
        "release 1.2.3 and v2.0.1",
        "id 550e8400-e29b-41d4-a716-446655440000",
        "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
        "ts 1700000000 epoch",
        "isbn 978-3-16-148410-0 and 0-306-40615-2",
        "price $1,234.56 or €99.99",
        "at 48.8566, 2.3522",
        "std::vec::Vec and a::b",
        "mac 00:1A:2B:3C:4D:5E",
        "dates 15/01/2023 01.02.2023",
        "sk-learn-the-basics-of-machine-learning",
    ] {
        none(s);
    }
}

#[test]
fn fullwidth_and_invisible_characters_are_normalised_and_spans_stay_original() {
    let text = "card ４１１１ １１１１ １１１１ １１１１ end";
    let f = found(text);
    assert_eq!(
        f,
        vec![(
            "credit_card".to_owned(),
            "４１１１ １１１１ １１１１ １１１１".to_owned()
        )]
    );
    let zw = "mail jo\u{200B}hn@exa\u{200B}mple.com\u{200B} x";
    assert_eq!(
        found(zw),
        vec![(
            "email".to_owned(),
            "jo\u{200B}hn@exa\u{200B}mple.com".to_owned()
        )]
    );
    let nbsp = "tel +44\u{A0}20\u{A0}7946\u{A0}0958";
    assert_eq!(
        found(nbsp),
        vec![(
            "phone".to_owned(),
            "+44\u{A0}20\u{A0}7946\u{A0}0958".to_owned()
        )]
    );
}

#[test]
fn placeholder_reuses_the_index_of_an_equal_value() {
    let d = det();
    let mut s = RedactionSession::new();
    let out = d.redact("a@x.io b@x.io a@x.io", &mut s);
    assert_eq!(out, "[EMAIL_1] [EMAIL_2] [EMAIL_1]");
    assert_eq!(s.counts().collect::<Vec<_>>(), vec![("email", 3)]);
}

#[test]
fn clean_text_is_borrowed_not_copied() {
    let d = det();
    let mut s = RedactionSession::new();
    assert!(matches!(
        d.redact("nothing here at all", &mut s),
        std::borrow::Cow::Borrowed(_)
    ));
    assert!(s.is_empty());
}

#[test]
fn mask_keeps_last_four_card_digits_and_hash_is_keyed() {
    let cfg = PiiDetectorConfig {
        redaction: RedactionStyle::Mask,
        ..Default::default()
    };
    let d = PiiDetector::compile(&cfg, None).unwrap();
    let mut s = RedactionSession::new();
    assert_eq!(
        d.redact("4111-1111-1111-1111", &mut s),
        "****-****-****-1111"
    );
    let cfg = PiiDetectorConfig {
        redaction: RedactionStyle::Hash,
        ..Default::default()
    };
    assert!(PiiDetector::compile(&cfg, None).is_err());
    let a = PiiDetector::compile(&cfg, Some(b"k1")).unwrap();
    let b = PiiDetector::compile(&cfg, Some(b"k2")).unwrap();
    let ra = a.redact("a@x.io", &mut s).into_owned();
    let rb = b.redact("a@x.io", &mut s).into_owned();
    assert!(
        ra.starts_with("[EMAIL:") && ra.len() == "[EMAIL:12345678]".len(),
        "{ra}"
    );
    assert_ne!(ra, rb);
}

#[test]
fn redaction_is_idempotent_for_every_style() {
    let text = "x a@b.io 078-05-1120 4111 1111 1111 1111 +44 20 7946 0958 10.0.0.1 DE89370400440532013000 AKIAIOSFODNN7EXAMPLE";
    for style in [
        RedactionStyle::Placeholder,
        RedactionStyle::Mask,
        RedactionStyle::Hash,
    ] {
        let cfg = PiiDetectorConfig {
            redaction: style,
            ..Default::default()
        };
        let d = PiiDetector::compile(&cfg, Some(b"key")).unwrap();
        let mut s = RedactionSession::new();
        let once = d.redact(text, &mut s).into_owned();
        assert_eq!(d.find(&once), vec![], "{style:?}: {once}");
        assert_eq!(s.total(), 7, "{style:?}");
    }
}

fn custom(name: &str, regex: Option<&str>, terms: Option<&[&str]>) -> CustomEntity {
    CustomEntity {
        name: name.to_owned(),
        regex: regex.map(str::to_owned),
        terms: terms.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
        validator: None,
        context: None,
    }
}

#[test]
fn compile_errors_name_their_path() {
    let cfg = PiiDetectorConfig {
        entities: Some(vec!["email".into(), "passport".into()]),
        custom: vec![
            custom("both", Some("x"), Some(&["y"])),
            custom("unbounded", Some(r"EMP-\d+"), None),
            custom("bad", Some("(unclosed"), None),
            custom("huge", Some(r"\w{1000}"), None),
        ],
        ..Default::default()
    };
    let errs = PiiDetector::compile(&cfg, None).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "custom[0]",
            "custom[1].regex",
            "custom[2].regex",
            "custom[3].regex",
            "entities[1]"
        ]
    );
    assert!(errs[4]
        .expected
        .as_deref()
        .unwrap()
        .contains("ip_address, api_key, both"));
    assert!(
        errs[3].message.contains("256") || errs[3].message.contains("size limit"),
        "{}",
        errs[3].message
    );
}

#[test]
fn oversized_regex_is_rejected_with_the_size_limit_named() {
    let cfg = PiiDetectorConfig {
        custom: vec![custom("big", Some(r"\w{60}"), None)],
        ..Default::default()
    };
    let errs = PiiDetector::compile(&cfg, None).unwrap_err();
    assert!(
        errs[0].message.contains("size limit"),
        "{}",
        errs[0].message
    );
}

#[test]
fn custom_regex_with_validator_and_context_and_terms() {
    let mut emp = custom("employee_id", Some(r"\bE\d{6}\b"), None);
    emp.context = Some(vec!["employee".into()]);
    let mut acct = custom("account", Some(r"\b\d{8,12}\b"), None);
    acct.validator = Some(Validator::Luhn);
    let cfg = PiiDetectorConfig {
        custom: vec![
            emp,
            acct,
            custom("codename", None, Some(&["Project Falcon", "bluebird"])),
        ],
        ..Default::default()
    };
    let d = PiiDetector::compile(&cfg, None).unwrap();
    let names = |t: &str| {
        d.find(t)
            .iter()
            .map(|f| d.entity_name(f.entity).to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("employee E123456 here"), ["employee_id"]);
    assert_eq!(names("ticket E123456 here"), Vec::<String>::new());
    assert_eq!(names("acct 79927398713 ok"), ["account"]);
    assert_eq!(names("acct 79927398714 ok"), Vec::<String>::new());
    assert_eq!(
        names("about PROJECT FALCON and bluebirds, Bluebird."),
        ["codename", "codename"]
    );
}

#[test]
fn disabled_entities_are_not_reported() {
    let cfg = PiiDetectorConfig {
        entities: Some(vec!["email".into()]),
        ..Default::default()
    };
    let d = PiiDetector::compile(&cfg, None).unwrap();
    assert_eq!(d.find("078-05-1120 a@b.io 4111111111111111").len(), 1);
}

#[test]
fn regression_long_dotted_digit_group_does_not_overflow_ipv4_octet() {
    none("1.2.3.99999999999999999");
}

#[test]
fn regression_stream_release_point_is_snapped_to_a_char_boundary() {
    let d = det();
    let text = "é".repeat(400) + " a@b.io " + &"日本".repeat(100);
    let mut s = RedactionSession::new();
    let mut out = String::new();
    let mut st = d.stream();
    st.push(&text[..600], &mut s, &mut out);
    st.push(&text[600..], &mut s, &mut out);
    st.finish(&mut s, &mut out);
    assert_eq!(out, d.redact(&text, &mut RedactionSession::new()));
}

#[test]
fn regression_plus_glued_to_a_value_stays_unredacted_after_redaction() {
    // `…9837+44 20…`: the `+` belongs to the text before it, so neither the original nor the
    // redacted text (`[PHONE_1]+44 20…`) reports a second phone.
    let d = det();
    let text = "call +1 583 950 9837+44 20 7946 7422 now";
    let once = d.redact(text, &mut RedactionSession::new()).into_owned();
    assert_eq!(once, "call [PHONE_1]+44 20 7946 7422 now");
    assert_eq!(d.find(&once), vec![]);
}

#[test]
fn stream_holds_back_at_most_the_stated_ascii_bound() {
    let d = det();
    assert_eq!(d.max_holdback_bytes(), 972);
    let with_regex = PiiDetectorConfig {
        custom: vec![custom("emp", Some(r"E\d{6}"), None)],
        ..Default::default()
    };
    assert_eq!(
        PiiDetector::compile(&with_regex, None)
            .unwrap()
            .max_holdback_bytes(),
        1176
    );
    let text = "The quick brown fox jumps over the lazy dog, call 555-234-5678. ".repeat(200);
    let mut s = RedactionSession::new();
    let mut out = String::new();
    let mut st = d.stream();
    for chunk in text.as_bytes().chunks(7) {
        st.push(std::str::from_utf8(chunk).unwrap(), &mut s, &mut out);
        assert!(st.held_back() <= 324, "held {}", st.held_back());
    }
    st.finish(&mut s, &mut out);
    assert_eq!(out, d.redact(&text, &mut RedactionSession::new()));
}

#[test]
fn detector_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PiiDetector>();
}

proptest::proptest! {
    /// The SWAR trigger scan agrees with a plain byte-by-byte search, from any start.
    #[test]
    fn swar_trigger_scan_agrees_with_plain_search(text in "[a-z :@0-9é日\\n]{0,200}", from in 0usize..210) {
        let bytes = text.as_bytes();
        let expected = bytes
            .get(from..)
            .and_then(|rest| rest.iter().position(|b| b.is_ascii_digit() || *b == b':' || *b == b'@'))
            .map(|i| i + from);
        proptest::prop_assert_eq!(super::scanner::next_byte_trigger(bytes, from), expected);
    }
}

fn stream_equals_whole(d: &PiiDetector, text: &str, chunk: usize) {
    let mut s = RedactionSession::new();
    let mut out = String::new();
    let mut st = d.stream();
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + chunk).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        st.push(&text[at..end], &mut s, &mut out);
        at = end;
    }
    st.finish(&mut s, &mut out);
    assert_eq!(
        out,
        d.redact(text, &mut RedactionSession::new()),
        "chunk {chunk}"
    );
}

#[test]
fn stream_equals_whole_text_for_candidates_as_long_as_the_windows_allow() {
    let local = "a".repeat(63);
    let domain = format!("{}.{}.example.com", "b".repeat(63), "c".repeat(60));
    let key_body: String = "aB3".repeat(66);
    let text = format!(
        "x {local}@{domain} y sk-{key_body} z +44 20 7946 0958 {local}@{domain}. \
         DE89 3704 0044 0532 0130 00 and 2001:0db8:85a3:0000:0000:8a2e:0370:7334 end"
    );
    let d = det();
    assert_eq!(d.find(&text).len(), 6, "{text}");
    for chunk in [1, 2, 3, 7, 64, 100, 259, 260, 261, 330, 1000] {
        stream_equals_whole(&d, &text, chunk);
    }
    let cfg = PiiDetectorConfig {
        custom: vec![
            custom("long", Some(r"Z[a-z]{250}"), None),
            custom("t", None, Some(&["end"])),
        ],
        ..Default::default()
    };
    let d = PiiDetector::compile(&cfg, None).unwrap();
    let text = format!("{text} Z{}", "q".repeat(250));
    let names: Vec<&str> = d
        .find(&text)
        .iter()
        .map(|f| d.entity_name(f.entity))
        .collect();
    assert!(names.contains(&"long") && names.contains(&"t"), "{names:?}");
    for chunk in [1, 5, 255, 327, 328, 329] {
        stream_equals_whole(&d, &text, chunk);
    }
}
