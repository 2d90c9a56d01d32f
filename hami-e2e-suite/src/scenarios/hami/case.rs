//! What HAMi's scenarios are built of: [`hami_scenario`] (a scenario `hami::<vendor>::<name>`
//! requiring HAMi, its body given a [`Case`], the allocation oracle after it), the [`Case`]
//! (its fake nodes, its pods, the waits and checks on what HAMi did), and the requests and
//! small helpers the scenarios share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hami_e2e_core::{Context, Failure, Requirement, ensure, scenario};
use hami_e2e_devices::{
    BIND_PHASE, DeviceBackend, DeviceRegistry, DeviceRequest, FakeDevices, PodOptions, PodRequest,
    profiles,
};
use hami_e2e_helm::{Hami, HamiFixture};
use hami_e2e_k8s::{ClusterFixture, NamespaceFixture, TestNamespace, wait};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};

use crate::fixtures::{DevicesFixture, LOCAL_CLUSTER};
use crate::scenarios::hami::oracle::allocation_oracle;
use crate::scenarios::pod::DevicePod;

/// How long a HAMi scenario waits for one pod to run or be refused. HAMi binds in well
/// under a second; the margin is for a loaded 2-core machine.
pub(super) const POD_WAIT: Duration = Duration::from_secs(30);

/// The label of a scenario that fails because HAMi does not do what its code or docs
/// promise: a finding, kept failing until HAMi is fixed (its doc comment says what HAMi
/// does instead). `--label-filter 'hami && !hami-bug'` leaves them out.
pub const HAMI_BUG: &str = "hami-bug";

/// The vendors HAMi's device config (as the local HAMi runs it) serves.
const HAMI_VENDORS: &[&str] = &["nvidia", "cambricon", "hygon", "ascend"];

/// The fake devices HAMi's scenarios give `backend`: its vendor's default real model
/// ([`profiles`]), or for Ascend the profile of its chip; `None` for a backend HAMi's
/// device config does not serve or no profile describes.
pub(super) fn profile_of(backend: &dyn DeviceBackend) -> Option<&'static profiles::DeviceProfile> {
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
pub(super) fn in_units(backend: &dyn DeviceBackend, mib: u64) -> u64 {
    let unit = backend.memory_unit_mib().max(1);
    mib.div_ceil(unit) * unit
}

/// A request of one device with `mib` of memory and, where the vendor takes a core share
/// without a special mode (not Ascend), `cores`.
pub(super) fn one_device(backend: &dyn DeviceBackend, mib: u64, cores: u32) -> DeviceRequest {
    let request = DeviceRequest::devices(1).memory_mib(in_units(backend, mib));
    if backend.vendor() == "ascend" {
        request
    } else {
        request.cores(cores)
    }
}

/// A node selector no node matches: a pod the webhook lets through stays Pending.
pub(super) const NOWHERE: (&str, &str) = ("hami-e2e.io/nowhere", "true");

/// How HAMi ended a pod: bound to a node, or refused with this `FilteringFailed` message.
#[derive(Debug)]
pub(super) enum Outcome {
    Bound,
    Refused(String),
}

/// What a HAMi scenario's body works with.
pub(super) struct Case {
    pub(super) ctx: Context,
    pub(super) hami: Arc<Hami>,
    pub(super) registry: Arc<DeviceRegistry>,
    pub(super) vendor: String,
    pub(super) ns: Arc<TestNamespace>,
    /// The fake nodes this scenario added: the allocation oracle checks their devices.
    pub(super) nodes: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Case {
    pub(super) fn backend(&self) -> Result<&dyn DeviceBackend, Failure> {
        Ok(self.registry.get(&self.vendor)?)
    }

    /// The same scenario's case for another vendor: its nodes and pods go to the same
    /// namespace and oracle.
    pub(super) fn for_vendor(&self, vendor: &str) -> Case {
        Case {
            ctx: self.ctx.clone(),
            hami: Arc::clone(&self.hami),
            registry: Arc::clone(&self.registry),
            vendor: vendor.to_owned(),
            ns: Arc::clone(&self.ns),
            nodes: Arc::clone(&self.nodes),
        }
    }

    /// Adds a fake node of `devices` devices of the vendor's profile, removed after the
    /// scenario; returns its name.
    pub(super) async fn node(&self, what: &str, devices: u32) -> Result<String, Failure> {
        self.node_with(what, devices, |_| {}, &[]).await
    }

    /// [`node`](Self::node), with `change` applied to the fake devices first (a split
    /// count, say).
    pub(super) async fn node_with(
        &self,
        what: &str,
        devices: u32,
        change: impl FnOnce(&mut FakeDevices),
        labels: &[(&str, &str)],
    ) -> Result<String, Failure> {
        self.node_annotated(what, devices, change, labels, &[])
            .await
    }

    /// [`node_with`](Self::node_with), with `annotations` on the node from its creation on.
    pub(super) async fn node_annotated(
        &self,
        what: &str,
        devices: u32,
        change: impl FnOnce(&mut FakeDevices),
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Result<String, Failure> {
        let backend = self.backend()?;
        let profile = profile_of(backend)
            .ok_or_else(|| Failure::msg(format!("no device profile for {}", self.vendor)))?;
        let name = hami_e2e_k8s::label_value(&format!(
            "hami-{}-{what}-{}-{}",
            hami_e2e_core::slug(&self.vendor),
            &self.ctx.run_id()[self.ctx.run_id().len().saturating_sub(6)..],
            self.ctx.attempt()
        ));
        let mut fake: FakeDevices = profile.fake_devices(&name, devices);
        change(&mut fake);
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.clone());
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
                self.hami
                    .add_annotated_node(&name, &self.vendor, &fake, labels, annotations),
            )
            .await
    }

