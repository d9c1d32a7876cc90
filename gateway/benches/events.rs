//! Encoding a batch of decision events (JSON, then gzip): the shipper's work per event. The
//! events are the load benchmark's: full chain, answered, no findings. Numbers in
//! `benches/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::control::events::{encode, DecisionEvent, Text};
use palisade_wire::events::{Findings, Outcome};

fn events(n: u64) -> Vec<DecisionEvent> {
    let shared = |s: &str| Text::Shared(Arc::from(s));
    let (env, pack, version, hash) = (
        shared("prod"),
        shared("support"),
        shared("1.4.2"),
        shared(&"9f2b".repeat(16)),
    );
    (0..n)
        .map(|i| DecisionEvent {
            request_id: format!("5f0c2a9e1b7d4c3a{i:016x}"),
            at_ms: 1_796_000_000_000 + i as i64 / 20,
            environment: env.clone(),
            pack: pack.clone(),
            version: version.clone(),
            hash: hash.clone(),
            route: Text::Fixed("/v1/chat/completions".into()),
            model_requested: Some("gpt-4o-mini".to_owned()),
            model_used: Some("gpt-4o-mini".to_owned()),
            caller: Some("support-bot".to_owned()),
            team: Some("support".to_owned()),
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
        })
        .collect()
}

fn encode_batch(c: &mut Criterion) {
    let batch = events(1000);
    let mut g = c.benchmark_group("events");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("encode 1000, objects", |b| {
        b.iter(|| encode("gw-0123456789abcdef", &batch, false).unwrap())
    });
    g.bench_function("encode 1000, rows", |b| {
        b.iter(|| encode("gw-0123456789abcdef", &batch, true).unwrap())
    });
    g.finish();
}

criterion_group!(benches, encode_batch);
criterion_main!(benches);
