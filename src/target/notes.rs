//! Records in Git: a note under `refs/notes/rampart` on every source commit an apply
//! authorised, saying where it was applied, when, as part of which commit, with which
//! decision per change, by whom and with whose approval. This module owns the note's JSON.
//!
//! A note holds a list of entries (one per target and applied commit), so two targets, or two
//! processes, add to one note instead of replacing it. Notes are pushed to the remote's
//! `refs/notes/rampart`; when the remote's notes moved, they are fetched and merged entry by
//! entry (a merge commit of both notes histories), then pushed again, so concurrent writers
//! lose nothing.

use super::{ChangeRecord, Record};
use crate::remote::{self, Pushed, Remote};
use anyhow::Context;
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The notes ref rampart writes.
pub const NOTES_REF: &str = "refs/notes/rampart";
/// Where the remote's notes are fetched to before a merge.
const REMOTE_NOTES: &str = "refs/rampart/notes-remote";

/// The note on one source commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// The format's version.
    pub rampart: u32,
    pub applies: Vec<Entry>,
    /// Rollout progress recorded on this (applied) commit: each step taken, pause, revert
    /// and promotion, per target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<RolloutEntry>,
}

/// A rollout's state on one target when it changed (a step applied, a pause, a revert or a
/// promotion), with what the target held then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutEntry {
    pub target: String,
    #[serde(flatten)]
    pub state: crate::rollout::State,
    /// The target's own id of what it held after the step (branch: the deploy commit's tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered: Option<String>,
}

impl RolloutEntry {
    fn key(&self) -> (&str, &str, &str, usize, &str, i64) {
        let s = &self.state;
        (
            &self.target,
            &s.rollout,
            &s.introduced_by,
            s.step,
            s.status.as_str(),
            s.updated,
        )
    }
}

impl Eq for RolloutEntry {}

/// One apply that included the annotated commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The target (`dir:/srv/out`, `branch:rendered`).
    pub target: String,
    /// `applied`; `unchanged` when the target already held it; `superseded` for a blocked
    /// commit that was never applied on its own (a later commit fixed it: `appliedAs`).
    pub result: String,
    /// The decision on this commit's own change and who made it.
    pub decision: String,
    pub author: Option<String>,
    pub approvers: Vec<String>,
    pub pull_request: Option<u64>,
    pub changes: Vec<ChangeRecord>,
    /// The source commit the target was brought to (this one, or a later one of the same
    /// apply) and the one it was authorised from.
    pub applied_as: String,
    pub from: Option<String>,
    /// The target's own id of what it holds (branch: the deploy commit's tree).
    pub rendered: Option<String>,
    pub time: String,
    /// Why a superseded commit was blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl Entry {
    /// An entry for `commit`'s own change, applied with `record`.
    pub fn new(
        target: &str,
        result: &str,
        record: &Record,
        own: &Record,
        changes: Vec<ChangeRecord>,
        rendered: Option<String>,
    ) -> Entry {
        Entry {
            target: target.to_owned(),
            result: result.to_owned(),
            decision: own.decision.clone(),
            author: own.author.clone(),
            approvers: own.approvers.clone(),
            pull_request: own.pull_request,
            changes,
            applied_as: record.source.clone(),
            from: record.from.clone(),
            rendered,
            time: record.time.clone(),
            reasons: Vec::new(),
        }
    }

    fn key(&self) -> (&str, &str) {
        (&self.target, &self.applied_as)
    }
}

