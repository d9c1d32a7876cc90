//! Pack-defined entities: one multi-pattern regex pass and one term-list pass.
//!
//! Every custom regex of a pack is compiled into a single `regex-automata` meta regex
//! (leftmost-first, one search finds the earliest match of any pattern), each match then checked
//! by its entity's validator and context words. Every term list goes into one Aho-Corasick
//! automaton (leftmost-longest) over the case-folded terms, searched in the text folded the
//! same way (`fold`: Unicode simple case folding, plus `ß` → `ss` and the Turkic i; ASCII text
//! is searched in place), whose matches count only when word-bounded. Both passes follow the scanner's determinism contract: a regex is required to
//! match at most `MAX_CUSTOM_MATCH` bytes, context words are looked for within `CONTEXT_WINDOW`
//! bytes on either side, and terms are at most `MAX_TERM` bytes (a match at most 3 × that
//! after folding), so each decision reads a bounded window and the stream redactor can hold back a bounded tail.
//!
//! Neither pass reports a match lying inside a replacement the engine wrote (`[EMAIL_1]`,
//! `[EMAIL:1a2b3c4d]`), so a term such as `email` keeps redaction idempotent; a custom regex that
//! matches the `*` of masked text is not guarded against.
//!
//! Not done: context for term lists; case folding of context words beyond ASCII.

use aho_corasick::{AhoCorasick, Input as AcInput};
use regex_automata::{meta, Input};

use super::fold::Folded;
use super::scanner::{PassState, Raw};
use super::validators::custom_ok;
use crate::pack::Validator;

/// Longest match a custom regex may produce (checked at compile time).
pub(crate) const MAX_CUSTOM_MATCH: usize = 256;
/// Bytes on each side of a match searched for its context words.
pub(crate) const CONTEXT_WINDOW: usize = 64;
/// Longest term in a term list.
pub(crate) const MAX_TERM: usize = 128;

#[derive(Debug)]
pub(crate) struct RegexEntity {
    pub(crate) entity: u16,
    pub(crate) validator: Option<Validator>,
    pub(crate) context: Option<AhoCorasick>,
}

#[derive(Debug)]
pub(crate) struct RegexPass {
    pub(crate) re: meta::Regex,
    pub(crate) entities: Vec<RegexEntity>,
}

fn next_boundary(hay: &[u8], mut i: usize) -> usize {
    i += 1;
    while hay.get(i).is_some_and(|b| (b & 0xC0) == 0x80) {
        i += 1;
    }
    i
}

fn prev_char(hay: &[u8], i: usize) -> Option<char> {
    let from = i.saturating_sub(4);
    (from..i)
        .find_map(|k| std::str::from_utf8(hay.get(k..i)?).ok())
        .and_then(|s| s.chars().next_back())
}

fn next_char(hay: &[u8], i: usize) -> Option<char> {
    let to = (i + 4).min(hay.len());
    (i + 1..=to)
        .rev()
        .find_map(|k| std::str::from_utf8(hay.get(i..k)?).ok())
        .and_then(|s| s.chars().next())
}

/// No letter or digit directly before `s` or after `e`. The edges of a replacement count as
/// letters (`]` and `*` before, `[` and `*` after): the value it replaced was glued to its
/// neighbour, and redacting it must not unglue the neighbour (idempotence).
pub(crate) fn word_bounded(hay: &[u8], s: usize, e: usize) -> bool {
    let wordy = |c: Option<char>, glue: char| {
        c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '*' || c == glue)
    };
    !wordy(prev_char(hay, s), ']') && !wordy(next_char(hay, e), '[')
}

impl RegexPass {
    pub(crate) fn run(&self, hay: &[u8], st: &mut PassState, limit: usize, out: &mut Vec<Raw>) {
        while st.pos <= hay.len() {
            let Some(m) = self.re.search(&Input::new(hay).range(st.pos..)) else {
                st.pos = st.pos.max(limit);
                return;
            };
            if m.start() >= limit {
                st.pos = st.pos.max(limit);
                return;
            }
            let ok = self.entities.get(m.pattern().as_usize()).and_then(|ent| {
                let matched = hay.get(m.start()..m.end())?;
                let valid = ent.validator.is_none_or(|v| custom_ok(v, matched));
                let ctx = ent
                    .context
                    .as_ref()
                    .is_none_or(|ac| has_context(ac, hay, m.start(), m.end()));
                let redacted = inside_placeholder(hay, m.start(), m.end());
                (valid && ctx && !redacted).then_some(ent.entity)
            });
            match ok {
                Some(entity) if m.end() > m.start() => {
                    out.push(Raw {
                        start: m.start(),
                        end: m.end(),
                        entity,
                        pass: 1,
                    });
                    st.pos = m.end();
                }
                _ => st.pos = next_boundary(hay, m.start()),
            }
        }
    }
}