    /// Deletes pod `name` at once and waits until it is gone, as a step.
    pub(super) async fn delete_pod(&self, name: &str) -> Result<(), Failure> {
        self.ctx
            .step(format!("pod {name} is deleted"), async {
                let api = self.ns.api::<Pod>();
                api.delete(name, &DeleteParams::default().grace_period(0))
                    .await?;
                wait::deleted(&api, name, POD_WAIT).await?;
                Ok::<_, Failure>(())
            })
            .await
    }

    /// The vendor's pod annotations for `options` (use/avoid ids and types, mode).
    pub(super) fn annotations(
        &self,
        options: &PodOptions,
    ) -> Result<Vec<(String, String)>, Failure> {
        Ok(self
            .backend()?
            .pod_annotations(options)?
            .into_iter()
            .collect())
    }

    /// Creates a pod `name` asking `request` on `node`, waits until it runs there
    /// acknowledged (a step saying `what`), and checks HAMi's allocation against `request`.
    pub(super) async fn runs(
        &self,
        name: &str,
        node: &str,
        request: &DeviceRequest,
        what: &str,
    ) -> Result<Pod, Failure> {
        self.create(
            &DevicePod::new(name)
                .devices(self.backend()?, request)?
                .on_node(node)
                .build(),
        )
        .await?;
        let pod = self
            .ctx
            .step(what.to_owned(), self.running(name, node))
            .await?;
        self.check_allocation(&pod, request, node).await?;
        Ok(pod)
    }

    /// Creates a pod `name` asking `request` on `node`.
    pub(super) async fn create_on(
        &self,
        name: &str,
        node: &str,
        request: &DeviceRequest,
    ) -> Result<(), Failure> {
        self.create_annotated(name, node, request, &[]).await
    }

    /// Creates a pod `name` asking `request` on `node`, with `annotations`.
    pub(super) async fn create_annotated(
        &self,
        name: &str,
        node: &str,
        request: &DeviceRequest,
        annotations: &[(String, String)],
    ) -> Result<(), Failure> {
        let pod = DevicePod::new(name)
            .devices(self.backend()?, request)?
            .on_node(node)
            .annotations(annotations)
            .build();
        self.create(&pod).await
    }

    /// One device with `num / den` of the vendor profile's memory and `cores`.
    pub(super) fn share(&self, num: u64, den: u64, cores: u32) -> Result<DeviceRequest, Failure> {
        let backend = self.backend()?;
        let profile = profile_of(backend)
            .ok_or_else(|| Failure::msg(format!("no device profile for {}", self.vendor)))?;
        Ok(one_device(backend, profile.memory_mib * num / den, cores))
    }

    /// Creates `pod`.
    pub(super) async fn create(&self, pod: &Pod) -> Result<(), Failure> {
        self.ns.apply(pod).await?;
        Ok(())
    }

