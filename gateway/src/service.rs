//! The request entry point: route, run, stamp, count.
//!
//! Each request loads the active pack once (an `ArcSwap` load, no lock) and hands that one
//! `Arc` to everything that follows, so a reload mid-request changes nothing for it. API
//! routes go to `proxy`, ops routes to `ops`; whatever comes back is stamped with the request
//! id and the pack's version and hash here, for every response, errors included. Errors are
//! turned into responses by `respond::error_response`, called from here and nowhere else
//! except the ops module's not-ready answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use prometheus::IntGauge;
use tracing::Instrument as _;

use crate::body::GatewayBody;
use crate::error::ApiError;
use crate::hooks::{ApiRoute, Outcome, RequestId, RequestMeta};
use crate::respond::{error_response, stamp};
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
    let api = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => Some(ApiRoute::ChatCompletions),
        (&Method::POST, "/v1/completions") => Some(ApiRoute::Completions),
        (&Method::POST, "/v1/embeddings") => Some(ApiRoute::Embeddings),
        _ => None,
    };
    let mut resp = match (api, pack.as_ref()) {
        (Some(_), None) => error_response(&ApiError::NotReady),
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
            serve_api(&state, pack, req, route, id, started)
                .instrument(span)
                .await
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
        "/status" if get => ops::status(state, pack),
        "/metrics" if get => ops::metrics(state),
        "/healthz" if get => ops::healthz(),
        "/readyz" if get => ops::readyz(pack),
        "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/embeddings"
        | "/v1/models"
        | "/status"
        | "/metrics"
        | "/healthz"
        | "/readyz" => error_response(&ApiError::MethodNotAllowed),
        _ => error_response(&ApiError::NotFound),
    }
}
