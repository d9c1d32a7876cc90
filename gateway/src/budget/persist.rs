//! The single-replica state file: the in-memory counters saved so a restart does not reset a
//! month's spend.
//!
//! The file is small JSON (`{"format": 1, "counters": [...]}`), one entry per live counter. It
//! is written atomically — a temporary file in the same directory, `fsync`, `rename` over the
//! old one, `fsync` of the directory — so a crash leaves either the old or the new file, never a
//! half-written one. Loading a file that is nonetheless torn or garbage is an error naming the
//! path and the JSON position, not a panic and not a silent reset: the operator decides whether
//! to start from zero (delete the file) or restore a backup. A missing file is an empty start.
//!
//! What it does not do: save on every request. [`run_periodic`] saves every interval and once
//! more at shutdown; a crash loses at most one interval of settles, and in-flight reservations
//! saved as part of a counter are counted as spent (the conservative side). Redis deployments do
//! not need it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::memory::{CounterSnapshot, MemoryStore};

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    counters: Vec<CounterSnapshot>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("budget state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("budget state file {path} is corrupt (delete it to start from zero, or restore a backup): {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("budget state file {path} has format {found}, this build reads format {FORMAT}")]
    UnsupportedFormat { path: PathBuf, found: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateFileError + '_ {
    move |source| StateFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Load counters from `path`, dropping those of windows over at `now`. Missing file: empty.
pub fn load(path: &Path, now: i64) -> Result<MemoryStore, StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(MemoryStore::default()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let state: StateFile =
        serde_json::from_slice(&bytes).map_err(|source| StateFileError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
    if state.format != FORMAT {
        return Err(StateFileError::UnsupportedFormat {
            path: path.to_owned(),
            found: state.format,
        });
    }
    Ok(MemoryStore::restore(state.counters, now))
}

/// Write every counter of `store` to `path`, atomically.
pub fn save(path: &Path, store: &MemoryStore) -> Result<(), StateFileError> {
    let state = StateFile {
        format: FORMAT,
        counters: store.snapshot(),
    };
    let bytes = serde_json::to_vec_pretty(&state).map_err(|source| StateFileError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map_or_else(|| "budget-state".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

/// Save `store` to `path` every `interval`, and once more when `shutdown` completes. Save
/// errors are logged and retried at the next tick. The file I/O runs on the blocking pool.
pub async fn run_periodic(
    store: MemoryStore,
    path: PathBuf,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StateFileError> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = save_blocking(&store, &path).await {
                    tracing::warn!(error = %e, "budget: saving the state file failed; retrying next tick");
                }
            }
            () = &mut shutdown => return save_blocking(&store, &path).await,
        }
    }
}

/// Save on the blocking pool. An empty store with no file yet writes nothing, so a gateway that
/// never ran a budget leaves no state file (nor directory) behind.
async fn save_blocking(store: &MemoryStore, path: &Path) -> Result<(), StateFileError> {
    let (store, owned) = (store.clone(), path.to_owned());
    let write = move || {
        if store.snapshot().is_empty() && !owned.exists() {
            return Ok(());
        }
        if let Some(dir) = owned.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        save(&owned, &store)
    };
    match tokio::task::spawn_blocking(write).await {
        Ok(r) => r,
        Err(e) => Err(io_err(path)(std::io::Error::other(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::store::{Charge, MeterKey};

    fn charge(name: &str, amount: u64, end: Option<i64>) -> Charge {
        Charge {
            key: MeterKey {
                name: name.into(),
                window_start: 0,
            },
            amount,
            cap: None,
            ttl_secs: None,
            window_end: end,
            slice: 0,
        }
    }

    #[test]
    fn round_trip_keeps_counters_and_drops_finished_windows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budget.json");
        let store = MemoryStore::default();
        let _ = store.reserve(&[charge("month", 1234, Some(1_000_000))], 0);
        let _ = store.reserve(&[charge("old-day", 5, Some(10))], 0);
        let _ = store.reserve(&[charge("total", 7, None)], 0);
        save(&path, &store).unwrap();
        let back = load(&path, 500_000).unwrap();
        assert_eq!(back.used(&charge("month", 0, None).key), 1234);
        assert_eq!(back.used(&charge("total", 0, None).key), 7);
        assert_eq!(back.used(&charge("old-day", 0, None).key), 0, "pruned");
        assert_eq!(back.snapshot().len(), 2);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_file_is_an_empty_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = load(&dir.path().join("absent.json"), 0).unwrap();
        assert!(store.snapshot().is_empty());
    }

    #[test]
    fn torn_or_garbage_file_is_a_clear_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budget.json");
        let store = MemoryStore::default();
        let _ = store.reserve(&[charge("month", 1234, None)], 0);
        save(&path, &store).unwrap();
        let full = std::fs::read(&path).unwrap();
        for cut in [1, full.len() / 2, full.len() - 2] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let err = load(&path, 0).unwrap_err();
            assert!(matches!(err, StateFileError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("corrupt"), "{err}");
        }
        std::fs::write(&path, b"\x00\xffnot json").unwrap();
        assert!(matches!(
            load(&path, 0),
            Err(StateFileError::Corrupt { .. })
        ));
        std::fs::write(&path, br#"{"format": 9, "counters": []}"#).unwrap();
        assert!(matches!(
            load(&path, 0),
            Err(StateFileError::UnsupportedFormat { found: 9, .. })
        ));
    }

    #[tokio::test]
    async fn periodic_saver_writes_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budget.json");
        let store = MemoryStore::default();
        let _ = store.reserve(&[charge("month", 42, None)], 0);
        run_periodic(store, path.clone(), Duration::from_secs(3600), async {})
            .await
            .unwrap();
        assert_eq!(
            load(&path, 0).unwrap().used(&charge("month", 0, None).key),
            42
        );
    }
}
