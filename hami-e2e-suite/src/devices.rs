//! Scenarios every registered device backend runs, and the registry as a fixture.

use std::sync::Arc;

use hami_e2e_core::{
    Failure, Fixture, FixtureContext, Requirement, Scenario, Scope, ensure, scenario,
};
use hami_e2e_devices::{DeviceInventory, DeviceRegistry, FakeDevices, devices_on_one_node};
use std::time::Duration;

use hami_e2e_k8s::local::NodeSpec;
use hami_e2e_k8s::{ClusterFixture, wait};
use k8s_openapi::api::core::v1::Node;

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

/// The scenarios of one backend: `devices::<vendor>::fake-node` registers four fake devices
/// on a new node of the local cluster, the backend's way, and reads them back through the
/// API server and the capability probe.
pub(crate) fn backend_scenarios(registry: &DeviceRegistry) -> Vec<Arc<dyn Scenario>> {
    registry
        .iter()
        .map(|backend| {
            let vendor = backend.vendor().to_string();
            let name = format!("devices::{}::fake-node", hami_e2e_core::slug(&vendor));
            let s = scenario(name)
                .labels([
                    hami_e2e_core::slug(&vendor),
                    "devices".to_string(),
                    "smoke".to_string(),
                ])
                .requires(Requirement::flag(LOCAL_CLUSTER))
                .run(move |ctx| {
                    let vendor = vendor.clone();
                    async move {
                        let cluster = ctx.fixture::<ClusterFixture>().await?;
                        let registry = ctx.fixture::<DevicesFixture>().await?;
                        let backend = registry.get(&vendor)?;
                        if !cluster.is_local() {
                            return Err(Failure::msg("needs a local cluster to add fake nodes"));
                        }
                        let node_name = hami_e2e_k8s::label_value(&format!(
                            "fake-{vendor}-{}-{}",
                            ctx.run_id(),
                            ctx.attempt()
                        ));
                        let fake = FakeDevices::new(&node_name, 4, "E2E", 16384);
                        let devices = backend.fake_node(&fake)?;
                        let mut spec = NodeSpec::new(&node_name).label("gpu", "on");
                        for (k, v) in &devices.annotations {
                            spec = spec.annotation(k, v);
                        }
                        for (k, v) in &devices.capacity {
                            spec = spec.capacity(k, &v.0);
                        }
                        let client = cluster.client();
                        let nodes = kube::Api::<Node>::all(client.clone());
                        let cleanup_name = node_name.clone();
                        let cleanup_nodes = nodes.clone();
                        ctx.defer(format!("remove node {node_name}"), async move {
                            cleanup_nodes
                                .delete(&cleanup_name, &Default::default())
                                .await?;
                            Ok(())
                        });
                        // A KWOK node: KWOK (of the run's cluster, or of the one a nextest
                        // run shares) marks it Ready.
                        ctx.step("add a node with four fake devices", async {
                            nodes.create(&Default::default(), &spec.to_node()?).await?;
                            wait::until(
                                &nodes,
                                &node_name,
                                "to be Ready",
                                Duration::from_secs(60),
                                wait::is_node_ready(),
                            )
                            .await?;
                            Ok::<_, Failure>(())
                        })
                        .await?;
                        let node = nodes.get(&node_name).await?;
                        let read = backend.node_devices(&node)?;
                        ensure!(
                            read.len() == 4,
                            "{vendor}: {} devices read back",
                            read.len()
                        );
                        ensure!(
                            read.iter().all(|d| d.health),
                            "{vendor}: unhealthy devices read back: {read:?}"
                        );
                        let (inventory, errors) =
                            DeviceInventory::from_nodes(&registry, std::slice::from_ref(&node));
                        ensure!(errors.is_empty(), "{vendor}: {errors:?}");
                        let caps = inventory.record(Default::default(), false);
                        ensure!(
                            caps.quantity(&devices_on_one_node(&vendor)) == 4,
                            "{vendor}: the probe counts {} devices",
                            caps.quantity(&devices_on_one_node(&vendor))
                        );
                        Ok(())
                    }
                });
            Arc::new(s) as Arc<dyn Scenario>
        })
        .collect()
}