    /// Waits until pod `name` runs on `node` with its allocation acknowledged
    /// (`bind-phase: success`), and returns it.
    pub(super) async fn running(&self, name: &str, node: &str) -> Result<Pod, Failure> {
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
    pub(super) async fn check_allocation(
        &self,
        pod: &Pod,
        request: &DeviceRequest,
        node: &str,
    ) -> Result<hami_e2e_devices::PodAllocation, Failure> {
        self.check_pod(pod, &PodRequest::single(request.clone()), node)
            .await
    }

    /// Checks what HAMi wrote on `pod` against the whole pod's `request` (every container,
    /// the pod's options), with `node`'s devices.
    pub(super) async fn check_pod(
        &self,
        pod: &Pod,
        request: &PodRequest,
        node: &str,
    ) -> Result<hami_e2e_devices::PodAllocation, Failure> {
        let backend = self.backend()?;
        let node_obj = Api::<Node>::all(self.ns.client()).get(node).await?;
        let devices = backend.node_devices(&node_obj)?;
        let allocation = backend.pod_allocation(pod.annotations())?;
        backend
            .check_allocation(request, &allocation, &devices)
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
    pub(super) async fn lock_released(&self, node: &str) -> Result<(), Failure> {
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
    pub(super) async fn acknowledged(&self, node: &str, n: u64) -> Result<(), Failure> {
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

    /// Waits until HAMi refuses pod `name` with `FilteringFailed` `... <reason>(...)` naming
    /// `node`, and checks the pod is unbound and has no HAMi allocation.
    pub(super) async fn refused(
        &self,
        name: &str,
        reason: &str,
        node: &str,
    ) -> Result<(), Failure> {
        let message = self
            .ctx
            .step(
                format!("HAMi refuses {name}: {reason}"),
                self.event(name, "FilteringFailed", reason),
            )
            .await?;
        ensure!(
            message.contains(node),
            "HAMi's refusal of {name} does not name {node}: `{message}`"
        );
        self.unbound(name).await
    }

    /// Checks pod `name` is Pending, unbound, without `hami.io/vgpu-node`.
    pub(super) async fn unbound(&self, name: &str) -> Result<(), Failure> {
        let pod = self.ns.api::<Pod>().get(name).await?;
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(
            phase(&pod) == "Pending" && bound.is_none(),
            "pod {name} is {} on {bound:?}, not Pending and unbound",
            phase(&pod)
        );
        ensure!(
            !pod.annotations().contains_key(hami_e2e_devices::VGPU_NODE),
            "HAMi wrote hami.io/vgpu-node on the refused pod {name}"
        );
        Ok(())
    }

    /// The devices of `node` as its registration lists them.
    pub(super) async fn devices_of(
        &self,
        node: &str,
    ) -> Result<Vec<hami_e2e_devices::NodeDevice>, Failure> {
        let n = Api::<Node>::all(self.ns.client()).get(node).await?;
        Ok(self.backend()?.node_devices(&n)?)
    }

    /// The ids of the devices HAMi allocated to `pod`.
    pub(super) fn device_ids(&self, pod: &Pod) -> Result<Vec<String>, Failure> {
        Ok(self
            .backend()?
            .pod_allocation(pod.annotations())?
            .devices()
            .map(|d| d.id.clone())
            .collect())
    }

    /// Waits for a `reason` event about pod `name` whose message contains `message`.
    pub(super) async fn event(
        &self,
        name: &str,
        reason: &str,
        message: &str,
    ) -> Result<String, Failure> {
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

    /// Waits until pod `name` is bound (`Bound`) or HAMi refuses it with a
    /// `FilteringFailed` event containing `refusal` (`Refused` with the message).
    pub(super) async fn outcome(
        &self,
        name: &str,
        refusal: &str,
        timeout: Duration,
    ) -> Result<Outcome, Failure> {
        let pods = self.ns.api::<Pod>();
        let events: Api<Event> = Api::namespaced(self.ns.client(), self.ns.name());
        let fields =
            format!("involvedObject.name={name},involvedObject.kind=Pod,reason=FilteringFailed");
        let started = Instant::now();
        loop {
            let pod = pods.get(name).await?;
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some()
            {
                return Ok(Outcome::Bound);
            }
            let listed = events.list(&ListParams::default().fields(&fields)).await?;
            if let Some(m) = listed
                .items
                .iter()
                .filter_map(|e| e.message.clone())
                .find(|m| m.contains(refusal))
            {
                return Ok(Outcome::Refused(m));
            }
            ensure!(
                started.elapsed() < timeout,
                "pod {name} was neither bound nor refused by HAMi (`{refusal}`) within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// HAMi sees node changes on its next register tick (every 15 s): creates pods
    /// `<prefix>-<k>` asking `request` on `node` one after the other until one ends as
    /// `want` (bound, or refused with `refusal`), deleting each that ended the other way
    /// (HAMi had not seen the change yet), for up to `within`. Returns the last pod's name
    /// and outcome.
    pub(super) async fn until_outcome(
        &self,
        prefix: &str,
        node: &str,
        request: &DeviceRequest,
        refusal: &str,
        want_bound: bool,
        within: Duration,
    ) -> Result<(String, Outcome), Failure> {
        let backend = self.backend()?;
        let started = Instant::now();
        for k in 0.. {
            let name = format!("{prefix}-{k}");
            self.create(
                &DevicePod::new(&name)
                    .devices(backend, request)?
                    .on_node(node)
                    .build(),
            )
            .await?;
            let left = within
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(5));
            let outcome = self.outcome(&name, refusal, left).await?;
            if matches!(outcome, Outcome::Bound) == want_bound {
                return Ok((name, outcome));
            }
            ensure!(
                started.elapsed() < within,
                "for {within:?} after the change HAMi still {} pods on {node} (the last: {name}, {outcome:?})",
                if want_bound { "refused" } else { "bound" }
            );
            self.ns
                .api::<Pod>()
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        unreachable!("the loop returns")
    }

    /// Waits up to `within` until HAMi's metrics no longer show `node`.
    pub(super) async fn unregistered(&self, node: &str, within: Duration) -> Result<(), Failure> {
        let started = Instant::now();
        loop {
            let nodes = self.hami.endpoint().registered_nodes().await?;
            if !nodes.iter().any(|n| n == node) {
                return Ok(());
            }
            if started.elapsed() >= within {
                let n = Api::<Node>::all(self.ns.client()).get(node).await?;
                let keys = self.backend()?.annotation_keys();
                let handshake = keys
                    .handshake
                    .as_ref()
                    .and_then(|k| n.annotations().get(k))
                    .cloned();
                let allocatable = n.status.and_then(|s| s.allocatable).unwrap_or_default();
                return Err(Failure::assertion(format!(
                    "HAMi still lists {node}'s devices {within:?} after they went away (handshake {:?}: {handshake:?}; allocatable {allocatable:?})",
                    keys.handshake
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `hami::<vendor>::<name>`, requiring HAMi and a local cluster, its body given a [`Case`];
/// on failure HAMi's diagnostics are attached.
pub(super) fn hami_scenario<F, Fut>(
    vendor: &str,
    name: &str,
    labels: &[&str],
    body: F,
) -> hami_e2e_core::FnScenario
where
    F: Fn(Case) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    hami_scenario_with(vendor, name, labels, |b| b, body)
}

/// [`hami_scenario`], its builder changed by `change` first (serial, a requirement more).
pub(super) fn hami_scenario_with<F, Fut>(
    vendor: &str,
    name: &str,
    labels: &[&str],
    change: impl FnOnce(hami_e2e_core::ScenarioBuilder) -> hami_e2e_core::ScenarioBuilder,
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
    change(
        scenario(format!("hami::{slug}::{name}"))
            .labels(all_labels)
            .requires(Requirement::flag(LOCAL_CLUSTER))
            .requires(hami_e2e_helm::hami::requirement()),
    )
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
                    nodes: Arc::default(),
                };
                let nodes = Arc::clone(&case.nodes);
                let mut result = body(case).await;
                let oracle = ctx
                    .step(
                        "the allocation oracle: every device of the scenario's nodes within budget, HAMi's metrics agreeing",
                        allocation_oracle(&hami, &registry, &ns, nodes),
                    )
                    .await;
                if let (Ok(()), Err(e)) = (&result, oracle) {
                    result = Err(e);
                }
                if result.is_err() {
                    ctx.attach("HAMi", hami.diagnostics(Some(ns.name())));
                }
                result
            }
        })
}

/// The phase of `pod`, or "".
pub(super) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Creates `pod` and returns what the API server answered: the admitted pod, or the
/// message of the refusal.
pub(super) async fn admit(c: &Case, pod: &Pod) -> Result<Result<Pod, String>, Failure> {
    match c.ns.api::<Pod>().create(&Default::default(), pod).await {
        Ok(p) => Ok(Ok(p)),
        Err(kube::Error::Api(s)) => Ok(Err(s.message)),
        Err(e) => Err(e.into()),
    }
}

/// The limit of `pod`'s first container for `resource`.
pub(super) fn first_limit(pod: &Pod, resource: &str) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get(resource)
        .map(|q| q.0.clone())
}

/// The pods of `ns` labelled `selector`.
pub(super) async fn pods_of(ns: &TestNamespace, selector: &str) -> Result<Vec<Pod>, Failure> {
    Ok(ns
        .api::<Pod>()
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

/// Whether `pod` runs with its allocation acknowledged (`bind-phase: success`).
pub(super) fn acknowledged(pod: &Pod) -> bool {
    phase(pod) == "Running"
        && pod.annotations().get(BIND_PHASE).map(String::as_str) == Some("success")
}
