//! HAMi's official end-to-end scenarios, as a library that downstream forks extend.
//!
//! ```
//! // The scenarios for the built-in device backends: NVIDIA, Cambricon, Hygon and Ascend.
//! let names: Vec<String> = hami_e2e_suite::Suite::new()
//!     .scenarios()
//!     .iter()
//!     .map(|s| s.name().to_string())
//!     .collect();
//! assert!(names.contains(&"cluster::nodes-ready".to_string()));
//! assert!(names.contains(&"devices::nvidia::fake-node".to_string()));
//! assert!(names.contains(&"hami::ascend::vnpu-mode".to_string()));
//! ```
//!
//! The suite runs against the cluster of `--kubeconfig`/`KUBECONFIG`, or, with neither, a
//! local cluster it starts itself (see `hami_e2e_k8s::ClusterSource`). Its scenarios:
//!
//! - `cluster::*`: the cluster's nodes are Ready and a pod runs in a scenario's namespace.
//! - `devices::<vendor>::{fake-node, whole-devices, node-capacity, node-selector}` for every
//!   backend of the run's [`DeviceRegistry`]: its fake devices and Kubernetes' accounting
//!   of them, the last three on the [`DevicePoolFixture`]'s nodes (on a cluster of yours,
//!   its own devices) and admitted by the devices they hold; and, for a backend with a
//!   limit probe, `memory-limit` on real devices through the cluster's HAMi.
//! - `hami::<vendor>::*` and `hami::all::*`: HAMi's real scheduler and webhook on the local
//!   cluster, over fake nodes. Give the scheduler binary with `HAMI_E2E_HAMI_SCHEDULER`, or
//!   a HAMi checkout to build it from with `HAMI_E2E_HAMI_SOURCE`; with neither, the suite
//!   builds the pinned release (`HAMI_E2E_HAMI_VERSION` picks another) from HAMi's Go
//!   module, which needs `go` and a Go module proxy that serves HAMi. Without a scheduler
//!   they are skipped, naming the reason (failed under `--require`). The upgrade scenario
//!   also needs the previous release: `HAMI_E2E_HAMI_SCHEDULER_PREVIOUS` or
//!   `HAMI_E2E_HAMI_SOURCE_PREVIOUS`.
//!
//! `hami-e2e run` ends with a [`verdict`] per vendor and node.
//!
//! A fork, or a vendor's crate, adds its backend (which then gets the device scenarios, and
//! HAMi's where HAMi serves its vendor) and scenarios with [`Suite`] and keeps everything
//! else, the command line included:
//!
//! ```no_run
//! // tests/e2e.rs of a fork, with `harness = false`
//! fn main() -> std::process::ExitCode {
//!     hami_e2e_suite::Suite::new()
//!         // .backend(my_vendor::MyBackend::default()).expect("a new vendor")
//!         .scenario(hami_e2e_core::scenario("fork/extra").run(|_ctx| async { Ok(()) }))
//!         .main()
//! }
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use hami_e2e_core::{Runner, Scenario};
use hami_e2e_devices::{DeviceBackend, DeviceRegistry};
use hami_e2e_k8s::local::NodeSpec;
use hami_e2e_k8s::{ClusterArgs, ClusterFixture, ClusterSource, NamespaceFixture};

mod fixtures;
mod scenarios;
pub mod verdict;

pub use fixtures::{
    DevicePoolFixture, DevicesFixture, FAKE_DEVICES_LABEL, LOCAL_CLUSTER, POOL_DEVICES_PER_NODE,
    fake_node_spec,
};
pub use scenarios::devices::SELECTOR_LABEL;
pub use scenarios::hami::HAMI_BUG;

