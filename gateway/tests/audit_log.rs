//! The audit log from the outside: records written through the sink, files on disk, `verify`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway::audit::verify::{verify_dir, Broken};
use gateway::audit::{AuditRecord, AuditSink, Clock, DurablyQueued, Enqueued, OutcomeKind};
use policy_engine::pack::{AuditLoggerConfig, QueueFullPolicy};

/// 2026-11-22T12:00:00Z, advanced by tests; `hold` parks the writer inside `now()`.
#[derive(Debug, Default)]
struct TestClock {
    offset_s: AtomicU64,
    hold: AtomicBool,
    /// Set while the writer is parked inside `now()` by `hold`.
    parked: AtomicBool,
}

const NOON_2026_11_22: u64 = 1_795_348_800;

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        while self.hold.load(Ordering::Acquire) {
            self.parked.store(true, Ordering::Release);
            std::thread::yield_now();
        }
        self.parked.store(false, Ordering::Release);
        UNIX_EPOCH + Duration::from_secs(NOON_2026_11_22 + self.offset_s.load(Ordering::Relaxed))
    }
}

fn config(dir: &Path) -> AuditLoggerConfig {
    AuditLoggerConfig {
        dir: dir.display().to_string(),
        fsync_interval_ms: 0,
        ..AuditLoggerConfig::default()
    }
}

fn rec(i: usize) -> AuditRecord {
    AuditRecord {
        request_id: format!("req-{i}"),
        outcome: OutcomeKind::Allowed,
        status: 200,
        ..AuditRecord::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Write `n` records and stop the writer.
fn write_records(cfg: &AuditLoggerConfig, clock: Arc<TestClock>, n: usize) {
    let (sink, handle) = AuditSink::start(cfg, clock).unwrap();
    runtime().block_on(async {
        for i in 0..n {
            assert!(sink.record(rec(i)).await.unwrap());
        }
    });
    drop(sink);
    handle.join();
}

fn only_file(dir: &Path) -> std::path::PathBuf {
    let files = gateway::audit::files::list(dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn a_clean_log_verifies_with_its_count_and_last_hash() {
    let dir = tempfile::tempdir().unwrap();
    write_records(&config(dir.path()), Arc::new(TestClock::default()), 25);
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!((r.requests, r.lines, r.files), (25, 26, 1)); // 25 requests + the `started` line
    assert!(r.starts_at_genesis);
    let text = std::fs::read_to_string(only_file(dir.path())).unwrap();
    assert!(text
        .trim_end()
        .ends_with(&format!("\"hash\":\"{}\"}}", r.last_hash)));
    assert!(only_file(dir.path()).ends_with("audit-2026-11-22.jsonl"));
}

fn tamper(edit: impl FnOnce(&mut Vec<String>)) -> gateway::audit::verify::VerifyError {
    let dir = tempfile::tempdir().unwrap();
    write_records(&config(dir.path()), Arc::new(TestClock::default()), 10);
    let f = only_file(dir.path());
    let mut lines: Vec<String> = std::fs::read_to_string(&f)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    edit(&mut lines);
    std::fs::write(&f, lines.join("\n") + "\n").unwrap();
    verify_dir(dir.path()).unwrap_err()
}

#[test]
fn an_edited_record_is_named_with_file_and_line() {
    let e = tamper(|l| l[4] = l[4].replace("\"status\":200", "\"status\":201"));
    assert_eq!((e.broken.clone(), e.line), (Broken::Edited, 5));
    assert!(
        e.to_string()
            .contains("audit-2026-11-22.jsonl:5: the record was edited"),
        "{e}"
    );
}

#[test]
fn a_removed_record_is_named() {
    let e = tamper(|l| {
        l.remove(6);
    });
    assert_eq!(
        (e.broken.clone(), e.line),
        (Broken::Removed { missing: 1 }, 7)
    );
    assert!(e.message.contains("1 record(s) removed"), "{e}");
}

#[test]
fn reordered_records_are_named() {
    let e = tamper(|l| l.swap(3, 4));
    assert_eq!((e.broken.clone(), e.line), (Broken::Reordered, 4));
    assert!(e.message.contains("out of order"), "{e}");
}

#[test]
fn a_full_queue_under_drop_counts_every_drop_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditLoggerConfig {
        on_queue_full: QueueFullPolicy::Drop,
        queue_capacity: 2,
        ..config(dir.path())
    };
    let clock = Arc::new(TestClock::default());
    let (sink, handle) = AuditSink::start(&cfg, Arc::clone(&clock) as Arc<dyn Clock>).unwrap();
    let rt = runtime();
    clock.hold.store(true, Ordering::Release);
    rt.block_on(async {
        // The writer takes the first record and parks in the clock (wait until it has, so its
        // batch is closed); then exactly two more fill the queue and the rest are dropped.
        assert!(sink.record(rec(0)).await.unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !clock.parked.load(Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never took the first record"
            );
            tokio::task::yield_now().await;
        }
        let mut accepted = 1;
        let mut dropped = 0;
        let mut i = 1;
        while dropped < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue never filled"
            );
            if sink.record(rec(i)).await.unwrap() {
                accepted += 1;
            } else {
                dropped += 1;
            }
            i += 1;
            tokio::task::yield_now().await;
        }
        assert!(
            accepted <= 3,
            "capacity 2 plus the one in the writer's hands: {accepted}"
        );
        assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 5);
    });
    clock.hold.store(false, Ordering::Release);
    drop(sink);
    handle.join();
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!(r.dropped, 5, "every drop is written into the chain");
}

