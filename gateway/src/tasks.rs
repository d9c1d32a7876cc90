//! Background work that must finish before the process exits: budget settles and releases that
//! still need a store round trip, the give-back of a dropped reservation, a store attempt that
//! outlived its caller's timeout. They run on the runtime like any task, but in one tracker, so
//! shutdown awaits them ([`finish`]) instead of dropping them with the runtime — usage charged by
//! a provider is never lost to a restart.
//!
//! `clippy.toml` bans bare `tokio::spawn` and `Handle::spawn` in the workspace: a task either
//! goes through here, or is long-running with an owner that ends it (its `JoinHandle` kept, a
//! `Weak` it stops on, the connection it serves), which the `#[expect]` at its spawn says.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// One tracker per process: the work belongs to the stores and sinks, which a process shares
/// between the gateways it runs (tests run several).
static TRACKER: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Run `future` to completion on the current runtime, tracked.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    TRACKER.spawn(future)
}

/// Run `future` on `handle`'s runtime, tracked.
pub fn spawn_on<F>(handle: &tokio::runtime::Handle, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    TRACKER.spawn_on(future, handle)
}

/// How many tracked tasks are running.
pub fn running() -> usize {
    TRACKER.len()
}

/// Wait up to `within` for every tracked task to end (after the server drained, so no request
/// adds new ones). Returns how many were still running when the time ran out (0: all done).
pub async fn finish(within: Duration) -> usize {
    TRACKER.close();
    let done = tokio::time::timeout(within, TRACKER.wait()).await.is_ok();
    // Reopen: a process may serve again (tests start gateways one after another).
    TRACKER.reopen();
    if done {
        0
    } else {
        TRACKER.len()
    }
}
