//! NVIDIA GPUs under HAMi-core (`pkg/device/nvidia`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::backend::{AnnotationKeys, DeviceBackend, decode_register_any};
use crate::codec;
use crate::config::DeviceConfig;
use crate::container::ContainerDevice;
use crate::error::{Error, Result};
use crate::node::{FakeDevices, FakeNode, NodeDevice};
use crate::nvidia_smi;
use crate::request::{DeviceRequest, ExpectedDevices, ExpectedMemory, PodOptions, ResourceNames};

/// The image [`Nvidia`] verifies in by default: a CUDA base image whose
/// `NVIDIA_DRIVER_CAPABILITIES` includes `utility`, so the runtime mounts `nvidia-smi`.
pub const DEFAULT_NVIDIA_IMAGE: &str = "nvcr.io/nvidia/cuda:12.5.0-base-ubuntu22.04";

/// The image the memory limit probe runs in by default: it needs `python3` (the NVIDIA
/// container runtime mounts the driver's `libcuda.so.1` and `nvidia-smi` into it, with
/// `NVIDIA_DRIVER_CAPABILITIES=compute,utility`). `HAMI_E2E_NVIDIA_PROBE_IMAGE` overrides it
/// in the suite, for example with another of [`NVIDIA_PROBE_IMAGES`].
pub const DEFAULT_NVIDIA_PROBE_IMAGE: &str = "python:3.12-slim";

/// The images to run the NVIDIA scenarios' probe in, one run per image: the default, whose
/// probe reaches the driver API alone, and two CUDA user spaces (12.4 and 11.8, with
/// PyTorch), so a HAMi-core that holds under one CUDA release and not another is seen. Each
/// has `python3`. The repository's real-device workflow runs one job per image.
///
/// ```
/// assert_eq!(hami_e2e_devices::NVIDIA_PROBE_IMAGES[0], hami_e2e_devices::DEFAULT_NVIDIA_PROBE_IMAGE);
/// ```
pub const NVIDIA_PROBE_IMAGES: &[&str] = &[
    DEFAULT_NVIDIA_PROBE_IMAGE,
    "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
    "pytorch/pytorch:2.3.1-cuda11.8-cudnn8-runtime",
];

/// NVIDIA GPUs: `nvidia.com/gpu`, `gpumem` (MiB), `gpumem-percentage`, `gpucores`,
/// `priority`; the JSON register `hami.io/node-nvidia-register` (the colon format before
/// HAMi v2.8 is read too); allocations in `hami.io/vgpu-devices-*` with type `NVIDIA`.
///
/// Expected grants follow HAMi's webhook and filter: memory is `gpumem × memoryFactor`, else
/// the percentage of the card, else `defaultMemory`, else the whole card; a container asking
/// for devices without cores and without memory (or with 100 %) gets `gpucores: 100`.
#[derive(Debug, Clone)]
pub struct Nvidia {
    names: ResourceNames,
    keys: AnnotationKeys,
    default_memory_mib: u64,
    default_cores: u32,
    memory_factor: u64,
    image: String,
    probe_image: String,
}

impl Default for Nvidia {
    fn default() -> Self {
        Nvidia {
            names: ResourceNames::new("nvidia.com/gpu")
                .memory("nvidia.com/gpumem")
                .memory_percentage("nvidia.com/gpumem-percentage")
                .cores("nvidia.com/gpucores")
                .priority("nvidia.com/priority"),
            keys: AnnotationKeys::new(
                "hami.io/vgpu-devices-to-allocate",
                "hami.io/vgpu-devices-allocated",
            )
            .register("hami.io/node-nvidia-register")
            .handshake("hami.io/node-handshake")
            .types("nvidia.com/use-gputype", "nvidia.com/nouse-gputype")
            .ids("nvidia.com/use-gpuuuid", "nvidia.com/nouse-gpuuuid")
            .mode("nvidia.com/vgpu-mode"),
            default_memory_mib: 0,
            default_cores: 0,
            memory_factor: 1,
            image: DEFAULT_NVIDIA_IMAGE.to_owned(),
            probe_image: DEFAULT_NVIDIA_PROBE_IMAGE.to_owned(),
        }
    }
}

