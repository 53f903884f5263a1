//! Rollouts in `serve` (IO): the driver around the pure step machine (`crate::rollout`).
//!
//! For each target, the rollouts of the commit it holds are known by name and by the commit
//! that gave their document its content (`introduced_by`: what a revert reverts). Their
//! progress is kept in `<state-dir>/rollouts.json` and, at every change, in the note on the
//! applied commit (`refs/notes/rampart`, pushed), so a process with an empty state directory
//! resumes the same step from Git. A step is recorded before it is applied, and the
//! step's hold is measured from that record: a crash at any line neither advances twice nor
//! skips a step (the apply itself is idempotent). A revert or promotion is recorded as
//! `reverting`/`promoting` before its commit is written, and the commit is keyed by its
//! trailer, so a restart finishes it without writing it twice.

use super::reconcile::Reconciler;
use crate::observe::analysis::Check;
use crate::rollout::{self, Action, State, Status};
use crate::target::notes::{self, RolloutEntry};
use crate::target::{Apply, Record, Revision};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Ended rollouts kept per target (for `rollout status` and the circuit breaker).
const FINISHED: usize = 50;
/// The longest a Prometheus query may take, whatever `analysis.timeout` says.
const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one target's rollouts may measure in one reconcile; the rest wait for the next
/// (a slow Prometheus must not hold up applying commits).
const ROUND_BUDGET: Duration = Duration::from_secs(20);
/// How far back the notes and the history are searched.
const LOOKBACK: usize = 1000;

/// How `serve` measures and reports rollouts (from flags).
pub struct Settings {
    pub prometheus: Option<crate::observe::prometheus::Client>,
    pub notifier: Option<crate::notify::Notifier>,
    pub author: crate::rollback::Author,
    pub pulls: Option<Box<dyn crate::rollback::PullRequests + Send>>,
}

/// The rollouts file in the state directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Store {
    pub targets: BTreeMap<String, TargetRollouts>,
}

/// One target's rollouts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRollouts {
    /// The commit the target holds, whose rollouts these are.
    #[serde(default)]
    pub commit: Option<String>,
    /// The rollouts of the commit the target holds, by name.
    pub active: BTreeMap<String, State>,
    /// The step the target holds compiled for each rollout (0: no canary).
    pub applied_steps: BTreeMap<String, usize>,
    /// Rollouts that ended (reverted, promoted), oldest first.
    pub finished: Vec<State>,
    /// Circuit breakers cleared: plugin → when a `Rampart-Clear-Breaker:` commit naming it,
    /// made or approved by a `platform` member, was applied by this process (unix seconds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cleared_at: BTreeMap<String, i64>,
}

/// What the status API shows of one rollout.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    #[serde(flatten)]
    pub state: State,
    /// The canary's share of traffic in the tenants it reaches at this step, and how many
    /// tenants it reaches.
    pub weight: u32,
    pub tenants: usize,
    /// Seconds left in this step's hold (when running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_left: Option<i64>,
}

impl Store {
    pub fn path(state_dir: &std::path::Path) -> std::path::PathBuf {
        state_dir.join("rollouts.json")
    }

    /// The store in `state_dir` (empty when missing or unreadable: the notes fill it).
    pub fn load(state_dir: &std::path::Path) -> Store {
        std::fs::read(Store::path(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, state_dir: &std::path::Path) -> anyhow::Result<()> {
        let path = Store::path(state_dir);
        let tmp = state_dir.join("rollouts.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing `{}`", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing `{}`", path.display()))?;
        Ok(())
    }
}

/// How applying a rollout step ended.
enum Stepped {
    /// Applied; the target's own id of what it holds.
    Applied(Option<String>),
    /// The target holds another commit now: the next reconcile decides again.
    Moved,
    /// The step does not compile (e.g. two rollouts would send a tenant more than 100 %):
    /// nothing was written.
    Invalid(String),
}

/// Now, in unix seconds, rounded up (a step's hold never counts a second it did not wait).
fn now_ceil() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0))
}

