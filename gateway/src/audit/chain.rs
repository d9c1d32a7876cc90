//! The hash chain: how one line is sealed, and how a sequence of lines is checked.
//!
//! A line is the compact JSON of [`LineBody`] (which ends with `prev_hash`) with
//! `,"hash":"<64 hex>"` spliced in before the closing brace, where the hash is SHA-256 of the
//! body's exact bytes. Verification therefore needs no canonicalisation: it cuts the hash field
//! off the line and hashes what remains, so any edited byte is caught, and `prev_hash` plus `seq`
//! catch a removed or reordered line. The first line ever written links to [`GENESIS`].
//!
//! What this does not prove: that the newest lines were not cut off the end together (no later
//! line links to them). Operators compare the last hash `palisade audit verify` prints with one
//! recorded elsewhere (a metric, a ticket) when that matters.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::AuditRecord;

/// `prev_hash` of the first line of a new log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Length of the `,"hash":"…"}` suffix every sealed line ends with.
const SUFFIX_LEN: usize = ",\"hash\":\"\"}".len() + 64;

/// Everything a line says, in its serialisation order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineBody {
    /// Position in the chain, from 1, never reset (not by rotation, not by restarts).
    pub seq: u64,
    /// When the writer wrote it (RFC 3339, UTC, milliseconds).
    pub ts: String,
    pub kind: LineKind,
    /// Records dropped (queue full under `on_queue_full: drop`) since the previous line, so a gap
    /// is visible in the chain itself.
    pub dropped_before: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<AuditRecord>,
    /// For writer events: what happened (`started`, `recovered: discarded 31 bytes`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// On a `gap` line: records that could not be written (a failed write, a full disk) since
    /// the previous line. The chain links over them, so a gap is told apart from a removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_before: Option<u64>,
    pub prev_hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Request,
    /// The writer started, continuing the chain (or starting it).
    Started,
    /// The writer found a torn tail left by a crash and cut it off before continuing.
    Recovered,
    /// Writing resumed after failed writes; `lost_before` counts the records that were lost.
    Gap,
}

/// Seal `body` into one line (without the trailing newline) and return it with its hash.
///
/// The JSON is written by hand (`line.rs`: the same bytes as `serde_json`, in a fraction of the
/// time); the error is kept for callers, and for a line that would not be UTF-8 (not reached).
pub fn seal(body: &LineBody) -> Result<(String, String), serde_json::Error> {
    let mut line = Vec::with_capacity(1024);
    super::line::write(body, &mut line);
    let hash = hex(&Sha256::digest(&line));
    line.pop(); // the closing brace
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}");
    let line = String::from_utf8(line).map_err(<serde_json::Error as serde::ser::Error>::custom)?;
    Ok((line, hash))
}

/// A line that checked out on its own: its body and its hash.
#[derive(Debug, Clone)]
pub struct Checked {
    pub body: LineBody,
    pub hash: String,
}

/// Why a single line does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("the line has no hash field at its end (truncated or not an audit line)")]
    NoHash,
    #[error("the line's content does not match its hash (the record was edited)")]
    HashMismatch,
    #[error("the line is not valid audit JSON: {0}")]
    Malformed(String),
}

/// Check one line's own hash and parse it.
pub fn check_line(line: &str) -> Result<Checked, LineError> {
    if line.len() < SUFFIX_LEN + 2 || !line.ends_with("\"}") {
        return Err(LineError::NoHash);
    }
    let cut = line.len() - SUFFIX_LEN;
    let (body, suffix) = line.split_at(cut);
    let Some(hash) = suffix
        .strip_prefix(",\"hash\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
    else {
        return Err(LineError::NoHash);
    };
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LineError::NoHash);
    }
    let mut bytes = Vec::with_capacity(body.len() + 1);
    bytes.extend_from_slice(body.as_bytes());
    bytes.push(b'}');
    if hex(&Sha256::digest(&bytes)) != hash {
        return Err(LineError::HashMismatch);
    }
    let body: LineBody =
        serde_json::from_slice(&bytes).map_err(|e| LineError::Malformed(e.to_string()))?;
    Ok(Checked {
        body,
        hash: hash.to_owned(),
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(seq: u64, prev: &str) -> LineBody {
        LineBody {
            seq,
            ts: "2026-11-22T03:00:00.000Z".to_owned(),
            kind: LineKind::Request,
            dropped_before: 0,
            record: Some(AuditRecord {
                request_id: format!("req-{seq}"),
                ..AuditRecord::default()
            }),
            note: None,
            lost_before: None,
            prev_hash: prev.to_owned(),
        }
    }

    #[test]
    fn a_sealed_line_checks_out_and_links() {
        let (line, hash) = seal(&body(1, GENESIS)).unwrap();
        let c = check_line(&line).unwrap();
        assert_eq!(c.hash, hash);
        assert_eq!(c.body, body(1, GENESIS));
        assert!(line.ends_with(&format!(",\"hash\":\"{hash}\"}}")));
    }

    #[test]
    fn an_edited_byte_is_a_hash_mismatch() {
        let (line, _) = seal(&body(1, GENESIS)).unwrap();
        let edited = line.replace("req-1", "req-2");
        assert_eq!(check_line(&edited).unwrap_err(), LineError::HashMismatch);
    }

    #[test]
    fn a_torn_line_has_no_hash() {
        let (line, _) = seal(&body(1, GENESIS)).unwrap();
        assert_eq!(
            check_line(&line[..line.len() - 10]).unwrap_err(),
            LineError::NoHash
        );
        assert_eq!(check_line("").unwrap_err(), LineError::NoHash);
    }
}
