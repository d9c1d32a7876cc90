//! PII detection and redaction. Interim interface: the engine lands with the PII issue and
//! replaces this file. Until then, compiling a pack whose chain holds `pii-detector` fails with
//! a clear message instead of enforcing nothing.

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

    pub fn action(&self) -> PiiAction {
        self.action
    }
}
