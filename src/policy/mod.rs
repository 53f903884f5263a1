//! Policy: Cedar authorization of change sets (pure).
//!
//! [`Engine::load`] joins rampart's default policies (`policies/` of this project, embedded)
//! with a config repo's own, keys every policy by its `@id`, and validates all of them
//! strictly against the Cedar schema: a policy that does not parse or validate is a
//! diagnostic at `file:line:col` and the engine is not built (fail closed). [`model`] turns
//! a change set into Cedar entities and requests; [`decide`] authorises them and works out,
//! for each denial, which approvals would allow it.

pub mod decide;
pub mod impact;
pub mod model;
pub mod tests;

use crate::diagnostic::{Anchor, Code, Diagnostic};
use crate::source::SourceFile;
use cedar_policy::{ActionConstraint, EntityUid, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use std::collections::{HashMap, HashSet};

/// rampart's Cedar schema.
pub const SCHEMA: &str = include_str!("../../policies/rampart.cedarschema");
/// rampart's default policies.
pub const DEFAULTS: &str = include_str!("../../policies/defaults.cedar");
/// How the default policies are named in messages.
pub const DEFAULTS_PATH: &str = "(rampart)/policies/defaults.cedar";

/// Where a policy came from, and what it says when it denies.
#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub file: String,
    pub advice: Option<String>,
    pub forbid: bool,
}

/// A validated policy set, ready to authorise.
pub struct Engine {
    pub schema: Schema,
    pub policies: PolicySet,
    pub info: HashMap<PolicyId, PolicyInfo>,
    /// The policies whose action scope can match each action: a request is decided by its
    /// slice only. Cedar checks every policy's scope on every request (about 1.3 µs a
    /// policy); a policy whose scope cannot match is never satisfied and, its scope being
    /// evaluated first and short-circuited, never errors — so the decision, the determining
    /// policies and the errors are the same as with the whole set.
    by_action: HashMap<EntityUid, PolicySet>,
    /// Every entity a policy names literally (`Rampart::Tenant::"payments"`): the model
    /// always includes these, since a policy may read their attributes.
    pub literals: HashSet<EntityUid>,
}

impl Engine {
    /// Build the engine from the defaults and a repo's policy files. `None` when any policy
    /// fails to parse or validate: then nothing may be authorised.
    pub fn load(repo_policies: &[SourceFile]) -> (Option<Engine>, Vec<Diagnostic>) {
        with_big_stack(|| Engine::load_here(repo_policies))
    }

    fn load_here(repo_policies: &[SourceFile]) -> (Option<Engine>, Vec<Diagnostic>) {
        // parsed once per process (every revision read loads an engine)
        static PARSED: std::sync::LazyLock<Schema> =
            std::sync::LazyLock::new(|| match Schema::from_cedarschema_str(SCHEMA) {
                Ok((s, _warnings)) => s,
                Err(e) => panic!("the embedded Cedar schema is invalid: {e}"),
            });
        let schema = PARSED.clone();
        let mut diags = Vec::new();
        let mut set = PolicySet::new();
        let mut info = HashMap::new();
        let mut sources: Vec<(&str, &str)> = vec![(DEFAULTS_PATH, DEFAULTS)];
        for f in repo_policies {
            match std::str::from_utf8(&f.bytes) {
                Ok(text) => match too_complex(text) {
                    None => sources.push((&f.path, text)),
                    Some(d) => diags.push(d.at(&f.path, text)),
                },
                Err(e) => diags.push(
                    Diagnostic::at_file(
                        Code::InvalidUtf8,
                        &f.path,
                        format!("policy file is not valid UTF-8 (byte {})", e.valid_up_to()),
                    )
                    .with_hint("save the file as UTF-8"),
                ),
            }
        }
        let mut file_of: HashMap<PolicyId, usize> = HashMap::new();
        for (index, (path, text)) in sources.iter().enumerate() {
            add_file(path, text, index, &mut set, &mut info, &mut file_of, &mut diags);
        }
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let (path, text) = sources[file_of.get(e.policy_id()).copied().unwrap_or(0)];
            diags.push(at_span(
                Code::PolicyInvalid,
                path,
                text,
                e,
                format!(
                    "policy `{}` does not match rampart's Cedar schema: {}",
                    e.policy_id(),
                    unprefixed(&e.to_string(), e.policy_id())
                ),
            ));
        }
        for w in result.validation_warnings() {
            let (path, text) = sources[file_of.get(w.policy_id()).copied().unwrap_or(0)];
            diags.push(at_span(
                Code::PolicyWarning,
                path,
                text,
                w,
                format!(
                    "policy `{}`: {}",
                    w.policy_id(),
                    unprefixed(&w.to_string(), w.policy_id())
                ),
            ));
        }
        // the validator reports one error once per request environment it checks a policy
        // in (an action applying to several kinds): the same problem, said once
        let mut seen = HashSet::new();
        diags.retain(|d| seen.insert((d.code, d.message.clone(), format!("{:?}", d.anchor))));
        if diags.iter().any(Diagnostic::is_error) {
            return (None, diags);
        }
        let by_action = slices(&schema, &set);
        let literals = set.policies().flat_map(|p| p.entity_literals()).collect();
        (
            Some(Engine {
                schema,
                policies: set,
                info,
                by_action,
                literals,
            }),
            diags,
        )
    }

    /// The policies that can apply to `action` (all of them for an action not in the schema).
    pub fn policies_for(&self, action: &EntityUid) -> &PolicySet {
        self.by_action.get(action).unwrap_or(&self.policies)
    }

    /// The `@advice` of a policy, if it has one.
    pub fn advice(&self, id: &PolicyId) -> Option<&str> {
        self.info.get(id).and_then(|i| i.advice.as_deref())
    }
}

