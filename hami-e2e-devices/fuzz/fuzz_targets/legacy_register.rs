//! The legacy colon/comma node register (Hygon; NVIDIA before HAMi v2.8): never panics, and
//! what decodes re-encodes to the same devices.
#![no_main]

use hami_e2e_devices::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(devices) = codec::decode_legacy_register("k", text) {
        if devices.is_empty() {
            return;
        }
        let again =
            codec::encode_legacy_register(&devices).expect("decoded fields hold no separator");
        assert_eq!(
            codec::decode_legacy_register("k", &again).expect("re-decodes"),
            devices
        );
    }
});
