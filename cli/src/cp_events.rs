//! `palisade events`, `palisade events summary` and `palisade escalations …`: the runtime view.
//!
//! `events` lists decision events newest first (one page, `--limit`), or with `--follow` prints
//! them as they arrive, oldest first, until interrupted: it reads in the control plane's receive
//! order (not the events' own times, so a batch that arrives late is not missed), re-reads a
//! short margin on every poll and skips request ids it already printed. `events summary` prints per version the requests, the error, escalation and block
//! rates, the outcomes and the PII findings by side over a window.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use http::Method;
use serde_json::{json, Value};

use crate::cp_client::{printable, CpArgs, CpClient};
use crate::pack_cmds::Format;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct EventsArgs {
    #[command(subcommand)]
    summary: Option<EventsCommand>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Counts by outcome and PII entity per pack version over a window, with the error,
    /// escalation and block rates.
    Summary(SummaryArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[arg(long, short)]
    environment: Option<String>,
    #[arg(long)]
    pack: Option<String>,
    /// A pack version.
    #[arg(long)]
    version: Option<String>,
    /// allowed, redacted, logged, escalated, degraded, blocked, budget_refused, rejected,
    /// upstream_error, internal_error or cancelled.
    #[arg(long)]
    outcome: Option<String>,
    /// Only events with a finding of this PII entity (e.g. email).
    #[arg(long)]
    entity: Option<String>,
    /// A caller key id.
    #[arg(long)]
    caller: Option<String>,
    #[arg(long)]
    team: Option<String>,
    /// Asked for or served.
    #[arg(long)]
    model: Option<String>,
    /// How far back (15m, 2h) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Events at most this many (newest first); with --follow, the backlog printed first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Keep printing events as they arrive (Ctrl-C stops).
    #[arg(long, short)]
    follow: bool,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    cp: CpArgs,
}

#[derive(Debug, clap::Args)]
struct SummaryArgs {
    #[arg(long, short)]
    environment: String,
    #[arg(long)]
    pack: Option<String>,
    /// How far back (15m, 2h) or an RFC 3339 time.
    #[arg(long, default_value = "1h")]
    since: String,
    /// `version`: one row per pack version; `total`: one row.
    #[arg(long, default_value = "version")]
    by: String,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    cp: CpArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EscalationsCommand {
    /// Escalations, oldest first.
    List {
        #[arg(long, short)]
        environment: Option<String>,
        /// open, acknowledged or resolved.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        #[command(flatten)]
        cp: CpArgs,
    },
    /// One escalation with the event that opened it.
    Show {
        id: String,
        #[command(flatten)]
        cp: CpArgs,
    },
    /// Take an open escalation (deployer or admin).
    Ack {
        id: String,
        /// Who works on it (default: your key's id).
        #[arg(long)]
        assignee: Option<String>,
        #[command(flatten)]
        cp: CpArgs,
    },
    /// Close an escalation: expected, false_positive or policy_change_needed.
    Resolve {
        id: String,
        #[arg(long = "as", value_name = "RESOLUTION")]
        resolution: String,
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        cp: CpArgs,
    },
}

/// `k=v&…` with every value percent-encoded; pairs without a value are left out.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        let Some(v) = v else { continue };
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn done(r: Result<ExitCode, ExitCode>) -> ExitCode {
    r.unwrap_or_else(|code| code)
}

pub(crate) fn events(args: &EventsArgs) -> ExitCode {
    match &args.summary {
        Some(EventsCommand::Summary(s)) => done(summary(s)),
        None => done(list(&args.list)),
    }
}

fn list(a: &ListArgs) -> Result<ExitCode, ExitCode> {
    let c = CpClient::new(&a.cp)?;
    let limit = a.limit.clamp(1, 1000).to_string();
    let path = |limit: &str, received_after: Option<String>| {
        let q = query(&[
            ("environment", a.environment.as_deref()),
            ("pack", a.pack.as_deref()),
            ("version", a.version.as_deref()),
            ("outcome", a.outcome.as_deref()),
            ("entity", a.entity.as_deref()),
            ("caller", a.caller.as_deref()),
            ("team", a.team.as_deref()),
            ("model", a.model.as_deref()),
            ("since", a.since.as_deref()),
            ("limit", Some(limit)),
            ("received_after", received_after.as_deref()),
        ]);
        format!("/v1/events{q}")
    };
    let out = c.expect_ok(Method::GET, &path(&limit, None), None)?;
    let mut page: Vec<Value> = out["events"].as_array().cloned().unwrap_or_default();
    if !a.follow {
        if a.format == Format::Json {
            println!("{out}");
        } else {
            header();
            for e in &page {
                line(e);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.format == Format::Human {
        header();
    }
    // The backlog oldest first, then pages in the order the control plane received events.
    // Each poll starts MARGIN before the newest receive time seen (a commit of another process
    // may land a little out of order) and skips ids already printed.
    const MARGIN_MS: i64 = 2_000;
    page.reverse();
    let mut seen: HashMap<String, i64> = HashMap::new();
    // What was received before the first answer is the backlog's, not the follow's.
    let started = out["now_ms"].as_i64().unwrap_or(0);
    let mut newest = started;
    let mut cursor = format!("{started}.");
    loop {
        let full = page.len() >= 1000;
        for e in &page {
            let id = e["request_id"].as_str().unwrap_or_default().to_owned();
            let received = e["received_at_ms"].as_i64().unwrap_or(0);
            if full {
                cursor = format!("{received}.{id}");
            }
            if seen.insert(id, received).is_some() {
                continue;
            }
            newest = newest.max(received);
            match a.format {
                Format::Json => println!("{e}"),
                Format::Human => line(e),
            }
        }
        std::io::Write::flush(&mut std::io::stdout()).ok();
        if !full {
            seen.retain(|_, r| *r >= newest - 2 * MARGIN_MS);
            c.sleep(Duration::from_millis(500));
            cursor = format!("{}.", (newest - MARGIN_MS).max(started));
        }
        let out = c.expect_ok(Method::GET, &path("1000", Some(cursor.clone())), None)?;
        page = out["events"].as_array().cloned().unwrap_or_default();
    }
}

fn header() {
    println!(
        "{:<24} {:<10} {:<10} {:<14} {:>6} {:<14} {:<12} {:<32} PII",
        "TIME", "ENV", "VERSION", "OUTCOME", "STATUS", "MODEL", "CALLER", "REQUEST"
    );
}

fn findings(e: &Value) -> String {
    let mut parts = Vec::new();
    for side in ["request", "response"] {
        if let Some(map) = e["pii"][side].as_object() {
            for (entity, n) in map {
                parts.push(format!("{side}:{entity}={n}"));
            }
        }
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

fn line(e: &Value) {
    let s = |k: &str| printable(e[k].as_str().unwrap_or("-")).into_owned();
    let model = match (e["model_requested"].as_str(), e["model_used"].as_str()) {
        (Some(a), Some(b)) if a != b => format!("{a}→{b}"),
        (Some(a), _) | (None, Some(a)) => a.to_owned(),
        (None, None) => "-".to_owned(),
    };
    println!(
        "{:<24} {:<10} {:<10} {:<14} {:>6} {:<14} {:<12} {:<32} {}",
        s("at"),
        s("environment"),
        s("version"),
        s("outcome"),
        e["status"].as_i64().unwrap_or(0),
        printable(&model),
        s("caller"),
        s("request_id"),
        printable(&findings(e)),
    );
}

fn pct(v: &Value) -> String {
    format!("{:.2} %", v.as_f64().unwrap_or(0.0) * 100.0)
}

fn summary(a: &SummaryArgs) -> Result<ExitCode, ExitCode> {
    let c = CpClient::new(&a.cp)?;
    let q = query(&[
        ("environment", Some(a.environment.as_str())),
        ("pack", a.pack.as_deref()),
        ("since", Some(a.since.as_str())),
        ("by", Some(a.by.as_str())),
    ]);
    let out = c.expect_ok(Method::GET, &format!("/v1/events/summary{q}"), None)?;
    if a.format == Format::Json {
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} from {} to {}",
        out["environment"].as_str().unwrap_or("?"),
        out["since"].as_str().unwrap_or("?"),
        out["until"].as_str().unwrap_or("?")
    );
    let rows = out["rows"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no events in this window");
    }
    println!(
        "{:<12} {:<10} {:<14} {:>9} {:>9} {:>11} {:>9}",
        "PACK", "VERSION", "HASH", "REQUESTS", "ERRORS", "ESCALATED", "BLOCKED"
    );
    for r in &rows {
        let hash = r["hash"].as_str().unwrap_or("?");
        println!(
            "{:<12} {:<10} {:<14} {:>9} {:>9} {:>11} {:>9}",
            printable(r["pack"].as_str().unwrap_or("?")),
            printable(r["version"].as_str().unwrap_or("?")),
            hash.get(..12).unwrap_or(hash),
            r["requests"].as_i64().unwrap_or(0),
            pct(&r["rates"]["error"]),
            pct(&r["rates"]["escalation"]),
            pct(&r["rates"]["block"]),
        );
        let outcomes: Vec<String> = r["outcomes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("    outcomes: {}", outcomes.join(", "));
        for side in ["request", "response"] {
            let found: Vec<String> = r["findings"][side]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if !found.is_empty() {
                println!("    {side} findings: {}", found.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn escalations(cmd: &EscalationsCommand) -> ExitCode {
    done((|| match cmd {
        EscalationsCommand::List {
            environment,
            state,
            limit,
            format,
            cp,
        } => {
            let c = CpClient::new(cp)?;
            let limit = limit.to_string();
            let q = query(&[
                ("environment", environment.as_deref()),
                ("state", state.as_deref()),
                ("limit", Some(limit.as_str())),
            ]);
            let out = c.expect_ok(Method::GET, &format!("/v1/escalations{q}"), None)?;
            if *format == Format::Json {
                println!("{out}");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<32} {:<10} {:<10} {:<13} {:<24} {:<14} RESOLUTION",
                "ID", "ENV", "VERSION", "STATE", "OPENED", "ASSIGNEE"
            );
            for e in out["escalations"].as_array().into_iter().flatten() {
                let s = |k: &str| printable(e[k].as_str().unwrap_or("-")).into_owned();
                println!(
                    "{:<32} {:<10} {:<10} {:<13} {:<24} {:<14} {}",
                    s("id"),
                    s("environment"),
                    s("version"),
                    s("state"),
                    s("opened_at"),
                    s("assignee"),
                    s("resolution")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        EscalationsCommand::Show { id, cp } => {
            let c = CpClient::new(cp)?;
            let out = c.expect_ok(Method::GET, &format!("/v1/escalations{}", path(id)), None)?;
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        EscalationsCommand::Ack { id, assignee, cp } => {
            let c = CpClient::new(cp)?;
            let out = c.expect_ok(
                Method::POST,
                &format!("/v1/escalations{}/ack", path(id)),
                Some(&json!({ "assignee": assignee })),
            )?;
            println!(
                "{} acknowledged, assigned to {}",
                printable(id),
                printable(out["assignee"].as_str().unwrap_or("?"))
            );
            Ok(ExitCode::SUCCESS)
        }
        EscalationsCommand::Resolve {
            id,
            resolution,
            note,
            cp,
        } => {
            let c = CpClient::new(cp)?;
            c.expect_ok(
                Method::POST,
                &format!("/v1/escalations{}/resolve", path(id)),
                Some(&json!({ "resolution": resolution, "note": note })),
            )?;
            println!("{} resolved as {}", printable(id), printable(resolution));
            Ok(ExitCode::SUCCESS)
        }
    })())
}

/// `/ID` with the id percent-encoded as one path segment.
fn path(id: &str) -> String {
    format!("/{}", query(&[("x", Some(id))]).trim_start_matches("?x="))
}
