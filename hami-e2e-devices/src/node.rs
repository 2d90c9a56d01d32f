//! The node side: devices a node offers, as HAMi's scheduler reads them, and the reverse for
//! the GPU-less cluster: the annotations and capacity that make a fake node look like one
//! with N devices of a model.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::error::{Error, Result};
use crate::scalar::{MAX_INT32, parse_quantity};

/// One device of a node, as HAMi's scheduler sees it (Go `DeviceInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDevice {
    /// Unique id (a UUID for NVIDIA); what `use-gpuuuid` annotations match.
    pub id: String,
    /// Index on the node.
    pub index: u32,
    /// How many containers may share it (HAMi's split count).
    pub count: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Compute units (100 for NVIDIA, the AI cores for Ascend).
    pub cores: u32,
    /// The model as registered (`NVIDIA-Tesla T4`, `DCU-Z100`, `Ascend910B3`); what
    /// `use-gputype` annotations match.
    pub device_type: String,
    /// NUMA node.
    pub numa: i32,
    /// Sharing mode (`hami-core`, `mig`, `mps`).
    pub mode: String,
    /// Whether the scheduler may use it; HAMi rejects unhealthy cards (`CardNotHealth`).
    pub health: bool,
    /// Register keys without a field here (`migProfiles`, `custominfo`), kept for round trips.
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl NodeDevice {
    /// A healthy `hami-core` device shared by 10, with 100 cores, at index 0 on NUMA node 0.
    pub fn new(id: impl Into<String>, device_type: impl Into<String>, memory_mib: u64) -> Self {
        NodeDevice {
            id: id.into(),
            index: 0,
            count: 10,
            memory_mib,
            cores: 100,
            device_type: device_type.into(),
            numa: 0,
            mode: "hami-core".to_owned(),
            health: true,
            extra: BTreeMap::new(),
        }
    }
}

/// N fake devices of one model for one node of the GPU-less cluster.
///
/// # Examples
///
/// ```
/// use hami_e2e_devices::{DeviceBackend, FakeDevices, Nvidia};
///
/// let fake = Nvidia::default().fake_node(&FakeDevices::new("kwok-gpu-0", 2, "Tesla T4", 15360))?;
/// assert_eq!(fake.capacity["nvidia.com/gpu"].0, "20");
/// assert!(fake.annotations["hami.io/node-nvidia-register"].contains("\"devmem\":15360"));
/// # Ok::<(), hami_e2e_devices::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FakeDevices {
    /// The node's name; device ids are made from it so they are unique in the cluster.
    pub node: String,
    /// How many devices.
    pub devices: u32,
    /// The model (`Tesla T4`); each backend turns it into its register's `type`.
    pub model: String,
    /// Memory of each device in MiB.
    pub memory_mib: u64,
    /// How many containers may share each device (HAMi's chart default is 10).
    pub split: u32,
    /// Compute units per device (100).
    pub cores: u32,
    /// NUMA node of the first device.
    pub numa: i32,
    /// Over how many NUMA nodes the devices spread, in equal consecutive groups from
    /// [`numa`](Self::numa) on (1: all on one).
    pub numa_nodes: u32,
    /// Whether the devices are healthy.
    pub health: bool,
}

impl FakeDevices {
    /// `devices` healthy devices of `model` with `memory_mib` each, split 10 ways, 100 cores.
    pub fn new(
        node: impl Into<String>,
        devices: u32,
        model: impl Into<String>,
        memory_mib: u64,
    ) -> Self {
        FakeDevices {
            node: node.into(),
            devices,
            model: model.into(),
            memory_mib,
            split: 10,
            cores: 100,
            numa: 0,
            numa_nodes: 1,
            health: true,
        }
    }

    /// Sets how many containers may share each device.
    #[must_use]
    pub fn split(mut self, split: u32) -> Self {
        self.split = split;
        self
    }

    /// Sets the compute units per device.
    #[must_use]
    pub fn cores(mut self, cores: u32) -> Self {
        self.cores = cores;
        self
    }

