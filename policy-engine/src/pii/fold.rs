//! Case folding for custom term lists: `Müller` matches `MÜLLER`, `ÇAĞRI` matches `Çağrı`.
//!
//! Rule: a term matches text that is equal to it after folding both, character by character,
//! with Unicode simple case folding (the `C` and `S` mappings of `CaseFolding.txt`, so `Σ`, `σ`
//! and `ς` are one letter, and so are `K`, `k` and the Kelvin sign), plus two additions a
//! term list of names wants: `ß` and `ẞ` fold to `ss` (`Straße` matches `STRASSE`), and the
//! Turkic `İ` and `ı` fold to `i`, so a Turkish name matches whichever locale cased it
//! (`ÇAĞRI` is `Çağrı` in Turkish and `Çağri` elsewhere). No other full foldings (`ﬁ`, `ŉ`),
//! no normalisation of combining marks (`u` + U+0308 is not `ü`).
//!
//! ASCII letters are never rewritten: the term automaton matches them ASCII-case-insensitively,
//! so text without a character that folds differently is searched in place, without a copy —
//! all ASCII text, and prose in caseless scripts. Otherwise the rest of the text is folded into
//! a copy with a sparse map back to the original bytes (only the characters that changed), and
//! a match counts only if it starts and ends on the folded image of a character boundary.
//!
//! Folding changes byte lengths (`K` U+212A is 3 bytes, `k` one), so a term can match more
//! text than it has bytes; [`max_match_len`] bounds that per term for the stream's look-ahead.

use std::borrow::Cow;

/// What folding makes of one character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    Same,
    To(char),
    /// `ß`, `ẞ` → `ss`.
    Ss,
}

/// Blocks without case mappings (Hebrew to Myanmar, Hangul Jamo to Ol Chiki, CJK, Hangul,
/// private use, the planes above 1): skipped without a table lookup. The `fold` tests check
/// that this is exact.
fn caseless(c: char) -> bool {
    matches!(
        u32::from(c),
        0x0590..=0x109F
            | 0x1100..=0x139F
            | 0x1400..=0x1C7F
            | 0x2E80..=0xA63F
            | 0xAC00..=0xFAFF
            | 0x1F000..=0x10FFFF
    )
}

fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// The fold of one character (see the module docs); ASCII is always `Same`. The basic Latin-1,
/// Greek and Cyrillic letters are computed, the rest looked up; the `fold` tests check every
/// character against `fold_cased`.
pub(crate) fn fold_char(c: char) -> Fold {
    let u = u32::from(c);
    let shifted = |by: u32| char::from_u32(u + by).map_or(Fold::Same, Fold::To);
    match u {
        0..=0x7F | 0xE0..=0xFF | 0x3B1..=0x3C1 | 0x3C3..=0x3C9 | 0x430..=0x45F => Fold::Same,
        0xC0..=0xDE if u != 0xD7 => shifted(0x20),
        0xDF => Fold::Ss,
        0x391..=0x3A9 if u != 0x3A2 => shifted(0x20),
        0x3C2 => Fold::To('σ'),
        0x400..=0x40F => shifted(0x50),
        0x410..=0x42F => shifted(0x20),
        _ if caseless(c) => Fold::Same,
        _ => fold_cased(c),
    }
}

/// `fold_char` without the shortcut for ASCII and caseless blocks.
pub(crate) fn fold_cased(c: char) -> Fold {
    match c {
        'ß' | 'ẞ' => return Fold::Ss,
        'İ' | 'ı' => return Fold::To('i'),
        // Simple foldings between lowercase letters, which no case mapping links.
        '\u{1FD3}' => return Fold::To('\u{0390}'),
        '\u{1FE3}' => return Fold::To('\u{03B0}'),
        '\u{FB05}' => return Fold::To('\u{FB06}'),
        _ => {}
    }
    // lowercase(uppercase(c)) over the single-character mappings is simple case folding up to
    // the choice of representative (`ς` → `Σ` → `σ`, `ſ` → `S` → `s`); a character whose
    // uppercase is several characters (`ŉ`, `ᾳ`) folds only from its capital, as in `S`.
    let up = single(c.to_uppercase()).unwrap_or(c);
    let low = single(up.to_lowercase()).unwrap_or(up);
    if low == c {
        Fold::Same
    } else {
        Fold::To(low)
    }
}

/// A term as the automaton stores it: every non-ASCII character folded.
pub(crate) fn fold_term(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    for c in term.chars() {
        match fold_char(c) {
            Fold::Same => out.push(c),
            Fold::To(f) => out.push(f),
            Fold::Ss => out.push_str("ss"),
        }
    }
    out
}

/// The most bytes of text a match of the folded term `folded` can span: each folded character
/// stands for at most this many original bytes (`k` for the 3-byte Kelvin sign, `s` for the
/// 3-byte `ẞ` when a match ends inside its `ss`, `i` for `İ` and `ı`, any other non-ASCII
/// letter for a 3-byte capital such as `Å` U+212B).
pub(crate) fn max_match_len(folded: &str) -> usize {
    folded
        .chars()
        .map(|c| match c {
            'k' | 'K' | 's' | 'S' => 3,
            'i' | 'I' => 2,
            c if c.is_ascii() => 1,
            c => c.len_utf8().max(3),
        })
        .sum()
}

