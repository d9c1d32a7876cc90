//! Translation between OpenAI chat completions and Anthropic Messages, for a model whose
//! provider speaks the other format: the request (after the policies ran on it in the caller's
//! format), the answer and its errors here, streams in `sse::translate`.
//!
//! What translates (both ways): system prompts (`system`/`developer` messages and `system`),
//! text and image content (base64 data URLs and http(s) URLs), assistant tool calls and tool
//! results, tools and `tool_choice` (`auto`, `none`, `required`/`any`, one named tool),
//! `parallel_tool_calls` and `disable_parallel_tool_use`, `max_tokens` (and
//! `max_completion_tokens`), `temperature`, `top_p`, `stop`/`stop_sequences`, `stream`, `user`
//! and `metadata.user_id`; answers with text, tool calls, stop reasons and usage (cache reads
//! included). Anthropic requires `max_tokens`: a chat request without one gets
//! [`DEFAULT_MAX_TOKENS`].
//!
//! What does not is refused with `untranslatable_field` naming the field (400), never dropped:
//! a chat request's `n` above 1, `logprobs`, `top_logprobs`, `response_format`, penalties,
//! `seed`, `logit_bias`, audio, `modalities`, `prediction`, `store`, `metadata`,
//! `reasoning_effort`, `service_tier`, `web_search_options`, a message `name`, audio and file
//! parts, `strict` tools; an Anthropic request's `top_k`, `thinking`, `service_tier`,
//! `container`, `mcp_servers`, document, search-result and thinking blocks, and any field
//! neither API names. `null` values are absent values. An answer's blocks the caller's format
//! has no place for (Anthropic's server tool blocks) fail the request rather than vanish.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::service::ApiRoute;

/// `max_tokens` sent to Anthropic for a chat request that names none.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// How `route` reaches `upstream`: natively (`Some(None)`), translated (`Some(Some(_))`), or
/// not at all (`None`).
pub(crate) fn reach(
    upstream: &crate::upstream::Upstream,
    route: ApiRoute,
) -> Option<Option<Translation>> {
    if upstream.speaks(route) {
        return Some(None);
    }
    let anthropic = upstream.kind == policy_engine::pack::ProviderKind::Anthropic;
    Translation::between(route, anthropic).map(Some)
}

/// Which way a request is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Translation {
    /// An OpenAI chat request to an Anthropic provider.
    ChatToMessages,
    /// An Anthropic Messages request to an OpenAI provider.
    MessagesToChat,
}

impl Translation {
    /// The translation that lets a provider that speaks `provider_route`'s family serve
    /// `route`, if there is one.
    pub(crate) fn between(route: ApiRoute, provider_speaks_anthropic: bool) -> Option<Self> {
        match (route, provider_speaks_anthropic) {
            (ApiRoute::ChatCompletions, true) => Some(Self::ChatToMessages),
            (ApiRoute::Messages, false) => Some(Self::MessagesToChat),
            _ => None,
        }
    }

    /// The route the provider is called on.
    pub(crate) fn upstream_route(self) -> ApiRoute {
        match self {
            Self::ChatToMessages => ApiRoute::Messages,
            Self::MessagesToChat => ApiRoute::ChatCompletions,
        }
    }

