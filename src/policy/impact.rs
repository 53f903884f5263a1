//! Policy-change impact: the decisions a change of policies or team membership flips (pure).
//!
//! A standard question set is asked under the base's rules (policies and team membership)
//! and under the head's, with everything else equal: the same objects (the head's, and the
//! base's that the head deletes), the same contexts, the same askers. A question is one
//! action on one object (its own request and every tenant or team it reaches, as `check`
//! asks them) by one asker:
//!
//! - **objects**: every team, tenant, plugin and rollout of the head (and of the base when
//!   the head deletes it), and every guarded file (`rampart.yaml`, `policies/**`, `keys/**`)
//!   of either side;
//! - **actions**: `create` (judged as made from nothing), `update` (a no-op update of the
//!   object as it is: who may change it at all) and `delete`;
//! - **askers**, for each object, where "the teams that matter" are its owner teams (a team:
//!   itself) and every team either policy set names literally (`platform`, …) that exists:
//!   (a) a member of each team that matters, (b) a member of some other team, (c) a
//!   non-member, (d) each login whose membership differs between base and head, as itself —
//!   each of these alone, with no approval; and the object's natural author (a member of its
//!   first owner team, or of the team itself; a member of another team for plugins, rollouts
//!   and files) approved by a member of each team that matters and by each login of (d) —
//!   and, when a policy that applies to the question reads `approvals`, by either of these
//!   plus one more approval from anyone.
//!
//! Synthetic askers have the same membership on both sides, so only the rules differ.
//! [`Mode::Reduced`] skips questions that cannot flip: when neither the changed policies
//! (present on one side only, or with different text) nor anyone's membership is involved,
//! both sides decide with the same satisfied policies. Precisely, a question by a synthetic
//! asker is decided under both rules only when a changed policy is satisfied or fails to
//! evaluate on one of its requests (with the base's entities, equal to the head's for such
//! askers); questions by a login of (d) are always decided under both. When a policy names a
//! login of (d) literally, every question is decided under both ([`Mode::BruteForce`]).

use super::Engine;
use super::model::{self, Facts, Prepared, Who, uid};
use crate::change::{Action, Change, Subject};
use crate::spec::{Kind, Object, Repo};
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityUid, PolicySet,
    RestrictedExpression as Rx,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Example questions listed per group.
pub const EXAMPLES: usize = 20;
/// Groups listed (the rest are counted).
pub const GROUPS: usize = 30;

/// Which questions are decided under both rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only those a changed policy or a changed membership can flip (the same flips).
    Reduced,
    /// Every question (for tests and as the fallback).
    BruteForce,
}

/// The two sides compared.
pub struct Inputs<'a> {
    pub base: &'a Repo,
    pub head: &'a Repo,
    pub base_engine: &'a Engine,
    pub head_engine: &'a Engine,
    /// The guarded files of base and head, by path.
    pub files: &'a [String],
    /// Supply-chain facts (the same on both sides).
    pub facts: Facts<'a>,
}

/// One question whose decision differs between base and head.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flip {
    /// deny → allow (someone may now do something they could not).
    pub widening: bool,
    /// The forbids that deny on the denying side; when none does (no permit applies there),
    /// the permits that allow on the other.
    pub policies: Vec<String>,
    /// Who asks, as a class ("a member of `platform`", "a non-member", "`alice`"…).
    pub asker: String,
    /// "delete Tenant `x`".
    pub question: String,
}

/// Flips alike in direction, policies and asker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub direction: &'static str,
    pub policies: Vec<String>,
    pub asker: String,
    pub count: usize,
    /// At most [`EXAMPLES`] of the questions.
    pub examples: Vec<String>,
}

/// A policy test case decided differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFlip {
    pub file: String,
    pub name: String,
    pub widening: bool,
}

/// What a change of policies or membership decides differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Impact {
    /// Questions in the standard set.
    pub questions: usize,
    /// Questions decided under both rules (the rest cannot flip).
    pub evaluated: usize,
    pub widening: usize,
    pub narrowing: usize,
    /// Widening groups first, then by count.
    pub groups: Vec<Group>,
    /// Groups left out past [`GROUPS`].
    pub more_groups: usize,
    pub changed_policies: Vec<String>,
    pub changed_logins: Vec<String>,
    pub tests: Vec<TestFlip>,
}

