//! `palisade control-plane`: run the registry and its API.
//!
//! Prints `palisade control-plane listening on http://ADDR` once the socket is bound (so
//! `--listen 127.0.0.1:0` works for scripts and tests), and, on first start without
//! `PALISADE_ADMIN_KEY`, the generated admin key, once. Runs until Ctrl-C or SIGTERM. Decision
//! events past their environment's retention are deleted every `--event-prune-interval`, in
//! bounded batches.

use std::process::ExitCode;
use std::sync::Arc;

use control_plane::{App, Config, SystemClock, DEFAULT_REPORT_INTERVAL_MS};

#[derive(Debug, clap::Args)]
pub(crate) struct ControlPlaneArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8070")]
    listen: String,
    /// `sqlite://PATH?mode=rwc`, `postgres://…`, or a SQLite file path.
    #[arg(long, default_value = "palisade-control-plane.db")]
    database: String,
    /// How often gateways report; a gateway silent for 3 intervals is OFFLINE.
    #[arg(long, default_value_t = DEFAULT_REPORT_INTERVAL_MS)]
    report_interval_ms: u64,
    /// A gateway silent this long leaves the fleet view (status, promotion gates) and is
    /// deleted; `palisade gateways prune` forgets OFFLINE ones at once.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    forget_gateways_after: std::time::Duration,
    /// A new connection's first request head must arrive within this (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    first_request_timeout: std::time::Duration,
    /// A request body must arrive within this after its head (408 REQUEST_TIMEOUT after).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    body_timeout: std::time::Duration,
    /// How often decision events past their environment's retention are deleted.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    event_prune_interval: std::time::Duration,
}

pub(crate) fn run(args: &ControlPlaneArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: escape codes in a log file are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(args))
}

async fn serve(args: &ControlPlaneArgs) -> ExitCode {
    let config = Config {
        database: args.database.clone(),
        report_interval_ms: args.report_interval_ms,
        forget_gateways_after_ms: u64::try_from(args.forget_gateways_after.as_millis())
            .unwrap_or(u64::MAX),
        admin_key: std::env::var("PALISADE_ADMIN_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
    };
    let (app, generated) = match App::open(&config, Arc::new(SystemClock)).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Some(key) = generated {
        println!(
            "palisade control-plane generated the admin key (shown once, store it now): {key}"
        );
    }
    match listener.local_addr() {
        Ok(addr) => println!("palisade control-plane listening on http://{addr}"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let limits = control_plane::ServeLimits {
        first_request_timeout: args.first_request_timeout,
        body_timeout: args.body_timeout,
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let pruning = Arc::clone(&app);
    let every = args
        .event_prune_interval
        .max(std::time::Duration::from_millis(100));
    #[expect(
        clippy::disallowed_methods,
        reason = "the retention loop: told to stop at shutdown and its JoinHandle awaited"
    )]
    let pruner = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop_rx.wait_for(|s| *s) => return,
            }
            match pruning.prune_events().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired decision events deleted"),
                Err(e) => tracing::error!(error = %e, "deleting expired decision events failed"),
            }
        }
    });
    let writes = Arc::clone(&app);
    control_plane::serve(listener, app, limits, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    let _ = pruner.await;
    writes
        .finish_event_writes(std::time::Duration::from_secs(5))
        .await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
