//! The plugin supply chain (pure): artifact integrity, minisign signatures, the trust score,
//! and compatibility — platform ranges, plugin-to-plugin requirements per tenant, cycles,
//! permissions per tier, resources against quotas, and rollouts' new versions.
//!
//! What is signed: the exact bytes of the plugin's `artifact.integrity` string (for example
//! `sha512-hQJ4…==`, no newline), with minisign (prehashed Ed25519, the default since
//! minisign 0.10). The signature is the whole `.minisig` text in `spec.signature`. A
//! rollout's new version carries its own `artifact` and `signature`, checked the same way
//! (against the keys of the plugin's publisher) and scored with the plugin's trust facts.
//!
//! No solver: a config repo pins exactly one version of each plugin, so a tenant's plugin
//! set has nothing to choose — every requirement is checked directly against the one
//! version present (and a rollout's `toVersion` against every range that names its plugin).

mod compat;
mod integrity;
mod trust;

pub use compat::{Reason, TreeEntry, compatibility, tree};
pub use integrity::{Integrity, digest_matches};
pub use trust::{Factors, days_from_civil, score};

use crate::diagnostic::{Code, Diagnostic, quote};
use crate::spec::{Artifact, Object, Origin, PluginSpec, Repo, RolloutSpec};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A trusted signing key from `keys/`: who it may sign for.
#[derive(Clone)]
pub struct Key {
    pub name: String,
    pub file: String,
    pub doc: usize,
    pub public: minisign_verify::PublicKey,
    pub publishers: Vec<String>,
}

/// A `SigningKey` document that passed its schema.
pub struct KeyDoc {
    pub name: String,
    pub file: String,
    pub doc: usize,
    pub public_key: String,
    pub publishers: Vec<String>,
}

/// Parse the public keys; a key that does not decode is reported (R620) and left out.
pub fn keys(docs: Vec<KeyDoc>) -> (Vec<Key>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    let mut names: HashMap<String, ()> = HashMap::new();
    for d in docs {
        if names.insert(d.name.clone(), ()).is_some() {
            diags.push(
                Diagnostic::at_node(
                    Code::DuplicateName,
                    &d.file,
                    d.doc,
                    "/metadata/name",
                    format!("signing key {} is defined twice", quote(&d.name)),
                )
                .with_hint("give each key its own name"),
            );
            continue;
        }
        match minisign_verify::PublicKey::from_base64(d.public_key.trim()) {
            Ok(public) => out.push(Key {
                name: d.name,
                file: d.file,
                doc: d.doc,
                public,
                publishers: d.publishers,
            }),
            Err(e) => diags.push(
                Diagnostic::at_node(
                    Code::KeyInvalid,
                    &d.file,
                    d.doc,
                    "/spec/publicKey",
                    format!("signing key {} is not a minisign public key: {e}", quote(&d.name)),
                )
                .with_hint("paste the second line of the key's `minisign.pub` (it starts with `RW`)"),
            ),
        }
    }
    (out, diags)
}

/// What rampart could establish about one plugin.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Trust {
    pub name: String,
    pub version: String,
    pub publisher: String,
    /// `verified` (the artifact in the repo has this digest), `declared` (well formed, no
    /// artifact to check) or `invalid`.
    pub integrity: &'static str,
    /// `verified`, `unsigned` or `invalid`.
    pub signature: &'static str,
    /// The key that verified the signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    pub signature_verified: bool,
    pub trust_score: i64,
    pub factors: Factors,
}

/// Everything the supply-chain checks need from outside the model.
pub struct Inputs<'a> {
    pub keys: &'a [Key],
    /// Bytes of the artifacts found in the repo (`artifact.path`), by path; a path that
    /// could not be read maps to why.
    pub artifacts: &'a HashMap<String, Result<Vec<u8>, String>>,
    /// Day (since 1970-01-01) freshness is measured at: the commit's time, never the clock.
    pub as_of: Option<i64>,
}

/// Integrity, signature and trust of every plugin, by name, plus their diagnostics.
pub fn verify(repo: &Repo, inputs: &Inputs<'_>) -> (BTreeMap<String, Trust>, Vec<Diagnostic>) {
    let results: Vec<(Trust, Vec<Diagnostic>)> = repo.plugins.par_iter().map(|p| plugin(p, inputs)).collect();
    let mut out = BTreeMap::new();
    let mut diags = Vec::new();
    for (t, d) in results {
        diags.extend(d);
        out.entry(t.name.clone()).or_insert(t);
    }
    (out, diags)
}

