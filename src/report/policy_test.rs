//! The report of `rampart policy test`: one line per case, the actual decision and reasons of
//! every failure, in `human` or `json` (pure).

use super::{Summary, human, json};
use crate::diagnostic::Diagnostic;
use crate::policy::tests::CaseResult;
use serde::Serialize;
use std::fmt::Write;

/// Output format of `policy test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    /// One line per case; failures show expected and actual decisions.
    Human,
    /// Stable JSON (documented in the README).
    Json,
}

pub struct TestReport<'a> {
    pub validation: Summary<'a>,
    pub results: &'a [CaseResult],
    pub diagnostics: &'a [Diagnostic],
    pub test_files: usize,
}

fn decision_text(allowed: bool, policies: &[String]) -> String {
    format!("{} [{}]", if allowed { "allow" } else { "deny" }, policies.join(", "))
}

pub fn render(format: TestFormat, r: &TestReport<'_>, color: bool) -> String {
    match format {
        TestFormat::Human => render_human(r, color),
        TestFormat::Json => render_json(r),
    }
}

fn render_human(r: &TestReport<'_>, color: bool) -> String {
    let mut out = String::new();
    let (red, green, reset) = if color {
        ("\x1b[1;31m", "\x1b[1;32m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    if !r.validation.valid() {
        out.push_str(&human::render(&r.validation, color));
        out.push_str("policy tests not run: the repo is invalid\n");
        return out;
    }
    for d in r.diagnostics {
        out.push_str(&human::render_one(d, &r.validation, color));
    }
    let mut file = "";
    for c in r.results {
        if c.file != file {
            file = &c.file;
            let _ = writeln!(out, "{}", human::neutralize(file));
        }
        let name = human::neutralize(&c.name);
        if c.passed {
            let _ = writeln!(out, "  {green}PASS{reset} {name}");
            continue;
        }
        let _ = writeln!(
            out,
            "  {red}FAIL{reset} {name} ({}:{})",
            human::neutralize(&c.file),
            c.line
        );
        let expected = match &c.expected.policies {
            Some(p) => format!("{} [{}]", c.expected.decision, p.join(", ")),
            None => c.expected.decision.clone(),
        };
        let _ = writeln!(out, "       expected {}", human::neutralize(&expected));
        match (&c.actual, &c.problem) {
            (Some(d), _) => {
                let _ = writeln!(
                    out,
                    "       actual   {}",
                    human::neutralize(&decision_text(d.allowed, &d.policies))
                );
                for a in &d.advice {
                    let _ = writeln!(out, "                {}", human::neutralize(a));
                }
                for e in &d.errors {
                    let _ = writeln!(out, "                policy error (denies): {}", human::neutralize(e));
                }
                if let Some(w) = &d.way_out {
                    let _ = writeln!(out, "                way out: {}", human::neutralize(&w.describe()));
                }
            }
            (None, Some(p)) => {
                let _ = writeln!(out, "       could not run: {}", human::neutralize(p));
            }
            (None, None) => {}
        }
    }
    let passed = r.results.iter().filter(|c| c.passed).count();
    let failed = r.results.len() - passed;
    if r.results.is_empty() {
        let _ = writeln!(out, "no policy tests found under policies/tests/");
    } else {
        let _ = writeln!(
            out,
            "{}: {passed}/{} passed, {failed} failed ({} file{})",
            if failed == 0 {
                format!("{green}PASS{reset}")
            } else {
                format!("{red}FAIL{reset}")
            },
            r.results.len(),
            r.test_files,
            if r.test_files == 1 { "" } else { "s" }
        );
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    version: u32,
    tool: &'static str,
    passed: usize,
    failed: usize,
    cases: &'a [CaseResult],
    validation: serde_json::Value,
    diagnostics: Vec<serde_json::Value>,
}

fn render_json(r: &TestReport<'_>) -> String {
    let validation = json::value(&r.validation);
    let extra = Summary {
        diagnostics: r.diagnostics,
        ..r.validation
    };
    let extra = json::value(&extra);
    let passed = r.results.iter().filter(|c| c.passed).count();
    let report = JsonReport {
        version: 1,
        tool: "rampart",
        passed,
        failed: r.results.len() - passed,
        cases: r.results,
        validation,
        diagnostics: extra["diagnostics"].as_array().cloned().unwrap_or_default(),
    };
    let mut out = serde_json::to_string_pretty(&report).expect("report serializes");
    out.push('\n');
    out
}
