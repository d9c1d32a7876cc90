//! Detection: each entity, overlaps, hard negatives, normalisation.

use super::*;

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
    one("Call me at 555-123-4567.", "phone", "555-123-4567");
    one("tel: 0049 30 1234567", "phone", "0049 30 1234567");
    one("mobile 07911 123456", "phone", "07911 123456");
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
fn a_value_next_to_another_number_across_a_slash_is_found() {
    let card = |s: &str| vec![("credit_card".to_owned(), s.to_owned())];
    // A card with its expiry, and a card beside another number: the slash is a boundary, as it
    // is once the other side has been redacted (so a second pass finds nothing new).
    assert_eq!(
        found("pay with 4111 1111 1111 1111/12/25 please"),
        card("4111 1111 1111 1111")
    );
    assert_eq!(
        found("4111 1111 1111 1111/[EMAIL_1]"),
        card("4111 1111 1111 1111")
    );
    assert_eq!(
        found("ssn 123-45-6789/2024"),
        vec![("ssn".to_owned(), "123-45-6789".to_owned())]
    );
    // Slashes between plain numbers stay plain numbers.
    none("on 2026/12/06 at 24/7");
}

#[test]
fn dotted_cards_and_small_form_at_signs_are_found() {
    let card = |s: &str| vec![("credit_card".to_owned(), s.to_owned())];
    assert_eq!(
        found("card 4111.1111.1111.1111 ok"),
        card("4111.1111.1111.1111")
    );
    assert_eq!(found("(5500.0000.0000.0004)"), card("5500.0000.0000.0004"));
    // An address stays an address; dotted digits that fail Luhn, or the wrong shape, are none.
    assert_eq!(
        found("host 203.0.113.7 up"),
        vec![("ip_address".to_owned(), "203.0.113.7".to_owned())]
    );
    none("build 4111.1111.1111.1112 tag");
    none("ref 4111.1111.1111 and 1111");
    assert_eq!(
        found("mail jane\u{FE6B}example\u{FE52}com now"),
        vec![(
            "email".to_owned(),
            "jane\u{FE6B}example\u{FE52}com".to_owned()
        )]
    );
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
fn regression_long_dotted_digit_group_does_not_overflow_ipv4_octet() {
    none("1.2.3.99999999999999999");
}

#[test]
fn regression_phone_before_an_ssn_in_one_digit_cluster_is_found_on_the_first_pass() {
    // One cluster of space-joined groups with an SSN at its end: once the SSN is found, the
    // groups before it are read as a number of their own, as a second pass over
    // `07700 900253 [SSN_1]` reads them.
    let pair = |e: &str, v: &str| (e.to_owned(), v.to_owned());
    assert_eq!(
        found("mobile 07700 900253 693-63-5518."),
        vec![pair("phone", "07700 900253"), pair("ssn", "693-63-5518")]
    );
    assert_eq!(
        found("fr 01 28 01 46 27 4624 0164 8377 1071 ok"),
        vec![
            pair("phone", "01 28 01 46 27"),
            pair("credit_card", "4624 0164 8377 1071")
        ]
    );
    // Without a finding after them, trunk-0 groups inside a longer run stay no phone.
    none("tracking 0947 9801 86 1234 5678");
}

#[test]
fn bare_ten_digit_nanp_number_is_a_phone_right_after_a_phone_word() {
    one("Call me at 2025550143 tomorrow", "phone", "2025550143");
    one("Tel. 2025550143", "phone", "2025550143");
    one("phone no. 2025550143", "phone", "2025550143");
    one("My mobile number is 2025550143.", "phone", "2025550143");
    one("Téléphone : 2025550143", "phone", "2025550143");
    one(
        "電話：２０２５５５０１４３",
        "phone",
        "２０２５５５０１４３",
    );
    one("ТЕЛЕФОН: 2025550143", "phone", "2025550143");
}

#[test]
fn bare_ten_digit_numbers_without_a_phone_word_right_before_stay_unflagged() {
    for text in [
        "2025550143",
        "order 2025550143 shipped",
        "Ticket 2025550143 closed",
        "Call ID 2025550143 logged",
        "Phone order 2025550143",
        "Please call about order 2025550143",
        "We will call. 2025550143 is your reference",
        "call me on my cell at home 2025550143",
        // A phone word, but not a strict NANP number: timestamps, N11 and N9X codes, 1 and 0.
        "Call at 1717171717",
        "phone 2115550143",
        "phone 2925550143",
        "phone 2024110143",
        "phone 0125550143",
        // Part of a longer run of digits or glued to something.
        "phone 2025550143 2025550144",
        "phone 20255501434",
        "phone #2025550143",
        "phone x2025550143",
        "phone 2025550143.5",
    ] {
        none(text);
    }
}

#[test]
fn regression_bare_phone_context_cut_by_a_finding_stays_cut_after_redaction() {
    // The phone word is left of an e-mail address found just before the number: the reading
    // stops there, and in the redacted text it stops at the placeholder's `]`.
    let d = det();
    for text in ["call a@b.io 2025550143", "phone 078-05-1120 2025550143"] {
        let once = d.redact(text, &mut RedactionSession::new()).into_owned();
        assert_eq!(d.find(&once), vec![], "{once}");
        assert!(once.ends_with(" 2025550143"), "{once}");
    }
    // A phone word, the number, then an SSN in the same digit cluster: both are found, as
    // they would be after the SSN is redacted.
    let pair = |e: &str, v: &str| (e.to_owned(), v.to_owned());
    assert_eq!(
        found("phone 2025550143 078-05-1120"),
        vec![pair("phone", "2025550143"), pair("ssn", "078-05-1120")]
    );
}
