//! Printing diagnostics the way rustc does: the source line and a caret under the value.
//!
//! The caret's width is the token at the diagnostic's column (a quoted string, or a plain scalar
//! up to the next separator). Only that one line of the source is ever shown, never the
//! document, and a line holding a secret-looking value is shown with the value masked.

use std::fmt::Write as _;

use policy_engine::{Diagnostics, PackDiagnostic, Severity};

/// Render every diagnostic of `file` for a terminal.
pub(crate) fn human(file: &str, source: &str, diags: &Diagnostics) -> String {
    let mut out = String::new();
    for d in diags.iter() {
        one(&mut out, file, source, d);
    }
    out
}

fn one(out: &mut String, file: &str, source: &str, d: &PackDiagnostic) {
    let sev = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let _ = writeln!(out, "{sev}[{}]: {}", d.code, d.message);
    let (Some(line_no), Some(col)) = (d.line, d.column) else {
        let _ = writeln!(
            out,
            "  --> {file} ({})",
            if d.path.is_empty() {
                "document"
            } else {
                &d.path
            }
        );
        tail(out, "", d);
        return;
    };
    let gutter = " ".repeat(line_no.to_string().len());
    let _ = writeln!(out, "{gutter}--> {file}:{line_no}:{col}");
    let _ = writeln!(out, "{gutter} |");
    let line = source.lines().nth(line_no.saturating_sub(1)).unwrap_or("");
    let shown = if d.code == policy_engine::DiagnosticCode::SecretInPack {
        mask_from(line, col)
    } else {
        line.to_owned()
    };
    let _ = writeln!(out, "{line_no} | {shown}");
    let width = token_width(line, col);
    let mut label = String::new();
    if let Some(f) = &d.found {
        let _ = write!(label, "found `{f}`");
    }
    if let Some(e) = &d.expected {
        if !label.is_empty() {
            label.push_str(", ");
        }
        let _ = write!(label, "expected {e}");
    }
    let _ = writeln!(
        out,
        "{gutter} | {}{} {label}",
        " ".repeat(col.saturating_sub(1)),
        "^".repeat(width)
    );
    let _ = writeln!(out, "{gutter} = path: {}", d.path);
    tail(out, &gutter, d);
}

fn tail(out: &mut String, gutter: &str, d: &PackDiagnostic) {
    if d.line.is_none() {
        if let Some(f) = &d.found {
            let _ = writeln!(out, "{gutter} = found: {f}");
        }
        if let Some(e) = &d.expected {
            let _ = writeln!(out, "{gutter} = expected: {e}");
        }
    }
    if let Some(h) = &d.help {
        let _ = writeln!(out, "{gutter} = help: {h}");
    }
    out.push('\n');
}

/// Width in chars of the token starting at 1-based `col`.
fn token_width(line: &str, col: usize) -> usize {
    let rest: Vec<char> = line.chars().skip(col.saturating_sub(1)).collect();
    match rest.first() {
        None => 1,
        Some(q @ ('"' | '\'')) => rest
            .iter()
            .skip(1)
            .position(|c| c == q)
            .map_or(rest.len(), |i| i + 2),
        Some(_) => rest
            .iter()
            .position(|c| matches!(c, ' ' | ',' | ']' | '}' | '#' | ':'))
            .unwrap_or(rest.len())
            .max(1),
    }
}

/// The line with everything from `col` on replaced by `*`, so a pasted key is not echoed.
fn mask_from(line: &str, col: usize) -> String {
    line.chars()
        .enumerate()
        .map(|(i, c)| {
            if i + 1 >= col + 6 && !c.is_whitespace() {
                '*'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_spans_plain_and_quoted_tokens() {
        assert_eq!(token_width("    action: redcat", 13), 6);
        assert_eq!(token_width("    action: \"red cat\" # x", 13), 9);
        assert_eq!(token_width("  chain: [a, pii-detectr]", 14), 11);
        assert_eq!(token_width("  colour: red", 3), 6);
    }

    #[test]
    fn secret_lines_are_masked_after_a_short_prefix() {
        assert_eq!(
            mask_from("  api_key: sk-abcdefgh", 12),
            "  api_key: sk-abc*****"
        );
    }
}
