//! Checksums and numbering rules that turn a digit-shaped candidate into a finding.
//!
//! Why: a detector that flags every 16-digit number is useless, so every numeric candidate is
//! confirmed here — Luhn plus issuer prefix and length for cards, ISO 13616 mod-97 plus the
//! per-country length for IBANs, and the SSA rules for SSNs. These are pure functions on ASCII
//! bytes; they do not locate candidates (that is `numeric` and `tokens`) and they do not know
//! about context words.

/// Luhn checksum over ASCII digits; non-digits are ignored by the caller's contract.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &d in digits.iter().rev() {
        if !d.is_ascii_digit() {
            return false;
        }
        let mut v = u32::from(d - b'0');
        if double {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
        double = !double;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn prefix_num(digits: &[u8], n: usize) -> u32 {
    digits
        .iter()
        .take(n)
        .fold(0u32, |acc, d| acc * 10 + u32::from(d.wrapping_sub(b'0')))
}

/// Issuer prefix and length of the major card networks (Visa, Mastercard, Amex, Discover, JCB,
/// Diners, UnionPay, Maestro). Luhn is checked separately.
pub(crate) fn card_issuer_ok(digits: &[u8]) -> bool {
    let len = digits.len();
    let p1 = prefix_num(digits, 1);
    let p2 = prefix_num(digits, 2);
    let p3 = prefix_num(digits, 3);
    let p4 = prefix_num(digits, 4);
    match p1 {
        4 => matches!(len, 13 | 16 | 19),
        5 => match p2 {
            51..=55 => len == 16,
            50 | 56..=59 => (12..=19).contains(&len),
            _ => false,
        },
        2 => (2221..=2720).contains(&p4) && len == 16,
        3 => match p2 {
            34 | 37 => len == 15,
            35 => (3528..=3589).contains(&p4) && (16..=19).contains(&len),
            36 | 38 | 39 => (14..=19).contains(&len),
            30 => (300..=305).contains(&p3) && (14..=19).contains(&len),
            _ => false,
        },
        6 => {
            let discover = p4 == 6011 || (644..=649).contains(&p3) || p2 == 65;
            let unionpay = p2 == 62;
            (discover || unionpay) && (16..=19).contains(&len)
                || (p2 == 63 || p2 == 67) && (12..=19).contains(&len)
        }
        _ => false,
    }
}

/// US SSN `AAA-GG-SSSS`: area 000, 666 and 900–999, group 00 and serial 0000 were never issued.
pub(crate) fn ssn_ok(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    let a = prefix_num(area, 3);
    let g = prefix_num(group, 2);
    let s = prefix_num(serial, 4);
    area.len() == 3
        && group.len() == 2
        && serial.len() == 4
        && a != 0
        && a != 666
        && a < 900
        && g != 0
        && s != 0
}

/// IBAN length per country (ISO 13616 registry).
#[rustfmt::skip]
const IBAN_LENGTHS: [([u8; 2], u8); 77] = [
    (*b"AD", 24), (*b"AE", 23), (*b"AL", 28), (*b"AT", 20), (*b"AZ", 28), (*b"BA", 20),
    (*b"BE", 16), (*b"BG", 22), (*b"BH", 22), (*b"BR", 29), (*b"BY", 28), (*b"CH", 21),
    (*b"CR", 22), (*b"CY", 28), (*b"CZ", 24), (*b"DE", 22), (*b"DK", 18), (*b"DO", 28),
    (*b"EE", 20), (*b"EG", 29), (*b"ES", 24), (*b"FI", 18), (*b"FO", 18), (*b"FR", 27),
    (*b"GB", 22), (*b"GE", 22), (*b"GI", 23), (*b"GL", 18), (*b"GR", 27), (*b"GT", 28),
    (*b"HR", 21), (*b"HU", 28), (*b"IE", 22), (*b"IL", 23), (*b"IQ", 23), (*b"IS", 26),
    (*b"IT", 27), (*b"JO", 30), (*b"KW", 30), (*b"KZ", 20), (*b"LB", 28), (*b"LC", 32),
    (*b"LI", 21), (*b"LT", 20), (*b"LU", 20), (*b"LV", 21), (*b"MC", 27), (*b"MD", 24),
    (*b"ME", 22), (*b"MK", 19), (*b"MR", 27), (*b"MT", 31), (*b"MU", 30), (*b"NL", 18),
    (*b"NO", 15), (*b"PK", 24), (*b"PL", 28), (*b"PS", 29), (*b"PT", 25), (*b"QA", 29),
    (*b"RO", 24), (*b"RS", 22), (*b"SA", 24), (*b"SC", 31), (*b"SE", 24), (*b"SI", 19),
    (*b"SK", 24), (*b"SM", 27), (*b"ST", 25), (*b"SV", 28), (*b"TL", 23), (*b"TN", 24),
    (*b"TR", 26), (*b"UA", 29), (*b"VA", 22), (*b"VG", 24), (*b"XK", 20),
];

/// [`IBAN_LENGTHS`] as a table indexed by the two capitals (`AA` = 0 … `ZZ` = 675), 0 for a
/// country without IBANs: the scanner asks for every digit that follows two capitals.
const IBAN_LEN_BY_CODE: [u8; 26 * 26] = {
    let mut table = [0u8; 26 * 26];
    let mut k = 0;
    while k < IBAN_LENGTHS.len() {
        let ([a, b], len) = IBAN_LENGTHS[k];
        table[(a - b'A') as usize * 26 + (b - b'A') as usize] = len;
        k += 1;
    }
    table
};

/// IBAN length of a country code, or `None` for a code without IBANs.
pub(crate) fn iban_len(country: &[u8]) -> Option<usize> {
    let &[a, b] = country else { return None };
    if !a.is_ascii_uppercase() || !b.is_ascii_uppercase() {
        return None;
    }
    let len = IBAN_LEN_BY_CODE[usize::from(a - b'A') * 26 + usize::from(b - b'A')];
    (len != 0).then_some(usize::from(len))
}

/// ISO 13616 check: country length, two check digits, and the mod-97 remainder of 1.
/// `compact` is the IBAN without separators, upper-case.
pub(crate) fn iban_ok(compact: &[u8]) -> bool {
    if compact.len() < 5 || iban_len(&compact[..2]) != Some(compact.len()) {
        return false;
    }
    if !compact[2].is_ascii_digit() || !compact[3].is_ascii_digit() {
        return false;
    }
    // The remainder is reduced every seven characters, not after each: below 97 · 100⁷ + 100⁷
    // it fits a u64, and one division per seven characters is what keeps IBAN checks cheap on
    // text where capitals and digits are common.
    let rearranged = compact[4..].iter().chain(compact[..4].iter());
    let mut rem = 0u64;
    for (k, &c) in rearranged.enumerate() {
        match c {
            b'0'..=b'9' => rem = rem * 10 + u64::from(c - b'0'),
            b'A'..=b'Z' => rem = rem * 100 + u64::from(c - b'A') + 10,
            _ => return false,
        }
        if k % 7 == 6 {
            rem %= 97;
        }
    }
    rem % 97 == 1
}

/// The validator a custom entity names, applied to the digits (Luhn, SSN) or the compact
/// alphanumerics (IBAN) of its match.
pub(crate) fn custom_ok(validator: crate::pack::Validator, matched: &[u8]) -> bool {
    use crate::pack::Validator;
    let mut buf = [0u8; 64];
    let mut n = 0;
    for &b in matched {
        let keep = match validator {
            Validator::Iban => b.is_ascii_alphanumeric(),
            Validator::Luhn | Validator::Ssn => b.is_ascii_digit(),
        };
        if keep {
            if n == buf.len() {
                return false;
            }
            buf[n] = b.to_ascii_uppercase();
            n += 1;
        }
    }
    let d = &buf[..n];
    match validator {
        Validator::Luhn => n >= 2 && luhn(d),
        Validator::Iban => iban_ok(d),
        Validator::Ssn => n == 9 && ssn_ok(&d[..3], &d[3..5], &d[5..]),
    }
}

#[cfg(test)]
mod iban_tests {
    use super::{iban_len, iban_ok, IBAN_LENGTHS};

    #[test]
    fn the_length_table_answers_every_registry_code_and_nothing_else() {
        for (code, len) in IBAN_LENGTHS {
            assert_eq!(iban_len(&code), Some(usize::from(len)), "{code:?}");
        }
        for code in [b"ZZ", b"US", b"de", b"D1", b"AA"] {
            assert_eq!(iban_len(code), None, "{code:?}");
        }
        assert_eq!(iban_len(b"DEX"), None);
    }

    #[test]
    fn the_check_reduces_long_ibans_exactly() {
        // 32 characters: the remainder is reduced several times along the way.
        assert!(iban_ok(b"LC55HEMM000100010012001200023015"));
        assert!(iban_ok(b"GB82WEST12345698765432"));
        assert!(!iban_ok(b"GB82WEST12345698765433"));
        assert!(!iban_ok(b"LC55HEMM000100010012001200023016"));
    }
}
