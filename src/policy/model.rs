//! The Cedar model of a change set: entities and one request per change (pure).
//!
//! Trust boundary: team membership and the resources' current attributes come from the
//! **base** revision (what is already merged), so a pull request cannot make its author an
//! owner or a platform member; the head's values are facts in the context. The schema
//! (`policies/rampart.cedarschema`) documents every attribute.

use crate::change::{Action, Change, Subject};
use crate::spec::{Kind, Object, PluginSpec, Quota, Repo, RolloutSpec, TenantSpec};
use crate::units::Quantity;
use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression as Rx, Schema,
};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;

/// The Cedar namespace of rampart's model.
pub const NAMESPACE: &str = "Rampart";
/// The id of the change under review.
pub const CHANGE_ID: &str = "change";

/// Who made the change and who approved it, as logins. Approvals are already filtered: the
/// author's own and non-members' do not count (see [`crate::policy::decide::resolve_who`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    pub author: String,
    pub approvers: Vec<String>,
}

/// The supply-chain facts of a plugin that policies see: computed by [`crate::supply`] for
/// the head revision's plugins with the **base** revision's keys (policy tests give them per
/// case; unknown plugins are untrusted and unsigned: fail closed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginFacts {
    pub trust_score: i64,
    pub signature_verified: bool,
}

