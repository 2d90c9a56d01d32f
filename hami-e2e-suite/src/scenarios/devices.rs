//! Scenarios every registered device backend runs: `devices::<vendor>::{fake-node,
//! whole-devices, node-capacity, node-selector, memory-limit}`.

use std::sync::Arc;
use std::time::Duration;

use hami_e2e_core::{
    Context, Demand, Failure, FnScenario, Requirement, Scenario, ensure, scenario,
};
use hami_e2e_devices::{
    DeviceBackend, DeviceInventory, DeviceRegistry, DeviceRequest, FakeDevices,
    devices_on_one_node, real_device_flag,
};
use hami_e2e_k8s::{ClusterFixture, NamespaceFixture, NodeChangesFixture, TestNamespace, wait};
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::fixtures::{DevicesFixture, LOCAL_CLUSTER, fake_node_spec};
use crate::scenarios::pod::DevicePod;

/// How long the capacity scenarios wait for a pod to run or be refused.
const CAPACITY_WAIT: Duration = Duration::from_secs(30);

/// Waits until pod `name` runs, and checks that it runs on `node`.
async fn running_on(ns: &TestNamespace, name: &str, node: &str) -> Result<(), Failure> {
    let pod = wait::pod_running(&ns.api(), name, CAPACITY_WAIT).await?;
    let on = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
    ensure!(on == node, "pod {name} runs on `{on}`, not on `{node}`");
    Ok(())
}

/// What a capacity scenario's body works with: its namespace, and the node and number of
/// devices admission reserved for it.
struct Capacity {
    ctx: Context,
    registry: Arc<DeviceRegistry>,
    vendor: String,
    ns: Arc<TestNamespace>,
    node: String,
    count: u32,
    /// Whether the cluster is a local one (see [`pod`](Self::pod)).
    local: bool,
}

impl Capacity {
    fn backend(&self) -> Result<&dyn DeviceBackend, Failure> {
        Ok(self.registry.get(&self.vendor)?)
    }

    /// A pod `name` asking the vendor for `count` whole devices. On the local cluster it
    /// opts out of HAMi's webhook (`hami.io/webhook: ignore`): these scenarios check
    /// Kubernetes' own accounting of the fake devices on the pool, which HAMi (when a HAMi
    /// scenario runs it beside them) does not serve; on a real cluster its pods go through
    /// HAMi, as every device pod must for HAMi's device plugins to allocate them.
    fn pod(&self, name: &str, count: u32) -> Result<DevicePod, Failure> {
        let pod = DevicePod::new(name);
        let pod = if self.local {
            pod.ignored_by_hami_webhook()
        } else {
            pod
        };
        pod.devices(self.backend()?, &DeviceRequest::devices(count))
    }

    /// Creates pod `name` asking for `count` devices on the reserved node, and waits until
    /// it runs there.
    async fn run_pod(&self, name: &str, count: u32) -> Result<(), Failure> {
        let pod = self.pod(name, count)?.on_node(&self.node).build();
        self.ctx
            .step(
                format!("pod {name} asks for {count} on {} and runs", self.node),
                async {
                    self.ns.apply(&pod).await?;
                    running_on(&self.ns, name, &self.node).await
                },
            )
            .await
    }
}

/// A scenario `devices::<vendor>::<name>` (labels: the vendor, `devices` and `kind`) holding
/// `demand`: its body gets a [`Capacity`];
/// its namespace's teardown removes its pods before admission hands the devices on.
fn capacity_scenario<F, Fut>(
    vendor: String,
    name: &str,
    kind: &str,
    demand: Demand,
    requires: Vec<Requirement>,
    body: F,
) -> FnScenario
where
    F: Fn(Capacity) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    let slug = hami_e2e_core::slug(&vendor);
    let mut builder = scenario(format!("devices::{slug}::{name}"))
        .labels([slug, "devices".into(), kind.into()])
        .demand(demand);
    for r in requires {
        builder = builder.requires(r);
    }
    builder.run(move |ctx| {
        let (vendor, body) = (vendor.clone(), body.clone());
        async move {
            let registry = ctx.fixture::<DevicesFixture>().await?;
            let local = ctx.fixture::<ClusterFixture>().await?.is_local();
            // Its teardown deletes its pods and waits until they are gone, since the
            // scenario holds devices: they are free when admission hands them on.
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            let devices = ctx.devices();
            let node = devices
                .node(&vendor)
                .ok_or_else(|| Failure::msg(format!("admission reserved no {vendor} device")))?
                .to_string();
            let count = devices.all_devices().filter(|d| d.kind == vendor).count();
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            body(Capacity {
                ctx,
                registry: Arc::clone(&*registry),
                vendor,
                ns,
                node,
                count,
                local,
            })
            .await
        }
    })
}

/// `devices::<vendor>::whole-devices`: a pod asking for two whole devices runs on the node
/// that holds them.
fn whole_devices(vendor: String) -> FnScenario {
    let demand = Demand::devices(vendor.clone(), 2).exclusive();
    capacity_scenario(
        vendor,
        "whole-devices",
        "capacity",
        demand,
        Vec::new(),
        |c| async move { c.run_pod("two", 2).await },
    )
}

