//! A streamed chunk (`data:` of a chat or completions stream) as the gateway reads it: the
//! fields the relay needs, borrowed from the event, each choice read in the same pass.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json_splice::{Objects, Present};

/// The fields of a stream chunk the relay reads, borrowed from the event; the choices are read
/// in the same pass (`json_splice::Objects`).
#[derive(Deserialize)]
pub(crate) struct ChunkPeek<'a> {
    #[serde(borrow, default)]
    pub(crate) choices: Option<Objects<StreamChoice<'a>>>,
    #[serde(borrow, default)]
    pub(crate) usage: Option<&'a RawValue>,
    /// A provider's error in the stream (`{"error": {...}}`), scanned whole.
    #[serde(borrow, default)]
    pub(crate) error: Present<'a>,
}

#[derive(Deserialize)]
pub(crate) struct StreamChoice<'a> {
    #[serde(borrow, default)]
    pub(crate) index: Present<'a>,
    #[serde(borrow, default)]
    pub(crate) delta: Present<'a>,
    #[serde(borrow, default)]
    pub(crate) text: Present<'a>,
    #[serde(borrow, default)]
    pub(crate) finish_reason: Present<'a>,
    #[serde(borrow, default)]
    pub(crate) logprobs: Present<'a>,
}

#[derive(Deserialize)]
pub(crate) struct Delta<'a> {
    #[serde(borrow, default)]
    pub(crate) tool_calls: Present<'a>,
    #[serde(borrow, default)]
    pub(crate) content: Present<'a>,
    #[serde(borrow, default)]
    pub(crate) refusal: Present<'a>,
    #[serde(borrow, default)]
    pub(crate) reasoning_content: Present<'a>,
    #[serde(borrow, default)]
    pub(crate) reasoning: Present<'a>,
}

/// One streamed tool call of a chat delta: `{"index": k, "function": {"arguments": "…"}}`.
#[derive(Deserialize)]
pub(crate) struct ToolCallPeek<'a> {
    #[serde(borrow, default)]
    pub(crate) index: Present<'a>,
    #[serde(borrow, default)]
    pub(crate) function: Present<'a>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionPeek<'a> {
    #[serde(borrow, default)]
    pub(crate) arguments: Present<'a>,
}

/// The streamed text fields of a chat delta, each with its own redactor per choice (a finding
/// split across chunks is found in any of them): the answer, a refusal, and the reasoning text
/// some providers stream (`reasoning_content`, `reasoning`). The first is also where a
/// completions chunk's `text` goes.
pub(crate) const TEXT_FIELDS: [&str; 4] = ["content", "refusal", "reasoning_content", "reasoning"];

impl<'a> Delta<'a> {
    pub(crate) fn fields(&self) -> [Option<&'a RawValue>; 4] {
        [
            self.content.0,
            self.refusal.0,
            self.reasoning_content.0,
            self.reasoning.0,
        ]
    }
}

/// The finish reasons of a chunk's choices, or of a JSON answer's (for the trace).
#[derive(Deserialize)]
pub(crate) struct FinishReasons {
    #[serde(default)]
    pub(crate) choices: Vec<FinishReason>,
}

#[derive(Deserialize)]
pub(crate) struct FinishReason {
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}
