//! HAMi's `device-config.yaml`, applied to every builtin backend.
#![no_main]

use hami_e2e_devices::{DeviceConfig, DeviceRegistry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = DeviceConfig::from_yaml(text) {
        let _ = DeviceRegistry::builtin().configure(&config);
    }
});
