//! [`HamiFixture`]: the real HAMi for a run's scenarios, with fake devices.
//!
//! On the run's own local cluster it starts [`LocalHami`] (HAMi's scheduler and webhook as
//! host processes) with the scheduler binary [`find_hami_scheduler_once`] finds
//! (`HAMI_E2E_HAMI_SCHEDULER`, `HAMI_E2E_HAMI_SOURCE`, or the pinned module); under
//! `cargo nextest`, where the run's processes share one local cluster, the shared cluster's
//! supervisor runs the one HAMi of that cluster ([`start_for_shared_cluster`]) and every
//! process attaches to it through the endpoint it publishes: two HAMi webhooks on one
//! cluster would both mutate every pod. Each process runs its own [`FakeDeviceAgent`] for
//! the fake nodes it adds with [`Hami::add_node`].
//!
//! Whether HAMi can be had is decided once per run, by the probe ([`probe`], recorded into
//! the run's capabilities with [`record`]); HAMi's scenarios [`require`](requirement) it,
//! so without a scheduler binary they are skipped with one reason naming the three ways to
//! give one, and fail under `--require`.
//!
//! ```no_run
//! # async fn f(ctx: &hami_e2e_core::Context) -> Result<(), hami_e2e_core::Failure> {
//! use hami_e2e_devices::profiles;
//! use hami_e2e_helm::HamiFixture;
//!
//! let hami = ctx.fixture::<HamiFixture>().await?;
//! let node = hami
//!     .add_node("hami-gpu-0", "nvidia", &profiles::default_for("nvidia").unwrap().fake_devices("hami-gpu-0", 2))
//!     .await?;
//! // ... pods pinned to `node` are mutated, filtered and bound by HAMi ...
//! hami.remove_node(&node).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hami_e2e_core::{
    Capabilities, Failure, Fixture, FixtureContext, Requirement, Scope, TeardownContext,
};
use hami_e2e_devices::{DeviceBackend, DeviceRegistry, FakeDeviceAgent, FakeDevices};
use hami_e2e_k8s::local::{LocalCluster, NodeSpec};
use hami_e2e_k8s::{Cluster, ClusterFixture, RunCluster, wait};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::binaries::{
    FindSchedulerError, HamiRelease, HamiScheduler, SchedulerInputs, find_hami_scheduler_once,
    find_hami_scheduler_once_with,
};
use crate::local::{HamiEndpoint, LocalHami, LocalHamiOptions};

/// The capability flag the probe sets when HAMi can run for this run's scenarios.
pub const HAMI_FLAG: &str = "hami";
/// The capability fact naming the HAMi a run uses (`v2.10.0 (from HAMI_E2E_HAMI_SCHEDULER)`).
pub const HAMI_FACT: &str = "hami";
/// The capability fact with the reason HAMi cannot run (the skip reason of HAMi's scenarios).
pub const HAMI_UNAVAILABLE_FACT: &str = "hami unavailable";
/// The capability flag [`record`] sets when HAMi will run in this process (on the run's
/// own local cluster), so a scenario may restart it; not under nextest, where the shared
/// cluster's supervisor runs the one HAMi of every process.
pub const HAMI_OWNED_FLAG: &str = "hami-owned";
/// The label on the fake nodes HAMi may use (`hami-e2e.io/hami-node=true`): HAMi's
/// `--node-label-selector` on the local cluster, so the fake device pool and other
/// scenarios' nodes stay out of its view.
pub const HAMI_NODE_LABEL: &str = "hami-e2e.io/hami-node";
/// The file in a shared cluster's folder where its supervisor publishes HAMi.
pub const SHARED_HAMI_FILE: &str = "hami.json";

/// What the supervisor of a shared cluster publishes about HAMi.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Published {
    Running(HamiEndpoint),
    Unavailable(String),
    Failed(String),
}

/// Whether HAMi can run for a run's scenarios, as [`probe`] found out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HamiAvailability {
    /// It can: the description of the HAMi that will run.
    Available(String),
    /// It cannot, and that is a reason to skip (no binary to be had).
    Unavailable(String),
    /// What was given is unusable: a failure of every HAMi scenario.
    Failed(String),
}