#[test]
fn block_waits_for_room_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditLoggerConfig {
        queue_capacity: 1,
        ..config(dir.path())
    };
    let (sink, handle) = AuditSink::start(&cfg, Arc::new(TestClock::default())).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = sink.clone();
                spawn(async move { s.record(rec(i)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
    });
    drop(sink);
    handle.join();
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!((r.requests, r.dropped), (200, 0));
}

#[test]
fn a_torn_tail_left_by_a_crash_is_cut_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    write_records(&cfg, Arc::new(TestClock::default()), 5);
    let f = only_file(dir.path());
    let mut bytes = std::fs::read(&f).unwrap();
    let torn = b"{\"seq\":7,\"ts\":\"2026-11-22T12:00:00.000Z\",\"kind\":\"req";
    bytes.extend_from_slice(torn);
    std::fs::write(&f, bytes).unwrap();
    write_records(&cfg, Arc::new(TestClock::default()), 3);
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!(r.requests, 8);
    let text = std::fs::read_to_string(&f).unwrap();
    let recovered = text
        .lines()
        .find(|l| l.contains("\"kind\":\"recovered\""))
        .expect("a recovered line");
    assert!(
        recovered.contains(&format!("discarded a torn line of {} bytes", torn.len())),
        "{recovered}"
    );
}

#[test]
fn a_corrupt_last_line_refuses_to_continue_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    write_records(&cfg, Arc::new(TestClock::default()), 3);
    let f = only_file(dir.path());
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("req-2", "req-9");
    std::fs::write(&f, text).unwrap();
    let err = AuditSink::start(&cfg, Arc::new(TestClock::default())).unwrap_err();
    assert!(err.to_string().contains("palisade audit verify"), "{err}");
}

#[test]
fn files_rotate_at_utc_midnight_and_retention_deletes_old_days() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditLoggerConfig {
        retention_days: 2,
        ..config(dir.path())
    };
    let clock = Arc::new(TestClock::default());
    let (sink, handle) = AuditSink::start(&cfg, Arc::clone(&clock) as Arc<dyn Clock>).unwrap();
    let rt = runtime();
    for day in 0..5u64 {
        clock.offset_s.store(day * 86_400, Ordering::Relaxed);
        rt.block_on(async {
            sink.record_durable(rec(usize::try_from(day).unwrap()))
                .await
                .unwrap();
        });
    }
    drop(sink);
    handle.join();
    let names: Vec<String> = gateway::audit::files::list(dir.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "audit-2026-11-24.jsonl",
            "audit-2026-11-25.jsonl",
            "audit-2026-11-26.jsonl"
        ]
    );
    let r = verify_dir(dir.path()).unwrap();
    assert!(!r.starts_at_genesis, "older days were removed by retention");
    assert_eq!(r.files, 3);
}

#[test]
fn record_durable_returns_only_after_the_line_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditLoggerConfig {
        fsync_interval_ms: 60_000,
        ..config(dir.path())
    };
    let (sink, handle) = AuditSink::start(&cfg, Arc::new(TestClock::default())).unwrap();
    runtime().block_on(async {
        sink.record_durable(rec(42)).await.unwrap();
    });
    assert!(sink.stats().fsyncs.load(Ordering::Relaxed) >= 1);
    let text = std::fs::read_to_string(only_file(dir.path())).unwrap();
    assert!(text.contains("\"request_id\":\"req-42\""));
    drop(sink);
    handle.join();
}

