//! Loading a pack: text → [`LoadedPack`], with every diagnostic collected.
//!
//! Order of work: size and syntax; `format_version` (a newer format is refused before anything
//! else is read, since its fields may mean other things); secrets; each top-level section decoded
//! on its own so one bad section does not hide the others; semantic checks; every declared
//! environment resolved and checked. Only when none of that produced an error is a
//! [`LoadedPack`] returned. Compiling (regexes, automata) is a later stage, see `compile`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_yaml::{Mapping, Value};

use crate::canonical::{self, PackHash};
use crate::decode::{decode, shorten, Sink};
use crate::diagnostic::{DiagnosticCode, Diagnostics, PackDiagnostic};
use crate::environments;
use crate::pack::PackMeta;
use crate::pack::{
    AuditLoggerConfig, BudgetEnforcerConfig, PackDocument, PiiDetectorConfig, PolicySettings,
    FORMAT_VERSION, KNOWN_POLICIES,
};
use crate::source_map::{child, item, SourceMap};
use crate::validate;

/// Larger documents are refused: a pack is configuration, not data.
pub const MAX_PACK_BYTES: usize = 1 << 20;

const TOP_LEVEL: [&str; 9] = [
    "format_version",
    "pack",
    "policies",
    "policy",
    "providers",
    "models",
    "routing",
    "environments",
    "tests",
];

/// A pack that parsed and validated, in every environment it declares.
#[derive(Debug, Clone)]
pub struct LoadedPack {
    /// The base document, defaults filled.
    pub document: PackDocument,
    /// Identity of the whole document (base and every environment), see `canonical`.
    pub hash: PackHash,
    /// Warnings (errors would have refused the load).
    pub warnings: Diagnostics,
    /// Each declared environment, resolved.
    pub(crate) resolved: BTreeMap<String, PackDocument>,
    pub(crate) source_map: Arc<SourceMap>,
}

/// Parse and validate `text`.
pub fn load(text: &str) -> Result<LoadedPack, Diagnostics> {
    let map = Arc::new(SourceMap::lazy(text));
    let mut sink = Sink::new(&map);
    let Some(mut root) = parse(text, &mut sink) else {
        return Err(finish(sink));
    };
    if !format_supported(&root, &mut sink) {
        return Err(finish(sink));
    }
    crate::secrets::scan(&mut root, &mut sink);
    let env_values = match root.get("environments").cloned() {
        Some(Value::Mapping(m)) => Some(m),
        _ => None,
    };
    let Some(document) = decode_document(root, &mut sink) else {
        return Err(finish(sink));
    };

    validate::document(&document, &mut sink);
    validate::test_environments(&document, &mut sink);
    let mut resolved = BTreeMap::new();
    for (name, overrides) in env_values.iter().flat_map(|m| m.iter()) {
        let Some(name) = name.as_str() else { continue };
        if let Some(doc) = environments::resolve(&document, name, overrides, &mut sink) {
            resolved.insert(name.to_owned(), doc);
        }
    }
    if sink.has_errors() {
        return Err(finish(sink));
    }
    let hash = canonical::hash(&document, &resolved);
    let warnings = finish(sink);
    Ok(LoadedPack {
        document,
        hash,
        warnings,
        resolved,
        source_map: map,
    })
}

fn finish(sink: Sink<'_>) -> Diagnostics {
    let mut d = Diagnostics(sink.out);
    d.sort();
    d
}

fn parse(text: &str, sink: &mut Sink<'_>) -> Option<Value> {
    if text.len() > MAX_PACK_BYTES {
        sink.emit(
            PackDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "",
                "the pack document is too large",
            )
            .found(format!("{} bytes", text.len()))
            .expected(format!("at most {MAX_PACK_BYTES} bytes")),
            false,
        );
        return None;
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(v @ Value::Mapping(_)) => Some(v),
        Ok(other) => {
            sink.emit(
                PackDiagnostic::error(
                    DiagnosticCode::YamlSyntax,
                    "",
                    "a pack must be a YAML mapping",
                )
                .found(kind(&other))
                .expected("a mapping with `pack`, `policies` and `policy`"),
                false,
            );
            None
        }
        Err(e) => {
            // serde_yaml's message names the problem and its place, never the document.
            let mut d = PackDiagnostic::error(DiagnosticCode::YamlSyntax, "", e.to_string());
            if let Some(loc) = e.location() {
                d = d.at(loc.line(), loc.column());
            }
            sink.out.push(d);
            None
        }
    }
}

fn format_supported(root: &Value, sink: &mut Sink<'_>) -> bool {
    let Some(v) = root.get("format_version") else {
        return true;
    };
    match v.as_u64() {
        Some(n) if n == u64::from(FORMAT_VERSION) => true,
        Some(n) if n > u64::from(FORMAT_VERSION) => {
            let d = PackDiagnostic::error(
                DiagnosticCode::UnsupportedPackVersion,
                "format_version",
                format!("this build reads pack format {FORMAT_VERSION}; the pack is format {n}"),
            )
            .found(n.to_string())
            .expected(FORMAT_VERSION.to_string())
            .help("upgrade palisade, or write the pack in format 1");
            sink.emit(d, false);
            false
        }
        _ => {
            let d = PackDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "format_version",
                "invalid format version",
            )
            .found(shorten(&describe(v)))
            .expected(FORMAT_VERSION.to_string());
            sink.emit(d, false);
            false
        }
    }
}

