//! The fake device agent: the node side of HAMi's protocol, played for fake nodes the way
//! the vendors' device plugins play it on real ones.
//!
//! HAMi's scheduler binds a pod with `hami.io/bind-phase: allocating`, its devices in the
//! vendor's `*-devices-to-allocate` annotation, and a lock on the node
//! (`hami.io/mutex.lock: <time>,<namespace>,<pod>`; Cambricon: `cambricon.com/dsmlu.lock`).
//! On a real node, kubelet then calls the device plugin's `Allocate`, which consumes the
//! entries, sets `bind-phase: success` and releases the lock (HAMi's
//! `PodAllocationTrySuccess`). Without that, the next pod bound to the node waits for the
//! lock's timeout. [`FakeDeviceAgent`] does the same for the nodes it manages, with the
//! vendor facts (annotation keys, lock, handshake) from each [`DeviceBackend`] of a
//! [`DeviceRegistry`], and the faults a scenario asks for:
//!
//! - [`fail_next_allocation`](FakeDeviceAgent::fail_next_allocation): `bind-phase: failed`,
//!   the lock released, and the pod `Failed` as kubelet marks it (`UnexpectedAdmissionError`);
//! - [`delay_acknowledgements`](FakeDeviceAgent::delay_acknowledgements): answer late, to
//!   show HAMi's node-lock contention;
//! - [`set_device_health`](FakeDeviceAgent::set_device_health): a device turns unhealthy
//!   in the register annotation;
//! - [`remove_devices`](FakeDeviceAgent::remove_devices): the vendor's count goes to 0 in
//!   allocatable, as when a plugin stops;
//! - [`stop_handshake`](FakeDeviceAgent::stop_handshake): stop answering HAMi's handshake
//!   (vendors whose plugins answer it write `Reported ...` every
//!   [`HANDSHAKE_PERIOD`]).
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> hami_e2e_devices::Result<()> {
//! use std::sync::Arc;
//! use hami_e2e_devices::{DeviceRegistry, FakeDeviceAgent};
//!
//! let agent = FakeDeviceAgent::start(client, Arc::new(DeviceRegistry::builtin()));
//! agent.manage("gpu-node-0", ["nvidia"]);
//! // ... HAMi binds pods to gpu-node-0; the agent acknowledges each ...
//! agent.fail_next_allocation("gpu-node-0");
//! assert_eq!(agent.acknowledged("gpu-node-0"), 0);
//! agent.stop().await;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::backend::DeviceBackend;
use crate::codec;
use crate::error::{Error, Result};
use crate::pod::{BIND_PHASE, VGPU_NODE};
use crate::registry::DeviceRegistry;

/// How often the agent answers HAMi's handshake for the vendors whose plugins answer it
/// (the real plugins: every 30 s; HAMi's scheduler reads it every 15 s).
pub const HANDSHAKE_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct NodeState {
    vendors: Vec<String>,
    fail_next: u32,
    ack_delay: Duration,
    /// Acknowledgements wait while this is set ([`FakeDeviceAgent::hold_acknowledgements`]).
    ack_held: bool,
    handshake_stopped: bool,
    acknowledged: u64,
    failed: u64,
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<String, NodeState>,
    /// Pods (by uid) whose allocation was answered or is being answered.
    handled: BTreeSet<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Plays the device plugins' part of HAMi's protocol on fake nodes; see the
/// [module docs](self).
pub struct FakeDeviceAgent {
    client: kube::Client,
    registry: Arc<DeviceRegistry>,
    state: Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeDeviceAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDeviceAgent")
            .field("nodes", &lock(&self.state).nodes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for FakeDeviceAgent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn api_error(action: &'static str, object: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Cluster {
        action,
        object,
        message: source.to_string(),
    }
}

impl FakeDeviceAgent {
    /// Starts the agent: a watch of the pods HAMi placed (label `hami.io/vgpu-node`) and
    /// the handshake ticker. It acts only on the nodes it is told to
    /// [`manage`](Self::manage). Call it inside a Tokio runtime.
    pub fn start(client: kube::Client, registry: Arc<DeviceRegistry>) -> Self {
        Self::start_with(client, registry, HANDSHAKE_PERIOD)
    }

    /// [`start`](Self::start) with another handshake period.
    pub fn start_with(
        client: kube::Client,
        registry: Arc<DeviceRegistry>,
        handshake_period: Duration,
    ) -> Self {
        let state: Shared = Arc::default();
        let watch = tokio::spawn(watch_pods(
            client.clone(),
            Arc::clone(&registry),
            Arc::clone(&state),
        ));
        let handshake = tokio::spawn(answer_handshakes(
            client.clone(),
            Arc::clone(&registry),
            Arc::clone(&state),
            handshake_period,
        ));
        FakeDeviceAgent {
            client,
            registry,
            state,
            tasks: vec![watch, handshake],
        }
    }

    /// Plays the device plugins of `vendors` on `node` from now on (and answers their
    /// handshake at once, where they do).
    pub fn manage<I, S>(&self, node: &str, vendors: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let vendors: Vec<String> = vendors.into_iter().map(Into::into).collect();
        lock(&self.state)
            .nodes
            .entry(node.to_owned())
            .or_default()
            .vendors = vendors;
        let (client, registry, state, node) = (
            self.client.clone(),
            Arc::clone(&self.registry),
            Arc::clone(&self.state),
            node.to_owned(),
        );
        tokio::spawn(async move { answer_handshake(&client, &registry, &state, &node).await });
    }

    /// Answers HAMi's handshake on `node` now, as its plugins do on their next report
    /// (unless [`stop_handshake`](Self::stop_handshake) stopped them).
    pub async fn answer_handshake_now(&self, node: &str) {
        answer_handshake(&self.client, &self.registry, &self.state, node).await;
    }

    /// Stops playing anything on `node`.
    pub fn forget(&self, node: &str) {
        lock(&self.state).nodes.remove(node);
    }

    /// The nodes it manages.
    pub fn nodes(&self) -> Vec<String> {
        lock(&self.state).nodes.keys().cloned().collect()
    }

    /// The next allocation on `node` fails: `bind-phase: failed`, the lock released, the
    /// pod `Failed` (reason `UnexpectedAdmissionError`, as kubelet reports a failed
    /// `Allocate`).
    pub fn fail_next_allocation(&self, node: &str) {
        if let Some(n) = lock(&self.state).nodes.get_mut(node) {
            n.fail_next += 1;
        }
    }

    /// Answers allocations on `node` only after `delay` (zero: at once).
    pub fn delay_acknowledgements(&self, node: &str, delay: Duration) {
        if let Some(n) = lock(&self.state).nodes.get_mut(node) {
            n.ack_delay = delay;
        }
    }

    /// Holds (or, with `false`, releases) every acknowledgement on `node`: allocations are
    /// answered only once released, so a test decides when the node lock goes.
    pub fn hold_acknowledgements(&self, node: &str, held: bool) {
        if let Some(n) = lock(&self.state).nodes.get_mut(node) {
            n.ack_held = held;
        }
    }

    /// Stops (or, with `false`, resumes) answering HAMi's handshake on `node`.
    pub fn stop_handshake(&self, node: &str, stopped: bool) {
        if let Some(n) = lock(&self.state).nodes.get_mut(node) {
            n.handshake_stopped = stopped;
        }
    }

    /// How many allocations on `node` it acknowledged with success.
    pub fn acknowledged(&self, node: &str) -> u64 {
        lock(&self.state)
            .nodes
            .get(node)
            .map_or(0, |n| n.acknowledged)
    }

    /// How many allocations on `node` it failed on purpose.
    pub fn failed(&self, node: &str) -> u64 {
        lock(&self.state).nodes.get(node).map_or(0, |n| n.failed)
    }

    /// Marks the device `device_id` of `vendor` on `node` healthy or not in the node's
    /// register annotation (JSON or colon format, as it was written), and answers the
    /// handshake so HAMi's scheduler reads it again.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownVendor`] for a vendor not in the registry; [`Error::Missing`] when the
    /// vendor has no register annotation on the node or the device is not in it;
    /// [`Error::Parse`] for a malformed one; [`Error::Cluster`] when the node cannot be read
    /// or patched.
    pub async fn set_device_health(
        &self,
        node: &str,
        vendor: &str,
        device_id: &str,
        healthy: bool,
    ) -> Result<()> {
        let backend = self.registry.get(vendor)?;
        let key = backend
            .annotation_keys()
            .register
            .clone()
            .ok_or_else(|| Error::Missing {
                object: format!("{vendor} backend"),
                key: "a register annotation".into(),
            })?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let current = nodes
            .get(node)
            .await
            .map_err(api_error("get", format!("node/{node}")))?;
        let value = crate::node::node_annotation(&current, &key)?;
        let json = value.trim_start().starts_with('[');
        let mut devices = crate::backend::decode_register_any(&current, &key)?;
        let device = devices
            .iter_mut()
            .find(|d| d.id == device_id)
            .ok_or_else(|| Error::Missing {
                object: format!("node/{node}"),
                key: format!("{key} entry for device {device_id}"),
            })?;
        device.health = healthy;
        let encoded = if json {
            codec::encode_json_register(&devices)
        } else {
            codec::encode_legacy_register(&devices)?
        };
        let mut annotations = serde_json::Map::new();
        annotations.insert(key, json!(encoded));
        if let (Some(h), Some(answer)) = (
            &backend.annotation_keys().handshake,
            backend.annotation_keys().handshake_answer,
        ) {
            annotations.insert(
                h.clone(),
                json!(answer.value(k8s_openapi::jiff::Timestamp::now())),
            );
        }
        nodes
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .map_err(api_error("patch", format!("node/{node}")))?;
        Ok(())
    }

    /// Sets `vendor`'s resources on `node` to 0 in capacity and allocatable, as kubelet does
    /// when the vendor's device plugin goes away: its count and, where the node lists them
    /// (Cambricon, whose devices HAMi reads from capacity), its memory and cores.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownVendor`] for a vendor not in the registry; [`Error::Cluster`] when the
    /// node cannot be read or its status patched.
    pub async fn remove_devices(&self, node: &str, vendor: &str) -> Result<()> {
        let backend = self.registry.get(vendor)?;
        let names = backend.resource_names();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let current = nodes
            .get(node)
            .await
            .map_err(api_error("get", format!("node/{node}")))?;
        let listed = current
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .cloned()
            .unwrap_or_default();
        let mut zero = serde_json::Map::new();
        zero.insert(names.count.clone(), json!("0"));
        for name in [&names.memory, &names.cores].into_iter().flatten() {
            if listed.contains_key(name) {
                zero.insert(name.clone(), json!("0"));
            }
        }
        let patch = json!({"status": {"capacity": zero, "allocatable": zero}});
        nodes
            .patch_status(node, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(api_error("patch status of", format!("node/{node}")))?;
        Ok(())
    }

    /// Stops the watch and the handshake ticker.
    pub async fn stop(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

/// The backends of `vendors` whose `*-devices-to-allocate` on `pod` still names a device.
fn pending_backends<'a>(
    registry: &'a DeviceRegistry,
    vendors: &[String],
    pod: &Pod,
) -> Vec<&'a dyn DeviceBackend> {
    let annotations = pod.annotations();
    registry
        .iter()
        .filter(|b| vendors.iter().any(|v| *v == b.key()))
        .filter(|b| {
            annotations
                .get(&b.annotation_keys().to_allocate)
                .is_some_and(|v| v.contains(','))
        })
        .collect()
}

async fn watch_pods(client: kube::Client, registry: Arc<DeviceRegistry>, state: Shared) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().labels(VGPU_NODE);
    let mut stream = watcher(pods, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = stream.next().await {
        let pod = match event {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "fake device agent: pod watch error; resuming");
                continue;
            }
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if pod.annotations().get(BIND_PHASE).map(String::as_str) != Some("allocating") {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        let (fail, delay, vendors) = {
            let mut s = lock(&state);
            let Some(n) = s.nodes.get_mut(&node) else {
                continue;
            };
            let vendors = n.vendors.clone();
            let delay = n.ack_delay;
            if !s.handled.insert(uid.clone()) {
                continue;
            }
            let n = s.nodes.get_mut(&node).expect("present");
            let fail = n.fail_next > 0;
            if fail {
                n.fail_next -= 1;
            }
            (fail, delay, vendors)
        };
        let (client, registry, state) = (client.clone(), Arc::clone(&registry), Arc::clone(&state));
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            while lock(&state).nodes.get(&node).is_some_and(|n| n.ack_held) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let result = allocate(&client, &registry, &vendors, &pod, &node, fail).await;
            let mut s = lock(&state);
            match result {
                Ok(()) => {
                    if let Some(n) = s.nodes.get_mut(&node) {
                        if fail {
                            n.failed += 1;
                        } else {
                            n.acknowledged += 1;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), %node, error = %e, "fake device agent: allocation not answered; will retry on the next change");
                    s.handled.remove(&uid);
                }
            }
        });
    }
}

/// What the device plugin's `Allocate` does for `pod` on `node`.
async fn allocate(
    client: &kube::Client,
    registry: &DeviceRegistry,
    vendors: &[String],
    pod: &Pod,
    node: &str,
    fail: bool,
) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let backends = pending_backends(registry, vendors, pod);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut annotations = serde_json::Map::new();
    for b in &backends {
        let key = &b.annotation_keys().to_allocate;
        let value = pod.annotations().get(key).cloned().unwrap_or_default();
        let containers = codec::decode_allocation(key, &value)?.len();
        annotations.insert(
            key.clone(),
            json!(codec::encode_allocation(&vec![Vec::new(); containers])),
        );
    }
    annotations.insert(
        BIND_PHASE.to_owned(),
        json!(if fail { "failed" } else { "success" }),
    );
    let object = format!("pod/{ns}/{name}");
    pods.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
    )
    .await
    .map_err(api_error("patch", object.clone()))?;
    let mut released = BTreeSet::new();
    for b in &backends {
        let keys = b.annotation_keys();
        if released.insert(keys.node_lock.clone()) {
            release_lock(
                client,
                node,
                &keys.node_lock,
                keys.node_lock_names_pod,
                &ns,
                &name,
            )
            .await?;
        }
    }
    if fail {
        let status = json!({"status": {
            "phase": "Failed",
            "reason": "UnexpectedAdmissionError",
            "message": format!("Allocate failed due to the fake device agent failing the allocation on node {node} as asked, which is unexpected"),
        }});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .map_err(api_error("patch status of", object))?;
    }
    Ok(())
}

