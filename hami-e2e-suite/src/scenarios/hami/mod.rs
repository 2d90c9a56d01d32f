//! HAMi's own scenarios, `hami::<vendor>::<behaviour>`: the real HAMi scheduler and webhook
//! (see `hami_e2e_helm::HamiFixture`) over fake nodes of each backend, whose device plugins
//! the fake device agent plays.
//!
//! Every scenario adds fake nodes of its own (HAMi registers a node the moment it is
//! added), pins its pods to them, and removes them afterwards, so scenarios run side by side
//! without sharing a device. On failure, the tail of HAMi's and the HAMi kube-scheduler's
//! logs and HAMi's lines about the scenario's pods are attached to the report.
//!
//! Where a scenario goes:
//!
//! - [`common`]: the scenarios of every vendor, one file per topic (`allocation`, `faults`,
//!   `webhook`, `placement`, `requests`, `lifecycle`); a vendor that cannot run one is left
//!   out in `common::scenarios`.
//! - [`nvidia`], [`cambricon`], [`hygon`], [`ascend`]: the scenarios of one vendor only
//!   (`hami::nvidia::quota`), each file's `scenarios` listing them; they run for every
//!   backend of that vendor (for Ascend, every chip).
//! - [`all`]: the scenarios over every vendor at once (`hami::all::*`, serial).
//!
//! They are built of [`case`] (`hami_scenario`, `Case`: the fake nodes, the pods, the waits
//! and checks) and [`oracle`] (the allocation oracle after each scenario, HAMi's metrics),
//! which import none of the scenario modules.

use std::sync::Arc;

use hami_e2e_core::Scenario;
use hami_e2e_devices::DeviceRegistry;

mod all;
mod ascend;
mod cambricon;
mod case;
mod common;
mod hygon;
mod nvidia;
mod oracle;

pub use case::HAMI_BUG;

/// HAMi's scenarios for every backend of `registry` that HAMi's device config serves:
/// every vendor's, each vendor's own, and those over all of them.
pub(crate) fn hami_scenarios(registry: &DeviceRegistry) -> Vec<Arc<dyn Scenario>> {
    let mut all: Vec<Arc<dyn Scenario>> = Vec::new();
    let mut vendors: Vec<String> = Vec::new();
    for backend in registry.iter().filter(|b| case::profile_of(*b).is_some()) {
        let key = backend.key();
        all.extend(common::scenarios(backend));
        all.extend(match backend.vendor() {
            "nvidia" => nvidia::scenarios(&key),
            "cambricon" => cambricon::scenarios(&key),
            "hygon" => hygon::scenarios(&key),
            "ascend" => ascend::scenarios(&key),
            _ => Vec::new(),
        });
        vendors.push(key);
    }
    if !vendors.is_empty() {
        all.extend(all::scenarios(vendors));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every serial scenario asks nextest for all its threads (`.config/nextest.toml`), so
    /// it runs alone there too.
    #[test]
    fn serial_scenarios_run_alone_under_nextest() {
        let config = include_str!("../../../../.config/nextest.toml");
        assert!(
            config.contains("test(/^hami::all::/)")
                && config.contains("test(/::restart-handshake$/)")
        );
        let scenarios = hami_scenarios(&DeviceRegistry::builtin());
        let serial: Vec<&str> = scenarios
            .iter()
            .filter(|s| s.serial())
            .map(|s| s.name())
            .collect();
        assert!(serial.len() >= 3, "{serial:?}");
        for name in serial {
            assert!(
                name.starts_with("hami::all::") || name.ends_with("::restart-handshake"),
                "serial scenario {name} is not matched by .config/nextest.toml's threads-required filter"
            );
        }
    }
}