impl Impact {
    pub fn flips(&self) -> usize {
        self.widening + self.narrowing + self.tests.len()
    }
}

/// The impact: flips grouped, counts first, bounded.
pub fn impact(inputs: &Inputs<'_>, mode: Mode) -> Result<Impact, String> {
    let (mut flips, questions, evaluated) = flips(inputs, mode)?;
    // (askers of one class, e.g. members of two owner teams, read as one flip)
    flips.dedup();
    let mut out = Impact {
        questions,
        evaluated,
        widening: flips.iter().filter(|f| f.widening).count(),
        narrowing: flips.iter().filter(|f| !f.widening).count(),
        changed_policies: changed_ids(inputs.base_engine, inputs.head_engine),
        changed_logins: changed_logins(inputs.base, inputs.head).into_iter().collect(),
        ..Impact::default()
    };
    let mut groups: BTreeMap<(bool, &[String], &str), Group> = BTreeMap::new();
    for f in &flips {
        let g = groups
            .entry((!f.widening, &f.policies, &f.asker))
            .or_insert_with(|| Group {
                direction: if f.widening { "widens" } else { "narrows" },
                policies: f.policies.clone(),
                asker: f.asker.clone(),
                count: 0,
                examples: Vec::new(),
            });
        g.count += 1;
        if g.examples.len() < EXAMPLES {
            g.examples.push(f.question.clone());
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| (a.direction != "widens", b.count).cmp(&(b.direction != "widens", a.count)));
    out.more_groups = groups.len().saturating_sub(GROUPS);
    groups.truncate(GROUPS);
    out.groups = groups;
    Ok(out)
}

/// The policy test cases whose decision differs between the two runs (matched by file and name).
pub fn test_flips(base: &[super::tests::CaseResult], head: &[super::tests::CaseResult]) -> Vec<TestFlip> {
    let before: HashMap<(&str, &str), bool> = base
        .iter()
        .filter_map(|r| Some(((r.file.as_str(), r.name.as_str()), r.actual.as_ref()?.allowed)))
        .collect();
    head.iter()
        .filter_map(|r| {
            let now = r.actual.as_ref()?.allowed;
            let was = *before.get(&(r.file.as_str(), r.name.as_str()))?;
            (was != now).then(|| TestFlip {
                file: r.file.clone(),
                name: r.name.clone(),
                widening: now,
            })
        })
        .collect()
}

/// Every flip of the question set, with the number of questions and of those decided under
/// both rules.
pub fn flips(inputs: &Inputs<'_>, mode: Mode) -> Result<(Vec<Flip>, usize, usize), String> {
    let (base, head) = (inputs.base, inputs.head);
    let members_changed = changed_logins(base, head);
    let literal_users: BTreeSet<String> = [inputs.base_engine, inputs.head_engine]
        .iter()
        .flat_map(|e| e.literals.iter())
        .filter(|l| l.type_name().basename() == "User")
        .map(|l| l.id().unescaped().to_owned())
        .collect();
    // a policy that reads a changed login's membership can flip any question
    let mode = if members_changed.iter().any(|l| literal_users.contains(l)) {
        Mode::BruteForce
    } else {
        mode
    };
    let changed = Changed::of(inputs.base_engine, inputs.head_engine);
    // the logins asked as themselves: those whose membership changes, and those a changed
    // policy names (`principal == User::"mallory"`: she is the one it widens for)
    let mut logins = members_changed;
    logins.extend(changed.named_users.iter().cloned());
    let universe = universe(base, head);
    let universe = universe.as_ref().unwrap_or(head);
    let literal_teams: BTreeSet<String> = [inputs.base_engine, inputs.head_engine]
        .iter()
        .flat_map(|e| e.literals.iter())
        .filter(|l| l.type_name().basename() == "Team")
        .map(|l| l.id().unescaped().to_owned())
        .filter(|t| universe.teams.iter().any(|x| x.name() == t))
        .collect();
    let literal_objects: HashSet<(&str, String)> = [inputs.base_engine, inputs.head_engine]
        .iter()
        .flat_map(|e| e.literals.iter())
        .map(|l| (l.type_name().basename(), l.id().unescaped().to_owned()))
        .filter_map(|(k, id)| {
            ["Tenant", "Plugin", "Rollout"]
                .into_iter()
                .find(|x| *x == k)
                .map(|k| (k, id))
        })
        .collect();
    let needs = |subject: Subject, action: Action| -> bool {
        let own = uid("Action", &format!("{}{}", action.as_str(), subject.as_str()));
        changed.applies(&own)
            || (subject == Subject::Object(Kind::Tenant) && changed.applies(&uid("Action", "changeOwners")))
            || (matches!(subject, Subject::Object(Kind::Plugin | Kind::Rollout))
                && changed.applies(&uid("Action", "reachTenant")))
    };
    let plus_for: HashMap<(Subject, Action), bool> = Subject::ALL
        .into_iter()
        .flat_map(|s| Action::ALL.map(|a| ((s, a), reads_approvals(inputs, s, a))))
        .collect();
    // the questions, unit by unit (one object and action, many askers)
    let mut units: Vec<Unit> = Vec::new();
    let mut questions = 0usize;
    let mut add = |subject: Subject, name: &str, index: Option<usize>, teams: Vec<String>, natural: Author| {
        for action in Action::ALL {
            let plus = plus_for[&(subject, action)];
            let mut kept = askers(&teams, &literal_teams, &natural, &logins, plus);
            questions += kept.len();
            if mode == Mode::Reduced && !needs(subject, action) {
                kept.retain(Asker::is_login);
            }
            let literal = literal_objects.contains(&(subject.as_str(), name.to_owned()));
            if kept.is_empty() && !(literal && action == Action::Update) {
                continue;
            }
            let (old, new) = match action {
                Action::Create => (None, index),
                Action::Update => (index, index),
                Action::Delete => (index, None),
            };
            units.push(Unit {
                change: Change {
                    action,
                    subject,
                    name: name.to_owned(),
                    file: String::new(),
                    doc: 0,
                    old,
                    new,
                    base_invalid: false,
                },
                askers: kept,
                teams: teams.clone(),
            });
        }
    };
    let member_of = |t: &str| Author::Member(t.to_owned());
    for (i, t) in universe.teams.iter().enumerate() {
        add(
            Subject::Object(Kind::Team),
            t.name(),
            Some(i),
            vec![t.name().to_owned()],
            member_of(t.name()),
        );
    }
    for (i, t) in universe.tenants.iter().enumerate() {
        let natural = t.spec.owners.first().map_or(Author::Other, |o| member_of(o));
        add(
            Subject::Object(Kind::Tenant),
            t.name(),
            Some(i),
            t.spec.owners.clone(),
            natural,
        );
    }
    for (i, p) in universe.plugins.iter().enumerate() {
        add(
            Subject::Object(Kind::Plugin),
            p.name(),
            Some(i),
            Vec::new(),
            Author::Other,
        );
    }
    for (i, r) in universe.rollouts.iter().enumerate() {
        add(
            Subject::Object(Kind::Rollout),
            r.name(),
            Some(i),
            Vec::new(),
            Author::Other,
        );
    }
    for f in inputs.files {
        add(Subject::File, f, None, Vec::new(), Author::Other);
    }
    let shared = ![inputs.base_engine, inputs.head_engine]
        .iter()
        .any(|e| e.policies.policies().any(|p| reads_author(&p.to_string())));
    let authority = Repo {
        teams: base.teams.clone(),
        ..Repo::default()
    };
    let who = Who {
        author: "?impact:".into(),
        approvers: Vec::new(),
    };
    let changes: Vec<Change> = units.iter().map(|u| u.change.clone()).collect();
    // (the literals of both sides: a tenant only the head's policies name is kept apart from
    // the tenants it would otherwise share a class with)
    let literals: HashSet<EntityUid> = inputs
        .base_engine
        .literals
        .union(&inputs.head_engine.literals)
        .cloned()
        .collect();
    let model = model::build_naming(
        &authority,
        universe,
        universe,
        &changes,
        &who,
        inputs.facts,
        &inputs.base_engine.schema,
        &literals,
    )?;
    let schema = &inputs.base_engine.schema;
    let (base_entities, head_entities) = entities(model.entities, &units, base, head, &literal_users, schema, shared)?;
    let sides = Sides {
        shared,
        base: (inputs.base_engine, &base_entities),
        head: (inputs.head_engine, head_entities.as_ref().unwrap_or(&base_entities)),
        changed: &changed,
        schema,
        literal_teams: &literal_teams,
    };
    let per_unit: Vec<(Vec<Flip>, usize)> = super::with_big_stack(|| {
        let pairs: Vec<(&Unit, &Prepared)> = units.iter().zip(&model.prepared).collect();
        super::map_big_stack(&pairs, |(u, p)| sides.unit(u, p, mode))
    });
    let evaluated = per_unit.iter().map(|(_, n)| n).sum();
    let mut flips: Vec<Flip> = per_unit.into_iter().flat_map(|(f, _)| f).collect();
    flips.sort();
    Ok((flips, questions, evaluated))
}

/// The head with the objects only the base has (which the change deletes), when there are any.
fn universe(base: &Repo, head: &Repo) -> Option<Repo> {
    fn missing<S: Clone>(base: &[Object<S>], head: &[Object<S>]) -> Vec<Object<S>> {
        let have: HashSet<&str> = head.iter().map(|o| o.name()).collect();
        base.iter().filter(|o| !have.contains(o.name())).cloned().collect()
    }
    let teams = missing(&base.teams, &head.teams);
    let tenants = missing(&base.tenants, &head.tenants);
    let plugins = missing(&base.plugins, &head.plugins);
    let rollouts = missing(&base.rollouts, &head.rollouts);
    if teams.is_empty() && tenants.is_empty() && plugins.is_empty() && rollouts.is_empty() {
        return None;
    }
    let mut u = head.clone();
    u.teams.extend(teams);
    u.tenants.extend(tenants);
    u.plugins.extend(plugins);
    u.rollouts.extend(rollouts);
    Some(u)
}

/// Team → members (lowercase) of a revision.
fn membership(repo: &Repo) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in &repo.teams {
        for m in &t.spec.members {
            out.entry(m.to_ascii_lowercase())
                .or_default()
                .insert(t.name().to_owned());
        }
    }
    out
}

