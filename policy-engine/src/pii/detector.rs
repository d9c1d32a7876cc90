//! `PiiDetector`: the compiled detector of one pack, and whole-text find and redact.
//!
//! A detector is built once per pack version (off the hot path), is immutable, `Send + Sync`,
//! and shared in the pack's `Arc`. A scan normalises only when the text contains a character
//! normalisation would change, runs up to three passes (built-ins, custom regexes, custom
//! terms — each one pass over the text), then resolves overlaps in one sweep: earliest start
//! first, then the longest span, then built-ins before custom entities. Spans are UTF-8 byte
//! offsets into the caller's original text.
//!
//! It does not decide what an action means for a request (block, log, escalate): that is the
//! gateway's job; `action()` only reports what the pack asked for.

use std::borrow::Cow;

use super::compile::{compile, Compiled, PiiCompileError};
use super::custom::{CONTEXT_WINDOW, MAX_CUSTOM_MATCH, PLACEHOLDER_REACH};
use super::normalize::{normalize, Normalized};
use super::redact::{RedactionSession, Replacer};
use super::scanner::{Builtins, NextTrigger, PassState, Raw, MAX_LEFT, MAX_RIGHT};
use super::stream::StreamRedactor;
use crate::pack::{PiiAction, PiiDetectorConfig};

/// Bytes of normalised text right of a trigger each pass may read before deciding: built-ins
/// (e-mail domain), custom regexes (longest match + context window + a `\b`), terms.
const BUILTIN_LOOKAHEAD: usize = MAX_RIGHT;
const REGEX_LOOKAHEAD: usize = MAX_CUSTOM_MATCH + CONTEXT_WINDOW + 8;
/// Terms: the longest text a term of the pack can match (at most 3 × `MAX_TERM` after case
/// folding), + the placeholder brackets + 8.
const fn term_lookahead(max_match: usize) -> usize {
    max_match + PLACEHOLDER_REACH + 8
}
/// Bytes of normalised text left of a pass's position a decision may read.
pub(crate) const LOOKBEHIND: usize = MAX_LEFT + 16 + CONTEXT_WINDOW;

/// Which entity a finding is: an index into the detector's entity names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(pub(crate) u16);

impl EntityId {
    /// The built-in entity name, if this is a built-in entity (custom names live in the
    /// detector: `PiiDetector::entity_name`).
    pub fn builtin_name(self) -> Option<&'static str> {
        crate::pack::BUILTIN_ENTITIES
            .get(usize::from(self.0))
            .copied()
    }
}

/// One piece of personal data: `text[start..end]` is of type `entity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub entity: EntityId,
    pub start: usize,
    pub end: usize,
}

/// The compiled `pii-detector` of one pack.
#[derive(Debug)]
pub struct PiiDetector {
    names: Vec<String>,
    builtins: Option<Builtins>,
    custom: Compiled,
    replacer: Replacer,
    action: PiiAction,
    /// The largest look-ahead of the passes this detector runs.
    lookahead: usize,
}

/// Per-pass scan positions, in normalised offsets.
pub(crate) type PassStates = [PassState; 3];