/// Whether `hay[s..e]` lies inside a replacement this engine wrote (`[EMAIL_1]`,
/// `[EMAIL:1a2b3c4d]`), so that a custom term like `email` cannot match redacted text again.
/// Reads at most `PLACEHOLDER_REACH` bytes on either side.
pub(crate) fn inside_placeholder(hay: &[u8], s: usize, e: usize) -> bool {
    let label = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_';
    let inner_byte = |b: u8| label(b) || b == b':' || (b'a'..=b'f').contains(&b);
    let mut l = s;
    while l > 0 && s - l < PLACEHOLDER_REACH && hay.get(l - 1).is_some_and(|&b| inner_byte(b)) {
        l -= 1;
    }
    if l == 0 || hay.get(l - 1) != Some(&b'[') {
        return false;
    }
    let mut r = e;
    while r < hay.len() && r - e < PLACEHOLDER_REACH && hay.get(r).is_some_and(|&b| b != b']') {
        r += 1;
    }
    let Some(inner) = hay.get(l..r).filter(|_| hay.get(r) == Some(&b']')) else {
        return false;
    };
    let hashed = inner.rsplit(|&b| b == b':').next().filter(|h| {
        h.len() == 8
            && h.iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    });
    let (name, ok_tail) = match hashed {
        Some(h) => (
            inner.get(..inner.len() - h.len() - 1).unwrap_or_default(),
            true,
        ),
        None => {
            let k = inner.iter().rposition(|&b| b == b'_').unwrap_or(0);
            let n = inner.get(k + 1..).unwrap_or_default();
            (
                inner.get(..k).unwrap_or_default(),
                !n.is_empty() && n.iter().all(u8::is_ascii_digit),
            )
        }
    };
    ok_tail && !name.is_empty() && name.iter().all(|&b| label(b))
}

/// How far `inside_placeholder` looks for the brackets around a match.
pub(crate) const PLACEHOLDER_REACH: usize = 64;

fn has_context(ac: &AhoCorasick, hay: &[u8], s: usize, e: usize) -> bool {
    let from = s.saturating_sub(CONTEXT_WINDOW);
    let to = (e + CONTEXT_WINDOW).min(hay.len());
    ac.find_iter(AcInput::new(hay).range(from..to))
        .any(|m| word_bounded(hay, m.start(), m.end()))
}

#[derive(Debug)]
pub(crate) struct TermPass {
    /// Over the case-folded terms (`fold::fold_term`), ASCII-case-insensitive.
    pub(crate) ac: AhoCorasick,
    /// Entity of each term, by pattern id.
    pub(crate) entity_of: Vec<u16>,
    /// The most text bytes any term can match (`fold::max_match_len`).
    pub(crate) max_match: usize,
}

impl TermPass {
    pub(crate) fn run(&self, hay: &[u8], st: &mut PassState, limit: usize, out: &mut Vec<Raw>) {
        let folded = Folded::new(hay, st.pos);
        let text: &[u8] = &folded.text;
        let mut at = folded.folded_offset(st.pos);
        while at < text.len() {
            let Some(m) = self.ac.find(AcInput::new(text).range(at..)) else {
                st.pos = st.pos.max(limit);
                return;
            };
            let (start, start_ok) = folded.hay_offset(m.start());
            if start >= limit {
                st.pos = st.pos.max(limit);
                return;
            }
            let (end, end_ok) = folded.hay_offset(m.end());
            match self.entity_of.get(m.pattern().as_usize()) {
                Some(&entity)
                    if start_ok
                        && end_ok
                        && word_bounded(hay, start, end)
                        && !inside_placeholder(hay, start, end) =>
                {
                    out.push(Raw {
                        start,
                        end,
                        entity,
                        pass: 2,
                    });
                    st.pos = end;
                    at = m.end();
                }
                _ => {
                    st.pos = next_boundary(hay, start);
                    at = folded.folded_offset(st.pos);
                }
            }
        }
        st.pos = st.pos.max(limit);
    }
}