    /// The request body for the provider.
    pub(crate) fn request(self, body: &[u8]) -> Result<Bytes, ApiError> {
        let v: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid(format!("the request cannot be translated: {e}")))?;
        let out = match self {
            Self::ChatToMessages => chat_to_messages(v)?,
            Self::MessagesToChat => messages_to_chat(v)?,
        };
        serde_json::to_vec(&Value::Object(out))
            .map(Bytes::from)
            .map_err(|e| ApiError::Internal(format!("cannot encode a translated request: {e}")))
    }

    /// A successful JSON answer in the caller's format.
    pub(crate) fn answer(self, body: &[u8], provider: &str) -> Result<Bytes, ApiError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::upstream(provider, format!("the answer cannot be translated: {e}"))
        })?;
        let out = match self {
            Self::ChatToMessages => message_to_chat_answer(&v),
            Self::MessagesToChat => chat_to_message_answer(&v),
        }
        .map_err(|e| ApiError::upstream(provider, e))?;
        Ok(Bytes::from(out.to_string()))
    }

    /// A provider's error body in the caller's format (the message kept, the shape changed);
    /// a body that is not the provider's error shape passes unchanged.
    pub(crate) fn error(self, body: Bytes, status: http::StatusCode) -> Bytes {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return body;
        };
        let Some(message) = v["error"]["message"].as_str().map(str::to_owned) else {
            return body;
        };
        let out = match self {
            // Anthropic's error to OpenAI's.
            Self::ChatToMessages => json!({"error": {
                "message": message, "type": v["error"]["type"].as_str().unwrap_or("api_error"),
                "param": null, "code": v["error"]["type"].clone()}}),
            Self::MessagesToChat => json!({"type": "error", "error": {
                "type": crate::respond::anthropic_error_type(status), "message": message}}),
        };
        Bytes::from(out.to_string())
    }
}

fn untranslatable(field: &str, why: &str) -> ApiError {
    ApiError::Untranslatable {
        field: field.to_owned(),
        why: why.to_owned(),
    }
}

/// The text of OpenAI content: a string, or text parts (any other part is refused).
fn openai_text(content: &Value, path: &str) -> Result<String, ApiError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p["type"].as_str() {
                    Some("text") => out.push_str(p["text"].as_str().unwrap_or("")),
                    _ => {
                        return Err(untranslatable(
                            &format!("{path}[{j}]"),
                            "only text parts translate here",
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(untranslatable(path, "content must be a string or parts")),
    }
}

/// OpenAI user content as Anthropic blocks.
fn openai_parts_to_blocks(content: &Value, path: &str) -> Result<Value, ApiError> {
    let Value::Array(parts) = content else {
        return Ok(Value::String(openai_text(content, path)?));
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = format!("{path}[{j}]");
        match p["type"].as_str() {
            Some("text") => blocks.push(json!({"type": "text", "text": p["text"]})),
            Some("image_url") => {
                let url = p["image_url"]["url"].as_str().unwrap_or("");
                let source = match url
                    .strip_prefix("data:")
                    .and_then(|r| r.split_once(";base64,"))
                {
                    Some((media_type, data)) => {
                        json!({"type": "base64", "media_type": media_type, "data": data})
                    }
                    None if url.starts_with("http://") || url.starts_with("https://") => {
                        json!({"type": "url", "url": url})
                    }
                    None => {
                        return Err(untranslatable(
                            &at,
                            "an image must be a data: or http(s) URL",
                        ))
                    }
                };
                blocks.push(json!({"type": "image", "source": source}));
            }
            _ => {
                return Err(untranslatable(
                    &at,
                    "only text and image parts translate to Anthropic",
                ))
            }
        }
    }
    Ok(Value::Array(blocks))
}

fn chat_to_messages(req: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    let mut max_tokens = None;
    let mut parallel = None;
    let mut tool_choice = None;
    for (k, v) in req {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "model" | "temperature" | "top_p" | "stream" => {
                out.insert(k, v);
            }
            "max_tokens" | "max_completion_tokens" => max_tokens = v.as_u64(),
            // Usage is always part of an Anthropic stream; the gateway gives it to the caller
            // when asked.
            "stream_options" => {}
            "n" if v.as_u64() == Some(1) => {}
            "stop" => {
                let list = match v {
                    Value::String(s) => vec![Value::String(s)],
                    Value::Array(a) => a,
                    _ => return Err(untranslatable("stop", "a string or a list")),
                };
                out.insert("stop_sequences".into(), Value::Array(list));
            }
            "user" => {
                out.insert("metadata".into(), json!({"user_id": v}));
            }
            "parallel_tool_calls" => parallel = v.as_bool(),
            "tool_choice" => tool_choice = Some(v),
            "tools" => {
                let Value::Array(tools) = v else {
                    return Err(untranslatable("tools", "a list of functions"));
                };
                let mut out_tools = Vec::with_capacity(tools.len());
                for (i, t) in tools.iter().enumerate() {
                    let f = &t["function"];
                    if t["type"] != "function" || !f.is_object() {
                        return Err(untranslatable(
                            &format!("tools[{i}]"),
                            "only function tools translate",
                        ));
                    }
                    if f["strict"] == true {
                        return Err(untranslatable(
                            &format!("tools[{i}].function.strict"),
                            "Anthropic has no strict schemas",
                        ));
                    }
                    let mut tool = Map::new();
                    tool.insert("name".into(), f["name"].clone());
                    if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
                        tool.insert("description".into(), d.clone());
                    }
                    let schema = f
                        .get("parameters")
                        .filter(|p| !p.is_null())
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                    tool.insert("input_schema".into(), schema);
                    out_tools.push(Value::Object(tool));
                }
                out.insert("tools".into(), Value::Array(out_tools));
            }
            "messages" => {
                let Value::Array(msgs) = v else {
                    return Err(untranslatable("messages", "a list"));
                };
                let (system, messages) = chat_messages_to_anthropic(&msgs)?;
                if !system.is_empty() {
                    out.insert("system".into(), Value::String(system));
                }
                out.insert("messages".into(), Value::Array(messages));
            }
            other => {
                return Err(untranslatable(
                    other,
                    "Anthropic's Messages API has no equivalent",
                ));
            }
        }
    }
    out.insert(
        "max_tokens".into(),
        Value::from(max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    let mut choice = match tool_choice {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => {
                return Err(untranslatable(
                    "tool_choice",
                    "auto, none, required or one function",
                ))
            }
        }),
        Some(v) => match v["function"]["name"].as_str() {
            Some(name) => Some(json!({"type": "tool", "name": name})),
            None => {
                return Err(untranslatable(
                    "tool_choice",
                    "auto, none, required or one function",
                ))
            }
        },
    };
    if parallel == Some(false) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = Value::Bool(true);
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(out)
}

