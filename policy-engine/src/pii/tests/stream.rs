//! The stream redactor and the trigger prefilter.

use super::*;
use crate::pack::PiiDetectorConfig;

use crate::pii::RedactionSession;

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
