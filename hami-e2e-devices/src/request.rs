//! The request side: resource names, what a container asks for, what a pod adds as
//! annotations, and what HAMi should grant in return.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::error::{Error, Result};
use crate::scalar::parse_quantity;

/// The extended resources a vendor's devices are requested with. Clusters rename them in
/// HAMi's `device-config.yaml` (see [`DeviceConfig`](crate::DeviceConfig)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceNames {
    /// Number of devices (`nvidia.com/gpu`).
    pub count: String,
    /// Memory per device (`nvidia.com/gpumem`), in the vendor's unit.
    pub memory: Option<String>,
    /// Memory per device as a percentage of the device (`nvidia.com/gpumem-percentage`).
    pub memory_percentage: Option<String>,
    /// Compute per device (`nvidia.com/gpucores`).
    pub cores: Option<String>,
    /// Task priority (`nvidia.com/priority`).
    pub priority: Option<String>,
}

impl ResourceNames {
    /// Only a count resource.
    pub fn new(count: impl Into<String>) -> Self {
        ResourceNames {
            count: count.into(),
            memory: None,
            memory_percentage: None,
            cores: None,
            priority: None,
        }
    }

    /// Sets the memory resource.
    #[must_use]
    pub fn memory(mut self, name: impl Into<String>) -> Self {
        self.memory = Some(name.into());
        self
    }

    /// Sets the memory-percentage resource.
    #[must_use]
    pub fn memory_percentage(mut self, name: impl Into<String>) -> Self {
        self.memory_percentage = Some(name.into());
        self
    }

    /// Sets the cores resource.
    #[must_use]
    pub fn cores(mut self, name: impl Into<String>) -> Self {
        self.cores = Some(name.into());
        self
    }

    /// Sets the priority resource.
    #[must_use]
    pub fn priority(mut self, name: impl Into<String>) -> Self {
        self.priority = Some(name.into());
        self
    }

    /// Every name, count first, for HAMi's `managedResources` or quota checks.
    pub fn all(&self) -> Vec<&str> {
        std::iter::once(self.count.as_str())
            .chain(
                [
                    &self.memory,
                    &self.memory_percentage,
                    &self.cores,
                    &self.priority,
                ]
                .into_iter()
                .flatten()
                .map(String::as_str),
            )
            .collect()
    }
}

/// What one container asks of one vendor: "N devices, M MiB each, C % cores".
///
/// # Examples
///
/// ```
/// use hami_e2e_devices::{DeviceBackend, DeviceRequest, Nvidia};
///
/// let req = DeviceRequest::devices(2).memory_mib(3000).cores(30);
/// let resources = Nvidia::default().container_resources(&req)?;
/// let limits = resources.limits.unwrap();
/// assert_eq!(limits["nvidia.com/gpu"].0, "2");
/// assert_eq!(limits["nvidia.com/gpumem"].0, "3000");
/// assert_eq!(limits["nvidia.com/gpucores"].0, "30");
/// # Ok::<(), hami_e2e_devices::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceRequest {
    /// Number of devices.
    pub count: u32,
    /// Memory per device in MiB; backends convert to their unit (Cambricon: 256 MiB).
    pub memory_mib: Option<u64>,
    /// Memory per device as a percentage (1..=100), where the vendor supports it.
    pub memory_percentage: Option<u32>,
    /// Compute per device, in percent (NVIDIA, Hygon, Cambricon) or AI cores (Ascend).
    pub cores: Option<u32>,
    /// Task priority, where the vendor supports it.
    pub priority: Option<i32>,
}

impl DeviceRequest {
    /// `count` devices, everything else left to the vendor's defaults.
    pub fn devices(count: u32) -> Self {
        DeviceRequest {
            count,
            ..DeviceRequest::default()
        }
    }

