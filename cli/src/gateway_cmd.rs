//! `palisade gateway`: run the data plane for one pack file and one environment.
//!
//! A thin shell over `gateway::Gateway`: parse flags, start a multi-thread tokio runtime (the
//! rest of the CLI stays synchronous), bind, print the bound address in one parseable line —
//! `palisade gateway listening on http://127.0.0.1:PORT` — so `--listen 127.0.0.1:0` works for
//! tests and scripts, then serve until SIGTERM or Ctrl-C and drain in-flight requests.
//! Logs go to stderr (`RUST_LOG` filters, default `info`); stdout carries only that line.
//! A pack that cannot be activated at start-up is fatal (exit 1, every diagnostic printed);
//! later, a bad pack is rejected and the running one keeps serving. Budgets and the audit log
//! run through `gateway_policies` (flags `--redis`, `--state-dir`).
//!
//! With `--control-plane URL` the pack comes from the control plane instead of a file: `--pack`
//! names it, the gateway key comes from `PALISADE_GATEWAY_KEY` (never a flag), the last good
//! pack is persisted in `--state-dir` and served at start-up while the control plane is down,
//! and `/readyz` stays unready until some pack is active. Under a control plane the gateway also
//! ships one decision event per request to it (`gateway::control::events`), through a queue of
//! `--events-buffer` events; the shipper stops after the drain, sending what is queued.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use gateway::control::{Agent, AgentConfig, ControlClient, GatewayApplier};
use gateway::{Gateway, GatewayConfig, DEFAULT_MAX_BODY_BYTES};
use palisade_wire::gateway::Instance;

use crate::gateway_policies::{self, PolicyArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    /// The policy pack file (watched; SIGHUP reloads it too), or with --control-plane the
    /// pack's name in the registry.
    #[arg(long)]
    pack: String,
    /// Take the pack from this control plane (key in PALISADE_GATEWAY_KEY) instead of a file.
    #[arg(long, env = "PALISADE_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// The environment whose overrides apply (e.g. dev, staging, prod).
    #[arg(short = 'e', long)]
    environment: String,
    /// Address to listen on; port 0 picks a free port (printed on start-up).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve /status and /metrics here, and not on --listen. Without it they stay on a loopback
    /// --listen, and move to 127.0.0.1:9464 when --listen is not loopback.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Caller keys file: a YAML or JSON list of {id, team, sha256}. Required off loopback.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// PEM certificate chain for TLS on the listener.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the listener.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest accepted request body; larger ones get 413 request_too_large.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Do not watch the pack file (SIGHUP still reloads).
    #[arg(long)]
    no_watch: bool,
    /// How long shutdown waits for in-flight requests, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
    /// Maximum open client connections.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Maximum open connections from one client address; 0: no cap.
    #[arg(long, default_value_t = 1_000)]
    max_connections_per_client: usize,
    /// A new connection's first request head must arrive within this (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    first_request_timeout: Duration,
    /// An idle keep-alive connection is closed after this; also bounds a request head's read.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// A request body must arrive within this after its head (408 request_timeout after).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// A provider stream silent for this long is ended (an error event says why).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    stream_idle_timeout: Duration,
    /// A provider stream longer than this many bytes is ended (an error event says why).
    #[arg(long, default_value_t = 64 << 20)]
    max_stream_bytes: usize,
    /// With --control-plane: decision events held while the control plane is slow or down
    /// (more are dropped and counted); 0 ships no events.
    #[arg(long, default_value_t = 20_000)]
    events_buffer: usize,
    /// Export one trace span per API request (GenAI conventions, with a child span per policy
    /// decision) to this OTLP collector: its base URL, e.g. http://localhost:4318 for
    /// http/protobuf or http://localhost:4317 for grpc. Off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// The OTLP protocol: grpc or http/protobuf. Read only when traces are exported.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    otlp_protocol: String,
    /// Serving threads, each with its own runtime and listening socket; 0: one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Budget stores and state (see `gateway_policies`).
    #[command(flatten)]
    policies: PolicyArgs,
}

