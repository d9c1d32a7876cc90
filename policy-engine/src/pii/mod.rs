//! PII detection and redaction. Interim interface: the engine lands with the PII issue and
//! replaces this file. Until then, compiling a pack whose chain holds `pii-detector` fails with
//! a clear message instead of enforcing nothing. The streaming half of the interface
//! (`stream`, `StreamRedactor`, `RedactionSession::counts`) is declared here so the gateway can be
//! written against it; the real engine replaces all of it.

use std::borrow::Cow;

use crate::pack::{PiiAction, PiiDetectorConfig};

#[derive(Debug)]
pub struct PiiDetector {
    action: PiiAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiiCompileError {
    pub path: String,
    pub message: String,
    pub expected: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub entity: EntityId,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityId(u16);

impl EntityId {
    pub fn name(self) -> &'static str {
        "unknown"
    }
}

#[derive(Debug, Default)]
pub struct RedactionSession {
    _counts: Vec<u32>,
}

impl RedactionSession {
    /// Findings per entity name, in this session so far.
    pub fn counts(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        std::iter::empty()
    }
}

/// Incremental redaction over a text that arrives in pieces (an SSE stream).
#[derive(Debug)]
pub struct StreamRedactor<'d> {
    _detector: &'d PiiDetector,
}

impl StreamRedactor<'_> {
    /// Feed one piece; text that can no longer be part of a finding is appended to `out`.
    pub fn push(&mut self, chunk: &str, _session: &mut RedactionSession, out: &mut String) {
        out.push_str(chunk);
    }

    /// The stream ended: flush what was held back.
    pub fn finish(&mut self, _session: &mut RedactionSession, _out: &mut String) {}
}

impl PiiDetector {
    pub fn compile(
        cfg: &PiiDetectorConfig,
        _hash_key: Option<&[u8]>,
    ) -> Result<Self, Vec<PiiCompileError>> {
        let _ = cfg.action;
        Err(vec![PiiCompileError {
            path: String::new(),
            message: "the PII engine is not part of this build yet".to_owned(),
            expected: None,
        }])
    }

    pub fn find(&self, _text: &str) -> Vec<Finding> {
        Vec::new()
    }

    pub fn redact<'t>(&self, text: &'t str, _session: &mut RedactionSession) -> Cow<'t, str> {
        Cow::Borrowed(text)
    }

    pub fn stream(&self) -> StreamRedactor<'_> {
        StreamRedactor { _detector: self }
    }

    /// The most bytes a stream redactor may hold back before emitting them.
    pub fn max_holdback_bytes(&self) -> usize {
        0
    }

    pub fn action(&self) -> PiiAction {
        self.action
    }
}
