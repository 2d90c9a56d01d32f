//! The suite's fixtures: the run's device backends, and the fake device pool their
//! scenarios are admitted to; and the inventory of the cluster's devices the probe records.

use std::sync::Arc;
use std::time::Duration;

use hami_e2e_core::{Failure, Fixture, FixtureContext, Scope};
use hami_e2e_devices::{DeviceInventory, DeviceRegistry, FakeDevices, FakeNode};
use hami_e2e_k8s::local::NodeSpec;
use hami_e2e_k8s::{ClusterFixture, wait};
use k8s_openapi::api::core::v1::{Node, Pod};

/// The flag the suite's probe sets on a local cluster (the run's own, or the one a nextest
/// run shares): fake nodes can be added.
pub const LOCAL_CLUSTER: &str = "local-cluster";

/// The run's device backends, as a run-scoped fixture.
#[derive(Debug, Clone)]
pub struct DevicesFixture {
    registry: Arc<DeviceRegistry>,
}

impl DevicesFixture {
    /// A fixture serving `registry`.
    pub fn new(registry: Arc<DeviceRegistry>) -> Self {
        Self { registry }
    }
}

impl Fixture for DevicesFixture {
    type Output = Arc<DeviceRegistry>;

    fn name(&self) -> String {
        "devices".into()
    }

    fn scope(&self) -> Scope {
        Scope::Run
    }

    async fn setup(&self, _ctx: &FixtureContext) -> Result<Arc<DeviceRegistry>, Failure> {
        Ok(Arc::clone(&self.registry))
    }
}

/// The label on the nodes of the fake device pool (its value: the vendor), which HAMi's
/// clean-up in `hami-e2e-helm` leaves alone.
pub const FAKE_DEVICES_LABEL: &str = "hami-e2e.io/fake-devices";

/// Devices on each node of the fake device pool.
pub const POOL_DEVICES_PER_NODE: u32 = 4;

/// The fake device pool: on a local cluster, one node per backend of the registry
/// (`hami-e2e-pool-<vendor>`) with [`POOL_DEVICES_PER_NODE`] whole fake devices (split
/// count 1, so Kubernetes' count of the resource and HAMi's device count agree), registered
/// the backend's way. The suite's probe sets it up, so the devices are in the run's
/// capabilities and scenarios' device demands are admitted against them. On a cluster that
/// is not local it adds nothing: the cluster's own devices are the pool.
///
/// Creating a pool node that exists already is fine, so the processes of a nextest run
/// share one pool on their shared cluster; the nodes go with the local cluster.
#[derive(Debug, Clone)]
pub struct DevicePoolFixture {
    registry: Arc<DeviceRegistry>,
}

impl DevicePoolFixture {
    /// A pool with a node for each backend of `registry`.
    pub fn new(registry: Arc<DeviceRegistry>) -> Self {
        Self { registry }
    }

    /// The pool node of `vendor`.
    pub fn node_name(vendor: &str) -> String {
        hami_e2e_k8s::label_value(&format!("hami-e2e-pool-{}", hami_e2e_core::slug(vendor)))
    }
}

impl Fixture for DevicePoolFixture {
    /// The pool's node names (none on a cluster that is not local).
    type Output = Vec<String>;

    fn name(&self) -> String {
        "device-pool".into()
    }

    fn scope(&self) -> Scope {
        Scope::Run
    }

    async fn setup(&self, ctx: &FixtureContext) -> Result<Vec<String>, Failure> {
        let cluster = ctx.fixture::<ClusterFixture>().await?;
        if !cluster.is_local() {
            return Ok(Vec::new());
        }
        let nodes = kube::Api::<Node>::all(cluster.client());
        let mut names = Vec::new();
        for backend in self.registry.iter() {
            let name = Self::node_name(&backend.key());
            let mut fake = FakeDevices::new(&name, POOL_DEVICES_PER_NODE, "E2E", 16384);
            fake.split = 1;
            let spec = fake_node_spec(&name, &backend.checked_fake_node(&fake)?)
                .label(FAKE_DEVICES_LABEL, backend.key())
                .label("gpu", "on");
            match nodes.create(&Default::default(), &spec.to_node()?).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    return Err(Failure::from(e).context(format!("cannot add pool node `{name}`")));
                }
            }
            names.push(name);
        }
        for name in &names {
            wait::until(
                &nodes,
                name,
                "to be Ready",
                Duration::from_secs(60),
                wait::is_node_ready(),
            )
            .await?;
        }
        Ok(names)
    }
}

/// A local cluster's node `name` that offers `devices` (a backend's
/// [`fake_node`](hami_e2e_devices::DeviceBackend::fake_node)): its annotations, and its capacity and
/// allocatable.
///
/// ```
/// use hami_e2e_devices::{DeviceBackend, FakeDevices, Nvidia};
///
/// let fake = Nvidia::default().fake_node(&FakeDevices::new("gpu-0", 2, "Tesla T4", 15360))?;
/// let node = hami_e2e_suite::fake_node_spec("gpu-0", &fake).to_node()?;
/// let capacity = node.status.unwrap().capacity.unwrap();
/// assert_eq!(capacity["nvidia.com/gpu"].0, "20");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn fake_node_spec(name: &str, devices: &FakeNode) -> NodeSpec {
    let mut spec = NodeSpec::new(name);
    for (k, v) in &devices.annotations {
        spec = spec.annotation(k, v);
    }
    for (k, v) in &devices.capacity {
        spec = spec.capacity(k, &v.0);
    }
    spec
}

/// The devices of `cluster` for the probe and the verdict: on a local cluster the pool's
/// nodes only (not the short-lived nodes of `fake-node` scenarios, of this process or
/// another's), minus what other workloads' pods were allocated (a shared cluster). Pods
/// count as the run's own, accounted by admission, when labelled with `run_id`, or on a
/// local cluster when hami-e2e's (its processes share one admission file).
pub(crate) async fn inventory(
    cluster: &hami_e2e_k8s::Cluster,
    registry: &DeviceRegistry,
    run_id: &str,
) -> Result<DeviceInventory, Failure> {
    use hami_e2e_k8s::{MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL};
    let local = cluster.is_local();
    let nodes: Vec<Node> = kube::Api::<Node>::all(cluster.client())
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|n| {
            !local
                || n.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(FAKE_DEVICES_LABEL))
        })
        .collect();
    let (mut inventory, errors) = DeviceInventory::from_nodes(registry, &nodes);
    for e in errors {
        tracing::warn!("{e}");
    }
    let pods = match kube::Api::<Pod>::all(cluster.client())
        .list(&Default::default())
        .await
    {
        Ok(pods) => pods.items,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot list pods: devices other workloads use are not known, so admission may hand them out"
            );
            return Ok(inventory);
        }
    };
    let run = hami_e2e_k8s::label_value(run_id);
    let ours = |p: &Pod| {
        let labels = p.metadata.labels.as_ref();
        if local {
            labels
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .map(String::as_str)
                == Some(MANAGED_BY)
        } else {
            labels.and_then(|l| l.get(RUN_LABEL)) == Some(&run)
        }
    };
    for e in inventory.add_pod_usage(registry, &pods, ours) {
        tracing::warn!(error = %e, "a pod's device allocation does not parse");
    }
    Ok(inventory)
}
