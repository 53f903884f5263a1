//! Checking a change: who is asking, the head's validation, and the policy verdicts on every
//! change from the base to the head.

use super::{Validated, validate_pair};
use crate::cache::ParseCache;
use crate::change::{self, Change};
use crate::config::Limits;
use crate::diagnostic::{self, Diagnostic};
use crate::load::{self, LoadedFile};
use crate::policy::Engine;
use crate::policy::decide::{self, Decision, Identity};
use crate::policy::model::{self, Who};
use crate::source::Source;
use crate::supply;
use std::time::{Duration, Instant};

/// Who is asking, when given explicitly. With an `author`, the approvers are exactly
/// `approvers` (none when `None`); without one, the author and the `Approved-by:` trailers of
/// the head commit are used and `approvers` must be `None`.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    pub author: Option<Identity>,
    pub approvers: Option<Vec<Identity>>,
    /// rampart itself, for a commit `serve` wrote and verified (a revert of a failing
    /// rollout, the promotion of a passed one): the principal is this reserved id
    /// (`rampart[revert]`, `rampart[promote]`), which no GitHub login and no team member can
    /// be, with no approvals. Only `serve` sets it.
    pub system: Option<&'static str>,
}

impl Principals {
    /// Given as logins: `approvers` count only with an `author` (without one, the head
    /// commit says who).
    pub fn logins(author: Option<&str>, approvers: &[String]) -> Principals {
        Principals {
            author: author.map(Identity::login),
            approvers: author.map(|_| approvers.iter().map(|a| Identity::login(a)).collect()),
            system: None,
        }
    }
}

/// How a policy check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every change was decided (allowed or denied).
    Decided,
    /// The head revision is invalid: the policy step did not run.
    HeadInvalid,
}

/// The result of [`check`]: the head's validation and, when it is valid, the verdicts.
pub struct Checked {
    pub head: Validated,
    /// Where in the head each change shows: the JSON pointer of the first field it changes
    /// (`/metadata/name` of a created object; none for a deletion or a file), so an
    /// annotation lands on that line.
    pub fields: Vec<Option<String>>,
    /// `outcome` is `HeadInvalid` (and the rest empty) when the head is invalid.
    pub auth: Authorized,
}

/// Validate `head`, then authorise every change from `base` to `head` with the base
/// revision's policies and team membership. The head's problems block the policy step.
pub fn check(base: &Source, head: &Source, who: &Principals, cache: Option<&ParseCache>) -> anyhow::Result<Checked> {
    let (head_v, base_v) = validate_pair(head, base, cache)?;
    if !head_v.is_valid() {
        return Ok(Checked {
            head: head_v,
            fields: Vec::new(),
            auth: Authorized {
                // (the base it knows, even when the head blocks the rest)
                base_commit: base_v.as_ref().ok().and_then(|b| b.commit.clone()),
                changes: Vec::new(),
                decisions: Vec::new(),
                diagnostics: Vec::new(),
                outcome: CheckOutcome::HeadInvalid,
                who: Who::default(),
                policy_time: Duration::ZERO,
            },
        });
    }
    let base_v = base_v?;
    let auth = authorize(base, head, &base_v, &head_v, who, None)?;
    let fields = auth
        .changes
        .iter()
        .map(|c| crate::change::changed_pointer(&base_v.repo, &head_v.repo, c))
        .collect();
    Ok(Checked {
        head: head_v,
        fields,
        auth,
    })
}

/// The policy verdicts on the change from `base_v` to `head_v` (both already validated; the
/// head valid).
pub struct Authorized {
    pub base_commit: Option<String>,
    pub changes: Vec<Change>,
    pub decisions: Vec<Decision>,
    pub diagnostics: Vec<Diagnostic>,
    pub outcome: CheckOutcome,
    pub who: Who,
    pub policy_time: Duration,
}

impl Authorized {
    pub fn denied(&self) -> usize {
        self.decisions.iter().filter(|d| !d.allowed).count()
    }
}

