//! The allocation oracle: what HAMi's allocations add up to on every device, recomputed
//! from the cluster itself, and whatever breaks a device's budget.
//!
//! From the nodes' registrations (each backend's [`DeviceBackend::node_devices`](crate::DeviceBackend::node_devices)) and the
//! allocation annotations of every pod HAMi placed (`hami.io/vgpu-node`, not terminated:
//! HAMi counts a pod from its filter on, and frees it once it has ended), [`check`] sums
//! per device the memory, the cores and the number of containers sharing it, and reports
//! each [`Violation`]: a device over its memory, its cores or its split count (naming the
//! device, its budget and the pods), or an allocation naming a device or node that does
//! not exist.
//!
//! ```
//! use std::collections::BTreeMap;
//! use hami_e2e_devices::{oracle, DeviceBackend, DeviceRegistry, FakeDevices, Nvidia, codec, ContainerDevice};
//! use k8s_openapi::api::core::v1::{Node, Pod};
//!
//! let nvidia = Nvidia::default();
//! let fake = nvidia.fake_node(&FakeDevices::new("gpu-0", 1, "Tesla T4", 15360)).unwrap();
//! let mut node = Node::default();
//! node.metadata.name = Some("gpu-0".into());
//! node.metadata.annotations = Some(fake.annotations.clone());
//! let id = nvidia.node_devices(&node).unwrap()[0].id.clone();
//! let pod = |name: &str, mib: u64| {
//!     let mut p = Pod::default();
//!     p.metadata.name = Some(name.into());
//!     p.metadata.namespace = Some("ns".into());
//!     p.metadata.annotations = Some(BTreeMap::from([
//!         ("hami.io/vgpu-node".to_string(), "gpu-0".to_string()),
//!         (nvidia.annotation_keys().allocated.clone(),
//!          codec::encode_allocation(&[vec![ContainerDevice::new(&id, "NVIDIA", mib, 10)]])),
//!     ]));
//!     p
//! };
//! let usage = oracle::check(&DeviceRegistry::builtin(), &[node], &[pod("a", 10000), pod("b", 10000)]);
//! assert_eq!(usage.violations.len(), 1);
//! assert!(usage.violations[0].to_string().contains("20000 MiB of memory, over its 15360 MiB"));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::pod::VGPU_NODE;
use crate::registry::DeviceRegistry;

/// One device: its budget from the node's registration and what HAMi's allocations use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUse {
    /// The vendor whose backend registered it.
    pub vendor: String,
    /// Its node.
    pub node: String,
    /// Its id.
    pub device: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Cores.
    pub cores: u32,
    /// Split count: how many containers may share it.
    pub count: u32,
    /// Memory allocated, MiB.
    pub used_memory_mib: u64,
    /// Cores allocated.
    pub used_cores: u64,
    /// Containers given it.
    pub used_count: u32,
    /// The pods (`namespace/name`) given it.
    pub pods: Vec<String>,
}

/// What breaks a device's budget, or an allocation that names nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A device over its memory, cores or split count.
    OverBudget {
        /// `memory`, `cores` or `split count`.
        what: &'static str,
        /// The device, with the sums.
        device: Box<DeviceUse>,
    },
    /// An allocation naming a device its node does not register.
    UnknownDevice {
        /// `namespace/name`.
        pod: String,
        /// The node the pod is on.
        node: String,
        /// The device id.
        device: String,
    },
    /// A pod HAMi placed on a node that does not exist.
    UnknownNode {
        /// `namespace/name`.
        pod: String,
        /// `hami.io/vgpu-node`.
        node: String,
    },
    /// A pod's allocation annotation that does not parse.
    Unreadable {
        /// `namespace/name`.
        pod: String,
        /// The parser's error.
        message: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::OverBudget { what, device: d } => {
                let (used, budget) = match *what {
                    "memory" => (
                        format!("{} MiB", d.used_memory_mib),
                        format!("{} MiB", d.memory_mib),
                    ),
                    "cores" => (d.used_cores.to_string(), d.cores.to_string()),
                    _ => (d.used_count.to_string(), d.count.to_string()),
                };
                write!(
                    f,
                    "{} device {} on node {}: the pods {} are given {used} of {what}, over its {budget}",
                    d.vendor,
                    d.device,
                    d.node,
                    d.pods.join(", ")
                )
            }
            Violation::UnknownDevice { pod, node, device } => write!(
                f,
                "pod {pod} is given device {device}, which node {node} does not register"
            ),
            Violation::UnknownNode { pod, node } => {
                write!(
                    f,
                    "pod {pod} is placed on node {node}, which does not exist"
                )
            }
            Violation::Unreadable { pod, message } => {
                write!(f, "pod {pod}: its allocation does not parse: {message}")
            }
        }
    }
}

