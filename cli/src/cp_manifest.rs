//! `palisade export` and `palisade import`: move what one environment runs to another
//! installation as a reviewable manifest file.
//!
//! `export --environment E [--file F]` writes the manifest YAML (to stdout without `--file`).
//! `import --file F --environment E [--dry-run] [--replace]` sends the file's exact text to the
//! control plane, which checks, plans and applies it in one transaction (see the control plane's
//! `import` module). The output lists what `--replace` deactivates first, then what is added,
//! modified (with the semantic diff) and unchanged, then the counts. Exit codes: 0 done or, for a
//! dry run, nothing would change; 2 a dry run found changes; 1 any error (the code, and for a pack
//! that does not compile its name and diagnostics, on stderr).

use std::process::ExitCode;

use control_plane::manifest::Manifest;
use http::Method;
use serde_json::{json, Value};

use crate::cp_client::{CpArgs, CpClient};
use crate::pack_cmds::Format;

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The environment whose deployed packs to export.
    #[arg(long, short)]
    environment: String,
    /// Write the manifest here instead of to stdout.
    #[arg(long)]
    file: Option<String>,
    #[command(flatten)]
    cp: CpArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The manifest written by `palisade export`.
    #[arg(long)]
    file: String,
    /// The environment to bring to the manifest.
    #[arg(long, short)]
    environment: String,
    /// Print what would change and write nothing (exit 0: no change, 2: changes).
    #[arg(long)]
    dry_run: bool,
    /// Also deactivate the packs the environment runs that the manifest lacks.
    #[arg(long)]
    replace: bool,
    /// Why (recorded with the import; default names the manifest's hash).
    #[arg(long, default_value = "")]
    note: String,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    cp: CpArgs,
}

fn done(r: Result<ExitCode, ExitCode>) -> ExitCode {
    r.unwrap_or_else(|code| code)
}

pub(crate) fn export(args: &ExportArgs) -> ExitCode {
    done((|| {
        let c = CpClient::new(&args.cp)?;
        let path = format!("/v1/export?environment={}", args.environment);
        let out = c.expect_ok(Method::GET, &path, None)?;
        let manifest = serde_json::from_value::<Manifest>(out).map_err(|e| e.to_string());
        let (text, packs) = manifest
            .and_then(|m| Ok((m.to_yaml().map_err(|e| e.to_string())?, m.packs.len())))
            .map_err(|e| {
                eprintln!("error: the control plane sent an unreadable manifest: {e}");
                ExitCode::FAILURE
            })?;
        match &args.file {
            None => print!("{text}"),
            Some(f) => {
                std::fs::write(f, &text).map_err(|e| {
                    eprintln!("error: cannot write {f}: {e}");
                    ExitCode::FAILURE
                })?;
                eprintln!("exported {} to {f}", plural(packs, "pack"));
            }
        }
        Ok(ExitCode::SUCCESS)
    })())
}

pub(crate) fn import(args: &ImportArgs) -> ExitCode {
    done((|| {
        let c = CpClient::new(&args.cp)?;
        let text = std::fs::read_to_string(&args.file).map_err(|e| {
            eprintln!("error: cannot read {}: {e}", args.file);
            ExitCode::FAILURE
        })?;
        let body = json!({
            "manifest": text, "environment": args.environment,
            "dry_run": args.dry_run, "replace": args.replace, "note": args.note,
        });
        let out = c.expect_ok(Method::POST, "/v1/import", Some(&body))?;
        if args.format == Format::Json {
            println!("{out}");
        } else {
            render(&out, &args.environment);
        }
        let changes = out["changes"].as_u64().unwrap_or(0);
        Ok(if args.dry_run && changes > 0 {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    })())
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn short(hash: &Value) -> &str {
    hash.as_str().and_then(|h| h.get(..12)).unwrap_or("?")
}

/// The plan for a person: deactivations first, then additions, modifications with their diff,
/// unchanged packs, and the counts.
fn render(out: &Value, environment: &str) {
    let list = |k: &str| out[k].as_array().cloned().unwrap_or_default();
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("?").to_owned();
    if out["dry_run"] == json!(true) {
        println!("dry run: nothing was written");
    }
    for p in list("removed") {
        println!(
            "removed    {} {} (deactivated in {environment}: not in the manifest)",
            s(&p, "pack"),
            s(&p, "version")
        );
    }
    for p in list("added") {
        println!(
            "added      {} {} (hash {})",
            s(&p, "pack"),
            s(&p, "version"),
            short(&p["hash"])
        );
    }
    for p in list("modified") {
        let overall = p["diff"]["overall"].as_str().map(|o| format!(", {o}"));
        println!(
            "modified   {} {} → {} (hash {} → {}{})",
            s(&p, "pack"),
            s(&p["from"], "version"),
            s(&p["to"], "version"),
            short(&p["from"]["hash"]),
            short(&p["to"]["hash"]),
            overall.unwrap_or_default()
        );
        for line in p["diff"]["text"].as_str().unwrap_or("").lines() {
            println!("    {line}");
        }
    }
    for p in list("unchanged") {
        println!("unchanged  {} {}", s(&p, "pack"), s(&p, "version"));
    }
    let n = |k: &str| out["counts"][k].as_u64().unwrap_or(0);
    println!(
        "{} added, {} modified, {} unchanged, {} removed",
        n("added"),
        n("modified"),
        n("unchanged"),
        n("removed")
    );
}
