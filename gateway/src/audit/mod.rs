//! The per-request audit log: one hash-chained JSON line per request.
//!
//! - [`record`]: what a line says about a request (decisions, never raw content).
//! - [`chain`]: how a line is sealed and checked.
//! - [`files`]: daily files, retention, recovery of a torn tail.
//! - [`writer`]: the bounded queue and the writer thread ([`AuditSink`]).
//! - [`verify`]: walking a directory and naming the first broken link.
//!
//! This log may drop records under pressure only where the pack says `on_queue_full: drop`, and
//! every drop is counted and written into the chain. The control plane's admin log is a
//! different log with stricter rules (it refuses the change it cannot record).

pub mod chain;
pub mod files;
mod line;
pub mod record;
pub mod verify;
pub mod writer;

use std::path::{Path, PathBuf};

pub use record::{
    AttemptRecord, AuditRecord, BudgetNote, CallerRef, Latency, OutcomeKind, PackRef,
    PolicyDecision, TokenCounts,
};
pub use writer::{
    Ack, AuditSink, AuditStats, DurablyQueued, Enqueued, PendingRecord, WriterHandle,
};

pub use crate::clock::{Clock, SystemClock};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the audit log {file} is corrupt ({reason}); run `palisade audit verify` on its directory"
    )]
    Corrupt { file: PathBuf, reason: String },
    #[error("{dir} is the audit log of another running gateway (its lock file `.lock` is held); give each gateway its own audit directory")]
    Locked { dir: PathBuf },
    #[error("the audit writer has stopped")]
    Closed,
    #[error("the audit record could not be written: {0}")]
    Write(String),
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}