/// Whose supply-chain facts: a plugin's (its current version's), or those of the new version
/// a rollout puts in its canaries (its own artifact and signature), by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactsOf<'a> {
    Plugin(&'a str),
    Rollout(&'a str),
}

/// Supplies [`PluginFacts`] of a plugin or a rollout's new version (facts of the head
/// revision).
pub type Facts<'a> = &'a (dyn Fn(FactsOf<'_>) -> PluginFacts + Sync);

/// Facts for every plugin and rollout: untrusted and unsigned (score 0).
pub fn no_facts(_: FactsOf<'_>) -> PluginFacts {
    PluginFacts::default()
}

/// One request, with its context kept apart from the `change` entity so that the same
/// request can be re-evaluated with hypothetical approvals.
pub struct Prepared {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub facts: Vec<(String, Rx)>,
    /// Why the change cannot be authorised at all (it is denied without asking Cedar).
    pub blocked: Option<String>,
    /// The tenants the change reaches besides its own object: one `reachTenant` request per
    /// class of tenants no decision can tell apart. The change is allowed only when its own
    /// request and every one of these are.
    pub reach: Vec<Reach>,
}

/// A request on something a change reaches besides its own object: a tenant
/// (`reachTenant`: a plugin or rollout change reaching it) or a team (`changeOwners`: a tenant
/// change adding or removing it as an owner). `names` are all alike for every policy (same
/// attributes and facts, and no policy names one of them), so it is asked once, with the
/// first of them as the resource.
pub struct Reach {
    pub action: EntityUid,
    /// What `names` are: "tenant" or "team".
    pub what: &'static str,
    pub names: Vec<String>,
    pub resource: EntityUid,
    pub facts: Vec<(String, Rx)>,
}

impl Prepared {
    /// The request with `context.change` set to `change`.
    pub fn request(&self, change: &EntityUid, schema: &Schema) -> Result<Request, String> {
        ask(
            &self.principal,
            &self.action,
            &self.resource,
            &self.facts,
            change,
            schema,
        )
    }

    /// The request of `r`, asked by this request's principal.
    pub fn reach_request(&self, r: &Reach, change: &EntityUid, schema: &Schema) -> Result<Request, String> {
        ask(&self.principal, &r.action, &r.resource, &r.facts, change, schema)
    }
}

/// A request with `context.change` set to `change`.
pub fn ask(
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
    facts: &[(String, Rx)],
    change: &EntityUid,
    schema: &Schema,
) -> Result<Request, String> {
    let mut pairs = facts.to_vec();
    pairs.push(("change".to_owned(), Rx::new_entity_uid(change.clone())));
    let ctx = Context::from_pairs(pairs).map_err(|e| e.to_string())?;
    Request::new(
        principal.clone(),
        action.clone(),
        resource.clone(),
        ctx,
        checked(schema),
    )
    .map_err(|e| e.to_string())
}

/// Entities and prepared requests of a change set.
pub struct Model {
    pub entities: Entities,
    pub prepared: Vec<Prepared>,
    /// Base team → members, for ways out.
    pub teams: Vec<(String, Vec<String>)>,
    pub who: Who,
    /// The teams a decision can tell apart from a team nobody names: named by a policy, in a
    /// reachable entity's attributes or a context, or a team of a user a request reaches
    /// (the author, the approvers, a user named so). Every other team is interchangeable
    /// with a fresh one, which the way-out search relies on.
    pub named_teams: HashSet<String>,
}

/// The schema to type-check entities and requests against: in debug builds (every test)
/// always; in release builds not, since both are built here from fixed types, and checking
/// 10k entities and requests costs more than deciding them. A mismatch that slipped through
/// would make a policy fail to evaluate, which denies.
pub fn checked(schema: &Schema) -> Option<&Schema> {
    cfg!(debug_assertions).then_some(schema)
}

pub fn uid(kind: &str, id: &str) -> EntityUid {
    // type names parsed once (a model builds thousands of uids)
    const KINDS: [&str; 8] = [
        "User", "Team", "Change", "Tenant", "Plugin", "Rollout", "File", "Action",
    ];
    static TYPES: std::sync::OnceLock<Vec<EntityTypeName>> = std::sync::OnceLock::new();
    let parse = |k: &str| EntityTypeName::from_str(&format!("{NAMESPACE}::{k}")).expect("static type name");
    let ty = match KINDS.iter().position(|k| *k == kind) {
        Some(i) => TYPES.get_or_init(|| KINDS.iter().map(|k| parse(k)).collect())[i].clone(),
        None => parse(kind),
    };
    EntityUid::from_type_name_and_id(ty, EntityId::new(id))
}

fn action_uid(action: Action, subject: Subject) -> EntityUid {
    uid("Action", &format!("{}{}", action.as_str(), subject.as_str()))
}

fn s(v: &str) -> Rx {
    Rx::new_string(v.to_owned())
}

/// A set of entity references. Every entity a context names goes through here, so that
/// [`referencing`] sees it and the entity is built.
fn set_of<'a>(kind: &'static str, ids: impl IntoIterator<Item = &'a str>) -> Rx {
    REFERENCED.with_borrow_mut(|r| {
        Rx::new_set(ids.into_iter().map(|i| {
            r.push((kind, i.to_owned()));
            Rx::new_entity_uid(uid(kind, i))
        }))
    })
}

/// Entities named by facts, as (type, id).
type References = Vec<(&'static str, String)>;

thread_local! {
    /// Entities named by the facts being built on this thread (see [`referencing`]).
    static REFERENCED: std::cell::RefCell<References> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` and return, besides its result, every entity it named through [`set_of`].
fn referencing<T>(f: impl FnOnce() -> T) -> (T, References) {
    let outer = REFERENCED.take();
    let out = f();
    (out, REFERENCED.replace(outer))
}

fn strings<'a>(ids: impl IntoIterator<Item = &'a str>) -> Rx {
    Rx::new_set(ids.into_iter().map(s))
}

fn record(fields: Vec<(&str, Rx)>) -> Rx {
    Rx::new_record(fields.into_iter().map(|(k, v)| (k.to_owned(), v))).expect("distinct keys")
}

fn tags(labels: &std::collections::BTreeMap<String, String>) -> Vec<(String, Rx)> {
    labels.iter().map(|(k, v)| (k.clone(), s(v))).collect()
}

/// Build the entities and requests for `changes` from `base` to `head`, with the teams (and
/// the current attributes of the objects it has) of `authority`, the revision whose rules are
/// in force (usually `base` itself). `Err` only when the entities themselves are rejected by
/// the schema (a bug, reported as "could not run").
pub fn build(
    authority: &Repo,
    base: &Repo,
    head: &Repo,
    changes: &[Change],
    who: &Who,
    facts: Facts<'_>,
    engine: &crate::policy::Engine,
) -> Result<Model, String> {
    build_naming(
        authority,
        base,
        head,
        changes,
        who,
        facts,
        &engine.schema,
        &engine.literals,
    )
}

/// [`build`] for the entities `literals` names (a policy names them, so the model keeps each
/// apart from objects it cannot otherwise tell from it): the impact builds one model for two
/// policy sets, with the literals of both.
#[allow(clippy::too_many_arguments)]
pub fn build_naming(
    authority: &Repo,
    base: &Repo,
    head: &Repo,
    changes: &[Change],
    who: &Who,
    facts: Facts<'_>,
    schema: &cedar_policy::Schema,
    literals: &HashSet<EntityUid>,
) -> Result<Model, String> {
    let mut entities: Vec<Entity> = Vec::new();
    // teams and users: membership from the authority (the rules in force) only
    let mut teams_of: foldhash::HashMap<&str, Vec<&str>> = foldhash::HashMap::default();
    let mut teams: Vec<(String, Vec<String>)> = Vec::new();
    let mut team_names: foldhash::HashSet<&str> = foldhash::HashSet::default();
    for t in &authority.teams {
        if !team_names.insert(t.name()) {
            continue;
        }
        entities.push(Entity::new_no_attrs(uid("Team", t.name()), HashSet::new()));
        // logins in their one normalised form (see `decide::resolve_who`)
        let members: Vec<String> = t.spec.members.iter().map(|m| m.to_ascii_lowercase()).collect();
        teams.push((t.name().to_owned(), members));
    }
    for (t, members) in &teams {
        for m in members {
            teams_of.entry(m.as_str()).or_default().push(t.as_str());
        }
    }
    for t in base.teams.iter().chain(&head.teams) {
        if team_names.insert(t.name()) {
            entities.push(Entity::new_no_attrs(uid("Team", t.name()), HashSet::new()));
        }
    }
    entities.push(entity(
        uid("Change", CHANGE_ID),
        vec![
            ("author", Rx::new_entity_uid(uid("User", &who.author))),
            ("approvals", Rx::new_long(who.approvers.len() as i64)),
        ],
        who.approvers.iter().map(|a| uid("User", a)).collect(),
        vec![],
    )?);
    // requests first: their contexts name the entities a decision can read
    let principal = uid("User", &who.author);
    // (only rollout facts need the tenant index)
    let rollouts = changes.iter().any(|c| c.subject == Subject::Object(Kind::Rollout));
    // (and only plugin and rollout changes the index of who runs which plugin)
    let reaching = rollouts || changes.iter().any(|c| c.subject == Subject::Object(Kind::Plugin));
    let sides = Revisions {
        base: Side::of(base, reaching),
        head: Side::of(head, reaching),
        current: (!std::ptr::eq(authority, base)).then(|| Side::of(authority, reaching)),
        literals,
    };
    // contexts are independent of each other: built on every core
    let (prepared, referenced): (Vec<Prepared>, Vec<References>) = changes
        .par_iter()
        .map(|c| {
            // an object whose base definition is invalid has no value to be judged against:
            // its change is judged as its creation (from nothing — the strictest judgement,
            // so its fix is never locked out); its deletion cannot be judged at all
            let as_created;
            let judged = if c.base_invalid {
                as_created = Change {
                    action: Action::Create,
                    ..c.clone()
                };
                &as_created
            } else {
                c
            };
            let blocked = c.base_invalid && c.new.is_none();
            let ((facts, reach), refs) = referencing(|| {
                if blocked {
                    (Vec::new(), Vec::new())
                } else {
                    (context(&sides, judged, facts), reaches(&sides, judged, facts))
                }
            });
            let p = Prepared {
                reach,
                principal: principal.clone(),
                action: action_uid(c.action, c.subject),
                resource: uid(c.subject.as_str(), &c.name),
                facts,
                blocked: blocked.then(|| {
                    format!(
                        "the base revision's {} `{}` is invalid, so its deletion cannot be judged against it; \
                         fix it in a change of its own (judged as its creation), then delete it",
                        c.subject.as_str(),
                        c.name
                    )
                }),
            };
            (p, refs)
        })
        .unzip();
    // Resources (the base value, or the head's for objects the change creates): only those a
    // request can reach. Cedar reads an entity only through a uid it already holds — the
    // principal, the resource, the context, a literal in a policy, or an attribute of an
    // entity it reached — so the closure of those is exactly what a decision can see, and a
    // one-tenant change does not build 10k tenant entities. Teams are all there (they have
    // no attributes); users only when reachable (below).
    // (foldhash: every object of every side is looked up here, 20k tenants on M)
    let mut reach: foldhash::HashMap<&str, foldhash::HashSet<&str>> = foldhash::HashMap::default();
    for c in changes {
        reach.entry(c.subject.as_str()).or_default().insert(&c.name);
    }
    for (kind, name) in referenced.iter().flatten() {
        reach.entry(kind).or_default().insert(name);
    }
    let prefix = format!("{NAMESPACE}::");
    for l in literals {
        if let Some(kind) = l.type_name().to_string().strip_prefix(&prefix)
            && let Some(kind) = ["Tenant", "Plugin", "Rollout"].into_iter().find(|k| *k == kind)
        {
            reach.entry(kind).or_default().insert(l.id().unescaped());
        }
    }
    let wanted = |reach: &foldhash::HashMap<&str, foldhash::HashSet<&str>>, kind, name| {
        reach
            .get(kind)
            .is_some_and(|n: &foldhash::HashSet<&str>| n.contains(name))
    };
    let mut seen: foldhash::HashSet<&str> = foldhash::HashSet::default();
    let mut rollout_plugins: Vec<&str> = Vec::new();
    // (the authority's current values first, when it is not the base itself)
    let current = sides.current.as_ref().map(|s| s.repo);
    let current_rollouts = current.map_or(&[][..], |a| &a.rollouts[..]);
    for r in current_rollouts.iter().chain(&base.rollouts).chain(&head.rollouts) {
        if wanted(&reach, "Rollout", r.name()) && seen.insert(r.name()) {
            rollout_plugins.push(&r.spec.plugin);
            entities.push(entity(
                uid("Rollout", r.name()),
                vec![
                    ("plugin", Rx::new_entity_uid(uid("Plugin", &r.spec.plugin))),
                    ("toVersion", s(&r.spec.to_version)),
                    ("strategy", s(&r.spec.strategy)),
                ],
                vec![],
                tags(&r.metadata.labels),
            )?);
        }
    }
    // (a rollout's plugin is reachable through the rollout; tenants and plugins name no
    // tenants or plugins)
    reach.entry("Plugin").or_default().extend(rollout_plugins);
    // the teams decisions can tell apart (see `Model::named_teams`)
    let mut named_teams: HashSet<String> = HashSet::new();
    let mut named_users: Vec<&str> = vec![who.author.as_str()];
    named_users.extend(who.approvers.iter().map(String::as_str));
    for l in literals {
        match l.type_name().to_string().strip_prefix(&prefix) {
            Some("Team") => {
                named_teams.insert(l.id().unescaped().to_owned());
            }
            Some("User") => named_users.push(l.id().unescaped()),
            _ => {}
        }
    }
    for (kind, name) in referenced.iter().flatten() {
        match *kind {
            "Team" => {
                named_teams.insert(name.clone());
            }
            "User" => named_users.push(name),
            _ => {}
        }
    }
    // a team change's resource is the team
    for c in changes.iter().filter(|c| c.subject == Subject::Object(Kind::Team)) {
        named_teams.insert(c.name.clone());
    }
    for u in &named_users {
        named_teams.extend(teams_of.get(u).into_iter().flatten().map(|t| t.to_string()));
    }
    // users: only those a request can reach (the same argument as for resources: a user is
    // read through its uid — the principal, an approval on the change, a literal or a fact)
    let users: BTreeSet<&str> = named_users.into_iter().collect();
    for u in users {
        let parents = teams_of
            .get(u)
            .map(|ts| ts.iter().map(|t| uid("Team", t)).collect::<Vec<_>>());
        let member = parents.is_some();
        entities.push(entity(
            uid("User", u),
            vec![("member", Rx::new_bool(member))],
            parents.unwrap_or_default(),
            vec![],
        )?);
    }
    seen.clear();
    let current_tenants = current.map_or(&[][..], |a| &a.tenants[..]);
    let empty = foldhash::HashSet::default();
    let reach_tenants = reach.get("Tenant").unwrap_or(&empty);
    for t in current_tenants.iter().chain(&base.tenants).chain(&head.tenants) {
        if !reach_tenants.is_empty() && reach_tenants.contains(t.name()) && seen.insert(t.name()) {
            named_teams.extend(t.spec.owners.iter().cloned());
            entities.push(tenant_entity(t)?);
        }
    }
    seen.clear();
    let current_plugins = current.map_or(&[][..], |a| &a.plugins[..]);
    for p in current_plugins.iter().chain(&base.plugins).chain(&head.plugins) {
        if wanted(&reach, "Plugin", p.name()) && seen.insert(p.name()) {
            entities.push(plugin_entity(p, facts(FactsOf::Plugin(p.name())))?);
        }
    }
    for c in changes.iter().filter(|c| c.subject == Subject::File) {
        entities.push(entity(
            uid("File", &c.name),
            vec![("path", s(&c.name))],
            vec![],
            vec![],
        )?);
    }
    // the action hierarchy (`createTenant` in `create`…) comes from the schema
    if checked(schema).is_none() {
        // (with the schema, `from_entities` adds them itself)
        let actions = schema.action_entities().map_err(|e| e.to_string())?;
        entities.extend(actions.iter().cloned());
    }
    let entities = Entities::from_entities(entities, checked(schema)).map_err(|e| e.to_string())?;
    Ok(Model {
        entities,
        prepared,
        teams,
        who: who.clone(),
        named_teams,
    })
}

fn entity(
    uid: EntityUid,
    attrs: Vec<(&str, Rx)>,
    parents: Vec<EntityUid>,
    tags: Vec<(String, Rx)>,
) -> Result<Entity, String> {
    Entity::new_with_tags(uid, attrs.into_iter().map(|(k, v)| (k.to_owned(), v)), parents, tags)
        .map_err(|e| e.to_string())
}

fn tenant_entity(t: &Object<TenantSpec>) -> Result<Entity, String> {
    entity(
        uid("Tenant", t.name()),
        vec![
            // (entity attributes are not context: no need to record what they name)
            (
                "owners",
                Rx::new_set(t.spec.owners.iter().map(|o| Rx::new_entity_uid(uid("Team", o)))),
            ),
            ("tier", s(&t.spec.tier)),
            ("isolation", s(&t.spec.isolation)),
        ],
        vec![],
        tags(&t.metadata.labels),
    )
}

fn plugin_entity(p: &Object<PluginSpec>, f: PluginFacts) -> Result<Entity, String> {
    entity(
        uid("Plugin", p.name()),
        vec![
            ("publisher", s(&p.spec.publisher)),
            ("version", s(&p.spec.version)),
            ("trustScore", Rx::new_long(f.trust_score)),
            ("signatureVerified", Rx::new_bool(f.signature_verified)),
            ("permissions", strings(p.spec.permissions.iter().map(String::as_str))),
        ],
        vec![],
        tags(&p.metadata.labels),
    )
}

/// The objects of a change: (old, new), where a creation's old and a deletion's new are the
/// other side, so facts compare a value with itself and show no growth.
fn sides_of<'a, S>(base: &'a [Object<S>], head: &'a [Object<S>], c: &Change) -> (&'a Object<S>, &'a Object<S>) {
    let old = c.old.map(|i| &base[i]);
    let new = c.new.map(|i| &head[i]);
    match (old, new) {
        (Some(o), Some(n)) => (o, n),
        (Some(o), None) => (o, o),
        (None, Some(n)) => (n, n),
        (None, None) => unreachable!("an object change has at least one side"),
    }
}

/// One revision with the indexes reach is read through.
struct Side<'a> {
    repo: &'a Repo,
    index: TenantIndex<'a>,
    runs: RunIndex<'a>,
}

impl<'a> Side<'a> {
    /// Indexes only when `wanted` (only plugin and rollout changes reach other tenants).
    fn of(repo: &'a Repo, wanted: bool) -> Side<'a> {
        Side {
            repo,
            index: TenantIndex::of(repo, &|_| wanted),
            runs: RunIndex::of(repo, wanted),
        }
    }

    fn tenant(&self, name: &str) -> Option<&'a Object<TenantSpec>> {
        self.index.by_name.get(name).map(|&i| &self.repo.tenants[i])
    }

    /// The tenants a rollout puts a canary in: its targets that run its plugin.
    fn rollout_targets(&self, r: &RolloutSpec) -> Vec<&'a Object<TenantSpec>> {
        let repo = self.repo;
        self.index
            .targets(r)
            .into_iter()
            .map(|i| &repo.tenants[i])
            .filter(|t| t.spec.plugins.iter().any(|p| p.name == r.plugin && !p.disabled))
            .collect()
    }
}

/// The revisions of a change set: base and head, and the revision whose rules are in force
/// when it is neither (a pull request's base branch tip: what the change will be merged into).
struct Revisions<'a> {
    base: Side<'a>,
    head: Side<'a>,
    current: Option<Side<'a>>,
    literals: &'a HashSet<EntityUid>,
}

impl<'a> Revisions<'a> {
    /// Every side that holds the tenants before the change: the base, and the current rules'
    /// revision.
    fn before(&self) -> impl Iterator<Item = &Side<'a>> {
        std::iter::once(&self.base).chain(self.current.as_ref())
    }

    /// Every side that holds the tenants after the change: the head, and the current rules'
    /// revision it will be merged into.
    fn after(&self) -> impl Iterator<Item = &Side<'a>> {
        std::iter::once(&self.head).chain(self.current.as_ref())
    }
}

/// Which tenants list each plugin (with whether it is enabled there).
struct RunIndex<'r> {
    lists: HashMap<&'r str, Vec<(usize, bool)>>,
}

impl<'r> RunIndex<'r> {
    fn of(repo: &'r Repo, wanted: bool) -> RunIndex<'r> {
        let mut lists: HashMap<&str, Vec<(usize, bool)>> = HashMap::new();
        if wanted {
            for (i, t) in repo.tenants.iter().enumerate() {
                for p in &t.spec.plugins {
                    lists.entry(p.name.as_str()).or_default().push((i, !p.disabled));
                }
            }
        }
        RunIndex { lists }
    }

    /// The tenants that list `plugin` (enabled or not: a disabled entry is compiled too).
    fn listing(&self, plugin: &str) -> &[(usize, bool)] {
        self.lists.get(plugin).map_or(&[], Vec::as_slice)
    }
}

/// What a change does to one tenant it reaches: the plugin it makes the tenant run, if any.
type Reached<'a> = std::collections::BTreeMap<&'a str, Option<PluginRun<'a>>>;

/// A plugin version a change makes a tenant run: the plugin's own, or a rollout's new one
/// (whose facts are its own artifact's and signature's).
#[derive(Clone, Copy)]
struct PluginRun<'a> {
    facts: FactsOf<'a>,
}

/// The requests on what change `c` reaches besides its own object (see [`Reach`]): every
/// tenant a plugin change reaches (that lists the plugin before or after it — a disabled
/// entry is compiled too), every tenant a rollout puts a canary in (before or after), and
/// every team a tenant change adds to or removes from its owners.
fn reaches<'a>(sides: &Revisions<'a>, c: &'a Change, facts: Facts<'_>) -> Vec<Reach> {
    let (base, head) = (sides.base.repo, sides.head.repo);
    let mut reached: Reached<'a> = std::collections::BTreeMap::new();
    fn before<'a>(name: &'a str, reached: &mut Reached<'a>) {
        reached.entry(name).or_insert(None);
    }
    match c.subject {
        Subject::Object(Kind::Plugin) => {
            // a change to the plugin's metadata alone (description, labels) compiles to
            // nothing in any tenant: it reaches none (who may edit the plugin is still decided)
            if let (Some(o), Some(n)) = (c.old, c.new)
                && base.plugins[o].spec == head.plugins[n].spec
            {
                return Vec::new();
            }
            // the tenants run another artifact only when it changes: a new plugin, or a new
            // version, artifact or signature (an edit of its description runs nothing new)
            let runs_new = match (c.old, c.new) {
                (Some(o), Some(n)) => {
                    let (o, n) = (&base.plugins[o].spec, &head.plugins[n].spec);
                    o.version != n.version || o.artifact != n.artifact || o.signature != n.signature
                }
                (None, Some(_)) => true,
                _ => false,
            };
            for side in sides.before() {
                for &(i, _) in side.runs.listing(&c.name) {
                    before(side.repo.tenants[i].name(), &mut reached);
                }
            }
            // after the change (and once merged into the current revision), a tenant that
            // enables the plugin runs the new artifact
            let run = PluginRun {
                facts: FactsOf::Plugin(&c.name),
            };
            for side in sides.after() {
                for &(i, enabled) in side.runs.listing(&c.name) {
                    let name = side.repo.tenants[i].name();
                    if enabled && runs_new && c.action != Action::Delete {
                        reached.insert(name, Some(run));
                    } else {
                        before(name, &mut reached);
                    }
                }
            }
        }
        Subject::Object(Kind::Rollout) => {
            // (a description or label edit compiles to nothing either)
            if let (Some(o), Some(n)) = (c.old, c.new)
                && base.rollouts[o].spec == head.rollouts[n].spec
            {
                return Vec::new();
            }
            if let Some(o) = c.old {
                for side in sides.before() {
                    for t in side.rollout_targets(&base.rollouts[o].spec) {
                        before(t.name(), &mut reached);
                    }
                }
            }
            if let Some(n) = c.new {
                let r = &head.rollouts[n].spec;
                // a canary runs `toVersion` from the rollout's own artifact: judged by its
                // integrity, signature (with the keys in force) and trust, as a plugin's
                let run = PluginRun {
                    facts: FactsOf::Rollout(&c.name),
                };
                for side in sides.after() {
                    for t in side.rollout_targets(r) {
                        reached.insert(t.name(), Some(run));
                    }
                }
            }
        }
        Subject::Object(Kind::Tenant) => return owner_reaches(sides, c),
        _ => return Vec::new(),
    }
    // classes of tenants no decision can tell apart
    let mut classes: Vec<Reach> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (name, runs) in reached {
        let current = sides.current.as_ref().and_then(|c| c.tenant(name));
        let old = sides.base.tenant(name);
        let new = sides.head.tenant(name);
        // the entity is the one the model builds (current rules' revision first, then base,
        // then head); the tier after the change the highest of the head's and the current one
        let (Some(entity), Some(after)) = (current.or(old).or(new), new.or(current).or(old)) else {
            continue;
        };
        let tier = match current {
            Some(c) if rank(&TIERS, &c.spec.tier) > rank(&TIERS, &after.spec.tier) => &c.spec.tier,
            _ => &after.spec.tier,
        };
        let (min_trust, signed, weakest_run) = match runs {
            None => (100, true, String::new()),
            Some(r) => {
                let f = facts(r.facts);
                // what the tenant would run: the plugin's new version, or the rollout's
                let head = sides.head.repo;
                let (plugin, version) = match r.facts {
                    FactsOf::Plugin(p) => (
                        p,
                        head.plugins
                            .iter()
                            .find(|x| x.name() == p)
                            .map(|x| x.spec.version.as_str()),
                    ),
                    FactsOf::Rollout(n) => match head.rollouts.iter().find(|x| x.name() == n) {
                        Some(x) => (x.spec.plugin.as_str(), Some(x.spec.to_version.as_str())),
                        None => (n, None),
                    },
                };
                (f.trust_score, f.signature_verified, weakest(&[(plugin, version, f)]))
            }
        };
        let key = if sides.literals.contains(&uid("Tenant", name)) {
            format!("named:{name}")
        } else {
            format!(
                "{:?}|{}|{}|{:?}|{tier}|{min_trust}|{signed}",
                entity.spec.owners, entity.spec.tier, entity.spec.isolation, entity.metadata.labels
            )
        };
        if let Some(&k) = at.get(&key) {
            classes[k].names.push(name.to_owned());
            continue;
        }
        at.insert(key, classes.len());
        // (named through `set_of`, so that the tenant's entity is built)
        let _ = set_of("Tenant", [name]);
        let pairs = vec![
            ("kind", s(c.subject.as_str())),
            ("name", s(&c.name)),
            ("changeAction", s(c.action.as_str())),
            ("newTier", s(tier)),
            (
                "addedPlugins",
                record(vec![
                    ("minTrustScore", Rx::new_long(min_trust)),
                    ("allSignaturesVerified", Rx::new_bool(signed)),
                    ("weakest", s(&weakest_run)),
                ]),
            ),
        ];
        classes.push(Reach {
            action: uid("Action", "reachTenant"),
            what: "tenant",
            names: vec![name.to_owned()],
            resource: uid("Tenant", name),
            facts: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        });
    }
    classes
}

/// One `changeOwners` request per team a tenant change adds to or removes from the tenant's
/// owners (every owner of a created or deleted tenant): each such team consents.
fn owner_reaches(sides: &Revisions<'_>, c: &Change) -> Vec<Reach> {
    let old = c.old.map(|i| &sides.base.repo.tenants[i].spec.owners);
    let new = c.new.map(|i| &sides.head.repo.tenants[i].spec.owners);
    let empty = Vec::new();
    let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let mut teams: Vec<(&str, bool)> = new
        .iter()
        .filter(|t| !old.contains(t))
        .map(|t| (t.as_str(), true))
        .chain(old.iter().filter(|t| !new.contains(t)).map(|t| (t.as_str(), false)))
        .collect();
    teams.sort_unstable();
    teams.dedup_by_key(|(t, _)| *t);
    teams
        .into_iter()
        .map(|(team, added)| {
            let _ = set_of("Team", [team]);
            let pairs = vec![
                ("tenant", Rx::new_entity_uid(uid("Tenant", &c.name))),
                ("tenantAction", s(c.action.as_str())),
                ("added", Rx::new_bool(added)),
            ];
            Reach {
                action: uid("Action", "changeOwners"),
                what: "team",
                names: vec![team.to_owned()],
                resource: uid("Team", team),
                facts: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            }
        })
        .collect()
}

fn context(sides: &Revisions<'_>, c: &Change, facts: Facts<'_>) -> Vec<(String, Rx)> {
    let (base, head) = (sides.base.repo, sides.head.repo);
    let pairs: Vec<(&str, Rx)> = match c.subject {
        Subject::Object(Kind::Tenant) => {
            let (old, new) = sides_of(&base.tenants, &head.tenants, c);
            tenant_facts(&old.spec, &new.spec, c.action, facts, head)
        }
        Subject::Object(Kind::Plugin) => {
            let (old, new) = sides_of(&base.plugins, &head.plugins, c);
            // the teams owning a tenant that lists the plugin, before or after the change
            let owners: BTreeSet<&str> = [&sides.base, &sides.head]
                .into_iter()
                .chain(sides.current.as_ref())
                .flat_map(|side| {
                    side.runs
                        .listing(&c.name)
                        .iter()
                        .flat_map(|&(i, _)| &side.repo.tenants[i].spec.owners)
                })
                .map(String::as_str)
                .collect();
            let added: Vec<&str> = if c.action == Action::Create {
                new.spec.permissions.iter().map(String::as_str).collect()
            } else {
                new.spec
                    .permissions
                    .iter()
                    .filter(|p| !old.spec.permissions.contains(p))
                    .map(String::as_str)
                    .collect()
            };
            let scopes: BTreeSet<&str> = added.iter().map(|p| p.split(':').next().unwrap_or(p)).collect();
            let f = facts(FactsOf::Plugin(new.name()));
            vec![
                ("oldVersion", s(&old.spec.version)),
                ("newVersion", s(&new.spec.version)),
                ("integrityChanged", Rx::new_bool(old.spec.artifact != new.spec.artifact)),
                ("permissionsAdded", strings(added.iter().copied())),
                ("permissionScopesAdded", strings(scopes)),
                ("newPublisher", s(&new.spec.publisher)),
                ("newTrustScore", Rx::new_long(f.trust_score)),
                ("newSignatureVerified", Rx::new_bool(f.signature_verified)),
                ("ownerTeamCount", Rx::new_long(owners.len() as i64)),
                ("ownerTeams", set_of("Team", owners)),
            ]
        }
        Subject::Object(Kind::Rollout) => {
            let (_, new) = sides_of(&base.rollouts, &head.rollouts, c);
            // a deletion is judged against the tenants it targeted in the base revision
            let side = if c.action == Action::Delete {
                &sides.base
            } else {
                &sides.head
            };
            rollout_facts(&new.spec, &side.rollout_targets(&new.spec))
        }
        Subject::Object(Kind::Team) => {
            let (old, new) = sides_of(&base.teams, &head.teams, c);
            let (added, removed) = members_changed(&old.spec, &new.spec, c.action);
            vec![
                ("membersAdded", set_of("User", added.iter().map(String::as_str))),
                ("membersRemoved", set_of("User", removed.iter().map(String::as_str))),
            ]
        }
        Subject::File => vec![],
    };
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The logins a team change adds and removes, in their normalised form (lowercase).
pub fn members_changed(
    old: &crate::spec::TeamSpec,
    new: &crate::spec::TeamSpec,
    action: Action,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let logins =
        |t: &crate::spec::TeamSpec| -> BTreeSet<String> { t.members.iter().map(|m| m.to_ascii_lowercase()).collect() };
    let (old, new) = match action {
        Action::Create => (BTreeSet::new(), logins(new)),
        Action::Delete => (logins(old), BTreeSet::new()),
        Action::Update => (logins(old), logins(new)),
    };
    (
        new.difference(&old).cloned().collect(),
        old.difference(&new).cloned().collect(),
    )
}

const TIERS: [&str; 3] = ["free", "team", "enterprise"];
const ISOLATION: [&str; 3] = ["shared", "namespace", "dedicated-nodes"];

fn rank(order: &[&str], v: &str) -> usize {
    order.iter().position(|x| *x == v).unwrap_or(0)
}

/// The quota growth of a created tenant, on every resource: from nothing.
const FROM_NOTHING: i64 = 1_000_000;

/// New quota as a percentage of the old, rounded up; 100 when either side does not parse
/// (validation reports it), 1,000,000 when the old quota was zero and the new is not.
pub fn percent(old: &Quantity, new: &Quantity) -> i64 {
    const CAP: i64 = 1_000_000;
    if old.nanos <= 0 {
        return if new.nanos <= 0 { 100 } else { CAP };
    }
    let scaled = new.nanos.saturating_mul(100);
    let p = scaled / old.nanos + i128::from(scaled % old.nanos != 0);
    p.clamp(0, CAP as i128) as i64
}

fn quota_percent(old: &serde_json::Value, new: &serde_json::Value) -> i64 {
    match (Quantity::from_json(old), Quantity::from_json(new)) {
        (Ok(o), Ok(n)) => percent(&o, &n),
        _ => 100,
    }
}

/// `name version: trust N (signed | not signed)` of the plugin that most fails the bar
/// (unsigned first, then the lowest score): what the advice of a denial names.
fn weakest(plugins: &[(&str, Option<&str>, PluginFacts)]) -> String {
    plugins
        .iter()
        .min_by_key(|(name, _, f)| (f.signature_verified, f.trust_score, *name))
        .map(|(name, version, f)| {
            format!(
                "{name}{}: trust {}, {}",
                version.map(|v| format!(" {v}")).unwrap_or_default(),
                f.trust_score,
                if f.signature_verified {
                    "signature verified"
                } else {
                    "no verified signature"
                }
            )
        })
        .unwrap_or_default()
}

/// The resource whose quota grows the most, for advice: `quotaChange`.
fn quota_change(old: &Quota, new: &Quota, percents: [i64; 4], created: bool) -> Rx {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let sides = [
        ("cpu", text(&old.cpu), text(&new.cpu)),
        ("memory", text(&old.memory), text(&new.memory)),
        ("pods", old.pods.to_string(), new.pods.to_string()),
        ("storage", text(&old.storage), text(&new.storage)),
    ];
    let at = (0..4).max_by_key(|&i| (percents[i], std::cmp::Reverse(i))).unwrap_or(0);
    let (resource, o, n) = &sides[at];
    record(vec![
        ("resource", s(resource)),
        ("old", s(if created { "0" } else { o })),
        ("new", s(n)),
        ("percent", Rx::new_long(percents[at])),
    ])
}

fn tenant_facts<'a>(
    old: &TenantSpec,
    new: &TenantSpec,
    action: Action,
    facts: Facts<'_>,
    head: &Repo,
) -> Vec<(&'a str, Rx)> {
    // a created tenant is judged like one raised from nothing: every resource it asks for
    // grows from zero, and any tier above free is a raise
    let created = action == Action::Create;
    // (even an all-zero quota: a new tenant is a namespace, RoleBindings and a name taken)
    let grown = |o: &serde_json::Value, n: &serde_json::Value| {
        if created { FROM_NOTHING } else { quota_percent(o, n) }
    };
    let cpu = grown(&old.quota.cpu, &new.quota.cpu);
    let memory = grown(&old.quota.memory, &new.quota.memory);
    let pods = grown(&old.quota.pods.into(), &new.quota.pods.into());
    let storage = grown(&old.quota.storage, &new.quota.storage);
    let max = cpu.max(memory).max(pods).max(storage);
    let old_tier = if created { "" } else { old.tier.as_str() };
    let tier_raised = if created {
        rank(&TIERS, &new.tier) > 0
    } else {
        rank(&TIERS, &new.tier) > rank(&TIERS, &old.tier)
    };
    let owners_added: Vec<&str> = new
        .owners
        .iter()
        .filter(|o| created || !old.owners.contains(o))
        .map(String::as_str)
        .collect();
    let enabled = |t: &TenantSpec| -> BTreeSet<String> {
        t.plugins
            .iter()
            .filter(|p| !p.disabled)
            .map(|p| p.name.clone())
            .collect()
    };
    let (old_enabled, new_enabled) = (enabled(old), enabled(new));
    let (added, removed): (Vec<&String>, Vec<&String>) = match action {
        Action::Create => (new_enabled.iter().collect(), vec![]),
        Action::Delete => (vec![], old_enabled.iter().collect()),
        Action::Update => (
            new_enabled.difference(&old_enabled).collect(),
            old_enabled.difference(&new_enabled).collect(),
        ),
    };
    // a tenant that becomes enterprise must meet the bar with every plugin it keeps, not
    // only with the ones this change adds
    let judged: Vec<&String> = if new.tier == "enterprise" && old.tier != "enterprise" {
        new_enabled.iter().collect()
    } else {
        added.clone()
    };
    let added_facts: Vec<PluginFacts> = judged.iter().map(|p| facts(FactsOf::Plugin(p))).collect();
    let min_trust = added_facts.iter().map(|f| f.trust_score).min().unwrap_or(100);
    let all_signed = added_facts.iter().all(|f| f.signature_verified);
    let version = |name: &str| {
        head.plugins
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.spec.version.as_str())
    };
    let described: Vec<(&str, Option<&str>, PluginFacts)> = judged
        .iter()
        .zip(&added_facts)
        .map(|(n, f)| (n.as_str(), version(n), *f))
        .collect();
    let allow_added: Vec<&str> = if action == Action::Create {
        new.network.allow_from.iter().map(String::as_str).collect()
    } else {
        new.network
            .allow_from
            .iter()
            .filter(|t| !old.network.allow_from.contains(t))
            .map(String::as_str)
            .collect()
    };
    let widened = action != Action::Delete && !allow_added.is_empty();
    vec![
        ("oldTier", s(old_tier)),
        ("newTier", s(&new.tier)),
        ("tierRaised", Rx::new_bool(tier_raised)),
        ("oldIsolation", s(&old.isolation)),
        ("newIsolation", s(&new.isolation)),
        (
            "isolationLowered",
            Rx::new_bool(rank(&ISOLATION, &new.isolation) < rank(&ISOLATION, &old.isolation)),
        ),
        (
            "quotaPercent",
            record(vec![
                ("cpu", Rx::new_long(cpu)),
                ("memory", Rx::new_long(memory)),
                ("pods", Rx::new_long(pods)),
                ("storage", Rx::new_long(storage)),
                ("max", Rx::new_long(max)),
            ]),
        ),
        (
            "quotaChange",
            quota_change(&old.quota, &new.quota, [cpu, memory, pods, storage], created),
        ),
        ("newOwners", set_of("Team", new.owners.iter().map(String::as_str))),
        ("ownersChanged", Rx::new_bool(old.owners != new.owners)),
        ("ownersAdded", set_of("Team", owners_added)),
        ("allowFromAdded", set_of("Tenant", allow_added)),
        ("networkWidened", Rx::new_bool(widened)),
        ("pluginsAdded", set_of("Plugin", added.iter().map(|p| p.as_str()))),
        ("pluginsRemoved", set_of("Plugin", removed.iter().map(|p| p.as_str()))),
        (
            "addedPlugins",
            record(vec![
                ("minTrustScore", Rx::new_long(min_trust)),
                ("allSignaturesVerified", Rx::new_bool(all_signed)),
                ("weakest", s(&weakest(&described))),
            ]),
        ),
    ]
}

/// Tenants by name and by label, so a rollout's targets cost lookups, not a scan of every
/// tenant per rollout (500 rollouts × 10k tenants in the M corpus).
pub struct TenantIndex<'r> {
    by_name: foldhash::HashMap<&'r str, usize>,
    by_label: foldhash::HashMap<(&'r str, &'r str), Vec<usize>>,
}

impl<'r> TenantIndex<'r> {
    pub fn new(repo: &'r Repo) -> TenantIndex<'r> {
        TenantIndex::of(repo, &|_| true)
    }

    /// The index of the tenants `wanted` accepts only (targets are then among them).
    pub fn of(repo: &'r Repo, wanted: &(dyn Fn(&str) -> bool + Sync)) -> TenantIndex<'r> {
        // (not sized up front: most change sets index no tenant at all)
        let mut by_name = foldhash::HashMap::default();
        let mut by_label: foldhash::HashMap<(&str, &str), Vec<usize>> = foldhash::HashMap::default();
        for (i, t) in repo.tenants.iter().enumerate().filter(|(_, t)| wanted(t.name())) {
            by_name.entry(t.name()).or_insert(i);
            for (k, v) in &t.metadata.labels {
                by_label.entry((k.as_str(), v.as_str())).or_default().push(i);
            }
        }
        TenantIndex { by_name, by_label }
    }

    /// The tenants a rollout targets: its names and every tenant its selector matches, in
    /// repo order.
    pub fn targets(&self, spec: &RolloutSpec) -> Vec<usize> {
        let mut out: Vec<usize> = spec
            .tenants
            .names
            .iter()
            .filter_map(|n| self.by_name.get(n.as_str()).copied())
            .collect();
        if let Some(sel) = &spec.tenants.selector {
            let lists: Option<Vec<&Vec<usize>>> = sel
                .match_labels
                .iter()
                .map(|(k, v)| self.by_label.get(&(k.as_str(), v.as_str())))
                .collect();
            match lists {
                // an empty selector matches every tenant
                _ if sel.match_labels.is_empty() => out.extend(self.by_name.values().copied()),
                Some(mut lists) => {
                    lists.sort_by_key(|l| l.len());
                    let rest = &lists[1..];
                    out.extend(
                        lists[0]
                            .iter()
                            .filter(|i| rest.iter().all(|l| l.binary_search(i).is_ok())),
                    );
                }
                None => {}
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn rollout_facts<'a>(spec: &RolloutSpec, targets: &[&Object<TenantSpec>]) -> Vec<(&'a str, Rx)> {
    let tiers: BTreeSet<&str> = targets.iter().map(|t| t.spec.tier.as_str()).collect();
    let mut previous = 0u64;
    let mut max_increase = 0u64;
    for step in &spec.steps {
        max_increase = max_increase.max(step.weight.saturating_sub(previous));
        previous = step.weight;
    }
    vec![
        ("tenants", set_of("Tenant", targets.iter().map(|t| t.name()))),
        ("tenantTiers", strings(tiers)),
        ("stepCount", Rx::new_long(spec.steps.len() as i64)),
        ("maxStepIncrease", Rx::new_long(max_increase as i64)),
        ("sloCount", Rx::new_long(spec.slos.len() as i64)),
        ("newStrategy", s(&spec.strategy)),
        ("newToVersion", s(&spec.to_version)),
    ]
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::spec::{Metadata, Origin, TeamSpec};

    fn team(name: &str, members: &[&str]) -> Object<TeamSpec> {
        Object::new(
            Metadata {
                name: name.into(),
                labels: Default::default(),
                description: None,
            },
            TeamSpec {
                members: members.iter().map(|m| m.to_string()).collect(),
                contact: None,
            },
            Origin {
                file: format!("teams/{name}.yaml"),
                doc: 0,
            },
        )
    }

    /// Logins and team names share no namespace (`User::"a"` is not `Team::"a"`), teams have
    /// no parents and a change is only in users: teams that list each other's names cannot
    /// form a cycle, and the hierarchy builds.
    #[test]
    fn entity_hierarchy_cannot_cycle() {
        let (engine, _) = crate::policy::Engine::load(&[]);
        let engine = engine.unwrap();
        let repo = Repo {
            teams: vec![
                team("a", &["b", "platform"]),
                team("b", &["a"]),
                team("platform", &["a"]),
            ],
            ..Repo::default()
        };
        let who = Who {
            author: "a".into(),
            approvers: vec!["b".into()],
        };
        let m = build(&repo, &repo, &repo, &[], &who, &no_facts, &engine).unwrap();
        let e = &m.entities;
        assert!(e.is_ancestor_of(&uid("Team", "b"), &uid("User", "a")));
        assert!(!e.is_ancestor_of(&uid("Team", "a"), &uid("User", "a")));
        // approved by b, who is in team a: the change is in team a, transitively
        assert!(e.is_ancestor_of(&uid("Team", "a"), &uid("Change", CHANGE_ID)));
        assert!(!e.is_ancestor_of(&uid("Team", "platform"), &uid("Change", CHANGE_ID)));
    }

    #[test]
    fn percent_rounds_up() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        assert_eq!(percent(&q("4"), &q("8")), 200);
        assert_eq!(percent(&q("1000"), &q("2001")), 201);
        assert_eq!(percent(&q("4"), &q("6")), 150);
        assert_eq!(percent(&q("0"), &q("1")), 1_000_000);
        assert_eq!(percent(&q("1Ti"), &q("512Gi")), 50);
    }
}
