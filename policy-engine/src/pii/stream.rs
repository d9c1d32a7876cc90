//! Incremental redaction of streamed text (SSE deltas), equal to whole-text redaction.
//!
//! Feed chunks with [`StreamRedactor::push`]; redacted text is written to `out` as soon as no
//! finding can still cover it. The redactor runs the same passes as [`PiiDetector::find`],
//! pausing each at a `limit` `LOOKAHEAD` bytes before the end of what it has, and resuming there
//! on the next chunk; because every decision reads a bounded window (see `scanner`), the
//! concatenated output equals `redact` of the concatenated input for any chunking (property
//! tested in `tests/pii_stream.rs`).
//!
//! Release rule: after a `push`, everything is released up to the earliest position where a
//! finding can still start — the start of the oldest finding not yet final, or of the word
//! holding the first trigger the scan has not confirmed yet (a digit, `@`, `:`, a key
//! literal), or of the last word when no such trigger is left. Obfuscated e-mail addresses
//! reach further left, over blanks and up to three words (`john at example [dot] com` from its
//! `[dot]`): before a bracketed `at` the word before it is held, before a written-out dot the
//! three words before it, before a trigger in a word that follows a bare `at` the word before
//! that `at`; with no trigger left, the last word and, when it may still become an at marker
//! (empty, `a`, `at`, `(a`, …) one to three blanks after a letter or digit, the word before
//! it, or, when one of the two words before it is `at`, the word before that `at`
//! (`scanner::Builtins::future_start`, `obfuscated`). The built-in pass confirms a
//! trigger as soon as every byte its decision reads has arrived (`scanner::decided_by`: the
//! run of characters the rule may take, plus the few bytes read after it), not a fixed
//! look-ahead later: `call 415-555-0134 today` is decided once ` today` has arrived. A built-in finding reaches
//! left from its trigger only over bytes that are not whitespace (see
//! `scanner::Builtins::future_start`), so on prose without triggers the redactor holds the last
//! word only — the one a later chunk could turn into `ann@example.com` or `sk-…` — (at most
//! four words around an `at`, as above), and a
//! number, address or key is held from its word on until the bytes that decide it have arrived
//! or the stream ends. With custom regexes or terms (which may span
//! spaces: `Project Falcon`) the pass positions alone bound the release, as below.
//!
//! Hold-back bound (the worst case, and the rule with custom entities): after a `push`, at
//! most `lookahead + MAX_LEFT` bytes of *normalised* text
//! are held back, where `lookahead` is the largest window of the passes the pack uses — 260
//! bytes for the built-ins (an e-mail domain), 328 with custom regexes (256-byte match + 64-byte
//! context + 8), for term lists the longest text a term of the pack can match + 64 bytes to
//! find the brackets of a placeholder + 8 (case folding lets a term match up to 3 × its bytes,
//! `k` the 3-byte Kelvin sign: at most 3 × 128 + 72 = 456; `Project Falcon` needs 86) — and
//! `MAX_LEFT` = 64 (the longest e-mail local part). So
//! the default configuration holds back at most 324 bytes of ASCII text, and at most 3 × 324 =
//! 972 bytes when the tail is fullwidth characters; with custom regexes 392 / 1,176
//! ([`PiiDetector::max_holdback_bytes`]). Invisible characters that normalisation removes
//! (zero-width spaces, BOM, bidi marks) produce no normalised bytes and come on top of that
//! bound: a tail padded with them is held until real text follows or `finish`.
//! Text already flushed cannot be retracted: a finding is only ever redacted in full, never after
//! part of it has left.

use super::detector::{sweep, to_original, PassStates, PiiDetector, LOOKBEHIND};
use super::normalize::normalize;
use super::redact::RedactionSession;
use super::scanner::Raw;

/// Incremental redactor over one stream; create one per response with [`PiiDetector::stream`].
#[derive(Debug)]
pub struct StreamRedactor<'d> {
    det: &'d PiiDetector,
    /// Original text not yet dropped: lookbehind context, then text not yet written.
    buf: String,
    /// Bytes of `buf` already written to the caller.
    emitted: usize,
    /// Normalised offset (from the start of the stream) of `buf[0]`.
    norm0: usize,
    /// Pass positions, normalised offsets from the start of the stream.
    states: PassStates,
    /// Findings produced but not yet final, normalised offsets from the start of the stream.
    pending: Vec<Raw>,
    /// End of the last finding kept by the overlap sweep.
    last_end: usize,
    /// Reused buffers, so a `push` of a small SSE delta does not allocate.
    scratch_found: Vec<Raw>,
    scratch_kept: Vec<Raw>,
}