/// Needs a node with at least `count` devices of `vendor` that are not shared (split count
/// 1): there Kubernetes' count of the resource is the device count, with or without HAMi.
/// On the local cluster the pool registers its devices with split count 1 and Kubernetes
/// counts them (HAMi's model of Cambricon cards, shared 100 ways, does not apply there).
fn unshared_node(vendor: &str, count: usize) -> Requirement {
    let v = vendor.to_string();
    Requirement::custom(
        format!("a node of {count} unshared {vendor} devices"),
        move |caps| {
            if caps.flags.contains(LOCAL_CLUSTER) {
                return Ok(());
            }
            let mut per_node: std::collections::BTreeMap<&str, (usize, bool)> = Default::default();
            for d in caps.devices.iter().filter(|d| d.kind == v) {
                let e = per_node.entry(&d.node).or_insert((0, true));
                e.0 += 1;
                e.1 &= d.shares == 1;
            }
            if per_node.values().any(|(n, whole)| *n >= count && *whole) {
                Ok(())
            } else {
                Err(format!(
                    "needs a node of {count} unshared {v} devices (split count 1); none here"
                ))
            }
        },
    )
}

/// `devices::<vendor>::node-capacity`: on a node whose every device it holds (N of them),
/// a pod asking for N-1 runs, one asking for 2 more is refused by the scheduler, one asking
/// for the last device runs, and the refused one runs once the first is deleted: the
/// node's devices are counted exactly.
fn node_capacity(vendor: String) -> FnScenario {
    let demand = Demand::whole_node(vendor.clone()).at_least(3);
    let requires = vec![unshared_node(&vendor, 3)];
    capacity_scenario(
        vendor,
        "node-capacity",
        "capacity",
        demand,
        requires,
        |c| async move {
            let n = c.count;
            ensure!(
                n >= 3,
                "needs a node with at least 3 {} devices, has {n}",
                c.vendor
            );
            c.run_pod("most", n - 1).await?;
            let refused = c.pod("two-more", 2)?.on_node(&c.node).build();
            c.ctx
                .step(
                    "pod two-more asks for 2 with 1 left and is refused",
                    async {
                        c.ns.apply(&refused).await?;
                        let u =
                            wait::pod_unschedulable(&c.ns.api(), "two-more", CAPACITY_WAIT).await?;
                        ensure!(
                            u.message.contains("Insufficient"),
                            "refused for another reason: {}",
                            u.message
                        );
                        Ok::<_, Failure>(())
                    },
                )
                .await?;
            c.run_pod("last", 1).await?;
            c.ctx
                .step("delete pod most: two-more runs", async {
                    let pods: kube::Api<Pod> = c.ns.api();
                    pods.delete("most", &Default::default()).await?;
                    wait::deleted(&pods, "most", CAPACITY_WAIT).await?;
                    running_on(&c.ns, "two-more", &c.node).await
                })
                .await
        },
    )
}

/// `devices::<vendor>::node-selector`: the node holding its device gets a label of the
/// run's (through the node-change ledger, undone after the scenario, or by the reaper if the
/// run is killed), and a pod selecting that label and asking for the device runs there.
fn node_selector(vendor: String) -> FnScenario {
    let demand = Demand::devices(vendor.clone(), 1).exclusive();
    capacity_scenario(
        vendor,
        "node-selector",
        "capacity",
        demand,
        Vec::new(),
        |c| async move {
            let changes = c.ctx.fixture::<NodeChangesFixture>().await?;
            let value =
                hami_e2e_k8s::label_value(&format!("{}-{}", c.ctx.run_id(), c.ctx.attempt()));
            c.ctx
                .step(
                    format!("label node {} {SELECTOR_LABEL}={value}", c.node),
                    async {
                        changes
                            .set_label(&c.node, SELECTOR_LABEL, Some(&value))
                            .await
                    },
                )
                .await?;
            let pod = c
                .pod("selected", 1)?
                .node_selector(SELECTOR_LABEL, &value)
                .build();
            c.ctx
                .step("a pod selecting the label runs on that node", async {
                    c.ns.apply(&pod).await?;
                    running_on(&c.ns, "selected", &c.node).await
                })
                .await
        },
    )
}

/// The label `devices::<vendor>::node-selector` puts on a node for the time of the scenario.
pub const SELECTOR_LABEL: &str = "hami-e2e.io/selected";

