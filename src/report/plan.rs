//! The report of `rampart plan`: summary first (counts, risk flags, policy verdicts), then a
//! unified diff per object, as `text`, `markdown` (the PR comment: collapsible per tenant,
//! user text escaped, at most [`MARKDOWN_LIMIT`] characters) or `json` (pure).

use super::{markdown_escape, markdown_text};
use crate::change::Change;
use crate::diagnostic::{Diagnostic, visible};
use crate::plan::{Counts, Plan};
use crate::policy::decide::Decision;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// GitHub's limit on a comment body.
pub const MARKDOWN_LIMIT: usize = 65_536;
/// Rows of the per-tenant table before it is summarised.
const TENANT_ROWS: usize = 30;
/// Notes (e.g. one per new plugin) shown before the rest are counted.
const NOTES: usize = 20;

/// Output format of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// Summary, then a unified diff per object.
    Text,
    /// The pull-request comment: collapsible per tenant, within 65,536 characters.
    Markdown,
    /// Stable JSON (documented in the README).
    Json,
}

/// The policy side of a plan, when it was checked.
pub struct Verdicts<'a> {
    pub changes: &'a [Change],
    pub decisions: &'a [Decision],
    pub author: &'a str,
    pub approvers: &'a [String],
}

pub struct PlanReport<'a> {
    pub plan: &'a Plan,
    pub base: &'a str,
    pub head: &'a str,
    /// The commits base and head resolved to (none for directories).
    pub commits: (Option<&'a str>, Option<&'a str>),
    /// Notes on how the plan was made (e.g. "the base is invalid: diffed against nothing").
    pub notes: &'a [String],
    pub verdicts: Option<Verdicts<'a>>,
    /// What the change's new policies and teams decide differently (when it changes them).
    pub impact: Option<&'a crate::policy::impact::Impact>,
}

pub fn render(format: PlanFormat, r: &PlanReport<'_>) -> String {
    match format {
        PlanFormat::Text => text(r),
        PlanFormat::Markdown => markdown(r, MARKDOWN_LIMIT),
        PlanFormat::Json => json(r),
    }
}

fn counts(c: &Counts) -> String {
    format!("+{} ~{} -{}", c.added, c.changed, c.removed)
}

fn denied(v: &Verdicts<'_>) -> usize {
    v.decisions.iter().filter(|d| !d.allowed).count()
}

/// `1 object changes`, `2 objects change`.
fn things(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one} changes")
    } else {
        format!("{n} {many} change")
    }
}

/// What the plan changes, for its headline: objects, and guarded files when there are any.
fn headline(p: &Plan) -> String {
    let objects = things(p.totals.total(), "object", "objects");
    if p.files.is_empty() {
        objects
    } else {
        format!("{objects}; {}", things(p.files.len(), "guarded file", "guarded files"))
    }
}

/// `+peggy +quentin-l -bob`, or `members unchanged`.
fn members(t: &crate::plan::TeamChange) -> String {
    let all: Vec<String> = t
        .added
        .iter()
        .map(|m| format!("+{m}"))
        .chain(t.removed.iter().map(|m| format!("-{m}")))
        .collect();
    if all.is_empty() {
        "members unchanged".to_owned()
    } else {
        all.join(" ")
    }
}

/// `allowed, 1 change` or `denied, 2 of 3 changes`.
fn verdict_counts(v: &Verdicts<'_>) -> String {
    let n = v.changes.len();
    let s = if n == 1 { "" } else { "s" };
    match denied(v) {
        0 => format!("allowed, {n} change{s}"),
        d => format!("denied, {d} of {n} change{s}"),
    }
}

/// Where a risk is: ` in <tenant>`, or nothing for one about the rules themselves.
fn risk_place(r: &crate::plan::Risk) -> String {
    if r.tenant.is_empty() {
        String::new()
    } else {
        format!(" in {}", r.tenant)
    }
}

/// The author as a reviewer reads it.
fn author(v: &Verdicts<'_>) -> String {
    super::author_text(v.author)
}

