//! What a finding is replaced with, and the per-request memory that keeps replacements stable.
//!
//! Styles: `placeholder` writes `[EMAIL_1]` — the same value gets the same index for the whole
//! request, so a model can still tell two people apart; `mask` replaces letters and digits with
//! `*` and keeps separators, except that a card keeps its last four digits; `hash` writes
//! `[EMAIL:1a2b3c4d]`, the first four bytes of HMAC-SHA-256 under a per-deployment key, so equal
//! values stay linkable across requests without being recoverable.
//!
//! Every replacement is chosen so that no detector matches it again (no `@`, no digit runs
//! that form a number shape, no key prefix): redaction is idempotent. The session keeps only
//! keyed hashes of values, for the life of one request, and exposes only counts and entity types.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::pack::RedactionStyle;

/// Per-request redaction state: stable indexes per (entity, value) and counts per entity type.
///
/// Values are remembered only as 64-bit keyed hashes (a multiply-xorshift hash seeded per
/// session from the standard library's random keys),
/// so a session never holds the personal data it redacted; two distinct values collide with
/// probability 2⁻⁶⁴ per pair, which would merely give them one placeholder.
#[derive(Debug, Default, Clone)]
pub struct RedactionSession {
    /// Entity name → tally, in first-seen order.
    tallies: Vec<(String, Tally)>,
    /// Tally position + 1 per entity id of the replacer `slots_of` (0: not seen yet), so a
    /// replacement finds its tally without comparing names. A session can serve two detectors
    /// (the request's and the answer's); the slots start over when the replacer changes.
    slots: Vec<u16>,
    slots_of: u64,
    seed: Seed,
}

#[derive(Debug, Clone, Copy)]
struct Seed(u64);

impl Default for Seed {
    fn default() -> Self {
        Self(RandomState::new().hash_one(0x5EED_u64) | 1)
    }
}

impl Seed {
    /// A fast keyed 64-bit hash of `value`: eight bytes at a time, multiply and xor-shift.
    fn hash(self, value: &[u8]) -> u64 {
        const M: u64 = 0x9E37_79B9_7F4A_7C15;
        let mix = |h: u64, w: u64| {
            let x = (h ^ w).wrapping_mul(M);
            x ^ (x >> 29)
        };
        let mut h = self.0 ^ (value.len() as u64).wrapping_mul(M);
        let mut chunks = value.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = mix(h, u64::from_le_bytes(w));
        }
        let mut w = [0u8; 8];
        let rest = chunks.remainder();
        w[..rest.len()].copy_from_slice(rest);
        mix(mix(h, u64::from_le_bytes(w)), self.0).wrapping_mul(M)
    }
}

/// Keys of `Tally::indexes` are hashes already; hash them again for nothing.
#[derive(Debug, Default, Clone, Copy)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[derive(Debug, Default, Clone)]
struct Tally {
    count: u32,
    indexes: HashMap<u64, u32, BuildHasherDefault<PreHashed>>,
}

impl RedactionSession {
    pub fn new() -> Self {
        Self::default()
    }

    /// Findings redacted so far, per entity type, in first-seen order.
    pub fn counts(&self) -> impl Iterator<Item = (&str, u32)> {
        self.tallies.iter().map(|(n, t)| (n.as_str(), t.count))
    }

    /// Entity types seen so far (what a `block` decision may tell the caller).
    pub fn entity_types(&self) -> impl Iterator<Item = &str> {
        self.tallies.iter().map(|(n, _)| n.as_str())
    }