pub(crate) fn run(args: GatewayArgs) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: GatewayArgs) -> ExitCode {
    let mut config = GatewayConfig::new(PathBuf::from(&args.pack), args.environment.clone());
    config.managed = args.control_plane.is_some();
    config.listen = args.listen;
    config.admin_listen = args.admin_listen;
    if let Some(endpoint) = args.otlp_endpoint.clone() {
        let protocol = match gateway::otel::OtlpProtocol::parse(&args.otlp_protocol) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("palisade gateway: --otlp-protocol: {e}");
                return ExitCode::from(2);
            }
        };
        config.otlp = Some(gateway::otel::OtlpConfig {
            endpoint,
            protocol,
            environment: args.environment.clone(),
        });
    }
    config.keys_path = args.keys.clone();
    config.tls = args.tls_cert.clone().zip(args.tls_key.clone());
    config.limits.max_body_bytes = args.max_body_bytes;
    config.watch = !args.no_watch;
    config.server.drain_timeout = Duration::from_secs(args.drain_timeout_secs);
    config.server.max_connections = args.max_connections;
    config.server.max_connections_per_client = args.max_connections_per_client;
    config.server.first_request_timeout = args.first_request_timeout;
    config.server.header_read_timeout = args.idle_timeout;
    config.limits.body_timeout = args.body_timeout;
    config.limits.stream = gateway::sse::StreamLimits {
        idle_timeout: args.stream_idle_timeout,
        max_bytes: args.max_stream_bytes,
    };
    config.server.threads = args.threads;
    let state_dir = args.policies.state_dir.clone();
    let (event_sink, event_queue) = match (&args.control_plane, args.events_buffer) {
        (Some(_), n) if n > 0 => {
            let (sink, queue) = gateway::control::events::queue(n);
            (Some(sink), Some(queue))
        }
        _ => (None, None),
    };
    let policies = match gateway_policies::start(args.policies.clone(), event_sink) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("palisade gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let gw = match Gateway::bind(config, Arc::new(policies.enforcement.clone())).await {
        Ok(gw) => gw,
        Err(e) => {
            eprintln!("palisade gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(e) = policies.enforcement.startup_error() {
        eprintln!("palisade gateway: {e}");
        return ExitCode::FAILURE;
    }
    // Without --keys the gateway itself warns once (`NO CALLER KEYS`), in the log.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (ship_stop, ship_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut shipper = None;
    let agent = match &args.control_plane {
        None => None,
        Some(url) => match start_agent(url, &args, &state_dir, &gw).await {
            Ok((agent, client, id)) => {
                if let Some(queue) = event_queue {
                    let cfg = gateway::control::events::ShipperConfig::new(id);
                    let run = queue.ship(client, cfg).run(async {
                        let _ = ship_stopped.await;
                    });
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "the event shipper: stopped after the drain and its JoinHandle awaited"
                    )]
                    let handle = tokio::spawn(run);
                    shipper = Some(handle);
                }
                #[expect(
                    clippy::disallowed_methods,
                    reason = "the agent: its JoinHandle is awaited after the drain"
                )]
                Some(tokio::spawn(agent.run(stopped(stop_rx.clone()))))
            }
            Err(message) => {
                eprintln!("palisade gateway: {message}");
                return ExitCode::FAILURE;
            }
        },
    };
    println!("palisade gateway listening on {}", gw.url());
    if let Some(admin) = gw.admin_url() {
        println!("palisade gateway admin (/status, /metrics) on {admin}");
    }
    let _ = std::io::stdout().flush();
    #[expect(
        clippy::disallowed_methods,
        reason = "the signal waiter: ends at the first signal, or with the process"
    )]
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    gw.run(stopped(stop_rx)).await;
    // Every request has ended, so every event is queued: send them, then stop.
    let _ = ship_stop.send(());
    if let Some(s) = shipper {
        let _ = s.await;
    }
    if let Some(a) = agent {
        let _ = a.await;
    }
    policies.finish().await;
    ExitCode::SUCCESS
}

/// Build the control-plane agent and activate the persisted pack, if any, before serving.
/// Returns the agent, a client for the event shipper, and the gateway's instance id.
async fn start_agent(
    url: &str,
    args: &GatewayArgs,
    state_dir: &std::path::Path,
    gw: &Gateway,
) -> Result<(Agent<GatewayApplier>, ControlClient, String), String> {
    let key = std::env::var("PALISADE_GATEWAY_KEY")
        .map_err(|_| "--control-plane needs the gateway key in PALISADE_GATEWAY_KEY".to_owned())?;
    let client = ControlClient::new(url, &key).map_err(|e| e.to_string())?;
    let applier = GatewayApplier::new(
        std::sync::Arc::clone(gw.state()),
        url,
        &state_dir.display().to_string(),
    )
    .map_err(|e| format!("metrics: {e}"))?;
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "gateway".to_owned());
    // Host and port identify a live gateway (the port is bound), and stay the same across a
    // restart on the same address, so a restarted gateway takes over its own row in the fleet
    // view instead of leaving an OFFLINE twin behind.
    let instance = Instance {
        id: format!("{host}-{}", gw.local_addr().port()),
        environment: args.environment.clone(),
        pack: args.pack.clone(),
        build: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    };
    let cfg = AgentConfig {
        instance,
        state_dir: state_dir.to_owned(),
        long_poll: Duration::from_secs(25),
        report_interval: Duration::from_secs(2),
    };
    let id = cfg.instance.id.clone();
    let agent = Agent::new(client.clone(), std::sync::Arc::new(applier), cfg);
    agent.start_from_persisted().await;
    Ok((agent, client, id))
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}

/// `RUST_LOG` (default `info`). Plain `target=level` lists, the usual case, filter with
/// [`Targets`], which decides per call site once; only a spec that filters on spans or fields
/// (`[request{route=…}]=debug`) needs [`EnvFilter`], whose per-span bookkeeping (a lock on every
/// span enter and exit) costs the request path several microseconds per request.
fn init_logging() {
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let registry = tracing_subscriber::registry();
    let _ = match spec.parse::<Targets>() {
        Ok(targets) => registry.with(targets).with(log_layer()).try_init(),
        Err(_) => registry
            .with(EnvFilter::new(&spec))
            .with(log_layer())
            .try_init(),
    };
}

fn log_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: escape codes in a log file are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}