/// Allowed changes listed one line each in the text plan before the rest are counted.
const ALLOWED_LINES: usize = 50;

fn text(r: &PlanReport<'_>) -> String {
    let p = r.plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan {} → {}: {} ({} added, {} changed, {} removed), {} unchanged{}",
        r.base,
        r.head,
        things(p.totals.total(), "object", "objects"),
        p.totals.added,
        p.totals.changed,
        p.totals.removed,
        p.unchanged,
        if p.files.is_empty() {
            String::new()
        } else {
            format!("; {}", things(p.files.len(), "guarded file", "guarded files"))
        }
    );
    for f in &p.files {
        let _ = writeln!(out, "guarded file {}: {}", f.action.as_str(), f.path);
    }
    for n in &p.renames {
        let _ = writeln!(
            out,
            "likely rename: {} {} → {} (deleted and created with equal specs)",
            n.kind, n.from, n.to
        );
    }
    for t in &p.teams {
        let _ = writeln!(out, "team {} {}: {}", t.action.as_str(), t.name, members(t));
    }
    for n in r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    match &r.verdicts {
        Some(v) => {
            let approvals = if v.approvers.is_empty() {
                "no approvals".to_owned()
            } else {
                format!("approved by {}", v.approvers.join(", "))
            };
            let _ = writeln!(out, "policy: {} (author {}, {approvals})", verdict_counts(v), author(v));
            let mut allowed_shown = 0;
            for (c, d) in v.changes.iter().zip(v.decisions) {
                let what = format!("{} {} {}", c.action.as_str(), c.subject.as_str(), c.name);
                let policies = if d.policies.is_empty() {
                    "no policy permits it".to_owned()
                } else {
                    d.policies.join(", ")
                };
                if d.allowed {
                    allowed_shown += 1;
                    if allowed_shown <= ALLOWED_LINES {
                        let _ = writeln!(out, "  allow {what} (by {policies})");
                    }
                    continue;
                }
                let _ = writeln!(out, "  deny  {what}");
                let _ = writeln!(out, "        policies: {policies}");
                for a in &d.advice {
                    let _ = writeln!(out, "        why: {a}");
                }
                for e in &d.errors {
                    let _ = writeln!(out, "        policy error (denies): {e}");
                }
                if let Some(w) = &d.way_out {
                    let _ = writeln!(out, "        way out: {}", w.describe());
                }
            }
            if allowed_shown > ALLOWED_LINES {
                let _ = writeln!(out, "  … and {} more allowed", allowed_shown - ALLOWED_LINES);
            }
        }
        None => {
            let _ = writeln!(
                out,
                "policy: not checked (two directories have no authors or approvals)"
            );
        }
    }
    if let Some(i) = r.impact {
        out.push_str(&super::impact::text(i));
    }
    if !p.risks.is_empty() {
        let _ = writeln!(out, "risks:");
        for risk in &p.risks {
            let _ = writeln!(out, "  {}{}: {}", risk.kind.as_str(), risk_place(risk), risk.detail);
        }
    }
    if !p.by_tenant.is_empty() {
        let _ = writeln!(out, "by tenant:");
        for (t, c) in &p.by_tenant {
            let _ = writeln!(out, "  {t}: {}", counts(c));
        }
        let _ = writeln!(out, "by kind:");
        for (k, c) in &p.by_kind {
            let _ = writeln!(out, "  {k}: {}", counts(c));
        }
    }
    for f in &p.files {
        out.push('\n');
        out.push_str(&f.diff);
    }
    for c in &p.changes {
        out.push('\n');
        out.push_str(&c.diff);
    }
    // names and diffs come from the pull request: no terminal sequence or reordered text
    visible(&out, &['\n', '\t'])
}

