//! Plan: what a change does to the cluster — compiled base vs compiled head, object by
//! object (pure).
//!
//! Objects are matched by their output path (namespace, kind, name). Each added, changed or
//! removed object gets a unified diff of its YAML (Myers, with a deadline, so a pathological
//! pair cannot stall a PR). The summary counts changes by tenant and kind and raises risk
//! flags: deletions, quota increases, network widening, RBAC changes, isolation downgrades.

pub mod stream;

use crate::change::Action;
use crate::compile::Manifest;
use crate::units::Quantity;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long one object's diff may take before similar falls back to a coarser diff.
pub const DIFF_DEADLINE: Duration = Duration::from_millis(200);

/// One added, changed or removed object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectChange {
    pub action: Action,
    pub path: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub tenant: String,
    /// Unified diff of the YAML (`a/<path>` → `b/<path>`).
    pub diff: String,
    pub lines_added: usize,
    pub lines_removed: usize,
}

/// Something a reviewer should look at twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Risk {
    pub kind: RiskKind,
    pub tenant: String,
    pub path: String,
    pub detail: String,
    /// A network widening whose new peers are all in the tenant's own namespace.
    #[serde(skip)]
    pub within_tenant: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RiskKind {
    Deletion,
    QuotaIncrease,
    NetworkWidening,
    RbacChange,
    IsolationDowngrade,
    SigningKey,
    /// The change's policies or teams allow something the base's denied.
    PolicyWidening,
}

impl RiskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskKind::Deletion => "deletion",
            RiskKind::QuotaIncrease => "quota increase",
            RiskKind::NetworkWidening => "network widening",
            RiskKind::RbacChange => "RBAC change",
            RiskKind::IsolationDowngrade => "isolation downgrade",
            RiskKind::SigningKey => "signing key",
            RiskKind::PolicyWidening => "policy widening",
        }
    }
}

/// Counts of added, changed and removed objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
}

impl Counts {
    fn add(&mut self, a: Action) {
        match a {
            Action::Create => self.added += 1,
            Action::Update => self.changed += 1,
            Action::Delete => self.removed += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.added + self.changed + self.removed
    }

    /// Add `other`'s counts to these.
    pub fn merge(&mut self, other: &Counts) {
        self.added += other.added;
        self.changed += other.changed;
        self.removed += other.removed;
    }
}

/// The plan of a change.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub changes: Vec<ObjectChange>,
    pub unchanged: usize,
    pub totals: Counts,
    pub by_tenant: BTreeMap<String, Counts>,
    pub by_kind: BTreeMap<String, Counts>,
    pub risks: Vec<Risk>,
    /// The guarded files the change touches, with their own diffs ([`file_changes`]).
    pub files: Vec<FileChange>,
    /// Deleted + created objects with equal specs ([`likely_renames`]).
    pub renames: Vec<Rename>,
    /// Teams whose membership the change sets ([`team_changes`]).
    pub teams: Vec<TeamChange>,
}

/// A unified diff of one file or object (`a/<path>` → `b/<path>`, `/dev/null` for a side that
/// does not exist), with the lines it adds and removes.
pub fn unified(path: &str, a: Option<&str>, b: Option<&str>) -> (String, usize, usize) {
    let diff = similar::TextDiff::configure()
        .algorithm(similar::Algorithm::Myers)
        .timeout(DIFF_DEADLINE)
        .diff_lines(a.unwrap_or_default(), b.unwrap_or_default());
    let (mut added, mut removed) = (0, 0);
    for op in diff.ops() {
        for change in diff.iter_changes(op) {
            match change.tag() {
                similar::ChangeTag::Insert => added += 1,
                similar::ChangeTag::Delete => removed += 1,
                similar::ChangeTag::Equal => {}
            }
        }
    }
    let side = |exists: bool, prefix: &str| {
        if exists {
            format!("{prefix}/{path}")
        } else {
            "/dev/null".into()
        }
    };
    let unified = diff
        .unified_diff()
        .context_radius(3)
        .header(&side(a.is_some(), "a"), &side(b.is_some(), "b"))
        .to_string();
    (unified, added, removed)
}