/// The options HAMi runs with on the local cluster by default: HAMi's own defaults but the
/// node lock timeout (30 s, so a missed acknowledgement costs a scenario 30 s, not 5 min),
/// its API client's rate (`--kube-qps 500 --kube-burst 1000`; at HAMi's 5 and 10, and
/// still at 50 and 100, its filter patches, handshakes and binds queue up behind
/// client-side throttling when many pods come at once) and the node selector
/// [`HAMI_NODE_LABEL`].
pub fn default_local_options() -> LocalHamiOptions {
    let mut options = LocalHamiOptions {
        node_lock_timeout: Duration::from_secs(30),
        kube_qps_burst: Some((500, 1000)),
        ..Default::default()
    };
    options
        .values
        .node_label_selector
        .insert(HAMI_NODE_LABEL.into(), "true".into());
    options
}

/// Finds out whether HAMi can run for scenarios on `cluster`, once per run: on the run's
/// own local cluster, by finding the scheduler binary ([`find_hami_scheduler_once`]: a
/// failed module build is tried once per process); on a nextest run's shared cluster, by
/// reading what its supervisor published; elsewhere it cannot (yet).
pub async fn probe(cluster: &Cluster) -> HamiAvailability {
    if cluster.local().is_some() {
        let release = match HamiRelease::from_env() {
            Ok(r) => r,
            Err(e) => return HamiAvailability::Failed(e.to_string()),
        };
        return match find_hami_scheduler_once(&Default::default(), &release).await {
            Ok(s) => HamiAvailability::Available(format!("{} ({})", s.version, s.source)),
            Err(FindSchedulerError::Unavailable { reason }) => {
                HamiAvailability::Unavailable(reason)
            }
            Err(e) => HamiAvailability::Failed(e.to_string()),
        };
    }
    if cluster.is_local() {
        return match read_published() {
            Ok(Published::Running(e)) => {
                HamiAvailability::Available(format!("{} ({})", e.version, e.source))
            }
            Ok(Published::Unavailable(r)) => HamiAvailability::Unavailable(r),
            Ok(Published::Failed(r)) => HamiAvailability::Failed(r),
            Err(e) => HamiAvailability::Failed(e),
        };
    }
    HamiAvailability::Unavailable(
        "HAMi's scenarios run HAMi's scheduler on the local cluster, over fake nodes; this cluster was reached by kubeconfig".into(),
    )
}

/// Records `availability` into `caps`: the flag [`HAMI_FLAG`] and the fact [`HAMI_FACT`],
/// or the fact [`HAMI_UNAVAILABLE_FACT`] with the reason (a failure's reason starts with
/// `failed:`).
pub fn record(caps: Capabilities, availability: &HamiAvailability) -> Capabilities {
    match availability {
        HamiAvailability::Available(d) => {
            let caps = caps.with_flag(HAMI_FLAG).with_fact(HAMI_FACT, d.clone());
            if shared_file().is_some() {
                caps
            } else {
                caps.with_flag(HAMI_OWNED_FLAG)
            }
        }
        HamiAvailability::Unavailable(r) => caps.with_fact(HAMI_UNAVAILABLE_FACT, r.clone()),
        HamiAvailability::Failed(r) => {
            caps.with_fact(HAMI_UNAVAILABLE_FACT, format!("failed: {r}"))
        }
    }
}

/// What HAMi's scenarios require: [`HAMI_FLAG`]; a miss gives the probe's reason. A HAMi
/// that was given but is unusable (the reason starts with `failed:`) passes, so that the
/// scenarios run and the HAMi fixture fails them naming the cause, instead of skipping.
///
/// ```
/// use hami_e2e_core::Capabilities;
/// use hami_e2e_helm::{HamiAvailability, hami};
///
/// let caps = hami::record(Capabilities::default(), &HamiAvailability::Unavailable("no binary".into()));
/// assert_eq!(hami::requirement().check(&caps).unwrap_err(), "no binary");
/// let caps = hami::record(Capabilities::default(), &HamiAvailability::Available("v2.10.0".into()));
/// assert!(hami::requirement().check(&caps).is_ok());
/// ```
pub fn requirement() -> Requirement {
    Requirement::custom("HAMi's scheduler", |caps| {
        flag_or_reason(
            caps,
            HAMI_FLAG,
            HAMI_UNAVAILABLE_FACT,
            "needs HAMi's scheduler",
        )
    })
}

