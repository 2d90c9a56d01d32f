//! Property tests: encode → decode is the identity for valid values, and no decoder panics on
//! any input.

use std::collections::BTreeMap;

use hami_e2e_devices::nvidia_smi;
use hami_e2e_devices::{
    BindPhase, ContainerDevice, DeviceConfig, DeviceRegistry, NodeDevice, codec, parse_quantity,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use proptest::prelude::*;

/// Text a separator-based format can carry: no `,`, `:` or `;`.
fn plain() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ._-]{1,24}"
}

fn node_device(legacy: bool) -> impl Strategy<Value = NodeDevice> {
    let text = if legacy {
        plain().boxed()
    } else {
        any::<String>().boxed()
    };
    (
        text.clone(),
        any::<u32>(),
        0..=i32::MAX as u32,
        0..=i32::MAX as u64,
        0..=i32::MAX as u32,
        text.clone(),
        any::<i32>(),
        text,
        any::<bool>(),
    )
        .prop_map(
            |(id, index, count, memory_mib, cores, device_type, numa, mode, health)| {
                let mut d = NodeDevice::new(id, device_type, memory_mib);
                d.index = index;
                d.count = count;
                d.cores = cores;
                d.numa = numa;
                d.mode = mode;
                d.health = health;
                d
            },
        )
}

/// Makes ids unique (and non-empty) by suffixing the position.
fn unique(mut devices: Vec<NodeDevice>) -> Vec<NodeDevice> {
    for (i, d) in devices.iter_mut().enumerate() {
        d.id = format!("{}-{i}", d.id);
    }
    devices
}

fn container_device() -> impl Strategy<Value = ContainerDevice> {
    (plain(), plain(), 0..=i32::MAX as u64, 0..=i32::MAX as u32)
        .prop_map(|(id, t, m, c)| ContainerDevice::new(id, t, m, c))
}

/// Strings made of the formats' own characters, to reach deeper than random text does.
fn formatish() -> impl Strategy<Value = String> {
    "[\\[\\]{}\",:;a-zA-Z0-9 \\-+.]{0,96}"
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn legacy_register_round_trips(devices in prop::collection::vec(node_device(true), 1..6)) {
        let devices = unique(devices);
        // The 9-field format carries index with a uint, numa as int: all of them survive.
        let text = codec::encode_legacy_register(&devices).unwrap();
        let back = codec::decode_legacy_register("k", &text).unwrap();
        prop_assert_eq!(back, devices);
    }

    #[test]
    fn json_register_round_trips(devices in prop::collection::vec(node_device(false), 0..6)) {
        let devices = unique(devices);
        let text = codec::encode_json_register(&devices);
        let back = codec::decode_json_register("k", &text).unwrap();
        prop_assert_eq!(back, devices);
    }

    #[test]
    fn allocation_round_trips(
        containers in prop::collection::vec(prop::collection::vec(container_device(), 0..4), 0..5)
    ) {
        let containers: Vec<Vec<ContainerDevice>> = containers
            .into_iter()
            .map(|c| {
                c.into_iter()
                    .enumerate()
                    .map(|(i, mut d)| {
                        d.id = format!("{}-{i}", d.id);
                        d
                    })
                    .collect()
            })
            .collect();
        let text = codec::encode_allocation(&containers);
        prop_assert_eq!(codec::decode_allocation("k", &text).unwrap(), containers);
    }

    #[test]
    fn fake_nodes_round_trip(devices in 1u32..16, memory in 1u64..=(1 << 20), split in 1u32..32) {
        let registry = DeviceRegistry::builtin();
        for backend in registry.iter() {
            // Cambricon counts memory in 256 MiB units.
            let memory = memory.div_ceil(256) * 256;
            let devices = if backend.device_type() == "Ascend910C" { devices * 2 } else { devices };
            let fake = hami_e2e_devices::FakeDevices::new("node-a", devices, "Model X", memory).split(split);
            let mut node = Node::default();
            node.metadata.name = Some("node-a".into());
            backend.fake_node(&fake).unwrap().apply_to(&mut node);
            let got = backend.node_devices(&node).unwrap();
            prop_assert_eq!(got.len(), devices as usize, "{}", backend.vendor());
            prop_assert!(got.iter().all(|d| d.memory_mib == memory && d.health), "{}", backend.vendor());
        }
    }

    #[test]
    fn decoders_never_panic(s in any::<String>()) {
        let _ = codec::decode_legacy_register("k", &s);
        let _ = codec::decode_json_register("k", &s);
        let _ = codec::decode_allocation("k", &s);
        let _ = nvidia_smi::parse_query_gpu(&s, nvidia_smi::QUERY_FIELDS);
        let _ = nvidia_smi::parse_query_gpu(&s, &[]);
        let _ = nvidia_smi::parse_list(&s);
        let _ = DeviceConfig::from_yaml(&s);
        let _ = BindPhase::parse(&s);
        let _ = parse_quantity("k", &s);
    }

    #[test]
    fn decoders_never_panic_on_formatish_text(s in formatish()) {
        let _ = codec::decode_legacy_register("k", &s);
        let _ = codec::decode_json_register("k", &s);
        let _ = codec::decode_allocation("k", &s);
        let _ = nvidia_smi::parse_query_gpu(&s, nvidia_smi::QUERY_FIELDS);
        let _ = nvidia_smi::parse_list(&s);
    }

    #[test]
    fn backends_never_panic_on_any_node_or_pod(value in formatish(), capacity in formatish()) {
        let registry = DeviceRegistry::builtin();
        for backend in registry.iter() {
            let keys = backend.annotation_keys();
            let mut annotations = BTreeMap::new();
            if let Some(k) = &keys.register {
                annotations.insert(k.clone(), value.clone());
            }
            annotations.insert(keys.to_allocate.clone(), value.clone());
            annotations.insert(keys.allocated.clone(), value.clone());
            annotations.insert("hami.io/bind-phase".to_owned(), value.clone());
            let mut node = Node::default();
            node.metadata.annotations = Some(annotations.clone());
            node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
                capacity: Some(
                    backend
                        .resource_names()
                        .all()
                        .into_iter()
                        .map(|n| (n.to_owned(), Quantity(capacity.clone())))
                        .collect(),
                ),
                ..Default::default()
            });
            let _ = backend.node_devices(&node);
            let _ = backend.pod_allocation(&annotations);
            let _ = backend.verify_output(&value, &[]);
        }
    }
}
