//! Targets (IO): where a compiled revision takes effect, behind one small trait. Each target
//! records the last source commit it applied **in itself** (dir: the state file beside the
//! output; branch: the deploy branch tip's `Rampart-Source:` trailer), so a new process with
//! no state of its own resumes exactly, and each apply is a compare-and-swap against that
//! record (dir: under a lock; branch: the push), so two processes never apply one commit twice.
//!
//! What a target writes is computed here, once for every target: the whole compiled tree on a
//! first apply or a change that reaches every tenant ([`Rendered::Full`], streamed), else only
//! the files of the tenants the change can affect ([`Rendered::Files`]: the plan's selection,
//! both sides compiled for those tenants only), so a one-tenant change costs one tenant.

pub mod branch;
pub mod dir;
pub mod inventory;
pub mod kube;
pub mod notes;
pub mod tree;

use crate::compile::{self, Manifest};
use crate::diagnostic::Diagnostic;
use crate::pipeline::Validated;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The listing file every target holds at its root, naming every object file (so Argo CD,
/// Flux and `kubectl kustomize` take the tree as is).
pub const LISTING: &str = "kustomization.yaml";

/// What a target says it holds, read from the target itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The last source commit applied (`None`: never applied, or unknown).
    pub commit: Option<String>,
    /// It holds objects but records no commit (or a record that is not rampart's): an
    /// unknown baseline, from which nothing can be authorised.
    pub unknown: bool,
    /// The target's own id of what it holds, when it has one (branch: the tip's tree), so a
    /// record can be checked against rampart's notes.
    #[serde(skip)]
    pub rendered: Option<String>,
}

/// The decision recorded about one change of an applied commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRecord {
    pub action: String,
    pub subject: String,
    pub name: String,
    pub allowed: bool,
    /// The policies that decided (the determining ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// Why a source commit was applied: recorded with the apply (deploy-branch trailers, the
/// note on the source commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The source commit applied.
    pub source: String,
    /// The commit the change was authorised from (what the target held), if any.
    pub from: Option<String>,
    /// `allowed` (every commit since `from` was authorised), `first-apply` (the target held
    /// nothing), `history-rewritten` (the branch no longer contains `from`: the change from
    /// it was authorised as one), `baseline` (authorised from the operator's `--baseline`).
    pub decision: String,
    /// The author of the source commit's change (the pull request's, or the commit's).
    pub author: Option<String>,
    /// Who approved it (reviews on the pull request's head, or `Approved-by:` trailers).
    pub approvers: Vec<String>,
    /// The merged pull request that brought the commit in, when GitHub is configured.
    pub pull_request: Option<u64>,
    /// Every source commit authorised by this apply, oldest first (the last is `source`).
    pub commits: Vec<String>,
    /// When it was applied (RFC 3339, UTC).
    pub time: String,
}

/// A compiled revision, ready for a target.
pub struct Revision<'a> {
    /// The revision to apply (valid).
    pub head: &'a Validated,
    /// What the target holds now, when that is known and compiled with the same options: the
    /// target then gets only the files of the affected tenants.
    pub base: Option<&'a Validated>,
    /// The tenants the change can affect (`None`: every tenant).
    pub affected: Option<&'a BTreeSet<String>>,
    pub opts: &'a compile::Options,
}

/// What a target is to write.
pub enum Rendered {
    /// The whole tree (compiled while it is written: see [`stream`]).
    Full,
    /// Only these files changed: new content by path (the listing included when it changes),
    /// and paths to remove.
    Files {
        upserts: BTreeMap<String, String>,
        removes: BTreeSet<String>,
        /// Object paths that are new (to add to the listing).
        added: BTreeSet<String>,
    },
}

/// How an apply ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Files written (added or changed), the listing not counted.
    pub written: usize,
    /// Files removed.
    pub removed: usize,
    /// Nothing had to change.
    pub noop: bool,
    /// What the target holds now, by its own id (branch: the deploy commit's tree id).
    pub rendered: Option<String>,
}

