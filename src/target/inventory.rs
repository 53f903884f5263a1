//! The Kubernetes target's inventory (pure: no IO). It names every object rampart applied
//! to a cluster, with the digest of what was applied, so that:
//! - an object whose desired state has the digest the inventory records is not sent again
//!   (a no-op reconcile makes no write call);
//! - an object in the inventory and no longer desired is deleted, and nothing else ever is
//!   (exact prune, like Flux's inventory);
//! - the last applied source commit is read back from the cluster (where `serve` resumes).
//!
//! It is kept in ConfigMaps in `rampart-system`: the root `rampart-inventory` holds the
//! commit, the record of the apply, the id of what it rendered, a claim while an apply runs,
//! the commit of an apply that did not finish (`partial`) and the number of shards;
//! `rampart-inventory-<i>` hold the objects, one line each (`DIGEST APIVERSION KIND NAMESPACE
//! NAME`, `-` for no namespace), an object in shard `hash(its namespace) % shards` so one
//! tenant's objects share a shard and a one-tenant change rewrites one shard. A ConfigMap holds
//! at most 1 MiB: the shard count doubles when one would pass [`SHARD_LIMIT`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Where the inventory lives.
pub const NAMESPACE: &str = "rampart-system";
/// The root ConfigMap's name (its shards are `NAME-<i>`).
pub const NAME: &str = "rampart-inventory";
/// The most bytes of object lines one shard holds (a ConfigMap's limit is 1 MiB).
pub const SHARD_LIMIT: usize = 700 * 1024;
/// The digest of an object that may exist (an apply of it was started) but is not known to
/// hold any desired state: it is applied on the next reconcile, and pruned if not desired.
pub const PENDING: &str = "-";

/// An object's identity in a cluster: its API group (not version: `v1beta1` and `v1` of one
/// kind are one object), kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Key {
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Key {
        Key {
            group: group_of(api_version).to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// How messages name it: `Deployment payments/portal`, `Namespace payments`.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind_display(), self.name),
            None => format!("{} {}", self.kind_display(), self.name),
        }
    }

    fn kind_display(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Namespaces are applied first and deleted last.
    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.kind == "Namespace"
    }

    /// The namespace whose shard holds it: its own, or (a Namespace) its name.
    fn shard_key(&self) -> &str {
        match &self.namespace {
            Some(ns) => ns,
            None if self.is_namespace() => &self.name,
            None => "",
        }
    }
}

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// One object of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The `apiVersion` it was applied with (pruned with it, even after the kind left Git).
    pub api_version: String,
    /// What was applied ([`digest`]), or [`PENDING`].
    pub digest: String,
    /// A Namespace that existed before rampart first applied it (someone else's, taken under
    /// management): prune never deletes it — only rampart's objects in it.
    pub adopted: bool,
}

/// The digest of an object's desired state: its JSON as compiled (keys in a fixed order).
pub fn digest(value: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let d = Sha256::digest(&bytes);
    hex::encode(&d[..10])
}

/// A claim on the target while an apply runs: another process that sees a live claim waits
/// (a compare-and-swap on the root's resourceVersion decides who claims).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub holder: String,
    /// The commit being applied.
    pub commit: Option<String>,
    /// Unix seconds after which the claim is stale (its holder died).
    pub until: u64,
}

/// The whole inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The root ConfigMap exists.
    pub exists: bool,
    /// It does not, but the cluster holds rampart's objects (its shards, or namespaces with
    /// rampart's label): the inventory was lost, and nothing authorises from here.
    pub orphaned: bool,
    /// The last source commit applied completely.
    pub commit: Option<String>,
    /// The record of that apply (JSON of `target::Record`), as written.
    pub record: Option<String>,
    /// An apply in progress (or one whose process died).
    pub claim: Option<Claim>,
    /// The commit of an apply that did not finish: some objects may hold it, others not; the
    /// next apply compares every object, not only a change's tenants.
    pub partial: Option<String>,
    /// The [`rendered_id`] of the objects when `commit` was recorded (what rampart's notes
    /// record for the apply).
    pub rendered: Option<String>,
    pub shards: usize,
    pub objects: BTreeMap<Key, Entry>,
}

