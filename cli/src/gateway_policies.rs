//! The budget and audit side of `palisade gateway`: the flags, the stores that outlive pack
//! reloads, and their shutdown.
//!
//! Budgets in memory are loaded from `--state-dir`/`budget-state.json` at start, saved every
//! [`SAVE_INTERVAL`] and once more at shutdown (atomically, see `gateway::budget::persist`), so a
//! restart keeps the month's spend; a crash loses at most one interval of settles. Nothing is
//! written (no directory, no file) until a budget has counted something. Packs that
//! keep budgets in Redis use `--redis` (or `PALISADE_REDIS_URL`). At shutdown, after the gateway
//! has drained, slices pre-borrowed from Redis are given back, and the audit writers flush and
//! are joined before the state file is saved.
//!
//! Kept apart from `gateway_cmd` so that file stays a thin shell over `gateway::Gateway`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gateway::budget::{persist, RedisStore};
use gateway::clock::{Clock, SystemClock};
use gateway::enforce::{EnforcementSettings, PolicyEnforcement};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the in-memory budget counters are saved.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// Timeout of one Redis budget operation.
const REDIS_OP_TIMEOUT: Duration = Duration::from_millis(500);
const STATE_FILE: &str = "budget-state.json";

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PolicyArgs {
    /// Redis URL for packs whose budget store is `redis`.
    #[arg(long, env = "PALISADE_REDIS_URL")]
    redis: Option<String>,
    /// Where the in-memory budget counters and the last good pack from the control plane are
    /// kept between restarts.
    #[arg(long, default_value = "./state")]
    pub(crate) state_dir: PathBuf,
}

/// The enforcement and what must be stopped after the gateway drains.
#[derive(Debug)]
pub(crate) struct Policies {
    pub(crate) enforcement: PolicyEnforcement,
    /// Its pre-borrowed slices are given back at shutdown.
    redis: Option<Arc<RedisStore>>,
    stop_saver: oneshot::Sender<()>,
    saver: JoinHandle<Result<(), persist::StateFileError>>,
}

/// Load the budget state and open the stores. Call inside the runtime.
pub(crate) fn start(
    args: PolicyArgs,
    events: Option<gateway::control::events::EventSink>,
) -> Result<Policies, String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let path = args.state_dir.join(STATE_FILE);
    let memory = persist::load(&path, clock.now_unix()).map_err(|e| e.to_string())?;
    let redis = match args.redis.as_deref() {
        Some(url) => Some(Arc::new(
            RedisStore::open(url, REDIS_OP_TIMEOUT).map_err(|e| format!("--redis: {e}"))?,
        )),
        None => None,
    };
    let enforcement = PolicyEnforcement::new(EnforcementSettings {
        memory: memory.clone(),
        redis: redis.clone(),
        clock,
        events,
    })
    .map_err(|e| format!("metrics: {e}"))?;
    let (stop_saver, stopped) = oneshot::channel();
    #[expect(
        clippy::disallowed_methods,
        reason = "the budget saver: its JoinHandle is kept and awaited in finish()"
    )]
    let saver = tokio::spawn(persist::run_periodic(memory, path, SAVE_INTERVAL, async {
        let _ = stopped.await;
    }));
    Ok(Policies {
        enforcement,
        redis,
        stop_saver,
        saver,
    })
}

impl Policies {
    /// After the gateway drained: give back pre-borrowed budget, flush and join the audit
    /// writers, then save the budgets.
    pub(crate) async fn finish(self) {
        let enforcement = self.enforcement.clone();
        // Settles and releases the last requests left to a task finish before the final save.
        let left = gateway::tasks::finish(std::time::Duration::from_secs(10)).await;
        if left > 0 {
            tracing::error!(
                left,
                "budget settles still running after 10 s; their usage is not saved"
            );
        }
        if let Some(redis) = &self.redis {
            redis.close_leases().await;
        }
        if tokio::task::spawn_blocking(move || enforcement.shutdown())
            .await
            .is_err()
        {
            tracing::error!("the audit writers did not stop cleanly");
        }
        let _ = self.stop_saver.send(());
        match self.saver.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "saving the budget state at shutdown failed"),
            Err(e) => tracing::error!(error = %e, "the budget state saver failed"),
        }
    }
}
