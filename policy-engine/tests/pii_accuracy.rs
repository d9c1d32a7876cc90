//! Accuracy of the built-in PII entities on the seeded, labelled corpus.
//!
//! Invariant: on the held-out split (a seed never used while writing the detector) every
//! built-in entity reaches precision ≥ 0.99 and recall ≥ 0.99, counting a finding as correct
//! only when entity and span match a label exactly. The table is printed (`--nocapture`). A
//! hand-written set of edges (`corpus/edges.jsonl`) is scored the same way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "tests fail loudly"
)]

mod corpus;

use std::collections::BTreeMap;

use corpus::{bare_phone_samples, generate, Label, Sample, HELD_OUT_SEED, TUNING_SEED};
use policy_engine::pack::{PiiDetectorConfig, BUILTIN_ENTITIES};
use policy_engine::pii::PiiDetector;

#[derive(Default, Debug, Clone, Copy)]
struct Score {
    tp: u32,
    fp: u32,
    fn_: u32,
}

impl Score {
    fn precision(self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fp).max(1))
    }
    fn recall(self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fn_).max(1))
    }
}

type Span = (String, usize, usize);

fn score(samples: &[Sample], show_mistakes: usize) -> BTreeMap<String, Score> {
    let det = PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap();
    let mut table: BTreeMap<String, Score> = BUILTIN_ENTITIES
        .iter()
        .map(|e| ((*e).to_owned(), Score::default()))
        .collect();
    let mut shown = 0;
    for s in samples {
        let found: Vec<Span> = det
            .find(&s.text)
            .iter()
            .map(|f| (det.entity_name(f.entity).to_owned(), f.start, f.end))
            .collect();
        let labels: Vec<Span> = s
            .labels
            .iter()
            .map(|l| (l.entity.to_owned(), l.start, l.end))
            .collect();
        for f in &found {
            let e = table.entry(f.0.clone()).or_default();
            if labels.contains(f) {
                e.tp += 1;
            } else {
                e.fp += 1;
                if shown < show_mistakes {
                    shown += 1;
                    println!("FP {} {:?} in {:?}", f.0, &s.text[f.1..f.2], s.text);
                }
            }
        }
        for l in &labels {
            if !found.contains(l) {
                table.entry(l.0.clone()).or_default().fn_ += 1;
                if shown < show_mistakes {
                    shown += 1;
                    println!("FN {} {:?} in {:?}", l.0, &s.text[l.1..l.2], s.text);
                }
            }
        }
    }
    table
}

fn print_table(name: &str, table: &BTreeMap<String, Score>) {
    println!("{name}\n| entity | TP | FP | FN | precision | recall |\n|---|---|---|---|---|---|");
    for (e, s) in table {
        let (p, r) = (s.precision(), s.recall());
        println!(
            "| {e} | {} | {} | {} | {p:.4} | {r:.4} |",
            s.tp, s.fp, s.fn_
        );
    }
}

#[test]
fn held_out_split_meets_precision_and_recall_targets() {
    let table = score(&generate(HELD_OUT_SEED, 5000), 0);
    print_table("held-out split (HELD_OUT_SEED, 5000 samples)", &table);
    for (entity, s) in &table {
        assert!(
            s.tp > 50,
            "{entity}: too few labelled samples to measure ({s:?})"
        );
        assert!(
            s.precision() >= 0.99,
            "{entity}: precision {:.4} ({s:?})",
            s.precision()
        );
        assert!(
            s.recall() >= 0.99,
            "{entity}: recall {:.4} ({s:?})",
            s.recall()
        );
    }
}

/// Bare ten-digit numbers, every one a valid NANP number: phones after a phone word, and
/// order, ticket, account numbers, ids and timestamps that must stay unflagged. Bare-number
/// detection must also add no false phone to the held-out split, which has none.
#[test]
fn bare_ten_digit_numbers_are_phones_only_after_a_phone_word() {
    let table = score(&bare_phone_samples(HELD_OUT_SEED, 3000), 0);
    print_table(
        "bare ten-digit numbers (HELD_OUT_SEED, 3000 samples)",
        &table,
    );
    let phone = table.get("phone").copied().unwrap_or_default();
    assert!(phone.tp > 1000, "{phone:?}");
    assert!(phone.precision() >= 0.99, "precision {phone:?}");
    assert!(phone.recall() >= 0.99, "recall {phone:?}");
    for (entity, s) in &table {
        assert_eq!(s.fp, 0, "{entity}: false positives on bare numbers ({s:?})");
    }
    let held_out = score(&generate(HELD_OUT_SEED, 5000), 0);
    assert_eq!(held_out.get("phone").map(|s| s.fp), Some(0));
}

