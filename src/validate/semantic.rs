//! Semantic checks across objects: names, references, quantities, tier bounds, durations and
//! rollout steps (pure). Runs on the objects that passed their schema.

use crate::config::TierBounds;
use crate::diagnostic::{Code, Diagnostic, edit_distance, quote};
use crate::load::escape_pointer;
use crate::spec::{Kind, Object, Origin, Repo};
use crate::units::{Duration, Quantity};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Every name definition seen, valid document or not: for duplicate detection.
pub type Definitions = Vec<(Kind, String, Origin)>;

pub fn check(repo: &Repo, defs: &Definitions) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    duplicate_names(defs, &mut out);
    for t in &repo.tenants {
        tenant(repo, t, &mut out);
    }
    for p in &repo.plugins {
        plugin(repo, p, &mut out);
    }
    let enabled: HashMap<&str, HashSet<&str>> = repo
        .tenants
        .iter()
        .map(|t| (t.name(), t.spec.plugins.iter().map(|p| p.name.as_str()).collect()))
        .collect();
    for r in &repo.rollouts {
        rollout(repo, r, &enabled, &mut out);
    }
    out
}

fn at<S>(o: &Object<S>, code: Code, pointer: &str, msg: String) -> Diagnostic {
    Diagnostic::at_node(code, &o.origin.file, o.origin.doc, pointer, msg)
}

fn duplicate_names(defs: &Definitions, out: &mut Vec<Diagnostic>) {
    let mut first: HashMap<(Kind, &str), &Origin> = HashMap::with_capacity(defs.len());
    for (kind, name, origin) in defs {
        if let Some(prev) = first.get(&(*kind, name.as_str())) {
            out.push(
                Diagnostic::at_node(
                    Code::DuplicateName,
                    &origin.file,
                    origin.doc,
                    "/metadata/name",
                    format!("{} {} is already defined in {}", kind.as_str(), quote(name), prev.file),
                )
                .with_hint(format!(
                    "names are unique per kind; rename one of the two {}s",
                    kind.as_str()
                )),
            );
        } else {
            first.insert((*kind, name), origin);
        }
    }
}

