//! `palisade audit verify`: walk an audit directory and name the first broken link.
//!
//! Every line's own hash is recomputed (an edited record fails), and each line must follow the
//! previous one: `seq` exactly one more, `prev_hash` equal to the previous line's hash. A missing
//! line shows as a jump in `seq`, a reordered one as `seq` going backwards; both are reported with
//! the file and line number. The oldest remaining file may start mid-chain when retention deleted
//! older days; the report says so rather than calling it broken. Records lost to failed writes
//! (a full disk) are not a break either: the writer links over them with a `gap` line that
//! counts them, and the report lists each gap.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::chain::{check_line, LineError, LineKind, GENESIS};
use super::files;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub files: usize,
    pub lines: u64,
    pub requests: u64,
    /// Records dropped under `on_queue_full: drop`, as counted in the chain.
    pub dropped: u64,
    /// Records lost to failed writes (a full disk), as counted by the chain's `gap` lines.
    pub lost: u64,
    /// Each `gap` line: where writing resumed after failed writes, and what was lost.
    pub gaps: Vec<GapReport>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: String,
    /// False when the oldest file starts mid-chain (older days removed by retention).
    pub starts_at_genesis: bool,
}

/// Writing resumed after failed writes: the chain is whole, but `lost` records never reached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapReport {
    pub file: PathBuf,
    /// 1-based line number of the `gap` line in `file`.
    pub line: u64,
    pub seq: u64,
    pub lost: u64,
    /// The writer's account: when the first failed write happened, and its error.
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Broken {
    /// The line's content does not match its hash.
    Edited,
    /// `seq` jumps forward: lines were removed.
    Removed { missing: u64 },
    /// `seq` goes backwards or repeats.
    Reordered,
    /// `seq` follows but `prev_hash` does not match (a line was replaced with another chain's).
    Relinked,
    /// Not a sealed audit line at all (truncated, or foreign text).
    Unreadable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct VerifyError {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: u64,
    pub broken: Broken,
    pub message: String,
}

/// Verify every audit file in `dir`.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport::default();
    let mut prev: Option<(u64, String)> = None;
    let paths = files::list(dir).map_err(|e| VerifyError {
        file: dir.to_owned(),
        line: 0,
        broken: Broken::Unreadable,
        message: e.to_string(),
    })?;
    for path in paths {
        report.files += 1;
        let file = File::open(&path)
            .map_err(|e| err(&path, 0, Broken::Unreadable, format!("cannot open: {e}")))?;
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let n = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1);
            let line =
                line.map_err(|e| err(&path, n, Broken::Unreadable, format!("cannot read: {e}")))?;
            let checked = check_line(&line).map_err(|e| match e {
                LineError::HashMismatch => err(
                    &path,
                    n,
                    Broken::Edited,
                    "the record was edited: its content does not match its hash".to_owned(),
                ),
                other => err(&path, n, Broken::Unreadable, other.to_string()),
            })?;
            let (seq, prev_hash) = (checked.body.seq, &checked.body.prev_hash);
            match &prev {
                None => {
                    report.first_seq = seq;
                    report.starts_at_genesis = seq == 1 && prev_hash == GENESIS;
                }
                Some((p_seq, p_hash)) => {
                    if seq > p_seq + 1 && appears_later(&path, n, p_seq + 1) {
                        return Err(err(&path, n, Broken::Reordered, format!("records out of order: seq {seq} follows seq {p_seq}, and seq {} comes later", p_seq + 1)));
                    }
                    if seq > p_seq + 1 {
                        let missing = seq - p_seq - 1;
                        return Err(err(&path, n, Broken::Removed { missing }, format!("{missing} record(s) removed before this line: seq jumps from {p_seq} to {seq}")));
                    }
                    if seq <= *p_seq {
                        return Err(err(
                            &path,
                            n,
                            Broken::Reordered,
                            format!("records out of order: seq {seq} follows seq {p_seq}"),
                        ));
                    }
                    if prev_hash != p_hash {
                        return Err(err(&path, n, Broken::Relinked, "prev_hash does not match the previous record's hash: the chain was rewritten here".to_owned()));
                    }
                }
            }
            report.lines += 1;
            report.dropped += checked.body.dropped_before;
            if checked.body.kind == LineKind::Gap {
                let lost = checked.body.lost_before.unwrap_or(0);
                report.lost += lost;
                report.gaps.push(GapReport {
                    file: path.clone(),
                    line: n,
                    seq,
                    lost,
                    note: checked.body.note.clone().unwrap_or_default(),
                });
            }
            if checked.body.kind == LineKind::Request {
                report.requests += 1;
            }
            report.last_seq = seq;
            report.last_hash.clone_from(&checked.hash);
            prev = Some((seq, checked.hash));
        }
    }
    Ok(report)
}

/// Whether a line with `seq` stands after line `after` of `path` (only read on the error path).
fn appears_later(path: &Path, after: u64, seq: u64) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let skip = usize::try_from(after).unwrap_or(usize::MAX);
    BufReader::new(file)
        .lines()
        .skip(skip)
        .map_while(Result::ok)
        .any(|l| check_line(&l).is_ok_and(|c| c.body.seq == seq))
}

fn err(file: &Path, line: u64, broken: Broken, message: String) -> VerifyError {
    VerifyError {
        file: file.to_owned(),
        line,
        broken,
        message,
    }
}
