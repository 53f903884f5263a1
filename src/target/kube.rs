//! The `kubernetes[:CONTEXT]` target: the compiled objects applied to a cluster with
//! server-side apply (field manager `rampart`), exact prune from an inventory, a live diff by
//! server-side dry run, and drift detection (IO; the decisions are in
//! [`inventory`](super::inventory), which does none).
//!
//! An apply:
//! 1. reads the inventory (`rampart-inventory` in `rampart-system`) and checks it still
//!    records the commit the caller expects (compare-and-swap, as the other targets);
//! 2. computes the desired objects and their digests (every object, or — when the caller
//!    knows what the cluster holds and which tenants a change affects — those tenants'), and
//!    decides what to apply (digest differs or unknown) and delete (in the inventory, not
//!    desired); nothing to do and the same commit → returns without a single write call;
//! 3. claims the inventory before writing anything else (its resourceVersion decides between
//!    two processes), marking the commit as `partial`, then lists the new objects as pending
//!    (so a crash after creating them still prunes them later);
//! 4. applies Namespaces, then the rest, 16 in flight, each retried on 429/5xx and lost
//!    connections (bounded backoff with jitter); deletes what left (Namespaces last,
//!    background propagation);
//! 5. writes the inventory: each object's digest as applied, and — only when everything
//!    succeeded — the new commit and its record, with `partial` cleared. After a partial apply
//!    the next one compares every object, so it completes what was left whatever changed.

use super::inventory::{self as inv, Claim, Entry, Inventory, Key};
use super::{Applied, Apply, Outcome, Record, Revision, Target};
use crate::diagnostic::Diagnostic;
use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use serde_json::Value;
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The field manager of every apply.
pub const MANAGER: &str = "rampart";
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// Attempts of one request that meets 429, 5xx or a lost connection.
const ATTEMPTS: u32 = 6;
/// How long a claim holds without being renewed (a process that died holding one blocks
/// others this long at most).
const CLAIM_TTL: u64 = 30;
/// How often a running apply renews its claim.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long an apply waits for another process's claim.
const CLAIM_WAIT: Duration = Duration::from_secs(60);
/// The Gateway API release whose CRDs the hint names.
const GATEWAY_API: &str = "v1.4.1";

/// Options of the target.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The kubeconfig context (`None`: the current one, or the in-cluster service account).
    pub context: Option<String>,
    /// Take over fields another field manager owns (off: a conflict is an error).
    pub force_conflicts: bool,
}

/// A desired object, compiled.
struct Desired {
    api_version: String,
    digest: String,
    /// The object (kept only when it is to be applied).
    value: Option<Value>,
}

/// The desired objects, and the keys a change may prune (`None`: every inventory object).
type DesiredSet = (BTreeMap<Key, Desired>, Option<BTreeSet<Key>>);

/// Why one object could not be applied or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Fields another field manager owns (`field`, `manager`).
    Conflict {
        object: String,
        fields: Vec<(String, String)>,
    },
    /// The API server refused the object as invalid: the fields and why.
    Invalid { object: String, causes: Vec<String> },
    /// RBAC refused the call.
    Forbidden { object: String, message: String },
    /// The kind is not served (a CRD that is not installed).
    KindMissing {
        api_version: String,
        kind: String,
        objects: usize,
    },
    /// The API server could not be reached, or kept failing.
    Unavailable { object: String, message: String },
    /// Anything else the API server said.
    Other { object: String, message: String },
    /// Calls not made because an earlier one went unanswered through all its attempts.
    NotSent { objects: usize },
}

impl Failure {
    /// A stable code for the failure.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Conflict { .. } => "kube-conflict",
            Failure::Invalid { .. } => "kube-invalid",
            Failure::Forbidden { .. } => "kube-forbidden",
            Failure::KindMissing { .. } => "kube-kind-missing",
            Failure::Unavailable { .. } | Failure::NotSent { .. } => "kube-unavailable",
            Failure::Other { .. } => "kube-error",
        }
    }

    /// What happened, and what to do about it.
    pub fn describe(&self) -> String {
        let code = self.code();
        match self {
            Failure::Conflict { object, fields } => {
                let list: Vec<String> = fields
                    .iter()
                    .map(|(f, m)| format!("{f} (managed by {})", crate::diagnostic::quote(m)))
                    .collect();
                format!(
                    "error[{code}]: {object}: {} owned by another field manager: {}\n  \
                     hint: change it back in the cluster, or pass --force-conflicts to take the fields over for rampart",
                    if fields.len() == 1 { "a field is" } else { "fields are" },
                    list.join(", ")
                )
            }
            Failure::Invalid { object, causes } => format!(
                "error[{code}]: {object}: the API server refused it as invalid: {}\n  \
                 hint: the compiled object does not fit this cluster's API (its version, or an admission policy)",
                causes.join("; ")
            ),
            Failure::Forbidden { object, message } => format!(
                "error[{code}]: {object}: {message}\n  \
                 hint: the identity rampart runs as needs the ClusterRole in deploy/rbac.yaml (bound to it with a ClusterRoleBinding)"
            ),
            Failure::KindMissing {
                api_version,
                kind,
                objects,
            } => {
                let hint = if inv::group_of(api_version) == "gateway.networking.k8s.io" {
                    format!(
                        "the Gateway API CRDs are not installed; install the standard channel: \
                         kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/{GATEWAY_API}/standard-install.yaml"
                    )
                } else {
                    "install the CustomResourceDefinition that serves it".to_owned()
                };
                format!(
                    "error[{code}]: the cluster does not serve {kind} ({api_version}): {objects} object{} not applied; the rest was\n  hint: {hint}",
                    if *objects == 1 { "" } else { "s" }
                )
            }
            Failure::Unavailable { object, message } => {
                format!("error[{code}]: {object}: the API server did not answer ({message}), after {ATTEMPTS} attempts")
            }
            Failure::Other { object, message } => format!("error[{code}]: {object}: {message}"),
            Failure::NotSent { objects } => format!(
                "error[{code}]: {objects} object{} not sent: the API server stopped answering, so no more calls were made",
                if *objects == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Classify a failed call on `object`.
pub fn classify(object: &str, e: &kube::Error) -> Failure {
    let object = object.to_owned();
    match e {
        kube::Error::Api(s) => {
            let causes = s.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
            match s.code {
                409 => {
                    let mut fields: Vec<(String, String)> = causes
                        .iter()
                        .filter(|c| c.reason == "FieldManagerConflict" || !c.field.is_empty())
                        .map(|c| (c.field.clone(), manager_in(&c.message)))
                        .collect();
                    if fields.is_empty() {
                        return Failure::Other {
                            object,
                            message: format!("conflict: {}", s.message),
                        };
                    }
                    fields.dedup();
                    Failure::Conflict { object, fields }
                }
                422 => Failure::Invalid {
                    object,
                    causes: if causes.is_empty() {
                        vec![s.message.clone()]
                    } else {
                        causes
                            .iter()
                            .map(|c| {
                                if c.field.is_empty() {
                                    c.message.clone()
                                } else {
                                    format!("{}: {}", c.field, c.message)
                                }
                            })
                            .collect()
                    },
                },
                403 => Failure::Forbidden {
                    object,
                    message: s.message.clone(),
                },
                429 | 500..=599 => Failure::Unavailable {
                    object,
                    message: format!("{} {}", s.code, first_line(&s.message)),
                },
                _ => Failure::Other {
                    object,
                    message: format!("{} {}", s.code, first_line(&s.message)),
                },
            }
        }
        other => Failure::Unavailable {
            object,
            message: first_line(&other.to_string()),
        },
    }
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    crate::diagnostic::visible(&withhold_secrets(&l.chars().take(300).collect::<String>()), &[])
}

/// An error of the kube client without what may quote a credential: kubeconfig YAML errors
/// print the offending line (a token), exec-plugin errors its output.
fn withhold_secrets(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    if ["parse", "exec", "token", "yaml", "credential", "auth"]
        .iter()
        .any(|w| lower.contains(w))
    {
        let head = s.split_once(':').map_or(s, |(h, _)| h);
        format!("{head} (details withheld: they may quote a credential)")
    } else {
        s.to_owned()
    }
}

/// The manager a conflict message names: `conflict with "kubectl-edit" using apps/v1`.
fn manager_in(message: &str) -> String {
    message
        .split_once("conflict with \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| "another manager".to_owned(), |(m, _)| m.to_owned())
}

/// How long to wait before retrying after `e` on attempt `n` (0-based), or `None` when it
/// is not worth a retry (the answer will not change).
fn retry_after(e: &kube::Error, n: u32) -> Option<Duration> {
    let told = match e {
        kube::Error::Api(s) if s.code == 429 || (500..=599).contains(&s.code) => s
            .details
            .as_ref()
            .map(|d| u64::from(d.retry_after_seconds))
            .filter(|s| *s > 0),
        kube::Error::Api(_) => return None,
        kube::Error::HyperError(_) | kube::Error::Service(_) => None,
        _ => return None,
    };
    if n + 1 >= ATTEMPTS {
        return None;
    }
    let base = Duration::from_millis(250 * (1 << n.min(5)));
    let wait = told.map_or(base, |s| Duration::from_secs(s.min(10)));
    Some(crate::serve::jittered(wait.min(Duration::from_secs(8))))
}

/// `e`, after all its attempts, says the API server is not answering at all (no connection,
/// 429, 502-504), rather than something about one object (a 500 from a webhook).
fn unanswered(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 502..=504),
        _ => retry_after(e, 0).is_some(),
    }
}

/// Run `call` until it succeeds, fails for good, or the attempts are spent.
async fn with_retry<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut n = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => match retry_after(&e, n) {
                Some(wait) => {
                    tracing::debug!(attempt = n + 1, error = %first_line(&e.to_string()), "retrying a Kubernetes API call");
                    tokio::time::sleep(wait).await;
                    n += 1;
                }
                None => return Err(e),
            },
        }
    }
}