/// `Ok` when `caps` has `flag`, or when the probe's reason in `fact` says what was given
/// failed (`failed:`: not a reason to skip; the scenario runs and fails with the cause);
/// else the reason (`missing` when the probe did not look).
fn flag_or_reason(
    caps: &Capabilities,
    flag: &str,
    fact: &str,
    missing: &str,
) -> Result<(), String> {
    let reason = caps.facts.get(fact);
    if caps.flags.contains(flag) || reason.is_some_and(|r| r.starts_with("failed:")) {
        Ok(())
    } else {
        Err(reason
            .cloned()
            .unwrap_or_else(|| format!("{missing} (the probe did not look)")))
    }
}

/// The capability flag [`record_previous`] sets when a scheduler of the release before the
/// one in use can be had (the upgrade and rollback scenarios).
pub const HAMI_PREVIOUS_FLAG: &str = "hami-previous";
/// The capability fact with the previous release's scheduler (`v2.9.0 (from
/// HAMI_E2E_HAMI_SCHEDULER_PREVIOUS)`), or why there is none.
pub const HAMI_PREVIOUS_FACT: &str = "hami previous";

/// The scheduler of the pinned release before the one in use (`HAMI_E2E_HAMI_VERSION`, by
/// default v2.10.0): `HAMI_E2E_HAMI_SCHEDULER_PREVIOUS`, else a checkout in
/// `HAMI_E2E_HAMI_SOURCE_PREVIOUS`, else that release's Go module; found once per process.
///
/// # Errors
///
/// [`FindSchedulerError::Unavailable`] (skip) when none is given and the module cannot be
/// built, or no release before the one in use is pinned; [`FindSchedulerError::Failed`]
/// when what was given is unusable (its message names the variable).
pub async fn previous_scheduler() -> Result<HamiScheduler, FindSchedulerError> {
    let current = HamiRelease::from_env().map_err(|e| FindSchedulerError::Failed(Arc::new(e)))?;
    let Some(previous) = current.previous() else {
        return Err(FindSchedulerError::Unavailable {
            reason: format!("no HAMi release before {} is pinned", current.version()),
        });
    };
    let inputs = SchedulerInputs::previous_from_env();
    match find_hami_scheduler_once_with(&Default::default(), &previous, &inputs).await {
        Err(FindSchedulerError::Unavailable { reason }) => {
            // The module's answer, without the names of the current release's variables.
            let tail = reason
                .split_once("are unset, and ")
                .map_or(reason.as_str(), |(_, t)| t);
            Err(FindSchedulerError::Unavailable {
                reason: format!(
                    "no HAMi {} scheduler for the upgrade: {} and {} are unset, and {tail}",
                    previous.version(),
                    crate::binaries::HAMI_SCHEDULER_PREVIOUS_ENV,
                    crate::binaries::HAMI_SOURCE_PREVIOUS_ENV
                ),
            })
        }
        Err(FindSchedulerError::Failed(e))
            if inputs.scheduler.is_some() || inputs.source.is_some() =>
        {
            use crate::binaries::{
                HAMI_SCHEDULER_ENV, HAMI_SCHEDULER_PREVIOUS_ENV, HAMI_SOURCE_ENV,
                HAMI_SOURCE_PREVIOUS_ENV,
            };
            // The finder names the current release's variables; these were the previous'.
            let message = e
                .to_string()
                .replace(
                    &format!("{HAMI_SCHEDULER_ENV})"),
                    &format!("{HAMI_SCHEDULER_PREVIOUS_ENV})"),
                )
                .replace(
                    &format!("{HAMI_SOURCE_ENV})"),
                    &format!("{HAMI_SOURCE_PREVIOUS_ENV})"),
                );
            Err(FindSchedulerError::Failed(Arc::new(crate::Error::Hami {
                what: format!("HAMi {}'s scheduler for the upgrade", previous.version()),
                message,
            })))
        }
        Ok(mut s) => {
            // The finder names the current release's variable; this binary came from the
            // previous release's.
            if s.source == crate::binaries::BinarySource::Env(crate::binaries::HAMI_SCHEDULER_ENV) {
                s.source = crate::binaries::BinarySource::Env(
                    crate::binaries::HAMI_SCHEDULER_PREVIOUS_ENV,
                );
            }
            Ok(s)
        }
        other => other,
    }
}

