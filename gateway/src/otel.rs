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
//! no header parsed). When on, the span is started when the request arrives (its context is
//! needed for `traceparent` before the provider is called), its attributes are set when it
//! ends, and ending puts it on a bounded queue ([`QueueProcessor`]: spans beyond it are dropped
//! and counted, never waited for). Export runs on a thread of its own, which the serving
//! threads never wake.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use policy_engine::pack::PiiAction;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::hooks::{Failure, RequestMeta, Settled};
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
    provider: SdkTracerProvider,
    tracer: SdkTracer,
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
        let processor = QueueProcessor::start(
            endpoint.to_owned(),
            config.protocol,
            resource.build(),
            Arc::clone(&stats),
        )?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("palisade-gateway");
        Ok(Self {
            provider,
            tracer,
            stats,
        })
    }

    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Start a request's span, continuing the caller's trace when `headers` carry a valid
    /// `traceparent`.
    pub(crate) fn begin(&self, headers: &HeaderMap, started: Instant) -> Box<RequestTrace> {
        let parent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent)
            .map_or_else(Context::new, |sc| {
                Context::new().with_remote_span_context(sc)
            });
        let wall = SystemTime::now();
        let span = self
            .tracer
            .span_builder("chat")
            .with_kind(SpanKind::Client)
            .with_start_time(wall)
            .start_with_context(&self.tracer, &parent);
        let sc = span.span_context().clone();
        let traceparent = traceparent(&sc);
        Box::new(RequestTrace {
            span,
            context: sc,
            tracer: self.tracer.clone(),
            traceparent,
            wall,
            started,
            served: None,
            finish_reasons: Vec::new(),
            marks: Marks::default(),
        })
    }

    /// Export what is queued and stop the export threads. Blocking: call it off the serving
    /// runtimes (the SDK must not be shut down from a current-thread runtime's own thread).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OTLP exporter did not shut down cleanly");
        }
    }
}

/// How often the export thread collects finished spans.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// Finished spans waiting for the export thread; more are dropped and counted.
const QUEUE_SPANS: usize = 65_536;
/// Spans per export request.
const EXPORT_BATCH: usize = 2_048;

type Ask = (Control, std::sync::mpsc::SyncSender<()>);

/// The span processor: a bounded queue that the export thread drains on a timer.
///
/// Why not the SDK's batch processors: both wake their export thread for every finished span
/// (a futex or an eventfd write, and a context switch), which cost the serving threads several
/// microseconds per request under load. Here `on_end` is a `try_send` on a channel whose
/// receiver never waits on it — the export thread sleeps, then takes what is there — so
/// nothing is woken; a full queue drops the span and counts it. The exporter (tonic or hyper)
/// lives on the export thread's own current-thread runtime, which its connections need.
#[derive(Debug)]
struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Ask>,
    stats: Arc<ExportStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Flush,
    Stop,
}

impl QueueProcessor {
    fn start(
        endpoint: String,
        protocol: OtlpProtocol,
        resource: Resource,
        stats: Arc<ExportStats>,
    ) -> Result<Self, OtlpError> {
        let (spans, rx) = mpsc::channel(QUEUE_SPANS);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_stats = Arc::clone(&stats);
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
                            export_loop(exporter, rx, control_rx, &thread_stats).await;
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
        Ok(Self {
            spans,
            control,
            stats,
        })
    }

