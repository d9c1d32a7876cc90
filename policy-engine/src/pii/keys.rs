//! API-key and secret-token confirmation, one rule per provider prefix.
//!
//! Why: vendor tokens carry a fixed literal prefix, so the built-in pass finds the prefix with
//! one Aho-Corasick automaton (leftmost-longest, so `sk-ant-` wins over `sk-`) and this module
//! checks the body: its alphabet, its length range, and that it contains a digit where random
//! tokens always do — `sk-learn-the-basics` is prose, not a key. Generic high-entropy strings
//! without a known prefix are deliberately not reported: they cost precision (git SHAs, UUIDs,
//! base64 blobs) for little recall.

use super::scanner::{ent, glued_after, glued_before, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alphabet {
    /// `[A-Za-z0-9_-]`
    Url,
    /// `[A-Za-z0-9]`
    Alnum,
    /// `[A-Z0-9]`
    Upper,
    /// `[A-Za-z0-9_]`
    Word,
    /// `[A-Za-z0-9-]`
    Dash,
}

impl Alphabet {
    const fn has(self, b: u8) -> bool {
        match self {
            Self::Url => b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
            Self::Alnum => b.is_ascii_alphanumeric(),
            Self::Upper => b.is_ascii_uppercase() || b.is_ascii_digit(),
            Self::Word => b.is_ascii_alphanumeric() || b == b'_',
            Self::Dash => b.is_ascii_alphanumeric() || b == b'-',
        }
    }

    /// Membership of every byte, for the loop over a key's body (a lookup per byte instead of
    /// a match on the alphabet per byte: 6 % of PII-dense scanning was that loop).
    const fn table(self) -> [bool; 256] {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = self.has(b as u8);
            b += 1;
        }
        t
    }

    fn members(self) -> &'static [bool; 256] {
        const URL: [bool; 256] = Alphabet::Url.table();
        const ALNUM: [bool; 256] = Alphabet::Alnum.table();
        const UPPER: [bool; 256] = Alphabet::Upper.table();
        const WORD: [bool; 256] = Alphabet::Word.table();
        const DASH: [bool; 256] = Alphabet::Dash.table();
        match self {
            Self::Url => &URL,
            Self::Alnum => &ALNUM,
            Self::Upper => &UPPER,
            Self::Word => &WORD,
            Self::Dash => &DASH,
        }
    }
}

#[derive(Debug)]
pub(crate) struct KeyRule {
    pub(crate) prefix: &'static str,
    alphabet: Alphabet,
    min: usize,
    max: usize,
    needs_digit: bool,
}

const fn rule(prefix: &'static str, alphabet: Alphabet, min: usize, max: usize) -> KeyRule {
    KeyRule {
        prefix,
        alphabet,
        min,
        max,
        needs_digit: true,
    }
}

/// The longest key literal (`github_pat_`).
pub(crate) const LONGEST_PREFIX: usize = 11;

/// Longest body any rule accepts; bounds how far a key candidate reads.
pub(crate) const MAX_BODY: usize = 200;

pub(crate) const RULES: &[KeyRule] = &[
    rule("sk-ant-", Alphabet::Url, 32, MAX_BODY),
    rule("sk-proj-", Alphabet::Url, 32, MAX_BODY),
    rule("sk-", Alphabet::Url, 20, MAX_BODY),
    rule("sk_live_", Alphabet::Alnum, 16, 128),
    rule("rk_live_", Alphabet::Alnum, 16, 128),
    KeyRule {
        prefix: "AKIA",
        alphabet: Alphabet::Upper,
        min: 16,
        max: 16,
        needs_digit: false,
    },
    KeyRule {
        prefix: "ASIA",
        alphabet: Alphabet::Upper,
        min: 16,
        max: 16,
        needs_digit: false,
    },
    rule("ghp_", Alphabet::Alnum, 30, 60),
    rule("gho_", Alphabet::Alnum, 30, 60),
    rule("ghu_", Alphabet::Alnum, 30, 60),
    rule("ghs_", Alphabet::Alnum, 30, 60),
    rule("ghr_", Alphabet::Alnum, 30, 60),
    rule("github_pat_", Alphabet::Word, 22, 120),
    rule("xoxb-", Alphabet::Dash, 10, MAX_BODY),
    rule("xoxp-", Alphabet::Dash, 10, MAX_BODY),
    rule("xoxa-", Alphabet::Dash, 10, MAX_BODY),
    rule("xoxr-", Alphabet::Dash, 10, MAX_BODY),
    rule("xoxs-", Alphabet::Dash, 10, MAX_BODY),
    KeyRule {
        prefix: "AIza",
        alphabet: Alphabet::Url,
        min: 35,
        max: 35,
        needs_digit: false,
    },
];

/// Confirm the key literal of rule `rule` found at `t`.
pub(crate) fn confirm(hay: &[u8], t: usize, rule: usize) -> Step {
    let Some(r) = RULES.get(rule) else {
        return Step::miss(t + 1);
    };
    let miss = Step::miss(t + 1);
    if glued_before(hay, t) || (t > 0 && hay.get(t - 1) == Some(&b'-')) {
        return miss;
    }
    let body_start = t + r.prefix.len();
    let members = r.alphabet.members();
    let end = hay.len().min(body_start + r.max + 1);
    let mut i = body_start;
    while let Some(&b) = hay.get(i).filter(|_| i < end) {
        if !members[usize::from(b)] {
            break;
        }
        i += 1;
    }
    // A trailing `-` or `_` is punctuation around the token, not part of it.
    while i > body_start
        && matches!(hay.get(i - 1), Some(b'-' | b'_'))
        && r.alphabet != Alphabet::Upper
    {
        i -= 1;
    }
    let body = hay.get(body_start..i).unwrap_or_default();
    if body.len() < r.min || body.len() > r.max {
        return miss;
    }
    if glued_after(hay, i) {
        return miss;
    }
    if r.needs_digit
        && (!body.iter().any(u8::is_ascii_digit) || !body.iter().any(u8::is_ascii_alphabetic))
    {
        return miss;
    }
    Step {
        found: Some((t, i, ent::API_KEY)),
        next: i,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn longest_prefix_is_the_longest_literal() {
        let longest = super::RULES.iter().map(|r| r.prefix.len()).max();
        assert_eq!(longest, Some(super::LONGEST_PREFIX));
    }
}
