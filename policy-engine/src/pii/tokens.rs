//! Confirmation of the word-shaped built-ins: e-mail addresses, IPv6 addresses and IBANs.
//!
//! Each function looks at one trigger (`@`, `:`, or a digit right after two capitals) and
//! reads a bounded window around it (see the contract in `scanner`). Precision rules: an
//! e-mail needs a dotted domain with an alphabetic TLD; an IPv6 address must parse (std's
//! parser, so `::` compression and embedded IPv4 are exact), contain a decimal digit and stand
//! alone (`std::io` and `12:30:45` are not addresses); an IBAN needs the registry length of its
//! country and a mod-97 remainder of 1, printed compact or in groups of four.

use std::net::Ipv6Addr;

use super::scanner::{continues_after_separator, ent, glued_after, glued_before, Step};
use super::validators::{iban_len, iban_ok};

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn at(hay: &[u8], i: usize) -> u8 {
    hay.get(i).copied().unwrap_or(0)
}

/// E-mail around the `@` at `t`; the local part may reach left down to `lo`. `lo_is_finding`
/// says `lo` is the end of a finding just made: that text will be replaced by a placeholder,
/// which no local part can continue, so the address starts there — exactly what a second pass
/// over the redacted text would find (redaction stays idempotent).
pub(crate) fn email(hay: &[u8], t: usize, lo: usize, lo_is_finding: bool) -> Step {
    let miss = Step::miss(t + 1);
    let mut s = t;
    while s > lo && is_local(at(hay, s - 1)) {
        s -= 1;
    }
    if s > 0 && is_local(at(hay, s - 1)) && !(s == lo && lo_is_finding) {
        return miss; // local part longer than the window
    }
    // Leading `.`, `-`, `+` are punctuation before the address; a leading `_` is Markdown's
    // emphasis (`_ann@example.com_`) far more often than part of the address.
    while s < t && matches!(at(hay, s), b'.' | b'-' | b'+' | b'_') {
        s += 1;
    }
    if s == t
        || at(hay, t - 1) == b'.'
        || hay
            .get(s..t)
            .is_some_and(|l| l.windows(2).any(|w| w == b".."))
    {
        return miss;
    }
    // `**** **** **** 1111-@…`: the four digits a masked card keeps are not a local part; the
    // first pass read them as the card's, which ended where the local part would start.
    let digits_only = !hay
        .get(s..t)
        .is_some_and(|l| l.iter().any(u8::is_ascii_alphabetic));
    if digits_only && masked_group_before(hay, s) {
        return miss;
    }
    let mut i = t + 1;
    let mut labels = 0;
    let mut last_label;
    loop {
        let ls = i;
        while i < hay.len()
            && i - t <= 254
            && (at(hay, i).is_ascii_alphanumeric() || at(hay, i) == b'-')
        {
            i += 1;
        }
        if i == ls || i - ls > 63 || at(hay, ls) == b'-' || at(hay, i - 1) == b'-' {
            return miss;
        }
        labels += 1;
        last_label = (ls, i);
        if at(hay, i) == b'.' && at(hay, i + 1).is_ascii_alphanumeric() && i - t < 254 {
            i += 1;
        } else {
            break;
        }
    }
    let tld = hay.get(last_label.0..last_label.1).unwrap_or_default();
    if labels < 2 || tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) {
        return miss;
    }
    // `a@b.io.[T_1]`: a label that a replacement now stands for followed the domain, whose
    // TLD was that label (here too short to count); the address stays what it was, none.
    if glued_after(hay, i)
        || matches!(at(hay, i), b'@' | b'-')
        || (at(hay, i) == b'.' && matches!(at(hay, i + 1), b'[' | b'*'))
    {
        return miss;
    }
    Step {
        found: Some((s, i, ent::EMAIL)),
        next: i,
    }
}

