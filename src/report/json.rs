//! The `json` format: one stable object (schema documented in the README, `version: 1`).

use super::Summary;
use crate::diagnostic::{Code, Severity, counts};
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    version: u32,
    tool: &'static str,
    tool_version: &'static str,
    valid: bool,
    commit: Option<&'a str>,
    summary: Counts,
    diagnostics: Vec<Entry<'a>>,
    /// `validate` only: each plugin's integrity, signature and trust score.
    #[serde(skip_serializing_if = "Option::is_none")]
    plugins: Option<Vec<&'a crate::supply::Trust>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    files: usize,
    documents: usize,
    objects: usize,
    errors: usize,
    warnings: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    code: Code,
    severity: Severity,
    title: &'static str,
    message: &'a str,
    file: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
    pointer: Option<&'a str>,
    hint: Option<&'a str>,
    snippet: Option<&'a str>,
}

pub fn render(s: &Summary<'_>) -> String {
    let mut out = serde_json::to_string_pretty(&report(s)).expect("report serializes");
    out.push('\n');
    out
}

/// The report as a JSON value, for formats that embed it (`check`, `policy test`).
pub fn value(s: &Summary<'_>) -> serde_json::Value {
    serde_json::to_value(report(s)).expect("report serializes")
}

fn report<'a>(s: &'a Summary<'a>) -> Report<'a> {
    let c = counts(s.diagnostics);
    Report {
        version: 1,
        tool: "rampart",
        tool_version: env!("CARGO_PKG_VERSION"),
        valid: s.valid(),
        commit: s.commit,
        summary: Counts {
            files: s.files,
            documents: s.documents,
            objects: s.objects,
            errors: c.errors,
            warnings: c.warnings,
        },
        diagnostics: s
            .diagnostics
            .iter()
            .map(|d| {
                let loc = d.location.as_ref();
                Entry {
                    code: d.code,
                    severity: d.severity,
                    title: d.code.title(),
                    message: &d.message,
                    file: loc.map(|l| s.path(&l.file)),
                    line: loc.filter(|l| l.line > 0).map(|l| l.line),
                    column: loc.filter(|l| l.line > 0).map(|l| l.column),
                    pointer: d.pointer.as_deref(),
                    hint: d.hint.as_deref(),
                    snippet: d.snippet.as_deref(),
                }
            })
            .collect(),
        plugins: s.trust.map(|t| t.values().collect()),
    }
}
