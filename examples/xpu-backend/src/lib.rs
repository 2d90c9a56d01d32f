//! A device backend for a made-up vendor, `example.com/xpu`, written the way a vendor writes
//! one: in its own crate, against `hami-e2e-devices`' public API only.
//!
//! The XPU's device plugin (imaginary) registers devices in HAMi's JSON register under
//! `hami.io/node-xpu-register`, counts memory in units of 1 GiB (`example.com/xpu-memory: 4`
//! is 4096 MiB), and ships `xpu-smi`, whose `--query-memory` prints one
//! `xpu<i> uuid=<id> memory.total=<MiB>` line per visible device. Its section of HAMi's
//! `device-config.yaml` is `xpu:` with the usual resource name keys.
//!
//! ```
//! use hami_e2e_devices::{DeviceRegistry, DeviceRequest};
//!
//! let mut registry = DeviceRegistry::builtin();
//! registry.register(xpu_backend::Xpu::default())?;
//! let xpu = registry.get("xpu")?;
//! let limits = xpu.container_resources(&DeviceRequest::devices(1).memory_mib(4096))?.limits.unwrap();
//! assert_eq!(limits["example.com/xpu-memory"].0, "4");
//! # Ok::<(), hami_e2e_devices::Error>(())
//! ```

use std::collections::BTreeMap;

use hami_e2e_devices::{
    AnnotationKeys, ContainerDevice, DeviceBackend, DeviceConfig, Error, FakeDevices, FakeNode,
    NodeDevice, ResourceNames, Result, codec, node_annotation,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// MiB per unit of `example.com/xpu-memory`.
pub const XPU_MEMORY_UNIT_MIB: u64 = 1024;

/// The node register annotation of the XPU device plugin.
pub const XPU_REGISTER: &str = "hami.io/node-xpu-register";

/// The `xpu:` section of HAMi's device config.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct XpuConfig {
    resource_count_name: Option<String>,
    resource_memory_name: Option<String>,
    resource_core_name: Option<String>,
}

/// The `example.com/xpu` backend.
#[derive(Debug, Clone)]
pub struct Xpu {
    names: ResourceNames,
    keys: AnnotationKeys,
    image: String,
}

impl Default for Xpu {
    fn default() -> Self {
        Xpu {
            names: ResourceNames::new("example.com/xpu")
                .memory("example.com/xpu-memory")
                .cores("example.com/xpu-cores"),
            keys: AnnotationKeys::for_device_type("XPU")
                .register(XPU_REGISTER)
                .types("example.com/use-xputype", "example.com/nouse-xputype")
                .ids("example.com/use-xpuuuid", "example.com/nouse-xpuuuid"),
            image: "registry.example.com/xpu/runtime:1.0".to_owned(),
        }
    }
}

impl DeviceBackend for Xpu {
    fn vendor(&self) -> &str {
        "xpu"
    }

    fn device_type(&self) -> &str {
        "XPU"
    }

    fn resource_names(&self) -> &ResourceNames {
        &self.names
    }

    fn annotation_keys(&self) -> &AnnotationKeys {
        &self.keys
    }

    fn memory_unit_mib(&self) -> u64 {
        XPU_MEMORY_UNIT_MIB
    }

    fn configure(&mut self, config: &DeviceConfig) -> Result<()> {
        let Some(c) = config.section::<XpuConfig>("xpu")? else {
            return Ok(());
        };
        if let Some(n) = c.resource_count_name {
            self.names.count = n;
        }
        if let Some(n) = c.resource_memory_name {
            self.names.memory = Some(n);
        }
        if let Some(n) = c.resource_core_name {
            self.names.cores = Some(n);
        }
        Ok(())
    }

    fn node_devices(&self, node: &Node) -> Result<Vec<NodeDevice>> {
        codec::decode_json_register(XPU_REGISTER, node_annotation(node, XPU_REGISTER)?)
    }

    fn fake_node(&self, fake: &FakeDevices) -> Result<FakeNode> {
        fake.validate(self.vendor())?;
        let model = format!("XPU-{}", fake.model);
        let devices = fake.node_devices("XPU", &model);
        Ok(FakeNode {
            annotations: BTreeMap::from([(
                XPU_REGISTER.to_owned(),
                codec::encode_json_register(&devices),
            )]),
            capacity: BTreeMap::from([(
                self.names.count.clone(),
                Quantity((u64::from(fake.devices) * u64::from(fake.split)).to_string()),
            )]),
        })
    }

    fn test_image(&self) -> Option<&str> {
        Some(&self.image)
    }

    fn verify_command(&self) -> Option<Vec<String>> {
        Some(vec!["xpu-smi".to_owned(), "--query-memory".to_owned()])
    }

