//! The audit sink: a bounded queue in front of one writer thread.
//!
//! The request path never touches the disk. It hands a record to a bounded queue; when the queue
//! is full the pack decides: `block` waits for room (correctness first), `drop` counts the record
//! as dropped and the next line written carries the count (`dropped_before`), so the gap is in the
//! chain itself. One dedicated OS thread owns the file: it batches whatever is queued, seals each
//! line into the chain, writes the batch with one `write`, and fsyncs at least every
//! `fsync_interval_ms` (every batch when it is 0). `record_durable` waits until its line is on
//! disk, for callers that must not acknowledge a request before its record survives a crash;
//! `record_now_durable` is the same for synchronous callers: it queues at once and returns an
//! [`Ack`] to await. Waiting records are acknowledged per batch after one write and one fsync
//! (group commit), so many concurrent waiters share one fsync; a failed write or fsync is
//! reported to every waiter of the batch.
//!
//! Files rotate at UTC midnight by the injected clock; retention runs at start and on rotation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use policy_engine::pack::{AuditLoggerConfig, QueueFullPolicy};
use tokio::sync::{mpsc, oneshot};

use super::chain::{seal, LineBody, LineKind};
use super::files;
use super::record::AuditRecord;
use super::{AuditError, Clock};

/// Most lines sealed and written in one batch.
const MAX_BATCH: usize = 512;

/// After a batch nobody waits for, the writer lets records gather this long before it looks at
/// the queue again. Without it, under load the writer sleeps after every line and every request
/// pays a cross-thread wake-up (a futex call on its serving thread, a context switch on the
/// writer's); with it a wake-up writes every line of the last millisecond in one call. Records
/// are not durable before the next fsync (`fsync_interval_ms`, 100 by default) anyway, and a
/// pack whose responses wait for their record (`fsync_interval_ms: 0`) never gathers.
const GATHER: Duration = Duration::from_millis(1);

/// Counters the gateway exports as metrics and in `/status`.
#[derive(Debug, Default)]
pub struct AuditStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
    /// Records that never reached the file: their write failed, or no writer was running.
    pub lost: AtomicU64,
    pub fsyncs: AtomicU64,
}

/// What [`AuditSink::record_now`] did with a record.
#[derive(Debug)]
pub enum Enqueued {
    Queued,
    /// Queue full under `on_queue_full: drop`: counted, and noted in the next line written.
    Dropped,
    /// Queue full under `on_queue_full: block`: the record, to be queued by awaiting room.
    Full(PendingRecord),
}

/// What [`AuditSink::record_now_durable`] did with a record.
#[derive(Debug)]
pub enum DurablyQueued {
    /// Queued; the [`Ack`] resolves when its line is written and fsynced.
    Queued(Ack),
    /// The queue is full: [`PendingRecord::queue`] waits for room, then the ack resolves.
    Full { pending: PendingRecord, ack: Ack },
}

/// Resolves when a record's line is written and fsynced.
#[derive(Debug)]
pub struct Ack(oneshot::Receiver<Result<(), String>>);

impl Ack {
    /// `Err` when the write or the fsync of its batch failed, or the writer stopped first.
    pub async fn durable(self) -> Result<(), AuditError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Write(e)),
            Err(_) => Err(AuditError::Closed),
        }
    }
}

/// A record that found the queue full under `on_queue_full: block`, with its place in the
/// queue still to be awaited — by the request it belongs to, so waiting records are bounded by
/// the requests in flight (no task per record, no growth under sustained overload).
///
/// Waiting is cancel-safe: a slot is reserved before the record leaves this value. Dropped
/// before it was queued (its request went away), the record is queued if there is room now,
/// otherwise counted as dropped and noted in the chain like a `drop` under `on_queue_full: drop`.
#[derive(Debug)]
pub struct PendingRecord {
    tx: mpsc::Sender<Entry>,
    entry: Option<Entry>,
    pending_drops: Arc<AtomicU64>,
    stats: Arc<AuditStats>,
}

