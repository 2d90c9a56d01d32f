//! The container side: one device HAMi granted to one container, a record of the vendor's
//! `*-devices-to-allocate` and `*-devices-allocated` pod annotations (Go `ContainerDevice`).
//!
//! A plain record: [`codec`](crate::codec) encodes and decodes it, and
//! [`PodAllocation`](crate::PodAllocation) holds it per container.

/// One device granted to one container (a record of `*-devices-allocated`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerDevice {
    /// The device id (the node register's `id`).
    pub id: String,
    /// HAMi's device type keyword (`NVIDIA`, `DCU`, `MLU`, `Ascend910B3`), not the model.
    pub device_type: String,
    /// Memory granted in MiB.
    pub memory_mib: u64,
    /// Cores granted.
    pub cores: u32,
}

impl ContainerDevice {
    /// A record.
    pub fn new(
        id: impl Into<String>,
        device_type: impl Into<String>,
        memory_mib: u64,
        cores: u32,
    ) -> Self {
        ContainerDevice {
            id: id.into(),
            device_type: device_type.into(),
            memory_mib,
            cores,
        }
    }
}
