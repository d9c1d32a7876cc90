//! Invariant: every detector is linear in its input. A text built by repeating an adversarial
//! unit (a key prefix, `@`, separators, digits, dots) costs, per byte, within a fixed factor of
//! the same-sized dense text, and four times the text costs at most about four times the time.
//!
//! Regression: `sk-` repeated made the built-in pass search to the end of the text for a digit
//! once per key literal — quadratic (1.5 MB took 42 s). Timings are relative (ratios measured in
//! the same run, best of three), so a slow or busy machine does not fail them: the worst linear
//! unit costs about 18× dense text per byte (in a debug build), the quadratic one cost 290×.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod corpus;

use std::time::{Duration, Instant};

use policy_engine::pack::{CustomEntity, PiiDetectorConfig};
use policy_engine::pii::{PiiDetector, RedactionSession};

/// Units repeated to make adversarial text: each opens candidates that must be refused.
const UNITS: &[&str] = &[
    "sk-",
    "sk-ant-",
    "AKIA",
    "ghp_",
    "xoxb-",
    "AIza",
    "github_pat_",
    "@",
    "a@",
    "a.",
    "@.",
    "a@b.",
    "1",
    "1 ",
    "1-",
    "1.",
    "+1",
    "(1",
    ":",
    "1:",
    "a:",
    "::",
    "DE89 ",
    "DE",
    "1.2.",
    "sk-1",
    "a-",
    "a[at]",
    "a[at]a.",
    "[dot]",
    "a [dot] ",
    "a at a dot ",
    "a at b.",
    " dot ",
];

fn best_of(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn cost(det: &PiiDetector, text: &str) -> Duration {
    best_of(3, || {
        let mut s = RedactionSession::new();
        std::hint::black_box(det.redact(text, &mut s).len());
        let mut st = det.stream();
        let mut out = String::new();
        let mut at = 0;
        while at < text.len() {
            let mut end = (at + 4096).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            st.push(&text[at..end], &mut s, &mut out);
            at = end;
        }
        st.finish(&mut s, &mut out);
        std::hint::black_box(out.len());
    })
}

fn repeated(unit: &str, bytes: usize) -> String {
    unit.repeat(bytes / unit.len() + 1)
}

fn detectors() -> Vec<(&'static str, PiiDetector)> {
    let custom = PiiDetectorConfig {
        custom: vec![
            CustomEntity {
                name: "employee_id".into(),
                regex: Some(r"EMP-\d{6}".into()),
                terms: None,
                validator: None,
                context: None,
            },
            CustomEntity {
                name: "codename".into(),
                regex: None,
                terms: Some(vec!["Project Falcon".into(), "sk".into()]),
                validator: None,
                context: None,
            },
        ],
        ..Default::default()
    };
    vec![
        (
            "built-ins",
            PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap(),
        ),
        ("custom", PiiDetector::compile(&custom, None).unwrap()),
    ]
}

#[test]
fn every_detector_is_linear_in_adversarial_input() {
    const SMALL: usize = 8 * 1024;
    for (name, det) in detectors() {
        // Dense text (every entity, close together) is the baseline per byte.
        let baseline = cost(&det, &corpus::dense(7, 4 * SMALL));
        let mut failures = Vec::new();
        for unit in UNITS {
            let small = cost(&det, &repeated(unit, SMALL));
            let large = cost(&det, &repeated(unit, 4 * SMALL));
            // Linear: 4× the text, about 4× the time (a quadratic pass gives 16× once its
            // quadratic part dominates, and hundreds of times dense text's cost per byte).
            // Small timings are noisy on a busy machine, so growth only counts once the large
            // text takes a measurable time; the cost per byte is the steadier signal.
            let growth = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
            let per_byte = large.as_secs_f64() / baseline.as_secs_f64().max(1e-6);
            if (growth > 12.0 && large > Duration::from_millis(20)) || per_byte > 40.0 {
                failures.push(format!(
                    "{unit:?}: {small:?} -> {large:?} (x{growth:.1}), {per_byte:.1}x dense text"
                ));
            }
        }
        assert!(failures.is_empty(), "{name}: not linear: {failures:#?}");
    }
}
