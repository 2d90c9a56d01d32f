//! Deploys HAMi for hami-e2e: with Helm on any cluster, and as host processes (HAMi's real
//! scheduler and webhook over fake devices) on the local cluster.
//!
//! - [`HelmRelease`]: install, upgrade, roll back, inspect and uninstall a chart ([`Chart`]:
//!   folder, `.tgz`, repository, OCI) with the real `helm`, typed results, watch-driven
//!   readiness, and failed installs explained and removed;
//! - [`HelmReleaseFixture`]: a release per run, with its state in failed scenarios'
//!   artifacts, uninstalled after the run with HAMi's node annotations removed
//!   ([`clean_node_annotations`]);
//! - [`HamiValues`]: HAMi's chart values that tests change, typed and checked;
//! - [`LocalHami`] and [`HamiFixture`]: HAMi's scheduler and webhook as host processes on the
//!   local cluster, with fake device nodes;
//! - [`binaries`]: helm and HAMi's scheduler from their pinned Go modules (or given).
//!
//! # Example
//!
//! The values a release is installed with, typed for the chart version, checked before helm
//! sees them, and with a later layer merged key by key:
//!
//! ```
//! use hami_e2e_helm::{HamiValues, SchedulerPolicy, merge};
//! use serde_json::json;
//!
//! let mut values = HamiValues::default();
//! values.gpu_scheduler_policy = Some(SchedulerPolicy::Spread);
//! values.device_split_count = Some(4);
//! let mut v = values.to_values("2.10.0")?;
//! assert_eq!(v["scheduler"]["defaultSchedulerPolicy"]["gpuSchedulerPolicy"], "spread");
//! assert_eq!(v["devicePlugin"]["deviceSplitCount"], 4);
//!
//! merge(&mut v, &json!({"devicePlugin": {"deviceSplitCount": 10, "runtimeClassName": "nvidia"}}));
//! assert_eq!(v["devicePlugin"]["deviceSplitCount"], 10);
//! assert_eq!(v["devicePlugin"]["runtimeClassName"], "nvidia");
//! assert_eq!(v["scheduler"]["defaultSchedulerPolicy"]["gpuSchedulerPolicy"], "spread");
//!
//! // HAMi's device-config.yaml for a scheduler outside the chart comes from the same values.
//! assert_eq!(values.device_config()?["nvidia"]["deviceSplitCount"], 4);
//!
//! values.device_split_count = Some(0);
//! let err = values.to_values("2.10.0").unwrap_err();
//! assert_eq!(err.to_string(), "invalid chart value `devicePlugin.deviceSplitCount`: must be at least 1");
//! # Ok::<(), hami_e2e_helm::Error>(())
//! ```
//!
//! # On a cluster
//!
//! Install, upgrade and roll back a release with the real `helm`:
//!
//! ```no_run
//! # async fn f(cluster: &hami_e2e_k8s::Cluster) -> hami_e2e_helm::Result<()> {
//! use std::time::Duration;
//! use hami_e2e_helm::{Chart, HamiValues, HelmRelease, SchedulerPolicy};
//!
//! let helm = hami_e2e_helm::binaries::helm(&Default::default()).await?;
//! let mut values = HamiValues::default();
//! values.gpu_scheduler_policy = Some(SchedulerPolicy::Spread);
//! let release = HelmRelease::new(helm.path, cluster.access().clone(), "hami", "hami-system", Chart::package("hami-2.10.0.tgz"));
//! release.install(&values.to_values("2.10.0")?).await?;
//! values.gpu_scheduler_policy = Some(SchedulerPolicy::Binpack);
//! release.upgrade(None, &values.to_values("2.10.0")?, true).await?;
//! release.rollback(None).await?;
//! release.uninstall(cluster.client(), Duration::from_secs(300)).await?;
//! # Ok(()) }
//! ```

pub mod binaries;
mod error;
mod fixture;
pub mod hami;
pub mod installed;
pub mod local;
mod release;
mod values;

pub use error::{Error, Result};
pub use fixture::{
    DEPLOY_CHART_ENV, DEPLOY_CHART_PREVIOUS_ENV, DEPLOY_CHART_PREVIOUS_VERSION_ENV,
    DEPLOY_CHART_VERSION_ENV, DEPLOY_ENV, Deploy, DeployFixture, FAKE_DEVICES_LABEL,
    HAMI_NODE_ANNOTATIONS, HELM_DEPLOYED_FLAG, HELM_PREVIOUS_FACT, HELM_PREVIOUS_FLAG,
    HelmReleaseFixture, HelmReleaseSpec, clean_node_annotations, helm_upgrade_requirement,
    record_deploy,
};
pub use hami::{HAMI_NODE_LABEL, Hami, HamiAvailability, HamiFixture};
pub use local::{
    HAMI_KUBE_SCHEDULER_PROCESS, HAMI_PROCESS, HamiEndpoint, LocalHami, LocalHamiOptions,
    WEBHOOK_NAME, default_managed_resources, registered_nodes,
};
pub use release::{Chart, HelmRelease, ReleaseInfo, ReleaseStatus, Revision, workloads};
pub use values::{CHART_RESOURCE_NAMES, HamiValues, SchedulerPolicy, merge};
