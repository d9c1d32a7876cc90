//! Obfuscated e-mail addresses: `john [at] example [dot] com`, `john(at)example.com`,
//! `john at example dot com`, found as the built-in entity `email`.
//!
//! Why a rule of its own: an address written to dodge scrapers is still personal data, and
//! it has no `@` to trigger on. The trigger is an *at marker* — `(at)`, `[at]`, `{at}` or
//! `<at>` in any letter case (bracketed), or the bare word ` at ` — found by the key-literal
//! automaton in the same scan, so prose costs nothing more than one automaton pass. The
//! address around it is `LOCAL MARKER DOMAIN`: a local part as in a real address, at most
//! three spaces or tabs on each side of the marker, and a domain of labels (letters, digits,
//! inner `-`) joined by `.`, a bracketed `dot` (same four brackets, any case, at most three
//! blanks around) or the bare word ` dot `. The span runs from the local part's first
//! character to the top-level domain's last, so redaction replaces all of it.
//!
//! Precision guard. A bracketed marker is deliberate obfuscation: two or more labels and an
//! alphabetic top-level domain of 2–24 letters suffice. The bare word `at` is everywhere in
//! prose (`meet me at home`, `available at example.com`), so the bare form also needs a
//! written-out `dot` (bare or bracketed) somewhere in the domain, a top-level domain from
//! [`COMMON_TLDS`], and a local part of two or more characters that is not one of
//! [`BARE_STOP_WORDS`] (`look at the dot product`, `find us at example dot com`).
//!
//! Not found: markers with blanks inside the brackets (`[ at ]`), a real `@` with a written-out
//! dot (`john@example dot com`), a written-out dot inside the local part (`john [dot] doe
//! [at] …`: the address is found from `doe`), and line breaks between the parts.
//!
//! Stream contract: [`email`] reports how far right it read ([`Decision::reach`]); a decision
//! taken on a prefix of a growing text whose reads all fell inside it is final. A finding
//! starts at most three blanks and one local part left of its marker, never below the pass's
//! `lo` ([`start_bound`], [`cut_off_start`]).

use super::scanner::{ent, glued_after, Step, GLUE_READ, MAX_RIGHT};

/// How an at marker is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtMarker {
    /// ` at ` (the literal includes the space on each side).
    Bare,
    /// `(at)`, `[at]`, `{at}`, `<at>`.
    Bracketed,
}

/// Length of every at-marker literal.
pub(crate) const MARKER_LEN: usize = 4;

const BRACKETS: [(u8, u8); 4] = [(b'(', b')'), (b'[', b']'), (b'{', b'}'), (b'<', b'>')];
const AT_CASES: [&str; 4] = ["at", "AT", "At", "aT"];

/// The at-marker literals for the trigger automaton, each with its form.
pub(crate) fn markers() -> Vec<(String, AtMarker)> {
    let mut out = Vec::new();
    for at in AT_CASES {
        for (open, close) in BRACKETS {
            let lit = format!("{}{at}{}", char::from(open), char::from(close));
            out.push((lit, AtMarker::Bracketed));
        }
        out.push((format!(" {at} "), AtMarker::Bare));
    }
    out
}

/// Top-level domains the bare form accepts: common generic and country domains, without
/// those that are English words (`at`, `in`, `it`, `me`, `no`, `us`, …), which the bare form
/// would otherwise read in prose.
pub(crate) const COMMON_TLDS: &[&str] = &[
    "ai", "app", "ar", "au", "biz", "br", "ca", "ch", "cl", "cn", "co", "com", "cz", "de", "dev",
    "dk", "edu", "es", "eu", "fi", "fr", "gov", "gr", "hk", "hu", "ie", "il", "info", "int", "io",
    "jp", "kr", "mil", "mx", "net", "nl", "nz", "org", "pl", "pt", "ro", "ru", "se", "sg", "tr",
    "tw", "ua", "uk", "za",
];

/// Words that stand before a bare ` at ` in prose and are not the local part of an address
/// (`find us at example dot com` names a site, not `us@…`). Sorted, lowercase.
pub(crate) const BARE_STOP_WORDS: &[&str] = &[
    "all",
    "also",
    "am",
    "and",
    "are",
    "arrive",
    "arrived",
    "available",
    "based",
    "be",
    "been",
    "best",
    "but",
    "buy",
    "check",
    "even",
    "find",
    "found",
    "go",
    "he",
    "her",
    "here",
    "him",
    "home",
    "hosted",
    "is",
    "it",
    "just",
    "least",
    "live",
    "lives",
    "living",
    "ll",
    "located",
    "look",
    "looked",
    "looking",
    "looks",
    "me",
    "meet",
    "met",
    "most",
    "not",
    "office",
    "once",
    "one",
    "online",
    "only",
    "or",
    "re",
    "she",
    "shop",
    "site",
    "stay",
    "staying",
    "still",
    "them",
    "there",
    "they",
    "us",
    "ve",
    "visit",
    "was",
    "we",
    "website",
    "were",
    "work",
    "working",
    "works",
    "you",
];

