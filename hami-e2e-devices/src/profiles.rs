//! Device profiles of real models, with the memory their tools report, for fake devices that
//! look like the real ones to HAMi (the model names its type matching and the memory its
//! fit checks).
//!
//! ```
//! use hami_e2e_devices::profiles;
//!
//! let h200 = profiles::find("nvidia", "H200").unwrap();
//! assert_eq!(h200.memory_mib, 143_771);
//! let fake = h200.fake_devices("gpu-node-0", 2);
//! assert_eq!((fake.devices, fake.split, fake.memory_mib), (2, 10, 143_771));
//! assert_eq!(profiles::default_for("ascend").unwrap().model, "Ascend910B3");
//! ```

use crate::node::FakeDevices;

/// One real device model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceProfile {
    /// The vendor's name in this framework (`nvidia`).
    pub vendor: &'static str,
    /// The model as its device plugin reports it (`Tesla T4`, `DCU-Z100L`, `Ascend910B3`).
    pub model: &'static str,
    /// Memory in MiB, as the vendor's tool reports it (`nvidia-smi`'s `memory.total`).
    pub memory_mib: u64,
}

impl DeviceProfile {
    /// `count` devices of this model on `node`, split HAMi's default 10 ways (Ascend: 4,
    /// as its plugin registers them), 100 cores each.
    pub fn fake_devices(&self, node: impl Into<String>, count: u32) -> FakeDevices {
        let fake = FakeDevices::new(node, count, self.model, self.memory_mib);
        if self.vendor == "ascend" {
            fake.split(4)
        } else {
            fake
        }
    }
}

/// HAMi's default split count (`devicePlugin.deviceSplitCount` of its chart).
pub const DEFAULT_SPLIT: u32 = 10;

/// The catalogue. The first profile of each vendor is its default.
pub const PROFILES: &[DeviceProfile] = &[
    // NVIDIA: `nvidia-smi --query-gpu=memory.total` of each model.
    DeviceProfile {
        vendor: "nvidia",
        model: "Tesla T4",
        memory_mib: 15_360,
    },
    DeviceProfile {
        vendor: "nvidia",
        model: "A100-SXM4-80GB",
        memory_mib: 81_920,
    },
    DeviceProfile {
        vendor: "nvidia",
        model: "H100 80GB HBM3",
        memory_mib: 81_559,
    },
    DeviceProfile {
        vendor: "nvidia",
        model: "H200",
        memory_mib: 143_771,
    },
    // Hygon: the DCU plugin registers `DCU-<name>`.
    DeviceProfile {
        vendor: "hygon",
        model: "DCU-Z100",
        memory_mib: 16_384,
    },
    DeviceProfile {
        vendor: "hygon",
        model: "DCU-Z100L",
        memory_mib: 32_768,
    },
    // Cambricon: HAMi derives the devices from capacity (type `MLU`); 24 GiB per card.
    DeviceProfile {
        vendor: "cambricon",
        model: "MLU370-X4",
        memory_mib: 24_576,
    },
    // Ascend: the plugin registers the chip's common word.
    DeviceProfile {
        vendor: "ascend",
        model: "Ascend910B3",
        memory_mib: 65_536,
    },
    // A second chip, for a registry that runs two Ascend chips side by side.
    DeviceProfile {
        vendor: "ascend",
        model: "Ascend910B2",
        memory_mib: 65_536,
    },
];

/// The profile of `vendor` whose model contains `model` (case-insensitive).
pub fn find(vendor: &str, model: &str) -> Option<&'static DeviceProfile> {
    let model = model.to_lowercase();
    PROFILES
        .iter()
        .find(|p| p.vendor == vendor && p.model.to_lowercase().contains(&model))
}

/// The default profile of `vendor` (`nvidia`: Tesla T4), if the catalogue has one.
pub fn default_for(vendor: &str) -> Option<&'static DeviceProfile> {
    PROFILES.iter().find(|p| p.vendor == vendor)
}