/// Records what [`previous_scheduler`] found: [`HAMI_PREVIOUS_FLAG`] and the fact
/// [`HAMI_PREVIOUS_FACT`], or the fact alone with the reason (a failure's starting with
/// `failed:`).
pub fn record_previous(
    caps: Capabilities,
    found: &Result<HamiScheduler, FindSchedulerError>,
) -> Capabilities {
    match found {
        Ok(s) => caps
            .with_flag(HAMI_PREVIOUS_FLAG)
            .with_fact(HAMI_PREVIOUS_FACT, format!("{} ({})", s.version, s.source)),
        Err(FindSchedulerError::Unavailable { reason }) => {
            caps.with_fact(HAMI_PREVIOUS_FACT, reason.clone())
        }
        Err(e) => caps.with_fact(HAMI_PREVIOUS_FACT, format!("failed: {e}")),
    }
}

/// What the upgrade scenarios require: [`owned_requirement`] and [`HAMI_PREVIOUS_FLAG`].
///
/// ```
/// use hami_e2e_core::Capabilities;
/// use hami_e2e_helm::{HamiAvailability, hami};
///
/// let caps = hami::record(Capabilities::default(), &HamiAvailability::Available("v2.10.0".into()))
///     .with_fact(hami::HAMI_PREVIOUS_FACT, "no HAMi v2.9.0 scheduler for the upgrade: ...");
/// assert!(hami::previous_requirement().check(&caps).unwrap_err().contains("v2.9.0"));
/// ```
pub fn previous_requirement() -> Requirement {
    Requirement::custom("HAMi's previous release", |caps| {
        owned_requirement().check(caps)?;
        flag_or_reason(
            caps,
            HAMI_PREVIOUS_FLAG,
            HAMI_PREVIOUS_FACT,
            "needs the previous HAMi release",
        )
    })
}

/// What a scenario that restarts HAMi requires: [`HAMI_FLAG`] and [`HAMI_OWNED_FLAG`].
///
/// ```
/// use hami_e2e_core::Capabilities;
/// use hami_e2e_helm::{HamiAvailability, hami};
///
/// let caps = hami::record(Capabilities::default(), &HamiAvailability::Available("v2.10.0".into()));
/// assert!(hami::owned_requirement().check(&caps).is_ok());
/// let shared = Capabilities::default().with_flag(hami::HAMI_FLAG);
/// assert!(hami::owned_requirement().check(&shared).unwrap_err().contains("supervisor"));
/// ```
pub fn owned_requirement() -> Requirement {
    Requirement::custom("HAMi's scheduler, run by this process", |caps| {
        requirement().check(caps)?;
        if caps.flags.contains(HAMI_OWNED_FLAG) {
            Ok(())
        } else {
            Err("HAMi is run by the nextest shared cluster's supervisor for every test process; restarting it would fail the other processes' scenarios (run it with `cargo test`)".into())
        }
    })
}

fn shared_file() -> Option<PathBuf> {
    hami_e2e_k8s::local::shared::nextest_run_id()
        .map(|run| hami_e2e_k8s::local::shared::shared_dir(&run).join(SHARED_HAMI_FILE))
}

fn read_published() -> Result<Published, String> {
    let path = shared_file().ok_or("not under nextest, and not the run's own local cluster")?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "the shared cluster's supervisor published no HAMi (`{}`: {e})",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("`{}` is not readable: {e}", path.display()))
}

/// For the supervisor of a nextest run's shared cluster: starts the one HAMi of that
/// cluster (when a scheduler binary can be had) and publishes it in `dir`, where
/// [`HamiFixture`] and [`probe`] in the scenario processes find it. Returns the running
/// HAMi, to [`LocalHami::stop`] before the cluster stops.
pub async fn start_for_shared_cluster(
    cluster: &LocalCluster,
    dir: &std::path::Path,
) -> Option<LocalHami> {
    let (published, hami) = match start_local(cluster, "shared").await {
        Ok(h) => (Published::Running(h.endpoint().clone()), Some(h)),
        Err(Start::Unavailable(r)) => (Published::Unavailable(r), None),
        Err(Start::Failed(f)) => (Published::Failed(f.to_string()), None),
    };
    if let Some(h) = &hami {
        eprintln!("supervisor: {}", h.endpoint().describe());
    }
    let text = serde_json::to_string(&published).unwrap_or_default();
    let tmp = dir.join(format!("{SHARED_HAMI_FILE}.tmp"));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(SHARED_HAMI_FILE));
    }
    hami
}

