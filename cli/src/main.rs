//! `palisade`: one binary for everything a person types.
//!
//! Each subcommand lives in its own module and returns an [`ExitCode`]; this file only parses
//! arguments and dispatches. Exit codes are part of the interface: 0 success, 1 a failure the
//! user must fix (bad pack, failing test), 2 usage errors (clap) or "changes found" where a
//! command documents it.

mod scan;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Policy-enforcing gateway for LLM traffic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Find PII in text on stdin and print the findings and the redacted text.
    Scan(scan::ScanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Scan(args) => scan::run(&args),
    }
}