impl PendingRecord {
    /// Wait for room and queue the record.
    pub async fn queue(mut self) -> Result<(), AuditError> {
        let permit = self.tx.reserve().await.map_err(|_| AuditError::Closed)?;
        if let Some(entry) = self.entry.take() {
            permit.send(entry);
        }
        Ok(())
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(entry) {
            self.pending_drops.fetch_add(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Entry {
    record: Box<AuditRecord>,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// Handle held by the request path. Cloning is cheap; the writer stops when every handle is gone.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Entry>,
    on_full: QueueFullPolicy,
    /// Dropped since the last line written; the writer takes it into `dropped_before`.
    pending_drops: Arc<AtomicU64>,
    stats: Arc<AuditStats>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("request_id", &self.record.request_id)
            .finish()
    }
}

/// Joins the writer thread once every sink handle is dropped.
#[derive(Debug)]
pub struct WriterHandle {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriterHandle {
    /// Wait for the writer to flush and stop (call after dropping every `AuditSink`).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl AuditSink {
    /// Recover the chain in `cfg.dir` and start the writer thread. Blocking (file I/O): call it
    /// at start-up or from `spawn_blocking`, never on a request.
    pub fn start(
        cfg: &AuditLoggerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, WriterHandle), AuditError> {
        Self::start_with_stats(cfg, clock, Arc::new(AuditStats::default()))
    }

    /// [`AuditSink::start`] counting into `stats`, so counters survive a change of sink (a pack
    /// reload that moves the directory) and stay monotonic for Prometheus.
    pub fn start_with_stats(
        cfg: &AuditLoggerConfig,
        clock: Arc<dyn Clock>,
        stats: Arc<AuditStats>,
    ) -> Result<(Self, WriterHandle), AuditError> {
        let dir = PathBuf::from(&cfg.dir);
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        let lock = lock_dir(&dir)?;
        let tail = files::recover(&dir)?;
        let pending_drops = Arc::new(AtomicU64::new(0));
        let capacity = usize::try_from(cfg.queue_capacity.max(1)).unwrap_or(1);
        let (tx, rx) = mpsc::channel(capacity);
        let mut writer = Writer {
            dir,
            _lock: lock,
            clock,
            retention_days: cfg.retention_days,
            fsync_every: Duration::from_millis(cfg.fsync_interval_ms),
            file: None,
            date: String::new(),
            seq: tail.last_seq,
            prev_hash: tail.last_hash.clone(),
            pending_drops: Arc::clone(&pending_drops),
            stats: Arc::clone(&stats),
            dirty_since: None,
            file_len: 0,
            torn: false,
            gap: None,
        };
        let note = match &tail.discarded {
            Some((file, bytes)) => format!("recovered: discarded a torn line of {bytes} bytes at the end of {}; chain continues from seq {}", file.display(), tail.last_seq),
            None => format!("started; chain continues from seq {}", tail.last_seq),
        };
        let kind = if tail.discarded.is_some() {
            LineKind::Recovered
        } else {
            LineKind::Started
        };
        writer.write_batch(vec![], Some((kind, note)))?;
        let thread = std::thread::Builder::new()
            .name("palisade-audit".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io(std::path::Path::new("audit writer thread"), e))?;
        let sink = Self {
            tx,
            on_full: cfg.on_queue_full,
            pending_drops,
            stats,
        };
        Ok((
            sink,
            WriterHandle {
                thread: Some(thread),
            },
        ))
    }

    /// Queue a record. Under `block` this waits for room; under `drop` a full queue drops the
    /// record, counts it, and returns `Ok(false)`.
    pub async fn record(&self, record: AuditRecord) -> Result<bool, AuditError> {
        let entry = Entry {
            record: Box::new(record),
            ack: None,
        };
        match self.on_full {
            QueueFullPolicy::Block => self
                .tx
                .send(entry)
                .await
                .map(|()| true)
                .map_err(|_| AuditError::Closed),
            QueueFullPolicy::Drop => match self.tx.try_send(entry) {
                Ok(()) => Ok(true),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.pending_drops.fetch_add(1, Ordering::Relaxed);
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    Ok(false)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditError::Closed),
            },
        }
    }

    /// Queue a record without waiting, for synchronous callers (the request hooks). A full
    /// queue under `drop` drops and counts the record ([`Enqueued::Dropped`]); under `block` the
    /// record comes back ([`Enqueued::Full`]) for the caller to hand to [`AuditSink::record`] on
    /// a task, so nothing is lost while the caller itself does not wait.
    pub fn record_now(&self, record: AuditRecord) -> Result<Enqueued, AuditError> {
        let entry = Entry {
            record: Box::new(record),
            ack: None,
        };
        match self.tx.try_send(entry) {
            Ok(()) => Ok(Enqueued::Queued),
            Err(mpsc::error::TrySendError::Full(e)) => match self.on_full {
                QueueFullPolicy::Drop => {
                    self.pending_drops.fetch_add(1, Ordering::Relaxed);
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    Ok(Enqueued::Dropped)
                }
                QueueFullPolicy::Block => Ok(Enqueued::Full(self.pending(e))),
            },
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditError::Closed),
        }
    }

    /// Queue a record and wait until its line is written and fsynced. Always waits for room,
    /// whatever `on_queue_full` says: the caller asked for durability.
    pub async fn record_durable(&self, record: AuditRecord) -> Result<(), AuditError> {
        match self.record_now_durable(record)? {
            DurablyQueued::Queued(ack) => ack.durable().await,
            DurablyQueued::Full { pending, ack } => {
                pending.queue().await?;
                ack.durable().await
            }
        }
    }

    /// Queue a record without waiting and get an [`Ack`] for when its line is written and
    /// fsynced; for synchronous callers (the request hooks). A full queue is never a drop here
    /// (the caller asked for durability): the record comes back as a [`PendingRecord`] to be
    /// queued by awaiting room.
    pub fn record_now_durable(&self, record: AuditRecord) -> Result<DurablyQueued, AuditError> {
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            record: Box::new(record),
            ack: Some(tx),
        };
        match self.tx.try_send(entry) {
            Ok(()) => Ok(DurablyQueued::Queued(Ack(rx))),
            Err(mpsc::error::TrySendError::Full(entry)) => Ok(DurablyQueued::Full {
                pending: self.pending(entry),
                ack: Ack(rx),
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditError::Closed),
        }
    }

    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    fn pending(&self, entry: Entry) -> PendingRecord {
        PendingRecord {
            tx: self.tx.clone(),
            entry: Some(entry),
            pending_drops: Arc::clone(&self.pending_drops),
            stats: Arc::clone(&self.stats),
        }
    }
}

/// One writer per directory, across processes: two gateways appending to one directory would
/// interleave two chains that verify as neither. An exclusive lock on `DIR/.lock` (`flock`,
/// released by the kernel when the holder exits, however it exits) is held for the writer's
/// life. The lock is retried for up to two seconds, for this process's own previous writer of
/// the directory to finish (a reload away from a directory and back).
fn lock_dir(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::io(&path, e))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                #[expect(
                    clippy::disallowed_methods,
                    reason = "a writer starts on a blocking thread, or at start-up before anything is served"
                )]
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AuditError::Locked {
                    dir: dir.to_owned(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(AuditError::io(&path, e)),
        }
    }
}