enum Start {
    Unavailable(String),
    Failed(Failure),
}

async fn start_local(cluster: &LocalCluster, run_id: &str) -> Result<LocalHami, Start> {
    let release = HamiRelease::from_env().map_err(|e| Start::Failed(e.into()))?;
    let scheduler = match find_hami_scheduler_once(&Default::default(), &release).await {
        Ok(s) => s,
        Err(FindSchedulerError::Unavailable { reason }) => return Err(Start::Unavailable(reason)),
        Err(e) => return Err(Start::Failed(e.into())),
    };
    let mut options = default_local_options();
    options.labels = BTreeMap::from([
        (
            hami_e2e_k8s::RUN_LABEL.to_string(),
            hami_e2e_k8s::label_value(run_id),
        ),
        (
            hami_e2e_k8s::MANAGED_BY_LABEL.to_string(),
            hami_e2e_k8s::MANAGED_BY.to_string(),
        ),
    ]);
    LocalHami::start(cluster, &scheduler, options)
        .await
        .map_err(|e| Start::Failed(e.into()))
}

/// Creates fake node `name` with `devices` of `backend` (its register annotation and count
/// in capacity and allocatable, next to cpu, memory and pods; labelled [`HAMI_NODE_LABEL`]
/// and `labels`,
/// so the local HAMi sees it) and waits until it is Ready. [`Hami::add_node`] does this,
/// then hands the node to the fake device agent and waits for HAMi; this is for a program
/// that runs [`LocalHami`] and a [`FakeDeviceAgent`] itself (a benchmark, say).
///
/// ```no_run
/// # async fn f(client: kube::Client) -> Result<(), hami_e2e_core::Failure> {
/// use hami_e2e_devices::{Nvidia, profiles};
///
/// let t4 = profiles::default_for("nvidia").unwrap().fake_devices("gpu-0", 8);
/// hami_e2e_helm::hami::create_fake_node(&client, &Nvidia::default(), "gpu-0", &t4, &[]).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The backend's errors for `devices`; the API server's for the node; a timeout naming the
/// node when KWOK does not make it Ready within 30 s.
pub async fn create_fake_node(
    client: &kube::Client,
    backend: &dyn DeviceBackend,
    name: &str,
    devices: &FakeDevices,
    labels: &[(&str, &str)],
) -> Result<(), Failure> {
    create_fake_node_annotated(client, backend, name, devices, labels, &[]).await
}

/// [`create_fake_node`] with `annotations` on the node from its creation on (HAMi reads
/// some node annotations, such as Ascend's `hami-vnpu-core`, from the node it cached when
/// it first registered the devices).
///
/// # Errors
///
/// As [`create_fake_node`].
pub async fn create_fake_node_annotated(
    client: &kube::Client,
    backend: &dyn DeviceBackend,
    name: &str,
    devices: &FakeDevices,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> Result<(), Failure> {
    let fake = backend.checked_fake_node(devices)?;
    let mut spec = NodeSpec::new(name).label(HAMI_NODE_LABEL, "true");
    for (k, v) in labels {
        spec = spec.label(*k, *v);
    }
    for (k, v) in annotations {
        spec = spec.annotation(*k, *v);
    }
    for (k, v) in &fake.annotations {
        spec = spec.annotation(k, v);
    }
    for (k, v) in &fake.capacity {
        spec = spec.capacity(k, &v.0).allocatable(k, &v.0);
    }
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&Default::default(), &spec.to_node()?)
        .await
        .map_err(|e| Failure::from(e).context(format!("cannot add fake node `{name}`")))?;
    wait::until(
        &nodes,
        name,
        "to be Ready",
        Duration::from_secs(30),
        |n: Option<&Node>| n.is_some_and(wait::node_is_ready),
    )
    .await?;
    Ok(())
}

/// The real HAMi, for a run's scenarios; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct HamiFixture {
    registry: Arc<DeviceRegistry>,
}

impl HamiFixture {
    /// HAMi for the backends of `registry` (whose fake devices its agent plays).
    pub fn new(registry: Arc<DeviceRegistry>) -> Self {
        Self { registry }
    }
}

