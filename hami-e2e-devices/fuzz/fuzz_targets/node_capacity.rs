//! Every builtin backend's node side: the input's first line is the register annotation's
//! value, the rest the capacity of every resource (Cambricon reads devices from capacity).
#![no_main]

use std::collections::BTreeMap;

use hami_e2e_devices::DeviceRegistry;
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (register, capacity) = text.split_once('\n').unwrap_or((text, ""));
    let registry = DeviceRegistry::builtin();
    for backend in registry.iter() {
        let mut node = Node::default();
        node.metadata.name = Some("fuzz".to_owned());
        if let Some(key) = &backend.annotation_keys().register {
            node.metadata.annotations = Some(BTreeMap::from([(key.clone(), register.to_owned())]));
        }
        node.status = Some(NodeStatus {
            capacity: Some(
                backend
                    .resource_names()
                    .all()
                    .into_iter()
                    .map(|n| (n.to_owned(), Quantity(capacity.to_owned())))
                    .collect(),
            ),
            ..NodeStatus::default()
        });
        let _ = backend.node_devices(&node);
    }
});
