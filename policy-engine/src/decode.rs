//! Turning a YAML value into a typed section while collecting *every* error in it.
//!
//! serde stops at the first error. To report all of them, [`decode`] deserialises, records the
//! error with its path and position, removes the offending node from the tree and tries again,
//! until the section deserialises or no progress is possible. A field removed because its value
//! was wrong is not reported again as missing. The typed structs keep `deny_unknown_fields`; this
//! module only makes their errors complete and precise.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::diagnostic::{DiagnosticCode, PackDiagnostic};
use crate::source_map::{child, SourceMap};

/// Where diagnostics go, with the source map that places them.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    pub(crate) map: &'a SourceMap,
    pub(crate) out: Vec<PackDiagnostic>,
    /// When set, paths are first looked up under this prefix (an environment override block),
    /// so an error introduced by an override points at the override, not at the base.
    pub(crate) override_prefix: Option<String>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(map: &'a SourceMap) -> Self {
        Self {
            map,
            out: Vec::new(),
            override_prefix: None,
        }
    }

    /// Attach a position to `d` (by its path) and keep it. `key` asks for the key's position.
    pub(crate) fn emit(&mut self, mut d: PackDiagnostic, key: bool) {
        if let Some(prefix) = &self.override_prefix {
            let p = child(prefix, &d.path);
            let found = if key {
                self.map.key(&p)
            } else {
                self.map.value(&p).or(self.map.key(&p))
            };
            if found.is_some() {
                d.path = p;
            }
        }
        let span = if key {
            self.map.key(&d.path).or_else(|| self.map.nearest(&d.path))
        } else {
            self.map.nearest(&d.path)
        };
        if let Some(s) = span {
            d = d.at(s.line, s.column);
        }
        self.out.push(d);
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.out.iter().any(PackDiagnostic::is_error)
    }
}

/// Deserialise `value` (found at `path`) into `T`, reporting every error. After errors, the
/// value returned is what remained once the bad nodes were removed (defaults in their place), so
/// later checks can still run on it; the sink holds the errors. `None` means nothing usable.
pub(crate) fn decode<T: DeserializeOwned>(
    mut value: Value,
    path: &str,
    sink: &mut Sink<'_>,
) -> Option<T> {
    let mut removed: HashSet<String> = HashSet::new();
    // Each round removes one node, so the bound is the number of nodes; 256 is far beyond any
    // real section and keeps a pathological document from looping long.
    for _ in 0..256 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let rel: Vec<Seg> = err.path().iter().map(Seg::from).collect();
        let at = join(path, &rel);
        let message = err.into_inner().to_string();
        let mut d = classify(&message, &at);
        if d.expected
            .as_deref()
            .is_some_and(|e| e.contains("Value::Tagged"))
        {
            // serde_yaml's words for "a mapping or list where one word of a list belongs".
            d.expected = Some(
                words_expected_at::<T>(&value, &rel)
                    .unwrap_or_else(|| "a single value, not a mapping or a list".to_owned()),
            );
        }
        if d.code == DiagnosticCode::MissingField && removed.contains(&d.path) {
            return None; // a required field we removed ourselves: nothing more to learn
        }
        let (target, is_key) = match d.code {
            // serde_path_to_error's path of an unknown field already ends with the field.
            DiagnosticCode::UnknownField => (rel.clone(), true),
            _ => (rel.clone(), false),
        };
        removed.insert(d.path.clone());
        let is_missing = d.code == DiagnosticCode::MissingField;
        sink.emit(d, is_key);
        if is_missing || !remove(&mut value, &target) {
            return None;
        }
    }
    None
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

