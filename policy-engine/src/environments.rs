//! Environment overrides: `environments.prod` is a partial document merged over the base.
//!
//! Mappings merge key by key; lists and scalars replace. An override may only address a path
//! that exists in the base after defaults are filled (`UNKNOWN_OVERRIDE_PATH` otherwise), so a
//! misspelt key cannot quietly add nothing, and the identity fields (`pack.name`,
//! `pack.version`, `format_version`) and `tests` cannot be overridden at all. The merged
//! document is decoded and validated like the base; its diagnostics point into the override
//! block when the offending value came from there.

use serde_yaml::{Mapping, Value};

use crate::decode::Sink;
use crate::diagnostic::{DiagnosticCode, PackDiagnostic};
use crate::pack::PackDocument;
use crate::source_map::child;

const FIXED: [&str; 5] = [
    "format_version",
    "pack.name",
    "pack.version",
    "environments",
    "tests",
];

/// Resolve `env` by merging `overrides` over `base`. Diagnostics go to `sink`.
pub(crate) fn resolve(
    base: &PackDocument,
    env: &str,
    overrides: &Value,
    sink: &mut Sink<'_>,
) -> Option<PackDocument> {
    let prefix = child("environments", env);
    let empty = Mapping::new();
    let ov = match overrides {
        Value::Null => &empty,
        Value::Mapping(m) => m,
        other => {
            let d = PackDiagnostic::error(
                DiagnosticCode::InvalidValue,
                prefix,
                format!("invalid override block for `{env}`"),
            )
            .found(crate::load::kind(other))
            .expected("a mapping with the parts of the pack that differ in this environment");
            sink.emit(d, false);
            return None;
        }
    };
    let mut stripped = base.clone();
    stripped.environments.clear();
    stripped.tests.clear();
    let mut tree = serde_yaml::to_value(&stripped).ok()?;
    if let Value::Mapping(m) = &mut tree {
        m.remove("environments");
        m.remove("tests");
    }
    let before = sink.out.len();
    merge(&mut tree, ov, "", &prefix, sink);
    if sink.out.len() > before {
        return None;
    }
    // Settings the base left out are still out: decoding reads `name: null` as "configured with
    // defaults" (what an author's empty `budget-enforcer:` means), which would make every
    // environment configure policies the pack never mentions.
    if let Some(Value::Mapping(policy)) = tree.get_mut("policy") {
        policy.retain(|_, v| !v.is_null());
    }

    // Decode and validate the merged document into a side sink, then keep only what is new.
    let mut side = Sink::new(sink.map);
    side.override_prefix = Some(prefix.clone());
    let doc = crate::load::decode_document(tree, &mut side).map(|mut d| {
        d.tests = base.tests.clone();
        d
    });
    if let Some(d) = &doc {
        crate::validate::document(d, &mut side);
    }
    for mut d in side.out {
        let dup = sink
            .out
            .iter()
            .any(|o| o.code == d.code && o.path == d.path && o.message == d.message);
        if dup {
            continue;
        }
        if !d.path.starts_with(&prefix) {
            d.message = format!("{} (in environment `{env}`)", d.message);
        }
        sink.out.push(d);
    }
    if sink.has_errors() {
        return None;
    }
    doc
}

fn merge(base: &mut Value, ov: &Mapping, path: &str, prefix: &str, sink: &mut Sink<'_>) {
    for (k, v) in ov {
        let Some(key) = k.as_str() else { continue };
        let p = child(path, key);
        let shown = child(prefix, &p);
        if FIXED.contains(&p.as_str()) {
            let d = PackDiagnostic::error(
                DiagnosticCode::InvalidValue,
                shown,
                format!("`{p}` cannot differ between environments"),
            )
            .expected("overrides of policy settings, models and providers");
            sink.emit(d, true);
            continue;
        }
        let slot = base.as_mapping_mut().and_then(|m| m.get_mut(key));
        // A policy that is not in the base chain has `null` settings: configuring it only in
        // one environment would be a policy that exists nowhere else, so it counts as missing.
        let Some(slot) = slot.filter(|s| !(s.is_null() && v.is_mapping())) else {
            let d = PackDiagnostic::error(DiagnosticCode::UnknownOverridePath, shown, format!("the override of `{p}` addresses a path that does not exist in the base pack"))
                .found(key.to_owned())
                .help("override only what the base pack defines; add the setting (or the policy to the chain) in the base first");
            sink.emit(d, true);
            continue;
        };
        match (slot, v) {
            (slot @ Value::Mapping(_), Value::Mapping(inner)) => {
                merge(slot, inner, &p, prefix, sink)
            }
            (slot, v) => *slot = v.clone(),
        }
    }
}