impl<'d> StreamRedactor<'d> {
    pub(crate) fn new(det: &'d PiiDetector) -> Self {
        Self {
            det,
            buf: String::new(),
            emitted: 0,
            norm0: 0,
            states: PassStates::default(),
            pending: Vec::new(),
            last_end: 0,
            scratch_found: Vec::new(),
            scratch_kept: Vec::new(),
        }
    }

    /// Add a chunk; append to `out` whatever has become safe to release.
    pub fn push(&mut self, chunk: &str, session: &mut RedactionSession, out: &mut String) {
        self.buf.push_str(chunk);
        self.advance(false, session, out);
    }

    /// End of stream: release everything held back. The redactor is then reset for reuse.
    pub fn finish(&mut self, session: &mut RedactionSession, out: &mut String) {
        self.advance(true, session, out);
        out.push_str(self.buf.get(self.emitted..).unwrap_or_default());
        *self = Self::new(self.det);
    }

    /// Bytes received but not yet released.
    pub fn held_back(&self) -> usize {
        self.buf.len() - self.emitted
    }

    fn advance(&mut self, last: bool, session: &mut RedactionSession, out: &mut String) {
        let norm = normalize(&self.buf);
        let hay: &[u8] = norm
            .as_ref()
            .map_or(self.buf.as_bytes(), |n| n.text.as_slice());
        let limit = if last {
            hay.len()
        } else {
            hay.len().saturating_sub(self.det.lookahead())
        };
        let norm0 = self.norm0;
        let mut local = self.states;
        for s in &mut local {
            s.pos = s.pos.saturating_sub(norm0);
            s.floor = s.floor.saturating_sub(norm0);
        }
        let before = local;
        let mut found = std::mem::take(&mut self.scratch_found);
        found.clear();
        let next = self.det.scan(hay, &mut local, limit, !last, &mut found);
        for ((s, l), b) in self.states.iter_mut().zip(local).zip(before) {
            s.pos = l.pos + norm0;
            if l.floor != b.floor {
                s.floor = l.floor + norm0;
            }
        }
        self.pending.extend(found.drain(..).map(|r| Raw {
            start: r.start + norm0,
            end: r.end + norm0,
            ..r
        }));
        self.scratch_found = found;
        let bound = if last {
            usize::MAX
        } else {
            self.det.future_start_bound(&self.states)
        };
        let mut kept = std::mem::take(&mut self.scratch_kept);
        kept.clear();
        sweep(&mut self.pending, &mut self.last_end, bound, |r| {
            kept.push(r)
        });
        let orig_len = self.buf.len();
        for &r in &kept {
            let local_raw = Raw {
                start: r.start - norm0,
                end: r.end - norm0,
                ..r
            };
            let f = to_original(local_raw, norm.as_ref(), orig_len);
            out.push_str(self.buf.get(self.emitted..f.start).unwrap_or_default());
            self.det.write_replacement(&f, &self.buf, session, out);
            self.emitted = f.end;
        }
        self.scratch_kept = kept;
        if last {
            return;
        }
        let mut bound_local = bound.saturating_sub(norm0).min(hay.len());
        // Early release: text before the word that holds the next unconfirmed trigger cannot be
        // part of a finding not yet produced (`future_start_in`), nor of one produced but not yet
        // final (`pending`). Prose without triggers is released up to its last word.
        // `local`: the pass states after this scan, relative to `hay`.
        if let Some(early) = self.det.future_start_in(hay, &local, next) {
            let pending = self
                .pending
                .iter()
                .map(|r| r.start.saturating_sub(norm0))
                .min()
                .unwrap_or(usize::MAX);
            bound_local = bound_local.max(early.min(pending)).min(hay.len());
        }
        // Pass positions are byte offsets; release only up to a character boundary.
        while bound_local > 0 && hay.get(bound_local).is_some_and(|b| (b & 0xC0) == 0x80) {
            bound_local -= 1;
        }
        let target = norm
            .as_ref()
            .map_or(bound_local, |n| n.orig_start(bound_local, orig_len));
        if target > self.emitted {
            out.push_str(self.buf.get(self.emitted..target).unwrap_or_default());
            self.emitted = target;
        }
        // Drop what is written and no longer needed as lookbehind context.
        let mut cut = bound
            .saturating_sub(LOOKBEHIND)
            .saturating_sub(norm0)
            .min(hay.len());
        while cut > 0 && hay.get(cut).is_some_and(|b| (b & 0xC0) == 0x80) {
            cut -= 1;
        }
        let cut_orig = norm
            .as_ref()
            .map_or(cut, |n| n.orig_start(cut, orig_len))
            .min(self.emitted);
        let shift = norm
            .as_ref()
            .map_or(cut_orig, |n| n.norm_index_of(cut_orig));
        if cut_orig > 0 {
            drop(norm);
            self.buf.drain(..cut_orig);
            self.emitted -= cut_orig;
            self.norm0 += shift;
        }
    }
}
