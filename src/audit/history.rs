//! Reading the history for an audit (IO): the first-parent walk, the notes (fetched from the
//! remote when there is one), the deploy branches' trailers, the revert and promote commits,
//! and every change re-decided with its parent's policies and teams ([`crate::pipeline::Replay`]).

use super::{Applied, DecisionPair, FollowUp, Person, Report, Row, RowFacts, finding, row_findings, short};
use crate::pipeline::{self, Principals, Replay, Validated};
use crate::target::notes::{self, Note};
use anyhow::{Context, bail};
use git2::{Oid, Repository};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to audit.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub path: PathBuf,
    /// The revision whose first-parent history is walked (default `HEAD`).
    pub rev: String,
    /// Only commits after this one, or at or after this time (seconds since 1970).
    pub since: Option<Bound>,
    /// Only commits up to this one, or at or before this time.
    pub until: Option<Bound>,
    /// Only changes that can reach this tenant (its own, its plugins', settings…).
    pub tenant: Option<String>,
    /// Only changes of this kind (and name).
    pub kind: Option<String>,
    pub name: Option<String>,
    /// Fetch the notes and deploy branches from the remote first.
    pub fetch: bool,
    /// The deploy branches, when given (else found: see [`deploy_index`]).
    pub deploy_branches: Vec<String>,
}

/// A `--since`/`--until` bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Rev(String),
    Time(i64),
}

impl Bound {
    /// `2026-11-01`, `2026-11-01T12:00:00Z` (UTC), or a revision; a date-only `--until`
    /// (`end_of_day`) covers that whole day. Something shaped like a date that is not one
    /// (`2026-13-45`) is an error, not a revision.
    pub fn parse(s: &str, end_of_day: bool) -> Result<Bound, String> {
        if let Some(t) = parse_time(s) {
            return Ok(Bound::Time(if end_of_day && s.len() == 10 { t + 86_399 } else { t }));
        }
        let b = s.as_bytes();
        if b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
            return Err(format!(
                "`{}` is not a date: give YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC), or a revision",
                crate::diagnostic::visible(s, &[])
            ));
        }
        Ok(Bound::Rev(s.to_owned()))
    }
}

/// Seconds since 1970 of `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[Z]` (UTC).
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > days[(m - 1) as usize] {
        return None;
    }
    let mut secs = 0;
    if b.len() > 10 {
        // `T12:00:00`, then `Z`, `+02:00` or `-05:30` (or nothing: UTC)
        let rest = &s[10..];
        if rest.len() < 9 || !(rest.starts_with('T') || rest.starts_with(' ')) || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        secs = h * 3600 + mi * 60 + se;
        match &s[19..] {
            "" | "Z" => {}
            z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) && z.as_bytes()[3] == b':' => {
                let (oh, om) = (num(20..22)?, num(23..25)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let offset = oh * 3600 + om * 60;
                secs -= if z.starts_with('+') { offset } else { -offset };
            }
            _ => return None,
        }
    }
    Some(crate::supply::days_from_civil(y, m, d) * 86_400 + secs)
}

/// How far the walk is: (commits done, commits in all).
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// The repository and where the config repo is in it.
struct Opened {
    repo: Repository,
    git_dir: PathBuf,
    subdir: String,
}

fn open(path: &Path) -> anyhow::Result<Opened> {
    let repo = crate::source::discover(path).with_context(|| {
        format!(
            "opening the git repository of `{}` to audit its history",
            path.display()
        )
    })?;
    let git_dir = repo.path().to_owned();
    let subdir = crate::source::workdir_prefix(path);
    Ok(Opened { repo, git_dir, subdir })
}

/// The notes ref to read: the remote's notes fetched now (with the deploy branches the notes
/// name), or the local notes ref. A fetch that fails is said, and the notes an earlier audit
/// fetched (else the local ones) are read.
fn fetch_records(o: &Opened, fetch: bool, findings: &mut Vec<super::Finding>) -> String {
    const FETCHED: &str = "refs/rampart/audit/notes";
    let local = || {
        if o.repo.refname_to_id(FETCHED).is_ok() {
            FETCHED.to_owned()
        } else {
            notes::NOTES_REF.to_owned()
        }
    };
    let names = remote_names(&o.repo);
    let remote = if names.iter().any(|r| r == "origin") {
        "origin".to_owned()
    } else {
        match names.first() {
            Some(r) => r.to_owned(),
            None => return notes::NOTES_REF.to_owned(),
        }
    };
    if !fetch {
        return local();
    }
    // the remote's branches too (into rampart's own namespace): the deploy branches are
    // found among them
    let _ = git_fetch(
        &o.git_dir,
        &remote,
        &["+refs/heads/*:refs/rampart/audit/heads/*".to_owned()],
    );
    let before = o.repo.refname_to_id(FETCHED).ok();
    match git_fetch(&o.git_dir, &remote, &[format!("+{}:{FETCHED}", notes::NOTES_REF)]) {
        Ok(()) => {
            // notes are only ever added to: a remote whose notes lost what an earlier audit
            // fetched had them removed or rewritten
            let now = o.repo.refname_to_id(FETCHED).ok();
            if let (Some(b), Some(n)) = (before, now)
                && b != n
                && !o.repo.graph_descendant_of(n, b).unwrap_or(false)
            {
                findings.push(finding(
                    "R711",
                    None,
                    None,
                    format!(
                        "the notes on `{remote}` were rewritten since the last audit: {} is not an ancestor of {} (records were removed or changed)",
                        short(&b.to_string()),
                        short(&n.to_string())
                    ),
                    "compare the two notes commits (git diff <old> <new>) and restore the removed records from a clone that still has them",
                ));
            }
            FETCHED.to_owned()
        }
        Err(e) => {
            let read = local();
            findings.push(finding(
                "R711",
                None,
                None,
                format!(
                    "could not fetch {} from `{remote}` ({e}); read {read} instead, which may be stale",
                    notes::NOTES_REF
                ),
                "make the remote reachable (or pass --no-fetch to audit the local records on purpose)",
            ));
            read
        }
    }
}

/// Notes only ever gain entries (serve adds, and merges concurrent notes entry by entry): a
/// note removed, or an entry of one removed or changed, anywhere in the notes' own history is
/// R711 — whoever did it, by a fast-forward or not.
fn notes_history(o: &Opened, notes_ref: &str, findings: &mut Vec<super::Finding>) {
    const MAX_COMMITS: usize = 100_000;
    let Ok(tip) = o.repo.refname_to_id(notes_ref) else {
        return;
    };
    let Ok(mut walk) = o.repo.revwalk() else { return };
    if walk.push(tip).is_err() {
        return;
    }
    let mut trees = pipeline::Trees::default();
    let read = |id: Oid| -> Option<Note> {
        let size = o.repo.odb().ok()?.read_header(id).ok()?.0;
        if size > 1 << 20 {
            return None;
        }
        serde_json::from_slice(o.repo.find_blob(id).ok()?.content()).ok()
    };
    for id in walk.flatten().take(MAX_COMMITS) {
        let Ok(c) = o.repo.find_commit(id) else { continue };
        for p in c.parents() {
            let Ok(changed) = trees.changed(&o.repo, Some(p.tree_id()), Some(c.tree_id())) else {
                continue;
            };
            for ch in changed {
                let Some((old, _)) = ch.old else { continue };
                let annotated: String = ch.path.chars().filter(|c| *c != '/').collect();
                let what = match ch.new {
                    None => Some("removed".to_owned()),
                    Some((new, _)) => match (read(old), read(new)) {
                        (Some(a), Some(b))
                            if a.applies.iter().all(|e| b.applies.contains(e))
                                && a.rollouts.iter().all(|e| b.rollouts.contains(e)) =>
                        {
                            None
                        }
                        (Some(_), _) => Some("changed: entries of it were removed or altered".to_owned()),
                        (None, _) => None,
                    },
                };
                if let Some(what) = what {
                    findings.push(finding(
                        "R711",
                        Some(&annotated).filter(|a| a.len() == 40).map(String::as_str),
                        None,
                        format!(
                            "the note on {} was {what} by notes commit {} ({}): notes are only ever added to",
                            short(&annotated),
                            short(&id.to_string()),
                            crate::target::rfc3339(c.time().seconds())
                        ),
                        "restore the note from the notes commit before it (git notes --ref rampart show <commit> at that revision) and find who pushed the change",
                    ));
                }
            }
        }
    }
}