/// Authorise every change from `base_v` to `head_v` with the policies, members and keys of
/// `authority` — the revision whose rules are in force: the base itself for `check`, `plan`
/// and `apply` (`None`), the base branch's current tip for a pull request that branched off
/// an older commit, so a branch cannot escape what was merged since its fork point.
pub fn authorize(
    base: &Source,
    head: &Source,
    base_v: &Validated,
    head_v: &Validated,
    who: &Principals,
    authority: Option<&Validated>,
) -> anyhow::Result<Authorized> {
    let limits = head_v.repo.settings.limits;
    let changes = changes(base, head, base_v, head_v, &limits)?;
    authorize_changes(head, base_v, head_v, who, authority, changes)
}

/// [`authorize`] of `changes`, already computed (`audit` computes them from the files a
/// commit changed: [`crate::change::diff_in`]).
pub fn authorize_changes(
    head: &Source,
    base_v: &Validated,
    head_v: &Validated,
    who: &Principals,
    authority: Option<&Validated>,
    changes: Vec<Change>,
) -> anyhow::Result<Authorized> {
    let rules = authority.unwrap_or(base_v);
    let mut checked = Authorized {
        base_commit: base_v.commit.clone(),
        changes: Vec::new(),
        decisions: Vec::new(),
        diagnostics: Vec::new(),
        outcome: CheckOutcome::Decided,
        who: Who::default(),
        policy_time: Duration::ZERO,
    };
    let limits = head_v.repo.settings.limits;
    checked.changes = changes;

    let t = Instant::now();
    let mut defaults = None;
    let (engine, break_glass) = rules_engine(rules, &limits, &mut defaults, &mut checked.diagnostics)?;
    who_made_it(head, rules, base_v, head_v, who, &mut checked);
    let facts = plugin_facts(rules, base_v, head_v);
    checked.decisions = decisions(rules, base_v, head_v, &checked, &facts, engine, break_glass)?;
    checked.policy_time = t.elapsed();
    Ok(checked)
}

/// Every change from `base_v` to `head_v`: objects, and the guarded files byte for byte.
fn changes(
    base: &Source,
    head: &Source,
    base_v: &Validated,
    head_v: &Validated,
    limits: &Limits,
) -> anyhow::Result<Vec<Change>> {
    let base_guarded = base.read_guarded(&base_v.repo.settings.limits)?;
    let head_guarded = head.read_guarded(limits)?;
    let same = |a: &crate::spec::Origin, b: &crate::spec::Origin| base_v.same_source(head_v, a, b);
    Ok(change::diff(
        &base_v.repo,
        &head_v.repo,
        &base_guarded.files,
        &head_guarded.files,
        &same,
    ))
}

/// The engine of the rules in force and their problems; under break-glass, rampart's defaults and `true`.
fn rules_engine<'a>(
    rules: &'a Validated,
    limits: &Limits,
    defaults: &'a mut Option<Engine>,
    diagnostics: &mut Vec<Diagnostic>,
) -> anyhow::Result<(&'a Engine, bool)> {
    let (engine, d) = &*rules.engine;
    let mut d = d.clone();
    for x in &mut d {
        x.message = format!("base revision: {}", x.message);
    }
    // located in the base's policy files (snippets included)
    let policy_files: Vec<LoadedFile> = rules
        .files
        .iter()
        .filter(|f| f.path.ends_with(".cedar"))
        .cloned()
        .collect();
    load::resolve(&mut d, &policy_files, limits);
    diagnostic::sort(&mut d);
    diagnostics.extend(d);
    // break-glass: when the rules in force do not validate, nothing could ever be authorised
    // again, not even the fix. Then rampart's default policies alone decide, and only
    // changes to guarded files (the fix) can be allowed — with the defaults' four eyes: an
    // approval from a `platform` member who is not the author.
    let (engine, break_glass) = match engine {
        Some(e) => (e, false),
        None => {
            let defaults = defaults.insert(
                Engine::load(&[])
                    .0
                    .ok_or_else(|| anyhow::anyhow!("rampart's default policies do not validate"))?,
            );
            diagnostics.push(
                Diagnostic::new(
                    diagnostic::Code::BreakGlass,
                    diagnostic::Anchor::None,
                    "the base revision's policies do not validate: break-glass, so rampart's default \
                     policies alone decide, and only changes to rampart.yaml, policies/ and keys/ can be allowed",
                )
                .with_hint(
                    "fix the policies in a change of its own, approved by a `platform` member who is not its author",
                ),
            );
            (&*defaults, true)
        }
    };
    Ok((engine, break_glass))
}

