//! `palisade scan`: find personal data in text on stdin and print the findings and the
//! redacted text.
//!
//! Two modes. Plain: the whole of stdin is one text; the output lists each finding (entity
//! and UTF-8 byte span — never the value) and then the redacted text. `--jsonl`: each input
//! line is `{"text": "..."}` and produces exactly one output line, in order,
//! `{"findings":[{"entity":"email","start":12,"end":29}],"redacted":"..."}` with offsets into
//! that line's text; a line that is not such an object produces `{"error":"line N: ..."}`
//! instead of stopping the run, and the exit code is then 1. Lines are read and written one at
//! a time through buffered I/O, so 100,000 lines never sit in memory together.
//!
//! The detector is the default `pii-detector` configuration (every built-in entity, placeholder
//! redaction); reading a pack's settings is left to `palisade test`.

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::process::ExitCode;

use policy_engine::pack::PiiDetectorConfig;
use policy_engine::pii::{Finding, PiiDetector, RedactionSession};
use serde::{Deserialize, Serialize};

#[derive(Debug, clap::Args)]
pub(crate) struct ScanArgs {
    /// Read one JSON object per line, `{"text": "..."}`, and write one result line per input.
    #[arg(long)]
    jsonl: bool,
}

#[derive(Deserialize)]
struct InputLine {
    text: String,
}

#[derive(Serialize)]
struct FindingOut<'a> {
    entity: &'a str,
    start: usize,
    end: usize,
}

#[derive(Serialize)]
struct ResultLine<'a> {
    findings: Vec<FindingOut<'a>>,
    redacted: &'a str,
}

#[derive(Serialize)]
struct ErrorLine {
    error: String,
}

pub(crate) fn run(args: &ScanArgs) -> ExitCode {
    let detector = match PiiDetector::compile(&PiiDetectorConfig::default(), None) {
        Ok(d) => d,
        Err(errs) => {
            for e in errs {
                eprintln!("palisade scan: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let stdin = io::stdin().lock();
    let stdout = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let result = if args.jsonl {
        scan_jsonl(&detector, stdin, stdout)
    } else {
        scan_plain(&detector, stdin, stdout)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade scan: {e}");
            ExitCode::FAILURE
        }
    }
}

fn findings_out<'d>(detector: &'d PiiDetector, found: &[Finding]) -> Vec<FindingOut<'d>> {
    found
        .iter()
        .map(|f| FindingOut {
            entity: detector.entity_name(f.entity),
            start: f.start,
            end: f.end,
        })
        .collect()
}

/// Returns whether every line was valid.
fn scan_jsonl(
    detector: &PiiDetector,
    input: impl BufRead,
    mut out: impl Write,
) -> io::Result<bool> {
    let mut all_ok = true;
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let parsed = line
            .map_err(|e| format!("line {n}: not UTF-8 text ({e})"))
            .and_then(|l| {
                serde_json::from_str::<InputLine>(&l)
                    .map_err(|e| format!("line {n}: expected {{\"text\": \"...\"}}: {e}"))
            });
        match parsed {
            Ok(input) => {
                let found = detector.find(&input.text);
                let mut session = RedactionSession::new();
                let redacted = detector.redact_found(&input.text, &found, &mut session);
                let line = ResultLine {
                    findings: findings_out(detector, &found),
                    redacted: &redacted,
                };
                serde_json::to_writer(&mut out, &line)?;
            }
            Err(error) => {
                all_ok = false;
                serde_json::to_writer(&mut out, &ErrorLine { error })?;
            }
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(all_ok)
}

fn scan_plain(
    detector: &PiiDetector,
    mut input: impl Read,
    mut out: impl Write,
) -> io::Result<bool> {
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    let found = detector.find(&text);
    writeln!(out, "{} finding(s)", found.len())?;
    for f in &found {
        writeln!(
            out,
            "  {:<12} {}..{}",
            detector.entity_name(f.entity),
            f.start,
            f.end
        )?;
    }
    writeln!(out, "--- redacted ---")?;
    let mut session = RedactionSession::new();
    out.write_all(
        detector
            .redact_found(&text, &found, &mut session)
            .as_bytes(),
    )?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(true)
}
