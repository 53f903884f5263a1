//! Compatibility: platform ranges, requirements between the plugins a tenant enables,
//! dependency cycles, permissions per tier, plugin resources against the quota, and each
//! rollout's new version against the tenants it reaches.

use crate::diagnostic::{Code, Diagnostic, quote};
use crate::load::escape_pointer;
use crate::policy::model::TenantIndex;
use crate::spec::{Object, PluginSpec, Repo, TenantSpec};
use crate::units::Quantity;
use rayon::prelude::*;
use semver::{Op, Version, VersionReq};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

type Plugins<'r> = HashMap<&'r str, &'r Object<PluginSpec>>;

fn plugins(repo: &Repo) -> Plugins<'_> {
    let mut out = HashMap::new();
    for p in &repo.plugins {
        out.entry(p.name()).or_insert(p);
    }
    out
}

fn at<S>(o: &Object<S>, code: Code, pointer: &str, message: String) -> Diagnostic {
    Diagnostic::at_node(code, &o.origin.file, o.origin.doc, pointer, message)
}

/// Every compatibility problem of a repo whose references already resolve (unknown names
/// are reported elsewhere and skipped here).
pub fn compatibility(repo: &Repo) -> Vec<Diagnostic> {
    let by_name = plugins(repo);
    let mut out = Vec::new();
    let platform = repo
        .settings
        .platform
        .as_ref()
        .and_then(|p| Version::parse(&p.version).ok());
    for p in &repo.plugins {
        if let Some(range) = &p.spec.requires.platform
            && let Ok(req) = VersionReq::parse(range)
        {
            if let Some(why) = impossible(&req) {
                out.push(impossible_range(p, "/spec/requires/platform", range, &why));
            } else if let Some(v) = &platform
                && !req.matches(v)
            {
                out.push(
                    at(
                        p,
                        Code::PlatformIncompatible,
                        "/spec/requires/platform",
                        format!(
                            "plugin {} {} needs platform {range}, and rampart.yaml runs platform {v}",
                            quote(p.name()),
                            p.spec.version
                        ),
                    )
                    .with_hint("use a version of the plugin built for this platform, or upgrade the platform first"),
                );
            }
        }
        for (name, range) in &p.spec.requires.plugins {
            if let Ok(req) = VersionReq::parse(range)
                && let Some(why) = impossible(&req)
            {
                out.push(impossible_range(
                    p,
                    &format!("/spec/requires/plugins/{}", escape_pointer(name)),
                    range,
                    &why,
                ));
            }
        }
    }
    out.extend(cycles(&by_name));
    let facts = facts(repo, &by_name);
    let per_tenant: Vec<Vec<Diagnostic>> = repo.tenants.par_iter().map(|t| tenant(t, &facts)).collect();
    out.extend(per_tenant.into_iter().flatten());
    out.extend(rollouts(repo, &by_name));
    out
}

fn impossible_range<S>(o: &Object<S>, pointer: &str, range: &str, why: &str) -> Diagnostic {
    at(
        o,
        Code::ImpossibleRange,
        pointer,
        format!("version range `{range}` matches no version: {why}"),
    )
    .with_hint("write a range whose lower bound is below its upper bound, e.g. `>=1.2, <2`")
}

/// A version bound and whether it is inclusive.
type Bound = (Version, bool);

/// Why a range can match no version at all, when its bounds contradict each other.
fn impossible(req: &VersionReq) -> Option<String> {
    // each comparator as [lower, upper) bounds over (major, minor, patch)
    let mut lower: Option<(Version, bool, String)> = None; // (bound, inclusive, comparator)
    let mut upper: Option<(Version, bool, String)> = None;
    for c in &req.comparators {
        if !c.pre.is_empty() {
            // pre-release bounds follow their own rules: never called impossible
            return None;
        }
        let v = |minor: Option<u64>, patch: Option<u64>| Version::new(c.major, minor.unwrap_or(0), patch.unwrap_or(0));
        let (Some(major1), Some(minor1)) = (c.major.checked_add(1), c.minor.unwrap_or(0).checked_add(1)) else {
            return None;
        };
        let text = c.to_string();
        let (lo, hi): (Option<Bound>, Option<Bound>) = match c.op {
            Op::Greater => match (c.minor, c.patch) {
                (Some(m), Some(p)) => (Some((Version::new(c.major, m, p), false)), None),
                (Some(_), None) => (Some((Version::new(c.major, minor1, 0), true)), None),
                _ => (Some((Version::new(major1, 0, 0), true)), None),
            },
            Op::GreaterEq => (Some((v(c.minor, c.patch), true)), None),
            Op::Less => (None, Some((v(c.minor, c.patch), false))),
            Op::LessEq => match (c.minor, c.patch) {
                (Some(m), Some(p)) => (None, Some((Version::new(c.major, m, p), true))),
                (Some(_), None) => (None, Some((Version::new(c.major, minor1, 0), false))),
                _ => (None, Some((Version::new(major1, 0, 0), false))),
            },
            // exact, tilde, caret, wildcard: a non-empty interval of their own
            _ => (None, None),
        };
        if let Some((b, inc)) = lo
            && lower.as_ref().is_none_or(|(l, _, _)| b > *l)
        {
            lower = Some((b, inc, text.clone()));
        }
        if let Some((b, inc)) = hi
            && upper.as_ref().is_none_or(|(u, _, _)| b < *u)
        {
            upper = Some((b, inc, text));
        }
    }
    let ((lo, lo_inc, lo_text), (hi, hi_inc, hi_text)) = (lower?, upper?);
    let empty = lo > hi || (lo == hi && !(lo_inc && hi_inc));
    empty.then(|| format!("`{lo_text}` and `{hi_text}` exclude each other"))
}

