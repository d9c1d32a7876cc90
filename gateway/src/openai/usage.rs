//! Token usage as each wire format reports it, read into one [`Usage`].
//!
//! | format | input | output | cached | reasoning |
//! |---|---|---|---|---|
//! | chat, completions, embeddings | `prompt_tokens` | `completion_tokens` | `prompt_tokens_details.cached_tokens` | `completion_tokens_details.reasoning_tokens` |
//! | Responses | `input_tokens` | `output_tokens` | `input_tokens_details.cached_tokens` | `output_tokens_details.reasoning_tokens` |
//! | Anthropic Messages | `input_tokens` + `cache_creation_input_tokens` + `cache_read_input_tokens` | `output_tokens` | `cache_read_input_tokens` | — |
//!
//! OpenAI counts cached and reasoning tokens inside input and output; Anthropic reports cache
//! reads and writes beside `input_tokens`, so they are added to it: a budget settles on every
//! token the provider processed. An Anthropic stream reports usage twice (`message_start`, then
//! the cumulative `message_delta`): [`UsageFields::merge`] keeps the latest value of each field.

use serde::Deserialize;
use serde_json::Value;

/// Token usage as reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every input token, cached ones included.
    pub prompt_tokens: u64,
    /// Every output token, reasoning included.
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Input tokens read from the provider's prompt cache (part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// Output tokens spent on reasoning (part of `completion_tokens`).
    pub reasoning_tokens: u64,
}

/// A usage object's fields, in any of the formats; `None` where it does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct UsageFields {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<Details>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<Details>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl UsageFields {
    /// Later reports win, field by field (Anthropic's `message_delta` after `message_start`).
    pub(crate) fn merge(&mut self, later: Self) {
        macro_rules! take {
            ($($f:ident),*) => { $( if later.$f.is_some() { self.$f = later.$f; } )* };
        }
        take!(
            prompt_tokens,
            completion_tokens,
            total_tokens,
            input_tokens,
            output_tokens,
            cache_creation_input_tokens,
            cache_read_input_tokens,
            prompt_tokens_details,
            completion_tokens_details
        );
    }

    pub(crate) fn usage(&self) -> Usage {
        let cache_write = self.cache_creation_input_tokens.unwrap_or(0);
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = match self.prompt_tokens {
            Some(p) => p,
            None => self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(cache_write)
                .saturating_add(cache_read),
        };
        let completion = self.completion_tokens.or(self.output_tokens).unwrap_or(0);
        let detail = |d: Option<Details>, f: fn(Details) -> Option<u64>| d.and_then(f);
        let cached = detail(self.prompt_tokens_details, |d| d.cached_tokens)
            .or(self.cache_read_input_tokens)
            .unwrap_or(0);
        let reasoning = detail(self.completion_tokens_details, |d| d.reasoning_tokens).unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: self
                .total_tokens
                .unwrap_or_else(|| prompt.saturating_add(completion)),
            cached_tokens: cached,
            reasoning_tokens: reasoning,
        }
    }
}

/// A usage object's fields from its raw JSON: the common all-integers shape without a tree,
/// anything else (a float count, a `null` detail field of another type) through a tree.
pub(crate) fn usage_fields_raw(raw: &serde_json::value::RawValue) -> Option<UsageFields> {
    match serde_json::from_str::<UsageFields>(raw.get()) {
        Ok(f) => Some(f),
        Err(_) => serde_json::from_str::<Value>(raw.get())
            .ok()
            .as_ref()
            .and_then(usage_fields_lenient),
    }
}

/// Usage from its raw JSON, in any format.
pub(crate) fn parse_usage_raw(raw: &serde_json::value::RawValue) -> Option<Usage> {
    usage_fields_raw(raw).map(|f| f.usage())
}

/// The fields of a usage object whose values are not all what the derived reader takes: each
/// count that is a non-negative integer is read, anything else is absent.
pub(crate) fn usage_fields_lenient(v: &Value) -> Option<UsageFields> {
    let o = v.as_object()?;
    let n = |k: &str| o.get(k).and_then(Value::as_u64);
    let details = |a: &str, b: &str| {
        o.get(a).or_else(|| o.get(b)).map(|d| Details {
            cached_tokens: d.get("cached_tokens").and_then(Value::as_u64),
            reasoning_tokens: d.get("reasoning_tokens").and_then(Value::as_u64),
        })
    };
    Some(UsageFields {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
        total_tokens: n("total_tokens"),
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_creation_input_tokens: n("cache_creation_input_tokens"),
        cache_read_input_tokens: n("cache_read_input_tokens"),
        prompt_tokens_details: details("prompt_tokens_details", "input_tokens_details"),
        completion_tokens_details: details("completion_tokens_details", "output_tokens_details"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(json: &str) -> Usage {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(json).unwrap();
        parse_usage_raw(&raw).unwrap()
    }

    #[test]
    fn every_format_reads_into_the_same_counts() {
        let chat = usage(
            r#"{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,
               "prompt_tokens_details":{"cached_tokens":100,"audio_tokens":0},
               "completion_tokens_details":{"reasoning_tokens":12}}"#,
        );
        assert_eq!(
            chat,
            Usage {
                prompt_tokens: 120,
                completion_tokens: 30,
                total_tokens: 150,
                cached_tokens: 100,
                reasoning_tokens: 12
            }
        );
        let responses = usage(
            r#"{"input_tokens":120,"output_tokens":30,"total_tokens":150,
               "input_tokens_details":{"cached_tokens":100},
               "output_tokens_details":{"reasoning_tokens":12}}"#,
        );
        assert_eq!(responses, chat);
        // Anthropic: cache reads and writes are beside `input_tokens`, not in it.
        let anthropic = usage(
            r#"{"input_tokens":15,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,
               "output_tokens":30,"service_tier":"standard"}"#,
        );
        assert_eq!(anthropic.prompt_tokens, 120);
        assert_eq!(anthropic.completion_tokens, 30);
        assert_eq!(anthropic.total_tokens, 150);
        assert_eq!(anthropic.cached_tokens, 100);
    }

    #[test]
    fn an_anthropic_stream_keeps_the_latest_count_of_each_field() {
        let read = |s: &str| {
            let raw: Box<serde_json::value::RawValue> = serde_json::from_str(s).unwrap();
            usage_fields_raw(&raw).unwrap()
        };
        let mut f = read(r#"{"input_tokens":25,"cache_read_input_tokens":10,"output_tokens":1}"#);
        f.merge(read(r#"{"output_tokens":15}"#));
        let u = f.usage();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (35, 15));
    }

    #[test]
    fn odd_values_are_read_leniently() {
        let u = usage(r#"{"prompt_tokens":3,"completion_tokens":2.0,"prompt_tokens_details":"x"}"#);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (3, 0, 3)
        );
    }
}
