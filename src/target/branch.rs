//! The `branch:NAME[@REMOTE]` target: the rendered-manifests pattern (Argo CD's Source
//! Hydrator, Flux). Each applied source commit becomes one commit on the deploy branch NAME,
//! built with libgit2's tree updates in the local mirror (no work tree: an unchanged tenant
//! keeps its subtree ids, so the cost is the change's), its message naming the source commit
//! with the trailers `Rampart-Source:`, `Rampart-Decision:` and `Approved-by:`, then pushed.
//!
//! The tip's `Rampart-Source:` trailer is the target's record, so a new process reads where it
//! stands from the remote. The push is the compare-and-swap: never forced; when the remote
//! moved, the apply reports it ([`Apply::Moved`]) and the caller reads the record again, so two
//! processes never apply one commit twice. A tip without a rampart trailer is an unknown
//! baseline (the branch was written by someone else).

use super::{Applied, Apply, LISTING, Outcome, Record, Rendered, Revision, Target};
use crate::remote::{self, Pushed, Remote};
use anyhow::Context;
use git2::{Oid, Repository};
use std::path::{Path, PathBuf};

/// The trailer naming the source commit a deploy commit was rendered from.
pub const SOURCE_TRAILER: &str = "Rampart-Source";
/// The trailer naming the decision that let it through.
pub const DECISION_TRAILER: &str = "Rampart-Decision";

pub struct BranchTarget {
    /// The deploy branch's name (`rendered/production`).
    branch: String,
    remote: Remote,
    /// The bare repository the deploy commits are built in (the service's mirror).
    git_dir: PathBuf,
    /// Who commits (`rampart <rampart@localhost>` by default).
    committer: (String, String),
}

impl BranchTarget {
    pub fn new(branch: &str, remote: Remote, git_dir: &Path) -> BranchTarget {
        BranchTarget {
            branch: branch.to_owned(),
            remote,
            git_dir: git_dir.to_owned(),
            committer: ("rampart".to_owned(), "rampart@localhost".to_owned()),
        }
    }

    /// The local ref the deploy branch's remote tip is fetched into.
    fn tracking(&self) -> String {
        format!("refs/rampart/deploy/{}", self.branch)
    }

    fn repo(&self) -> anyhow::Result<Repository> {
        Repository::open_bare(&self.git_dir).with_context(|| format!("opening the mirror `{}`", self.git_dir.display()))
    }

    /// Fetch the deploy branch's tip; `None` when the branch does not exist yet.
    fn fetch(&self) -> anyhow::Result<Option<Oid>> {
        let spec = format!("+refs/heads/{}:{}", self.branch, self.tracking());
        match self.remote.fetch(&self.git_dir, &[spec]) {
            Ok(()) => {}
            Err(e) if remote::missing_ref(&e) => {
                // gone (or never there): forget a stale tracking ref
                if let Ok(mut r) = self.repo()?.find_reference(&self.tracking()) {
                    r.delete()?;
                }
                return Ok(None);
            }
            Err(e) => return Err(anyhow::anyhow!("reading the deploy branch `{}`: {e}", self.branch)),
        }
        Ok(Some(self.repo()?.refname_to_id(&self.tracking())?))
    }

