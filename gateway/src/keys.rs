//! Who is calling: the caller keys file and the constant-time check of a presented key.
//!
//! The file (YAML or JSON, a list or `{keys: [...]}`) maps the SHA-256 of each caller's key to a
//! key id and a team; the gateway never sees or stores a key in clear. A presented
//! `Authorization: Bearer <key>` is hashed and compared against **every** entry with
//! `subtle`'s constant-time equality, with no early exit, so timing reveals neither which entry
//! matched nor how much of a hash did. That is O(number of keys) per request, a few ns per key;
//! a deployment with tens of thousands of keys would want a keyed index instead.
//!
//! Without a keys file the gateway runs anonymous ([`CallerAuth::Anonymous`]): any
//! Authorization header is ignored. The server refuses that mode on a non-loopback listener
//! (see `server`), which is not this module's concern.

use std::path::Path;
use std::sync::Arc;

use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub team: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    #[serde(default)]
    team: String,
    /// Hex SHA-256 of the key.
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum KeysFile {
    List(Vec<KeyEntry>),
    Wrapped { keys: Vec<KeyEntry> },
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read the keys file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the keys file {path} is not a list of {{id, team, sha256}}: {message}")]
    Parse { path: String, message: String },
    #[error("key `{id}` in {path}: sha256 must be 64 hex digits")]
    BadHash { path: String, id: String },
    #[error("key id `{id}` appears twice in {path}")]
    DuplicateId { path: String, id: String },
    #[error("the keys file {path} lists no keys")]
    Empty { path: String },
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub enum CallerAuth {
    /// Everyone is anonymous; Authorization headers are ignored.
    Anonymous,
    Keys(Arc<KeyTable>),
}

/// Caller key hashes with their identities.
#[derive(Debug)]
pub struct KeyTable {
    entries: Vec<([u8; 32], Arc<Caller>)>,
}

impl KeyTable {
    /// Read a keys file (YAML or JSON).
    pub fn from_file(path: &Path) -> Result<Self, KeysError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, KeysError> {
        let file: KeysFile = serde_yaml::from_str(text).map_err(|e| KeysError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let list = match file {
            KeysFile::List(l) | KeysFile::Wrapped { keys: l } => l,
        };
        if list.is_empty() {
            return Err(KeysError::Empty {
                path: path.to_owned(),
            });
        }
        let mut entries: Vec<([u8; 32], Arc<Caller>)> = Vec::with_capacity(list.len());
        for e in list {
            let hash = parse_hex32(&e.sha256).ok_or_else(|| KeysError::BadHash {
                path: path.to_owned(),
                id: e.id.clone(),
            })?;
            if entries.iter().any(|(_, c)| c.id == e.id) {
                return Err(KeysError::DuplicateId {
                    path: path.to_owned(),
                    id: e.id,
                });
            }
            let caller = Caller {
                id: e.id,
                team: e.team,
            };
            entries.push((hash, Arc::new(caller)));
        }
        Ok(Self { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller whose key hashes to the same digest, compared in constant time.
    pub fn lookup(&self, key: &[u8]) -> Option<Arc<Caller>> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found: Option<&Arc<Caller>> = None;
        for (hash, caller) in &self.entries {
            // Every entry is compared; the branch below only selects, it never exits early.
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(caller);
            }
        }
        found.cloned()
    }
}

impl CallerAuth {
    /// Authenticate a request from its headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<Caller>>, ApiError> {
        let table = match self {
            Self::Anonymous => return Ok(None),
            Self::Keys(t) => t,
        };
        // `Authorization: Bearer` (OpenAI's SDKs), or `x-api-key` (Anthropic's).
        const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");
        let key =
            match headers.get(http::header::AUTHORIZATION) {
                Some(value) => bearer(value.as_bytes()).ok_or(ApiError::InvalidApiKey(
                    "malformed Authorization header: expected `Bearer <key>`",
                ))?,
                None => match headers.get(X_API_KEY) {
                    Some(value) => Some(value.as_bytes().trim_ascii())
                        .filter(|k| !k.is_empty())
                        .ok_or(ApiError::InvalidApiKey("empty x-api-key header"))?,
                    None => return Err(ApiError::InvalidApiKey(
                        "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
                    )),
                },
            };
        table
            .lookup(key)
            .map(Some)
            .ok_or(ApiError::InvalidApiKey("incorrect API key provided"))
    }
}

fn bearer(value: &[u8]) -> Option<&[u8]> {
    let prefix = b"bearer ";
    if value.len() <= prefix.len() || !value[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let key = value[prefix.len()..].trim_ascii();
    (!key.is_empty()).then_some(key)
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Hex SHA-256 of a key, as written in a keys file.
pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> KeyTable {
        let yaml = format!(
            "- {{id: app-1, team: support, sha256: {}}}\n- {{id: app-2, team: sales, sha256: {}}}\n",
            sha256_hex("sk-one"),
            sha256_hex("sk-two")
        );
        KeyTable::parse(&yaml, "keys.yaml").unwrap()
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn a_listed_key_maps_to_its_id_and_team() {
        let auth = CallerAuth::Keys(Arc::new(table()));
        let c = auth
            .authenticate(&headers("Bearer sk-two"))
            .unwrap()
            .unwrap();
        assert_eq!((c.id.as_str(), c.team.as_str()), ("app-2", "sales"));
    }

    #[test]
    fn unknown_missing_and_malformed_keys_are_refused() {
        let auth = CallerAuth::Keys(Arc::new(table()));
        for h in [
            headers("Bearer sk-three"),
            headers("Basic abc"),
            HeaderMap::new(),
        ] {
            let err = auth.authenticate(&h).unwrap_err();
            assert_eq!(err.code(), "invalid_api_key");
        }
    }

    #[test]
    fn anonymous_mode_ignores_any_authorization() {
        assert!(CallerAuth::Anonymous
            .authenticate(&headers("Bearer whatever"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn json_wrapped_form_and_bad_hashes() {
        let json = format!(
            r#"{{"keys":[{{"id":"a","team":"t","sha256":"{}"}}]}}"#,
            sha256_hex("k")
        );
        assert_eq!(KeyTable::parse(&json, "k.json").unwrap().len(), 1);
        let bad = "- {id: a, team: t, sha256: abc}";
        assert!(matches!(
            KeyTable::parse(bad, "k.yaml"),
            Err(KeysError::BadHash { .. })
        ));
    }
}
