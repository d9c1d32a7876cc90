//! Digit clusters: phone numbers, payment cards, SSNs and IPv4 addresses.
//!
//! A digit that starts a word opens a *cluster*: digit groups joined by one separator each
//! (`-`, `.`, `/`, space, or the parentheses of `(555) 123-4567` and `+49 (0)30`), at most
//! `MAX_GROUPS` groups and `MAX_CLUSTER` bytes. The cluster, and sub-ranges of it split at
//! spaces, is classified by shape in a fixed order — IPv4, SSN, card, phone — so one span gets
//! one type (`078-05-1120` is an SSN and never also a phone). Validators decide cards (Luhn,
//! issuer, length) and SSNs (area, group, serial); phones are accepted only in plausible
//! structures: E.164 with `+` or `00`, NANP `(NXX) NXX-XXXX` and variants (area code 2–9;
//! the exchange is not checked, since `555-123-4567` is how people write example numbers), and
//! national trunk-0 numbers of 10–11 digits in groups of two or more. Dates, times, versions, prices (`$`, `€`, `£`),
//! ISBNs, bare order numbers and Unix timestamps match none of those shapes.
//!
//! A bare run of ten digits is a phone only as a strict NANP number right after a phone word
//! (`phone_context`); without that it is indistinguishable from order numbers, ids and
//! timestamps. Not covered: other bare numbers, vanity numbers (`1-800-FLOWERS`).

use super::phone_context::{phone_word_before, strict_nanp};
use super::scanner::{
    continues_after_separator, ent, glued_after as glued_right, glued_before, is_word, Step,
};
use super::validators::{card_issuer_ok, luhn, ssn_ok};

const MAX_GROUPS: usize = 12;
/// Longest cluster in bytes; bounds how far a numeric candidate reads.
pub(crate) const MAX_CLUSTER: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lead {
    None,
    Plus,
    Paren,
}

#[derive(Clone, Copy)]
struct Cluster {
    /// How far left of the cluster a rule may read (the scanner's `lo`).
    lo: usize,
    start: usize,
    lead: Lead,
    groups: [(usize, usize); MAX_GROUPS],
    /// `seps[k]` joins `groups[k]` and `groups[k + 1]`: b' ', b'-', b'.', b'/', b'(' or b')'.
    seps: [u8; MAX_GROUPS],
    n: usize,
}

fn at(hay: &[u8], i: usize) -> u8 {
    hay.get(i).copied().unwrap_or(0)
}

fn digit(hay: &[u8], i: usize) -> bool {
    at(hay, i).is_ascii_digit()
}

fn is_currency_before(hay: &[u8], t: usize) -> bool {
    let before = hay.get(..t).unwrap_or_default();
    matches!(before.last(), Some(b'$' | b'#'))
        || ["€", "£", "¥", "₹"]
            .iter()
            .any(|c| before.ends_with(c.as_bytes()))
}

