//! One reconcile (IO): fetch the branch into the mirror, then for each target read what it
//! holds, decide where to start (`decide::start`), judge each commit since then exactly as
//! `check` would at pull-request time (its parent's policies and teams, its own author and
//! approvals), apply up to the last allowed commit (`decide::walk`: a denied commit stops the
//! target unless a later commit fixes it) through the target, and
//! record it: a note on every commit the apply authorised, pushed with the notes of others.
//!
//! Runs on a thread of its own (git, validation and compilation block); the HTTP side only
//! reads the status it publishes.

use super::decide::{self, Ancestry, Block, Start, Step, short};
use super::{Config, Shared, TargetStatus};
use crate::cache::ParseCache;
use crate::diagnostic::Diagnostic;
use crate::pipeline::{self, Principals, Validated};
use crate::remote::Remote;
use crate::source::Source;
use crate::target::notes::{self, Entry};
use crate::target::{Applied, Apply, ChangeRecord, Record, Revision, Target};
use anyhow::Context;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Who made and approved a commit's change, from the pull request that merged it.
pub trait Identities: Send {
    /// `Ok(None)` when no merged pull request brought `commit` in.
    fn of(&mut self, commit: &str) -> anyhow::Result<Option<PullIdentity>>;
    /// Renew the credentials git uses, when they expire (a GitHub App's installation token).
    fn refresh(&mut self) -> anyhow::Result<()>;
}

/// The merged pull request behind a commit.
#[derive(Debug, Clone)]
pub struct PullIdentity {
    pub number: u64,
    pub author: String,
    pub approvers: Vec<String>,
}

/// A commit's own verdict and who made it (for the record).
pub struct Judged {
    own: Record,
    changes: Vec<ChangeRecord>,
    /// The tenants this step's change can affect (`None`: every tenant).
    affected: Option<BTreeSet<String>>,
}

pub struct Reconciler {
    pub(super) cfg: Arc<Config>,
    pub(super) shared: Arc<Shared>,
    pub(super) remote: Remote,
    pub(super) mirror: PathBuf,
    pub(super) targets: Vec<Box<dyn Target>>,
    identities: Option<Box<dyn Identities>>,
    cache: Option<ParseCache>,
    /// Validated revisions by commit: each target's applied commit is kept between runs, so
    /// the next change validates only its head.
    pub(super) validated: HashMap<String, Validated>,
    /// Notes written and not pushed yet.
    pub(super) notes_dirty: bool,
    /// Commits whose validated revision must stay: what the targets hold.
    pinned: BTreeSet<String>,
    /// Target records already checked: (target, commit, tree).
    pub(super) believed: BTreeSet<(String, String, String)>,
    /// When each target's drift was last checked.
    drift_checked: HashMap<String, Instant>,
    /// The rollouts of every target (`rollouts.json` in the state directory).
    pub(super) store: super::rollouts::Store,
    pub(super) rollout_settings: super::rollouts::Settings,
    /// When a rollout next needs a measurement or a step (unix seconds).
    pub(super) rollout_wake: Option<f64>,
    /// Rollouts whose SLOs are breaching (not yet confirmed): measured again at this time
    /// (unix seconds), a quarter interval later, so a violation is confirmed soon after it is
    /// one and not up to a whole interval later.
    pub(super) breaching: HashMap<(String, String), f64>,
}

