//! Huawei Ascend NPUs (`pkg/device/ascend`), one backend per chip.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::backend::{AnnotationKeys, DeviceBackend};
use crate::codec;
use crate::config::{DeviceConfig, VnpuConfig};
use crate::error::{Error, Result};
use crate::node::{FakeDevices, FakeNode, NodeDevice, node_annotation};
use crate::request::{DeviceRequest, ExpectedDevices, ExpectedMemory, PodOptions, ResourceNames};

/// The chip [`Ascend::default`] is: its backend's key is plain `ascend`.
const DEFAULT_CHIP: &str = "Ascend910B3";

/// `huawei.com/vnpu-mode`: `hami-core` selects the soft split (cores allowed, memory as asked).
pub const VNPU_MODE: &str = "huawei.com/vnpu-mode";
/// The soft-split value of [`VNPU_MODE`].
pub const VNPU_MODE_HAMI_CORE: &str = "hami-core";

/// A hard-split vNPU template (`vir05_1c_16g`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AscendTemplate {
    /// Its name.
    pub name: String,
    /// Its memory in MiB.
    pub memory_mib: u64,
    /// Its AI cores.
    pub ai_core: u32,
}

impl AscendTemplate {
    /// A template.
    pub fn new(name: impl Into<String>, memory_mib: u64, ai_core: u32) -> Self {
        AscendTemplate {
            name: name.into(),
            memory_mib,
            ai_core,
        }
    }
}

/// One Ascend chip of HAMi's catalogue (`vnpus.configs` in `device-config.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AscendChip {
    /// `commonWord`: HAMi's device type and annotation infix (`Ascend910B3`).
    pub common_word: String,
    /// `chipName` (`910B3`).
    pub chip_name: String,
    /// Resource names (`huawei.com/<cw>`, `-memory`, `-core`).
    pub names: ResourceNames,
    /// Memory granted for a whole device, MiB.
    pub memory_allocatable: u64,
    /// The device's memory, MiB: the largest request accepted.
    pub memory_capacity: u64,
    /// `memoryFactor`.
    pub memory_factor: u64,
    /// AI cores of a whole device.
    pub ai_core: u32,
    /// Hard-split templates, sorted by memory.
    pub templates: Vec<AscendTemplate>,
    /// 910C: devices come in pairs (1 is rounded up to 2, other odd counts are rejected).
    pub super_pod: bool,
}

impl AscendChip {
    fn new(
        common_word: &str,
        chip_name: &str,
        allocatable: u64,
        capacity: u64,
        ai_core: u32,
        templates: &[(&str, u64, u32)],
    ) -> Self {
        AscendChip {
            common_word: common_word.to_owned(),
            chip_name: chip_name.to_owned(),
            names: ResourceNames::new(format!("huawei.com/{common_word}"))
                .memory(format!("huawei.com/{common_word}-memory"))
                .cores(format!("huawei.com/{common_word}-core")),
            memory_allocatable: allocatable,
            memory_capacity: capacity,
            memory_factor: 1,
            ai_core,
            templates: templates
                .iter()
                .map(|(n, m, c)| AscendTemplate::new(*n, *m, *c))
                .collect(),
            super_pod: false,
        }
    }

