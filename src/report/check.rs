//! The report of `rampart check`: one line per change with its verdict, in `human`, `json`,
//! `github` (workflow commands) or `markdown` (pure).

use super::{Summary, github, human, json, markdown_escape, markdown_text};
use crate::change::Change;
use crate::diagnostic::{Diagnostic, Severity};
use crate::policy::decide::{Decision, WayOut};
use serde::Serialize;
use std::fmt::Write;

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// One line per change, then the way out of each denial.
    Human,
    /// Stable JSON (documented in the README).
    Json,
    /// GitHub Actions workflow commands: one error per denied change.
    Github,
    /// A Markdown table, for a job summary or a pull-request comment.
    Markdown,
}

/// Everything a check report shows.
pub struct CheckReport<'a> {
    /// The head's validation (its diagnostics come first; an invalid head blocks the rest).
    pub validation: Summary<'a>,
    pub base: Option<&'a str>,
    pub author: &'a str,
    pub approvers: &'a [String],
    pub changes: &'a [Change],
    pub decisions: &'a [Decision],
    /// Problems of the check itself (who, the base's policies).
    pub diagnostics: &'a [Diagnostic],
    /// Why no decision was made, when none was.
    pub blocked: Option<&'a str>,
    /// For `github`: the line of each change's first changed field (0 or absent: the file).
    pub lines: &'a [u32],
}

fn verdict(d: &Decision) -> &'static str {
    if d.allowed { "allow" } else { "deny" }
}

fn short(commit: Option<&str>) -> &str {
    commit.map_or("(working tree)", |c| &c[..c.len().min(12)])
}

fn author(r: &CheckReport<'_>) -> String {
    super::author_text(r.author)
}

pub fn render(format: CheckFormat, r: &CheckReport<'_>, color: bool) -> String {
    match format {
        CheckFormat::Human => render_human(r, color),
        CheckFormat::Json => render_json(r),
        CheckFormat::Github => render_github(r),
        CheckFormat::Markdown => render_markdown(r),
    }
}

