//! `rampart audit`'s report: `human`, `json` (`schemas/audit-report.schema.json`), `csv`
//! (RFC 4180, one line per change) and `markdown`. Every text from the history — commit
//! subjects, names, approvers — reached the report through `diagnostic::visible` (control and
//! bidi characters escaped); each format escapes it again for its own syntax.

use crate::audit::{Finding, Report, Row, short};

/// Output format of `audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    /// One block per change, then the findings.
    Human,
    /// The report as JSON (`schemas/audit-report.schema.json`).
    Json,
    /// One line per change (RFC 4180), for a spreadsheet.
    Csv,
    /// Tables for an issue or a wiki page.
    Markdown,
}

pub fn render(format: AuditFormat, r: &Report) -> String {
    match format {
        AuditFormat::Human => human(r),
        AuditFormat::Json => serde_json::to_string_pretty(r).expect("the report serialises") + "\n",
        AuditFormat::Csv => csv(r),
        AuditFormat::Markdown => markdown(r),
    }
}

fn who(row: &Row) -> String {
    match &row.author.login {
        Some(l) => l.clone(),
        None => format!("{} <{}>", row.author.name, row.author.email),
    }
}

fn approvals(row: &Row) -> String {
    let pr = row
        .pull_request
        .map(|n| format!("PR #{n}"))
        .unwrap_or_else(|| "no pull request".to_owned());
    let local = row.author.email.split('@').next().unwrap_or_default();
    let own = |a: &str| {
        [
            row.author.login.as_deref().unwrap_or(""),
            local,
            row.author.name.as_str(),
        ]
        .iter()
        .any(|w| !w.is_empty() && w.eq_ignore_ascii_case(a))
    };
    let by = if row.approvers.is_empty() {
        "no approvals".to_owned()
    } else {
        let list: Vec<String> = row
            .approvers
            .iter()
            .map(|a| {
                if own(a) {
                    format!("{a} (own approval, not counted)")
                } else {
                    a.clone()
                }
            })
            .collect();
        format!("approved by {}", list.join(", "))
    };
    match row.approvals_from {
        "none" => format!("{pr}, {by}"),
        from => format!("{pr}, {by} (from {from})"),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn decision(row: &Row) -> String {
    let d = &row.decision;
    let mut s = format!("policy now: {}", d.recomputed);
    if !d.policies.is_empty() {
        s.push_str(&format!(" [{}]", d.policies.join(", ")));
    }
    if let Some(r) = &d.reason {
        s.push_str(&format!(" ({r})"));
    }
    match (&d.recorded, &d.recorded_as) {
        (Some(rec), Some(how)) => s.push_str(&format!("; recorded when applied: {rec} ({how})")),
        (None, Some(how)) => s.push_str(&format!("; recorded when applied: {how}")),
        (Some(rec), None) => s.push_str(&format!("; recorded when applied: {rec}")),
        (None, None) => s.push_str("; no record of a decision"),
    }
    s
}

fn applied(row: &Row) -> Vec<String> {
    row.applied
        .iter()
        .map(|a| {
            let mut s = match a.result.as_str() {
                "superseded" => format!(
                    "superseded on {}: never applied on its own; {} (a later commit) was applied instead",
                    a.target,
                    short(&a.applied_as)
                ),
                "recorded-by-deploy-branch" => format!(
                    "applied to {} at {} per its deploy branch only (no note)",
                    a.target, a.time
                ),
                r => format!(
                    "{r} to {} at {} ({}, as {})",
                    a.target,
                    a.time,
                    a.decision,
                    short(&a.applied_as)
                ),
            };
            if let Some(d) = &a.deploy_commit {
                s.push_str(&format!(", deploy commit {}", short(d)));
            }
            s
        })
        .collect()
}

fn follow(row: &Row) -> Vec<String> {
    row.followed_by
        .iter()
        .map(|f| {
            let ev: Vec<String> = f
                .evidence
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "Rampart-Revert-Of" | "Rampart-Promote-Of"))
                .map(|(k, v)| format!("{}: {v}", k.trim_start_matches("Rampart-")))
                .collect();
            let mut s = format!("{} by {} at {} ({})", f.kind, short(&f.commit), f.time, f.author);
            if !ev.is_empty() {
                s.push_str(&format!(" — {}", ev.join("; ")));
            }
            s
        })
        .collect()
}

