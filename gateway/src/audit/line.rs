//! An audit line's JSON, written by hand: byte for byte what `serde_json` writes for
//! [`LineBody`] (compact, fields in declaration order, `None` as `null` unless the field is
//! skipped), without its per-key and per-value machinery.
//!
//! Why: serialising is the audit writer's main cost, and the writer thread's CPU is part of every
//! request's cost. Through `serde_json` a full-chain line took 2.4 µs to seal, most of it escaping
//! the ~45 keys one call at a time (2.5 % of the gateway's CPU in a profile of the load
//! benchmark). Here keys are literals, strings that need no escape are copied as they are, and
//! anything unusual is handed to `serde_json` itself: strings with escapes and every float (so
//! float formatting and escapes are serde_json's by construction).
//!
//! Keeping it in step: every struct is destructured without `..`, so a new field does not compile
//! until it is written here; `tests::same_bytes_as_serde_json` compares with `serde_json` on
//! generated records, strings with escapes and control characters, and every float class.

use std::collections::BTreeMap;

use super::chain::{LineBody, LineKind};
use super::record::{
    AuditRecord, BudgetNote, CallerRef, Latency, PackRef, PolicyDecision, TokenCounts,
};

/// Append `body`'s JSON to `out`.
pub(crate) fn write(body: &LineBody, out: &mut Vec<u8>) {
    let LineBody {
        seq,
        ts,
        kind,
        dropped_before,
        record,
        note,
        lost_before,
        prev_hash,
    } = body;
    out.extend_from_slice(b"{\"seq\":");
    uint(out, *seq);
    out.extend_from_slice(b",\"ts\":");
    string(out, ts);
    out.extend_from_slice(b",\"kind\":");
    string(
        out,
        match kind {
            LineKind::Request => "request",
            LineKind::Started => "started",
            LineKind::Recovered => "recovered",
            LineKind::Gap => "gap",
        },
    );
    out.extend_from_slice(b",\"dropped_before\":");
    uint(out, *dropped_before);
    if let Some(r) = record {
        out.extend_from_slice(b",\"record\":");
        audit_record(out, r);
    }
    if let Some(n) = note {
        out.extend_from_slice(b",\"note\":");
        string(out, n);
    }
    if let Some(n) = lost_before {
        out.extend_from_slice(b",\"lost_before\":");
        uint(out, *n);
    }
    out.extend_from_slice(b",\"prev_hash\":");
    string(out, prev_hash);
    out.push(b'}');
}

