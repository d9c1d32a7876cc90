//! A small blocking client for the control plane's JSON API, used by the operator commands.
//!
//! hyper-util's client on a current-thread tokio runtime: one request at a time, plain HTTP
//! (put TLS in front of the control plane; no TLS client is built in). The URL comes from
//! `--control-plane` or `PALISADE_CONTROL_PLANE`; the key only from `PALISADE_SERVICE_KEY`, never a
//! flag, so it stays out of shell history and process listings.

use std::process::ExitCode;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_wire::error::{ErrorAnswer, ErrorBody};
use serde_json::Value;

/// Largest response the CLI reads.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Long enough for a held poll, short enough that a hung server does not hang a CI job forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the control plane is.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CpArgs {
    /// Control plane URL, e.g. http://127.0.0.1:8070 as `palisade up` starts it (default:
    /// $PALISADE_CONTROL_PLANE).
    #[arg(
        long = "control-plane",
        env = "PALISADE_CONTROL_PLANE",
        value_name = "URL"
    )]
    pub(crate) control_plane: Option<String>,
}

/// A response: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Answer {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug)]
pub(crate) struct CpClient {
    base: String,
    key: Option<String>,
    rt: tokio::runtime::Runtime,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl CpClient {
    /// Build a client, or print why not and return the exit code.
    pub(crate) fn new(args: &CpArgs) -> Result<Self, ExitCode> {
        let Some(base) = args.control_plane.as_deref() else {
            eprintln!(
                "error: name the control plane with --control-plane URL or PALISADE_CONTROL_PLANE"
            );
            return Err(ExitCode::from(2));
        };
        if !base.starts_with("http://") {
            eprintln!("error: the control plane URL must start with http:// (got `{base}`)");
            return Err(ExitCode::from(2));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                eprintln!("error: cannot start the runtime: {e}");
                ExitCode::FAILURE
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            key: std::env::var("PALISADE_SERVICE_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            rt,
            http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        })
    }

    /// A client with an explicit key (for `palisade up`, which made the key itself).
    pub(crate) fn with_key(base: &str, key: &str) -> Result<Self, ExitCode> {
        let mut c = Self::new(&CpArgs {
            control_plane: Some(base.to_owned()),
        })?;
        c.key = Some(key.to_owned());
        Ok(c)
    }

    /// Wait without blocking a runtime (`--follow` between polls).
    pub(crate) fn sleep(&self, d: Duration) {
        self.rt.block_on(async { tokio::time::sleep(d).await });
    }

    /// Send a request; a transport failure is printed and becomes exit code 1.
    pub(crate) fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ExitCode> {
        self.rt
            .block_on(self.send(method, path, body))
            .map_err(|e| {
                eprintln!("error: control plane at {}: {e}", self.base);
                ExitCode::FAILURE
            })
    }

    /// Send a request and require a 2xx answer; otherwise print the error body.
    pub(crate) fn expect_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ExitCode> {
        let answer = self.call(method, path, body)?;
        if answer.ok() {
            return Ok(answer.body);
        }
        let code = print_error(&answer);
        if answer.status == 401 {
            match self.key {
                None => eprintln!("  no key was sent: put a service key in PALISADE_SERVICE_KEY (it is read only from that variable; `palisade up` keeps its admin key in .palisade/admin-key)"),
                Some(_) => eprintln!("  the key in PALISADE_SERVICE_KEY was not accepted (unknown or revoked)"),
            }
        }
        Err(code)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let payload = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| "no answer within 60 s".to_owned())?
            .map_err(|e| format!("{e} (is it running?)"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > MAX_RESPONSE_BYTES {
                    return Err("response too large".to_owned());
                }
                buf.extend_from_slice(&data);
            }
        }
        let body = if buf.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&buf)
                .map_err(|e| format!("invalid JSON answer ({status}): {e}"))?
        };
        Ok(Answer { status, body })
    }
}

impl Answer {
    /// The control plane's error body, when this answer is one with a known code.
    pub(crate) fn error(&self) -> Option<ErrorBody<serde_json::Map<String, Value>>> {
        serde_json::from_value::<ErrorAnswer<_>>(self.body.clone())
            .ok()
            .map(|a| a.error)
    }
}

/// Print an API error (code, message, diagnostics, gates) and return exit code 1.
pub(crate) fn print_error(answer: &Answer) -> ExitCode {
    let e = &answer.body["error"];
    match answer.error() {
        Some(err) => eprintln!("error: {} ({}): {}", err.code, answer.status, err.message),
        // Not the control plane's error shape (a proxy's page, a newer code): show it raw.
        None => eprintln!("error: HTTP {}: {}", answer.status, answer.body),
    }
    if let Some(diags) = e["diagnostics"].as_array() {
        for d in diags {
            let at = match (d["line"].as_u64(), d["column"].as_u64()) {
                (Some(l), Some(c)) => format!(" at {l}:{c}"),
                _ => String::new(),
            };
            eprintln!(
                "  {} {} {}{at}: {}",
                d["severity"].as_str().unwrap_or("error"),
                d["code"].as_str().unwrap_or("?"),
                d["path"].as_str().unwrap_or(""),
                d["message"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(gates) = e["gates"].as_array() {
        for line in gate_lines(gates) {
            eprintln!("{line}");
        }
    }
    ExitCode::FAILURE
}

/// Each gate as a line (`  gate NAME passed|FAILED  detail`), with its failing tests under it.
pub(crate) fn gate_lines(gates: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for g in gates {
        let passed = g["passed"].as_bool().unwrap_or(false);
        out.push(format!(
            "  gate {:<16} {}  {}",
            g["gate"].as_str().unwrap_or("?"),
            if passed { "passed" } else { "FAILED" },
            g["detail"].as_str().unwrap_or("")
        ));
        out.extend(failed_tests(g).into_iter().map(|l| format!("    {l}")));
    }
    out
}

/// Each failing pack test of a `tests` gate (its name, what it expected and what the pack did),
/// or the diagnostics that kept the pack from compiling, as lines to print.
pub(crate) fn failed_tests(gate: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let entities = |v: &Value| match v.as_array() {
        Some(list) if !list.is_empty() => format!(
            " [{}]",
            list.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    };
    for t in gate["failed_tests"].as_array().into_iter().flatten() {
        lines.push(format!(
            "test `{}`: expected {}{}, got {}{}",
            printable(t["name"].as_str().unwrap_or("?")),
            t["expected"].as_str().unwrap_or("?"),
            entities(&t["expected_entities"]),
            t["actual"].as_str().unwrap_or("?"),
            entities(&t["actual_entities"]),
        ));
        for p in t["problems"].as_array().into_iter().flatten() {
            lines.push(format!("  {}", printable(p.as_str().unwrap_or(""))));
        }
    }
    for d in gate["diagnostics"].as_array().into_iter().flatten() {
        lines.push(format!(
            "{} {}: {}",
            d["code"].as_str().unwrap_or("?"),
            d["path"].as_str().unwrap_or(""),
            printable(d["message"].as_str().unwrap_or(""))
        ));
    }
    lines
}

/// `s` safe to print on a terminal: control characters (C0, DEL, C1) and the bidirectional
/// overrides that can reorder a line are written as `\u{..}` escapes, so free text from the
/// registry (a change note, a gateway id) cannot move the cursor, recolour or disguise output.
pub(crate) fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(super::printable("plain note"), "plain note");
        assert_eq!(
            super::printable("a\u{1b}[31mred\nb\u{202E}c"),
            "a\\u{1b}[31mred\\u{a}b\\u{202e}c"
        );
    }
}
