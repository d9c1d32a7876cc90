//! OpenTelemetry traces of API requests, exported over OTLP (gRPC or HTTP/protobuf).
//!
//! Off unless an endpoint is configured; then every API request gets one span after the GenAI
//! semantic conventions — named `{gen_ai.operation.name} {gen_ai.request.model}`, kind `CLIENT`,
//! with the provider, the requested and served model, token usage and finish reasons — and one
//! child `apply_guardrail` span per policy decision the pack made on it (PII on the request, the
//! budget, PII on the answer) with `gen_ai.security.decision.type` (`allow`, `deny`, `modify`,
//! `warn`, `audit`) and the pack's name and version. The request span continues the caller's
//! trace (`traceparent`), and the provider gets the request span's own `traceparent`, so a
//! provider that traces joins the same trace.
//!
//! Cost on the request path: nothing when off (`RequestMeta::trace` is `None`, no clock read,
//! no header parsed). When on, the request's span context is made and sampled when the request
//! arrives (it is needed for `traceparent` before the provider is called); when it ends, what
//! the request path knows goes, as one [`Finished`] value, on a bounded queue (requests beyond
//! it are dropped and their spans counted, never waited for). The spans are built and exported
//! on a thread of its own, which the serving threads never wake (see [`start_export_thread`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, ShouldSample, SpanData, SpanEvents,
    SpanExporter as _, SpanLinks,
};
use opentelemetry_sdk::Resource;
use policy_engine::pack::PiiAction;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::hooks::{Failure, RequestMeta, Settled};
use crate::openai::FinishReason;
use crate::policy::PiiReport;
use crate::service::ApiRoute;

/// The wire protocol of the OTLP exporter (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    /// `grpc` or `http/protobuf`, the values of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn parse(s: &str) -> Result<Self, OtlpError> {
        match s {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(OtlpError::Protocol(other.to_owned())),
        }
    }
}

/// Where traces go. `endpoint` is the collector's base URL (`http://collector:4317` for gRPC,
/// `http://collector:4318` for HTTP, where `/v1/traces` is appended as for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// `deployment.environment.name` of every span.
    pub environment: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP protocol `{0}` is not supported; use `grpc` or `http/protobuf`")]
    Protocol(String),
    #[error("OTLP endpoint `{0}` is not a plain http:// URL (TLS to the collector is not supported; run a collector or an agent beside the gateway)")]
    Endpoint(String),
    #[error("the OTLP exporter cannot be built: {0}")]
    Build(String),
}

/// The exporter of one gateway process.
#[derive(Debug)]
pub struct Traces {
    /// `OTEL_TRACES_SAMPLER` and its argument, as the SDK reads them.
    sampler: Box<dyn ShouldSample>,
    /// The SDK's only id generator (its default); concrete, so no dynamic call per request.
    ids: RandomIdGenerator,
    queue: Arc<Queue>,
    stop: mpsc::UnboundedSender<StopAsk>,
}

/// The serving threads' end of the export queue.
#[derive(Debug)]
struct Queue {
    requests: mpsc::Sender<Finished>,
    stats: Arc<ExportStats>,
}

/// Spans exported, and spans dropped (the queue was full, or their export failed).
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

