//! OpenAI's wire shapes as the gateway reads them, in one place: a request's fields
//! ([`request`]), a JSON answer's ([`answer`]), a stream chunk's ([`chunk`]), and token usage
//! ([`usage`], which also reads the Responses and Anthropic forms into one [`Usage`]).
//!
//! Each shape borrows from the bytes it reads and names only the fields the gateway needs;
//! everything else passes through as the caller or the provider sent it. Anthropic's and the
//! Responses API's stream events are read in `sse/typed.rs`, and the translation between chat
//! completions and Messages is `translate.rs`.

mod answer;
mod chunk;
mod request;
mod usage;

pub(crate) use answer::Answer;
pub(crate) use chunk::{
    ChunkPeek, Delta, FinishReason, FinishReasons, FunctionPeek, StreamChoice, ToolCallPeek,
    TEXT_FIELDS,
};
pub(crate) use request::{RequestPeek, StreamOptions};
pub use usage::Usage;
pub(crate) use usage::{parse_usage_raw, usage_fields_lenient, usage_fields_raw, UsageFields};
