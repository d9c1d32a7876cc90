//! `palisade audit verify|tail|query`: the operator's view of a gateway's audit directory.
//!
//! All three read files only; they never need the gateway to be running. `verify` exits 1 on
//! the first broken link and prints where it is; `tail` and `query` print raw lines (JSON), so
//! their output can go straight into `jq` or back into `verify`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use gateway::audit::chain::{check_line, Checked};
use gateway::audit::files;
use gateway::audit::verify::verify_dir;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Recompute every hash and link; report the first broken one (exit 1) or the count.
    Verify {
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: crate::pack_cmds::Format,
    },
    /// Print the last N records.
    Tail {
        dir: PathBuf,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Print the records that match every filter given.
    Query {
        dir: PathBuf,
        /// An RFC 3339 time (2026-11-22T10:00:00Z) or a duration back from now (90m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Caller key id.
        #[arg(long)]
        key: Option<String>,
        /// An outcome (`blocked_pii`, `redacted`, …) or a policy decision (`escalate`, `degrade`, …).
        #[arg(long)]
        action: Option<String>,
    },
}

pub(crate) fn run(cmd: &AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify { dir, format } => verify(dir, *format),
        AuditCommand::Tail { dir, lines } => tail(dir, *lines),
        AuditCommand::Query {
            dir,
            since,
            key,
            action,
        } => query(dir, since.as_deref(), key.as_deref(), action.as_deref()),
    }
}

fn verify(dir: &std::path::Path, format: crate::pack_cmds::Format) -> ExitCode {
    let result = verify_dir(dir);
    if format == crate::pack_cmds::Format::Json {
        let v = match &result {
            Ok(r) => serde_json::json!({ "ok": true, "report": r }),
            Err(e) => serde_json::json!({ "ok": false, "error": e }),
        };
        println!("{v}");
    }
    match result {
        Ok(r) => {
            if format == crate::pack_cmds::Format::Human {
                let start = if r.starts_at_genesis {
                    "from the first record".to_owned()
                } else {
                    format!(
                        "from seq {} (older files removed by retention)",
                        r.first_seq
                    )
                };
                println!(
                    "ok: {} records ({} requests, {} dropped under pressure) in {} file(s) verified {start}; last seq {}, last hash {}",
                    r.lines, r.requests, r.dropped, r.files, r.last_seq, r.last_hash
                );
                for g in &r.gaps {
                    println!(
                        "gap: {} record(s) lost before seq {} ({}:{}): {}",
                        g.lost,
                        g.seq,
                        g.file.display(),
                        g.line,
                        g.note
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if format == crate::pack_cmds::Format::Human {
                eprintln!("broken: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Every checked line of the directory, oldest first. Unreadable lines are skipped here; `verify`
/// is the command that judges them.
fn lines(dir: &std::path::Path) -> Result<impl Iterator<Item = (String, Checked)>, ExitCode> {
    let paths = files::list(dir).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })?;
    Ok(paths
        .into_iter()
        .filter_map(|p| std::fs::File::open(p).ok())
        .flat_map(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| check_line(&l).ok().map(|c| (l, c)))
        }))
}

fn tail(dir: &std::path::Path, n: usize) -> ExitCode {
    let all = match lines(dir) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let mut last: VecDeque<String> = VecDeque::with_capacity(n);
    for (line, _) in all {
        if last.len() == n {
            last.pop_front();
        }
        last.push_back(line);
    }
    print_lines(last)
}

fn query(
    dir: &std::path::Path,
    since: Option<&str>,
    key: Option<&str>,
    action: Option<&str>,
) -> ExitCode {
    let since = match since.map(parse_since).transpose() {
        Ok(s) => s.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        Err(e) => {
            eprintln!("error: --since: {e}");
            return ExitCode::from(2);
        }
    };
    let all = match lines(dir) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let matching = all.filter(|(_, c)| {
        let Some(r) = &c.body.record else {
            return false;
        };
        since
            .as_ref()
            .is_none_or(|s| c.body.ts.as_str() >= s.as_str())
            && key.is_none_or(|k| r.caller.key_id.as_deref() == Some(k))
            && action.is_none_or(|a| {
                r.outcome.as_str() == a
                    || r.policies.iter().any(|p| p.decision == a)
                    || (a == "escalate" && r.escalated)
            })
    });
    print_lines(matching.map(|(l, _)| l))
}

fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is neither an RFC 3339 time nor a duration ({e})"))?;
    SystemTime::now()
        .checked_sub(d)
        .ok_or_else(|| format!("`{s}` reaches before 1970"))
}

fn print_lines(lines: impl IntoIterator<Item = String>) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for l in lines {
        if writeln!(out, "{l}").is_err() {
            return ExitCode::FAILURE; // a closed pipe (`| head`) is not worth a panic
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
