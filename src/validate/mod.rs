//! Validate: loaded documents → typed [`Repo`] + every problem found (pure).
//!
//! [`file`] checks each document of one file on its own (envelope, kind directory, JSON
//! Schema) and types the valid ones; the pipeline runs it on every file in parallel, right
//! after parsing. [`assemble`] then checks the objects together ([`semantic`]). Nothing stops
//! at the first problem: one run reports all of them.

pub mod promql;
pub mod schema;
pub mod semantic;

use crate::config::Settings;
use crate::diagnostic::{Code, Diagnostic, quote};
use crate::load::LoadedFile;
use crate::spec::{API_VERSION, Kind, Metadata, Object, Origin, Repo};
use schema::Target;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Resolve settings from the loaded `rampart.yaml`, if there is one.
pub fn settings(file: Option<&LoadedFile>) -> (Settings, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let Some(file) = file else {
        return (Settings::default(), diags);
    };
    let mut settings = Settings::default();
    for (doc, value) in file.docs.iter().enumerate() {
        if doc > 0 {
            diags.push(
                Diagnostic::at_node(
                    Code::SchemaViolation,
                    &file.path,
                    doc,
                    "",
                    "rampart.yaml holds more than one document",
                )
                .with_hint("keep one `Settings` document in rampart.yaml"),
            );
            break;
        }
        if envelope(value, &file.path, doc, &mut diags).is_none() {
            continue;
        }
        if schema::check(Target::Settings, value, &file.path, doc, &mut diags) {
            let spec = value.get("spec").cloned().unwrap_or(Value::Object(Default::default()));
            settings = Settings::from_spec(&spec, &file.path, doc, &mut diags);
        }
    }
    (settings, diags)
}

/// The `SigningKey` documents of `keys/**/*.yaml` that pass their schema.
pub fn keys(files: &[LoadedFile]) -> (Vec<crate::supply::KeyDoc>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for file in files {
        for (doc, value) in file.docs.iter().enumerate() {
            let Some(kind) = envelope(value, &file.path, doc, &mut diags) else {
                continue;
            };
            if kind != "SigningKey" {
                diags.push(
                    Diagnostic::at_node(
                        Code::UnknownKind,
                        &file.path,
                        doc,
                        "/kind",
                        format!("a {} in `keys/`", quote(kind)),
                    )
                    .with_hint("`keys/` holds `kind: SigningKey` documents only"),
                );
                continue;
            }
            if !schema::check(Target::SigningKey, value, &file.path, doc, &mut diags) {
                continue;
            }
            let text = |p: &str| value.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
            out.push(crate::supply::KeyDoc {
                name: text("/metadata/name"),
                file: file.path.clone(),
                doc,
                public_key: text("/spec/publicKey"),
                publishers: value
                    .pointer("/spec/publishers")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
            });
        }
    }
    (out, diags)
}

/// A name defined by a document: its kind, name and where.
pub type Definition = (Kind, String, Origin);

/// One file's documents and problems.
#[derive(Clone)]
pub struct FileOutcome {
    parsed: Vec<(Parsed, Option<Definition>)>,
    pub diagnostics: Vec<Diagnostic>,
}

impl FileOutcome {
    /// The outcome of a file whose documents all passed (from the parse cache); each
    /// document defines its own name.
    pub fn clean(parsed: Vec<Parsed>) -> FileOutcome {
        let parsed = parsed
            .into_iter()
            .map(|p| {
                let def = match &p {
                    Parsed::Team(o) => Some((Kind::Team, o.name().to_owned(), o.origin.clone())),
                    Parsed::Tenant(o) => Some((Kind::Tenant, o.name().to_owned(), o.origin.clone())),
                    Parsed::Plugin(o) => Some((Kind::Plugin, o.name().to_owned(), o.origin.clone())),
                    Parsed::Rollout(o) => Some((Kind::Rollout, o.name().to_owned(), o.origin.clone())),
                    Parsed::Invalid => None,
                };
                (p, def)
            })
            .collect();
        FileOutcome {
            parsed,
            diagnostics: Vec::new(),
        }
    }

    /// Each document's outcome and the name it defines.
    pub fn parsed(&self) -> &[(Parsed, Option<Definition>)] {
        &self.parsed
    }
}