/// The logins whose teams differ between base and head.
pub fn changed_logins(base: &Repo, head: &Repo) -> BTreeSet<String> {
    let (b, h) = (membership(base), membership(head));
    b.keys()
        .chain(h.keys())
        .filter(|l| b.get(*l) != h.get(*l))
        .cloned()
        .collect()
}

/// The ids of the policies that differ: on one side only, or with another text.
fn changed_ids(base: &Engine, head: &Engine) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for (a, b) in [(base, head), (head, base)] {
        for p in a.policies.policies() {
            if b.policies.policy(p.id()).is_none_or(|q| q.to_string() != p.to_string()) {
                out.insert(p.id().to_string());
            }
        }
    }
    out.into_iter().collect()
}

/// The changed policies of both sides, permits and forbids apart (a satisfied permit does not
/// show in a response that a forbid decides).
struct Changed {
    permits: PolicySet,
    forbids: PolicySet,
    /// The actions some changed policy applies to.
    actions: HashSet<EntityUid>,
    /// No changed policy reads the principal (its scope is any principal, and its text names
    /// `principal` only there).
    principal_free: bool,
    /// The users a changed policy names literally (`Rampart::User::"…"`; not rampart's own
    /// reserved ids, which no login can have).
    named_users: BTreeSet<String>,
}

