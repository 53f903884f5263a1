//! Change sets: what differs between two revisions of a config repo (pure).
//!
//! An object's identity is its kind and name, never its file: moving an object to another
//! file (a rename) with the same value is no change, and with a new value is an update —
//! never a delete plus a create. Besides objects, the files that change what rampart trusts
//! or enforces (`rampart.yaml`, `policies/**`, `keys/**`) are compared byte for byte, so a
//! pull request that edits a policy is itself a change the policies authorise.

use crate::source::SourceFile;
use crate::spec::{Kind, Object, Origin, Repo};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What happened to an object or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Create, Action::Update, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What kind of thing changed: an object of a kind, or a guarded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Object(Kind),
    File,
}

impl Subject {
    pub const ALL: [Subject; 5] = [
        Subject::Object(Kind::Team),
        Subject::Object(Kind::Tenant),
        Subject::Object(Kind::Plugin),
        Subject::Object(Kind::Rollout),
        Subject::File,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Object(k) => k.as_str(),
            Subject::File => "File",
        }
    }

    pub fn parse(s: &str) -> Option<Subject> {
        Subject::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl Serialize for Subject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One changed object or file. `old` and `new` index the base and head repos' vectors of
/// the subject's kind (for files they are unused: the path is the name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub action: Action,
    #[serde(rename = "kind")]
    pub subject: Subject,
    pub name: String,
    /// Where the change shows in the head revision (the base one for a deletion).
    pub file: String,
    pub doc: usize,
    #[serde(skip)]
    pub old: Option<usize>,
    #[serde(skip)]
    pub new: Option<usize>,
    /// The base revision defines the object, but its definition is invalid: what the change
    /// does cannot be judged against it, so it is denied (fail closed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub base_invalid: bool,
}

/// Every change from `base` to `head`, in kind order (teams, tenants, plugins, rollouts,
/// files), then by name. `base_files` and `head_files` are the guarded files of each side.
///
/// `same` says whether two origins are the same document of the same bytes (the same blob at
/// the same path): their objects are then equal without comparing them field by field.
pub fn diff(
    base: &Repo,
    head: &Repo,
    base_files: &[SourceFile],
    head_files: &[SourceFile],
    same: Same<'_>,
) -> Vec<Change> {
    diff_in(base, head, base_files, head_files, same, None)
}

/// [`diff`] of the objects defined in the files `only` (by path) — the files known to differ
/// between `base` and `head` (an object in any other file is the same on both sides): the
/// same changes as [`diff`], indexes into the whole repos, at the cost of the changed files.
pub fn diff_in(
    base: &Repo,
    head: &Repo,
    base_files: &[SourceFile],
    head_files: &[SourceFile],
    same: Same<'_>,
    only: Option<&foldhash::HashSet<String>>,
) -> Vec<Change> {
    let mut out = Vec::new();
    let sides = Sides { base, head, same, only };
    objects(&sides, &base.teams, &head.teams, Kind::Team, &mut out);
    objects(&sides, &base.tenants, &head.tenants, Kind::Tenant, &mut out);
    objects(&sides, &base.plugins, &head.plugins, Kind::Plugin, &mut out);
    objects(&sides, &base.rollouts, &head.rollouts, Kind::Rollout, &mut out);
    let old: BTreeMap<&str, &[u8]> = base_files.iter().map(|f| (f.path.as_str(), &f.bytes[..])).collect();
    let new: BTreeMap<&str, &[u8]> = head_files.iter().map(|f| (f.path.as_str(), &f.bytes[..])).collect();
    let mut paths: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        let action = match (old.get(path), new.get(path)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), Some(_)) => Action::Update,
            (None, Some(_)) => Action::Create,
            (Some(_), None) => Action::Delete,
            (None, None) => continue,
        };
        out.push(Change {
            action,
            subject: Subject::File,
            name: path.to_owned(),
            file: path.to_owned(),
            doc: 0,
            old: None,
            new: None,
            base_invalid: false,
        });
    }
    out
}

/// Whether a base and a head origin hold the same bytes (see [`diff`]).
pub type Same<'a> = &'a (dyn Fn(&Origin, &Origin) -> bool + Sync);

/// Never the same: compare every object.
pub fn never_same(_: &Origin, _: &Origin) -> bool {
    false
}

struct Sides<'a> {
    base: &'a Repo,
    head: &'a Repo,
    same: Same<'a>,
    only: Option<&'a foldhash::HashSet<String>>,
}

impl Sides<'_> {
    /// The indexes of `objects` to compare: all, or those defined in the files `only`
    /// names. Objects are in file order (as validation and replay build them), so each
    /// file's are found by binary search.
    fn indexes<S>(&self, objects: &[Object<S>]) -> Box<dyn Iterator<Item = usize> + '_> {
        match self.only {
            None => Box::new(0..objects.len()),
            Some(only) => {
                debug_assert!(objects.windows(2).all(|w| w[0].origin.file <= w[1].origin.file));
                let mut out: Vec<usize> = Vec::new();
                for path in only {
                    let from = objects.partition_point(|o| o.origin.file.as_str() < path.as_str());
                    out.extend((from..objects.len()).take_while(|&i| objects[i].origin.file == *path));
                }
                out.sort_unstable();
                Box::new(out.into_iter())
            }
        }
    }
}

