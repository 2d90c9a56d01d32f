//! HAMi's own scenarios, `hami::<vendor>::<behaviour>`: the real HAMi scheduler and webhook
//! (see `hami_e2e_helm::HamiFixture`) over fake nodes of each backend, whose device plugins
//! the fake device agent plays.
//!
//! Every scenario adds fake nodes of its own (HAMi registers a node the moment it is
//! added), pins its pods to them, and removes them afterwards, so scenarios run side by side
//! without sharing a device. On failure, the tail of HAMi's and the HAMi kube-scheduler's
//! logs and HAMi's lines about the scenario's pods are attached to the report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hami_e2e_core::{Context, Failure, Requirement, Scenario, ensure, scenario};
use hami_e2e_devices::{
    BIND_PHASE, DeviceBackend, DeviceRegistry, DeviceRequest, FakeDevices, PodRequest, profiles,
};
use hami_e2e_helm::{Hami, HamiFixture};
use hami_e2e_k8s::{ClusterFixture, NamespaceFixture, PodBuilder, TestNamespace, wait};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, ResourceExt};

use crate::devices::{DevicesFixture, LOCAL_CLUSTER};

/// How long a HAMi scenario waits for one pod to run or be refused. HAMi binds in well
/// under a second; the margin is for a loaded 2-core machine.
const POD_WAIT: Duration = Duration::from_secs(30);

/// The vendors HAMi's device config (as the local HAMi runs it) serves.
const HAMI_VENDORS: &[&str] = &["nvidia", "cambricon", "hygon", "ascend"];

/// The fake devices HAMi's scenarios give `backend`: its vendor's default real model
/// ([`profiles`]), or for Ascend the profile of its chip; `None` for a backend HAMi's
/// device config does not serve or no profile describes.
fn profile_of(backend: &dyn DeviceBackend) -> Option<&'static profiles::DeviceProfile> {
    let vendor = backend.vendor();
    if !HAMI_VENDORS.contains(&vendor) {
        return None;
    }
    if vendor == "ascend" {
        profiles::find(vendor, backend.device_type()).filter(|p| p.model == backend.device_type())
    } else {
        profiles::default_for(vendor)
    }
}

/// `mib` rounded up to the backend's memory unit (Cambricon: 256 MiB).
fn in_units(backend: &dyn DeviceBackend, mib: u64) -> u64 {
    let unit = backend.memory_unit_mib().max(1);
    mib.div_ceil(unit) * unit
}

/// A request of one device with `mib` of memory and, where the vendor takes a core share
/// without a special mode (not Ascend), `cores`.
fn one_device(backend: &dyn DeviceBackend, mib: u64, cores: u32) -> DeviceRequest {
    let request = DeviceRequest::devices(1).memory_mib(in_units(backend, mib));
    if backend.vendor() == "ascend" {
        request
    } else {
        request.cores(cores)
    }
}

/// A pod asking `backend` for `request`, pinned to `node`; HAMi's webhook sets its scheduler.
fn hami_pod(
    backend: &dyn DeviceBackend,
    name: &str,
    node: &str,
    request: &DeviceRequest,
) -> Result<Pod, Failure> {
    let resources = backend.container_resources(request)?;
    let mut pod = PodBuilder::new(name)
        .command(["sleep", "3600"])
        .node_selector("kubernetes.io/hostname", node);
    for (k, v) in resources.limits.unwrap_or_default() {
        pod = pod.limit(k, v.0);
    }
    Ok(pod.build())
}

/// What a HAMi scenario's body works with.
struct Case {
    ctx: Context,
    hami: Arc<Hami>,
    registry: Arc<DeviceRegistry>,
    vendor: String,
    ns: Arc<TestNamespace>,
}

impl Case {
    fn backend(&self) -> Result<&dyn DeviceBackend, Failure> {
        Ok(self.registry.get(&self.vendor)?)
    }

