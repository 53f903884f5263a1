//! Compile: the typed model → Kubernetes objects, deterministically (pure).
//!
//! Same repo in, same bytes out: objects are built from `k8s-openapi` types (and a typed
//! Gateway API `HTTPRoute`), sorted by their output path, and rendered to YAML with sorted
//! maps and no timestamps. Per tenant: a Namespace, ResourceQuota, LimitRange,
//! NetworkPolicies (default deny, same tenant, `allowFrom` tenants), a RoleBinding per owner
//! team, and the portal (Deployment, Service, `dynamic-plugins` ConfigMap). Per rollout, for
//! each target tenant: a canary Deployment, Service and ConfigMap with the new plugin version
//! and an HTTPRoute splitting traffic by the current step's weight. Every object carries
//! [`MANAGED_BY`], [`PART_OF`] and [`TENANT_LABEL`], so pruning by label is exact.

mod portal;
pub mod rollout;
pub mod secret;
mod tenant;

pub use rollout::package_version;

use crate::diagnostic::{Code, Diagnostic};
use crate::spec::Repo;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// `app.kubernetes.io/managed-by` value on every object.
pub const MANAGED_BY: &str = "rampart";
/// `app.kubernetes.io/part-of` value on every object.
pub const PART_OF: &str = "rampart-portal";
/// The label naming the tenant an object belongs to.
pub const TENANT_LABEL: &str = "rampart.dev/tenant";
/// The label naming the rollout a canary object belongs to.
pub const ROLLOUT_LABEL: &str = "rampart.dev/rollout";
/// The portal image (Red Hat Developer Hub community build); the tag is the platform version.
pub const PORTAL_IMAGE: &str = "quay.io/rhdh-community/rhdh";

/// Choices that are not in the repo.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The current step (1-based) of each rollout, by name; a rollout not named is at step 1,
    /// one at step 0 is not running (no canary: reverted, promoted or held).
    pub rollout_steps: BTreeMap<String, usize>,
    /// Replace secret-like plugin config values by a digest (for plans, never for apply).
    pub redact: bool,
}

/// `value` with every secret-like key's value replaced by `(secret sha256:…)`, so a reviewer
/// sees that it changed, never what it is. A list or map under such a key is replaced whole
/// (`apiTokens: [ghp_…]`, `credentials: {bearer: …}`): every part of it is as secret.
pub fn redact(value: &Value) -> Value {
    use sha2::{Digest, Sha256};
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    // (a Secret reference's placeholder is no secret: reviewers see it)
                    let placeholder = v.as_str().is_some_and(secret::is_env_reference);
                    let v = if secret::is_secret_key(k) && !v.is_null() && !placeholder {
                        // keyed with a key of this run only: base and head, rendered by the
                        // same run, show a rotation as a change, but a short secret cannot be
                        // found again from its digest by trying every value
                        let mut h = Sha256::new();
                        h.update(run_key());
                        h.update(v.to_string().as_bytes());
                        let hex: String = h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
                        Value::String(format!("(secret sha256:{hex})"))
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(xs) => Value::Array(xs.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// 32 bytes no one outside this process knows (std's per-process random hash keys), the key
/// of [`redact`]'s digests.
fn run_key() -> &'static [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        for (i, chunk) in key.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        key
    })
}

/// One compiled object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `None` for cluster-scoped objects (Namespace).
    pub namespace: Option<String>,
    pub tenant: String,
    /// The object, as JSON (what is rendered to YAML).
    #[serde(skip)]
    pub value: Value,
}

impl Manifest {
    /// Where the object is written: `<namespace or _cluster>/<kind>-<name>.yaml`, the kind in
    /// lower case (`payments/deployment-portal.yaml`).
    pub fn path(&self) -> String {
        format!(
            "{}/{}-{}.yaml",
            self.namespace.as_deref().unwrap_or("_cluster"),
            self.kind.to_ascii_lowercase(),
            self.name
        )
    }

    /// The object as YAML.
    pub fn yaml(&self) -> String {
        to_yaml(&self.value)
    }
}

/// YAML of a JSON value: block style, two-space indent, maps in key order as built.
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# could not render: {e}\n"))
}

