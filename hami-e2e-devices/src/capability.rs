//! Device capabilities as data for `hami-e2e-core`'s [`Capabilities`] and [`Requirement`]:
//! what the probe found on the cluster's nodes, and what a scenario needs
//! ("2 nvidia devices with ≥ 8192 MiB on one node"), so the runner skips with a reason.
//!
//! The probe records, per vendor, the quantity `<vendor> devices on one node` (the most
//! healthy devices any node has) and one quantity per healthy device,
//! `<vendor> device memory MiB/<node>/<device id>`; [`DeviceDemand::requirement`] reads them.

use std::collections::BTreeMap;
use std::fmt;

use hami_e2e_core::{Capabilities, PoolDevice, Requirement};
use k8s_openapi::api::core::v1::Node;

use crate::backend::DeviceBackend;
use crate::error::Error;
use crate::node::NodeDevice;
use crate::registry::DeviceRegistry;

/// The flag a probe sets when a vendor's devices are real (not the GPU-less cluster's fakes):
/// `real-device:<vendor>`.
pub fn real_device_flag(vendor: &str) -> String {
    format!("real-device:{vendor}")
}

/// The quantity name of the most healthy devices of `vendor` on one node.
pub fn devices_on_one_node(vendor: &str) -> String {
    format!("{vendor} devices on one node")
}

fn memory_prefix(vendor: &str) -> String {
    format!("{vendor} device memory MiB/")
}

/// The healthy devices of each vendor on each node, and what pods use of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInventory {
    /// Vendor → node name → its healthy devices.
    pub vendors: BTreeMap<String, BTreeMap<String, Vec<NodeDevice>>>,
    /// (vendor, device id) → what pods use of it: containers, MiB, cores (see
    /// [`add_pod_usage`](Self::add_pod_usage)).
    pub used: BTreeMap<(String, String), (u32, u64, u32)>,
    /// Vendor → the nodes whose device data for it does not parse, with why (naming the
    /// annotation): a vendor with such a node has no passing verdict.
    pub broken: BTreeMap<String, Vec<(String, String)>>,
}

impl DeviceInventory {
    /// Reads every node with every backend of `registry`. Nodes without a vendor's data are
    /// skipped; malformed data is returned beside the inventory, one
    /// [`Error::BrokenNode`] per node and backend naming both, so one bad node does not hide
    /// the others, and recorded in [`broken`](Self::broken).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use hami_e2e_devices::{DeviceInventory, DeviceRegistry};
    /// use k8s_openapi::api::core::v1::Node;
    ///
    /// let mut node = Node::default();
    /// node.metadata.name = Some("gpu-1".into());
    /// node.metadata.annotations = Some(BTreeMap::from([(
    ///     "hami.io/node-nvidia-register".to_string(),
    ///     "not json".to_string(),
    /// )]));
    /// let (inventory, errors) = DeviceInventory::from_nodes(&DeviceRegistry::builtin(), &[node]);
    /// let e = errors[0].to_string();
    /// assert!(e.starts_with("node `gpu-1`: nvidia's device registration is broken: cannot parse `hami.io/node-nvidia-register`"), "{e}");
    /// assert_eq!(inventory.broken["nvidia"][0].0, "gpu-1");
    /// ```
    pub fn from_nodes(registry: &DeviceRegistry, nodes: &[Node]) -> (Self, Vec<Error>) {
        let mut inventory = DeviceInventory::default();
        let mut errors = Vec::new();
        for backend in registry.iter() {
            inventory.add_backend(backend, nodes, &mut errors);
        }
        (inventory, errors)
    }

