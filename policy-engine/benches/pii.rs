//! PII engine throughput: the combined detector against a naive one-regex-per-entity scanner,
//! on the same inputs in the same run.
//!
//! Inputs come from the seeded corpus: clean prose (1 KB and 64 KB, no personal data) and
//! PII-dense text (64 KB, most sentences carry an entity). The naive baseline is what many
//! gateways ship: one `regex::Regex` per entity, each a full pass over the text, plus a Luhn
//! check on card matches. Run:
//! `cargo bench -p policy-engine --bench pii -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/corpus/mod.rs"]
mod corpus;

use std::hint::black_box;

use corpus::{clean_prose, dense};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use policy_engine::pack::PiiDetectorConfig;
use policy_engine::pii::{PiiDetector, RedactionSession};
use regex::Regex;

struct Naive(Vec<Regex>);

impl Naive {
    fn new() -> Self {
        let patterns = [
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}[ .-]\d{3,4}[ .-]\d{3,4}",
            r"\b(?:\d[ -]?){13,19}\b",
            r"\b\d{3}-\d{2}-\d{4}\b",
            r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
            r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
            r"\b(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}\b",
            r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}|AKIA[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[baprs]-[A-Za-z0-9-]{10,}|[sr]k_live_[A-Za-z0-9]{16,}|AIza[A-Za-z0-9_-]{35})\b",
        ];
        Self(patterns.iter().filter_map(|p| Regex::new(p).ok()).collect())
    }

    fn count(&self, text: &str) -> usize {
        let mut n = 0;
        for (i, re) in self.0.iter().enumerate() {
            for m in re.find_iter(text) {
                if i != 2 || luhn(m.as_str()) {
                    n += 1;
                }
            }
        }
        n
    }
}

fn luhn(s: &str) -> bool {
    let mut sum = 0;
    for (i, d) in s
        .bytes()
        .rev()
        .filter(u8::is_ascii_digit)
        .map(|d| u32::from(d - b'0'))
        .enumerate()
    {
        sum += if i % 2 == 1 {
            if d * 2 > 9 {
                d * 2 - 9
            } else {
                d * 2
            }
        } else {
            d
        };
    }
    sum % 10 == 0
}

fn bench(c: &mut Criterion) {
    let det = PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap_or_else(|e| {
        eprintln!("{e:?}");
        std::process::exit(1)
    });
    let naive = Naive::new();
    let inputs = [
        ("clean_1k", clean_prose(1, 1024)),
        ("clean_64k", clean_prose(2, 64 * 1024)),
        ("dense_64k", dense(3, 64 * 1024)),
    ];
    let mut g = c.benchmark_group("pii");
    for (name, text) in &inputs {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("find", name), text, |b, t| {
            b.iter(|| det.find(black_box(t)))
        });
        g.bench_with_input(BenchmarkId::new("redact", name), text, |b, t| {
            b.iter(|| {
                let mut s = RedactionSession::new();
                det.redact(black_box(t), &mut s).len()
            })
        });
        g.bench_with_input(
            BenchmarkId::new("naive_regex_per_entity", name),
            text,
            |b, t| b.iter(|| naive.count(black_box(t))),
        );
    }
    // Adversarial repetitions: each unit opens a candidate that must be refused; the time per
    // byte must stay within a constant of dense text (a quadratic pass made `sk-` take 42 s/MB).
    for unit in ["sk-", "AKIA", "ghp_", "a@", "1-", "1:"] {
        let text = unit.repeat(64 * 1024 / unit.len());
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("redact_adversarial_64k", unit),
            &text,
            |b, t| {
                b.iter(|| {
                    let mut s = RedactionSession::new();
                    det.redact(black_box(t), &mut s).len()
                })
            },
        );
    }
    let stream_text = &inputs[2].1;
    g.throughput(Throughput::Bytes(stream_text.len() as u64));
    g.bench_function("stream_dense_64k_in_64b_chunks", |b| {
        let chunks: Vec<&str> = chunk_on_boundaries(stream_text, 64);
        b.iter(|| {
            let mut s = RedactionSession::new();
            let mut out = String::with_capacity(stream_text.len());
            let mut st = det.stream();
            for ch in &chunks {
                st.push(ch, &mut s, &mut out);
            }
            st.finish(&mut s, &mut out);
            out.len()
        })
    });
    g.finish();
}

fn chunk_on_boundaries(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[at..end]);
        at = end;
    }
    out
}

criterion_group!(benches, bench);
criterion_main!(benches);