#[test]
fn records_without_redacted_text_leave_the_text_fields_out() {
    let dir = tempfile::tempdir().unwrap();
    write_records(&config(dir.path()), Arc::new(TestClock::default()), 1);
    let text = std::fs::read_to_string(only_file(dir.path())).unwrap();
    assert!(text.contains("\"request_id\":\"req-0\""), "{text}");
    assert!(!text.contains("redacted_text"), "{text}");
    assert!(!text.contains("redacted_response_text"), "{text}");
    assert!(!text.contains("messages"));
}

/// Poll `fut` once without waiting.
fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    fut.poll(&mut cx)
}

/// Start a sink whose writer has taken `rec(0)` and is parked inside the clock (so nothing
/// more is written until `clock.hold` is cleared).
fn parked_sink(
    cfg: &AuditLoggerConfig,
) -> (AuditSink, gateway::audit::WriterHandle, Arc<TestClock>) {
    let clock = Arc::new(TestClock::default());
    let (sink, handle) = AuditSink::start(cfg, Arc::clone(&clock) as Arc<dyn Clock>).unwrap();
    clock.hold.store(true, Ordering::Release);
    assert!(matches!(sink.record_now(rec(0)).unwrap(), Enqueued::Queued));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !clock.parked.load(Ordering::Acquire) {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never took the first record"
        );
        std::thread::yield_now();
    }
    (sink, handle, clock)
}

#[test]
fn record_now_durable_queues_at_once_and_acknowledges_only_after_the_write() {
    let dir = tempfile::tempdir().unwrap();
    // A long interval: only the waiting record makes the writer fsync.
    let cfg = AuditLoggerConfig {
        fsync_interval_ms: 60_000,
        ..config(dir.path())
    };
    let (sink, handle, clock) = parked_sink(&cfg);
    let DurablyQueued::Queued(ack) = sink.record_now_durable(rec(1)).unwrap() else {
        panic!("the queue has room");
    };
    // Dropping an ack loses nothing: the record is already queued.
    let DurablyQueued::Queued(dropped) = sink.record_now_durable(rec(2)).unwrap() else {
        panic!("the queue has room");
    };
    drop(dropped);
    let mut ack = std::pin::pin!(ack.durable());
    assert!(
        poll_once(ack.as_mut()).is_pending(),
        "acknowledged while the writer has not written it"
    );
    let fsyncs_before = sink.stats().fsyncs.load(Ordering::Relaxed);
    clock.hold.store(false, Ordering::Release);
    runtime().block_on(ack).unwrap();
    assert!(sink.stats().fsyncs.load(Ordering::Relaxed) > fsyncs_before);
    let text = std::fs::read_to_string(only_file(dir.path())).unwrap();
    assert!(text.contains("\"request_id\":\"req-1\""), "{text}");
    drop(sink);
    handle.join();
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!(
        r.requests, 3,
        "the record whose ack was dropped is written too"
    );
}

#[test]
fn record_now_durable_on_a_full_queue_hands_the_record_back_to_wait_for_room() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditLoggerConfig {
        queue_capacity: 1,
        // `drop` applies to `record_now`; a durable record is never dropped.
        on_queue_full: QueueFullPolicy::Drop,
        ..config(dir.path())
    };
    let (sink, handle, clock) = parked_sink(&cfg);
    assert!(matches!(sink.record_now(rec(1)).unwrap(), Enqueued::Queued));
    let DurablyQueued::Full { pending, ack } = sink.record_now_durable(rec(2)).unwrap() else {
        panic!("capacity 1 is taken by req-1");
    };
    let rt = runtime();
    let queued = {
        let _in_rt = rt.enter();
        spawn(pending.queue())
    };
    clock.hold.store(false, Ordering::Release);
    rt.block_on(async {
        ack.durable().await.unwrap();
        queued.await.unwrap().unwrap();
    });
    drop(sink);
    handle.join();
    let r = verify_dir(dir.path()).unwrap();
    assert_eq!((r.requests, r.dropped), (3, 0));
}

/// A test's own task (bare `tokio::spawn` is banned in the workspace, see `clippy.toml`).
#[expect(clippy::disallowed_methods, reason = "tests own their tasks")]
fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}