    fn add_backend(
        &mut self,
        backend: &dyn DeviceBackend,
        nodes: &[Node],
        errors: &mut Vec<Error>,
    ) {
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            match backend.node_devices(node) {
                Ok(devices) => {
                    let healthy: Vec<NodeDevice> =
                        devices.into_iter().filter(|d| d.health).collect();
                    if !healthy.is_empty() {
                        self.vendors
                            .entry(backend.key())
                            .or_default()
                            .entry(name)
                            .or_default()
                            .extend(healthy);
                    }
                }
                Err(Error::Missing { .. }) => {}
                Err(e) => {
                    self.broken
                        .entry(backend.key())
                        .or_default()
                        .push((name.clone(), e.to_string()));
                    errors.push(Error::BrokenNode {
                        node: name,
                        vendor: backend.key(),
                        cause: Box::new(e),
                    });
                }
            }
        }
    }

    /// Adds what `pods` use of the devices, from the allocation annotations HAMi writes
    /// (each backend's `*-devices-allocated`, else `*-devices-to-allocate`), so that
    /// admission on a shared cluster hands out only what is free. Pods that ended
    /// (`Succeeded`, `Failed`) or are being deleted hold nothing, and pods for which `ours`
    /// is true are skipped: the run accounts for those through admission (the suite passes
    /// "labelled with this run", or on its own local cluster "labelled
    /// `app.kubernetes.io/managed-by=hami-e2e`", whose processes share one admission file).
    /// Returns the annotations that do not parse, one error per pod and backend.
    pub fn add_pod_usage(
        &mut self,
        registry: &DeviceRegistry,
        pods: &[k8s_openapi::api::core::v1::Pod],
        ours: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool,
    ) -> Vec<Error> {
        let mut errors = Vec::new();
        for pod in pods {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if ours(pod)
                || matches!(phase, Some("Succeeded" | "Failed"))
                || pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let Some(annotations) = &pod.metadata.annotations else {
                continue;
            };
            for backend in registry.iter() {
                let keys = backend.annotation_keys();
                if !annotations.contains_key(&keys.allocated)
                    && !annotations.contains_key(&keys.to_allocate)
                {
                    continue;
                }
                let allocation = match backend.pod_allocation(annotations) {
                    Ok(a) => a,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let containers = allocation
                    .allocated
                    .filter(|c| c.iter().any(|d| !d.is_empty()))
                    .or(allocation.to_allocate)
                    .unwrap_or_default();
                for device in containers.iter().flatten() {
                    let used = self
                        .used
                        .entry((backend.key(), device.id.clone()))
                        .or_default();
                    used.0 = used.0.saturating_add(1);
                    used.1 = used.1.saturating_add(device.memory_mib);
                    used.2 = used.2.saturating_add(device.cores);
                }
            }
        }
        errors
    }

    /// Writes the inventory into `caps` (see the module docs for the names), with every
    /// device in [`Capabilities::devices`] (kind: the vendor name; shares: its split count)
    /// for device-aware admission; `real` also sets [`real_device_flag`] for every vendor
    /// found.
    #[must_use]
    pub fn record(&self, mut caps: Capabilities, real: bool) -> Capabilities {
        for (vendor, nodes) in &self.vendors {
            let most = nodes.values().map(Vec::len).max().unwrap_or(0) as u64;
            caps = caps.with_quantity(devices_on_one_node(vendor), most);
            for (node, devices) in nodes {
                for d in devices {
                    caps = caps.with_quantity(
                        format!("{}{node}/{}", memory_prefix(vendor), d.id),
                        d.memory_mib,
                    );
                    let (n, mib, cores) = self
                        .used
                        .get(&(vendor.clone(), d.id.clone()))
                        .copied()
                        .unwrap_or_default();
                    caps = caps.with_device(
                        PoolDevice::new(vendor, node, &d.id, d.memory_mib)
                            .shares(d.count)
                            .cores(d.cores)
                            .used_elsewhere(n, mib, cores),
                    );
                }
            }
            if real {
                caps = caps.with_flag(real_device_flag(vendor));
            }
        }
        caps
    }
}