/// One document's outcome.
#[derive(Clone)]
pub enum Parsed {
    Team(Object<crate::spec::TeamSpec>),
    Tenant(Object<crate::spec::TenantSpec>),
    Plugin(Object<crate::spec::PluginSpec>),
    Rollout(Object<crate::spec::RolloutSpec>),
    /// Failed its schema; the name (if readable) still counts as defined.
    Invalid,
}

/// Check each document of one file on its own (envelope, kind directory, schema) and turn
/// the valid ones into typed objects. The documents are moved out of `file` (its path and
/// text stay, for spans and snippets), so the pipeline can free a file's values as soon as
/// it has been checked.
pub fn file(file: &mut LoadedFile) -> FileOutcome {
    let mut diagnostics = Vec::new();
    let loaded = !file.docs.is_empty();
    let mut parsed: Vec<(Parsed, Option<Definition>)> = std::mem::take(&mut file.docs)
        .into_iter()
        .enumerate()
        .map(|(doc, v)| {
            let named = loose_name(&v);
            let (p, def) = document(&file.path, doc, v, &mut diagnostics);
            // a document rejected before its schema still defines its name for references,
            // so one broken file does not make every reference to it a second error
            let def = def.or_else(|| {
                named.map(|(k, n)| {
                    (
                        k,
                        n,
                        Origin {
                            file: file.path.clone(),
                            doc,
                        },
                    )
                })
            });
            (p, def)
        })
        .collect();
    if !loaded {
        // the file did not load: salvage the names it spells out, for the same reason
        for (kind, name) in salvage_names(&file.text) {
            parsed.push((
                Parsed::Invalid,
                Some((
                    kind,
                    name,
                    Origin {
                        file: file.path.clone(),
                        doc: usize::MAX,
                    },
                )),
            ));
        }
    }
    FileOutcome { parsed, diagnostics }
}

/// `kind` (case-insensitively) and `metadata.name` of a document, however broken otherwise.
fn loose_name(v: &Value) -> Option<(Kind, String)> {
    let kind = v.get("kind")?.as_str()?;
    let kind = Kind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(kind))?;
    Some((kind, v.pointer("/metadata/name")?.as_str()?.to_owned()))
}

/// Names spelled out in a file that is not loadable YAML: top-level `kind:` lines and the
/// `name:` directly under `metadata:`. Only used to avoid follow-on reference errors.
pub fn salvage_names(text: &str) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let (mut kind, mut in_metadata) = (None, false);
    for line in text.lines() {
        let trimmed = line.trim_end();
        if trimmed == "---" {
            (kind, in_metadata) = (None, false);
        } else if let Some(k) = trimmed.strip_prefix("kind:") {
            kind = Kind::ALL
                .into_iter()
                .find(|x| x.as_str().eq_ignore_ascii_case(k.trim().trim_matches(['"', '\''])));
        } else if trimmed == "metadata:" {
            in_metadata = true;
        } else if !line.starts_with(' ') {
            in_metadata = false;
        } else if in_metadata
            && let Some(n) = line.strip_prefix("  name:")
            && let Some(k) = kind
        {
            let n = n
                .split(" #")
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches(['"', '\'']);
            if !n.is_empty() {
                out.push((k, n.to_owned()));
            }
        }
    }
    out
}

/// Gather the per-file outcomes into the repo, then check the objects together.
pub fn assemble(outcomes: Vec<FileOutcome>, settings: Settings) -> (Repo, Vec<Diagnostic>) {
    let (repo, mut diags, defs) = collect(outcomes, settings);
    diags.extend(semantic::check(&repo, &defs));
    (repo, diags)
}

/// The repo of `outcomes` without checking them together (a tree already known valid):
/// what [`assemble`] returns, minus its problems.
pub fn assemble_unchecked(outcomes: Vec<FileOutcome>, settings: Settings) -> Repo {
    collect(outcomes, settings).0
}

/// The objects of `outcomes` in a repo, the files' own problems, and every name defined.
fn collect(outcomes: Vec<FileOutcome>, settings: Settings) -> (Repo, Vec<Diagnostic>, semantic::Definitions) {
    let mut repo = Repo {
        settings,
        ..Repo::default()
    };
    let mut diags = Vec::new();
    let mut defs = Vec::new();
    for FileOutcome { parsed, diagnostics } in outcomes {
        diags.extend(diagnostics);
        for (p, def) in parsed {
            if let Some((kind, name, origin)) = def {
                std::sync::Arc::make_mut(&mut repo.names_seen)
                    .entry(kind)
                    .or_default()
                    .insert(name.clone());
                // salvaged names (no document) suppress follow-ons but are not definitions
                if origin.doc != usize::MAX {
                    defs.push((kind, name, origin));
                }
            }
            match p {
                Parsed::Team(o) => repo.teams.push(o),
                Parsed::Tenant(o) => repo.tenants.push(o),
                Parsed::Plugin(o) => repo.plugins.push(o),
                Parsed::Rollout(o) => repo.rollouts.push(o),
                Parsed::Invalid => {}
            }
        }
    }
    (repo, diags, defs)
}