impl Traces {
    /// Start the export thread and build the exporter on it.
    pub fn start(config: &OtlpConfig) -> Result<Self, OtlpError> {
        let endpoint = config.endpoint.trim_end_matches('/');
        if !endpoint.starts_with("http://") {
            return Err(OtlpError::Endpoint(config.endpoint.clone()));
        }
        let mut resource = Resource::builder()
            .with_attribute(KeyValue::new(
                "deployment.environment.name",
                config.environment.clone(),
            ))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("palisade-gateway");
        }
        let stats = Arc::new(ExportStats::default());
        let (requests, stop) = start_export_thread(
            endpoint.to_owned(),
            config.protocol,
            resource.build(),
            Arc::clone(&stats),
        )?;
        // The SDK's defaults read `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
        let sdk = opentelemetry_sdk::trace::Config::default();
        Ok(Self {
            sampler: sdk.sampler,
            ids: RandomIdGenerator::default(),
            queue: Arc::new(Queue { requests, stats }),
            stop,
        })
    }

    pub fn stats(&self) -> &ExportStats {
        &self.queue.stats
    }

    /// Start a request's span, continuing the caller's trace when `headers` carry a valid
    /// `traceparent`: its context (for the provider's `traceparent`) and the sampling decision.
    pub(crate) fn begin(&self, headers: &HeaderMap, started: Instant) -> Box<RequestTrace> {
        let parent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let trace_id = parent
            .as_ref()
            .map_or_else(|| self.ids.new_trace_id(), SpanContext::trace_id);
        let parent_cx = parent
            .clone()
            .map(|sc| Context::new().with_remote_span_context(sc));
        let sampled = self.sampler.should_sample(
            parent_cx.as_ref(),
            trace_id,
            "chat",
            &SpanKind::Client,
            &[],
            &[],
        );
        // Only sampled spans are exported; a span recorded but not sampled has no reader here.
        let recording = sampled.decision == SamplingDecision::RecordAndSample;
        let flags = if recording {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let context = SpanContext::new(
            trace_id,
            self.ids.new_span_id(),
            flags,
            false,
            sampled.trace_state,
        );
        Box::new(RequestTrace {
            traceparent: traceparent(&context),
            context,
            parent: parent.map(|p| p.span_id()),
            queue: recording.then(|| Arc::clone(&self.queue)),
            wall: SystemTime::now(),
            started,
            served: None,
            finish_reasons: Vec::new(),
            marks: Marks::default(),
        })
    }

    /// Export what is queued and stop the export thread. Blocking: call it off the serving
    /// runtimes.
    pub fn shutdown(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.stop.send(tx).is_err() {
            return;
        }
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            tracing::warn!("OTLP exporter did not shut down cleanly");
        }
    }
}

/// How often the export thread collects finished requests.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// Finished requests waiting for the export thread (each up to four spans); more are dropped
/// and their spans counted.
const QUEUE_REQUESTS: usize = 16_384;
/// Spans per export request.
const EXPORT_BATCH: usize = 2_048;

/// A request to stop, answered on the channel it carries once the queue is exported.
type StopAsk = std::sync::mpsc::SyncSender<()>;

/// The export thread: a bounded queue of finished requests that it drains on a timer, turning
/// each into its spans and exporting them in batches.
///
/// Why not the SDK's span processors and spans: the batch processors wake their export thread
/// for every finished span (a futex or an eventfd write, and a context switch), and building
/// an SDK span — attributes as key-value pairs of owned strings, a name formatted, a processor
/// call per span — cost the serving threads about 3 µs per request for four spans. Here the
/// request path keeps what it knows in a [`Finished`] value (its strings moved or shared, not
/// copied into attributes) and `try_send`s it on a channel whose receiver never waits on it —
/// the export thread sleeps, then takes what is there — so nothing is woken; a full queue drops
/// the request's spans and counts them. The attribute lists are built on the export thread. The
/// exporter (tonic or hyper) lives on that thread's own current-thread runtime, which its
/// connections need.
fn start_export_thread(
    endpoint: String,
    protocol: OtlpProtocol,
    resource: Resource,
    stats: Arc<ExportStats>,
) -> Result<(mpsc::Sender<Finished>, mpsc::UnboundedSender<StopAsk>), OtlpError> {
    let (requests, rx) = mpsc::channel(QUEUE_REQUESTS);
    let (stop, stop_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("palisade-otlp".to_owned())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(OtlpError::Build(e.to_string())));
                    return;
                }
            };
            rt.block_on(async move {
                let built = match protocol {
                    OtlpProtocol::Grpc => SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint)
                        .build(),
                    OtlpProtocol::HttpProtobuf => SpanExporter::builder()
                        .with_http()
                        .with_protocol(Protocol::HttpBinary)
                        .with_endpoint(format!("{endpoint}/v1/traces"))
                        .build(),
                };
                match built {
                    Ok(mut exporter) => {
                        exporter.set_resource(&resource);
                        let _ = ready_tx.send(Ok(()));
                        export_loop(exporter, rx, stop_rx, &stats).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(OtlpError::Build(e.to_string())));
                    }
                }
            });
        })
        .map_err(|e| OtlpError::Build(e.to_string()))?;
    ready_rx
        .recv()
        .map_err(|_| OtlpError::Build("the export thread stopped".to_owned()))??;
    Ok((requests, stop))
}