fn human(r: &Report) -> String {
    let mut out = format!(
        "audit of {}{} at {} ({}): {}, {} changed the config repo, {}\n",
        r.repository,
        if r.subdir.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.subdir)
        },
        r.rev,
        short(&r.head),
        plural(r.commits, "commit", "commits"),
        r.changing,
        plural(r.rows.len(), "change", "changes")
    );
    out.push_str(&format!("notes read from {}\n", r.notes));
    let mut i = 0;
    while i < r.rows.len() {
        let row = &r.rows[i];
        // the commit that starts the config repo: one line, not a block per object
        if row.decision.recomputed == "initial" {
            let n = r.rows[i..]
                .iter()
                .take_while(|x| x.commit == row.commit && x.decision.recomputed == "initial")
                .count();
            out.push_str(&format!(
                "\n{} {}  start of the config repo: {} created ({})\n  {} — {}\n",
                short(&row.commit),
                row.time,
                plural(n, "object or file", "objects and files"),
                row.decision.reason.as_deref().unwrap_or("initial"),
                who(row),
                row.subject
            ));
            for a in applied(row) {
                out.push_str(&format!("  {a}\n"));
            }
            i += n;
            continue;
        }
        out.push_str(&format!(
            "\n{} {}  {} {} {}\n",
            short(&row.commit),
            row.time,
            row.action,
            row.kind,
            row.name
        ));
        out.push_str(&format!("  {} — {}\n", who(row), row.subject));
        out.push_str(&format!("  {}\n", approvals(row)));
        out.push_str(&format!("  {}\n", decision(row)));
        let a = applied(row);
        if a.is_empty() {
            out.push_str("  not applied (no note)\n");
        }
        for a in a {
            out.push_str(&format!("  {a}\n"));
        }
        for f in follow(row) {
            out.push_str(&format!("  {f}\n"));
        }
        i += 1;
    }
    out.push('\n');
    for w in &r.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    if r.findings.is_empty() {
        out.push_str("no findings\n");
    } else {
        out.push_str(&format!("{}:\n", plural(r.findings.len(), "finding", "findings")));
        for f in &r.findings {
            out.push_str(&finding_line(f));
            out.push_str(&format!("    hint: {}\n", f.hint));
        }
    }
    out
}

fn finding_line(f: &Finding) -> String {
    format!(
        "  {} {}{}: {}\n",
        f.code,
        f.commit.as_deref().map(short).unwrap_or("-"),
        f.object.as_deref().map(|o| format!(" {o}")).unwrap_or_default(),
        f.message
    )
}

/// The life of one object (`--object`): `human` like `git log -p`, `json`, `markdown`.
pub fn render_life(format: AuditFormat, l: &crate::audit::history::Life) -> String {
    match format {
        AuditFormat::Json => serde_json::to_string_pretty(l).expect("the life serialises") + "\n",
        AuditFormat::Markdown => {
            let mut out = format!("## {} ({} versions)\n", md(&l.object), l.versions.len());
            for v in &l.versions {
                out.push_str(&format!(
                    "\n### `{}` {} {} {}\n\n{} — {}\n\n```diff\n{}```\n",
                    short(&v.commit),
                    md(&v.time),
                    v.action,
                    md(&v.name),
                    md(&format!("{} <{}>", v.author.name, v.author.email)),
                    md(&v.subject),
                    v.diff.replace("```", "`\u{200b}``")
                ));
            }
            out
        }
        AuditFormat::Human | AuditFormat::Csv => {
            let mut out = format!("{}: {} versions\n", l.object, l.versions.len());
            for v in &l.versions {
                out.push_str(&format!(
                    "\ncommit {}\nAuthor: {} <{}>\nDate:   {}\n\n    {}\n\n{} {} ({})\n{}",
                    v.commit, v.author.name, v.author.email, v.time, v.subject, v.action, v.name, v.path, v.diff
                ));
            }
            out
        }
    }
}

