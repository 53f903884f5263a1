//! The policy-change impact of a change set: when it touches `policies/**`, `teams/**` or
//! `rampart.yaml`, the standard questions and the repo's policy tests decided under the
//! base's rules and the head's (see [`crate::policy::impact`]).

use super::Validated;
use crate::change::{Change, Subject};
use crate::policy::impact::{self, Impact, Inputs, Mode};
use crate::source::Source;
use crate::spec::Kind;
use std::time::{Duration, Instant};

/// The impact and what it cost.
pub struct Impacted {
    pub impact: Impact,
    pub time: Duration,
}

/// Whether a change set can change what the rules decide: a policy file, a team, `rampart.yaml`.
pub fn touches_rules(changes: &[Change]) -> bool {
    changes.iter().any(|c| match c.subject {
        Subject::File => c.name == crate::config::SETTINGS_FILE || c.name.starts_with("policies/"),
        Subject::Object(k) => k == Kind::Team,
    })
}

/// The impact of `changes` (from `base_v` to `head_v`), or `None` when they touch no rule, or
/// when either side's policies do not validate (the verdicts say so: break-glass).
pub fn impact(
    base: &Source,
    head: &Source,
    base_v: &Validated,
    head_v: &Validated,
    changes: &[Change],
) -> anyhow::Result<Option<Impacted>> {
    if !touches_rules(changes) {
        return Ok(None);
    }
    let (Some(base_engine), Some(head_engine)) = (&base_v.engine.0, &head_v.engine.0) else {
        return Ok(None);
    };
    let t = Instant::now();
    let base_guarded = base.read_guarded(&base_v.repo.settings.limits)?.files;
    let head_guarded = head.read_guarded(&head_v.repo.settings.limits)?.files;
    let mut files: Vec<String> = base_guarded
        .iter()
        .chain(&head_guarded)
        .map(|f| f.path.clone())
        .collect();
    files.sort();
    files.dedup();
    let facts = super::check::plugin_facts(base_v, base_v, head_v);
    let inputs = Inputs {
        base: &base_v.repo,
        head: &head_v.repo,
        base_engine,
        head_engine,
        files: &files,
        facts: &facts,
    };
    let mut impact = impact::impact(&inputs, Mode::Reduced)
        .map_err(|e| anyhow::anyhow!("building the Cedar entities of the impact questions failed: {e}"))?;
    // the head's policy tests, run with the base's rules and repo and with the head's
    let limits = head_v.repo.settings.limits;
    let snap = head.read_policy_tests(&limits)?;
    let mut ignored = snap.diagnostics;
    let mut before = super::validate::load_all(snap.files, &limits, &mut ignored);
    let mut after = before.clone();
    let (b, _) = crate::policy::tests::run(base_engine, &base_v.repo, &base_guarded, &mut before);
    let (h, _) = crate::policy::tests::run(head_engine, &head_v.repo, &head_guarded, &mut after);
    impact.tests = impact::test_flips(&b, &h);
    Ok(Some(Impacted {
        impact,
        time: t.elapsed(),
    }))
}