/// For every action of the schema, the policies whose action scope can match it.
fn slices(schema: &Schema, set: &PolicySet) -> HashMap<EntityUid, PolicySet> {
    let Ok(actions) = schema.action_entities() else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for a in actions.iter() {
        let a = a.uid();
        let mut slice = PolicySet::new();
        for p in set.policies() {
            let applies = match p.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(x) => x == a,
                ActionConstraint::In(xs) => xs.iter().any(|x| *x == a || actions.is_ancestor_of(x, &a)),
            };
            if applies && slice.add(p.clone()).is_err() {
                // cannot happen (ids are unique in `set`); fall back to the whole set
                return HashMap::new();
            }
        }
        out.insert(a, slice);
    }
    out
}

fn add_file(
    path: &str,
    text: &str,
    index: usize,
    set: &mut PolicySet,
    info: &mut HashMap<PolicyId, PolicyInfo>,
    file_of: &mut HashMap<PolicyId, usize>,
    diags: &mut Vec<Diagnostic>,
) {
    let parsed = match text.parse::<PolicySet>() {
        Ok(p) => p,
        Err(errors) => {
            for e in errors.iter() {
                diags.push(at_span(
                    Code::PolicySyntax,
                    path,
                    text,
                    e,
                    format!("Cedar policy does not parse: {e}"),
                ));
            }
            return;
        }
    };
    if parsed.templates().next().is_some() {
        diags.push(
            Diagnostic::at_file(
                Code::PolicySyntax,
                path,
                "policy templates (`?principal`) are not supported",
            )
            .with_hint("write a policy for each principal or resource instead"),
        );
    }
    for (n, p) in parsed.policies().enumerate() {
        let id = match p.annotation("id") {
            Some(id) => PolicyId::new(id),
            None => PolicyId::new(format!("{path}#{}", n + 1)),
        };
        let forbid = p.effect() == cedar_policy::Effect::Forbid;
        let advice = p.annotation("advice").map(str::to_owned);
        if forbid && advice.is_none() {
            diags.push(position_of_policy(
                Code::PolicyNoAdvice,
                path,
                text,
                &id,
                format!("forbid policy `{id}` has no @advice: a denial will not say what to do"),
                "add `@advice(\"…\")` above the policy, in words a reviewer acts on",
            ));
        }
        if let Some(previous) = info.get(&id) {
            let previous: &PolicyInfo = previous;
            diags.push(position_of_policy(
                Code::DuplicatePolicyId,
                path,
                text,
                &id,
                format!("policy id `{id}` is already used in {}", previous.file),
                "give every policy a unique @id; the defaults cannot be replaced, only added to",
            ));
            continue;
        }
        if let Err(e) = set.add(p.new_id(id.clone())) {
            diags.push(Diagnostic::at_file(
                Code::DuplicatePolicyId,
                path,
                format!("policy `{id}` could not be added: {e}"),
            ));
            continue;
        }
        info.insert(
            id.clone(),
            PolicyInfo {
                file: path.to_owned(),
                advice,
                forbid,
            },
        );
        file_of.insert(id, index);
    }
}

/// Largest policy file: Cedar's parser, validator and evaluator recurse over the syntax
/// tree, so the size (and with it the depth) of what they see is bounded.
pub const MAX_POLICY_FILE_BYTES: usize = 64 * 1024;
/// Deepest nesting of brackets in a policy file.
pub const MAX_POLICY_NESTING: usize = 32;
/// Longest run of prefix operators (`!`, `-`) or of `.`/`[]` accesses.
pub const MAX_POLICY_CHAIN: usize = 64;
/// Stack of the thread Cedar runs on: with the bounds above, the deepest tree a file can
/// hold stays far inside it.
const CEDAR_STACK: usize = 256 << 20;