/// A guarded file (`rampart.yaml`, `policies/**`, `keys/**`) the change adds, edits or
/// removes: it compiles to nothing, so the reviewer reads its own diff.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    pub action: Action,
    pub path: String,
    /// Unified diff of the text, or a one-line summary of a file that is not UTF-8 text, is
    /// over [`FILE_DIFF_BYTES`] or could not be read (a link, a submodule: the reason).
    pub diff: String,
    pub lines_added: usize,
    pub lines_removed: usize,
}

/// Guarded files larger than this are summarised, not diffed.
pub const FILE_DIFF_BYTES: usize = 256 * 1024;

/// What one side of a guarded file read as: its bytes, or why it could not be read.
pub type FileRead = std::collections::HashMap<String, Result<Vec<u8>, String>>;

/// The diffs of the guarded files that `changes` names (`File` changes: the name is the
/// path), from what each side read of them.
pub fn file_changes(changes: &[crate::change::Change], base: &FileRead, head: &FileRead) -> Vec<FileChange> {
    let mut out = Vec::new();
    for c in changes.iter().filter(|c| c.subject == crate::change::Subject::File) {
        let path = c.name.as_str();
        let side = |read: &FileRead, exists: bool| -> Result<Option<String>, String> {
            if !exists {
                return Ok(None);
            }
            match read.get(path) {
                Some(Ok(b)) if b.len() > FILE_DIFF_BYTES => Err(format!("{} bytes", b.len())),
                Some(Ok(b)) => match std::str::from_utf8(b) {
                    Ok(t) => Ok(Some(t.to_owned())),
                    Err(_) => Err(format!("{} bytes, not UTF-8 text", b.len())),
                },
                Some(Err(why)) => Err(why.clone()),
                None => Err("not read".to_owned()),
            }
        };
        let (a, b) = (
            side(base, c.action != Action::Create),
            side(head, c.action != Action::Delete),
        );
        let (diff, lines_added, lines_removed) = match (a, b) {
            (Ok(Some(a)), Ok(Some(b))) if a == b => (
                format!("--- {path}: same content; its mode or type changed (e.g. made executable)\n"),
                0,
                0,
            ),
            (Ok(a), Ok(b)) => unified(path, a.as_deref(), b.as_deref()),
            (a, b) => {
                let what = |s: Result<Option<String>, String>| match s {
                    Ok(None) => "nothing".to_owned(),
                    Ok(Some(t)) => format!("{} bytes", t.len()),
                    Err(why) => why,
                };
                (format!("--- {path}: not shown ({} → {})\n", what(a), what(b)), 0, 0)
            }
        };
        out.push(FileChange {
            action: c.action,
            path: path.to_owned(),
            diff,
            lines_added,
            lines_removed,
        });
    }
    out
}

/// A signing key added or edited widens what counts as signed: one risk per such file.
pub fn key_risks(files: &[FileChange]) -> Vec<Risk> {
    files
        .iter()
        .filter(|f| f.path.starts_with("keys/") && f.action != Action::Delete)
        .map(|f| Risk {
            kind: RiskKind::SigningKey,
            tenant: String::new(),
            path: f.path.clone(),
            detail: format!(
                "`{}` is {}: plugins it signs count as verified for the publishers it names",
                f.path,
                if f.action == Action::Create { "added" } else { "changed" }
            ),
            within_tenant: false,
        })
        .collect()
}

/// A team the change creates, edits or deletes, by membership: teams compile to nothing, but
/// who is in one decides who may approve what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamChange {
    pub action: Action,
    pub name: String,
    /// Logins that join (every member of a created team), in order.
    pub added: Vec<String>,
    /// Logins that leave (every member of a deleted team), in order.
    pub removed: Vec<String>,
}

/// The membership changes of the teams `changes` names.
pub fn team_changes(
    changes: &[crate::change::Change],
    base: &crate::spec::Repo,
    head: &crate::spec::Repo,
) -> Vec<TeamChange> {
    use crate::change::Subject;
    use crate::spec::Kind;
    let members = |repo: &crate::spec::Repo, i: Option<usize>| -> BTreeSet<String> {
        i.and_then(|i| repo.teams.get(i))
            .map(|t| t.spec.members.iter().map(|m| m.to_ascii_lowercase()).collect())
            .unwrap_or_default()
    };
    changes
        .iter()
        .filter(|c| c.subject == Subject::Object(Kind::Team))
        .map(|c| {
            let (old, new) = (members(base, c.old), members(head, c.new));
            TeamChange {
                action: c.action,
                name: c.name.clone(),
                added: new.difference(&old).cloned().collect(),
                removed: old.difference(&new).cloned().collect(),
            }
        })
        .collect()
}

