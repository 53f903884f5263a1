//! Rollouts in progress: per target tenant, a canary Deployment, Service and ConfigMap with
//! the new plugin version, and the tenant's `HTTPRoute` splitting traffic between the stable
//! portal and every canary by the current step's weight (pure).

use super::portal::{Plugins, config_map, deployment, dynamic_plugins, plugin_entry, service};
use super::tenant::meta;
use super::{Manifest, Options, ROLLOUT_LABEL, manifest};
use crate::diagnostic::{Code, Diagnostic};
use crate::policy::model::TenantIndex;
use crate::spec::{Object, Repo, RolloutSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use std::collections::BTreeMap;

/// The Gateway every tenant's portal route attaches to.
pub const GATEWAY: (&str, &str) = ("rampart-system", "portal-gateway");

/// Gateway API `HTTPRoute` (gateway.networking.k8s.io/v1), the fields rampart sets.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: HttpRouteSpec,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    pub group: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    pub backend_refs: Vec<HttpBackendRef>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    pub kind: &'static str,
    pub name: String,
    pub port: i32,
    pub weight: i32,
}

/// The package reference of `package` at `version`: `name@1.2.3` → `name@<version>`,
/// `oci://…/plugin:1.2.3!name` → `oci://…/plugin:<version>!name`.
pub fn package_at(package: &str, version: &str) -> String {
    let (base, sep, _, rest) = split_version(package);
    format!("{base}{sep}{version}{rest}")
}

/// The version a package reference names, if it names one: `1.2.3` of `name@1.2.3` and of
/// `oci://…/plugin:1.2.3!name`.
pub fn package_version(package: &str) -> Option<&str> {
    split_version(package).2
}

/// A package reference around its version: (before, separator, version, after).
fn split_version(package: &str) -> (&str, char, Option<&str>, &str) {
    if package.starts_with("oci://") {
        let (image, rest) = package.split_at(package.find('!').unwrap_or(package.len()));
        return match image.rfind(':') {
            Some(i) if !image[i..].contains('/') => (&image[..i], ':', Some(&image[i + 1..]), rest),
            _ => (image, ':', None, rest),
        };
    }
    // an npm package: the last `@` after the first character separates the version
    match package.rfind('@').filter(|&i| i > 0) {
        Some(i) => (&package[..i], '@', Some(&package[i + 1..]), ""),
        None => (package, '@', None, ""),
    }
}

/// A canary's short names: `canary-<rollout>` (Deployment, ConfigMap) and a Service name
/// that is a DNS-1035 label (starts with a letter, at most 63 characters).
fn service_name(rollout: &str) -> String {
    let mut s = format!("c-{rollout}");
    s.truncate(63);
    s.trim_end_matches('-').to_owned()
}

