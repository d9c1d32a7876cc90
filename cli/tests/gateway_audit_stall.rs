//! `on_queue_full: block` against a stalled audit disk, from the outside: the audit file is a
//! named pipe nobody reads, so the writer's `write` blocks once the pipe's buffer is full, its
//! queue fills, and then requests must wait for room — their responses held, the gateway's
//! memory flat, everything else (health, metrics) still served — and go through once the disk
//! moves again, with every record written.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::Duration;

use gateway_support::client::{self, chat, get, post};
use gateway_support::mock::MockProvider;
use gateway_support::{pack, Dir, GatewayProcess};

const O_NONBLOCK: i32 = 0o4000;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn utc_day(offset_days: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "+%F", "-d", &format!("{offset_days} days")])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_under_block_holds_requests_not_memory() {
    let mock = MockProvider::start().await;
    let dir = Dir::new();
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    // Today's and tomorrow's file are pipes, so a run across midnight stalls too.
    for day in [utc_day(0), utc_day(1)] {
        let fifo = audit.join(format!("audit-{day}.jsonl"));
        assert!(Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
    }
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(audit.join(format!("audit-{}.jsonl", utc_day(0))))
        .unwrap();
    let policy = format!(
        "policy:\n  audit-logger:\n    dir: {}\n    queue_capacity: 4\n    on_queue_full: block\n    fsync_interval_ms: 60000\n",
        audit.display()
    );
    let p = dir.write(
        "pack.yaml",
        &pack(&mock.base_url(), "1.0.0", "audit-logger", &policy),
    );
    let mut gw = GatewayProcess::start(&p, dir.path(), &[]);
    let pid = gw.child.id();
    let c = client::client();
    let url = gw.api("/v1/chat/completions");
    let body = chat("gpt-4o-mini", "How do I reset my password?", false);

    // Fill the pipe and the queue, one request at a time, until one has to wait.
    let mut answered = 0;
    let waited = loop {
        let r = tokio::time::timeout(Duration::from_secs(2), post(&c, &url, &body, None)).await;
        match r {
            Ok(reply) => {
                assert_eq!(reply.status, 200);
                answered += 1;
                assert!(
                    answered < 2000,
                    "the stalled audit disk never held a request"
                );
            }
            Err(_) => break answered,
        }
    };
    assert!(
        waited > 4,
        "the queue took records before it was full: {waited}"
    );

    // Many more requests wait too; the gateway's memory does not grow with them, and it still
    // answers what does not write an audit record.
    let before = rss_kb(pid);
    let waiting: Vec<_> = (0..256)
        .map(|_| {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            gateway_support::client::spawn(async move { post(&c, &url, &body, None).await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        waiting.iter().all(|t| !t.is_finished()),
        "a request was answered while its record had no room"
    );
    let grown = rss_kb(pid).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} kB with 256 requests waiting"
    );
    assert_eq!(get(&c, &gw.api("/healthz")).await.status, 200);

    // The disk moves again: every waiting request is answered and every record written.
    let drain = std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::park_timeout(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        text
    });
    for t in waiting {
        let status = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a waiting request was answered once the disk moved")
            .unwrap();
        assert_eq!(status, 200);
    }
    // A clean stop flushes what is queued (a kill would lose the queue: this is not the
    // durable mode), and the writer's exit closes the pipe.
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(30)).await.success());
    let text = String::from_utf8(drain.join().unwrap()).unwrap();
    let requests = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"request\""))
        .count();
    // The first waiter timed out on the client side (it went away): its record is written or
    // counted as dropped, never lost silently; every other request has its line.
    assert!(
        requests >= answered + 256,
        "{requests} request lines for {answered} + 256 + 1"
    );
}