/// Decode the top level section by section, so that all sections report their errors.
pub(crate) fn decode_document(root: Value, sink: &mut Sink<'_>) -> Option<PackDocument> {
    let Value::Mapping(mut top) = root else {
        return None;
    };
    for key in top.keys() {
        let name = key.as_str().map_or_else(|| describe(key), str::to_owned);
        if !TOP_LEVEL.contains(&name.as_str()) {
            let d = PackDiagnostic::error(
                DiagnosticCode::UnknownField,
                name.clone(),
                format!("unknown field `{name}`"),
            )
            .found(name)
            .expected(format!("one of {}", TOP_LEVEL.join(", ")));
            sink.emit(d, true);
        }
    }
    let policy = top.remove("policy");
    let Some(pack) = top.remove("pack") else {
        let d = PackDiagnostic::error(DiagnosticCode::MissingField, "pack", "missing field `pack`")
            .expected("a `pack` mapping with `name` and `version`");
        sink.emit(d, false);
        return None;
    };
    // Decode each section alone: an error in `models` must not hide one in `tests`, and what did
    // decode still goes through the semantic checks.
    let mut take = |key: &str| top.remove(key).unwrap_or(Value::Null);
    let (policies, providers, models, routing, environments, tests) = (
        take("policies"),
        take("providers"),
        take("models"),
        take("routing"),
        take("environments"),
        take("tests"),
    );
    let mut doc = PackDocument {
        format_version: FORMAT_VERSION,
        // A broken `pack:` block is reported; a neutral stand-in lets the rest be checked too.
        pack: decode::<PackMeta>(pack, "pack", sink).unwrap_or_else(|| PackMeta {
            name: "unnamed".to_owned(),
            version: "0.0.0".to_owned(),
            enabled: true,
            description: String::new(),
        }),
        policies: or_default(policies, "policies", sink),
        policy: decode_policy(policy, sink),
        providers: each_entry(providers, "providers", sink),
        models: each_entry(models, "models", sink),
        routing: or_default(routing, "routing", sink),
        environments: or_default(environments, "environments", sink),
        tests: each_item(tests, "tests", sink),
    };
    doc.fill_defaults();
    Some(doc)
}

fn or_default<T: serde::de::DeserializeOwned + Default>(
    value: Value,
    key: &str,
    sink: &mut Sink<'_>,
) -> T {
    if value.is_null() {
        return T::default();
    }
    decode(value, key, sink).unwrap_or_default()
}

fn each_entry<T: serde::de::DeserializeOwned>(
    value: Value,
    key: &str,
    sink: &mut Sink<'_>,
) -> BTreeMap<String, T> {
    match value {
        Value::Null => BTreeMap::new(),
        Value::Mapping(m) => m
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.as_str().map_or_else(|| describe(&k), str::to_owned);
                let t = decode::<T>(v, &child(key, &name), sink)?;
                Some((name, t))
            })
            .collect(),
        other => decode(other, key, sink).unwrap_or_default(),
    }
}

fn each_item<T: serde::de::DeserializeOwned>(
    value: Value,
    key: &str,
    sink: &mut Sink<'_>,
) -> Vec<T> {
    match value {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| decode::<T>(v, &item(key, i), sink))
            .collect(),
        other => decode(other, key, sink).unwrap_or_default(),
    }
}

/// `policy:` is a map from policy name to settings; an unknown name is `UNKNOWN_POLICY`, not a
/// generic unknown field, and each policy's settings are decoded alone.
fn decode_policy(value: Option<Value>, sink: &mut Sink<'_>) -> PolicySettings {
    let mut settings = PolicySettings::default();
    let map = match value {
        None | Some(Value::Null) => return settings,
        Some(Value::Mapping(m)) => m,
        Some(other) => {
            let d = PackDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "policy",
                "invalid value for policy",
            )
            .found(kind(&other))
            .expected("a mapping from policy name to its settings");
            sink.emit(d, false);
            return settings;
        }
    };
    for (k, v) in map {
        let name = k.as_str().map_or_else(|| describe(&k), str::to_owned);
        let path = child("policy", &name);
        // `pii-detector:` with nothing after it means "defaults".
        let v = if v.is_null() {
            Value::Mapping(Mapping::new())
        } else {
            v
        };
        match name.as_str() {
            crate::pack::AUDIT_LOGGER => {
                settings.audit_logger = decode::<AuditLoggerConfig>(v, &path, sink)
            }
            crate::pack::PII_DETECTOR => {
                settings.pii_detector = decode::<PiiDetectorConfig>(v, &path, sink)
            }
            crate::pack::BUDGET_ENFORCER => {
                settings.budget_enforcer = decode::<BudgetEnforcerConfig>(v, &path, sink);
            }
            _ => {
                let d = PackDiagnostic::error(
                    DiagnosticCode::UnknownPolicy,
                    path,
                    format!("unknown policy `{name}`"),
                )
                .found(name)
                .expected(format!("one of {}", KNOWN_POLICIES.join(", ")));
                sink.emit(d, true);
                continue;
            }
        }
    }
    settings
}

pub(crate) fn kind(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
    .to_owned()
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind(other),
    }
}
