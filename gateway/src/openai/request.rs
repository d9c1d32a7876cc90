//! A request as the gateway reads it.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json_splice::Present;

/// The fields of a chat, completions, embeddings or Responses request the gateway reads,
/// borrowed from the body (`request::parse`); every other field passes through untouched.
#[derive(Debug, Deserialize)]
pub(crate) struct RequestPeek<'a> {
    #[serde(borrow, default)]
    pub(crate) model: Option<&'a RawValue>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    /// Kept even when `null`, so a rewrite replaces it instead of adding a second key.
    #[serde(borrow, default)]
    pub(crate) stream_options: Present<'a>,
    #[serde(default)]
    pub(crate) max_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) max_completion_tokens: Option<u64>,
    /// The Responses API's output bound.
    #[serde(default)]
    pub(crate) max_output_tokens: Option<u64>,
}

/// `stream_options`: whether the caller asked for the usage chunk.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: Option<bool>,
}
