//! `nvidia-smi -L` output.
#![no_main]

use hami_e2e_devices::nvidia_smi;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nvidia_smi::parse_list(text);
    }
});
