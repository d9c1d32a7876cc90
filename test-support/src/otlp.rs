//! An OTLP trace receiver for tests, built from the official protobuf definitions
//! (`opentelemetry-proto`): gRPC (a tonic `TraceService`) and HTTP/protobuf (`POST /v1/traces`)
//! on two free loopback ports. It keeps every span it receives, decoded, with the protocol that
//! carried it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// A span as received, with its attributes as JSON values.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `grpc` or `http/protobuf`.
    pub protocol: &'static str,
    pub name: String,
    /// The OTLP enum value: 1 internal, 3 client.
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// 2 is error.
    pub status_code: i32,
    pub attributes: BTreeMap<String, Value>,
    /// The resource's attributes (`service.name`, …).
    pub resource: BTreeMap<String, Value>,
}

impl ReceivedSpan {
    /// An attribute, or `Value::Null`.
    pub fn attr(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }
}

#[derive(Debug, Clone, Default)]
struct Received(Arc<Mutex<Vec<ReceivedSpan>>>);

impl Received {
    async fn add(&self, protocol: &'static str, req: ExportTraceServiceRequest) {
        let mut out = self.0.lock().await;
        for rs in req.resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(ReceivedSpan {
                        protocol,
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        start_unix_nano: s.start_time_unix_nano,
                        end_unix_nano: s.end_time_unix_nano,
                        status_code: s.status.map_or(0, |st| st.code),
                        attributes: attributes(&s.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }
}

/// A running receiver; its servers stop with the test's runtime.
#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    grpc: SocketAddr,
    http: SocketAddr,
    received: Received,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let received = Received::default();
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let service = TraceServiceServer::new(Grpc(received.clone()));
        crate::client::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener))
                .await;
        });
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let r = received.clone();
        crate::client::spawn(async move {
            loop {
                let Ok((stream, _)) = http_listener.accept().await else {
                    return;
                };
                let r = r.clone();
                crate::client::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| http_export(r.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            grpc,
            http,
            received,
        }
    }

    /// `http://127.0.0.1:PORT`, the gRPC endpoint.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://127.0.0.1:PORT`, the HTTP endpoint's base (the exporter adds `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    pub async fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.0.lock().await.clone()
    }

    /// Wait until `n` spans have arrived (the exporter batches, every few seconds at most).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans().await;
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans arrived within {within:?}: {spans:#?}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Grpc(Received);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add("grpc", req.into_inner()).await;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn http_export(
    received: Received,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let ok = req.method() == hyper::Method::POST
        && req.uri().path() == "/v1/traces"
        && req
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let body = crate::client::read_body(req.into_body()).await;
    let status = match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(r) if ok => {
            received.add("http/protobuf", r).await;
            200
        }
        _ => 400,
    };
    let reply = ExportTraceServiceResponse {
        partial_success: None,
    }
    .encode_to_vec();
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(reply)))
        .unwrap())
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, Value> {
    list.iter()
        .map(|kv| {
            let v = kv
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref())
                .map_or(Value::Null, any_value);
            (kv.key.clone(), v)
        })
        .collect()
}

fn any_value(v: &AnyValue) -> Value {
    match v {
        AnyValue::StringValue(s) => Value::from(s.clone()),
        AnyValue::BoolValue(b) => Value::from(*b),
        AnyValue::IntValue(i) => Value::from(*i),
        AnyValue::DoubleValue(d) => Value::from(*d),
        AnyValue::ArrayValue(a) => Value::Array(
            a.values
                .iter()
                .map(|x| x.value.as_ref().map_or(Value::Null, any_value))
                .collect(),
        ),
        other => Value::from(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