fn render_human(r: &CheckReport<'_>, color: bool) -> String {
    let mut out = String::new();
    let (red, green, bold, reset) = if color {
        ("\x1b[31m", "\x1b[32m", "\x1b[1m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    if !r.validation.valid() || !r.validation.diagnostics.is_empty() {
        out.push_str(&human::render(&r.validation, color));
    }
    for d in r.diagnostics {
        out.push_str(&human::render_one(d, &r.validation, color));
    }
    if let Some(why) = r.blocked {
        let _ = writeln!(out, "policy check not run: {why}");
        return out;
    }
    let approvers = if r.approvers.is_empty() {
        "no approvals".to_owned()
    } else {
        format!("approved by {}", r.approvers.join(", "))
    };
    let _ = writeln!(
        out,
        "{bold}check{reset} {} → {}: {} change{}, author {}, {approvers}",
        short(r.base),
        short(r.validation.commit),
        r.changes.len(),
        if r.changes.len() == 1 { "" } else { "s" },
        human::neutralize(&author(r)),
    );
    let width = r
        .changes
        .iter()
        .map(|c| c.subject.as_str().len() + c.name.len() + 1)
        .max()
        .unwrap_or(0)
        .min(60);
    for (c, d) in r.changes.iter().zip(r.decisions) {
        let what = format!("{} {}", c.subject.as_str(), c.name);
        let (col, v) = if d.allowed { (green, "allow") } else { (red, "deny ") };
        let _ = writeln!(
            out,
            "  {col}{v}{reset} {:<6} {:<width$}  {}",
            c.action.as_str(),
            human::neutralize(&what),
            if d.policies.is_empty() {
                "(no policy)".to_owned()
            } else {
                format!("[{}]", d.policies.join(", "))
            }
        );
        if !d.allowed {
            if d.policies.is_empty() && d.errors.is_empty() {
                let _ = writeln!(out, "         no policy permits this change (Cedar denies by default)");
            }
            for a in &d.advice {
                let _ = writeln!(out, "         {}", human::neutralize(a));
            }
            for e in &d.errors {
                let _ = writeln!(out, "         policy error (denies): {}", human::neutralize(e));
            }
            if let Some(w) = &d.way_out {
                let _ = writeln!(out, "         way out: {}", human::neutralize(&w.describe()));
            }
        }
    }
    let denied = r.decisions.iter().filter(|d| !d.allowed).count();
    let _ = writeln!(
        out,
        "{}: {} allowed, {} denied",
        if denied > 0 { "denied" } else { "allowed" },
        r.decisions.len() - denied,
        denied
    );
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    version: u32,
    tool: &'static str,
    base: Option<&'a str>,
    head: Option<&'a str>,
    /// `allow`, `deny`, `invalid` (the head has errors) or `error` (could not decide).
    decision: &'static str,
    author: &'a str,
    approvers: &'a [String],
    changes: Vec<JsonChange<'a>>,
    validation: serde_json::Value,
    diagnostics: Vec<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonChange<'a> {
    #[serde(flatten)]
    change: &'a Change,
    decision: &'static str,
    #[serde(flatten)]
    detail: &'a Decision,
    way_out_text: Option<String>,
}

/// The overall decision word of a report.
pub fn overall(r: &CheckReport<'_>) -> &'static str {
    if !r.validation.valid() {
        "invalid"
    } else if r.blocked.is_some() {
        "error"
    } else if r.decisions.iter().any(|d| !d.allowed) {
        "deny"
    } else {
        "allow"
    }
}

fn render_json(r: &CheckReport<'_>) -> String {
    let validation = json::value(&r.validation);
    let extra = Summary {
        diagnostics: r.diagnostics,
        ..r.validation
    };
    let extra = json::value(&extra);
    let report = JsonReport {
        version: 1,
        tool: "rampart",
        base: r.base,
        head: r.validation.commit,
        decision: overall(r),
        author: r.author,
        approvers: r.approvers,
        changes: r
            .changes
            .iter()
            .zip(r.decisions)
            .map(|(c, d)| JsonChange {
                change: c,
                decision: verdict(d),
                detail: d,
                way_out_text: d.way_out.as_ref().map(WayOut::describe),
            })
            .collect(),
        validation,
        diagnostics: extra["diagnostics"].as_array().cloned().unwrap_or_default(),
    };
    let mut out = serde_json::to_string_pretty(&report).expect("report serializes");
    out.push('\n');
    out
}

fn render_github(r: &CheckReport<'_>) -> String {
    let mut out = github::render(&r.validation);
    for d in r.diagnostics {
        let level = if d.severity == Severity::Error {
            "error"
        } else {
            "warning"
        };
        let _ = writeln!(
            out,
            "::{level} title={}::{}",
            github::property(d.code.as_str()),
            github::data(&d.message)
        );
    }
    if let Some(why) = r.blocked {
        let _ = writeln!(out, "::error title=rampart check::{}", github::data(why));
        return out;
    }
    for (i, (c, d)) in r.changes.iter().zip(r.decisions).enumerate() {
        if d.allowed {
            continue;
        }
        let mut msg = format!("{} {} {} denied", c.action.as_str(), c.subject.as_str(), c.name);
        if !d.policies.is_empty() {
            let _ = write!(msg, " by {}", d.policies.join(", "));
        }
        for a in &d.advice {
            let _ = write!(msg, "\n{a}");
        }
        for e in &d.errors {
            let _ = write!(msg, "\npolicy error (denies): {e}");
        }
        if let Some(w) = &d.way_out {
            let _ = write!(msg, "\nway out: {}", w.describe());
        }
        let file = r.validation.path(&c.file);
        let line = match r.lines.get(i) {
            Some(&l) if l > 0 => format!(",line={l}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "::error file={}{line},title={}::{}",
            github::property(&file),
            github::property("rampart policy"),
            github::data(&msg)
        );
    }
    out
}

fn render_markdown(r: &CheckReport<'_>) -> String {
    let mut out = String::new();
    let word = overall(r);
    let _ = writeln!(
        out,
        "### rampart check: {}",
        match word {
            "allow" => "✅ allowed",
            "deny" => "⛔ denied",
            "invalid" => "❌ invalid",
            _ => "⚠️ could not decide",
        }
    );
    for d in r.validation.diagnostics.iter().chain(r.diagnostics) {
        let at = d
            .location
            .as_ref()
            .map(|l| {
                if l.line > 0 {
                    format!(
                        "{}:{}:{} ",
                        markdown_escape(&r.validation.path(&l.file)),
                        l.line,
                        l.column
                    )
                } else {
                    format!("{} ", markdown_escape(&r.validation.path(&l.file)))
                }
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- **{}** {}{}{}",
            d.code,
            at,
            markdown_text(&d.message),
            d.hint
                .as_ref()
                .map(|h| format!(" — {}", markdown_text(h)))
                .unwrap_or_default()
        );
    }
    if let Some(why) = r.blocked {
        let _ = writeln!(out, "\nPolicy check not run: {}", markdown_escape(why));
        return out;
    }
    let approvers = if r.approvers.is_empty() {
        "none".to_owned()
    } else {
        markdown_escape(&r.approvers.join(", "))
    };
    let _ = writeln!(
        out,
        "\nAuthor: {} · approvals: {approvers} · base `{}` → head `{}`\n",
        markdown_escape(&author(r)),
        short(r.base),
        short(r.validation.commit)
    );
    if r.changes.is_empty() {
        out.push_str("No changes.\n");
        return out;
    }
    out.push_str("| | change | policies | what to do |\n|---|---|---|---|\n");
    for (c, d) in r.changes.iter().zip(r.decisions) {
        let mut todo: Vec<String> = d.advice.iter().map(|a| markdown_text(a)).collect();
        todo.extend(d.errors.iter().map(|e| format!("policy error: {}", markdown_escape(e))));
        if let Some(w) = &d.way_out {
            todo.push(format!("**{}**", markdown_text(&w.describe())));
        }
        if !d.allowed && d.policies.is_empty() && d.errors.is_empty() {
            todo.insert(0, "no policy permits this change".into());
        }
        let _ = writeln!(
            out,
            "| {} | {} {} {} | {} | {} |",
            if d.allowed { "✅" } else { "⛔" },
            c.action.as_str(),
            c.subject.as_str(),
            markdown_escape(&c.name),
            if d.policies.is_empty() {
                "(no policy)".to_owned()
            } else {
                markdown_escape(&d.policies.join(", "))
            },
            todo.join("<br>")
        );
    }
    out
}