    /// The chips of HAMi v2.10.0's chart, in its order: 910A, 910B2, 910B3, 910B4-1, 910B4,
    /// 310P (chip 310P3), 910C (chip `Ascend910`, super pod).
    pub fn catalogue() -> Vec<AscendChip> {
        let b16 = [("vir05_1c_16g", 16384, 5), ("vir10_3c_32g", 32768, 10)];
        let mut c910c = Self::new("Ascend910C", "Ascend910", 65536, 65536, 20, &b16);
        c910c.super_pod = true;
        vec![
            Self::new(
                "Ascend910A",
                "910A",
                32768,
                32768,
                30,
                &[
                    ("vir02", 2184, 2),
                    ("vir04", 4369, 4),
                    ("vir08", 8738, 8),
                    ("vir16", 17476, 16),
                ],
            ),
            Self::new(
                "Ascend910B2",
                "910B2",
                65536,
                65536,
                24,
                &[
                    ("vir03_1c_8g", 8192, 3),
                    ("vir06_1c_16g", 16384, 6),
                    ("vir12_3c_32g", 32768, 12),
                ],
            ),
            Self::new("Ascend910B3", "910B3", 65536, 65536, 20, &b16),
            Self::new("Ascend910B4-1", "910B4-1", 65536, 65536, 20, &b16),
            Self::new(
                "Ascend910B4",
                "910B4",
                32768,
                32768,
                20,
                &[("vir05_1c_8g", 8192, 5), ("vir10_3c_16g", 16384, 10)],
            ),
            Self::new(
                "Ascend310P",
                "310P3",
                21527,
                24576,
                8,
                &[("vir01", 3072, 1), ("vir02", 6144, 2), ("vir04", 12288, 4)],
            ),
            c910c,
        ]
    }

    /// The chip with this `commonWord` from [`AscendChip::catalogue`].
    pub fn named(common_word: &str) -> Option<AscendChip> {
        Self::catalogue()
            .into_iter()
            .find(|c| c.common_word.eq_ignore_ascii_case(common_word))
    }

    /// A chip from a `vnpus.configs` entry.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceConfigField`] without a `commonWord` or with a template of no memory.
    pub fn from_config(c: &VnpuConfig) -> Result<Self> {
        let field = |f: &str| format!("vnpus.configs[{}].{f}", c.common_word);
        if c.common_word.is_empty() {
            return Err(Error::DeviceConfigField {
                field: "vnpus.configs[].commonWord".into(),
                reason: "is empty".into(),
            });
        }
        let mut chip = Self::new(
            &c.common_word,
            &c.chip_name,
            c.memory_allocatable,
            c.memory_capacity.max(c.memory_allocatable),
            c.ai_core,
            &[],
        );
        if let Some(n) = &c.resource_name {
            chip.names.count = n.clone();
        }
        if let Some(n) = &c.resource_memory_name {
            chip.names.memory = Some(n.clone());
        }
        if let Some(n) = &c.resource_core_name {
            chip.names.cores = (!n.is_empty()).then(|| n.clone());
        }
        chip.memory_factor = u64::from(c.memory_factor.unwrap_or(1).max(1));
        chip.super_pod = c.super_pod;
        for t in &c.templates {
            if t.memory == 0 {
                return Err(Error::DeviceConfigField {
                    field: field("templates"),
                    reason: format!("template `{}` has no memory", t.name),
                });
            }
            chip.templates
                .push(AscendTemplate::new(t.name.clone(), t.memory, t.ai_core));
        }
        chip.templates.sort_by_key(|t| t.memory_mib);
        Ok(chip)
    }

    /// HAMi's `trimMemory`: the smallest template holding `mib`, else the whole device if
    /// `mib` fits its capacity (`None` as template), else nothing.
    pub fn trim_memory(&self, mib: u64) -> Option<(u64, Option<&AscendTemplate>)> {
        if let Some(t) = self.templates.iter().find(|t| mib <= t.memory_mib) {
            return Some((t.memory_mib, Some(t)));
        }
        (mib <= self.memory_capacity).then_some((self.memory_allocatable, None))
    }

    fn is_910c(&self) -> bool {
        self.common_word == "Ascend910C" && self.super_pod
    }
}

/// One Ascend chip: `huawei.com/<cw>`, `-memory` (MiB), `-core`; the JSON register
/// `hami.io/node-register-<cw>`; allocations in `hami.io/<cw>-devices-*` with type `<cw>`.
///
/// Outside `huawei.com/vnpu-mode: hami-core`, memory is rounded up to the chip's smallest
/// fitting template (or the whole device), cores cannot be requested, and several devices
/// can only be whole devices. On a 910C, 1 device becomes 2 and other odd counts are refused.
/// Cores default to 0.
#[derive(Debug, Clone)]
pub struct Ascend {
    chip: AscendChip,
    keys: AnnotationKeys,
}

