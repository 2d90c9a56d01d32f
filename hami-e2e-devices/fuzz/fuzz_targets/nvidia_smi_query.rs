//! `nvidia-smi --query-gpu` output, with and without a header, the NVIDIA verification, and
//! the memory limit probe's parser and verdict.
#![no_main]

use hami_e2e_devices::{ContainerDevice, DeviceBackend, Nvidia, nvidia_smi};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = nvidia_smi::parse_query_gpu(text, nvidia_smi::QUERY_FIELDS);
    let _ = nvidia_smi::parse_query_gpu(text, &[]);
    let granted = [ContainerDevice::new("GPU-a", "NVIDIA", 3000, 30)];
    let _ = Nvidia::default().verify_output(text, &granted);
    let _ = Nvidia::default().check_limit_probe(text, &granted);
    let report = hami_e2e_devices::nvidia_probe::parse_probe(text);
    let _ = hami_e2e_devices::nvidia_probe::memory_verdict(&report, 0);
});