/// Hand-written edges (`corpus/edges.jsonl`, one `{"text", "labels": [{"entity", "value"}]}`
/// per line, a value's span being its first occurrence after the previous label): values in
/// brackets, Markdown and tables; IPv4 with a prefix length or a port; obfuscated e-mail
/// addresses in every bracket style, case and spacing; and negatives that look like them
/// (`look at the dot product`, `meet at example dot`, `(at) least`, ports, ratios, versions).
/// Two lines are stated limits, kept so the scores say so: a written-out dot inside the local
/// part (found from the word after it), and a site named with a bare `at … dot com` after a
/// word not on the stop list (found).
#[test]
fn edge_cases_meet_precision_and_recall_targets() {
    let samples: Vec<Sample> = include_str!("corpus/edges.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(edge_sample)
        .collect();
    let table = score(&samples, 20);
    print_table(
        &format!("edges (corpus/edges.jsonl, {} lines)", samples.len()),
        &table,
    );
    // The two stated limits cost e-mail 2 false positives (the site; the local part's tail
    // `doe [at] …`, a wrong span) and 1 miss (that address whole) of 24 addresses: P = 23/25 =
    // 0.92, R = 23/24 = 0.958. The thresholds sit between that and one mistake more (23/26 =
    // 0.885, 22/24 = 0.917), so any new false positive or miss fails.
    let email = table.get("email").copied().unwrap_or_default();
    assert!(email.tp >= 23, "{email:?}");
    assert!(email.precision() >= 0.9, "email precision {email:?}");
    assert!(email.recall() >= 0.95, "email recall {email:?}");
    for (entity, s) in table.iter().filter(|(e, _)| *e != "email") {
        assert_eq!((s.fp, s.fn_), (0, 0), "{entity}: {s:?}");
    }
    let ip = table.get("ip_address").copied().unwrap_or_default();
    assert!(ip.tp >= 6, "{ip:?}");
}

fn edge_sample(line: &str) -> Sample {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let text = v["text"].as_str().unwrap().to_owned();
    let mut from = 0;
    let labels = v["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let name = l["entity"].as_str().unwrap();
            let value = l["value"].as_str().unwrap();
            let entity = BUILTIN_ENTITIES.iter().find(|e| **e == name).unwrap();
            let start = from + text[from..].find(value).unwrap();
            from = start + value.len();
            Label {
                entity,
                start,
                end: from,
            }
        })
        .collect();
    Sample { text, labels }
}

/// The split used while writing the detector; prints mistakes for inspection.
#[test]
#[ignore = "diagnostic: run with --ignored --nocapture while tuning"]
fn tuning_split_mistakes() {
    let table = score(&generate(TUNING_SEED, 5000), 40);
    print_table("tuning split", &table);
    let table = score(&bare_phone_samples(TUNING_SEED, 3000), 40);
    print_table("bare ten-digit numbers, tuning seed", &table);
}

/// Writes the held-out split as JSONL (`{"text", "labels": [{"entity","start","end"}]}`) to the
/// path in `PII_CORPUS_OUT`, for the Presidio comparison in `benches/pii-presidio/`.
#[test]
#[ignore = "tool: PII_CORPUS_OUT=/tmp/corpus.jsonl cargo test -p policy-engine --test pii_accuracy -- --ignored export"]
fn export_held_out_corpus_as_jsonl() {
    let Ok(path) = std::env::var("PII_CORPUS_OUT") else {
        return;
    };
    let mut out = String::new();
    for s in generate(HELD_OUT_SEED, 5000) {
        let labels: Vec<serde_json::Value> = s
            .labels
            .iter()
            .map(|l| serde_json::json!({"entity": l.entity, "start": l.start, "end": l.end}))
            .collect();
        out.push_str(&serde_json::json!({"text": s.text, "labels": labels}).to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}
