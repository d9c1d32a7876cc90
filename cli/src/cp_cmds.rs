//! Operator commands against the control plane's registry: `push`, `versions`, `diff PACK V1 V2`,
//! `deploy`, `promote`, `rollback`, `history`. Each is one API call rendered for a person, or
//! printed as JSON with `--format json`. Exit codes: 0 done (a no-op push included), 1 refused or
//! failed (the error code, diagnostics and every failing gate on stderr), 2 usage.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};

use crate::cp_client::{gate_lines, CpArgs, CpClient};
use crate::pack_cmds::Format;

#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    file: String,
    /// Why, and for which environment (required).
    #[arg(long)]
    note: String,
    #[command(flatten)]
    cp: CpArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct VersionsArgs {
    pack: String,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    cp: CpArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {
    pack: String,
    version: String,
    #[arg(long, short)]
    environment: String,
    #[arg(long)]
    note: String,
    /// After the move, wait up to this long (e.g. 30s) until every live gateway of the
    /// environment enforces the new version; exit 1 with their states if they do not.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    wait: Option<Duration>,
    #[command(flatten)]
    cp: CpArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PromoteArgs {
    pack: String,
    #[arg(long)]
    from: String,
    #[arg(long)]
    to: String,
    #[arg(long, required_unless_present = "check")]
    note: Option<String>,
    /// Evaluate and print every gate without promoting: exit 0 when all pass, 1 otherwise.
    #[arg(long, conflicts_with_all = ["note", "wait"])]
    check: bool,
    /// After the move, wait up to this long (e.g. 30s) until every live gateway of the
    /// environment enforces the new version; exit 1 with their states if they do not.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    wait: Option<Duration>,
    #[command(flatten)]
    cp: CpArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    pack: String,
    #[arg(long, short)]
    environment: String,
    /// The version to return to (default: the one the environment ran before the current).
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    note: String,
    /// After the move, wait up to this long (e.g. 30s) until every live gateway of the
    /// environment enforces the new version; exit 1 with their states if they do not.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    wait: Option<Duration>,
    #[command(flatten)]
    cp: CpArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct HistoryArgs {
    #[arg(long, short)]
    environment: Option<String>,
    #[arg(long)]
    pack: Option<String>,
    /// Check the admin log's hash chain instead of listing it (exit 1 when broken).
    #[arg(long)]
    verify: bool,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    cp: CpArgs,
}

fn client(cp: &CpArgs) -> Result<CpClient, ExitCode> {
    CpClient::new(cp)
}

fn done(r: Result<ExitCode, ExitCode>) -> ExitCode {
    r.unwrap_or_else(|code| code)
}

pub(crate) fn push(args: &PushArgs) -> ExitCode {
    done((|| {
        let c = client(&args.cp)?;
        let yaml = std::fs::read_to_string(&args.file).map_err(|e| {
            eprintln!("error: cannot read {}: {e}", args.file);
            ExitCode::FAILURE
        })?;
        let out = c.expect_ok(
            Method::POST,
            "/v1/packs",
            Some(&json!({ "yaml": yaml, "note": args.note })),
        )?;
        let s = |k: &str| out[k].as_str().unwrap_or("?").to_owned();
        match s("status").as_str() {
            "unchanged" => println!(
                "unchanged: {} {} is already in the registry (hash {})",
                s("pack"),
                s("version"),
                s("hash")
            ),
            _ => println!("pushed {} {} (hash {})", s("pack"), s("version"), s("hash")),
        }
        // The pack's tests per environment: a failing one means the version cannot be deployed
        // there (versions are immutable: fix the pack and push a new version).
        for (env, gate) in out["tests"].as_object().into_iter().flatten() {
            let detail = gate["detail"].as_str().unwrap_or("");
            if gate["passed"] == json!(true) {
                println!("  tests {env:<10} {detail}");
            } else {
                println!("  tests {env:<10} FAILED: {detail}; it cannot be deployed to {env}");
                for line in crate::cp_client::failed_tests(gate) {
                    println!("    {line}");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })())
}

pub(crate) fn versions(args: &VersionsArgs) -> ExitCode {
    done((|| {
        let c = client(&args.cp)?;
        let out = c.expect_ok(
            Method::GET,
            &format!("/v1/packs/{}/versions", args.pack),
            None,
        )?;
        if args.format == Format::Json {
            println!("{out}");
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<12} {:<14} {:<18} {:<25} NOTE",
            "VERSION", "HASH", "AUTHOR", "PUSHED"
        );
        for v in out["versions"].as_array().into_iter().flatten() {
            let f = |k: &str| crate::cp_client::printable(v[k].as_str().unwrap_or("")).into_owned();
            println!(
                "{:<12} {:<14} {:<18} {:<25} {}",
                f("version"),
                f("hash").get(..12).unwrap_or(""),
                f("author"),
                f("created_at"),
                f("note")
            );
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// `palisade diff PACK V1 V2`: the semantic diff of two registry versions.
pub(crate) fn remote_diff(
    cp: &CpArgs,
    pack: &str,
    from: &str,
    to: &str,
    environment: Option<&str>,
    format: Format,
) -> ExitCode {
    done((|| {
        let c = client(cp)?;
        let mut path = format!("/v1/packs/{pack}/diff?from={from}&to={to}");
        if let Some(e) = environment {
            path.push_str(&format!("&environment={e}"));
        }
        let out = c.expect_ok(Method::GET, &path, None)?;
        match format {
            Format::Json => println!(
                "{}",
                json!({ "changes": out["changes"], "summary": out["summary"], "overall": out["overall"] })
            ),
            Format::Human => println!("{}", out["text"].as_str().unwrap_or("")),
        }
        Ok(ExitCode::SUCCESS)
    })())
}

fn moved(out: &Value) {
    let p = &out["pointer"];
    let prev = out["previous"]["version"].as_str().unwrap_or("nothing");
    println!(
        "{} {}: {} {} → {} (hash {}), seq {}",
        p["action"].as_str().unwrap_or("?"),
        p["environment"].as_str().unwrap_or("?"),
        p["pack"].as_str().unwrap_or("?"),
        prev,
        p["version"].as_str().unwrap_or("?"),
        p["hash"].as_str().unwrap_or("?").get(..12).unwrap_or(""),
        p["seq"]
    );
}

/// Print the move and, with `--wait`, wait for the environment's gateways to enforce it.
fn moved_and_waited(c: &CpClient, out: &Value, wait: Option<Duration>) -> ExitCode {
    moved(out);
    let p = &out["pointer"];
    match (
        wait,
        p["environment"].as_str(),
        p["pack"].as_str(),
        p["hash"].as_str(),
    ) {
        (Some(limit), Some(env), Some(pack), Some(hash)) => wait_synced(c, env, pack, hash, limit),
        _ => ExitCode::SUCCESS,
    }
}

/// Poll the status until every live gateway of (env, pack) is SYNCED on `hash` (and there is at
/// least one), or `limit` passes: then print each gateway's state and fail.
fn wait_synced(c: &CpClient, env: &str, pack: &str, hash: &str, limit: Duration) -> ExitCode {
    let deadline = Instant::now() + limit;
    loop {
        let gateways =
            match c.expect_ok(Method::GET, &format!("/v1/status?environment={env}"), None) {
                Ok(out) => out["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["pack"] == pack)
                    .flat_map(|e| e["gateways"].as_array().cloned().unwrap_or_default())
                    .filter(|g| g["state"] != "OFFLINE")
                    .collect::<Vec<_>>(),
                Err(code) => return code,
            };
        let synced = |g: &Value| g["state"] == "SYNCED" && g["active"]["hash"] == hash;
        if !gateways.is_empty() && gateways.iter().all(synced) {
            println!("{env}: {} gateway(s) enforce it", gateways.len());
            return ExitCode::SUCCESS;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "error: not every gateway of {env} enforces it after {}",
                humantime::format_duration(limit)
            );
            if gateways.is_empty() {
                eprintln!("  no live gateway of {env} runs {pack}");
            }
            for g in &gateways {
                eprintln!(
                    "  {} {} (active {})",
                    crate::cp_client::printable(g["id"].as_str().unwrap_or("?")),
                    g["state"].as_str().unwrap_or("?"),
                    g["active"]["version"].as_str().unwrap_or("-")
                );
            }
            return ExitCode::FAILURE;
        }
        std::thread::park_timeout(Duration::from_millis(200));
    }
}

pub(crate) fn deploy(args: &DeployArgs) -> ExitCode {
    done((|| {
        let c = client(&args.cp)?;
        let body = json!({ "pack": args.pack, "version": args.version, "environment": args.environment, "note": args.note });
        let out = c.expect_ok(Method::POST, "/v1/deploy", Some(&body))?;
        Ok(moved_and_waited(&c, &out, args.wait))
    })())
}

pub(crate) fn promote(args: &PromoteArgs) -> ExitCode {
    done((|| {
        let c = client(&args.cp)?;
        if args.check {
            let path = format!(
                "/v1/promote/gates?pack={}&from={}&to={}",
                args.pack, args.from, args.to
            );
            let out = c.expect_ok(Method::GET, &path, None)?;
            let passed = out["all_passed"] == json!(true);
            println!(
                "promote {} {} from {} to {}: {}",
                args.pack,
                out["version"].as_str().unwrap_or("(none)"),
                args.from,
                args.to,
                if passed {
                    "every gate passes"
                } else {
                    "refused by its gates"
                }
            );
            for line in gate_lines(out["gates"].as_array().map_or(&[][..], Vec::as_slice)) {
                println!("{line}");
            }
            return Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        let body =
            json!({ "pack": args.pack, "from": args.from, "to": args.to, "note": args.note });
        let out = c.expect_ok(Method::POST, "/v1/promote", Some(&body))?;
        Ok(moved_and_waited(&c, &out, args.wait))
    })())
}

pub(crate) fn rollback(args: &RollbackArgs) -> ExitCode {
    done((|| {
        let c = client(&args.cp)?;
        let body = json!({ "pack": args.pack, "environment": args.environment, "to": args.to, "note": args.note });
        let out = c.expect_ok(Method::POST, "/v1/rollback", Some(&body))?;
        Ok(moved_and_waited(&c, &out, args.wait))
    })())
}

pub(crate) fn history(args: &HistoryArgs) -> ExitCode {
    done((|| {
        let c = client(&args.cp)?;
        if args.verify {
            let out = c.expect_ok(Method::GET, "/v1/history/verify", None)?;
            if args.format == Format::Json {
                println!("{out}");
            } else if out["ok"] == json!(true) {
                println!(
                    "ok: {} record(s), head {}",
                    out["records"],
                    out["head"].as_str().unwrap_or("")
                );
            } else {
                println!(
                    "BROKEN at record {}: {}",
                    out["broken_at"],
                    out["problem"].as_str().unwrap_or("")
                );
            }
            return Ok(if out["ok"] == json!(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        let mut path = "/v1/history?".to_owned();
        for (k, v) in [("environment", &args.environment), ("pack", &args.pack)] {
            if let Some(v) = v {
                path.push_str(&format!("{k}={v}&"));
            }
        }
        let out = c.expect_ok(Method::GET, &path, None)?;
        if args.format == Format::Json {
            println!("{out}");
            return Ok(ExitCode::SUCCESS);
        }
        for r in out["records"].as_array().into_iter().flatten() {
            let f =
                |k: &str| crate::cp_client::printable(r[k].as_str().unwrap_or("-")).into_owned();
            let d = &r["detail"];
            let what = d["version"]
                .as_str()
                .or(d["id"].as_str())
                .or(d["reason"].as_str())
                .unwrap_or("");
            let what = crate::cp_client::printable(what);
            println!(
                "{:>5} {} {:<18} {:<20} {:<8} {:<8} {:<10} {what}",
                r["seq"].as_i64().unwrap_or(0),
                f("at"),
                f("actor"),
                f("action"),
                f("outcome"),
                f("environment"),
                f("pack")
            );
        }
        Ok(ExitCode::SUCCESS)
    })())
}
