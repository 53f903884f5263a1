//! Audit: what happened to a config repo, from Git alone. `history.rs` (IO) walks the
//! branch's first-parent history, re-decides every change with the policies and teams of its
//! parent (as `check` does) and gathers rampart's records — the notes under
//! `refs/notes/rampart`, the deploy branches' trailers, the revert and promote commits — into
//! [`Row`]s. This module (pure) turns rows and records into [`Finding`]s. The report's JSON
//! (`schemas/audit-report.schema.json`) is owned by `report::audit`.

pub mod history;

use serde::Serialize;
use std::collections::BTreeMap;

/// The report's format version.
pub const FORMAT: u32 = 1;

/// Everything an audit found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub rampart: u32,
    pub kind: &'static str,
    /// The git repository read and the config repo's directory in it (`""`: its root).
    pub repository: String,
    pub subdir: String,
    /// The revision walked and the commit it was.
    pub rev: String,
    pub head: String,
    /// Where the notes were read: the local notes ref, or the remote's (fetched).
    pub notes: String,
    /// First-parent commits walked (in range) and how many changed something rampart reads.
    pub commits: usize,
    pub changing: usize,
    /// One row per change to a spec object or guarded file, oldest first.
    pub rows: Vec<Row>,
    pub findings: Vec<Finding>,
    /// What the audit could not check, and why (a fetch that failed, a deploy branch not in
    /// the clone, a filter that names nothing): also printed on stderr.
    pub warnings: Vec<String>,
}

/// One change of one commit, with its records.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub commit: String,
    /// The commit's time (RFC 3339, UTC).
    pub time: String,
    pub author: Person,
    /// The commit's subject (hidden characters escaped).
    pub subject: String,
    pub pull_request: Option<u64>,
    pub approvers: Vec<String>,
    /// Where `pullRequest` and `approvers` come from: `note` (rampart's record of the pull
    /// request and its reviews), `trailers` (the commit's own `Approved-by:` lines and
    /// subject), `none`.
    pub approvals_from: &'static str,
    pub action: String,
    /// `Team`, `Tenant`, `Plugin`, `Rollout`, or `File` (a guarded file).
    pub kind: String,
    pub name: String,
    pub path: String,
    pub decision: DecisionPair,
    pub applied: Vec<Applied>,
    pub followed_by: Vec<FollowUp>,
}

/// A commit's author as Git has it, with the login rampart recorded for it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub name: String,
    pub email: String,
    pub login: Option<String>,
}

/// The decision re-computed from the history next to the one recorded when applied.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionPair {
    /// `allow`, `deny`; `invalid` (the revision does not validate: nothing was decided),
    /// `initial` (the first commit, or the first with the config repo: no rules before it).
    pub recomputed: String,
    /// The determining policies of the re-computed decision.
    pub policies: Vec<String>,
    /// Why, for a denial or an invalid revision (first reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `allow` or `deny` as recorded in the note, when rampart judged this change.
    pub recorded: Option<String>,
    /// How the apply was authorised, from the note's first entry (`allowed`, `fixes`,
    /// `history-rewritten`, `first-apply`, `baseline`, `restore`; `denied` for a blocked
    /// commit); each apply's own is in [`Applied::decision`].
    pub recorded_as: Option<String>,
}

/// Where and when a change was applied (from a note).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub target: String,
    /// `applied`, `unchanged` or `superseded`; `recorded-by-deploy-branch` when only the
    /// deploy branch says so (no note: R710).
    pub result: String,
    /// How this apply was authorised (the note's `decision`: `allowed`, `fixes`,
    /// `history-rewritten`, `first-apply`, `baseline`, `restore`).
    pub decision: String,
    pub time: String,
    /// The source commit the target was brought to (this one or a later one).
    pub applied_as: String,
    /// The deploy branch's commit recording it (branch targets), when found.
    pub deploy_commit: Option<String>,
}

/// A revert or promotion that followed a change.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowUp {
    /// `revert` or `promote`.
    pub kind: &'static str,
    pub commit: String,
    pub time: String,
    pub author: String,
    /// The `Rampart-*` trailers of the commit (SLO, evidence, target, plugin…).
    pub evidence: BTreeMap<String, String>,
}

/// A finding: something an auditor must look at. Any finding makes `audit` exit 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub code: &'static str,
    pub title: &'static str,
    pub commit: Option<String>,
    /// `Kind/name` of the change, when the finding is about one.
    pub object: Option<String>,
    pub message: String,
    pub hint: String,
}

/// The finding codes (stable; the README lists them).
pub const CODES: &[(&str, &str)] = &[
    ("R701", "change applied without an allowing decision"),
    ("R702", "recorded decision differs from the re-computed one"),
    ("R703", "direct push reached a target"),
    ("R704", "history rewritten under an applied commit"),
    ("R705", "note without its deploy-branch record"),
    ("R706", "approved by its own author"),
    ("R707", "unverified plugin applied to an enterprise tenant"),
    ("R708", "note does not parse"),
    ("R709", "history incomplete (shallow clone)"),
    ("R710", "applied per the deploy branch, with no note"),
    ("R711", "the notes could not be read, or were rewritten"),
];

/// A finding of `code`.
pub fn finding(
    code: &'static str,
    commit: Option<&str>,
    object: Option<String>,
    message: String,
    hint: &str,
) -> Finding {
    let title = CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, t)| *t)
        .unwrap_or("finding");
    Finding {
        code,
        title,
        commit: commit.map(str::to_owned),
        object,
        message,
        hint: hint.to_owned(),
    }
}

