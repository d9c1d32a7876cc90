"""The official OpenAI Python SDK, pointed at a Palisade gateway with base_url, works unchanged.

Run by cli/tests/gateway_python_sdk.rs: argv[1] is the gateway URL; a mock provider behind it
answers chat (JSON and SSE), embeddings and model listing. Prints OK on success.
"""
import sys

import openai

base = sys.argv[1].rstrip("/") + "/v1"
client = openai.OpenAI(base_url=base, api_key="sk-caller-anything", max_retries=0)
messages = [{"role": "user", "content": "How do I reset my password?"}]

# Chat, JSON.
raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
assert raw.headers["x-palisade-pack-version"] == "1.0.0", raw.headers
assert len(raw.headers["x-palisade-request-id"]) == 32
chat = raw.parse()
assert chat.choices[0].message.content == "Hello from the mock provider.", chat
assert chat.usage is not None and chat.usage.total_tokens > 0

# Chat, streamed: the usage chunk the gateway asked for is not shown to this caller...
chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == "Hello, world!", text
assert all(getattr(c, "usage", None) is None for c in chunks), chunks[-1]

# ...but is shown to one that asks for it.
chunks = list(
    client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
)
assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0, chunks[-1]

# Embeddings.
emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0

# Model listing and retrieval.
ids = sorted(m.id for m in client.models.list())
assert ids == ["gpt-4o-mini", "text-embedding-3-small"], ids
assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"

# Policy refusals surface as the SDK's usual exceptions, with our codes.
try:
    client.chat.completions.create(model="gpt-5-not-allowed", messages=messages)
    raise AssertionError("a model outside the pack was allowed")
except openai.PermissionDeniedError as e:
    assert e.status_code == 403 and e.code == "model_not_allowed", e

print("OK")