/// The repository's remotes by name.
fn remote_names(repo: &Repository) -> Vec<String> {
    repo.remotes()
        .map(|r| r.iter().filter_map(|x| x.ok().flatten().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// `git fetch REMOTE REFSPECS` with the user's own git configuration (credentials), no
/// prompt, at most two minutes.
fn git_fetch(git_dir: &Path, remote: &str, refspecs: &[String]) -> Result<(), String> {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("--git-dir")
        .arg(git_dir)
        .args([
            "fetch",
            "--no-tags",
            "--quiet",
            "--no-write-fetch-head",
            "--end-of-options",
            remote,
        ])
        .args(refspecs)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("could not run git: {e}"))?;
    // stderr is drained while git runs (a full pipe would stall it), its first 4 KiB kept
    let stderr = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = 4096usize.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            String::from_utf8_lossy(&kept).into_owned()
        })
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
                return if status.success() {
                    Ok(())
                } else {
                    Err(crate::diagnostic::visible(&crate::remote::redact_url(err.trim()), &[]))
                };
            }
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("no answer within 120 s".to_owned());
            }
        }
    }
}

/// The first-parent commits from `rev`, newest first, and the commit the walk stopped at
/// when it is a shallow clone's boundary (its parents are not in the clone; libgit2 shows
/// such a commit without parents).
fn first_parents(repo: &Repository, head: Oid) -> anyhow::Result<(Vec<Oid>, Option<Oid>)> {
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    walk.simplify_first_parent()?;
    let mut out = Vec::new();
    for id in walk {
        out.push(id.context("walking the first-parent history")?);
    }
    let shallow = shallow_commits(repo);
    let cut = out.last().copied().filter(|last| shallow.contains(last));
    Ok((out, cut))
}

