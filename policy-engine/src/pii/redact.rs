//! What a finding is replaced with, and the per-request memory that keeps replacements stable.
//!
//! Styles: `placeholder` writes `[EMAIL_1]` — the same value gets the same index for the whole
//! request, so a model can still tell two people apart; `mask` replaces letters and digits with
//! `*` and keeps separators, except that a card keeps its last four digits; `hash` writes
//! `[EMAIL:1a2b3c4d]`, the first four bytes of HMAC-SHA-256 under a per-deployment key, so equal
//! values stay linkable across requests without being recoverable.
//!
//! Every replacement is chosen so that no detector matches it again (no `@`, no digit runs
//! that form a number shape, no key prefix): redaction is idempotent. The session keeps values
//! only in memory for the life of one request and exposes only counts and entity types.

use std::collections::HashMap;
use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::pack::RedactionStyle;

/// Per-request redaction state: stable indexes per (entity, value) and counts per entity type.
#[derive(Debug, Default, Clone)]
pub struct RedactionSession {
    /// Entity name → tally, in first-seen order.
    tallies: Vec<(String, Tally)>,
}

#[derive(Debug, Default, Clone)]
struct Tally {
    count: u32,
    indexes: HashMap<String, u32>,
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

    /// Record one occurrence and return the value's 1-based index within its entity type.
    pub(crate) fn record(&mut self, entity: &str, value: &str) -> u32 {
        let k = match self.tallies.iter().position(|(n, _)| n == entity) {
            Some(k) => k,
            None => {
                self.tallies.push((entity.to_owned(), Tally::default()));
                self.tallies.len() - 1
            }
        };
        let Some((_, tally)) = self.tallies.get_mut(k) else {
            return 0;
        };
        tally.count = tally.count.saturating_add(1);
        if let Some(&index) = tally.indexes.get(value) {
            return index;
        }
        let next = u32::try_from(tally.indexes.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        tally.indexes.insert(value.to_owned(), next);
        next
    }
}

/// The compiled replacement policy of one detector.
#[derive(Clone)]
pub(crate) struct Replacer {
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

impl Replacer {
    /// Append the replacement of `value` (entity `entity`, named `name`) to `out`.
    pub(crate) fn write(
        &self,
        entity: u16,
        name: &str,
        value: &str,
        session: &mut RedactionSession,
        out: &mut String,
    ) {
        let index = session.record(name, value);
        let label = self
            .labels
            .get(usize::from(entity))
            .map_or("PII", String::as_str);
        match self.style {
            RedactionStyle::Placeholder => {
                // Writing into a String cannot fail.
                let _ = write!(out, "[{label}_{index}]");
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