/// The facts of one row that decide its findings (besides the row).
#[derive(Debug, Clone, Default)]
pub struct RowFacts {
    /// The commit carries `Approved-by:` trailers.
    pub has_trailers: bool,
    /// rampart wrote it: recorded as `rampart[revert]`, and its tree is exactly that revert.
    pub by_rampart: bool,
    /// For each applied entry of the row: whether its deploy-branch record was found
    /// (`None`: not a branch target, or its branch could not be read).
    pub deploy_found: Vec<Option<bool>>,
    /// Approvers who are the author (by login, email or name).
    pub self_approvals: Vec<String>,
    /// The pull request the note records and the one the commit's subject names, when they
    /// differ.
    pub pull_request_mismatch: Option<(u64, u64)>,
    /// Plugins of an enterprise tenant the change reaches that are not signature-verified
    /// (`tenant`, `plugin`), in the applied revision.
    pub unverified_enterprise: Vec<(String, String)>,
}

/// The findings of one row.
pub fn row_findings(row: &Row, facts: &RowFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let commit = Some(row.commit.as_str());
    let object = Some(format!("{}/{}", row.kind, row.name));
    let what = format!("{} {} {}", row.action, row.kind, row.name);
    // applied: by a note, or by the deploy branch alone
    let applied: Vec<&Applied> = row
        .applied
        .iter()
        .filter(|a| a.result == "applied" || a.result == "recorded-by-deploy-branch")
        .collect();
    // a first apply (or a baseline, a restore) is the operator's start, not a judgement of
    // this commit: it is not a direct push, but a change the rules deny that it applied was
    // applied all the same
    let started = |a: &&Applied| matches!(a.decision.as_str(), "first-apply" | "baseline" | "restore");
    if !applied.is_empty() {
        let targets = applied.iter().map(|a| a.target.as_str()).collect::<Vec<_>>().join(", ");
        let recorded_deny = row.decision.recorded.as_deref() == Some("deny");
        let recomputed_deny = matches!(row.decision.recomputed.as_str(), "deny" | "invalid");
        if recorded_deny || recomputed_deny {
            out.push(finding(
                "R701",
                commit,
                object.clone(),
                format!(
                    "{what} was applied to {targets}, but {}",
                    if recorded_deny {
                        "its note records a denial".to_owned()
                    } else {
                        format!(
                            "the policies of its parent decide `{}`{}",
                            row.decision.recomputed,
                            row.decision.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                        )
                    }
                ),
                "find who applied it (the note's target and time, the deploy commit) and revert it through a reviewed pull request",
            ));
        }
    }
    if let Some(rec) = &row.decision.recorded
        && matches!(row.decision.recomputed.as_str(), "allow" | "deny")
        && *rec != row.decision.recomputed
    {
        out.push(finding(
            "R702",
            commit,
            object.clone(),
            format!(
                "{what}: the note records `{rec}`, the policies and teams of its parent decide `{}` for the same author and approvers",
                row.decision.recomputed
            ),
            "a note rampart did not write, a changed rampart version, or history rewritten under the note: compare the note's time with the rampart release then in use",
        ));
    }
    let judged: Vec<&&Applied> = applied.iter().filter(|a| !started(a)).collect();
    if let Some((noted, named)) = facts.pull_request_mismatch {
        out.push(finding(
            "R702",
            commit,
            object.clone(),
            format!(
                "{what}: the note records pull request #{noted} (its author and reviews decided), but the commit's subject names #{named}"
            ),
            "a note rampart did not write: check both pull requests on GitHub",
        ));
    }
    if !judged.is_empty() && row.pull_request.is_none() && !facts.has_trailers && !facts.by_rampart {
        out.push(finding(
            "R703",
            commit,
            object.clone(),
            format!(
                "{what} reached {} from a direct push: no pull request and no `Approved-by:` trailers",
                judged.iter().map(|a| a.target.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "protect the branch (require pull requests) and run serve with --github so it records who merged what",
        ));
    }
    for (a, found) in applied.iter().zip(&facts.deploy_found) {
        if *found == Some(false) {
            out.push(finding(
                "R705",
                commit,
                object.clone(),
                format!(
                    "the note says {} was brought to {} for this change, but the deploy branch has no commit with `Rampart-Source: {}` holding that tree",
                    a.target,
                    short(&a.applied_as),
                    a.applied_as
                ),
                "the deploy branch was rewritten or the note was written by hand: compare the branch's reflog on the remote",
            ));
        }
    }
    for a in &facts.self_approvals {
        out.push(finding(
            "R706",
            commit,
            object.clone(),
            format!("{what} was approved by `{a}`, its own author"),
            "policies ignore an author's own approval; if it was counted anyway, check the policies in force then",
        ));
    }
    if !applied.is_empty() {
        for (tenant, plugin) in &facts.unverified_enterprise {
            // (about the tenant, whichever of its plugin or itself the change was)
            out.push(finding(
                "R707",
                commit,
                Some(format!("Tenant/{tenant}")),
                format!("plugin `{plugin}` without a verified signature was applied to the enterprise tenant `{tenant}`"),
                "sign the plugin's artifact with a key in keys/ allowed for its publisher, or disable it for enterprise tenants",
            ));
        }
    }
    out
}

/// Commit ids shortened for messages.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
