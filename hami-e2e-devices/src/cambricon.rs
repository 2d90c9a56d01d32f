//! Cambricon MLUs (`pkg/device/cambricon`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::backend::{AnnotationKeys, DeviceBackend};
use crate::config::DeviceConfig;
use crate::error::{Error, Problem, Result};
use crate::node::{FakeDevices, FakeNode, NodeDevice, node_capacity};
use crate::request::{DeviceRequest, ExpectedDevices, ExpectedMemory, PodOptions, ResourceNames};
use crate::scalar::MAX_INT32;

/// Cambricon's own node lock (a bare RFC 3339 time, expiring after 2 minutes).
pub const CAMBRICON_NODE_LOCK: &str = "cambricon.com/dsmlu.lock";

/// One unit of `cambricon.com/mlu.smlu.vmemory`, in MiB.
pub const CAMBRICON_MEMORY_UNIT_MIB: u64 = 256;

/// Cambricon MLUs: `cambricon.com/vmlu`, `cambricon.com/mlu.smlu.vmemory` (units of
/// 256 MiB), `cambricon.com/mlu.smlu.vcore`. No register annotation: HAMi derives one card per
/// 100 vcore of node capacity, each with `vmemory × 256 / cards` MiB, ids
/// `<node>-cambricon-mlu-<i>`, type `MLU`. Allocations in
/// `hami.io/cambricon-mlu-devices-*`. Cores default to 100.
#[derive(Debug, Clone)]
pub struct Cambricon {
    names: ResourceNames,
    keys: AnnotationKeys,
}

impl Default for Cambricon {
    fn default() -> Self {
        Cambricon {
            names: ResourceNames::new("cambricon.com/vmlu")
                .memory("cambricon.com/mlu.smlu.vmemory")
                .cores("cambricon.com/mlu.smlu.vcore"),
            keys: AnnotationKeys::new(
                "hami.io/cambricon-mlu-devices-to-allocate",
                "hami.io/cambricon-mlu-devices-allocated",
            )
            .types("cambricon.com/use-mlutype", "cambricon.com/nouse-mlutype")
            .ids("cambricon.com/use-gpuuuid", "cambricon.com/nouse-gpuuuid")
            .node_lock(CAMBRICON_NODE_LOCK, false),
        }
    }
}

impl Cambricon {
    /// Uses these resource names.
    #[must_use]
    pub fn with_resource_names(mut self, names: ResourceNames) -> Self {
        self.names = names;
        self
    }

    fn core_resource(&self) -> &str {
        self.names
            .cores
            .as_deref()
            .unwrap_or("cambricon.com/mlu.smlu.vcore")
    }
}

impl DeviceBackend for Cambricon {
    fn vendor(&self) -> &str {
        "cambricon"
    }

    fn device_type(&self) -> &str {
        "MLU"
    }

    fn resource_names(&self) -> &ResourceNames {
        &self.names
    }

    fn annotation_keys(&self) -> &AnnotationKeys {
        &self.keys
    }

    fn memory_unit_mib(&self) -> u64 {
        CAMBRICON_MEMORY_UNIT_MIB
    }

    fn configure(&mut self, config: &DeviceConfig) -> Result<()> {
        let Some(c) = &config.cambricon else {
            return Ok(());
        };
        if let Some(n) = &c.resource_count_name {
            self.names.count = n.clone();
        }
        if let Some(n) = &c.resource_memory_name {
            self.names.memory = Some(n.clone());
        }
        if let Some(n) = &c.resource_core_name {
            self.names.cores = Some(n.clone());
        }
        Ok(())
    }

    fn expected_devices(
        &self,
        request: &DeviceRequest,
        _options: &PodOptions,
    ) -> Result<ExpectedDevices> {
        let memory = match request.memory_mib.filter(|m| *m > 0) {
            Some(m) => ExpectedMemory::Exact(m),
            None => ExpectedMemory::PercentOfDevice(100),
        };
        Ok(ExpectedDevices::new(
            request.count,
            memory,
            request.cores.unwrap_or(100),
        ))
    }