/// One report per dependency cycle among the plugins, at its first plugin (by name).
fn cycles(by_name: &Plugins<'_>) -> Vec<Diagnostic> {
    let mut names: Vec<&str> = by_name.keys().copied().collect();
    names.sort_unstable();
    // 0 new, 1 on the current path, 2 done
    let mut state: HashMap<&str, u8> = HashMap::new();
    let mut out = Vec::new();
    for &start in &names {
        if state.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        // iterative depth-first search: (plugin, its requirements, next index)
        let mut stack: Vec<(&str, Vec<&str>, usize)> = Vec::new();
        let deps = |n: &str| -> Vec<&str> {
            by_name
                .get(n)
                .map(|p| {
                    p.spec
                        .requires
                        .plugins
                        .keys()
                        .map(String::as_str)
                        .filter(|d| by_name.contains_key(d))
                        .collect()
                })
                .unwrap_or_default()
        };
        state.insert(start, 1);
        stack.push((start, deps(start), 0));
        while let Some((node, ds, i)) = stack.last_mut() {
            let node: &str = node;
            if *i == ds.len() {
                state.insert(node, 2);
                stack.pop();
                continue;
            }
            let next = ds[*i];
            *i += 1;
            match state.get(next).copied().unwrap_or(0) {
                0 => {
                    state.insert(next, 1);
                    let d = deps(next);
                    stack.push((next, d, 0));
                }
                1 => {
                    // the path from `next` to `node`, closed
                    let from = stack.iter().position(|(n, _, _)| *n == next).unwrap_or(0);
                    let mut path: Vec<&str> = stack[from..].iter().map(|(n, _, _)| *n).collect();
                    path.push(next);
                    let first = by_name[next];
                    let after = path.get(1).copied().unwrap_or(next);
                    out.push(
                        at(
                            first,
                            Code::DependencyCycle,
                            &format!("/spec/requires/plugins/{}#key", escape_pointer(after)),
                            format!("plugins require each other in a cycle: {}", path.join(" → ")),
                        )
                        .with_hint("a plugin cannot need itself; drop one of these requirements"),
                    );
                }
                _ => {}
            }
        }
    }
    out
}

fn enabled(t: &Object<TenantSpec>) -> impl Iterator<Item = (usize, &str)> {
    t.spec
        .plugins
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.disabled)
        .map(|(i, p)| (i, p.name.as_str()))
}

/// What the per-tenant checks need of one plugin, worked out once (a repo has ~10 tenants
/// per plugin; parsing versions, ranges and quantities per tenant cost more than the checks).
struct PluginFacts<'r> {
    plugin: &'r Object<PluginSpec>,
    /// Each requirement on a plugin the repo has: its name, range, and whether the version
    /// the repo pins satisfies it (`true` when either does not parse: reported elsewhere).
    requires: Vec<(&'r str, &'r str, &'r str, bool)>,
    /// The permissions each tier of `settings.permissions` refuses (tiers with none left out).
    refused: HashMap<&'r str, Vec<&'r str>>,
    cpu: i128,
    memory: i128,
}

type Facts<'r> = HashMap<&'r str, PluginFacts<'r>>;

