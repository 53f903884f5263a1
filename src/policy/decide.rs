//! Decisions: authorise each prepared request and, for a denial, find the way out (pure).
//!
//! A decision is Allow only when Cedar allows **and** no policy failed to evaluate: Cedar
//! skips an erroring policy, which for a `forbid` would mean an accidental allow, so any
//! evaluation error denies and is reported. For a denial, rampart re-evaluates the request
//! with hypothetical approvals — one member of each team, then two, then one plus anyone —
//! and, when no approval helps, with a hypothetical author from each team, so the reviewer
//! reads "needs an approval from a member of `platform` (alice, bob)" instead of a policy id.

use super::Engine;
use super::model::{CHANGE_ID, Model, Prepared, Reach, Who, ask, checked, uid};
use crate::diagnostic::{Anchor, Code, Diagnostic};
use cedar_policy::{Authorizer, Decision as CedarDecision, Entity, EntityUid, Request, RestrictedExpression as Rx};
use serde::Serialize;
use std::collections::HashMap;
use std::str::FromStr;

/// The verdict on one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub allowed: bool,
    /// The determining policies: the forbids that matched on a denial, the permits on an allow.
    pub policies: Vec<String>,
    /// The `@advice` of the determining policies (of the forbids, on a denial).
    pub advice: Vec<String>,
    /// Policies that failed to evaluate (each one denies).
    pub errors: Vec<String>,
    /// For a denial: what would allow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub way_out: Option<WayOut>,
}

/// What would turn a denial into an allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum WayOut {
    /// Any one of these sets of approvals allows the change.
    Approval { options: Vec<Need> },
    /// No approval helps this author; the change made by a member of one of these teams
    /// would be allowed, with these approvals (none when `needs` is empty).
    Author { teams: Vec<String>, needs: Vec<Need> },
    /// Every one or two approvals and every other author were tried and none helps: the
    /// change itself must change (a policy that wants three approvals also lands here).
    None,
    /// Nothing found, but the search was not exhaustive (too many teams to try every pair).
    NotFound,
    /// Not searched (too many denials in one change set).
    NotSearched,
}

/// One set of approvals that satisfies the policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Need {
    /// One entry per approval (the same team twice: two approvals from its members).
    pub approvals: Vec<TeamApproval>,
    /// Plus one approval from anyone in a team (with no `approvals`: one approval from
    /// anyone in a team is all it needs).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub plus_anyone: bool,
}

/// An approval from a member of `team`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeamApproval {
    pub team: String,
    /// Members who could give it (the author and current approvers excluded).
    pub members: Vec<String>,
}

impl Need {
    /// "an approval from a member of `platform` (alice, bob) and one from a member of
    /// `security` (erin)".
    pub fn describe(&self) -> String {
        let who = |a: &TeamApproval| {
            if a.members.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.members.join(", "))
            }
        };
        let mut text = match &self.approvals[..] {
            [a] => format!("an approval from a member of `{}`{}", a.team, who(a)),
            [a, b] if a.team == b.team => format!("two approvals from members of `{}`{}", a.team, who(a)),
            [a, rest @ ..] => {
                let mut t = format!("an approval from a member of `{}`{}", a.team, who(a));
                for b in rest {
                    t.push_str(&format!(" and one from a member of `{}`{}", b.team, who(b)));
                }
                t
            }
            [] if self.plus_anyone => return "one more approval from anyone in a team".to_owned(),
            [] => "one approval".to_owned(),
        };
        if self.plus_anyone {
            text.push_str(" plus one more approval from anyone in a team");
        }
        text
    }
}

impl Need {
    /// Whether `self` asks strictly less than `other`: one approval from a team `other` asks
    /// for, plus one from anyone, where `other` asks for two named ones.
    fn weaker_than(&self, other: &Need) -> bool {
        match (&self.approvals[..], &other.approvals[..]) {
            ([a], [b, c]) if self.plus_anyone && !other.plus_anyone => a.team == b.team || a.team == c.team,
            _ => false,
        }
    }
}