fn chat_messages_to_anthropic(msgs: &[Value]) -> Result<(String, Vec<Value>), ApiError> {
    let mut system = String::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        if m.get("name").is_some_and(|n| !n.is_null()) {
            return Err(untranslatable(
                &format!("{path}.name"),
                "Anthropic messages have no names",
            ));
        }
        match m["role"].as_str() {
            Some("system" | "developer") => {
                if !system.is_empty() {
                    system.push('\n');
                }
                system.push_str(&openai_text(&m["content"], &format!("{path}.content"))?);
            }
            Some("user") => out.push(json!({
                "role": "user",
                "content": openai_parts_to_blocks(&m["content"], &format!("{path}.content"))?,
            })),
            Some("assistant") => {
                let mut blocks = Vec::new();
                let text = openai_text(&m["content"], &format!("{path}.content"))?;
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                if let Some(calls) = m["tool_calls"].as_array() {
                    for (k, c) in calls.iter().enumerate() {
                        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
                        let input: Value =
                            serde_json::from_str(if args.is_empty() { "{}" } else { args })
                                .map_err(|_| {
                                    untranslatable(
                                        &format!("{path}.tool_calls[{k}].function.arguments"),
                                        "Anthropic takes tool input as a JSON object",
                                    )
                                })?;
                        blocks.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input}));
                    }
                }
                out.push(json!({"role": "assistant", "content": blocks}));
            }
            Some("tool") => {
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": m["tool_call_id"],
                    "content": openai_text(&m["content"], &format!("{path}.content"))?,
                });
                // Consecutive tool results go into one user turn.
                let merged = out.last_mut().filter(|last| {
                    last["role"] == "user"
                        && last["content"]
                            .as_array()
                            .is_some_and(|b| b.iter().all(|x| x["type"] == "tool_result"))
                });
                match merged {
                    Some(last) => {
                        if let Some(b) = last["content"].as_array_mut() {
                            b.push(result);
                        }
                    }
                    None => out.push(json!({"role": "user", "content": [result]})),
                }
            }
            _ => {
                return Err(untranslatable(
                    &format!("{path}.role"),
                    "system, developer, user, assistant or tool",
                ))
            }
        }
    }
    Ok((system, out))
}

