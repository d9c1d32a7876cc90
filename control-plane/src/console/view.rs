//! What every page shares: the frame (who is signed in, the CSRF token, which tab is open), the
//! error page, small readers over the service functions' JSON, and the server-drawn charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use askama::Template;
use axum::response::{IntoResponse as _, Response};
use serde_json::Value;

use super::Session;
use crate::error::ApiError;

/// The frame around every signed-in page.
#[derive(Debug, Clone)]
pub(crate) struct Shell {
    pub signed_in: bool,
    pub who: String,
    pub role: &'static str,
    pub scope: String,
    pub csrf: String,
    pub tab: &'static str,
    pub can_change: bool,
    pub is_admin: bool,
}

impl Shell {
    pub(crate) fn new(s: &Session, tab: &'static str) -> Self {
        Self {
            signed_in: true,
            who: s.caller.key_id.clone(),
            role: s.caller.role.as_str(),
            scope: s
                .caller
                .environment
                .clone()
                .unwrap_or_else(|| "all environments".to_owned()),
            csrf: s.csrf.clone(),
            tab,
            can_change: s.can_change(),
            is_admin: s.is_admin(),
        }
    }

    pub(crate) fn anonymous() -> Self {
        Self {
            signed_in: false,
            who: String::new(),
            role: "",
            scope: String::new(),
            csrf: String::new(),
            tab: "",
            can_change: false,
            is_admin: false,
        }
    }

    /// `disabled` for a change control the signed-in role cannot use.
    pub(crate) fn change_attr(&self) -> &'static str {
        if self.can_change {
            ""
        } else {
            "disabled"
        }
    }

    pub(crate) fn admin_attr(&self) -> &'static str {
        if self.is_admin {
            ""
        } else {
            "disabled"
        }
    }
}

/// One gate, or one check, as a row: name, passed, what it says.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct GateRow {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    /// Extra lines: failing tests, diagnostics, measured evidence.
    pub notes: Vec<String>,
}

impl GateRow {
    pub(crate) fn from_json(g: &Value) -> Self {
        let mut notes = Vec::new();
        for t in g["failed_tests"].as_array().into_iter().flatten() {
            let problems: Vec<&str> = t["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            notes.push(format!(
                "test `{}`: {}",
                text(&t["name"]),
                problems.join("; ")
            ));
        }
        for d in g["diagnostics"].as_array().into_iter().flatten() {
            notes.push(diagnostic_line(d));
        }
        let ev = &g["evidence"];
        if g["gate"] == "runtime_evidence" && ev.is_object() {
            notes.push(format!(
                "measured: {} requests, error {:.2} %, escalation {:.2} %, block {:.2} %",
                ev["requests"],
                ev["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                ev["escalation_rate"].as_f64().unwrap_or(0.0) * 100.0,
                ev["block_rate"].as_f64().unwrap_or(0.0) * 100.0
            ));
        }
        Self {
            name: text(&g["gate"]),
            passed: g["passed"] == Value::Bool(true),
            detail: text(&g["detail"]),
            notes,
        }
    }
}

/// One diagnostic as it is shown: `line 3, column 5: CODE message (expected …)`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DiagRow {
    pub line: usize,
    pub column: usize,
    pub severity: String,
    pub code: String,
    pub path: String,
    pub message: String,
    pub expected: String,
    pub help: String,
}

impl DiagRow {
    pub(crate) fn from_json(d: &Value) -> Self {
        let n = |k: &str| {
            d[k].as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0)
        };
        Self {
            line: n("line"),
            column: n("column"),
            severity: text(&d["severity"]),
            code: text(&d["code"]),
            path: text(&d["path"]),
            message: text(&d["message"]),
            expected: text(&d["expected"]),
            help: text(&d["help"]),
        }
    }
}

fn diagnostic_line(d: &Value) -> String {
    let r = DiagRow::from_json(d);
    format!(
        "line {}, column {}: {} {}",
        r.line, r.column, r.code, r.message
    )
}

/// A JSON value as display text: strings bare, null empty.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    shell: Shell,
    status: u16,
    code: &'a str,
    message: String,
    gates: Vec<GateRow>,
    diagnostics: Vec<DiagRow>,
}

/// A page's or a change's outcome: its response, or the error page for the API error behind it.
pub(crate) fn respond(session: &Session, r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| error_page(Some(session), &e))
}

