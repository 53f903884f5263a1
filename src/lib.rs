//! rampart: a policy-as-code GitOps reconciler and config compiler.
//!
//! The pipeline, in module order: `source` (IO) → `load` → `spec` → `validate` → `report`,
//! joined by `pipeline` and driven by `cli`. `load`, `spec`, `validate` and `report` are
//! pure: no IO, no clocks, no network (they may use rayon for data parallelism). See
//! ARCHITECTURE.md for the code map and invariants.

pub mod apply;
pub mod change;
pub mod cli;
pub mod compile;
pub mod config;
pub mod diagnostic;
pub mod load;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod report;
pub mod source;
pub mod spec;
pub mod units;
pub mod validate;