/// The outcome of a dry run of one object against the cluster.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveDiff {
    /// `Deployment.apps payments/portal`.
    pub object: String,
    /// `create`, `update`, `unchanged`, `delete` (in the inventory, no longer desired) or
    /// `error`.
    pub action: String,
    /// Unified diff of the live object against the dry run (server-set fields left out).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct KubeTarget {
    rt: std::sync::Arc<tokio::runtime::Runtime>,
    client: kube::Client,
    name: String,
    opts: Options,
    holder: String,
    kinds: HashMap<(String, String), (ApiResource, bool)>,
    /// What the last apply or drift check could not do.
    pub failures: Vec<Failure>,
    /// What the last apply left alone, and why.
    pub warnings: Vec<String>,
}

impl KubeTarget {
    /// Connect with the usual discovery: `--target kubernetes:CONTEXT` reads that context of
    /// the kubeconfig (`KUBECONFIG` or `~/.kube/config`); without one, the current context,
    /// else the in-cluster service account.
    pub fn connect(opts: Options) -> anyhow::Result<KubeTarget> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the Kubernetes client's runtime")?;
        let (config, name) = rt.block_on(async {
            match &opts.context {
                Some(ctx) => {
                    let o = kube::config::KubeConfigOptions {
                        context: Some(ctx.clone()),
                        ..Default::default()
                    };
                    let c = kube::Config::from_kubeconfig(&o).await.map_err(|e| {
                        anyhow::anyhow!(
                            "reading the kubeconfig context {}: {}",
                            crate::diagnostic::quote(ctx),
                            first_line(&e.to_string())
                        )
                    })?;
                    anyhow::Ok((c, format!("kubernetes:{ctx}")))
                }
                None => {
                    let current = kube::config::Kubeconfig::read().ok().and_then(|k| k.current_context);
                    let c = kube::Config::infer().await.map_err(|e| {
                        anyhow::anyhow!(
                            "finding a cluster: no usable kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster: {}",
                            first_line(&e.to_string())
                        )
                    })?;
                    let name = match current {
                        Some(ctx) => format!("kubernetes:{ctx}"),
                        None => "kubernetes:in-cluster".to_owned(),
                    };
                    Ok((c, name))
                }
            }
        })?;
        let mut config = config;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        // kube's own retry layer (on by default: 15 retries of 429/503/504, backing off up to
        // 1000 s) would run under with_retry's bounded attempts, so an API server answering
        // 503 held one call for many minutes; with_retry is the only retry
        config.default_retry = false;
        let client = {
            let _guard = rt.enter();
            kube::Client::try_from(config).context("building the Kubernetes client")?
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "rampart".to_owned());
        Ok(KubeTarget {
            rt: std::sync::Arc::new(rt),
            client,
            name,
            holder: format!("{host}/{}/{nanos:08x}", std::process::id()),
            opts,
            kinds: HashMap::new(),
            failures: Vec::new(),
            warnings: Vec::new(),
        })
    }

    fn inventory_api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), inv::NAMESPACE)
    }

    /// Read the inventory (the root, then its shards), with the root's resourceVersion.
    async fn read_inventory(&self) -> anyhow::Result<(Inventory, Option<String>)> {
        let api = self.inventory_api();
        let root = with_retry(|| api.get_opt(inv::NAME)).await.map_err(|e| {
            anyhow::anyhow!(
                "{}",
                classify(&format!("ConfigMap {}/{}", inv::NAMESPACE, inv::NAME), &e).describe()
            )
        })?;
        let Some(root) = root else {
            // no inventory: a cluster rampart never applied to, or one whose inventory was
            // deleted — then its shards or its labelled namespaces are still there
            let lp = kube::api::ListParams::default()
                .labels(&format!("app.kubernetes.io/managed-by={MANAGER}"))
                .fields(&format!("metadata.name!={}", inv::NAMESPACE))
                .limit(1);
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
            let first = shard_name(0);
            let shard = with_retry(|| api.get_opt(&first)).await;
            let labelled = with_retry(|| namespaces.list_metadata(&lp)).await;
            let orphaned = matches!(shard, Ok(Some(_))) || labelled.is_ok_and(|l| !l.items.is_empty());
            return Ok((
                Inventory {
                    orphaned,
                    ..Inventory::default()
                },
                None,
            ));
        };
        let rv = root.metadata.resource_version.clone();
        let data = root.data.unwrap_or_default();
        let get = |k: &str| data.get(k).cloned().filter(|v| !v.is_empty());
        let shards: usize = get("shards").and_then(|s| s.parse().ok()).unwrap_or(0);
        if shards > 4096 {
            anyhow::bail!(
                "the inventory {}/{} names {shards} shards, more than rampart writes",
                inv::NAMESPACE,
                inv::NAME
            );
        }
        let mut inventory = Inventory {
            exists: true,
            orphaned: false,
            commit: get("commit").filter(|c| super::is_commit_id(c)),
            record: get("record"),
            claim: get("claim").and_then(|c| serde_json::from_str(&c).ok()),
            partial: get("partial"),
            rendered: get("rendered"),
            shards,
            objects: BTreeMap::new(),
        };
        if let Some(c) = get("commit").filter(|c| !super::is_commit_id(c)) {
            anyhow::bail!(
                "the inventory {}/{} records {} as the applied commit, which is not a commit id",
                inv::NAMESPACE,
                inv::NAME,
                crate::diagnostic::quote(&c)
            );
        }
        let names: Vec<String> = (0..shards).map(shard_name).collect();
        let got: Vec<_> = futures::stream::iter(names.iter().map(|n| {
            let api = api.clone();
            async move { (n, with_retry(|| api.get_opt(n)).await) }
        }))
        .buffered(CONCURRENCY)
        .collect()
        .await;
        for (n, r) in got {
            let cm = r.map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    classify(&format!("ConfigMap {}/{n}", inv::NAMESPACE), &e).describe()
                )
            })?;
            let Some(cm) = cm else {
                anyhow::bail!(
                    "the inventory shard {}/{n} is missing (the root names {shards} shards)\n  \
                     hint: the inventory was edited by hand; delete {}/{} and apply with --baseline REV",
                    inv::NAMESPACE,
                    inv::NAMESPACE,
                    inv::NAME
                );
            };
            let text = cm.data.unwrap_or_default().remove("objects").unwrap_or_default();
            inv::parse_shard(&text, &mut inventory.objects)
                .map_err(|e| anyhow::anyhow!("reading the inventory shard {}/{n}: {e}", inv::NAMESPACE))?;
        }
        Ok((inventory, rv))
    }

    /// Write the root: create it (no `rv`) or replace it if it still has `rv`. `Ok(None)` when
    /// another process changed it first.
    async fn write_root(&self, inventory: &Inventory, rv: Option<&str>) -> anyhow::Result<Option<String>> {
        let api = self.inventory_api();
        let mut data = BTreeMap::new();
        data.insert("format".to_owned(), "1".to_owned());
        data.insert("shards".to_owned(), inventory.shards.to_string());
        if let Some(c) = &inventory.commit {
            data.insert("commit".to_owned(), c.clone());
        }
        if let Some(r) = &inventory.record {
            data.insert("record".to_owned(), r.clone());
        }
        if let Some(c) = &inventory.claim {
            data.insert("claim".to_owned(), serde_json::to_string(c)?);
        }
        if let Some(p) = &inventory.partial {
            data.insert("partial".to_owned(), p.clone());
        }
        if let Some(r) = &inventory.rendered {
            data.insert("rendered".to_owned(), r.clone());
        }
        let mut cm = ConfigMap {
            data: Some(data),
            ..ConfigMap::default()
        };
        cm.metadata.name = Some(inv::NAME.to_owned());
        cm.metadata.namespace = Some(inv::NAMESPACE.to_owned());
        cm.metadata.labels = Some(inventory_labels());
        let what = format!("ConfigMap {}/{}", inv::NAMESPACE, inv::NAME);
        let post = PostParams::default();
        let r = match rv {
            None => with_retry(|| api.create(&post, &cm)).await,
            Some(rv) => {
                cm.metadata.resource_version = Some(rv.to_owned());
                with_retry(|| api.replace(inv::NAME, &post, &cm)).await
            }
        };
        match r {
            Ok(cm) => Ok(Some(cm.metadata.resource_version.unwrap_or_default())),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(anyhow::anyhow!("{}", classify(&what, &e).describe())),
        }
    }

    /// Create `rampart-system` if it is missing.
    async fn ensure_namespace(&self) -> anyhow::Result<()> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let ns = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": inv::NAMESPACE, "labels": inventory_labels()},
        });
        let (pp, patch) = (PatchParams::apply(MANAGER), Patch::Apply(&ns));
        with_retry(|| api.patch(inv::NAMESPACE, &pp, &patch))
            .await
            .map_err(|e| anyhow::anyhow!("{}", classify(&format!("Namespace {}", inv::NAMESPACE), &e).describe()))?;
        Ok(())
    }

    /// Write the shards whose text differs from `old` (all of them when the count changed).
    async fn write_shards(
        &self,
        objects: &BTreeMap<Key, Entry>,
        shards: usize,
        old: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let texts = inv::shard_texts(objects, shards);
        let api = self.inventory_api();
        let todo: Vec<(usize, &String)> = texts
            .iter()
            .enumerate()
            .filter(|(i, t)| old.get(*i) != Some(*t))
            .collect();
        let results: Vec<_> = futures::stream::iter(todo.into_iter().map(|(i, text)| {
            let api = api.clone();
            async move {
                let name = shard_name(i);
                let cm = serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": inv::NAMESPACE, "labels": inventory_labels()},
                    "data": {"objects": text},
                });
                let pp = PatchParams::apply(MANAGER).force();
                let patch = Patch::Apply(&cm);
                with_retry(|| api.patch(&name, &pp, &patch)).await.map_err(|e| {
                    anyhow::anyhow!(
                        "{}",
                        classify(&format!("ConfigMap {}/{name}", inv::NAMESPACE), &e).describe()
                    )
                })
            }
        }))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
        for r in results {
            r?;
        }
        Ok(texts)
    }

    /// Delete the shards from `from` on (after the root stopped naming them).
    async fn drop_shards(&self, from: usize, to: usize) {
        let api = self.inventory_api();
        for i in from..to {
            let _ = api.delete(&shard_name(i), &DeleteParams::background()).await;
        }
    }

    /// The API of one kind, from discovery (cached). `Ok(None)`: the cluster does not serve it.
    async fn resolve(&mut self, api_version: &str, kind: &str) -> anyhow::Result<Option<(ApiResource, bool)>> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(k) = self.kinds.get(&key) {
            return Ok(Some(k.clone()));
        }
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        match with_retry(|| kube::discovery::pinned_kind(&self.client, &gvk)).await {
            Ok((ar, caps)) => {
                let namespaced = matches!(caps.scope, Scope::Namespaced);
                self.kinds.insert(key, (ar.clone(), namespaced));
                Ok(Some((ar, namespaced)))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(e) => Err(anyhow::anyhow!(
                "{}",
                classify(&format!("the API of {kind} ({api_version})"), &e).describe()
            )),
        }
    }

    fn api_for(&self, ar: &ApiResource, namespaced: bool, ns: Option<&str>) -> Api<DynamicObject> {
        match (namespaced, ns) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, ar),
            _ => Api::all_with(self.client.clone(), ar),
        }
    }

    /// The desired objects of `rev`: every object (`Full`), or the affected tenants' when the
    /// cluster holds `rev.base` (then also the keys the base had for them, the prune scope).
    fn desired(
        &self,
        rev: &Revision<'_>,
        inventory: &BTreeMap<Key, Entry>,
        narrow: bool,
    ) -> Result<DesiredSet, Vec<Diagnostic>> {
        let keep = |m: &crate::compile::Manifest| -> (Key, Desired) {
            let key = Key::new(&m.api_version, &m.kind, m.namespace.as_deref(), &m.name);
            let digest = inv::digest(&m.value);
            let unchanged = inventory.get(&key).is_some_and(|e| e.digest == digest);
            let d = Desired {
                api_version: m.api_version.clone(),
                digest,
                value: (!unchanged).then(|| m.value.clone()),
            };
            (key, d)
        };
        if let (true, Some(base), Some(affected)) = (narrow, rev.base, rev.affected) {
            let streamed =
                crate::plan::stream::each_tenant(Some(&base.repo), &rev.head.repo, Some(affected), rev.opts, |t| {
                    let old: Vec<Key> = t
                        .old
                        .iter()
                        .map(|m| Key::new(&m.api_version, &m.kind, m.namespace.as_deref(), &m.name))
                        .collect();
                    let new: Vec<(Key, Desired)> = t.new.iter().map(keep).collect();
                    (old, new)
                });
            let mut diags = streamed.head_diagnostics;
            if diags.iter().any(Diagnostic::is_error) {
                rev.head.resolve(&mut diags);
                return Err(diags);
            }
            let mut scope = BTreeSet::new();
            let mut desired = BTreeMap::new();
            for (old, new) in streamed.value {
                scope.extend(old);
                for (k, d) in new {
                    scope.insert(k.clone());
                    desired.insert(k, d);
                }
            }
            return Ok((desired, Some(scope)));
        }
        let out = Mutex::new(BTreeMap::new());
        let (_, mut diags) = crate::compile::compile_each(&rev.head.repo, rev.opts, &|_| true, &|m| {
            let (k, d) = keep(&m);
            out.lock().expect("not poisoned").insert(k, d);
        });
        if diags.iter().any(Diagnostic::is_error) {
            rev.head.resolve(&mut diags);
            return Err(diags);
        }
        Ok((out.into_inner().expect("not poisoned"), None))
    }

    async fn apply_async(&mut self, expected: &Applied, rev: &Revision<'_>, record: &Record) -> anyhow::Result<Apply> {
        self.failures.clear();
        self.warnings.clear();
        // 1. the inventory, and any other process's claim on it
        let started = Instant::now();
        let (mut inventory, rv) = loop {
            let (i, rv) = self.read_inventory().await?;
            if baseline(&i) != expected.commit {
                return Ok(Apply::Moved { now: applied_of(&i) });
            }
            match &i.claim {
                // (a claim further ahead than any renewal puts it is not believed)
                Some(c) if c.holder != self.holder && c.until > now_secs() && c.until <= now_secs() + 2 * CLAIM_TTL => {
                    if started.elapsed() > CLAIM_WAIT {
                        anyhow::bail!(
                            "{} is being applied by {} (commit {}), waited {} s",
                            self.name,
                            crate::diagnostic::quote(&c.holder),
                            crate::diagnostic::quote(c.commit.as_deref().unwrap_or("?")),
                            CLAIM_WAIT.as_secs()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => break (i, rv),
            }
        };
        // 2. what to do; only a change's tenants when the cluster is known to hold its base
        let narrow = inventory.partial.is_none()
            && rev
                .base
                .is_some_and(|b| b.commit.is_some() && b.commit == inventory.commit);
        let (mut desired, scope) = match self.desired(rev, &inventory.objects, narrow) {
            Ok(d) => d,
            Err(diags) => return Ok(Apply::Invalid(diags)),
        };
        let digests: BTreeMap<Key, String> = desired.iter().map(|(k, d)| (k.clone(), d.digest.clone())).collect();
        let in_scope = |k: &Key| scope.as_ref().is_none_or(|s| s.contains(k));
        let work = inv::plan_work(&inventory.objects, &digests, Some(&in_scope));
        let commit = rev.head.commit.clone().or_else(|| expected.commit.clone());
        if work.apply.is_empty() && work.delete.is_empty() && inventory.partial.is_none() {
            let rendered = Some(inv::rendered_id(&inventory.objects));
            if inventory.commit == commit {
                return Ok(Apply::Done(Outcome {
                    noop: true,
                    rendered,
                    ..Outcome::default()
                }));
            }
            // a commit that changes no object: one write, the record
            inventory.commit = commit;
            inventory.rendered = rendered.clone();
            inventory.record = Some(serde_json::to_string(record)?);
            inventory.claim = None;
            if self.write_root(&inventory, rv.as_deref()).await?.is_none() {
                let (i, _) = self.read_inventory().await?;
                return Ok(Apply::Moved { now: applied_of(&i) });
            }
            return Ok(Apply::Done(Outcome {
                rendered,
                ..Outcome::default()
            }));
        }
        // 3. claim (the root's compare-and-swap: a process that loses it has written nothing),
        // then list the new objects as pending (pruned later even if this dies here)
        if !inventory.exists {
            self.ensure_namespace().await?;
        }
        let old_texts = inv::shard_texts(&inventory.objects, inventory.shards.max(1));
        let old_shards = inventory.shards;
        inventory.partial = commit.clone().or_else(|| Some("workdir".to_owned()));
        inventory.claim = Some(Claim {
            holder: self.holder.clone(),
            commit: commit.clone(),
            until: now_secs() + CLAIM_TTL,
        });
        let Some(new_rv) = self.write_root(&inventory, rv.as_deref()).await? else {
            let (i, _) = self.read_inventory().await?;
            return Ok(Apply::Moved { now: applied_of(&i) });
        };
        let mut lease = Lease {
            rv: Some(new_rv),
            renewed: Instant::now(),
        };
        for k in &work.apply {
            inventory.objects.entry(k.clone()).or_insert_with(|| Entry {
                api_version: desired[k].api_version.clone(),
                digest: inv::PENDING.to_owned(),
                adopted: false,
            });
        }
        let shards = inv::shard_count(&inventory.objects, inventory.shards);
        let texts = if old_shards == 0 || shards != old_shards {
            self.write_shards(&inventory.objects, shards, &[]).await?
        } else {
            self.write_shards(&inventory.objects, shards, &old_texts).await?
        };
        if shards != old_shards {
            // (the root names the shards only once they all exist)
            inventory.shards = shards;
            lease.rv = Some(self.renew(&mut inventory, lease.rv.as_deref()).await?);
            if old_shards > shards {
                self.drop_shards(shards, old_shards).await;
            }
        }
        // 4. discovery, then apply (Namespaces first) and prune (Namespaces last)
        let mut missing: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut resolved: HashMap<(String, String), (ApiResource, bool)> = HashMap::new();
        let kinds: BTreeSet<(String, String)> = work
            .apply
            .iter()
            .map(|k| (desired[k].api_version.clone(), k.kind.clone()))
            .chain(
                work.delete
                    .iter()
                    .map(|k| (inventory.objects[k].api_version.clone(), k.kind.clone())),
            )
            .collect();
        for (av, kind) in kinds {
            match self.resolve(&av, &kind).await? {
                Some(r) => {
                    resolved.insert((av, kind), r);
                }
                None => {
                    missing.insert((av, kind), 0);
                }
            }
        }
        let pp = if self.opts.force_conflicts {
            PatchParams::apply(MANAGER).force()
        } else {
            PatchParams::apply(MANAGER)
        };
        let mut out = Outcome::default();
        // once a call has gone unanswered through all its attempts, the calls not started yet
        // are not made (each would spend its attempts too: minutes, on a large change)
        let down = std::cell::Cell::new(false);
        let down = &down;
        let mut not_sent = 0;
        let (namespaces, rest): (Vec<&Key>, Vec<&Key>) = work.apply.iter().partition(|k| k.is_namespace());
        for wave in [namespaces, rest] {
            let mut calls = Vec::new();
            for k in wave {
                let d = &desired[k];
                let Some((ar, namespaced)) = resolved.get(&(d.api_version.clone(), k.kind.clone())) else {
                    *missing.entry((d.api_version.clone(), k.kind.clone())).or_default() += 1;
                    continue;
                };
                let api = self.api_for(ar, *namespaced, k.namespace.as_deref());
                let value = d.value.clone().expect("kept for applying");
                let pp = pp.clone();
                // a Namespace rampart has not applied yet may be someone else's already
                let first = k.is_namespace() && inventory.objects.get(k).is_some_and(|e| e.digest == inv::PENDING);
                calls.push(async move {
                    if down.get() {
                        return (k, None, false);
                    }
                    let existed = if first {
                        match with_retry(|| api.get_metadata_opt(&k.name)).await {
                            Ok(m) => m.is_some_and(|m| !managed_by_rampart(&m.metadata)),
                            Err(e) => {
                                down.set(down.get() || unanswered(&e));
                                return (k, Some(Err(e)), false);
                            }
                        }
                    } else {
                        false
                    };
                    let patch = Patch::Apply(&value);
                    let r = with_retry(|| api.patch(&k.name, &pp, &patch)).await;
                    down.set(down.get() || r.as_ref().is_err_and(unanswered));
                    (k, Some(r), existed)
                });
            }
            let mut stream = std::pin::pin!(futures::stream::iter(calls).buffer_unordered(CONCURRENCY));
            while let Some((k, r, existed)) = self.next_renewing(&mut inventory, &mut lease, &mut stream).await? {
                match r {
                    None => not_sent += 1,
                    Some(Ok(_)) => {
                        let d = desired.get_mut(k).expect("desired");
                        d.value = None;
                        let adopted = existed || inventory.objects.get(k).is_some_and(|e| e.adopted);
                        inventory.objects.insert(
                            k.clone(),
                            Entry {
                                api_version: d.api_version.clone(),
                                digest: d.digest.clone(),
                                adopted,
                            },
                        );
                        out.written += 1;
                    }
                    Some(Err(e)) => self.failures.push(classify(&k.display(), &e)),
                }
            }
        }
        let (ns_deletes, deletes): (Vec<&Key>, Vec<&Key>) = work.delete.iter().partition(|k| k.is_namespace());
        for wave in [deletes, ns_deletes] {
            let mut calls = Vec::new();
            for k in wave {
                let entry = &inventory.objects[k];
                if entry.adopted {
                    let w = format!(
                        "{}: not deleted: it existed before rampart first applied it (rampart's objects in it were)",
                        k.display()
                    );
                    tracing::warn!("{w}");
                    self.warnings.push(w);
                    inventory.objects.remove(k);
                    continue;
                }
                let Some((ar, namespaced)) = resolved.get(&(entry.api_version.clone(), k.kind.clone())) else {
                    // the cluster does not serve the version it was applied with: kept, so it
                    // is pruned when it is served again (or by hand)
                    let w = format!(
                        "{}: not deleted: the cluster does not serve {} now; it stays in the inventory",
                        k.display(),
                        entry.api_version
                    );
                    self.warnings.push(w);
                    continue;
                };
                let api = self.api_for(ar, *namespaced, k.namespace.as_deref());
                calls.push(async move {
                    if down.get() {
                        return (k, None);
                    }
                    let r = prune(&api, k).await;
                    down.set(down.get() || r.as_ref().is_err_and(unanswered));
                    (k, Some(r))
                });
            }
            let mut stream = std::pin::pin!(futures::stream::iter(calls).buffer_unordered(CONCURRENCY));
            while let Some((k, r)) = self.next_renewing(&mut inventory, &mut lease, &mut stream).await? {
                match r {
                    None => not_sent += 1,
                    Some(Ok(Pruned::Deleted)) => {
                        inventory.objects.remove(k);
                        out.removed += 1;
                    }
                    Some(Ok(Pruned::Gone)) => {
                        inventory.objects.remove(k);
                    }
                    Some(Ok(Pruned::NotOurs)) => {
                        inventory.objects.remove(k);
                        let w = format!(
                            "{}: listed in the inventory but not deleted: it is not rampart's (no `app.kubernetes.io/managed-by: rampart` label or no `rampart` field manager, or a protected namespace)",
                            k.display()
                        );
                        tracing::warn!("{w}");
                        self.warnings.push(w);
                    }
                    Some(Err(e)) => self.failures.push(classify(&k.display(), &e)),
                }
            }
        }
        if not_sent > 0 {
            // (first: the reason the list below is short)
            self.failures.insert(0, Failure::NotSent { objects: not_sent });
        }
        for ((av, kind), n) in &missing {
            // (a kind only pruned is not missing: its objects are gone)
            if *n > 0 {
                self.failures.push(Failure::KindMissing {
                    api_version: av.clone(),
                    kind: kind.clone(),
                    objects: *n,
                });
            }
        }
        // 5. record what was applied; the commit only when all of it was
        let failed = (!self.failures.is_empty()).then(|| {
            let n: usize = self
                .failures
                .iter()
                .map(|f| match f {
                    Failure::KindMissing { objects, .. } | Failure::NotSent { objects } => *objects,
                    _ => 1,
                })
                .sum();
            let mut text = format!(
                "{n} object{} not applied ({} applied, {} pruned; the next apply tries the rest again):\n",
                if n == 1 { "" } else { "s" },
                out.written,
                out.removed
            );
            for f in self.failures.iter().take(20) {
                text.push_str(&f.describe());
                text.push('\n');
            }
            if self.failures.len() > 20 {
                text.push_str(&format!("… and {} more\n", self.failures.len() - 20));
            }
            text.trim_end().to_owned()
        });
        if failed.is_none() {
            inventory.commit = commit;
            inventory.rendered = Some(inv::rendered_id(&inventory.objects));
            inventory.partial = None;
            inventory.record = Some(serde_json::to_string(record)?);
        }
        let recorded = async {
            let shards = inv::shard_count(&inventory.objects, inventory.shards);
            let unchanged = if shards == inventory.shards { &texts[..] } else { &[] };
            self.write_shards(&inventory.objects, shards, unchanged).await?;
            let old_count = inventory.shards;
            inventory.shards = shards;
            inventory.claim = None;
            if self.write_root(&inventory, lease.rv.as_deref()).await?.is_none() {
                anyhow::bail!("another process took the inventory over during this apply");
            }
            if old_count > shards {
                self.drop_shards(shards, old_count).await;
            }
            anyhow::Ok(())
        }
        .await;
        match (failed, recorded) {
            (None, Ok(())) => {
                out.rendered = Some(inv::rendered_id(&inventory.objects));
                Ok(Apply::Done(out))
            }
            (Some(text), Ok(())) => anyhow::bail!("{text}\n(what was applied is recorded in the inventory)"),
            (Some(text), Err(e)) => {
                anyhow::bail!(
                    "{text}\nand the inventory could not be written either ({e:#}): the next apply compares every object"
                )
            }
            (None, Err(e)) => anyhow::bail!(
                "{}: every object was applied, but the inventory could not be written ({e:#}): the next apply compares every object",
                self.name
            ),
        }
    }

    /// The next answer of `calls`, renewing the claim every [`RENEW_EVERY`] while it waits
    /// (a slow call does not let the claim go stale).
    async fn next_renewing<S: futures::Stream>(
        &self,
        inventory: &mut Inventory,
        lease: &mut Lease,
        calls: &mut std::pin::Pin<&mut S>,
    ) -> anyhow::Result<Option<S::Item>> {
        loop {
            let next = tokio::time::timeout(RENEW_EVERY.saturating_sub(lease.renewed.elapsed()), calls.next()).await;
            if lease.renewed.elapsed() >= RENEW_EVERY {
                lease.rv = Some(self.renew(inventory, lease.rv.as_deref()).await?);
                lease.renewed = Instant::now();
            }
            if let Ok(item) = next {
                return Ok(item);
            }
        }
    }

    /// Renew this process's claim on the inventory; the new resourceVersion.
    async fn renew(&self, inventory: &mut Inventory, rv: Option<&str>) -> anyhow::Result<String> {
        if let Some(c) = inventory.claim.as_mut() {
            c.until = now_secs() + CLAIM_TTL;
        }
        match self.write_root(inventory, rv).await? {
            Some(rv) => Ok(rv),
            None => anyhow::bail!(
                "{}: another process took the inventory over during this apply (its claim was renewed too late)",
                self.name
            ),
        }
    }

    /// The server-side dry run of every desired object of `rev` against the live one, and the
    /// inventory objects it would prune. `only_drift`: the objects in the inventory only, and
    /// only those that differ.
    pub fn live_diff(
        &mut self,
        rev: &Revision<'_>,
        only_drift: bool,
    ) -> anyhow::Result<Result<Vec<LiveDiff>, Vec<Diagnostic>>> {
        let rt = self.rt.clone();
        let (inventory, _) = rt.block_on(self.read_inventory())?;
        rt.block_on(self.live_diff_async(&inventory, rev, only_drift))
    }

    async fn live_diff_async(
        &mut self,
        inventory: &Inventory,
        rev: &Revision<'_>,
        only_drift: bool,
    ) -> anyhow::Result<Result<Vec<LiveDiff>, Vec<Diagnostic>>> {
        let (desired, _) = match self.desired(rev, &BTreeMap::new(), false) {
            Ok(d) => d,
            Err(diags) => return Ok(Err(diags)),
        };
        let mut out = Vec::new();
        let mut calls = Vec::new();
        let mut kinds = BTreeSet::new();
        for (k, d) in &desired {
            if only_drift && !inventory.objects.contains_key(k) {
                continue;
            }
            kinds.insert((d.api_version.clone(), k.kind.clone()));
        }
        for (av, kind) in kinds {
            self.resolve(&av, &kind).await?;
        }
        let pp = PatchParams::apply(MANAGER).dry_run().force();
        for (k, d) in &desired {
            if only_drift && !inventory.objects.contains_key(k) {
                continue;
            }
            let Some((ar, namespaced)) = self.kinds.get(&(d.api_version.clone(), k.kind.clone())) else {
                out.push(LiveDiff {
                    object: k.display(),
                    action: "error".into(),
                    diff: String::new(),
                    error: Some(format!("the cluster does not serve {} ({})", k.kind, d.api_version)),
                });
                continue;
            };
            let api = self.api_for(ar, *namespaced, k.namespace.as_deref());
            let value = d.value.clone().expect("every object kept");
            let pp = pp.clone();
            // a plan asks first as `apply` would (without force unless --force-conflicts): a
            // conflict is shown as one, with the diff of taking the fields over
            let ask_first = (!only_drift && !self.opts.force_conflicts).then(|| PatchParams::apply(MANAGER).dry_run());
            calls.push(async move {
                let live = with_retry(|| api.get_opt(&k.name)).await;
                let patch = Patch::Apply(&value);
                let mut conflict = None;
                if let Some(plain) = &ask_first
                    && let Err(e) = with_retry(|| api.patch(&k.name, plain, &patch)).await
                {
                    match classify(&k.display(), &e) {
                        f @ Failure::Conflict { .. } => conflict = Some(f.describe()),
                        _ => return (k, live, Err(e), None),
                    }
                }
                let dry = with_retry(|| api.patch(&k.name, &pp, &patch)).await;
                (k, live, dry, conflict)
            });
        }
        let results: Vec<_> = futures::stream::iter(calls)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (k, live, dry, conflict) in results {
            let object = k.display();
            let entry = match (live, dry) {
                (Ok(live), Ok(dry)) if conflict.is_some() => LiveDiff {
                    object,
                    action: "conflict".into(),
                    diff: unified(
                        &live.map_or(Value::Null, |l| strip(serde_json::to_value(l).unwrap_or_default())),
                        &strip(serde_json::to_value(dry).unwrap_or_default()),
                    ),
                    error: conflict,
                },
                (Ok(live), Ok(dry)) => {
                    let live = live.map(|l| strip(serde_json::to_value(l).unwrap_or_default()));
                    let dry = strip(serde_json::to_value(dry).unwrap_or_default());
                    match live {
                        None => LiveDiff {
                            object,
                            action: "create".into(),
                            diff: unified(&Value::Null, &dry),
                            error: None,
                        },
                        Some(live) if live == dry => LiveDiff {
                            object,
                            action: "unchanged".into(),
                            diff: String::new(),
                            error: None,
                        },
                        Some(live) => LiveDiff {
                            object,
                            action: "update".into(),
                            diff: unified(&live, &dry),
                            error: None,
                        },
                    }
                }
                (Err(e), _) | (_, Err(e)) => LiveDiff {
                    object: object.clone(),
                    action: "error".into(),
                    diff: String::new(),
                    error: Some(classify(&object, &e).describe()),
                },
            };
            if !only_drift || entry.action != "unchanged" {
                out.push(entry);
            }
        }
        if !only_drift {
            for (k, e) in inventory.objects.iter().filter(|(k, _)| !desired.contains_key(*k)) {
                out.push(LiveDiff {
                    object: k.display(),
                    // (an adopted Namespace is released, not deleted: see `prune`)
                    action: if e.adopted || protected(k) { "release" } else { "delete" }.into(),
                    diff: String::new(),
                    error: None,
                });
            }
        }
        out.sort_by(|a, b| a.object.cmp(&b.object));
        Ok(Ok(out))
    }

    /// Apply these objects of `rev` again, taking back their fields (self-heal of drift).
    pub fn heal(&mut self, rev: &Revision<'_>, objects: &BTreeSet<String>) -> anyhow::Result<usize> {
        let rt = self.rt.clone();
        rt.block_on(async {
            let (desired, _) = match self.desired(rev, &BTreeMap::new(), false) {
                Ok(d) => d,
                Err(_) => anyhow::bail!("the applied revision no longer compiles"),
            };
            let pp = PatchParams::apply(MANAGER).force();
            let mut healed = 0;
            for (k, d) in &desired {
                if !objects.contains(&k.display()) {
                    continue;
                }
                let Some((ar, namespaced)) = self.resolve(&d.api_version, &k.kind).await? else {
                    continue;
                };
                let api = self.api_for(&ar, namespaced, k.namespace.as_deref());
                let value = d.value.clone().expect("every object kept");
                let patch = Patch::Apply(&value);
                match with_retry(|| api.patch(&k.name, &pp, &patch)).await {
                    Ok(_) => healed += 1,
                    Err(e) => self.failures.push(classify(&k.display(), &e)),
                }
            }
            Ok(healed)
        })
    }
}

/// Whether the `rampart` field manager owns fields of an object.
fn managed_by_rampart(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    m.managed_fields
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f.manager.as_deref() == Some(MANAGER)))
}