/// Blanks allowed around a marker or a written-out dot.
const MAX_BLANKS: usize = 3;
/// A candidate reads no further right of its marker than this, written-out dots included.
const MAX_DOMAIN_READ: usize = MAX_RIGHT - 24;

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_label(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// The outcome of one candidate, and one past the rightmost byte its decision read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) step: Step,
    pub(crate) reach: usize,
}

/// Reads `hay` and remembers the rightmost offset asked for, in bounds or not.
struct Reader<'a> {
    hay: &'a [u8],
    far: usize,
}

impl Reader<'_> {
    fn at(&mut self, i: usize) -> u8 {
        self.far = self.far.max(i + 1);
        self.hay.get(i).copied().unwrap_or(0)
    }

    /// Blanks from `i`, at most `max`; returns their count.
    fn blanks(&mut self, i: usize, max: usize) -> usize {
        let mut n = 0;
        while n < max && is_blank(self.at(i + n)) {
            n += 1;
        }
        n
    }

    /// Whether the three bytes at `i` spell `dot` in any letter case.
    fn dot_word(&mut self, i: usize) -> bool {
        [b'd', b'o', b't']
            .iter()
            .enumerate()
            .all(|(k, &c)| self.at(i + k).eq_ignore_ascii_case(&c))
    }

    /// A label separator at `i`: `.`, a bracketed `dot` with blanks around, or the bare word
    /// ` dot `. Returns where the next label would start and whether the dot was written out.
    fn separator(&mut self, i: usize) -> Option<(usize, bool)> {
        if self.at(i) == b'.' {
            return Some((i + 1, false));
        }
        let pre = self.blanks(i, MAX_BLANKS);
        let j = i + pre;
        let open = self.at(j);
        if let Some(&(_, close)) = BRACKETS.iter().find(|(o, _)| *o == open) {
            if self.dot_word(j + 1) && self.at(j + 4) == close {
                let k = j + 5;
                return Some((k + self.blanks(k, MAX_BLANKS), true));
            }
            return None;
        }
        if pre > 0 && self.dot_word(j) && is_blank(self.at(j + 3)) {
            let k = j + 4;
            return Some((k + self.blanks(k, MAX_BLANKS - 1), true));
        }
        None
    }
}

/// Where the local part of a marker at `t` ends: after at most three blanks left of the
/// marker (for the bare form, two besides its own space).
fn local_end(hay: &[u8], t: usize, marker: AtMarker, lo: usize) -> usize {
    let max = match marker {
        AtMarker::Bare => MAX_BLANKS - 1,
        AtMarker::Bracketed => MAX_BLANKS,
    };
    let mut e = t;
    while e > lo && t - e < max && hay.get(e - 1).copied().is_some_and(is_blank) {
        e -= 1;
    }
    e
}

/// The obfuscated address around the at marker at `t`. `lo` and `lo_is_finding` as for a
/// real address (`tokens::email`): the local part reaches left no further than `lo`, and
/// starts there when `lo` is the end of a finding just made.
pub(crate) fn email(
    hay: &[u8],
    t: usize,
    marker: AtMarker,
    lo: usize,
    lo_is_finding: bool,
) -> Decision {
    let mut r = Reader { hay, far: t };
    let step = parse(&mut r, t, marker, lo, lo_is_finding);
    Decision { step, reach: r.far }
}