/// Who made and approved the change, less approvers the change itself adds to a team (into `checked`).
fn who_made_it(
    head: &Source,
    rules: &Validated,
    base_v: &Validated,
    head_v: &Validated,
    who: &Principals,
    checked: &mut Authorized,
) {
    if let Some(system) = who.system {
        checked.who = crate::policy::model::Who {
            author: system.to_owned(),
            approvers: Vec::new(),
        };
        return;
    }
    let teams: Vec<(String, Vec<String>)> = rules
        .repo
        .teams
        .iter()
        .map(|t| (t.name().to_owned(), t.spec.members.clone()))
        .collect();
    let info = head.commit_info();
    let source = info
        .as_ref()
        .map(|c| format!("commit {}", &c.id[..12]))
        .unwrap_or_default();
    // who made and approved the change: given explicitly (both together, so an explicit
    // author is never paired with trailers the author wrote), or both from the head commit
    let (author, approvers) = match (&who.author, &info) {
        (Some(a), _) => (a.clone(), who.approvers.clone().unwrap_or_default()),
        (None, Some(c)) => (
            Identity {
                login: None,
                name: Some(c.author_name.clone()),
                email: Some(c.author_email.clone()),
            },
            c.approved_by.iter().map(|v| Identity::parse_trailer(v)).collect(),
        ),
        (None, None) => (Identity::default(), Vec::new()),
    };
    let (resolved, d) = decide::resolve_who(&teams, &author, &approvers, "");
    checked.diagnostics.extend(d.into_iter().map(|mut x| {
        if !source.is_empty() && who.author.is_none() {
            x.message = format!("{source}: {}", x.message);
        }
        x.location = None;
        x
    }));
    checked.who = resolved;
    // a login this change set adds to a team does not approve the same change (else a team
    // could grow its own second approver)
    let added = members_added(&base_v.repo, &head_v.repo, &checked.changes);
    checked.who.approvers.retain(|a| {
        let keep = !added.contains(a);
        if !keep {
            checked.diagnostics.push(
                Diagnostic::new(
                    diagnostic::Code::ApproverAddedByChange,
                    diagnostic::Anchor::None,
                    format!("`{a}` approved, but this change adds `{a}` to a team; the approval does not count"),
                )
                .with_hint("ask a member who is already in the team (or a member of `platform`) for the approval"),
            );
        }
        keep
    });
}

