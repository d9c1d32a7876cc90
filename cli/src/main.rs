//! `palisade`: one binary for everything a person types.
//!
//! Each subcommand lives in its own module and returns an [`ExitCode`]; this file only parses
//! arguments and dispatches. Exit codes are part of the interface: 0 success, 1 a failure the
//! user must fix (bad pack, failing test), 2 usage errors (clap) or "changes found" where a
//! command documents it.

#![expect(
    clippy::print_stdout,
    reason = "a command-line tool prints its results"
)]

mod audit_cmd;
mod gateway_cmd;
mod pack_cmds;
mod render;
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
    /// Check pack files and print every diagnostic (exit 1 on any error).
    Validate(pack_cmds::ValidateArgs),
    /// Print a pack's content hash (its identity), or an environment's effective hash.
    Hash(pack_cmds::HashArgs),
    /// Semantic diff of two packs, or of one pack in two environments.
    Diff(pack_cmds::DiffArgs),
    /// Run a pack's `tests:` against the compiled pack (exit 1 on any failure).
    Test(pack_cmds::TestArgs),
    /// Read a gateway's audit log: verify its hash chain, tail it, query it.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Find PII in text on stdin and print the findings and the redacted text.
    Scan(scan::ScanArgs),
    /// Run the gateway: an OpenAI-compatible proxy enforcing a pack.
    Gateway(gateway_cmd::GatewayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => pack_cmds::validate(&args),
        Command::Hash(args) => pack_cmds::hash(&args),
        Command::Diff(args) => pack_cmds::diff_cmd(&args),
        Command::Test(args) => pack_cmds::test(&args),
        Command::Audit(cmd) => audit_cmd::run(&cmd),
        Command::Scan(args) => scan::run(&args),
        Command::Gateway(args) => gateway_cmd::run(args),
    }
}
