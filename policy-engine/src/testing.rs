//! Running a pack's `tests:` against its compiled form.
//!
//! Each test's request text goes through the chain the way a gateway would run it on the request
//! side, and the resulting decision is compared with `expect` (and, when given, with the exact
//! entity types and the redacted text). Budget and audit do not take part: a test is about what
//! the pack decides on content, and budgets depend on spend that a test cannot have. A pack whose
//! chain has no `pii-detector` allows everything, which a test expecting `redact` will catch.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::compile::CompiledPack;
use crate::pack::{PackTest, PiiAction, TestVerdict};
use crate::pii::RedactionSession;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestOutcome {
    pub name: String,
    pub passed: bool,
    pub expected: TestVerdict,
    pub actual: TestVerdict,
    pub expected_entities: Option<Vec<String>>,
    pub actual_entities: Vec<String>,
    /// Human-readable differences; empty when the test passed.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TestReport {
    pub outcomes: Vec<TestOutcome>,
    pub passed: usize,
    pub failed: usize,
    /// Tests written for other environments only.
    pub not_applicable: usize,
}

impl TestReport {
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

/// Run every test of `pack`.
pub fn run_tests(pack: &CompiledPack) -> TestReport {
    let mut report = TestReport::default();
    for t in &pack.tests {
        if !t.applies_to(pack.environment.as_deref()) {
            report.not_applicable += 1;
            continue;
        }
        let outcome = run_one(pack, t);
        if outcome.passed {
            report.passed += 1;
        } else {
            report.failed += 1;
        }
        report.outcomes.push(outcome);
    }
    report
}

fn run_one(pack: &CompiledPack, t: &PackTest) -> TestOutcome {
    let mut entities = BTreeSet::new();
    let mut redacted = Vec::new();
    let mut session = RedactionSession::default();
    if let Some(pii) = &pack.pii {
        for text in t.texts() {
            for f in pii.find(text) {
                entities.insert(pii.entity_name(f.entity).to_owned());
            }
            redacted.push(pii.redact(text, &mut session).into_owned());
        }
    }
    let actual = match (&pack.pii, entities.is_empty()) {
        (Some(pii), false) => match pii.action() {
            PiiAction::Log => TestVerdict::Log,
            PiiAction::Escalate => TestVerdict::Escalate,
            PiiAction::Redact => TestVerdict::Redact,
            PiiAction::Block => TestVerdict::Block,
        },
        _ => TestVerdict::Allow,
    };
    let actual_entities: Vec<String> = entities.into_iter().collect();
    let mut problems = Vec::new();
    if actual != t.expect {
        problems.push(format!(
            "expected {}, got {}",
            t.expect.as_str(),
            actual.as_str()
        ));
    }
    if let Some(want) = &t.entities {
        let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let got_set: BTreeSet<&str> = actual_entities.iter().map(String::as_str).collect();
        if want_set != got_set {
            let missing: Vec<&str> = want_set.difference(&got_set).copied().collect();
            let extra: Vec<&str> = got_set.difference(&want_set).copied().collect();
            problems.push(format!(
                "entities differ: missing [{}], unexpected [{}]",
                missing.join(", "),
                extra.join(", ")
            ));
        }
    }
    if let Some(want) = &t.redacted {
        let got = redacted.join("\n");
        if &got != want {
            problems.push(format!(
                "redacted text differs:\n  - expected: {want}\n  + actual:   {got}"
            ));
        }
    }
    TestOutcome {
        name: t.name.clone(),
        passed: problems.is_empty(),
        expected: t.expect,
        actual,
        expected_entities: t.entities.clone(),
        actual_entities,
        problems,
    }
}