impl Default for Ascend {
    /// The Ascend 910B3; [`Ascend::new`] takes any chip of [`AscendChip::catalogue`].
    fn default() -> Self {
        Ascend::new(AscendChip::named(DEFAULT_CHIP).expect("the catalogue has the 910B3"))
    }
}

impl Ascend {
    /// A backend for `chip`.
    pub fn new(chip: AscendChip) -> Self {
        let cw = chip.common_word.clone();
        Ascend {
            keys: AnnotationKeys::for_device_type(&cw)
                .register(format!("hami.io/node-register-{cw}"))
                .handshake(format!("hami.io/node-handshake-{cw}"))
                .handshake_answer(crate::backend::HandshakeAnswer::ReportedUnderscore)
                .ids(
                    format!("hami.io/use-{cw}-uuid"),
                    format!("hami.io/no-use-{cw}-uuid"),
                )
                .mode(VNPU_MODE),
            chip,
        }
    }

    /// One backend per chip of [`AscendChip::catalogue`].
    pub fn all() -> Vec<Ascend> {
        AscendChip::catalogue()
            .into_iter()
            .map(Ascend::new)
            .collect()
    }

    /// The chip.
    pub fn chip(&self) -> &AscendChip {
        &self.chip
    }

    /// Fake devices of this chip with its memory, for [`DeviceBackend::fake_node`].
    pub fn fake_devices(&self, node: impl Into<String>, devices: u32) -> FakeDevices {
        let smallest = self
            .chip
            .templates
            .first()
            .map_or(1, |t| t.memory_mib.max(1));
        FakeDevices::new(
            node,
            devices,
            self.chip.common_word.clone(),
            self.chip.memory_allocatable,
        )
        .split(
            u32::try_from(self.chip.memory_allocatable / smallest)
                .unwrap_or(1)
                .max(1),
        )
        .cores(self.chip.ai_core)
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidRequest {
            vendor: self.vendor().to_owned(),
            reason,
        }
    }

    fn count(&self, count: u32) -> Result<u32> {
        if self.chip.is_910c() {
            if count == 1 {
                return Ok(2);
            }
            if !count.is_multiple_of(2) {
                return Err(self.invalid(format!(
                    "Ascend910C device request must be 1 or 2*n, got {count}"
                )));
            }
        }
        Ok(count)
    }
}

impl DeviceBackend for Ascend {
    fn vendor(&self) -> &str {
        "ascend"
    }

    fn device_type(&self) -> &str {
        &self.chip.common_word
    }

    /// `ascend` for the default chip (the 910B3), `ascend-<chip>` for the others
    /// (`ascend-910c`), so that two chips side by side each get their scenarios.
    fn key(&self) -> String {
        let chip = &self.chip.common_word;
        if chip == DEFAULT_CHIP {
            "ascend".into()
        } else {
            let slug = hami_e2e_core::slug(chip);
            format!("ascend-{}", slug.strip_prefix("ascend").unwrap_or(&slug))
        }
    }

    fn resource_names(&self) -> &ResourceNames {
        &self.chip.names
    }

    fn annotation_keys(&self) -> &AnnotationKeys {
        &self.keys
    }

    fn configure(&mut self, config: &DeviceConfig) -> Result<()> {
        let Some(vnpus) = &config.vnpus else {
            return Ok(());
        };
        if let Some(c) = vnpus
            .configs
            .iter()
            .find(|c| c.common_word == self.chip.common_word)
        {
            *self = Ascend::new(AscendChip::from_config(c)?);
        }
        Ok(())
    }