struct Writer {
    dir: PathBuf,
    /// The directory's lock, held while this writer runs.
    _lock: File,
    clock: Arc<dyn Clock>,
    retention_days: u32,
    fsync_every: Duration,
    file: Option<File>,
    date: String,
    seq: u64,
    prev_hash: String,
    pending_drops: Arc<AtomicU64>,
    stats: Arc<AuditStats>,
    /// When the oldest unsynced write happened.
    dirty_since: Option<Instant>,
    /// Length of the open file up to its last whole line.
    file_len: u64,
    /// A failed write left bytes after `file_len` that could not be cut off yet.
    torn: bool,
    /// Records lost to failed writes since the last line written.
    gap: Option<Gap>,
}

/// Failed writes since the last successful one.
struct Gap {
    records: u64,
    /// When the first of them failed.
    since: String,
    error: String,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Entry>) {
        // A current-thread runtime only for its timer: this thread owns the file and may block.
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            tracing::error!(
                "audit writer: cannot build its timer runtime; records will not be written"
            );
            return;
        };
        rt.block_on(async {
            loop {
                let wait = match self.dirty_since {
                    Some(t) => self.fsync_every.saturating_sub(t.elapsed()),
                    None => Duration::from_secs(3600),
                };
                let first = match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    Err(_) => {
                        // A failure is logged and counted inside; nobody waits on this one.
                        let _ = self.sync();
                        continue;
                    }
                };
                let mut batch = Vec::with_capacity(16);
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let waited_for = batch.iter().any(|e| e.ack.is_some());
                // A failure is logged (once per gap) and counted inside.
                let _ = self.write_batch(batch, None);
                if !waited_for && !self.fsync_every.is_zero() {
                    tokio::time::sleep(GATHER.min(self.fsync_every)).await;
                }
            }
        });
        // Records lost to failed writes are noted in the chain before the writer stops, if the
        // disk takes the gap line now; otherwise the metric and the log are all that say so.
        if self.gap.is_some() {
            let _ = self.write_batch(Vec::new(), None);
        }
        let _ = self.sync();
    }

    /// Seal and write `batch` (plus an optional writer event first) with one write call.
    ///
    /// A failed write loses the batch, never the chain: whatever part of it reached the file is
    /// cut off again (a torn line is never glued to a later one), `seq` and `prev_hash` go back
    /// to the last line on disk, and the lost records are counted. The first batch written after
    /// that starts with a `gap` line carrying the count, linked to the last line on disk, so
    /// `palisade audit verify` reports a gap after a write failure rather than tampering.
    fn write_batch(
        &mut self,
        batch: Vec<Entry>,
        event: Option<(LineKind, String)>,
    ) -> Result<(), AuditError> {
        let now = self.clock.now();
        let ts = humantime::format_rfc3339_millis(now).to_string();
        let lines = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        let mut acks = Vec::new();
        let mut records = Vec::with_capacity(batch.len());
        for e in batch {
            records.push(e.record);
            if let Some(a) = e.ack {
                acks.push(a);
            }
        }
        let mark = (self.seq, self.prev_hash.clone());
        let mut drops_taken = 0;
        let result = self.rotate(&ts).and_then(|()| {
            let mut buf = String::with_capacity(512 * (records.len() + 2));
            if let Some(gap) = &self.gap {
                let note = format!(
                    "gap: {} record(s) could not be written after a write failure at {}: {}",
                    gap.records, gap.since, gap.error
                );
                let lost = Some(gap.records);
                drops_taken +=
                    self.seal_into(&ts, LineKind::Gap, None, Some(note), lost, &mut buf)?;
            }
            if let Some((kind, note)) = event {
                drops_taken += self.seal_into(&ts, kind, None, Some(note), None, &mut buf)?;
            }
            for r in records {
                drops_taken +=
                    self.seal_into(&ts, LineKind::Request, Some(*r), None, None, &mut buf)?;
            }
            self.append(buf.as_bytes())
        });
        let mut outcome = result.as_ref().map(|_| ()).map_err(ToString::to_string);
        match &result {
            Ok(()) => {
                if let Some(gap) = self.gap.take() {
                    tracing::warn!(lost = gap.records, since = %gap.since, "audit writing resumed; the chain records the gap");
                }
                self.stats.written.fetch_add(lines, Ordering::Relaxed);
                if self.dirty_since.is_none() {
                    self.dirty_since = Some(Instant::now());
                }
                if !acks.is_empty()
                    || self.fsync_every.is_zero()
                    || self
                        .dirty_since
                        .is_some_and(|t| t.elapsed() >= self.fsync_every)
                {
                    // A waiter is told about a failed fsync too: its line may not survive a crash.
                    if let Err(e) = self.sync() {
                        outcome = Err(e);
                    }
                }
            }
            Err(e) => {
                (self.seq, self.prev_hash) = mark;
                // The drop counts those lines carried go to the next line that is written.
                self.pending_drops.fetch_add(drops_taken, Ordering::Relaxed);
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.stats.lost.fetch_add(lines, Ordering::Relaxed);
                if self.gap.is_none() {
                    tracing::error!(error = %e, "audit writes are failing: records are lost and counted until a write succeeds");
                }
                let gap = self.gap.get_or_insert_with(|| Gap {
                    records: 0,
                    since: ts.clone(),
                    error: e.to_string(),
                });
                gap.records = gap.records.saturating_add(lines);
            }
        }
        for a in acks {
            let _ = a.send(outcome.clone());
        }
        result
    }

    /// Seal the next line of the chain and append it (with its newline) to `buf`; returns the
    /// queue drops it took into `dropped_before`.
    fn seal_into(
        &mut self,
        ts: &str,
        kind: LineKind,
        record: Option<AuditRecord>,
        note: Option<String>,
        lost_before: Option<u64>,
        buf: &mut String,
    ) -> Result<u64, AuditError> {
        let dropped_before = self.pending_drops.swap(0, Ordering::Relaxed);
        let body = LineBody {
            seq: self.seq + 1,
            ts: ts.to_owned(),
            kind,
            dropped_before,
            record,
            note,
            lost_before,
            prev_hash: self.prev_hash.clone(),
        };
        let (line, hash) = seal(&body).map_err(|e| AuditError::Write(e.to_string()))?;
        self.seq += 1;
        self.prev_hash = hash;
        buf.push_str(&line);
        buf.push('\n');
        Ok(dropped_before)
    }

    /// Append `bytes` at the end of the open file. On failure, cut the file back to where it
    /// ended before, so a partly written batch leaves no torn line; if even that fails, nothing
    /// more is appended to this file until the cut succeeds.
    fn append(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        let path = files::file_for(&self.dir, &self.date);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| AuditError::Write("no open audit file".to_owned()))?;
        if self.torn {
            file.set_len(self.file_len)
                .map_err(|e| AuditError::io(&path, e))?;
            self.torn = false;
        }
        match file.write_all(bytes) {
            Ok(()) => {
                self.file_len += u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = file.set_len(self.file_len) {
                    tracing::error!(error = %cut, path = %path.display(), "audit writer: cannot cut a partly written batch off; nothing more is appended until it can");
                    self.torn = true;
                }
                Err(AuditError::io(&path, e))
            }
        }
    }

    /// fsync what was written since the last one (nothing to do when nothing was).
    fn sync(&mut self) -> Result<(), String> {
        if self.dirty_since.take().is_none() {
            return Ok(());
        }
        let Some(f) = &self.file else {
            return Ok(());
        };
        match f.sync_data() {
            Ok(()) => {
                self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "audit writer: fsync failed");
                Err(format!("fsync failed: {e}"))
            }
        }
    }

    /// Open the file of `ts`'s UTC date if it is not the open one; apply retention on a change.
    fn rotate(&mut self, ts: &str) -> Result<(), AuditError> {
        let date = ts.get(..10).unwrap_or(ts);
        if self.file.is_some() && self.date == date {
            return Ok(());
        }
        let _ = self.sync();
        if self.torn {
            // The open file still ends in a partly written batch: cut it before leaving it, or
            // stay on it (the batch fails and is counted) until the cut succeeds.
            if let Some(old) = &self.file {
                old.set_len(self.file_len)
                    .map_err(|e| AuditError::io(&files::file_for(&self.dir, &self.date), e))?;
            }
            self.torn = false;
        }
        let path = files::file_for(&self.dir, date);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| AuditError::io(&path, e))?.len();
        // A new file's name must survive a machine crash as well as the lines fsynced into it.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| AuditError::io(&self.dir, e))?;
        self.file = Some(file);
        self.file_len = file_len;
        self.torn = false;
        self.date = date.to_owned();
        let cutoff_time =
            self.clock.now() - Duration::from_secs(86_400 * u64::from(self.retention_days));
        let cutoff = humantime::format_rfc3339(cutoff_time).to_string();
        // A file retention cannot delete stays until the next rotation; the batch is written.
        match files::apply_retention(&self.dir, cutoff.get(..10).unwrap_or("")) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                removed,
                retention_days = self.retention_days,
                "audit files past retention deleted"
            ),
            Err(e) => tracing::warn!(error = %e, "audit retention could not delete old files"),
        }
        Ok(())
    }
}