/// `apiVersion` and `kind` of a document; `None` (with a diagnostic) when unusable.
fn envelope<'v>(value: &'v Value, file: &str, doc: usize, diags: &mut Vec<Diagnostic>) -> Option<&'v str> {
    let Some(obj) = value.as_object() else {
        diags.push(
            Diagnostic::at_node(Code::NotAnObject, file, doc, "", "document is not a mapping")
                .with_hint("each document is an object with `apiVersion`, `kind`, `metadata` and `spec`"),
        );
        return None;
    };
    let problem = match obj.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => None,
        Some(v) => Some((
            format!("unknown apiVersion {}", shown(v)),
            format!("this version of rampart reads `apiVersion: {API_VERSION}`"),
        )),
        None => Some((
            "missing `apiVersion`".to_owned(),
            format!("add `apiVersion: {API_VERSION}`"),
        )),
    };
    if let Some((message, hint)) = problem {
        diags.push(Diagnostic::at_node(Code::UnknownApiVersion, file, doc, "/apiVersion", message).with_hint(hint));
        return None;
    }
    match obj.get("kind") {
        Some(Value::String(k)) => Some(k),
        other => {
            diags.push(
                Diagnostic::at_node(
                    Code::UnknownKind,
                    file,
                    doc,
                    "/kind",
                    match other {
                        Some(v) => format!("`kind` must be a string, found {}", shown(v)),
                        None => "missing `kind`".to_owned(),
                    },
                )
                .with_hint("add `kind: Team`, `Tenant`, `Plugin` or `Rollout`"),
            );
            None
        }
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        other => quote(&other.to_string()),
    }
}