    /// What the tip records.
    fn record_of(&self, repo: &Repository, tip: Option<Oid>) -> anyhow::Result<Applied> {
        let Some(tip) = tip else {
            return Ok(Applied::default());
        };
        let commit = repo.find_commit(tip)?;
        let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
        let source = git2::message_trailers_strs(&message).ok().and_then(|t| {
            t.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(SOURCE_TRAILER))
                .map(|(_, v)| v.trim().to_owned())
                .last()
        });
        Ok(match source {
            Some(s) if super::is_commit_id(&s) => Applied {
                commit: Some(s),
                unknown: false,
            },
            _ => Applied {
                commit: None,
                unknown: true,
            },
        })
    }

    /// The tree of the new deploy commit.
    fn build_tree(
        &self,
        repo: &Repository,
        parent: Option<&git2::Tree<'_>>,
        rev: &Revision<'_>,
    ) -> anyhow::Result<Result<Oid, Vec<crate::diagnostic::Diagnostic>>> {
        let rendered = match super::render(rev) {
            Ok(r) => r,
            Err(d) => return Ok(Err(d)),
        };
        let listing = parent
            .and_then(|t| t.get_path(Path::new(LISTING)).ok())
            .and_then(|e| repo.find_blob(e.id()).ok())
            .map(|b| String::from_utf8_lossy(b.content()).into_owned());
        let mut update = git2::build::TreeUpdateBuilder::new();
        match (rendered, parent, listing) {
            (
                Rendered::Files {
                    upserts,
                    removes,
                    added,
                },
                Some(parent),
                Some(listing),
            ) => {
                for (path, text) in &upserts {
                    update.upsert(path.as_str(), repo.blob(text.as_bytes())?, git2::FileMode::Blob);
                }
                for path in &removes {
                    update.remove(path.as_str());
                }
                let old = super::listing_paths(&listing).context("reading the deploy branch's kustomization.yaml")?;
                let new = super::updated_listing(&old, &removes, &added);
                update.upsert(LISTING, repo.blob(new.as_bytes())?, git2::FileMode::Blob);
                Ok(Ok(update.create_updated(repo, parent)?))
            }
            _ => {
                // the whole tree: blobs written as objects are compiled (on every core, one
                // writer at a time), then one tree update from the empty tree
                let odb = std::sync::Mutex::new((repo.odb()?, Vec::new()));
                let put = |path: &str, text: &str| -> anyhow::Result<()> {
                    let mut g = odb.lock().expect("not poisoned");
                    let id = g.0.write(git2::ObjectType::Blob, text.as_bytes())?;
                    g.1.push((path.to_owned(), id));
                    Ok(())
                };
                if let Err(d) = super::stream(rev, &put)? {
                    return Ok(Err(d));
                }
                let (_, mut blobs) = odb.into_inner().expect("not poisoned");
                blobs.sort();
                for (path, id) in &blobs {
                    update.upsert(path.as_str(), *id, git2::FileMode::Blob);
                }
                let empty = repo.find_tree(repo.treebuilder(None)?.write()?)?;
                Ok(Ok(update.create_updated(repo, &empty)?))
            }
        }
    }
}

/// The deploy commit's message.
pub fn message(record: &Record, subject: &str) -> String {
    let short = record.source.get(..12).unwrap_or(&record.source);
    let mut m = format!("rampart: apply {short}");
    let subject = crate::diagnostic::visible(subject.lines().next().unwrap_or(""), &[]);
    if !subject.is_empty() {
        let cut: String = subject.chars().take(60).collect();
        m.push_str(&format!(" ({cut})"));
    }
    m.push_str("\n\nRendered by rampart from the source commit below");
    if let Some(pr) = record.pull_request {
        m.push_str(&format!(" (pull request #{pr})"));
    }
    m.push_str(&format!(
        ", {} since {}.\n\n",
        match record.commits.len() {
            1 => "1 commit authorised".to_owned(),
            n => format!("{n} commits authorised"),
        },
        record
            .from
            .as_deref()
            .map_or("nothing (first apply)", |f| f.get(..12).unwrap_or(f))
    ));
    m.push_str(&format!("{SOURCE_TRAILER}: {}\n", record.source));
    m.push_str(&format!("{DECISION_TRAILER}: {}\n", record.decision));
    for a in &record.approvers {
        m.push_str(&format!("Approved-by: {a}\n"));
    }
    m
}

impl Target for BranchTarget {
    fn name(&self) -> String {
        format!("branch:{}", self.branch)
    }

    fn applied(&mut self) -> anyhow::Result<Applied> {
        let tip = self.fetch()?;
        self.record_of(&self.repo()?, tip)
    }