/// An API error as a page: its status, code and message, and the gates or diagnostics it
/// carries (a storage or internal error's cause is logged by [`ApiError::body`], never shown).
pub(crate) fn error_page(session: Option<&Session>, e: &ApiError) -> Response {
    let body = e.body();
    let err = &body["error"];
    let page = ErrorPage {
        shell: session.map_or_else(Shell::anonymous, |s| Shell::new(s, "")),
        status: e.status().as_u16(),
        code: e.code().as_str(),
        message: text(&err["message"]),
        gates: err["gates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(GateRow::from_json)
            .collect(),
        diagnostics: err["diagnostics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(DiagRow::from_json)
            .collect(),
    };
    match page.render() {
        Ok(html) => (e.status(), axum::response::Html(html)).into_response(),
        Err(_) => e.status().into_response(),
    }
}

const COLOURS: [&str; 6] = [
    "#1f6feb", "#d29922", "#8250df", "#1a7f37", "#cf222e", "#57606a",
];

/// Requests per bucket of each version: `points` are `(bucket start ms, version, requests)`.
pub(crate) fn requests_chart(
    points: &[(i64, String, i64)],
    since_ms: i64,
    until_ms: i64,
) -> String {
    let mut by_version: BTreeMap<&str, BTreeMap<i64, f64>> = BTreeMap::new();
    for (bucket, version, n) in points {
        *by_version
            .entry(version.as_str())
            .or_default()
            .entry(*bucket)
            .or_insert(0.0) += *n as f64;
    }
    let series: Vec<Series> = by_version
        .into_iter()
        .map(|(v, pts)| Series {
            legend: format!("{v}: {} request(s)", pts.values().sum::<f64>()),
            points: pts.into_iter().collect(),
        })
        .collect();
    line_chart(
        &series,
        since_ms,
        until_ms,
        None,
        "requests over time by version",
    )
}

/// Cumulative spend per hour against a limit: `hours` are `(hour start ms, cost)`.
pub(crate) fn burn_chart(hours: &[(i64, f64)], since_ms: i64, until_ms: i64, limit: f64) -> String {
    let mut total = 0.0;
    let points: Vec<(i64, f64)> = hours
        .iter()
        .map(|(h, c)| {
            total += c;
            (*h, total)
        })
        .collect();
    let series = [Series {
        legend: format!("${total:.2} spent of ${limit:.2}"),
        points,
    }];
    line_chart(
        &series,
        since_ms,
        until_ms,
        Some(limit),
        "spend in this window against its limit",
    )
}

/// One line of a chart.
pub(crate) struct Series {
    pub legend: String,
    pub points: Vec<(i64, f64)>,
}

/// An inline SVG line chart (no script): one polyline and a dot per point for each series over
/// `[x0, x1]`, the y axis from 0 to the largest value (or the `limit`, drawn dashed).
pub(crate) fn line_chart(
    series: &[Series],
    x0: i64,
    x1: i64,
    limit: Option<f64>,
    label: &str,
) -> String {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(limit)
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let span = (x1 - x0).max(1) as f64;
    let x = |t: i64| ((t - x0) as f64 / span * W).clamp(0.0, W);
    let y = |v: f64| H - 4.0 - v / max * (H - 12.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}, peak {max:.2}\">",
        escaped(label)
    );
    if let Some(l) = limit {
        let _ = write!(
            svg,
            "<line x1=\"0\" x2=\"{W}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#cf222e\" stroke-dasharray=\"4 3\"><title>limit {l:.2}</title></line>",
            y(l)
        );
    }
    let mut legend = String::new();
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let title = escaped(&s.legend);
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>{title}</title></polyline>",
            pts.join(" ")
        );
        // A dot per point, so a lone point shows too.
        for (t, v) in &s.points {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{title}: {v:.2}</title></circle>",
                x(*t),
                y(*v)
            );
        }
        let _ = write!(
            legend,
            "<span class=\"legend c{}\"><i></i>{title}</span>",
            i % COLOURS.len()
        );
    }
    svg.push_str("</svg>");
    if series.is_empty() {
        legend.push_str("<span class=\"muted\">nothing in this window</span>");
    }
    format!("{svg}<div>{legend}</div>")
}

/// Text HTML-escaped for markup built here, by askama's escaper (templates escape on their own).
pub(crate) fn escaped(s: &str) -> impl std::fmt::Display + '_ {
    askama::filters::escape(s, askama::filters::Html).unwrap_or_else(|never| match never {})
}

/// Milliseconds as `2026-12-06 14:03:07.000Z`.
pub(crate) fn when(ms: i64) -> String {
    crate::clock::rfc3339(ms).replace('T', " ")
}

/// Start of the UTC day and month that `now_ms` falls in.
pub(crate) fn day_and_month_start(now_ms: i64) -> (i64, i64) {
    const DAY: i64 = 86_400_000;
    let day = now_ms.div_euclid(DAY) * DAY;
    // The month's first day, from the date's own `YYYY-MM`.
    let date = crate::clock::rfc3339(day);
    let month = date
        .get(..7)
        .and_then(|ym| humantime::parse_rfc3339(&format!("{ym}-01T00:00:00Z")).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(day);
    (day, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_and_month_starts() {
        // 2026-12-06T02:47:00Z
        let now = 1_796_525_220_000;
        let (d, m) = day_and_month_start(now);
        assert_eq!(crate::clock::rfc3339(d), "2026-12-06T00:00:00.000Z");
        assert_eq!(crate::clock::rfc3339(m), "2026-12-01T00:00:00.000Z");
        let (_, m) = day_and_month_start(1_709_164_800_000); // 2024-02-29
        assert_eq!(crate::clock::rfc3339(m), "2024-02-01T00:00:00.000Z");
    }

    #[test]
    fn chart_escapes_version_names() {
        let svg = requests_chart(&[(0, "<v>".to_owned(), 3)], 0, 60_000);
        assert!(svg.contains("&#60;v&#62;") && !svg.contains("<v>"), "{svg}");
    }
}
