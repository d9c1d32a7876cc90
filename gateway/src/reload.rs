//! When to reload: the pack file is watched (debounced) and SIGHUP forces a reload.
//!
//! Editors save in several steps (truncate + write, or write a temp file and rename over), so
//! file events are debounced: a reload starts only after the file has been quiet for the
//! debounce interval, and a half-written file is never compiled. The parent directory is
//! watched, not the file, so a rename-over save is seen. SIGHUP reloads at once. Each reload
//! reads the file, then prepares the pack on a blocking thread (compilation is CPU work that
//! must not stall request handling) and finally activates or rejects it in `state`. Triggers
//! arrive through a bounded channel of one: a burst of events collapses into one reload.
//!
//! Not here: the control-plane source (poll with ETag), which arrives with its issue.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::pack::{self, PackSource, PrepareError};
use crate::state::GatewayState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    File,
    Signal,
}

/// Read, prepare and activate (or reject) the pack at `path`.
pub async fn reload_file(state: &Arc<GatewayState>, path: &Path) -> Result<(), Arc<PrepareError>> {
    match prepare_file(state, path).await {
        Ok(p) => {
            state.activate(p);
            Ok(())
        }
        Err(e) => {
            state.reject(&e);
            Err(Arc::new(e))
        }
    }
}

/// Read and prepare without activating.
pub async fn prepare_file(
    state: &Arc<GatewayState>,
    path: &Path,
) -> Result<pack::ActivePack, PrepareError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| PrepareError::Read {
            path: path.display().to_string(),
            source,
        })?;
    let environment = state.environment.clone();
    let source = PackSource::File(path.display().to_string());
    let joined =
        tokio::task::spawn_blocking(move || pack::prepare(&text, &environment, source)).await;
    match joined {
        Ok(r) => r,
        Err(e) => Err(PrepareError::Read {
            path: path.display().to_string(),
            source: std::io::Error::other(format!("pack preparation task failed: {e}")),
        }),
    }
}

/// The reload triggers of one gateway: the file watcher and SIGHUP, both installed when this is
/// created (at bind, before the gateway says it is listening), so an edit or a signal that
/// arrives right after start-up is never lost — nor does an early SIGHUP kill the process.
#[derive(Debug)]
pub struct Triggers {
    tx: mpsc::Sender<Trigger>,
    rx: mpsc::Receiver<Trigger>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Triggers {
    pub(crate) fn new(path: &Path, watch_file: bool) -> Self {
        let (tx, rx) = mpsc::channel::<Trigger>(1);
        let watcher = if watch_file {
            match file_watcher(path, tx.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot watch the pack file; reload with SIGHUP");
                    None
                }
            }
        } else {
            None
        };
        spawn_sighup(tx.clone());
        Self {
            tx,
            rx,
            _watcher: watcher,
        }
    }
}

/// Reload on each trigger until `shutdown` resolves.
pub(crate) async fn watch(
    state: Arc<GatewayState>,
    path: PathBuf,
    debounce: Duration,
    triggers: Triggers,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Triggers {
        tx,
        mut rx,
        _watcher,
    } = triggers;
    drop(tx);
    tokio::pin!(shutdown);
    loop {
        let trigger = tokio::select! {
            () = &mut shutdown => return,
            t = rx.recv() => t,
        };
        let Some(mut trigger) = trigger else { return };
        // Wait for the file to be quiet; a signal cuts the wait short.
        while trigger == Trigger::File {
            match tokio::time::timeout(debounce, rx.recv()).await {
                Ok(Some(t)) => trigger = t,
                Ok(None) | Err(_) => break,
            }
        }
        tracing::info!(path = %path.display(), ?trigger, "reloading the policy pack");
        let _ = reload_file(&state, &path).await;
    }
}

fn file_watcher(
    path: &Path,
    tx: mpsc::Sender<Trigger>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            // Full means a reload is already pending; this event joins it.
            let _ = tx.try_send(Trigger::File);
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::Sender<Trigger>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            #[expect(
                clippy::disallowed_methods,
                reason = "the SIGHUP listener: ends when the reload watcher (its receiver) is gone"
            )]
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if tx.send(Trigger::Signal).await.is_err() {
                        return;
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::Sender<Trigger>) {}
