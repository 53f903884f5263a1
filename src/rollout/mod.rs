//! Rollouts (pure): the phases a strategy walks, and the step machine `serve` drives. No IO,
//! no clock: the time is an argument, the measurements come in as [`Check`]s, and the answer
//! is an [`Action`] the service then carries out (apply the next step through the target,
//! write a revert or promote commit, pause and notify).
//!
//! A rollout is known by its name and the commit that gave its document its content (the
//! commit a revert reverts); its progress is a [`State`], kept by `serve` in its state
//! directory and in the notes on the applied commit, so a new process resumes the same step.
//! A step advances only when its hold has passed since the step was applied (`since`,
//! recorded before the apply) and the latest check of every SLO passed after that: a restart
//! at any line neither advances twice nor skips a step.

use crate::observe::analysis::{Check, Verdict};
use crate::spec::RolloutSpec;
use serde::{Deserialize, Serialize};

/// Checks kept in a state (the latest ones, for the status API, the notes and evidence).
pub const HISTORY: usize = 20;
/// Inconclusive checks in a row before a rollout pauses, when the rollout does not say.
pub const DEFAULT_INCONCLUSIVE_LIMIT: u32 = 3;
/// The analysis interval when the rollout does not say.
pub const DEFAULT_INTERVAL_SECS: u64 = 60;

/// One phase of a strategy: the canary's share of traffic in the tenants it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Percent of each reached tenant's traffic on the new version (0: it runs beside the
    /// old one with no traffic — blue-green's preview).
    pub weight: u32,
    /// `Some(n)`: only the first `n` target tenants (rolling); `None`: every target tenant.
    pub first: Option<usize>,
    /// How long the phase holds, in seconds, while its SLOs are analysed.
    pub hold: u64,
}

/// How long a step with no `pause` holds: the longest SLO window (each step is analysed
/// for at least one whole window), or nothing when there are no SLOs.
fn default_hold(spec: &RolloutSpec) -> u64 {
    spec.slos.iter().filter_map(|s| secs(&s.for_)).max().unwrap_or(0)
}

/// A duration as written in a spec, in whole seconds (rounded up).
pub fn secs(d: &str) -> Option<u64> {
    crate::units::Duration::parse(d).ok().map(|d| d.millis.div_ceil(1000))
}

/// The analysis interval of a rollout, in seconds (at least 1).
pub fn interval(spec: &RolloutSpec) -> u64 {
    spec.analysis
        .interval
        .as_deref()
        .and_then(secs)
        .unwrap_or(DEFAULT_INTERVAL_SECS)
        .max(1)
}

/// The phases a rollout walks, given how many tenants it reaches:
/// - `canary`: its steps, each at its weight in every target tenant;
/// - `blueGreen`: the new version beside the old with no traffic (analysed through its own
///   Service), held for the first step's pause, then 100 % at once, held for the last's;
/// - `rolling`: tenant by tenant in the rollout's tenant order (names first, then the
///   selector's matches by name), each at 100 %, each held for the first step's pause;
/// - `instant`: 100 % at once, held for the first step's pause and reverted on failure.
pub fn phases(spec: &RolloutSpec, tenants: usize) -> Vec<Phase> {
    let hold = |i: usize| {
        spec.steps
            .get(i)
            .and_then(|s| s.pause.as_deref())
            .and_then(secs)
            .unwrap_or_else(|| default_hold(spec))
    };
    let last = spec.steps.len().saturating_sub(1);
    match spec.strategy.as_str() {
        "blueGreen" => vec![
            Phase {
                weight: 0,
                first: None,
                hold: hold(0),
            },
            Phase {
                weight: 100,
                first: None,
                hold: hold(last),
            },
        ],
        "rolling" => (1..=tenants.max(1))
            .map(|n| Phase {
                weight: 100,
                first: Some(n),
                hold: hold(0),
            })
            .collect(),
        "instant" => vec![Phase {
            weight: 100,
            first: None,
            hold: hold(0),
        }],
        _ => spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| Phase {
                weight: s.weight.min(100) as u32,
                first: None,
                hold: hold(i),
            })
            .collect(),
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Walking its steps.
    Running,
    /// Stopped on a step (too many inconclusive checks, or a violation with `onViolation:
    /// pause`): the canary stays as it is until the rollout changes in Git.
    Paused,
    /// Not started: its plugin's circuit breaker is open (a revert of the same version).
    Held,
    /// An SLO failed: the canary is gone, the revert commit is being written.
    Reverting,
    /// The revert commit landed (or a revert pull request was opened).
    Reverted,
    /// The last step passed: the promote commit is being written.
    Promoting,
    /// The promote commit landed (or a promote pull request was opened).
    Promoted,
    /// Ended without a verdict: the rollout was edited (a new one started) or removed.
    Superseded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Held => "held",
            Status::Reverting => "reverting",
            Status::Reverted => "reverted",
            Status::Promoting => "promoting",
            Status::Promoted => "promoted",
            Status::Superseded => "superseded",
        }
    }

    /// The rollout's canary is compiled (its step is applied) in this status. A failing
    /// rollout's canary goes at once, before its revert commit is written: the revert in
    /// Git then removes what the target no longer runs.
    pub fn deployed(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Promoting)
    }
}

