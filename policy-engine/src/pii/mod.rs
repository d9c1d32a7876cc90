//! PII detection and redaction: the engine behind the `pii-detector` policy.
//!
//! [`PiiDetector::compile`] turns a pack's settings into one immutable detector: a trigger scan
//! plus per-candidate validators for the built-in entities (`scanner`, `numeric`, `tokens`,
//! `keys`, `validators`), one multi-pattern regex and one term automaton for custom entities
//! (`custom`, with the case folding of terms in `fold`), normalisation of evasive characters
//! (`normalize`), replacement styles and the per-request [`RedactionSession`] (`redact`), and
//! an incremental [`StreamRedactor`] for SSE (`stream`).
//!
//! The engine never reads the environment and never logs values; text in which it finds
//! nothing, and which has no character to normalise, is scanned without allocating.

mod compile;
mod custom;
mod detector;
mod fold;
mod keys;
mod normalize;
mod numeric;
mod obfuscated;
mod phone_context;
mod redact;
mod scanner;
mod stream;
mod tokens;
mod validators;

#[cfg(test)]
mod tests;

pub use compile::{PiiCompileError, REGEX_SIZE_LIMIT};
pub use detector::{EntityId, Finding, PiiDetector};
pub use redact::RedactionSession;
pub use stream::StreamRedactor;
