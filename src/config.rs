//! Settings: the config repo's `rampart.yaml` (kind `Settings`) resolved against defaults.
//!
//! Limits have safe defaults and may be overridden by the repo, but never above a hard
//! ceiling: a pull request that raises its own limits must not be able to exhaust the
//! machine that validates it.

use crate::diagnostic::{Code, Diagnostic};
use crate::units::Quantity;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Path of the settings file inside a config repo.
pub const SETTINGS_FILE: &str = "rampart.yaml";

/// Resource limits for reading and parsing a config repo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Limits {
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Most directory entries walked under the kind directories.
    pub max_files: u64,
    /// Most bytes read from the whole repo.
    pub max_total_bytes: u64,
    /// Deepest nesting of mappings and sequences in one document.
    pub max_depth: u64,
    /// Most YAML nodes in one file (aliases count each time they are replayed).
    pub max_nodes: u64,
    /// Most alias uses (`*ref`) in one file.
    pub max_aliases: u64,
    /// Most documents in one file.
    pub max_documents: u64,
    /// Longest scalar, in bytes.
    pub max_scalar_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 4 << 20,
            max_files: 100_000,
            max_total_bytes: 256 << 20,
            max_depth: 64,
            max_nodes: 250_000,
            max_aliases: 10_000,
            max_documents: 1_000,
            max_scalar_bytes: 256 << 10,
        }
    }
}

impl Limits {
    /// The hard ceilings: what a repo may raise its limits to, and no further.
    pub const CEILING: Limits = Limits {
        max_file_bytes: 64 << 20,
        max_files: 1_000_000,
        max_total_bytes: 4 << 30,
        max_depth: 128,
        max_nodes: 10_000_000,
        max_aliases: 1_000_000,
        max_documents: 100_000,
        max_scalar_bytes: 64 << 20,
    };

    /// Clamp to the ceiling, reporting each limit that had to be lowered.
    fn clamp(mut self, file: &str, doc: usize, diags: &mut Vec<Diagnostic>) -> Limits {
        let c = Self::CEILING;
        for (name, slot, max) in [
            ("maxFileBytes", &mut self.max_file_bytes, c.max_file_bytes),
            ("maxFiles", &mut self.max_files, c.max_files),
            ("maxTotalBytes", &mut self.max_total_bytes, c.max_total_bytes),
            ("maxDepth", &mut self.max_depth, c.max_depth),
            ("maxNodes", &mut self.max_nodes, c.max_nodes),
            ("maxAliases", &mut self.max_aliases, c.max_aliases),
            ("maxDocuments", &mut self.max_documents, c.max_documents),
            ("maxScalarBytes", &mut self.max_scalar_bytes, c.max_scalar_bytes),
        ] {
            if *slot > max {
                diags.push(
                    Diagnostic::at_node(
                        Code::LimitAboveCeiling,
                        file,
                        doc,
                        &format!("/spec/limits/{name}"),
                        format!("limit `{name}` is {slot}, above the hard ceiling of {max}"),
                    )
                    .with_hint(format!(
                        "lower `{name}` to at most {max}; the ceiling protects the machine that validates pull requests"
                    )),
                );
                *slot = max;
            }
        }
        self
    }
}

/// Upper bounds of a tenant's quota in one tier.
#[derive(Debug, Clone, PartialEq)]
pub struct TierBounds {
    pub cpu: Quantity,
    pub memory: Quantity,
    pub pods: u64,
    pub storage: Quantity,
}

/// The three tiers of DESIGN.md.
pub const TIERS: [&str; 3] = ["free", "team", "enterprise"];

fn default_tiers() -> BTreeMap<String, TierBounds> {
    let q = |s: &str| Quantity::parse(s).expect("default quantity parses");
    BTreeMap::from([
        (
            "free".into(),
            TierBounds {
                cpu: q("2"),
                memory: q("4Gi"),
                pods: 20,
                storage: q("10Gi"),
            },
        ),
        (
            "team".into(),
            TierBounds {
                cpu: q("16"),
                memory: q("64Gi"),
                pods: 200,
                storage: q("500Gi"),
            },
        ),
        (
            "enterprise".into(),
            TierBounds {
                cpu: q("256"),
                memory: q("1Ti"),
                pods: 5000,
                storage: q("20Ti"),
            },
        ),
    ])
}