/// This process's claim on the inventory while it applies: the root's resourceVersion and
/// when the claim was last renewed.
struct Lease {
    rv: Option<String>,
    renewed: Instant,
}

/// What pruning one object did.
enum Pruned {
    Deleted,
    /// Already gone (or replaced by another object of the same name).
    Gone,
    /// Listed in the inventory but not rampart's: left alone.
    NotOurs,
}

/// Namespaces rampart never deletes, nor anything in them: the cluster's own and rampart's.
fn protected(k: &Key) -> bool {
    let ns = if k.is_namespace() {
        Some(k.name.as_str())
    } else {
        k.namespace.as_deref()
    };
    ns.is_some_and(|ns| ns == inv::NAMESPACE || crate::compile::reserved(ns))
}

/// Delete `k` if it is rampart's: it carries the managed-by label and the `rampart` field
/// manager (an inventory line someone added by hand does not make an object rampart's), in a
/// namespace rampart may touch; deleted only if it is still the object looked at (uid
/// precondition), in the background.
async fn prune(api: &Api<DynamicObject>, k: &Key) -> Result<Pruned, kube::Error> {
    if protected(k) {
        return Ok(Pruned::NotOurs);
    }
    let Some(meta) = with_retry(|| api.get_metadata_opt(&k.name)).await? else {
        return Ok(Pruned::Gone);
    };
    let m = &meta.metadata;
    let labelled = m
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|v| v == MANAGER);
    if !(labelled && managed_by_rampart(m)) {
        return Ok(Pruned::NotOurs);
    }
    if m.deletion_timestamp.is_some() {
        // (a Namespace stays Terminating until its contents are gone: already on its way)
        return Ok(Pruned::Deleted);
    }
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: m.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match with_retry(|| api.delete(&k.name, &dp)).await {
        Ok(_) => Ok(Pruned::Deleted),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Pruned::Gone),
        Err(e) => Err(e),
    }
}