/// Removes `key` from `node` if it is there (and, when `names_pod`, names `ns/name`), with
/// the node's `resourceVersion` as a precondition, retried on conflicts.
async fn release_lock(
    client: &kube::Client,
    node: &str,
    key: &str,
    names_pod: bool,
    ns: &str,
    name: &str,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..5 {
        let current = nodes
            .get(node)
            .await
            .map_err(api_error("get", format!("node/{node}")))?;
        let Some(value) = current.annotations().get(key) else {
            return Ok(());
        };
        if names_pod && value.contains(',') && !value.ends_with(&format!(",{ns},{name}")) {
            return Ok(());
        }
        let patch = json!({"metadata": {
            "annotations": {key: null},
            "resourceVersion": current.resource_version(),
        }});
        match nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_error("patch", format!("node/{node}"))(e)),
        }
    }
    Err(Error::Cluster {
        action: "release the lock on",
        object: format!("node/{node}"),
        message: format!("{key} kept changing (5 conflicts)"),
    })
}

async fn answer_handshakes(
    client: kube::Client,
    registry: Arc<DeviceRegistry>,
    state: Shared,
    period: Duration,
) {
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        let nodes: Vec<String> = lock(&state).nodes.keys().cloned().collect();
        for node in nodes {
            answer_handshake(&client, &registry, &state, &node).await;
        }
    }
}

/// Writes `Reported ...` for each vendor of `node` whose plugin answers the handshake.
async fn answer_handshake(
    client: &kube::Client,
    registry: &DeviceRegistry,
    state: &Shared,
    node: &str,
) {
    let vendors = match lock(state).nodes.get(node) {
        Some(n) if !n.handshake_stopped => n.vendors.clone(),
        _ => return,
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut annotations = serde_json::Map::new();
    for b in registry
        .iter()
        .filter(|b| vendors.iter().any(|v| *v == b.key()))
    {
        let keys = b.annotation_keys();
        if let (Some(h), Some(answer)) = (&keys.handshake, keys.handshake_answer) {
            annotations.insert(h.clone(), json!(answer.value(now)));
        }
    }
    if annotations.is_empty() {
        return;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": annotations}});
    if let Err(e) = nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::debug!(%node, error = %e, "fake device agent: handshake not written");
    }
}