/// Anthropic's text of a `system` or `tool_result` content: a string or text blocks.
fn anthropic_text(content: &Value, path: &str) -> Result<String, ApiError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = String::new();
            for (j, b) in blocks.iter().enumerate() {
                if b["type"] != "text" {
                    return Err(untranslatable(
                        &format!("{path}[{j}]"),
                        "only text blocks translate here",
                    ));
                }
                out.push_str(b["text"].as_str().unwrap_or(""));
            }
            Ok(out)
        }
        _ => Err(untranslatable(path, "a string or blocks")),
    }
}

fn messages_to_chat(req: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    let mut messages = Vec::new();
    let mut disable_parallel = false;
    let mut stream = false;
    for (k, v) in req {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "model" | "temperature" | "top_p" => {
                out.insert(k, v);
            }
            // OpenAI's name for it; its reasoning models refuse `max_tokens`.
            "max_tokens" => {
                out.insert("max_completion_tokens".into(), v);
            }
            "stream" => {
                stream = v.as_bool().unwrap_or(false);
                out.insert(k, v);
            }
            "stop_sequences" => {
                out.insert("stop".into(), v);
            }
            "metadata" => {
                if let Some(u) = v.get("user_id").filter(|u| !u.is_null()) {
                    out.insert("user".into(), u.clone());
                }
            }
            "system" => {
                let text = anthropic_text(&v, "system")?;
                messages.insert(0, json!({"role": "system", "content": text}));
            }
            "tools" => {
                let Value::Array(tools) = v else {
                    return Err(untranslatable("tools", "a list"));
                };
                let mut out_tools = Vec::new();
                for (i, t) in tools.iter().enumerate() {
                    if t.get("type").is_some_and(|ty| ty != "custom") {
                        return Err(untranslatable(
                            &format!("tools[{i}]"),
                            "only custom tools translate to OpenAI",
                        ));
                    }
                    let mut f = Map::new();
                    f.insert("name".into(), t["name"].clone());
                    if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
                        f.insert("description".into(), d.clone());
                    }
                    f.insert("parameters".into(), t["input_schema"].clone());
                    out_tools.push(json!({"type": "function", "function": f}));
                }
                out.insert("tools".into(), Value::Array(out_tools));
            }
            "tool_choice" => {
                disable_parallel = v["disable_parallel_tool_use"] == true;
                let choice = match v["type"].as_str() {
                    Some("auto") => json!("auto"),
                    Some("none") => json!("none"),
                    Some("any") => json!("required"),
                    Some("tool") => json!({"type": "function", "function": {"name": v["name"]}}),
                    _ => {
                        return Err(untranslatable(
                            "tool_choice.type",
                            "auto, any, none or tool",
                        ))
                    }
                };
                out.insert("tool_choice".into(), choice);
            }
            "messages" => {
                let Value::Array(msgs) = v else {
                    return Err(untranslatable("messages", "a list"));
                };
                for (i, m) in msgs.iter().enumerate() {
                    anthropic_message_to_chat(m, &format!("messages[{i}]"), &mut messages)?;
                }
            }
            other => {
                return Err(untranslatable(
                    other,
                    "OpenAI's chat completions have no equivalent",
                ))
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if disable_parallel {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    if stream {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(out)
}

fn anthropic_message_to_chat(m: &Value, path: &str, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let role = m["role"].as_str().unwrap_or("");
    if role != "user" && role != "assistant" {
        return Err(untranslatable(&format!("{path}.role"), "user or assistant"));
    }
    let blocks = match &m["content"] {
        Value::String(s) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => {
            return Err(untranslatable(
                &format!("{path}.content"),
                "a string or blocks",
            ))
        }
    };
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("{path}.content[{j}]");
        match (role, b["type"].as_str()) {
            ("user", Some("text")) => parts.push(json!({"type": "text", "text": b["text"]})),
            ("assistant", Some("text")) => text.push_str(b["text"].as_str().unwrap_or("")),
            ("user", Some("image")) => {
                let s = &b["source"];
                let url = match s["type"].as_str() {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        s["media_type"].as_str().unwrap_or("image/png"),
                        s["data"].as_str().unwrap_or("")
                    ),
                    Some("url") => s["url"].as_str().unwrap_or("").to_owned(),
                    _ => {
                        return Err(untranslatable(
                            &format!("{at}.source"),
                            "a base64 or url image",
                        ))
                    }
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            ("user", Some("tool_result")) => {
                let mut content = anthropic_text(&b["content"], &format!("{at}.content"))?;
                if b["is_error"] == true {
                    content.insert_str(0, "Error: ");
                }
                out.push(
                    json!({"role": "tool", "tool_call_id": b["tool_use_id"], "content": content}),
                );
            }
            ("assistant", Some("tool_use")) => calls.push(json!({
                "id": b["id"], "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()},
            })),
            _ => {
                return Err(untranslatable(
                    &at,
                    "this block has no OpenAI chat equivalent",
                ))
            }
        }
    }
    if role == "user" && !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    if role == "assistant" {
        let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
    }
    Ok(())
}

/// Anthropic's stop reason as a chat finish reason.
pub(crate) fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// A chat finish reason as Anthropic's stop reason.
pub(crate) fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage as chat usage (cache reads and writes count as prompt tokens); `None` when
/// the provider reported none (nothing is made up).
pub(crate) fn chat_usage(u: &Value) -> Option<Value> {
    let u = crate::openai::usage_fields_lenient(u)?.usage();
    Some(
        json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
                "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}),
    )
}

/// Chat usage as Anthropic usage (cached tokens reported as cache reads beside the rest);
/// `None` when the provider reported none.
pub(crate) fn anthropic_usage(u: &Value) -> Option<Value> {
    if !u.is_object() {
        return None;
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let cached = n(&u["prompt_tokens_details"]["cached_tokens"]);
    Some(
        json!({"input_tokens": n(&u["prompt_tokens"]).saturating_sub(cached),
           "output_tokens": n(&u["completion_tokens"]),
           "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn message_to_chat_answer(v: &Value) -> Result<Value, String> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for b in v["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("thinking") => reasoning.push_str(b["thinking"].as_str().unwrap_or("")),
            Some("redacted_thinking") => {}
            Some("tool_use") => calls.push(json!({
                "id": b["id"], "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()},
            })),
            other => {
                return Err(format!(
                    "the answer holds a `{}` block, which chat completions cannot carry",
                    other.unwrap_or("?")
                ))
            }
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    let id = v["id"].as_str().unwrap_or("msg");
    let mut out = json!({
        "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": now(), "model": v["model"],
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(v["stop_reason"].as_str().unwrap_or("end_turn"))}],
    });
    if let Some(u) = chat_usage(&v["usage"]) {
        out["usage"] = u;
    }
    Ok(out)
}

fn chat_to_message_answer(v: &Value) -> Result<Value, String> {
    let choice = &v["choices"][0];
    let m = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in m["tool_calls"].as_array().into_iter().flatten() {
        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(if args.is_empty() { "{}" } else { args })
            .map_err(|_| "a tool call's arguments are not a JSON object".to_owned())?;
        content.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input}));
    }
    let id = v["id"].as_str().unwrap_or("chatcmpl");
    let mut out = json!({
        "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": v["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": null,
    });
    if let Some(u) = anthropic_usage(&v["usage"]) {
        out["usage"] = u;
    }
    Ok(out)
}