/// A code fence longer than any run of backticks in `text`.
fn fence(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for ch in text.chars() {
        if ch == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

/// Diffs left out of a comment to stay within its limit.
#[derive(Default)]
struct LeftOut {
    count: usize,
    chars: usize,
}

/// One collapsible section (`summary` opens it) of `diff` code blocks, each added while the
/// comment stays within `limit` (room kept for the closing note); the rest are counted in
/// `left`. A section that shows no diff is not written.
fn diff_section<'d>(
    out: &mut String,
    mut section: String,
    diffs: impl Iterator<Item = &'d str>,
    limit: usize,
    left: &mut LeftOut,
) {
    const RESERVE: usize = 320;
    let mut shown = 0;
    for d in diffs {
        // (a fence keeps Markdown out, not control or bidirectional characters)
        let diff = visible(d, &['\n', '\t']);
        let f = fence(&diff);
        let block = format!("{f}diff\n{diff}{f}\n\n");
        if out.len() + section.len() + block.len() + RESERVE > limit {
            left.count += 1;
            left.chars += d.len();
            continue;
        }
        section.push_str(&block);
        shown += 1;
    }
    if shown > 0 {
        section.push_str("</details>\n\n");
        out.push_str(&section);
    }
}

/// The markdown plan, never longer than `limit` characters: the summary always, then the
/// diffs tenant by tenant while they fit, then a note saying what was left out.
pub fn markdown(r: &PlanReport<'_>, limit: usize) -> String {
    let p = r.plan;
    let mut out = String::new();
    let verdict = match &r.verdicts {
        Some(v) if denied(v) > 0 => "⛔ denied by policy",
        Some(_) => "✅ allowed by policy",
        None => "policy not checked",
    };
    let _ = writeln!(out, "### rampart plan: {} · {verdict}\n", headline(p));
    let _ = writeln!(
        out,
        "{} → {} · **{}** added · **{}** changed · **{}** removed · {} unchanged\n",
        markdown_escape(r.base),
        markdown_escape(r.head),
        p.totals.added,
        p.totals.changed,
        p.totals.removed,
        p.unchanged
    );
    if let Some(v) = &r.verdicts {
        let approvers = if v.approvers.is_empty() {
            "none".to_owned()
        } else {
            markdown_escape(&v.approvers.join(", "))
        };
        let _ = writeln!(
            out,
            "**Policy:** {} · author {} · approvals: {approvers}\n",
            verdict_counts(v),
            markdown_escape(&author(v))
        );
        let denials: Vec<_> = v.changes.iter().zip(v.decisions).filter(|(_, d)| !d.allowed).collect();
        if !denials.is_empty() {
            out.push_str("| change | policies | what to do |\n|---|---|---|\n");
            for (i, (c, d)) in denials.iter().enumerate() {
                if i == 20 {
                    let _ = writeln!(out, "| … {} more denials | | |", denials.len() - 20);
                    break;
                }
                let mut todo: Vec<String> = d.advice.iter().map(|a| markdown_text(a)).collect();
                todo.extend(
                    d.errors
                        .iter()
                        .map(|e| format!("policy error (denies): {}", markdown_escape(e))),
                );
                if let Some(w) = &d.way_out {
                    todo.push(format!("**{}**", markdown_text(&w.describe())));
                }
                let policies = if d.policies.is_empty() {
                    "(no policy permits it)".to_owned()
                } else {
                    markdown_escape(&d.policies.join(", "))
                };
                let _ = writeln!(
                    out,
                    "| ⛔ {} {} {} | {policies} | {} |",
                    c.action.as_str(),
                    c.subject.as_str(),
                    markdown_escape(&c.name),
                    todo.join("<br>")
                );
            }
            out.push('\n');
        }
    }
    if let Some(i) = r.impact {
        out.push_str(&super::impact::markdown(i));
    }
    if !p.risks.is_empty() {
        out.push_str("**Risks**\n\n");
        for (i, risk) in p.risks.iter().enumerate() {
            if i == 30 {
                let _ = writeln!(out, "- … {} more", p.risks.len() - 30);
                break;
            }
            let _ = writeln!(
                out,
                "- ⚠️ **{}**{}: {}",
                risk.kind.as_str(),
                markdown_escape(&risk_place(risk)),
                markdown_text(&risk.detail)
            );
        }
        out.push('\n');
    }
    if !p.teams.is_empty() {
        out.push_str("**Teams**\n\n");
        for t in p.teams.iter().take(30) {
            let line = format!("{} `{}`: {}", t.action.as_str(), t.name, members(t));
            let _ = writeln!(out, "- {}", markdown_text(&line));
        }
        if p.teams.len() > 30 {
            let _ = writeln!(out, "- … {} more teams", p.teams.len() - 30);
        }
        out.push('\n');
    }
    if !p.renames.is_empty() {
        out.push_str("**Likely renames** (deleted and created with equal specs)\n\n");
        for n in p.renames.iter().take(30) {
            let _ = writeln!(
                out,
                "- {}",
                markdown_text(&format!("{} `{}` → `{}`", n.kind, n.from, n.to))
            );
        }
        out.push('\n');
    }
    if !p.by_tenant.is_empty() {
        out.push_str("| tenant | added | changed | removed |\n|---|---:|---:|---:|\n");
        for (i, (t, c)) in p.by_tenant.iter().enumerate() {
            if i == TENANT_ROWS {
                let rest: Counts = p
                    .by_tenant
                    .values()
                    .skip(TENANT_ROWS)
                    .fold(Counts::default(), |mut a, c| {
                        a.merge(c);
                        a
                    });
                let _ = writeln!(
                    out,
                    "| … {} more tenants | {} | {} | {} |",
                    p.by_tenant.len() - TENANT_ROWS,
                    rest.added,
                    rest.changed,
                    rest.removed
                );
                break;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                markdown_escape(t),
                c.added,
                c.changed,
                c.removed
            );
        }
        out.push('\n');
    }
    // notes after the verdict, the risks and the table, and capped: a change can make one
    // per plugin, and they must not push the rest out of the comment
    for (i, n) in r.notes.iter().enumerate() {
        if i == NOTES {
            let _ = writeln!(
                out,
                "> … {} more notes; the job log has the full plan\n",
                r.notes.len() - NOTES
            );
            break;
        }
        let _ = writeln!(out, "> {}\n", markdown_text(n));
    }
    // the summary must fit whatever happens; the diffs take what is left
    let mut by_tenant: BTreeMap<&str, Vec<&crate::plan::ObjectChange>> = BTreeMap::new();
    for c in &p.changes {
        by_tenant.entry(&c.tenant).or_default().push(c);
    }
    let mut left = LeftOut::default();
    // the guarded files first: a policy or key change compiles to nothing, its diff is the change
    if !p.files.is_empty() {
        let summary = format!(
            "<details open><summary>guarded files — {} file{}</summary>\n\n",
            p.files.len(),
            if p.files.len() == 1 { "" } else { "s" }
        );
        diff_section(
            &mut out,
            summary,
            p.files.iter().map(|f| f.diff.as_str()),
            limit,
            &mut left,
        );
    }
    for (tenant, changes) in by_tenant {
        let summary = format!(
            "<details><summary>{} — {} object{}</summary>\n\n",
            markdown_escape(tenant),
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        );
        diff_section(
            &mut out,
            summary,
            changes.iter().map(|c| c.diff.as_str()),
            limit,
            &mut left,
        );
    }
    let LeftOut {
        count: left_out,
        chars: left_chars,
    } = left;
    if left_out > 0 {
        let _ = writeln!(
            out,
            "> {left_out} diff{} ({left_chars} characters) left out to stay within GitHub's \
             {MARKDOWN_LIMIT}-character comment limit; run `rampart plan` locally or see the job log \
             for the full plan.",
            if left_out == 1 { "" } else { "s" }
        );
    }
    if out.len() > limit {
        // only a pathological summary gets here: cut at a character boundary
        let cut = out.floor_char_boundary(limit - 80);
        out.truncate(cut);
        out.push_str("\n\n> (plan truncated at GitHub's comment limit)\n");
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonPlan<'a> {
    version: u32,
    tool: &'static str,
    base: &'a str,
    head: &'a str,
    /// The commit ids `base` and `head` resolved to (null for directories).
    base_commit: Option<&'a str>,
    head_commit: Option<&'a str>,
    notes: &'a [String],
    #[serde(flatten)]
    plan: &'a Plan,
    policy: Option<JsonPolicy<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    impact: Option<&'a crate::policy::impact::Impact>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonPolicy<'a> {
    decision: &'static str,
    author: &'a str,
    approvers: &'a [String],
    /// The denied changes (also in `decisions`).
    denied: Vec<JsonDecision<'a>>,
    /// Every change with its decision, allowed ones too.
    decisions: Vec<JsonDecision<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonDecision<'a> {
    #[serde(flatten)]
    change: &'a Change,
    /// `allow` or `deny`.
    decision: &'static str,
    #[serde(flatten)]
    detail: &'a Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    way_out_text: Option<String>,
}

impl<'a> JsonDecision<'a> {
    fn new(change: &'a Change, detail: &'a Decision) -> JsonDecision<'a> {
        JsonDecision {
            change,
            decision: if detail.allowed { "allow" } else { "deny" },
            detail,
            way_out_text: detail.way_out.as_ref().map(crate::policy::decide::WayOut::describe),
        }
    }
}

fn json(r: &PlanReport<'_>) -> String {
    let policy = r.verdicts.as_ref().map(|v| JsonPolicy {
        decision: if denied(v) > 0 { "deny" } else { "allow" },
        author: v.author,
        approvers: v.approvers,
        denied: v
            .changes
            .iter()
            .zip(v.decisions)
            .filter(|(_, d)| !d.allowed)
            .map(|(c, d)| JsonDecision::new(c, d))
            .collect(),
        decisions: v
            .changes
            .iter()
            .zip(v.decisions)
            .map(|(c, d)| JsonDecision::new(c, d))
            .collect(),
    });
    let mut out = serde_json::to_string_pretty(&JsonPlan {
        version: 1,
        tool: "rampart",
        base: r.base,
        head: r.head,
        base_commit: r.commits.0,
        head_commit: r.commits.1,
        notes: r.notes,
        plan: r.plan,
        policy,
        impact: r.impact,
    })
    .expect("plan serializes");
    out.push('\n');
    out
}

/// The pull-request comment for an invalid head (`rampart ci`): every problem, escaped, within `limit` characters.
pub fn invalid_markdown(diags: &[Diagnostic], limit: usize) -> String {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let mut out = format!(
        "### rampart: the config repo is invalid\n\n{errors} error{} must be fixed before the change can be planned or authorised.\n\n| where | code | problem |\n|---|---|---|\n",
        if errors == 1 { "" } else { "s" }
    );
    let mut left = 0;
    for d in diags {
        let place = d
            .location
            .as_ref()
            .map(|l| format!("{}:{}:{}", l.file, l.line, l.column))
            .unwrap_or_default();
        // (a file name comes from the pull request: no newline, pipe, backtick or HTML in it
        // may leave its cell)
        let cell = |t: &str| markdown_escape(t);
        let row = format!("| {} | {} | {} |\n", cell(&place), d.code, cell(&d.message));
        if out.len() + row.len() + 200 > limit {
            left += 1;
            continue;
        }
        out.push_str(&row);
    }
    if left > 0 {
        out.push_str(&format!(
            "\n{left} more problem{} left out to stay within GitHub's comment limit; run `rampart validate` for all of them.\n",
            if left == 1 { "" } else { "s" }
        ));
    }
    out
}

#[cfg(test)]
mod unit {
    #[test]
    fn fences_outgrow_backtick_runs() {
        assert_eq!(super::fence("no ticks"), "```");
        assert_eq!(super::fence("a ```` b"), "`````");
    }
}
