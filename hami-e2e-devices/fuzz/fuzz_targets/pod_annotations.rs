//! Every builtin backend's pod side on arbitrary annotations: the input's lines are the
//! values of `hami.io/vgpu-node`, `hami.io/bind-phase` and the allocation keys.
#![no_main]

use std::collections::BTreeMap;

use hami_e2e_devices::{DeviceRegistry, PodRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(4, '\n');
    let node = lines.next().unwrap_or_default();
    let phase = lines.next().unwrap_or_default();
    let to_allocate = lines.next().unwrap_or_default();
    let allocated = lines.next().unwrap_or_default();
    let registry = DeviceRegistry::builtin();
    for backend in registry.iter() {
        let keys = backend.annotation_keys();
        let annotations = BTreeMap::from([
            ("hami.io/vgpu-node".to_owned(), node.to_owned()),
            ("hami.io/bind-phase".to_owned(), phase.to_owned()),
            (keys.to_allocate.clone(), to_allocate.to_owned()),
            (keys.allocated.clone(), allocated.to_owned()),
        ]);
        if let Ok(allocation) = backend.pod_allocation(&annotations) {
            let _ = backend.check_allocation(&PodRequest::default(), &allocation, &[]);
        }
    }
});