fn parse(r: &mut Reader<'_>, t: usize, marker: AtMarker, lo: usize, lo_is_finding: bool) -> Step {
    let miss = Step::miss(t + 1);
    let hay = r.hay;
    let at = |i: usize| hay.get(i).copied().unwrap_or(0);
    // Left: the local part, exactly as a real address's (`tokens::email`), ending in a letter
    // or digit.
    let e = local_end(hay, t, marker, lo);
    let mut s = e;
    while s > lo && is_local(at(s - 1)) {
        s -= 1;
    }
    if s > 0 && is_local(at(s - 1)) && !(s == lo && lo_is_finding) {
        return miss;
    }
    while s < e && matches!(at(s), b'.' | b'-' | b'+' | b'_') {
        s += 1;
    }
    if s == e || !at(e - 1).is_ascii_alphanumeric() {
        return miss;
    }
    let Some(local) = hay.get(s..e) else {
        return miss;
    };
    if local.windows(2).any(|w| w == b"..") {
        return miss;
    }
    if marker == AtMarker::Bare && !bare_local_ok(local) {
        return miss;
    }
    // Right: labels joined by separators.
    let mut i = t + MARKER_LEN;
    i += r.blanks(
        i,
        match marker {
            AtMarker::Bare => MAX_BLANKS - 1,
            AtMarker::Bracketed => MAX_BLANKS,
        },
    );
    let mut labels = 0;
    let mut written_dots = 0;
    let mut last_label;
    loop {
        let ls = i;
        while is_label(r.at(i)) {
            i += 1;
            if i - t > MAX_DOMAIN_READ {
                return miss;
            }
        }
        if i == ls || i - ls > 63 || at(ls) == b'-' || at(i - 1) == b'-' {
            return miss;
        }
        labels += 1;
        last_label = (ls, i);
        match r.separator(i) {
            Some((next, written)) if r.at(next).is_ascii_alphanumeric() => {
                written_dots += usize::from(written);
                i = next;
            }
            // `a [at] b [dot] io [dot] [T_1]`: a label that a replacement now stands for
            // followed; the address stays what it was, none (as for `a@b.io.[T_1]`).
            Some((next, _)) if matches!(r.at(next), b'[' | b'*') => return miss,
            _ => break,
        }
    }
    let tld = hay.get(last_label.0..last_label.1).unwrap_or_default();
    if labels < 2 || !(2..=24).contains(&tld.len()) || !tld.iter().all(u8::is_ascii_alphabetic) {
        return miss;
    }
    if marker == AtMarker::Bare && (written_dots == 0 || !common_tld(tld)) {
        return miss;
    }
    r.far = r.far.max(i + GLUE_READ);
    if glued_after(hay, i) || matches!(at(i), b'@' | b'-') {
        return miss;
    }
    Step {
        found: Some((s, i, ent::EMAIL)),
        next: i,
    }
}

fn lower_in(word: &[u8], list: &[&str]) -> bool {
    let mut buf = [0u8; 16];
    let Some(dst) = buf.get_mut(..word.len()) else {
        return false;
    };
    for (d, s) in dst.iter_mut().zip(word) {
        *d = s.to_ascii_lowercase();
    }
    list.binary_search_by(|w| w.as_bytes().cmp(dst)).is_ok()
}

fn common_tld(tld: &[u8]) -> bool {
    lower_in(tld, COMMON_TLDS)
}

/// The bare form's local part: two or more characters, one a letter, not a stop word.
fn bare_local_ok(local: &[u8]) -> bool {
    local.len() >= 2
        && local.iter().any(u8::is_ascii_alphabetic)
        && !lower_in(local, BARE_STOP_WORDS)
}

/// Smallest offset an address whose marker starts at `t` can start at: at most three blanks
/// left, then the word before them (a superset of its local part), never below `lo`.
pub(crate) fn start_bound(hay: &[u8], t: usize, lo: usize) -> usize {
    let mut s = t;
    while s > lo && t - s < MAX_BLANKS && hay.get(s - 1).copied().is_some_and(is_blank) {
        s -= 1;
    }
    word_start(hay, s, lo)
}

fn word_start(hay: &[u8], mut s: usize, lo: usize) -> usize {
    while s > lo && !hay.get(s - 1).is_some_and(u8::is_ascii_whitespace) {
        s -= 1;
    }
    s
}

/// Smallest offset an address can start at whose marker is cut off by the end of a growing
/// `hay` (not found yet): when the last word could still become the start of a marker — it
/// is empty, `a`, `at`, or a bracket followed by that, in any case — and one to three blanks
/// stand between it and a letter or digit, the address may start at the word before them;
/// otherwise at the last word, as for any trigger not received yet.
pub(crate) fn cut_off_start(hay: &[u8], lo: usize) -> usize {
    let last = word_start(hay, hay.len(), lo);
    let word = hay.get(last..).unwrap_or_default();
    let unbracketed = match word.first() {
        Some(b) if BRACKETS.iter().any(|(o, _)| o == b) => &word[1..],
        _ => word,
    };
    let marker_prefix = unbracketed.len() <= 2
        && unbracketed
            .iter()
            .zip(b"at")
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
    if !marker_prefix {
        return last;
    }
    let mut s = last;
    while s > lo && last - s < MAX_BLANKS && hay.get(s - 1).copied().is_some_and(is_blank) {
        s -= 1;
    }
    let local_before = s < last && s > lo && hay.get(s - 1).is_some_and(u8::is_ascii_alphanumeric);
    if local_before {
        word_start(hay, s, lo)
    } else {
        last
    }
}