/// Check one document (envelope, kind directory, schema) and type it.
pub fn document(file: &str, doc: usize, mut value: Value, diags: &mut Vec<Diagnostic>) -> (Parsed, Option<Definition>) {
    let Some(kind_str) = envelope(&value, file, doc, diags) else {
        return (Parsed::Invalid, None);
    };
    let Some(kind) = Kind::parse(kind_str) else {
        let hint = match Kind::ALL.iter().find(|k| k.as_str().eq_ignore_ascii_case(kind_str)) {
            Some(k) => format!("did you mean `{}`? kinds are case-sensitive", k.as_str()),
            None if kind_str == "Settings" => "`Settings` belongs in rampart.yaml at the repo root".to_owned(),
            None => "use `Team`, `Tenant`, `Plugin` or `Rollout`".to_owned(),
        };
        diags.push(
            Diagnostic::at_node(
                Code::UnknownKind,
                file,
                doc,
                "/kind",
                format!("unknown kind {}", quote(kind_str)),
            )
            .with_hint(hint),
        );
        return (Parsed::Invalid, None);
    };
    let top = file.split('/').next().unwrap_or_default();
    if top != kind.dir() {
        diags.push(
            Diagnostic::at_node(
                Code::MisplacedKind,
                file,
                doc,
                "/kind",
                format!("a {} in `{top}/`", kind.as_str()),
            )
            .with_hint(format!(
                "move it to `{}/` so reviewers find it where they expect",
                kind.dir()
            )),
        );
    }
    let origin = Origin {
        file: file.to_owned(),
        doc,
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let def = name.map(|n| (kind, n, origin.clone()));
    let target = match kind {
        Kind::Team => Target::Team,
        Kind::Tenant => Target::Tenant,
        Kind::Plugin => Target::Plugin,
        Kind::Rollout => Target::Rollout,
    };
    if !schema::check(target, &value, file, doc, diags) {
        return (Parsed::Invalid, def);
    }
    let parsed = match kind {
        Kind::Team => typed(&mut value, origin, diags).map(Parsed::Team),
        Kind::Tenant => {
            // configs can be large: serialize them once, compactly, instead of copying values
            let configs: Vec<Option<Value>> = match value.pointer_mut("/spec/plugins") {
                Some(Value::Array(ps)) => ps
                    .iter_mut()
                    .map(|p| p.as_object_mut().and_then(|o| o.remove("config")))
                    .collect(),
                _ => Vec::new(),
            };
            for (i, c) in configs.iter().enumerate() {
                if let Some(c) = c {
                    literal_secrets(c, &mut format!("/spec/plugins/{i}/config"), file, doc, diags);
                }
            }
            typed_with(&mut value, origin, diags, |spec: &mut crate::spec::TenantSpec| {
                for (p, c) in spec.plugins.iter_mut().zip(configs) {
                    p.config = c.as_ref().map(crate::spec::PluginConfig::new);
                }
            })
            .map(Parsed::Tenant)
        }
        Kind::Plugin => typed(&mut value, origin, diags).map(Parsed::Plugin),
        Kind::Rollout => typed(&mut value, origin, diags).map(Parsed::Rollout),
    };
    (parsed.unwrap_or(Parsed::Invalid), def)
}

/// A key that names a secret (see [`crate::compile::secret::is_secret_key`], the rule the
/// plan's redaction uses too) holding a literal is an error: the secret would sit in git and
/// in the rendered ConfigMap. Under such a key every literal counts, in a list or map too
/// (`tokens: [ghp_…]`, `token: {value: …}`), each reported where it is. Booleans, empty
/// strings, strings with a `${NAME}` substitution and Secret references are fine.
fn literal_secrets(v: &Value, ptr: &mut String, file: &str, doc: usize, diags: &mut Vec<Diagnostic>) {
    walk_secrets(None, v, ptr, file, doc, diags);
}

/// [`literal_secrets`] of `x` at `ptr`; `secret` is the secret key `x` is under, if any.
fn walk_secrets(
    secret: Option<&str>,
    x: &Value,
    ptr: &mut String,
    file: &str,
    doc: usize,
    diags: &mut Vec<Diagnostic>,
) {
    use crate::compile::secret::{REF_FIELD, is_literal_secret, is_reference, is_secret_key};
    if let Some(key) = secret {
        if is_reference(x) {
            return;
        }
        if is_literal_secret(x) {
            diags.push(
                Diagnostic::at_node(
                    Code::SecretLiteral,
                    file,
                    doc,
                    ptr,
                    format!("{} holds a secret written as a literal", quote(key)),
                )
                .with_hint(format!(
                    "keep secrets out of git: reference a Kubernetes Secret, `{key}: {{{REF_FIELD}: {{name: SECRET, key: KEY}}}}`; the portal gets it as an env var"
                )),
            );
            return;
        }
    }
    let len = ptr.len();
    match x {
        Value::Object(m) => {
            for (k, y) in m {
                ptr.push('/');
                ptr.push_str(&crate::load::escape_pointer(k));
                let under = secret.or_else(|| is_secret_key(k).then_some(k.as_str()));
                walk_secrets(under, y, ptr, file, doc, diags);
                ptr.truncate(len);
            }
        }
        Value::Array(ys) => {
            for (i, y) in ys.iter().enumerate() {
                ptr.push_str(&format!("/{i}"));
                walk_secrets(secret, y, ptr, file, doc, diags);
                ptr.truncate(len);
            }
        }
        _ => {}
    }
}

/// Deserialize a schema-valid document. A failure here means the schema and the model
/// disagree: reported as a schema violation rather than a panic.
fn typed<S: DeserializeOwned>(value: &mut Value, origin: Origin, diags: &mut Vec<Diagnostic>) -> Option<Object<S>> {
    typed_with(value, origin, diags, |_| {})
}

/// [`typed`], with `finish` completing the spec before it is shared.
fn typed_with<S: DeserializeOwned>(
    value: &mut Value,
    origin: Origin,
    diags: &mut Vec<Diagnostic>,
    finish: impl FnOnce(&mut S),
) -> Option<Object<S>> {
    let metadata: Result<Metadata, _> = serde_json::from_value(value["metadata"].take());
    let spec: Result<S, _> = serde_json::from_value(value["spec"].take());
    match (metadata, spec) {
        (Ok(metadata), Ok(mut spec)) => {
            finish(&mut spec);
            Some(Object::new(metadata, spec, origin))
        }
        (Err(e), _) | (_, Err(e)) => {
            diags.push(Diagnostic::at_node(
                Code::SchemaViolation,
                &origin.file,
                origin.doc,
                "",
                format!("document could not be read: {e}"),
            ));
            None
        }
    }
}