fn tenant(repo: &Repo, t: &Object<crate::spec::TenantSpec>, out: &mut Vec<Diagnostic>) {
    for (i, owner) in t.spec.owners.iter().enumerate() {
        if !repo.has(Kind::Team, owner) {
            out.push(
                at(
                    t,
                    Code::UnknownTeam,
                    &format!("/spec/owners/{i}"),
                    format!("tenant {} is owned by unknown team {}", quote(t.name()), quote(owner)),
                )
                .with_hint(suggest(owner, repo, Kind::Team, "define the team in `teams/`")),
            );
        }
    }
    // quota: parse, then compare with the tier's bounds
    let bounds: Option<&TierBounds> = repo.settings.tiers.get(&t.spec.tier);
    let q = &t.spec.quota;
    for (field, value, bound) in [
        ("cpu", &q.cpu, bounds.map(|b| &b.cpu)),
        ("memory", &q.memory, bounds.map(|b| &b.memory)),
        ("storage", &q.storage, bounds.map(|b| &b.storage)),
    ] {
        let ptr = format!("/spec/quota/{field}");
        match Quantity::from_json(value) {
            Err(e) => out.push(
                at(t, Code::InvalidQuantity, &ptr, format!("quota `{field}`: {e}"))
                    .with_hint("write a Kubernetes quantity such as `500m`, `4`, `16Gi` or `1e3`"),
            ),
            Ok(v) => {
                if let Some(b) = bound
                    && v > *b
                {
                    out.push(
                        at(t, Code::QuotaAboveTier, &ptr, format!("quota `{field}` {} is above the `{}` tier's bound of {b}", v.text, t.spec.tier))
                            .with_hint(format!("lower it to at most {b}, or move the tenant to a higher tier (bounds are in rampart.yaml `spec.tiers`)")),
                    );
                }
            }
        }
    }
    if let Some(b) = bounds
        && q.pods > b.pods
    {
        out.push(
            at(
                t,
                Code::QuotaAboveTier,
                "/spec/quota/pods",
                format!(
                    "quota `pods` {} is above the `{}` tier's bound of {}",
                    q.pods, t.spec.tier, b.pods
                ),
            )
            .with_hint(format!(
                "lower it to at most {}, or move the tenant to a higher tier",
                b.pods
            )),
        );
    }
    for (i, from) in t.spec.network.allow_from.iter().enumerate() {
        let ptr = format!("/spec/network/allowFrom/{i}");
        if from == t.name() {
            out.push(
                at(
                    t,
                    Code::SelfReference,
                    &ptr,
                    format!("tenant {} lists itself in `allowFrom`", quote(from)),
                )
                .with_hint("remove it; traffic from the tenant itself is always allowed"),
            );
        } else if !repo.has(Kind::Tenant, from) {
            out.push(
                at(
                    t,
                    Code::UnknownTenant,
                    &ptr,
                    format!("`allowFrom` names unknown tenant {}", quote(from)),
                )
                .with_hint(suggest(
                    from,
                    repo,
                    Kind::Tenant,
                    "define the tenant in `tenants/` or remove the entry",
                )),
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, p) in t.spec.plugins.iter().enumerate() {
        let ptr = format!("/spec/plugins/{i}/name");
        if !seen.insert(p.name.as_str()) {
            out.push(
                at(
                    t,
                    Code::DuplicateEntry,
                    &ptr,
                    format!("plugin {} is enabled twice", quote(&p.name)),
                )
                .with_hint("keep one entry per plugin and merge their `config`"),
            );
        } else if !repo.has(Kind::Plugin, &p.name) {
            out.push(
                at(
                    t,
                    Code::UnknownPlugin,
                    &ptr,
                    format!("tenant {} enables unknown plugin {}", quote(t.name()), quote(&p.name)),
                )
                .with_hint(suggest(
                    &p.name,
                    repo,
                    Kind::Plugin,
                    "define the plugin in `plugins/` or remove the entry",
                )),
            );
        }
    }
}

fn plugin(repo: &Repo, p: &Object<crate::spec::PluginSpec>, out: &mut Vec<Diagnostic>) {
    for name in p.spec.requires.plugins.keys() {
        if !repo.has(Kind::Plugin, name) {
            out.push(
                at(
                    p,
                    Code::UnknownPlugin,
                    &format!("/spec/requires/plugins/{}#key", escape_pointer(name)),
                    format!("plugin {} requires unknown plugin {}", quote(p.name()), quote(name)),
                )
                .with_hint(suggest(
                    name,
                    repo,
                    Kind::Plugin,
                    "define the required plugin in `plugins/`",
                )),
            );
        }
    }
    for (field, value) in [("cpu", &p.spec.resources.cpu), ("memory", &p.spec.resources.memory)] {
        if let Some(v) = value
            && let Err(e) = Quantity::from_json(v)
        {
            out.push(
                at(
                    p,
                    Code::InvalidQuantity,
                    &format!("/spec/resources/{field}"),
                    format!("resources `{field}`: {e}"),
                )
                .with_hint("write a Kubernetes quantity such as `100m` or `256Mi`"),
            );
        }
    }
    if let Some(path) = &p.spec.artifact.path
        && let Err(why) = check_repo_path(path)
    {
        out.push(
            at(p, Code::UnsafeRepoPath, "/spec/artifact/path", format!("artifact path {} is refused: {why}", quote(path)))
                .with_hint("write a path relative to the repo root with `/` separators and portable names, e.g. `artifacts/catalog-2.3.1.tgz`"),
        );
    }
}

fn rollout(
    repo: &Repo,
    r: &Object<crate::spec::RolloutSpec>,
    enabled: &HashMap<&str, HashSet<&str>>,
    out: &mut Vec<Diagnostic>,
) {
    let s = &r.spec;
    let plugin_known = repo.has(Kind::Plugin, &s.plugin);
    if !plugin_known {
        out.push(
            at(
                r,
                Code::UnknownPlugin,
                "/spec/plugin",
                format!(
                    "rollout {} rolls out unknown plugin {}",
                    quote(r.name()),
                    quote(&s.plugin)
                ),
            )
            .with_hint(suggest(
                &s.plugin,
                repo,
                Kind::Plugin,
                "define the plugin in `plugins/`",
            )),
        );
    }
    for (i, name) in s.tenants.names.iter().enumerate() {
        let ptr = format!("/spec/tenants/names/{i}");
        if !repo.has(Kind::Tenant, name) {
            out.push(
                at(
                    r,
                    Code::UnknownTenant,
                    &ptr,
                    format!("rollout {} targets unknown tenant {}", quote(r.name()), quote(name)),
                )
                .with_hint(suggest(
                    name,
                    repo,
                    Kind::Tenant,
                    "define the tenant in `tenants/` or remove it from the rollout",
                )),
            );
        } else if plugin_known
            && let Some(set) = enabled.get(name.as_str())
            && !set.contains(s.plugin.as_str())
        {
            out.push(
                at(
                    r,
                    Code::PluginNotEnabled,
                    &ptr,
                    format!(
                        "tenant {} does not enable plugin {}, so there is nothing to roll out there",
                        quote(name),
                        quote(&s.plugin)
                    ),
                )
                .with_hint(format!(
                    "enable `{}` in the tenant first, or remove the tenant from the rollout",
                    s.plugin
                )),
            );
        }
    }
    if let Some(sel) = &s.tenants.selector {
        let matched = repo
            .tenants
            .iter()
            .filter(|t| sel.matches(&t.metadata.labels))
            .filter(|t| !plugin_known || t.spec.plugins.iter().any(|p| p.name == s.plugin))
            .count();
        if matched == 0 {
            let labels: Vec<String> = sel.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(
                at(
                    r,
                    Code::SelectorMatchesNothing,
                    "/spec/tenants/selector",
                    format!(
                        "selector {} matches no tenant that enables plugin {}",
                        quote(&labels.join(",")),
                        quote(&s.plugin)
                    ),
                )
                .with_hint("check the labels in `metadata.labels` of the intended tenants"),
            );
        }
    }
    // steps: strictly increasing, ending at 100
    let mut prev = 0;
    for (i, step) in s.steps.iter().enumerate() {
        if step.weight <= prev {
            out.push(
                at(
                    r,
                    Code::StepsNotIncreasing,
                    &format!("/spec/steps/{i}/weight"),
                    format!(
                        "step {} has weight {}, not more than the previous step's {prev}",
                        i + 1,
                        step.weight
                    ),
                )
                .with_hint("weights are traffic percentages and must strictly increase, e.g. 10, 25, 50, 100"),
            );
        }
        prev = prev.max(step.weight);
        if let Some(p) = &step.pause {
            duration(r, &format!("/spec/steps/{i}/pause"), "step pause", p, out);
        }
    }
    if let Some(last) = s.steps.last()
        && last.weight != 100
    {
        out.push(
            at(
                r,
                Code::StepsNotEndingAt100,
                &format!("/spec/steps/{}/weight", s.steps.len() - 1),
                format!(
                    "the last step has weight {}, but a rollout must end at 100",
                    last.weight
                ),
            )
            .with_hint("add a final step `- weight: 100`"),
        );
    }
    let mut slo_names = BTreeSet::new();
    for (i, slo) in s.slos.iter().enumerate() {
        if !slo_names.insert(slo.name.as_str()) {
            out.push(
                at(
                    r,
                    Code::DuplicateEntry,
                    &format!("/spec/slos/{i}/name"),
                    format!("SLO {} is defined twice", quote(&slo.name)),
                )
                .with_hint("SLO names are unique within a rollout"),
            );
        }
        duration(r, &format!("/spec/slos/{i}/for"), "SLO window", &slo.for_, out);
    }
    if let Some(iv) = &s.analysis.interval {
        duration(r, "/spec/analysis/interval", "analysis interval", iv, out);
    }
}

fn duration<S>(o: &Object<S>, ptr: &str, what: &str, text: &str, out: &mut Vec<Diagnostic>) {
    match Duration::parse(text) {
        Ok(d) if d.millis == 0 => out.push(
            at(o, Code::InvalidDuration, ptr, format!("{what} {} is zero", quote(text)))
                .with_hint("use a positive duration such as `30s` or `5m`"),
        ),
        Ok(_) => {}
        Err(e) => out.push(
            at(o, Code::InvalidDuration, ptr, format!("{what}: {e}"))
                .with_hint("durations are like `30s`, `5m`, `1h30m` or `250ms`"),
        ),
    }
}

/// A repo-relative path that stays in the repo on every platform, or why not.
pub fn check_repo_path(path: &str) -> Result<(), &'static str> {
    if path.starts_with('/') {
        return Err("it is absolute");
    }
    if path.contains('\\') {
        return Err("it contains a backslash");
    }
    if path.contains(':') {
        return Err("it contains `:` (a drive letter or URL scheme)");
    }
    if path.contains('%') {
        return Err("it contains percent-encoding");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return Err(
            "it contains characters other than letters, digits, `.`, `_`, `-` and `/` (look-alike Unicode is refused)",
        );
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err("it has an empty segment"),
            "." | ".." => return Err("it contains `.` or `..` segments"),
            s if s.starts_with('-') => return Err("a segment starts with `-`"),
            _ => {}
        }
    }
    Ok(())
}

/// A hint naming the closest existing name of that kind, or the fallback advice.
fn suggest(name: &str, repo: &Repo, kind: Kind, fallback: &str) -> String {
    let best = repo
        .names_seen
        .get(&kind)
        .into_iter()
        .flatten()
        .filter(|n| n.len().abs_diff(name.len()) <= 2)
        .map(|n| (edit_distance(name, n), n))
        .filter(|(d, n)| *d <= 2 && *d < n.len())
        .min_by_key(|(d, n)| (*d, (*n).clone()));
    match best {
        Some((_, n)) => format!("did you mean `{n}`? otherwise {fallback}"),
        None => fallback.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::check_repo_path;

    #[test]
    fn repo_paths() {
        assert!(check_repo_path("artifacts/catalog-2.3.1.tgz").is_ok());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "%2e%2e/secret",
            "C:\\Windows",
            "c:/x",
            "a//b",
            "./a",
            "ａrtifacts/x",  // full-width look-alike
            "cafe\u{301}/x", // NFD
            "-rf",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad}");
        }
    }
}
