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
mod cp_client;
mod cp_cmds;
mod cp_events;
mod cp_fleet;
mod cp_manifest;
mod cp_server;
mod gateway_cmd;
mod gateway_policies;
mod pack_cmds;
mod render;
mod scan;
mod up;
mod up_mock;

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: the gateway allocates and frees small buffers on every
/// request, often on another thread than the one that allocated them (the audit writer); glibc
/// spent ~10 % of the gateway's CPU there (see benches/README.md, Gateway).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the control plane: registry, environments, gates, fleet status, admin log.
    ControlPlane(cp_server::ControlPlaneArgs),
    /// Push a pack version to the control plane's registry.
    Push(cp_cmds::PushArgs),
    /// List a pack's versions in the registry.
    Versions(cp_cmds::VersionsArgs),
    /// Point an environment at a pack version.
    Deploy(cp_cmds::DeployArgs),
    /// Promote the version one environment runs into the next, if every gate holds.
    Promote(cp_cmds::PromoteArgs),
    /// Move an environment's pointer back to a version it ran before.
    Rollback(cp_cmds::RollbackArgs),
    /// Desired version and every gateway's state, per environment and pack (exit 1 unless every
    /// environment with a desired version has live gateways, all SYNCED).
    Status(cp_fleet::StatusArgs),
    /// The control plane's admin log (and `--verify` of its hash chain).
    History(cp_cmds::HistoryArgs),
    /// Write the manifest of what an environment runs (pack versions, hashes, exact YAML).
    Export(cp_manifest::ExportArgs),
    /// Bring an environment to a manifest (additive; `--replace`, `--dry-run`: exit 2 on changes).
    Import(cp_manifest::ImportArgs),
    /// Decision events of the fleet (newest first, or --follow), and `events summary`: counts
    /// and rates per pack version over a window.
    Events(cp_events::EventsArgs),
    /// The escalation queue: list, show, ack, resolve.
    #[command(subcommand)]
    Escalations(cp_events::EscalationsCommand),
    /// Create, list and revoke service and gateway keys.
    #[command(subcommand)]
    Keys(cp_fleet::KeysCommand),
    /// Manage the fleet view: forget OFFLINE gateways.
    #[command(subcommand)]
    Gateways(cp_fleet::GatewaysCommand),
    /// List, create and configure environments.
    #[command(subcommand)]
    Environments(cp_fleet::EnvironmentsCommand),
    /// Run the gateway: an OpenAI-compatible proxy enforcing a pack.
    Gateway(Box<gateway_cmd::GatewayArgs>),
    /// Start the whole stack locally: control plane, a gateway per environment, a mock provider
    /// when no OPENAI_API_KEY is set; the sample pack deployed to dev. Ctrl-C stops it all.
    Up(up::UpArgs),
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
        Command::ControlPlane(args) => cp_server::run(&args),
        Command::Push(args) => cp_cmds::push(&args),
        Command::Versions(args) => cp_cmds::versions(&args),
        Command::Deploy(args) => cp_cmds::deploy(&args),
        Command::Promote(args) => cp_cmds::promote(&args),
        Command::Rollback(args) => cp_cmds::rollback(&args),
        Command::Status(args) => cp_fleet::status(&args),
        Command::History(args) => cp_cmds::history(&args),
        Command::Export(args) => cp_manifest::export(&args),
        Command::Import(args) => cp_manifest::import(&args),
        Command::Events(args) => cp_events::events(&args),
        Command::Escalations(cmd) => cp_events::escalations(&cmd),
        Command::Keys(cmd) => cp_fleet::keys(&cmd),
        Command::Environments(cmd) => cp_fleet::environments(&cmd),
        Command::Gateways(cmd) => cp_fleet::gateways(&cmd),
        Command::Gateway(args) => gateway_cmd::run(*args),
        Command::Up(args) => up::run(&args),
    }
}