    /// Total findings redacted so far.
    pub fn total(&self) -> u64 {
        self.tallies.iter().map(|(_, t)| u64::from(t.count)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty()
    }

    /// Position of `name`'s tally (entity `entity` of replacer `replacer`), created if new.
    fn tally(&mut self, replacer: u64, entity: u16, name: &str) -> usize {
        if self.slots_of != replacer {
            self.slots_of = replacer;
            self.slots.clear();
        }
        let e = usize::from(entity);
        if let Some(&slot) = self.slots.get(e).filter(|&&s| s != 0) {
            return usize::from(slot - 1);
        }
        let k = match self.tallies.iter().position(|(n, _)| n == name) {
            Some(k) => k,
            None => {
                let mut tally = Tally::default();
                tally.indexes.reserve(16);
                self.tallies.push((name.to_owned(), tally));
                self.tallies.len() - 1
            }
        };
        if self.slots.len() <= e {
            self.slots.resize(e + 1, 0);
        }
        if let (Some(slot), Ok(k1)) = (self.slots.get_mut(e), u16::try_from(k + 1)) {
            *slot = k1;
        }
        k
    }

    /// Record one occurrence and return the value's 1-based index within its entity type.
    fn record(&mut self, replacer: u64, entity: u16, name: &str, value: &str) -> u32 {
        let k = self.tally(replacer, entity, name);
        let key = self.seed.hash(value.as_bytes());
        let Some((_, tally)) = self.tallies.get_mut(k) else {
            return 0;
        };
        tally.count = tally.count.saturating_add(1);
        if let Some(&index) = tally.indexes.get(&key) {
            return index;
        }
        let next = u32::try_from(tally.indexes.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        tally.indexes.insert(key, next);
        next
    }
}

/// The compiled replacement policy of one detector.
#[derive(Clone)]
pub(crate) struct Replacer {
    /// Unique per compiled detector: names the entity-id space of `RedactionSession::slots`.
    pub(crate) id: u64,
    pub(crate) style: RedactionStyle,
    /// Upper-case labels per entity id (`EMAIL`, `CREDIT_CARD`, `EMPLOYEE_ID`).
    pub(crate) labels: Vec<String>,
    pub(crate) key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Replacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Replacer")
            .field("style", &self.style)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// Append `n` in decimal.
fn push_decimal(mut n: u32, out: &mut String) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is a digit: the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

impl Replacer {
    /// A fresh [`id`](Self::id); never 0, which a new session's slots belong to.
    pub(crate) fn next_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Append the replacement of `value` (entity `entity`, named `name`) to `out`.
    pub(crate) fn write(
        &self,
        entity: u16,
        name: &str,
        value: &str,
        session: &mut RedactionSession,
        out: &mut String,
    ) {
        let index = session.record(self.id, entity, name, value);
        let label = self
            .labels
            .get(usize::from(entity))
            .map_or("PII", String::as_str);
        match self.style {
            RedactionStyle::Placeholder => {
                // Pushed piece by piece: `write!` and its formatting machinery cost more than
                // the rest of a placeholder on PII-dense text.
                out.push('[');
                out.push_str(label);
                out.push('_');
                push_decimal(index, out);
                out.push(']');
            }
            RedactionStyle::Hash => {
                out.push('[');
                out.push_str(label);
                out.push(':');
                let key = self.key.as_deref().unwrap_or_default();
                if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) {
                    mac.update(value.as_bytes());
                    for b in mac.finalize().into_bytes().iter().take(4) {
                        let _ = write!(out, "{b:02x}");
                    }
                }
                out.push(']');
            }
            RedactionStyle::Mask => mask(value, name == "credit_card", out),
        }
    }
}

fn mask(value: &str, keep_last_four: bool, out: &mut String) {
    let total_digits = value.bytes().filter(u8::is_ascii_digit).count();
    let mut digits_seen = 0;
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits_seen += 1;
            if keep_last_four && digits_seen + 4 > total_digits {
                out.push(c);
                continue;
            }
        }
        if c.is_alphanumeric() {
            out.push('*');
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod decimal_tests {
    #[test]
    fn decimals_match_display() {
        for n in [0, 1, 9, 10, 11, 99, 100, 12_345, u32::MAX] {
            let mut out = String::new();
            super::push_decimal(n, &mut out);
            assert_eq!(out, n.to_string());
        }
    }
}

#[cfg(test)]
mod session_tests {
    use super::RedactionSession;

    #[test]
    fn two_replacers_share_tallies_by_entity_name_whatever_their_ids() {
        let mut s = RedactionSession::new();
        assert_eq!(s.record(1, 0, "email", "a@x.io"), 1);
        // Another detector numbers its entities differently: id 0 is a phone there.
        assert_eq!(s.record(2, 0, "phone", "555 0100"), 1);
        assert_eq!(s.record(2, 3, "email", "a@x.io"), 1);
        assert_eq!(s.record(2, 3, "email", "b@x.io"), 2);
        assert_eq!(s.record(1, 0, "email", "b@x.io"), 2);
        assert_eq!(s.record(1, 0, "email", "c@x.io"), 3);
        assert_eq!(s.record(2, 0, "phone", "555 0100"), 1);
        let counts: Vec<_> = s.counts().collect();
        assert_eq!(counts, [("email", 5), ("phone", 2)]);
    }
}