/// A thread with room for Cedar's recursion.
fn cedar_thread() -> std::thread::Builder {
    std::thread::Builder::new().name("cedar".into()).stack_size(CEDAR_STACK)
}

/// Run `f` on a thread with a stack large enough for any policy that passes [`too_complex`]
/// (the main thread's 8 MiB is not, in a debug build).
pub fn with_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        cedar_thread()
            .spawn_scoped(s, f)
            .expect("spawn the Cedar thread")
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// `f` of every item, in order, on up to `available_parallelism` threads with Cedar's stack
/// (each takes a contiguous chunk). Few items run here, on the calling thread.
pub fn map_big_stack<'a, T: Sync, R: Send>(items: &'a [T], f: impl Fn(&'a T) -> R + Sync) -> Vec<R> {
    const ALONE: usize = 64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if items.len() < ALONE || threads < 2 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                cedar_thread()
                    .spawn_scoped(s, move || part.iter().map(f).collect::<Vec<R>>())
                    .expect("spawn a Cedar thread")
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Why a policy file is refused before Cedar sees it.
struct Refusal {
    offset: usize,
    message: String,
}

impl Refusal {
    fn at(self, path: &str, text: &str) -> Diagnostic {
        let (line, column) = line_col(text, self.offset);
        Diagnostic::new(
            Code::PolicyTooComplex,
            Anchor::Position {
                file: path.to_owned(),
                line,
                column,
            },
            self.message,
        )
        .with_hint("split the policy into several simpler ones")
    }
}

/// A quick lexical scan (strings and comments skipped) for what would make Cedar recurse
/// deeply: a large file, deep brackets, long prefix-operator or access chains, and long
/// chains of binary operators (counted per policy, between `;`).
fn too_complex(text: &str) -> Option<Refusal> {
    if text.len() > MAX_POLICY_FILE_BYTES {
        return Some(Refusal {
            offset: 0,
            message: format!(
                "policy file is {} bytes, above the limit of {MAX_POLICY_FILE_BYTES}",
                text.len()
            ),
        });
    }
    let bytes = text.as_bytes();
    let (mut depth, mut chain, mut operators) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_POLICY_NESTING {
                    return Some(Refusal {
                        offset: i,
                        message: format!("brackets nest more than {MAX_POLICY_NESTING} deep"),
                    });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b';' => operators = 0,
            _ => {}
        }
        if matches!(c, b'!' | b'-' | b'.') {
            chain += 1;
            if chain > MAX_POLICY_CHAIN {
                return Some(Refusal {
                    offset: i,
                    message: format!("more than {MAX_POLICY_CHAIN} operators or accesses in a row"),
                });
            }
        } else if !c.is_ascii_whitespace() && !c.is_ascii_alphanumeric() && c != b'_' {
            chain = 0;
        }
        if matches!(c, b'&' | b'|' | b'+' | b'*' | b'<' | b'>' | b'=' | b'!' | b'-' | b'.') {
            operators += 1;
            if operators > 4 * 1024 {
                return Some(Refusal {
                    offset: i,
                    message: "a policy with more than 4096 operators".into(),
                });
            }
        }
        i += 1;
    }
    None
}

/// Cedar's message without its own "for policy `id`, " prefix (the diagnostic names it).
fn unprefixed(message: &str, id: &PolicyId) -> String {
    let prefix = format!("for policy `{id}`, ");
    message.strip_prefix(&prefix).unwrap_or(message).to_owned()
}

/// A diagnostic at the first labelled span of a Cedar error, or at the file.
fn at_span(code: Code, path: &str, text: &str, e: &dyn miette::Diagnostic, message: String) -> Diagnostic {
    let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let mut d = match offset {
        Some(off) if off <= text.len() => {
            let (line, column) = line_col(text, off);
            Diagnostic::new(
                code,
                Anchor::Position {
                    file: path.to_owned(),
                    line,
                    column,
                },
                message,
            )
        }
        _ => Diagnostic::at_file(code, path, message),
    };
    if let Some(help) = e.help() {
        d = d.with_hint(help.to_string());
    }
    d
}

