//! Deploys HAMi for hami-e2e: with Helm on any cluster, and as host processes (the real
//! HAMi scheduler and webhook) over fake devices on the local cluster.

pub mod binaries;
mod error;
mod fixture;
mod release;
mod values;

pub use error::{Error, Result};
pub use fixture::{
    FAKE_DEVICES_LABEL, HAMI_NODE_ANNOTATIONS, HelmReleaseFixture, HelmReleaseSpec,
    clean_node_annotations,
};
pub use release::{Chart, HelmRelease, ReleaseInfo, ReleaseStatus, Revision, workloads};
pub use values::{HamiValues, SchedulerPolicy, merge};