/// The commits a shallow clone cut the history at (`<git dir>/shallow`).
fn shallow_commits(repo: &Repository) -> HashSet<Oid> {
    if !repo.is_shallow() {
        return HashSet::new();
    }
    std::fs::read_to_string(repo.path().join("shallow"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Oid::from_str(l.trim()).ok())
        .collect()
}

/// A note as read: parsed, or why not.
fn read_note(repo: &Repository, notes_ref: &str, note_blob: Oid, commit: Oid) -> Option<Result<Note, String>> {
    /// Far above what rampart writes (an entry per target and apply), far below what would
    /// cost memory: a note over these is not rampart's.
    const MAX_NOTE_BYTES: usize = 1 << 20;
    const MAX_ENTRIES: usize = 1000;
    // (the size from the object's header: a huge note is never read into memory)
    let size = repo.odb().ok()?.read_header(note_blob).ok()?.0;
    if size > MAX_NOTE_BYTES {
        return Some(Err(format!(
            "{size} bytes, over the {MAX_NOTE_BYTES} a note of rampart's can hold"
        )));
    }
    let note = repo.find_note(Some(notes_ref), commit).ok()?;
    let bytes = note.message_bytes();
    if repo.find_commit(commit).is_err() {
        return Some(Err("it annotates an object that is not a commit".to_owned()));
    }
    Some(
        serde_json::from_slice::<Note>(bytes)
            .map_err(|e| {
                let mut m = e.to_string();
                m.truncate(200);
                m
            })
            .and_then(|n| {
                if n.applies.len() + n.rollouts.len() > MAX_ENTRIES {
                    Err(format!(
                        "{} entries, over the {MAX_ENTRIES} a note of rampart's can hold",
                        n.applies.len() + n.rollouts.len()
                    ))
                } else {
                    Ok(n)
                }
            }),
    )
}

/// One deploy commit's record of a source commit.
#[derive(Debug, Clone)]
struct DeployRecord {
    commit: String,
    tree: String,
    time: String,
    decision: String,
}

/// Per deploy branch (`None`: named by a note but not in the clone): source commit → every
/// deploy commit naming it.
type Deploys = HashMap<String, Option<HashMap<String, Vec<DeployRecord>>>>;

/// The deploy branches' records. A deploy branch is any branch — fetched from the remote
/// into `refs/rampart/audit/heads/*` (never over the user's refs), local, or remote-tracking —
/// whose tip carries a `Rampart-Source:` trailer, and any branch a note names; found
/// without the notes, so deleting the notes cannot hide what the deploy branch records.
fn deploy_index(
    o: &Opened,
    named: &HashSet<String>,
    only: &[String],
    warnings: &mut Vec<String>,
    findings: &mut Vec<super::Finding>,
) -> Deploys {
    const FETCHED: &str = "refs/rampart/audit/heads/";
    let mut tips: BTreeMap<String, Oid> = BTreeMap::new();
    let consider = |name: &str, id: Oid, tips: &mut BTreeMap<String, Oid>| {
        if tips.contains_key(name) {
            return;
        }
        // a deploy branch has a `Rampart-Source:` commit among its last 100 (a commit pushed
        // on top without one does not hide it)
        let is_deploy = || {
            let Ok(mut walk) = o.repo.revwalk() else { return false };
            if walk.push(id).is_err() || walk.simplify_first_parent().is_err() {
                return false;
            }
            walk.flatten().take(100).any(|c| {
                o.repo.find_commit(c).is_ok_and(|c| {
                    trailers(&String::from_utf8_lossy(c.message_bytes()))
                        .iter()
                        .any(|(k, _)| k == crate::target::branch::SOURCE_TRAILER)
                })
            })
        };
        let given = !only.is_empty();
        if (given && only.iter().any(|b| b == name)) || (!given && (named.contains(name) || is_deploy())) {
            tips.insert(name.to_owned(), id);
        }
    };
    let remotes = remote_names(&o.repo);
    if let Ok(refs) = o.repo.references() {
        let mut all: Vec<(String, Oid)> = refs
            .flatten()
            .filter_map(|r| Some((r.name().ok()?.to_owned(), r.target()?)))
            .collect();
        // the freshly fetched remote branches first, then local, then remote-tracking
        let rank = |n: &str| {
            if n.starts_with(FETCHED) {
                0
            } else if n.starts_with("refs/heads/") {
                1
            } else {
                2
            }
        };
        all.sort_by_key(|(n, _)| rank(n));
        for (name, id) in all {
            // (the remote's branches as this or an earlier audit fetched them)
            let short = if let Some(b) = name.strip_prefix(FETCHED) {
                b.to_owned()
            } else if let Some(b) = name.strip_prefix("refs/heads/") {
                b.to_owned()
            } else if let Some(b) = remotes
                .iter()
                .find_map(|r| name.strip_prefix(&format!("refs/remotes/{r}/")))
            {
                b.to_owned()
            } else {
                continue;
            };
            consider(&short, id, &mut tips);
        }
    }
    let mut out: Deploys = HashMap::new();
    for b in only {
        if !tips.contains_key(b) {
            findings.push(finding(
                "R711",
                None,
                None,
                format!(
                    "the deploy branch `{}` given with --deploy-branch is not on the remote or in this clone",
                    crate::diagnostic::visible(b, &[])
                ),
                "a deploy branch that disappears takes its records with it: find who deleted it",
            ));
        }
    }
    for b in named.iter().filter(|_| only.is_empty()) {
        if !tips.contains_key(b) {
            let b = crate::diagnostic::visible(b, &[]);
            warnings.push(format!(
                "the deploy branch `{b}` is not in this clone: its records were not checked (git fetch origin {b})"
            ));
            out.insert(b.clone(), None);
        }
    }
    for (b, tip) in tips {
        let mut index: HashMap<String, Vec<DeployRecord>> = HashMap::new();
        if let Ok((commits, _)) = first_parents(&o.repo, tip) {
            for id in commits {
                let Ok(c) = o.repo.find_commit(id) else { continue };
                let t = trailers(&String::from_utf8_lossy(c.message_bytes()));
                let decision = t
                    .iter()
                    .find(|(k, _)| k == crate::target::branch::DECISION_TRAILER)
                    .map(|(_, v)| crate::diagnostic::visible(v, &[]))
                    .unwrap_or_default();
                for (k, v) in &t {
                    if k == crate::target::branch::SOURCE_TRAILER {
                        index.entry(v.clone()).or_default().push(DeployRecord {
                            commit: id.to_string(),
                            tree: c.tree_id().to_string(),
                            time: crate::target::rfc3339(c.time().seconds()),
                            decision: decision.clone(),
                        });
                    }
                }
            }
        }
        out.insert(b, Some(index));
    }
    out
}

/// The trailers of a commit message (key, value).
fn trailers(message: &str) -> Vec<(String, String)> {
    git2::message_trailers_strs(message)
        .map(|t| t.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
        .unwrap_or_default()
}

/// The pull request a merge or squash subject names: `Merge pull request #12 from …` or
/// `… (#12)`.
fn pull_request_in(subject: &str) -> Option<u64> {
    // (digits only, not 0: `u64::from_str` also takes `+1`)
    let number = |d: &str| -> Option<u64> {
        (!d.is_empty() && d.len() <= 12 && d.bytes().all(|b| b.is_ascii_digit()))
            .then(|| d.parse().ok())
            .flatten()
            .filter(|n| *n > 0)
    };
    if let Some(rest) = subject.strip_prefix("Merge pull request #") {
        return number(rest.split(|c: char| !c.is_ascii_digit()).next()?);
    }
    let t = subject.trim_end();
    let inner = t.strip_suffix(')')?;
    let at = inner.rfind("(#")?;
    number(&inner[at + 2..])
}

/// One commit's facts used by every row of it.
struct CommitFacts {
    id: String,
    time: String,
    author: Person,
    subject: String,
    approved_by: Vec<String>,
    note: Option<Note>,
}

fn commit_facts(repo: &Repository, id: Oid, note: Option<Note>) -> anyhow::Result<CommitFacts> {
    let c = repo.find_commit(id)?;
    let msg = String::from_utf8_lossy(c.message_bytes()).into_owned();
    let a = c.author();
    Ok(CommitFacts {
        id: id.to_string(),
        time: crate::target::rfc3339(c.time().seconds()),
        author: Person {
            name: String::from_utf8_lossy(a.name_bytes()).into_owned(),
            email: String::from_utf8_lossy(a.email_bytes()).into_owned(),
            login: None,
        },
        subject: crate::diagnostic::visible(msg.lines().next().unwrap_or(""), &[]),
        approved_by: trailers(&msg)
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("approved-by"))
            .map(|(_, v)| v)
            .collect(),
        note,
    })
}

/// Whether the commit is exactly rampart's revert: it names what it reverts
/// (`Rampart-Revert-Of:`), and its tree is that revert on its parent, as `serve` verifies its
/// own. A note saying `rampart[revert]` proves nothing by itself.
fn is_rampart_revert(repo: &Repository, git_dir: &Path, id: Oid) -> bool {
    let Ok(c) = repo.find_commit(id) else {
        return false;
    };
    let Ok(parent) = c.parent_id(0) else {
        return false;
    };
    let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
    let Some(of) = trailers(&message)
        .into_iter()
        .find(|(k, _)| k == crate::rollback::REVERT_TRAILER)
        .map(|(_, v)| v)
    else {
        return false;
    };
    let expected = crate::rollback::tree_of(
        git_dir,
        &crate::rollback::Change::Revert { of: of.trim() },
        &parent.to_string(),
    );
    matches!(expected, Ok(Some(t)) if t == c.tree_id().to_string())
}

/// Who a change is re-decided as: rampart itself for its own reverts — when the note says so
/// and `is_rampart_revert` confirms the commit is exactly rampart's revert (a note alone
/// proves nothing) — the recorded pull request's author and reviewers, else the commit's
/// author and trailers (as `check` reads them).
fn principals(note: Option<&Note>, is_rampart_revert: impl FnOnce() -> bool) -> Principals {
    let Some(e) = note.and_then(|n| {
        n.applies
            .iter()
            .find(|e| e.result != "superseded" || e.author.is_some())
    }) else {
        return Principals::default();
    };
    match e.author.as_deref() {
        Some(crate::policy::tests::REVERT_PRINCIPAL) if is_rampart_revert() => Principals {
            system: Some(crate::policy::tests::REVERT_PRINCIPAL),
            ..Principals::default()
        },
        Some(crate::policy::tests::REVERT_PRINCIPAL) => Principals::default(),
        Some(a) if e.pull_request.is_some() => Principals::logins(Some(a), &e.approvers),
        _ => Principals::default(),
    }
}

/// Revert and promote commits of the walked history, by the commit they follow up.
fn follow_ups(repo: &Repository, commits: &[Oid]) -> HashMap<String, Vec<FollowUp>> {
    let mut out: HashMap<String, Vec<FollowUp>> = HashMap::new();
    for id in commits {
        let Ok(c) = repo.find_commit(*id) else { continue };
        let msg = String::from_utf8_lossy(c.message_bytes()).into_owned();
        let t = trailers(&msg);
        let evidence: BTreeMap<String, String> = t
            .iter()
            .filter(|(k, _)| k.starts_with("Rampart-"))
            .map(|(k, v)| (k.clone(), crate::diagnostic::visible(v, &[])))
            .collect();
        let author = String::from_utf8_lossy(c.author().name_bytes()).into_owned();
        let mut push = |kind: &'static str, of: &str| {
            out.entry(of.to_owned()).or_default().push(FollowUp {
                kind,
                commit: id.to_string(),
                time: crate::target::rfc3339(c.time().seconds()),
                author: crate::diagnostic::visible(&author, &[]),
                evidence: evidence.clone(),
            });
        };
        let mut any = false;
        for (k, v) in &t {
            let of = v.split_whitespace().next().unwrap_or("");
            if k == crate::rollback::REVERT_TRAILER {
                push("revert", of);
                any = true;
            } else if k == crate::rollback::PROMOTE_TRAILER {
                push("promote", of);
                any = true;
            }
        }
        // a plain `git revert`
        if !any
            && let Some(at) = msg.find("This reverts commit ")
            && let Some(of) = msg[at + 20..].split(|c: char| !c.is_ascii_hexdigit()).next()
            && of.len() == 40
        {
            push("revert", of);
        }
    }
    out
}