/// A line of a shard: `DIGEST APIVERSION KIND NAMESPACE NAME[ adopted]`.
fn line(key: &Key, e: &Entry) -> String {
    format!(
        "{} {} {} {} {}{}\n",
        e.digest,
        e.api_version,
        key.kind,
        key.namespace.as_deref().unwrap_or("-"),
        key.name,
        if e.adopted { " adopted" } else { "" }
    )
}

/// The objects of one shard's text; a line that is not rampart's is an error (a hand-edited
/// inventory is not guessed at).
pub fn parse_shard(text: &str, into: &mut BTreeMap<Key, Entry>) -> Result<(), String> {
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.split(' ').collect();
        let (adopted, f) = match f[..] {
            [ref head @ .., "adopted"] => (true, head),
            _ => (false, &f[..]),
        };
        let [digest, api_version, kind, ns, name] = f[..] else {
            return Err(format!(
                "line {}: expected `DIGEST APIVERSION KIND NAMESPACE NAME`",
                i + 1
            ));
        };
        if !(digest == PENDING || (digest.len() == 20 && digest.bytes().all(|b| b.is_ascii_hexdigit())))
            || [api_version, kind, ns, name].iter().any(|s| s.is_empty())
        {
            return Err(format!("line {}: not an inventory entry", i + 1));
        }
        let ns = (ns != "-").then_some(ns);
        into.insert(
            Key::new(api_version, kind, ns, name),
            Entry {
                api_version: api_version.to_owned(),
                digest: digest.to_owned(),
                adopted,
            },
        );
    }
    Ok(())
}

/// A stable hash of a shard key (FNV-1a: the same in every process and version).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The shard of `key` among `shards`.
pub fn shard_of(key: &Key, shards: usize) -> usize {
    (fnv(key.shard_key()) % shards.max(1) as u64) as usize
}

/// The shards' texts for `objects` with `shards` shards.
pub fn shard_texts(objects: &BTreeMap<Key, Entry>, shards: usize) -> Vec<String> {
    let mut out = vec![String::new(); shards.max(1)];
    for (k, e) in objects {
        out[shard_of(k, shards)].push_str(&line(k, e));
    }
    out
}

/// The shard count for `objects`: `current` (at least 1), doubled until every shard fits.
pub fn shard_count(objects: &BTreeMap<Key, Entry>, current: usize) -> usize {
    let mut n = current.max(1);
    loop {
        let mut sizes = vec![0usize; n];
        for (k, e) in objects {
            sizes[shard_of(k, n)] += line(k, e).len();
        }
        if sizes.iter().all(|s| *s <= SHARD_LIMIT) || n >= 4096 {
            return n;
        }
        n *= 2;
    }
}

/// The id of what the inventory says the cluster holds (every object and its digest): two
/// clusters with equal ids hold the same desired state.
pub fn rendered_id(objects: &BTreeMap<Key, Entry>) -> String {
    let mut h = Sha256::new();
    for (k, e) in objects {
        h.update(line(k, e).as_bytes());
    }
    hex::encode(h.finalize())
}

/// What an apply does, decided from the inventory and the desired objects.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Objects to apply (new, changed, or pending), Namespaces first.
    pub apply: Vec<Key>,
    /// Inventory objects no longer desired, Namespaces last.
    pub delete: Vec<Key>,
    /// Desired objects whose inventory digest already matches.
    pub unchanged: usize,
}