    /// Sets the memory per device in MiB.
    #[must_use]
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = Some(mib);
        self
    }

    /// Sets the memory per device as a percentage.
    #[must_use]
    pub fn memory_percentage(mut self, percent: u32) -> Self {
        self.memory_percentage = Some(percent);
        self
    }

    /// Sets the compute per device.
    #[must_use]
    pub fn cores(mut self, cores: u32) -> Self {
        self.cores = Some(cores);
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Builds container limits from `names`, dividing memory by `memory_unit_mib` (1 for MiB).
    /// This is what [`DeviceBackend::container_resources`](crate::DeviceBackend::container_resources)
    /// does by default; backends call it after their own checks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] naming `vendor` when a value has no resource name, a
    /// percentage is outside 1..=100, or memory is not a whole number of units.
    pub fn to_resources(
        &self,
        vendor: &str,
        names: &ResourceNames,
        memory_unit_mib: u64,
    ) -> Result<ResourceRequirements> {
        let bad = |reason: String| Error::InvalidRequest {
            vendor: vendor.to_owned(),
            reason,
        };
        let mut limits = BTreeMap::new();
        limits.insert(names.count.clone(), Quantity(self.count.to_string()));
        if let Some(mib) = self.memory_mib {
            let name = names
                .memory
                .as_ref()
                .ok_or_else(|| bad("memory cannot be requested: no memory resource".into()))?;
            let unit = memory_unit_mib.max(1);
            if !mib.is_multiple_of(unit) {
                return Err(bad(format!(
                    "{mib} MiB is not a whole number of {name} units of {unit} MiB"
                )));
            }
            limits.insert(name.clone(), Quantity((mib / unit).to_string()));
        }
        if let Some(p) = self.memory_percentage {
            let name = names.memory_percentage.as_ref().ok_or_else(|| {
                bad("memory percentage cannot be requested: no percentage resource".into())
            })?;
            if !(1..=100).contains(&p) {
                return Err(bad(format!("{name} must be within 1..=100, got {p}")));
            }
            limits.insert(name.clone(), Quantity(p.to_string()));
        }
        if let Some(c) = self.cores {
            let name = names
                .cores
                .as_ref()
                .ok_or_else(|| bad("cores cannot be requested: no cores resource".into()))?;
            limits.insert(name.clone(), Quantity(c.to_string()));
        }
        if let Some(p) = self.priority {
            let name = names
                .priority
                .as_ref()
                .ok_or_else(|| bad("priority cannot be requested: no priority resource".into()))?;
            limits.insert(name.clone(), Quantity(p.to_string()));
        }
        Ok(ResourceRequirements {
            limits: Some(limits),
            ..ResourceRequirements::default()
        })
    }

    /// Reads a request back from container resources (limits first, then requests, as HAMi
    /// does); `None` when the count resource is absent.
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] naming the resource when a quantity is not a whole number.
    pub fn from_resources(
        names: &ResourceNames,
        resources: &ResourceRequirements,
        memory_unit_mib: u64,
    ) -> Result<Option<Self>> {
        let get = |name: &str| -> Result<Option<u64>> {
            let q = resources
                .limits
                .as_ref()
                .and_then(|l| l.get(name))
                .or_else(|| resources.requests.as_ref().and_then(|r| r.get(name)));
            q.map(|q| parse_quantity(name, &q.0)).transpose()
        };
        let clamp32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let Some(count) = get(&names.count)? else {
            return Ok(None);
        };
        let mut req = DeviceRequest::devices(clamp32(count));
        if let Some(name) = &names.memory {
            req.memory_mib = get(name)?.map(|v| v.saturating_mul(memory_unit_mib.max(1)));
        }
        if let Some(name) = &names.memory_percentage {
            req.memory_percentage = get(name)?.map(clamp32);
        }
        if let Some(name) = &names.cores {
            req.cores = get(name)?.map(clamp32);
        }
        if let Some(name) = &names.priority {
            req.priority = get(name)?.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
        }
        Ok(Some(req))
    }
}

/// Pod-level choices a vendor reads from pod annotations: which device types or ids to use
/// or avoid, and a sharing mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PodOptions {
    /// Only devices whose type contains one of these (case-insensitive), e.g. `A100`.
    pub use_types: Vec<String>,
    /// No device whose type contains one of these.
    pub avoid_types: Vec<String>,
    /// Only these device ids.
    pub use_ids: Vec<String>,
    /// None of these device ids.
    pub avoid_ids: Vec<String>,
    /// The vendor's mode annotation (`nvidia.com/vgpu-mode`, `huawei.com/vnpu-mode`).
    pub mode: Option<String>,
}

