//! Semantic diff of two resolved packs: what changed, and is it stricter or looser?
//!
//! Both documents are flattened into `path → value` leaves, with lists whose items have an
//! identity turned into maps first (budget limits by `scope/window`, custom entities and tests by
//! name, entity and side lists as sets), so that reordering is no change and an edit of one limit
//! is one change. Each change is then classified by rules that know what each setting means:
//! PII action `log → redact` is stricter, an entity removed is looser, a budget or rate limit
//! raised (or a request count added) is looser (stricter), `on_exhausted` orders
//! `alert < degrade < queue < block`, a longer `max_queue_ms` is looser, shorter retention is
//! looser, a policy dropped from the chain is looser, a model's deployment removed is stricter
//! (and one added looser: its data may reach another provider). Settings with no direction
//! (descriptions, prices, providers and their kinds, fallbacks, weights, retries and circuit
//! breaking, tests) are neutral.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::canonical::body;
use crate::pack::{PackDocument, PiiAction};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Stricter,
    Looser,
    Neutral,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stricter => "stricter",
            Self::Looser => "looser",
            Self::Neutral => "neutral",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub path: String,
    /// `None` when the path was added.
    pub old: Option<Value>,
    /// `None` when the path was removed.
    pub new: Option<Value>,
    pub effect: Effect,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub changes: usize,
    pub stricter: usize,
    pub looser: usize,
    pub neutral: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SemanticDiff {
    pub changes: Vec<Change>,
    pub summary: Summary,
}

impl SemanticDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The overall direction: looser if anything loosens, else stricter if anything tightens.
    pub fn overall(&self) -> Effect {
        if self.summary.looser > 0 {
            Effect::Looser
        } else if self.summary.stricter > 0 {
            Effect::Stricter
        } else {
            Effect::Neutral
        }
    }
}

/// Collections whose items have an identity: an item added or removed is one change.
const COLLECTIONS: [&[&str]; 5] = [
    &["policy", "budget-enforcer", "limits"],
    &["policy", "pii-detector", "custom"],
    &["models"],
    &["providers"],
    &["tests"],
];

type Path = Vec<String>;

/// Compare two resolved documents.
pub fn diff(old: &PackDocument, new: &PackDocument) -> SemanticDiff {
    let (va, vb) = (tree(old), tree(new));
    let (a, b) = (leaves(&va), leaves(&vb));
    let paths: BTreeSet<&Path> = a.keys().chain(b.keys()).collect();
    let mut changes = Vec::new();
    let mut whole_items: BTreeSet<Path> = BTreeSet::new();
    for path in paths {
        let (o, n) = (a.get(path), b.get(path));
        if o == n {
            continue;
        }
        // An item that exists on one side only is reported once, as a whole.
        if let Some(item) = lone_item(path, &va, &vb) {
            if whole_items.insert(item.clone()) {
                let (o, n) = (lookup(&va, &item), lookup(&vb, &item));
                let effect = classify(&item, o.as_ref(), n.as_ref(), old, new);
                changes.push(Change {
                    path: item.join("."),
                    old: o,
                    new: n,
                    effect,
                });
            }
            continue;
        }
        let effect = classify(path, o, n, old, new);
        changes.push(Change {
            path: path.join("."),
            old: o.cloned(),
            new: n.cloned(),
            effect,
        });
    }
    let mut summary = Summary {
        changes: changes.len(),
        ..Summary::default()
    };
    for c in &changes {
        match c.effect {
            Effect::Stricter => summary.stricter += 1,
            Effect::Looser => summary.looser += 1,
            Effect::Neutral => summary.neutral += 1,
        }
    }
    SemanticDiff { changes, summary }
}

/// If `path` lies inside a collection item present in only one of the trees, that item's path.
fn lone_item(path: &Path, a: &Value, b: &Value) -> Option<Path> {
    let lone =
        |item: Path| (lookup(a, &item).is_some() != lookup(b, &item).is_some()).then_some(item);
    // A model's deployment, by provider: `models.NAME.deployments.PROVIDER`.
    if path.len() > 3 && path[0] == "models" && path[2] == "deployments" {
        if let Some(item) = lone(path[..4].to_vec()) {
            return Some(item);
        }
    }
    COLLECTIONS.iter().find_map(|prefix| {
        let n = prefix.len();
        if path.len() <= n || !path.iter().zip(prefix.iter()).all(|(x, y)| x == y) {
            return None;
        }
        lone(path[..=n].to_vec())
    })
}

fn lookup(v: &Value, path: &Path) -> Option<Value> {
    let mut node = v;
    for seg in path {
        node = node.as_object()?.get(seg)?;
    }
    (!node.is_null()).then(|| node.clone())
}

fn tree(doc: &PackDocument) -> Value {
    let mut v = body(doc);
    keyed(&mut v, doc);
    v
}