/// Audit the history (see [`Options`]); `progress` is told how far the walk is.
pub fn audit(opts: &Options, progress: Progress<'_>) -> anyhow::Result<Report> {
    if let Some(k) = &opts.kind
        && !["Team", "Tenant", "Plugin", "Rollout", "File"]
            .iter()
            .any(|x| x.eq_ignore_ascii_case(k))
    {
        bail!(
            "--kind {}: not a kind; give Team, Tenant, Plugin, Rollout or File",
            crate::diagnostic::quote(k)
        );
    }
    let o = open(&opts.path)?;
    let rev = if opts.rev.is_empty() { "HEAD" } else { opts.rev.as_str() };
    let mut warnings = Vec::new();
    let mut early = Vec::new();
    let notes_ref = fetch_records(&o, opts.fetch, &mut early);
    notes_history(&o, &notes_ref, &mut early);
    if o.repo.refname_to_id(&notes_ref).is_err() {
        warnings.push(format!(
            "there are no notes at {notes_ref}: nothing can be shown as applied (fetch them: git fetch origin {}:{})",
            notes::NOTES_REF,
            notes::NOTES_REF
        ));
    }
    let head = o
        .repo
        .revparse_single(rev)
        .and_then(|x| x.peel_to_commit())
        .with_context(|| format!("resolving `{rev}` in `{}`", opts.path.display()))?
        .id();
    let (all, shallow_cut) = first_parents(&o.repo, head)?;
    let on_branch: HashSet<Oid> = all.iter().copied().collect();

    // the range, oldest first
    let resolve = |r: &str| -> anyhow::Result<Oid> {
        Ok(o.repo
            .revparse_single(r)
            .and_then(|x| x.peel_to_commit())
            .with_context(|| format!("resolving `{r}`"))?
            .id())
    };
    let time_of = |id: &Oid| o.repo.find_commit(*id).map(|c| c.time().seconds()).unwrap_or(0);
    let mut range: Vec<Oid> = Vec::new();
    let since_rev = match &opts.since {
        Some(Bound::Rev(r)) => Some(resolve(r)?),
        _ => None,
    };
    let until_rev = match &opts.until {
        Some(Bound::Rev(r)) => Some(resolve(r)?),
        _ => None,
    };
    // revisions bound by position; dates by the commits' times — but a commit's date is
    // whatever its author wrote, so a backdated commit between two commits in range is in
    // range, and so is one dated before its own parent just below the range (see README)
    let mut started = until_rev.is_none();
    let mut walked: Vec<(Oid, i64)> = Vec::new();
    for id in &all {
        if Some(*id) == until_rev {
            started = true;
        }
        if !started {
            continue;
        }
        if Some(*id) == since_rev {
            break;
        }
        walked.push((*id, time_of(id)));
    }
    let dated = |t: i64| {
        !matches!(opts.since, Some(Bound::Time(s)) if t < s) && !matches!(opts.until, Some(Bound::Time(u)) if t > u)
    };
    // (without a date `--until`, every commit above one in range came after it: the
    // first-parent line is the branch's own order, whatever the dates say)
    let first = walked.iter().position(|(_, t)| dated(*t)).map(|f| {
        if matches!(opts.until, Some(Bound::Time(_))) {
            f
        } else {
            0
        }
    });
    let last = walked.iter().rposition(|(_, t)| dated(*t));
    if let (Some(first), Some(last)) = (first, last) {
        let mut end = last;
        // below the range: commits dated before their parent (backdated)
        while end + 1 < walked.len() {
            let (id, t) = walked[end + 1];
            let parent_time = o
                .repo
                .find_commit(id)
                .ok()
                .and_then(|c| c.parent(0).ok())
                .map(|p| p.time().seconds());
            if parent_time.is_some_and(|p| t < p) && matches!(opts.since, Some(Bound::Time(_))) {
                end += 1;
            } else {
                break;
            }
        }
        for (i, (id, t)) in walked[first..=end].iter().enumerate() {
            if !dated(*t) {
                warnings.push(format!(
                    "{} is dated {}, outside the range, but sits {} it: audited (a commit's date is its author's to write)",
                    short(&id.to_string()),
                    crate::target::rfc3339(*t),
                    if first + i > last { "just below" } else { "inside or above" }
                ));
            }
            range.push(*id);
        }
    }
    if let Some(r) = since_rev
        && !on_branch.contains(&r)
    {
        bail!(
            "--since {}: not on the first-parent history of `{rev}`",
            short(&r.to_string())
        );
    }
    range.reverse();

    let mut report = Report {
        rampart: super::FORMAT,
        kind: "AuditReport",
        repository: o.repo.workdir().unwrap_or(o.repo.path()).display().to_string(),
        subdir: o.subdir.clone(),
        rev: rev.to_owned(),
        head: head.to_string(),
        notes: notes_ref.clone(),
        commits: range.len(),
        changing: 0,
        rows: Vec::new(),
        findings: Vec::new(),
        warnings: Vec::new(),
    };
    report.findings.extend(early);
    if let Some(cut) = shallow_cut {
        report.findings.push(finding(
            "R709",
            Some(&cut.to_string()),
            None,
            format!(
                "this clone is shallow: the history stops at {} ({}); commits before it, their notes and what they applied are not audited",
                short(&cut.to_string()),
                crate::target::rfc3339(time_of(&cut))
            ),
            "fetch the whole history and the notes: git fetch --unshallow origin && git fetch origin refs/notes/rampart:refs/notes/rampart",
        ));
    }

    // every note: rows read theirs; a note on a commit that is no longer on the branch is
    // history rewritten under it
    let mut notes_by: HashMap<Oid, Note> = HashMap::new();
    let mut branches: HashSet<String> = HashSet::new();
    let notes_iter = match o.repo.notes(Some(&notes_ref)) {
        Ok(i) => Some(i),
        Err(_) if o.repo.refname_to_id(&notes_ref).is_err() => None,
        Err(e) => {
            report.findings.push(finding(
                "R711",
                None,
                None,
                format!("the notes ref {notes_ref} does not read as notes: {}", e.message()),
                "a notes ref points at a commit of notes; restore it from a clone that has the notes",
            ));
            None
        }
    };
    if let Some(iter) = notes_iter {
        for (note_blob, annotated) in iter.flatten() {
            match read_note(&o.repo, &notes_ref, note_blob, annotated) {
                None => {}
                Some(Err(e)) => report.findings.push(finding(
                    "R708",
                    Some(&annotated.to_string()),
                    None,
                    format!(
                        "the note on {} under {notes_ref} does not parse: {}",
                        short(&annotated.to_string()),
                        crate::diagnostic::visible(&e, &[])
                    ),
                    "rampart writes these notes as JSON; one that does not parse was written or damaged by hand (git notes --ref rampart show <commit>)",
                )),
                Some(Ok(n)) => {
                    for e in &n.applies {
                        if let Some(b) = e.target.strip_prefix("branch:")
                            && !b.contains('@')
                        {
                            branches.insert(b.to_owned());
                        }
                    }
                    let applied = n.applies.iter().any(|e| e.result == "applied");
                    // (a commit after the audited revision is not off its history)
                    // (asked only off the branch: it walks the history)
                    if applied
                        && !on_branch.contains(&annotated)
                        && shallow_cut.is_none()
                        && !o.repo.graph_descendant_of(annotated, head).unwrap_or(false)
                    {
                        let e = n.applies.iter().find(|e| e.result == "applied").expect("one applied");
                        let merged = o.repo.graph_descendant_of(head, annotated).unwrap_or(false);
                        report.findings.push(finding(
                            "R704",
                            Some(&annotated.to_string()),
                            None,
                            format!(
                                "{} was applied to {} at {}, but it is {}",
                                short(&annotated.to_string()),
                                crate::diagnostic::visible(&e.target, &[]),
                                crate::diagnostic::visible(&e.time, &[]),
                                if merged {
                                    format!("not on the first-parent history of `{rev}` (serve applies only those): a note rampart did not write, or history rewritten")
                                } else {
                                    format!("no longer in the history of `{rev}`: the branch was rewritten under it")
                                }
                            ),
                            "find the force-push in the remote's audit log; the target may hold a change the branch no longer has",
                        ));
                    }
                    notes_by.insert(annotated, n);
                }
            }
        }
    }
    let mut lost = Vec::new();
    let deploys = deploy_index(&o, &branches, &opts.deploy_branches, &mut warnings, &mut lost);
    report.findings.extend(lost);
    // a remote serve never wrote to (no notes, no deploy branch) is not a lost record
    if deploys.values().all(Option::is_none) {
        let before = report.findings.len();
        report
            .findings
            .retain(|f| !(f.code == "R711" && f.message.contains("couldn't find remote ref")));
        if report.findings.len() < before {
            warnings.push("the remote has no rampart notes and there is no deploy branch: nothing was applied by serve, or its records are gone".to_owned());
        }
    }
    // with no notes in this clone at all (--no-fetch), a deploy commit without its note says
    // nothing
    let no_notes_here = !opts.fetch && o.repo.refname_to_id(&notes_ref).is_err();
    let follow = follow_ups(&o.repo, &all);

    // re-decide every change, oldest first
    let cache =
        (std::env::var("RAMPART_CACHE").as_deref() != Ok("off")).then(|| crate::cache::ParseCache::open(&o.git_dir));
    let mut replay = Replay::new(&o.git_dir, &o.subdir, cache)?;
    let mut prev: Option<(Oid, crate::source::Source, Validated)> = None;
    let total = range.len() as u64;
    for (i, id) in range.iter().enumerate() {
        if i % 64 == 0 {
            progress(i as u64, total);
        }
        let c = o.repo.find_commit(*id)?;
        let parent = c.parent_id(0).ok().filter(|p| o.repo.find_commit(*p).is_ok());
        let root = c.parent_count() == 0 && Some(*id) != shallow_cut;
        let note = notes_by.get(id).cloned();
        let sub_tree = |commit: &git2::Commit| -> Option<Oid> {
            let t = commit.tree().ok()?;
            if o.subdir.is_empty() {
                Some(t.id())
            } else {
                t.get_path(Path::new(&o.subdir)).ok().map(|e| e.id())
            }
        };
        // a commit that changed nothing under the config repo has no rows
        let parent_tree = parent
            .and_then(|p| o.repo.find_commit(p).ok())
            .and_then(|p| sub_tree(&p));
        if parent.is_some() && parent_tree == sub_tree(&c) {
            // (the same revision as its parent: it stands for it as the next one's base)
            if let Some(x) = prev.as_mut()
                && Some(x.0) == parent
            {
                x.0 = *id;
            }
            continue;
        }
        let facts = commit_facts(&o.repo, *id, note)?;
        let base = match (parent, prev.take()) {
            (Some(p), Some(x)) if x.0 == p => Some(x),
            (Some(p), _) => replay.at(p).ok().map(|(s, v)| (p, s, v)),
            (None, _) => None,
        };
        let (head_src, head_v) = match replay.at(*id) {
            Ok(x) => x,
            Err(e) => {
                // the commit removed the config repo: every object of its parent is deleted,
                // by a revision that is not one
                if let Some((_, _, base_v)) = &base {
                    let empty = crate::spec::Repo::default();
                    let gone = crate::change::diff(&base_v.repo, &empty, &[], &[], &crate::change::never_same);
                    for c in &gone {
                        let mut r = row(
                            &facts,
                            c,
                            DecisionPair {
                                recomputed: "invalid".to_owned(),
                                policies: Vec::new(),
                                reason: Some(crate::diagnostic::visible(&e.to_string(), &[])),
                                recorded: None,
                                recorded_as: None,
                            },
                        );
                        r.followed_by = follow.get(&facts.id).cloned().unwrap_or_default();
                        if wanted(opts, &r, Some(base_v), base_v) {
                            report.findings.extend(row_findings(&r, &RowFacts::default()));
                            report.rows.push(r);
                        }
                    }
                    report.changing += 1;
                }
                prev = None;
                continue;
            }
        };
        report.changing += 1;
        let by_rampart_note = facts
            .note
            .iter()
            .flat_map(|n| &n.applies)
            .any(|e| e.author.as_deref() == Some(crate::policy::tests::REVERT_PRINCIPAL));
        let rampart_revert = by_rampart_note && is_rampart_revert(&o.repo, &o.git_dir, *id);
        let mut rows = match &base {
            // the boundary of a shallow clone: what its parent held is unknown (R709 says so),
            // so no change can be told
            None if Some(*id) == shallow_cut => Vec::new(),
            None => initial_rows(&facts, &head_src, &head_v, root)?,
            Some((_, base_src, base_v)) => decided_rows(
                &facts,
                base_src,
                &head_src,
                base_v,
                &head_v,
                replay.changed.as_deref(),
                rampart_revert,
            )?,
        };
        for row in &mut rows {
            row.followed_by = follow.get(&facts.id).cloned().unwrap_or_default();
        }
        for row in &mut rows {
            for a in &mut row.applied {
                a.deploy_commit = deploy_of(a, &facts, &deploys).flatten();
            }
        }
        // what a deploy branch records of this commit with no note saying so
        for (b, index) in deploys.iter().filter(|_| !no_notes_here) {
            let Some(recs) = index.as_ref().and_then(|i| i.get(&facts.id)) else {
                continue;
            };
            let target = format!("branch:{b}");
            if facts.note.iter().flat_map(|n| &n.applies).any(|e| e.target == target) {
                continue;
            }
            let r = &recs[0];
            for row in &mut rows {
                row.applied.push(Applied {
                    target: target.clone(),
                    result: "recorded-by-deploy-branch".to_owned(),
                    decision: r.decision.clone(),
                    time: r.time.clone(),
                    applied_as: facts.id.clone(),
                    deploy_commit: Some(r.commit.clone()),
                });
            }
            report.findings.push(finding(
                "R710",
                Some(&facts.id),
                None,
                format!(
                    "the deploy branch `{}` records {} as applied (deploy commit {}, {}), but no note on it says so",
                    crate::diagnostic::visible(b, &[]),
                    short(&facts.id),
                    short(&r.commit),
                    r.time
                ),
                "the note was removed, or the deploy branch written by hand: compare the notes' history (git log refs/notes/rampart) with the deploy branch",
            ));
        }
        let head_facts = |row: &Row| {
            let mut f = row_facts(row, &facts, &head_v, &deploys);
            f.by_rampart = rampart_revert;
            f
        };
        for row in rows {
            let keep = wanted(opts, &row, base.as_ref().map(|b| &b.2), &head_v);
            if !keep {
                continue;
            }
            let rf = head_facts(&row);
            report.findings.extend(row_findings(&row, &rf).into_iter().filter(|f| {
                // (an unverified plugin of another tenant is not this tenant's finding)
                opts.tenant
                    .as_ref()
                    .is_none_or(|t| f.code != "R707" || f.object.as_deref() == Some(&format!("Tenant/{t}")))
            }));
            report.rows.push(row);
        }
        // a commit serve found the branch rewritten under
        if let Some(n) = &facts.note {
            for e in n.applies.iter().filter(|e| e.decision == "history-rewritten") {
                report.findings.push(finding(
                    "R704",
                    Some(&facts.id),
                    None,
                    format!(
                        "{} found the branch rewritten when it applied {}: it held {}, which the branch no longer had",
                        e.target,
                        short(&facts.id),
                        e.from.as_deref().map(short).unwrap_or("an unknown commit")
                    ),
                    "find the force-push in the remote's audit log and review what the target held before",
                ));
            }
        }
        prev = Some((*id, head_src, head_v));
    }
    progress(total, total);
    report.warnings = warnings;
    report
        .findings
        .sort_by(|a, b| a.code.cmp(b.code).then(a.commit.cmp(&b.commit)));
    report.findings.dedup();
    Ok(report)
}