/// The trust of the first plugin named `name` (what [`verify`] gives it), computed alone: the
/// policy step needs only the plugins a change touches.
pub fn trust_of(repo: &Repo, name: &str, inputs: &Inputs<'_>) -> Option<Trust> {
    let p = repo.plugins.iter().find(|p| p.name() == name)?;
    Some(plugin(p, inputs).0)
}

/// An artifact the checks are about, with what vouches for it: a plugin's current version,
/// or the new version a rollout puts in its canaries (`toVersion`, whose artifact and
/// signature the rollout carries, under the plugin's publisher).
struct Subject<'a> {
    /// `plugin` or `rollout`, for messages.
    what: &'static str,
    name: &'a str,
    origin: &'a Origin,
    publisher: &'a str,
    artifact: &'a Artifact,
    signature: Option<&'a str>,
}

impl Subject<'_> {
    fn at(&self, code: Code, pointer: &str, message: String) -> Diagnostic {
        Diagnostic::at_node(code, &self.origin.file, self.origin.doc, pointer, message)
    }

    /// `plugin `x``, `rollout `y`` — what messages start with.
    fn label(&self) -> String {
        format!("{} {}", self.what, quote(self.name))
    }
}

/// Integrity, signature and trust of every rollout's new version, by rollout name, plus
/// their diagnostics. A rollout without an artifact (R321) or whose plugin is unknown has no
/// trust: policies then see it untrusted and unsigned.
pub fn verify_rollouts(repo: &Repo, inputs: &Inputs<'_>) -> (BTreeMap<String, Trust>, Vec<Diagnostic>) {
    let mut plugins: HashMap<&str, &PluginSpec> = HashMap::new();
    for p in &repo.plugins {
        plugins.entry(p.name()).or_insert(&p.spec);
    }
    let results: Vec<((String, Trust), Vec<Diagnostic>)> = repo
        .rollouts
        .par_iter()
        .filter_map(|r| rollout(r, plugins.get(r.spec.plugin.as_str())?, inputs))
        .collect();
    let mut out = BTreeMap::new();
    let mut diags = Vec::new();
    for ((name, t), d) in results {
        diags.extend(d);
        out.entry(name).or_insert(t);
    }
    (out, diags)
}

/// The trust of the new version rollout `r` puts in its canaries, with `plugin`'s trust
/// facts (advisories, maintainers, quality, release date: the rollout declares none of its
/// own) and the rollout's own artifact and signature, keyed by the rollout's name; `None`
/// without an artifact.
pub fn rollout(
    r: &Object<RolloutSpec>,
    plugin: &PluginSpec,
    inputs: &Inputs<'_>,
) -> Option<((String, Trust), Vec<Diagnostic>)> {
    let artifact = r.spec.artifact.as_ref()?;
    let subject = Subject {
        what: "rollout",
        name: r.name(),
        origin: &r.origin,
        publisher: &plugin.publisher,
        artifact,
        signature: r.spec.signature.as_deref(),
    };
    let (trust, diags) = artifact_trust(&subject, &r.spec.plugin, &r.spec.to_version, plugin, inputs);
    Some(((r.name().to_owned(), trust), diags))
}

fn plugin(p: &Object<PluginSpec>, inputs: &Inputs<'_>) -> (Trust, Vec<Diagnostic>) {
    let spec = &p.spec;
    let subject = Subject {
        what: "plugin",
        name: p.name(),
        origin: &p.origin,
        publisher: &spec.publisher,
        artifact: &spec.artifact,
        signature: spec.signature.as_deref(),
    };
    let (trust, mut diags) = artifact_trust(&subject, p.name(), &spec.version, spec, inputs);
    if let Some(day) = spec.last_release.as_deref().and_then(trust::parse_day)
        && inputs.as_of.is_some_and(|now| day > now)
    {
        diags.push(
            subject
                .at(
                    Code::ReleaseInFuture,
                    "/spec/lastRelease",
                    format!(
                        "{}: `lastRelease` is after the commit that declares it; it earns no freshness",
                        subject.label()
                    ),
                )
                .with_hint("write the date the release was published"),
        );
    }
    (trust, diags)
}