/// Flatten a tree into leaves; nulls are absent values, not leaves.
fn leaves(v: &Value) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    flatten(v, Vec::new(), &mut out);
    out
}

/// Replace identity-bearing lists with maps (or sets) so that order does not count.
fn keyed(v: &mut Value, doc: &PackDocument) {
    let set = |items: Vec<String>| -> Value {
        Value::Object(items.into_iter().map(|i| (i, Value::Bool(true))).collect())
    };
    if let Some(chain) = v.pointer_mut("/policies/chain") {
        *chain = set(doc.policies.chain.clone());
    }
    if let Some(pii) = &doc.policy.pii_detector {
        if let Some(p) = v.pointer_mut("/policy/pii-detector") {
            p["entities"] = set(pii.effective_entities());
            // Left out of the canonical form while on; both sides name it here, so turning it
            // off is one change.
            p["obfuscated_emails"] = Value::Bool(pii.obfuscated_emails);
            p["scan"] = set(pii
                .scan
                .iter()
                .map(|s| format!("{s:?}").to_lowercase())
                .collect());
            let custom: serde_json::Map<String, Value> = pii
                .custom
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        serde_json::to_value(c).unwrap_or(Value::Null),
                    )
                })
                .collect();
            p["custom"] = Value::Object(custom);
        }
    }
    if let Some(b) = &doc.policy.budget_enforcer {
        if let Some(p) = v.pointer_mut("/policy/budget-enforcer") {
            let limits: serde_json::Map<String, Value> = b
                .limits
                .iter()
                .map(|l| (l.key(), serde_json::to_value(l).unwrap_or(Value::Null)))
                .collect();
            p["limits"] = Value::Object(limits);
        }
    }
    // A model's deployments by provider, so reordering them is no change.
    for (name, m) in &doc.models {
        if m.deployments.is_empty() {
            continue;
        }
        if let Some(Value::Object(model)) = v.pointer_mut(&format!(
            "/models/{}",
            name.replace('~', "~0").replace('/', "~1")
        )) {
            let deployments: serde_json::Map<String, Value> = m
                .deployments
                .iter()
                .map(|d| {
                    let model = d.upstream_model.as_deref().unwrap_or(name);
                    (
                        format!("{}/{model}", d.provider),
                        serde_json::to_value(d).unwrap_or(Value::Null),
                    )
                })
                .collect();
            model.insert("deployments".to_owned(), Value::Object(deployments));
        }
    }
    let tests: serde_json::Map<String, Value> = doc
        .tests
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                serde_json::to_value(t).unwrap_or(Value::Null),
            )
        })
        .collect();
    v["tests"] = Value::Object(tests);
}

fn flatten(v: &Value, path: Path, out: &mut BTreeMap<Path, Value>) {
    match v {
        Value::Null => {}
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(k.clone());
                flatten(child, p, out);
            }
        }
        other => {
            out.insert(path, other.clone());
        }
    }
}