/// The users `text` (a policy) names as `User::"…"`.
fn users_named(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split("User::\"").skip(1).filter_map(|rest| {
        let id = &rest[..rest.find('"')?];
        (!id.is_empty() && !id.contains(['[', '?', ':', '\\'])).then(|| id.to_ascii_lowercase())
    })
}

impl Changed {
    fn of(base: &Engine, head: &Engine) -> Changed {
        let ids: BTreeSet<String> = changed_ids(base, head).into_iter().collect();
        let (mut permits, mut forbids) = (PolicySet::new(), PolicySet::new());
        let mut actions = HashSet::new();
        let mut principal_free = true;
        let mut named_users = BTreeSet::new();
        let all_actions: Vec<EntityUid> = base
            .schema
            .action_entities()
            .map(|a| a.iter().map(|e| e.uid()).collect())
            .unwrap_or_default();
        for (side, e) in [("base", base), ("head", head)] {
            for p in e.policies.policies().filter(|p| ids.contains(&p.id().to_string())) {
                principal_free &= p.principal_constraint() == cedar_policy::PrincipalConstraint::Any
                    && p.to_string().matches("principal").count() == 1;
                named_users.extend(users_named(&p.to_string()));
                let renamed = p.new_id(cedar_policy::PolicyId::new(format!("{side}:{}", p.id())));
                let set = if p.effect() == Effect::Forbid {
                    &mut forbids
                } else {
                    &mut permits
                };
                // (ids are unique per side, and prefixed by it)
                let _ = set.add(renamed);
                for a in &all_actions {
                    if e.policies_for(a).policy(p.id()).is_some() {
                        actions.insert(a.clone());
                    }
                }
            }
        }
        Changed {
            principal_free,
            named_users,
            permits,
            forbids,
            actions,
        }
    }