/// Decide what to apply and delete. `desired` maps each desired object to its digest;
/// `scope` limits pruning to the objects it accepts (a change to some tenants considers
/// only their objects; `None`: every inventory object).
pub fn plan_work(
    inventory: &BTreeMap<Key, Entry>,
    desired: &BTreeMap<Key, String>,
    prune_scope: Option<&dyn Fn(&Key) -> bool>,
) -> Work {
    let mut w = Work::default();
    for (k, d) in desired {
        match inventory.get(k) {
            Some(e) if e.digest == *d => w.unchanged += 1,
            _ => w.apply.push(k.clone()),
        }
    }
    for k in inventory.keys() {
        if !desired.contains_key(k) && prune_scope.is_none_or(|f| f(k)) {
            w.delete.push(k.clone());
        }
    }
    // Namespaces before what lives in them; deleted after it
    w.apply.sort_by_key(|k| !k.is_namespace());
    w.delete.sort_by_key(|k| k.is_namespace());
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(api: &str, kind: &str, ns: Option<&str>, name: &str) -> Key {
        Key::new(api, kind, ns, name)
    }

    fn e(api: &str, d: &str) -> Entry {
        Entry {
            api_version: api.into(),
            digest: d.into(),
            adopted: false,
        }
    }

    #[test]
    fn shards_round_trip_and_keep_a_tenant_together() {
        let mut objects = BTreeMap::new();
        for t in 0..50 {
            let ns = format!("tenant-{t}");
            let mut adopted = e("v1", &"a".repeat(20));
            adopted.adopted = t % 3 == 0;
            objects.insert(k("v1", "Namespace", None, &ns), adopted);
            objects.insert(k("apps/v1", "Deployment", Some(&ns), "portal"), e("apps/v1", PENDING));
        }
        let texts = shard_texts(&objects, 4);
        let mut back = BTreeMap::new();
        for t in &texts {
            parse_shard(t, &mut back).unwrap();
        }
        assert_eq!(back, objects);
        let ns = k("v1", "Namespace", None, "tenant-7");
        let dep = k("apps/v1", "Deployment", Some("tenant-7"), "portal");
        assert_eq!(shard_of(&ns, 4), shard_of(&dep, 4));
    }

    #[test]
    fn a_hand_edited_shard_is_refused() {
        let mut m = BTreeMap::new();
        assert!(parse_shard("zzz v1 ConfigMap a b\n", &mut m).is_err());
        assert!(parse_shard("- v1 ConfigMap a\n", &mut m).is_err());
        assert!(parse_shard("- v1 ConfigMap a b c\n", &mut m).is_err());
    }

    #[test]
    fn shard_count_grows_past_the_limit() {
        let mut objects = BTreeMap::new();
        for i in 0..30_000 {
            objects.insert(
                k("v1", "ConfigMap", Some(&format!("ns-{i}")), "dynamic-plugins"),
                e("v1", &"b".repeat(20)),
            );
        }
        let n = shard_count(&objects, 1);
        assert!(n > 1);
        assert!(shard_texts(&objects, n).iter().all(|t| t.len() <= SHARD_LIMIT));
    }

    #[test]
    fn work_applies_changes_and_prunes_only_the_inventory() {
        let ns = k("v1", "Namespace", None, "a");
        let cm = k("v1", "ConfigMap", Some("a"), "x");
        let gone = k("v1", "ConfigMap", Some("b"), "y");
        let gone_ns = k("v1", "Namespace", None, "b");
        let inventory = BTreeMap::from([
            (ns.clone(), e("v1", "1")),
            (cm.clone(), e("v1", "2")),
            (gone_ns.clone(), e("v1", "3")),
            (gone.clone(), e("v1", "4")),
        ]);
        let desired = BTreeMap::from([
            (ns.clone(), "1".to_owned()),
            (cm.clone(), "changed".to_owned()),
            (k("v1", "Namespace", None, "c"), "5".to_owned()),
        ]);
        let w = plan_work(&inventory, &desired, None);
        assert_eq!(w.apply, vec![k("v1", "Namespace", None, "c"), cm]);
        assert_eq!(w.delete, vec![gone, gone_ns]);
        assert_eq!(w.unchanged, 1);
        let only_a = |key: &Key| key.namespace.as_deref() == Some("a");
        assert!(plan_work(&inventory, &desired, Some(&only_a)).delete.is_empty());
    }

    #[test]
    fn versions_of_one_kind_are_one_object() {
        assert_eq!(
            k("networking.k8s.io/v1beta1", "Ingress", Some("a"), "x"),
            k("networking.k8s.io/v1", "Ingress", Some("a"), "x")
        );
        assert_eq!(group_of("v1"), "");
        assert_eq!(
            k("apps/v1", "Deployment", Some("p"), "web").display(),
            "Deployment.apps p/web"
        );
    }
}