/// The scenarios of one backend: `devices::<vendor>::fake-node` registers four fake devices
/// on a new node of the local cluster, the backend's way, and reads them back through the
/// API server and the capability probe.
pub(crate) fn backend_scenarios(registry: &DeviceRegistry) -> Vec<Arc<dyn Scenario>> {
    registry
        .iter()
        .flat_map(|backend| {
            let vendor = backend.key();
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
                        let spec = fake_node_spec(&node_name, &backend.checked_fake_node(&fake)?)
                            .label("gpu", "on");
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
                        // What the API server kept of the capacity: HAMi's pods ask for it.
                        let status = node.status.clone().unwrap_or_default();
                        for (what, list) in [
                            ("capacity", status.capacity),
                            ("allocatable", status.allocatable),
                        ] {
                            hami_e2e_devices::check_fake_capacity(
                                &vendor,
                                &backend.resource_names().count,
                                &list.unwrap_or_default(),
                                &fake,
                            )
                            .map_err(|e| Failure::assertion(format!("node status.{what}: {e}")))?;
                        }
                        let read = backend.node_devices(&node)?;
                        ensure!(
                            read.len() == 4,
                            "{vendor}: node {node_name} reads back {} devices, expected 4 (the fake node's register annotation: {:?})",
                            read.len(),
                            backend
                                .annotation_keys()
                                .register
                                .as_ref()
                                .and_then(|k| node.metadata.annotations.as_ref()?.get(k))
                        );
                        ensure!(
                            read.iter().all(|d| d.health),
                            "{vendor}: node {node_name} reads back unhealthy devices: {read:?}"
                        );
                        let (inventory, errors) =
                            DeviceInventory::from_nodes(&registry, std::slice::from_ref(&node));
                        ensure!(
                            errors.is_empty(),
                            "{vendor}: {}",
                            errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                        );
                        let caps = inventory.record(Default::default(), false);
                        ensure!(
                            caps.quantity(&devices_on_one_node(&vendor)) == 4,
                            "{vendor}: the probe counts {} devices on node {node_name}, expected 4",
                            caps.quantity(&devices_on_one_node(&vendor))
                        );
                        Ok(())
                    }
                });
            let mut all: Vec<Arc<dyn Scenario>> = vec![
                Arc::new(s),
                Arc::new(whole_devices(backend.key())),
                Arc::new(node_capacity(backend.key())),
                Arc::new(node_selector(backend.key())),
            ];
            if backend.limit_probe_image().is_some() {
                all.push(Arc::new(memory_limit(backend.key())));
            }
            all
        })
        .collect()
}

/// The memory the limit probe's pod asks for.
const PROBE_GRANT_MIB: u64 = 3000;

/// `devices::<vendor>::memory-limit` (real devices, through the cluster's HAMi; vendors with
/// a limit probe): a pod asking one device with 3000 MiB runs the backend's probe
/// ([`DeviceBackend::limit_probe_command`], NVIDIA: `nvidia_probe::MEMORY_PROBE`) in its
/// probe image; with what HAMi granted (the pod's allocation annotation), the probe's
/// output must prove the limit: an allocation under the grant succeeds and one over it is
/// refused, and the container is shown the grant. Label `limits`; skipped without real
/// devices (on the local cluster there is no HAMi-core to test).
fn memory_limit(vendor: String) -> FnScenario {
    let demand = Demand::devices(vendor.clone(), 1).memory_mib(PROBE_GRANT_MIB);
    let requires = vec![Requirement::flag(real_device_flag(&vendor))];
    capacity_scenario(
        vendor,
        "memory-limit",
        "limits",
        demand,
        requires,
        |c| async move {
            let backend = c.backend()?;
            let asked = [hami_e2e_devices::ContainerDevice::new(
                "asked",
                backend.device_type(),
                PROBE_GRANT_MIB,
                0,
            )];
            let (Some(image), Some(command)) = (
                backend.limit_probe_image(),
                backend.limit_probe_command(&asked),
            ) else {
                return Err(Failure::msg(format!("{} has no limit probe", c.vendor)));
            };
            let pod = DevicePod::new("limit-probe")
                .image(image)
                .command(command)
                .env("NVIDIA_DRIVER_CAPABILITIES", "compute,utility")
                .on_node(&c.node)
                .devices(
                    backend,
                    &DeviceRequest::devices(1).memory_mib(PROBE_GRANT_MIB),
                )?;
            c.ns.apply(&pod.build()).await?;
            let api = c.ns.api::<Pod>();
            let done = c
                .ctx
                .step(
                    format!("the probe runs in {image} on {} and ends", c.node),
                    wait::until(
                        &api,
                        "limit-probe",
                        "to end",
                        Duration::from_secs(300),
                        |p: Option<&Pod>| {
                            p.and_then(|p| p.status.as_ref())
                                .and_then(|s| s.phase.as_deref())
                                .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
                        },
                    ),
                )
                .await?;
            let logs = api
                .logs("limit-probe", &Default::default())
                .await
                .map_err(|e| Failure::msg(format!("cannot read the probe's output: {e}")))?;
            c.ctx.attach("limit probe output", logs.clone());
            let granted: Vec<hami_e2e_devices::ContainerDevice> = backend
                .pod_allocation(
                    done.metadata
                        .annotations
                        .as_ref()
                        .unwrap_or(&Default::default()),
                )?
                .devices()
                .cloned()
                .collect();
            ensure!(
                !granted.is_empty(),
                "the probe's pod carries no {} allocation: HAMi did not schedule it",
                c.vendor
            );
            backend
                .check_limit_probe(&logs, &granted)
                .map_err(|e| Failure::assertion(e.to_string()))?;
            Ok(())
        },
    )
}