fn shard_name(i: usize) -> String {
    format!("{}-{i}", inv::NAME)
}

fn inventory_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_owned(), MANAGER.to_owned()),
        ("app.kubernetes.io/component".to_owned(), "inventory".to_owned()),
    ])
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The commit the next apply is authorised from: the last one applied completely — or, when
/// none was, the commit of a first apply that did not finish (it was accepted as the first
/// apply; what comes after it is judged from it, never as another first apply).
fn baseline(i: &Inventory) -> Option<String> {
    i.commit
        .clone()
        .or_else(|| i.partial.clone().filter(|p| super::is_commit_id(p)))
}

fn applied_of(i: &Inventory) -> Applied {
    let commit = baseline(i);
    Applied {
        // objects (or an unfinished apply of a working directory) without a commit: nothing
        // authorises from here
        unknown: commit.is_none() && (!i.objects.is_empty() || i.partial.is_some() || i.orphaned),
        commit,
        // (as recorded with the commit: an apply that did not finish since changed some
        // digests, but the commit the cluster was last brought to completely is still this one)
        rendered: i.commit.as_ref().and(i.rendered.clone()),
    }
}

/// An object without what the API server sets or keeps for itself: `managedFields`,
/// `resourceVersion`, `uid`, `generation`, `creationTimestamp`, the last-applied annotation
/// and `status`.
pub fn strip(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "managedFields",
                "resourceVersion",
                "uid",
                "generation",
                "creationTimestamp",
                "selfLink",
            ] {
                m.remove(k);
            }
            if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
                if a.is_empty() {
                    m.remove("annotations");
                }
            }
        }
    }
    v
}

