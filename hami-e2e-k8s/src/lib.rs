//! The Kubernetes layer of hami-e2e: cluster access, isolated namespaces, cleanup,
//! watch-driven waits, diagnostics on failure, and the local control plane.
//!
//! Written so far:
//!
//! - [`local`]: the local cluster, a real control plane (etcd, kube-apiserver,
//!   kube-controller-manager, kube-scheduler) with KWOK fake nodes, as child processes on
//!   loopback; [`local::LocalClusterFixture`] makes it a run-scoped fixture;
//! - [`Cluster`], [`ClusterSource`], [`ClusterArgs`] and [`ClusterFixture`]: one cluster per
//!   run, from `--kubeconfig`/`KUBECONFIG` or, with neither, a local cluster;
//! - [`bincache`]: builds the local cluster's binaries from the Go modules pinned in the
//!   repository's `go/` folder into a cache outside the repository;
//! - this crate's [`Error`], with [`Error::is_transient`] for the runner's retries.
//!
//! Namespaces, waits and diagnostics follow (the k8s-fixtures issue).
//!
//! ```no_run
//! # async fn f() -> hami_e2e_k8s::Result<()> {
//! use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
//!
//! // Builds the binaries on first use (minutes, with progress lines), then starts in seconds.
//! let cluster = LocalCluster::start(
//!     LocalClusterOptions::default().node(NodeSpec::new("gpu-node-0").capacity("nvidia.com/gpu", "8")),
//! )
//! .await?;
//! println!("export KUBECONFIG={}", cluster.kubeconfig().display());
//! cluster.stop().await?;
//! # Ok(()) }
//! ```

mod apply;
pub mod bincache;
mod builders;
mod cluster;
pub mod diagnostics;
mod error;
mod exec;
mod kubeconfig;
pub mod local;
mod namespace;
mod retry;
mod sweep;
pub mod wait;

pub use apply::{apply, apply_yaml, create, parse_yaml_documents};
pub use builders::{DEFAULT_IMAGE, DeploymentBuilder, PodBuilder};
pub use cluster::{Cluster, ClusterArgs, ClusterFixture, ClusterInfo, ClusterSource, NodeInfo};
pub use error::{Error, Result, is_transient_kube, register_transient_errors};
pub use exec::{ExecOutput, exec, logs};
pub use kubeconfig::client_from_kubeconfig;
pub use namespace::{
    FIELD_MANAGER, KeepNamespaces, MANAGED_BY, MANAGED_BY_LABEL, NamespaceFixture,
    NamespaceOptions, RUN_LABEL, SCENARIO_LABEL, TestNamespace, label_value, namespace_name,
    ownership_labels,
};
pub use retry::{backoff, retry_transient};
pub use sweep::{SweepOptions, sweep};