/// Every [`EXPORT_INTERVAL`], or when asked to stop, export what is queued, in batches.
async fn export_loop(
    exporter: SpanExporter,
    mut requests: mpsc::Receiver<Finished>,
    mut stop: mpsc::UnboundedReceiver<StopAsk>,
    stats: &ExportStats,
) {
    let scope = InstrumentationScope::builder("palisade-gateway")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut failing = false;
    loop {
        let asked = tokio::select! {
            () = tokio::time::sleep(EXPORT_INTERVAL) => None,
            s = stop.recv() => Some(s),
        };
        loop {
            let mut batch = Vec::with_capacity(EXPORT_BATCH.min(requests.len() * 4));
            while batch.len() < EXPORT_BATCH {
                match requests.try_recv() {
                    Ok(f) => f.into_spans(&scope, &mut batch),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            match exporter.export(batch).await {
                Ok(()) => {
                    stats.exported.fetch_add(n, Ordering::Relaxed);
                    if failing {
                        tracing::info!("OTLP export works again");
                        failing = false;
                    }
                }
                Err(e) => {
                    stats.dropped.fetch_add(n, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(error = %e, "OTLP export failed; spans are dropped and counted until it works again");
                        failing = true;
                    }
                }
            }
        }
        match asked {
            None => {}
            Some(Some(ack)) => {
                let _ = exporter.shutdown();
                let _ = ack.send(());
                return;
            }
            // Every handle is gone.
            Some(None) => return,
        }
    }
}

/// The `traceparent` header of `sc`, written without the formatting machinery.
fn traceparent(sc: &SpanContext) -> HeaderValue {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    let hex = |bytes: &[u8], to: &mut [u8]| {
        for (i, b) in bytes.iter().enumerate() {
            to[2 * i] = DIGITS[usize::from(b >> 4)];
            to[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
    };
    hex(&sc.trace_id().to_bytes(), &mut out[3..35]);
    out[35] = b'-';
    hex(&sc.span_id().to_bytes(), &mut out[36..52]);
    out[52] = b'-';
    hex(&[sc.trace_flags().to_u8()], &mut out[53..55]);
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `00-<32 hex>-<16 hex>-<2 hex>` (W3C Trace Context, version 00); anything else is ignored and
/// the request starts a trace of its own.
fn parse_traceparent(v: &str) -> Option<SpanContext> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if version != "00"
        || parts.next().is_some()
        || !lower_hex(trace, 32)
        || !lower_hex(span, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    let trace = TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)?;
    let span = SpanId::from_hex(span)
        .ok()
        .filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags & 1),
        true,
        TraceState::default(),
    ))
}

/// Whether a request's decisions are timed: it is traced and sampled.
pub(crate) fn recording(trace: Option<&RequestTrace>) -> bool {
    trace.is_some_and(RequestTrace::recording)
}

/// When each decision was taken: request scan, budget admission, answer scan.
#[derive(Debug, Default)]
struct Marks {
    request: Option<(Instant, Instant)>,
    budget: Option<(Instant, Instant)>,
    response: Option<(Instant, Instant)>,
}

/// Which decision a [`RequestTrace::mark`] times.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decision {
    RequestScan,
    Budget,
    ResponseScan,
}

