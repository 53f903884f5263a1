//! Decisions: authorise each prepared request and, for a denial, find the way out (pure).
//!
//! A decision is Allow only when Cedar allows **and** no policy failed to evaluate: Cedar
//! skips an erroring policy, which for a `forbid` would mean an accidental allow, so any
//! evaluation error denies and is reported. For a denial, rampart re-evaluates the request
//! with hypothetical approvals — one member of each team, then two, then one plus anyone —
//! and, when no approval helps, with a hypothetical author from each team, so the reviewer
//! reads "needs an approval from a member of `platform` (alice, bob)" instead of a policy id.

use super::Engine;
use super::model::{CHANGE_ID, Model, Prepared, Who, uid};
use crate::diagnostic::{Anchor, Code, Diagnostic};
use cedar_policy::{Authorizer, Decision as CedarDecision, Entity, EntityUid, Request, RestrictedExpression as Rx};
use serde::Serialize;
use std::collections::HashMap;

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
    /// Any one of these approvals allows the change.
    Approval { options: Vec<Need> },
    /// No approval helps this author; the change made by a member of one of these teams
    /// would be allowed, with these approvals (none when `needs` is empty).
    Author { teams: Vec<String>, needs: Vec<Need> },
    /// Neither approvals nor another author help: the change itself must change.
    None,
    /// Not searched (too many denials in one change set).
    NotSearched,
}

/// One way to satisfy the policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Need {
    pub team: String,
    /// How many approvals from the team (1 or 2), or 1 from the team plus 1 from anyone.
    pub count: u8,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub plus_anyone: bool,
    /// Members who could give it (the author excluded).
    pub members: Vec<String>,
}

