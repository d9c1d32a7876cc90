//! A JSON answer (chat, completions, embeddings) as the gateway reads it.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The field of a provider's JSON answer the gateway reads, borrowed from it.
#[derive(Debug, Deserialize)]
pub(crate) struct Answer<'a> {
    #[serde(borrow, default)]
    pub(crate) usage: Option<&'a RawValue>,
    /// Read for the trace's finish reasons only (borrowed: skipping it costs the same).
    #[serde(borrow, default)]
    pub(crate) choices: Option<&'a RawValue>,
}