impl Nvidia {
    /// Uses `image` for verification instead of [`DEFAULT_NVIDIA_IMAGE`].
    #[must_use]
    pub fn with_test_image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }

    /// Runs the memory limit probe in `image` (it needs `python3`) instead of
    /// [`DEFAULT_NVIDIA_PROBE_IMAGE`].
    #[must_use]
    pub fn with_probe_image(mut self, image: impl Into<String>) -> Self {
        self.probe_image = image.into();
        self
    }

    /// Uses these resource names.
    #[must_use]
    pub fn with_resource_names(mut self, names: ResourceNames) -> Self {
        self.names = names;
        self
    }

    /// The device `type` the NVIDIA device plugin registers for a model name: NVML's name,
    /// prefixed `NVIDIA-` unless it starts with `NVIDIA`.
    pub fn registered_type(model: &str) -> String {
        if model.starts_with("NVIDIA") {
            model.to_owned()
        } else {
            format!("NVIDIA-{model}")
        }
    }
}

impl DeviceBackend for Nvidia {
    fn vendor(&self) -> &str {
        "nvidia"
    }

    fn device_type(&self) -> &str {
        "NVIDIA"
    }

    fn resource_names(&self) -> &ResourceNames {
        &self.names
    }

    fn annotation_keys(&self) -> &AnnotationKeys {
        &self.keys
    }

    fn configure(&mut self, config: &DeviceConfig) -> Result<()> {
        let Some(c) = &config.nvidia else {
            return Ok(());
        };
        if let Some(n) = &c.resource_count_name {
            self.names.count = n.clone();
        }
        for (target, value) in [
            (&mut self.names.memory, &c.resource_memory_name),
            (
                &mut self.names.memory_percentage,
                &c.resource_memory_percentage_name,
            ),
            (&mut self.names.cores, &c.resource_core_name),
            (&mut self.names.priority, &c.resource_priority_name),
        ] {
            if let Some(v) = value {
                *target = (!v.is_empty()).then(|| v.clone());
            }
        }
        if let Some(m) = c.default_memory {
            self.default_memory_mib = u64::from(m);
        }
        if let Some(cores) = c.default_cores {
            self.default_cores = cores;
        }
        if let Some(f) = c.memory_factor {
            self.memory_factor = u64::from(f.max(1));
        }
        Ok(())
    }

    fn container_resources(&self, request: &DeviceRequest) -> Result<ResourceRequirements> {
        if let Some(c) = request.cores.filter(|c| *c > 100) {
            return Err(Error::InvalidRequest {
                vendor: self.vendor().to_owned(),
                reason: format!("cores are a percentage of the card, 0..=100, got {c}"),
            });
        }
        request.to_resources(self.vendor(), &self.names, 1)
    }

    fn expected_devices(
        &self,
        request: &DeviceRequest,
        _options: &PodOptions,
    ) -> Result<ExpectedDevices> {
        let memory = request.memory_mib.filter(|m| *m > 0);
        let percentage = request
            .memory_percentage
            .filter(|p| *p > 0)
            .map(|p| p.min(100));
        let expected_memory = match (memory, percentage) {
            (Some(m), _) => ExpectedMemory::Exact(m.saturating_mul(self.memory_factor)),
            (None, Some(p)) => ExpectedMemory::PercentOfDevice(p),
            (None, None) if self.default_memory_mib > 0 => {
                ExpectedMemory::Exact(self.default_memory_mib)
            }
            (None, None) => ExpectedMemory::PercentOfDevice(100),
        };
        // The webhook's defaultExclusiveCoreIfNeeded.
        let exclusive = match request.memory_percentage {
            Some(p) => p == 100,
            None => request.memory_mib.is_none(),
        };
        let cores = match request.cores {
            Some(c) => c,
            None if exclusive => 100,
            None => self.default_cores,
        };
        Ok(ExpectedDevices::new(request.count, expected_memory, cores))
    }

    fn node_devices(&self, node: &Node) -> Result<Vec<NodeDevice>> {
        let key = self.keys.register.as_deref().unwrap_or_default();
        decode_register_any(node, key)
    }