/// The result of [`Target::apply`].
pub enum Apply {
    Done(Outcome),
    /// Compiling found errors: nothing was written.
    Invalid(Vec<Diagnostic>),
    /// The target's record moved since it was read (another process applied): nothing was
    /// written; read it again and decide anew.
    Moved {
        now: Applied,
    },
}

/// A place compiled revisions are applied to.
pub trait Target: Send {
    /// How logs, metrics and the status API name it (`dir:/srv/out`, `branch:rendered`).
    fn name(&self) -> String;
    /// The last source commit applied, read from the target itself.
    fn applied(&mut self) -> anyhow::Result<Applied>;
    /// Apply `rev` with its record, if the target still holds `expected` (compare-and-swap);
    /// idempotent: applying what the target holds writes nothing.
    fn apply(&mut self, expected: &Applied, rev: &Revision<'_>, record: &Record) -> anyhow::Result<Apply>;
    /// Whether the target holds exactly what `rev` compiles to (`None`: it cannot tell, or
    /// its record needs no check — a local state file).
    fn holds(&mut self, _rev: &Revision<'_>) -> anyhow::Result<Option<bool>> {
        Ok(None)
    }
    /// The objects that differ in the target from what `rev` (the applied revision) compiles
    /// to, re-applied when `heal` (`None`: the target cannot drift — rampart alone writes it).
    fn drift(&mut self, _rev: &Revision<'_>, _heal: bool) -> anyhow::Result<Option<Drift>> {
        Ok(None)
    }
}

/// What a drift check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// The drifted objects (`Deployment.apps payments/portal`), at most 100 named.
    pub objects: Vec<String>,
    /// How many drifted.
    pub count: usize,
    /// How many were re-applied.
    pub healed: usize,
    /// Objects that could not be checked or healed, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// What `rev` changes in a target that holds `rev.base`: only the affected tenants' files
/// (both sides compiled for those tenants only), or [`Rendered::Full`] when the base is unknown
/// or every tenant is affected. `Err` with the problems when the head does not compile.
pub fn render(rev: &Revision<'_>) -> Result<Rendered, Vec<Diagnostic>> {
    let (Some(base), Some(affected)) = (rev.base, rev.affected) else {
        return Ok(Rendered::Full);
    };
    // tenant by tenant: only the tenants in flight are held compiled, and each is reduced to
    // the files that differ before the next
    let streamed = crate::plan::stream::each_tenant(Some(&base.repo), &rev.head.repo, Some(affected), rev.opts, |t| {
        files_delta(&t.old, &t.new)
    });
    let mut diags = streamed.head_diagnostics;
    if diags.iter().any(Diagnostic::is_error) {
        rev.head.resolve(&mut diags);
        return Err(diags);
    }
    let mut all = Rendered::Files {
        upserts: BTreeMap::new(),
        removes: BTreeSet::new(),
        added: BTreeSet::new(),
    };
    if let Rendered::Files {
        upserts,
        removes,
        added,
    } = &mut all
    {
        for part in streamed.value {
            if let Rendered::Files {
                upserts: u,
                removes: r,
                added: a,
            } = part
            {
                upserts.extend(u);
                removes.extend(r);
                added.extend(a);
            }
        }
    }
    Ok(all)
}

/// The files that differ between two compiled sides (of the same tenants).
pub fn files_delta(old: &[Manifest], new: &[Manifest]) -> Rendered {
    let old: BTreeMap<String, String> = old.iter().map(|m| (m.path(), m.yaml())).collect();
    let mut upserts = BTreeMap::new();
    let mut added = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for m in new {
        let path = m.path();
        let yaml = m.yaml();
        match old.get(&path) {
            Some(o) if *o == yaml => {}
            Some(_) => {
                upserts.insert(path.clone(), yaml);
            }
            None => {
                added.insert(path.clone());
                upserts.insert(path.clone(), yaml);
            }
        }
        seen.insert(path);
    }
    let removes = old.into_keys().filter(|p| !seen.contains(p)).collect();
    Rendered::Files {
        upserts,
        removes,
        added,
    }
}

/// The object paths a listing names: only a `kustomization.yaml` exactly as rampart writes
/// it (its header, then `- PATH` lines naming objects rampart writes) is read; anything else —
/// a line added by hand, a URL, another layout — is `Err`, and the whole tree is written again
/// rather than carrying it along. Read line by line: the listing of a large repo is tens of MB.
pub fn listing_paths(text: &str) -> anyhow::Result<BTreeSet<String>> {
    static HEADER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let header = HEADER.get_or_init(|| {
        let one = compile::kustomization(&["a/b.yaml".to_owned()]);
        one.strip_suffix("- a/b.yaml\n").unwrap_or(&one).to_owned()
    });
    let body = text
        .strip_prefix(header.as_str())
        .ok_or_else(|| anyhow::anyhow!("not rampart's listing: its header differs"))?;
    body.lines()
        .map(|l| match l.strip_prefix("- ") {
            Some(p) if is_object_path(p) => Ok(p.to_owned()),
            _ => Err(anyhow::anyhow!(
                "not rampart's listing: `{}` is not an object rampart wrote",
                crate::diagnostic::visible(l, &[])
            )),
        })
        .collect()
}

/// Whether `p` has the shape of a compiled object's path (see `Manifest::path`).
fn is_object_path(p: &str) -> bool {
    let mut parts = p.split('/');
    let (Some(dir), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let label = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (dir == "_cluster" || label(dir)) && file.strip_suffix(".yaml").is_some_and(label)
}

/// The listing after a [`Rendered::Files`] change: the old one without the removed paths,
/// with the added ones.
pub fn updated_listing(old: &BTreeSet<String>, removes: &BTreeSet<String>, added: &BTreeSet<String>) -> String {
    let paths: Vec<String> = old
        .iter()
        .filter(|p| !removes.contains(*p))
        .chain(added.iter())
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    compile::kustomization(&paths)
}

/// Compile the whole of `rev.head`, handing each object's path and YAML to `put` as it is
/// built (on every core, in no order); then the listing. Returns the object count, or the
/// problems when compiling found an error (some objects may have been put already).
pub fn stream(
    rev: &Revision<'_>,
    put: &(dyn Fn(&str, &str) -> anyhow::Result<()> + Sync),
) -> anyhow::Result<Result<usize, Vec<Diagnostic>>> {
    let failure: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    let (paths, mut diags) = compile::compile_each(&rev.head.repo, rev.opts, &|_| true, &|m| {
        if let Err(e) = put(&m.path(), &m.yaml()) {
            failure.lock().expect("not poisoned").get_or_insert(e);
        }
    });
    if let Some(e) = failure.into_inner().expect("not poisoned") {
        return Err(e);
    }
    if diags.iter().any(Diagnostic::is_error) {
        rev.head.resolve(&mut diags);
        return Ok(Err(diags));
    }
    put(LISTING, &compile::kustomization(&paths))?;
    Ok(Ok(paths.len()))
}

/// A commit id as rampart records it: 40 hex digits (a ref name would move with its branch
/// and authorise nothing).
pub fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The time now, RFC 3339 in UTC, to the second.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 in UTC (`2026-11-29T03:11:32Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_921_892), "2026-11-29T03:11:32Z");
    }

    #[test]
    fn only_rampart_s_own_listing_is_read() {
        let text = compile::kustomization(&["a/x.yaml".to_owned()]);
        assert!(listing_paths(&text).is_ok());
        assert!(listing_paths(&text.replace("- a/x.yaml", "- https://evil.example/x.yaml")).is_err());
        assert!(listing_paths(&format!("{text}- ../etc/passwd.yaml\n")).is_err());
        assert!(listing_paths("resources: [1, 2]\n").is_err());
    }

    #[test]
    fn listing_round_trips_and_updates() {
        let text = compile::kustomization(&["a/x.yaml".to_owned(), "b/y.yaml".to_owned()]);
        let old = listing_paths(&text).unwrap();
        assert_eq!(old.len(), 2);
        let removes = BTreeSet::from(["a/x.yaml".to_owned()]);
        let added = BTreeSet::from(["c/z.yaml".to_owned()]);
        let new = updated_listing(&old, &removes, &added);
        assert_eq!(
            listing_paths(&new).unwrap(),
            BTreeSet::from(["b/y.yaml".to_owned(), "c/z.yaml".to_owned()])
        );
    }
}
