//! The Kubernetes layer of hami-e2e: cluster access, isolated namespaces, cleanup,
//! watch-driven waits, diagnostics on failure, and the local control plane.
//!
//! Usable on its own from any crate's tests (add `hami-e2e-core` and `hami-e2e-k8s` as
//! dev-dependencies, a `harness = false` test target, and pick a `k8s-openapi` version
//! feature):
//!
//! - [`Cluster`], [`ClusterSource`], [`ClusterArgs`] and [`ClusterFixture`]: one cluster per
//!   run, from `--kubeconfig`/`KUBECONFIG`, in-cluster, or with none a local cluster;
//!   [`Cluster::discover`] and [`ClusterInfo::capabilities`] for skipping;
//! - [`NamespaceFixture`]/[`TestNamespace`]: a labelled namespace per scenario, deleted
//!   after every outcome (`--keep-namespaces` to keep), with [`apply`](TestNamespace::apply),
//!   [`apply_yaml`](TestNamespace::apply_yaml) and [`PodBuilder`]/[`DeploymentBuilder`];
//!   [`sweep`] deletes what crashed runs left;
//! - [`NodeChanges`]/[`NodeChangesFixture`]: labels and annotations of nodes the run did
//!   not create, changed with their originals recorded on the node first, and undone after
//!   the scenario whatever the outcome, or after a `kill -9` by the next run's reaper
//!   ([`ledger`]) or `--sweep` (see [`node_changes`]);
//! - [`wait`]: watch-driven waits with timeouts whose errors carry the last state and events;
//! - [`exec`] and [`logs`]; [`diagnostics`] collected into a failed scenario's artifacts;
//!   [`retry_transient`] for transient API errors;
//! - [`local`]: the local cluster, a real control plane (etcd, kube-apiserver,
//!   kube-controller-manager, kube-scheduler) with KWOK fake nodes, as child processes on
//!   loopback; [`bincache`] builds its binaries from the Go modules pinned in the
//!   repository's `go/` folder into a cache outside the repository;
//! - this crate's [`Error`], with [`Error::is_transient`] for the runner's retries.
//!
//! Reusing the fixtures in another crate's tests (`tests/e2e.rs`, `harness = false`):
//!
//! ```no_run
//! use std::time::Duration;
//! use hami_e2e_core::{Runner, scenario};
//! use hami_e2e_k8s::{ClusterArgs, ClusterFixture, ClusterSource, NamespaceFixture, PodBuilder, wait};
//!
//! fn main() -> std::process::ExitCode {
//!     let args = ClusterArgs::default(); // KUBECONFIG, else a local cluster
//!     Runner::new()
//!         .fixture(ClusterFixture::new(ClusterSource::from_args(&args)))
//!         .fixture(NamespaceFixture::new(args.namespace_options()))
//!         .scenario(scenario("my-operator/creates-a-pod").run(|ctx| async move {
//!             let ns = ctx.fixture::<NamespaceFixture>().await?;
//!             ns.apply(&PodBuilder::new("p").build()).await?;
//!             wait::pod_running(&ns.api(), "p", Duration::from_secs(60)).await?;
//!             Ok(())
//!         }))
//!         .main()
//! }
//! ```
//!
//! The local cluster alone:
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

pub mod admission;
mod apply;
pub mod bincache;
mod builders;
mod cluster;
pub mod diagnostics;
mod error;
mod exec;
mod kubeconfig;
pub mod leak;
pub mod ledger;
pub mod local;
mod namespace;
pub mod node_changes;
mod retry;
pub mod shared;
mod sweep;
pub mod wait;

pub use apply::{apply, apply_yaml, create, parse_yaml_documents};
pub use builders::{DEFAULT_IMAGE, DeploymentBuilder, PodBuilder};
pub use cluster::{Cluster, ClusterArgs, ClusterFixture, ClusterInfo, ClusterSource, NodeInfo};
pub use error::{Error, Result, is_transient_kube, register_transient_errors};
pub use exec::{ExecOutput, exec, logs};
pub use kubeconfig::client_from_kubeconfig;
pub use namespace::{
    FIELD_MANAGER, KEPT_UNTIL_ANNOTATION, KeepNamespaces, MANAGED_BY, MANAGED_BY_LABEL,
    NamespaceFixture, NamespaceOptions, RUN_LABEL, SCENARIO_LABEL, TestNamespace, label_value,
    namespace_name, ownership_labels, rerun_command,
};
pub use node_changes::{NodeChanges, NodeChangesFixture};
pub use retry::{backoff, retry_transient};
pub use sweep::{SweepOptions, sweep};