    /// Adds a fake node of `devices` devices of the vendor's profile, removed after the
    /// scenario; returns its name.
    async fn node(&self, what: &str, devices: u32) -> Result<String, Failure> {
        let backend = self.backend()?;
        let profile = profile_of(backend)
            .ok_or_else(|| Failure::msg(format!("no device profile for {}", self.vendor)))?;
        let name = hami_e2e_k8s::label_value(&format!(
            "hami-{}-{what}-{}-{}",
            hami_e2e_core::slug(&self.vendor),
            &self.ctx.run_id()[self.ctx.run_id().len().saturating_sub(6)..],
            self.ctx.attempt()
        ));
        let fake: FakeDevices = profile.fake_devices(&name, devices);
        let hami = Arc::clone(&self.hami);
        let cleanup = name.clone();
        self.ctx.defer(format!("remove node {name}"), async move {
            hami.remove_node(&cleanup).await
        });
        self.ctx
            .step(
                format!(
                    "add node {name} with {devices} {} and wait until HAMi registers it",
                    profile.model
                ),
                self.hami.add_node(&name, &self.vendor, &fake),
            )
            .await
    }

    /// Creates `pod`.
    async fn create(&self, pod: &Pod) -> Result<(), Failure> {
        self.ns.apply(pod).await?;
        Ok(())
    }

    /// Waits until pod `name` runs on `node` with its allocation acknowledged
    /// (`bind-phase: success`), and returns it.
    async fn running(&self, name: &str, node: &str) -> Result<Pod, Failure> {
        let api = self.ns.api::<Pod>();
        let pod = wait::pod_running(&api, name, POD_WAIT).await?;
        let on = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        ensure!(on == node, "pod {name} runs on `{on}`, not on `{node}`");
        let pod = wait::until(
            &api,
            name,
            "to have bind-phase success",
            POD_WAIT,
            |p: Option<&Pod>| {
                p.is_some_and(|p| {
                    p.annotations().get(BIND_PHASE).map(String::as_str) == Some("success")
                })
            },
        )
        .await?;
        Ok(pod)
    }

    /// Checks what HAMi wrote on `pod` against `request`, with `node`'s devices.
    async fn check_allocation(
        &self,
        pod: &Pod,
        request: &DeviceRequest,
        node: &str,
    ) -> Result<hami_e2e_devices::PodAllocation, Failure> {
        let backend = self.backend()?;
        let node_obj = Api::<Node>::all(self.ns.client()).get(node).await?;
        let devices = backend.node_devices(&node_obj)?;
        let allocation = backend.pod_allocation(pod.annotations())?;
        backend
            .check_allocation(&PodRequest::single(request.clone()), &allocation, &devices)
            .map_err(|e| Failure::assertion(format!("pod {}: {e}", pod.name_any())))?;
        ensure!(
            allocation.node.as_deref() == Some(node),
            "pod {}: hami.io/vgpu-node is {:?}, not {node}",
            pod.name_any(),
            allocation.node
        );
        Ok(allocation)
    }

    /// Waits until HAMi's node lock (the vendor's) is gone from `node`.
    async fn lock_released(&self, node: &str) -> Result<(), Failure> {
        let key = self.backend()?.annotation_keys().node_lock.clone();
        let nodes = Api::<Node>::all(self.ns.client());
        wait::until(
            &nodes,
            node,
            &format!("to have no {key}"),
            POD_WAIT,
            move |n: Option<&Node>| n.is_some_and(|n| !n.annotations().contains_key(&key)),
        )
        .await?;
        Ok(())
    }

    /// Waits (up to 10 s) until the fake device agent has counted `n` acknowledged
    /// allocations on `node` (it counts once it has also released the lock), and checks it.
    async fn acknowledged(&self, node: &str, n: u64) -> Result<(), Failure> {
        let agent = self.hami.agent();
        let started = Instant::now();
        while agent.acknowledged(node) < n && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = agent.acknowledged(node);
        ensure!(
            got == n,
            "the fake device plugin acknowledged {got} allocations on {node}, not {n}"
        );
        Ok(())
    }