/// Confirm the cluster opened by the digit at `t`.
pub(crate) fn confirm(hay: &[u8], t: usize, lo: usize) -> Step {
    let prev = if t > 0 { at(hay, t - 1) } else { 0 };
    if glued_before(hay, t) {
        // Inside a word (a hash, a SKU, `user1`): skip the rest of it, bounded.
        let mut i = t;
        while i < hay.len() && i - t < MAX_CLUSTER && is_word(at(hay, i)) {
            i += 1;
        }
        return Step::miss(i);
    }
    // `ref-555-…`, `v1.2`: digits glued to an identifier by one separator. The edge of a
    // replacement counts as part of an identifier (`[API_KEY_1]-800-…`), as it does in
    // `glued_before`, so redacting the identifier does not turn its tail into a phone.
    let glued_id = t >= 2 && matches!(prev, b'-' | b'.' | b'/' | b',') && glued_before(hay, t - 1);
    let mut c = parse(hay, t, lo);
    let end = c.groups.get(c.n.wrapping_sub(1)).map_or(t + 1, |g| g.1);
    if glued_id || is_currency_before(hay, c.start) {
        // The groups glued to the identifier or price are part of it; a space ends it.
        let k = c
            .seps
            .iter()
            .take(c.n.saturating_sub(1))
            .position(|&s| s == b' ');
        return Step::miss(k.map_or(end, |k| c.groups[k].1));
    }
    if c.start < t && glued_before(hay, c.start) {
        // `x+44…` or `f(555…`: an expression, not a phone number.
        return Step::miss(end);
    }
    let right_ok = !glued_after(hay, end);
    let mut found = first_finding(hay, &c, c.n, right_ok);
    if found.is_none() && c.lead == Lead::Paren {
        // `(4111 1111 1111 1111)`, `(123-45-6789)`, `(203.0.113.7)`: a parenthesis around a
        // value, not the area code of `(555) 123-4567`; classified without it.
        c = Cluster {
            lead: Lead::None,
            start: t,
            ..c
        };
        found = first_finding(hay, &c, c.n, right_ok);
    }
    if found.is_none() {
        found = ipv4_with_suffix(hay, &c);
    }
    match found {
        Some((i, j, kind)) => {
            let s = if i == 0 { c.start } else { c.groups[i].0 };
            let e = c.groups[j - 1].1;
            Step {
                found: Some((s, e, kind)),
                next: e,
            }
        }
        None => Step::miss(end),
    }
}

/// `10.1.2.3/24`, `10.1.2.3:8080`: an IPv4 address with a prefix length (0–32) or a port (1–5
/// digits). The address is the finding; the suffix stays, as it says nothing about whose address
/// it is (`[IP_ADDRESS_1]/24`).
fn ipv4_with_suffix(hay: &[u8], c: &Cluster) -> Option<(usize, usize, u16)> {
    if c.lead != Lead::None || c.n < 4 || c.seps.get(..3) != Some(b"...") {
        return None;
    }
    if classify(hay, c, 0, 4, true) != Some(ent::IP) {
        return None;
    }
    let end = c.groups[3].1;
    let suffix_end = if c.n == 5 && c.seps[3] == b'/' {
        let (s, e) = c.groups[4];
        let v = hay
            .get(s..e)?
            .iter()
            .fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
        (e - s <= 2 && v <= 32).then_some(e)?
    } else if c.n == 4 && at(hay, end) == b':' {
        let mut k = end + 1;
        while digit(hay, k) && k - end <= 6 {
            k += 1;
        }
        (2..=6).contains(&(k - end)).then_some(k)?
    } else {
        return None;
    };
    (!glued_after(hay, suffix_end)).then_some((0, 4, ent::IP))
}

/// Whether the byte at `end` glues a cluster ending there to what follows: a word, or one
/// separator and a word — or a replacement standing for one (`555-123-4567.[T_1]`).
fn glued_after(hay: &[u8], end: usize) -> bool {
    glued_right(hay, end)
        || at(hay, end) == b'@'
        || (matches!(at(hay, end), b':' | b',' | b'-' | b'.')
            && continues_after_separator(hay, end))
}