    fn applies(&self, action: &EntityUid) -> bool {
        self.actions.contains(action)
    }
}

/// Who asks a question: the author.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Author {
    /// A member of exactly this team.
    Member(String),
    /// A member of a team that does not matter for the object.
    Other,
    /// A login in no team.
    Nobody,
    /// A login whose membership changes, or one a changed policy names, as itself.
    Login(String),
}

/// The approvals of a question: none, or one from a member of a team (or a login), plus
/// one from anyone when `true`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Approval {
    None,
    Team(String, bool),
    Login(String, bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Asker {
    author: Author,
    approval: Approval,
}

impl Asker {
    fn is_login(&self) -> bool {
        matches!(self.author, Author::Login(_)) || matches!(self.approval, Approval::Login(..))
    }
}

/// Whether a policy's text can read a change's `author` (`.author`, `["author"]`,
/// `has author`; conservative: a comment or an annotation that says so counts too).
fn reads_author(text: &str) -> bool {
    text.contains(".author") || text.contains("\"author\"") || text.contains("has author")
}

/// Whether a policy of either side that applies to the question's requests reads how many
/// approvals a change has (else "and one more approval" asks nothing new).
fn reads_approvals(inputs: &Inputs<'_>, subject: Subject, action: Action) -> bool {
    let mut actions = vec![uid("Action", &format!("{}{}", action.as_str(), subject.as_str()))];
    match subject {
        Subject::Object(Kind::Tenant) => actions.push(uid("Action", "changeOwners")),
        Subject::Object(Kind::Plugin | Kind::Rollout) => actions.push(uid("Action", "reachTenant")),
        _ => {}
    }
    [inputs.base_engine, inputs.head_engine].iter().any(|e| {
        actions.iter().any(|a| {
            e.policies_for(a)
                .policies()
                .any(|p| p.to_string().contains("approvals"))
        })
    })
}

fn askers(
    teams: &[String],
    literal: &BTreeSet<String>,
    natural: &Author,
    logins: &BTreeSet<String>,
    plus_anyone: bool,
) -> Vec<Asker> {
    let matter: BTreeSet<&String> = teams.iter().chain(literal).collect();
    let alone = |author| Asker {
        author,
        approval: Approval::None,
    };
    let mut out: Vec<Asker> = matter.iter().map(|t| alone(Author::Member((*t).clone()))).collect();
    out.push(alone(Author::Other));
    out.push(alone(Author::Nobody));
    out.extend(logins.iter().map(|l| alone(Author::Login(l.clone()))));
    for plus in [false, true].into_iter().filter(|p| !p || plus_anyone) {
        for t in &matter {
            out.push(Asker {
                author: natural.clone(),
                approval: Approval::Team((*t).clone(), plus),
            });
        }
        // an author from outside, approved: a rule that lets an approval stand in for
        // membership (`context.change in Team::"payments"`, `approvals >= 1`) widens for them
        if !plus {
            for t in &matter {
                for outsider in [Author::Other, Author::Nobody] {
                    if outsider != *natural {
                        out.push(Asker {
                            author: outsider,
                            approval: Approval::Team((*t).clone(), false),
                        });
                    }
                }
            }
        }
        for l in logins {
            out.push(Asker {
                author: natural.clone(),
                approval: Approval::Login(l.clone(), plus),
            });
        }
    }
    out
}

fn author_uid(a: &Author) -> EntityUid {
    match a {
        Author::Member(t) => uid("User", &format!("?member:{t}")),
        Author::Other => uid("User", "?other:"),
        Author::Nobody => uid("User", "?nobody:"),
        Author::Login(l) => uid("User", l),
    }
}

/// The `Change` entity of an asker: one per author and approvals, or, when no policy reads
/// `context.change.author` (`shared`), one per approvals (so the askers of a question that
/// share approvals share its contexts: a context costs more to build than a decision).
fn change_uid(a: &Asker, shared: bool) -> EntityUid {
    if shared {
        uid("Change", &format!("?change:{:?}", a.approval))
    } else {
        uid("Change", &format!("?change:{:?}|{:?}", a.author, a.approval))
    }
}

/// One object and action, asked by many.
struct Unit {
    change: Change,
    askers: Vec<Asker>,
    /// Its owner teams (a team: itself).
    teams: Vec<String>,
}

/// The model's entities with the askers added: with the base's membership, and with the
/// head's when a login's membership differs (only those logins' users differ; `None`: the same).
fn entities(
    model: Entities,
    units: &[Unit],
    base: &Repo,
    head: &Repo,
    literal_users: &BTreeSet<String>,
    schema: &cedar_policy::Schema,
    shared: bool,
) -> Result<(Entities, Option<Entities>), String> {
    let user = |id: EntityUid, member: bool, teams: Vec<EntityUid>| {
        Entity::new_with_tags(
            id,
            [(
                "member".to_owned(),
                cedar_policy::RestrictedExpression::new_bool(member),
            )],
            teams,
            [],
        )
        .map_err(|e| e.to_string())
    };
    let (b, h) = (membership(base), membership(head));
    let real = |m: &BTreeMap<String, BTreeSet<String>>, login: &str| {
        let teams: Vec<EntityUid> = m.get(login).into_iter().flatten().map(|t| uid("Team", t)).collect();
        user(uid("User", login), !teams.is_empty(), teams)
    };
    let mut extra: Vec<Entity> = Vec::new();
    let mut made: HashSet<EntityUid> = HashSet::new();
    let mut logins: BTreeSet<&str> = literal_users.iter().map(String::as_str).collect();
    let anyone = uid("User", "?anyone:");
    extra.push(user(anyone.clone(), true, vec![])?);
    for u in units {
        for a in &u.askers {
            let author = author_uid(&a.author);
            if made.insert(author.clone()) {
                match &a.author {
                    Author::Member(t) => extra.push(user(author.clone(), true, vec![uid("Team", t)])?),
                    Author::Other => extra.push(user(author.clone(), true, vec![])?),
                    Author::Nobody => extra.push(user(author.clone(), false, vec![])?),
                    Author::Login(l) => {
                        logins.insert(l);
                    }
                }
            }
            let change = change_uid(a, shared);
            if !made.insert(change.clone()) {
                continue;
            }
            let (approvers, plus): (Vec<EntityUid>, bool) = match &a.approval {
                Approval::None => (vec![], false),
                Approval::Team(t, plus) => {
                    let approver = uid("User", &format!("?approver:{t}"));
                    if made.insert(approver.clone()) {
                        extra.push(user(approver.clone(), true, vec![uid("Team", t)])?);
                    }
                    (vec![approver], *plus)
                }
                Approval::Login(l, plus) => {
                    logins.insert(l);
                    (vec![uid("User", l)], *plus)
                }
            };
            let mut parents = approvers;
            if plus {
                parents.push(anyone.clone());
            }
            extra.push(
                Entity::new_with_tags(
                    change,
                    [
                        (
                            "author".to_owned(),
                            // (shared: no policy reads it)
                            cedar_policy::RestrictedExpression::new_entity_uid(if shared {
                                anyone.clone()
                            } else {
                                author
                            }),
                        ),
                        (
                            "approvals".to_owned(),
                            cedar_policy::RestrictedExpression::new_long(parents.len() as i64),
                        ),
                    ],
                    parents,
                    [],
                )
                .map_err(|e| e.to_string())?,
            );
        }
    }
    for l in &logins {
        extra.push(real(&b, l)?);
    }
    let check = model::checked(schema);
    let base_entities = model.upsert_entities(extra, check).map_err(|e| e.to_string())?;
    // (the same entities when no login's membership differs)
    let head_users: Vec<Entity> = logins
        .iter()
        .filter(|l| b.get(**l) != h.get(**l))
        .map(|l| real(&h, l))
        .collect::<Result<_, _>>()?;
    if head_users.is_empty() {
        return Ok((base_entities, None));
    }
    let head_entities = base_entities
        .clone()
        .upsert_entities(head_users, check)
        .map_err(|e| e.to_string())?;
    Ok((base_entities, Some(head_entities)))
}

/// Both rules, and the changed policies, ready to decide.
struct Sides<'a> {
    /// Askers share `Change` entities by approvals (see [`change_uid`]).
    shared: bool,
    base: (&'a Engine, &'a Entities),
    head: (&'a Engine, &'a Entities),
    changed: &'a Changed,
    schema: &'a cedar_policy::Schema,
    literal_teams: &'a BTreeSet<String>,
}

