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
use crate::spec::{Kind, Repo};
use crate::validate::{FileOutcome, Parsed};
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
    Trees::default().changed(repo, old, new)
}

/// Raw tree objects recently read, by id: replaying a history reads each tree as the new
/// side of one commit and the old side of the next.
#[derive(Default)]
pub struct Trees {
    raw: HashMap<Oid, Arc<Vec<u8>>>,
}

/// A tree entry in the raw object: (name, id, mode).
type Entry<'a> = (&'a [u8], Oid, i32);

const TREE_MODE: i32 = 0o040000;

/// The entries of a raw tree object, in git's order.
fn entries(raw: &[u8]) -> Vec<Entry<'_>> {
    let mut out = Vec::with_capacity(raw.len() / 40);
    let mut at = 0;
    while at < raw.len() {
        let Some(sp) = raw[at..].iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(nul) = raw[at + sp..].iter().position(|&b| b == 0) else {
            break;
        };
        let mut mode = 0i32;
        for &d in &raw[at..at + sp] {
            if !(b'0'..=b'7').contains(&d) || mode > 0o7777777 {
                mode = 0;
                break;
            }
            mode = mode * 8 + i32::from(d - b'0');
        }
        let name = &raw[at + sp + 1..at + sp + nul];
        let id_at = at + sp + nul + 1;
        let Some(id) = raw.get(id_at..id_at + 20).and_then(|b| Oid::from_bytes(b).ok()) else {
            break;
        };
        out.push((name, id, mode));
        at = id_at + 20;
    }
    out
}

/// Git's tree order: names compared as bytes, a tree's as if it ended in `/`.
fn git_order(a: &Entry<'_>, b: &Entry<'_>) -> std::cmp::Ordering {
    let end = |e: &Entry<'_>, i: usize| -> u8 {
        match e.0.get(i) {
            Some(c) => *c,
            None if e.2 == TREE_MODE => b'/',
            None => 0,
        }
    };
    let n = a.0.len().min(b.0.len());
    // (past the shorter name git compares one more byte: a name holds no `/` and no NUL,
    // so equal means the same name and kind)
    a.0[..n].cmp(&b.0[..n]).then_with(|| end(a, n).cmp(&end(b, n)))
}

impl Trees {
    fn raw(&mut self, repo: &Repository, id: Option<Oid>) -> Result<Arc<Vec<u8>>, git2::Error> {
        let Some(id) = id else {
            return Ok(Arc::new(Vec::new()));
        };
        if let Some(r) = self.raw.get(&id) {
            return Ok(r.clone());
        }
        let odb = repo.odb()?;
        let obj = odb.read(id)?;
        if obj.kind() != git2::ObjectType::Tree {
            return Err(git2::Error::from_str(&format!("{id} is not a tree")));
        }
        let r = Arc::new(obj.data().to_vec());
        if self.raw.len() >= 64 {
            self.raw.clear();
        }
        self.raw.insert(id, r.clone());
        Ok(r)
    }