    fn container_resources(&self, request: &DeviceRequest) -> Result<ResourceRequirements> {
        self.count(request.count)?;
        if request.memory_percentage.is_some() {
            return Err(self.invalid("Ascend has no memory-percentage resource".into()));
        }
        request.to_resources(self.vendor(), &self.chip.names, 1)
    }

    fn expected_devices(
        &self,
        request: &DeviceRequest,
        options: &PodOptions,
    ) -> Result<ExpectedDevices> {
        let hami_core = options.mode.as_deref() == Some(VNPU_MODE_HAMI_CORE);
        let cores = request.cores.unwrap_or(0);
        if cores > 0 && !hami_core {
            let name = self.chip.names.cores.as_deref().unwrap_or("cores");
            return Err(self.invalid(format!(
                "{name} is only supported in hami-core (soft split) mode"
            )));
        }
        let count = self.count(request.count)?;
        let memory = match request.memory_mib {
            None => self.chip.memory_allocatable,
            Some(m) if hami_core => m,
            Some(m) => match self.chip.trim_memory(m) {
                Some((trimmed, _)) if trimmed > 0 => trimmed,
                _ => {
                    return Err(self.invalid(format!(
                        "{} {m} is invalid",
                        self.chip.names.memory.as_deref().unwrap_or("memory")
                    )));
                }
            },
        };
        if request.count > 1 && !hami_core && memory != self.chip.memory_allocatable {
            return Err(self.invalid("vNPU not supported for multiple devices".into()));
        }
        Ok(ExpectedDevices::new(
            count,
            ExpectedMemory::Exact(memory.saturating_mul(self.chip.memory_factor)),
            cores.min(100),
        ))
    }

    fn node_devices(&self, node: &Node) -> Result<Vec<NodeDevice>> {
        let key = self.keys.register.as_deref().unwrap_or_default();
        codec::decode_json_register(key, node_annotation(node, key)?)
    }

