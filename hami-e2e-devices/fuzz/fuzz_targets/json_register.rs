//! The JSON node register: never panics, and what decodes re-encodes to the same devices.
#![no_main]

use hami_e2e_devices::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(devices) = codec::decode_json_register("k", text) {
        let again = codec::encode_json_register(&devices);
        assert_eq!(
            codec::decode_json_register("k", &again).expect("re-decodes"),
            devices
        );
    }
});