/// Whether the filters keep `row`.
fn wanted(opts: &Options, row: &Row, base: Option<&Validated>, head: &Validated) -> bool {
    if let Some(k) = &opts.kind
        && !row.kind.eq_ignore_ascii_case(k)
    {
        return false;
    }
    if let Some(n) = &opts.name
        && row.name != *n
    {
        return false;
    }
    let Some(t) = &opts.tenant else {
        return true;
    };
    if row.kind == "Tenant" {
        return row.name == *t;
    }
    // a plugin the tenant enables, a rollout that reaches it, a team that owns it, a
    // guarded file (every tenant)
    let reaches = |repo: &crate::spec::Repo| {
        let Some(tenant) = repo.tenants.iter().find(|x| x.name() == t) else {
            return false;
        };
        match row.kind.as_str() {
            "Plugin" => tenant.spec.plugins.iter().any(|p| p.name == row.name),
            // (its owners, and `platform`, which the default policies let change any tenant)
            "Team" => tenant.spec.owners.contains(&row.name) || row.name == "platform",
            "Rollout" => repo
                .rollouts
                .iter()
                .find(|r| r.name() == row.name)
                .is_some_and(|r| tenant.spec.plugins.iter().any(|p| p.name == r.spec.plugin)),
            _ => true,
        }
    };
    reaches(&head.repo) || base.is_some_and(|b| reaches(&b.repo))
}

