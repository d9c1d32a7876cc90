//! Finding credentials written into a pack, where only environment variable *names* belong.
//!
//! A pack is reviewed, diffed, hashed, exported and stored in a registry; a key written into it
//! leaks through all of those. Any string that looks like a provider key, and any field whose name
//! says it holds a secret, is an error pointing to `api_key_env`. `tests:` are exempt: a test of
//! the `api_key` entity has to contain something shaped like a key.

use std::sync::LazyLock;

use regex::Regex;
use serde_yaml::Value;

use crate::decode::Sink;
use crate::diagnostic::{redact_secret, DiagnosticCode, PackDiagnostic};
use crate::source_map::{child, item};

/// Shapes of real credentials. Deliberately narrower than the PII detector's `api_key`
/// entity: a false positive here refuses a pack, so only unmistakable prefixes count.
static SECRET_SHAPE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?:^|[^A-Za-z0-9])(?:",
        r"sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}",
        r"|(?:sk|rk)_live_[A-Za-z0-9]{16,}",
        r"|AKIA[0-9A-Z]{16}",
        r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}",
        r"|xox[abprs]-[A-Za-z0-9\-]{10,}",
        r"|AIza[0-9A-Za-z_\-]{35}",
        r"|Bearer\s+[A-Za-z0-9._\-]{20,}",
        r")"
    ))
    .ok()
});

/// Field names that announce a secret value.
const SECRET_FIELDS: [&str; 7] = [
    "api_key",
    "apikey",
    "api-key",
    "secret",
    "password",
    "token",
    "authorization",
];

pub(crate) fn looks_like_secret(s: &str) -> bool {
    SECRET_SHAPE.as_ref().is_some_and(|re| re.is_match(s))
}

/// Report every secret in `root` and remove secret-named fields, so the schema decoder does not
/// report them a second time as unknown fields.
pub(crate) fn scan(root: &mut Value, sink: &mut Sink<'_>) {
    walk(root, "", sink);
}

fn walk(node: &mut Value, path: &str, sink: &mut Sink<'_>) {
    if path == "tests" {
        return;
    }
    match node {
        Value::String(s) if looks_like_secret(s) => report(path, s, sink),
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, &item(path, i), sink);
            }
        }
        Value::Mapping(m) => {
            let mut doomed = Vec::new();
            for (k, v) in m.iter_mut() {
                let Some(key) = k.as_str() else { continue };
                let p = child(path, key);
                let named_secret = SECRET_FIELDS.contains(&key.to_ascii_lowercase().as_str());
                match v {
                    Value::String(s) if named_secret => {
                        report(&p, s, sink);
                        doomed.push(k.clone());
                    }
                    _ => walk(v, &p, sink),
                }
            }
            for k in doomed {
                m.remove(&k);
            }
        }
        _ => {}
    }
}

fn report(path: &str, value: &str, sink: &mut Sink<'_>) {
    let d = PackDiagnostic::error(
        DiagnosticCode::SecretInPack,
        path,
        "a credential is written into the pack",
    )
    .found(redact_secret(value))
    .expected("the name of an environment variable")
    .help("put the key in an environment variable and name it with `api_key_env` (for example `api_key_env: OPENAI_API_KEY`)");
    sink.emit(d, false);
}