/// A ConfigMap's or Secret's values as digests (`sha256:…`): the live object holds the real
/// plugin configuration, which a plan — a pull-request comment — must not show.
pub fn mask_data(mut v: Value) -> Value {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("").to_owned();
    if (kind == "ConfigMap" || kind == "Secret")
        && let Some(o) = v.as_object_mut()
    {
        for field in ["data", "binaryData", "stringData"] {
            if let Some(m) = o.get_mut(field).and_then(Value::as_object_mut) {
                m.values_mut().for_each(mask);
            }
        }
    }
    // containers' environment values (someone's `kubectl set env` may hold a password)
    if let Some(containers) = v
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in containers {
            if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                for e in env {
                    if let Some(val) = e.get_mut("value") {
                        mask(val);
                    }
                }
            }
        }
    }
    v
}

/// A value as a digest keyed with a key of this process (equal values show equal digests
/// within one plan; a short secret cannot be looked up in a table of unkeyed digests).
fn mask(val: &mut Value) {
    static KEY: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut k = [0u8; 16];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = std::io::Read::read_exact(&mut f, &mut k);
        }
        k
    });
    let text = val.as_str().map_or_else(|| val.to_string(), str::to_owned);
    let mut h = sha2::Sha256::new();
    h.update(key);
    h.update(text.as_bytes());
    *val = Value::String(format!("hidden:{}", &hex::encode(h.finalize())[..16]));
}