fn facts<'r>(repo: &'r Repo, by_name: &Plugins<'r>) -> Facts<'r> {
    let q = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .and_then(|v| Quantity::from_json(v).ok())
            .map_or(0, |q| q.nanos)
    };
    by_name
        .par_iter()
        .map(|(name, p)| {
            let requires = p
                .spec
                .requires
                .plugins
                .iter()
                .filter_map(|(dep, range)| {
                    let d = by_name.get(dep.as_str())?;
                    let ok = match (VersionReq::parse(range), Version::parse(&d.spec.version)) {
                        (Ok(req), Ok(v)) => req.matches(&v),
                        _ => true,
                    };
                    Some((dep.as_str(), range.as_str(), d.spec.version.as_str(), ok))
                })
                .collect();
            let refused = repo
                .settings
                .permissions
                .iter()
                .filter_map(|(tier, allowed)| {
                    let refused: Vec<&str> = p
                        .spec
                        .permissions
                        .iter()
                        .filter(|x| !allowed.allows(x))
                        .map(String::as_str)
                        .collect();
                    (!refused.is_empty()).then_some((tier.as_str(), refused))
                })
                .collect();
            let facts = PluginFacts {
                plugin: p,
                requires,
                refused,
                cpu: q(&p.spec.resources.cpu),
                memory: q(&p.spec.resources.memory),
            };
            (*name, facts)
        })
        .collect()
}

fn tenant(t: &Object<TenantSpec>, facts: &Facts<'_>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let on: HashMap<&str, usize> = enabled(t).map(|(i, n)| (n, i)).collect();
    let (mut cpu, mut memory) = (0i128, 0i128);
    for (i, name) in enabled(t) {
        let Some(f) = facts.get(name) else { continue };
        let p = f.plugin;
        let entry = || format!("/spec/plugins/{i}/name");
        for &(dep, range, version, ok) in &f.requires {
            if !on.contains_key(dep) {
                out.push(
                    at(
                        t,
                        Code::RequirementMissing,
                        &entry(),
                        format!(
                            "{} {} needs {} {range}, which tenant {} does not enable",
                            p.name(),
                            p.spec.version,
                            dep,
                            quote(t.name())
                        ),
                    )
                    .with_hint(format!("enable `{dep}` for this tenant too, or disable `{}`", p.name())),
                );
                continue;
            }
            if !ok {
                out.push(
                    at(
                        t,
                        Code::RequirementConflict,
                        &entry(),
                        format!(
                            "{} {} needs {} {range}, tenant {} enables {} {}",
                            p.name(),
                            p.spec.version,
                            dep,
                            quote(t.name()),
                            dep,
                            version
                        ),
                    )
                    .with_hint(format!(
                        "move `{dep}` to a version in {range}, or use a version of `{}` that accepts {}",
                        p.name(),
                        version
                    )),
                );
            }
        }
        if let Some(refused) = f.refused.get(t.spec.tier.as_str()) {
            out.push(
                at(
                    t,
                    Code::PermissionNotAllowed,
                    &entry(),
                    format!(
                        "{} asks for {}, which the `{}` tier does not allow",
                        p.name(),
                        refused.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "),
                        t.spec.tier
                    ),
                )
                .with_hint("move the tenant to a tier that allows it, or change `permissions` in rampart.yaml (a platform decision)"),
            );
        }
        cpu = cpu.saturating_add(f.cpu);
        memory = memory.saturating_add(f.memory);
    }
    for (field, used, quota) in [
        ("cpu", cpu, &t.spec.quota.cpu),
        ("memory", memory, &t.spec.quota.memory),
    ] {
        if let Ok(quota) = Quantity::from_json(quota)
            && used > quota.nanos
        {
            out.push(
                at(
                    t,
                    Code::PluginsOverQuota,
                    &format!("/spec/quota/{field}"),
                    format!(
                        "the enabled plugins need {} of {field}, above the tenant's quota of {quota}",
                        shown(used, field)
                    ),
                )
                .with_hint("raise the quota (within the tier) or disable a plugin"),
            );
        }
    }
    out
}

/// A nano-unit amount as a quantity a reader recognises.
fn shown(nanos: i128, field: &str) -> String {
    if field == "cpu" {
        let milli = nanos / 1_000_000;
        if milli % 1000 == 0 {
            format!("{}", milli / 1000)
        } else {
            format!("{milli}m")
        }
    } else {
        let bytes = nanos / 1_000_000_000;
        let mib = bytes / (1 << 20);
        if bytes % (1 << 20) == 0 {
            format!("{mib}Mi")
        } else {
            format!("{bytes}")
        }
    }
}