/// The characters of `s` that folding changes, with their offsets: ASCII is skipped eight
/// bytes at a time, and the caseless blocks most prose of other scripts is written in (Hebrew
/// to Tibetan, CJK, Hangul) by the lead byte of each character, without decoding it.
pub(crate) fn changes(s: &str) -> impl Iterator<Item = (usize, char, Fold)> + '_ {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || loop {
        while let Some(Ok(word)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
            if u64::from_le_bytes(word) & 0x8080_8080_8080_8080 != 0 {
                break;
            }
            i += 8;
        }
        let lead = *b.get(i)?;
        match lead {
            0..=0x7F => i += 1,
            0xD7..=0xDF => i += 2,
            0xE0 | 0xE3..=0xE9 | 0xEB..=0xED => i += 3,
            _ => {
                let c = s.get(i..)?.chars().next()?;
                let at = i;
                i += c.len_utf8();
                let f = fold_char(c);
                if f != Fold::Same {
                    return Some((at, c, f));
                }
            }
        }
    })
}

/// One character whose folded bytes differ from its original bytes.
#[derive(Debug, Clone, Copy)]
struct Edit {
    /// Offset of its folded bytes in `Folded::text`.
    fold: usize,
    /// Its offset in the text that was folded.
    orig: usize,
    fold_len: usize,
    orig_len: usize,
}

/// `hay[base..]` folded, or `hay` itself (`base` 0, no edits) when nothing in `hay[from..]`
/// folds. Offsets into `text` map back to `hay` with [`Folded::hay_offset`].
#[derive(Debug)]
pub(crate) struct Folded<'h> {
    pub(crate) text: Cow<'h, [u8]>,
    base: usize,
    edits: Vec<Edit>,
}

impl<'h> Folded<'h> {
    pub(crate) fn new(hay: &'h [u8], mut from: usize) -> Self {
        let unchanged = Self {
            text: Cow::Borrowed(hay),
            base: 0,
            edits: Vec::new(),
        };
        // A stream pauses a pass at any byte; no match starts inside a character.
        while hay.get(from).is_some_and(|b| (b & 0xC0) == 0x80) {
            from += 1;
        }
        let rest = hay.get(from..).unwrap_or_default();
        if rest.is_ascii() {
            return unchanged;
        }
        // Text reaching the passes is UTF-8 (a `&str`, or its normalised copy); anything
        // else is searched as it is.
        let Ok(rest) = std::str::from_utf8(rest) else {
            return unchanged;
        };
        let mut changes = changes(rest).peekable();
        if changes.peek().is_none() {
            return unchanged;
        }
        let mut text = Vec::with_capacity(rest.len() + 8);
        let mut edits = Vec::new();
        let mut at = 0;
        let mut buf = [0u8; 4];
        for (i, c, f) in changes {
            text.extend_from_slice(rest.as_bytes().get(at..i).unwrap_or_default());
            let folded: &[u8] = match f {
                Fold::To(f) => f.encode_utf8(&mut buf).as_bytes(),
                _ => b"ss",
            };
            edits.push(Edit {
                fold: text.len(),
                orig: i,
                fold_len: folded.len(),
                orig_len: c.len_utf8(),
            });
            text.extend_from_slice(folded);
            at = i + c.len_utf8();
        }
        text.extend_from_slice(rest.as_bytes().get(at..).unwrap_or_default());
        Self {
            text: Cow::Owned(text),
            base: from,
            edits,
        }
    }

    /// The edit at or before folded offset `i`.
    fn edit_before(&self, i: usize) -> Option<&Edit> {
        let k = self.edits.partition_point(|e| e.fold <= i);
        self.edits.get(k.checked_sub(1)?)
    }

    /// The `hay` offset of folded offset `i`, and whether `i` is the image of a character
    /// boundary (not inside the folded bytes of one character, as the second `s` of `ß`).
    pub(crate) fn hay_offset(&self, i: usize) -> (usize, bool) {
        let rel = match self.edit_before(i) {
            Some(e) if i < e.fold + e.fold_len => return (self.base + e.orig, i == e.fold),
            Some(e) => e.orig + e.orig_len + (i - e.fold - e.fold_len),
            None => i,
        };
        (self.base + rel, true)
    }

    /// The folded offset of `hay` offset `p` (a character boundary at or after `base`).
    pub(crate) fn folded_offset(&self, p: usize) -> usize {
        let rel = p.saturating_sub(self.base);
        let k = self.edits.partition_point(|e| e.orig < rel);
        match k.checked_sub(1).and_then(|k| self.edits.get(k)) {
            Some(e) => e.fold + e.fold_len + rel.saturating_sub(e.orig + e.orig_len),
            None => rel,
        }
    }
}