/// One request's span while it runs; ended exactly once by the request's outcome.
pub(crate) struct RequestTrace {
    context: SpanContext,
    /// The caller's span, when the request continues the caller's trace.
    parent: Option<SpanId>,
    traceparent: HeaderValue,
    /// The export queue, when the request is sampled: only then are its details collected.
    queue: Option<Arc<Queue>>,
    /// The wall-clock time and the monotonic instant the span started at.
    wall: SystemTime,
    started: Instant,
    /// Provider and model the request was sent to (after a budget's degrade).
    served: Option<(String, String)>,
    finish_reasons: Vec<String>,
    marks: Marks,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl RequestTrace {
    /// Whether this request is sampled: only then are its details collected.
    pub(crate) fn recording(&self) -> bool {
        self.queue.is_some()
    }

    /// The `traceparent` to send to the provider: this request's span.
    pub(crate) fn traceparent(&self) -> &HeaderValue {
        &self.traceparent
    }

    /// The provider and model actually called.
    pub(crate) fn served(&mut self, provider: &str, model: &str) {
        if self.recording() {
            self.served = Some((provider.to_owned(), model.to_owned()));
        }
    }

    /// A decision ran from `from` until now.
    pub(crate) fn mark(&mut self, decision: Decision, from: Instant) {
        let span = Some((from, Instant::now()));
        match decision {
            Decision::RequestScan => self.marks.request = span,
            Decision::Budget => self.marks.budget = span,
            Decision::ResponseScan => self.marks.response = span,
        }
    }

    /// The `finish_reason` of each choice of a JSON answer (`choices` as the provider sent it).
    pub(crate) fn finish_reasons_from(&mut self, choices: &serde_json::value::RawValue) {
        if !self.recording() {
            return;
        }
        if let Ok(list) = serde_json::from_str::<Vec<FinishReason>>(choices.get()) {
            self.finish_reasons = list.into_iter().filter_map(|c| c.finish_reason).collect();
        }
    }

    /// Streamed choices finished with these reasons.
    pub(crate) fn finish_reasons(&mut self, reasons: impl IntoIterator<Item = String>) {
        self.finish_reasons.extend(reasons);
    }

    /// Record how the request ended and queue it for the export thread, which builds its span
    /// and one child span per policy decision. Never waits: a full queue drops the request's
    /// spans and counts them.
    pub(crate) fn end(self: Box<Self>, meta: &RequestMeta, ended: Ended<'_>) {
        let mut this = *self;
        // Not sampled (`OTEL_TRACES_SAMPLER`): nothing is recorded, nor are its children.
        let Some(queue) = this.queue.take() else {
            return;
        };
        let now = Instant::now();
        let operation = match meta.route {
            ApiRoute::ChatCompletions | ApiRoute::Messages | ApiRoute::Responses => "chat",
            ApiRoute::Completions => "text_completion",
            ApiRoute::Embeddings => "embeddings",
            ApiRoute::CountTokens => "count_tokens",
            ApiRoute::ResponseItem => "retrieve_response",
        };
        // The HTTP status the caller got (none for a broken or cancelled stream) and, for a
        // failure, its type: the gateway's error code, or the provider's status.
        let (status, error, usage) = match &ended {
            Ended::Settled(s) => (
                Some(s.status.as_u16()),
                None,
                s.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            ),
            Ended::Failed(Failure::Refused(e)) => (Some(e.status().as_u16()), Some(e.code()), None),
            Ended::Failed(Failure::UpstreamStatus(s)) => (Some(s.as_u16()), Some(s.as_str()), None),
            Ended::Failed(Failure::StreamBroken) => (None, Some("stream_broken"), None),
            Ended::Failed(Failure::Cancelled { .. }) => (None, Some("cancelled"), None),
        };
        let guardrails = this.guardrails(meta, &ended, now);
        let (provider, served_model) = match this.served {
            Some((p, m)) => (Some(p), Some(m)),
            None => (meta.model.as_ref().map(|m| m.provider.clone()), None),
        };
        let finished = Finished {
            context: this.context,
            parent: this.parent,
            wall: this.wall,
            started: this.started,
            ended: now,
            operation,
            requested: meta.model.as_ref().map(|m| m.name.clone()),
            provider,
            served_model,
            request_id: meta.id.hex(),
            pack: Arc::clone(&meta.pack),
            status,
            error: error.map(str::to_owned),
            usage,
            finish_reasons: this.finish_reasons,
            guardrails,
        };
        let spans = finished.spans();
        if queue.requests.try_send(finished).is_err() {
            queue.stats.dropped.fetch_add(spans, Ordering::Relaxed);
        }
    }

    /// One child span per policy decision the pack made on this request.
    fn guardrails(
        &self,
        meta: &RequestMeta,
        ended: &Ended<'_>,
        now: Instant,
    ) -> [Option<Guardrail>; 3] {
        let refused = match ended {
            Ended::Failed(Failure::Refused(e)) => Some(*e),
            _ => None,
        };
        let pii = |report: &PiiReport, target: &'static str, side: &str, span| {
            let blocked =
                matches!(refused, Some(ApiError::PiiBlocked { side: s, .. }) if *s == side);
            Guardrail {
                guardian: "pii-detector",
                span_name: "apply_guardrail pii-detector",
                target,
                decision: pii_decision(report, blocked),
                findings: Some((
                    report.total(),
                    report.findings.iter().map(|(e, _)| e.clone()).collect(),
                )),
                span,
            }
        };
        let request = meta.pii_request.as_ref().map(|r| {
            let span = self.marks.request.unwrap_or((self.started, self.started));
            pii(r, "llm_input", "request", span)
        });
        let budget =
            self.marks
                .budget
                .filter(|_| {
                    meta.pack
                        .compiled
                        .runs(policy_engine::PolicyKind::BudgetEnforcer)
                })
                .map(|span| {
                    let decision = match refused {
                        Some(ApiError::Rejected(_)) => "deny",
                        _ if self.served.as_ref().zip(meta.model.as_ref()).is_some_and(
                            |((_, served), asked)| *served != asked.upstream_model,
                        ) =>
                        {
                            "modify"
                        }
                        _ => "allow",
                    };
                    Guardrail {
                        guardian: "budget-enforcer",
                        span_name: "apply_guardrail budget-enforcer",
                        target: "llm_input",
                        decision,
                        findings: None,
                        span,
                    }
                });
        let response = meta.pii_response.as_ref().map(|r| {
            let span = self.marks.response.unwrap_or((now, now));
            pii(r, "llm_output", "response", span)
        });
        [request, budget, response]
    }
}