/// One rollout's progress on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub rollout: String,
    /// The commit that gave the rollout its current content (what a revert reverts).
    pub introduced_by: String,
    pub plugin: String,
    pub to_version: String,
    pub strategy: String,
    /// The current phase, from 1.
    pub step: usize,
    /// How many phases there are.
    pub steps: usize,
    /// When the current step was applied (unix seconds).
    pub since: i64,
    pub status: Status,
    /// Why it paused, reverted or is held (one line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Inconclusive measurements in a row.
    #[serde(default)]
    pub inconclusive: u32,
    /// When the SLOs were last measured (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<i64>,
    /// The latest checks, oldest first (at most [`HISTORY`]).
    #[serde(default)]
    pub checks: Vec<Check>,
    /// The revert or promote commit (or pull request URL) that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landed: Option<String>,
    /// When this state last changed (unix seconds).
    pub updated: i64,
    /// The new version's artifact integrity (the circuit breaker knows a version by it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<String>,
    /// Who made and approved the rollout's commit, as this process judged it when it applied
    /// it (a promotion is judged as them). Never taken from the notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
}

impl State {
    /// A rollout seen for the first time: step 1, from now.
    pub fn start(name: &str, introduced_by: &str, spec: &RolloutSpec, steps: usize, now: i64) -> State {
        State {
            rollout: name.to_owned(),
            introduced_by: introduced_by.to_owned(),
            plugin: spec.plugin.clone(),
            to_version: spec.to_version.clone(),
            strategy: spec.strategy.clone(),
            step: 1,
            steps,
            since: now,
            status: Status::Running,
            reason: None,
            inconclusive: 0,
            measured: None,
            checks: Vec::new(),
            landed: None,
            updated: now,
            integrity: spec.artifact.as_ref().map(|a| a.integrity.clone()),
            author: None,
            approvers: Vec::new(),
        }
    }

    /// A state read from the notes, which anyone who can push to the remote may write: no
    /// identity, nothing landed, the step's hold from now, and a rollout on its way to
    /// promotion analyses its last step again.
    pub fn from_notes(mut self, now: i64) -> State {
        self.author = None;
        self.approvers = Vec::new();
        // (nor what it landed, and the step's hold starts again: a forged note may claim any
        // step, but not that its window passed)
        self.landed = None;
        self.since = self.since.max(now);
        self.measured = None;
        if matches!(self.status, Status::Promoting | Status::Promoted) {
            self.status = Status::Running;
            self.step = self.steps.max(1);
            self.measured = None;
        }
        self
    }

    /// The step whose weights are compiled for this rollout (0: no canary).
    pub fn compiled_step(&self) -> usize {
        if self.status.deployed() { self.step } else { 0 }
    }

    /// How far it is along (for ordering two records of one rollout: the later wins).
    pub fn progress(&self) -> (usize, i64) {
        (self.step, self.updated)
    }

    /// The latest check of each SLO, in the order of `slos`.
    pub fn latest<'a>(&'a self, slos: &[crate::spec::Slo]) -> Vec<Option<&'a Check>> {
        slos.iter()
            .map(|s| self.checks.iter().rev().find(|c| c.slo == s.name))
            .collect()
    }
}

