//! A decision event's cost on each side of the queue: writing its row (the serving thread) and
//! encoding a batch of 1,000 rows for the control plane (the shipper: the batch, then gzip; or
//! the object form for a control plane without rows). The events are the load benchmark's:
//! full chain, answered, no findings. Numbers in `benches/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::control::events::{encode, Chunk, DecisionEvent};
use palisade_wire::events::{Findings, Outcome};

const HASH: &str = "9f2b9f2b9f2b9f2b9f2b9f2b9f2b9f2b9f2b9f2b9f2b9f2b9f2b9f2b9f2b9f2b";

fn event(id: &str, i: u64) -> DecisionEvent<'_> {
    DecisionEvent {
        request_id: id,
        at_ms: 1_796_000_000_000 + i as i64 / 20,
        environment: "prod",
        pack: "support",
        version: "1.4.2",
        hash: HASH,
        route: "/v1/chat/completions",
        model_requested: Some("gpt-4o-mini"),
        model_used: Some("gpt-4o-mini"),
        caller: Some("support-bot"),
        team: Some("support"),
        outcome: Outcome::Allowed,
        escalated: false,
        status: 200,
        latency_us: 1_200 + i % 300,
        upstream_us: Some(1_000 + i % 300),
        input_tokens: Some(42),
        output_tokens: Some(17 + i % 40),
        cost_usd: Some(0.000_016_5),
        pii: Findings::default(),
        redacted_text: None,
        redacted_response_text: None,
        attempts: Vec::new(),
    }
}

/// 1,000 events as a serving thread queues them: chunks of 64 rows.
fn chunks(ids: &[String]) -> Vec<Chunk> {
    let mut out = Vec::new();
    for (n, part) in ids.chunks(64).enumerate() {
        let mut c = Chunk::new(&event(&part[0], 0));
        for (i, id) in part.iter().enumerate() {
            c.push(&event(id, (n * 64 + i) as u64));
        }
        out.push(c);
    }
    out
}

fn events(c: &mut Criterion) {
    let ids: Vec<String> = (0..1000u64)
        .map(|i| format!("5f0c2a9e1b7d4c3a{i:016x}"))
        .collect();
    let batch = chunks(&ids);
    let mut g = c.benchmark_group("events");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("rows of 1000", |b| b.iter(|| chunks(&ids)));
    g.bench_function("encode 1000, rows", |b| {
        b.iter(|| encode("gw-0123456789abcdef", &batch, true).unwrap())
    });
    g.bench_function("encode 1000, objects", |b| {
        b.iter(|| encode("gw-0123456789abcdef", &batch, false).unwrap())
    });
    g.finish();
}

criterion_group!(benches, events);
criterion_main!(benches);
