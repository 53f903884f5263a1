//! rampart: a policy-as-code GitOps reconciler and config compiler.
//!
//! The pipeline: `source` (IO) → `load` → `spec` → `validate` → `change` → `policy` →
//! `compile` → `plan` → `report`, with `apply` (IO) writing what was compiled and `rollback`
//! (IO) writing rampart's own reverts and promotes into the config repo; joined by
//! `pipeline` and driven by `cli`. Everything between `source` and `apply` is pure: no IO, no
//! clocks, no network (rayon may spread work over the cores). Rollouts add `observe` (SLOs
//! measured in Prometheus; its `analysis` is pure) and `notify` (webhooks); `audit` reads it
//! all back from Git. See
//! ARCHITECTURE.md for the code map and invariants.

pub mod audit;
pub mod cache;
pub mod change;
pub mod cli;
pub mod compile;
pub mod config;
pub mod diagnostic;
pub mod github;
pub(crate) mod http_client;
pub mod load;
pub mod notify;
pub mod observe;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod remote;
pub mod report;
pub mod rollback;
pub mod rollout;
pub mod serve;
pub mod source;
pub mod spec;
pub mod supply;
pub mod target;
pub mod units;
pub mod validate;
