//! Run cleanup: what a run creates carries its [`labels`], and nothing outlives the run,
//! not even after `kill -9`.
//!
//! - [`namespace`]: a scenario's [`TestNamespace`](namespace::TestNamespace), deleted (or
//!   kept for debugging) after it;
//! - [`leak`]: after a teardown, what still carries the scenario's labels;
//! - [`node_changes`]: labels and annotations of nodes the run did not create, recorded on
//!   the node before they change, and undone;
//! - [`lease`], [`run_lease`] and [`reaper`]: every run holds a renewed `Lease`; the runs
//!   whose lease expired or whose process is gone are dead, and the reaper removes what
//!   they left;
//! - [`admission`]: the devices each run holds, shared by every run on the cluster;
//! - [`sweep`]: what crashed runs left, by label and age, on request (`--sweep`).

pub mod admission;
pub mod labels;
pub mod leak;
pub mod lease;
pub mod namespace;
pub mod node_changes;
pub mod reaper;
pub mod run_lease;
pub mod sweep;
