//! Semantic checks across objects: names, references, quantities, tier bounds, durations and
//! rollout steps (pure). Runs on the objects that passed their schema.

use crate::config::TierBounds;
use crate::diagnostic::{Code, Diagnostic, edit_distance, quote};
use crate::load::escape_pointer;
use crate::spec::{Kind, Object, Origin, Repo};
use crate::units::{Duration, Quantity};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use rayon::prelude::*;
use std::collections::BTreeSet;

/// Every name definition seen, valid document or not: for duplicate detection.
pub type Definitions = Vec<(Kind, String, Origin)>;

pub fn check(repo: &Repo, defs: &Definitions) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    duplicate_names(defs, &mut out);
    login_spellings(repo, &mut out);
    let cx = Context::new(repo);
    // objects are checked independently: spread them over the cores
    let each = |f: &(dyn Fn(&mut Vec<Diagnostic>, usize) + Sync), n: usize| -> Vec<Diagnostic> {
        (0..n)
            .into_par_iter()
            .flat_map_iter(|i| {
                let mut o = Vec::new();
                f(&mut o, i);
                o
            })
            .collect()
    };
    out.extend(each(&|o, i| tenant(&cx, &repo.tenants[i], o), repo.tenants.len()));
    out.extend(each(&|o, i| plugin(&cx, &repo.plugins[i], o), repo.plugins.len()));
    out.extend(each(&|o, i| rollout(&cx, &repo.rollouts[i], o), repo.rollouts.len()));
    out
}

/// What the checks look up across objects, indexed once.
struct Context<'r> {
    repo: &'r Repo,
    /// tenant → the plugins it enables
    enabled: HashMap<&'r str, HashSet<&'r str>>,
    /// `key=value` label → tenants carrying it
    by_label: HashMap<(&'r str, &'r str), Vec<&'r Object<crate::spec::TenantSpec>>>,
    /// typo index per kind, built on first use
    typos: [std::sync::OnceLock<Typos<'r>>; 4],
}

impl<'r> Context<'r> {
    fn new(repo: &'r Repo) -> Self {
        let enabled = repo
            .tenants
            .iter()
            .map(|t| {
                (
                    t.name(),
                    t.spec
                        .plugins
                        .iter()
                        .filter(|p| !p.disabled)
                        .map(|p| p.name.as_str())
                        .collect(),
                )
            })
            .collect();
        let mut by_label: HashMap<(&str, &str), Vec<_>> = HashMap::new();
        for t in &repo.tenants {
            for (k, v) in &t.metadata.labels {
                by_label.entry((k.as_str(), v.as_str())).or_default().push(t);
            }
        }
        Context {
            repo,
            enabled,
            by_label,
            typos: Default::default(),
        }
    }

    fn has(&self, kind: Kind, name: &str) -> bool {
        self.repo.has(kind, name)
    }

    /// Tenants whose labels include every label of the selector.
    fn selected(&self, sel: &crate::spec::Selector) -> Vec<&'r Object<crate::spec::TenantSpec>> {
        let mut labels = sel.match_labels.iter();
        let Some((k, v)) = labels.next() else { return Vec::new() };
        let first = self
            .by_label
            .get(&(k.as_str(), v.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        first
            .iter()
            .copied()
            .filter(|t| sel.matches(&t.metadata.labels))
            .collect()
    }

    /// A hint naming the closest existing name of that kind, or the fallback advice.
    fn suggest(&self, name: &str, kind: Kind, fallback: &str) -> String {
        let typos = self.typos[kind as usize].get_or_init(|| Typos::new(self.repo.names_seen.get(&kind)));
        match typos.closest(name) {
            Some(n) => format!("did you mean `{n}`? otherwise {fallback}"),
            None => fallback.to_owned(),
        }
    }
}

/// Names by their one-character deletions (SymSpell): finds every name within one edit of a
/// query, and most within two, in time independent of the number of names. Deletions are
/// kept as hashes in one sorted vector: no allocation per entry.
struct Typos<'r> {
    names: Vec<&'r str>,
    /// (hash of a deletion variant, index into `names`), sorted
    by_deletion: Vec<(u64, u32)>,
}

