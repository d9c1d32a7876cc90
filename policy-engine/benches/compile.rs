//! Parse + validate + compile of the sample pack. This is the reload path, not the request
//! path: it runs once per new pack version, off the request threads. The goal is "well under a
//! millisecond" so that a reload is never a noticeable pause.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup fails loudly"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use policy_engine::{load, CompileOptions};

fn sample() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/support.yaml"
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let text = sample();
    let options = CompileOptions::default();
    c.bench_function("load (parse + validate + 3 environments + hash)", |b| {
        b.iter(|| load(black_box(&text)).unwrap());
    });
    let loaded = load(&text).unwrap();
    c.bench_function("compile prod", |b| {
        b.iter(|| loaded.compile(black_box(Some("prod")), &options).is_ok())
    });
    c.bench_function("load + compile prod (a whole reload)", |b| {
        b.iter(|| {
            load(black_box(&text))
                .unwrap()
                .compile(Some("prod"), &options)
                .is_ok()
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