impl PodOptions {
    /// Adds a device type to use.
    #[must_use]
    pub fn use_type(mut self, t: impl Into<String>) -> Self {
        self.use_types.push(t.into());
        self
    }

    /// Adds a device type to avoid.
    #[must_use]
    pub fn avoid_type(mut self, t: impl Into<String>) -> Self {
        self.avoid_types.push(t.into());
        self
    }

    /// Adds a device id to use.
    #[must_use]
    pub fn use_id(mut self, id: impl Into<String>) -> Self {
        self.use_ids.push(id.into());
        self
    }

    /// Adds a device id to avoid.
    #[must_use]
    pub fn avoid_id(mut self, id: impl Into<String>) -> Self {
        self.avoid_ids.push(id.into());
        self
    }

    /// Sets the mode.
    #[must_use]
    pub fn mode(mut self, mode: impl Into<String>) -> Self {
        self.mode = Some(mode.into());
        self
    }
}

/// What a whole pod asks of one vendor: one entry per container, init containers first (the
/// order of HAMi's allocation annotations), plus the pod's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PodRequest {
    /// Per container, init containers first; `None` for a container without devices.
    pub containers: Vec<Option<DeviceRequest>>,
    /// The pod's annotations' choices.
    pub options: PodOptions,
}

impl PodRequest {
    /// A pod with one container asking for `request`.
    pub fn single(request: DeviceRequest) -> Self {
        PodRequest {
            containers: vec![Some(request)],
            options: PodOptions::default(),
        }
    }

    /// A pod with these containers (init containers first).
    pub fn containers(containers: impl IntoIterator<Item = Option<DeviceRequest>>) -> Self {
        PodRequest {
            containers: containers.into_iter().collect(),
            options: PodOptions::default(),
        }
    }

    /// Sets the options.
    #[must_use]
    pub fn options(mut self, options: PodOptions) -> Self {
        self.options = options;
        self
    }
}

/// How much memory HAMi should grant per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpectedMemory {
    /// Exactly this many MiB.
    Exact(u64),
    /// This percentage of the device's registered memory (rounded down, as HAMi's `int32`
    /// arithmetic does).
    PercentOfDevice(u32),
}

/// What HAMi should grant one container, per device: the outcome of the vendor's request
/// rules and webhook defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpectedDevices {
    /// Number of devices (Ascend 910C rounds 1 up to 2).
    pub count: u32,
    /// Memory per device.
    pub memory: ExpectedMemory,
    /// Cores per device.
    pub cores: u32,
}

impl ExpectedDevices {
    /// `count` devices with `memory` and `cores` each.
    pub fn new(count: u32, memory: ExpectedMemory, cores: u32) -> Self {
        ExpectedDevices {
            count,
            memory,
            cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ResourceNames {
        ResourceNames::new("v/n")
            .memory("v/m")
            .memory_percentage("v/p")
            .cores("v/c")
            .priority("v/prio")
    }

    #[test]
    fn resources_round_trip() {
        let req = DeviceRequest::devices(2)
            .memory_mib(512)
            .cores(30)
            .priority(1)
            .memory_percentage(50);
        let r = req.to_resources("v", &names(), 256).unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["v/m"].0, "2");
        let back = DeviceRequest::from_resources(&names(), &r, 256)
            .unwrap()
            .unwrap();
        assert_eq!(back, req);
        assert_eq!(names().all().len(), 5);
    }

    #[test]
    fn resources_reject_what_cannot_be_said() {
        let n = ResourceNames::new("v/n");
        assert!(
            DeviceRequest::devices(1)
                .memory_mib(1)
                .to_resources("v", &n, 1)
                .is_err()
        );
        assert!(
            DeviceRequest::devices(1)
                .memory_percentage(101)
                .to_resources("v", &names(), 1)
                .is_err()
        );
        assert!(
            DeviceRequest::devices(1)
                .memory_mib(100)
                .to_resources("v", &names(), 256)
                .is_err()
        );
        let none = ResourceRequirements::default();
        assert_eq!(DeviceRequest::from_resources(&n, &none, 1).unwrap(), None);
    }
}
