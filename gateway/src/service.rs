//! The request entry point: route, run, stamp, count.
//!
//! Each request loads the active pack once (an `ArcSwap` load, no lock) and hands that one
//! `Arc` to everything that follows, so a reload mid-request changes nothing for it. API
//! routes go to `proxy`, ops routes to `ops`; whatever comes back is stamped with the request
//! id and the pack's version and hash here, for every response, errors included. Errors are
//! turned into responses by `respond::error_response`, called from here and nowhere else
//! except the ops module's not-ready answers.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use prometheus::IntGauge;
use tracing::Instrument as _;

use crate::body::GatewayBody;
use crate::error::ApiError;
use crate::hooks::{Outcome, RequestMeta};
use crate::respond::{error_response, error_response_on, stamp};
use crate::state::GatewayState;
use crate::{ops, proxy};

/// Counts a request as in flight until dropped (moved into a stream's task for streams).
#[derive(Debug)]
pub(crate) struct InFlight(IntGauge);

impl InFlight {
    fn new(g: &IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serve one request.
pub(crate) async fn handle(
    state: Arc<GatewayState>,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let started = Instant::now();
    let id = state.next_request_id();
    let pack = state.pack_guard().clone();
    let api = ApiRoute::of(req.method(), req.uri().path());
    let mut resp = match (api, pack.as_ref()) {
        (Some(route), None) => error_response_on(&ApiError::NotReady, route.wire()),
        (Some(route), Some(pack)) => {
            // One span per API request: every event below it, down to a budget store failing
            // closed or a provider error, carries the request id, route and pack version. Its
            // own target, so `RUST_LOG=info,palisade::request=off` can trade that context for
            // the span's cost (about 1 µs per request; benches/README.md).
            let hex = id.hex();
            let span = tracing::info_span!(
                target: "palisade::request",
                "request",
                request_id = std::str::from_utf8(&hex).unwrap_or_default(),
                route = route.as_str(),
                pack = pack.version(),
                code = tracing::field::Empty,
            );
            // Boxed: the chain's future is the largest state of a request (about 13 KB), and
            // hyper keeps the service future's slot inline in the connection for the
            // connection's whole life. Boxed, it is freed once the response head is ready, so
            // a streaming answer or an idle keep-alive connection does not carry it.
            Box::pin(serve_api(&state, pack, req, route, id, started).instrument(span)).await
        }
        (None, _) => route_other(&state, &req, pack.as_deref()),
    };
    stamp(&mut resp, id, pack.as_deref());
    Ok(resp)
}

/// An API request under an active pack: the policy chain, the provider, the record.
async fn serve_api(
    state: &Arc<GatewayState>,
    pack: &Arc<crate::pack::ActivePack>,
    req: Request<Incoming>,
    route: ApiRoute,
    id: RequestId,
    started: Instant,
) -> Response<GatewayBody> {
    let in_flight = InFlight::new(&state.metrics.in_flight);
    let meta = RequestMeta {
        id,
        route,
        started,
        pack: Arc::clone(pack),
        caller: None,
        model: None,
        stream: false,
        max_tokens: None,
        request_bytes: 0,
        pii_request: None,
        pii_response: None,
        redacted_request: None,
        redacted_response: None,
        upstream_time: None,
        attempts: Vec::new(),
        served_model: None,
        trace: state
            .traces
            .as_ref()
            .map(|t| t.begin(req.headers(), started)),
    };
    let outcome = Outcome::new(Arc::clone(&state.enforcement), meta);
    let mut model_label = "other";
    let resp = proxy::run(state, pack, req, outcome, &mut model_label, in_flight).await;
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), model_label, resp.status().as_str()])
        .inc();
    resp
}

fn route_other(
    state: &GatewayState,
    req: &Request<Incoming>,
    pack: Option<&crate::pack::ActivePack>,
) -> Response<GatewayBody> {
    let path = req.uri().path();
    let get = req.method() == Method::GET;
    match path {
        "/v1/models" if get => ops::models(pack),
        p if get && p.starts_with("/v1/models/") => {
            ops::model(pack, p.trim_start_matches("/v1/models/"))
        }
        "/status" if get && state.ops_on_public => ops::status(state, pack),
        "/metrics" if get && state.ops_on_public => ops::metrics(state),
        // Served on the admin listener only.
        "/status" | "/metrics" if !state.ops_on_public => error_response(&ApiError::NotFound),
        "/healthz" if get => ops::healthz(),
        "/readyz" if get => ops::readyz(pack),
        "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/embeddings"
        | "/v1/responses"
        | "/v1/models"
        | "/status"
        | "/metrics"
        | "/healthz"
        | "/readyz" => error_response(&ApiError::MethodNotAllowed),
        "/v1/messages" | "/v1/messages/count_tokens" => {
            error_response_on(&ApiError::MethodNotAllowed, Wire::Anthropic)
        }
        p if p.starts_with("/v1/responses/") && req.method() == Method::POST => {
            error_response(&ApiError::MethodNotAllowed)
        }
        _ => error_response(&ApiError::NotFound),
    }
}

