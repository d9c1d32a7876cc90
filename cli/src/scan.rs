//! `palisade scan`: placeholder until the PII engine lands.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct ScanArgs {
    /// Read one JSON object per line, `{"text": "..."}`, and write one result line per input.
    #[arg(long)]
    jsonl: bool,
}

pub(crate) fn run(args: &ScanArgs) -> ExitCode {
    let _ = args.jsonl;
    eprintln!("palisade scan: the PII engine is not built yet");
    ExitCode::FAILURE
}