impl WayOut {
    pub fn describe(&self) -> String {
        match self {
            WayOut::Approval { options } => format!(
                "needs {}",
                options.iter().map(Need::describe).collect::<Vec<_>>().join(", or ")
            ),
            WayOut::Author { teams, needs } => {
                let who = teams.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(" or ");
                let then = if needs.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", and then it needs {}",
                        needs.iter().map(Need::describe).collect::<Vec<_>>().join(", or ")
                    )
                };
                format!("no approval can help: only a member of {who} may make this change{then}")
            }
            WayOut::None => {
                "neither one or two approvals nor another author can help: the change itself must change".into()
            }
            WayOut::NotFound => "no single approval or pair of approvals from the same team helps; \
                                 too many teams to try every pair"
                .into(),
            WayOut::NotSearched => "too many denials to search for a way out; fix the first ones".into(),
        }
    }
}

/// Denials past this many get no way-out search (each search costs teams × 3 decisions).
pub const WAY_OUT_LIMIT: usize = 200;
/// Decisions the way-out search of one change set may spend (about a second).
pub const WAY_OUT_BUDGET: usize = 200_000;

/// Authorise every prepared request of `model` (on a thread with room for Cedar's
/// recursion; see [`super::with_big_stack`]).
pub fn decide(engine: &Engine, model: &mut Model) -> Vec<Decision> {
    super::with_big_stack(|| decide_here(engine, model))
}

fn decide_here(engine: &Engine, model: &mut Model) -> Vec<Decision> {
    let authorizer = Authorizer::new();
    let change = uid("Change", CHANGE_ID);
    let mut out: Vec<Decision> = model
        .prepared
        .iter()
        .map(|p| match (&p.blocked, p.request(&change, &engine.schema)) {
            (Some(why), _) => request_failed(why.clone()),
            (None, Ok(req)) => {
                let own = evaluate(engine, &authorizer, &req, model);
                let reached = p
                    .reach
                    .iter()
                    .map(|r| match p.reach_request(r, &change, &engine.schema) {
                        Ok(req) => (r, evaluate(engine, &authorizer, &req, model)),
                        Err(e) => (r, schema_mismatch(e)),
                    })
                    .collect();
                combine(own, reached)
            }
            (None, Err(e)) => schema_mismatch(e),
        })
        .collect();
    let denied: Vec<usize> = (0..out.len())
        .filter(|&i| !out[i].allowed && model.prepared[i].blocked.is_none())
        .collect();
    if denied.is_empty() {
        return out;
    }
    let hypotheses = Hypotheses::add(engine, model);
    let mut budget = WAY_OUT_BUDGET;
    for (n, i) in denied.into_iter().enumerate() {
        out[i].way_out = Some(match &hypotheses {
            _ if n >= WAY_OUT_LIMIT || budget == 0 => WayOut::NotSearched,
            None => WayOut::NotSearched,
            Some(h) => h.search(
                &Query {
                    engine,
                    authorizer: &authorizer,
                    model,
                    prepared: &model.prepared[i],
                },
                &mut budget,
            ),
        });
    }
    out
}

/// Authorise one request, failing closed on evaluation errors.
pub fn evaluate(engine: &Engine, authorizer: &Authorizer, req: &Request, model: &Model) -> Decision {
    let set = req.action().map_or(&engine.policies, |a| engine.policies_for(a));
    let response = authorizer.is_authorized(req, set, &model.entities);
    let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
    let allowed = response.decision() == CedarDecision::Allow && errors.is_empty();
    // a denial by an evaluation error is the erroring policies' (with the forbids that
    // matched, if any) — not the permits Cedar allowed with
    let erroring = response.diagnostics().errors().map(|e| match e {
        cedar_policy::AuthorizationError::PolicyEvaluationError(p) => p.policy_id(),
    });
    let deciding: Vec<&cedar_policy::PolicyId> = if !allowed && response.decision() == CedarDecision::Allow {
        erroring.collect()
    } else if !allowed {
        response.diagnostics().reason().chain(erroring).collect()
    } else {
        response.diagnostics().reason().collect()
    };
    let mut policies: Vec<String> = deciding.iter().map(|id| id.to_string()).collect();
    policies.sort();
    policies.dedup();
    let advice = if allowed {
        Vec::new()
    } else {
        let mut a: Vec<String> = deciding
            .iter()
            .filter_map(|id| engine.advice(id).map(|t| render_advice(t, req, &model.entities)))
            .collect();
        a.sort();
        a.dedup();
        a
    };
    Decision {
        allowed,
        policies,
        advice,
        errors,
        way_out: None,
    }
}

