//! Reading a branch's history commit by commit, for `audit`: each commit's revision is the
//! one before it with only the files the commit changed parsed again. Trees are compared by
//! id, so a directory the commit did not touch costs nothing; a file's outcome is kept by
//! path and blob id (and taken from the parse cache when it knows the blob), so a file that
//! comes back costs nothing either.
//!
//! What a replayed revision is: every spec file parsed and checked against its schema, the
//! settings, keys, artifacts and the repo's Cedar policies read — exactly what a policy
//! decision reads — but **not** the checks across objects (names, references, quotas,
//! signatures): those ran when the commit was checked and applied, and they are what makes
//! a full validation of a 10k-tenant repo take 100 ms instead of 1. A replayed revision is
//! valid when none of its files, settings, keys or policies has an error; trust is computed
//! when a decision asks for it ([`Validated::trust_of`]).

use super::validate::{self, Validated};
use crate::cache::ParseCache;
use crate::diagnostic::Diagnostic;
use crate::load::{self, LoadedFile};
use crate::source::{self, Source, SourceError};
use crate::validate::FileOutcome;
use git2::{Oid, Repository};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One path that differs between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub path: String,
    /// The blob (and its file mode) before and after; `None` when absent.
    pub old: Option<(Oid, i32)>,
    pub new: Option<(Oid, i32)>,
}

/// Every file path that differs between the trees `old` and `new` (`None`: empty), in no
/// particular order. Subtrees with the same id are skipped without being read; the walk is
/// iterative (a tree's depth is the committer's to choose).
pub fn changed_paths(repo: &Repository, old: Option<Oid>, new: Option<Oid>) -> Result<Vec<Changed>, git2::Error> {
    const TREE: i32 = 0o040000;
    let mut out = Vec::new();
    let mut stack: Vec<(String, Option<Oid>, Option<Oid>)> = vec![(String::new(), old, new)];
    let entries = |id: Option<Oid>| -> Result<BTreeMap<Vec<u8>, (Oid, i32)>, git2::Error> {
        let Some(id) = id else {
            return Ok(BTreeMap::new());
        };
        let tree = repo.find_tree(id)?;
        Ok(tree
            .iter()
            .map(|e| (e.name_bytes().to_vec(), (e.id(), e.filemode())))
            .collect())
    };
    while let Some((prefix, a, b)) = stack.pop() {
        if a == b {
            continue;
        }
        let (ea, eb) = (entries(a)?, entries(b)?);
        let names: std::collections::BTreeSet<&Vec<u8>> = ea.keys().chain(eb.keys()).collect();
        for name in names {
            let (x, y) = (ea.get(name).copied(), eb.get(name).copied());
            if x == y {
                continue;
            }
            let path = format!("{prefix}{}", String::from_utf8_lossy(name));
            let tree_of = |e: Option<(Oid, i32)>| e.filter(|e| e.1 == TREE).map(|e| e.0);
            let blob_of = |e: Option<(Oid, i32)>| e.filter(|e| e.1 != TREE);
            let (ta, tb) = (tree_of(x), tree_of(y));
            if ta.is_some() || tb.is_some() {
                stack.push((format!("{path}/"), ta, tb));
            }
            let (ba, bb) = (blob_of(x), blob_of(y));
            if ba.is_some() || bb.is_some() {
                out.push(Changed { path, old: ba, new: bb });
            }
        }
    }
    Ok(out)
}

/// The trusted keys, the artifacts read and their problems.
type Keys = (
    Vec<crate::supply::Key>,
    HashMap<String, Result<Vec<u8>, String>>,
    Vec<Diagnostic>,
);

/// What one replayed revision holds, kept to build the next.
struct State {
    tree: Oid,
    settings: crate::config::Settings,
    settings_diags: Vec<Diagnostic>,
    /// Every spec file's outcome (its load problems included), by path, with its blob id.
    files: BTreeMap<String, (Oid, Arc<FileOutcome>)>,
    keys: Arc<Keys>,
    engine: Arc<(Option<crate::policy::Engine>, Vec<Diagnostic>)>,
    /// Every problem reading the policies found (the engine's and the team check's).
    policy_diags: Vec<Diagnostic>,
    policy_files: Vec<LoadedFile>,
}

/// Replays the commits of one repository, each from the one before it.
pub struct Replay {
    git_dir: PathBuf,
    subdir: String,
    cache: Option<ParseCache>,
    state: Option<State>,
    /// Outcomes by (path, blob), so a file that returns is not parsed again (bounded).
    seen: HashMap<(String, Oid), Arc<FileOutcome>>,
    /// How many revisions were read whole, and how many files parsed (for the benchmark).
    pub full_reads: usize,
    pub parsed: usize,
}