    fn fake_node(&self, fake: &FakeDevices) -> Result<FakeNode> {
        fake.validate(self.vendor())?;
        let devices = fake.node_devices("GPU", &Self::registered_type(&fake.model));
        let key = self.keys.register.clone().unwrap_or_default();
        Ok(FakeNode {
            annotations: BTreeMap::from([(key, codec::encode_json_register(&devices))]),
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
        Some(nvidia_smi::query_gpu_command())
    }

    fn limit_probe_image(&self) -> Option<&str> {
        Some(&self.probe_image)
    }

    /// [`memory_probe_command`](crate::nvidia_probe::memory_probe_command) for the first GPU's grant (the probe
    /// allocates on device 0).
    fn limit_probe_command(&self, granted: &[ContainerDevice]) -> Option<Vec<String>> {
        granted
            .first()
            .map(|g| crate::nvidia_probe::memory_probe_command(g.memory_mib))
    }

    /// [`memory_verdict`](crate::nvidia_probe::memory_verdict) must say the limit holds for the first GPU's grant.
    fn check_limit_probe(&self, output: &str, granted: &[ContainerDevice]) -> Result<()> {
        use crate::nvidia_probe::{MemoryVerdict, memory_verdict, parse_probe};
        let Some(grant) = granted.first() else {
            return Err(Error::VerificationMismatch {
                vendor: self.vendor().to_owned(),
                problems: vec!["no GPU was granted to the probe's container".into()],
            });
        };
        let problem = match memory_verdict(&parse_probe(output), grant.memory_mib) {
            MemoryVerdict::Holds { .. } => return Ok(()),
            MemoryVerdict::NotEnforced { reason } => {
                format!("GPU {}: the memory limit does not hold: {reason}", grant.id)
            }
            MemoryVerdict::Unproven { reason } => {
                format!(
                    "GPU {}: the memory limit was not proven: {reason}",
                    grant.id
                )
            }
        };
        Err(Error::VerificationMismatch {
            vendor: self.vendor().to_owned(),
            problems: vec![problem],
        })
    }

    /// Every GPU the container sees must be one it was granted, showing the granted memory
    /// as `memory.total` (HAMi-core's hook), and every granted GPU must be seen.
    fn verify_output(&self, output: &str, granted: &[ContainerDevice]) -> Result<()> {
        let gpus = nvidia_smi::parse_query_gpu(output, nvidia_smi::QUERY_FIELDS)?;
        let mut problems = Vec::new();
        if gpus.len() != granted.len() {
            problems.push(format!(
                "the container sees {} GPU(s), {} were granted",
                gpus.len(),
                granted.len()
            ));
        }
        for (i, gpu) in gpus.iter().enumerate() {
            let grant = match &gpu.uuid {
                Some(u) => granted.iter().find(|g| &g.id == u),
                None => granted.get(i),
            };
            let Some(grant) = grant else {
                problems.push(format!(
                    "GPU {} ({}) was not granted",
                    i,
                    gpu.uuid.as_deref().unwrap_or("no uuid")
                ));
                continue;
            };
            match gpu.memory_total_mib {
                Some(total) if total == grant.memory_mib => {}
                Some(total) => problems.push(format!(
                    "GPU {} shows memory.total {total} MiB, granted {} MiB",
                    grant.id, grant.memory_mib
                )),
                None => problems.push(format!("GPU {} shows no memory.total", grant.id)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::PodAllocation;
    use crate::request::PodRequest;

    fn node_with(key: &str, value: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("gpu-1".into());
        n.metadata.annotations = Some(BTreeMap::from([(key.to_owned(), value.to_owned())]));
        n
    }

    #[test]
    fn reads_the_json_and_the_pre_2_8_colon_register() {
        let nv = Nvidia::default();
        let json = r#"[{"id":"GPU-0","index":0,"count":10,"devmem":15360,"devcore":100,"type":"NVIDIA-Tesla T4","numa":0,"mode":"hami-core","health":true}]"#;
        let d = nv
            .node_devices(&node_with("hami.io/node-nvidia-register", json))
            .unwrap();
        assert_eq!(d[0].memory_mib, 15360);
        let colon = "GPU-0,10,15360,100,NVIDIA-Tesla T4,0,true,0,hami-core:";
        let d2 = nv
            .node_devices(&node_with("hami.io/node-nvidia-register", colon))
            .unwrap();
        assert_eq!(d, d2);
        let e = nv.node_devices(&Node::default()).unwrap_err();
        assert!(
            e.to_string().contains("hami.io/node-nvidia-register"),
            "{e}"
        );
    }

    #[test]
    fn fake_node_round_trips() {
        let nv = Nvidia::default();
        let fake = nv
            .fake_node(&FakeDevices::new("kwok-0", 2, "Tesla T4", 15360))
            .unwrap();
        let mut node = Node::default();
        fake.apply_to(&mut node);
        let d = nv.node_devices(&node).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].device_type, "NVIDIA-Tesla T4");
        assert_eq!(d[1].id, "GPU-kwok-0-1");
        assert!(d.iter().all(|d| d.health && d.count == 10));
        assert_eq!(fake.capacity["nvidia.com/gpu"].0, "20");
    }

    #[test]
    fn expectations_follow_the_webhook_defaults() {
        let nv = Nvidia::default();
        let o = PodOptions::default();
        let e = nv.expected_devices(&DeviceRequest::devices(1), &o).unwrap();
        assert_eq!(e.cores, 100);
        assert_eq!(e.memory, ExpectedMemory::PercentOfDevice(100));
        let e = nv
            .expected_devices(&DeviceRequest::devices(1).memory_mib(300), &o)
            .unwrap();
        assert_eq!((e.memory, e.cores), (ExpectedMemory::Exact(300), 0));
        let e = nv
            .expected_devices(&DeviceRequest::devices(1).memory_percentage(100), &o)
            .unwrap();
        assert_eq!(e.cores, 100);
        let e = nv
            .expected_devices(&DeviceRequest::devices(1).memory_percentage(50), &o)
            .unwrap();
        assert_eq!(
            (e.memory, e.cores),
            (ExpectedMemory::PercentOfDevice(50), 0)
        );
        assert!(
            nv.container_resources(&DeviceRequest::devices(1).cores(101))
                .is_err()
        );
    }

    #[test]
    fn checks_the_reference_allocation() {
        let nv = Nvidia::default();
        let annotations = BTreeMap::from([
            ("hami.io/vgpu-node".to_owned(), "node1".to_owned()),
            ("hami.io/bind-phase".to_owned(), "success".to_owned()),
            (
                "hami.io/vgpu-devices-allocated".to_owned(),
                ";GPU-a,NVIDIA,3000,30:GPU-b,NVIDIA,3000,30:;".to_owned(),
            ),
        ]);
        let alloc = nv.pod_allocation(&annotations).unwrap();
        let req = PodRequest::containers([
            None,
            Some(DeviceRequest::devices(2).memory_mib(3000).cores(30)),
        ]);
        nv.check_allocation(&req, &alloc, &[]).unwrap();
        let wrong = PodRequest::containers([
            None,
            Some(DeviceRequest::devices(2).memory_mib(2000).cores(30)),
        ]);
        let e = nv.check_allocation(&wrong, &alloc, &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("container 1: device GPU-a has 3000 MiB, expected 2000 MiB"),
            "{e}"
        );
        let e = nv
            .check_allocation(&req, &PodAllocation::default(), &[])
            .unwrap_err();
        assert!(matches!(e, Error::Missing { .. }));
    }

    #[test]
    fn pod_annotations_and_config() {
        let nv = Nvidia::default();
        let a = nv
            .pod_annotations(
                &PodOptions::default()
                    .use_type("A100")
                    .use_type("V100")
                    .avoid_id("GPU-x"),
            )
            .unwrap();
        assert_eq!(a["nvidia.com/use-gputype"], "A100,V100");
        assert_eq!(a["nvidia.com/nouse-gpuuuid"], "GPU-x");
        assert!(
            nv.pod_annotations(&PodOptions::default().use_type("a,b"))
                .is_err()
        );
        let mut nv = Nvidia::default();
        let c = DeviceConfig::from_yaml(
            "nvidia:\n  resourceCountName: x.com/gpu\n  resourcePriorityName: \"\"\n  memoryFactor: 2\n",
        )
        .unwrap();
        nv.configure(&c).unwrap();
        assert_eq!(nv.resource_names().count, "x.com/gpu");
        assert_eq!(nv.resource_names().priority, None);
        let e = nv
            .expected_devices(
                &DeviceRequest::devices(1).memory_mib(10),
                &PodOptions::default(),
            )
            .unwrap();
        assert_eq!(e.memory, ExpectedMemory::Exact(20));
    }
}