    /// Ask the export thread and wait (blocking) for its answer.
    fn ask(&self, c: Control) -> OTelSdkResult {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.control
            .send((c, tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        let within = Duration::from_secs(10);
        rx.recv_timeout(within)
            .map_err(|_| OTelSdkError::Timeout(within))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Stop)
    }
}

/// Every [`EXPORT_INTERVAL`], or when asked, export what is queued, in batches.
async fn export_loop(
    exporter: SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<Ask>,
    stats: &ExportStats,
) {
    let mut failing = false;
    loop {
        let asked = tokio::select! {
            () = tokio::time::sleep(EXPORT_INTERVAL) => None,
            c = control.recv() => Some(c),
        };
        loop {
            let mut batch = Vec::with_capacity(EXPORT_BATCH.min(spans.len()));
            while batch.len() < EXPORT_BATCH {
                match spans.try_recv() {
                    Ok(s) => batch.push(s),
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
            Some(Some((Control::Flush, ack))) => {
                let _ = ack.send(());
            }
            Some(Some((Control::Stop, ack))) => {
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
    span: opentelemetry_sdk::trace::Span,
    context: SpanContext,
    tracer: SdkTracer,
    traceparent: HeaderValue,
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
        self.span.is_recording()
    }

    /// The `traceparent` to send to the provider: this request's span.
    pub(crate) fn traceparent(&self) -> &HeaderValue {
        &self.traceparent
    }

    /// The provider and model actually called.
    pub(crate) fn served(&mut self, provider: &str, model: &str) {
        if self.span.is_recording() {
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
        #[derive(serde::Deserialize)]
        struct Choice {
            #[serde(default)]
            finish_reason: Option<String>,
        }
        if !self.recording() {
            return;
        }
        if let Ok(list) = serde_json::from_str::<Vec<Choice>>(choices.get()) {
            self.finish_reasons = list.into_iter().filter_map(|c| c.finish_reason).collect();
        }
    }

    /// A streamed choice finished with `reason`.
    pub(crate) fn finish_reason(&mut self, reason: &str) {
        self.finish_reasons.push(reason.to_owned());
    }

    fn at(&self, i: Instant) -> SystemTime {
        self.wall + i.saturating_duration_since(self.started)
    }

    /// Set the span's attributes from how the request ended, add a child span per policy
    /// decision, and end it.
    pub(crate) fn end(mut self: Box<Self>, meta: &RequestMeta, ended: Ended<'_>) {
        // Not sampled (`OTEL_TRACES_SAMPLER`): nothing is recorded, nor are its children.
        if !self.span.is_recording() {
            return;
        }
        let now = Instant::now();
        let operation = match meta.route {
            ApiRoute::ChatCompletions | ApiRoute::Messages | ApiRoute::Responses => "chat",
            ApiRoute::Completions => "text_completion",
            ApiRoute::Embeddings => "embeddings",
            ApiRoute::CountTokens => "count_tokens",
            ApiRoute::ResponseItem => "retrieve_response",
        };
        let requested = meta.model.as_ref().map(|m| m.name.as_str());
        self.span.update_name(match requested {
            Some(m) => format!("{operation} {m}"),
            None => operation.to_owned(),
        });
        let pack = &meta.pack.compiled;
        let mut attrs = Vec::with_capacity(12);
        attrs.push(KeyValue::new("gen_ai.operation.name", operation));
        if let Some((provider, model)) = &self.served {
            attrs.push(KeyValue::new("gen_ai.provider.name", provider.clone()));
            attrs.push(KeyValue::new("gen_ai.response.model", model.clone()));
        } else if let Some(m) = &meta.model {
            attrs.push(KeyValue::new("gen_ai.provider.name", m.provider.clone()));
        }
        if let Some(m) = requested {
            attrs.push(KeyValue::new("gen_ai.request.model", m.to_owned()));
        }
        attrs.push(KeyValue::new(
            "palisade.request.id",
            String::from_utf8_lossy(&meta.id.hex()).into_owned(),
        ));
        attrs.push(KeyValue::new("palisade.pack.name", pack.name.clone()));
        attrs.push(KeyValue::new("palisade.pack.version", pack.version.clone()));
        // The HTTP status the caller got (none for a broken or cancelled stream) and, for a
        // failure, its type: the gateway's error code, or the provider's status.
        let (status, error_type): (Option<u16>, Option<String>) = match &ended {
            Ended::Settled(s) => {
                if let Some(u) = s.usage {
                    attrs.push(KeyValue::new(
                        "gen_ai.usage.input_tokens",
                        i64::try_from(u.prompt_tokens).unwrap_or(i64::MAX),
                    ));
                    attrs.push(KeyValue::new(
                        "gen_ai.usage.output_tokens",
                        i64::try_from(u.completion_tokens).unwrap_or(i64::MAX),
                    ));
                }
                (Some(s.status.as_u16()), None)
            }
            Ended::Failed(Failure::Refused(e)) => {
                (Some(e.status().as_u16()), Some(e.code().to_owned()))
            }
            Ended::Failed(Failure::UpstreamStatus(s)) => {
                (Some(s.as_u16()), Some(s.as_str().to_owned()))
            }
            Ended::Failed(Failure::StreamBroken) => (None, Some("stream_broken".to_owned())),
            Ended::Failed(Failure::Cancelled { .. }) => (None, Some("cancelled".to_owned())),
        };
        if let Some(s) = status {
            attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if !self.finish_reasons.is_empty() {
            let reasons = std::mem::take(&mut self.finish_reasons)
                .into_iter()
                .map(StringValue::from)
                .collect();
            attrs.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(reasons)),
            ));
        }
        if let Some(e) = error_type {
            attrs.push(KeyValue::new("error.type", e.clone()));
            self.span.set_status(opentelemetry::trace::Status::error(e));
        }
        self.span.set_attributes(attrs);
        self.guardrails(meta, &ended, now);
        self.span.end_with_timestamp(self.at(now));
    }

    /// One child span per policy decision the pack made on this request.
    fn guardrails(&self, meta: &RequestMeta, ended: &Ended<'_>, now: Instant) {
        let parent = Context::new().with_remote_span_context(SpanContext::new(
            self.context.trace_id(),
            self.context.span_id(),
            self.context.trace_flags(),
            false,
            self.context.trace_state().clone(),
        ));
        let refused = match ended {
            Ended::Failed(Failure::Refused(e)) => Some(*e),
            _ => None,
        };
        if let Some(report) = &meta.pii_request {
            let blocked = matches!(
                refused,
                Some(ApiError::PiiBlocked {
                    side: "request",
                    ..
                })
            );
            self.guardrail(
                &parent,
                meta,
                "pii-detector",
                "llm_input",
                pii_decision(report, blocked),
                Some(report),
                self.marks.request.unwrap_or((self.started, self.started)),
            );
        }
        if let Some(span) = self.marks.budget {
            let decision = match refused {
                Some(ApiError::Rejected(_)) => "deny",
                _ if self
                    .served
                    .as_ref()
                    .zip(meta.model.as_ref())
                    .is_some_and(|((_, served), asked)| *served != asked.upstream_model) =>
                {
                    "modify"
                }
                _ => "allow",
            };
            if meta
                .pack
                .compiled
                .runs(policy_engine::PolicyKind::BudgetEnforcer)
            {
                self.guardrail(
                    &parent,
                    meta,
                    "budget-enforcer",
                    "llm_input",
                    decision,
                    None,
                    span,
                );
            }
        }
        if let Some(report) = &meta.pii_response {
            let blocked = matches!(
                refused,
                Some(ApiError::PiiBlocked {
                    side: "response",
                    ..
                })
            );
            self.guardrail(
                &parent,
                meta,
                "pii-detector",
                "llm_output",
                pii_decision(report, blocked),
                Some(report),
                self.marks.response.unwrap_or((now, now)),
            );
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one span's fields, named at the call"
    )]
    fn guardrail(
        &self,
        parent: &Context,
        meta: &RequestMeta,
        guardian: &'static str,
        target: &'static str,
        decision: &'static str,
        report: Option<&PiiReport>,
        (from, to): (Instant, Instant),
    ) {
        let pack = &meta.pack.compiled;
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", "apply_guardrail"),
            KeyValue::new("gen_ai.guardian.name", guardian),
            KeyValue::new("gen_ai.security.target.type", target),
            KeyValue::new("gen_ai.security.decision.type", decision),
            KeyValue::new("palisade.pack.name", pack.name.clone()),
            KeyValue::new("palisade.pack.version", pack.version.clone()),
        ];
        if let Some(r) = report {
            attrs.push(KeyValue::new("palisade.pii.findings", i64::from(r.total())));
            if !r.findings.is_empty() {
                let entities = r
                    .findings
                    .iter()
                    .map(|(e, _)| StringValue::from(e.clone()))
                    .collect();
                attrs.push(KeyValue::new(
                    "palisade.pii.entities",
                    Value::Array(Array::String(entities)),
                ));
            }
        }
        let mut span = self
            .tracer
            .span_builder(format!("apply_guardrail {guardian}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(self.at(from))
            .with_attributes(attrs)
            .start_with_context(&self.tracer, parent);
        span.end_with_timestamp(self.at(to));
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
        let read = |f: fn(&ExportStats) -> &AtomicU64| crate::metrics::read_field(&self.stats, f);
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