/// A unified diff of two objects as YAML (`Null`: absent), ConfigMap and Secret values as
/// digests ([`mask_data`]).
pub fn unified(old: &Value, new: &Value) -> String {
    let y = |v: &Value| {
        if v.is_null() {
            String::new()
        } else {
            crate::compile::to_yaml(&mask_data(v.clone()))
        }
    };
    let (a, b) = (y(old), y(new));
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header("live", "desired")
        .to_string()
}

impl Target for KubeTarget {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn applied(&mut self) -> anyhow::Result<Applied> {
        let (i, _) = self.rt.block_on(self.read_inventory())?;
        Ok(applied_of(&i))
    }

    fn apply(&mut self, expected: &Applied, rev: &Revision<'_>, record: &Record) -> anyhow::Result<Apply> {
        let rt = self.rt.clone();
        rt.block_on(self.apply_async(expected, rev, record))
    }

    fn drift(&mut self, rev: &Revision<'_>, heal: bool) -> anyhow::Result<Option<super::Drift>> {
        // only against a settled inventory at this very revision: during an apply, or after
        // one that did not finish, "drift" is the apply's own work, and healing would undo it
        let (i, _) = self.rt.block_on(self.read_inventory())?;
        let live_claim = i.claim.as_ref().is_some_and(|c| c.until > now_secs());
        if i.partial.is_some() || live_claim || i.commit.is_none() || i.commit != rev.head.commit {
            return Ok(Some(super::Drift {
                errors: vec![format!(
                    "drift not checked: {}",
                    if live_claim {
                        "an apply is in progress"
                    } else if i.partial.is_some() {
                        "the last apply did not finish (the next apply completes it)"
                    } else {
                        "the cluster's inventory records another commit"
                    }
                )],
                ..super::Drift::default()
            }));
        }
        let rt = self.rt.clone();
        let diffs = match rt.block_on(self.live_diff_async(&i, rev, true))? {
            Ok(d) => d,
            Err(_) => anyhow::bail!("the applied revision does not compile"),
        };
        let mut d = super::Drift::default();
        let mut drifted = BTreeSet::new();
        for x in diffs {
            match x.error {
                Some(e) => d.errors.push(e),
                None => {
                    drifted.insert(x.object);
                }
            }
        }
        d.count = drifted.len();
        d.objects = drifted.iter().take(100).cloned().collect();
        if heal && !drifted.is_empty() {
            self.failures.clear();
            d.healed = self.heal(rev, &drifted)?;
            d.errors.extend(self.failures.iter().map(Failure::describe));
        }
        Ok(Some(d))
    }

