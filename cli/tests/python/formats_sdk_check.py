"""The official Anthropic and OpenAI Python SDKs, pointed at a Palisade gateway with base_url,
work unchanged on Anthropic's Messages API and OpenAI's Responses API — answers and streams
scanned for personal data, tool calls included.

Run by cli/tests/gateway_python_sdk.rs: argv[1] is the gateway URL; the mock provider behind it
streams text and a tool call whose pieces split an e-mail address. Prints OK on success.
"""
import json
import sys

import anthropic
import openai

EMAIL = "jane.doe@example.com"
base = sys.argv[1].rstrip("/")

# --- Anthropic SDK on /v1/messages -------------------------------------------------------------
claude = anthropic.Anthropic(base_url=base, api_key="sk-caller-anything", max_retries=0)
messages = [{"role": "user", "content": f"My address is {EMAIL}, what is the weather?"}]
tools = [{"name": "lookup", "description": "Look up a customer", "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}}}]

raw = claude.messages.with_raw_response.create(model="claude-test", max_tokens=64, system=f"The user is {EMAIL}", messages=messages, tools=tools)
assert raw.headers["x-palisade-pack-version"] == "1.0.0", raw.headers
msg = raw.parse()
assert msg.type == "message" and msg.role == "assistant", msg
assert EMAIL not in msg.model_dump_json(), msg
text = "".join(b.text for b in msg.content if b.type == "text")
assert "[EMAIL" in text, text
tool = [b for b in msg.content if b.type == "tool_use"][0]
assert EMAIL not in json.dumps(tool.input) and "EMAIL" in tool.input["to"], tool.input
assert msg.usage.input_tokens > 0 and msg.usage.output_tokens == 7, msg.usage

# Streamed, with the SDK's own accumulation: text and tool input come out redacted.
with claude.messages.stream(model="claude-test", max_tokens=64, messages=messages, tools=tools) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
assert EMAIL not in streamed and "[EMAIL" in streamed, streamed
assert streamed.startswith("Mail ") and streamed.endswith(" now"), streamed
tool = [b for b in final.content if b.type == "tool_use"][0]
assert EMAIL not in json.dumps(tool.input) and "EMAIL" in tool.input["to"], tool.input
assert tool.input["n"] == 1, tool.input
assert final.stop_reason == "tool_use" and final.usage.output_tokens > 0, final

count = claude.messages.count_tokens(model="claude-test", messages=messages)
assert count.input_tokens > 0, count

try:
    claude.messages.create(model="claude-not-allowed", max_tokens=8, messages=messages)
    raise AssertionError("a model outside the pack was allowed")
except anthropic.PermissionDeniedError as e:
    assert e.status_code == 403, e
    assert e.body["error"]["code"] == "model_not_allowed", e.body

# --- OpenAI SDK on /v1/responses ---------------------------------------------------------------
client = openai.OpenAI(base_url=base + "/v1", api_key="sk-caller-anything", max_retries=0)
fn_tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}]
resp = client.responses.create(model="gpt-4o-mini", instructions=f"The user is {EMAIL}", input=f"Write to {EMAIL}", tools=fn_tools)
assert resp.status == "completed", resp
assert EMAIL not in resp.model_dump_json(), resp
assert "[EMAIL" in resp.output_text, resp.output_text
call = [o for o in resp.output if o.type == "function_call"][0]
assert "EMAIL" in json.loads(call.arguments)["to"], call.arguments
assert resp.usage.input_tokens > 0 and resp.usage.output_tokens == 7, resp.usage

events = list(client.responses.create(model="gpt-4o-mini", input=f"Write to {EMAIL}", tools=fn_tools, stream=True))
deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert EMAIL not in deltas and "[EMAIL" in deltas, deltas
args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
assert "EMAIL" in json.loads(args)["to"], args
done = events[-1]
assert done.type == "response.completed" and done.response.output_text == deltas, done
assert done.response.usage.total_tokens > 0, done.response.usage

# The SDK's stream helper accumulates the same events into a final response.
with client.responses.stream(model="gpt-4o-mini", input="hello", tools=fn_tools) as s:
    for _ in s:
        pass
    final = s.get_final_response()
assert final.output_text == deltas, final.output_text

stored = client.responses.retrieve("resp_mock")
assert stored.id == "resp_mock" and EMAIL not in stored.model_dump_json(), stored
client.responses.delete("resp_mock")

# --- Across formats: each SDK asks for a model whose provider speaks the other API --------------
chat = client.chat.completions.create(model="claude-test", messages=[{"role": "system", "content": "Be brief."}, *messages],
                                      tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}])
assert chat.object == "chat.completion", chat
assert EMAIL not in chat.model_dump_json() and "[EMAIL" in chat.choices[0].message.content, chat
assert chat.choices[0].finish_reason == "tool_calls", chat
assert "EMAIL" in json.loads(chat.choices[0].message.tool_calls[0].function.arguments)["to"], chat
assert chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens == 7, chat.usage

chunks = list(client.chat.completions.create(model="claude-test", messages=messages, stream=True,
                                             stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == streamed, (text, streamed)
args = "".join(tc.function.arguments or "" for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or []))
assert "EMAIL" in json.loads(args)["to"], args
assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0, chunks[-1]

msg = claude.messages.create(model="gpt-4o-mini", max_tokens=64, messages=messages, tools=tools)
assert msg.type == "message" and msg.stop_reason == "tool_use", msg
assert EMAIL not in msg.model_dump_json(), msg
assert [b.type for b in msg.content] == ["text", "tool_use"], msg.content
with claude.messages.stream(model="gpt-4o-mini", max_tokens=64, messages=messages, tools=tools) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == streamed, (text, streamed)
tool = [b for b in final.content if b.type == "tool_use"][0]
assert "EMAIL" in tool.input["to"] and tool.input["n"] == 1, tool.input
assert final.usage.output_tokens > 0, final.usage

print("OK")