/// What a scenario needs of one vendor: `count` devices with at least `min_memory_mib` each
/// on one node, optionally real ones.
///
/// # Examples
///
/// ```
/// use hami_e2e_core::Capabilities;
/// use hami_e2e_devices::{DeviceBackend, DeviceDemand, DeviceInventory, DeviceRegistry, FakeDevices, Nvidia};
/// use k8s_openapi::api::core::v1::Node;
///
/// let mut node = Node::default();
/// node.metadata.name = Some("gpu-0".into());
/// Nvidia::default().fake_node(&FakeDevices::new("gpu-0", 2, "Tesla T4", 15360))?.apply_to(&mut node);
/// let (inventory, errors) = DeviceInventory::from_nodes(&DeviceRegistry::builtin(), &[node]);
/// assert!(errors.is_empty());
/// let caps = inventory.record(Capabilities::default(), false);
/// // Both devices, for device-aware admission: kind `nvidia`, shared 10 ways.
/// assert_eq!(caps.devices.len(), 2);
/// assert_eq!((caps.devices[0].kind.as_str(), caps.devices[0].shares), ("nvidia", 10));
///
/// let need = DeviceDemand::new("nvidia", 2).min_memory_mib(8192).requirement();
/// assert_eq!(need.to_string(), "2 nvidia devices with >= 8192 MiB on one node");
/// assert!(need.check(&caps).is_ok());
/// let too_big = DeviceDemand::new("nvidia", 2).min_memory_mib(16384).requirement();
/// assert_eq!(
///     too_big.check(&caps).unwrap_err(),
///     "needs 2 nvidia devices with >= 16384 MiB on one node; the best node has 0"
/// );
/// # Ok::<(), hami_e2e_devices::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceDemand {
    /// The vendor name.
    pub vendor: String,
    /// Devices needed on one node.
    pub count: u32,
    /// Memory each must have, MiB (0: any).
    pub min_memory_mib: u64,
    /// Whether they must be real devices.
    pub real: bool,
}

impl DeviceDemand {
    /// `count` devices of `vendor` on one node.
    pub fn new(vendor: impl Into<String>, count: u32) -> Self {
        DeviceDemand {
            vendor: vendor.into(),
            count,
            min_memory_mib: 0,
            real: false,
        }
    }

    /// Each with at least `mib` MiB.
    #[must_use]
    pub fn min_memory_mib(mut self, mib: u64) -> Self {
        self.min_memory_mib = mib;
        self
    }

    /// Real devices only.
    #[must_use]
    pub fn real_devices(mut self) -> Self {
        self.real = true;
        self
    }

    /// The most devices with enough memory on one node, according to `caps`.
    pub fn best_node(&self, caps: &Capabilities) -> u64 {
        let prefix = memory_prefix(&self.vendor);
        let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
        for (name, mib) in caps.quantities.range(prefix.clone()..) {
            let Some(rest) = name.strip_prefix(&prefix) else {
                break;
            };
            if *mib >= self.min_memory_mib {
                let node = rest.split_once('/').map_or(rest, |(n, _)| n);
                *per_node.entry(node).or_default() += 1;
            }
        }
        per_node.values().copied().max().unwrap_or(0)
    }

    /// `Ok` when `caps` meets the demand, else the reason to skip.
    ///
    /// # Errors
    ///
    /// The skip reason, naming the demand and what the cluster has.
    pub fn check(&self, caps: &Capabilities) -> Result<(), String> {
        if self.real && !caps.flags.contains(&real_device_flag(&self.vendor)) {
            return Err(format!("needs real {} devices", self.vendor));
        }
        let best = self.best_node(caps);
        if best >= u64::from(self.count) {
            Ok(())
        } else {
            Err(format!("needs {self}; the best node has {best}"))
        }
    }

    /// As a `hami-e2e-core` [`Requirement`].
    pub fn requirement(&self) -> Requirement {
        let demand = self.clone();
        Requirement::custom(self.to_string(), move |caps| demand.check(caps))
    }
}