/// The facts the policies read of the head's plugins and of its rollouts' new versions
/// (trust score, signature), computed on demand.
pub(super) fn plugin_facts<'a>(
    rules: &'a Validated,
    base_v: &'a Validated,
    head_v: &'a Validated,
) -> impl Fn(model::FactsOf<'_>) -> model::PluginFacts + Sync + 'a {
    // the head's plugins, as signed by keys already merged: a pull request that adds a key
    // does not make its own plugins verified; and a change can only lower what the base
    // already trusts: most trust facts (advisories, maintainers, release date) are written in
    // the plugin's own YAML, so a plugin the base has counts with the lower score of the two
    // revisions. A rollout's new version is its own artifact and signature scored with its
    // plugin's facts, so the same holds for it: scored (and its publisher taken) with the
    // head's plugin and with the base's, the lower counts. Computed per plugin or rollout on
    // demand (only those the requests name).
    let inputs = head_v.supply_inputs(&rules.keys);
    let memo: std::sync::Mutex<std::collections::HashMap<(bool, String), model::PluginFacts>> = Default::default();
    let of = |t: &supply::Trust| model::PluginFacts {
        trust_score: t.trust_score,
        signature_verified: t.signature_verified,
    };
    // the self-reported factors (advisories, maintainers, quality, release date) count with
    // the lower of the two revisions; the publisher factor and the signature are the head's,
    // verified with the keys in force — a proof, not a claim, so signing a plugin that an
    // enterprise tenant already runs raises its trust in the change that signs it
    let lower = |h: &supply::Trust, b: &supply::Trust| {
        let (hf, bf) = (&h.factors, &b.factors);
        model::PluginFacts {
            trust_score: hf.publisher
                + hf.security.min(bf.security)
                + hf.community.min(bf.community)
                + hf.quality.min(bf.quality)
                + hf.freshness.min(bf.freshness),
            signature_verified: h.signature_verified,
        }
    };
    move |key: model::FactsOf<'_>| {
        let (is_rollout, name) = match key {
            model::FactsOf::Plugin(n) => (false, n),
            model::FactsOf::Rollout(n) => (true, n),
        };
        let memo_key = (is_rollout, name.to_owned());
        if let Some(f) = memo.lock().expect("not poisoned").get(&memo_key) {
            return *f;
        }
        let f = if is_rollout {
            let scored = |repo: &crate::spec::Repo, r: &crate::spec::Object<crate::spec::RolloutSpec>| {
                let p = repo.plugins.iter().find(|p| p.name() == r.spec.plugin)?;
                Some(supply::rollout(r, &p.spec, &inputs)?.0.1)
            };
            match head_v.repo.rollouts.iter().find(|r| r.name() == name) {
                None => model::PluginFacts::default(),
                Some(r) => match scored(&head_v.repo, r) {
                    None => model::PluginFacts::default(),
                    Some(h) if base_v.repo.plugins.iter().any(|p| p.name() == r.spec.plugin) => {
                        match scored(&base_v.repo, r) {
                            Some(b) => lower(&h, &b),
                            // (scored with the base's plugin it does not verify: nothing)
                            None => model::PluginFacts::default(),
                        }
                    }
                    Some(h) => of(&h),
                },
            }
        } else {
            match supply::trust_of(&head_v.repo, name, &inputs) {
                None => model::PluginFacts::default(),
                Some(t) => match base_v.trust_of(name) {
                    Some(b) => lower(&t, &b),
                    None => of(&t),
                },
            }
        };
        memo.lock().expect("not poisoned").insert(memo_key, f);
        f
    }
}

/// Build the Cedar model of the change set (break-glass blocks all but guarded files) and decide it.
fn decisions(
    rules: &Validated,
    base_v: &Validated,
    head_v: &Validated,
    checked: &Authorized,
    facts: model::Facts<'_>,
    engine: &Engine,
    break_glass: bool,
) -> anyhow::Result<Vec<Decision>> {
    let mut model = model::build(
        &rules.repo,
        &base_v.repo,
        &head_v.repo,
        &checked.changes,
        &checked.who,
        facts,
        engine,
    )
    .map_err(|e| anyhow::anyhow!("building the Cedar entities of the change set failed: {e}"))?;
    if break_glass {
        // (through the model's `blocked`: denied without asking Cedar or searching a way out)
        for (p, c) in model.prepared.iter_mut().zip(&checked.changes) {
            if c.subject != change::Subject::File {
                p.blocked = Some(
                    "the base revision's policies do not validate: until they are fixed, only changes to \
                     rampart.yaml, policies/ and keys/ can be authorised (break-glass)"
                        .to_owned(),
                );
            }
        }
    }
    Ok(decide::decide(engine, &mut model))
}

/// Every login a team change of `changes` adds (normalised).
fn members_added(
    base: &crate::spec::Repo,
    head: &crate::spec::Repo,
    changes: &[Change],
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for c in changes
        .iter()
        .filter(|c| c.subject == change::Subject::Object(crate::spec::Kind::Team))
    {
        let old = c.old.map(|i| &base.teams[i].spec);
        let new = c.new.map(|i| &head.teams[i].spec);
        let (Some(o), Some(n)) = (old.or(new), new.or(old)) else {
            continue;
        };
        out.extend(model::members_changed(o, n, c.action).0);
    }
    out
}