/// The first range of groups `i..j` among the first `n` groups of `c`, split at spaces, that
/// classifies: earliest start, then longest. `right_ok`: the range may end at group `n`.
///
/// A finding that starts after group 0 leaves the groups before it as a cluster of its own
/// once it is redacted (`07700 900253 [SSN_1]`); those are read again as such — a whole
/// cluster, not a part of a longer one — and a finding there comes first. So a second pass
/// over redacted text finds nothing new (idempotence).
fn first_finding(hay: &[u8], c: &Cluster, n: usize, right_ok: bool) -> Option<(usize, usize, u16)> {
    // A finding starts and ends at a space between groups, or at a slash: a card, phone or SSN
    // next to another number across a `/` (`4111 1111 1111 1111/12/25`, an expiry) is still
    // found, as it is once what stands on the other side is redacted (idempotence).
    let boundary = |sep: u8| matches!(sep, b' ' | b'/');
    for i in 0..n {
        if i > 0 && !boundary(c.seps[i - 1]) {
            continue;
        }
        for j in (i + 1..=n).rev() {
            if j < n && !boundary(c.seps[j - 1]) {
                continue;
            }
            if j == n && !right_ok {
                continue;
            }
            if let Some(kind) = classify(hay, c, i, j, i > 0 || j < n) {
                if i > 0 {
                    if let Some(head) = first_finding(hay, c, i, true) {
                        return Some(head);
                    }
                }
                return Some((i, j, kind));
            }
        }
    }
    None
}

fn parse(hay: &[u8], t: usize, lo: usize) -> Cluster {
    let (lead, start) = match t.checked_sub(1).map(|p| at(hay, p)) {
        Some(b'+') if t > lo => (Lead::Plus, t - 1),
        Some(b'(') if t > lo => (Lead::Paren, t - 1),
        _ => (Lead::None, t),
    };
    let mut c = Cluster {
        lo,
        start,
        lead,
        groups: [(0, 0); MAX_GROUPS],
        seps: [0; MAX_GROUPS],
        n: 0,
    };
    let limit = (t + MAX_CLUSTER).min(hay.len());
    let mut i = t;
    while c.n < MAX_GROUPS {
        let gs = i;
        while i < limit && digit(hay, i) {
            i += 1;
        }
        c.groups[c.n] = (gs, i);
        c.n += 1;
        let (sep, next) = match (at(hay, i), at(hay, i + 1)) {
            (b'-' | b'.' | b'/' | b' ' | b'(' | b')', d) if d.is_ascii_digit() => {
                (at(hay, i), i + 1)
            }
            (b' ', b'(') if digit(hay, i + 2) => (b'(', i + 2),
            (b')', b' ' | b'-') if digit(hay, i + 2) => (b')', i + 2),
            _ => break,
        };
        if next >= limit || c.n == MAX_GROUPS {
            break;
        }
        c.seps[c.n - 1] = sep;
        i = next;
    }
    c
}