fn audit_record(out: &mut Vec<u8>, r: &AuditRecord) {
    let AuditRecord {
        request_id,
        environment,
        pack,
        caller,
        route,
        model_requested,
        model_used,
        outcome,
        status,
        upstream_status,
        latency,
        usage,
        cost_usd,
        budget,
        policies,
        escalated,
        redacted_text,
        error_code,
        redacted_response_text,
        attempts,
    } = r;
    let PackRef {
        name,
        version,
        hash,
    } = pack;
    let CallerRef { key_id, team } = caller;
    let Latency {
        gateway_us,
        upstream_us,
    } = latency;
    out.extend_from_slice(b"{\"request_id\":");
    string(out, request_id);
    out.extend_from_slice(b",\"environment\":");
    string(out, environment);
    out.extend_from_slice(b",\"pack\":{\"name\":");
    string(out, name);
    out.extend_from_slice(b",\"version\":");
    string(out, version);
    out.extend_from_slice(b",\"hash\":");
    string(out, hash);
    out.extend_from_slice(b"},\"caller\":{\"key_id\":");
    opt_string(out, key_id.as_deref());
    out.extend_from_slice(b",\"team\":");
    opt_string(out, team.as_deref());
    out.extend_from_slice(b"},\"route\":");
    string(out, route);
    out.extend_from_slice(b",\"model_requested\":");
    opt_string(out, model_requested.as_deref());
    out.extend_from_slice(b",\"model_used\":");
    opt_string(out, model_used.as_deref());
    out.extend_from_slice(b",\"outcome\":");
    string(out, outcome.as_str());
    out.extend_from_slice(b",\"status\":");
    uint(out, u64::from(*status));
    out.extend_from_slice(b",\"upstream_status\":");
    opt_uint(out, upstream_status.map(u64::from));
    out.extend_from_slice(b",\"latency\":{\"gateway_us\":");
    uint(out, *gateway_us);
    out.extend_from_slice(b",\"upstream_us\":");
    opt_uint(out, *upstream_us);
    out.extend_from_slice(b"},\"usage\":");
    match usage {
        Some(TokenCounts {
            input_tokens,
            output_tokens,
        }) => {
            out.extend_from_slice(b"{\"input_tokens\":");
            uint(out, *input_tokens);
            out.extend_from_slice(b",\"output_tokens\":");
            uint(out, *output_tokens);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"cost_usd\":");
    opt_float(out, *cost_usd);
    out.extend_from_slice(b",\"budget\":");
    match budget {
        Some(BudgetNote {
            decision,
            scope,
            remaining_usd,
        }) => {
            out.extend_from_slice(b"{\"decision\":");
            string(out, decision);
            out.extend_from_slice(b",\"scope\":");
            opt_string(out, scope.as_deref());
            out.extend_from_slice(b",\"remaining_usd\":");
            opt_float(out, *remaining_usd);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"policies\":[");
    for (i, p) in policies.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        policy(out, p);
    }
    out.extend_from_slice(b"],\"escalated\":");
    out.extend_from_slice(if *escalated { b"true" } else { b"false" });
    if let Some(t) = redacted_text {
        out.extend_from_slice(b",\"redacted_text\":");
        string(out, t);
    }
    out.extend_from_slice(b",\"error_code\":");
    opt_string(out, error_code.as_deref());
    if let Some(t) = redacted_response_text {
        out.extend_from_slice(b",\"redacted_response_text\":");
        string(out, t);
    }
    if !attempts.is_empty() {
        out.extend_from_slice(b",\"attempts\":[");
        for (i, a) in attempts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"deployment\":");
            string(out, &a.deployment);
            out.extend_from_slice(b",\"outcome\":");
            string(out, &a.outcome);
            out.extend_from_slice(b",\"ms\":");
            uint(out, a.ms);
            out.push(b'}');
        }
        out.push(b']');
    }
    out.push(b'}');
}

fn policy(out: &mut Vec<u8>, p: &PolicyDecision) {
    let PolicyDecision {
        policy,
        decision,
        entities,
    } = p;
    out.extend_from_slice(b"{\"policy\":");
    string(out, policy);
    out.extend_from_slice(b",\"decision\":");
    string(out, decision);
    if !entities.is_empty() {
        out.extend_from_slice(b",\"entities\":");
        counts(out, entities);
    }
    out.push(b'}');
}

fn counts(out: &mut Vec<u8>, map: &BTreeMap<String, u32>) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        uint(out, u64::from(*v));
    }
    out.push(b'}');
}