fn classify(
    path: &Path,
    old: Option<&Value>,
    new: Option<&Value>,
    od: &PackDocument,
    nd: &PackDocument,
) -> Effect {
    use Effect::{Looser, Neutral, Stricter};
    let added = old.is_none() || old == Some(&Value::Null);
    let removed = new.is_none() || new == Some(&Value::Null);
    let set_member = |added_is: Effect| match (added, removed) {
        (true, _) => added_is,
        (_, true) => flip(added_is),
        _ => Neutral,
    };
    let num = |higher_is: Effect| match (old.and_then(Value::as_f64), new.and_then(Value::as_f64)) {
        (Some(a), Some(b)) if b > a => higher_is,
        (Some(a), Some(b)) if b < a => flip(higher_is),
        _ => Neutral,
    };
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["pack", "enabled"] => bool_change(old, new, Stricter),
        ["policies", "chain", _] => set_member(Stricter),
        ["policy", "pii-detector", "action"] => ordered(old, new, |s| match s {
            "log" => Some(PiiAction::Log),
            "escalate" => Some(PiiAction::Escalate),
            "redact" => Some(PiiAction::Redact),
            "block" => Some(PiiAction::Block),
            _ => None,
        }),
        ["policy", "pii-detector", "entities" | "scan", _] => set_member(Stricter),
        ["policy", "pii-detector", "custom", _] => set_member(Stricter),
        ["policy", "pii-detector", "obfuscated_emails"] => bool_change(old, new, Stricter),
        ["policy", "audit-logger", "retention_days"] => num(Stricter),
        ["policy", "audit-logger", "on_queue_full"] => text_change(old, new, "drop", "block"),
        ["policy", "audit-logger", "include_redacted_text"] => bool_change(old, new, Looser),
        ["policy", "budget-enforcer", "limits", _, "usd" | "tokens" | "requests"] => {
            match (added, removed) {
                (true, false) => Stricter,
                (false, true) => Looser,
                _ => num(Looser),
            }
        }
        ["policy", "budget-enforcer", "limits", _, "on_exhausted"] => {
            ordered(old, new, |s| match s {
                "alert" => Some(0),
                "degrade" => Some(1),
                "queue" => Some(2),
                "block" => Some(3),
                _ => None,
            })
        }
        ["policy", "budget-enforcer", "limits", _] => set_member(Stricter),
        ["policy", "budget-enforcer", "on_store_unavailable"] => {
            text_change(old, new, "fail_open", "fail_closed")
        }
        ["policy", "budget-enforcer", "soft_threshold"] => num(Looser),
        // A longer wait admits more of what a rate limit held back. The canonical form leaves
        // out the default 2000, so an absent value is 2000.
        ["policy", "budget-enforcer", "max_queue_ms"] => {
            let ms = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(2_000);
            match ms(new).cmp(&ms(old)) {
                std::cmp::Ordering::Greater => Looser,
                std::cmp::Ordering::Less => Stricter,
                std::cmp::Ordering::Equal => Neutral,
            }
        }
        // A bigger pre-borrowed slice raises the worst-case overshoot across replicas. The
        // canonical form leaves out the default 0, so an absent value is 0.
        ["policy", "budget-enforcer", "preborrow_fraction"] => {
            let f = |v: Option<&Value>| v.and_then(Value::as_f64).unwrap_or(0.0);
            match f(new).partial_cmp(&f(old)) {
                Some(std::cmp::Ordering::Greater) => Looser,
                Some(std::cmp::Ordering::Less) => Stricter,
                _ => Neutral,
            }
        }
        // Where a model's data may go: a deployment removed narrows it, one added widens it;
        // weights, fallbacks and retries change where traffic lands, not what is allowed.
        ["models", _, "deployments", _] => match (added, removed) {
            (true, false) => Looser,
            (false, true) => Stricter,
            _ => Neutral,
        },
        ["models", _, "deployments", _, "provider" | "upstream_model"] => Neutral,
        ["models", _, "fallbacks", ..] | ["routing", ..] => Neutral,
        ["models", _] => match (od.models.is_empty(), nd.models.is_empty()) {
            // An empty list allows every model: listing models restricts, emptying it opens.
            (true, false) => Stricter,
            (false, true) => Looser,
            _ => set_member(Looser),
        },
        _ => Neutral,
    }
}

fn flip(e: Effect) -> Effect {
    match e {
        Effect::Stricter => Effect::Looser,
        Effect::Looser => Effect::Stricter,
        Effect::Neutral => Effect::Neutral,
    }
}

/// A boolean whose `true` has the effect `on_is`.
fn bool_change(old: Option<&Value>, new: Option<&Value>, on_is: Effect) -> Effect {
    match (old.and_then(Value::as_bool), new.and_then(Value::as_bool)) {
        (Some(false), Some(true)) => on_is,
        (Some(true), Some(false)) => flip(on_is),
        _ => Effect::Neutral,
    }
}

fn text_change(old: Option<&Value>, new: Option<&Value>, loose: &str, strict: &str) -> Effect {
    match (old.and_then(Value::as_str), new.and_then(Value::as_str)) {
        (Some(a), Some(b)) if a == strict && b == loose => Effect::Looser,
        (Some(a), Some(b)) if a == loose && b == strict => Effect::Stricter,
        _ => Effect::Neutral,
    }
}

fn ordered<T: Ord>(
    old: Option<&Value>,
    new: Option<&Value>,
    rank: impl Fn(&str) -> Option<T>,
) -> Effect {
    let r = |v: Option<&Value>| v.and_then(Value::as_str).and_then(&rank);
    match (r(old), r(new)) {
        (Some(a), Some(b)) if b > a => Effect::Stricter,
        (Some(a), Some(b)) if b < a => Effect::Looser,
        _ => Effect::Neutral,
    }
}

impl fmt::Display for SemanticDiff {
    /// Human form: one line per change, then the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| {
            v.as_ref()
                .map_or_else(|| "(absent)".to_owned(), Value::to_string)
        };
        for c in &self.changes {
            let sign = match (&c.old, &c.new) {
                (None, _) => '+',
                (_, None) => '-',
                _ => '~',
            };
            writeln!(
                f,
                "{sign} {:<9} {}: {} -> {}",
                c.effect.as_str(),
                c.path,
                show(&c.old),
                show(&c.new)
            )?;
        }
        let s = &self.summary;
        write!(
            f,
            "{} change{}: {} stricter, {} looser, {} neutral (overall: {})",
            s.changes,
            if s.changes == 1 { "" } else { "s" },
            s.stricter,
            s.looser,
            s.neutral,
            self.overall().as_str()
        )
    }
}