/// A request's identity, also sent to the caller as `x-palisade-request-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64, pub u64);

impl RequestId {
    /// The 32 lowercase hex digits of the id, without the formatting machinery (the id is
    /// written twice per request: the response header and the audit record).
    pub fn hex(self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (half, word) in [self.0, self.1].into_iter().enumerate() {
            for i in 0..16 {
                let nibble = (word >> (60 - 4 * i)) & 0xf;
                out[half * 16 + i] = DIGITS[nibble as usize];
            }
        }
        out
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // Always ASCII hex digits.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

/// The API route of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRoute {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's `POST /v1/messages`.
    Messages,
    /// Anthropic's `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI's `POST /v1/responses`.
    Responses,
    /// `GET` or `DELETE /v1/responses/{id}` (and `GET …/{id}/input_items`): a stored response.
    ResponseItem,
}

/// The API family a route belongs to: the shape of its errors, and the provider kind that
/// serves it natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

impl Wire {
    /// The provider kind that speaks this family natively.
    pub fn native_kind(self) -> policy_engine::pack::ProviderKind {
        match self {
            Self::OpenAi => policy_engine::pack::ProviderKind::OpenAi,
            Self::Anthropic => policy_engine::pack::ProviderKind::Anthropic,
        }
    }
}

impl ApiRoute {
    pub const ALL: [Self; 7] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Messages,
        Self::CountTokens,
        Self::Responses,
        Self::ResponseItem,
    ];

    /// Position in [`ApiRoute::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::ChatCompletions => 0,
            Self::Completions => 1,
            Self::Embeddings => 2,
            Self::Messages => 3,
            Self::CountTokens => 4,
            Self::Responses => 5,
            Self::ResponseItem => 6,
        }
    }

    /// The API route of a method and path, if it is one.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        match (method, path) {
            (&Method::POST, "/v1/chat/completions") => Some(Self::ChatCompletions),
            (&Method::POST, "/v1/completions") => Some(Self::Completions),
            (&Method::POST, "/v1/embeddings") => Some(Self::Embeddings),
            (&Method::POST, "/v1/messages") => Some(Self::Messages),
            (&Method::POST, "/v1/messages/count_tokens") => Some(Self::CountTokens),
            (&Method::POST, "/v1/responses") => Some(Self::Responses),
            (&Method::GET | &Method::DELETE, p) => {
                response_item_tail(p, method == Method::GET).map(|_| Self::ResponseItem)
            }
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
            Self::CountTokens => "count_tokens",
            Self::Responses => "responses",
            Self::ResponseItem => "response_item",
        }
    }

    /// The gateway's own path of the route (`/v1/responses/{id}` for a stored response).
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
            Self::Responses => "/v1/responses",
            Self::ResponseItem => "/v1/responses/{id}",
        }
    }

    /// Path below the provider's base URL; a stored response's is the request's own tail.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Messages => "/messages",
            Self::CountTokens => "/messages/count_tokens",
            Self::Responses | Self::ResponseItem => "/responses",
        }
    }

    pub fn wire(self) -> Wire {
        match self {
            Self::Messages | Self::CountTokens => Wire::Anthropic,
            _ => Wire::OpenAi,
        }
    }

    /// Whether the request names a model and may spend tokens: the route runs the whole chain
    /// (model check, request-side PII, budget admission). A stored response's route only reads
    /// or deletes what an earlier request made; it runs authentication and the answer's scan.
    pub fn spends(self) -> bool {
        self != Self::ResponseItem
    }

    /// Whether the route can answer with a stream.
    pub fn streams(self) -> bool {
        matches!(
            self,
            Self::ChatCompletions | Self::Completions | Self::Messages | Self::Responses
        )
    }
}

/// The `{id}` (or `{id}/input_items`, on `GET`) of a `/v1/responses/…` path: ids are letters,
/// digits, `_` and `-`, so nothing else can reach the provider's path.
pub(crate) fn response_item_tail(path: &str, get: bool) -> Option<&str> {
    let tail = path.strip_prefix("/v1/responses/")?;
    let id = match tail.strip_suffix("/input_items") {
        Some(id) if get => id,
        _ => tail,
    };
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn request_id_hex_is_the_zero_padded_hex_of_both_words() {
        for (a, b) in [
            (0, 0),
            (1, u64::MAX),
            (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
            (u64::MAX >> 4, 1 << 63),
        ] {
            let id = RequestId(a, b);
            let want = format!("{a:016x}{b:016x}");
            assert_eq!(std::str::from_utf8(&id.hex()).unwrap(), want);
            assert_eq!(id.to_string(), want);
        }
    }
}
