//! Bare ten-digit phone numbers (`Call me at 2025550143`): strict NANP, and a phone word first.
//!
//! Ten digits in a row are far more often an order, ticket, account or tracking number, an id
//! or a Unix timestamp than a phone number, so such a run counts as a phone only when both
//! hold: the digits are a strict NANP number — area code and exchange start with 2–9 and are
//! not N11, the area code is not N9X (reserved) — and a phone word (`phone`, `tel.`, `call`,
//! `mobile`, `Telefon`, `téléphone`, `móvil`, `телефон`, `電話`, …) comes right before it,
//! followed by at most two filler words (`number`, `me at`, `no.`, `unter`, …) and separators.
//! Anything else in between cancels it: another word (`call about order 2025550143`), a digit, a
//! sentence end (`call. 2025550143`), the edge of a replacement. Timestamps (`1717171717`)
//! fail the area code anyway. Eleven digits with a leading `1` and other countries' bare
//! numbers are not covered.
//!
//! Determinism: the words are read within `CONTEXT_BYTES` before the number and never left of
//! the scanner's `lo` (the end of the previous built-in finding). A replacement left of the
//! number ends the reading (`]`, `*`, `@` are no word or separator), just as that finding's
//! end did before redaction; so the stream and a second pass over redacted text decide alike.

use super::fold::{fold_char, Fold};

/// How far left of a bare number its phone word may start.
const CONTEXT_BYTES: usize = 48;

/// Words that announce a phone number, folded and lowercase. `true`: also abbreviated with a
/// period (`Tel.`).
const PHONE_WORDS: &[(&str, bool)] = &[
    ("phone", false),
    ("telephone", false),
    ("tel", true),
    ("ph", true),
    ("call", false),
    ("dial", false),
    ("reach", false),
    ("contact", false),
    ("mobile", false),
    ("mob", true),
    ("cell", false),
    ("cellphone", false),
    ("fax", false),
    ("sms", false),
    ("whatsapp", false),
    ("telefon", false),
    ("telefonnummer", false),
    ("rufnummer", false),
    ("handy", false),
    ("handynummer", false),
    ("mobil", false),
    ("mobilnummer", false),
    ("anrufen", false),
    ("téléphone", false),
    ("tél", true),
    ("portable", false),
    ("appelez", false),
    ("appeler", false),
    ("teléfono", false),
    ("móvil", false),
    ("celular", false),
    ("llame", false),
    ("llámame", false),
    ("telefono", false),
    ("cellulare", false),
    ("chiamami", false),
    ("telefone", false),
    ("ligue", false),
    ("телефон", false),
    ("тел", true),
    ("позвоните", false),
    ("電話", false),
    ("電話番号", false),
    ("电话", false),
    ("手机", false),
    ("携帯", false),
];

/// Words allowed between a phone word and the number (at most two), folded and lowercase.
/// `true`: also abbreviated with a period (`no.`).
const FILLER_WORDS: &[(&str, bool)] = &[
    ("number", false),
    ("no", true),
    ("nr", true),
    ("num", true),
    ("is", false),
    ("me", false),
    ("us", false),
    ("at", false),
    ("on", false),
    ("to", false),
    ("by", false),
    ("via", false),
    ("my", false),
    ("our", false),
    ("your", false),
    ("the", false),
    ("nummer", false),
    ("ist", false),
    ("unter", false),
    ("mich", false),
    ("uns", false),
    ("meine", false),
    ("au", false),
    ("est", false),
    ("numéro", false),
    ("mon", false),
    ("al", false),
    ("es", false),
    ("número", false),
    ("mi", false),
    ("numero", false),
    ("номер", false),
];

fn at(hay: &[u8], i: usize) -> u8 {
    hay.get(i).copied().unwrap_or(0)
}

/// Strict NANP: `NXX NXX XXXX`, N = 2–9, neither part N11, area code not N9X.
pub(crate) fn strict_nanp(d: &[u8]) -> bool {
    let n = |b: &u8| (b'2'..=b'9').contains(b);
    match d {
        [a, b, c, e, f, g, _, _, _, _] => {
            d.iter().all(u8::is_ascii_digit)
                && n(a)
                && *b != b'9'
                && (*b, *c) != (b'1', b'1')
                && n(e)
                && (*f, *g) != (b'1', b'1')
        }
        _ => false,
    }
}

/// Letters of a word: ASCII letters and any non-ASCII byte (words of other scripts).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphabetic() || b >= 0x80
}

fn folded(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(|c| {
        let (a, b) = match fold_char(c) {
            Fold::Same => (c.to_ascii_lowercase(), None),
            Fold::To(f) => (f, None),
            Fold::Ss => ('s', Some('s')),
        };
        std::iter::once(a).chain(b)
    })
}

/// `Some(abbreviation allowed)` when `word` is in `list`.
fn lookup(list: &[(&str, bool)], word: &str) -> Option<bool> {
    list.iter()
        .find(|(w, _)| folded(word).eq(w.chars()))
        .map(|&(_, abbr)| abbr)
}

/// Whether a phone word, then at most two filler words, stands right before `start`, read no
/// further left than `lo`.
pub(crate) fn phone_word_before(hay: &[u8], lo: usize, start: usize) -> bool {
    let floor = lo.max(start.saturating_sub(CONTEXT_BYTES));
    let mut end = start;
    for _ in 0..3 {
        let mut i = end;
        let mut period = false;
        while i > floor && matches!(at(hay, i - 1), b' ' | b':' | b',' | b'-' | b'(' | b'.') {
            period |= at(hay, i - 1) == b'.';
            i -= 1;
        }
        let word_end = i;
        while i > floor && is_word_byte(at(hay, i - 1)) {
            i -= 1;
        }
        // No word here, or one cut by the window (its first letters lie left of `floor`).
        if i == word_end || (i == floor && i > 0 && is_word_byte(at(hay, i - 1))) {
            return false;
        }
        let Some(word) = hay
            .get(i..word_end)
            .and_then(|w| std::str::from_utf8(w).ok())
        else {
            return false;
        };
        if let Some(abbr) = lookup(PHONE_WORDS, word) {
            return !period || abbr;
        }
        match lookup(FILLER_WORDS, word) {
            Some(abbr) if !period || abbr => end = i,
            _ => return false,
        }
    }
    false
}