/// Rows of a root commit, or of the commit the config repo first appears in: created, not
/// decided (there are no rules before it).
fn initial_rows(
    facts: &CommitFacts,
    head_src: &crate::source::Source,
    head: &Validated,
    root: bool,
) -> anyhow::Result<Vec<Row>> {
    let empty = crate::spec::Repo::default();
    let guarded = head_src.read_guarded(&head.repo.settings.limits)?.files;
    let changes = crate::change::diff(&empty, &head.repo, &[], &guarded, &crate::change::never_same);
    Ok(changes
        .iter()
        .map(|c| {
            row(
                facts,
                c,
                DecisionPair {
                    recomputed: "initial".to_owned(),
                    policies: Vec::new(),
                    reason: Some(if root {
                        "the first commit: there is no parent whose policies could decide".to_owned()
                    } else {
                        "the config repo first appears in this commit: there are no rules before it".to_owned()
                    }),
                    recorded: None,
                    recorded_as: None,
                },
            )
        })
        .collect())
}

/// Every change of the commit, re-decided with its parent's rules.
fn decided_rows(
    facts: &CommitFacts,
    base_src: &crate::source::Source,
    head_src: &crate::source::Source,
    base_v: &Validated,
    head_v: &Validated,
    changed: Option<&[pipeline::Changed]>,
    rampart_revert: bool,
) -> anyhow::Result<Vec<Row>> {
    let who = principals(facts.note.as_ref(), || rampart_revert);
    let a = match changed {
        // only the files the commit changed are compared (the guarded ones read when one of
        // them changed)
        Some(changed) => {
            let paths: foldhash::HashSet<String> = changed.iter().map(|c| c.path.clone()).collect();
            let guarded = changed.iter().any(|c| {
                c.path == crate::config::SETTINGS_FILE
                    || crate::source::GUARDED_DIRS
                        .iter()
                        .any(|d| c.path.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
            });
            let (bf, hf) = if guarded {
                (
                    base_src.read_guarded(&base_v.repo.settings.limits)?.files,
                    head_src.read_guarded(&head_v.repo.settings.limits)?.files,
                )
            } else {
                (Vec::new(), Vec::new())
            };
            let changes = crate::change::diff_in(
                &base_v.repo,
                &head_v.repo,
                &bf,
                &hf,
                &crate::change::never_same,
                Some(&paths),
            );
            pipeline::authorize_changes(head_src, base_v, head_v, &who, None, changes)
        }
        None => pipeline::authorize(base_src, head_src, base_v, head_v, &who, None),
    }
    .with_context(|| format!("re-deciding {}", short(&facts.id)))?;
    let invalid = (!head_v.is_valid()).then(|| {
        head_v
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .map(|d| crate::diagnostic::visible(&format!("{} {}", d.code.as_str(), d.message), &[]))
            .unwrap_or_default()
    });
    let mut rows: Vec<Row> = a
        .changes
        .iter()
        .zip(&a.decisions)
        .map(|(c, d)| {
            let (recomputed, reason) = match &invalid {
                Some(why) => ("invalid", Some(why.clone())),
                None if d.allowed => ("allow", None),
                None => {
                    let why = match (d.advice.first(), d.policies.is_empty()) {
                        (Some(a), _) => a.clone(),
                        (None, true) => "no policy permits it".to_owned(),
                        (None, false) => d.policies.join(", "),
                    };
                    // (who rampart took the author to be explains most denials)
                    let who = a
                        .diagnostics
                        .iter()
                        .find(|x| x.code.as_str() == "R420")
                        .map(|x| format!("; {}", x.message))
                        .unwrap_or_default();
                    ("deny", Some(crate::diagnostic::visible(&format!("{why}{who}"), &[])))
                }
            };
            row(
                facts,
                c,
                DecisionPair {
                    recomputed: recomputed.to_owned(),
                    policies: d.policies.clone(),
                    reason,
                    recorded: None,
                    recorded_as: None,
                },
            )
        })
        .collect();
    // a file the commit broke defines no object, so no change names it: a row of its own
    if let Some(changed) = changed.filter(|_| !head_v.is_valid()) {
        let mut broken: BTreeMap<&str, &crate::diagnostic::Diagnostic> = BTreeMap::new();
        for d in head_v.diagnostics.iter().filter(|d| d.is_error()) {
            if let crate::diagnostic::Anchor::File { file }
            | crate::diagnostic::Anchor::Node { file, .. }
            | crate::diagnostic::Anchor::Position { file, .. } = &d.anchor
            {
                broken.entry(file.as_str()).or_insert(d);
            }
        }
        for c in changed {
            let Some(d) = broken.get(c.path.as_str()) else { continue };
            if rows.iter().any(|r| r.path == c.path) {
                continue;
            }
            let change = crate::change::Change {
                action: if c.old.is_some() {
                    crate::change::Action::Update
                } else {
                    crate::change::Action::Create
                },
                subject: crate::change::Subject::File,
                name: c.path.clone(),
                file: c.path.clone(),
                doc: 0,
                old: None,
                new: None,
                base_invalid: false,
            };
            rows.push(row(
                facts,
                &change,
                DecisionPair {
                    recomputed: "invalid".to_owned(),
                    policies: Vec::new(),
                    reason: Some(crate::diagnostic::visible(
                        &format!("{} {}", d.code.as_str(), d.message),
                        &[],
                    )),
                    recorded: None,
                    recorded_as: None,
                },
            ));
        }
    }
    Ok(rows)
}

/// A row of `facts`' commit for change `c`, with what its note records.
fn row(facts: &CommitFacts, c: &crate::change::Change, mut decision: DecisionPair) -> Row {
    let (action, kind) = (c.action.as_str().to_owned(), c.subject.as_str().to_owned());
    let mut applied = Vec::new();
    let (mut pull_request, mut approvers, mut from) = (None, Vec::new(), "none");
    let mut author = facts.author.clone();
    if let Some(n) = &facts.note {
        for e in &n.applies {
            let v = |x: &str| crate::diagnostic::visible(x, &[]);
            applied.push(Applied {
                target: v(&e.target),
                result: v(&e.result),
                decision: v(&e.decision),
                time: v(&e.time),
                applied_as: v(&e.applied_as),
                deploy_commit: None,
            });
            if let Some(rec) = e
                .changes
                .iter()
                .find(|r| r.action == action && r.subject == kind && r.name == c.name)
            {
                decision.recorded = Some(if rec.allowed { "allow" } else { "deny" }.to_owned());
            }
            decision.recorded_as.get_or_insert_with(|| v(&e.decision));
            if e.pull_request.is_some() || !e.approvers.is_empty() {
                pull_request = pull_request.or(e.pull_request);
                if approvers.is_empty() {
                    approvers = e.approvers.iter().map(|a| v(a)).collect();
                }
                from = "note";
            }
            if author.login.is_none() {
                author.login = e.author.as_deref().map(v);
            }
        }
    }
    // what the commit itself says, where the note says nothing
    let trailers: Vec<String> = facts
        .approved_by
        .iter()
        .map(|a| crate::diagnostic::visible(a, &[]))
        .collect();
    if pull_request.is_none() {
        pull_request = pull_request_in(&facts.subject);
    }
    if approvers.is_empty() && !trailers.is_empty() {
        approvers = trailers;
        from = "trailers";
    } else if from == "none" && pull_request.is_some() {
        from = "trailers";
    }
    Row {
        commit: facts.id.clone(),
        time: facts.time.clone(),
        author: Person {
            name: crate::diagnostic::visible(&author.name, &[]),
            email: crate::diagnostic::visible(&author.email, &[]),
            login: author.login.map(|l| crate::diagnostic::visible(&l, &[])),
        },
        subject: facts.subject.clone(),
        pull_request,
        approvers,
        approvals_from: from,
        action,
        kind,
        name: crate::diagnostic::visible(&c.name, &[]),
        path: crate::diagnostic::visible(&c.file, &[]),
        decision,
        applied,
        followed_by: Vec::new(),
    }
}

/// The deploy commit recording `a` (a branch target): `None` when it cannot be checked (not
/// a branch target of this repository, or the branch is not in the clone), `Some(None)` when
/// the branch has no commit with its `Rampart-Source:` holding the tree the note names.
fn deploy_of(a: &Applied, facts: &CommitFacts, deploys: &Deploys) -> Option<Option<String>> {
    if a.result == "recorded-by-deploy-branch" {
        return Some(a.deploy_commit.clone());
    }
    let b = a.target.strip_prefix("branch:").filter(|b| !b.contains('@'))?;
    let index = deploys.get(b)?.as_ref()?;
    let tree = facts
        .note
        .iter()
        .flat_map(|n| &n.applies)
        .find(|e| e.target == a.target && e.applied_as == a.applied_as)
        .and_then(|e| e.rendered.as_deref());
    Some(
        index
            .get(&a.applied_as)
            .and_then(|v| v.iter().find(|r| Some(r.tree.as_str()) == tree))
            .map(|r| r.commit.clone()),
    )
}

/// What decides a row's findings besides the row.
fn row_facts(row: &Row, facts: &CommitFacts, head: &Validated, deploys: &Deploys) -> RowFacts {
    let noted = facts.note.iter().flat_map(|n| &n.applies).find_map(|e| e.pull_request);
    let mut out = RowFacts {
        pull_request_mismatch: noted.zip(pull_request_in(&facts.subject)).filter(|(a, b)| a != b),
        has_trailers: !facts.approved_by.is_empty(),
        ..RowFacts::default()
    };
    for a in row
        .applied
        .iter()
        .filter(|a| a.result == "applied" || a.result == "recorded-by-deploy-branch")
    {
        out.deploy_found.push(deploy_of(a, facts, deploys).map(|c| c.is_some()));
    }
    let who = [
        row.author.login.clone().unwrap_or_default(),
        row.author.email.clone(),
        row.author.email.split('@').next().unwrap_or_default().to_owned(),
        row.author.name.clone(),
    ];
    for a in &row.approvers {
        let id = crate::policy::decide::Identity::parse_trailer(a);
        let same = [id.login, id.email, id.name]
            .into_iter()
            .flatten()
            .any(|x| who.iter().any(|w| !w.is_empty() && w.eq_ignore_ascii_case(&x)));
        if same {
            out.self_approvals.push(a.clone());
        }
    }
    // enterprise tenants the change reaches with a plugin whose signature is not verified
    let enterprise = |t: &crate::spec::Object<crate::spec::TenantSpec>| t.spec.tier == "enterprise";
    let mut pairs: Vec<(String, String)> = Vec::new();
    match row.kind.as_str() {
        "Tenant" if row.action != "delete" => {
            if let Some(t) = head.repo.tenants.iter().find(|t| t.name() == row.name && enterprise(t)) {
                for p in t.spec.plugins.iter().filter(|p| !p.disabled) {
                    pairs.push((t.name().to_owned(), p.name.clone()));
                }
            }
        }
        "Plugin" if row.action != "delete" => {
            for t in head.repo.tenants.iter().filter(|t| enterprise(t)) {
                if t.spec.plugins.iter().any(|p| p.name == row.name && !p.disabled) {
                    pairs.push((t.name().to_owned(), row.name.clone()));
                }
            }
        }
        _ => {}
    }
    let mut verified: HashMap<String, bool> = HashMap::new();
    for (t, p) in pairs {
        let ok = *verified
            .entry(p.clone())
            .or_insert_with(|| head.trust_of(&p).is_some_and(|x| x.signature_verified));
        if !ok {
            out.unverified_enterprise.push((t, p));
        }
    }
    out
}

/// One version of an object in its life.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub commit: String,
    pub time: String,
    pub author: Person,
    pub subject: String,
    /// `create`, `update`, `delete` or `rename` (from the previous name).
    pub action: String,
    /// The object's name at this version (an earlier name when it was renamed since).
    pub name: String,
    pub path: String,
    /// The object as rampart reads it (YAML, comments and key order normalised); empty
    /// when deleted.
    pub object: String,
    /// Unified diff from the previous version.
    pub diff: String,
}