/// The note on `commit`, if any (an unreadable note is an empty one: it is rampart's to
/// rewrite).
pub fn read(repo: &Repository, commit: Oid) -> Note {
    repo.find_note(Some(NOTES_REF), commit)
        .ok()
        .and_then(|n| n.message_bytes().to_vec().into())
        .and_then(|b: Vec<u8>| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Whether `commit`'s note already says `target` was brought to `applied_as`.
pub fn has(repo: &Repository, commit: Oid, target: &str, applied_as: &str) -> bool {
    read(repo, commit)
        .applies
        .iter()
        .any(|e| e.key() == (target, applied_as))
}

/// Whether rampart's note on `commit` says `target` was brought to it holding `rendered` (the
/// target's own id of its content): a deploy branch's trailer is believed only then.
pub fn confirms(repo: &Repository, commit: Oid, target: &str, rendered: &str) -> bool {
    let c = commit.to_string();
    let note = read(repo, commit);
    note.applies
        .iter()
        .any(|e| e.key() == (target, c.as_str()) && e.rendered.as_deref() == Some(rendered))
        || note
            .rollouts
            .iter()
            .any(|r| r.target == target && r.rendered.as_deref() == Some(rendered))
}

/// Add a rollout record to the note on `commit` (the commit the target holds). `true` when
/// the note changed.
pub fn add_rollout(repo: &Repository, commit: Oid, entry: RolloutEntry) -> anyhow::Result<bool> {
    let mut note = read(repo, commit);
    if note.rollouts.iter().any(|e| e.key() == entry.key()) {
        return Ok(false);
    }
    note.rampart = 1;
    note.rollouts.push(entry);
    write(repo, commit, &note)?;
    Ok(true)
}

/// The furthest record of `rollout` (introduced by `introduced_by`) on `target`, in the notes
/// of `from` and its first parents down to `introduced_by` (at most `limit` commits).
pub fn rollout_state(
    repo: &Repository,
    from: Oid,
    target: &str,
    rollout: &str,
    introduced_by: &str,
    limit: usize,
) -> Option<RolloutEntry> {
    let mut at = repo.find_commit(from).ok();
    let mut best: Option<RolloutEntry> = None;
    for _ in 0..limit {
        let c = at?;
        for r in read(repo, c.id()).rollouts {
            if r.target == target
                && r.state.rollout == rollout
                && r.state.introduced_by == introduced_by
                && best.as_ref().is_none_or(|b| r.state.progress() > b.state.progress())
            {
                best = Some(r);
            }
        }
        if c.id().to_string() == introduced_by {
            break;
        }
        at = c.parent(0).ok();
    }
    best
}

/// The last commit on `tip`'s first-parent line (at most `limit` back) that rampart's notes
/// say `target` was brought to: where a target that lost its own record stood.
pub fn last_applied(repo: &Repository, tip: Oid, target: &str, limit: usize) -> Option<String> {
    let mut at = repo.find_commit(tip).ok();
    for _ in 0..limit {
        let c = at?;
        let id = c.id().to_string();
        if read(repo, c.id())
            .applies
            .iter()
            .any(|e| e.key() == (target, id.as_str()) && e.result != "superseded")
        {
            return Some(id);
        }
        at = c.parent(0).ok();
    }
    None
}

/// Add `entry` to the note on `commit` (nothing when an entry for the same target and applied
/// commit is there). `true` when the note changed.
pub fn add(repo: &Repository, commit: Oid, entry: Entry) -> anyhow::Result<bool> {
    let mut note = read(repo, commit);
    if note.applies.iter().any(|e| e.key() == entry.key()) {
        return Ok(false);
    }
    note.rampart = 1;
    note.applies.push(entry);
    write(repo, commit, &note)?;
    Ok(true)
}

fn write(repo: &Repository, commit: Oid, note: &Note) -> anyhow::Result<()> {
    let sig = git2::Signature::now("rampart", "rampart@localhost")?;
    let text = serde_json::to_string_pretty(note)?;
    repo.note(&sig, &sig, Some(NOTES_REF), commit, &text, true)
        .with_context(|| format!("writing the note on {commit}"))?;
    Ok(())
}

/// Push the local notes to `remote`; when the remote's moved, fetch them, merge, and push
/// again (at most 5 rounds). `Ok(false)` when there was nothing to push.
pub fn push(git_dir: &Path, remote: &Remote) -> anyhow::Result<bool> {
    for _ in 0..5 {
        let repo = Repository::open_bare(git_dir)?;
        let Ok(local) = repo.refname_to_id(NOTES_REF) else {
            return Ok(false);
        };
        let theirs = fetch(git_dir, remote)?;
        if theirs == Some(local) {
            return Ok(false);
        }
        if let Some(theirs) = theirs
            && theirs != local
            && !repo.graph_descendant_of(local, theirs)?
        {
            merge(&repo, local, theirs)?;
        }
        let local = repo.refname_to_id(NOTES_REF)?;
        match remote
            .push(git_dir, &format!("{local}:{NOTES_REF}"))
            .map_err(|e| anyhow::anyhow!("pushing the notes: {e}"))?
        {
            Pushed::Ok => return Ok(true),
            Pushed::Rejected(_) => continue,
        }
    }
    anyhow::bail!("pushing the notes: the remote's notes kept moving (5 tries)")
}

/// Fetch the remote's notes (`None` when it has none) and take them when there are no local
/// ones, or when the local ones are already part of them.
pub fn fetch(git_dir: &Path, remote: &Remote) -> anyhow::Result<Option<Oid>> {
    match remote.fetch(git_dir, &[format!("+{NOTES_REF}:{REMOTE_NOTES}")]) {
        Ok(()) => {}
        Err(e) if remote::missing_ref(&e) => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("fetching the notes: {e}")),
    }
    let repo = Repository::open_bare(git_dir)?;
    let theirs = repo.refname_to_id(REMOTE_NOTES)?;
    let take = match repo.refname_to_id(NOTES_REF) {
        Err(_) => true,
        Ok(local) => local != theirs && repo.graph_descendant_of(theirs, local)?,
    };
    if take {
        repo.reference(NOTES_REF, theirs, true, "rampart: notes from the remote")?;
    }
    Ok(Some(theirs))
}

/// Merge two notes histories: every annotated commit's entries from both (deduplicated), in
/// one commit whose parents are both tips; the local ref moves to it.
fn merge(repo: &Repository, local: Oid, theirs: Oid) -> anyhow::Result<()> {
    let mut all: BTreeMap<Oid, Note> = BTreeMap::new();
    for tip in [local, theirs] {
        let tree = repo.find_commit(tip)?.tree()?;
        let mut found = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            if e.kind() == Some(git2::ObjectType::Blob) {
                let name = format!("{}{}", dir.replace('/', ""), e.name().unwrap_or(""));
                if let Ok(id) = Oid::from_str(&name) {
                    found.push((id, e.id()));
                }
            }
            git2::TreeWalkResult::Ok
        })?;
        for (annotated, blob) in found {
            let note: Note = serde_json::from_slice(repo.find_blob(blob)?.content()).unwrap_or_default();
            let into = all.entry(annotated).or_insert_with(|| Note {
                rampart: 1,
                ..Note::default()
            });
            for e in note.applies {
                if !into.applies.iter().any(|x| x.key() == e.key()) {
                    into.applies.push(e);
                }
            }
            for r in note.rollouts {
                if !into.rollouts.iter().any(|x| x.key() == r.key()) {
                    into.rollouts.push(r);
                }
            }
        }
    }
    let mut tb = repo.treebuilder(None)?;
    for (annotated, note) in &all {
        let blob = repo.blob(serde_json::to_string_pretty(note)?.as_bytes())?;
        tb.insert(annotated.to_string(), blob, git2::FileMode::Blob.into())?;
    }
    let tree = repo.find_tree(tb.write()?)?;
    let sig = git2::Signature::now("rampart", "rampart@localhost")?;
    let (a, b) = (repo.find_commit(local)?, repo.find_commit(theirs)?);
    let id = repo.commit(None, &sig, &sig, "rampart: merge notes", &tree, &[&a, &b])?;
    repo.reference(NOTES_REF, id, true, "rampart: merged notes")?;
    Ok(())
}
