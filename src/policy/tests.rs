//! Policy tests: table-driven cases kept in a config repo (`policies/tests/*.yaml`, kind
//! `PolicyTest`), run by `rampart policy test` like `opa test` (pure).
//!
//! Each case applies one change to the repo as it is (an update is a JSON merge patch of the
//! object, a creation a whole object, a deletion a name), builds the change set and the
//! Cedar request exactly as `rampart check` does, and compares the decision and the
//! determining policies with the expectation.

use super::Engine;
use super::decide::{self, Decision, Identity};
use super::model::{self, PluginFacts};
use crate::change::{self, Action, Subject};
use crate::diagnostic::{Code, Diagnostic};
use crate::load::LoadedFile;
use crate::source::SourceFile;
use crate::spec::{Kind, Object, Repo};
use crate::validate::{self, Parsed, schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The principal of rampart's own verified reverts (see `policies/defaults.cedar`).
pub const REVERT_PRINCIPAL: &str = "rampart[revert]";
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaseSpec {
    name: String,
    author: String,
    #[serde(default)]
    approved_by: Vec<String>,
    change: ChangeSpec,
    #[serde(default)]
    plugins: BTreeMap<String, FactsSpec>,
    #[serde(default)]
    rollouts: BTreeMap<String, FactsSpec>,
    expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeSpec {
    action: String,
    kind: String,
    name: String,
    #[serde(default)]
    patch: Option<Value>,
    #[serde(default)]
    object: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FactsSpec {
    #[serde(default)]
    trust_score: i64,
    #[serde(default)]
    signature_verified: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Expect {
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    /// The case's line in its file (filled in by the driver, which has the spans).
    pub line: u32,
    #[serde(skip)]
    pub doc: usize,
    #[serde(skip)]
    pub index: usize,
    pub passed: bool,
    pub expected: Expect,
    /// The actual decision (`None` when the case could not be built; see `problem`).
    pub actual: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A parsed case and where it is.
struct Case {
    file: String,
    doc: usize,
    index: usize,
    spec: CaseSpec,
}

/// Check each test file against the `PolicyTest` schema and read its cases. Problems are
/// diagnostics (R2xx from the schema, R430 for the rest).
fn cases(files: &mut [LoadedFile]) -> (Vec<Case>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut out = Vec::new();
    for f in files.iter_mut() {
        for (doc, value) in std::mem::take(&mut f.docs).into_iter().enumerate() {
            if !schema::check(schema::Target::PolicyTest, &value, &f.path, doc, &mut diags) {
                continue;
            }
            let Some(Value::Array(items)) = value.pointer("/spec/cases").cloned() else {
                continue;
            };
            for (index, item) in items.into_iter().enumerate() {
                match serde_json::from_value::<CaseSpec>(item) {
                    Ok(spec) => out.push(Case {
                        file: f.path.clone(),
                        doc,
                        index,
                        spec,
                    }),
                    Err(e) => diags.push(Diagnostic::at_node(
                        Code::PolicyTestInvalid,
                        &f.path,
                        doc,
                        &format!("/spec/cases/{index}"),
                        format!("test case could not be read: {e}"),
                    )),
                }
            }
        }
    }
    (out, diags)
}

/// Run every case of `files` against `repo` and `engine`. Cases that cannot be built (an
/// unknown object, a patch that breaks the schema) are diagnostics, and fail.
pub fn run(
    engine: &Engine,
    repo: &Repo,
    guarded: &[SourceFile],
    files: &mut [LoadedFile],
) -> (Vec<CaseResult>, Vec<Diagnostic>) {
    let (cases, mut diags) = cases(files);
    let mut results = Vec::new();
    for case in cases {
        let at = format!("/spec/cases/{}", case.index);
        let (actual, problem) = match run_case(engine, repo, guarded, &case.spec) {
            Ok(d) => (Some(d), None),
            Err(problem) => {
                diags.push(
                    Diagnostic::at_node(
                        Code::PolicyTestInvalid,
                        &case.file,
                        case.doc,
                        &format!("{at}/change"),
                        format!("test case `{}`: {problem}", case.spec.name),
                    )
                    .with_hint("a case changes one object of the repo as it is: check its kind, name and patch"),
                );
                (None, Some(problem))
            }
        };
        let passed = actual.as_ref().is_some_and(|d| matches(&case.spec.expect, d));
        results.push(CaseResult {
            file: case.file,
            name: case.spec.name,
            line: 0,
            doc: case.doc,
            index: case.index,
            passed,
            expected: case.spec.expect,
            actual,
            problem,
        });
    }
    (results, diags)
}

fn matches(expect: &Expect, d: &Decision) -> bool {
    let decision = if d.allowed { "allow" } else { "deny" };
    if expect.decision != decision {
        return false;
    }
    match &expect.policies {
        None => true,
        Some(want) => {
            let mut want = want.clone();
            want.sort();
            want.dedup();
            want == d.policies
        }
    }
}

fn run_case(engine: &Engine, repo: &Repo, guarded: &[SourceFile], case: &CaseSpec) -> Result<Decision, String> {
    let action = Action::parse(&case.change.action).ok_or("unknown action")?;
    let subject = Subject::parse(&case.change.kind).ok_or("unknown kind")?;
    let mut head = repo.clone();
    let mut head_files = guarded.to_vec();
    let name = case.change.name.as_str();
    match subject {
        Subject::File => {
            let exists = head_files.iter().position(|f| f.path == name);
            match (action, exists) {
                (Action::Create, Some(_)) => return Err(format!("file `{name}` already exists")),
                (Action::Create, None) => head_files.push(SourceFile {
                    path: name.to_owned(),
                    bytes: b"(created by a policy test)".to_vec(),
                }),
                (Action::Update, Some(i)) => head_files[i].bytes.extend_from_slice(b"\n(changed by a policy test)"),
                (Action::Delete, Some(i)) => {
                    head_files.remove(i);
                }
                (_, None) => return Err(format!("file `{name}` does not exist in the repo")),
            }
        }
        Subject::Object(kind) => apply_object(&mut head, kind, action, name, &case.change)?,
    }
    let changes = change::diff(repo, &head, guarded, &head_files, &change::never_same);
    let index = changes
        .iter()
        .position(|c| c.subject == subject && c.name == name)
        .ok_or("the change makes no difference to the repo")?;
    let teams: Vec<(String, Vec<String>)> = repo
        .teams
        .iter()
        .map(|t| (t.name().to_owned(), t.spec.members.clone()))
        .collect();
    let approvers: Vec<Identity> = case.approved_by.iter().map(|a| Identity::login(a)).collect();
    let (who, _) = if case.author == REVERT_PRINCIPAL {
        // (the principal `serve` gives rampart's own verified reverts: no team resolves it)
        (
            super::model::Who {
                author: REVERT_PRINCIPAL.to_owned(),
                approvers: Vec::new(),
            },
            Vec::new(),
        )
    } else {
        decide::resolve_who(&teams, &Identity::login(&case.author), &approvers, "")
    };
    let facts_of = |of: model::FactsOf<'_>| {
        let (table, name) = match of {
            model::FactsOf::Plugin(n) => (&case.plugins, n),
            model::FactsOf::Rollout(n) => (&case.rollouts, n),
        };
        table
            .get(name)
            .map(|f| PluginFacts {
                trust_score: f.trust_score,
                signature_verified: f.signature_verified,
            })
            .unwrap_or_default()
    };
    let mut m = model::build(repo, repo, &head, &changes[index..=index], &who, &facts_of, engine)?;
    let mut decisions = decide::decide(engine, &mut m);
    Ok(decisions.remove(0))
}

/// Apply one object change to `head`.
fn apply_object(head: &mut Repo, kind: Kind, action: Action, name: &str, c: &ChangeSpec) -> Result<(), String> {
    fn find<S>(v: &[Object<S>], name: &str) -> Option<usize> {
        v.iter().position(|o| o.name() == name)
    }
    let index = match kind {
        Kind::Team => find(&head.teams, name),
        Kind::Tenant => find(&head.tenants, name),
        Kind::Plugin => find(&head.plugins, name),
        Kind::Rollout => find(&head.rollouts, name),
    };
    let document = match (action, index) {
        (Action::Create, Some(_)) => return Err(format!("{} `{name}` already exists", kind.as_str())),
        (Action::Create, None) => {
            let mut doc = c.object.clone().ok_or("a `create` needs `object`")?;
            let obj = doc.as_object_mut().ok_or("`object` must be a mapping")?;
            obj.entry("apiVersion").or_insert(crate::spec::API_VERSION.into());
            obj.entry("kind").or_insert(kind.as_str().into());
            let given = doc.pointer("/metadata/name").and_then(Value::as_str);
            if given.is_some_and(|n| n != name) {
                return Err("`object.metadata.name` differs from the case's `name`".into());
            }
            Some(doc)
        }
        (Action::Update, Some(i)) => {
            let mut doc = object_json(head, kind, i);
            merge_patch(&mut doc, c.patch.as_ref().ok_or("an `update` needs `patch`")?);
            if doc.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
                return Err("the patch renames the object; test a delete and a create instead".into());
            }
            Some(doc)
        }
        (Action::Delete, Some(_)) => None,
        (_, None) => return Err(format!("{} `{name}` does not exist in the repo", kind.as_str())),
    };
    if let Some(i) = index {
        match kind {
            Kind::Team => drop(head.teams.remove(i)),
            Kind::Tenant => drop(head.tenants.remove(i)),
            Kind::Plugin => drop(head.plugins.remove(i)),
            Kind::Rollout => drop(head.rollouts.remove(i)),
        }
    }
    let Some(doc) = document else {
        return Ok(());
    };
    let file = format!("{}/{name}.yaml", kind.dir());
    let mut diags = Vec::new();
    let (parsed, _) = validate::document(&file, 0, doc, &mut diags);
    if let Some(d) = diags.iter().find(|d| d.is_error()) {
        let at = d.pointer.as_deref().or(match &d.anchor {
            crate::diagnostic::Anchor::Node { pointer, .. } => Some(pointer.as_str()),
            _ => None,
        });
        return Err(format!(
            "the changed {} is not valid: {}{}",
            kind.as_str(),
            d.message,
            at.map(|p| format!(" (at `{p}`)")).unwrap_or_default()
        ));
    }
    match parsed {
        Parsed::Team(o) => head.teams.push(o),
        Parsed::Tenant(o) => head.tenants.push(o),
        Parsed::Plugin(o) => head.plugins.push(o),
        Parsed::Rollout(o) => head.rollouts.push(o),
        Parsed::Invalid => return Err(format!("the changed {} is not valid", kind.as_str())),
    }
    Ok(())
}

fn object_json(repo: &Repo, kind: Kind, i: usize) -> Value {
    fn doc<S: Serialize>(o: &Object<S>, kind: Kind) -> Value {
        serde_json::json!({
            "apiVersion": crate::spec::API_VERSION,
            "kind": kind.as_str(),
            "metadata": o.metadata,
            "spec": o.spec,
        })
    }
    match kind {
        Kind::Team => doc(&repo.teams[i], kind),
        Kind::Tenant => doc(&repo.tenants[i], kind),
        Kind::Plugin => doc(&repo.plugins[i], kind),
        Kind::Rollout => doc(&repo.rollouts[i], kind),
    }
}

/// RFC 7396 JSON merge patch, applied to `metadata` and `spec` (the envelope stays).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod unit {
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // the example of RFC 7396 §3
        let mut t = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "This will be unchanged"});
        let p = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}, "tags": ["example"]});
        super::merge_patch(&mut t, &p);
        assert_eq!(
            t,
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
        );
    }
}