    fn apply(&mut self, expected: &Applied, rev: &Revision<'_>, record: &Record) -> anyhow::Result<Apply> {
        let tip = self.fetch()?;
        let repo = self.repo()?;
        let now = self.record_of(&repo, tip)?;
        if now != *expected {
            return Ok(Apply::Moved { now });
        }
        let parent = tip.map(|t| repo.find_commit(t)).transpose()?;
        let parent_tree = parent.as_ref().map(|c| c.tree()).transpose()?;
        // the base's files are only what the parent holds when it records the base's commit
        let rev = match (rev.base, &now.commit) {
            (Some(b), Some(c)) if b.commit.as_deref() == Some(c.as_str()) => Revision { ..*rev },
            _ => Revision { base: None, ..*rev },
        };
        let tree = match self.build_tree(&repo, parent_tree.as_ref(), &rev)? {
            Ok(t) => t,
            Err(d) => return Ok(Apply::Invalid(d)),
        };
        let noop =
            parent_tree.as_ref().is_some_and(|t| t.id() == tree) && now.commit.as_deref() == Some(&record.source);
        if noop {
            return Ok(Apply::Done(Outcome {
                noop: true,
                rendered: Some(tree.to_string()),
                ..Outcome::default()
            }));
        }
        let (written, removed) = match &parent_tree {
            Some(p) => count_changes(&repo, p, &repo.find_tree(tree)?)?,
            None => (count_files(&repo, &repo.find_tree(tree)?)?, 0),
        };
        let subject = source_subject(&repo, &record.source);
        let sig = git2::Signature::now(&self.committer.0, &self.committer.1)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = repo.commit(
            None,
            &sig,
            &sig,
            &message(record, &subject),
            &repo.find_tree(tree)?,
            &parents,
        )?;
        match self
            .remote
            .push(&self.git_dir, &format!("{id}:refs/heads/{}", self.branch))
            .map_err(|e| anyhow::anyhow!("pushing the deploy branch `{}`: {e}", self.branch))?
        {
            Pushed::Ok => {
                repo.reference(&self.tracking(), id, true, "rampart: pushed")?;
                Ok(Apply::Done(Outcome {
                    written,
                    removed,
                    noop: false,
                    rendered: Some(tree.to_string()),
                }))
            }
            Pushed::Rejected(_) => {
                let tip = self.fetch()?;
                let now = self.record_of(&repo, tip)?;
                if now.commit.as_deref() == Some(&record.source) {
                    // another process applied the same commit first
                    return Ok(Apply::Done(Outcome {
                        noop: true,
                        ..Outcome::default()
                    }));
                }
                Ok(Apply::Moved { now })
            }
        }
    }
}

/// The first line of the source commit's message, when the mirror has it.
fn source_subject(repo: &Repository, source: &str) -> String {
    Oid::from_str(source)
        .and_then(|id| repo.find_commit(id))
        .map(|c| {
            String::from_utf8_lossy(c.message_bytes())
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

/// Files added or changed, and removed, between two trees (listing not counted).
fn count_changes(repo: &Repository, old: &git2::Tree<'_>, new: &git2::Tree<'_>) -> anyhow::Result<(usize, usize)> {
    let diff = repo.diff_tree_to_tree(Some(old), Some(new), None)?;
    let (mut written, mut removed) = (0, 0);
    for d in diff.deltas() {
        if d.new_file().path().or(d.old_file().path()) == Some(Path::new(LISTING)) {
            continue;
        }
        match d.status() {
            git2::Delta::Deleted => removed += 1,
            _ => written += 1,
        }
    }
    Ok((written, removed))
}

fn count_files(repo: &Repository, tree: &git2::Tree<'_>) -> anyhow::Result<usize> {
    let mut n = 0;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
        if e.kind() == Some(git2::ObjectType::Blob) && !(dir.is_empty() && e.name() == Ok(LISTING)) {
            n += 1;
        }
        git2::TreeWalkResult::Ok
    })?;
    let _ = repo;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_carries_the_record_as_trailers() {
        let r = Record {
            source: "a".repeat(40),
            from: Some("b".repeat(40)),
            decision: "allowed".into(),
            author: Some("alice".into()),
            approvers: vec!["bob".into()],
            pull_request: Some(7),
            commits: vec!["a".repeat(40)],
            time: "2026-11-29T00:00:00Z".into(),
        };
        let m = message(&r, "Raise quota\u{1b}[31m\nbody");
        let t = git2::message_trailers_strs(&m).unwrap();
        let got: Vec<(String, String)> = t.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        assert_eq!(
            got,
            vec![
                (SOURCE_TRAILER.to_owned(), "a".repeat(40)),
                (DECISION_TRAILER.to_owned(), "allowed".to_owned()),
                ("Approved-by".to_owned(), "bob".to_owned())
            ]
        );
        assert!(!m.contains('\u{1b}'), "{m}");
        assert!(m.starts_with("rampart: apply aaaaaaaaaaaa (Raise quota"), "{m}");
    }
}