/// Longest `{…}` placeholder an advice template may hold.
const PLACEHOLDER: usize = 128;

/// An `@advice` with its placeholders filled from the request it is about: `{context.a.b}`,
/// `{resource.a}` or `{principal}` — a Cedar attribute path, evaluated against the request
/// and the entities — so a denial names the fact that decided ("cpu 6 → 14 (234 %)"). A
/// string renders as itself, an entity as its id, a set as its members joined with ", ". A
/// placeholder that is not such a path, or names an attribute the request does not have,
/// stays as written, braces included, so the policy's author sees it.
pub fn render_advice(template: &str, req: &Request, entities: &cedar_policy::Entities) -> String {
    fn path(p: &str) -> bool {
        let mut parts = p.split('.');
        matches!(parts.next(), Some("context" | "resource" | "principal"))
            && parts.all(|a| {
                let mut c = a.chars();
                c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                    && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
            })
    }
    fn show(v: &cedar_policy::EvalResult) -> String {
        use cedar_policy::EvalResult as V;
        match v {
            V::String(s) => s.clone(),
            // (an author who matches no member is `?unknown:<identity>`)
            V::EntityUid(u) => {
                let id = u.id().unescaped();
                id.strip_prefix("?unknown:").unwrap_or(id).to_owned()
            }
            V::Set(set) => {
                let items: Vec<String> = set.iter().map(show).collect();
                if items.is_empty() {
                    "none".to_owned()
                } else {
                    items.join(", ")
                }
            }
            other => other.to_string(),
        }
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        // (looked for only within a placeholder's length: a template of many `{` stays linear)
        let window = &after.as_bytes()[..after.len().min(PLACEHOLDER + 1)];
        let filled = window
            .iter()
            .position(|&b| b == b'}')
            .filter(|&close| path(after[..close].trim()))
            .and_then(|close| {
                let expr = cedar_policy::Expression::from_str(after[..close].trim()).ok()?;
                let v = cedar_policy::eval_expression(req, entities, &expr).ok()?;
                Some((show(&v), close))
            });
        match filled {
            Some((text, close)) => {
                // a value is data: it cannot open or close a code span, or hide characters
                let text = crate::diagnostic::visible(&text.replace('`', "'"), &[]);
                out.push_str(&text);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    if out.len() > ADVICE_CHARS {
        out.truncate(out.floor_char_boundary(ADVICE_CHARS));
        out.push('…');
    }
    out
}

/// Longest rendered advice: a denial's reason is a sentence, not a document.
const ADVICE_CHARS: usize = 1024;

fn schema_mismatch(e: String) -> Decision {
    request_failed(format!("the request does not match rampart's Cedar schema: {e}"))
}

/// Tenants named in one advice line about the tenants a change reaches.
const REACH_NAMES: usize = 5;

/// The decision on a change from its own request's and those of the tenants it reaches:
/// allowed only when all are; a denial names the forbids of every denied request, and each
/// advice about a reached tenant says which tenants.
fn combine(own: Decision, reached: Vec<(&Reach, Decision)>) -> Decision {
    if reached.iter().all(|(_, d)| d.allowed) {
        // (the permits that let the change reach its tenants decided too)
        let mut own = own;
        if own.allowed {
            for (_, d) in &reached {
                own.policies.extend(d.policies.iter().cloned());
            }
            own.policies.sort();
            own.policies.dedup();
        }
        return own;
    }
    let mut out = if own.allowed {
        Decision {
            allowed: false,
            policies: Vec::new(),
            advice: Vec::new(),
            errors: own.errors,
            way_out: None,
        }
    } else {
        own
    };
    // advice → what it is about ("tenant"/"team" and names), in order
    let mut about: Vec<(String, &str, Vec<&str>)> = Vec::new();
    for (r, d) in reached.iter().filter(|(_, d)| !d.allowed) {
        out.policies.extend(d.policies.iter().cloned());
        out.errors.extend(d.errors.iter().cloned());
        let advice = if d.advice.is_empty() && d.errors.is_empty() {
            vec![format!("Nothing permits the change to reach this {}.", r.what)]
        } else {
            d.advice.clone()
        };
        for a in advice {
            match about.iter_mut().find(|(x, w, _)| *x == a && *w == r.what) {
                Some((_, _, names)) => names.extend(r.names.iter().map(String::as_str)),
                None => about.push((a, r.what, r.names.iter().map(String::as_str).collect())),
            }
        }
    }
    for (a, what, mut names) in about {
        names.sort_unstable();
        names.dedup();
        let mut shown: Vec<String> = names.iter().take(REACH_NAMES).map(|t| format!("`{t}`")).collect();
        if names.len() > REACH_NAMES {
            shown.push(format!("{} more", names.len() - REACH_NAMES));
        }
        let (verb, noun) = match (what, names.len()) {
            ("team", 1) => ("concerns", "team".to_owned()),
            ("team", _) => ("concerns", "teams".to_owned()),
            (w, 1) => ("reaches", w.to_owned()),
            (w, _) => ("reaches", format!("{w}s")),
        };
        out.advice.push(format!("{a} ({verb} {noun} {})", shown.join(", ")));
    }
    out.policies.sort();
    out.policies.dedup();
    out.errors.dedup();
    out.advice.sort();
    out.advice.dedup();
    out
}

fn request_failed(e: String) -> Decision {
    Decision {
        allowed: false,
        policies: Vec::new(),
        advice: Vec::new(),
        errors: vec![e],
        way_out: None,
    }
}

fn allowed(engine: &Engine, authorizer: &Authorizer, req: Result<Request, String>, model: &Model) -> bool {
    // (only the verdict: no advice is rendered for the way-out search's hypotheses)
    req.is_ok_and(|r| {
        let set = r.action().map_or(&engine.policies, |a| engine.policies_for(a));
        let response = authorizer.is_authorized(&r, set, &model.entities);
        response.decision() == CedarDecision::Allow && response.diagnostics().errors().next().is_none()
    })
}

/// Teams up to which every pair of teams is tried (pairs cost teams² entities).
pub const PAIR_TEAMS: usize = 40;

/// One hypothetical set of approvals: the `Change` entity that has them, and what it means.
struct Hypothesis {
    change: EntityUid,
    need: Need,
}

/// Hypothetical users and changes added to the entities for the way-out search. Their ids
/// start with `?` and hold a `:`, which neither a login nor a team name can, so they never
/// meet a real user or each other.
struct Hypotheses {
    /// Cheapest first: one approval per team; then every way to get two — two from one team,
    /// one from each of two teams (when there are few enough teams), one from a team plus one
    /// from anyone — tried together so the weakest sufficient ones are found.
    tiers: Vec<Vec<Hypothesis>>,
    /// Whether every pair of teams was tried (else "not found" instead of "none").
    exhaustive: bool,
    authors: Vec<(String, EntityUid)>,
}

/// Stand-ins for the teams no decision can tell apart (see [`Model::named_teams`]): two, so
/// that a pair of such teams is two different teams. They are not team names (`?`, `:`).
const UNNAMED: [&str; 2] = ["?unnamed:1", "?unnamed:2"];

impl Hypotheses {
    /// Every hypothesis of every team, where a team no decision can tell apart from a fresh
    /// one is represented by a stand-in: such teams share one `Change` entity per tier (so
    /// a tier costs one decision per named team plus one, not one per team), and each still
    /// gets its own [`Need`], so the ways out read exactly as if every team had been tried.
    fn add(engine: &Engine, model: &mut Model) -> Option<Hypotheses> {
        let approvers: Vec<EntityUid> = model.who.approvers.iter().map(|a| uid("User", a)).collect();
        let n = model.who.approvers.len() as i64;
        let author = uid("User", &model.who.author);
        let mut extra: Vec<Entity> = Vec::new();
        let mut made: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut user = |extra: &mut Vec<Entity>, id: &str, team: Option<&str>| -> Option<EntityUid> {
            if made.insert(format!("User {id}")) {
                extra.push(
                    Entity::new_with_tags(
                        uid("User", id),
                        [("member".to_owned(), Rx::new_bool(true))],
                        team.map(|t| uid("Team", t)),
                        [],
                    )
                    .ok()?,
                );
            }
            Some(uid("User", id))
        };
        let mut changes: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut change = |extra: &mut Vec<Entity>, id: String, users: &[&str]| -> Option<EntityUid> {
            if changes.insert(id.clone()) {
                let parents = approvers.iter().cloned().chain(users.iter().map(|u| uid("User", u)));
                extra.push(
                    Entity::new_with_tags(
                        uid("Change", &id),
                        [
                            ("author".to_owned(), Rx::new_entity_uid(author.clone())),
                            ("approvals".to_owned(), Rx::new_long(n + users.len() as i64)),
                        ],
                        parents.collect::<Vec<_>>(),
                        [],
                    )
                    .ok()?,
                );
            }
            Some(uid("Change", &id))
        };
        let anyone = "?anyone:";
        user(&mut extra, anyone, None)?;
        for t in UNNAMED {
            extra.push(Entity::new_no_attrs(uid("Team", t), std::collections::HashSet::new()));
        }
        // members who could still approve: not the author, not already approving
        let teams: Vec<(&str, Vec<String>)> = model
            .teams
            .iter()
            .map(|(t, members)| {
                let others = members
                    .iter()
                    .filter(|m| **m != model.who.author && !model.who.approvers.contains(m))
                    .cloned()
                    .collect();
                (t.as_str(), others)
            })
            .collect();
        // the team that stands for `t` in decisions (`second`: the other stand-in)
        let named = &model.named_teams;
        let stand_in = |t: &str, second: bool| -> String {
            if named.contains(t) {
                t.to_owned()
            } else {
                UNNAMED[usize::from(second)].to_owned()
            }
        };
        let mut authors = Vec::new();
        let (mut one, mut two, mut pairs, mut plus) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let approval = |t: &str, m: &[String]| TeamApproval {
            team: t.to_owned(),
            members: m.to_vec(),
        };
        for (t, others) in &teams {
            let r = stand_in(t, false);
            let (a, b, w) = (format!("?team:{r}"), format!("?team2:{r}"), format!("?author:{r}"));
            user(&mut extra, &a, Some(&r))?;
            user(&mut extra, &b, Some(&r))?;
            authors.push((t.to_string(), user(&mut extra, &w, Some(&r))?));
            if !others.is_empty() {
                one.push(Hypothesis {
                    change: change(&mut extra, format!("?one:{r}"), &[&a])?,
                    need: Need {
                        approvals: vec![approval(t, others)],
                        plus_anyone: false,
                    },
                });
                plus.push(Hypothesis {
                    change: change(&mut extra, format!("?plus:{r}"), &[&a, anyone])?,
                    need: Need {
                        approvals: vec![approval(t, others)],
                        plus_anyone: true,
                    },
                });
            }
            if others.len() >= 2 {
                two.push(Hypothesis {
                    change: change(&mut extra, format!("?two:{r}"), &[&a, &b])?,
                    need: Need {
                        approvals: vec![approval(t, others), approval(t, others)],
                        plus_anyone: false,
                    },
                });
            }
        }
        let exhaustive = teams.len() <= PAIR_TEAMS;
        if exhaustive {
            for (i, (t, m)) in teams.iter().enumerate() {
                for (u, k) in &teams[i + 1..] {
                    if m.is_empty() || k.is_empty() {
                        continue;
                    }
                    let (rt, ru) = (stand_in(t, false), stand_in(u, true));
                    let (a, b) = (format!("?team:{rt}"), format!("?team:{ru}"));
                    user(&mut extra, &a, Some(&rt))?;
                    user(&mut extra, &b, Some(&ru))?;
                    pairs.push(Hypothesis {
                        change: change(&mut extra, format!("?pair:{rt}:{ru}"), &[&a, &b])?,
                        need: Need {
                            approvals: vec![approval(t, m), approval(u, k)],
                            plus_anyone: false,
                        },
                    });
                }
            }
        }
        let entities = std::mem::replace(&mut model.entities, cedar_policy::Entities::empty());
        match entities.clone().add_entities(extra, checked(&engine.schema)) {
            Ok(e) => {
                model.entities = e;
                Some(Hypotheses {
                    tiers: vec![one, two.into_iter().chain(pairs).chain(plus).collect()],
                    exhaustive,
                    authors,
                })
            }
            Err(_) => {
                model.entities = entities;
                None
            }
        }
    }

    /// The approvals that would let `principal` make the change: the options of the
    /// cheapest tier that has any, each one minimal — an option is dropped when a weaker one
    /// of the same tier suffices (one member of `platform` plus anyone is weaker than two
    /// members of `platform`, or than one of `platform` and one of `security`).
    fn approvals(&self, q: &Query<'_>, principal: &EntityUid, budget: &mut usize) -> Option<Vec<Need>> {
        for tier in &self.tiers {
            let allowed = q.each_allowed(tier.iter().map(|h| (principal, &h.change)), budget)?;
            let results: Vec<(&Need, bool)> = tier.iter().map(|h| &h.need).zip(allowed).collect();
            // "plus anyone" holds only if no second approval breaks it: every two-approval
            // option with the same team that was tried (two of it, it and each other team)
            // must allow too — a policy may refuse an approval from some team
            let sound = |n: &Need| {
                !n.plus_anyone
                    || results.iter().all(|(m, ok)| {
                        *ok || m.plus_anyone
                            || m.approvals.len() < 2
                            || !m.approvals.iter().any(|a| a.team == n.approvals[0].team)
                    })
            };
            let found: Vec<&Need> = results
                .iter()
                .filter(|(n, ok)| *ok && sound(n))
                .map(|(n, _)| *n)
                .collect();
            // one approval from any team at all: say so instead of listing every team
            if found.len() > 1
                && found.len() == tier.len()
                && found.iter().all(|n| n.approvals.len() == 1 && !n.plus_anyone)
            {
                return Some(vec![Need {
                    approvals: Vec::new(),
                    plus_anyone: true,
                }]);
            }
            let options: Vec<Need> = found
                .iter()
                .filter(|n| !found.iter().any(|m| m.weaker_than(n)))
                .map(|n| (*n).clone())
                .collect();
            if !options.is_empty() {
                return Some(options);
            }
        }
        None
    }

    fn search(&self, q: &Query<'_>, budget: &mut usize) -> WayOut {
        let change = uid("Change", CHANGE_ID);
        let principal = q.prepared.principal.clone();
        let exhausted = |budget: &usize| *budget == 0;
        if let Some(options) = self.approvals(q, &principal, budget) {
            return WayOut::Approval { options };
        }
        if exhausted(budget) {
            return WayOut::NotSearched;
        }
        // no approval helps this author: would another author be allowed, as is?
        let Some(allowed) = q.each_allowed(self.authors.iter().map(|(_, author)| (author, &change)), budget) else {
            return WayOut::NotSearched;
        };
        let alone: Vec<String> = self
            .authors
            .iter()
            .zip(allowed)
            .filter(|(_, a)| *a)
            .map(|((team, _), _)| team.clone())
            .collect();
        if !alone.is_empty() {
            return WayOut::Author {
                teams: alone,
                needs: Vec::new(),
            };
        }
        // …or with approvals
        let mut teams = Vec::new();
        let mut needs = Vec::new();
        for (team, author) in &self.authors {
            if let Some(options) = self.approvals(q, author, budget) {
                teams.push(team.clone());
                if needs.is_empty() {
                    needs = options;
                }
            } else if exhausted(budget) {
                return WayOut::NotSearched;
            }
        }
        match (teams.is_empty(), self.exhaustive) {
            (false, _) => WayOut::Author { teams, needs },
            (true, true) => WayOut::None,
            (true, false) => WayOut::NotFound,
        }
    }
}

/// One denied request being searched for a way out.
struct Query<'a> {
    engine: &'a Engine,
    authorizer: &'a Authorizer,
    model: &'a Model,
    prepared: &'a Prepared,
}

impl Query<'_> {
    /// Whether each (principal, change) may make the change, each distinct question asked of
    /// Cedar once; `None` when the evaluation budget does not cover them (what is left of it
    /// is spent, as asking them one by one would). Evaluated in parallel.
    fn each_allowed<'x>(
        &self,
        asks: impl Iterator<Item = (&'x EntityUid, &'x EntityUid)>,
        budget: &mut usize,
    ) -> Option<Vec<bool>> {
        let asks: Vec<(&EntityUid, &EntityUid)> = asks.collect();
        let mut distinct: Vec<(&EntityUid, &EntityUid)> = Vec::new();
        let mut at: HashMap<(&EntityUid, &EntityUid), usize> = HashMap::new();
        let slots: Vec<usize> = asks
            .iter()
            .map(|ask| {
                *at.entry(*ask).or_insert_with(|| {
                    distinct.push(*ask);
                    distinct.len() - 1
                })
            })
            .collect();
        let Some(left) = budget.checked_sub(distinct.len()) else {
            *budget = 0;
            return None;
        };
        *budget = left;
        let answers = super::map_big_stack(&distinct, |(principal, change)| self.allowed(principal, change));
        Some(slots.into_iter().map(|i| answers[i]).collect())
    }

    /// Whether `principal` may make the change with `change`'s approvals: its own request
    /// and every tenant it reaches.
    fn allowed(&self, principal: &EntityUid, change: &EntityUid) -> bool {
        let p = self.prepared;
        let ok = |action: &EntityUid, resource: &EntityUid, facts: &[(String, Rx)]| {
            let req = ask(principal, action, resource, facts, change, &self.engine.schema);
            allowed(self.engine, self.authorizer, req, self.model)
        };
        ok(&p.action, &p.resource, &p.facts) && p.reach.iter().all(|r| ok(&r.action, &r.resource, &r.facts))
    }
}