/// A JSON string: copied as it is when nothing in it needs an escape, else serde_json's escaping.
fn string(out: &mut Vec<u8>, s: &str) {
    crate::json_splice::write_json_string(out, s);
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn opt_uint(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => uint(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

/// serde_json's own float output (its shortest round-trip form; `null` when not finite).
fn opt_float(out: &mut Vec<u8>, f: Option<f64>) {
    match f {
        Some(f) if serde_json::to_writer(&mut *out, &f).is_ok() => {}
        _ => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::audit::record::AttemptRecord;
    use crate::audit::record::OutcomeKind;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_./:-]{0,24}",
            any::<String>(),
            Just("quote \" backslash \\ newline \n tab \t nul \u{0} del \u{7f} é 漢 😀".to_owned()),
        ]
    }

    fn float() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            any::<f64>().prop_map(Some),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(-0.0)),
            Just(Some(1e-7)),
            Just(Some(999_999.94)),
            (0u64..10_000_000).prop_map(|m| Some(m as f64 / 1e6)),
        ]
    }

    fn outcome() -> impl Strategy<Value = OutcomeKind> {
        prop_oneof![
            Just(OutcomeKind::Allowed),
            Just(OutcomeKind::Redacted),
            Just(OutcomeKind::BlockedPii),
            Just(OutcomeKind::BlockedBudget),
            Just(OutcomeKind::Rejected),
            Just(OutcomeKind::UpstreamError),
            Just(OutcomeKind::InternalError),
            Just(OutcomeKind::Cancelled),
        ]
    }

    fn decision() -> impl Strategy<Value = PolicyDecision> {
        (
            text(),
            text(),
            proptest::collection::btree_map(text(), any::<u32>(), 0..3),
        )
            .prop_map(|(policy, decision, entities)| PolicyDecision {
                policy: policy.into(),
                decision: decision.into(),
                entities,
            })
    }

    /// Flat inputs (a deeply nested strategy overflows the test thread's stack in debug builds).
    fn record() -> impl Strategy<Value = AuditRecord> {
        (
            proptest::collection::vec(text(), 16),
            proptest::collection::vec(any::<bool>(), 12),
            proptest::collection::vec(float(), 2),
            proptest::collection::vec(any::<u64>(), 5),
            (outcome(), any::<u16>(), any::<u16>()),
            proptest::collection::vec(decision(), 0..4),
        )
            .prop_map(|(t, b, f, n, (outcome, status, upstream), policies)| {
                let some = |i: usize| b.get(i).copied().unwrap_or(false);
                let text = |i: usize| t.get(i).cloned().unwrap_or_default();
                let opt = |i: usize, j: usize| some(i).then(|| text(j));
                AuditRecord {
                    request_id: text(0),
                    environment: text(1).into(),
                    pack: PackRef {
                        name: text(2).into(),
                        version: text(3).into(),
                        hash: text(4).into(),
                    },
                    caller: CallerRef {
                        key_id: opt(0, 5),
                        team: opt(1, 6),
                    },
                    route: text(7).into(),
                    model_requested: opt(2, 8),
                    model_used: opt(3, 9),
                    outcome,
                    status,
                    upstream_status: some(4).then_some(upstream),
                    latency: Latency {
                        gateway_us: n[0],
                        upstream_us: some(5).then_some(n[1]),
                    },
                    usage: some(6).then(|| TokenCounts {
                        input_tokens: n[2],
                        output_tokens: n[3],
                    }),
                    cost_usd: f[0],
                    budget: some(7).then(|| BudgetNote {
                        decision: text(10).into(),
                        scope: opt(8, 11),
                        remaining_usd: f[1],
                    }),
                    policies,
                    escalated: some(9),
                    redacted_text: opt(10, 12),
                    error_code: opt(11, 13).map(Into::into),
                    redacted_response_text: (n[4] % 2 == 0).then(|| text(14)),
                    attempts: (0..(n[4] % 3))
                        .map(|i| AttemptRecord {
                            deployment: text(15),
                            outcome: text(i as usize),
                            ms: n[i as usize],
                        })
                        .collect(),
                }
            })
    }

    fn kind() -> impl Strategy<Value = LineKind> {
        prop_oneof![
            Just(LineKind::Request),
            Just(LineKind::Started),
            Just(LineKind::Recovered),
            Just(LineKind::Gap),
        ]
    }

    proptest! {
        #[test]
        fn same_bytes_as_serde_json(
            seq in any::<u64>(),
            ts in text(),
            kind in kind(),
            dropped_before in any::<u64>(),
            record in proptest::option::of(record()),
            note in proptest::option::of(text()),
            lost_before in proptest::option::of(any::<u64>()),
            prev_hash in text(),
        ) {
            let body = LineBody { seq, ts, kind, dropped_before, record, note, lost_before, prev_hash };
            let mut ours = Vec::new();
            write(&body, &mut ours);
            let theirs = serde_json::to_vec(&body).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        }
    }

    #[test]
    fn a_default_record_matches_too() {
        let body = LineBody {
            seq: 1,
            ts: String::new(),
            kind: LineKind::Request,
            dropped_before: 0,
            record: Some(AuditRecord::default()),
            note: None,
            lost_before: None,
            prev_hash: String::new(),
        };
        let mut ours = Vec::new();
        write(&body, &mut ours);
        assert_eq!(ours, serde_json::to_vec(&body).unwrap());
    }
}
