//! The PII policy on the request path and in responses, JSON and SSE, with the real engine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::sync::Arc;

use gateway::NoEnforcement;
use serde_json::json;
use support::client::{self, chat, post, sse_text};
use support::mock::MockProvider;
use support::{events_for, pack, Event, Recorder, TestGateway};

const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";

fn pii_policy(action: &str) -> String {
    format!("policy:\n  pii-detector:\n    action: {action}\n    entities: [email, credit_card, phone]\n    scan: [request, response]\n")
}

async fn setup(action: &str) -> (MockProvider, TestGateway) {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let gw = TestGateway::start(
        &pack(
            &mock.base_url(),
            "1.0.0",
            "pii-detector",
            &pii_policy(action),
        ),
        Arc::new(NoEnforcement),
    )
    .await;
    (mock, gw)
}

#[tokio::test]
async fn the_provider_receives_redacted_text_in_every_scanned_field() {
    let (mock, gw) = setup("redact").await;
    let c = client::client();
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": format!("Mail me at {EMAIL}")},
            {"role": "user", "content": [{"type": "text", "text": format!("card {CARD}")}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": format!("{{\"email\":\"{EMAIL}\"}}")}}]}
        ],
        "x_unknown": "kept"
    });
    let r = post(&c, &gw.api("/v1/chat/completions"), &body, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = mock.last().await.unwrap().body;
    let sent = got.to_string();
    assert!(
        !sent.contains(EMAIL) && !sent.contains(CARD),
        "PII reached the provider: {sent}"
    );
    assert!(got["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("Mail me at "));
    assert_eq!(
        got["messages"][1]["content"][1],
        body["messages"][1]["content"][1]
    );
    assert_eq!(got["x_unknown"], "kept");

    for (path, field, model) in [
        ("/v1/completions", "prompt", "gpt-4o-mini"),
        ("/v1/embeddings", "input", "text-embedding-3-small"),
    ] {
        let r = post(
            &c,
            &gw.api(path),
            &json!({"model": model, field: [format!("to {EMAIL}"), "clean"]}),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let got = mock.last().await.unwrap().body;
        assert!(!got.to_string().contains(EMAIL), "{path}: {got}");
        assert_eq!(got[field][1], "clean");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_blocked_request_never_reaches_the_provider() {
    let (mock, gw) = setup("block").await;
    let (rec, rx) = Recorder::new();
    let gw2 = TestGateway::start(
        &pack(
            &mock.base_url(),
            "1.0.0",
            "pii-detector",
            &pii_policy("block"),
        ),
        rec,
    )
    .await;
    let c = client::client();
    for g in [&gw, &gw2] {
        let r = post(
            &c,
            &g.api("/v1/chat/completions"),
            &chat("gpt-4o-mini", &format!("I am {EMAIL}"), false),
            None,
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (400, "pii_blocked")
        );
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("email"));
        assert!(
            !r.text().contains(EMAIL),
            "the refusal must not echo the value"
        );
        assert_eq!(r.header("x-should-retry"), "false");
    }
    assert_eq!(mock.api_calls(), 0);
    let clean = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "no personal data", false),
        None,
    )
    .await;
    assert_eq!(clean.status, 200);
    let all: Vec<Event> = rx.try_iter().map(|(_, e)| e).collect();
    assert_eq!(
        all,
        [Event::Failed {
            what: "pii_blocked".into(),
            admitted: false
        }]
    );
    gw.stop().await;
    gw2.stop().await;
}

#[tokio::test]
async fn a_card_number_split_across_sse_chunks_is_redacted_in_the_stream() {
    let (mock, gw) = setup("redact").await;
    mock.set(|b| {
        b.chunks = vec![
            "Your card ".into(),
            "4111 1111".into(),
            " 1111 11".into(),
            "11 was charged.".into(),
        ];
    })
    .await;
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "what happened?", true),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let text = sse_text(&r.text());
    assert!(
        !text.contains(CARD) && !text.contains("4111"),
        "card leaked in the stream: {text}"
    );
    assert!(
        text.starts_with("Your card ") && text.ends_with(" was charged."),
        "{text}"
    );
    assert!(r.text().trim_end().ends_with("data: [DONE]"));
    gw.stop().await;
}

#[tokio::test]
async fn json_responses_are_scanned_and_log_only_counts() {
    let (mock, gw) = setup("redact").await;
    mock.set(|b| b.reply = format!("Write to {EMAIL}.")).await;
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", "who?", false),
        None,
    )
    .await;
    let content = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !content.contains(EMAIL) && content.starts_with("Write to "),
        "{content}"
    );
    gw.stop().await;

    let (mock, gw) = setup("log").await;
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", &format!("I am {EMAIL}"), false),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        mock.last().await.unwrap().body.to_string().contains(EMAIL),
        "log must not change traffic"
    );
    let m = client::get(&c, &gw.api("/metrics")).await.text();
    assert!(
        m.contains("palisade_pii_findings_total{entity=\"email\",side=\"request\"} 1"),
        "{m}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn odd_but_valid_sse_is_scanned_and_sse_the_scan_cannot_read_ends_the_stream() {
    let (mock, gw) = setup("redact").await;
    let c = client::client();
    let ask = chat("gpt-4o-mini", "who?", true);
    let event = format!(
        r#"data: {{"id":"x","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":"mail {EMAIL}"}},"finish_reason":"stop"}}]}}"#
    );
    // Line ends of every SSE kind, and a byte-order mark: scanned like any stream.
    for raw in [
        format!("{event}\r\rdata: [DONE]\r\r"),
        format!("\u{feff}{event}\n\ndata: [DONE]\n\n"),
    ] {
        mock.set(|b| b.raw_stream = Some(raw.clone().into_bytes()))
            .await;
        let r = post(&c, &gw.api("/v1/chat/completions"), &ask, None).await;
        assert_eq!(r.status, 200);
        assert!(!r.text().contains(EMAIL), "{raw:?}: {}", r.text());
        assert!(r.text().contains("mail [EMAIL_1]"), "{raw:?}: {}", r.text());
    }
    // Text in a second data line, or data that is not JSON: the stream breaks (the caller's
    // body ends with an error, no `[DONE]`) and the address never reaches the caller.
    for raw in [
        format!("data: {{\"choices\":[{{\"index\":0,\ndata: \"delta\":{{\"content\":\"{EMAIL}\"}}}}]}}\n\n"),
        format!("data: mail {EMAIL}\n\n"),
    ] {
        mock.set(|b| b.raw_stream = Some(raw.clone().into_bytes())).await;
        let r = post(&c, &gw.api("/v1/chat/completions"), &ask, None).await;
        assert!(!r.text().contains(EMAIL), "{raw:?}: {}", r.text());
        assert!(!r.text().contains("[DONE]"), "{raw:?}: {}", r.text());
    }
    gw.stop().await;
}