/// The oracle's answer: every device's use, and what is wrong.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Every registered device of the nodes given, with what is allocated on it.
    pub devices: Vec<DeviceUse>,
    /// Empty when every allocation fits.
    pub violations: Vec<Violation>,
}

impl Usage {
    /// The device `id` on `node`.
    pub fn device(&self, node: &str, id: &str) -> Option<&DeviceUse> {
        self.devices
            .iter()
            .find(|d| d.node == node && d.device == id)
    }
}

/// An object's name ("" without one); the crate's `kube` is optional (feature `agent`).
fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Recomputes every device's use on `nodes` from `pods` (those HAMi placed anywhere; a pod
/// on a node not in `nodes` is an [`Violation::UnknownNode`]), with the backends of
/// `registry`; see the [module docs](self).
pub fn check(registry: &DeviceRegistry, nodes: &[Node], pods: &[Pod]) -> Usage {
    let mut devices: BTreeMap<(String, String), DeviceUse> = BTreeMap::new();
    for node in nodes {
        let name = name_of(&node.metadata);
        for backend in registry.iter() {
            for d in backend.node_devices(node).unwrap_or_default() {
                devices.insert(
                    (name.clone(), d.id.clone()),
                    DeviceUse {
                        vendor: backend.vendor().to_owned(),
                        node: name.clone(),
                        device: d.id,
                        memory_mib: d.memory_mib,
                        cores: d.cores,
                        count: d.count,
                        used_memory_mib: 0,
                        used_cores: 0,
                        used_count: 0,
                        pods: Vec::new(),
                    },
                );
            }
        }
    }
    let known: Vec<String> = nodes.iter().map(|n| name_of(&n.metadata)).collect();
    let mut violations = Vec::new();
    let none = BTreeMap::new();
    for pod in pods.iter().filter(|p| !ended(p)) {
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&none);
        let Some(node) = annotations.get(VGPU_NODE).cloned() else {
            continue;
        };
        let who = format!(
            "{}/{}",
            pod.metadata.namespace.clone().unwrap_or_default(),
            name_of(&pod.metadata)
        );
        if !known.contains(&node) {
            violations.push(Violation::UnknownNode { pod: who, node });
            continue;
        }
        for backend in registry.iter() {
            let allocation = match backend.pod_allocation(annotations) {
                Ok(a) => a,
                Err(e) => {
                    violations.push(Violation::Unreadable {
                        pod: who.clone(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            for granted in allocation.devices() {
                let Some(d) = devices.get_mut(&(node.clone(), granted.id.clone())) else {
                    violations.push(Violation::UnknownDevice {
                        pod: who.clone(),
                        node: node.clone(),
                        device: granted.id.clone(),
                    });
                    continue;
                };
                d.used_memory_mib += granted.memory_mib;
                d.used_cores += u64::from(granted.cores);
                d.used_count += 1;
                if !d.pods.contains(&who) {
                    d.pods.push(who.clone());
                }
            }
        }
    }
    for d in devices.values() {
        for (what, over) in [
            ("memory", d.used_memory_mib > d.memory_mib),
            ("cores", d.used_cores > u64::from(d.cores)),
            ("split count", d.used_count > d.count),
        ] {
            if over {
                violations.push(Violation::OverBudget {
                    what,
                    device: Box::new(d.clone()),
                });
            }
        }
    }
    Usage {
        devices: devices.into_values().collect(),
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::DeviceBackend;
    use crate::codec;
    use crate::container::ContainerDevice;
    use crate::hygon::Hygon;
    use crate::node::FakeDevices;
    use crate::nvidia::Nvidia;

    fn node(name: &str, backend: &dyn DeviceBackend, fake: &FakeDevices) -> Node {
        let f = backend.fake_node(fake).unwrap();
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.annotations = Some(f.annotations);
        n.status = Some(k8s_openapi::api::core::v1::NodeStatus {
            capacity: Some(f.capacity.clone()),
            allocatable: Some(f.capacity),
            ..Default::default()
        });
        n
    }

    fn pod(name: &str, node: &str, key: &str, devices: Vec<ContainerDevice>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.annotations = Some(BTreeMap::from([
            (VGPU_NODE.to_string(), node.to_string()),
            (key.to_string(), codec::encode_allocation(&[devices])),
        ]));
        p
    }

    #[test]
    fn allocations_within_budget_are_summed_per_device() {
        let nvidia = Nvidia::default();
        let n = node(
            "gpu-0",
            &nvidia,
            &FakeDevices::new("gpu-0", 2, "Tesla T4", 15360),
        );
        let ids: Vec<String> = nvidia
            .node_devices(&n)
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        let key = nvidia.annotation_keys().allocated.clone();
        let pods = [
            pod(
                "a",
                "gpu-0",
                &key,
                vec![ContainerDevice::new(&ids[0], "NVIDIA", 3000, 30)],
            ),
            pod(
                "b",
                "gpu-0",
                &key,
                vec![ContainerDevice::new(&ids[0], "NVIDIA", 3000, 30)],
            ),
        ];
        let usage = check(&DeviceRegistry::builtin(), &[n], &pods);
        assert!(usage.violations.is_empty(), "{:?}", usage.violations);
        let d = usage.device("gpu-0", &ids[0]).unwrap();
        assert_eq!(
            (d.used_memory_mib, d.used_cores, d.used_count),
            (6000, 60, 2)
        );
        assert_eq!(d.pods, ["ns/a", "ns/b"]);
        assert_eq!(usage.device("gpu-0", &ids[1]).unwrap().used_count, 0);
    }

    #[test]
    fn a_device_over_memory_cores_and_split_count_is_named_with_its_pods() {
        let hygon = Hygon::default();
        let mut fake = FakeDevices::new("dcu-0", 1, "Z100", 16384);
        fake.split = 2;
        let n = node("dcu-0", &hygon, &fake);
        let id = hygon.node_devices(&n).unwrap()[0].id.clone();
        let key = hygon.annotation_keys().allocated.clone();
        let pods: Vec<Pod> = ["a", "b", "c"]
            .iter()
            .map(|p| {
                pod(
                    p,
                    "dcu-0",
                    &key,
                    vec![ContainerDevice::new(&id, "DCU", 8000, 40)],
                )
            })
            .collect();
        let usage = check(&DeviceRegistry::builtin(), &[n], &pods);
        let text: Vec<String> = usage.violations.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].contains(&format!("hygon device {id} on node dcu-0: the pods ns/a, ns/b, ns/c are given 24000 MiB of memory, over its 16384 MiB")), "{text:?}");
        assert!(
            text[1].contains("given 120 of cores, over its 100"),
            "{text:?}"
        );
        assert!(
            text[2].contains("given 3 of split count, over its 2"),
            "{text:?}"
        );
    }

    #[test]
    fn ended_pods_free_their_share() {
        let nvidia = Nvidia::default();
        let n = node(
            "gpu-0",
            &nvidia,
            &FakeDevices::new("gpu-0", 1, "Tesla T4", 15360),
        );
        let id = nvidia.node_devices(&n).unwrap()[0].id.clone();
        let key = nvidia.annotation_keys().allocated.clone();
        let mut done = pod(
            "done",
            "gpu-0",
            &key,
            vec![ContainerDevice::new(&id, "NVIDIA", 15360, 100)],
        );
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        });
        let live = pod(
            "live",
            "gpu-0",
            &key,
            vec![ContainerDevice::new(&id, "NVIDIA", 15360, 100)],
        );
        let usage = check(&DeviceRegistry::builtin(), &[n], &[done, live]);
        assert!(usage.violations.is_empty(), "{:?}", usage.violations);
    }

    #[test]
    fn unknown_devices_and_nodes_are_named() {
        let nvidia = Nvidia::default();
        let n = node(
            "gpu-0",
            &nvidia,
            &FakeDevices::new("gpu-0", 1, "Tesla T4", 15360),
        );
        let key = nvidia.annotation_keys().allocated.clone();
        let pods = [
            pod(
                "ghost-device",
                "gpu-0",
                &key,
                vec![ContainerDevice::new("GPU-nope", "NVIDIA", 1, 1)],
            ),
            pod(
                "ghost-node",
                "gpu-9",
                &key,
                vec![ContainerDevice::new("GPU-x", "NVIDIA", 1, 1)],
            ),
        ];
        let usage = check(&DeviceRegistry::builtin(), &[n], &pods);
        let text: Vec<String> = usage.violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "pod ns/ghost-device is given device GPU-nope, which node gpu-0 does not register",
                "pod ns/ghost-node is placed on node gpu-9, which does not exist",
            ]
        );
    }
}
