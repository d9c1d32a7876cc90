//! A small HTTP client for tests (hyper-util, HTTP/1.1), and polling with a deadline.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("missing header {name}"))
    }

    /// The OpenAI error code.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

pub async fn send(
    c: &TestClient,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    auth: Option<&str>,
) -> Response<Incoming> {
    let mut b = Request::builder().method(method).uri(url);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    if let Some(a) = auth {
        b = b.header("authorization", format!("Bearer {a}"));
    }
    let req = b
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .unwrap();
    c.request(req).await.unwrap()
}

/// A body read to its end (up to 64 MiB); empty when it breaks off.
pub async fn read_body(body: Incoming) -> Bytes {
    use http_body_util::BodyExt as _;
    http_body_util::Limited::new(body, 64 << 20)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

pub async fn collect(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = crate::client::read_body(body).await;
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post(c: &TestClient, url: &str, body: &Value, auth: Option<&str>) -> Reply {
    collect(send(c, "POST", url, Some(body.to_string().as_bytes()), auth).await).await
}

/// A JSON POST with extra request headers.
pub async fn post_with_headers(
    c: &TestClient,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    collect(c.request(req).await.unwrap()).await
}

pub async fn get(c: &TestClient, url: &str) -> Reply {
    collect(send(c, "GET", url, None, None).await).await
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_owned))
        .collect()
}

/// Concatenated `delta.content` of a chat stream.
pub fn sse_text(body: &str) -> String {
    sse_data(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .flat_map(|v| {
            v["choices"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c["delta"]["content"].as_str().map(str::to_owned))
        })
        .collect()
}

/// Poll `check` until it holds or `within` passes (then panic with `what`).
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A chat request of about `n` bytes of user text.
pub fn chat(model: &str, text: &str, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a support assistant."},
            {"role": "user", "content": text}
        ],
        "stream": stream
    })
}

/// A test's own task. Bare `tokio::spawn` is banned in the workspace (`clippy.toml`); a test
/// awaits or ends every task it starts, with the test.
#[expect(clippy::disallowed_methods, reason = "tests own their tasks")]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}