impl fmt::Display for DeviceDemand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let real = if self.real { "real " } else { "" };
        write!(f, "{} {real}{} devices", self.count, self.vendor)?;
        if self.min_memory_mib > 0 {
            write!(f, " with >= {} MiB", self.min_memory_mib)?;
        }
        f.write_str(" on one node")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_allocations_count_as_used_elsewhere() {
        use crate::backend::DeviceBackend;
        use crate::container::ContainerDevice;
        use crate::node::FakeDevices;
        use crate::nvidia::Nvidia;
        let mut node = Node::default();
        node.metadata.name = Some("gpu-0".into());
        Nvidia::default()
            .fake_node(&FakeDevices::new("gpu-0", 1, "Tesla T4", 15360))
            .unwrap()
            .apply_to(&mut node);
        let registry = DeviceRegistry::builtin();
        let (mut inventory, errors) = DeviceInventory::from_nodes(&registry, &[node]);
        assert!(errors.is_empty());
        let id = inventory.vendors["nvidia"]["gpu-0"][0].id.clone();
        let keys = Nvidia::default().annotation_keys().clone();
        let granted =
            crate::codec::encode_allocation(&[vec![ContainerDevice::new(&id, "NVIDIA", 3000, 30)]]);
        let pod = |name: &str, phase: &str, ours: bool| {
            let mut p = k8s_openapi::api::core::v1::Pod::default();
            p.metadata.name = Some(name.into());
            p.metadata.annotations =
                Some(BTreeMap::from([(keys.allocated.clone(), granted.clone())]));
            if ours {
                p.metadata.labels = Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "hami-e2e".to_string(),
                )]));
            }
            p.status = Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            });
            p
        };
        let mut bad = pod("bad", "Running", false);
        bad.metadata.annotations = Some(BTreeMap::from([(
            keys.allocated.clone(),
            "GPU-x,NVIDIA,lots,30:;".to_string(),
        )]));
        let pods = [
            pod("a", "Running", false),
            pod("b", "Pending", false),
            pod("done", "Succeeded", false),
            pod("ours", "Running", true),
            bad,
        ];
        let errors = inventory.add_pod_usage(&registry, &pods, |p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("app.kubernetes.io/managed-by"))
        });
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            inventory.used[&("nvidia".to_string(), id.clone())],
            (2, 6000, 60)
        );
        let caps = inventory.record(Capabilities::default(), true);
        assert_eq!(caps.devices[0].used_elsewhere, (2, 6000, 60));
    }
    use crate::hygon::Hygon;
    use crate::node::FakeDevices;
    use crate::nvidia::Nvidia;

    fn node(name: &str, fake: crate::node::FakeNode) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        fake.apply_to(&mut n);
        n
    }

    #[test]
    fn inventory_counts_per_node_and_reports_bad_nodes() {
        let nv = Nvidia::default();
        let nodes = vec![
            node(
                "a",
                nv.fake_node(&FakeDevices::new("a", 1, "T4", 16384))
                    .unwrap(),
            ),
            node(
                "b",
                nv.fake_node(&FakeDevices::new("b", 3, "T4", 8192)).unwrap(),
            ),
            node(
                "c",
                Hygon::default()
                    .fake_node(&FakeDevices::new("c", 1, "Z100", 8192).unhealthy())
                    .unwrap(),
            ),
            node(
                "d",
                crate::node::FakeNode {
                    annotations: [("hami.io/node-nvidia-register".into(), "[oops".into())].into(),
                    capacity: BTreeMap::new(),
                },
            ),
        ];
        let (inv, errors) = DeviceInventory::from_nodes(&DeviceRegistry::builtin(), &nodes);
        assert_eq!(errors.len(), 1);
        assert!(!inv.vendors.contains_key("hygon"));
        let caps = inv.record(Capabilities::default(), true);
        assert_eq!(caps.quantity("nvidia devices on one node"), 3);
        assert!(caps.flags.contains("real-device:nvidia"));
        assert!(
            DeviceDemand::new("nvidia", 3)
                .min_memory_mib(8192)
                .check(&caps)
                .is_ok()
        );
        assert!(
            DeviceDemand::new("nvidia", 2)
                .min_memory_mib(16384)
                .check(&caps)
                .is_err()
        );
        assert!(
            DeviceDemand::new("nvidia", 1)
                .min_memory_mib(16384)
                .real_devices()
                .check(&caps)
                .is_ok()
        );
        assert_eq!(
            DeviceDemand::new("hygon", 1)
                .real_devices()
                .check(&caps)
                .unwrap_err(),
            "needs real hygon devices"
        );
    }
}