/// The suite's command line: the runner's flags and the cluster's.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hami-e2e-suite",
    about = "HAMi's end-to-end tests (libtest-compatible: works under cargo test and cargo nextest)",
    disable_version_flag = true
)]
pub struct SuiteArgs {
    /// The runner's flags.
    #[command(flatten)]
    pub core: hami_e2e_core::Args,
    /// The cluster's flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The cluster the suite uses: `args`' kubeconfig, else a local cluster with fake nodes.
pub fn cluster_source(args: &ClusterArgs) -> ClusterSource {
    match ClusterSource::from_args(args) {
        ClusterSource::Local(options) => ClusterSource::Local(
            options
                .node(NodeSpec::new("hami-e2e-node-0"))
                .node(NodeSpec::new("hami-e2e-node-1")),
        ),
        other => other,
    }
}

/// The suite: its scenarios, the device backends they run for, and a fork's additions.
#[must_use]
pub struct Suite {
    registry: DeviceRegistry,
    extra: Vec<Arc<dyn Scenario>>,
    share: bool,
    verdict: bool,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("backends", &self.registry.keys())
            .field(
                "extra",
                &self
                    .extra
                    .iter()
                    .map(|s| s.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for Suite {
    fn default() -> Self {
        Self::new()
    }
}

impl Suite {
    /// The suite with the built-in backends (NVIDIA, Cambricon, Hygon, Ascend); NVIDIA's
    /// memory limit probe runs in `HAMI_E2E_NVIDIA_PROBE_IMAGE` where it is set.
    pub fn new() -> Self {
        let mut nvidia = hami_e2e_devices::Nvidia::default();
        if let Some(image) = std::env::var("HAMI_E2E_NVIDIA_PROBE_IMAGE")
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            nvidia = nvidia.with_probe_image(image);
        }
        Self {
            registry: DeviceRegistry::builtin_with(nvidia),
            extra: Vec::new(),
            share: false,
            verdict: false,
        }
    }

    /// Adds a vendor's backend: the device scenarios run for it too.
    ///
    /// # Errors
    ///
    /// As [`DeviceRegistry::register`]: when the backend's key
    /// ([`DeviceBackend::key`], the vendor's name unless
    /// it says otherwise) is taken, naming both backends.
    pub fn backend(
        mut self,
        backend: impl DeviceBackend + 'static,
    ) -> Result<Self, hami_e2e_devices::Error> {
        self.registry.register(backend)?;
        Ok(self)
    }

    /// Replaces the registry of backends.
    pub fn registry(mut self, registry: DeviceRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Prints the verdict per vendor and node after the run (see [`verdict`]), as
    /// `hami-e2e run` does.
    pub fn verdict(mut self, on: bool) -> Self {
        self.verdict = on;
        self
    }

    /// Adds a scenario of a fork's own.
    pub fn scenario(mut self, scenario: impl Scenario) -> Self {
        self.extra.push(Arc::new(scenario));
        self
    }

    /// Every scenario: the suite's, each backend's, and the added ones.
    pub fn scenarios(&self) -> Vec<Arc<dyn Scenario>> {
        let mut all = scenarios::for_registry(&self.registry);
        all.extend(self.extra.iter().cloned());
        all
    }

    /// A runner with the suite's fixtures (the cluster, a namespace per scenario, the
    /// backends), the cluster's capabilities as the probe, and every scenario.
    pub fn runner(self, args: &SuiteArgs) -> Runner {
        let scenarios = self.scenarios();
        hami_e2e_k8s::register_transient_errors();
        let registry = Arc::new(self.registry);
        let probe_registry = Arc::clone(&registry);
        let inventory_slot = verdict::InventorySlot::default();
        let probe_slot = Arc::clone(&inventory_slot);
        let mut runner = Runner::new();
        if self.verdict {
            runner = runner.reporter(verdict::VerdictReporter::new(
                registry.keys(),
                inventory_slot,
            ));
        }
        runner
            .fixture(
                ClusterFixture::new(cluster_source(&args.cluster))
                    .sweep(args.cluster.sweep_options())
                    .share_under_nextest(self.share),
            )
            .fixture(NamespaceFixture::new(args.cluster.namespace_options()))
            .fixture(hami_e2e_k8s::NodeChangesFixture)
            .fixture(DevicePoolFixture::new(Arc::clone(&registry)))
            .fixture(hami_e2e_helm::HamiFixture::new(Arc::clone(&registry)))
            .fixture(hami_e2e_helm::DeployFixture)
            .fixture(DevicesFixture::new(registry))
            .probe(move |ctx| {
                let registry = Arc::clone(&probe_registry);
                let slot = Arc::clone(&probe_slot);
                async move {
                    let cluster = ctx.fixture::<ClusterFixture>().await?;
                    // HAMI_E2E_DEPLOY=helm: HAMi's chart installed before anything looks.
                    let deployed = ctx.fixture::<hami_e2e_helm::DeployFixture>().await?;
                    ctx.fixture::<DevicePoolFixture>().await?;
                    let info = cluster.discover().await?;
                    let mut caps = info
                        .capabilities()
                        .with_fact("cluster", cluster.description());
                    if cluster.is_local() {
                        caps = caps.with_flag(LOCAL_CLUSTER);
                    }
                    let inventory = fixtures::inventory(&cluster, &registry, ctx.run_id()).await?;
                    // Devices on a cluster that is not a local one are real ones.
                    let mut caps = inventory.record(caps, !cluster.is_local());
                    // Runs sharing the cluster (shards on other machines) share admission.
                    if let Some(store) = cluster.admission() {
                        use hami_e2e_core::admission::AdmissionStore;
                        caps = caps
                            .with_fact("device admission", format!("through {}", store.describe()))
                            .with_admission(Arc::new(store));
                    }
                    // HAMi: found (or not) once per run; its scenarios require it.
                    let hami = hami_e2e_helm::hami::probe(&cluster).await;
                    match &hami {
                        hami_e2e_helm::HamiAvailability::Available(d) => {
                            tracing::info!("HAMi for this run: {d}");
                        }
                        other => tracing::info!("HAMi's scenarios cannot run: {other:?}"),
                    }
                    let caps = hami_e2e_helm::hami::record(caps, &hami);
                    let caps = hami_e2e_helm::record_deploy(
                        caps,
                        deployed.is_some(),
                        &hami_e2e_helm::Deploy::previous_from_env(),
                    );
                    // On a cluster reached by kubeconfig: the HAMi installed there, for the
                    // run's summary.
                    let caps = if cluster.is_local() {
                        caps
                    } else {
                        let found =
                            match hami_e2e_helm::installed::discover(&cluster.client()).await {
                                Ok(found) => found.describe(),
                                Err(e) => format!("not looked for: {e}"),
                            };
                        tracing::info!("installed: {found}");
                        caps.with_fact("installed HAMi", found)
                    };
                    // The previous release, for the upgrade scenarios: looked for only where
                    // this process runs HAMi itself.
                    let caps = if caps.flags.contains(hami_e2e_helm::hami::HAMI_OWNED_FLAG) {
                        let previous = hami_e2e_helm::hami::previous_scheduler().await;
                        if let Ok(p) = &previous {
                            tracing::info!(
                                "HAMi's previous release for the upgrade: {} ({})",
                                p.version,
                                p.source
                            );
                        }
                        hami_e2e_helm::hami::record_previous(caps, &previous)
                    } else {
                        caps
                    };
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(inventory);
                    Ok(caps)
                }
            })
            .scenarios(scenarios)
    }

    /// Parses the process's arguments and runs: the `main` of a `harness = false` target.
    /// Under `cargo nextest`, the run's processes share one local cluster (see
    /// `hami_e2e_k8s::local::shared`).
    pub fn main(self) -> ExitCode {
        if supervise_if_asked() {
            return ExitCode::SUCCESS;
        }
        let args = SuiteArgs::parse();
        self.main_with_args(args)
    }

    /// Runs with `args` (parsed by the caller, who may have changed them): the same as
    /// [`main`](Self::main) otherwise, the shared cluster under nextest included. Call
    /// [`supervise_if_asked`] first thing in `main`.
    pub fn main_with_args(mut self, args: SuiteArgs) -> ExitCode {
        self.share = true;
        self.runner(&args).main_with_args(&args.core)
    }
}

/// If this process is the supervisor of a cluster shared by a nextest run, runs it and
/// returns `true` (then return from `main`); otherwise returns `false` at once. Starts the
/// local cluster the suite would start for itself.
///
/// The supervisor also runs the one HAMi of the shared cluster, when a HAMi scheduler can
/// be had (see `hami_e2e_helm::hami`): every scenario process attaches to it.
#[allow(
    clippy::async_yields_async,
    reason = "the companion's start yields the future that stops it, by design"
)]
pub fn supervise_if_asked() -> bool {
    let hami: hami_e2e_k8s::local::shared::Companion = Box::new(|cluster, dir| {
        Box::pin(async move {
            let hami = hami_e2e_helm::hami::start_for_shared_cluster(&cluster, &dir).await;
            let stop: hami_e2e_k8s::local::shared::CompanionStop = Box::pin(async move {
                if let Some(hami) = hami
                    && let Err(e) = hami.stop(&cluster).await
                {
                    eprintln!("supervisor: stopping HAMi: {e}");
                }
            });
            stop
        })
    });
    hami_e2e_k8s::local::shared::supervise_if_asked_with(
        || match cluster_source(&ClusterArgs::default()) {
            ClusterSource::Local(options) => options,
            _ => hami_e2e_k8s::local::LocalClusterOptions::default(),
        },
        Some(hami),
    )
}

/// Parses the process's arguments and runs the suite: the `main` of `tests/e2e.rs`.
pub fn main() -> ExitCode {
    Suite::new().main()
}

/// The suite's own scenarios that do not depend on a device backend (`cluster::*`).
pub fn scenarios() -> Vec<Arc<dyn Scenario>> {
    scenarios::cluster::scenarios()
}

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