/// An object deleted and one of the same kind created with an equal spec and equal labels in
/// the same change: most likely a rename (Kubernetes sees a delete and a create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rename {
    pub kind: &'static str,
    pub from: String,
    pub to: String,
}

/// The deleted + created pairs of `changes` whose specs are equal (each object in at most
/// one pair, in name order).
pub fn likely_renames(
    changes: &[crate::change::Change],
    base: &crate::spec::Repo,
    head: &crate::spec::Repo,
) -> Vec<Rename> {
    use crate::change::Subject;
    use crate::spec::Kind;
    fn same<S: PartialEq>(a: &[crate::spec::Object<S>], b: &[crate::spec::Object<S>], i: usize, j: usize) -> bool {
        match (a.get(i), b.get(j)) {
            // (labels too: policies select on them, a rename that drops one is not "equal")
            (Some(x), Some(y)) => x.spec == y.spec && x.metadata.labels == y.metadata.labels,
            _ => false,
        }
    }
    let mut out = Vec::new();
    let mut taken = BTreeSet::new();
    for d in changes.iter().filter(|c| c.action == Action::Delete) {
        let Subject::Object(kind) = d.subject else { continue };
        let Some(i) = d.old else { continue };
        let found = changes.iter().enumerate().find(|(n, c)| {
            c.action == Action::Create
                && c.subject == d.subject
                && !taken.contains(n)
                && c.new.is_some_and(|j| match kind {
                    Kind::Team => same(&base.teams, &head.teams, i, j),
                    Kind::Tenant => same(&base.tenants, &head.tenants, i, j),
                    Kind::Plugin => same(&base.plugins, &head.plugins, i, j),
                    Kind::Rollout => same(&base.rollouts, &head.rollouts, i, j),
                })
        });
        if let Some((n, c)) = found {
            taken.insert(n);
            out.push(Rename {
                kind: kind.as_str(),
                from: d.name.clone(),
                to: c.name.clone(),
            });
        }
    }
    out
}

/// Diff two compiled revisions.
pub fn plan(base: &[Manifest], head: &[Manifest]) -> Plan {
    let mut p = Plan::default();
    p.diff(base, head);
    p.finish();
    p
}

impl Plan {
    /// Add the differences between `base` and `head` (objects matched by output path). The
    /// changes are in path order within one call; [`Plan::finish`] orders the whole plan.
    pub fn diff(&mut self, base: &[Manifest], head: &[Manifest]) {
        let old: BTreeMap<String, &Manifest> = base.iter().map(|m| (m.path(), m)).collect();
        let new: BTreeMap<String, &Manifest> = head.iter().map(|m| (m.path(), m)).collect();
        let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for path in paths {
            self.diff_one(path, old.get(path).copied(), new.get(path).copied());
        }
    }

    fn diff_one(&mut self, path: &str, a: Option<&Manifest>, b: Option<&Manifest>) {
        let action = match (a, b) {
            (Some(a), Some(b)) if a.value == b.value => {
                self.unchanged += 1;
                return;
            }
            (Some(_), Some(_)) => Action::Update,
            (None, Some(_)) => Action::Create,
            (Some(_), None) => Action::Delete,
            (None, None) => return,
        };
        let m = b.or(a).expect("one side exists");
        let (a_text, b_text) = (
            a.map(|m| m.yaml()).unwrap_or_default(),
            b.map(|m| m.yaml()).unwrap_or_default(),
        );
        let (unified, added, removed) = unified(path, a.map(|_| a_text.as_str()), b.map(|_| b_text.as_str()));
        risks(a, b, path, &mut self.risks);
        self.totals.add(action);
        self.by_tenant.entry(m.tenant.clone()).or_default().add(action);
        self.by_kind.entry(m.kind.clone()).or_default().add(action);
        self.changes.push(ObjectChange {
            action,
            path: path.to_owned(),
            kind: m.kind.clone(),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            tenant: m.tenant.clone(),
            diff: unified,
            lines_added: added,
            lines_removed: removed,
        });
    }