/// Now, in unix seconds with the fraction.
fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Reconciler {
    /// The compile options for target `name` at `commit`: each rollout's step as its state
    /// says (a rollout seen for the first time starts at step 1, unless its plugin's circuit
    /// breaker holds it), and the states that go with them.
    pub(super) fn rollout_steps(
        &mut self,
        name: &str,
        commit: &str,
    ) -> anyhow::Result<(crate::compile::Options, BTreeMap<String, State>)> {
        self.validate(commit)?;
        let repo = git2::Repository::open_bare(&self.mirror)?;
        let mine = self.store.targets.get(name).cloned().unwrap_or_default();
        let rollouts: Vec<(String, String, crate::spec::RolloutSpec, usize)> = {
            let v = &self.validated[commit];
            let reach = reaches(&v.repo);
            v.repo
                .rollouts
                .iter()
                .map(|r| {
                    let reach = reach.get(r.name()).copied().unwrap_or(0);
                    (r.name().to_owned(), r.origin.file.clone(), r.spec.clone(), reach)
                })
                .collect()
        };
        let breakers = if rollouts.is_empty() {
            BTreeMap::new()
        } else {
            self.breakers()
        };
        let mut opts = crate::compile::Options::default();
        let mut states = BTreeMap::new();
        for (rname, file, spec, reach) in rollouts {
            let ib = self.introduced_by(&repo, commit, &file)?;
            let known = mine
                .active
                .get(&rname)
                .filter(|s| s.introduced_by == ib)
                .or_else(|| {
                    mine.finished
                        .iter()
                        .rev()
                        .find(|s| s.rollout == rname && s.introduced_by == ib)
                })
                .cloned()
                .or_else(|| {
                    notes::rollout_state(&repo, git2::Oid::from_str(commit).ok()?, name, &rname, &ib, LOOKBACK)
                        .map(|e| e.state.from_notes(now()))
                });
            // (a rollout held by the breaker starts once the breaker is cleared)
            let breaker = breakers
                .get(&(spec.plugin.clone(), spec.to_version.clone()))
                .or_else(|| {
                    let integrity = spec.artifact.as_ref()?.integrity.clone();
                    breakers.get(&(spec.plugin.clone(), integrity))
                });
            let known = known.filter(|s| s.status != Status::Held || breaker.is_some());
            let state = known.unwrap_or_else(|| {
                let steps = rollout::phases(&spec, reach).len();
                let mut s = State::start(&rname, &ib, &spec, steps, now());
                if let Some(by) = breaker {
                    s.status = Status::Held;
                    s.reason = Some(format!(
                        "circuit breaker: {} {} was reverted by {} — a rollout of it starts again only with another \
                         version, or once a `platform` member clears it (a commit with the trailer \
                         `Rampart-Clear-Breaker: {}`, made or approved by a member of `platform`)",
                        spec.plugin,
                        spec.to_version,
                        super::decide::short(by),
                        spec.plugin
                    ));
                }
                s
            });
            opts.rollout_steps.insert(rname.clone(), state.compiled_step());
            states.insert(rname, state);
        }
        Ok((opts, states))
    }

    /// Whether the target holds every rollout of `opts` and of the base revision `from` at
    /// the step `opts` compiles it with (so a delta from the base, compiled with the same
    /// options, is what it needs).
    pub(super) fn steps_held(&self, name: &str, from: &str, opts: &crate::compile::Options) -> bool {
        let held = self.store.targets.get(name).map(|t| &t.applied_steps);
        let step = |r: &str, of: Option<&std::collections::BTreeMap<String, usize>>| {
            of.and_then(|h| h.get(r)).copied().unwrap_or(1)
        };
        let base = self
            .validated
            .get(from)
            .map(|v| v.repo.rollouts.iter().map(|r| r.name()).collect::<Vec<_>>());
        opts.rollout_steps
            .keys()
            .map(String::as_str)
            .chain(base.into_iter().flatten())
            .all(|r| step(r, held) == step(r, Some(&opts.rollout_steps)))
    }

    /// The options the target holds its commit compiled with.
    pub(super) fn held_opts(&self, name: &str) -> crate::compile::Options {
        crate::compile::Options {
            rollout_steps: self
                .store
                .targets
                .get(name)
                .map(|t| t.applied_steps.clone())
                .unwrap_or_default(),
            redact: false,
        }
    }

    /// After `commit` was applied to `name` with `opts`: its rollouts are the active ones
    /// (a rollout seen for the first time is recorded in the note on the commit), the rest
    /// end.
    pub(super) fn rollouts_applied(
        &mut self,
        name: &str,
        commit: &str,
        opts: &crate::compile::Options,
        mut states: BTreeMap<String, State>,
        rendered: Option<String>,
        who: &BTreeMap<String, (Option<String>, Vec<String>)>,
    ) -> anyhow::Result<()> {
        // circuit breakers a platform member cleared, as this process judged them just now
        let platform: Vec<String> = self
            .validated
            .get(commit)
            .and_then(|v| v.repo.teams.iter().find(|t| t.name() == "platform"))
            .map(|t| t.spec.members.iter().map(|m| m.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let repo = git2::Repository::open_bare(&self.mirror)?;
        for (c, (author, approvers)) in who {
            let Ok(found) = git2::Oid::from_str(c).and_then(|id| repo.find_commit(id)) else {
                continue;
            };
            let plugins: Vec<String> = trailers(&String::from_utf8_lossy(found.message_bytes()))
                .into_iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("Rampart-Clear-Breaker"))
                .map(|(_, v)| v.trim().to_owned())
                .collect();
            let by_platform = author
                .iter()
                .chain(approvers)
                .any(|l| platform.contains(&l.to_ascii_lowercase()));
            if !plugins.is_empty() && by_platform {
                tracing::info!(commit = %decide::short(c), plugins = ?plugins, "circuit breaker cleared");
                let mine = self.store.targets.entry(name.to_owned()).or_default();
                for p in plugins {
                    mine.cleared_at.insert(p, now());
                }
            }
        }
        // who made each rollout, as this process judged its commit just now
        for s in states.values_mut() {
            if s.author.is_none()
                && let Some((author, approvers)) = who.get(&s.introduced_by)
            {
                s.author = author.clone();
                s.approvers = approvers.clone();
            }
        }
        let repo = git2::Repository::open_bare(&self.mirror)?;
        let mine = self.store.targets.entry(name.to_owned()).or_default();
        let mut started = Vec::new();
        let mut ended = Vec::new();
        let mut finished_late = Vec::new();
        for (rname, mut old) in std::mem::take(&mut mine.active) {
            if states.get(&rname).is_none_or(|s| s.introduced_by != old.introduced_by) {
                // (one that ends without a verdict was edited — a new one started — or removed)
                match old.status {
                    Status::Reverted | Status::Promoted => {}
                    // (its commit landed and is applied, but the process stopped before it
                    // recorded so: finished now)
                    Status::Reverting | Status::Promoting => {
                        let reverted = old.status == Status::Reverting;
                        old.status = if reverted { Status::Reverted } else { Status::Promoted };
                        old.landed = old.landed.or_else(|| Some(commit.to_owned()));
                        old.updated = now();
                        if reverted {
                            self.shared.metrics.reverts.inc();
                        } else {
                            self.shared.metrics.promotions.inc();
                        }
                        finished_late.push(old.clone());
                    }
                    _ => {
                        old.status = Status::Superseded;
                        old.updated = now();
                    }
                }
                ended.push(rname);
                mine.finished.push(old);
            }
        }
        for (rname, s) in &states {
            if !mine
                .finished
                .iter()
                .any(|f| f.rollout == *rname && f.introduced_by == s.introduced_by)
                && !notes::read(&repo, git2::Oid::from_str(commit)?)
                    .rollouts
                    .iter()
                    .any(|e| e.target == name && e.state.rollout == *rname && e.state.introduced_by == s.introduced_by)
            {
                started.push(s.clone());
            }
        }
        let excess = mine.finished.len().saturating_sub(FINISHED);
        mine.finished.drain(..excess);
        mine.active = states;
        mine.applied_steps = opts.rollout_steps.clone();
        mine.commit = Some(commit.to_owned());
        self.store.save(&self.cfg.state_dir)?;
        for r in ended {
            if !self.store.targets[name].active.contains_key(&r) {
                self.shared.metrics.rollout_step(name, &r, 0);
            }
        }
        for s in finished_late {
            let kind = if s.status == Status::Reverted {
                "revert"
            } else {
                "promote"
            };
            let message = format!(
                "rollout `{}` ({} {}) on {name}: its {kind} commit landed and is applied ({})",
                s.rollout,
                s.plugin,
                s.to_version,
                decide::short(commit)
            );
            self.notify(kind, name, &s, message);
        }
        for s in started {
            tracing::info!(rollout = %s.rollout, status = s.status.as_str(), step = s.step, "rollout started");
            self.record(name, commit, &s, rendered.clone())?;
        }
        Ok(())
    }

    /// Write a rollout's state to the store and the note on the applied commit.
    fn record(&mut self, name: &str, commit: &str, state: &State, rendered: Option<String>) -> anyhow::Result<()> {
        let mine = self.store.targets.entry(name.to_owned()).or_default();
        mine.active.insert(state.rollout.clone(), state.clone());
        self.store.save(&self.cfg.state_dir)?;
        let repo = git2::Repository::open_bare(&self.mirror)?;
        let entry = RolloutEntry {
            target: name.to_owned(),
            state: state.clone(),
            rendered,
        };
        if notes::add_rollout(&repo, git2::Oid::from_str(commit)?, entry)? {
            self.notes_dirty = true;
        }
        Ok(())
    }

    /// The commit that gave `file` (a config-repo path) its content at `commit`: the
    /// first-parent commit after which it stayed the same.
    fn introduced_by(&self, repo: &git2::Repository, commit: &str, file: &str) -> anyhow::Result<String> {
        let path = if self.cfg.path.is_empty() {
            std::path::PathBuf::from(file)
        } else {
            std::path::Path::new(&self.cfg.path).join(file)
        };
        let blob = |c: &git2::Commit<'_>| c.tree().ok().and_then(|t| t.get_path(&path).ok()).map(|e| e.id());
        let mut at = repo.find_commit(git2::Oid::from_str(commit)?)?;
        let here = blob(&at);
        for _ in 0..LOOKBACK * 10 {
            let Ok(parent) = at.parent(0) else { break };
            if blob(&parent) != here {
                break;
            }
            at = parent;
        }
        Ok(at.id().to_string())
    }

    /// The plugin versions rampart reverted, keyed both (plugin, version) and (plugin,
    /// integrity) → the revert commit: from this process's own records (a revert it landed),
    /// less those a `platform` member cleared since. Not from the branch's trailers, which
    /// anyone can write (a decoy would hold a version nobody reverted).
    fn breakers(&self) -> BTreeMap<(String, String), String> {
        let mut cleared: BTreeMap<&str, i64> = BTreeMap::new();
        for t in self.store.targets.values() {
            for (p, at) in &t.cleared_at {
                let e = cleared.entry(p.as_str()).or_insert(*at);
                *e = (*e).max(*at);
            }
        }
        let mut open = BTreeMap::new();
        for s in self
            .store
            .targets
            .values()
            .flat_map(|t| t.active.values().chain(&t.finished))
        {
            let Some(landed) = &s.landed else { continue };
            if s.status != Status::Reverted || cleared.get(s.plugin.as_str()).is_some_and(|c| *c >= s.updated) {
                continue;
            }
            open.insert((s.plugin.clone(), s.to_version.clone()), landed.clone());
            if let Some(i) = &s.integrity {
                open.insert((s.plugin.clone(), i.clone()), landed.clone());
            }
        }
        open
    }

    /// What rampart last landed for `plugin` (its own records): `revert` or `promote`, so a
    /// second revert in a row is known.
    fn last_landed(&self, plugin: &str) -> Option<String> {
        self.store
            .targets
            .values()
            .flat_map(|t| t.active.values().chain(&t.finished))
            .filter(|s| s.plugin == plugin && s.landed.is_some())
            .filter(|s| matches!(s.status, Status::Reverted | Status::Promoted))
            .max_by_key(|s| s.updated)
            .map(|s| {
                if s.status == Status::Reverted {
                    "revert"
                } else {
                    "promote"
                }
                .to_owned()
            })
    }

    /// When the next rollout measurement or step is due (for the loop's wait).
    pub fn rollout_due_in(&self) -> Option<Duration> {
        let at = self.rollout_wake?;
        Some(Duration::from_secs_f64((at - now_f64()).max(0.0)))
    }

    /// Drive the rollouts of target `i` (what it holds): measure, advance, revert, promote.
    pub(super) fn drive_rollouts(&mut self, i: usize, status: &mut super::TargetStatus) -> anyhow::Result<()> {
        let name = self.targets[i].name();
        let Some(commit) = status.applied.clone() else {
            return Ok(());
        };
        // a rollout the circuit breaker holds starts once a platform member's clearing commit
        // is applied (its note, written after the apply, says who)
        let held: Vec<(String, String, Option<String>)> = self
            .store
            .targets
            .get(&name)
            .map(|t| {
                t.active
                    .values()
                    .filter(|s| s.status == Status::Held)
                    .map(|s| (s.plugin.clone(), s.to_version.clone(), s.integrity.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if !held.is_empty() {
            let open = self.breakers();
            if held.iter().any(|(plugin, version, integrity)| {
                !open.contains_key(&(plugin.clone(), version.clone()))
                    && integrity
                        .as_ref()
                        .is_none_or(|i| !open.contains_key(&(plugin.clone(), i.clone())))
            }) && let Some(t) = self.store.targets.get_mut(&name)
            {
                t.commit = None;
            }
        }
        if self.store.targets.get(&name).and_then(|t| t.commit.as_deref()) != Some(commit.as_str()) {
            // a new process, or a state file from before: the states from the notes, and the
            // steps applied again (what the target holds is not known for sure; idempotent)
            let (opts, states) = self.rollout_steps(&name, &commit)?;
            let rendered = if states.is_empty() {
                None
            } else {
                match self.apply_steps(i, &name, &commit, &opts)? {
                    Stepped::Applied(r) => r,
                    Stepped::Moved => return Ok(()),
                    Stepped::Invalid(why) => anyhow::bail!("the rollouts' steps do not compile: {why}"),
                }
            };
            self.rollouts_applied(&name, &commit, &opts, states, rendered, &BTreeMap::new())?;
        }
        let names: Vec<String> = match self.store.targets.get(&name) {
            Some(t) if !t.active.is_empty() => t.active.keys().cloned().collect(),
            _ => {
                status.rollouts = self.rollout_status(&name, &commit);
                return Ok(());
            }
        };
        self.validate(&commit)?;
        // (how many tenants each rollout reaches: one tenant index for them all)
        let reach = reaches(&self.validated[&commit].repo);
        let started = std::time::Instant::now();
        for rname in names {
            if started.elapsed() > ROUND_BUDGET {
                tracing::warn!(
                    "measuring this target's rollouts took more than {ROUND_BUDGET:?}: the rest wait for the next reconcile"
                );
                self.rollout_wake = Some(now_f64());
                break;
            }
            // (a few rounds: a step that passes may advance and be measured again at once)
            for _ in 0..3 {
                if !self.drive_one(i, &name, &commit, &rname, reach.get(&rname).copied().unwrap_or(0))? {
                    break;
                }
            }
        }
        status.rollouts = self.rollout_status(&name, &commit);
        Ok(())
    }

    /// One decision for one rollout; `true` when another may follow at once.
    fn drive_one(&mut self, i: usize, name: &str, commit: &str, rname: &str, reach: usize) -> anyhow::Result<bool> {
        let Some(mut state) = self.store.targets.get(name).and_then(|t| t.active.get(rname)).cloned() else {
            return Ok(false);
        };
        let Some(spec) = self.validated[commit]
            .repo
            .rollouts
            .iter()
            .find(|r| r.name() == rname)
            .map(|r| r.spec.clone())
        else {
            return Ok(false);
        };
        let phases = rollout::phases(&spec, reach);
        let t = now();
        let action = match state.status {
            Status::Reverting => Action::Revert(
                state
                    .checks
                    .iter()
                    .filter(|c| c.verdict == crate::observe::analysis::Verdict::Fail)
                    .cloned()
                    .collect(),
            ),
            Status::Promoting => Action::Promote,
            // a step recorded but not applied (a crash, or a failed apply, between the two):
            // applied now, its hold starting then
            Status::Running if self.held_opts(name).rollout_steps.get(rname).copied().unwrap_or(1) != state.step => {
                Action::Advance(state.step)
            }
            Status::Running => match rollout::due(&state, &spec, &phases, t) {
                // (a breach not yet confirmed is measured again sooner than the interval)
                _ if self
                    .breaching
                    .get(&(name.to_owned(), rname.to_owned()))
                    .is_some_and(|at| now_f64() >= *at) =>
                {
                    self.measure_and_judge(name, rname, &mut state, &spec, &phases, t)?
                }
                Action::Measure => self.measure_and_judge(name, rname, &mut state, &spec, &phases, t)?,
                a => a,
            },
            _ => Action::Wait(None),
        };
        match action {
            Action::Wait(at) => {
                if let Some(at) = at {
                    let at = at as f64;
                    self.rollout_wake = Some(self.rollout_wake.map_or(at, |w| w.min(at)));
                }
                if let Some(&at) = self.breaching.get(&(name.to_owned(), rname.to_owned())) {
                    self.rollout_wake = Some(self.rollout_wake.map_or(at, |w| w.min(at)));
                }
                Ok(false)
            }
            Action::Measure => Ok(true),
            Action::Pause(reason) => {
                tracing::warn!(rollout = rname, step = state.step, reason = %reason, "rollout paused");
                self.record(name, commit, &state, None)?;
                self.notify(
                    "pause",
                    name,
                    &state,
                    format!("paused rollout `{rname}` at step {}: {reason}", state.step),
                );
                Ok(false)
            }
            Action::Advance(to) => {
                let before = state.clone();
                state.step = to;
                state.since = t;
                state.inconclusive = 0;
                state.updated = t;
                state.reason = None;
                // recorded first: a crash after this line applies the same step again, never
                // the next one (and its hold starts once it is applied)
                self.record(name, commit, &state, None)?;
                let mut opts = self.held_opts(name);
                opts.rollout_steps.insert(rname.to_owned(), to);
                let rendered = match self.apply_steps(i, name, commit, &opts)? {
                    Stepped::Applied(r) => r,
                    Stepped::Moved => return Ok(false),
                    Stepped::Invalid(why) => {
                        // the step stays where it is, and tries again at the next interval
                        // (another rollout on the same tenant may finish first)
                        state = before;
                        state.reason = Some(format!("step {to} waits: it does not compile: {why}"));
                        state.updated = t;
                        state.measured = Some(t);
                        tracing::warn!(rollout = rname, step = to, why = %why, "a rollout step does not compile: held");
                        self.record(name, commit, &state, None)?;
                        let at = (t + rollout::interval(&spec) as i64) as f64;
                        self.rollout_wake = Some(self.rollout_wake.map_or(at, |w| w.min(at)));
                        return Ok(false);
                    }
                };
                state.since = now_ceil();
                state.updated = state.since;
                self.shared.metrics.rollout_step(name, rname, to);
                let weight = phases.get(to - 1).map_or(0, |p| p.weight);
                tracing::info!(rollout = rname, step = to, weight, "rollout step applied");
                self.record(name, commit, &state, rendered)?;
                self.notify(
                    "step",
                    name,
                    &state,
                    format!("rollout `{rname}` moved to step {to} of {} ({weight}%)", state.steps),
                );
                Ok(true)
            }
            Action::Revert(failed) => {
                if state.status != Status::Reverting {
                    state.status = Status::Reverting;
                    state.reason = Some(failed.iter().map(rollout::describe).collect::<Vec<_>>().join("; "));
                    state.updated = t;
                    self.record(name, commit, &state, None)?;
                }
                // the canary goes first (no traffic on the failing version while the commit
                // is written; idempotent), then the revert lands in Git
                if self.held_opts(name).rollout_steps.get(rname).copied().unwrap_or(1) != 0 {
                    let mut opts = self.held_opts(name);
                    opts.rollout_steps.insert(rname.to_owned(), 0);
                    match self.apply_steps(i, name, commit, &opts)? {
                        Stepped::Applied(rendered) if rendered.is_some() => {
                            self.record(name, commit, &state, rendered)?;
                        }
                        Stepped::Invalid(why) => {
                            tracing::error!(rollout = rname, why = %why, "removing the failing canary does not compile");
                        }
                        _ => {}
                    }
                }
                self.land_revert(name, commit, &mut state, &failed)?;
                Ok(false)
            }
            Action::Promote => {
                if state.status != Status::Promoting {
                    state.status = Status::Promoting;
                    state.updated = t;
                    self.record(name, commit, &state, None)?;
                }
                self.land_promote(name, commit, &mut state, &spec)?;
                Ok(false)
            }
        }
    }

    /// One round of measurements for `rname`, judged; the state kept when it only waits.
    fn measure_and_judge(
        &mut self,
        name: &str,
        rname: &str,
        state: &mut State,
        spec: &crate::spec::RolloutSpec,
        phases: &[rollout::Phase],
        t: i64,
    ) -> anyhow::Result<Action> {
        // (measured at this very moment, not the whole second before it)
        let checks = self.measure(spec, now_f64());
        for c in &checks {
            self.shared.metrics.slo_check(c.verdict);
        }
        let breaching = checks
            .iter()
            .any(|c| c.verdict == crate::observe::analysis::Verdict::Breaching);
        let a = rollout::judge(state, spec, phases, checks, t);
        let key = (name.to_owned(), rname.to_owned());
        if breaching && matches!(a, Action::Wait(_)) {
            let quarter = (rollout::interval(spec) as f64 / 4.0).max(0.25);
            self.breaching.insert(key, now_f64() + quarter);
        } else {
            self.breaching.remove(&key);
        }
        if let Action::Wait(_) = a {
            // (the measurement is kept, in memory and the file; the note records steps,
            // pauses and ends, not every check)
            let mine = self.store.targets.entry(name.to_owned()).or_default();
            mine.active.insert(rname.to_owned(), state.clone());
            self.store.save(&self.cfg.state_dir)?;
        }
        Ok(a)
    }

    /// Measure every SLO of `spec` now (inconclusive without `--prometheus`), all at once:
    /// a round costs one query timeout, not one per SLO, so a slow Prometheus holds up the
    /// reconcile loop for at most about twice `analysis.timeout` (the range and requests queries).
    fn measure(&self, spec: &crate::spec::RolloutSpec, t: f64) -> Vec<Check> {
        let interval = Duration::from_secs(rollout::interval(spec));
        let timeout = spec
            .analysis
            .timeout
            .as_deref()
            .and_then(rollout::secs)
            .map_or(Duration::from_secs(10), Duration::from_secs)
            // (at most 10 s: any team member writes rollouts, and the reconcile loop waits for
            // a round)
            .min(MAX_QUERY_TIMEOUT);
        let Some(client) = &self.rollout_settings.prometheus else {
            return spec
                .slos
                .iter()
                .map(|slo| crate::observe::analysis::unmeasured(slo, t, "serve runs without --prometheus".to_owned()))
                .collect();
        };
        std::thread::scope(|scope| {
            let running: Vec<_> = spec
                .slos
                .iter()
                .map(|slo| scope.spawn(move || crate::observe::measure(client, slo, t, interval, timeout)))
                .collect();
            running
                .into_iter()
                .zip(&spec.slos)
                .map(|(h, slo)| {
                    h.join().unwrap_or_else(|_| {
                        crate::observe::analysis::unmeasured(slo, t, "the measurement failed".to_owned())
                    })
                })
                .collect()
        })
    }

    /// Apply `commit` again with other rollout steps (what the target holds is then
    /// recorded as `applied_steps`).
    fn apply_steps(
        &mut self,
        i: usize,
        name: &str,
        commit: &str,
        opts: &crate::compile::Options,
    ) -> anyhow::Result<Stepped> {
        let held = self.targets[i].applied()?;
        if held.commit.as_deref() != Some(commit) {
            return Ok(Stepped::Moved);
        }
        let record = Record {
            source: commit.to_owned(),
            from: Some(commit.to_owned()),
            decision: "rollout-step".to_owned(),
            author: None,
            approvers: Vec::new(),
            pull_request: None,
            commits: vec![commit.to_owned()],
            time: crate::target::now_rfc3339(),
        };
        let rev = Revision {
            head: &self.validated[commit],
            base: None,
            affected: None,
            opts,
        };
        match self.targets[i].apply(&held, &rev, &record)? {
            Apply::Done(o) => {
                let mine = self.store.targets.entry(name.to_owned()).or_default();
                mine.applied_steps = opts.rollout_steps.clone();
                self.store.save(&self.cfg.state_dir)?;
                if let Some(tree) = &o.rendered {
                    self.believed.insert((name.to_owned(), commit.to_owned(), tree.clone()));
                }
                Ok(Stepped::Applied(o.rendered))
            }
            Apply::Moved { .. } => Ok(Stepped::Moved),
            Apply::Invalid(diags) => Ok(Stepped::Invalid(super::reconcile::problems(&diags).join("; "))),
        }
    }

    fn land_revert(&mut self, name: &str, commit: &str, state: &mut State, failed: &[Check]) -> anyhow::Result<()> {
        let mut trailers = vec![
            ("Rampart-Revert-Of".to_owned(), state.introduced_by.clone()),
            ("Rampart-Rollout".to_owned(), state.rollout.clone()),
            (
                "Rampart-Plugin".to_owned(),
                format!(
                    "{} {}{}",
                    state.plugin,
                    state.to_version,
                    state.integrity.as_deref().map(|i| format!(" {i}")).unwrap_or_default()
                ),
            ),
            ("Rampart-Target".to_owned(), name.to_owned()),
        ];
        for c in failed {
            trailers.push(("Rampart-SLO".to_owned(), c.slo.clone()));
            trailers.push(("Rampart-Evidence".to_owned(), evidence(c)));
        }
        let repeated = self.last_landed(&state.plugin).as_deref() == Some("revert");
        let subject = format!(
            "Revert rollout {} ({} {}): SLO {} violated",
            state.rollout,
            state.plugin,
            state.to_version,
            failed.first().map_or("?", |c| c.slo.as_str())
        );
        let body = format!(
            "rampart reverts {}, which introduced rollout `{}`, because {} at step {} of {} on {name}.{}",
            state.introduced_by,
            state.rollout,
            failed.iter().map(rollout::describe).collect::<Vec<_>>().join("; "),
            state.step,
            state.steps,
            if repeated {
                format!(
                    "\n\nThis is the second revert in a row of plugin `{}`: its circuit breaker stays open until the \
                     version or artifact changes or a `platform` member clears it.",
                    state.plugin
                )
            } else {
                String::new()
            }
        );
        let landed = self.land(
            &subject,
            &body,
            &trailers,
            ("Rampart-Revert-Of", &state.introduced_by),
            &crate::rollback::Change::Revert {
                of: &state.introduced_by,
            },
        )?;
        state.status = Status::Reverted;
        state.updated = now();
        state.landed = Some(landed.clone());
        self.record(name, commit, state, None)?;
        self.shared.metrics.reverts.inc();
        self.shared.metrics.rollout_step(name, &state.rollout, 0);
        if repeated {
            tracing::error!(rollout = %state.rollout, plugin = %state.plugin, "SECOND REVERT IN A ROW of this plugin");
        }
        tracing::warn!(rollout = %state.rollout, landed = %landed, "rollout reverted");
        let mut message = format!(
            "reverted rollout `{}` ({} → {}) on {name}: {} — {landed}",
            state.rollout,
            state.plugin,
            state.to_version,
            failed.iter().map(rollout::describe).collect::<Vec<_>>().join("; ")
        );
        if repeated {
            message = format!("SECOND REVERT IN A ROW of plugin `{}`: {message}", state.plugin);
        }
        self.notify("revert", name, state, message);
        self.shared.trigger();
        Ok(())
    }

    fn land_promote(
        &mut self,
        name: &str,
        commit: &str,
        state: &mut State,
        spec: &crate::spec::RolloutSpec,
    ) -> anyhow::Result<()> {
        if spec.artifact.is_none() {
            state.status = Status::Paused;
            state.reason = Some("the last step passed, but the rollout names no artifact to promote".to_owned());
            self.record(name, commit, state, None)?;
            return Ok(());
        }
        if state.author.is_none() {
            // (a state resumed from the notes, which anyone who can push may write, carries
            // no identity: the promotion would be judged as nobody's)
            state.status = Status::Paused;
            state.reason = Some(
                "the last step passed, but this process does not know who made the rollout (its state came from \
                 the notes, not its own state directory): promote it by hand — set the Plugin to the new \
                 version and artifact and remove the Rollout — with the approvals it needs"
                    .to_owned(),
            );
            self.record(name, commit, state, None)?;
            self.notify("pause", name, state, state.reason.clone().unwrap_or_default());
            return Ok(());
        }
        let edit = self.promote_edit(commit, &state.rollout)?;
        // judged before it is written: a promotion the policies would deny would stop the
        // target at rampart's own commit
        if let Some(denied) = self.promotion_denied(commit, state, &edit)? {
            state.status = Status::Paused;
            state.reason = Some(format!(
                "the last step passed, but the promotion would be denied: {denied} — promote by hand (set the \
                 Plugin to the new version and artifact, remove the Rollout) with the approvals named, or remove \
                 the rollout"
            ));
            state.updated = now();
            tracing::warn!(rollout = %state.rollout, reason = %denied, "promotion would be denied: paused");
            self.record(name, commit, state, None)?;
            self.notify("pause", name, state, state.reason.clone().unwrap_or_default());
            return Ok(());
        }
        // (one commit may bring several rollouts: the key names the rollout too)
        let key = format!("{} {}", state.introduced_by, state.rollout);
        let trailers = vec![
            ("Rampart-Promote-Of".to_owned(), key.clone()),
            ("Rampart-Rollout".to_owned(), state.rollout.clone()),
            (
                "Rampart-Plugin".to_owned(),
                format!("{} {}", state.plugin, state.to_version),
            ),
            ("Rampart-Target".to_owned(), name.to_owned()),
        ];
        let subject = format!(
            "Promote {} {} (rollout {} passed)",
            state.plugin, state.to_version, state.rollout
        );
        let body = format!(
            "Every step of rollout `{}` passed its SLOs on {name}: the Plugin now declares {} and the Rollout is removed, \
             so Git again declares what runs.",
            state.rollout, state.to_version
        );
        let landed = self.land(
            &subject,
            &body,
            &trailers,
            ("Rampart-Promote-Of", &key),
            &crate::rollback::Change::Promote {
                edit: &edit,
                of: &state.introduced_by,
            },
        )?;
        state.status = Status::Promoted;
        state.updated = now();
        state.landed = Some(landed.clone());
        self.record(name, commit, state, None)?;
        self.shared.metrics.promotions.inc();
        self.shared.metrics.rollout_step(name, &state.rollout, 0);
        tracing::info!(rollout = %state.rollout, landed = %landed, "rollout promoted");
        self.notify(
            "promote",
            name,
            state,
            format!(
                "promoted {} {} (rollout `{}` passed every step) on {name} — {landed}",
                state.plugin, state.to_version, state.rollout
            ),
        );
        self.shared.trigger();
        Ok(())
    }

    /// Whether the promotion `edit` of `commit` would be denied, judged as the policies will
    /// judge it once it is on the branch (the rollout's author and approvers, the rules of
    /// `commit`): the denials, in one line.
    fn promotion_denied(
        &mut self,
        commit: &str,
        state: &State,
        edit: &crate::rollback::edit::Promote,
    ) -> anyhow::Result<Option<String>> {
        let change = crate::rollback::Change::Promote {
            edit,
            of: &state.introduced_by,
        };
        let Some(tree) = crate::rollback::tree_of(&self.mirror, &change, commit)? else {
            return Ok(Some("the promotion does not apply to the commit".to_owned()));
        };
        // a commit object no ref names (git's gc takes it): the promoted revision to judge
        let promoted = {
            let repo = git2::Repository::open_bare(&self.mirror)?;
            let sig = git2::Signature::now(&self.rollout_settings.author.name, &self.rollout_settings.author.email)?;
            let parent = repo.find_commit(git2::Oid::from_str(commit)?)?;
            let tree = repo.find_tree(git2::Oid::from_str(&tree)?)?;
            repo.commit(
                None,
                &sig,
                &sig,
                "rampart: promotion, judged before it is written",
                &tree,
                &[&parent],
            )?
            .to_string()
        };
        self.validate(commit)?;
        self.validate(&promoted)?;
        let (base_src, head_src) = (self.source(commit)?, self.source(&promoted)?);
        let who = crate::pipeline::Principals::logins(state.author.as_deref(), &state.approvers);
        let (base_v, head_v) = (&self.validated[commit], &self.validated[&promoted]);
        if !head_v.is_valid() {
            let problems = super::reconcile::problems(&head_v.diagnostics);
            self.validated.remove(&promoted);
            return Ok(Some(format!(
                "the promoted revision is invalid: {}",
                problems.join("; ")
            )));
        }
        let a = crate::pipeline::authorize(&base_src, &head_src, base_v, head_v, &who, None)?;
        let denied: Vec<String> = a
            .changes
            .iter()
            .zip(&a.decisions)
            .filter(|(_, d)| !d.allowed)
            .map(|(c, d)| super::reconcile::denial(c, d))
            .collect();
        self.validated.remove(&promoted);
        Ok((!denied.is_empty()).then(|| denied.join("; ")))
    }

    /// The promote edit of rollout `rollout` in `commit`: its Plugin set to the new version
    /// and artifact, the Rollout removed.
    fn promote_edit(&mut self, commit: &str, rollout: &str) -> anyhow::Result<crate::rollback::edit::Promote> {
        self.validate(commit)?;
        let repo = &self.validated[commit].repo;
        let Some(r) = repo.rollouts.iter().find(|r| r.name() == rollout) else {
            anyhow::bail!("promoting rollout `{rollout}`: it is not in {}", decide::short(commit));
        };
        let Some(plugin) = repo.plugins.iter().find(|p| p.name() == r.spec.plugin) else {
            anyhow::bail!("promoting rollout `{rollout}`: plugin `{}` is gone", r.spec.plugin);
        };
        let Some(artifact) = r.spec.artifact.as_ref() else {
            anyhow::bail!("promoting rollout `{rollout}`: it names no artifact");
        };
        let prefix = |f: &str| {
            if self.cfg.path.is_empty() {
                f.to_owned()
            } else {
                format!("{}/{f}", self.cfg.path.trim_end_matches('/'))
            }
        };
        Ok(crate::rollback::edit::Promote {
            plugin_file: prefix(&plugin.origin.file),
            plugin_doc: plugin.origin.doc,
            version: r.spec.to_version.clone(),
            package: artifact.package.clone(),
            integrity: artifact.integrity.clone(),
            signature: r.spec.signature.clone(),
            rollout_file: prefix(&r.origin.file),
            rollout_doc: r.origin.doc,
        })
    }

    /// Write a revert or promote commit on the branch (or a pull request); what landed.
    fn land(
        &mut self,
        subject: &str,
        body: &str,
        trailers: &[(String, String)],
        key: (&str, &str),
        change: &crate::rollback::Change<'_>,
    ) -> anyhow::Result<String> {
        let landing = crate::rollback::Landing {
            mirror: &self.mirror,
            remote: &self.remote,
            branch: &self.cfg.branch,
            author: &self.rollout_settings.author,
            subject,
            body,
            trailers,
            key,
            github: self
                .rollout_settings
                .pulls
                .as_deref()
                .map(|p| p as &dyn crate::rollback::PullRequests),
        };
        Ok(match crate::rollback::land(&landing, change)? {
            crate::rollback::Landed::Pushed { commit, .. } | crate::rollback::Landed::AlreadyThere { commit } => commit,
            crate::rollback::Landed::PullRequest { url, why, .. } => {
                tracing::warn!(pull_request = %url, why = %why, "opened a pull request instead of pushing");
                format!("{url} ({why})")
            }
        })
    }

    fn notify(&self, kind: &str, target: &str, state: &State, message: String) {
        if let Some(n) = &self.rollout_settings.notifier {
            n.send(crate::notify::Event {
                kind: kind.to_owned(),
                rollout: state.rollout.clone(),
                plugin: state.plugin.clone(),
                target: target.to_owned(),
                commit: Some(state.introduced_by.clone()),
                message: message.clone(),
                checks: state.checks.iter().rev().take(8).rev().cloned().collect(),
                time: crate::target::now_rfc3339(),
            });
        }
        if kind != "step"
            && let Some(p) = &self.rollout_settings.pulls
            && let Some(pr) = self.pull_of(&state.introduced_by)
            && let Err(e) = p.comment(
                pr,
                &format!("**rampart**: {}", crate::report::markdown_escape(&message)),
            )
        {
            tracing::warn!(error = %format!("{e:#}"), pull_request = pr, "commenting on the pull request failed");
        }
    }

    /// The pull request that brought `commit` in (from the notes rampart wrote when it
    /// applied it).
    fn pull_of(&self, commit: &str) -> Option<u64> {
        let repo = git2::Repository::open_bare(&self.mirror).ok()?;
        notes::read(&repo, git2::Oid::from_str(commit).ok()?)
            .applies
            .iter()
            .find_map(|e| e.pull_request)
    }

    fn rollout_status(&self, name: &str, commit: &str) -> Vec<RolloutStatus> {
        let Some(mine) = self.store.targets.get(name) else {
            return Vec::new();
        };
        let v = self.validated.get(commit);
        let reach = v.map(|v| reaches(&v.repo)).unwrap_or_default();
        let t = now();
        mine.active
            .values()
            .chain(mine.finished.iter().rev().take(5))
            .map(|s| {
                let r = v.and_then(|v| v.repo.rollouts.iter().find(|r| r.name() == s.rollout).map(|r| (v, r)));
                let (weight, tenants, hold) = r
                    .map(|(_, r)| {
                        let reach = reach.get(r.name()).copied().unwrap_or(0);
                        let phases = rollout::phases(&r.spec, reach);
                        let p = phases.get(s.step.wrapping_sub(1));
                        (
                            p.map_or(0, |p| p.weight),
                            p.and_then(|p| p.first).unwrap_or(reach),
                            p.map(|p| p.hold),
                        )
                    })
                    .unwrap_or((0, 0, None));
                RolloutStatus {
                    state: s.clone(),
                    weight: if s.status.deployed() { weight } else { 0 },
                    tenants,
                    hold_left: hold
                        .filter(|_| s.status == Status::Running)
                        .map(|h| (s.since + h as i64 - t).max(0)),
                }
            })
            .collect()
    }

    /// Whether `step.to` is rampart's own revert or promotion, verified: its author is
    /// rampart's, its parent is what the target holds, its trailers name a rollout in flight
    /// whose revert or promotion this process's own records (its state directory — never the
    /// notes, which anyone who can push may write) say it landed as this very commit, and its
    /// tree is exactly the tree rampart builds for that revert or promotion on its parent. Who it is judged as: a revert as
    /// `rampart[revert]`; a promotion as the rollout's own author and approvers (recorded
    /// when this process applied the rollout: the promotion completes their change).
    pub(super) fn own_commit(
        &mut self,
        step: &super::decide::Step,
    ) -> anyhow::Result<Option<crate::pipeline::Principals>> {
        let repo = git2::Repository::open_bare(&self.mirror)?;
        let c = repo.find_commit(git2::Oid::from_str(&step.to)?)?;
        if c.author().email().ok() != Some(self.rollout_settings.author.email.as_str())
            || c.parent_count() != 1
            || c.parent_id(0).map(|p| p.to_string()).ok().as_deref() != Some(step.from.as_str())
        {
            return Ok(None);
        }
        let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
        let t = trailers(&message);
        let find = |k: &str| {
            t.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.trim().to_owned())
        };
        let Some(rollout) = find("Rampart-Rollout") else {
            return Ok(None);
        };
        let (revert, of) = if let Some(of) = find("Rampart-Revert-Of") {
            (true, of)
        } else if let Some(v) = find("Rampart-Promote-Of") {
            match v.split_once(' ') {
                Some((of, r)) if r.trim() == rollout => (false, of.to_owned()),
                _ => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let statuses = if revert {
            [Status::Reverting, Status::Reverted]
        } else {
            [Status::Promoting, Status::Promoted]
        };
        // (a rollout in flight on some target, whose revert or promotion this process wrote
        // as this very commit — or found, verified, on the branch: never an old one replayed)
        let Some(state) = self
            .store
            .targets
            .values()
            .flat_map(|t| t.active.values())
            .find(|s| {
                s.introduced_by == of
                    && s.rollout == rollout
                    && statuses.contains(&s.status)
                    && s.landed.as_deref() == Some(step.to.as_str())
            })
            .cloned()
        else {
            tracing::warn!(
                commit = %decide::short(&step.to),
                "a commit says it is rampart's, but this process's records show no such rollout failing or passing: \
                 judged as any commit"
            );
            return Ok(None);
        };
        // the content: exactly what rampart builds for that change on this parent
        let expected = if revert {
            crate::rollback::tree_of(&self.mirror, &crate::rollback::Change::Revert { of: &of }, &step.from)?
        } else {
            let edit = match self.promote_edit(&step.from, &rollout) {
                Ok(e) => e,
                Err(_) => return Ok(None),
            };
            crate::rollback::tree_of(
                &self.mirror,
                &crate::rollback::Change::Promote { edit: &edit, of: &of },
                &step.from,
            )?
        };
        if expected != Some(c.tree_id().to_string()) {
            tracing::warn!(
                commit = %decide::short(&step.to),
                "a commit of rampart's holds other content than its revert or promotion: judged as any commit"
            );
            return Ok(None);
        }
        if revert {
            return Ok(Some(crate::pipeline::Principals {
                system: Some(crate::policy::tests::REVERT_PRINCIPAL),
                ..crate::pipeline::Principals::default()
            }));
        }
        let Some(author) = state.author.as_deref() else {
            return Ok(None);
        };
        Ok(Some(crate::pipeline::Principals::logins(
            Some(author),
            &state.approvers,
        )))
    }
}

use super::decide;

/// How many tenants each rollout of `repo` reaches (one tenant index for them all).
fn reaches(repo: &crate::spec::Repo) -> BTreeMap<String, usize> {
    let index = crate::policy::model::TenantIndex::of(repo, &|_| true);
    repo.rollouts
        .iter()
        .map(|r| {
            (
                r.name().to_owned(),
                crate::compile::rollout::eligible(repo, &index, r).len(),
            )
        })
        .collect()
}

/// A commit message's trailers (`Name: value`).
fn trailers(message: &str) -> Vec<(String, String)> {
    git2::message_trailers_strs(message)
        .map(|t| t.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
        .unwrap_or_default()
}

/// A check as a `Rampart-Evidence:` value (one line).
fn evidence(c: &Check) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|ch| if ch.is_control() { ' ' } else { ch })
            .collect::<String>()
    };
    format!(
        "slo={} value={} bound=\"{}\" window={} time={} query=\"{}\"",
        c.slo,
        c.value.map_or_else(|| "none".to_owned(), crate::observe::analysis::num),
        clean(&c.bound),
        clean(&c.window),
        c.time,
        clean(&c.query).replace('"', "\\\"")
    )
}
