//! The typed model of a config repo: `Team`, `Tenant`, `Plugin`, `Rollout` (pure).
//!
//! Objects are built only from documents that passed their JSON Schema, so deserializing
//! them cannot fail on shape. Quantities and durations stay as written here (a
//! `serde_json::Value` or `String`): the semantic checks parse them and report bad ones with
//! their own codes, and later stages parse them again through [`crate::units`].

use crate::config::Settings;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The API version every object carries.
pub const API_VERSION: &str = "rampart.dev/v1";

/// The kinds of objects, in the order their directories are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Team,
    Tenant,
    Plugin,
    Rollout,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Team, Kind::Tenant, Kind::Plugin, Kind::Rollout];

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Team => "Team",
            Kind::Tenant => "Tenant",
            Kind::Plugin => "Plugin",
            Kind::Rollout => "Rollout",
        }
    }

    /// The directory objects of this kind live in.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Team => "teams",
            Kind::Tenant => "tenants",
            Kind::Plugin => "plugins",
            Kind::Rollout => "rollouts",
        }
    }
}

/// Where an object was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub doc: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One object of the repo with its origin. Shared, not copied: the base and the head of a
/// plan hold the same object for every unchanged document (the parse cache hands out one
/// per blob), so cloning one is a reference count. Read its fields through `Deref`.
#[derive(Debug, PartialEq)]
pub struct Object<S>(std::sync::Arc<ObjectData<S>>);

/// The fields of an [`Object`].
#[derive(Debug, PartialEq)]
pub struct ObjectData<S> {
    pub metadata: Metadata,
    pub spec: S,
    pub origin: Origin,
}

impl<S> Object<S> {
    pub fn new(metadata: Metadata, spec: S, origin: Origin) -> Object<S> {
        Object(std::sync::Arc::new(ObjectData { metadata, spec, origin }))
    }

    pub fn name(&self) -> &str {
        &self.0.metadata.name
    }
}

impl<S> Clone for Object<S> {
    fn clone(&self) -> Self {
        Object(self.0.clone())
    }
}

impl<S> std::ops::Deref for Object<S> {
    type Target = ObjectData<S>;
    fn deref(&self) -> &ObjectData<S> {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamSpec {
    pub members: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    pub owners: Vec<String>,
    pub tier: String,
    pub isolation: String,
    pub quota: Quota,
    #[serde(default)]
    pub network: Network,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<EnabledPlugin>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    pub cpu: Value,
    pub memory: Value,
    pub pods: u64,
    pub storage: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnabledPlugin {
    pub name: String,
    #[serde(default)]
    pub disabled: bool,
    /// Filled by validation from the document (see [`PluginConfig`]), not by serde.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub config: Option<PluginConfig>,
}

/// A plugin's configuration, kept as compact JSON text: configs can be large (tens of KB per
/// tenant) and are only read when compiled, so a repo's model stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig(String);

impl Serialize for PluginConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

impl PluginConfig {
    pub fn new(value: &Value) -> PluginConfig {
        PluginConfig(value.to_string())
    }

    /// A configuration from its compact JSON text, as [`PluginConfig::json_text`] gave it
    /// (the parse cache checks the text is JSON before handing it back).
    pub fn from_json_text(text: String) -> PluginConfig {
        PluginConfig(text)
    }

    /// The configuration as compact JSON text.
    pub fn json_text(&self) -> &str {
        &self.0
    }

    /// The configuration as a JSON value.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).expect("stored from a valid value")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    pub publisher: String,
    pub version: String,
    pub artifact: Artifact,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default)]
    pub requires: Requires,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintainers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_release: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advisories: Vec<Advisory>,
    #[serde(default)]
    pub quality: Quality,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub package: String,
    pub integrity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requires {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Advisory {
    pub id: String,
    pub severity: String,
    #[serde(default)]
    pub fixed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    pub plugin: String,
    pub to_version: String,
    /// The new version's package (required by the semantic checks, R321; optional in the
    /// schema so that older repos still load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub tenants: TenantSelection,
    #[serde(default = "default_strategy")]
    pub strategy: String,
    #[serde(default = "default_steps")]
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slos: Vec<Slo>,
    #[serde(default)]
    pub analysis: Analysis,
    #[serde(default = "default_on_violation")]
    pub on_violation: String,
}

fn default_strategy() -> String {
    "canary".into()
}

fn default_on_violation() -> String {
    "revert".into()
}

/// The default steps of DESIGN.md: 10 → 25 → 50 → 100.
pub fn default_steps() -> Vec<Step> {
    [10, 25, 50, 100]
        .into_iter()
        .map(|weight| Step { weight, pause: None })
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSelection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub weight: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slo {
    pub name: String,
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(rename = "for")]
    pub for_: String,
    /// PromQL returning the number of requests in the `for` window; `min_requests` compares
    /// against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// The Prometheus query timeout (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<u64>,
}

/// A whole config repo, as far as it could be read. Objects whose documents failed their
/// schema are absent, but their names are in `names_seen` so references to them do not
/// produce a second, misleading error.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub settings: Settings,
    pub teams: Vec<Object<TeamSpec>>,
    pub tenants: Vec<Object<TenantSpec>>,
    pub plugins: Vec<Object<PluginSpec>>,
    pub rollouts: Vec<Object<RolloutSpec>>,
    /// (shared: a replayed revision that defines the same names as the one before it
    /// shares them, see `pipeline::Replay`)
    pub names_seen: std::sync::Arc<BTreeMap<Kind, foldhash::HashSet<String>>>,
}

impl Repo {
    /// Whether an object of `kind` named `name` exists, valid or not.
    pub fn has(&self, kind: Kind, name: &str) -> bool {
        self.names_seen.get(&kind).is_some_and(|s| s.contains(name))
    }

    pub fn object_count(&self) -> usize {
        self.teams.len() + self.tenants.len() + self.plugins.len() + self.rollouts.len()
    }
}
