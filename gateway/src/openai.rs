//! OpenAI wire shapes shared by the request path, JSON answers and streams: token usage as
//! providers report it.

use serde_json::Value;

/// Token usage as reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// Usage from its raw JSON: the common all-integers shape without a tree, anything else
/// through [`parse_usage`].
pub(crate) fn parse_usage_raw(raw: &serde_json::value::RawValue) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        completion_tokens: u64,
        #[serde(default)]
        total_tokens: u64,
    }
    match serde_json::from_str::<Fields>(raw.get()) {
        Ok(f) => Some(Usage {
            prompt_tokens: f.prompt_tokens,
            completion_tokens: f.completion_tokens,
            total_tokens: f.total_tokens,
        }),
        Err(_) => serde_json::from_str::<Value>(raw.get())
            .ok()
            .as_ref()
            .and_then(parse_usage),
    }
}

pub(crate) fn parse_usage(v: &Value) -> Option<Usage> {
    let o = v.as_object()?;
    let n = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
        total_tokens: n("total_tokens"),
    })
}