impl Need {
    /// "an approval from a member of `platform` (alice, bob)".
    pub fn describe(&self) -> String {
        let who = if self.members.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.members.join(", "))
        };
        match (self.count, self.plus_anyone) {
            (2, _) => format!("two approvals from members of `{}`{who}", self.team),
            (_, true) => format!(
                "an approval from a member of `{}`{who} and one more approval",
                self.team
            ),
            _ => format!("an approval from a member of `{}`{who}", self.team),
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
            WayOut::None => "no approval can help: the change itself must change".into(),
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
        .map(|p| match p.request(&change, &engine.schema) {
            Ok(req) => evaluate(engine, &authorizer, &req, model),
            Err(e) => request_failed(e),
        })
        .collect();
    let denied: Vec<usize> = (0..out.len()).filter(|&i| !out[i].allowed).collect();
    if denied.is_empty() {
        return out;
    }
    let hypotheses = Hypotheses::add(engine, model);
    let mut budget = WAY_OUT_BUDGET;
    for (n, i) in denied.into_iter().enumerate() {
        out[i].way_out = Some(match &hypotheses {
            _ if n >= WAY_OUT_LIMIT || budget == 0 => WayOut::NotSearched,
            None => WayOut::None,
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
    let mut policies: Vec<String> = response.diagnostics().reason().map(|id| id.to_string()).collect();
    policies.sort();
    let allowed = response.decision() == CedarDecision::Allow && errors.is_empty();
    let advice = if allowed {
        Vec::new()
    } else {
        let mut a: Vec<String> = response
            .diagnostics()
            .reason()
            .filter_map(|id| engine.advice(id).map(str::to_owned))
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

fn request_failed(e: String) -> Decision {
    Decision {
        allowed: false,
        policies: Vec::new(),
        advice: Vec::new(),
        errors: vec![format!("the request does not match rampart's Cedar schema: {e}")],
        way_out: None,
    }
}

fn allowed(engine: &Engine, authorizer: &Authorizer, req: Result<Request, String>, model: &Model) -> bool {
    req.is_ok_and(|r| evaluate(engine, authorizer, &r, model).allowed)
}

/// Hypothetical users and changes added to the entities for the way-out search.
struct Hypotheses {
    /// Per team: (team, members other than the author, [one, two, one plus anyone] changes).
    teams: Vec<(String, Vec<String>, [Option<EntityUid>; 3])>,
    authors: Vec<(String, EntityUid)>,
}

impl Hypotheses {
    fn add(engine: &Engine, model: &mut Model) -> Option<Hypotheses> {
        let approvers: Vec<EntityUid> = model.who.approvers.iter().map(|a| uid("User", a)).collect();
        let n = model.who.approvers.len() as i64;
        let author = uid("User", &model.who.author);
        let mut extra: Vec<Entity> = Vec::new();
        let user = |id: &str, team: Option<&str>| {
            Entity::new_with_tags(
                uid("User", id),
                [("member".to_owned(), Rx::new_bool(true))],
                team.map(|t| uid("Team", t)),
                [],
            )
            .ok()
        };
        let change = |id: &str, parents: Vec<EntityUid>, approvals: i64| {
            Entity::new_with_tags(
                uid("Change", id),
                [
                    ("author".to_owned(), Rx::new_entity_uid(author.clone())),
                    ("approvals".to_owned(), Rx::new_long(approvals)),
                ],
                parents,
                [],
            )
            .ok()
        };
        let anyone = "?anyone";
        extra.push(user(anyone, None)?);
        let mut teams = Vec::new();
        let mut authors = Vec::new();
        for (team, members) in &model.teams {
            let others: Vec<String> = members
                .iter()
                .filter(|m| **m != model.who.author && !model.who.approvers.contains(m))
                .cloned()
                .collect();
            let (a, b) = (format!("?{team}"), format!("?{team}/2"));
            extra.push(user(&a, Some(team))?);
            extra.push(user(&b, Some(team))?);
            let author_id = format!("?author/{team}");
            extra.push(user(&author_id, Some(team))?);
            authors.push((team.clone(), uid("User", &author_id)));
            let mut ids: [Option<EntityUid>; 3] = [None, None, None];
            let with = |extra_users: &[&str]| -> Vec<EntityUid> {
                approvers
                    .iter()
                    .cloned()
                    .chain(extra_users.iter().map(|u| uid("User", u)))
                    .collect()
            };
            if !others.is_empty() {
                let id = format!("+{team}");
                extra.push(change(&id, with(&[&a]), n + 1)?);
                ids[0] = Some(uid("Change", &id));
                let id = format!("+{team}+any");
                extra.push(change(&id, with(&[&a, anyone]), n + 2)?);
                ids[2] = Some(uid("Change", &id));
            }
            if others.len() >= 2 {
                let id = format!("+{team}+{team}");
                extra.push(change(&id, with(&[&a, &b]), n + 2)?);
                ids[1] = Some(uid("Change", &id));
            }
            teams.push((team.clone(), others, ids));
        }
        let entities = std::mem::replace(&mut model.entities, cedar_policy::Entities::empty());
        match entities.clone().add_entities(extra, Some(&engine.schema)) {
            Ok(e) => {
                model.entities = e;
                Some(Hypotheses { teams, authors })
            }
            Err(_) => {
                model.entities = entities;
                None
            }
        }
    }

    /// The approvals that would let `principal` make change `i`, cheapest first.
    fn approvals(&self, q: &Query<'_>, principal: &EntityUid, budget: &mut usize) -> Option<Vec<Need>> {
        for (tier, count, plus) in [(0usize, 1u8, false), (1, 2, false), (2, 1, true)] {
            let mut options = Vec::new();
            for (team, members, ids) in &self.teams {
                let Some(id) = ids[tier].as_ref() else { continue };
                if q.allowed(principal, id, budget)? {
                    options.push(Need {
                        team: team.clone(),
                        count,
                        plus_anyone: plus,
                        members: members.clone(),
                    });
                }
            }
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
        let mut alone = Vec::new();
        for (team, author) in &self.authors {
            match q.allowed(author, &change, budget) {
                Some(true) => alone.push(team.clone()),
                Some(false) => {}
                None => return WayOut::NotSearched,
            }
        }
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
        if teams.is_empty() {
            WayOut::None
        } else {
            WayOut::Author { teams, needs }
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
    /// Whether `principal` may make the change with `change`'s approvals; `None` once the
    /// evaluation budget is spent.
    fn allowed(&self, principal: &EntityUid, change: &EntityUid, budget: &mut usize) -> Option<bool> {
        *budget = budget.checked_sub(1)?;
        let q = Prepared {
            principal: principal.clone(),
            action: self.prepared.action.clone(),
            resource: self.prepared.resource.clone(),
            facts: self.prepared.facts.clone(),
        };
        Some(allowed(
            self.engine,
            self.authorizer,
            q.request(change, &self.engine.schema),
            self.model,
        ))
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

    /// The login this identity names among `known` logins (compared case-insensitively, as
    /// GitHub does): the login itself, the local part of the email (GitHub's noreply
    /// `12345+login@users.noreply.github.com` included), or the name.
    pub fn match_login(&self, known: &HashMap<String, String>) -> Option<String> {
        let mut candidates: Vec<&str> = Vec::new();
        if let Some(l) = &self.login {
            candidates.push(l.trim_start_matches('@'));
        }
        if let Some(e) = &self.email {
            let local = e.split('@').next().unwrap_or("");
            candidates.push(local.split_once('+').map_or(local, |(_, rest)| rest));
            candidates.push(local);
        }
        if let Some(n) = &self.name {
            candidates.push(n.trim_start_matches('@'));
        }
        candidates
            .into_iter()
            .find_map(|c| known.get(&c.to_ascii_lowercase()).cloned())
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
    let mut known: HashMap<String, String> = HashMap::new();
    for (_, members) in teams {
        for m in members {
            known.entry(m.to_ascii_lowercase()).or_insert_with(|| m.clone());
        }
    }
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
