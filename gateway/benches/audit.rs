//! Sealing one audit line (serialise the record, SHA-256 it, splice the hash in): the writer
//! thread's work per request. The record is the load benchmark's full-chain record. Numbers in
//! `benches/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::audit::chain::{seal, LineBody, LineKind, GENESIS};
use gateway::audit::{
    AuditRecord, BudgetNote, CallerRef, Latency, OutcomeKind, PackRef, PolicyDecision, TokenCounts,
};

fn record() -> AuditRecord {
    let decision = |policy: &'static str, decision: &'static str| PolicyDecision {
        policy: policy.into(),
        decision: decision.into(),
        entities: BTreeMap::new(),
    };
    let mut pii = decision("pii-detector", "redact");
    pii.entities.insert("email".to_owned(), 1);
    AuditRecord {
        request_id: "5f0c2a9e1b7d4c3a00000000000004d2".to_owned(),
        environment: "prod".into(),
        pack: PackRef {
            name: "support".into(),
            version: "1.4.2".into(),
            hash: "9f2b".repeat(16).into(),
        },
        caller: CallerRef {
            key_id: Some("support-bot".to_owned()),
            team: Some("support".to_owned()),
        },
        route: "/v1/chat/completions".into(),
        model_requested: Some("gpt-4o-mini".to_owned()),
        model_used: Some("gpt-4o-mini".to_owned()),
        outcome: OutcomeKind::Redacted,
        status: 200,
        upstream_status: Some(200),
        latency: Latency {
            gateway_us: 61,
            upstream_us: Some(412),
        },
        usage: Some(TokenCounts {
            input_tokens: 212,
            output_tokens: 48,
        }),
        cost_usd: Some(0.000_060_6),
        budget: Some(BudgetNote {
            decision: "reserved".into(),
            scope: Some("environment/monthly".to_owned()),
            remaining_usd: Some(999_999.94),
        }),
        policies: vec![
            decision("audit-logger", "log"),
            pii,
            decision("budget-enforcer", "pass"),
        ],
        ..AuditRecord::default()
    }
}

fn bench(c: &mut Criterion) {
    let body = LineBody {
        seq: 1_234_567,
        ts: "2026-11-22T09:00:00.123Z".to_owned(),
        kind: LineKind::Request,
        dropped_before: 0,
        record: Some(record()),
        note: None,
        lost_before: None,
        prev_hash: GENESIS.to_owned(),
    };
    let (line, _) = seal(&body).unwrap();
    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Bytes(line.len() as u64));
    g.bench_function("seal_full_chain_record", |b| {
        b.iter(|| seal(&body).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