/// This process's own record of what each target was brought to, in the state directory:
/// what a remote can neither forge nor delete (`--state-dir` on a persistent volume).
fn local_records(state_dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read(state_dir.join("targets.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_local_record(state_dir: &std::path::Path, target: &str, commit: &str) -> anyhow::Result<()> {
    let mut all = local_records(state_dir);
    if all.get(target).map(String::as_str) == Some(commit) {
        return Ok(());
    }
    all.insert(target.to_owned(), commit.to_owned());
    let path = state_dir.join("targets.json");
    let tmp = state_dir.join("targets.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&all)?).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing `{}`", path.display()))?;
    Ok(())
}

/// The remote-tracking ref of the watched branch in the mirror.
pub fn tracking(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

impl Reconciler {
    pub fn new(
        cfg: Arc<Config>,
        shared: Arc<Shared>,
        remote: Remote,
        targets: Vec<Box<dyn Target>>,
        identities: Option<Box<dyn Identities>>,
    ) -> anyhow::Result<Reconciler> {
        let mirror = cfg.state_dir.join("mirror.git");
        if !mirror.join("HEAD").exists() {
            std::fs::create_dir_all(&cfg.state_dir)
                .with_context(|| format!("creating the state directory `{}`", cfg.state_dir.display()))?;
            git2::Repository::init_bare(&mirror)
                .with_context(|| format!("creating the mirror `{}`", mirror.display()))?;
        }
        let probe = cfg.state_dir.join(".rampart-write-test");
        std::fs::write(&probe, b"")
            .with_context(|| format!("the state directory `{}` is not writable", cfg.state_dir.display()))?;
        let _ = std::fs::remove_file(probe);
        let off = std::env::var_os("RAMPART_CACHE").is_some_and(|v| v == "off" || v == "0");
        let cache = (!off).then(|| ParseCache::open(&mirror));
        let cfg_state_dir = cfg.state_dir.clone();
        Ok(Reconciler {
            cfg,
            shared,
            remote,
            mirror,
            targets,
            identities,
            cache,
            validated: HashMap::new(),
            notes_dirty: false,
            pinned: BTreeSet::new(),
            believed: BTreeSet::new(),
            drift_checked: HashMap::new(),
            store: super::rollouts::Store::load(&cfg_state_dir),
            rollout_settings: super::rollouts::Settings {
                prometheus: None,
                notifier: None,
                author: crate::rollback::Author::default(),
                pulls: None,
            },
            rollout_wake: None,
            breaching: HashMap::new(),
        })
    }

    /// How rollouts are measured, landed and reported.
    pub fn with_rollouts(mut self, settings: super::rollouts::Settings) -> Reconciler {
        self.rollout_settings = settings;
        self
    }

    pub fn mirror(&self) -> &std::path::Path {
        &self.mirror
    }

    /// How long until a drift check is due (`None`: no drift checks).
    pub fn drift_due_in(&self) -> Option<std::time::Duration> {
        let every = self.cfg.drift_interval?;
        let oldest = self
            .targets
            .iter()
            .map(|t| self.drift_checked.get(&t.name()).copied())
            .min()?;
        Some(oldest.map_or(std::time::Duration::ZERO, |at| every.saturating_sub(at.elapsed())))
    }

    /// Compare target `i` with the revision it holds, when a check is due; heal with --self-heal.
    fn check_drift(&mut self, i: usize, status: &mut TargetStatus) -> anyhow::Result<()> {
        let Some(every) = self.cfg.drift_interval else {
            return Ok(());
        };
        let name = self.targets[i].name();
        if self.drift_checked.get(&name).is_some_and(|at| at.elapsed() < every) {
            return Ok(());
        }
        self.drift_checked.insert(name.clone(), Instant::now());
        let Some(commit) = status.applied.clone() else {
            return Ok(());
        };
        self.validate(&commit)?;
        let opts = self.held_opts(&name);
        let v = &self.validated[&commit];
        let rev = Revision {
            head: v,
            base: None,
            affected: None,
            opts: &opts,
        };
        let Some(found) = self.targets[i].drift(&rev, self.cfg.self_heal)? else {
            return Ok(());
        };
        if found.count > 0 {
            tracing::warn!(
                drifted = found.count,
                healed = found.healed,
                objects = ?found.objects.iter().take(10).collect::<Vec<_>>(),
                "drift: objects differ from the applied revision"
            );
        }
        let left = if self.cfg.self_heal && found.errors.is_empty() {
            found.count - found.healed.min(found.count)
        } else {
            found.count
        };
        self.shared.metrics.drift.get_or_create(&label(&name)).set(left as i64);
        status.drift = Some(super::DriftStatus {
            checked_at: crate::target::now_rfc3339(),
            commit,
            found,
        });
        Ok(())
    }

    /// One reconcile of every target. Errors are recorded in the status and metrics, never
    /// returned: the service keeps serving and tries again at the next trigger.
    pub fn run(&mut self) {
        let started = Instant::now();
        let span = tracing::info_span!("reconcile", tip = tracing::field::Empty);
        let _enter = span.enter();
        let tip = match self.fetch() {
            Ok(t) => t,
            Err(e) => {
                self.shared.metrics.fetch_errors.inc();
                let msg = format!("{e:#}");
                tracing::warn!(error = %msg, "fetch failed; targets stay as they are");
                self.shared.update(|s| s.fetch_error = Some(msg));
                return;
            }
        };
        span.record("tip", short(&tip));
        self.rollout_wake = None;
        let tip_time = self.commit_time(&tip);
        self.shared.metrics.last_fetch.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        self.shared.update(|s| {
            s.ready = true;
            s.fetch_error = None;
            s.tip = Some(tip.clone());
            s.tip_time = tip_time;
            s.last_fetch = Some(crate::target::now_rfc3339());
        });
        for i in 0..self.targets.len() {
            let name = self.targets[i].name();
            let tspan = tracing::info_span!("target", target = %name);
            let _t = tspan.enter();
            let mut status = self.shared.target_status(&name);
            // a target whose record moved under us (another process) is read again, a few times
            for _ in 0..3 {
                match self.reconcile_target(i, &tip, &mut status) {
                    Ok(true) => continue,
                    Ok(false) => {
                        status.error = None;
                        break;
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        tracing::error!(error = %msg, "reconcile failed");
                        self.shared.metrics.apply(&name, "failed");
                        status.error = Some(msg);
                        break;
                    }
                }
            }
            if status.error.is_some() {
                // (not checked, but not due again at once either: a failing target must not make
                // the loop wake every second for a check it skips)
                if self.cfg.drift_interval.is_some() {
                    self.drift_checked.insert(name.clone(), Instant::now());
                }
            } else {
                if let Err(e) = self.drive_rollouts(i, &mut status) {
                    let msg = format!("{e:#}");
                    tracing::error!(error = %msg, "driving the rollouts failed");
                    status.error = Some(format!("rollouts: {msg}"));
                }
                if let Err(e) = self.check_drift(i, &mut status) {
                    let msg = format!("{e:#}");
                    tracing::warn!(error = %msg, "drift check failed");
                    status.error = Some(format!("drift check: {msg}"));
                }
            }
            self.shared
                .metrics
                .behind
                .get_or_create(&label(&name))
                .set(status.behind as i64);
            self.shared.set_target(status);
        }
        if self.notes_dirty && self.cfg.push_notes {
            match notes::push(&self.mirror, &self.remote) {
                Ok(_) => self.notes_dirty = false,
                Err(e) => {
                    self.shared.metrics.notes_push_errors.inc();
                    tracing::warn!(error = %format!("{e:#}"), "pushing the notes failed; retried at the next reconcile");
                }
            }
        }
        // keep only what the targets hold: the next run starts from there
        let keep: BTreeSet<String> = self
            .shared
            .status()
            .targets
            .iter()
            .filter_map(|t| t.applied.clone())
            .collect();
        self.validated.retain(|c, _| keep.contains(c));
        self.shared
            .metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        self.shared.update(|s| s.reconciles += 1);
    }

    /// Fetch the branch (and the remote's notes); the tip's commit id.
    fn fetch(&mut self) -> anyhow::Result<String> {
        if let Some(ids) = self.identities.as_mut() {
            ids.refresh()?;
        }
        let branch = &self.cfg.branch;
        let spec = format!("+refs/heads/{branch}:{}", tracking(branch));
        if let Err(e) = self.remote.fetch(&self.mirror, &[spec]) {
            if crate::remote::missing_ref(&e) {
                anyhow::bail!("the branch `{branch}` does not exist on {}", self.remote.display());
            }
            return Err(e.into());
        }
        if self.cfg.push_notes {
            match notes::fetch(&self.mirror, &self.remote) {
                // the remote lost its notes (or never had them): push ours back
                Ok(None) => {
                    let repo = git2::Repository::open_bare(&self.mirror)?;
                    self.notes_dirty |= repo.refname_to_id(notes::NOTES_REF).is_ok();
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "fetching the notes failed"),
            }
        }
        let repo = git2::Repository::open_bare(&self.mirror)?;
        Ok(repo.refname_to_id(&tracking(branch))?.to_string())
    }

    fn commit_time(&self, commit: &str) -> Option<i64> {
        let repo = git2::Repository::open_bare(&self.mirror).ok()?;
        let c = repo.find_commit(git2::Oid::from_str(commit).ok()?).ok()?;
        Some(c.time().seconds())
    }

    /// How the tip's history relates to `from`.
    fn ancestry(&self, from: &str, tip: &str) -> Ancestry {
        let Ok(repo) = git2::Repository::open_bare(&self.mirror) else {
            return Ancestry::Rewritten { present: false };
        };
        let (Ok(from_id), Ok(tip_id)) = (git2::Oid::from_str(from), git2::Oid::from_str(tip)) else {
            return Ancestry::Rewritten { present: false };
        };
        if repo.find_commit(from_id).is_err() {
            return Ancestry::Rewritten { present: false };
        }
        let mut line = Vec::new();
        let mut at = repo.find_commit(tip_id).ok();
        while let Some(c) = at {
            if c.id() == from_id {
                line.reverse();
                return Ancestry::FirstParent(line);
            }
            line.push(c.id().to_string());
            at = c.parent(0).ok();
        }
        if repo.graph_descendant_of(tip_id, from_id).unwrap_or(false) {
            Ancestry::Merged
        } else {
            Ancestry::Rewritten { present: true }
        }
    }

    /// The config repo's tree at `commit` (the `--path` subtree).
    fn tree_of(&self, commit: &str) -> anyhow::Result<git2::Oid> {
        match self.source(commit)? {
            Source::Git { tree, .. } => Ok(tree),
            Source::Dir(_) => unreachable!("a commit"),
        }
    }

    pub(super) fn source(&self, commit: &str) -> anyhow::Result<Source> {
        Source::commit_in(&self.mirror, commit, &self.cfg.path)
            .with_context(|| format!("reading commit {}", short(commit)))
    }

    /// The validated revision at `commit` (kept for the next run while a target holds it).
    pub(super) fn validate(&mut self, commit: &str) -> anyhow::Result<()> {
        if !self.validated.contains_key(commit) {
            let src = self.source(commit)?;
            let v = pipeline::validate_cached(&src, &|_, _| {}, self.cache.as_ref())
                .with_context(|| format!("validating commit {}", short(commit)))?;
            if let Some(c) = &self.cache {
                c.flush();
            }
            self.validated.insert(commit.to_owned(), v);
        }
        Ok(())
    }

    /// Reconcile one target; `Ok(true)` when its record moved under us (read it again).
    fn reconcile_target(&mut self, i: usize, tip: &str, status: &mut TargetStatus) -> anyhow::Result<bool> {
        let name = self.targets[i].name();
        let held = self.targets[i]
            .applied()
            .with_context(|| format!("reading what {name} holds"))?;
        let applied = self.believe(i, &name, &held, tip)?;
        status.applied = applied.commit.clone();
        // (the target's own record, unless its content is unknown: then the whole tree)
        let content_known = held.commit.is_some() && held.commit == applied.commit;
        let start = decide::start(&applied, tip, self.cfg.baseline.as_deref(), |from| {
            self.ancestry(from, tip)
        });
        let steps = match start {
            // the notes say the target was brought to the tip, but it holds nothing of it (a
            // deleted deploy branch or directory): write the tip's tree again
            Start::UpToDate if !content_known => vec![Step {
                from: tip.to_owned(),
                to: tip.to_owned(),
                decision: "restore",
            }],
            Start::UpToDate => {
                status.blocked = None;
                status.behind = 0;
                status.history_rewritten = false;
                return Ok(false);
            }
            Start::Blocked(b) => {
                tracing::warn!(kind = b.kind, reasons = ?b.reasons, "blocked");
                self.block(&name, status, b, 0);
                return Ok(false);
            }
            Start::FirstApply => vec![Step {
                from: String::new(),
                to: tip.to_owned(),
                decision: "first-apply",
            }],
            Start::Steps(s) => s,
        };
        status.history_rewritten = steps.iter().any(|s| s.decision == "history-rewritten");
        if status.history_rewritten {
            tracing::warn!(
                from = %short(&steps[0].from),
                "the branch no longer contains the applied commit (a force-push): judging the change from it as one"
            );
        }
        // judge commit by commit, stopping at the first that is not allowed unless a later
        // commit fixes it
        let walk = decide::walk(&steps, self)?;
        let at = |c: Option<&str>| c.and_then(|c| steps.iter().position(|s| s.to == c));
        let behind_after = steps.len() - at(walk.last()).map_or(0, |i| i + 1);
        let mut walk = walk;
        if let Some(b) = walk.block.as_mut()
            && let Some(c) = b.commit.clone()
            && let Some(step) = steps.iter().find(|s| s.to == c)
            && matches!(b.kind, "denied" | "invalid")
        {
            // the way out, concretely: what a fix must change again, or a revert
            let items: Vec<String> = decide::Judge::touched(self, &step.from, &c)
                .unwrap_or_default()
                .into_iter()
                .take(3)
                .map(|i| match i.split_once('#') {
                    Some((file, "")) => format!("`{file}`"),
                    Some((file, ptr)) => format!("`{file}` {}", ptr.split('/').skip(2).collect::<Vec<_>>().join(".")),
                    None => i,
                })
                .collect();
            b.way_out = format!(
                "{}. To unblock: `git revert {}` (it changed {}; the target moves on once every such value is back \
                 as it was — a later commit that changes them to something else does not count), then make the \
                 change again in a new commit{}",
                b.way_out.trim_end_matches('.'),
                short(&c),
                if items.is_empty() {
                    "files".to_owned()
                } else {
                    items.join(", ")
                },
                if b.kind == "denied" {
                    " that carries the approvals named"
                } else {
                    " with valid values"
                }
            );
        }
        if let Some(b) = &walk.block {
            tracing::warn!(commit = %b.commit.as_deref().map(short).unwrap_or(""), kind = b.kind, reasons = ?b.reasons, way_out = %b.way_out, "commit blocked");
            // counted once per denied commit, not once per reconcile that stops at it
            if b.kind == "denied" && status.blocked.as_ref() != Some(b) {
                self.shared.metrics.denials.get_or_create(&label(&name)).inc();
            }
            self.block(&name, status, b.clone(), behind_after);
        } else {
            status.blocked = None;
        }
        for b in &walk.superseded {
            tracing::info!(commit = %b.commit.as_deref().map(short).unwrap_or(""), kind = b.kind, "not applied on its own: a later commit fixes it");
        }
        let Some(to) = walk.last().map(str::to_owned) else {
            status.behind = behind_after;
            return Ok(false);
        };
        let from = match steps[0].decision {
            "first-apply" | "restore" => None,
            _ => Some(steps[0].from.clone()),
        };
        // each rollout at the step its state says (a new one at step 1)
        let (opts, rollout_states) = self.rollout_steps(&name, &to)?;
        let last_own = &walk.allowed.last().expect("an allowed step").1.own;
        // the base's files are what the target holds only when it holds `from` itself, and
        // every rollout at the step the head is compiled with
        let base_known = content_known
            && from.is_some()
            && applied.commit == from
            && from.as_deref().is_some_and(|f| self.steps_held(&name, f, &opts));
        // (what the steps' own change sets can affect, together: authorising them already
        // compared each pair of revisions)
        let affected = if base_known {
            walk.allowed.iter().try_fold(BTreeSet::new(), |mut all, (_, j)| {
                all.extend(j.affected.clone()?);
                Some(all)
            })
        } else {
            None
        };
        let record = Record {
            source: to.clone(),
            from: from.clone(),
            decision: if walk.allowed.iter().any(|(s, _)| s.decision == "history-rewritten") {
                "history-rewritten".to_owned()
            } else if walk.allowed.iter().any(|(s, _)| s.decision == "fixes") {
                "fixes".to_owned()
            } else {
                steps[0].decision.to_owned()
            },
            author: last_own.author.clone(),
            approvers: last_own.approvers.clone(),
            pull_request: last_own.pull_request,
            commits: walk.allowed.iter().map(|(s, _)| s.to.clone()).collect(),
            time: crate::target::now_rfc3339(),
        };
        let head = &self.validated[&to];
        let base = from.as_ref().filter(|_| base_known).and_then(|f| self.validated.get(f));
        let rev = Revision {
            head,
            base,
            affected: affected.as_ref(),
            opts: &opts,
        };
        let t = Instant::now();
        let outcome = match self.targets[i].apply(&held, &rev, &record)? {
            Apply::Moved { now } => {
                tracing::info!(now = ?now.commit, "the target moved (another process applied); reading it again");
                return Ok(true);
            }
            Apply::Invalid(diags) => {
                let b = Block {
                    commit: Some(to.clone()),
                    kind: "invalid",
                    reasons: problems(&diags),
                    way_out: "fix the problems in a new commit".to_owned(),
                };
                self.block(&name, status, b, behind_after + 1);
                return Ok(false);
            }
            Apply::Done(o) => o,
        };
        let result = if outcome.noop { "unchanged" } else { "applied" };
        tracing::info!(
            commit = %short(&to),
            result,
            written = outcome.written,
            removed = outcome.removed,
            decision = %record.decision,
            ms = t.elapsed().as_millis() as u64,
            "applied"
        );
        self.shared.metrics.apply(&name, result);
        if let Some(time) = self.commit_time(&to) {
            self.shared
                .metrics
                .applied_commit_time
                .get_or_create(&label(&name))
                .set(time as f64);
        }
        if let Some(tree) = &outcome.rendered {
            // (what this process just wrote needs no check when read back)
            self.believed.insert((name.clone(), to.clone(), tree.clone()));
        }
        save_local_record(&self.cfg.state_dir, &name, &to)?;
        let who: std::collections::BTreeMap<String, (Option<String>, Vec<String>)> = walk
            .allowed
            .iter()
            .filter(|(s, _)| !matches!(s.decision, "first-apply" | "restore"))
            .map(|(s, j)| (s.to.clone(), (j.own.author.clone(), j.own.approvers.clone())))
            .collect();
        self.rollouts_applied(&name, &to, &opts, rollout_states, outcome.rendered.clone(), &who)?;
        status.applied = Some(to.clone());
        status.applied_at = Some(record.time.clone());
        status.last_result = Some(result.to_owned());
        status.behind = behind_after;
        // the records: a note on every commit this apply authorised, and on every blocked
        // commit a fix superseded (never applied on its own)
        let repo = git2::Repository::open_bare(&self.mirror)?;
        for (step, j) in walk.allowed {
            let entry = Entry::new(&name, result, &record, &j.own, j.changes, outcome.rendered.clone());
            if notes::add(&repo, git2::Oid::from_str(&step.to)?, entry)? {
                self.notes_dirty = true;
            }
        }
        for b in walk.superseded {
            let Some(commit) = b.commit.clone() else { continue };
            let own = Record {
                source: commit.clone(),
                from: None,
                decision: b.kind.to_owned(),
                author: None,
                approvers: Vec::new(),
                pull_request: None,
                commits: Vec::new(),
                time: record.time.clone(),
            };
            let mut entry = Entry::new(&name, "superseded", &record, &own, Vec::new(), outcome.rendered.clone());
            entry.reasons = b.reasons;
            if notes::add(&repo, git2::Oid::from_str(&commit)?, entry)? {
                self.notes_dirty = true;
            }
        }
        Ok(false)
    }

    /// What a target holds, as far as rampart's records agree:
    /// - a deploy branch's `Rampart-Source:` is believed when the note on that commit records
    ///   this very tree, or when the tree is what that commit compiles to — a trailer someone
    ///   else wrote (to make a denied commit look applied) makes it an unknown baseline;
    /// - a target that holds nothing, or objects without a record, stood where the notes say
    ///   it was last brought: a deleted deploy branch or state file does not make the next
    ///   apply a first one, so what came after is still judged.
    fn believe(&mut self, i: usize, name: &str, held: &Applied, tip: &str) -> anyhow::Result<Applied> {
        let repo = git2::Repository::open_bare(&self.mirror)?;
        if let (Some(c), Some(tree)) = (&held.commit, &held.rendered) {
            let key = (name.to_owned(), c.clone(), tree.clone());
            if self.believed.contains(&key) {
                return Ok(held.clone());
            }
            let id = git2::Oid::from_str(c)?;
            let present = repo.find_commit(id).is_ok();
            let mut ok = present
                && (notes::confirms(&repo, id, name, tree) || local_records(&self.cfg.state_dir).get(name) == Some(c));
            if !ok && present && self.reached_by_allowed_walk(&repo, name, c)? {
                self.validate(c)?;
                let opts = self.held_opts(name);
                let v = &self.validated[c];
                ok = v.specs_valid()
                    && self.targets[i]
                        .holds(&Revision {
                            head: v,
                            base: None,
                            affected: None,
                            opts: &opts,
                        })?
                        .unwrap_or(true);
            }
            if ok {
                self.believed.insert(key);
                return Ok(held.clone());
            }
            tracing::warn!(
                claims = %short(c),
                "the target says it holds this commit, but neither rampart's notes nor a compile of it agree: \
                 not believed"
            );
        }
        let believed = held.commit.is_some() && held.rendered.is_none();
        // this process's own record first (a remote cannot touch it), then the notes
        let local = local_records(&self.cfg.state_dir)
            .get(name)
            .filter(|c| git2::Oid::from_str(c).is_ok_and(|id| repo.find_commit(id).is_ok()))
            .cloned();
        if !believed
            && let Some(last) =
                local.or_else(|| notes::last_applied(&repo, git2::Oid::from_str(tip).ok()?, name, 100_000))
        {
            tracing::warn!(
                last = %short(&last),
                unknown = held.unknown,
                "the target records nothing, but rampart's notes say it was brought to this commit: \
                 authorising from there and writing the whole tree"
            );
            return Ok(Applied {
                commit: Some(last),
                unknown: false,
                rendered: None,
            });
        }
        if !believed && held.commit.is_some() {
            return Ok(Applied {
                commit: None,
                unknown: true,
                rendered: held.rendered.clone(),
            });
        }
        Ok(held.clone())
    }

    /// Whether `commit` is reached from the last commit rampart's records show this target
    /// at before it, every step allowed: a tree that merely equals what `commit` compiles to
    /// shows what the target holds, not that it was authorised.
    fn reached_by_allowed_walk(&mut self, repo: &git2::Repository, name: &str, commit: &str) -> anyhow::Result<bool> {
        let c = repo.find_commit(git2::Oid::from_str(commit)?)?;
        // no record before it at all (a process killed before its first notes were pushed):
        // nothing to walk from, and nothing says otherwise — the tree is believed (someone who
        // can delete the notes can make this case, as README's "what the records can prove" says)
        let Ok(parent) = c.parent_id(0) else {
            return Ok(true);
        };
        let Some(anchor) = notes::last_applied(repo, parent, name, 100_000) else {
            return Ok(true);
        };
        let Ancestry::FirstParent(line) = self.ancestry(&anchor, commit) else {
            return Ok(false);
        };
        let mut prev = anchor;
        let steps: Vec<Step> = line
            .into_iter()
            .map(|to| Step {
                from: std::mem::replace(&mut prev, to.clone()),
                to,
                decision: "allowed",
            })
            .collect();
        let w = decide::walk(&steps, self)?;
        Ok(w.block.is_none() && w.last() == Some(commit))
    }

    fn block(&self, name: &str, status: &mut TargetStatus, b: Block, behind: usize) {
        if status.blocked.as_ref() != Some(&b) {
            self.shared.metrics.apply(name, "blocked");
        }
        status.last_result = Some("blocked".to_owned());
        status.blocked = Some(b);
        status.behind = behind;
    }

    /// Judge one step: `Ok(Ok)` allowed (with who made it), `Ok(Err)` stopped and why.
    fn judge_step(&mut self, step: &Step) -> anyhow::Result<Result<Judged, Block>> {
        // (a long walk over a large repo must not hold every revision it passed)
        let pinned = &self.pinned;
        self.validated
            .retain(|c, _| *c == step.from || *c == step.to || pinned.contains(c));
        self.validate(&step.to)?;
        let head_v = &self.validated[&step.to];
        if !head_v.is_valid() {
            let diags: Vec<Diagnostic> = head_v.diagnostics.clone();
            return Ok(Err(Block {
                commit: Some(step.to.clone()),
                kind: "invalid",
                reasons: problems(&diags),
                way_out:
                    "fix the problems in a new commit on the branch (an invalid commit is never applied or skipped)"
                        .to_owned(),
            }));
        }
        if step.decision == "first-apply" || step.decision == "restore" {
            let info = self.source(&step.to)?.commit_info();
            return Ok(Ok(Judged {
                own: Record {
                    source: step.to.clone(),
                    from: None,
                    decision: step.decision.to_owned(),
                    author: info.map(|c| c.author_email),
                    approvers: Vec::new(),
                    pull_request: None,
                    commits: vec![step.to.clone()],
                    time: String::new(),
                },
                changes: Vec::new(),
                affected: None,
            }));
        }
        // rampart's own revert or promotion, verified against its records: judged as rampart
        let own = self.own_commit(step)?;
        // who: the pull request that merged it, when GitHub is configured
        let (who, pull) = match self.identities.as_mut() {
            _ if own.is_some() => (own.unwrap_or_default(), None),
            None => (Principals::default(), None),
            Some(ids) => match ids.of(&step.to)? {
                Some(p) => (
                    Principals::logins(Some(p.author.as_str()), &p.approvers),
                    Some(p.number),
                ),
                None if self.cfg.require_pull_request => {
                    return Ok(Err(Block {
                        commit: Some(step.to.clone()),
                        kind: "no-pull-request",
                        reasons: vec![format!(
                            "no merged pull request brought {} in: it was pushed to `{}` directly, and its author and \
                             trailers are whatever the pusher wrote",
                            short(&step.to),
                            self.cfg.branch
                        )],
                        way_out: "revert the direct push and bring the change in through a reviewed pull request \
                                  (or run serve with --require-pull-request=false to trust trailers)"
                            .to_owned(),
                    }));
                }
                None => (Principals::default(), None),
            },
        };
        self.validate(&step.from)?;
        let (base_src, head_src) = (self.source(&step.from)?, self.source(&step.to)?);
        let (base_v, head_v) = (&self.validated[&step.from], &self.validated[&step.to]);
        if !base_v.specs_valid() && step.decision != "baseline" {
            // (an applied commit is valid; a `history-rewritten` base may not be)
            tracing::warn!(commit = %short(&step.from), "the base of this change is invalid");
        }
        let a = pipeline::authorize(&base_src, &head_src, base_v, head_v, &who, None)
            .with_context(|| format!("authorising {}", short(&step.to)))?;
        let changes: Vec<ChangeRecord> = a
            .changes
            .iter()
            .zip(&a.decisions)
            .map(|(c, d)| ChangeRecord {
                action: c.action.as_str().to_owned(),
                subject: c.subject.as_str().to_owned(),
                name: c.name.clone(),
                allowed: d.allowed,
                policies: d.policies.clone(),
            })
            .collect();
        if a.denied() > 0 {
            // (who made it, as rampart read it: an author in no team explains most denials)
            let mut reasons: Vec<String> = a
                .diagnostics
                .iter()
                .filter(|d| matches!(d.code.as_str(), "R420" | "R421" | "R422" | "R423"))
                .map(|d| crate::diagnostic::visible(&format!("{} {}", d.code.as_str(), d.message), &[]))
                .collect();
            let mut ways = Vec::new();
            for (c, d) in a.changes.iter().zip(&a.decisions).filter(|(_, d)| !d.allowed) {
                reasons.push(format!(
                    "{}{}",
                    denial(c, d),
                    d.advice.first().map(|a| format!(": {a}")).unwrap_or_default()
                ));
                if let Some(w) = &d.way_out {
                    ways.push(w.describe());
                }
            }
            ways.dedup();
            return Ok(Err(Block {
                commit: Some(step.to.clone()),
                kind: "denied",
                reasons,
                way_out: if ways.is_empty() {
                    "revert the commit, or fix it in a new commit the policies allow".to_owned()
                } else {
                    format!(
                        "{}; a commit is never skipped: revert it or fix it in a new commit",
                        ways.join("; or ")
                    )
                },
            }));
        }
        Ok(Ok(Judged {
            own: Record {
                source: step.to.clone(),
                from: Some(step.from.clone()),
                decision: step.decision.to_owned(),
                author: Some(a.who.author.clone()).filter(|a| !a.is_empty()),
                approvers: a.who.approvers.clone(),
                pull_request: pull,
                commits: vec![step.to.clone()],
                time: String::new(),
            },
            changes,
            affected: crate::plan::affected(&a.changes, &base_v.repo, &head_v.repo),
        }))
    }
}

impl decide::Judge for Reconciler {
    type J = Judged;
    type E = anyhow::Error;

    fn judge(&mut self, step: &Step) -> anyhow::Result<Result<Judged, Block>> {
        self.judge_step(step)
    }

    fn reverted(&mut self, items: &BTreeSet<String>, from: &str, to: &str) -> anyhow::Result<bool> {
        let repo = git2::Repository::open_bare(&self.mirror)?;
        let (a, b) = (repo.find_tree(self.tree_of(from)?)?, repo.find_tree(self.tree_of(to)?)?);
        let bytes = |t: &git2::Tree<'_>, path: &str| -> Option<Vec<u8>> {
            let e = t.get_path(std::path::Path::new(path)).ok()?;
            Some(repo.find_blob(e.id()).ok()?.content().to_vec())
        };
        for item in items {
            let (path, pointer) = item.split_once('#').unwrap_or((item.as_str(), ""));
            let (x, y) = (bytes(&a, path), bytes(&b, path));
            if x == y {
                continue;
            }
            if pointer.is_empty() {
                return Ok(false);
            }
            let (Some(dx), Some(dy)) = (documents(path, x.as_deref()), documents(path, y.as_deref())) else {
                return Ok(false);
            };
            if resolve(&dx, pointer) != resolve(&dy, pointer) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn touched(&mut self, from: &str, to: &str) -> anyhow::Result<BTreeSet<String>> {
        let (a, b) = (self.tree_of(from)?, self.tree_of(to)?);
        let repo = git2::Repository::open_bare(&self.mirror)?;
        let diff = repo.diff_tree_to_tree(Some(&repo.find_tree(a)?), Some(&repo.find_tree(b)?), None)?;
        let blob = |id: git2::Oid| -> Option<Vec<u8>> {
            (!id.is_zero())
                .then(|| repo.find_blob(id).ok().map(|b| b.content().to_vec()))
                .flatten()
        };
        let mut out = BTreeSet::new();
        for d in diff.deltas() {
            let (old, new) = (d.old_file(), d.new_file());
            let paths: BTreeSet<String> = [old.path(), new.path()]
                .into_iter()
                .flatten()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            for path in paths {
                // (a moved file counts as removed at one path and added at the other)
                let same = old.path().map(|p| p.to_string_lossy()) == new.path().map(|p| p.to_string_lossy());
                let before = (same || old.path().is_some_and(|p| p.to_string_lossy() == path))
                    .then(|| blob(old.id()))
                    .flatten();
                let after = (same || new.path().is_some_and(|p| p.to_string_lossy() == path))
                    .then(|| blob(new.id()))
                    .flatten();
                value_changes(&path, before, after, &mut out);
            }
        }
        Ok(out)
    }
}

/// The `path#pointer` items (see [`decide::Judge::touched`]) that differ between two versions
/// of one file (`None`: absent).
fn value_changes(path: &str, before: Option<Vec<u8>>, after: Option<Vec<u8>>, out: &mut BTreeSet<String>) {
    match (documents(path, before.as_deref()), documents(path, after.as_deref())) {
        (Some(a), Some(b)) => {
            let mut items = BTreeSet::new();
            leaf_changes(&a, &b, &mut format!("{path}#"), &mut items);
            if items.is_empty() && a != b {
                // (nothing more precise to say: the whole file)
                items.insert(format!("{path}#"));
            }
            out.extend(items);
        }
        _ if before != after => {
            out.insert(format!("{path}#"));
        }
        _ => {}
    }
}

/// Whether no two elements of `list` share a key (a list with duplicates is compared as a
/// whole: an element hidden behind its twin must not go unnoticed).
fn unique(list: &[serde_json::Value], key: impl Fn(&serde_json::Value) -> String) -> bool {
    let mut seen = BTreeSet::new();
    list.iter().all(|v| seen.insert(key(v)))
}

/// The documents of a file's bytes (`Some(empty)` when absent), `None` when it is not YAML
/// or does not parse.
fn documents(path: &str, bytes: Option<&[u8]>) -> Option<serde_json::Value> {
    let Some(bytes) = bytes else {
        return Some(serde_json::Value::Array(Vec::new()));
    };
    if !crate::source::is_yaml(path) {
        return None;
    }
    let file = crate::source::SourceFile {
        path: path.to_owned(),
        bytes: bytes.to_vec(),
    };
    let (loaded, diags) = crate::load::load_file(file, &crate::config::Limits::default());
    (!diags.iter().any(Diagnostic::is_error)).then_some(serde_json::Value::Array(loaded.docs))
}

/// What a `path#pointer` item's pointer resolves to in a file's documents (see
/// [`leaf_changes`] for the segments): `None` when absent.
fn resolve(docs: &serde_json::Value, pointer: &str) -> Option<serde_json::Value> {
    use serde_json::Value;
    let mut at = docs.clone();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        at = if let Some(v) = seg.strip_prefix('=') {
            let v: Value = serde_json::from_str(v).ok()?;
            Value::Bool(at.as_array()?.contains(&v))
        } else if let Some(n) = seg.strip_prefix("name=") {
            let matches: Vec<Value> = at
                .as_array()?
                .iter()
                .filter(|e| e.get("name").and_then(Value::as_str) == Some(n))
                .cloned()
                .collect();
            match matches.len() {
                0 => return None,
                1 => matches.into_iter().next()?,
                _ => Value::Array(matches),
            }
        } else if let Ok(i) = seg.parse::<usize>()
            && at.is_array()
        {
            at.get(i)?.clone()
        } else {
            at.get(&seg)?.clone()
        };
    }
    Some(at)
}

/// Every JSON pointer (appended to `at`) where `a` and `b` differ, down to the leaves. Lists
/// are compared by what they hold, not by position, so an element added in front does not
/// make every later one look changed: a list of scalars by value (`/owners/=payments`), a list
/// of objects with a `name` by name (`/plugins/name=catalog/config/…`); the documents of a
/// file by position; any other list of another length as a whole.
fn leaf_changes(a: &serde_json::Value, b: &serde_json::Value, at: &mut String, out: &mut BTreeSet<String>) {
    use serde_json::Value;
    if a == b {
        return;
    }
    let len = at.len();
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    let null = Value::Null;
    let mut pairs: Vec<(String, &Value, &Value)> = Vec::new();
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                pairs.push((escape(k), x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null)));
            }
        }
        (Value::Array(x), Value::Array(y)) if len == at.find('#').map_or(0, |i| i + 1) => {
            // the documents of a file, one by one
            for i in 0..x.len().max(y.len()) {
                pairs.push((i.to_string(), x.get(i).unwrap_or(&null), y.get(i).unwrap_or(&null)));
            }
        }
        (Value::Array(x), Value::Array(y))
            if x.iter().chain(y).all(|v| !v.is_object() && !v.is_array())
                && unique(x, |v| v.to_string())
                && unique(y, |v| v.to_string()) =>
        {
            for v in x
                .iter()
                .filter(|v| !y.contains(v))
                .chain(y.iter().filter(|v| !x.contains(v)))
            {
                out.insert(format!("{at}/={}", escape(&v.to_string())));
            }
        }
        (Value::Array(x), Value::Array(y))
            if x.iter().chain(y).all(|v| v.get("name").is_some_and(Value::is_string))
                && unique(x, |v| v["name"].to_string())
                && unique(y, |v| v["name"].to_string()) =>
        {
            let name = |v: &Value| v["name"].as_str().unwrap_or_default().to_owned();
            let mut names: Vec<String> = x.iter().chain(y).map(name).collect();
            names.dedup();
            for n in names.into_iter().collect::<BTreeSet<_>>() {
                let (old, new) = (x.iter().find(|v| name(v) == n), y.iter().find(|v| name(v) == n));
                pairs.push((
                    format!("name={}", escape(&n)),
                    old.unwrap_or(&null),
                    new.unwrap_or(&null),
                ));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for i in 0..x.len() {
                pairs.push((i.to_string(), &x[i], &y[i]));
            }
        }
        _ => {
            out.insert(at.clone());
            return;
        }
    }
    for (key, x, y) in pairs {
        at.push('/');
        at.push_str(&key);
        leaf_changes(x, y, at, out);
        at.truncate(len);
    }
}