/// HAMi as a scenario sees it: where it listens, the fake device agent, and fake nodes.
pub struct Hami {
    endpoint: HamiEndpoint,
    local: Option<LocalHami>,
    agent: FakeDeviceAgent,
    client: kube::Client,
    registry: Arc<DeviceRegistry>,
    cluster: Arc<RunCluster>,
    /// The run's artifacts folder, where teardown leaves HAMi's logs.
    artifacts: Option<PathBuf>,
}

impl std::fmt::Debug for Hami {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hami")
            .field("endpoint", &self.endpoint)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl Hami {
    /// Where it listens and logs.
    pub fn endpoint(&self) -> &HamiEndpoint {
        &self.endpoint
    }

    /// The fake device agent of this process (faults: [`FakeDeviceAgent`]).
    pub fn agent(&self) -> &FakeDeviceAgent {
        &self.agent
    }

    /// HAMi's scheduler name: what its webhook writes into pods.
    pub fn scheduler_name(&self) -> &str {
        &self.endpoint.scheduler_name
    }

    /// HAMi's process on this process's local cluster, if this process started it (not
    /// under nextest, where the shared cluster's supervisor runs it).
    pub fn local(&self) -> Option<&LocalHami> {
        self.local.as_ref()
    }

    /// Stops HAMi's scheduler and starts it again with the same flags
    /// ([`LocalHami::restart`]), then waits until it has registered `nodes` again. HAMi
    /// v2.10.0 registers the nodes it had only on its next register tick (up to 15 s) or
    /// when a node is added: it drops the node events that come before it counts as
    /// started.
    ///
    /// # Errors
    ///
    /// A failure naming the cause when this process does not run HAMi (under nextest),
    /// when it cannot be started again, or when it does not register `nodes` within 30 s.
    pub async fn restart(&self, nodes: &[&str]) -> Result<(), Failure> {
        self.switch_scheduler(None, nodes).await
    }

    /// Replaces HAMi's scheduler with `binary` (another release: an upgrade or a rollback),
    /// same flags and endpoints ([`LocalHami::restart_with`]), or with the run's own binary
    /// again when `binary` is `None`; waits until it registers `nodes` (see
    /// [`restart`](Self::restart) for when HAMi registers the nodes it had).
    ///
    /// # Errors
    ///
    /// As [`restart`](Self::restart).
    pub async fn switch_scheduler(
        &self,
        binary: Option<&std::path::Path>,
        nodes: &[&str],
    ) -> Result<(), Failure> {
        let (Some(local), Some(cluster)) = (&self.local, self.cluster.local()) else {
            return Err(Failure::msg(
                "cannot replace HAMi's scheduler: this process does not run it (the shared cluster's supervisor does)",
            ));
        };
        let started = std::time::Instant::now();
        match binary {
            Some(b) => local.restart_with(cluster, b).await?,
            None => local.restart(cluster).await?,
        }
        let up = started.elapsed();
        self.endpoint
            .wait_registered(nodes, Duration::from_secs(30))
            .await?;
        tracing::info!(
            restarted = ?up,
            registered = ?started.elapsed(),
            "HAMi's scheduler replaced"
        );
        Ok(())
    }

    /// Adds a fake node `name` with `devices` of `vendor` (its register annotation and
    /// count in capacity and allocatable, next to cpu, memory and pods; labelled
    /// [`HAMI_NODE_LABEL`]), waits until it is Ready, hands it to the fake device agent, and
    /// waits until HAMi has registered it (its metrics show the node). Returns the name.
    ///
    /// # Errors
    ///
    /// The backend's errors for `devices`; the API server's for the node; a timeout naming
    /// the node when KWOK or HAMi do not take it within 30 s.
    pub async fn add_node(
        &self,
        name: &str,
        vendor: &str,
        devices: &FakeDevices,
    ) -> Result<String, Failure> {
        self.add_labelled_node(name, vendor, devices, &[]).await
    }

    /// [`add_node`](Self::add_node) with `labels` on the node from its creation on (a
    /// label patched later may reach the schedulers after a pod that selects it).
    ///
    /// # Errors
    ///
    /// As [`add_node`](Self::add_node).
    pub async fn add_labelled_node(
        &self,
        name: &str,
        vendor: &str,
        devices: &FakeDevices,
        labels: &[(&str, &str)],
    ) -> Result<String, Failure> {
        self.add_annotated_node(name, vendor, devices, labels, &[])
            .await
    }

    /// [`add_labelled_node`](Self::add_labelled_node) with `annotations` on the node from
    /// its creation on (see [`create_fake_node_annotated`]).
    ///
    /// # Errors
    ///
    /// As [`add_node`](Self::add_node).
    pub async fn add_annotated_node(
        &self,
        name: &str,
        vendor: &str,
        devices: &FakeDevices,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Result<String, Failure> {
        let backend = self.registry.get(vendor)?;
        create_fake_node_annotated(&self.client, backend, name, devices, labels, annotations)
            .await?;
        self.agent.manage(name, [backend.key()]);
        self.endpoint
            .wait_registered(&[name], Duration::from_secs(30))
            .await?;
        Ok(name.to_owned())
    }

    /// Deletes a fake node added with [`add_node`](Self::add_node) and stops playing its
    /// devices.
    ///
    /// # Errors
    ///
    /// The API server's, but for a node that is gone already.
    pub async fn remove_node(&self, name: &str) -> Result<(), Failure> {
        self.agent.forget(name);
        match Api::<Node>::all(self.client.clone())
            .delete(name, &Default::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Failure::from(e).context(format!("cannot delete fake node `{name}`"))),
        }
    }

    /// The end of HAMi's and the HAMi kube-scheduler's logs, and HAMi's lines about
    /// `pod`: for a failed scenario's diagnostics.
    pub fn diagnostics(&self, pod: Option<&str>) -> String {
        let mut out = format!(
            "{}\n--- last lines of {}:\n{}\n--- last lines of {}:\n{}\n",
            self.endpoint.describe(),
            self.endpoint.log.display(),
            self.endpoint.log_tail(40),
            self.endpoint.kube_scheduler_log.display(),
            self.endpoint.kube_scheduler_log_tail(20),
        );
        if let Some(pod) = pod {
            out.push_str(&format!("--- HAMi's lines about {pod}:\n"));
            for l in self.endpoint.log_lines_about(pod, 30) {
                out.push_str(&l);
                out.push('\n');
            }
        }
        out
    }
}

impl Fixture for HamiFixture {
    type Output = Hami;