/// Build a manifest from a typed object.
fn manifest<T: Serialize>(obj: &T, tenant: &str) -> Manifest {
    let value = serde_json::to_value(obj).expect("k8s objects serialize");
    let s = |p: &str| value.pointer(p).and_then(Value::as_str).map(str::to_owned);
    Manifest {
        api_version: s("/apiVersion").unwrap_or_default(),
        kind: s("/kind").unwrap_or_default(),
        name: s("/metadata/name").unwrap_or_default(),
        namespace: s("/metadata/namespace"),
        tenant: tenant.to_owned(),
        value,
    }
}

/// The standard labels of every object of `tenant`.
pub fn labels(tenant: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), PART_OF.to_owned()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
        (TENANT_LABEL.to_owned(), tenant.to_owned()),
    ])
}

/// Namespaces Kubernetes reserves, and rampart's own (`rampart-system`, where the cluster
/// target keeps its inventory): a tenant may not take them over.
pub fn reserved(name: &str) -> bool {
    name == "default" || name == "rampart-system" || name.starts_with("kube-") || name.starts_with("openshift")
}

/// Compile a valid repo. Problems that only compiling reveals (a rollout step that does
/// not exist, canary weights above 100, two objects at one path) are diagnostics.
pub fn compile(repo: &Repo, opts: &Options) -> (Vec<Manifest>, Vec<Diagnostic>) {
    compile_tenants(repo, opts, &|_| true)
}

/// [`compile`], for the tenants `wanted` accepts only (a plan compiles only the tenants a
/// change can affect).
pub fn compile_tenants(
    repo: &Repo,
    opts: &Options,
    wanted: &(dyn Fn(&str) -> bool + Sync),
) -> (Vec<Manifest>, Vec<Diagnostic>) {
    let mut out = std::sync::Mutex::new(Vec::new());
    let (_, diags) = compile_each(repo, opts, wanted, &|m| {
        out.lock().expect("not poisoned").push(m);
    });
    let mut out = std::mem::take(out.get_mut().expect("not poisoned"));
    out.sort_by_key(|m| m.path());
    (out, diags)
}

/// A valid repo prepared for compiling tenant by tenant: the platform version, the plugins
/// by name, and the rollouts resolved to the tenants they reach (a rollout places its
/// canaries and route in each target tenant, so a tenant's objects are known only once the
/// rollouts are).
pub struct Compiler<'r> {
    repo: &'r Repo,
    opts: &'r Options,
    version: String,
    plugins: portal::Plugins<'r>,
    reach: BTreeMap<usize, Vec<(usize, i32)>>,
}

impl<'r> Compiler<'r> {
    /// Prepare `repo` for the tenants `wanted` accepts. Problems of the rollouts themselves
    /// (a current step that does not exist) go to `diags`.
    pub fn new(
        repo: &'r Repo,
        opts: &'r Options,
        wanted: &(dyn Fn(&str) -> bool + Sync),
        diags: &mut Vec<Diagnostic>,
    ) -> Compiler<'r> {
        let version = repo
            .settings
            .platform
            .as_ref()
            .map_or("latest".to_owned(), |p| p.version.clone());
        Compiler {
            repo,
            opts,
            version,
            plugins: repo.plugins.iter().map(|p| (p.name(), p)).collect(),
            reach: rollout::targets(repo, opts, wanted, diags),
        }
    }

    /// Every object of the tenant at `index` in `repo.tenants` (its own, its portal, the
    /// canaries and route of the rollouts that reach it), unsorted, and the problems only
    /// compiling it reveals. Nothing for a reserved name (validation reports it, R500: a
    /// valid repo has none).
    pub fn tenant(&self, index: usize) -> (Vec<Manifest>, Vec<Diagnostic>) {
        let t = &self.repo.tenants[index];
        if reserved(t.name()) {
            return (Vec::new(), Vec::new());
        }
        let mut out = tenant::objects(t);
        out.extend(portal::objects(t, &self.plugins, &self.version, self.opts.redact));
        let rollouts = self.reach.get(&index).map_or(&[][..], Vec::as_slice);
        let (canaries, diags) =
            rollout::for_tenant(self.repo, index, rollouts, &self.plugins, &self.version, self.opts);
        out.extend(canaries);
        (out, diags)
    }
}

/// R503 for every path in `sorted` that follows an equal one: two objects at one path would
/// overwrite each other, so refuse rather than lose one.
pub fn duplicate_paths(sorted: &[String], diags: &mut Vec<Diagnostic>) {
    for w in sorted.windows(2) {
        if w[0] == w[1] {
            diags.push(Diagnostic::new(
                Code::DuplicateObject,
                crate::diagnostic::Anchor::None,
                format!("two compiled objects would both be `{}`", w[0]),
            ));
        }
    }
}