/// How a person is named in a commit or on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// A login given explicitly (`--author`, `--approved-by`).
    pub login: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
}

impl Identity {
    pub fn login(login: &str) -> Identity {
        Identity {
            login: Some(login.to_owned()),
            ..Identity::default()
        }
    }

    /// Parse a trailer value: `login`, `Name <email>` or `<email>`.
    pub fn parse_trailer(value: &str) -> Identity {
        let value = value.trim();
        match (value.find('<'), value.rfind('>')) {
            (Some(open), Some(close)) if open < close => {
                let name = value[..open].trim();
                Identity {
                    login: None,
                    name: (!name.is_empty()).then(|| name.to_owned()),
                    email: Some(value[open + 1..close].trim().to_owned()),
                }
            }
            _ if value.contains(' ') => Identity {
                login: None,
                name: Some(value.to_owned()),
                email: None,
            },
            _ => Identity::login(value),
        }
    }

    /// For messages: `login`, or `Name <email>`.
    pub fn display(&self) -> String {
        if let Some(l) = &self.login {
            return l.clone();
        }
        match (&self.name, &self.email) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => n.clone(),
            (None, Some(e)) => format!("<{e}>"),
            (None, None) => "(nobody)".into(),
        }
    }

    /// The login this identity names among `known` logins (lowercase; compared
    /// case-insensitively, as GitHub does), in that lowercase form: the login itself, the
    /// local part of the email (GitHub's noreply `12345+login@users.noreply.github.com`
    /// included), or the name.
    pub fn match_login(&self, known: &std::collections::HashSet<String>) -> Option<String> {
        let mut candidates: Vec<&str> = Vec::new();
        if let Some(l) = &self.login {
            candidates.push(l.trim_start_matches('@'));
        }
        if let Some(e) = &self.email {
            let (local, domain) = e.rsplit_once('@').unwrap_or((e, ""));
            // GitHub's noreply address: `12345+login@users.noreply.github.com`
            if domain.eq_ignore_ascii_case("users.noreply.github.com")
                && let Some((id, login)) = local.split_once('+')
                && id.bytes().all(|b| b.is_ascii_digit())
            {
                candidates.push(login);
            }
            candidates.push(local);
        }
        if let Some(n) = &self.name {
            candidates.push(n.trim_start_matches('@'));
        }
        candidates
            .into_iter()
            .map(str::to_ascii_lowercase)
            .find(|c| known.contains(c))
    }
}