/// R406: every `Team::"…"` a repo policy names that `teams` does not define (a team deleted
/// or misspelled: the rule can never match, and an `unless { … in Team::"security" }` then
/// never lets anything through), at the first place the policy file spells it.
pub fn missing_teams(engine: &Engine, repo_policies: &[SourceFile], teams: &HashSet<&str>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for p in engine.policies.policies() {
        let Some(file) = engine.info.get(p.id()).map(|i| i.file.as_str()) else {
            continue;
        };
        let Some(f) = repo_policies.iter().find(|f| f.path == file) else {
            continue;
        };
        for l in p.entity_literals() {
            let team = l.id().unescaped();
            if l.type_name().basename() != "Team"
                || teams.contains(team)
                || !seen.insert((file.to_owned(), team.to_owned()))
            {
                continue;
            }
            let message = format!("policy `{}` names team `{team}`, which teams/ does not define", p.id());
            let d = at_first(
                Code::PolicyNamesMissingTeam,
                file,
                &String::from_utf8_lossy(&f.bytes),
                &format!("Team::\"{team}\""),
                message,
            );
            out.push(d.with_hint(format!(
                "define team `{team}` in teams/, or change the policy: as it is, no member of `{team}` can ever match"
            )));
        }
    }
    out
}

/// A diagnostic at the policy's `@id` annotation (or the file when it has none).
fn position_of_policy(code: Code, path: &str, text: &str, id: &PolicyId, message: String, hint: &str) -> Diagnostic {
    at_first(code, path, text, &format!("\"{id}\""), message).with_hint(hint)
}

/// A diagnostic at the first place `text` (of file `path`) holds `needle` (the file when it
/// holds none).
fn at_first(code: Code, path: &str, text: &str, needle: &str, message: String) -> Diagnostic {
    let anchor = match text.find(needle) {
        Some(off) => {
            let (line, column) = line_col(text, off);
            Anchor::Position {
                file: path.to_owned(),
                line,
                column,
            }
        }
        None => Anchor::File { file: path.to_owned() },
    };
    Diagnostic::new(code, anchor, message)
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let offset = text.floor_char_boundary(offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[start..].chars().count() + 1;
    (line as u32, column as u32)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn defaults_validate_strictly_without_warnings() {
        let (engine, diags) = Engine::load(&[]);
        assert!(diags.is_empty(), "{diags:#?}");
        let engine = engine.unwrap();
        // every default forbid explains itself
        for (id, info) in &engine.info {
            assert!(info.advice.is_some(), "{id} has no @advice");
        }
        assert!(engine.info.len() >= 11);
    }

    /// Each action sees exactly the policies whose scope can match it (group scopes included).
    #[test]
    fn policies_are_sliced_by_action() {
        let (engine, _) = Engine::load(&[]);
        let engine = engine.unwrap();
        let ids = |action: &str| -> Vec<String> {
            let mut v: Vec<String> = engine
                .policies_for(&model::uid("Action", action))
                .policies()
                .map(|p| p.id().to_string())
                .collect();
            v.sort();
            v
        };
        // (rampart's own verified reverts are permitted every action)
        assert_eq!(
            ids("deleteTenant"),
            [
                "rampart-lands-verified-reverts",
                "tenant-delete-needs-two-approvals",
                "tenant-owners-or-platform"
            ]
        );
        assert_eq!(
            ids("updateTeam"),
            [
                "rampart-lands-verified-reverts",
                "team-members-added-need-another-member",
                "team-members-or-platform"
            ]
        );
        assert_eq!(
            ids("reachTenant"),
            [
                "enterprise-tenants-run-trusted-signed-plugins",
                "rampart-lands-verified-reverts",
                "reaching-a-tenant-needs-its-owners",
                "tenants-reached"
            ]
        );
        assert_eq!(
            ids("createPlugin"),
            [
                "admin-permissions-need-security-approval",
                "members-propose-plugins-and-rollouts",
                "rampart-lands-verified-reverts"
            ]
        );
        assert_eq!(ids("updateTenant").len(), 6);
    }

    #[test]
    fn repo_policy_errors_are_located() {
        let file = SourceFile {
            path: "policies/x.cedar".into(),
            bytes: b"@id(\"x\")\n@advice(\"a\")\nforbid (principal, action, resource)\nwhen { resource.teir == \"free\" };\n"
                .to_vec(),
        };
        let (engine, diags) = Engine::load(&[file]);
        assert!(engine.is_none());
        assert!(diags.iter().any(|d| d.code == Code::PolicyInvalid), "{diags:#?}");
        let bad = SourceFile {
            path: "policies/y.cedar".into(),
            bytes: b"permit (principal, action, resource) when { 1 + };".to_vec(),
        };
        let (engine, diags) = Engine::load(&[bad]);
        assert!(engine.is_none());
        let d = diags.iter().find(|d| d.code == Code::PolicySyntax).unwrap();
        assert!(matches!(d.anchor, Anchor::Position { line: 1, .. }), "{d:#?}");
    }
}