/// The raw `spec` of `rampart.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    limits: Limits,
    /// Read field by field in [`Settings::from_spec`], so each bad bound is reported.
    #[serde(default)]
    tiers: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    permissions: BTreeMap<String, TierPermissions>,
}

/// Which plugin permissions a tier's tenants may enable: those matching an `allow` pattern
/// and no `deny` pattern (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierPermissions {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

impl TierPermissions {
    pub fn allows(&self, permission: &str) -> bool {
        self.allow.iter().any(|p| glob(p, permission)) && !self.deny.iter().any(|p| glob(p, permission))
    }
}

/// `*` matches any run of characters (iterative, linear in practice for short patterns).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && p[i] != '*' && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Default permissions: every tier may enable anything but `admin:*`, except `enterprise`
/// (whose admin permissions still need security's approval by the default policies).
fn default_permissions() -> BTreeMap<String, TierPermissions> {
    let tier = |deny: &[&str]| TierPermissions {
        allow: vec!["*".to_owned()],
        deny: deny.iter().map(|d| (*d).to_owned()).collect(),
    };
    BTreeMap::from([
        ("free".to_owned(), tier(&["admin:*"])),
        ("team".to_owned(), tier(&["admin:*"])),
        ("enterprise".to_owned(), tier(&[])),
    ])
}

/// The platform the config repo runs on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Platform {
    /// Version of the portal platform, checked against plugins' `requires.platform`.
    pub version: String,
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub platform: Option<Platform>,
    pub limits: Limits,
    pub tiers: BTreeMap<String, TierBounds>,
    /// Plugin permissions per tier.
    pub permissions: BTreeMap<String, TierPermissions>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            platform: None,
            limits: Limits::default(),
            tiers: default_tiers(),
            permissions: default_permissions(),
        }
    }
}

impl Settings {
    /// Resolve the `spec` of a schema-valid `rampart.yaml` document. Tiers not named in the
    /// file keep their defaults.
    pub fn from_spec(spec: &serde_json::Value, file: &str, doc: usize, diags: &mut Vec<Diagnostic>) -> Settings {
        let raw: RawSettings = match serde_json::from_value(spec.clone()) {
            Ok(raw) => raw,
            // the schema accepted the document, so this cannot happen; keep the defaults
            Err(_) => return Settings::default(),
        };
        let mut tiers = default_tiers();
        for (tier, bounds) in &raw.tiers {
            let mut quantity = |field: &str| match Quantity::from_json(&bounds[field]) {
                Ok(q) => Some(q),
                Err(e) => {
                    diags.push(
                        Diagnostic::at_node(
                            Code::InvalidQuantity,
                            file,
                            doc,
                            &format!("/spec/tiers/{tier}/{field}"),
                            format!("tier `{tier}` bound `{field}`: {e}"),
                        )
                        .with_hint("tier bounds are Kubernetes quantities such as `500m`, `4Gi` or `16`; this tier keeps its defaults"),
                    );
                    None
                }
            };
            let (cpu, memory, storage) = (quantity("cpu"), quantity("memory"), quantity("storage"));
            if let (Some(cpu), Some(memory), Some(storage), Some(pods)) =
                (cpu, memory, storage, bounds["pods"].as_u64())
            {
                tiers.insert(
                    tier.clone(),
                    TierBounds {
                        cpu,
                        memory,
                        pods,
                        storage,
                    },
                );
            }
        }
        let mut permissions = default_permissions();
        permissions.extend(raw.permissions);
        Settings {
            platform: raw.platform,
            limits: raw.limits.clamp(file, doc, diags),
            tiers,
            permissions,
        }
    }
}