/// `partial`: the range is a space-split part of a longer cluster. National trunk-0 numbers are
/// then refused: `0947 9801 86` inside a 22-digit tracking number is not a phone.
fn classify(hay: &[u8], c: &Cluster, i: usize, j: usize, partial: bool) -> Option<u16> {
    let gs = &c.groups[i..j];
    let seps = &c.seps[i..j - 1];
    let lead = if i == 0 { c.lead } else { Lead::None };
    let len = |k: usize| gs.get(k).map_or(0, |g| g.1 - g.0);
    let first = |k: usize| gs.get(k).map_or(0, |g| at(hay, g.0));
    let ndig: usize = gs.iter().map(|g| g.1 - g.0).sum();
    let all_seps = |allowed: &[u8]| seps.iter().all(|s| allowed.contains(s));
    let same_seps = seps.windows(2).all(|w| w[0] == w[1]);
    if lead == Lead::None {
        if gs.len() == 4 && all_seps(b".") {
            let octet = |k: usize| {
                let g = hay.get(gs[k].0..gs[k].1).unwrap_or_default();
                if !(1..=3).contains(&g.len()) {
                    return false;
                }
                let v = g.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
                v <= 255 && !(g.len() > 1 && g[0] == b'0')
            };
            if (0..4).all(octet) {
                return Some(ent::IP);
            }
            // Not an address: four dotted groups are a card or nothing (`4111.1111.1111.1111`).
            return (ndig == 16 && card_digits_ok(hay, gs)).then_some(ent::CARD);
        }
        if gs.len() == 3 && (len(0), len(1), len(2)) == (3, 2, 4) && same_seps && all_seps(b"- ") {
            let g = |k: usize| hay.get(gs[k].0..gs[k].1).unwrap_or_default();
            return ssn_ok(g(0), g(1), g(2)).then_some(ent::SSN);
        }
        if (13..=19).contains(&ndig)
            && same_seps
            && all_seps(b" -")
            && card_shape(gs)
            && card_digits_ok(hay, gs)
        {
            return Some(ent::CARD);
        }
    }
    if seps.contains(&b'/') {
        return None;
    }
    let nanp = |k: usize| {
        (len(k), len(k + 1), len(k + 2)) == (3, 3, 4) && gs.len() == k + 3 && first(k) >= b'2'
    };
    let trunk0 = !partial
        && first(0) == b'0'
        && (10..=11).contains(&ndig)
        && gs.len() >= 2
        && (2..=5).contains(&len(0))
        && (0..gs.len()).all(|k| len(k) >= 2);
    // `0049 30 1234567`: the international call prefix 00 spelled out instead of `+`.
    let intl00 = !partial
        && gs.len() >= 2
        && (3..=5).contains(&len(0))
        && hay
            .get(gs[0].0..gs[0].0 + 3)
            .is_some_and(|p| p.starts_with(b"00") && p[2] != b'0')
        && (10..=17).contains(&ndig)
        && all_seps(b" -");
    let phone = match lead {
        Lead::Plus => {
            let parens_balanced = seps.iter().filter(|&&s| s == b'(').count()
                == seps.iter().filter(|&&s| s == b')').count();
            let dots = seps.contains(&b'.');
            (8..=15).contains(&ndig)
                && first(0) != b'0'
                && (gs.len() == 1 || (1..=3).contains(&len(0)))
                && parens_balanced
                && (!dots || all_seps(b"."))
        }
        Lead::Paren => {
            seps.first() == Some(&b')')
                && all_seps(b") -.")
                && seps.iter().filter(|&&s| s == b')').count() == 1
                && (nanp(0) || trunk0)
        }
        Lead::None if seps.contains(&b'(') => {
            gs.len() == 4
                && len(0) == 1
                && first(0) == b'1'
                && seps.get(..2) == Some(b"()")
                && seps.get(2).is_some_and(|s| b" -.".contains(s))
                && nanp(1)
        }
        Lead::None => {
            (same_seps
                && all_seps(b" -.")
                && (nanp(0) || (len(0) == 1 && first(0) == b'1' && nanp(1))))
                || (trunk0 && all_seps(b" -"))
                || intl00
                || (!partial
                    && gs.len() == 1
                    && hay.get(gs[0].0..gs[0].1).is_some_and(strict_nanp)
                    && phone_word_before(hay, c.lo, gs[0].0))
        }
    };
    phone.then_some(ent::PHONE)
}

/// Printed card layouts: one block, blocks of four (last one 1–4), or Amex/Diners 4-6-5 / 4-6-4.
/// Whether the digits of `gs` (13 to 19 of them) pass the Luhn check and name a card issuer.
fn card_digits_ok(hay: &[u8], gs: &[(usize, usize)]) -> bool {
    let mut d = [0u8; 19];
    let mut n = 0;
    for g in gs {
        for &b in hay.get(g.0..g.1).unwrap_or_default() {
            if n == d.len() {
                return false;
            }
            d[n] = b;
            n += 1;
        }
    }
    (13..=19).contains(&n) && luhn(&d[..n]) && card_issuer_ok(&d[..n])
}

fn card_shape(gs: &[(usize, usize)]) -> bool {
    let mut lens = [0usize; MAX_GROUPS];
    for (l, g) in lens.iter_mut().zip(gs) {
        *l = g.1 - g.0;
    }
    match lens.get(..gs.len()).unwrap_or_default() {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [init @ .., last] if init.len() >= 3 => {
            init.iter().all(|&l| l == 4) && (1..=4).contains(last)
        }
        _ => false,
    }
}