/// The life of one spec object, newest version first.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Life {
    pub rampart: u32,
    pub kind: &'static str,
    pub object: String,
    pub head: String,
    pub versions: Vec<Version>,
}

/// `tenants/payments-prod`, `tenants/payments-prod.yaml` or `Tenant/payments-prod`.
pub fn parse_object(s: &str) -> Option<(crate::spec::Kind, String)> {
    let (k, name) = s.trim_end_matches('/').split_once('/')?;
    let kind = crate::spec::Kind::ALL
        .into_iter()
        .find(|x| x.dir() == k || x.as_str().eq_ignore_ascii_case(k))?;
    let name = name.trim_end_matches(".yaml").trim_end_matches(".yml");
    (!name.is_empty() && !name.contains('/')).then(|| (kind, name.to_owned()))
}

/// The object as YAML (what rampart read of it).
fn object_yaml(repo: &crate::spec::Repo, kind: crate::spec::Kind, name: &str) -> Option<String> {
    use crate::spec::Kind;
    fn doc<S: serde::Serialize>(kind: Kind, o: &crate::spec::Object<S>) -> String {
        let v = serde_json::json!({
            "apiVersion": crate::spec::API_VERSION,
            "kind": kind.as_str(),
            "metadata": &o.metadata,
            "spec": &o.spec,
        });
        serde_saphyr::to_string(&v).unwrap_or_default()
    }
    match kind {
        Kind::Team => repo.teams.iter().find(|o| o.name() == name).map(|o| doc(kind, o)),
        Kind::Tenant => repo.tenants.iter().find(|o| o.name() == name).map(|o| doc(kind, o)),
        Kind::Plugin => repo.plugins.iter().find(|o| o.name() == name).map(|o| doc(kind, o)),
        Kind::Rollout => repo.rollouts.iter().find(|o| o.name() == name).map(|o| doc(kind, o)),
    }
}

