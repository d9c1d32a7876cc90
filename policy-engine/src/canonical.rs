//! The canonical form of a pack and its SHA-256 identity.
//!
//! Canonical form: the parsed document with defaults filled, every environment replaced by its
//! fully resolved document, serialised as JSON with object keys sorted at every level and no
//! whitespace. Comments, key order, quoting style and redundant defaults therefore never change
//! the hash; any change of meaning does, because every field of the typed document is in the
//! canonical form. Keys are sorted here explicitly rather than trusting `serde_json::Map`'s
//! order, which a dependency enabling `preserve_order` would change under our feet.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::pack::PackDocument;

/// SHA-256 of a canonical form, shown as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackHash(pub [u8; 32]);

impl PackHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_owned()
    }
}

impl fmt::Display for PackHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for PackHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid hash `{}`: expected 64 hex digits",
                crate::decode::shorten(s)
            )
        };
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl Serialize for PackHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PackHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The canonical JSON of a whole pack: the base and each resolved environment.
pub fn canonical_json(base: &PackDocument, resolved: &BTreeMap<String, PackDocument>) -> String {
    let mut v = body(base);
    let envs: serde_json::Map<String, Value> = resolved
        .iter()
        .map(|(name, doc)| (name.clone(), body(doc)))
        .collect();
    if let Value::Object(m) = &mut v {
        m.insert("environments".to_owned(), Value::Object(envs));
    }
    let mut out = String::with_capacity(1024);
    write_sorted(&v, &mut out);
    out
}

/// Identity of a whole pack document.
pub fn hash(base: &PackDocument, resolved: &BTreeMap<String, PackDocument>) -> PackHash {
    PackHash::of(canonical_json(base, resolved).as_bytes())
}

/// Identity of what one environment enforces (the resolved document alone).
pub fn effective_hash(resolved: &PackDocument) -> PackHash {
    let mut out = String::with_capacity(1024);
    write_sorted(&body(resolved), &mut out);
    PackHash::of(out.as_bytes())
}

/// A document as JSON without its raw `environments` block (replaced by resolved forms).
pub(crate) fn body(doc: &PackDocument) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("environments");
    }
    omit_later_defaults(&mut v);
    v
}

/// Settings added to format 1 after packs were already hashed are left out of the canonical form
/// while they hold their default, so a pack that does not use them keeps the hash it always had
/// (a registry stores hashes; gateways recompute them). They stay in the typed document, so an
/// environment may still override them.
fn omit_later_defaults(v: &mut Value) {
    if let Some(Value::Object(b)) = v.pointer_mut("/policy/budget-enforcer") {
        if b.get("preborrow_fraction").and_then(Value::as_f64) == Some(0.0) {
            b.remove("preborrow_fraction");
        }
        if b.get("max_queue_ms").and_then(Value::as_u64) == Some(2_000) {
            b.remove("max_queue_ms");
        }
        if let Some(Value::Array(limits)) = b.get_mut("limits") {
            for l in limits.iter_mut().filter_map(Value::as_object_mut) {
                if l.get("requests").is_some_and(Value::is_null) {
                    l.remove("requests");
                }
            }
        }
    }
    let default_routing = serde_json::to_value(crate::pack::RoutingSpec::default()).ok();
    if let Value::Object(doc) = v {
        if doc.get("routing") == default_routing.as_ref() {
            doc.remove("routing");
        }
    }
    if let Some(Value::Object(providers)) = v.pointer_mut("/providers") {
        for p in providers.values_mut().filter_map(Value::as_object_mut) {
            if p.get("kind").and_then(Value::as_str) == Some("openai") {
                p.remove("kind");
            }
            if p.get("protocol").and_then(Value::as_str) == Some("http1") {
                p.remove("protocol");
            }
            if p.get("anthropic_version").is_some_and(Value::is_null) {
                p.remove("anthropic_version");
            }
        }
    }
}

/// Compact JSON with object keys sorted at every level.
pub(crate) fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(child) = m.get(k) {
                    write_sorted(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
