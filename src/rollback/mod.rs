//! Rollback (IO): the commits rampart itself writes into the config repo — the revert of a
//! rollout whose SLO failed, and the promote of one whose last step passed — built with
//! libgit2 in the service's bare mirror and pushed through `remote` (the git CLI).
//!
//! reliability.md §6, "not losing commits on revert": a commit is always built on the
//! branch's *current* remote tip and pushed as a fast-forward, never forced. When the push
//! is refused because the branch moved, [`land`] fetches, decides again (is the change in
//! already? is the reverted commit still on the branch?) and rebuilds on the new tip, a few
//! times. A revert that conflicts with the tip, or a push the branch refuses for another
//! reason (a protected branch), goes to a branch of its own and a pull request for a human.
//!
//! Every commit carries a key trailer (`Rampart-Revert-Of: <sha>`, `Rampart-Promote-Of:
//! <sha>`): before building, the commits since the reverted (promoted) one are searched for
//! it, so a crash after the push and a restart never land the same change twice.

pub mod edit;
mod pulls;

pub use pulls::GitHubPulls;

use crate::remote::{self, Pushed, Remote};
use anyhow::{Context, bail};
use git2::{Oid, Repository};
use std::path::Path;
use std::time::Duration;

/// The key trailer of a revert: the commit it reverts.
pub const REVERT_TRAILER: &str = "Rampart-Revert-Of";
/// The key trailer of a promote: the commit that brought the rollout in.
pub const PROMOTE_TRAILER: &str = "Rampart-Promote-Of";
/// The rollout a commit reverts or promotes (names its pull-request branch).
pub const ROLLOUT_TRAILER: &str = "Rampart-Rollout";

/// How many times a commit is rebuilt on a branch that keeps moving under it.
pub const ATTEMPTS: u32 = 5;

/// Who writes rampart's commits (author and committer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Default for Author {
    fn default() -> Self {
        Author {
            name: "rampart".to_owned(),
            email: "rampart@localhost".to_owned(),
        }
    }
}

/// What the commit changes.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Revert the commit `of` (the one that introduced the rollout) on the branch's current
    /// tip. A revert that conflicts there is not landable on the branch (a pull request).
    Revert { of: &'a str },
    /// Set the Plugin to the rollout's new version and artifact and remove the Rollout
    /// document ([`edit::promote`]); `of` is the commit that brought the rollout in (one
    /// commit may bring several: the key names the rollout too).
    Promote { edit: &'a edit::Promote, of: &'a str },
}

/// Where and how a change lands.
pub struct Landing<'a> {
    /// The service's bare mirror (`<state-dir>/mirror.git`).
    pub mirror: &'a Path,
    pub remote: &'a Remote,
    /// The watched branch (`main`).
    pub branch: &'a str,
    pub author: &'a Author,
    /// The commit message's first line.
    pub subject: &'a str,
    pub body: &'a str,
    /// Trailers, in order (`Rampart-Rollout`, `Rampart-SLO`, `Rampart-Evidence`…); values
    /// are cleaned of newlines and control characters. The key is added when missing.
    pub trailers: &'a [(String, String)],
    /// The trailer (name, value) that identifies this very change:
    /// `(REVERT_TRAILER, sha)` or `(PROMOTE_TRAILER, sha)`.
    pub key: (&'a str, &'a str),
    /// Where to open a pull request when the change cannot go onto the branch itself.
    pub github: Option<&'a dyn PullRequests>,
}

/// How a change landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landed {
    /// Pushed onto the branch as `commit`, at the `attempts`-th try.
    Pushed { commit: String, attempts: u32 },
    /// Nothing to do: `commit` on the branch carries the key already — or, when no commit
    /// does, the branch's tip already holds the result (the change was undone by hand).
    AlreadyThere { commit: String },
    /// The change went to `branch` and pull request `number` instead, for `why`.
    PullRequest {
        number: u64,
        url: String,
        branch: String,
        why: String,
    },
}

/// Pull requests, for what cannot land on the branch itself.
pub trait PullRequests {
    /// Open a pull request from the branch `head` into `base` (or find the open one that
    /// already does); its number and web URL.
    fn open(&self, head: &str, base: &str, title: &str, body: &str) -> anyhow::Result<(u64, String)>;
    /// Comment on pull request (or issue) `number`.
    fn comment(&self, number: u64, body: &str) -> anyhow::Result<()>;
}

