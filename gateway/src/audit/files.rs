//! The audit directory: daily files, retention, and finding where the chain ends.
//!
//! Files are named `audit-YYYY-MM-DD.jsonl` (UTC) and sort by name in time order. On start the
//! writer looks at the newest file: bytes after its last newline are a torn line left by a crash
//! and are cut off (and the cut is recorded in the chain); the last complete line must check out,
//! because continuing a chain from a corrupt line would hide the corruption — that is refused
//! with an error that says to run `palisade audit verify`.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::chain::{check_line, GENESIS};
use super::AuditError;

pub const PREFIX: &str = "audit-";
pub const SUFFIX: &str = ".jsonl";

/// The file for a UTC date `YYYY-MM-DD`.
pub fn file_for(dir: &Path, date: &str) -> PathBuf {
    dir.join(format!("{PREFIX}{date}{SUFFIX}"))
}

/// The date part of an audit file name, if it is one.
pub fn date_of(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    let date = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-').then_some(date)
}

/// Every audit file in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| date_of(p).is_some())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(AuditError::io(dir, e)),
    };
    files.sort();
    Ok(files)
}

/// Delete files dated before `cutoff` (`YYYY-MM-DD`); returns how many were removed.
pub fn apply_retention(dir: &Path, cutoff: &str) -> Result<usize, AuditError> {
    let mut removed = 0;
    for f in list(dir)? {
        if date_of(&f).is_some_and(|d| d < cutoff) {
            fs::remove_file(&f).map_err(|e| AuditError::io(&f, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Where the chain stands on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub last_seq: u64,
    pub last_hash: String,
    /// Bytes of a torn final line that were cut off, and from which file.
    pub discarded: Option<(PathBuf, u64)>,
}

/// How far back to look for the last complete line. A line is one request's decisions (plus the
/// redacted text when configured, bounded by the gateway's body limit), far below this.
const TAIL_WINDOW: u64 = 8 << 20;

/// Find the end of the chain in `dir`, cutting off a torn final line.
pub fn recover(dir: &Path) -> Result<Tail, AuditError> {
    let files = list(dir)?;
    for path in files.iter().rev() {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| AuditError::io(path, e))?;
        let len = file.metadata().map_err(|e| AuditError::io(path, e))?.len();
        if len == 0 {
            continue;
        }
        let start = len.saturating_sub(TAIL_WINDOW);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| AuditError::io(path, e))?;
        let mut buf = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
        file.read_to_end(&mut buf)
            .map_err(|e| AuditError::io(path, e))?;
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let torn = buf.len() - complete;
        let discarded = if torn > 0 {
            let keep = start + u64::try_from(complete).unwrap_or(0);
            file.set_len(keep).map_err(|e| AuditError::io(path, e))?;
            file.sync_all().map_err(|e| AuditError::io(path, e))?;
            Some((path.clone(), u64::try_from(torn).unwrap_or(0)))
        } else {
            None
        };
        if complete == 0 {
            // The file held only a torn line; the chain ends in an older file.
            if let Some(d) = discarded {
                let mut t = recover(dir)?;
                t.discarded = Some(d);
                return Ok(t);
            }
            continue;
        }
        let body = &buf[..complete - 1];
        let last = body
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(body, |i| &body[i + 1..]);
        let text = std::str::from_utf8(last).map_err(|_| AuditError::Corrupt {
            file: path.clone(),
            reason: "the last line is not UTF-8".to_owned(),
        })?;
        let checked = check_line(text).map_err(|e| AuditError::Corrupt {
            file: path.clone(),
            reason: format!("the last complete line does not verify: {e}"),
        })?;
        return Ok(Tail {
            last_seq: checked.body.seq,
            last_hash: checked.hash,
            discarded,
        });
    }
    Ok(Tail {
        last_seq: 0,
        last_hash: GENESIS.to_owned(),
        discarded: None,
    })
}