/// Every version of the object `kind`/`name` (as named at the walked revision) on the
/// first-parent history, renames followed: a commit that deletes one object of the kind and
/// creates this one in the same file (or deletes and creates exactly one each) renamed it.
pub fn life(opts: &Options, kind: crate::spec::Kind, name: &str, progress: Progress<'_>) -> anyhow::Result<Life> {
    let o = open(&opts.path)?;
    let rev = if opts.rev.is_empty() { "HEAD" } else { opts.rev.as_str() };
    let head = o
        .repo
        .revparse_single(rev)
        .and_then(|x| x.peel_to_commit())
        .with_context(|| format!("resolving `{rev}` in `{}`", opts.path.display()))?
        .id();
    let (mut all, _) = first_parents(&o.repo, head)?;
    all.reverse();
    // every change of the kind, oldest first: (commit, action, name, path, yaml after)
    struct Event {
        commit: Oid,
        action: crate::change::Action,
        name: String,
        path: String,
        yaml: Option<String>,
    }
    let mut events: Vec<Event> = Vec::new();
    let cache =
        (std::env::var("RAMPART_CACHE").as_deref() != Ok("off")).then(|| crate::cache::ParseCache::open(&o.git_dir));
    let mut replay = Replay::new(&o.git_dir, &o.subdir, cache)?;
    let mut prev: Option<(Oid, Validated)> = None;
    let total = all.len() as u64;
    for (i, id) in all.iter().enumerate() {
        if i % 64 == 0 {
            progress(i as u64, total);
        }
        let c = o.repo.find_commit(*id)?;
        // only commits that touched the kind's directory (or the settings) are read
        if let (Some(p), Some((pid, _))) = (c.parent_id(0).ok(), &prev)
            && *pid == p
        {
            let sub = |commit: &git2::Commit| -> Option<Oid> {
                let t = commit.tree().ok()?;
                let path = if o.subdir.is_empty() {
                    kind.dir().to_owned()
                } else {
                    format!("{}/{}", o.subdir, kind.dir())
                };
                t.get_path(Path::new(&path)).ok().map(|e| e.id())
            };
            if sub(&o.repo.find_commit(p)?) == sub(&c) {
                prev = prev.map(|(_, v)| (*id, v));
                continue;
            }
        }
        let Ok((_, head_v)) = replay.at(*id) else {
            prev = None;
            continue;
        };
        let empty = crate::spec::Repo::default();
        let base_repo = prev.as_ref().map_or(&empty, |(_, v)| &v.repo);
        let paths: Option<foldhash::HashSet<String>> = replay
            .changed
            .as_ref()
            .filter(|_| prev.is_some())
            .map(|c| c.iter().map(|c| c.path.clone()).collect());
        let changes = crate::change::diff_in(
            base_repo,
            &head_v.repo,
            &[],
            &[],
            &crate::change::never_same,
            paths.as_ref(),
        );
        for ch in changes {
            if ch.subject != crate::change::Subject::Object(kind) {
                continue;
            }
            events.push(Event {
                commit: *id,
                action: ch.action,
                yaml: object_yaml(&head_v.repo, kind, &ch.name),
                name: ch.name,
                path: ch.file,
            });
        }
        prev = Some((*id, head_v));
    }
    progress(total, total);
    // follow the name back through renames, newest first
    use crate::change::Action;
    let mut cur = name.to_owned();
    let mut versions = Vec::new();
    let mut i = events.len();
    while i > 0 {
        let commit = events[i - 1].commit;
        let start = events[..i]
            .iter()
            .rposition(|e| e.commit != commit)
            .map_or(0, |p| p + 1);
        let group = &events[start..i];
        i = start;
        let Some(mine) = group.iter().find(|e| e.name == cur) else {
            continue;
        };
        let mut action = mine.action.as_str().to_owned();
        let mut before_name = cur.clone();
        if mine.action == Action::Create {
            let deletes: Vec<&Event> = group.iter().filter(|e| e.action == Action::Delete).collect();
            let creates = group.iter().filter(|e| e.action == Action::Create).count();
            let renamed = deletes
                .iter()
                .find(|d| d.path == mine.path)
                .or_else(|| (deletes.len() == 1 && creates == 1).then(|| &deletes[0]));
            if let Some(d) = renamed {
                action = "rename".to_owned();
                before_name = d.name.clone();
            }
        }
        // the version before: the latest earlier event of the name it had then
        let before = events[..start]
            .iter()
            .rev()
            .find(|e| e.name == before_name)
            .and_then(|e| e.yaml.clone())
            .filter(|_| mine.action != Action::Create || action == "rename")
            .unwrap_or_default();
        let after = mine.yaml.clone().unwrap_or_default();
        let diff = similar::TextDiff::from_lines(&before, &after)
            .unified_diff()
            .context_radius(3)
            .header(
                &format!("a/{}/{before_name}", kind.dir()),
                &format!("b/{}/{}", kind.dir(), mine.name),
            )
            .to_string();
        let facts = commit_facts(&o.repo, commit, None)?;
        versions.push(Version {
            commit: facts.id,
            time: facts.time,
            author: Person {
                name: crate::diagnostic::visible(&facts.author.name, &[]),
                email: crate::diagnostic::visible(&facts.author.email, &[]),
                login: None,
            },
            subject: facts.subject,
            action,
            name: crate::diagnostic::visible(&mine.name, &[]),
            path: crate::diagnostic::visible(&mine.path, &[]),
            object: after,
            diff: crate::diagnostic::visible(&diff, &['\n']),
        });
        cur = before_name;
    }
    Ok(Life {
        rampart: super::FORMAT,
        kind: "ObjectLife",
        object: format!("{}/{name}", kind.dir()),
        head: head.to_string(),
        versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_revisions_as_bounds() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2026-11-29"), Some(1_795_910_400));
        assert_eq!(parse_time("2026-11-29T01:02:03Z"), Some(1_795_910_400 + 3723));
        assert_eq!(parse_time("2026-13-01"), None);
        assert_eq!(parse_time("2026-02-31"), None);
        assert_eq!(parse_time("2024-02-29"), Some(1_709_164_800));
        assert_eq!(parse_time("2026-11-29T02:00:00+02:00"), Some(1_795_910_400));
        assert_eq!(parse_time("HEAD~3"), None);
        assert_eq!(Bound::parse("v1.2", false), Ok(Bound::Rev("v1.2".to_owned())));
        assert_eq!(
            Bound::parse("2026-11-29", true),
            Ok(Bound::Time(1_795_910_400 + 86_399))
        );
        assert!(Bound::parse("2026-13-45", false).is_err());
    }

    #[test]
    fn pull_requests_from_merge_and_squash_subjects() {
        assert_eq!(pull_request_in("Merge pull request #42 from acme/x"), Some(42));
        assert_eq!(pull_request_in("sandbox: more cpu (#12)"), Some(12));
        assert_eq!(pull_request_in("sandbox: more cpu (#12"), None);
        assert_eq!(pull_request_in("fix (#)"), None);
        assert_eq!(pull_request_in("fix (#+1)"), None);
        assert_eq!(pull_request_in("Merge pull request #0 typed"), None);
        assert_eq!(pull_request_in("plain"), None);
    }

    #[test]
    fn objects_by_directory_or_kind() {
        use crate::spec::Kind;
        assert_eq!(
            parse_object("tenants/payments-prod"),
            Some((Kind::Tenant, "payments-prod".to_owned()))
        );
        assert_eq!(
            parse_object("Plugin/catalog.yaml"),
            Some((Kind::Plugin, "catalog".to_owned()))
        );
        assert_eq!(parse_object("tenants"), None);
        assert_eq!(parse_object("tenants/a/b"), None);
        assert_eq!(parse_object("widgets/a"), None);
    }
}