    fn holds(&mut self, rev: &Revision<'_>) -> anyhow::Result<Option<bool>> {
        let (i, _) = self.rt.block_on(self.read_inventory())?;
        if !i.exists {
            // no inventory to compare with (it was lost): the live objects themselves, by dry run
            let rt = self.rt.clone();
            let Ok(diffs) = rt.block_on(self.live_diff_async(&i, rev, false))? else {
                return Ok(Some(false));
            };
            return Ok(Some(diffs.iter().all(|d| d.action == "unchanged")));
        }
        let Ok((desired, _)) = self.desired(rev, &BTreeMap::new(), false) else {
            return Ok(Some(false));
        };
        let same = desired.len() == i.objects.len()
            && desired
                .iter()
                .all(|(k, d)| i.objects.get(k).is_some_and(|e| e.digest == d.digest));
        Ok(Some(same))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_names_the_field_and_the_manager() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409, "reason": "Conflict",
            "message": "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas",
            "details": {"causes": [{"reason": "FieldManagerConflict",
                "message": "conflict with \"kubectl-edit\" using apps/v1", "field": ".spec.replicas"}]}
        }))
        .unwrap();
        let f = classify("Deployment.apps p/web", &kube::Error::Api(Box::new(status)));
        assert_eq!(
            f,
            Failure::Conflict {
                object: "Deployment.apps p/web".into(),
                fields: vec![(".spec.replicas".into(), "kubectl-edit".into())]
            }
        );
        assert!(f.describe().contains("--force-conflicts"));
    }

    #[test]
    fn only_transient_answers_are_retried() {
        let st = |code: u16| kube::Error::Api(Box::new(kube::core::Status::failure("x", "y").with_code(code)));
        assert!(retry_after(&st(429), 0).is_some());
        assert!(retry_after(&st(503), 0).is_some());
        assert!(retry_after(&st(503), ATTEMPTS - 1).is_none());
        for code in [400, 403, 404, 409, 422] {
            assert!(retry_after(&st(code), 0).is_none(), "{code}");
        }
    }

    #[test]
    fn only_an_api_server_that_stopped_answering_stops_the_calls_left() {
        let st = |code: u16| kube::Error::Api(Box::new(kube::core::Status::failure("x", "y").with_code(code)));
        for code in [429, 502, 503, 504] {
            assert!(unanswered(&st(code)), "{code}");
        }
        for code in [400, 403, 404, 409, 422, 500] {
            assert!(!unanswered(&st(code)), "{code}");
        }
    }

    #[test]
    fn server_set_fields_are_left_out_of_a_diff() {
        let live = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "uid": "u", "resourceVersion": "7", "managedFields": [],
                         "creationTimestamp": "t"}, "data": {"k": "v"}});
        let want =
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        assert_eq!(strip(live), want);
        assert!(unified(&want, &want).is_empty());
    }
}