/// The mirror's remote-tracking ref of `branch`: the one the reconciler fetches into
/// (`serve::reconcile::tracking`), updated here only by fetches.
fn tracking(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

/// Land `change` on `l.branch`: see the module's doc. `Err` when it could not: the branch's
/// history no longer holds the reverted commit (rewritten: nothing is done), the branch kept
/// moving for [`ATTEMPTS`] tries, or a pull request was needed and `l.github` is `None` (the
/// message says what happened and what to do).
pub fn land(l: &Landing<'_>, change: &Change<'_>) -> anyhow::Result<Landed> {
    let refname = format!("refs/heads/{}", l.branch);
    if !git2::Reference::is_valid_name(&refname) {
        bail!("`{}` is not a branch name", crate::diagnostic::visible(l.branch, &[]));
    }
    let message = message(l)?;
    let repo =
        Repository::open_bare(l.mirror).with_context(|| format!("opening the mirror `{}`", l.mirror.display()))?;
    let signature = git2::Signature::now(&l.author.name, &l.author.email)
        .with_context(|| format!("`{} <{}>` cannot sign a commit", l.author.name, l.author.email))?;
    let boundary = match change {
        Change::Revert { of } => *of,
        Change::Promote { of, .. } => *of,
    };
    let mut tip = fetch(l)?;
    for attempt in 1..=ATTEMPTS {
        let base = commit_on_branch(&repo, l, boundary, tip)?;
        if let Some(found) = keyed(&repo, tip, base, l.key, &l.author.email, change)? {
            return Ok(Landed::AlreadyThere {
                commit: found.to_string(),
            });
        }
        let tip_commit = repo.find_commit(tip)?;
        let tree = match build(&repo, change, &tip_commit)? {
            Built::Tree(t) => t,
            Built::Conflict(files) => {
                let why = format!("the revert conflicts with {} on the tip", list(&files));
                return pull_request(&repo, l, change, &message, &signature, None, why, |what| {
                    format!(
                        "the revert of {} conflicts with {} on the tip of `{}` ({}): nothing was pushed. {what}",
                        short(boundary),
                        list(&files),
                        l.branch,
                        short(&tip.to_string()),
                    )
                });
            }
        };
        if tree == tip_commit.tree_id() {
            // nothing left to change: the tip holds the result already
            return Ok(Landed::AlreadyThere {
                commit: tip.to_string(),
            });
        }
        let id = repo
            .commit(
                None,
                &signature,
                &signature,
                &message,
                &repo.find_tree(tree)?,
                &[&tip_commit],
            )
            .context("writing the commit in the mirror")?;
        let refusal = match push(l.remote, l.mirror, &format!("{id}:{refname}"))
            .with_context(|| format!("pushing to `{}`", l.branch))?
        {
            Pushed::Ok => {
                return Ok(Landed::Pushed {
                    commit: id.to_string(),
                    attempts: attempt,
                });
            }
            Pushed::Rejected(m) => m,
        };
        let now = fetch(l)?;
        if now == tip && !moved(&refusal) {
            // the branch did not move: it refuses this push (a protected branch, a hook)
            let why = format!("the branch refused the push: {refusal}");
            return pull_request(&repo, l, change, &message, &signature, Some(id), why, |what| {
                format!("`{}` refused the push: {refusal}; nothing was pushed. {what}", l.branch)
            });
        }
        tracing::info!(
            branch = l.branch,
            attempt,
            "the branch moved under the push: building again on its new tip"
        );
        tip = now;
        if attempt < ATTEMPTS {
            std::thread::sleep(backoff(attempt));
        }
    }
    bail!(
        "`{}` moved under every one of {ATTEMPTS} pushes: nothing was pushed; the next reconcile tries again",
        l.branch
    )
}

/// Push without force; a push the remote declines (`[remote rejected]`: a hook, a protected
/// branch) is a refusal too, not a failure to reach it.
fn push(remote: &Remote, git_dir: &Path, refspec: &str) -> Result<Pushed, remote::RemoteError> {
    match remote.push(git_dir, refspec) {
        Err(remote::RemoteError::Failed { message, .. }) if message.contains("[remote rejected]") => {
            Ok(Pushed::Rejected(message))
        }
        other => other,
    }
}

/// Whether git's refusal says the branch moved (rather than that it declines the push).
fn moved(message: &str) -> bool {
    message.contains("[rejected]")
        || message.contains("non-fast-forward")
        || message.contains("fetch first")
        || message.contains("cannot lock ref")
}

/// 50 ms, 100 ms, 200 ms…, with up to half of it again as jitter (two writers racing
/// should not retry in step).
fn backoff(attempt: u32) -> Duration {
    let base = 50u64 << (attempt - 1).min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_millis(base + nanos % (base / 2 + 1))
}

/// Fetch the branch into its tracking ref; the tip.
fn fetch(l: &Landing<'_>) -> anyhow::Result<Oid> {
    let spec = format!("+refs/heads/{}:{}", l.branch, tracking(l.branch));
    if let Err(e) = l.remote.fetch(l.mirror, &[spec]) {
        if remote::missing_ref(&e) {
            bail!("the branch `{}` does not exist on {}", l.branch, l.remote.display());
        }
        return Err(anyhow::Error::new(e).context(format!("fetching `{}`", l.branch)));
    }
    let repo = Repository::open_bare(l.mirror)?;
    Ok(repo.refname_to_id(&tracking(l.branch))?)
}

/// The commit `sha`, which must be on the tip's history (the tip itself counts).
fn commit_on_branch(repo: &Repository, l: &Landing<'_>, sha: &str, tip: Oid) -> anyhow::Result<Oid> {
    let id = Oid::from_str(sha)
        .ok()
        .filter(|_| sha.len() == 40 || sha.len() == 64)
        .with_context(|| format!("`{}` is not a full commit id", crate::diagnostic::visible(sha, &[])))?;
    let on = repo.find_commit(id).is_ok() && (id == tip || repo.graph_descendant_of(tip, id)?);
    if !on {
        bail!(
            "the commit {} is no longer on `{}` (its tip is {}): the branch's history was rewritten; nothing was done",
            short(sha),
            l.branch,
            short(&tip.to_string())
        );
    }
    Ok(id)
}

/// A commit since `base` (reachable from `tip`, not from `base`) that carries the key **and is
/// what `land` would have written**: authored by `email`, one parent, and the tree `change`
/// gives on that parent (a commit anyone else wrote with the same trailer — a decoy — does not
/// count). Every such commit is searched, not only the first parents: a revert that went
/// through a pull request and a merge commit counts too.
fn keyed(
    repo: &Repository,
    tip: Oid,
    base: Oid,
    key: (&str, &str),
    email: &str,
    change: &Change<'_>,
) -> anyhow::Result<Option<Oid>> {
    let mut walk = repo.revwalk()?;
    walk.push(tip)?;
    walk.hide(base)?;
    for id in walk {
        let id = id?;
        let c = repo.find_commit(id)?;
        let text = String::from_utf8_lossy(c.message_bytes());
        if let Ok(t) = git2::message_trailers_strs(&text)
            && t.iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(key.0) && v.trim() == key.1)
            && c.author().email().ok() == Some(email)
            && c.parent_count() == 1
            && let Ok(parent) = c.parent(0)
            && matches!(build(repo, change, &parent), Ok(Built::Tree(t)) if t == c.tree_id())
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

enum Built {
    Tree(Oid),
    /// The revert conflicts with these files.
    Conflict(Vec<String>),
}

/// The tree id `change` gives on commit `on` in the repository at `git_dir` (`None`: the
/// revert conflicts there) — what `land` would commit, for checking a commit that claims to
/// be it.
pub fn tree_of(git_dir: &Path, change: &Change<'_>, on: &str) -> anyhow::Result<Option<String>> {
    let repo = Repository::open_bare(git_dir).with_context(|| format!("opening `{}`", git_dir.display()))?;
    let on = repo.find_commit(Oid::from_str(on)?)?;
    Ok(match build(&repo, change, &on)? {
        Built::Tree(t) => Some(t.to_string()),
        Built::Conflict(_) => None,
    })
}

/// The tree of the change on `on`.
fn build(repo: &Repository, change: &Change<'_>, on: &git2::Commit<'_>) -> anyhow::Result<Built> {
    match change {
        Change::Revert { of } => {
            let of = repo.find_commit(Oid::from_str(of)?)?;
            // (a merge is reverted against its first parent: what it brought in)
            let mainline = if of.parent_count() > 1 { 1 } else { 0 };
            let mut index = repo.revert_commit(&of, on, mainline, None).with_context(|| {
                format!(
                    "reverting {} on {}",
                    short(&of.id().to_string()),
                    short(&on.id().to_string())
                )
            })?;
            if index.has_conflicts() {
                let mut files = std::collections::BTreeSet::new();
                for c in index.conflicts()? {
                    let c = c?;
                    for side in [c.our, c.their, c.ancestor].into_iter().flatten() {
                        files.insert(String::from_utf8_lossy(&side.path).into_owned());
                    }
                }
                return Ok(Built::Conflict(files.into_iter().collect()));
            }
            Ok(Built::Tree(index.write_tree_to(repo)?))
        }
        Change::Promote { edit, .. } => {
            let tree = on.tree()?;
            let read = |path: &str| {
                let entry = tree.get_path(Path::new(path)).ok()?;
                let blob = repo.find_blob(entry.id()).ok()?;
                String::from_utf8(blob.content().to_vec()).ok()
            };
            let files = edit::promote(edit, read).map_err(|e| anyhow::anyhow!("promoting: {e}"))?;
            let mut update = git2::build::TreeUpdateBuilder::new();
            for (path, text) in &files {
                match text {
                    Some(t) => {
                        update.upsert(path.as_str(), repo.blob(t.as_bytes())?, git2::FileMode::Blob);
                    }
                    None => {
                        update.remove(path.as_str());
                    }
                }
            }
            Ok(Built::Tree(update.create_updated(repo, &tree)?))
        }
    }
}

/// The commit message: subject, blank line, body, blank line, trailers (the key last when
/// the caller did not give it).
fn message(l: &Landing<'_>) -> anyhow::Result<String> {
    let subject = crate::diagnostic::visible(l.subject.lines().next().unwrap_or("").trim(), &[]);
    if subject.is_empty() {
        bail!("a commit needs a subject");
    }
    let mut m = subject;
    m.push_str("\n\n");
    let body: Vec<String> = l
        .body
        .lines()
        .map(|line| crate::diagnostic::visible(line.trim_end(), &['\t']))
        .collect();
    let body = body.join("\n");
    if !body.trim().is_empty() {
        m.push_str(body.trim_matches('\n'));
        m.push_str("\n\n");
    }
    let mut trailers: Vec<(&str, &str)> = l.trailers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if !trailers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(l.key.0) && clean(v) == l.key.1)
    {
        trailers.push(l.key);
    }
    for (name, value) in trailers {
        let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            bail!("`{}` is not a trailer name", crate::diagnostic::visible(name, &[]));
        }
        m.push_str(&format!("{name}: {}\n", clean(value)));
    }
    Ok(m)
}