    /// Waits for a `reason` event about pod `name` whose message contains `message`.
    async fn event(&self, name: &str, reason: &str, message: &str) -> Result<String, Failure> {
        let e = wait::event_with_message(
            &self.ns.client(),
            self.ns.name(),
            "Pod",
            name,
            reason,
            message,
            POD_WAIT,
        )
        .await?;
        Ok(e.message.unwrap_or_default())
    }
}

/// `hami::<vendor>::<name>`, requiring HAMi and a local cluster, its body given a [`Case`];
/// on failure HAMi's diagnostics are attached.
fn hami_scenario<F, Fut>(
    vendor: &str,
    name: &str,
    labels: &[&str],
    body: F,
) -> hami_e2e_core::FnScenario
where
    F: Fn(Case) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    let slug = hami_e2e_core::slug(vendor);
    let mut all_labels = vec![slug.clone(), "hami".to_string()];
    all_labels.extend(labels.iter().map(ToString::to_string));
    let vendor = vendor.to_string();
    scenario(format!("hami::{slug}::{name}"))
        .labels(all_labels)
        .requires(Requirement::flag(LOCAL_CLUSTER))
        .requires(hami_e2e_helm::hami::requirement())
        .run(move |ctx| {
            let (vendor, body) = (vendor.clone(), body.clone());
            async move {
                ctx.fixture::<ClusterFixture>().await?;
                let hami = ctx.fixture::<HamiFixture>().await?;
                let registry = ctx.fixture::<DevicesFixture>().await?;
                let ns = ctx.fixture::<NamespaceFixture>().await?;
                let case = Case {
                    ctx: ctx.clone(),
                    hami: Arc::clone(&hami),
                    registry: Arc::clone(&*registry),
                    vendor,
                    ns: Arc::clone(&ns),
                };
                let result = body(case).await;
                if result.is_err() {
                    ctx.attach("HAMi", hami.diagnostics(Some(ns.name())));
                }
                result
            }
        })
}

/// `hami::<vendor>::allocation`: a pod asking for one device with memory and cores is
/// mutated by HAMi's webhook (its scheduler name), filtered and bound by HAMi to the fake
/// node (`FilteringSucceed`, `BindingSucceed`), its allocation annotation matches the
/// request on one of the node's devices, the fake device plugin acknowledges it
/// (`bind-phase: success`), it runs, and the node lock is released.
fn allocation(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "allocation", &["smoke"], |c| async move {
        let node = c.node("alloc", 2).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 3000, 30);
        let pod = hami_pod(backend, "alloc", &node, &request)?;
        c.ctx
            .step("create a pod asking for one device", c.create(&pod))
            .await?;
        let pod = c
            .ctx
            .step("it runs on the fake node", c.running("alloc", &node))
            .await?;
        let scheduler = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_default();
        ensure!(
            scheduler == c.hami.scheduler_name(),
            "HAMi's webhook did not set the scheduler: schedulerName is `{scheduler}`, not `{}`",
            c.hami.scheduler_name()
        );
        c.ctx
            .step(
                "HAMi's allocation matches the request",
                c.check_allocation(&pod, &request, &node),
            )
            .await?;
        let filtered = c
            .ctx
            .step(
                "HAMi filtered it",
                c.event("alloc", "FilteringSucceed", &node),
            )
            .await?;
        ensure!(
            filtered.contains("find fit node"),
            "FilteringSucceed says `{filtered}`"
        );
        c.ctx
            .step("HAMi bound it", c.event("alloc", "BindingSucceed", &node))
            .await?;
        c.ctx
            .step("the node lock is released", c.lock_released(&node))
            .await?;
        c.acknowledged(&node, 1).await
    })
}