impl<'r> Typos<'r> {
    fn new(names: Option<&'r HashSet<String>>) -> Self {
        let mut sorted: Vec<&str> = names.into_iter().flatten().map(String::as_str).collect();
        sorted.sort_unstable();
        let mut by_deletion = Vec::with_capacity(sorted.len() * 16);
        for (i, n) in sorted.iter().enumerate() {
            deletion_hashes(n, |h| by_deletion.push((h, i as u32)));
        }
        by_deletion.sort_unstable();
        Typos {
            names: sorted,
            by_deletion,
        }
    }

    fn closest(&self, query: &str) -> Option<&'r str> {
        let mut best: Option<(usize, &'r str)> = None;
        deletion_hashes(query, |h| {
            let start = self.by_deletion.partition_point(|e| e.0 < h);
            for &(_, i) in self.by_deletion[start..].iter().take_while(|e| e.0 == h) {
                let n = self.names[i as usize];
                let d = edit_distance(query, n);
                if d <= 2 && d < n.len() && best.is_none_or(|b| (d, n) < b) {
                    best = Some((d, n));
                }
            }
        });
        best.map(|(_, n)| n)
    }
}

/// Hashes (FNV-1a; collisions only cost a wasted comparison) of the word itself and of every
/// string made by deleting one character.
fn deletion_hashes(s: &str, mut f: impl FnMut(u64)) {
    let chars: Vec<char> = s.chars().collect();
    for skip in std::iter::once(usize::MAX).chain(0..chars.len()) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, &c) in chars.iter().enumerate() {
            if i != skip {
                h = (h ^ c as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        f(h);
    }
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

/// GitHub logins are case-insensitive: `Alice` and `alice` are one person. Two spellings of
/// one login would let the first-sorting one take over the other's identity (membership is
/// matched on one normalised form), so every place that spells a login differently from the
/// first spelling seen is an error, and so is that first place.
fn login_spellings(repo: &Repo, out: &mut Vec<Diagnostic>) {
    // lowercase login → (spelling, team, index) of its first occurrence
    let mut first: HashMap<String, (&str, &Object<crate::spec::TeamSpec>, usize)> = HashMap::new();
    // (first places already reported, by team and index)
    let mut reported: HashSet<(&str, usize)> = HashSet::new();
    for t in &repo.teams {
        for (i, m) in t.spec.members.iter().enumerate() {
            let key = m.to_ascii_lowercase();
            match first.get(&key) {
                None => {
                    first.insert(key, (m, t, i));
                }
                Some((spelled, _, _)) if *spelled == m => {}
                Some(&(spelled, ft, fi)) => {
                    let hint = "GitHub logins are case-insensitive: spell the login the same way everywhere";
                    if reported.insert((ft.name(), fi)) {
                        out.push(
                            at(
                                ft,
                                Code::LoginCaseConflict,
                                &format!("/spec/members/{fi}"),
                                format!(
                                    "login {} is also spelled {} in team {}",
                                    quote(spelled),
                                    quote(m),
                                    quote(t.name())
                                ),
                            )
                            .with_hint(hint),
                        );
                    }
                    out.push(
                        at(
                            t,
                            Code::LoginCaseConflict,
                            &format!("/spec/members/{i}"),
                            format!(
                                "login {} is spelled {} in team {}",
                                quote(m),
                                quote(spelled),
                                quote(ft.name())
                            ),
                        )
                        .with_hint(hint),
                    );
                }
            }
        }
    }
}

fn tenant(cx: &Context<'_>, t: &Object<crate::spec::TenantSpec>, out: &mut Vec<Diagnostic>) {
    let repo = cx.repo;
    if crate::compile::reserved(t.name()) {
        out.push(
            Diagnostic::at_node(
                Code::ReservedNamespace,
                &t.origin.file,
                t.origin.doc,
                "/metadata/name",
                format!("tenant `{}` would take over a namespace Kubernetes or rampart reserves", t.name()),
            )
            .with_hint(
                "rename the tenant: `default`, `kube-*` and `openshift*` belong to the cluster, `rampart-system` to rampart",
            ),
        );
    }
    for (i, owner) in t.spec.owners.iter().enumerate() {
        if !cx.has(Kind::Team, owner) {
            out.push(
                at(
                    t,
                    Code::UnknownTeam,
                    &format!("/spec/owners/{i}"),
                    format!("tenant {} is owned by unknown team {}", quote(t.name()), quote(owner)),
                )
                .with_hint(cx.suggest(owner, Kind::Team, "define the team in `teams/`")),
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
                        at(
                            t,
                            Code::QuotaAboveTier,
                            &ptr,
                            format!(
                                "quota `{field}` {} is above the `{}` tier's bound of {b}",
                                v.text, t.spec.tier
                            ),
                        )
                        .with_hint(tier_hint(&b.to_string(), &t.spec.tier)),
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
            .with_hint(tier_hint(&b.pods.to_string(), &t.spec.tier)),
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
        } else if !cx.has(Kind::Tenant, from) {
            out.push(
                at(
                    t,
                    Code::UnknownTenant,
                    &ptr,
                    format!("`allowFrom` names unknown tenant {}", quote(from)),
                )
                .with_hint(cx.suggest(
                    from,
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
        } else if !cx.has(Kind::Plugin, &p.name) {
            out.push(
                at(
                    t,
                    Code::UnknownPlugin,
                    &ptr,
                    format!("tenant {} enables unknown plugin {}", quote(t.name()), quote(&p.name)),
                )
                .with_hint(cx.suggest(
                    &p.name,
                    Kind::Plugin,
                    "define the plugin in `plugins/` or remove the entry",
                )),
            );
        }
    }
}

fn plugin(cx: &Context<'_>, p: &Object<crate::spec::PluginSpec>, out: &mut Vec<Diagnostic>) {
    for name in p.spec.requires.plugins.keys() {
        if !cx.has(Kind::Plugin, name) {
            out.push(
                at(
                    p,
                    Code::UnknownPlugin,
                    &format!("/spec/requires/plugins/{}#key", escape_pointer(name)),
                    format!("plugin {} requires unknown plugin {}", quote(p.name()), quote(name)),
                )
                .with_hint(cx.suggest(name, Kind::Plugin, "define the required plugin in `plugins/`")),
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
    // the portal installs the package: a `version` it does not name is a change the plan
    // cannot show and a trust decision about another release
    let package = &p.spec.artifact.package;
    if let Some(named) = crate::compile::package_version(package)
        && let (Ok(declared), Ok(installed)) = (
            semver::Version::parse(&p.spec.version),
            semver::Version::parse(named.strip_prefix('v').unwrap_or(named)),
        )
        && declared != installed
    {
        out.push(
            at(
                p,
                Code::VersionMismatch,
                "/spec/version",
                format!(
                    "plugin {} is version {}, but its `artifact.package` {} is version {}",
                    quote(p.name()),
                    quote(&p.spec.version),
                    quote(package),
                    quote(named)
                ),
            )
            .with_hint("change `version` and the version in `artifact.package` together (and `integrity` and `signature` with them): the portal installs the package"),
        );
    }
    artifact_path(p, p.spec.artifact.path.as_deref(), out);
}

/// An artifact's copy in the repo (a plugin's or a rollout's) is at a safe path.
fn artifact_path<S>(o: &Object<S>, path: Option<&str>, out: &mut Vec<Diagnostic>) {
    if let Some(path) = path
        && let Err(why) = check_repo_path(path)
    {
        out.push(
            at(o, Code::UnsafeRepoPath, "/spec/artifact/path", format!("artifact path {} is refused: {why}", quote(path)))
                .with_hint("write a path relative to the repo root with `/` separators and portable names, e.g. `artifacts/catalog-2.3.1.tgz`"),
        );
    }
}

fn rollout(cx: &Context<'_>, r: &Object<crate::spec::RolloutSpec>, out: &mut Vec<Diagnostic>) {
    let enabled = &cx.enabled;
    let s = &r.spec;
    let plugin_known = cx.has(Kind::Plugin, &s.plugin);
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
            .with_hint(cx.suggest(&s.plugin, Kind::Plugin, "define the plugin in `plugins/`")),
        );
    }
    for (i, name) in s.tenants.names.iter().enumerate() {
        let ptr = format!("/spec/tenants/names/{i}");
        if !cx.has(Kind::Tenant, name) {
            out.push(
                at(
                    r,
                    Code::UnknownTenant,
                    &ptr,
                    format!("rollout {} targets unknown tenant {}", quote(r.name()), quote(name)),
                )
                .with_hint(cx.suggest(
                    name,
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
        let matched = cx
            .selected(sel)
            .iter()
            .filter(|t| !plugin_known || t.spec.plugins.iter().any(|p| p.name == s.plugin && !p.disabled))
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
    let mut prev: Option<(usize, u64)> = None;
    for (i, step) in s.steps.iter().enumerate() {
        if let Some((j, w)) = prev
            && step.weight <= w
        {
            out.push(
                at(
                    r,
                    Code::StepsNotIncreasing,
                    &format!("/spec/steps/{i}/weight"),
                    format!(
                        "step {} has weight {}, not more than {w} (step {})",
                        i + 1,
                        step.weight,
                        j + 1
                    ),
                )
                .with_hint("weights are traffic percentages and must strictly increase, e.g. 10, 25, 50, 100"),
            );
        }
        if prev.is_none_or(|(_, w)| step.weight > w) {
            prev = Some((i, step.weight));
        }
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
        if slo.min_requests.is_some() && slo.requests.is_none() {
            out.push(
                at(
                    r,
                    Code::MinRequestsWithoutRequests,
                    &format!("/spec/slos/{i}/minRequests"),
                    format!(
                        "SLO {} sets `minRequests` but no `requests` query to compare it with",
                        quote(&slo.name)
                    ),
                )
                .with_hint("add `requests`: PromQL returning the number of requests in the `for` window, e.g. `sum(increase(http_requests_total{track=\"canary\"}[5m]))`"),
            );
        }
        let queries = [("query", Some(&slo.query)), ("requests", slo.requests.as_ref())];
        for (field, text) in queries {
            if let Some(text) = text
                && let Err(p) = super::promql::lint(text)
            {
                out.push(
                    at(
                        r,
                        Code::PromqlMalformed,
                        &format!("/spec/slos/{i}/{field}"),
                        format!(
                            "SLO {} `{field}` {} (byte {} of the query)",
                            quote(&slo.name),
                            p.message,
                            p.column
                        ),
                    )
                    .with_hint("check the query in the Prometheus UI; in YAML, a `>-` block folds lines and a `|` block keeps them"),
                );
            }
        }
    }
    if let Some(iv) = &s.analysis.interval {
        duration(r, "/spec/analysis/interval", "analysis interval", iv, out);
    }
    if let Some(t) = &s.analysis.timeout {
        duration(r, "/spec/analysis/timeout", "query timeout", t, out);
    }
    rollout_artifact(r, out);
}

/// A rollout's new version names its package: present, naming `toVersion`, at a safe path.
fn rollout_artifact(r: &Object<crate::spec::RolloutSpec>, out: &mut Vec<Diagnostic>) {
    let s = &r.spec;
    let Some(artifact) = &s.artifact else {
        out.push(
            at(
                r,
                Code::RolloutWithoutArtifact,
                "/spec/toVersion",
                format!(
                    "rollout {} rolls out {} {} without its artifact: the canaries would install a package nobody pinned or signed",
                    quote(r.name()),
                    quote(&s.plugin),
                    quote(&s.to_version)
                ),
            )
            .with_hint("give the rollout the new version's `artifact` (package and integrity) and `signature`, as its Plugin has"),
        );
        return;
    };
    let package = &artifact.package;
    let named = crate::compile::package_version(package);
    let same = named.is_some_and(|n| {
        match (
            semver::Version::parse(&s.to_version),
            semver::Version::parse(n.strip_prefix('v').unwrap_or(n)),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => n == s.to_version,
        }
    });
    if !same {
        out.push(
            at(
                r,
                Code::RolloutPackageMismatch,
                "/spec/artifact/package",
                match named {
                    Some(n) => format!(
                        "rollout {} rolls out version {}, but its `artifact.package` {} is version {}",
                        quote(r.name()),
                        quote(&s.to_version),
                        quote(package),
                        quote(n)
                    ),
                    None => format!(
                        "rollout {} rolls out version {}, but its `artifact.package` {} names no version",
                        quote(r.name()),
                        quote(&s.to_version),
                        quote(package)
                    ),
                },
            )
            .with_hint("the canaries install `artifact.package`: write `toVersion` in it (`name@<version>`, or `oci://…:<version>`), and its `integrity` and `signature` with it"),
        );
    }
    artifact_path(r, artifact.path.as_deref(), out);
}

fn tier_hint(bound: &str, tier: &str) -> String {
    if tier == "enterprise" {
        format!("lower it to at most {bound}, or raise the `enterprise` bounds in rampart.yaml `spec.tiers`")
    } else {
        format!(
            "lower it to at most {bound}, or move the tenant to a higher tier (bounds are in rampart.yaml `spec.tiers`)"
        )
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