/// A decision on a question: allowed, and the determining policies.
type Verdict = (bool, BTreeSet<String>);

impl Sides<'_> {
    /// The flips of one unit, and how many of its questions were decided under both rules.
    fn unit(&self, u: &Unit, p: &Prepared, mode: Mode) -> (Vec<Flip>, usize) {
        let authorizer = Authorizer::new();
        let mut flips = Vec::new();
        let mut evaluated = 0;
        let mut contexts: HashMap<EntityUid, Result<Vec<Context>, String>> = HashMap::new();
        let mut touched: HashMap<(EntityUid, Option<EntityUid>), bool> = HashMap::new();
        for a in &u.askers {
            let (principal, change) = (author_uid(&a.author), change_uid(a, self.shared));
            // (known untouched: skip before building the requests, which cost more than the
            // decisions)
            let reduced = mode == Mode::Reduced && !a.is_login();
            let key = (!self.changed.principal_free).then(|| principal.clone());
            if reduced && touched.get(&(change.clone(), key.clone())) == Some(&false) {
                continue;
            }
            let contexts = contexts
                .entry(change)
                .or_insert_with_key(|change| unit_contexts(p, change));
            let requests = match contexts
                .as_ref()
                .map_err(String::clone)
                .and_then(|c| requests(p, &principal, c, self.schema))
            {
                Ok(r) => r,
                // (the same requests on both sides: both fail to build alike)
                Err(_) => continue,
            };
            if reduced {
                // (a changed policy that never reads the principal says the same to every
                // asker with these approvals)
                let touched = *touched
                    .entry((change_uid(a, self.shared), key))
                    .or_insert_with(|| self.touched(&authorizer, &requests));
                if !touched {
                    continue;
                }
            }
            evaluated += 1;
            let before = verdict(&authorizer, self.base, &requests);
            let after = verdict(&authorizer, self.head, &requests);
            if before.0 == after.0 {
                continue;
            }
            // what denies on the denying side (its forbids), or, when nothing forbids there
            // (no permit applies), what permits on the other
            let (denying, allowing) = if after.0 { (&before, &after) } else { (&after, &before) };
            let policies: Vec<String> = if denying.1.is_empty() {
                allowing.1.iter().cloned().collect()
            } else {
                denying.1.iter().cloned().collect()
            };
            flips.push(Flip {
                widening: after.0,
                policies,
                asker: self.describe(a, u),
                question: format!(
                    "{} {} `{}`",
                    u.change.action.as_str(),
                    u.change.subject.as_str(),
                    u.change.name
                ),
            });
        }
        (flips, evaluated)
    }

    /// Whether a changed policy is satisfied, or fails, on one of the requests.
    fn touched(&self, authorizer: &Authorizer, requests: &[cedar_policy::Request]) -> bool {
        let entities = self.base.1;
        requests.iter().any(|r| {
            [&self.changed.permits, &self.changed.forbids]
                .into_iter()
                .filter(|set| !set.is_empty())
                .any(|set| {
                    let response = authorizer.is_authorized(r, set, entities);
                    response.diagnostics().reason().next().is_some() || response.diagnostics().errors().next().is_some()
                })
        })
    }

    /// "a member of an owner team, approved by a member of `platform` and one more".
    fn describe(&self, a: &Asker, u: &Unit) -> String {
        let team = |t: &str| {
            if self.literal_teams.contains(t) || u.change.subject == Subject::Object(Kind::Team) {
                format!("a member of `{t}`")
            } else if u.teams.iter().any(|x| x == t) {
                "a member of an owner team".to_owned()
            } else {
                format!("a member of `{t}`")
            }
        };
        let author = match &a.author {
            Author::Member(t) => team(t),
            Author::Other => "a member of another team".to_owned(),
            Author::Nobody => "a non-member".to_owned(),
            Author::Login(l) => format!("`{l}`"),
        };
        let more = |plus: bool| if plus { " and one more" } else { "" };
        match &a.approval {
            Approval::None => author,
            Approval::Team(t, plus) => format!("{author}, approved by {}{}", team(t), more(*plus)),
            Approval::Login(l, plus) => format!("{author}, approved by `{l}`{}", more(*plus)),
        }
    }
}

