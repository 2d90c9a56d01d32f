//! The parts of HAMi's `device-config.yaml` (ConfigMap `hami-scheduler-device`) that change
//! what a test must send and expect: resource names, defaults, and the Ascend chip catalogue.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::scalar::MAX_VALUE_LEN;

/// HAMi's device config, parsed leniently: unknown keys are kept (see
/// [`DeviceConfig::section`]), missing ones keep the chart's defaults.
///
/// # Examples
///
/// ```
/// use hami_e2e_devices::{DeviceBackend, DeviceConfig, DeviceRegistry};
///
/// let config = DeviceConfig::from_yaml(r#"
/// nvidia:
///   resourceCountName: example.com/vgpu
///   resourceMemoryName: example.com/vgpu-memory
/// "#)?;
/// let mut registry = DeviceRegistry::builtin();
/// registry.configure(&config)?;
/// let nvidia = registry.get("nvidia")?;
/// assert_eq!(nvidia.resource_names().count, "example.com/vgpu");
/// # Ok::<(), hami_e2e_devices::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DeviceConfig {
    /// The `nvidia:` section.
    pub nvidia: Option<NvidiaConfig>,
    /// The `cambricon:` section.
    pub cambricon: Option<VendorConfig>,
    /// The `hygon:` section.
    pub hygon: Option<VendorConfig>,
    /// The `vnpus:` section (Ascend).
    pub vnpus: Option<VnpusConfig>,
    /// Every other top-level section, for vendors' own backends.
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml_ng::Value>,
}

impl DeviceConfig {
    /// Parses the YAML text of `device-config.yaml`.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceConfig`] if it is not YAML of that shape.
    pub fn from_yaml(text: &str) -> Result<Self> {
        Self::from_yaml_named("inline", text)
    }

    /// Like [`DeviceConfig::from_yaml`], naming where the text came from in errors.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceConfig`] naming `source_name`.
    pub fn from_yaml_named(source_name: &str, text: &str) -> Result<Self> {
        if text.len() > MAX_VALUE_LEN * 4 {
            return Err(Error::DeviceConfigField {
                field: "(whole file)".into(),
                reason: format!("{} bytes is larger than any ConfigMap", text.len()),
            });
        }
        // An empty file is YAML `null`; HAMi refuses it, so do we.
        let config: Option<DeviceConfig> =
            serde_yaml_ng::from_str(text).map_err(|source| Error::DeviceConfig {
                source_name: source_name.to_owned(),
                source,
            })?;
        config.ok_or_else(|| Error::DeviceConfigField {
            field: "(whole file)".into(),
            reason: format!(
                "`{source_name}` is empty; HAMi's scheduler refuses an empty device config"
            ),
        })
    }

    /// Another top-level section, deserialized: how a vendor's own backend reads its part.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceConfig`] if the section is present but not of type `T`.
    pub fn section<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.other
            .get(name)
            .map(|v| {
                serde_yaml_ng::from_value(v.clone()).map_err(|source| Error::DeviceConfig {
                    source_name: format!("section `{name}`"),
                    source,
                })
            })
            .transpose()
    }
}

/// A vendor section with resource names (`cambricon:`, `hygon:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VendorConfig {
    /// `resourceCountName`.
    pub resource_count_name: Option<String>,
    /// `resourceMemoryName`.
    pub resource_memory_name: Option<String>,
    /// `resourceCoreName`.
    pub resource_core_name: Option<String>,
    /// `memoryFactor` (Hygon): requested memory is multiplied by it.
    pub memory_factor: Option<u32>,
}

/// The `nvidia:` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct NvidiaConfig {
    /// `resourceCountName`.
    pub resource_count_name: Option<String>,
    /// `resourceMemoryName`.
    pub resource_memory_name: Option<String>,
    /// `resourceMemoryPercentageName`.
    pub resource_memory_percentage_name: Option<String>,
    /// `resourceCoreName`.
    pub resource_core_name: Option<String>,
    /// `resourcePriorityName`.
    pub resource_priority_name: Option<String>,
    /// `defaultMemory` (MiB granted when neither memory nor percentage is asked; 0 = all).
    pub default_memory: Option<u32>,
    /// `defaultCores`.
    pub default_cores: Option<u32>,
    /// `defaultGPUNum`.
    #[serde(rename = "defaultGPUNum")]
    pub default_gpu_num: Option<u32>,
    /// `memoryFactor`: requested memory is multiplied by it.
    pub memory_factor: Option<u32>,
    /// `deviceSplitCount`.
    pub device_split_count: Option<u32>,
    /// `deviceMemoryScaling`.
    pub device_memory_scaling: Option<f64>,
}

/// The `vnpus:` section (Ascend).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VnpusConfig {
    /// `hamiVnpuCore`: soft split for every node.
    #[serde(default)]
    pub hami_vnpu_core: bool,
    /// One entry per chip.
    #[serde(default)]
    pub configs: Vec<VnpuConfig>,
}