    fn verify_output(&self, output: &str, granted: &[ContainerDevice]) -> Result<()> {
        let seen = parse_xpu_smi(output)?;
        let mut problems = Vec::new();
        if seen.len() != granted.len() {
            problems.push(format!(
                "the container sees {} XPU(s), {} were granted",
                seen.len(),
                granted.len()
            ));
        }
        for (uuid, total) in &seen {
            match granted.iter().find(|g| &g.id == uuid) {
                Some(g) if g.memory_mib == *total => {}
                Some(g) => problems.push(format!(
                    "XPU {uuid} shows {total} MiB, granted {} MiB",
                    g.memory_mib
                )),
                None => problems.push(format!("XPU {uuid} was not granted")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::VerificationMismatch {
                vendor: self.vendor().to_owned(),
                problems,
            })
        }
    }
}

/// Parses `xpu-smi --query-memory`: `xpu<i> uuid=<id> memory.total=<MiB>` per line.
///
/// # Errors
///
/// [`Error::VerificationMismatch`] naming the line that does not have that shape.
pub fn parse_xpu_smi(output: &str) -> Result<Vec<(String, u64)>> {
    let bad = |line: &str| Error::VerificationMismatch {
        vendor: "xpu".to_owned(),
        problems: vec![format!("cannot read xpu-smi line `{line}`")],
    };
    output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut uuid = None;
            let mut total = None;
            for word in line.split_whitespace().skip(1) {
                match word.split_once('=') {
                    Some(("uuid", v)) => uuid = Some(v.to_owned()),
                    Some(("memory.total", v)) => total = v.parse::<u64>().ok(),
                    _ => {}
                }
            }
            uuid.zip(total).ok_or_else(|| bad(line))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hami_e2e_devices::{DeviceRegistry, DeviceRequest, PodOptions, PodRequest};

    fn registry() -> DeviceRegistry {
        let mut r = DeviceRegistry::builtin();
        r.register(Xpu::default()).unwrap();
        r
    }

    #[test]
    fn registers_beside_the_builtin_backends() {
        let r = registry();
        assert_eq!(r.get("xpu").unwrap().vendor(), "xpu");
        assert_eq!(r.get("XPU").unwrap().device_type(), "XPU");
        assert_eq!(r.vendors().len(), 5);
        let mut again = registry();
        assert!(again.register(Xpu::default()).is_err());
    }

    #[test]
    fn fake_node_and_node_devices_are_inverse() {
        let r = registry();
        let xpu = r.get("xpu").unwrap();
        let mut node = Node::default();
        xpu.fake_node(&FakeDevices::new("kwok-xpu-0", 4, "X1", 8192))
            .unwrap()
            .apply_to(&mut node);
        let devices = xpu.node_devices(&node).unwrap();
        assert_eq!(devices.len(), 4);
        assert_eq!(devices[3].id, "XPU-kwok-xpu-0-3");
        assert_eq!(devices[0].device_type, "XPU-X1");
        let status = node.status.unwrap();
        assert_eq!(status.allocatable.unwrap()["example.com/xpu"].0, "40");
    }

    #[test]
    fn requests_annotations_and_allocation_checks() {
        let xpu = Xpu::default();
        let req = DeviceRequest::devices(2).memory_mib(4096).cores(25);
        let limits = xpu.container_resources(&req).unwrap().limits.unwrap();
        assert_eq!(limits["example.com/xpu"].0, "2");
        assert_eq!(limits["example.com/xpu-memory"].0, "4");
        assert_eq!(limits["example.com/xpu-cores"].0, "25");
        assert!(
            xpu.container_resources(&DeviceRequest::devices(1).memory_mib(1000))
                .is_err()
        );
        let options = PodOptions::default().use_type("X1");
        let annotations = xpu.pod_annotations(&options).unwrap();
        assert_eq!(annotations["example.com/use-xputype"], "X1");

        let pod = BTreeMap::from([
            ("hami.io/vgpu-node".to_owned(), "kwok-xpu-0".to_owned()),
            (
                "hami.io/XPU-devices-allocated".to_owned(),
                "XPU-a,XPU,4096,25:XPU-b,XPU,4096,25:;".to_owned(),
            ),
        ]);
        let allocation = xpu.pod_allocation(&pod).unwrap();
        xpu.check_allocation(&PodRequest::single(req.clone()), &allocation, &[])
            .unwrap();
        let err = xpu
            .check_allocation(
                &PodRequest::single(DeviceRequest::devices(1).memory_mib(4096).cores(25)),
                &allocation,
                &[],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("expected 1 device(s), got 2"),
            "{err}"
        );
    }

    #[test]
    fn config_section_renames_resources() {
        let mut r = registry();
        let config =
            DeviceConfig::from_yaml("xpu:\n  resourceCountName: example.com/vxpu\n").unwrap();
        r.configure(&config).unwrap();
        assert_eq!(
            r.get("xpu").unwrap().resource_names().count,
            "example.com/vxpu"
        );
        let bad = DeviceConfig::from_yaml("xpu: 3\n").unwrap();
        assert!(r.configure(&bad).is_err());
    }

    #[test]
    fn verification() {
        let xpu = Xpu::default();
        let granted = [ContainerDevice::new("XPU-a", "XPU", 4096, 25)];
        xpu.verify_output("xpu0 uuid=XPU-a memory.total=4096\n", &granted)
            .unwrap();
        let err = xpu
            .verify_output("xpu0 uuid=XPU-a memory.total=16384\n", &granted)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("shows 16384 MiB, granted 4096 MiB"),
            "{err}"
        );
        assert!(parse_xpu_smi("garbage").is_err());
    }
}