impl From<&serde_path_to_error::Segment> for Seg {
    fn from(s: &serde_path_to_error::Segment) -> Self {
        match s {
            serde_path_to_error::Segment::Seq { index } => Seg::Index(*index),
            serde_path_to_error::Segment::Map { key } => Seg::Key(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => Seg::Key(variant.clone()),
            serde_path_to_error::Segment::Unknown => Seg::Key("?".to_owned()),
        }
    }
}

fn join(base: &str, rel: &[Seg]) -> String {
    let mut p = base.to_owned();
    for s in rel {
        match s {
            Seg::Key(k) => p = child(&p, k),
            Seg::Index(i) => p = format!("{p}[{i}]"),
        }
    }
    p
}

/// Remove the node at `path` (relative to `root`). Removing the root itself is not possible.
fn remove(root: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let Some(node) = node_mut(root, parents) else {
        return false;
    };
    match (last, node) {
        (Seg::Key(k), Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        // Replace rather than remove so later indices (and their paths) stay the same.
        (Seg::Index(i), Value::Sequence(s)) if *i < s.len() => {
            s[*i] = Value::Null;
            true
        }
        _ => false,
    }
}

/// The words allowed at `path`, read from the error serde gives for a word no list holds.
fn words_expected_at<T: DeserializeOwned>(root: &Value, path: &[Seg]) -> Option<String> {
    let mut probe = root.clone();
    let node = node_mut(&mut probe, path)?;
    *node = Value::String("\u{1}".to_owned());
    let err = serde_path_to_error::deserialize::<_, T>(probe).err()?;
    let message = err.into_inner().to_string();
    message
        .starts_with("unknown variant")
        .then(|| expectation(&message))
        .flatten()
}

fn node_mut<'v>(root: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    let mut node = root;
    for seg in path {
        node = match (seg, node) {
            (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str())?,
            (Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// The first `backticked` word of a serde message.
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// Everything after "expected " in a serde message, with backticks dropped.
fn expectation(message: &str) -> Option<String> {
    let i = message.find("expected ")?;
    Some(message[i + "expected ".len()..].replace('`', ""))
}

/// Map serde's standard messages to a code, a found value and an expectation.
fn classify(message: &str, at: &str) -> PackDiagnostic {
    use DiagnosticCode::{InvalidValue, MissingField, UnknownField};
    if message.starts_with("unknown field") {
        let name = backticked(message).unwrap_or_default();
        let expected = if message.contains("there are no fields") {
            "no fields here".to_owned()
        } else {
            expectation(message).unwrap_or_default()
        };
        return PackDiagnostic::error(UnknownField, at, format!("unknown field `{name}`"))
            .found(name)
            .expected(expected);
    }
    if message.starts_with("missing field") {
        let name = backticked(message).unwrap_or_default();
        return PackDiagnostic::error(
            MissingField,
            child(at, &name),
            format!("missing field `{name}`"),
        )
        .expected(format!("a value for `{name}`"));
    }
    if message.starts_with("unknown variant") {
        let found = backticked(message).unwrap_or_default();
        return PackDiagnostic::error(InvalidValue, at, format!("invalid value for {at}"))
            .found(shorten(&found))
            .expected(expectation(message).unwrap_or_default());
    }
    if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        let found = rest
            .split(", expected")
            .next()
            .unwrap_or(rest)
            .replace('`', "");
        return PackDiagnostic::error(InvalidValue, at, format!("invalid value for {at}"))
            .found(shorten(&found))
            .expected(expectation(message).unwrap_or_default());
    }
    let found = backticked(message);
    let mut d = PackDiagnostic::error(InvalidValue, at, format!("invalid value for {at}"));
    if let Some(f) = found {
        d = d.found(shorten(&f));
    }
    match expectation(message) {
        Some(e) => d.expected(e),
        None => d.help(message.to_owned()),
    }
}

/// Keep found values short: a long string in a diagnostic is more likely a pasted secret or
/// document than something a reader needs whole.
pub(crate) fn shorten(s: &str) -> String {
    if s.chars().count() <= 60 {
        s.to_owned()
    } else {
        let head: String = s.chars().take(40).collect();
        format!("{head}…")
    }
}