/// A finished, sampled request as the request path left it: what its span and its guardrail
/// spans say, in the request's own types. The export thread turns it into spans.
struct Finished {
    context: SpanContext,
    parent: Option<SpanId>,
    wall: SystemTime,
    started: Instant,
    ended: Instant,
    operation: &'static str,
    requested: Option<String>,
    provider: Option<String>,
    served_model: Option<String>,
    request_id: [u8; 32],
    /// The pack the request ran under (its name and version label every span).
    pack: Arc<crate::pack::ActivePack>,
    status: Option<u16>,
    error: Option<String>,
    usage: Option<(u64, u64)>,
    finish_reasons: Vec<String>,
    guardrails: [Option<Guardrail>; 3],
}

/// One policy decision: the pack's guardian, what it looked at, what it decided, and when.
struct Guardrail {
    guardian: &'static str,
    /// `apply_guardrail {guardian}`.
    span_name: &'static str,
    target: &'static str,
    decision: &'static str,
    /// A PII scan's findings: how many, and of which entities.
    findings: Option<(u32, Vec<String>)>,
    span: (Instant, Instant),
}

/// A string-array attribute value.
fn strings(v: &[String]) -> Value {
    Value::Array(Array::String(
        v.iter().map(|s| StringValue::from(s.clone())).collect(),
    ))
}

impl Finished {
    fn spans(&self) -> u64 {
        1 + self.guardrails.iter().flatten().count() as u64
    }

    fn at(&self, i: Instant) -> SystemTime {
        self.wall + i.saturating_duration_since(self.started)
    }