impl PiiDetector {
    /// Compile a configuration. `hash_key` is the HMAC key for `redaction: hash` (the caller
    /// reads it from the environment variable named by `hash_key_env`).
    pub fn compile(
        cfg: &PiiDetectorConfig,
        hash_key: Option<&[u8]>,
    ) -> Result<Self, Vec<PiiCompileError>> {
        let compiled = compile(cfg, hash_key)?;
        let builtins = if compiled.builtin_on.iter().any(|&b| b) {
            let b = Builtins::new(compiled.builtin_on, cfg.obfuscated_emails).map_err(|e| {
                vec![PiiCompileError {
                    path: "entities".to_owned(),
                    message: e.to_string(),
                    expected: None,
                }]
            })?;
            Some(b)
        } else {
            None
        };
        let labels = compiled
            .names
            .iter()
            .map(|n| n.to_ascii_uppercase())
            .collect();
        let lookahead = [
            builtins.is_some().then_some(BUILTIN_LOOKAHEAD),
            compiled.regexes.is_some().then_some(REGEX_LOOKAHEAD),
            compiled.terms.as_ref().map(|t| term_lookahead(t.max_match)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        Ok(Self {
            names: compiled.names.clone(),
            builtins,
            custom: compiled,
            replacer: Replacer {
                id: Replacer::next_id(),
                style: cfg.redaction,
                labels,
                key: hash_key.map(<[u8]>::to_vec),
            },
            action: cfg.action,
            lookahead,
        })
    }

    /// Every diagnostic `compile` would report, except the missing HMAC key of `redaction:
    /// hash` — for `palisade validate`, which checks a pack without the deployment's secrets.
    pub fn check(cfg: &PiiDetectorConfig) -> Vec<PiiCompileError> {
        Self::compile(cfg, Some(b"validation only"))
            .err()
            .unwrap_or_default()
    }

    /// The entity name of a finding (`email`, or a custom entity's name).
    pub fn entity_name(&self, id: EntityId) -> &str {
        self.names
            .get(usize::from(id.0))
            .map_or("unknown", String::as_str)
    }

    pub fn action(&self) -> PiiAction {
        self.action
    }

    /// The most original-text bytes a `StreamRedactor` holds back after a `push`, for text
    /// without invisible characters (see the `stream` module docs for the exact statement).
    pub fn max_holdback_bytes(&self) -> usize {
        // Normalised hold-back is at most lookahead + MAX_LEFT bytes; one normalised byte comes
        // from at most 3 original bytes (a fullwidth character).
        self.max_holdback_normalized() * 3
    }

    /// The hold-back bound in normalised bytes (equal to original bytes for ASCII text).
    pub(crate) fn max_holdback_normalized(&self) -> usize {
        self.lookahead + MAX_LEFT
    }

    pub(crate) fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// Run every pass over `hay` from `states` up to triggers before `limit`. `partial`: `hay`
    /// may still grow (a stream): the built-ins then confirm every trigger whose decision the
    /// bytes received already settle, even past `limit` (see `scanner::decided_by`). Returns
    /// the built-in pass's first unconfirmed trigger, for [`future_start_in`](Self::future_start_in)
    /// over the same `hay`.
    pub(crate) fn scan(
        &self,
        hay: &[u8],
        states: &mut PassStates,
        limit: usize,
        partial: bool,
        out: &mut Vec<Raw>,
    ) -> Option<NextTrigger> {
        let [b, r, t] = states;
        let next = self.builtins.as_ref().map(|p| {
            let own_limit = if partial { hay.len() } else { limit };
            p.run(hay, b, own_limit, partial, out)
        });
        if let Some(p) = &self.custom.regexes {
            p.run(hay, r, limit, out);
        }
        if let Some(p) = &self.custom.terms {
            p.run(hay, t, limit, out);
        }
        next
    }

    /// Smallest normalised offset a finding not yet produced can start at.
    pub(crate) fn future_start_bound(&self, states: &PassStates) -> usize {
        let [b, r, t] = states;
        let mut bound = usize::MAX;
        if self.builtins.is_some() {
            bound = bound.min(b.floor.max(b.pos.saturating_sub(MAX_LEFT)));
        }
        if self.custom.regexes.is_some() {
            bound = bound.min(r.pos);
        }
        if self.custom.terms.is_some() {
            bound = bound.min(t.pos);
        }
        bound
    }

    /// Like [`future_start_bound`](Self::future_start_bound), but reading the text received so
    /// far (`hay`, with `states` relative to it): no finding not yet produced can start before
    /// the returned offset, even if `hay` grows. `None` when a custom pass is on: a regex or a
    /// term can span spaces, so only the pass positions bound it. `next`: what [`scan`](Self::scan)
    /// returned when it left `states` over this `hay`.
    pub(crate) fn future_start_in(
        &self,
        hay: &[u8],
        states: &PassStates,
        next: Option<NextTrigger>,
    ) -> Option<usize> {
        if self.custom.regexes.is_some() || self.custom.terms.is_some() {
            return None;
        }
        Some(match (&self.builtins, next) {
            (Some(p), Some(next)) => p.future_start(hay, &states[0], next),
            _ => hay.len(),
        })
    }

    /// All findings in `text`, sorted by start, non-overlapping.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let norm = normalize(text);
        let hay = norm.as_ref().map_or(text.as_bytes(), |n| n.text.as_slice());
        let mut raw = Vec::new();
        let mut states = PassStates::default();
        self.scan(hay, &mut states, hay.len(), false, &mut raw);
        let mut out = Vec::with_capacity(raw.len());
        let mut last_end = 0;
        let mut mapper = norm.as_ref().map(Normalized::mapper);
        sweep(&mut raw, &mut last_end, usize::MAX, |r| {
            let (start, end) = match &mut mapper {
                None => (r.start, r.end),
                Some(m) => (
                    m.orig_start(r.start, text.len()),
                    m.orig_end(r.end.saturating_sub(1)),
                ),
            };
            out.push(Finding {
                entity: EntityId(r.entity),
                start,
                end,
            });
        });
        out
    }

    /// `text` with every finding replaced; borrowed (no allocation) when nothing is found.
    pub fn redact<'t>(&self, text: &'t str, session: &mut RedactionSession) -> Cow<'t, str> {
        let findings = self.find(text);
        self.redact_found(text, &findings, session)
    }

    /// Like [`redact`](Self::redact), with findings a caller already has from
    /// [`find`](Self::find) on the same text (one detection pass when both are needed).
    pub fn redact_found<'t>(
        &self,
        text: &'t str,
        findings: &[Finding],
        session: &mut RedactionSession,
    ) -> Cow<'t, str> {
        if findings.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 16);
        let mut at = 0;
        for f in findings {
            out.push_str(text.get(at..f.start).unwrap_or_default());
            self.write_replacement(f, text, session, &mut out);
            at = f.end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        Cow::Owned(out)
    }

    pub(crate) fn write_replacement(
        &self,
        f: &Finding,
        text: &str,
        session: &mut RedactionSession,
        out: &mut String,
    ) {
        let value = text.get(f.start..f.end).unwrap_or_default();
        self.replacer
            .write(f.entity.0, self.entity_name(f.entity), value, session, out);
    }

    /// An incremental redactor for streamed text (SSE deltas).
    pub fn stream(&self) -> StreamRedactor<'_> {
        StreamRedactor::new(self)
    }
}

/// Map a normalised-offset finding back to the original text.
pub(crate) fn to_original(r: Raw, norm: Option<&Normalized>, orig_len: usize) -> Finding {
    let (start, end) = match norm {
        None => (r.start, r.end),
        Some(n) => (
            n.orig_start(r.start, orig_len),
            n.orig_end(r.end.saturating_sub(1)),
        ),
    };
    Finding {
        entity: EntityId(r.entity),
        start,
        end,
    }
}

/// Resolve overlaps among `raw` findings that start before `upto`: earliest start, then the
/// longest, then the lowest pass. Emitted findings are removed from `raw`; later ones stay.
pub(crate) fn sweep(
    raw: &mut Vec<Raw>,
    last_end: &mut usize,
    upto: usize,
    mut emit: impl FnMut(Raw),
) {
    if !raw.is_sorted_by_key(|r| (r.start, std::cmp::Reverse(r.end), r.pass)) {
        raw.sort_unstable_by_key(|r| (r.start, std::cmp::Reverse(r.end), r.pass));
    }
    let n = raw.iter().take_while(|r| r.start < upto).count();
    for r in raw.drain(..n) {
        if r.start >= *last_end {
            *last_end = r.end;
            emit(r);
        }
    }
}