/// The contexts of a question's requests (its own, then each one it reaches) with `change`.
fn unit_contexts(p: &Prepared, change: &EntityUid) -> Result<Vec<Context>, String> {
    std::iter::once(&p.facts)
        .chain(p.reach.iter().map(|r| &r.facts))
        .map(|facts| {
            let mut pairs = facts.clone();
            pairs.push(("change".to_owned(), Rx::new_entity_uid(change.clone())));
            Context::from_pairs(pairs).map_err(|e| e.to_string())
        })
        .collect()
}

/// The requests of a question by `principal`, with its contexts.
fn requests(
    p: &Prepared,
    principal: &EntityUid,
    contexts: &[Context],
    schema: &cedar_policy::Schema,
) -> Result<Vec<cedar_policy::Request>, String> {
    std::iter::once((&p.action, &p.resource))
        .chain(p.reach.iter().map(|r| (&r.action, &r.resource)))
        .zip(contexts)
        .map(|((action, resource), c)| {
            cedar_policy::Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                c.clone(),
                model::checked(schema),
            )
            .map_err(|e| e.to_string())
        })
        .collect()
}

/// Allowed when every request is (errors deny, as in `check`); the determining policies of
/// the allow, or of the requests denied.
fn verdict(
    authorizer: &Authorizer,
    (engine, entities): (&Engine, &Entities),
    requests: &[cedar_policy::Request],
) -> Verdict {
    let mut all = (true, BTreeSet::new());
    let mut denied = BTreeSet::new();
    for r in requests {
        let set = r.action().map_or(&engine.policies, |a| engine.policies_for(a));
        let response = authorizer.is_authorized(r, set, entities);
        let ok = response.decision() == CedarDecision::Allow && response.diagnostics().errors().next().is_none();
        let ids = response.diagnostics().reason().map(|id| id.to_string());
        if ok {
            all.1.extend(ids);
        } else {
            all.0 = false;
            denied.extend(ids);
        }
    }
    if all.0 { all } else { (false, denied) }
}
