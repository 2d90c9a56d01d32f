//! Hygon DCUs (`pkg/device/hygon`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::backend::{AnnotationKeys, DeviceBackend, decode_register_any};
use crate::codec;
use crate::config::DeviceConfig;
use crate::error::Result;
use crate::node::{FakeDevices, FakeNode, NodeDevice};
use crate::request::{DeviceRequest, ExpectedDevices, ExpectedMemory, PodOptions, ResourceNames};

/// Hygon DCUs: `hygon.com/dcunum`, `dcumem` (MiB), `dcucores`; the legacy colon register
/// `hami.io/node-dcu-register` (7 or 9 fields); allocations in `hami.io/dcu-devices-*` with
/// type `DCU`. Cores default to 100 (a whole DCU's compute), memory to the whole device.
#[derive(Debug, Clone)]
pub struct Hygon {
    names: ResourceNames,
    keys: AnnotationKeys,
    memory_factor: u64,
}

impl Default for Hygon {
    fn default() -> Self {
        Hygon {
            names: ResourceNames::new("hygon.com/dcunum")
                .memory("hygon.com/dcumem")
                .cores("hygon.com/dcucores"),
            keys: AnnotationKeys::new(
                "hami.io/dcu-devices-to-allocate",
                "hami.io/dcu-devices-allocated",
            )
            .register("hami.io/node-dcu-register")
            .handshake("hami.io/node-handshake-dcu")
            .handshake_answer(crate::backend::HandshakeAnswer::Reported)
            .types("hygon.com/use-dcutype", "hygon.com/nouse-dcutype")
            .ids("hygon.com/use-gpuuuid", "hygon.com/nouse-gpuuuid"),
            memory_factor: 1,
        }
    }
}

impl Hygon {
    /// Uses these resource names.
    #[must_use]
    pub fn with_resource_names(mut self, names: ResourceNames) -> Self {
        self.names = names;
        self
    }
}

impl DeviceBackend for Hygon {
    fn vendor(&self) -> &str {
        "hygon"
    }

    fn device_type(&self) -> &str {
        "DCU"
    }

    fn resource_names(&self) -> &ResourceNames {
        &self.names
    }

    fn annotation_keys(&self) -> &AnnotationKeys {
        &self.keys
    }

    fn configure(&mut self, config: &DeviceConfig) -> Result<()> {
        let Some(c) = &config.hygon else {
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
        if let Some(f) = c.memory_factor {
            self.memory_factor = u64::from(f.max(1));
        }
        Ok(())
    }

    fn expected_devices(
        &self,
        request: &DeviceRequest,
        _options: &PodOptions,
    ) -> Result<ExpectedDevices> {
        let memory = match request.memory_mib.filter(|m| *m > 0) {
            Some(m) => ExpectedMemory::Exact(m.saturating_mul(self.memory_factor)),
            None => ExpectedMemory::PercentOfDevice(100),
        };
        Ok(ExpectedDevices::new(
            request.count,
            memory,
            request.cores.unwrap_or(100),
        ))
    }

    fn node_devices(&self, node: &Node) -> Result<Vec<NodeDevice>> {
        decode_register_any(node, self.keys.register.as_deref().unwrap_or_default())
    }

    fn fake_node(&self, fake: &FakeDevices) -> Result<FakeNode> {
        fake.validate(self.vendor())?;
        let model = if fake.model.is_empty() {
            "DCU"
        } else {
            &fake.model
        };
        let devices = fake.node_devices("DCU", model);
        Ok(FakeNode {
            annotations: BTreeMap::from([(
                self.keys.register.clone().unwrap_or_default(),
                codec::encode_legacy_register(&devices)?,
            )]),
            capacity: BTreeMap::from([(
                self.names.count.clone(),
                Quantity((u64::from(fake.devices) * u64::from(fake.split)).to_string()),
            )]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::PodRequest;

    #[test]
    fn reference_register_fake_node_and_allocation() {
        let h = Hygon::default();
        let mut node = Node::default();
        node.metadata.annotations = Some(BTreeMap::from([(
            "hami.io/node-dcu-register".to_owned(),
            "DCU-a1,4,65536,100,DCU-Z100,0,true,0,hami-core:DCU-a2,4,65536,100,DCU-Z100,0,true,1,hami-core:".to_owned(),
        )]));
        let d = h.node_devices(&node).unwrap();
        assert_eq!(d.len(), 2);

        let fake = h
            .fake_node(&FakeDevices::new("n", 2, "DCU-Z100", 65536).split(4))
            .unwrap();
        assert_eq!(
            fake.annotations["hami.io/node-dcu-register"],
            "DCU-n-0,4,65536,100,DCU-Z100,0,true,0,hami-core:DCU-n-1,4,65536,100,DCU-Z100,0,true,1,hami-core:"
        );
        assert_eq!(fake.capacity["hygon.com/dcunum"].0, "8");

        let alloc = h
            .pod_allocation(&BTreeMap::from([(
                "hami.io/dcu-devices-allocated".to_owned(),
                "DCU-a1,DCU,2048,100:;".to_owned(),
            )]))
            .unwrap();
        let req = PodRequest::single(DeviceRequest::devices(1).memory_mib(2048));
        h.check_allocation(&req, &alloc, &d).unwrap();
        let wrong = PodRequest::single(DeviceRequest::devices(1).memory_mib(2048).cores(50));
        assert!(h.check_allocation(&wrong, &alloc, &d).is_err());
        let r = h
            .container_resources(&DeviceRequest::devices(1).memory_mib(2048).cores(50))
            .unwrap();
        assert_eq!(r.limits.unwrap()["hygon.com/dcumem"].0, "2048");
        assert!(
            h.container_resources(&DeviceRequest::devices(1).memory_percentage(50))
                .is_err()
        );
    }
}
