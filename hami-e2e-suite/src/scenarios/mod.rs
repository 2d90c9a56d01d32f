//! The suite's scenarios, one module per subject: [`cluster`] (the cluster itself),
//! [`devices`] (every device backend's fake devices and device accounting) and [`hami`]
//! (HAMi's scheduler and webhook, per vendor).

use std::sync::Arc;

use hami_e2e_core::Scenario;
use hami_e2e_devices::DeviceRegistry;

pub(crate) mod cluster;
pub(crate) mod devices;
pub(crate) mod hami;
pub(crate) mod pod;

/// Every scenario of the suite for the backends of `registry`: the cluster's, then each
/// backend's device scenarios, then HAMi's.
pub(crate) fn for_registry(registry: &DeviceRegistry) -> Vec<Arc<dyn Scenario>> {
    let mut all = cluster::scenarios();
    all.extend(devices::backend_scenarios(registry));
    all.extend(hami::hami_scenarios(registry));
    all
}