/// Integrity, signature and trust of one artifact of plugin `plugin` at `version`, scored
/// with `facts`' trust facts.
fn artifact_trust(
    s: &Subject<'_>,
    plugin: &str,
    version: &str,
    facts: &PluginSpec,
    inputs: &Inputs<'_>,
) -> (Trust, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let label = s.label();
    let parsed = Integrity::parse(&s.artifact.integrity);
    let mut integrity = match &parsed {
        Ok(_) => "declared",
        Err(e) => {
            diags.push(
                s.at(Code::IntegrityInvalid, "/spec/artifact/integrity", format!("{label}: {e}"))
                    .with_hint("write `sha256-`, `sha384-` or `sha512-` and the base64 digest, as `npm view <package> dist.integrity` prints it"),
            );
            "invalid"
        }
    };
    if let (Ok(sri), Some(path)) = (&parsed, &s.artifact.path) {
        match inputs.artifacts.get(path) {
            Some(Ok(bytes)) if digest_matches(sri, bytes) => integrity = "verified",
            Some(Ok(bytes)) => {
                integrity = "invalid";
                diags.push(
                    s.at(
                        Code::IntegrityMismatch,
                        "/spec/artifact/integrity",
                        format!(
                            "{label}: `{path}` does not have the declared digest (its {} is {})",
                            sri.algorithm(),
                            Integrity::of(sri.algorithm(), bytes)
                        ),
                    )
                    .with_hint("the artifact or its digest was changed: rebuild the artifact, or re-check where the new digest came from before updating it"),
                );
            }
            // (a path refused as unsafe, R317, is not read)
            None => {}
            Some(Err(why)) => {
                integrity = "invalid";
                diags.push(
                    s.at(
                        Code::ArtifactMissing,
                        "/spec/artifact/path",
                        format!("{label}: artifact `{path}` could not be read: {why}"),
                    )
                    .with_hint("commit the artifact at that path, or remove `artifact.path`"),
                );
            }
        }
    }
    let (signature, signed_by) = match s.signature {
        None => ("unsigned", None),
        Some(sig) => match signature(s, sig, inputs.keys, &mut diags) {
            Some(key) if integrity != "invalid" => ("verified", Some(key)),
            _ => ("invalid", None),
        },
    };
    let verified = signed_by.is_some();
    let factors = score(facts, verified, inputs.as_of);
    let trust = Trust {
        name: plugin.to_owned(),
        version: version.to_owned(),
        publisher: s.publisher.to_owned(),
        integrity,
        signature,
        signed_by,
        signature_verified: verified,
        trust_score: factors.total(),
        factors,
    };
    (trust, diags)
}

/// Check a signature against the keys allowed for the subject's publisher; the key's name
/// when it verifies.
fn signature(s: &Subject<'_>, text: &str, keys: &[Key], diags: &mut Vec<Diagnostic>) -> Option<String> {
    let label = s.label();
    let sig = match minisign_verify::Signature::decode(text.trim_start()) {
        Ok(sig) => sig,
        Err(_) => {
            diags.push(
                s.at(
                    Code::SignatureMalformed,
                    "/spec/signature",
                    format!("{label}: the signature is not a minisign signature (malformed or cut short)"),
                )
                .with_hint(
                    "paste the whole `.minisig` file: four lines, from `untrusted comment:` to the global signature",
                ),
            );
            return None;
        }
    };
    let message = s.artifact.integrity.as_bytes();
    for key in keys {
        match key.public.verify(message, &sig, false) {
            Err(minisign_verify::Error::UnexpectedKeyId) => continue,
            Ok(()) if key.publishers.iter().any(|p| p == s.publisher) => return Some(key.name.clone()),
            Ok(()) => {
                diags.push(
                    s.at(
                        Code::SignatureWrongPublisher,
                        "/spec/signature",
                        format!(
                            "{label}: signed by key {} ({}), which may not sign for publisher {}",
                            quote(&key.name),
                            key.file,
                            quote(s.publisher)
                        ),
                    )
                    .with_hint(format!(
                        "have a key of `{}` sign it, or — if this key really belongs to that publisher — add it to the key's `publishers`",
                        s.publisher
                    )),
                );
                return None;
            }
            Err(_) => {
                diags.push(
                    s.at(
                        Code::SignatureInvalid,
                        "/spec/signature",
                        format!(
                            "{label}: the signature by key {} does not match `artifact.integrity`",
                            quote(&key.name)
                        ),
                    )
                    .with_hint("the digest or the signature was changed after signing: sign the exact integrity string again (`printf %s \"$INTEGRITY\" | minisign -S -m -`)"),
                );
                return None;
            }
        }
    }
    diags.push(
        s.at(
            Code::SignatureUnknownKey,
            "/spec/signature",
            format!("{label}: signed by a key that is not in `keys/`"),
        )
        .with_hint(
            "add the publisher's public key to `keys/` (a change platform must approve), or remove the signature",
        ),
    );
    None
}