    /// Add `other` (the plan of other objects) to this one.
    pub fn merge(&mut self, other: Plan) {
        self.changes.extend(other.changes);
        self.unchanged += other.unchanged;
        self.totals.merge(&other.totals);
        for (t, c) in other.by_tenant {
            self.by_tenant.entry(t).or_default().merge(&c);
        }
        for (k, c) in other.by_kind {
            self.by_kind.entry(k).or_default().merge(&c);
        }
        self.risks.extend(other.risks);
    }

    /// Order the changes by output path and the risks, and fold a removed tenant's deletions
    /// into one risk.
    pub fn finish(&mut self) {
        self.changes.sort_by(|a, b| a.path.cmp(&b.path));
        // a removed tenant is one risk, not one per object it held
        let gone: BTreeSet<String> = self
            .risks
            .iter()
            .filter(|r| r.kind == RiskKind::Deletion && r.path.starts_with("_cluster/namespace-"))
            .map(|r| r.tenant.clone())
            .collect();
        // a new tenant: the namespace created with it
        let born: BTreeSet<String> = self
            .changes
            .iter()
            .filter(|c| c.action == Action::Create && c.path.starts_with("_cluster/namespace-"))
            .map(|c| c.tenant.clone())
            .collect();
        self.risks.retain(|r| match r.kind {
            // the objects of a removed tenant go with it; its RoleBindings with them
            RiskKind::Deletion => !gone.contains(&r.tenant) || r.path.starts_with("_cluster/"),
            // a new tenant's owners getting admin in it is what creating it means
            RiskKind::RbacChange => !gone.contains(&r.tenant) && !born.contains(&r.tenant),
            // a new tenant's own policies open nothing that was closed before, unless they
            // admit another tenant or an address block (then the detail names it)
            RiskKind::NetworkWidening => !(born.contains(&r.tenant) && r.within_tenant),
            _ => true,
        });
        self.risks.sort();
    }
}

fn rank(order: &[&str], v: &str) -> usize {
    order.iter().position(|x| *x == v).unwrap_or(0)
}