    fn fake_node(&self, fake: &FakeDevices) -> Result<FakeNode> {
        fake.validate(self.vendor())?;
        if self.chip.is_910c() && !fake.devices.is_multiple_of(2) {
            return Err(self.invalid(format!(
                "Ascend910C devices come in pairs, got {}",
                fake.devices
            )));
        }
        let devices = fake.node_devices("NPU", &self.chip.common_word);
        Ok(FakeNode {
            annotations: BTreeMap::from([(
                self.keys.register.clone().unwrap_or_default(),
                codec::encode_json_register(&devices),
            )]),
            capacity: BTreeMap::from([(
                self.chip.names.count.clone(),
                Quantity(fake.devices.to_string()),
            )]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::PodRequest;

    #[test]
    fn catalogue_matches_the_chart() {
        let all = AscendChip::catalogue();
        assert_eq!(all.len(), 7);
        let p = AscendChip::named("Ascend310P").unwrap();
        assert_eq!(
            (p.memory_allocatable, p.memory_capacity, p.ai_core),
            (21527, 24576, 8)
        );
        assert!(AscendChip::named("Ascend910C").unwrap().super_pod);
        assert_eq!(Ascend::default().device_type(), "Ascend910B3");
        assert_eq!(
            Ascend::default().annotation_keys().to_allocate,
            "hami.io/Ascend910B3-devices-to-allocate"
        );
    }

    #[test]
    fn memory_rounds_up_to_a_template() {
        let a = Ascend::default();
        let o = PodOptions::default();
        let e = |m| a.expected_devices(&DeviceRequest::devices(1).memory_mib(m), &o);
        assert_eq!(e(8192).unwrap().memory, ExpectedMemory::Exact(16384));
        assert_eq!(e(16385).unwrap().memory, ExpectedMemory::Exact(32768));
        assert_eq!(e(40000).unwrap().memory, ExpectedMemory::Exact(65536));
        assert!(e(70000).is_err());
        let a910a = Ascend::new(AscendChip::named("Ascend910A").unwrap());
        let got = a910a
            .expected_devices(&DeviceRequest::devices(1).memory_mib(3000), &o)
            .unwrap();
        assert_eq!(got.memory, ExpectedMemory::Exact(4369));
        assert_eq!(
            a.chip().trim_memory(100).unwrap().1.unwrap().name,
            "vir05_1c_16g"
        );
        let soft = PodOptions::default().mode(VNPU_MODE_HAMI_CORE);
        let got = a
            .expected_devices(&DeviceRequest::devices(1).memory_mib(8000).cores(5), &soft)
            .unwrap();
        assert_eq!((got.memory, got.cores), (ExpectedMemory::Exact(8000), 5));
    }

    #[test]
    fn hard_split_rules() {
        let a = Ascend::default();
        let o = PodOptions::default();
        let e = a
            .expected_devices(&DeviceRequest::devices(1).cores(5), &o)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("huawei.com/Ascend910B3-core is only supported in hami-core"),
            "{e}"
        );
        let e = a
            .expected_devices(&DeviceRequest::devices(2).memory_mib(8192), &o)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("vNPU not supported for multiple devices"),
            "{e}"
        );
        assert_eq!(
            a.expected_devices(&DeviceRequest::devices(2), &o)
                .unwrap()
                .count,
            2
        );
        assert_eq!(
            a.pod_annotations(&PodOptions::default().mode("hami-core"))
                .unwrap()[VNPU_MODE],
            "hami-core"
        );
        assert!(
            a.pod_annotations(&PodOptions::default().use_type("x"))
                .is_err()
        );
    }

    #[test]
    fn ascend_910c_pairs() {
        let c = Ascend::new(AscendChip::named("Ascend910C").unwrap());
        let o = PodOptions::default();
        assert_eq!(
            c.expected_devices(&DeviceRequest::devices(1), &o)
                .unwrap()
                .count,
            2
        );
        assert!(c.expected_devices(&DeviceRequest::devices(3), &o).is_err());
        assert!(c.container_resources(&DeviceRequest::devices(3)).is_err());
        assert_eq!(
            c.expected_devices(&DeviceRequest::devices(4), &o)
                .unwrap()
                .count,
            4
        );
        assert!(c.fake_node(&c.fake_devices("n", 3)).is_err());
    }

    #[test]
    fn fake_node_register_and_allocation() {
        let a = Ascend::default();
        let fake = a.fake_node(&a.fake_devices("npu-0", 2)).unwrap();
        let mut node = Node::default();
        fake.apply_to(&mut node);
        let d = a.node_devices(&node).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].device_type, "Ascend910B3");
        assert_eq!(d[0].memory_mib, 65536);
        assert_eq!(d[0].count, 4);
        assert_eq!(fake.capacity["huawei.com/Ascend910B3"].0, "2");

        let alloc = a
            .pod_allocation(&BTreeMap::from([(
                "hami.io/Ascend910B3-devices-allocated".to_owned(),
                "NPU-npu-0-0,Ascend910B3,16384,0:;".to_owned(),
            )]))
            .unwrap();
        a.check_allocation(
            &PodRequest::single(DeviceRequest::devices(1).memory_mib(8192)),
            &alloc,
            &d,
        )
        .unwrap();
    }

    #[test]
    fn configure_from_vnpus() {
        let mut a = Ascend::default();
        let c = DeviceConfig::from_yaml(
            r#"
vnpus:
  configs:
  - chipName: 910B3
    commonWord: Ascend910B3
    resourceName: huawei.com/npu
    memoryAllocatable: 60000
    memoryCapacity: 65536
    aiCore: 20
    templates:
      - name: big
        memory: 30000
      - name: small
        memory: 10000
"#,
        )
        .unwrap();
        a.configure(&c).unwrap();
        assert_eq!(a.resource_names().count, "huawei.com/npu");
        assert_eq!(a.chip().templates[0].name, "small");
        assert_eq!(a.chip().trim_memory(50000).unwrap().0, 60000);
    }
}
