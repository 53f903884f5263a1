//! The policy-change impact in the plan: counts first, then the groups of flipped decisions
//! with a few examples each, as `text` lines and a `markdown` section (the JSON plan embeds
//! [`crate::policy::impact::Impact`] as it is) (pure).

use super::{markdown_escape, markdown_text};
use crate::policy::impact::{Group, Impact};
use std::fmt::Write;

/// Groups shown in the pull-request comment (the text plan shows all the impact kept).
const MARKDOWN_GROUPS: usize = 15;
/// Examples per group in the comment.
const MARKDOWN_EXAMPLES: usize = 5;
/// Policy tests listed (text and comment); the rest are counted.
const TESTS: usize = 20;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "3 decisions flip (1 widens, 2 narrow) over 1,140 questions (96 decided under both rules)".
fn headline(i: &Impact) -> String {
    let flips = i.widening + i.narrowing;
    let counts = format!(
        "{} asked under the base's and the head's rules ({} decided under both; the rest cannot flip)",
        plural(i.questions, "question", "questions"),
        i.evaluated
    );
    if flips == 0 {
        return format!("no decision flips: {counts}");
    }
    format!(
        "{} ({} deny → allow, {} allow → deny): {counts}",
        plural(flips, "decision flips", "decisions flip"),
        i.widening,
        i.narrowing
    )
}

fn direction(g: &Group) -> &'static str {
    if g.direction == "widens" {
        "widens (deny → allow)"
    } else {
        "narrows (allow → deny)"
    }
}

/// Example lines of the text impact in all.
const TEXT_EXAMPLES: usize = 100;

/// The text lines of the impact.
pub fn text(i: &Impact) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "policy impact: {}", headline(i));
    let mut budget = TEXT_EXAMPLES;
    for g in &i.groups {
        let _ = writeln!(
            out,
            "  {} {} [{}] asked by {}:",
            direction(g),
            plural(g.count, "decision", "decisions"),
            g.policies.iter().map(|p| short(p)).collect::<Vec<_>>().join(", "),
            g.asker
        );
        let shown = g.examples.len().min(budget);
        budget -= shown;
        for e in &g.examples[..shown] {
            let _ = writeln!(out, "    {e}");
        }
        if g.count > shown {
            let _ = writeln!(out, "    … and {} more", g.count - shown);
        }
    }
    if i.more_groups > 0 {
        let _ = writeln!(out, "  … and {} more groups", i.more_groups);
    }
    for t in i.tests.iter().take(TESTS) {
        let _ = writeln!(
            out,
            "  policy test {} `{}` ({}): {}",
            if t.widening { "widens" } else { "narrows" },
            short(&t.name),
            short(&t.file),
            if t.widening { "deny → allow" } else { "allow → deny" }
        );
    }
    if i.tests.len() > TESTS {
        let _ = writeln!(out, "  … and {} more policy tests", i.tests.len() - TESTS);
    }
    if let Some(c) = caveat(i) {
        let _ = writeln!(out, "  {c}");
    }
    out
}

/// User text on one line: a newline in a test's name must not start a line of its own (a
/// workflow command, in a job log).
fn one_line(s: &str) -> String {
    crate::diagnostic::visible(s, &[])
}

/// Policy ids shown in the comment are cut here (an id is user text, and can be 64 KB).
const ID_CHARS: usize = 80;

/// What the questions cannot see, naming the changed policies a reviewer should still read.
fn caveat(i: &Impact) -> Option<String> {
    if i.changed_policies.is_empty() {
        return None;
    }
    let mut ids: Vec<String> = i.changed_policies.iter().take(10).map(|p| short(p)).collect();
    if i.changed_policies.len() > 10 {
        ids.push(format!("{} more", i.changed_policies.len() - 10));
    }
    Some(format!(
        "note: the questions are creates, deletes and no-op updates by members of each team; a condition on \
         what an update changes (quota, network, plugins) or on several memberships at once shows only \
         through the policy tests — read the changed policies: {}",
        ids.join(", ")
    ))
}

fn short(id: &str) -> String {
    let id = one_line(id);
    if id.chars().count() > ID_CHARS {
        format!("{}…", id.chars().take(ID_CHARS).collect::<String>())
    } else {
        id
    }
}

/// `text` as a code span when it is plain (a policy id, a team, a name), else escaped.
fn code(text: &str) -> String {
    // (nothing is markup inside a code span: only what ends it, a table cell or a line)
    let plain = !text.trim().is_empty()
        && !text
            .chars()
            .any(|c| matches!(c, '`' | '|' | '\n' | '\r') || crate::diagnostic::is_hidden(c));
    if plain {
        format!("`{text}`")
    } else {
        markdown_escape(text)
    }
}

/// The markdown section of the impact, bounded.
pub fn markdown(i: &Impact) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "**Policy impact:** {}\n", markdown_escape(&headline(i)));
    if !i.groups.is_empty() {
        out.push_str("| | decisions | policies | asked by | for example |\n|---|---:|---|---|---|\n");
        for (n, g) in i.groups.iter().enumerate() {
            if n == MARKDOWN_GROUPS {
                let shown: usize = i.groups[..n].iter().map(|g| g.count).sum();
                let rest = i.widening + i.narrowing - shown;
                let _ = writeln!(
                    out,
                    "| … {} more groups | {rest} | | | |",
                    i.groups.len() - n + i.more_groups
                );
                break;
            }
            let mut examples: Vec<String> = g
                .examples
                .iter()
                .take(MARKDOWN_EXAMPLES)
                .map(|e| markdown_text(e))
                .collect();
            if g.count > examples.len() {
                examples.push(format!("… and {} more", g.count - examples.len()));
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                if g.direction == "widens" {
                    "⚠️ widens"
                } else {
                    "narrows"
                },
                g.count,
                g.policies
                    .iter()
                    .map(|p| code(&short(p)))
                    .collect::<Vec<_>>()
                    .join(", "),
                markdown_text(&g.asker),
                examples.join("<br>")
            );
        }
        out.push('\n');
    }
    for t in i.tests.iter().take(TESTS) {
        let _ = writeln!(
            out,
            "- policy test {} ({}) {}",
            code(&short(&t.name)),
            code(&short(&t.file)),
            if t.widening {
                "now allows (deny → allow)"
            } else {
                "now denies (allow → deny)"
            }
        );
    }
    if i.tests.len() > TESTS {
        let _ = writeln!(out, "- … and {} more policy tests", i.tests.len() - TESTS);
    }
    if let Some(c) = caveat(i) {
        let _ = writeln!(out, "- {}", markdown_escape(&c));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::policy::impact::TestFlip;

    #[test]
    fn policy_tests_are_bounded_and_user_text_stays_text() {
        let tests = (0..30)
            .map(|n| TestFlip {
                file: "policies/tests/a.yaml".into(),
                name: format!("case `{n}` | <b>"),
                widening: n % 2 == 0,
            })
            .collect();
        let i = Impact {
            tests,
            ..Impact::default()
        };
        let md = markdown(&i);
        assert!(md.contains("- … and 10 more policy tests"), "{md}");
        assert_eq!(md.matches("- policy test").count(), TESTS);
        // (a name that could end a code span, a cell or open HTML is escaped, not spanned)
        assert!(md.contains("case \\`0\\` &#124; &lt;b&gt;"), "{md}");
        assert!(md.contains("`policies/tests/a.yaml`"), "{md}");
        assert!(text(&i).contains("  … and 10 more policy tests"));
        assert!(text(&i).starts_with("policy impact: no decision flips: 0 questions"));
    }
}