/// A rollout's `toVersion`: newer than the plugin's, and accepted by every plugin of every
/// target tenant that requires it.
fn rollouts(repo: &Repo, by_name: &Plugins<'_>) -> Vec<Diagnostic> {
    let index = TenantIndex::new(repo);
    let mut out = Vec::new();
    for r in &repo.rollouts {
        let Some(plugin) = by_name.get(r.spec.plugin.as_str()) else {
            continue;
        };
        let (Ok(to), Ok(from)) = (Version::parse(&r.spec.to_version), Version::parse(&plugin.spec.version)) else {
            continue;
        };
        if to <= from {
            out.push(
                at(
                    r,
                    Code::RolloutNotNewer,
                    "/spec/toVersion",
                    format!(
                        "rollout {} goes to {} {to}, not newer than the {from} the tenants run",
                        quote(r.name()),
                        r.spec.plugin
                    ),
                )
                .with_hint("a rollback is a revert of the plugin's version in Git, not a rollout"),
            );
            continue;
        }
        let mut conflicts: Vec<String> = Vec::new();
        let mut count = 0;
        for i in index.targets(&r.spec) {
            let t = &repo.tenants[i];
            if !enabled(t).any(|(_, n)| n == r.spec.plugin) {
                continue;
            }
            for (_, name) in enabled(t) {
                let Some(p) = by_name.get(name) else { continue };
                if let Some(range) = p.spec.requires.plugins.get(&r.spec.plugin)
                    && VersionReq::parse(range).is_ok_and(|req| !req.matches(&to))
                {
                    count += 1;
                    if conflicts.len() < 3 {
                        conflicts.push(format!(
                            "{} {} in tenant {} needs {} {range}",
                            p.name(),
                            p.spec.version,
                            quote(t.name()),
                            r.spec.plugin
                        ));
                    }
                }
            }
        }
        if count > 0 {
            let more = if count > conflicts.len() {
                format!(" (and {} more)", count - conflicts.len())
            } else {
                String::new()
            };
            out.push(
                at(
                    r,
                    Code::RolloutIncompatible,
                    "/spec/toVersion",
                    format!(
                        "{} {to} does not satisfy what its target tenants require: {}{more}",
                        r.spec.plugin,
                        conflicts.join("; ")
                    ),
                )
                .with_hint("roll out the plugins that require it first, or narrow the rollout's tenants"),
            );
        }
    }
    out
}

/// Why a plugin is in a tenant's set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Reason {
    /// The tenant enables it.
    Enabled,
    /// Another enabled plugin requires it, with this range.
    RequiredBy {
        plugin: String,
        range: String,
        satisfied: bool,
    },
}

/// One plugin of a tenant's resolved set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TreeEntry {
    pub name: String,
    /// `None` when the plugin is not defined.
    pub version: Option<String>,
    pub disabled: bool,
    pub reasons: Vec<Reason>,
    /// Required by an enabled plugin but not enabled by the tenant.
    pub missing: bool,
}

/// The plugin set of `tenant`: each plugin it lists, and each one required but missing,
/// with why it is there. `None` when there is no such tenant.
pub fn tree(repo: &Repo, tenant: &str) -> Option<Vec<TreeEntry>> {
    let t = repo.tenants.iter().find(|t| t.name() == tenant)?;
    let by_name = plugins(repo);
    let mut entries: BTreeMap<String, TreeEntry> = BTreeMap::new();
    for p in &t.spec.plugins {
        entries.insert(
            p.name.clone(),
            TreeEntry {
                name: p.name.clone(),
                version: by_name.get(p.name.as_str()).map(|d| d.spec.version.clone()),
                disabled: p.disabled,
                reasons: if p.disabled { Vec::new() } else { vec![Reason::Enabled] },
                missing: false,
            },
        );
    }
    for (_, name) in enabled(t) {
        let Some(p) = by_name.get(name) else { continue };
        for (dep, range) in &p.spec.requires.plugins {
            let version = by_name.get(dep.as_str()).map(|d| d.spec.version.clone());
            let satisfied = match (&version, VersionReq::parse(range)) {
                (Some(v), Ok(req)) => Version::parse(v).is_ok_and(|v| req.matches(&v)),
                _ => false,
            };
            let e = entries.entry(dep.clone()).or_insert_with(|| TreeEntry {
                name: dep.clone(),
                version,
                disabled: false,
                reasons: Vec::new(),
                missing: true,
            });
            if e.disabled {
                e.missing = true;
            }
            e.reasons.push(Reason::RequiredBy {
                plugin: p.name().to_owned(),
                range: range.clone(),
                satisfied,
            });
        }
    }
    Some(entries.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contradicting_bounds_are_impossible() {
        for (range, empty) in [
            (">=2, <1", true),
            (">1.4.0, <=1.4.0", true),
            (">=1.4.0, <=1.4.0", false),
            (">=1.2, <2", false),
            ("^1.2", false),
            (">2, <3", true),
            (">=2, <3", false),
            (">2, <=2", true),
            (">=1.0.0-alpha, <1.0.0", false),
            (">18446744073709551615", false),
            ("<=18446744073709551615.18446744073709551615", false),
        ] {
            let req = VersionReq::parse(range).unwrap();
            assert_eq!(impossible(&req).is_some(), empty, "{range}");
        }
    }
}