/// One Ascend chip of the `vnpus.configs` list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VnpuConfig {
    /// `chipName` (`910B3`).
    #[serde(default)]
    pub chip_name: String,
    /// `commonWord` (`Ascend910B3`): HAMi's device type and annotation infix.
    pub common_word: String,
    /// `resourceName`.
    pub resource_name: Option<String>,
    /// `resourceMemoryName`.
    pub resource_memory_name: Option<String>,
    /// `resourceCoreName`.
    pub resource_core_name: Option<String>,
    /// `memoryAllocatable` (MiB).
    #[serde(default)]
    pub memory_allocatable: u64,
    /// `memoryCapacity` (MiB).
    #[serde(default)]
    pub memory_capacity: u64,
    /// `memoryFactor`.
    pub memory_factor: Option<u32>,
    /// `aiCore`.
    #[serde(default)]
    pub ai_core: u32,
    /// `superPod` (910C: counts go in pairs).
    #[serde(default)]
    pub super_pod: bool,
    /// `templates`.
    #[serde(default)]
    pub templates: Vec<TemplateConfig>,
}

/// One hard-split vNPU template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TemplateConfig {
    /// `name` (`vir05_1c_16g`).
    pub name: String,
    /// `memory` (MiB).
    pub memory: u64,
    /// `aiCore`.
    #[serde(default)]
    pub ai_core: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart's default `device-config.yaml`, rendered with default values (shortened).
    const CHART: &str = r#"
nvidia:
  resourceCountName: nvidia.com/gpu
  resourceMemoryName: nvidia.com/gpumem
  resourceMemoryPercentageName: nvidia.com/gpumem-percentage
  resourceCoreName: nvidia.com/gpucores
  resourcePriorityName: nvidia.com/priority
  overwriteEnv: false
  defaultMemory: 0
  defaultCores: 0
  defaultGPUNum: 1
  memoryFactor: 1
  deviceSplitCount: 10
  deviceMemoryScaling: 1
  deviceCoreScaling: 1
  gpuCorePolicy: default
  runtimeClassName: ""
  migProfileAllowlist:
  - models: [ "A30" ]
    profiles: [ "1g.6gb", "2g.12gb", "4g.24gb" ]
cambricon:
  resourceCountName: cambricon.com/vmlu
  resourceMemoryName: cambricon.com/mlu.smlu.vmemory
  resourceCoreName: cambricon.com/mlu.smlu.vcore
hygon:
  resourceCountName: hygon.com/dcunum
  resourceMemoryName: hygon.com/dcumem
  resourceCoreName: hygon.com/dcucores
  memoryFactor: 1
mthreads:
  resourceCountName: "mthreads.com/vgpu"
vnpus:
  hamiVnpuCore: false
  configs:
  - chipName: 910B3
    commonWord: Ascend910B3
    resourceName: huawei.com/Ascend910B3
    resourceMemoryName: huawei.com/Ascend910B3-memory
    resourceCoreName: huawei.com/Ascend910B3-core
    memoryAllocatable: 65536
    memoryCapacity: 65536
    memoryFactor: 1
    aiCore: 20
    aiCPU: 7
    runtimeClassName: ""
    templates:
      - name: vir05_1c_16g
        memory: 16384
        aiCore: 5
        aiCPU: 1
"#;

    #[test]
    fn parses_the_chart_default() {
        let c = DeviceConfig::from_yaml(CHART).unwrap();
        let n = c.nvidia.as_ref().unwrap();
        assert_eq!(n.resource_count_name.as_deref(), Some("nvidia.com/gpu"));
        assert_eq!(n.default_gpu_num, Some(1));
        assert_eq!(n.device_split_count, Some(10));
        assert_eq!(c.hygon.as_ref().unwrap().memory_factor, Some(1));
        let v = c.vnpus.as_ref().unwrap();
        assert_eq!(v.configs[0].common_word, "Ascend910B3");
        assert_eq!(v.configs[0].templates[0].memory, 16384);
        #[derive(Deserialize)]
        struct Mthreads {
            #[serde(rename = "resourceCountName")]
            count: String,
        }
        let m: Mthreads = c.section("mthreads").unwrap().unwrap();
        assert_eq!(m.count, "mthreads.com/vgpu");
        assert!(c.section::<Mthreads>("absent").unwrap().is_none());
        assert!(c.section::<u32>("mthreads").is_err());
    }

    #[test]
    fn rejects_empty_and_malformed() {
        assert!(DeviceConfig::from_yaml("").is_err());
        let e = DeviceConfig::from_yaml("nvidia: [").unwrap_err();
        assert!(e.to_string().contains("inline"), "{e}");
        assert!(DeviceConfig::from_yaml("nvidia:\n  defaultGPUNum: -1\n").is_err());
        assert!(DeviceConfig::from_yaml("- 1").is_err());
    }
}