/// `hami::<vendor>::sharing`: on a node with one device, two pods of 40 % of its memory
/// each share it (the same device in both allocations); a third of 40 % does not fit and
/// stays Pending with HAMi's `FilteringFailed` events (`CardInsufficientMemory` on the node,
/// and `no available node`).
fn sharing(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "sharing", &[], |c| async move {
        let node = c.node("share", 1).await?;
        let backend = c.backend()?;
        let profile = profile_of(backend).ok_or_else(|| Failure::msg("no profile"))?;
        let request = one_device(backend, profile.memory_mib * 2 / 5, 20);
        let mut ids = Vec::new();
        for name in ["first", "second"] {
            let pod = hami_pod(backend, name, &node, &request)?;
            c.ctx
                .step(
                    format!("pod {name} takes 40 % of the device"),
                    c.create(&pod),
                )
                .await?;
            let pod = c.running(name, &node).await?;
            let allocation = c.check_allocation(&pod, &request, &node).await?;
            ids.extend(allocation.devices().map(|d| d.id.clone()));
        }
        ensure!(
            ids.len() == 2 && ids[0] == ids[1],
            "the two pods do not share one device: {ids:?}"
        );
        let pod = hami_pod(backend, "third", &node, &request)?;
        c.ctx
            .step("a third pod of 40 % is created", c.create(&pod))
            .await?;
        let reason = c
            .ctx
            .step(
                "HAMi refuses it: CardInsufficientMemory",
                c.event("third", "FilteringFailed", "CardInsufficientMemory"),
            )
            .await?;
        ensure!(
            reason.contains(&node),
            "the refusal does not name {node}: `{reason}`"
        );
        c.ctx
            .step(
                "and no available node",
                c.event("third", "FilteringFailed", "no available node"),
            )
            .await?;
        let third = c.ns.api::<Pod>().get("third").await?;
        let phase = third
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let bound = third.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(
            phase == "Pending" && bound.is_none(),
            "the third pod is {phase} on {bound:?}, not Pending and unbound"
        );
        ensure!(
            !third
                .annotations()
                .contains_key(hami_e2e_devices::VGPU_NODE),
            "HAMi wrote hami.io/vgpu-node on the refused pod"
        );
        Ok(())
    })
}

/// `hami::<vendor>::ten-in-a-row`: ten pods created one after the other onto one node each
/// run with their allocation acknowledged, and none waits for HAMi's node lock to time out
/// (30 s on the local cluster): each is Running within a few seconds of its creation.
fn ten_in_a_row(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "ten-in-a-row", &[], |c| async move {
        let backend = c.backend()?;
        let profile = profile_of(backend).ok_or_else(|| Failure::msg("no profile"))?;
        let split = profile.fake_devices("x", 1).split.max(1);
        let devices = 10u32.div_ceil(split).max(2) + u32::from(backend.vendor() == "ascend");
        let node = c.node("ten", devices).await?;
        let request = one_device(backend, 1000, 5);
        let mut slowest = Duration::ZERO;
        for i in 0..10 {
            let name = format!("pod-{i}");
            let pod = hami_pod(backend, &name, &node, &request)?;
            let started = Instant::now();
            c.create(&pod).await?;
            let pod = c.running(&name, &node).await?;
            slowest = slowest.max(started.elapsed());
            c.check_allocation(&pod, &request, &node).await?;
        }
        ensure!(
            slowest < Duration::from_secs(15),
            "the slowest of ten pods took {slowest:.1?} to run: one waited for a node lock"
        );
        c.lock_released(&node).await?;
        c.acknowledged(&node, 10).await
    })
}

/// HAMi's scenarios for every backend of `registry` that HAMi's device config serves.
pub(crate) fn hami_scenarios(registry: &DeviceRegistry) -> Vec<Arc<dyn Scenario>> {
    registry
        .iter()
        .filter(|b| profile_of(*b).is_some())
        .flat_map(|b| {
            let v = b.vendor();
            [
                Arc::new(allocation(v)) as Arc<dyn Scenario>,
                Arc::new(sharing(v)),
                Arc::new(ten_in_a_row(v)),
            ]
        })
        .collect()
}