/// What to do next with one rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing now; look again at this time (unix seconds), if any.
    Wait(Option<i64>),
    /// Measure every SLO now, then call [`judge`].
    Measure,
    /// Apply this step (from 1) through the target; the state already says so.
    Advance(usize),
    /// The last step passed: write the promote commit.
    Promote,
    /// An SLO failed with `onViolation: revert`: write the revert commit, with these checks
    /// as its evidence.
    Revert(Vec<Check>),
    /// Stop where it is and tell people why.
    Pause(String),
}

/// What is due for a running rollout at `now`, before measuring: a measurement when the
/// interval passed since the last one (or none was taken in this step).
pub fn due(state: &State, spec: &RolloutSpec, phases: &[Phase], now: i64) -> Action {
    if state.status != Status::Running {
        return Action::Wait(None);
    }
    if spec.slos.is_empty() {
        // nothing to analyse: the step holds for its time and moves on
        let end = state.since + hold_of(phases, state.step) as i64;
        return if now >= end {
            advance(state)
        } else {
            Action::Wait(Some(end))
        };
    }
    let next = match state.measured {
        Some(m) if m >= state.since => m + interval(spec) as i64,
        _ => state.since,
    };
    if now >= next {
        Action::Measure
    } else {
        Action::Wait(Some(next))
    }
}

fn hold_of(phases: &[Phase], step: usize) -> u64 {
    phases.get(step.wrapping_sub(1)).map_or(0, |p| p.hold)
}

fn advance(state: &State) -> Action {
    if state.step < state.steps {
        Action::Advance(state.step + 1)
    } else {
        Action::Promote
    }
}

/// Take one round of measurements (one check per SLO, taken at `now`) into `state` and
/// decide: a failed SLO reverts (or pauses, with `onViolation: pause`); inconclusive checks
/// hold, and past the limit pause; a breach not yet confirmed holds; the step moves on only
/// when its hold has passed and every SLO passed. The state is updated for every answer but
/// `Advance`, `Promote` and `Revert`, which the caller records when it carries them out.
pub fn judge(state: &mut State, spec: &RolloutSpec, phases: &[Phase], checks: Vec<Check>, now: i64) -> Action {
    state.measured = Some(now);
    state.updated = now;
    // a violation counts only within the step: a window that starts before the step was
    // applied measured something else (the step before, or another rollout's traffic)
    let mut checks = checks;
    for c in &mut checks {
        if c.verdict == Verdict::Fail && secs(&c.window).is_none_or(|w| c.time - (w as i64) < state.since) {
            c.verdict = Verdict::Breaching;
            c.reason = format!("{} (the window starts before this step: not counted yet)", c.reason);
        }
    }
    let failed: Vec<Check> = checks.iter().filter(|c| c.verdict == Verdict::Fail).cloned().collect();
    let inconclusive = checks.iter().filter(|c| c.verdict == Verdict::Inconclusive).count();
    let breaching = checks.iter().any(|c| c.verdict == Verdict::Breaching);
    state.checks.extend(checks);
    let excess = state.checks.len().saturating_sub(HISTORY);
    state.checks.drain(..excess);
    if !failed.is_empty() {
        state.inconclusive = 0;
        let why = failed.iter().map(describe).collect::<Vec<_>>().join("; ");
        if spec.on_violation == "pause" {
            state.status = Status::Paused;
            state.reason = Some(format!(
                "SLO violated (onViolation: pause): {why} — it stays at this step with its canary; change the \
                 rollout in Git to restart it at step 1, or remove it"
            ));
            return Action::Pause(state.reason.clone().unwrap_or_default());
        }
        return Action::Revert(failed);
    }
    if inconclusive > 0 {
        state.inconclusive += 1;
        let limit = spec
            .analysis
            .inconclusive_limit
            .map_or(DEFAULT_INCONCLUSIVE_LIMIT, |l| l.min(u32::MAX as u64) as u32);
        if state.inconclusive >= limit {
            let why = state
                .checks
                .iter()
                .rev()
                .take(inconclusive)
                .filter(|c| c.verdict == Verdict::Inconclusive)
                .map(|c| c.reason.clone())
                .collect::<Vec<_>>()
                .join("; ");
            state.status = Status::Paused;
            state.reason = Some(format!(
                "{} inconclusive measurements in a row (limit {limit}): {why} — it stays at this step with its \
                 canary; to go on, fix what the measurements need and change the rollout in Git (any edit of \
                 it restarts it at step 1), or remove it",
                state.inconclusive
            ));
            return Action::Pause(state.reason.clone().unwrap_or_default());
        }
        return Action::Wait(Some(now + interval(spec) as i64));
    }
    state.inconclusive = 0;
    if breaching {
        return Action::Wait(Some(now + interval(spec) as i64));
    }
    let end = state.since + hold_of(phases, state.step) as i64;
    if now >= end {
        advance(state)
    } else {
        Action::Wait(Some(end.min(now + interval(spec) as i64)))
    }
}

