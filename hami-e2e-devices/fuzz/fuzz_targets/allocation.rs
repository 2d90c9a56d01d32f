//! The pod allocation value (`*-devices-to-allocate` / `-allocated`): never panics, and what
//! decodes re-encodes to the same containers.
#![no_main]

use hami_e2e_devices::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(containers) = codec::decode_allocation("k", text) {
        let again = codec::encode_allocation(&containers);
        assert_eq!(
            codec::decode_allocation("k", &again).expect("re-decodes"),
            containers
        );
    }
});