/// Which rollouts reach which tenant, at which weight: tenant index → [(rollout index,
/// weight)], in rollout order, for the tenants `wanted` accepts. Rollouts whose step does not
/// exist are reported and left out.
pub fn targets(
    repo: &Repo,
    opts: &Options,
    wanted: &(dyn Fn(&str) -> bool + Sync),
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<usize, Vec<(usize, i32)>> {
    let index = TenantIndex::of(repo, wanted);
    let mut out: BTreeMap<usize, Vec<(usize, i32)>> = BTreeMap::new();
    for (ri, r) in repo.rollouts.iter().enumerate() {
        let eligible = eligible(repo, &index, r);
        let Some(phase) = current_phase(r, eligible.len(), opts, diags) else {
            continue;
        };
        let reached = phase.first.unwrap_or(eligible.len());
        for &i in eligible.iter().take(reached) {
            out.entry(i).or_default().push((ri, phase.weight as i32));
        }
    }
    out
}

/// The tenants a rollout puts a canary in (its targets that run its plugin), in the
/// rollout's tenant order: a rolling rollout reaches them one by one.
pub fn eligible(repo: &Repo, index: &TenantIndex<'_>, r: &Object<RolloutSpec>) -> Vec<usize> {
    index
        .targets(&r.spec)
        .into_iter()
        .filter(|&i| {
            let t = &repo.tenants[i];
            !super::reserved(t.name()) && t.spec.plugins.iter().any(|p| p.name == r.spec.plugin && !p.disabled)
        })
        .collect()
}

/// The canaries of one tenant and its HTTPRoute, given the rollouts that reach it.
pub fn for_tenant(
    repo: &Repo,
    tenant: usize,
    rollouts: &[(usize, i32)],
    plugins: &Plugins<'_>,
    version: &str,
    opts: &Options,
) -> (Vec<Manifest>, Vec<Diagnostic>) {
    let t = &repo.tenants[tenant];
    let name = t.name();
    let mut out = Vec::new();
    let mut canaries = Vec::new();
    for &(ri, weight) in rollouts {
        let r = &repo.rollouts[ri];
        let Some(plugin) = plugins.get(r.spec.plugin.as_str()) else {
            continue;
        };
        // the new version's own artifact; a rollout without one is an error (R321), compiled
        // (for a plan of a broken head) as the plugin's package moved to `toVersion`, unpinned
        let new_package = match &r.spec.artifact {
            Some(a) => (a.package.clone(), Some(&a.integrity)),
            None => (package_at(&plugin.spec.artifact.package, &r.spec.to_version), None),
        };
        let entries = t
            .spec
            .plugins
            .iter()
            .zip(super::secret::substitute_tenant(&t.spec.plugins))
            .filter_map(|(p, config)| {
                let spec = &plugins.get(p.name.as_str())?.spec;
                let config = config.map(|c| c.0);
                Some(if p.name == r.spec.plugin {
                    plugin_entry(
                        p,
                        config,
                        &new_package.0,
                        new_package.1.map(String::as_str),
                        opts.redact,
                    )
                } else {
                    plugin_entry(
                        p,
                        config,
                        &spec.artifact.package,
                        Some(&spec.artifact.integrity),
                        opts.redact,
                    )
                })
            })
            .collect();
        let cm = format!("canary-{}", r.name());
        let extra = BTreeMap::from([(ROLLOUT_LABEL.to_owned(), r.name().to_owned())]);
        let mut d = deployment(t, plugins, version, "canary", &cm, &extra);
        d.metadata.name = Some(format!("canary-{}", r.name()));
        out.push(manifest(&d, name));
        let svc_name = service_name(r.name());
        let mut svc = service(name, &svc_name, "canary");
        if let Some(sel) = svc.spec.as_mut().and_then(|s| s.selector.as_mut()) {
            sel.extend(extra.clone());
        }
        out.push(manifest(&svc, name));
        out.push(manifest(&config_map(name, &cm, dynamic_plugins(entries)), name));
        canaries.push((svc_name, weight));
    }
    if canaries.is_empty() {
        return (out, Vec::new());
    }
    let total: i32 = canaries.iter().map(|(_, w)| w).sum();
    if total > 100 {
        let d = Diagnostic::at_node(
            Code::CanaryWeightsOver100,
            &t.origin.file,
            t.origin.doc,
            "/metadata/name",
            format!(
                "rollouts to tenant `{}` send {total}% of its traffic to canaries at their current steps",
                t.name()
            ),
        )
        .with_hint("run one rollout per tenant at a time, or lower the current steps");
        return (out, vec![d]);
    }
    let mut backends = vec![HttpBackendRef {
        kind: "Service",
        name: "portal".to_owned(),
        port: 80,
        weight: 100 - total,
    }];
    backends.extend(canaries.into_iter().map(|(name, weight)| HttpBackendRef {
        kind: "Service",
        name,
        port: 80,
        weight,
    }));
    out.push(manifest(
        &HttpRoute {
            api_version: "gateway.networking.k8s.io/v1",
            kind: "HTTPRoute",
            metadata: meta("portal", Some(name), name, "routing"),
            spec: HttpRouteSpec {
                parent_refs: vec![ParentReference {
                    group: "gateway.networking.k8s.io",
                    kind: "Gateway",
                    namespace: GATEWAY.0.to_owned(),
                    name: GATEWAY.1.to_owned(),
                }],
                rules: vec![HttpRouteRule { backend_refs: backends }],
            },
        },
        name,
    ));
    (out, Vec::new())
}

/// The phase of a rollout's current step (from the options; the first step by default; step
/// 0: not running, no canary), given how many tenants it can reach.
fn current_phase(
    r: &Object<RolloutSpec>,
    tenants: usize,
    opts: &Options,
    diags: &mut Vec<Diagnostic>,
) -> Option<crate::rollout::Phase> {
    let step = opts.rollout_steps.get(r.name()).copied().unwrap_or(1);
    if step == 0 {
        return None;
    }
    let phases = crate::rollout::phases(&r.spec, tenants);
    match phases.get(step - 1) {
        Some(p) => Some(p.clone()),
        None => {
            diags.push(
                Diagnostic::at_node(
                    Code::NoSuchStep,
                    &r.origin.file,
                    r.origin.doc,
                    "/spec/steps",
                    format!(
                        "rollout `{}` ({}) has {} step{}; step {step} does not exist",
                        r.name(),
                        r.spec.strategy,
                        phases.len(),
                        if phases.len() == 1 { "" } else { "s" }
                    ),
                )
                .with_hint(match r.spec.strategy.as_str() {
                    "rolling" => "steps are numbered from 1; a rolling rollout has one step per tenant it reaches",
                    "blueGreen" => {
                        "steps are numbered from 1; a blue-green rollout has two: the preview and the switch"
                    }
                    "instant" => "an instant rollout has one step",
                    _ => "steps are numbered from 1",
                }),
            );
            None
        }
    }
}

#[cfg(test)]
mod unit {
    #[test]
    fn packages_move_to_the_new_version() {
        assert_eq!(
            super::package_at("@backstage/plugin-catalog@2.3.1", "2.4.0"),
            "@backstage/plugin-catalog@2.4.0"
        );
        assert_eq!(super::package_at("left-pad", "1.0.0"), "left-pad@1.0.0");
        assert_eq!(
            super::package_at(
                "oci://quay.example:443/p/deploy-gate:0.9.1!larkspur-plugin-deploy-gate",
                "1.0.0"
            ),
            "oci://quay.example:443/p/deploy-gate:1.0.0!larkspur-plugin-deploy-gate"
        );
        assert_eq!(super::package_version("@backstage/plugin-catalog@2.3.1"), Some("2.3.1"));
        assert_eq!(
            super::package_version("oci://quay.example:443/p/gate:0.9.1!gate"),
            Some("0.9.1")
        );
        assert_eq!(super::package_version("oci://quay.example:443/p/gate!gate"), None);
        assert_eq!(super::package_version("@backstage/plugin-catalog"), None);
        // a first character of several bytes is not split
        assert_eq!(super::package_at("é@1", "2"), "é@2");
        assert_eq!(super::service_name(&"a".repeat(63)).len(), 63);
    }
}