/// Whether a `*` (a mask) stands right before `s`, or one card separator (` `, `-`) and a `*`.
fn masked_group_before(hay: &[u8], s: usize) -> bool {
    match s.checked_sub(1).map(|k| at(hay, k)) {
        Some(b'*') => true,
        Some(b' ' | b'-') => s >= 2 && at(hay, s - 2) == b'*',
        _ => false,
    }
}

fn is_hex_or_colon(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':'
}

/// IPv6 address containing the `:` at `t`.
pub(crate) fn ipv6(hay: &[u8], t: usize, lo: usize) -> Step {
    let miss = Step::miss(t + 1);
    // Cheap exit for the common `:` of prose (`Note: …`, `à jour :`).
    if !(is_hex_or_colon(at(hay, t + 1)) || (t > 0 && at(hay, t - 1).is_ascii_hexdigit())) {
        return miss;
    }
    let mut s = t;
    while s > lo && t - s < 40 && is_hex_or_colon(at(hay, s - 1)) {
        s -= 1;
    }
    if glued_before(hay, s) || (s > 0 && matches!(at(hay, s - 1), b':' | b'.')) {
        return miss;
    }
    let mut e = t;
    while e < hay.len() && e - s < 46 && (is_hex_or_colon(at(hay, e)) || at(hay, e) == b'.') {
        e += 1;
    }
    while e > t && at(hay, e - 1) == b'.' {
        e -= 1;
    }
    if glued_after(hay, e) {
        return miss;
    }
    if e > t + 1 && at(hay, e - 1) == b':' && at(hay, e - 2) != b':' {
        e -= 1;
    }
    // `e::92.C`: a dotted continuation makes it a name, also once `C` became `[T_1]`.
    if glued_after(hay, e) || (at(hay, e) == b'.' && continues_after_separator(hay, e)) {
        return miss;
    }
    let Some(cand) = hay.get(s..e) else {
        return miss;
    };
    // One pass for the shape: colons, non-empty groups, `::`, a dot, a decimal digit.
    let (mut colons, mut groups, mut compressed, mut dotted, mut digit) =
        (0, 0, false, false, false);
    let mut prev = b':';
    for &b in cand {
        if b == b':' {
            colons += 1;
            compressed |= prev == b':' && colons > 1;
        } else {
            groups += usize::from(prev == b':');
            dotted |= b == b'.';
            digit |= b.is_ascii_digit();
        }
        prev = b;
    }
    // Eight groups, or fewer with `::`: `12:30:45` and MAC-like `00:1A:2B:3C:4D:5E` are neither.
    let embedded_v4 = colons == 6 && dotted;
    if !(colons == 7 || compressed || embedded_v4) || groups < 2 || !digit {
        return miss;
    }
    let parsed = std::str::from_utf8(cand)
        .ok()
        .and_then(|c| c.parse::<Ipv6Addr>().ok());
    match parsed {
        Some(_) => Step {
            found: Some((s, e, ent::IP)),
            next: e,
        },
        None => miss,
    }
}

/// IBAN whose check digits start at `t` (the country code is the two capitals before it).
pub(crate) fn iban(hay: &[u8], t: usize, lo: usize) -> Option<(usize, usize)> {
    if t < lo + 2 {
        return None;
    }
    let s = t - 2;
    let cc = hay.get(s..t)?;
    if !cc.iter().all(u8::is_ascii_uppercase) || glued_before(hay, s) {
        return None;
    }
    let want = iban_len(cc)?;
    let mut compact = [0u8; 34];
    let mut n = 0;
    let mut i = s;
    while n < want {
        let b = at(hay, i);
        if b.is_ascii_uppercase() || b.is_ascii_digit() {
            *compact.get_mut(n)? = b;
            n += 1;
            i += 1;
        } else if b == b' ' && n >= 4 && n % 4 == 0 && at(hay, i + 1).is_ascii_alphanumeric() {
            i += 1;
        } else {
            return None;
        }
    }
    if glued_after(hay, i) {
        return None;
    }
    iban_ok(compact.get(..n)?).then_some((s, i))
}