fn risks(a: Option<&Manifest>, b: Option<&Manifest>, path: &str, out: &mut Vec<Risk>) {
    let m = b.or(a).expect("one side exists");
    let mut flag = |kind: RiskKind, detail: String, within: bool| {
        out.push(Risk {
            kind,
            tenant: m.tenant.clone(),
            path: path.to_owned(),
            detail,
            within_tenant: within,
        })
    };
    if b.is_none() {
        let what = if m.kind == "Namespace" {
            format!("tenant `{}` is removed with everything in it", m.tenant)
        } else {
            format!("{} `{}` is removed", m.kind, m.name)
        };
        flag(RiskKind::Deletion, what, false);
    }
    match m.kind.as_str() {
        "ResourceQuota" => {
            let hard = |m: Option<&Manifest>| -> BTreeMap<String, Quantity> {
                m.and_then(|m| m.value.pointer("/spec/hard"))
                    .and_then(Value::as_object)
                    .map(|h| {
                        h.iter()
                            .filter_map(|(k, v)| Some((k.clone(), Quantity::from_json(v).ok()?)))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (old, new) = (hard(a), hard(b));
            if a.is_some() {
                let grown: BTreeMap<&str, (&str, &str)> = new
                    .iter()
                    .filter_map(|(k, n)| {
                        let o = old.get(k)?;
                        (n.nanos > o.nanos).then_some((k.as_str(), (o.text.as_str(), n.text.as_str())))
                    })
                    .collect();
                for (k, (o, n)) in &grown {
                    // `requests.cpu` and `limits.cpu` grown alike are one change of one quota
                    if let Some(r) = k.strip_prefix("limits.")
                        && grown.get(format!("requests.{r}").as_str()) == Some(&(*o, *n))
                    {
                        continue;
                    }
                    let detail = match k.strip_prefix("requests.") {
                        Some(r) if grown.get(format!("limits.{r}").as_str()) == Some(&(*o, *n)) => {
                            format!("`{r}` {o} → {n} (requests and limits)")
                        }
                        _ => format!("`{k}` {o} → {n}"),
                    };
                    flag(RiskKind::QuotaIncrease, detail, false);
                }
            }
        }
        "NetworkPolicy" => {
            let peers = |m: Option<&Manifest>| -> BTreeSet<String> {
                m.and_then(|m| m.value.pointer("/spec/ingress"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("from").and_then(Value::as_array))
                    .flatten()
                    .map(Value::to_string)
                    .collect()
            };
            let (old, new) = (peers(a), peers(b));
            let added: Vec<&String> = new.difference(&old).collect();
            if !added.is_empty() && m.name != "default-deny" {
                let tenants: Vec<String> = added
                    .iter()
                    .filter_map(|p| {
                        let v: Value = serde_json::from_str(p).ok()?;
                        v.pointer("/namespaceSelector/matchLabels/rampart.dev~1tenant")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .collect();
                // a bare `podSelector` peer is a pod of the policy's own namespace
                let within_tenant = added.iter().all(|p| {
                    serde_json::from_str::<Value>(p)
                        .ok()
                        .and_then(|v| v.as_object().map(|o| o.keys().all(|k| k == "podSelector")))
                        .unwrap_or(false)
                });
                let detail = if !tenants.is_empty() {
                    format!("traffic now allowed from {}", tenants.join(", "))
                } else if within_tenant {
                    format!("NetworkPolicy `{}` admits new traffic from within the tenant", m.name)
                } else {
                    format!("NetworkPolicy `{}` admits new traffic", m.name)
                };
                flag(RiskKind::NetworkWidening, detail, within_tenant);
            }
        }
        "RoleBinding" => {
            let subjects = |m: Option<&Manifest>| m.and_then(|m| m.value.get("subjects")).cloned();
            if subjects(a) != subjects(b) || a.is_none() || b.is_none() {
                let who = m
                    .value
                    .pointer("/subjects/0/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let what = match (a, b) {
                    (None, _) => format!("group `{who}` gains admin in `{}`", m.tenant),
                    (_, None) => format!("group `{who}` loses admin in `{}`", m.tenant),
                    _ => format!("RoleBinding `{}` changes its subjects", m.name),
                };
                flag(RiskKind::RbacChange, what, false);
            }
        }
        "Namespace" => {
            const ORDER: [&str; 3] = ["shared", "namespace", "dedicated-nodes"];
            let iso = |m: Option<&Manifest>| {
                m.and_then(|m| m.value.pointer("/metadata/labels/rampart.dev~1isolation"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            if let (Some(o), Some(n)) = (iso(a), iso(b))
                && rank(&ORDER, &n) < rank(&ORDER, &o)
            {
                flag(RiskKind::IsolationDowngrade, format!("isolation {o} → {n}"), false);
            }
        }
        _ => {}
    }
}

/// The tenants whose compiled objects a change set can touch, or `None` when it can touch
/// every tenant (a change to `rampart.yaml`: platform version, tier bounds). A tenant's
/// objects come from the tenant itself, the plugins it enables and the rollouts that reach
/// it; team membership and policies compile to nothing.
pub fn affected(
    changes: &[crate::change::Change],
    base: &crate::spec::Repo,
    head: &crate::spec::Repo,
) -> Option<BTreeSet<String>> {
    use crate::change::Subject;
    use crate::spec::Kind;
    let mut out = BTreeSet::new();
    let mut plugins = BTreeSet::new();
    let mut rollouts = BTreeSet::new();
    for c in changes {
        match c.subject {
            Subject::File if c.name == crate::config::SETTINGS_FILE => return None,
            Subject::File => {}
            Subject::Object(Kind::Tenant) => {
                out.insert(c.name.clone());
            }
            Subject::Object(Kind::Plugin) => {
                plugins.insert(c.name.as_str());
            }
            Subject::Object(Kind::Rollout) => {
                rollouts.insert(c.name.as_str());
            }
            Subject::Object(Kind::Team) => {}
        }
    }
    for repo in [base, head] {
        for t in &repo.tenants {
            if t.spec.plugins.iter().any(|p| plugins.contains(p.name.as_str())) {
                out.insert(t.name().to_owned());
            }
        }
        if rollouts.is_empty() {
            continue;
        }
        let index = crate::policy::model::TenantIndex::new(repo);
        for r in repo.rollouts.iter().filter(|r| rollouts.contains(r.name())) {
            for i in index.targets(&r.spec) {
                out.insert(repo.tenants[i].name().to_owned());
            }
        }
    }
    Some(out)
}
