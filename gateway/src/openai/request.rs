//! A request as the gateway reads it.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The fields of a chat, completions, embeddings or Responses request the gateway reads,
/// borrowed from the body (`request::parse`); every other field passes through untouched.
#[derive(Debug, Deserialize)]
pub(crate) struct RequestPeek<'a> {
    #[serde(borrow, default)]
    pub(crate) model: Option<&'a RawValue>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    /// Kept even when `null`, so a rewrite replaces it instead of adding a second key.
    #[serde(borrow, default, deserialize_with = "raw_even_if_null")]
    pub(crate) stream_options: Option<&'a RawValue>,
    #[serde(default)]
    pub(crate) max_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) max_completion_tokens: Option<u64>,
    /// The Responses API's output bound.
    #[serde(default)]
    pub(crate) max_output_tokens: Option<u64>,
}

fn raw_even_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// `stream_options`: whether the caller asked for the usage chunk.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: Option<bool>,
}