/// A trailer value on one line: control characters become spaces, hidden ones escapes.
fn clean(value: &str) -> String {
    let spaced: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    crate::diagnostic::visible(spaced.trim(), &[])
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// `a`, `b` and 3 more.
fn list(files: &[String]) -> String {
    let shown: Vec<String> = files.iter().take(5).map(|f| crate::diagnostic::quote(f)).collect();
    match files.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

/// Push the change to a branch of its own and open a pull request into `l.branch`.
/// `built` is the commit made on the tip (a refused push); a conflicting revert is built on
/// top of the reverted commit itself, where it applies cleanly, so the pull request shows the
/// conflict for a human to resolve. Without GitHub: the error `without(what to do)`.
#[expect(clippy::too_many_arguments, reason = "one private step of `land`, with its state")]
fn pull_request(
    repo: &Repository,
    l: &Landing<'_>,
    change: &Change<'_>,
    message: &str,
    signature: &git2::Signature<'_>,
    built: Option<Oid>,
    why: String,
    without: impl FnOnce(&str) -> String,
) -> anyhow::Result<Landed> {
    let Some(github) = l.github else {
        bail!(
            "{}",
            without(
                "Land it by hand (resolve it and push, or open a pull request), or configure a GitHub \
                 repository so that rampart opens a pull request"
            )
        );
    };
    let (verb, on) = match change {
        Change::Revert { of } => ("revert", *of),
        Change::Promote { of, .. } => ("promote", *of),
    };
    let commit = match built {
        Some(id) => id,
        None => {
            let of = repo.find_commit(Oid::from_str(on)?)?;
            let mainline = if of.parent_count() > 1 { 1 } else { 0 };
            let mut index = repo.revert_commit(&of, &of, mainline, None)?;
            if index.has_conflicts() {
                bail!("the revert of {} does not apply even on the commit itself", short(on));
            }
            let tree = repo.find_tree(index.write_tree_to(repo)?)?;
            repo.commit(None, signature, signature, message, &tree, &[&of])?
        }
    };
    let tree = repo.find_commit(commit)?.tree_id();
    let rollout = l
        .trailers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(ROLLOUT_TRAILER))
        .map(|(_, v)| slug(v))
        .filter(|s| !s.is_empty() && git2::Reference::is_valid_name(&format!("refs/heads/rampart/{verb}-{s}")));
    let stem = format!("rampart/{verb}-{}", rollout.as_deref().unwrap_or(short(on)));
    let mut branch = None;
    for n in 1..=20 {
        let name = if n == 1 { stem.clone() } else { format!("{stem}-{n}") };
        let local = format!("refs/rampart/pull/{name}");
        match l.remote.fetch(l.mirror, &[format!("+refs/heads/{name}:{local}")]) {
            Ok(()) => {
                // there already: ours when it holds the same change (an earlier try)
                let there = repo.find_commit(repo.refname_to_id(&local)?)?;
                if there.tree_id() == tree && carries(&there, l.key) {
                    branch = Some(name);
                    break;
                }
            }
            Err(e) if remote::missing_ref(&e) => {
                match push(l.remote, l.mirror, &format!("{commit}:refs/heads/{name}"))
                    .with_context(|| format!("pushing the branch `{name}`"))?
                {
                    Pushed::Ok => {
                        branch = Some(name);
                        break;
                    }
                    // (created by someone else in between: the next name)
                    Pushed::Rejected(_) => {}
                }
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading the branch `{name}`"))),
        }
    }
    let branch = branch.with_context(|| format!("no free branch name `{stem}`…`{stem}-20` for the pull request"))?;
    let mut body = l.body.trim().to_owned();
    if !body.is_empty() {
        body.push_str("\n\n");
    }
    body.push_str(&format!("rampart could not push this to `{}`: {why}.", l.branch));
    if built.is_none() {
        body.push_str(&format!(
            " This branch holds the revert on top of the reverted commit {on} itself, where it applies \
             cleanly; resolve the conflicts with `{}` here.",
            l.branch
        ));
    }
    let (number, url) = github
        .open(&branch, l.branch, message.lines().next().unwrap_or(verb), &body)
        .with_context(|| format!("opening a pull request from `{branch}` into `{}`", l.branch))?;
    Ok(Landed::PullRequest {
        number,
        url,
        branch,
        why,
    })
}

/// Whether `commit`'s message carries the key trailer.
fn carries(commit: &git2::Commit<'_>, key: (&str, &str)) -> bool {
    let text = String::from_utf8_lossy(commit.message_bytes());
    git2::message_trailers_strs(&text).is_ok_and(|t| {
        t.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(key.0) && v.trim() == key.1)
    })
}

/// A rollout's name as a branch name's part: `[a-z0-9._-]`, at most 60 characters.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    s.trim_matches(['-', '.']).replace("..", "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracking_ref_is_the_reconcilers() {
        assert_eq!(tracking("main"), crate::serve::reconcile::tracking("main"));
    }

    #[test]
    fn rollback_message_has_subject_body_and_clean_trailers() {
        let remote = Remote::new("/nonexistent", remote::Auth::default()).unwrap();
        let trailers = vec![
            ("Rampart-Rollout".to_owned(), "techdocs-1-13".to_owned()),
            ("Rampart-Evidence".to_owned(), "p99 \n0.3\u{1b}[31m".to_owned()),
        ];
        let l = Landing {
            mirror: Path::new("/nonexistent"),
            remote: &remote,
            branch: "main",
            author: &Author::default(),
            subject: "Revert techdocs 1.13\nsecond line",
            body: "The SLO error-rate failed.\n\nSee the evidence.",
            trailers: &trailers,
            key: (REVERT_TRAILER, "abc"),
            github: None,
        };
        let m = message(&l).unwrap();
        assert_eq!(
            m,
            "Revert techdocs 1.13\n\nThe SLO error-rate failed.\n\nSee the evidence.\n\n\
             Rampart-Rollout: techdocs-1-13\nRampart-Evidence: p99  0.3 [31m\nRampart-Revert-Of: abc\n"
        );
        let t = git2::message_trailers_strs(&m).unwrap();
        assert_eq!(
            t.iter().map(|(k, _)| k.to_owned()).collect::<Vec<_>>(),
            ["Rampart-Rollout", "Rampart-Evidence", "Rampart-Revert-Of"]
        );
        let bad = [("Bad Name".to_owned(), "x".to_owned())];
        assert!(message(&Landing { trailers: &bad, ..l }).is_err());
    }

    #[test]
    fn rollback_branch_slugs() {
        assert_eq!(slug("techdocs-1-13"), "techdocs-1-13");
        assert_eq!(slug("a b/../c"), "a-b---c");
        assert_eq!(slug("..x.."), "x");
    }

    #[test]
    fn rollback_refusals_that_mean_the_branch_moved() {
        assert!(moved("!\trefs/heads/main:refs/heads/main\t[rejected] (fetch first)"));
        assert!(!moved(
            "!\trefs/heads/main:refs/heads/main\t[remote rejected] (pre-receive hook declined)"
        ));
    }
}
