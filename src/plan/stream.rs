//! Plans tenant by tenant (pure): compile one tenant of the base and of the head, hand both
//! object lists to a sink, drop them. A change that reaches every tenant (an edit of
//! `rampart.yaml`) then never holds two compiled revisions in memory — only what the sinks
//! return.
//!
//! Every object rampart compiles belongs to one tenant and lives at a path only that tenant
//! can produce: its namespace is the tenant's name (a DNS label), and the one cluster-scoped
//! object is `_cluster/namespace-<tenant>.yaml`. So matching objects by path within a tenant
//! is matching them by path across the revision, and two objects at one path (R503) can only
//! come from one tenant.

use super::Plan;
use crate::compile::{Compiler, Manifest, Options, duplicate_paths};
use crate::diagnostic::Diagnostic;
use crate::spec::Repo;
use std::collections::{BTreeMap, BTreeSet};

/// One tenant's compiled objects in the base and in the head, each sorted by output path
/// ([`Manifest::path`]).
pub struct TenantObjects<'r> {
    pub tenant: &'r str,
    /// The tenant's objects in the base: empty when the tenant is new, or there is no base.
    pub old: Vec<Manifest>,
    /// The tenant's objects in the head: empty when the tenant is removed.
    pub new: Vec<Manifest>,
}

/// What streaming a change tenant by tenant gave, and the problems only compiling revealed
/// on each side (not yet resolved to lines: `pipeline::Validated::resolve` does that). Any
/// error in `head_diagnostics` means the head does not compile and `value` must not be used;
/// one in `base_diagnostics` means the base's objects were not all built.
pub struct Streamed<T> {
    pub value: T,
    pub base_diagnostics: Vec<Diagnostic>,
    pub head_diagnostics: Vec<Diagnostic>,
}

/// Compile `base` (when given) and `head` tenant by tenant and call `sink` with each tenant's
/// objects on both sides; return the sinks' results in tenant-name order.
///
/// `tenants` limits the work to the tenants named (for a plan, [`super::affected`]); `None`
/// means every tenant of either side. A tenant only one side has gets an empty list on the
/// other. Rollouts are resolved to their target tenants first (on each side), so a tenant's
/// canaries and route come with it. Tenants are compiled in parallel (rayon): at any moment
/// only the tenants in flight are held compiled, one per core, and `sink` is called from
/// the workers — it should reduce a tenant to what its caller needs (a diff, per-file
/// upserts and removals) and let the manifests drop. Pure: no IO.
pub fn each_tenant<'r, R, F>(
    base: Option<&'r Repo>,
    head: &'r Repo,
    tenants: Option<&BTreeSet<String>>,
    opts: &'r Options,
    sink: F,
) -> Streamed<Vec<R>>
where
    R: Send,
    F: Fn(TenantObjects<'r>) -> R + Sync,
{
    use rayon::prelude::*;
    let wanted = |t: &str| tenants.is_none_or(|s| s.contains(t));
    let mut base_diagnostics = Vec::new();
    let mut head_diagnostics = Vec::new();
    let base_compiler = base.map(|r| Compiler::new(r, opts, &wanted, &mut base_diagnostics));
    let head_compiler = Compiler::new(head, opts, &wanted, &mut head_diagnostics);
    // every wanted tenant of either side, by name: (its index in the base, in the head)
    let mut by_name: BTreeMap<&'r str, (Option<usize>, Option<usize>)> = BTreeMap::new();
    for (i, t) in base.map_or(&[][..], |r| &r.tenants).iter().enumerate() {
        if wanted(t.name()) {
            by_name.entry(t.name()).or_default().0 = Some(i);
        }
    }
    for (i, t) in head.tenants.iter().enumerate() {
        if wanted(t.name()) {
            by_name.entry(t.name()).or_default().1 = Some(i);
        }
    }
    let side = |compiler: Option<&Compiler<'r>>, index: Option<usize>| {
        let (Some(compiler), Some(index)) = (compiler, index) else {
            return (Vec::new(), Vec::new());
        };
        let (objects, mut diags) = compiler.tenant(index);
        let mut keyed: Vec<(String, Manifest)> = objects.into_iter().map(|m| (m.path(), m)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let (paths, objects): (Vec<String>, Vec<Manifest>) = keyed.into_iter().unzip();
        duplicate_paths(&paths, &mut diags);
        (objects, diags)
    };
    let per_tenant: Vec<(R, Vec<Diagnostic>, Vec<Diagnostic>)> = by_name
        .into_iter()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(tenant, (b, h))| {
            let (old, base_d) = side(base_compiler.as_ref(), b);
            let (new, head_d) = side(Some(&head_compiler), h);
            (sink(TenantObjects { tenant, old, new }), base_d, head_d)
        })
        .collect();
    let mut value = Vec::with_capacity(per_tenant.len());
    for (r, b, h) in per_tenant {
        value.push(r);
        base_diagnostics.extend(b);
        head_diagnostics.extend(h);
    }
    Streamed {
        value,
        base_diagnostics,
        head_diagnostics,
    }
}

/// The plan of `base` → `head` (no base: everything is created) for `tenants` (or all),
/// built tenant by tenant with [`each_tenant`]: the same plan as [`super::plan`] of the two
/// compiled revisions, without ever holding them.
pub fn plan(base: Option<&Repo>, head: &Repo, tenants: Option<&BTreeSet<String>>, opts: &Options) -> Streamed<Plan> {
    let streamed = each_tenant(base, head, tenants, opts, |t| {
        let mut p = Plan::default();
        p.diff(&t.old, &t.new);
        p
    });
    let mut plan = Plan::default();
    for p in streamed.value {
        plan.merge(p);
    }
    plan.finish();
    Streamed {
        value: plan,
        base_diagnostics: streamed.base_diagnostics,
        head_diagnostics: streamed.head_diagnostics,
    }
}