    /// [`changed_paths`], keeping the trees read.
    pub fn changed(
        &mut self,
        repo: &Repository,
        old: Option<Oid>,
        new: Option<Oid>,
    ) -> Result<Vec<Changed>, git2::Error> {
        let mut out = Vec::new();
        let mut stack: Vec<(String, Option<Oid>, Option<Oid>)> = vec![(String::new(), old, new)];
        while let Some((prefix, a, b)) = stack.pop() {
            if a == b {
                continue;
            }
            let (ra, rb) = (self.raw(repo, a)?, self.raw(repo, b)?);
            let (ea, eb) = (entries(&ra), entries(&rb));
            let (mut i, mut j) = (0, 0);
            while i < ea.len() || j < eb.len() {
                let order = match (ea.get(i), eb.get(j)) {
                    (Some(x), Some(y)) => full_order(x, y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                let (x, y) = match order {
                    std::cmp::Ordering::Less => {
                        i += 1;
                        (Some(ea[i - 1]), None)
                    }
                    std::cmp::Ordering::Greater => {
                        j += 1;
                        (None, Some(eb[j - 1]))
                    }
                    std::cmp::Ordering::Equal => {
                        i += 1;
                        j += 1;
                        (Some(ea[i - 1]), Some(eb[j - 1]))
                    }
                };
                if let (Some(x), Some(y)) = (x, y)
                    && x.1 == y.1
                    && x.2 == y.2
                {
                    continue;
                }
                let name = x.or(y).map(|e| e.0).unwrap_or_default();
                let path = format!("{prefix}{}", String::from_utf8_lossy(name));
                let tree = |e: Option<Entry<'_>>| e.filter(|e| e.2 == TREE_MODE).map(|e| e.1);
                let (ta, tb) = (tree(x), tree(y));
                if ta.is_some() || tb.is_some() {
                    stack.push((format!("{path}/"), ta, tb));
                } else {
                    out.push(Changed {
                        path,
                        old: x.map(|e| (e.1, e.2)),
                        new: y.map(|e| (e.1, e.2)),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Git's order, then the kind: a blob and a tree of the same name are different entries.
fn full_order(a: &Entry<'_>, b: &Entry<'_>) -> std::cmp::Ordering {
    git_order(a, b).then_with(|| (a.2 == TREE_MODE).cmp(&(b.2 == TREE_MODE)))
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
    /// The objects of every spec file, kept in the order a whole read gives them (by file,
    /// then document), and the settings.
    repo: Repo,
    settings_diags: Vec<Diagnostic>,
    /// Every spec file's outcome (its load problems included), by path, with its blob id.
    files: BTreeMap<String, (Oid, Arc<FileOutcome>)>,
    /// How many documents define each name (`repo.names_seen` holds those defined at all).
    defined: HashMap<(Kind, String), usize>,
    /// The errors of the files that have any, by path.
    errors: BTreeMap<String, Vec<Diagnostic>>,
    keys: Arc<Keys>,
    engine: Arc<(Option<crate::policy::Engine>, Vec<Diagnostic>)>,
    /// Every problem reading the policies found (the engine's and the team check's).
    policy_diags: Vec<Diagnostic>,
    policy_files: Vec<LoadedFile>,
}

impl State {
    /// Take `path`'s objects out of the repo, and its names (into `gone` when no other
    /// document defines them: see [`State::settle`]).
    fn remove(&mut self, path: &str, gone: &mut Vec<(Kind, String)>) {
        let Some((_, o)) = self.files.remove(path) else {
            return;
        };
        self.errors.remove(path);
        fn cut<S>(v: &mut Vec<crate::spec::Object<S>>, path: &str) {
            let from = v.partition_point(|o| o.origin.file.as_str() < path);
            let to = from + v[from..].iter().take_while(|o| o.origin.file == path).count();
            v.drain(from..to);
        }
        // (a file's documents are all of its directory's kind; a wrong one is `Invalid`)
        let (mut teams, mut tenants, mut plugins, mut rollouts) = (false, false, false, false);
        for (p, _) in o.parsed() {
            match p {
                Parsed::Team(_) => teams = true,
                Parsed::Tenant(_) => tenants = true,
                Parsed::Plugin(_) => plugins = true,
                Parsed::Rollout(_) => rollouts = true,
                Parsed::Invalid => {}
            }
        }
        if teams {
            cut(&mut self.repo.teams, path);
        }
        if tenants {
            cut(&mut self.repo.tenants, path);
        }
        if plugins {
            cut(&mut self.repo.plugins, path);
        }
        if rollouts {
            cut(&mut self.repo.rollouts, path);
        }
        for (_, def) in o.parsed() {
            let Some((kind, name, _)) = def else { continue };
            let key = (*kind, name.clone());
            let n = self.defined.get(&key).copied().unwrap_or(0);
            if n <= 1 {
                self.defined.remove(&key);
                gone.push(key);
            } else {
                self.defined.insert(key, n - 1);
            }
        }
    }

    /// Drop from `names_seen` the names of `gone` nothing defines any more (the set is
    /// copied only then, when another revision shares it).
    fn settle(&mut self, gone: Vec<(Kind, String)>) {
        let gone: Vec<(Kind, String)> = gone.into_iter().filter(|k| !self.defined.contains_key(k)).collect();
        if gone.is_empty() {
            return;
        }
        let names = Arc::make_mut(&mut self.repo.names_seen);
        for (kind, name) in gone {
            if let Some(set) = names.get_mut(&kind) {
                set.remove(&name);
            }
        }
    }

    fn settings(&self) -> &crate::config::Settings {
        &self.repo.settings
    }

    /// Put `path`'s objects and names into the repo.
    fn insert(&mut self, path: &str, id: Oid, o: Arc<FileOutcome>) {
        fn put<S>(v: &mut Vec<crate::spec::Object<S>>, path: &str, x: &crate::spec::Object<S>) {
            // after the file's documents already in (they come in document order)
            let at = v.partition_point(|o| o.origin.file.as_str() <= path);
            v.insert(at, x.clone());
        }
        for (p, def) in o.parsed() {
            if let Some((kind, name, _)) = def {
                let n = self.defined.entry((*kind, name.clone())).or_insert(0);
                *n += 1;
                if *n == 1 && !self.repo.names_seen.get(kind).is_some_and(|s| s.contains(name)) {
                    Arc::make_mut(&mut self.repo.names_seen)
                        .entry(*kind)
                        .or_default()
                        .insert(name.clone());
                }
            }
            match p {
                Parsed::Team(x) => put(&mut self.repo.teams, path, x),
                Parsed::Tenant(x) => put(&mut self.repo.tenants, path, x),
                Parsed::Plugin(x) => put(&mut self.repo.plugins, path, x),
                Parsed::Rollout(x) => put(&mut self.repo.rollouts, path, x),
                Parsed::Invalid => {}
            }
        }
        let errors: Vec<Diagnostic> = o.diagnostics.iter().filter(|d| d.is_error()).cloned().collect();
        if !errors.is_empty() {
            self.errors.insert(path.to_owned(), errors);
        }
        self.files.insert(path.to_owned(), (id, o));
    }
}

/// Replays the commits of one repository, each from the one before it.
pub struct Replay {
    git_dir: PathBuf,
    subdir: String,
    repo: Repository,
    cache: Option<ParseCache>,
    state: Option<State>,
    trees: Trees,
    /// Outcomes by (path, blob), so a file that returns is not parsed again (bounded).
    seen: HashMap<(String, Oid), Arc<FileOutcome>>,
    /// The paths the last [`Replay::at`] found changed (`None`: it read the revision whole).
    pub changed: Option<Vec<Changed>>,
    /// How many revisions were read whole, and how many files parsed.
    pub full_reads: usize,
    pub parsed: usize,
}

/// At most this many outcomes are kept by blob; then the memo starts again.
const SEEN_MAX: usize = 50_000;

impl Replay {
    /// Replay commits of the repository at `git_dir` (its config repo in `subdir`).
    pub fn new(git_dir: &Path, subdir: &str, cache: Option<ParseCache>) -> Result<Replay, SourceError> {
        let repo = Repository::open_bare(git_dir).map_err(|e| SourceError::GitOpen {
            path: git_dir.to_owned(),
            message: e.message().to_owned(),
        })?;
        Ok(Replay {
            git_dir: git_dir.to_owned(),
            subdir: subdir.to_owned(),
            repo,
            cache,
            state: None,
            trees: Trees::default(),
            seen: HashMap::new(),
            changed: None,
            full_reads: 0,
            parsed: 0,
        })
    }

    /// The revision of `commit`: from the last one replayed, re-reading only what differs
    /// (everything, for the first, or when `rampart.yaml` — the limits — changed, or an
    /// entry is not a plain file).
    pub fn at(&mut self, commit: Oid) -> Result<(Source, Validated), SourceError> {
        let source = Source::commit_in(&self.git_dir, &commit.to_string(), &self.subdir)?;
        let Source::Git { tree, .. } = &source else {
            unreachable!("commit_in reads a commit")
        };
        let tree = *tree;
        let read_err = |e: git2::Error| SourceError::GitRead {
            rev: commit.to_string(),
            message: e.message().to_owned(),
        };
        let changed = match &self.state {
            Some(s) => Some(
                self.trees
                    .changed(&self.repo, Some(s.tree), Some(tree))
                    .map_err(read_err)?,
            ),
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
            self.changed = None;
        } else if let Some(changed) = changed {
            self.read_changes(&source, tree, &changed)?;
            self.changed = Some(changed);
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
        let specs = validate::read_specs(
            source,
            &limits,
            table.as_deref(),
            settings_file.as_ref(),
            validate::Checks::All,
            &mut diags,
        )?;
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
        // walk problems (refused entries, limits) belong to no file's outcome: kept with the settings
        let mut settings_diags = settings_diags;
        settings_diags.extend(diags);
        let mut state = State {
            tree,
            repo: crate::validate::assemble_unchecked(Vec::new(), settings),
            settings_diags,
            files: BTreeMap::new(),
            defined: HashMap::new(),
            errors: BTreeMap::new(),
            keys: Arc::new((Vec::new(), HashMap::new(), Vec::new())),
            engine: Arc::new((None, Vec::new())),
            policy_diags: Vec::new(),
            policy_files: Vec::new(),
        };
        for (f, d, mut o) in loaded {
            o.diagnostics.extend(d);
            let id = blobs.get(&f.path).copied().unwrap_or(Oid::ZERO_SHA1);
            let o = Arc::new(o);
            self.remember(&f.path, id, &o);
            state.insert(&f.path, id, o);
        }
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
        let limits = state.settings().limits;
        let (mut keys, mut policies) = (false, false);
        let mut unread = Vec::new();
        let mut known = Vec::new();
        for c in changed {
            let top = c.path.split('/').next().unwrap_or("");
            if source::KIND_DIRS.contains(&top) && c.path.contains('/') {
                if !source::is_yaml(c.path.rsplit('/').next().unwrap_or("")) {
                    continue;
                }
                // a plugin's or rollout's artifact path may name any file: keys and
                // artifacts are read again when those change
                keys |= top == "plugins" || top == "rollouts";
                // a team's members are named by the policies' team check
                policies |= top == "teams";
                if let Some((id, _)) = c.new {
                    match self.known(&c.path, id, &limits) {
                        Some(o) => known.push((c.path.clone(), id, o)),
                        None => unread.push((c.path.clone(), id)),
                    }
                }
            } else if top == source::POLICY_DIR {
                policies = true;
            } else {
                // keys/, and any other file (a plugin's artifact)
                keys = true;
            }
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
            known.push((file.path, id, o));
        }
        // the old documents out, the new ones in; a name no longer defined leaves
        // `names_seen` only after (so an edited file that keeps its names does not copy it)
        let mut gone = Vec::new();
        for c in changed {
            state.remove(&c.path, &mut gone);
        }
        for (path, id, o) in known {
            state.insert(&path, id, o);
        }
        state.settle(gone);
        if keys {
            Self::read_keys(source, &mut state)?;
        }
        if policies {
            Self::read_policies(source, &mut state)?;
        }
        self.state = Some(state);
        Ok(())
    }

    fn known(&self, path: &str, id: Oid, limits: &crate::config::Limits) -> Option<Arc<FileOutcome>> {
        if let Some(o) = self.seen.get(&(path.to_owned(), id)) {
            return Some(o.clone());
        }
        let table = self.cache.as_ref()?.table(limits);
        table.outcome(path, id).map(|(o, _)| Arc::new(o))
    }

    fn remember(&mut self, path: &str, id: Oid, o: &Arc<FileOutcome>) {
        if self.seen.len() >= SEEN_MAX {
            self.seen.clear();
        }
        self.seen.insert((path.to_owned(), id), o.clone());
    }

    fn read_keys(source: &Source, state: &mut State) -> Result<(), SourceError> {
        let mut files = Vec::new();
        let mut diags = Vec::new();
        let chain = validate::check_supply_chain(
            source,
            &state.repo,
            &state.repo.settings.limits,
            true,
            None,
            &mut files,
            &mut diags,
        )?;
        state.keys = Arc::new((chain.keys, chain.artifacts, diags));
        Ok(())
    }

    fn read_policies(source: &Source, state: &mut State) -> Result<(), SourceError> {
        let mut files = Vec::new();
        let mut diags = Vec::new();
        let engine = validate::load_policies(source, &state.repo, &state.repo.settings.limits, &mut files, &mut diags)?;
        state.engine = Arc::new(engine);
        state.policy_diags = diags;
        state.policy_files = files;
        Ok(())
    }

    /// The replayed revision as a [`Validated`] (see the module's note on what it checked).
    /// Its `blobs` are empty: a replayed revision's objects are compared with the last one's
    /// only in the files that changed ([`crate::change::diff_in`]), field by field.
    fn validated(&self, source: &Source) -> Validated {
        let state = self.state.as_ref().expect("a revision was read");
        let mut diagnostics: Vec<Diagnostic> = state.settings_diags.clone();
        diagnostics.extend(state.errors.values().flatten().cloned());
        diagnostics.extend(state.keys.2.iter().filter(|d| d.is_error()).cloned());
        diagnostics.extend(state.policy_diags.iter().filter(|d| d.is_error()).cloned());
        Validated {
            repo: state.repo.clone(),
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
            blobs: Default::default(),
        }
    }
}