/// One check as evidence: `error-rate 0.12 > 0.05 for 30s (sum(rate(…)))`.
pub fn describe(c: &Check) -> String {
    let value = c
        .value
        .map_or_else(|| "no value".to_owned(), crate::observe::analysis::num);
    let breach = c.bound.replace("<=", ">").replace(">=", "<");
    format!("{} {value} {breach} for {}", c.slo, c.window)
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::spec::{Analysis, Slo, Step};

    fn spec(strategy: &str, slos: usize) -> RolloutSpec {
        RolloutSpec {
            plugin: "p".into(),
            to_version: "2.0.0".into(),
            tenants: Default::default(),
            strategy: strategy.into(),
            steps: vec![
                Step {
                    weight: 10,
                    pause: Some("10s".into()),
                },
                Step {
                    weight: 100,
                    pause: Some("20s".into()),
                },
            ],
            slos: (0..slos)
                .map(|i| Slo {
                    name: format!("s{i}"),
                    query: "q".into(),
                    max: Some(0.05),
                    min: None,
                    for_: "5s".into(),
                    min_requests: None,
                    requests: None,
                })
                .collect(),
            analysis: Analysis {
                interval: Some("2s".into()),
                inconclusive_limit: Some(2),
                ..Analysis::default()
            },
            on_violation: "revert".into(),
            ..serde_json::from_value(
                serde_json::json!({"plugin": "p", "toVersion": "2.0.0", "tenants": {"names": ["a"]}}),
            )
            .unwrap()
        }
    }

    fn check(slo: &str, verdict: Verdict, time: i64) -> Check {
        Check {
            slo: slo.into(),
            verdict,
            value: Some(0.01),
            requests: None,
            bound: "<= 0.05".into(),
            window: "5s".into(),
            query: "q".into(),
            time,
            reason: String::new(),
        }
    }

    #[test]
    fn strategies_walk_their_phases() {
        let w = |s: &str, n| {
            phases(&spec(s, 1), n)
                .iter()
                .map(|p| (p.weight, p.first, p.hold))
                .collect::<Vec<_>>()
        };
        assert_eq!(w("canary", 3), [(10, None, 10), (100, None, 20)]);
        assert_eq!(w("blueGreen", 3), [(0, None, 10), (100, None, 20)]);
        assert_eq!(
            w("rolling", 3),
            [(100, Some(1), 10), (100, Some(2), 10), (100, Some(3), 10)]
        );
        assert_eq!(w("instant", 3), [(100, None, 10)]);
        // a step without a pause holds for the longest SLO window
        let mut s = spec("canary", 1);
        s.steps[0].pause = None;
        assert_eq!(phases(&s, 1)[0].hold, 5);
    }

    #[test]
    fn a_step_advances_only_after_its_hold_with_every_slo_passing() {
        let s = spec("canary", 2);
        let ph = phases(&s, 1);
        let mut st = State::start("r", "c", &s, ph.len(), 100);
        assert_eq!(due(&st, &s, &ph, 100), Action::Measure);
        let a = judge(
            &mut st,
            &s,
            &ph,
            vec![check("s0", Verdict::Pass, 100), check("s1", Verdict::Pass, 100)],
            100,
        );
        assert_eq!(a, Action::Wait(Some(102)));
        assert_eq!(due(&st, &s, &ph, 101), Action::Wait(Some(102)));
        // one breaching SLO holds the step even after its hold
        let a = judge(
            &mut st,
            &s,
            &ph,
            vec![check("s0", Verdict::Pass, 110), check("s1", Verdict::Breaching, 110)],
            110,
        );
        assert_eq!(a, Action::Wait(Some(112)));
        let a = judge(
            &mut st,
            &s,
            &ph,
            vec![check("s0", Verdict::Pass, 112), check("s1", Verdict::Pass, 112)],
            112,
        );
        assert_eq!(a, Action::Advance(2));
        st.step = 2;
        st.since = 112;
        let a = judge(
            &mut st,
            &s,
            &ph,
            vec![check("s0", Verdict::Pass, 132), check("s1", Verdict::Pass, 132)],
            132,
        );
        assert_eq!(a, Action::Promote);
    }

    #[test]
    fn inconclusive_never_reverts_and_pauses_past_the_limit() {
        let s = spec("canary", 1);
        let ph = phases(&s, 1);
        let mut st = State::start("r", "c", &s, ph.len(), 0);
        assert_eq!(
            judge(&mut st, &s, &ph, vec![check("s0", Verdict::Inconclusive, 0)], 0),
            Action::Wait(Some(2))
        );
        // a pass in between resets the count
        judge(&mut st, &s, &ph, vec![check("s0", Verdict::Pass, 2)], 2);
        assert_eq!(st.inconclusive, 0);
        judge(&mut st, &s, &ph, vec![check("s0", Verdict::Inconclusive, 4)], 4);
        let a = judge(&mut st, &s, &ph, vec![check("s0", Verdict::Inconclusive, 6)], 6);
        assert!(matches!(a, Action::Pause(_)), "{a:?}");
        assert_eq!(st.status, Status::Paused);
        assert_eq!(due(&st, &s, &ph, 100), Action::Wait(None));
    }

    #[test]
    fn a_failed_slo_reverts_or_pauses_as_the_rollout_says() {
        let mut s = spec("canary", 2);
        let ph = phases(&s, 1);
        let mut st = State::start("r", "c", &s, ph.len(), 0);
        let a = judge(
            &mut st,
            &s,
            &ph,
            vec![check("s0", Verdict::Fail, 10), check("s1", Verdict::Inconclusive, 10)],
            10,
        );
        assert!(
            matches!(&a, Action::Revert(f) if f.len() == 1 && f[0].slo == "s0"),
            "{a:?}"
        );
        s.on_violation = "pause".into();
        let mut st = State::start("r", "c", &s, ph.len(), 0);
        let a = judge(&mut st, &s, &ph, vec![check("s0", Verdict::Fail, 10)], 10);
        assert!(matches!(a, Action::Pause(_)));
        assert_eq!(st.compiled_step(), 1, "a paused rollout keeps its canary");
    }

    #[test]
    fn a_violation_counts_only_within_the_step() {
        let s = spec("canary", 1);
        let ph = phases(&s, 1);
        let mut st = State::start("r", "c", &s, ph.len(), 100);
        // the window (5s) reaches back before the step started at 100
        let a = judge(&mut st, &s, &ph, vec![check("s0", Verdict::Fail, 103)], 103);
        assert_eq!(a, Action::Wait(Some(105)));
        assert_eq!(st.checks.last().unwrap().verdict, Verdict::Breaching);
        let a = judge(&mut st, &s, &ph, vec![check("s0", Verdict::Fail, 105)], 105);
        assert!(matches!(a, Action::Revert(_)), "{a:?}");
    }

    #[test]
    fn history_is_bounded() {
        let s = spec("canary", 1);
        let ph = phases(&s, 1);
        let mut st = State::start("r", "c", &s, ph.len(), 0);
        for t in 0..100 {
            judge(&mut st, &s, &ph, vec![check("s0", Verdict::Breaching, t)], t);
        }
        assert_eq!(st.checks.len(), HISTORY);
        assert_eq!(st.checks.last().unwrap().time, 99);
    }
}