/// Compile a valid repo tenant by tenant, on every core, handing each object to `sink` as
/// soon as it is built (in no particular order), so a large repo never has to be held
/// compiled in memory. Returns every object's output path, sorted, and the diagnostics.
pub fn compile_each(
    repo: &Repo,
    opts: &Options,
    wanted: &(dyn Fn(&str) -> bool + Sync),
    sink: &(dyn Fn(Manifest) + Sync),
) -> (Vec<String>, Vec<Diagnostic>) {
    use rayon::prelude::*;
    let mut diags = Vec::new();
    let compiler = Compiler::new(repo, opts, wanted, &mut diags);
    let per_tenant: Vec<(Vec<String>, Vec<Diagnostic>)> = (0..repo.tenants.len())
        .into_par_iter()
        .map(|i| {
            if !wanted(repo.tenants[i].name()) {
                return (Vec::new(), Vec::new());
            }
            let (objects, d) = compiler.tenant(i);
            let paths = objects
                .into_iter()
                .map(|m| {
                    let path = m.path();
                    sink(m);
                    path
                })
                .collect();
            (paths, d)
        })
        .collect();
    let mut paths = Vec::new();
    for (p, d) in per_tenant {
        paths.extend(p);
        diags.extend(d);
    }
    paths.sort_unstable();
    duplicate_paths(&paths, &mut diags);
    (paths, diags)
}

/// `kustomization.yaml` listing every object (by output path), so Argo CD and Flux take the
/// directory as is.
pub fn kustomization(paths: &[String]) -> String {
    let resources: Vec<Value> = paths.iter().map(|p| Value::String(p.clone())).collect();
    to_yaml(&serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }))
}

/// A quantity as Kubernetes writes it, from exact nano-units: whole numbers plain, CPU-like
/// fractions in millis, and binary suffixes when exact.
pub fn quantity(nanos: i128) -> String {
    const NANO: i128 = 1_000_000_000;
    if nanos % NANO != 0 {
        return if nanos % 1_000_000 == 0 {
            format!("{}m", nanos / 1_000_000)
        } else {
            format!("{nanos}n")
        };
    }
    let whole = nanos / NANO;
    for (suffix, unit) in [("Ti", 1i128 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if whole >= unit && whole % unit == 0 {
            return format!("{}{suffix}", whole / unit);
        }
    }
    whole.to_string()
}

#[cfg(test)]
mod unit {
    #[test]
    fn quantities_render_as_kubernetes_writes_them() {
        let n = 1_000_000_000i128;
        assert_eq!(super::quantity(4 * n), "4");
        assert_eq!(super::quantity(n / 2), "500m");
        assert_eq!(super::quantity(64 * (1 << 30) * n), "64Gi");
        assert_eq!(super::quantity(1500 * n), "1500");
        assert_eq!(super::quantity(3 * (1 << 40) * n), "3Ti");
    }

    #[test]
    fn secret_lists_and_maps_are_redacted_whole() {
        let v = serde_json::json!({"techdocs": {
            "apiTokens": ["ghp_LISTED1", "ghp_LISTED2"],
            "auth": {"bearer": "MAPPED"},
            "privateKey": {"pem": "NESTED"},
            "token": "${RAMPART_PLUGIN_X}",
            "builder": "local"
        }});
        let out = super::redact(&v).to_string();
        for secret in ["LISTED", "MAPPED", "NESTED"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("\"apiTokens\":\"(secret sha256:"), "{out}");
        assert!(out.contains("${RAMPART_PLUGIN_X}") && out.contains("local"), "{out}");
    }

    /// The digest is keyed: the same value gives the same digest in a run (a rotation shows),
    /// but not the plain SHA-256 anyone could compute for every short value.
    #[test]
    fn secret_digests_are_keyed_per_run() {
        use sha2::{Digest, Sha256};
        let digest = |v: &str| super::redact(&serde_json::json!({ "password": v }))["password"].clone();
        assert_eq!(digest("83749201"), digest("83749201"));
        assert_ne!(digest("83749201"), digest("83749202"));
        let plain: String = Sha256::digest(b"\"83749201\"")
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(
            digest("83749201"),
            serde_json::json!(format!("(secret sha256:{plain})"))
        );
    }
}
