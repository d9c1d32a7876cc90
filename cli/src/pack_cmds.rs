//! Local pack commands: `validate`, `hash`, `diff` and `test`. They read files and need no
//! server. Exit codes: 0 fine, 1 the pack (or a test) is wrong, 2 usage.

use std::process::ExitCode;

use policy_engine::diff::diff;
use policy_engine::testing::run_tests;
use policy_engine::{load, validate_text, CompileOptions, Diagnostics, LoadedPack};

use crate::render;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    #[default]
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ValidateArgs {
    /// Pack files to check.
    #[arg(required = true)]
    files: Vec<String>,
    /// Check only this environment's resolved pack (default: the base and every environment).
    #[arg(long, short)]
    environment: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub(crate) struct HashArgs {
    file: String,
    /// Print the hash of what this environment enforces instead of the whole pack's identity.
    #[arg(long, short)]
    environment: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DiffArgs {
    /// `OLD NEW` pack files, one file with `--from-env` and `--to-env`, or `PACK V1 V2` to diff
    /// two versions in the control plane's registry.
    #[arg(required = true, num_args = 1..=3)]
    files: Vec<String>,
    /// Resolve both packs for this environment.
    #[arg(long, short)]
    environment: Option<String>,
    /// With one file: the environment on the old side.
    #[arg(long, requires = "to_env")]
    from_env: Option<String>,
    /// With one file: the environment on the new side.
    #[arg(long, requires = "from_env")]
    to_env: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    cp: crate::cp_client::CpArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    file: String,
    #[arg(long, short)]
    environment: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Validation and `palisade test` compile with a stand-in HMAC key: the real key is a secret of
/// the gateway's environment, and checking a pack must not need it.
fn offline_options() -> CompileOptions {
    CompileOptions {
        pii_hash_key: Some(b"palisade-offline-validation-key".to_vec()),
    }
}

fn read(file: &str) -> Result<String, ExitCode> {
    std::fs::read_to_string(file).map_err(|e| {
        eprintln!("error: cannot read {file}: {e}");
        ExitCode::FAILURE
    })
}

/// Load a file or print its diagnostics.
fn load_file(file: &str) -> Result<(String, LoadedPack), ExitCode> {
    let text = read(file)?;
    match load(&text) {
        Ok(p) => Ok((text, p)),
        Err(d) => {
            eprint!("{}", render::human(file, &text, &d));
            Err(ExitCode::FAILURE)
        }
    }
}

pub(crate) fn validate(args: &ValidateArgs) -> ExitCode {
    let mut failed = false;
    let mut json = Vec::new();
    for file in &args.files {
        let Ok(text) = read(file) else {
            failed = true;
            continue;
        };
        let (pack, diags) = match &args.environment {
            None => validate_text(&text, &offline_options()),
            Some(env) => match load(&text) {
                Err(d) => (None, d),
                Ok(p) => {
                    let mut d = p.warnings.clone();
                    if let Err(e) = p.compile(Some(env), &offline_options()) {
                        d.0.extend(e.0);
                    }
                    (Some(p), d)
                }
            },
        };
        let ok = !diags.has_errors();
        failed |= !ok;
        match args.format {
            Format::Human => {
                eprint!("{}", render::human(file, &text, &diags));
                if let (true, Some(p)) = (ok, &pack) {
                    println!(
                        "ok: {file}: pack {} {} ({} warning(s)), hash {}",
                        p.document.pack.name,
                        p.document.pack.version,
                        diags.warnings().count(),
                        p.hash
                    );
                } else {
                    println!(
                        "failed: {file}: {} error(s), {} warning(s)",
                        diags.errors().count(),
                        diags.warnings().count()
                    );
                }
            }
            Format::Json => json.push(serde_json::json!({
                "file": file,
                "ok": ok,
                "pack": pack.as_ref().map(|p| &p.document.pack.name),
                "version": pack.as_ref().map(|p| &p.document.pack.version),
                "hash": pack.as_ref().filter(|_| ok).map(|p| p.hash.to_string()),
                "diagnostics": diags,
            })),
        }
    }
    if args.format == Format::Json {
        println!("{}", serde_json::Value::Array(json));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub(crate) fn hash(args: &HashArgs) -> ExitCode {
    let (_, pack) = match load_file(&args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match &args.environment {
        None => println!("{}  {}", pack.hash, args.file),
        Some(env) => match pack.resolve(Some(env)) {
            Ok(doc) => println!(
                "{}  {} (environment {env})",
                policy_engine::canonical::effective_hash(doc),
                args.file
            ),
            Err(d) => return fail(&args.file, &d),
        },
    }
    ExitCode::SUCCESS
}

pub(crate) fn diff_cmd(args: &DiffArgs) -> ExitCode {
    let (old_file, new_file) = match args.files.as_slice() {
        [one] => (one, one),
        [a, b] => (a, b),
        [pack, v1, v2] => {
            let env = args.environment.as_deref();
            return crate::cp_cmds::remote_diff(&args.cp, pack, v1, v2, env, args.format);
        }
        _ => return ExitCode::from(2),
    };
    if args.files.len() == 1 && args.from_env.is_none() {
        eprintln!("error: with one file, name the two environments with --from-env and --to-env");
        return ExitCode::from(2);
    }
    let (old_env, new_env) = match (&args.from_env, &args.to_env) {
        (Some(a), Some(b)) => (Some(a.as_str()), Some(b.as_str())),
        _ => (args.environment.as_deref(), args.environment.as_deref()),
    };
    let (_, old) = match load_file(old_file) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let (_, new) = match load_file(new_file) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let (a, b) = match (old.resolve(old_env), new.resolve(new_env)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(d), _) => return fail(old_file, &d),
        (_, Err(d)) => return fail(new_file, &d),
    };
    let d = diff(a, b);
    match args.format {
        Format::Human => println!("{d}"),
        Format::Json => println!(
            "{}",
            serde_json::json!({ "changes": d.changes, "summary": d.summary, "overall": d.overall() })
        ),
    }
    ExitCode::SUCCESS
}

pub(crate) fn test(args: &TestArgs) -> ExitCode {
    let (text, pack) = match load_file(&args.file) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let compiled = match pack.compile(args.environment.as_deref(), &offline_options()) {
        Ok(c) => c,
        Err(d) => {
            eprint!("{}", render::human(&args.file, &text, &d));
            return ExitCode::FAILURE;
        }
    };
    let report = run_tests(&compiled);
    match args.format {
        Format::Json => println!("{}", serde_json::json!(report)),
        Format::Human => {
            let env = args.environment.as_deref().unwrap_or("base");
            for o in &report.outcomes {
                println!(
                    "test {} ... {}",
                    o.name,
                    if o.passed { "ok" } else { "FAILED" }
                );
                for p in &o.problems {
                    println!("    {p}");
                }
            }
            println!(
                "\npack {} {} ({env}): {} passed, {} failed; {} for other environments",
                compiled.name,
                compiled.version,
                report.passed,
                report.failed,
                report.not_applicable
            );
        }
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fail(file: &str, d: &Diagnostics) -> ExitCode {
    eprint!("{}", render::human(file, "", d));
    ExitCode::FAILURE
}