    /// The request's span and its guardrail spans, appended to `out`.
    fn into_spans(self, scope: &InstrumentationScope, out: &mut Vec<SpanData>) {
        let pack = &self.pack.compiled;
        let mut attrs = Vec::with_capacity(13);
        attrs.push(KeyValue::new("gen_ai.operation.name", self.operation));
        if let Some(p) = &self.provider {
            attrs.push(KeyValue::new("gen_ai.provider.name", p.clone()));
        }
        if let Some(m) = &self.served_model {
            attrs.push(KeyValue::new("gen_ai.response.model", m.clone()));
        }
        if let Some(m) = &self.requested {
            attrs.push(KeyValue::new("gen_ai.request.model", m.clone()));
        }
        attrs.push(KeyValue::new(
            "palisade.request.id",
            String::from_utf8_lossy(&self.request_id).into_owned(),
        ));
        attrs.push(KeyValue::new("palisade.pack.name", pack.name.clone()));
        attrs.push(KeyValue::new("palisade.pack.version", pack.version.clone()));
        if let Some((input, output)) = self.usage {
            attrs.push(KeyValue::new(
                "gen_ai.usage.input_tokens",
                i64::try_from(input).unwrap_or(i64::MAX),
            ));
            attrs.push(KeyValue::new(
                "gen_ai.usage.output_tokens",
                i64::try_from(output).unwrap_or(i64::MAX),
            ));
        }
        if let Some(s) = self.status {
            attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if !self.finish_reasons.is_empty() {
            attrs.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                strings(&self.finish_reasons),
            ));
        }
        let status = match &self.error {
            Some(e) => {
                attrs.push(KeyValue::new("error.type", e.clone()));
                Status::error(e.clone())
            }
            None => Status::Unset,
        };
        let name = match &self.requested {
            Some(m) => Cow::Owned(format!("{} {m}", self.operation)),
            None => Cow::Borrowed(self.operation),
        };
        let ids = RandomIdGenerator::default();
        for g in self.guardrails.iter().flatten() {
            let mut attrs = vec![
                KeyValue::new("gen_ai.operation.name", "apply_guardrail"),
                KeyValue::new("gen_ai.guardian.name", g.guardian),
                KeyValue::new("gen_ai.security.target.type", g.target),
                KeyValue::new("gen_ai.security.decision.type", g.decision),
                KeyValue::new("palisade.pack.name", pack.name.clone()),
                KeyValue::new("palisade.pack.version", pack.version.clone()),
            ];
            if let Some((total, entities)) = &g.findings {
                attrs.push(KeyValue::new("palisade.pii.findings", i64::from(*total)));
                if !entities.is_empty() {
                    attrs.push(KeyValue::new("palisade.pii.entities", strings(entities)));
                }
            }
            out.push(span_data(
                SpanContext::new(
                    self.context.trace_id(),
                    ids.new_span_id(),
                    self.context.trace_flags(),
                    false,
                    self.context.trace_state().clone(),
                ),
                (self.context.span_id(), false),
                SpanKind::Internal,
                Cow::Borrowed(g.span_name),
                (self.at(g.span.0), self.at(g.span.1)),
                attrs,
                Status::Unset,
                scope,
            ));
        }
        out.push(span_data(
            self.context.clone(),
            (
                self.parent.unwrap_or(SpanId::INVALID),
                self.parent.is_some(),
            ),
            SpanKind::Client,
            name,
            (self.wall, self.at(self.ended)),
            attrs,
            status,
            scope,
        ));
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one span's fields, named at the call"
)]
fn span_data(
    span_context: SpanContext,
    (parent_span_id, parent_span_is_remote): (SpanId, bool),
    span_kind: SpanKind,
    name: Cow<'static, str>,
    (start_time, end_time): (SystemTime, SystemTime),
    attributes: Vec<KeyValue>,
    status: Status,
    scope: &InstrumentationScope,
) -> SpanData {
    SpanData {
        span_context,
        parent_span_id,
        parent_span_is_remote,
        span_kind,
        name,
        start_time,
        end_time,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// A PII scan's decision in the convention's words: nothing found is `allow`; otherwise what
/// the pack's action did — `deny` (block), `modify` (text redacted, also under escalate),
/// `warn` (escalated without a change), `audit` (logged).
fn pii_decision(report: &PiiReport, blocked: bool) -> &'static str {
    if blocked {
        return "deny";
    }
    if report.total() == 0 {
        return "allow";
    }
    match report.action {
        Some(PiiAction::Block) => "deny",
        _ if report.redacted => "modify",
        Some(PiiAction::Escalate) => "warn",
        Some(PiiAction::Log) | None => "audit",
        Some(PiiAction::Redact) => "modify",
    }
}

/// How the request ended, for its span.
pub(crate) enum Ended<'a> {
    Settled(&'a Settled),
    Failed(&'a Failure<'a>),
}

impl Traces {
    /// Register `palisade_otlp_spans_exported_total` and `palisade_otlp_spans_dropped_total`.
    pub(crate) fn register(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        let read =
            |f: fn(&ExportStats) -> &AtomicU64| crate::metrics::read_field(&self.queue.stats, f);
        registry.register(Box::new(crate::metrics::AtomicCounters::new(vec![
            (
                "palisade_otlp_spans_exported_total",
                "Trace spans the OTLP collector accepted.",
                read(|s| &s.exported),
            ),
            (
                "palisade_otlp_spans_dropped_total",
                "Trace spans dropped: the export queue was full, or the collector refused or could not be reached.",
                read(|s| &s.dropped),
            ),
        ])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_strictly_and_written_back_the_same() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(valid).unwrap();
        assert!(sc.is_remote() && sc.is_sampled());
        let mine = SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags(),
            false,
            TraceState::default(),
        );
        assert_eq!(traceparent(&mine).to_str().unwrap(), valid);
        let unsampled = parse_traceparent(&valid.replace("-01", "-00")).unwrap();
        assert!(!unsampled.is_sampled());
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