fn objects<S: PartialEq>(sides: &Sides<'_>, base: &[Object<S>], head: &[Object<S>], kind: Kind, out: &mut Vec<Change>) {
    let (base_repo, head_repo) = (sides.base, sides.head);
    // first definition wins, as in validation (a duplicate is an error of the head anyway)
    let mut old: HashMap<&str, usize> = HashMap::new();
    for i in sides.indexes(base) {
        old.entry(base[i].name()).or_insert(i);
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let start = out.len();
    for (j, o) in sides.indexes(head).map(|j| (j, &head[j])) {
        if seen.insert(o.name(), j).is_some() {
            continue;
        }
        let (action, old_index, base_invalid) = match old.get(o.name()) {
            Some(&i)
                if (sides.same)(&base[i].origin, &o.origin)
                    || (base[i].metadata == o.metadata && base[i].spec == o.spec) =>
            {
                continue;
            }
            Some(&i) => (Action::Update, Some(i), false),
            // named in the base, but its document there failed validation
            None if base_repo.has(kind, o.name()) => (Action::Update, None, true),
            None => (Action::Create, None, false),
        };
        out.push(Change {
            action,
            subject: Subject::Object(kind),
            name: o.name().to_owned(),
            file: o.origin.file.clone(),
            doc: o.origin.doc,
            old: old_index,
            new: Some(j),
            base_invalid,
        });
    }
    // invalid in the base and gone from the head: a deletion that cannot be judged (when
    // only some files are compared, `old` holds only theirs: every valid name of the base
    // is asked for, but only when the base has a name no valid object defines)
    if let Some(names) = base_repo.names_seen.get(&kind) {
        // (no more names than valid objects: none is invalid, nothing to look for)
        let none_invalid = sides.only.is_some() && names.len() <= base.len();
        let valid: Option<std::collections::HashSet<&str>> = sides
            .only
            .filter(|_| !none_invalid)
            .map(|_| base.iter().map(|o| o.name()).collect());
        let mut gone: Vec<&String> = names
            .iter()
            .filter(|_| !none_invalid)
            .filter(|n| match &valid {
                None => !old.contains_key(n.as_str()),
                Some(valid) => !valid.contains(n.as_str()),
            })
            .filter(|n| !head_repo.has(kind, n))
            .collect();
        gone.sort();
        for name in gone {
            out.push(Change {
                action: Action::Delete,
                subject: Subject::Object(kind),
                name: name.clone(),
                file: String::new(),
                doc: 0,
                old: None,
                new: None,
                base_invalid: true,
            });
        }
    }
    for (name, &i) in &old {
        if !seen.contains_key(name) {
            out.push(Change {
                action: Action::Delete,
                subject: Subject::Object(kind),
                name: (*name).to_owned(),
                file: base[i].origin.file.clone(),
                doc: base[i].origin.doc,
                old: Some(i),
                new: None,
                base_invalid: false,
            });
        }
    }
    out[start..].sort_by(|a, b| a.name.cmp(&b.name));
}

/// Where a change shows in the head: the JSON pointer (into its document) of the first field
/// an update changes, `/metadata/name` for a created object, `None` for a deletion or a file.
/// Found on the typed objects, so a field that only defaults may name a node the YAML does
/// not spell out: callers fall back to its parents.
pub fn changed_pointer(base: &Repo, head: &Repo, c: &Change) -> Option<String> {
    fn first_diff(a: &serde_json::Value, b: &serde_json::Value, at: &mut String) -> bool {
        use serde_json::Value;
        // the children of the new side, each with its pointer segment and the old child
        let children: Vec<(String, &Value, Option<&Value>)> = match (a, b) {
            (Value::Object(x), Value::Object(y)) => y
                .iter()
                .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v, x.get(k)))
                .collect(),
            (Value::Array(x), Value::Array(y)) => y
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v, x.get(i)))
                .collect(),
            _ => return a != b,
        };
        for (segment, v, old) in children {
            if old == Some(v) {
                continue;
            }
            at.push('/');
            at.push_str(&segment);
            if let Some(u) = old {
                first_diff(u, v, at);
            }
            return true;
        }
        // only removals: the object or list that lost them
        a != b
    }
    fn of<S: serde::Serialize>(
        a: &[crate::spec::Object<S>],
        b: &[crate::spec::Object<S>],
        c: &Change,
    ) -> Option<String> {
        let new = b.get(c.new?)?;
        let Some(old) = c.old.and_then(|i| a.get(i)) else {
            return Some("/metadata/name".to_owned());
        };
        let doc = |o: &crate::spec::Object<S>| {
            serde_json::json!({
                "metadata": serde_json::to_value(&o.metadata).ok(),
                "spec": serde_json::to_value(&o.spec).ok(),
            })
        };
        let mut at = String::new();
        first_diff(&doc(old), &doc(new), &mut at).then_some(at)
    }
    if c.action == Action::Delete {
        return None;
    }
    match c.subject {
        Subject::Object(Kind::Team) => of(&base.teams, &head.teams, c),
        Subject::Object(Kind::Tenant) => of(&base.tenants, &head.tenants, c),
        Subject::Object(Kind::Plugin) => of(&base.plugins, &head.plugins, c),
        Subject::Object(Kind::Rollout) => of(&base.rollouts, &head.rollouts, c),
        Subject::File => None,
    }
}

/// Counts by action, for summaries.
pub fn counts(changes: &[Change]) -> [usize; 3] {
    let mut c = [0; 3];
    for ch in changes {
        c[ch.action as usize] += 1;
    }
    c
}