    /// Sets the NUMA node (of the first device, with [`numa_nodes`](Self::numa_nodes)).
    #[must_use]
    pub fn numa(mut self, numa: i32) -> Self {
        self.numa = numa;
        self
    }

    /// Spreads the devices over `nodes` NUMA nodes in equal consecutive groups: 4 devices
    /// over 2 are on NUMA nodes 0, 0, 1, 1.
    ///
    /// ```
    /// use hami_e2e_devices::FakeDevices;
    ///
    /// let fake = FakeDevices::new("gpu-0", 4, "Tesla T4", 15360).numa_nodes(2);
    /// let numa: Vec<i32> = fake.node_devices("GPU", "NVIDIA-Tesla T4").iter().map(|d| d.numa).collect();
    /// assert_eq!(numa, [0, 0, 1, 1]);
    /// ```
    #[must_use]
    pub fn numa_nodes(mut self, nodes: u32) -> Self {
        self.numa_nodes = nodes.max(1);
        self
    }

    /// Marks the devices unhealthy.
    #[must_use]
    pub fn unhealthy(mut self) -> Self {
        self.health = false;
        self
    }

    /// Checks what every backend needs: a node name, at least one device, a split of at
    /// least 1, memory within HAMi's `int32`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] naming `vendor` and the bad value.
    pub fn validate(&self, vendor: &str) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InvalidRequest {
                vendor: vendor.to_owned(),
                reason,
            })
        };
        if self.node.is_empty() {
            return bad("fake devices need a node name".into());
        }
        if self.devices == 0 {
            return bad("fake devices need at least one device".into());
        }
        if self.split == 0 {
            return bad("a split count of 0 leaves nothing to schedule".into());
        }
        if self.memory_mib == 0 || self.memory_mib > MAX_INT32 {
            return bad(format!(
                "device memory {} MiB is outside 1..={}",
                self.memory_mib, MAX_INT32
            ));
        }
        Ok(())
    }

    /// The devices as a JSON or legacy register would list them, with ids
    /// `<prefix>-<node>-<i>` and the given `device_type`.
    pub fn node_devices(&self, prefix: &str, device_type: &str) -> Vec<NodeDevice> {
        (0..self.devices)
            .map(|i| NodeDevice {
                id: format!("{prefix}-{}-{i}", self.node),
                index: i,
                count: self.split,
                memory_mib: self.memory_mib,
                cores: self.cores,
                device_type: device_type.to_owned(),
                numa: self.numa
                    + i32::try_from(
                        u64::from(i) * u64::from(self.numa_nodes.max(1))
                            / u64::from(self.devices.max(1)),
                    )
                    .unwrap_or(0),
                mode: "hami-core".to_owned(),
                health: self.health,
                extra: BTreeMap::new(),
            })
            .collect()
    }
}

/// What to put on a fake node so HAMi's scheduler sees fake devices: annotations, and the
/// capacity (= allocatable) of the count resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FakeNode {
    /// Node annotations to set (the vendor's register annotation).
    pub annotations: BTreeMap<String, String>,
    /// `status.capacity` and `status.allocatable` entries to set.
    pub capacity: BTreeMap<String, Quantity>,
}

impl FakeNode {
    /// Merges this into `node`: annotations into its metadata, capacity into both
    /// `status.capacity` and `status.allocatable`.
    pub fn apply_to(&self, node: &mut Node) {
        let annotations = node.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in &self.annotations {
            annotations.insert(k.clone(), v.clone());
        }
        let status = node.status.get_or_insert_with(NodeStatus::default);
        for list in [&mut status.capacity, &mut status.allocatable] {
            let list = list.get_or_insert_with(BTreeMap::new);
            for (k, v) in &self.capacity {
                list.insert(k.clone(), v.clone());
            }
        }
    }

    /// Merges another vendor's fake devices into this one (a node with two vendors).
    #[must_use]
    pub fn merge(mut self, other: FakeNode) -> Self {
        self.annotations.extend(other.annotations);
        self.capacity.extend(other.capacity);
        self
    }
}