/// A chat chunk event of choice 0 whose delta is `delta` (JSON).
fn delta_event(delta: &serde_json::Value) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    )
}

/// The end of a chat stream: a chunk finishing choice 0 with `reason`, then `[DONE]`.
fn stream_end(reason: &str) -> String {
    format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    )
}

/// Stream `raw` from the mock through the gateway; the caller's body.
async fn relayed(mock: &MockProvider, gw: &TestGateway, raw: String) -> String {
    mock.set(|m| m.raw_stream = Some(raw.into_bytes())).await;
    let ask = chat("gpt-4o-mini", "who?", true);
    let r = post(
        &client::client(),
        &gw.api("/v1/chat/completions"),
        &ask,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    r.text()
}

#[tokio::test]
async fn a_streamed_refusal_and_reasoning_are_scanned_across_chunks() {
    let (mock, gw) = setup("redact").await;
    let (a, b) = EMAIL.split_at(6);
    let raw = [
        delta_event(&json!({"reasoning_content": format!("they wrote {a}")})),
        delta_event(&json!({"reasoning_content": format!("{b} earlier")})),
        delta_event(&json!({"refusal": format!("I cannot mail {a}")})),
        delta_event(&json!({"refusal": b})),
        stream_end("stop"),
    ]
    .concat();
    let out = relayed(&mock, &gw, raw).await;
    assert!(!out.contains(EMAIL) && !out.contains(b), "{out}");
    assert!(out.contains("[EMAIL_1]"), "{out}");
    assert!(out.contains("data: [DONE]"), "{out}");
    gw.stop().await;
}

#[tokio::test]
async fn streamed_tool_call_arguments_are_scanned_across_chunks() {
    let (mock, gw) = setup("redact").await;
    let (a, b) = EMAIL.split_at(6);
    let args = |text: &str| {
        delta_event(&json!({"tool_calls": [{"index": 0, "function": {"arguments": text}}]}))
    };
    let raw = [
        delta_event(&json!({"role": "assistant", "tool_calls": [{
            "index": 0, "id": "call_1", "type": "function",
            "function": {"name": "send_mail", "arguments": ""},
        }]})),
        args(&format!("{{\"to\": \"{a}")),
        args(&format!("{b}\", \"cc\": \"{a}")),
        args(b),
        args("\"}"),
        stream_end("tool_calls"),
    ]
    .concat();
    let out = relayed(&mock, &gw, raw).await;
    assert!(!out.contains(EMAIL) && !out.contains(b), "{out}");
    // The caller's accumulated arguments are the redacted JSON, still JSON.
    let arguments: String = client::sse_data(&out)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let parsed: serde_json::Value = serde_json::from_str(&arguments).unwrap();
    assert_eq!(parsed["to"], "[EMAIL_1]", "{arguments}");
    assert_eq!(parsed["cc"], "[EMAIL_1]", "{arguments}");
    assert!(out.contains("\"name\":\"send_mail\""), "{out}");
    gw.stop().await;
}

#[tokio::test]
async fn an_answer_the_scan_cannot_read_is_refused_not_passed_unscanned() {
    let (mock, gw) = setup("redact").await;
    let c = client::client();
    let ask = chat("gpt-4o-mini", "who?", false);
    let answer = |content: &str| {
        format!(
            r#"{{"id":"x","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant",{content}}}}}]}}"#
        )
    };
    // An object cut short, and a body that is not JSON at all: neither can be scanned.
    let refused = [
        answer(&format!(r#""content":"{EMAIL}""#)).replace("}]}", ""),
        format!("mail {EMAIL}"),
    ];
    for raw in refused {
        mock.set(|b| b.raw_reply = Some(raw.clone())).await;
        let r = post(&c, &gw.api("/v1/chat/completions"), &ask, None).await;
        assert_eq!(r.status, 502, "{raw}: {}", r.text());
        assert!(!r.text().contains(EMAIL), "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "upstream_error", "{}", r.text());
    }
    // A second `content` the provider's client might read while a scan of known fields read the
    // first: every copy is scanned.
    let twice = answer(&format!(r#""content":"fine","content":"{EMAIL}""#));
    mock.set(|b| b.raw_reply = Some(twice.clone())).await;
    let r = post(&c, &gw.api("/v1/chat/completions"), &ask, None).await;
    assert_eq!(r.status, 200, "{twice}: {}", r.text());
    assert_eq!(r.text(), twice.replace(EMAIL, "[EMAIL_1]"));
    // Readable answers of any shape pass, every string scanned where it is: odd choices, a
    // refusal, reasoning, an audio transcript, logprob tokens, an answer that is a bare list.
    let odd = answer(&format!(
        r#""content":"{EMAIL}","refusal":"no, {EMAIL}","reasoning_content":"{EMAIL}","audio":{{"data":"AAAA","transcript":"{EMAIL}"}},"tool_calls":[7,{{"function":"f"}},{{"function":{{"arguments":"{EMAIL}"}}}}]"#
    ))
    .replace(r#""choices":["#, r#""choices":[null,"s","#)
    .replace(r#""object":"#, &format!(r#""logprobs":{{"content":[{{"token":"{EMAIL}","logprob":-0.1}}]}},"object":"#));
    for raw in [odd, format!(r#"["{EMAIL}",{{"deep":["{EMAIL}"]}}]"#)] {
        mock.set(|b| b.raw_reply = Some(raw.clone())).await;
        let r = post(&c, &gw.api("/v1/chat/completions"), &ask, None).await;
        assert_eq!(r.status, 200, "{raw}: {}", r.text());
        assert!(!r.text().contains(EMAIL), "{}", r.text());
        let got: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        let want: serde_json::Value =
            serde_json::from_str(&raw.replace(EMAIL, "[EMAIL_1]")).unwrap();
        assert_eq!(got, want);
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_redacted_request_is_admitted_and_settled_once() {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let (rec, rx) = Recorder::new();
    let gw = TestGateway::start(
        &pack(
            &mock.base_url(),
            "1.0.0",
            "pii-detector",
            &pii_policy("redact"),
        ),
        rec,
    )
    .await;
    let c = client::client();
    let r = post(
        &c,
        &gw.api("/v1/chat/completions"),
        &chat("gpt-4o-mini", &format!("I am {EMAIL}"), false),
        None,
    )
    .await;
    let id = r.header("x-palisade-request-id").to_owned();
    let total = r.json()["usage"]["total_tokens"].as_u64();
    gw.stop().await;
    let mut log = Vec::new();
    assert_eq!(
        events_for(&rx, &mut log, &id),
        [Event::Admitted, Event::Settled { usage_total: total }]
    );
}

/// Regression: a lone UTF-16 surrogate escape (`\ud800`) made the whole string undecodable, and
/// an undecodable string was skipped — a card, an SSN and an e-mail beside it reached the
/// provider under `redact` and `block`.
#[tokio::test]
async fn a_lone_surrogate_escape_does_not_switch_scanning_off() {
    const SSN: &str = "123-45-6789";
    let lone = [r"\ud800", r"\udfff", r"\ud83d\u0041", r"\udc00\ud800"];
    let c = client::client();
    for action in ["redact", "block"] {
        std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
        let mock = MockProvider::start().await;
        let policy = format!("policy:\n  pii-detector:\n    action: {action}\n    entities: [email, credit_card, ssn]\n    scan: [request, response]\n");
        let gw = TestGateway::start(
            &pack(&mock.base_url(), "1.0.0", "pii-detector", &policy),
            Arc::new(NoEnforcement),
        )
        .await;
        for esc in lone {
            let body = format!(
                r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"card {CARD} ssn {SSN} mail {EMAIL} {esc} end"}}]}}"#
            );
            let resp = client::send(
                &c,
                "POST",
                &gw.api("/v1/chat/completions"),
                Some(body.as_bytes()),
                None,
            )
            .await;
            let r = client::collect(resp).await;
            if action == "block" {
                assert_eq!(
                    (r.status.as_u16(), r.error_code().as_str()),
                    (400, "pii_blocked"),
                    "{esc}"
                );
                continue;
            }
            assert_eq!(r.status, 200, "{esc}: {}", r.text());
            let sent = String::from_utf8_lossy(&mock.last().await.unwrap().raw).into_owned();
            for value in [CARD, SSN, EMAIL] {
                assert!(
                    !sent.contains(value),
                    "{esc}: {value} reached the provider: {sent}"
                );
            }
            assert!(sent.contains("[CREDIT_CARD_1]"), "{sent}");
        }
        if action == "block" {
            assert_eq!(mock.api_calls(), 0);
        }

        // Answers: a JSON answer and a stream whose text carries a lone surrogate.
        mock.set(|b| {
            b.raw_reply = Some(format!(
                r#"{{"id":"c","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"mail {EMAIL} \ud800 card {CARD}"}},"finish_reason":"stop"}}]}}"#
            ));
            b.chunks = vec![format!("mail {EMAIL} \\ud800"), format!(" card {CARD}.")];
            b.chunks_escaped = true;
        })
        .await;
        for stream in [false, true] {
            let r = post(
                &c,
                &gw.api("/v1/chat/completions"),
                &chat("gpt-4o-mini", "hello", stream),
                None,
            )
            .await;
            let text = r.text();
            assert!(
                !text.contains(EMAIL) && !text.contains(CARD),
                "{action} stream={stream}: PII reached the caller: {text}"
            );
            if action == "redact" {
                assert_eq!(r.status, 200, "{text}");
                assert!(text.contains("[EMAIL_1]"), "{text}");
            }
        }
        gw.stop().await;
    }
}

/// The `delta.content` of each chunk of a chat stream, in order (role and finish chunks
/// without content are left out).
fn deltas(body: &str) -> Vec<String> {
    client::sse_data(body)
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// The release rule: with response scanning on, a chunk's text goes out in that chunk, except
/// the word a later chunk could still turn into a finding (it goes out with the next chunk)
/// and text from an unconfirmed trigger (a digit, `@`, a key prefix) on. Regression: a fixed
/// window of ~324 bytes was held back, so a short answer arrived in one piece at its end.
#[tokio::test]
async fn a_prose_stream_is_relayed_chunk_by_chunk_while_response_scanning_is_on() {
    let (mock, gw) = setup("redact").await;
    // The same policy without the bare-word obfuscated form (`mary at example dot com`).
    let plain = TestGateway::start(
        &pack(
            &mock.base_url(),
            "1.0.0",
            "pii-detector",
            &pii_policy("redact").replace("    scan:", "    obfuscated_emails: false\n    scan:"),
        ),
        Arc::new(NoEnforcement),
    )
    .await;
    let c = client::client();
    // (chunks sent, deltas with obfuscated e-mails on (the default), deltas with them off)
    let cases: [(&[&str], &[&str], &[&str]); 4] = [
        // Whole words. Off: every chunk as the provider sent it. On: a complete word waits
        // for the next one, which could be the `at` of `fox at example dot com`.
        (
            &["The ", "quick ", "brown ", "fox ", "jumps. "],
            &["The ", "quick ", "brown ", "fox jumps. "],
            &["The ", "quick ", "brown ", "fox ", "jumps. "],
        ),
        // Sub-word tokens: a word waits for its end; a chunk that is all held back is not sent
        // as an empty delta. (`world,` and `how` cannot be the name of an address.)
        (
            &["Hel", "lo wor", "ld, ", "how ", "are", " you?"],
            &["Hello ", "world, ", "how ", "are ", "you?"],
            &["Hello ", "world, ", "how ", "are ", "you?"],
        ),
        // An e-mail split over chunks: the text before its word goes out at once; the address
        // is decided when the stream ends, and never leaves unredacted.
        (
            &["Hello ", "world, mail ann", "@example.com now"],
            &["Hello world, mail ", "[EMAIL_1] now"],
            &["Hello ", "world, mail ", "[EMAIL_1] now"],
        ),
        // The bare obfuscated form split word by word is caught whole when it is on.
        (
            &["write ", "mary ", "at ", "example ", "dot ", "com ", "soon"],
            &["write ", "[EMAIL_1] soon"],
            &["write ", "mary ", "at ", "example ", "dot ", "com ", "soon"],
        ),
    ];
    for (sent, on, off) in cases {
        mock.set(|b| b.chunks = sent.iter().map(|s| (*s).to_owned()).collect())
            .await;
        for (gateway, expected) in [(&gw, on), (&plain, off)] {
            let r = post(
                &c,
                &gateway.api("/v1/chat/completions"),
                &chat("gpt-4o-mini", "hi", true),
                None,
            )
            .await;
            assert_eq!(r.status, 200);
            assert_eq!(deltas(&r.text()), expected, "{sent:?}");
            assert!(!r.text().contains("\"content\":\"\"}"), "{}", r.text());
        }
    }
    gw.stop().await;
    plain.stop().await;
}

/// Values in brackets, Markdown emphasis and with a prefix length or a port are redacted on
/// requests, JSON answers and streams. Regression: each of these passed unredacted.
#[tokio::test]
async fn values_in_brackets_markdown_and_with_suffixes_are_redacted_everywhere() {
    std::env::set_var("PALISADE_TEST_PROVIDER_KEY", "sk-provider-secret");
    let mock = MockProvider::start().await;
    let policy = "policy:\n  pii-detector:\n    action: redact\n    scan: [request, response]\n";
    let gw = TestGateway::start(
        &pack(&mock.base_url(), "1.0.0", "pii-detector", policy),
        Arc::new(NoEnforcement),
    )
    .await;
    let c = client::client();
    let cases = [
        ("(4111 1111 1111 1111)", "4111"),
        ("*4111 1111 1111 1111*", "4111"),
        ("ssn: (123-45-6789)", "123-45"),
        ("the customer (203.0.113.7)", "203.0"),
        ("ip=10.1.2.3/24", "10.1.2.3"),
        ("at 10.1.2.3:8080", "10.1.2.3"),
        ("**ann@example.com**", "ann@"),
        ("_ann@example.com_", "ann@"),
        ("write john [at] example [dot] com today", "john"),
        ("or john(at)example.com", "john"),
        ("reach mary at example dot com", "mary"),
    ];
    for (text, secret) in cases {
        let r = post(
            &c,
            &gw.api("/v1/chat/completions"),
            &chat("gpt-4o-mini", text, false),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{text}");
        let sent = mock.last().await.unwrap().body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            !sent.contains(secret),
            "{text} reached the provider as {sent}"
        );

        mock.set(|b| {
            b.reply = text.to_owned();
            b.chunks = text.chars().map(String::from).collect();
        })
        .await;
        for stream in [false, true] {
            let r = post(
                &c,
                &gw.api("/v1/chat/completions"),
                &chat("gpt-4o-mini", "hi", stream),
                None,
            )
            .await;
            let got = if stream {
                sse_text(&r.text())
            } else {
                r.json()["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            assert!(
                !got.contains(secret),
                "{text} (stream={stream}) reached the caller as {got}"
            );
            assert!(got.contains('['), "{text} (stream={stream}): {got}");
        }
    }
    gw.stop().await;
}

/// Regression: under `log`, a request with findings was counted as `allow` in
/// `palisade_policy_decisions_total` while its audit record said `log`.
#[tokio::test]
async fn log_decisions_are_counted_as_log_not_pass() {
    let (mock, gw) = setup("log").await;
    let c = client::client();
    mock.set(|b| b.reply = format!("Write to {EMAIL}.")).await;
    for text in [format!("I am {EMAIL}"), "nothing personal".to_owned()] {
        let r = post(
            &c,
            &gw.api("/v1/chat/completions"),
            &chat("gpt-4o-mini", &text, false),
            None,
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let metrics = String::from_utf8_lossy(&gw.state.metrics().render()).into_owned();
    let count = |action: &str| {
        let series = format!(
            "palisade_policy_decisions_total{{action=\"{action}\",policy=\"pii-detector\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    // Two requests: one with a finding (`log`), one clean (`pass`, the audit record's word);
    // both answers carry an address (`log` twice more).
    assert_eq!((count("log"), count("pass")), (3, 1), "{metrics}");
    gw.stop().await;
}

/// A provider's error body can echo personal data (a prompt, an account's e-mail): it is scanned
/// like an answer — redacted under `redact`, withheld under `block`, withheld when it cannot be
/// read — and of the provider's headers only those a client needs reach the caller.
#[tokio::test]
async fn provider_error_bodies_are_scanned_and_only_client_headers_pass() {
    let echo = format!(
        "{{\"error\":{{\"message\":\"account {EMAIL} is over its quota\",\"type\":\"insufficient_quota\",\"param\":null,\"code\":\"insufficient_quota\",\"x\":[\"{EMAIL}\",{{\"deep\":\"{EMAIL}\"}}]}}}}"
    );
    let (mock, gw) = setup("redact").await;
    let c = client::client();
    let url = gw.api("/v1/chat/completions");
    mock.set(|b| {
        b.fail_status = Some(429);
        b.fail_body = Some(echo.clone().into_bytes());
    })
    .await;
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.status, 429);
    let text = r.text();
    assert!(!text.contains(EMAIL), "{text}");
    let v = r.json();
    assert_eq!(v["error"]["message"], "account [EMAIL_1] is over its quota");
    assert_eq!(v["error"]["x"][1]["deep"], "[EMAIL_1]");
    assert_eq!(v["error"]["type"], "insufficient_quota");
    for kept in [
        "x-request-id",
        "x-ratelimit-remaining-requests",
        "content-type",
    ] {
        assert!(
            !r.header(kept).is_empty(),
            "{kept} missing: {:?}",
            r.headers
        );
    }
    for dropped in [
        "openai-organization",
        "openai-project",
        "server",
        "openai-processing-ms",
    ] {
        assert!(
            r.headers.get(dropped).is_none(),
            "{dropped} leaked: {:?}",
            r.headers
        );
    }

    // An HTML error page is scanned as text.
    mock.set(|b| {
        b.fail_body = Some(format!("<html><body>Contact {EMAIL}</body></html>").into_bytes())
    })
    .await;
    let r = post(&c, &url, &chat("gpt-4o-mini", "hi", false), None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), "<html><body>Contact [EMAIL_1]</body></html>");

    // Successful answers, JSON and streamed, carry the same headers only.
    mock.set(|b| b.fail_status = None).await;
    for stream in [false, true] {
        let r = post(&c, &url, &chat("gpt-4o-mini", "hi", stream), None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-request-id"), "req_mock_1");
        assert!(
            r.headers.get("openai-organization").is_none(),
            "{:?}",
            r.headers
        );
    }
    drop(gw);

    let (mock, gw) = setup("block").await;
    mock.set(|b| {
        b.fail_status = Some(400);
        b.fail_body = Some(echo.clone().into_bytes());
    })
    .await;
    let r = gw.chat("hi").await;
    assert_eq!(r.status, 400);
    let text = r.text();
    assert!(!text.contains(EMAIL), "{text}");
    assert_eq!(r.error_code(), "upstream_error");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("withheld") && message.contains("email"),
        "{message}"
    );

    // A body that is neither JSON nor text cannot be scanned, so it is not passed on.
    let mut bytes = b"\xff\xfe".to_vec();
    bytes.extend_from_slice(EMAIL.as_bytes());
    mock.set(|b| b.fail_body = Some(bytes)).await;
    let r = gw.chat("hi").await;
    assert_eq!(r.status, 400);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("could not be scanned"), "{message}");
}

/// Every string the model reads is scanned, whatever field or shape carries it, while media
/// payloads (an image's URL, base64 data) are left alone: a chance digit run redacted inside
/// them would corrupt the file.
#[tokio::test]
async fn every_text_field_of_a_request_is_scanned_and_media_is_left_alone() {
    let (mock, gw) = setup("redact").await;
    let c = client::client();
    let image = format!("data:image/png;base64,iVBORw0KGgo{CARD}AAAA");
    let body = json!({
        "model": "gpt-4o-mini",
        "user": EMAIL,
        "metadata": {"customer": EMAIL},
        "stop": [EMAIL],
        "prediction": {"type": "content", "content": format!("Dear {EMAIL}")},
        "messages": [
            {"role": "user", "name": EMAIL, "content": [
                {"type": "text", "text": "see the picture"},
                {"type": "image_url", "image_url": {"url": image, "detail": "low"}}
            ]},
            {"role": "user", "content": {"unknown_shape": {"text": format!("card {CARD}")}}},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": format!("I cannot mail {EMAIL}")}]}
        ],
        "tools": [{"type": "function", "function": {
            "name": "lookup",
            "description": format!("Looks up {EMAIL}"),
            "parameters": {"type": "object", "properties": {
                "q": {"type": "string", "description": format!("e.g. {EMAIL}")},
                "id": {"type": "string", "description": format!("like {EMAIL}")}
            }}
        }}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"description": format!("for {EMAIL}")}}}
    });
    let r = post(&c, &gw.api("/v1/chat/completions"), &body, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = mock.last().await.unwrap();
    let sent = String::from_utf8_lossy(&got.raw).into_owned();
    assert!(!sent.contains(EMAIL), "{sent}");
    assert!(!sent.contains(&format!("card {CARD}")), "{sent}");
    assert_eq!(got.body["user"], "[EMAIL_1]");
    assert_eq!(got.body["metadata"]["customer"], "[EMAIL_1]");
    assert_eq!(
        got.body["tools"][0]["function"]["parameters"]["properties"]["q"]["description"],
        "e.g. [EMAIL_1]"
    );
    // A property named like a non-text field (`id`) is an object: its description is scanned.
    assert_eq!(
        got.body["tools"][0]["function"]["parameters"]["properties"]["id"]["description"],
        "like [EMAIL_1]"
    );
    // The image is forwarded as it came, digit run and all.
    assert_eq!(
        got.body["messages"][0]["content"][1]["image_url"]["url"],
        image
    );
    assert_eq!(got.body["model"], "gpt-4o-mini");
}
