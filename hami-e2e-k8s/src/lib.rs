//! The Kubernetes layer of hami-e2e: cluster access, isolated namespaces, cleanup that
//! survives `kill -9`, watch-driven waits, diagnostics on failure, and a local control
//! plane.
//!
//! ```
//! use hami_e2e_k8s::wait::Condition;
//! use hami_e2e_k8s::{ClusterAccess, ClusterArgs, ClusterSource, PodBuilder, ownership_labels, wait};
//!
//! // Which cluster: --kubeconfig (or KUBECONFIG), --in-cluster, else a local cluster.
//! let args = ClusterArgs { kubeconfig: Some("/etc/kc".into()), context: Some("gpu".into()), ..Default::default() };
//! let ClusterSource::Existing(access) = ClusterSource::from_args(&args) else { unreachable!() };
//! assert_eq!(access, ClusterAccess::kubeconfig("/etc/kc").with_context(Some("gpu".into())));
//!
//! // A pod asking for a device, labelled as a scenario's objects are.
//! let mut pod = PodBuilder::new("p").limit("nvidia.com/gpu", "1").build();
//! pod.metadata.labels = Some(ownership_labels("run-1", "nvidia::allocation"));
//! assert_eq!(pod.metadata.labels.as_ref().unwrap()["hami-e2e.io/scenario"], "nvidia-allocation");
//!
//! // Wait conditions are plain functions of the object, checked here without a cluster.
//! assert_eq!(wait::is_pod_running().check(Some(&pod)), wait::Verdict::Pending);
//! ```
//!
//! Usable on its own from any crate's tests (add `hami-e2e-core` and `hami-e2e-k8s` as
//! dev-dependencies, a `harness = false` test target, and pick a `k8s-openapi` version
//! feature). The crate is in layers, each using only those before it:
//!
//! - this crate's [`Error`], with [`Error::is_transient`] for the runner's retries;
//! - [`toolkit`]: how a cluster is reached ([`ClusterAccess`]), [`apply`] and
//!   [`PodBuilder`]/[`DeploymentBuilder`], watch-driven [`wait`]s whose errors carry the last
//!   state and events, [`exec`] and [`logs`], [`diagnostics`] collected into a failed
//!   scenario's artifacts, [`ClusterInfo`] (what a cluster offers, for skipping), and
//!   [`retry_transient`] for transient API errors;
//! - [`cleanup`]: what a run creates carries its labels ([`cleanup::labels`]); a scenario's
//!   [`TestNamespace`] is deleted after it; [`NodeChanges`] records the original labels and
//!   annotations of nodes before changing them; every run holds a [`RunLease`], and
//!   [`reap`] removes what dead runs left (also after `kill -9`); [`sweep`] does it on
//!   request by age;
//! - [`local`] (cargo feature `local`, on by default): the local cluster, a real control
//!   plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) with KWOK fake
//!   nodes, as child processes on loopback; [`local::bincache`] builds its binaries from the
//!   Go modules pinned in `src/local/go/` into a cache outside the repository. Without the
//!   feature, the crate is for existing clusters only, and does not build the local one;
//! - [`cluster`]: which cluster a run uses ([`ClusterSource`]) and the connection to it
//!   ([`Cluster`]);
//! - [`fixtures`]: [`ClusterFixture`] (its output, [`RunCluster`], is the connection plus
//!   the run's lease), [`NamespaceFixture`] and [`NodeChangesFixture`], configured by
//!   [`ClusterArgs`]. Creating a [`ClusterFixture`] registers this crate's transient-error
//!   classifier, so scenarios that fail on a dropped connection or a `429` are retried.
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

pub mod cleanup;
pub mod cluster;
mod error;
pub mod fixtures;
#[cfg(feature = "local")]
pub mod local;
pub mod toolkit;

pub use cleanup::labels::{
    KEPT_UNTIL_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL, SCENARIO_LABEL, label_value,
    namespace_name, ownership_labels,
};
pub use cleanup::namespace::{KeepNamespaces, TestNamespace};
pub use cleanup::node_changes::NodeChanges;
pub use cleanup::reaper::{ReapReport, reap};
pub use cleanup::run_lease::RunLease;
pub use cleanup::sweep::{SweepOptions, sweep};
pub use cluster::{Cluster, ClusterSource};
pub use error::{Error, Result, is_transient_kube, register_transient_errors};
pub use fixtures::args::ClusterArgs;
pub use fixtures::cluster::{ClusterFixture, RunCluster};
pub use fixtures::namespace::{NamespaceFixture, NamespaceOptions, rerun_command};
pub use fixtures::node_changes::NodeChangesFixture;
pub use toolkit::access::{ClusterAccess, client_from_kubeconfig};
pub use toolkit::apply::{FIELD_MANAGER, apply, apply_yaml, create, parse_yaml_documents};
pub use toolkit::builders::{DEFAULT_IMAGE, DeploymentBuilder, PodBuilder};
pub use toolkit::discovery::{ClusterInfo, NodeInfo};
pub use toolkit::exec::{ExecOutput, exec, logs};
pub use toolkit::retry::{backoff, retry_transient};
pub use toolkit::{diagnostics, wait};