fn label(target: &str) -> super::metrics::TargetLabel {
    super::metrics::TargetLabel {
        target: target.to_owned(),
    }
}

/// The first problems of an invalid revision, one line each (`file:line:col R123 message`).
/// One denied change in a line: `update Plugin `techdocs` denied by <policies>`.
pub(super) fn denial(c: &crate::change::Change, d: &crate::policy::decide::Decision) -> String {
    format!(
        "{} {} `{}` denied by {}",
        c.action.as_str(),
        c.subject.as_str(),
        c.name,
        if d.policies.is_empty() {
            "no permitting policy".to_owned()
        } else {
            d.policies.join(", ")
        }
    )
}

pub(super) fn problems(diags: &[Diagnostic]) -> Vec<String> {
    let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
    let mut out: Vec<String> = errors
        .iter()
        .take(5)
        .map(|d| {
            let at = d
                .location
                .as_ref()
                .map(|l| format!("{}:{}:{} ", l.file, l.line, l.column))
                .unwrap_or_default();
            crate::diagnostic::visible(&format!("{at}{} {}", d.code.as_str(), d.message), &[])
        })
        .collect();
    if errors.len() > 5 {
        out.push(format!("… and {} more", errors.len() - 5));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(before: &str, after: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        value_changes(
            "t.yaml",
            Some(before.as_bytes().to_vec()),
            Some(after.as_bytes().to_vec()),
            &mut out,
        );
        out.into_iter().collect()
    }

    #[test]
    fn changes_are_leaf_values_and_lists_compare_by_content() {
        assert_eq!(
            changes(
                "spec:\n  quota: {cpu: 1, memory: 2Gi}\n",
                "spec:\n  quota: {cpu: 2, memory: 2Gi}\n"
            ),
            ["t.yaml#/0/spec/quota/cpu"]
        );
        // an owner added in front: only that owner, not every position after it
        assert_eq!(
            changes("owners: [a, b]\n", "owners: [x, a, b]\n"),
            ["t.yaml#/0/owners/=\"x\""]
        );
        // plugins by name
        assert_eq!(
            changes(
                "plugins: [{name: a, config: {k: 1}}, {name: b}]\n",
                "plugins: [{name: b}, {name: a, config: {k: 2}}]\n"
            ),
            ["t.yaml#/0/plugins/name=a/config/k"]
        );
        // the same JSON written differently is no change; a file that does not parse is whole
        assert!(changes("a: 1\n", "a:   1 # same\n").is_empty());
        assert_eq!(changes("a: 1\n", "a: [\n"), ["t.yaml#"]);
        // keys with / and ~ are escaped
        assert_eq!(changes("a/b~: 1\n", "a/b~: 2\n"), ["t.yaml#/0/a~1b~0"]);
        // a twin hides nothing: a list with duplicate names is compared as a whole
        assert_eq!(
            changes(
                "c: [{name: a, url: x}]\n",
                "c: [{name: a, url: x}, {name: a, url: evil}]\n"
            ),
            ["t.yaml#/0/c"]
        );
    }

    #[test]
    fn items_resolve_to_the_value_they_name() {
        let docs = documents(
            "t.yaml",
            Some(b"spec: {owners: [a, b], plugins: [{name: p, v: 1}]}\n---\nx: 1\n"),
        )
        .unwrap();
        assert_eq!(resolve(&docs, "/0/spec/owners/=\"a\""), Some(serde_json::json!(true)));
        assert_eq!(resolve(&docs, "/0/spec/owners/=\"z\""), Some(serde_json::json!(false)));
        assert_eq!(resolve(&docs, "/0/spec/plugins/name=p/v"), Some(serde_json::json!(1)));
        assert_eq!(resolve(&docs, "/1/x"), Some(serde_json::json!(1)));
        assert_eq!(resolve(&docs, "/2/x"), None);
    }
}
