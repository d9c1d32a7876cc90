//! Obfuscated e-mail addresses: `john [at] example [dot] com`, `john(at)example.com`,
//! `john at example dot com`, found as the built-in entity `email`.
//!
//! Why a rule of its own: an address written to dodge scrapers is still personal data, and
//! it has no `@` to trigger on. The address is `LOCAL AT DOMAIN`: a local part as in a real
//! address, with a letter and ending in a letter or digit; an at marker — `(at)`, `[at]`, `{at}` or `<at>` in any letter case (bracketed), or
//! the bare word `at` — with at most three spaces or tabs on each side; and a domain of labels
//! (letters, digits, inner `-`) joined by `.`, a bracketed `dot` (same four brackets, at most
//! three blanks around) or the bare word `dot`. The span runs from the local part's first
//! character to the top-level domain's last, so redaction replaces all of it.
//!
//! Triggers, found by the key-literal automaton in the same scan: a bracketed `at` (the
//! address is read from it), and a written-out dot — bracketed, or `dot ` after a blank — for
//! the bare form, whose ` at ` is then looked for left of it (labels, blanks, `at`, blanks).
//! The bare word ` at ` itself is no trigger: it is one of the commonest words of prose.
//!
//! Precision guard. A bracketed marker is deliberate obfuscation: two or more labels and an
//! alphabetic top-level domain of 2–24 letters suffice. The bare word `at` is everywhere in
//! prose (`meet me at home`, `available at example.com`), so the bare form also needs a
//! written-out `dot` (bare or bracketed) somewhere in the domain, a top-level domain from
//! [`COMMON_TLDS`], and a local part of two or more characters that is not one of
//! [`BARE_STOP_WORDS`] (`look at the dot product`, `find us at example dot com`).
//!
//! Not found: markers in other mixed case (`(aT)`, `dOt`: the trigger literals are lower,
//! upper and title case), markers with blanks inside the brackets (`[ at ]`), a real `@` with a written-out
//! dot (`john@example dot com`), a written-out dot inside the local part (`john [dot] doe
//! [at] …`: the address is found from `doe`), and line breaks between the parts.
//!
//! Stream contract: [`email`] reports how far right it read ([`Decision::reach`]); a decision
//! taken on a prefix of a growing text whose reads all fell inside it is final. A finding
//! starts no further left of its trigger than three words with up to three blanks before each
//! (labels, `at`, local part), never below the pass's `lo`; [`start_bound`],
//! [`before_bare_at`] and [`cut_off_start`] give the stream redactor the earliest start of a
//! finding not produced yet.

use super::scanner::{ent, glued_after, Step, GLUE_READ, MAX_RIGHT};

/// What a trigger literal of the obfuscated rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Obfuscation {
    /// `(at)`, `[at]`, `{at}`, `<at>`: the address is read from here, right and left.
    BracketedAt,
    /// `(dot)`, `[dot]`, … or `dot ` after a blank: the first written-out dot of an address
    /// with a bare ` at `, which is looked for left of it.
    WrittenDot,
}

/// How the at marker of a candidate is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtMarker {
    /// ` at ` (`t` is its first blank).
    Bare,
    /// `(at)`, `[at]`, `{at}`, `<at>`.
    Bracketed,
}

/// Length of an at marker (` at `, `[at]`).
const MARKER_LEN: usize = 4;

const BRACKETS: [(u8, u8); 4] = [(b'(', b')'), (b'[', b']'), (b'{', b'}'), (b'<', b'>')];
const CASES: [fn(&str) -> String; 3] = [str::to_owned, str::to_ascii_uppercase, title_case];

fn title_case(w: &str) -> String {
    let mut c = w.to_owned();
    if let Some(first) = c.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    c
}

