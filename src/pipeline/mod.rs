//! Pipeline: source → load → validate for one revision of a config repo — the sequence every
//! command starts with. The only place that joins the IO stage to the pure ones.
//!
//! One file per stage: `validate.rs` reads and validates a revision, `check.rs` authorises a
//! change, `policy_test.rs` runs the repo's policy tests, `compile.rs` compiles a validated
//! revision, `impact.rs` decides the standard questions under both sides' rules. Everything
//! public is re-exported here, so callers name it `pipeline::X`.

mod check;
mod compile;
mod impact;
mod policy_test;
mod replay;
mod validate;

pub use check::{Authorized, CheckOutcome, Checked, Principals, authorize, authorize_changes, check};
pub use compile::{Compiled, WrittenTree, compile_into, compile_validated, compile_validated_tenants};
pub use impact::{Impacted, impact, touches_rules};
pub use policy_test::{TestRun, policy_test};
pub use replay::{Changed, Replay, Trees, changed_paths};
pub use validate::{Checks, Pair, Progress, Timings, Unread, Validated, validate, validate_cached, validate_pair};