    fn node_devices(&self, node: &Node) -> Result<Vec<NodeDevice>> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let cores_key = self.core_resource();
        let cores = node_capacity(node, cores_key)?
            .filter(|c| *c > 0)
            .ok_or_else(|| Error::Missing {
                object: format!("node/{name}"),
                key: cores_key.to_owned(),
            })?;
        let memory_units = match &self.names.memory {
            Some(m) => node_capacity(node, m)?.unwrap_or(0),
            None => 0,
        };
        // HAMi: devmem = int32(vmemory * 256 * 100 / vcore), one card per started 100 vcore.
        let per_card = memory_units
            .checked_mul(CAMBRICON_MEMORY_UNIT_MIB * 100)
            .map(|m| m / cores)
            .filter(|m| *m <= MAX_INT32);
        let Some(per_card) = per_card else {
            let key = self.names.memory.clone().unwrap_or_default();
            return Err(Error::parse(
                key,
                0,
                &memory_units.to_string(),
                Problem::Overflow {
                    field: "memory per card",
                    max: MAX_INT32,
                },
            ));
        };
        let cards = cores.div_ceil(100);
        if cards > 4096 {
            return Err(Error::parse(
                cores_key,
                0,
                &cores.to_string(),
                Problem::Overflow {
                    field: "cards",
                    max: 4096 * 100,
                },
            ));
        }
        Ok((0..cards as u32)
            .map(|i| NodeDevice {
                id: format!("{name}-cambricon-mlu-{i}"),
                index: i,
                count: 100,
                memory_mib: per_card,
                cores: 100,
                device_type: "MLU".to_owned(),
                numa: 0,
                mode: String::new(),
                health: true,
                extra: BTreeMap::new(),
            })
            .collect())
    }

    fn fake_node(&self, fake: &FakeDevices) -> Result<FakeNode> {
        fake.validate(self.vendor())?;
        if !fake.memory_mib.is_multiple_of(CAMBRICON_MEMORY_UNIT_MIB) {
            return Err(Error::InvalidRequest {
                vendor: self.vendor().to_owned(),
                reason: format!(
                    "MLU memory must be a multiple of {CAMBRICON_MEMORY_UNIT_MIB} MiB, got {}",
                    fake.memory_mib
                ),
            });
        }
        let n = u64::from(fake.devices);
        let mut capacity = BTreeMap::from([
            (
                self.names.count.clone(),
                Quantity((n * u64::from(fake.split)).to_string()),
            ),
            (
                self.core_resource().to_owned(),
                Quantity((n * 100).to_string()),
            ),
        ]);
        if let Some(m) = &self.names.memory {
            capacity.insert(
                m.clone(),
                Quantity((n * fake.memory_mib / CAMBRICON_MEMORY_UNIT_MIB).to_string()),
            );
        }
        Ok(FakeNode {
            annotations: BTreeMap::new(),
            capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::PodRequest;

    #[test]
    fn devices_come_from_capacity() {
        let c = Cambricon::default();
        let fake = c
            .fake_node(&FakeDevices::new("mlu-0", 2, "MLU370", 24576))
            .unwrap();
        assert_eq!(fake.capacity["cambricon.com/mlu.smlu.vmemory"].0, "192");
        let mut node = Node::default();
        node.metadata.name = Some("mlu-0".into());
        fake.apply_to(&mut node);
        let d = c.node_devices(&node).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].id, "mlu-0-cambricon-mlu-1");
        assert_eq!(d[0].memory_mib, 24576);
        assert!(c.fake_node(&FakeDevices::new("n", 1, "m", 100)).is_err());
        let e = c.node_devices(&Node::default()).unwrap_err();
        assert!(
            e.to_string().contains("cambricon.com/mlu.smlu.vcore"),
            "{e}"
        );
    }

    #[test]
    fn memory_goes_in_256_mib_units() {
        let c = Cambricon::default();
        let r = c
            .container_resources(&DeviceRequest::devices(1).memory_mib(1024).cores(50))
            .unwrap();
        assert_eq!(
            r.limits.as_ref().unwrap()["cambricon.com/mlu.smlu.vmemory"].0,
            "4"
        );
        assert!(
            c.container_resources(&DeviceRequest::devices(1).memory_mib(1000))
                .is_err()
        );
        let back = c.request_from_resources(&r).unwrap().unwrap();
        assert_eq!(back.memory_mib, Some(1024));
        let alloc = c
            .pod_allocation(&BTreeMap::from([(
                "hami.io/cambricon-mlu-devices-allocated".to_owned(),
                "mlu-0-cambricon-mlu-0,MLU,1024,50:;".to_owned(),
            )]))
            .unwrap();
        c.check_allocation(&PodRequest::single(back), &alloc, &[])
            .unwrap();
    }
}