/// The trigger literals of the obfuscated rule, each with its kind: bracketed `at` and `dot`,
/// and `dot ` (whose blank before is checked on confirmation), in lower, upper and title case.
/// Why not ` at `: the word is so common in prose (`meet at noon`, `that `) that triggering on
/// it cost 40% of the scan speed on clean text; the bare form needs a written-out dot anyway,
/// and `dot` is rare.
pub(crate) fn literals() -> Vec<(String, Obfuscation)> {
    // The case variants of one marker stay together: the packed search buckets patterns by
    // the order they come in, and this order keeps dense text (many digits, brackets) a third
    // faster than cases in the outer loop (measured with the automaton alone).
    let mut out = Vec::new();
    for (word, kind) in [
        ("at", Obfuscation::BracketedAt),
        ("dot", Obfuscation::WrittenDot),
    ] {
        for (open, close) in BRACKETS {
            let (o, c) = (char::from(open), char::from(close));
            for case in CASES {
                out.push((format!("{o}{}{c}", case(word)), kind));
            }
        }
    }
    for case in CASES {
        out.push((format!("{} ", case("dot")), Obfuscation::WrittenDot));
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
/// marker (for the bare form, two besides its own).
fn local_end(hay: &[u8], t: usize, marker: AtMarker, lo: usize) -> usize {
    match marker {
        AtMarker::Bare => {
            let mut e = t;
            while e > lo && t - e < MAX_BLANKS - 1 && hay.get(e - 1).copied().is_some_and(is_blank)
            {
                e -= 1;
            }
            e
        }
        AtMarker::Bracketed => blanks_start(hay, t, lo),
    }
}

/// The obfuscated address around the trigger literal of kind `kind` at `t`. `lo` and
/// `lo_is_finding` as for a real address (`tokens::email`): no byte left of `lo` is part of
/// it, and the local part starts at `lo` when `lo` is the end of a finding just made.
///
/// Not inlined: its triggers are rare, and inlined into the scan loop it pushed the
/// confirmation of digits out of it (`perf`: `numeric::confirm` became a call per digit
/// trigger), which cost dense text 5%.
#[inline(never)]
pub(crate) fn email(
    hay: &[u8],
    t: usize,
    kind: Obfuscation,
    lo: usize,
    lo_is_finding: bool,
) -> Decision {
    let mut r = Reader { hay, far: t };
    let step = match kind {
        Obfuscation::BracketedAt => parse(&mut r, t, AtMarker::Bracketed, lo, lo_is_finding),
        Obfuscation::WrittenDot => match bare_at_before(hay, t, lo) {
            Some(m) => {
                let step = parse(&mut r, m, AtMarker::Bare, lo, lo_is_finding);
                match step.found {
                    Some(_) => step,
                    None => Step::miss(t + 1),
                }
            }
            None => Step::miss(t + 1),
        },
    };
    Decision { step, reach: r.far }
}

/// The bare ` at ` before the written-out dot at `t` (a bracket, or the `d` of `dot `): blanks,
/// labels (letters, digits, `-`, `.`), one to three blanks, `at` in any case, a blank. Returns
/// the offset of that last blank, where [`parse`] expects a bare marker.
fn bare_at_before(hay: &[u8], t: usize, lo: usize) -> Option<usize> {
    let at = |i: usize| hay.get(i).copied().unwrap_or(0);
    let bare_dot = at(t).eq_ignore_ascii_case(&b'd');
    let mut k = t;
    while k > lo && t - k < MAX_BLANKS && is_blank(at(k - 1)) {
        k -= 1;
    }
    if bare_dot && k == t {
        return None;
    }
    let labels_end = k;
    while k > lo && (is_label(at(k - 1)) || at(k - 1) == b'.') {
        k -= 1;
    }
    if k == labels_end {
        return None;
    }
    let after_at = k;
    while k > lo && after_at - k < MAX_BLANKS && is_blank(at(k - 1)) {
        k -= 1;
    }
    if k == after_at || k < lo + 3 {
        return None;
    }
    let word = hay.get(k - 2..k)?;
    (word.eq_ignore_ascii_case(b"at") && is_blank(at(k - 3))).then_some(k - 3)
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
    // A letter: a digits-only local part is rare in an obfuscated address, and the last four
    // digits a masked card keeps (`**** 1111 [at] …`) must not become one.
    if local.windows(2).any(|w| w == b"..") || !local.iter().any(u8::is_ascii_alphabetic) {
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

/// The bare form's local part: two or more characters, not a stop word.
fn bare_local_ok(local: &[u8]) -> bool {
    local.len() >= 2 && !lower_in(local, BARE_STOP_WORDS)
}

/// Smallest offset an address found from the trigger literal of kind `kind` at `t` can start
/// at: the word before up to three blanks for a bracketed `at` (its local part); for a
/// written-out dot, the third such word (labels, `at`, local part). Never below `lo`.
pub(crate) fn start_bound(hay: &[u8], t: usize, kind: Obfuscation, lo: usize) -> usize {
    let words = match kind {
        Obfuscation::BracketedAt => 1,
        Obfuscation::WrittenDot => 3,
    };
    let mut s = t;
    for _ in 0..words {
        s = word_start(hay, blanks_start(hay, s, lo), lo);
    }
    s
}

/// For a trigger of another entity in the word starting at `w`: when that word may be the
/// labels after a bare ` at ` (one to three blanks, then the word `at`), the address a written
/// dot later in the text completes starts at the word before `at`.
pub(crate) fn before_bare_at(hay: &[u8], w: usize, lo: usize) -> usize {
    match at_word_before(hay, w, lo) {
        Some(a) => word_start(hay, blanks_start(hay, a, lo), lo),
        None => w,
    }
}

/// Smallest offset an address can start at whose trigger is cut off by the end of a growing
/// `hay` (not found yet). With `w0` the last word (maybe empty) and `w1`, `w2`, `w3` the words
/// before it, each separated by one to three blanks: `w1` when `w0` may still become an at
/// marker (empty, `a`, `at`, or a bracket and that, in any case) and `w1` ends in a letter or
/// digit (`john [a…`, `john at`); the word before `at` when `w1` or `w2` is the word `at`
/// (`john at exa…`, `john at example d…`: the written-out dot is still to come); otherwise
/// `w0`, as for any trigger not received yet.
pub(crate) fn cut_off_start(hay: &[u8], lo: usize) -> usize {
    // Words are read right to left and only as far as a rule needs them: this runs after
    // every push that leaves no trigger, and `w2`, `w3` matter only next to an `at`.
    let is_at = |s: usize, e: usize| hay.get(s..e).is_some_and(|w| w.eq_ignore_ascii_case(b"at"));
    let ends_alnum = |e: usize| e > 0 && hay.get(e - 1).is_some_and(u8::is_ascii_alphanumeric);
    let w0 = word_start(hay, hay.len(), lo);
    let Some(e1) = word_end_before(hay, w0, lo) else {
        return w0;
    };
    let w1 = word_start(hay, e1, lo);
    let last = hay.get(w0..).unwrap_or_default();
    let unbracketed = match last.first() {
        Some(b) if BRACKETS.iter().any(|(o, _)| o == b) => &last[1..],
        _ => last,
    };
    let marker_prefix = unbracketed.len() <= 2
        && unbracketed
            .iter()
            .zip(b"at")
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
    let mut best = if marker_prefix && ends_alnum(e1) {
        w1
    } else {
        w0
    };
    let Some(e2) = word_end_before(hay, w1, lo) else {
        return best;
    };
    let w1_at = is_at(w1, e1);
    // `w2` can be `at` only if it ends in `at`.
    if !w1_at && !is_at(e2.saturating_sub(2), e2) {
        return best;
    }
    let w2 = word_start(hay, e2, lo);
    if w1_at && ends_alnum(e2) {
        best = best.min(w2);
    }
    if is_at(w2, e2) {
        if let Some(e3) = word_end_before(hay, w2, lo).filter(|&e3| ends_alnum(e3)) {
            best = best.min(word_start(hay, e3, lo));
        }
    }
    best
}

/// The end of the word one to three blanks before the word starting at `start`, when there is
/// one: no line break, nothing below `lo`.
fn word_end_before(hay: &[u8], start: usize, lo: usize) -> Option<usize> {
    let k = blanks_start(hay, start, lo);
    let none = k == start || k == lo || hay.get(k - 1).is_some_and(u8::is_ascii_whitespace);
    (!none).then_some(k)
}

/// The start of the word `at` (any case) that stands one to three blanks before `w`.
fn at_word_before(hay: &[u8], w: usize, lo: usize) -> Option<usize> {
    let k = blanks_start(hay, w, lo);
    if k == w || k < lo + 2 {
        return None;
    }
    let a = k - 2;
    let whole = a > lo && hay.get(a - 1).copied().is_some_and(is_blank);
    (whole && hay.get(a..k)?.eq_ignore_ascii_case(b"at")).then_some(a)
}

/// Where the run of at most three blanks ending at `s` starts.
fn blanks_start(hay: &[u8], s: usize, lo: usize) -> usize {
    let mut k = s;
    while k > lo && s - k < MAX_BLANKS && hay.get(k - 1).copied().is_some_and(is_blank) {
        k -= 1;
    }
    k
}

fn word_start(hay: &[u8], mut s: usize, lo: usize) -> usize {
    while s > lo && !hay.get(s - 1).is_some_and(u8::is_ascii_whitespace) {
        s -= 1;
    }
    s
}