/// One CSV field: quoted when it holds a comma, a quote, a line break or leading/trailing
/// space; quotes doubled. A field a spreadsheet would run as a formula (`=`, `+`, `-`, `@`)
/// gets a leading `'`.
fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv(r: &Report) -> String {
    let mut out = String::from(
        "commit,time,author,login,subject,pull_request,approvers,approvals_from,action,kind,name,path,\
         recomputed,policies,recorded,recorded_as,applied,followed_by,findings\r\n",
    );
    for row in &r.rows {
        let findings: Vec<&str> = r
            .findings
            .iter()
            .filter(|f| {
                f.commit.as_deref() == Some(row.commit.as_str())
                    && f.object
                        .as_deref()
                        .is_none_or(|o| *o == format!("{}/{}", row.kind, row.name))
            })
            .map(|f| f.code)
            .collect();
        let cells = [
            row.commit.clone(),
            row.time.clone(),
            format!("{} <{}>", row.author.name, row.author.email),
            row.author.login.clone().unwrap_or_default(),
            row.subject.clone(),
            row.pull_request.map(|n| n.to_string()).unwrap_or_default(),
            row.approvers.join(" "),
            row.approvals_from.to_owned(),
            row.action.clone(),
            row.kind.clone(),
            row.name.clone(),
            row.path.clone(),
            row.decision.recomputed.clone(),
            row.decision.policies.join(" "),
            row.decision.recorded.clone().unwrap_or_default(),
            row.decision.recorded_as.clone().unwrap_or_default(),
            applied(row).join("\n"),
            follow(row).join("\n"),
            findings.join(" "),
        ];
        out.push_str(&cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

/// Text for a markdown table cell: markup characters escaped, line breaks as `<br>`.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '!' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("<br>"),
            _ => out.push(c),
        }
    }
    out
}

fn markdown(r: &Report) -> String {
    let mut out = format!(
        "## rampart audit: `{}` at `{}`\n\n{}, {} changed the config repo, {}, {}.\n\n",
        md(&r.rev),
        short(&r.head),
        plural(r.commits, "commit", "commits"),
        r.changing,
        plural(r.rows.len(), "change", "changes"),
        plural(r.findings.len(), "finding", "findings")
    );
    for w in &r.warnings {
        out.push_str(&format!("> warning: {}\n\n", md(w)));
    }
    if !r.findings.is_empty() {
        out.push_str("### Findings\n\n| code | commit | object | finding |\n|---|---|---|---|\n");
        for f in &r.findings {
            out.push_str(&format!(
                "| {} | `{}` | {} | {} |\n",
                f.code,
                f.commit.as_deref().map(short).unwrap_or("-"),
                md(f.object.as_deref().unwrap_or("")),
                md(&f.message)
            ));
        }
        out.push('\n');
    }
    out.push_str("### Changes\n\n| commit | time | change | author | pull request | decision | applied | followed by |\n|---|---|---|---|---|---|---|---|\n");
    for row in &r.rows {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |\n",
            short(&row.commit),
            md(&row.time),
            md(&format!("{} {} {}", row.action, row.kind, row.name)),
            md(&who(row)),
            md(&approvals(row)),
            md(&decision(row)),
            md(&applied(row).join("\n")),
            md(&follow(row).join("\n")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_quote_what_breaks_a_line_and_defuse_formulas() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(md("a|b\nc `d`"), "a\\|b<br>c \\`d\\`");
    }
}