/// Who made and who approved the change, resolved against the base revision's teams.
/// An author who matches no member stays a principal (an unknown user, in no team: the
/// default policies deny it everything); approvals by non-members and by the author do not
/// count. Each such decision is a warning at `source` (where the identity came from).
pub fn resolve_who(
    teams: &[(String, Vec<String>)],
    author: &Identity,
    approvers: &[Identity],
    source: &str,
) -> (Who, Vec<Diagnostic>) {
    // logins are case-insensitive (GitHub's): every login is known, and named to policies,
    // in one normalised form, lowercase, whatever spelling a team file or a trailer used
    let known: std::collections::HashSet<String> = teams
        .iter()
        .flat_map(|(_, members)| members.iter().map(|m| m.to_ascii_lowercase()))
        .collect();
    let mut diags = Vec::new();
    let at = || {
        if source.is_empty() {
            Anchor::None
        } else {
            Anchor::File {
                file: source.to_owned(),
            }
        }
    };
    let author_login = match author.match_login(&known) {
        Some(l) => l,
        None => {
            diags.push(
                Diagnostic::new(
                    Code::UnknownAuthor,
                    at(),
                    format!(
                        "the author {} is not a member of any team; policies see an unknown user",
                        author.display()
                    ),
                )
                .with_hint("add the login to a team in teams/, or pass --author LOGIN"),
            );
            // an id no login can take, so an unknown author never matches a member
            format!("?unknown:{}", author.display())
        }
    };
    let mut logins: Vec<String> = Vec::new();
    for a in approvers {
        match a.match_login(&known) {
            Some(l) if l == author_login => diags.push(
                Diagnostic::new(
                    Code::SelfApproval,
                    at(),
                    format!("{} approved their own change; the approval does not count", a.display()),
                )
                .with_hint("ask another member for the approval"),
            ),
            Some(l) => {
                if !logins.contains(&l) {
                    logins.push(l);
                }
            }
            None => diags.push(
                Diagnostic::new(
                    Code::ApproverNotMember,
                    at(),
                    format!(
                        "{} approved, but is not a member of any team; the approval does not count",
                        a.display()
                    ),
                )
                .with_hint("approvals count only from members listed in teams/ of the base revision"),
            ),
        }
    }
    logins.sort();
    (
        Who {
            author: author_login,
            approvers: logins,
        },
        diags,
    )
}
