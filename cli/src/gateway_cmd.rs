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

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use gateway::{Gateway, GatewayConfig, DEFAULT_MAX_BODY_BYTES};

use crate::gateway_policies::{self, PolicyArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    /// The policy pack file (watched; SIGHUP reloads it too).
    #[arg(long)]
    pack: PathBuf,
    /// The environment whose overrides apply (e.g. dev, staging, prod).
    #[arg(long)]
    environment: String,
    /// Address to listen on; port 0 picks a free port (printed on start-up).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
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
    let mut config = GatewayConfig::new(args.pack, args.environment);
    config.listen = args.listen;
    config.keys_path = args.keys;
    config.tls = args.tls_cert.zip(args.tls_key);
    config.limits.max_body_bytes = args.max_body_bytes;
    config.watch = !args.no_watch;
    config.server.drain_timeout = Duration::from_secs(args.drain_timeout_secs);
    config.server.max_connections = args.max_connections;
    let anonymous = config.keys_path.is_none();
    let policies = match gateway_policies::start(args.policies) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("palisade gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let gw = match Gateway::bind(config, Arc::new(policies.observer.clone())).await {
        Ok(gw) => gw,
        Err(e) => {
            eprintln!("palisade gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(e) = policies.observer.startup_error() {
        eprintln!("palisade gateway: {e}");
        return ExitCode::FAILURE;
    }
    if anonymous {
        eprintln!(
            "palisade gateway: WARNING: no --keys file; every caller on {} is accepted anonymously",
            gw.local_addr()
        );
    }
    println!("palisade gateway listening on {}", gw.url());
    let _ = std::io::stdout().flush();
    gw.run(shutdown_signal()).await;
    policies.finish().await;
    ExitCode::SUCCESS
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