/// At most this many outcomes are kept by blob; then the memo starts again.
const SEEN_MAX: usize = 50_000;

impl Replay {
    /// Replay commits of the repository at `git_dir` (its config repo in `subdir`).
    pub fn new(git_dir: &Path, subdir: &str, cache: Option<ParseCache>) -> Replay {
        Replay {
            git_dir: git_dir.to_owned(),
            subdir: subdir.to_owned(),
            cache,
            state: None,
            seen: HashMap::new(),
            full_reads: 0,
            parsed: 0,
        }
    }

    /// The revision of `commit`: from the last one replayed, re-reading only what differs
    /// (everything, for the first, or when `rampart.yaml` — the limits — changed, or an
    /// entry is not a plain file).
    pub fn at(&mut self, commit: Oid) -> Result<(Source, Validated), SourceError> {
        let source = Source::commit_in(&self.git_dir, &commit.to_string(), &self.subdir)?;
        let Source::Git { repo, tree, .. } = &source else {
            unreachable!("commit_in reads a commit")
        };
        let tree = *tree;
        let read_err = |e: git2::Error| SourceError::GitRead {
            rev: commit.to_string(),
            message: e.message().to_owned(),
        };
        let changed = match &self.state {
            Some(s) => Some(changed_paths(repo, Some(s.tree), Some(tree)).map_err(read_err)?),
            None => None,
        };
        let whole = match &changed {
            None => true,
            Some(c) => c.iter().any(|c| {
                c.path == crate::config::SETTINGS_FILE
                    || c.path.contains('\u{FFFD}')
                    || c.new.is_some_and(|(_, mode)| mode != 0o100644 && mode != 0o100755)
            }),
        };
        if whole {
            self.read_whole(&source, tree)?;
        } else if let Some(changed) = changed {
            self.read_changes(&source, tree, &changed)?;
        }
        let v = self.validated(&source);
        Ok((source, v))
    }

    /// Read the whole revision.
    fn read_whole(&mut self, source: &Source, tree: Oid) -> Result<(), SourceError> {
        self.full_reads += 1;
        let (settings_file, settings, settings_diags) = validate::read_settings(source)?;
        let limits = settings.limits;
        let table = self.cache.as_ref().map(|c| c.table(&limits));
        let mut diags = Vec::new();
        let specs = validate::read_specs(source, &limits, table.as_deref(), settings_file.as_ref(), &mut diags)?;
        let blobs = specs.blobs.clone();
        let noop = |_: u64, _: u64| {};
        let (loaded, _) = validate::parse_specs(
            source,
            specs.files,
            &specs.known,
            &specs.ids,
            table.as_deref(),
            &limits,
            &noop,
        )?;
        self.parsed += specs.ids.len();
        let mut files = BTreeMap::new();
        for (f, d, mut o) in loaded {
            o.diagnostics.extend(d);
            let id = blobs.get(&f.path).copied().unwrap_or(Oid::ZERO_SHA1);
            let o = Arc::new(o);
            self.remember(&f.path, id, &o);
            files.insert(f.path, (id, o));
        }
        // walk problems (refused entries, limits) belong to no file's outcome: kept with the settings
        let mut settings_diags = settings_diags;
        settings_diags.extend(diags);
        let mut state = State {
            tree,
            settings,
            settings_diags,
            files,
            keys: Arc::new((Vec::new(), HashMap::new(), Vec::new())),
            engine: Arc::new((None, Vec::new())),
            policy_diags: Vec::new(),
            policy_files: Vec::new(),
        };
        Self::read_keys(source, &mut state)?;
        Self::read_policies(source, &mut state)?;
        if let Some(c) = &self.cache {
            c.flush();
        }
        self.state = Some(state);
        Ok(())
    }