    fn name(&self) -> String {
        "hami".into()
    }

    fn scope(&self) -> Scope {
        Scope::Run
    }

    async fn setup(&self, ctx: &FixtureContext) -> Result<Hami, Failure> {
        let cluster = ctx.fixture::<ClusterFixture>().await?;
        let (endpoint, local) = if let Some(lc) = cluster.local() {
            let hami = match start_local(lc, ctx.run_id()).await {
                Ok(h) => h,
                Err(Start::Unavailable(r)) => return Err(Failure::msg(r)),
                Err(Start::Failed(f)) => return Err(f),
            };
            (hami.endpoint().clone(), Some(hami))
        } else {
            match read_published() {
                Ok(Published::Running(e)) => (e, None),
                Ok(Published::Unavailable(r) | Published::Failed(r)) | Err(r) => {
                    return Err(Failure::msg(r));
                }
            }
        };
        tracing::info!(hami = %endpoint.describe(), "HAMi for this run");
        let agent = FakeDeviceAgent::start(cluster.client(), Arc::clone(&self.registry));
        Ok(Hami {
            endpoint,
            local,
            agent,
            client: cluster.client(),
            registry: Arc::clone(&self.registry),
            cluster,
            artifacts: ctx.artifacts_dir().ok(),
        })
    }

    async fn teardown(&self, hami: &Hami, _ctx: &TeardownContext) -> Result<(), Failure> {
        if let (Some(local), Some(lc)) = (&hami.local, hami.cluster.local()) {
            local.stop(lc).await?;
            // The cluster's folder goes with the cluster: keep HAMi's logs with the run's.
            if let Some(dir) = &hami.artifacts {
                let dir = dir.join("hami");
                std::fs::create_dir_all(&dir)?;
                for log in [&hami.endpoint.log, &hami.endpoint.kube_scheduler_log] {
                    if let Some(name) = log.file_name() {
                        std::fs::copy(log, dir.join(name)).map_err(|e| {
                            Failure::from(e).context(format!("cannot keep {}", log.display()))
                        })?;
                    }
                }
            }
        }
        Ok(())
    }
}