/// Checks that `capacity` (a [`FakeNode::capacity`], or a node's `status.capacity` or
/// `status.allocatable`) gives `resource`, the vendor's count resource, as `fake`'s devices
/// or devices × split count.
///
/// ```
/// use std::collections::BTreeMap;
/// use hami_e2e_devices::{FakeDevices, check_fake_capacity};
/// use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
///
/// let fake = FakeDevices::new("npu-0", 4, "E2E", 16384); // split 10
/// let ok = BTreeMap::from([("xpu.example.com/npu".to_string(), Quantity("40".into()))]);
/// assert!(check_fake_capacity("xpu", "xpu.example.com/npu", &ok, &fake).is_ok());
/// let e = check_fake_capacity("xpu", "xpu.example.com/npu", &BTreeMap::new(), &fake).unwrap_err();
/// assert_eq!(e.to_string(), "xpu's fake node `npu-0` gives no `xpu.example.com/npu` in its capacity; it must count the devices (4) or the devices × the split count (40)");
/// ```
///
/// # Errors
///
/// [`Error::FakeCapacity`].
pub fn check_fake_capacity(
    vendor: &str,
    resource: &str,
    capacity: &BTreeMap<String, Quantity>,
    fake: &FakeDevices,
) -> Result<()> {
    let devices = u64::from(fake.devices);
    let shares = devices * u64::from(fake.split.max(1));
    let found = capacity.get(resource).map(|q| q.0.clone());
    let fits = found
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n == devices || n == shares);
    if fits {
        return Ok(());
    }
    Err(Error::FakeCapacity {
        vendor: vendor.to_owned(),
        node: fake.node.clone(),
        resource: resource.to_owned(),
        found,
        devices,
        shares,
    })
}

/// A node's annotation, or [`Error::Missing`].
///
/// # Errors
///
/// [`Error::Missing`] naming the node and `key`.
pub fn node_annotation<'a>(node: &'a Node, key: &str) -> Result<&'a str> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .ok_or_else(|| Error::Missing {
            object: format!("node/{}", node.metadata.name.as_deref().unwrap_or("")),
            key: key.to_owned(),
        })
}

/// A node's `status.capacity` of `resource` as a whole number, `None` when absent.
///
/// # Errors
///
/// [`Error::Parse`] naming `resource` when the quantity is not a plain whole number
/// (decimal SI suffixes `k`, `M`, `G` and binary `Ki`, `Mi`, `Gi` are understood).
pub fn node_capacity(node: &Node, resource: &str) -> Result<Option<u64>> {
    let Some(q) = node
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get(resource))
    else {
        return Ok(None);
    };
    parse_quantity(resource, &q.0).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_sets_annotations_capacity_and_allocatable() {
        let mut node = Node::default();
        let fake = FakeNode {
            annotations: [("a".to_owned(), "b".to_owned())].into(),
            capacity: [("x/y".to_owned(), Quantity("2".into()))].into(),
        };
        fake.apply_to(&mut node);
        assert_eq!(node_annotation(&node, "a").unwrap(), "b");
        assert_eq!(node_capacity(&node, "x/y").unwrap(), Some(2));
        let status = node.status.unwrap();
        assert_eq!(status.allocatable.unwrap()["x/y"].0, "2");
        assert!(node_annotation(&Node::default(), "a").is_err());
    }

    #[test]
    fn fake_devices_validate() {
        assert!(FakeDevices::new("n", 1, "m", 1).validate("v").is_ok());
        assert!(FakeDevices::new("", 1, "m", 1).validate("v").is_err());
        assert!(FakeDevices::new("n", 0, "m", 1).validate("v").is_err());
        assert!(
            FakeDevices::new("n", 1, "m", 1)
                .split(0)
                .validate("v")
                .is_err()
        );
        assert!(
            FakeDevices::new("n", 1, "m", 1 << 40)
                .validate("v")
                .is_err()
        );
    }
}