    /// Apply `changed` to the last revision.
    fn read_changes(&mut self, source: &Source, tree: Oid, changed: &[Changed]) -> Result<(), SourceError> {
        let mut state = self.state.take().expect("a revision was read before");
        state.tree = tree;
        let limits = state.settings.limits;
        let (mut keys, mut policies) = (false, false);
        let mut unread = Vec::new();
        for c in changed {
            let top = c.path.split('/').next().unwrap_or("");
            if source::KIND_DIRS.contains(&top) && c.path.contains('/') {
                if !source::is_yaml(c.path.rsplit('/').next().unwrap_or("")) {
                    continue;
                }
                // a plugin's or rollout's artifact path may name any file: keys and
                // artifacts are read again when those change
                keys |= top == "plugins" || top == "rollouts";
                match c.new {
                    None => {
                        state.files.remove(&c.path);
                    }
                    Some((id, _)) => match self.known(&c.path, id) {
                        Some(o) => {
                            state.files.insert(c.path.clone(), (id, o));
                        }
                        None => unread.push((c.path.clone(), id)),
                    },
                }
            } else if top == source::POLICY_DIR {
                policies = true;
            } else {
                // keys/, and any other file (a plugin's artifact)
                keys = true;
            }
            // a team's members are named by the policies' team check
            policies |= top == "teams";
        }
        for f in source.read_known(unread.clone())? {
            let id = unread
                .iter()
                .find(|(p, _)| *p == f.path)
                .map(|(_, id)| *id)
                .unwrap_or(Oid::ZERO_SHA1);
            let (mut file, d) = load::load_file(f, &limits);
            let mut o = crate::validate::file(&mut file);
            o.diagnostics.extend(d);
            self.parsed += 1;
            let o = Arc::new(o);
            self.remember(&file.path, id, &o);
            state.files.insert(file.path, (id, o));
        }
        if keys {
            Self::read_keys(source, &mut state)?;
        }
        if policies {
            Self::read_policies(source, &mut state)?;
        }
        self.state = Some(state);
        Ok(())
    }

    fn known(&self, path: &str, id: Oid) -> Option<Arc<FileOutcome>> {
        if let Some(o) = self.seen.get(&(path.to_owned(), id)) {
            return Some(o.clone());
        }
        let state = self.state.as_ref()?;
        let table = self.cache.as_ref()?.table(&state.settings.limits);
        table.outcome(path, id).map(|(o, _)| Arc::new(o))
    }

    fn remember(&mut self, path: &str, id: Oid, o: &Arc<FileOutcome>) {
        if self.seen.len() >= SEEN_MAX {
            self.seen.clear();
        }
        self.seen.insert((path.to_owned(), id), o.clone());
    }

    fn read_keys(source: &Source, state: &mut State) -> Result<(), SourceError> {
        let repo = crate::validate::assemble_unchecked(Vec::new(), state.settings.clone());
        let mut repo = repo;
        for (_, o) in state.files.values() {
            for (p, _) in o.parsed() {
                match p {
                    crate::validate::Parsed::Plugin(x) => repo.plugins.push(x.clone()),
                    crate::validate::Parsed::Rollout(x) => repo.rollouts.push(x.clone()),
                    _ => {}
                }
            }
        }
        let mut files = Vec::new();
        let mut diags = Vec::new();
        let chain = validate::check_supply_chain(
            source,
            &repo,
            &state.settings.limits,
            true,
            None,
            &mut files,
            &mut diags,
        )?;
        state.keys = Arc::new((chain.keys, chain.artifacts, diags));
        Ok(())
    }

    fn read_policies(source: &Source, state: &mut State) -> Result<(), SourceError> {
        let mut teams = crate::spec::Repo::default();
        for (_, o) in state.files.values() {
            for (p, _) in o.parsed() {
                if let crate::validate::Parsed::Team(t) = p {
                    teams.teams.push(t.clone());
                }
            }
        }
        let mut files = Vec::new();
        let mut diags = Vec::new();
        let engine = validate::load_policies(source, &teams, &state.settings.limits, &mut files, &mut diags)?;
        state.engine = Arc::new(engine);
        state.policy_diags = diags;
        state.policy_files = files;
        Ok(())
    }

    /// The replayed revision as a [`Validated`] (see the module's note on what it checked).
    fn validated(&self, source: &Source) -> Validated {
        let state = self.state.as_ref().expect("a revision was read");
        let outcomes: Vec<FileOutcome> = state.files.values().map(|(_, o)| (**o).clone()).collect();
        let repo = crate::validate::assemble_unchecked(outcomes, state.settings.clone());
        let mut diagnostics: Vec<Diagnostic> = state.settings_diags.clone();
        for (_, o) in state.files.values() {
            diagnostics.extend(o.diagnostics.iter().filter(|d| d.is_error()).cloned());
        }
        diagnostics.extend(state.keys.2.iter().filter(|d| d.is_error()).cloned());
        diagnostics.extend(state.policy_diags.iter().filter(|d| d.is_error()).cloned());
        Validated {
            repo,
            files: state.policy_files.clone(),
            diagnostics,
            commit: source.commit(),
            engine: state.engine.clone(),
            timings: Default::default(),
            unread: Default::default(),
            keys: state.keys.0.clone(),
            artifacts: state.keys.1.clone(),
            as_of: source.as_of_day(),
            trust: None,
            blobs: state.files.iter().map(|(p, (id, _))| (p.clone(), *id)).collect(),
        }
    }
}
