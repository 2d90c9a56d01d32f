//! Vendor device backends for hami-e2e: how each vendor's devices are requested, registered
//! on nodes, allocated to pods and verified under [HAMi](https://github.com/Project-HAMi/HAMi),
//! and fake devices for the GPU-less local cluster.
//!
//! HAMi treats every vendor through the same few mechanisms with different names and
//! encodings. This crate captures them in one trait, [`DeviceBackend`], so a scenario is
//! written once ("two devices, 3000 MiB each, 30 % cores") and runs for any vendor registered
//! in a [`DeviceRegistry`]:
//!
//! - **identity**: vendor name, HAMi's device type keyword, [`ResourceNames`] (overridable from
//!   HAMi's `device-config.yaml`, see [`DeviceConfig`]) and [`AnnotationKeys`];
//! - **requests**: container limits for a [`DeviceRequest`], pod annotations for
//!   [`PodOptions`] (use/avoid a type or id, sharing mode), and what HAMi should grant
//!   ([`ExpectedDevices`]), following its webhook's defaults;
//! - **node side**: a node's devices from its register annotation or capacity
//!   ([`NodeDevice`]), and the reverse for fake nodes ([`FakeDevices`] → [`FakeNode`]);
//! - **pod side**: what HAMi wrote on a pod ([`PodAllocation`]: `hami.io/vgpu-node`,
//!   `hami.io/bind-phase`, `*-devices-to-allocate`, `*-devices-allocated`) and the check of it
//!   against a [`PodRequest`], with one line per difference;
//! - **verification** on a real cluster: a command to run in the container, the image to run
//!   it in, and the check of its output (NVIDIA: `nvidia-smi --query-gpu`, see
//!   [`nvidia_smi`]);
//! - **capabilities**: [`DeviceInventory`] turns the cluster's nodes into `hami-e2e-core`
//!   [`Capabilities`](hami_e2e_core::Capabilities), and [`DeviceDemand`] into a
//!   [`Requirement`](hami_e2e_core::Requirement), so scenarios skip with a reason.
//!
//! Built in: [`Nvidia`], [`Cambricon`], [`Hygon`] and [`Ascend`] (one backend per chip of
//! [`AscendChip::catalogue`]). The formats come from HAMi v2.10.0's source; where HAMi changed
//! a format, both are read (NVIDIA's colon register before v2.8, Go's capitalised JSON keys
//! before v2.5, Hygon's 7-field register). The shared encoders and decoders are public in
//! [`codec`]. Every parser returns [`Error::Parse`] naming the annotation key, the offending
//! fragment and its byte offset, and none panics on any input (they are fuzzed).
//!
//! # Example
//!
//! ```
//! use hami_e2e_devices::{DeviceRegistry, DeviceRequest, FakeDevices, PodRequest};
//! use k8s_openapi::api::core::v1::Node;
//! use std::collections::BTreeMap;
//!
//! let registry = DeviceRegistry::builtin();
//! let nvidia = registry.get("nvidia")?;
//!
//! // A fake node with two 16 GiB T4s, as the GPU-less cluster makes it.
//! let mut node = Node::default();
//! node.metadata.name = Some("kwok-gpu-0".into());
//! nvidia.fake_node(&FakeDevices::new("kwok-gpu-0", 2, "Tesla T4", 16384))?.apply_to(&mut node);
//! let devices = nvidia.node_devices(&node)?;
//! assert_eq!(devices.len(), 2);
//!
//! // The container's limits, and what HAMi then writes on the pod.
//! let request = DeviceRequest::devices(1).memory_mib(3000).cores(30);
//! let limits = nvidia.container_resources(&request)?.limits.unwrap();
//! assert_eq!(limits["nvidia.com/gpumem"].0, "3000");
//! let annotations = BTreeMap::from([
//!     ("hami.io/vgpu-node".to_owned(), "kwok-gpu-0".to_owned()),
//!     ("hami.io/vgpu-devices-allocated".to_owned(), "GPU-kwok-gpu-0-1,NVIDIA,3000,30:;".to_owned()),
//! ]);
//! let allocation = nvidia.pod_allocation(&annotations)?;
//! nvidia.check_allocation(&PodRequest::single(request), &allocation, &devices)?;
//! # Ok::<(), hami_e2e_devices::Error>(())
//! ```
//!
//! # Adding a vendor
//!
//! Implement [`DeviceBackend`] in your own crate and register it; nothing here changes.
//! Six methods are required: [`vendor`](DeviceBackend::vendor),
//! [`device_type`](DeviceBackend::device_type), [`resource_names`](DeviceBackend::resource_names),
//! [`annotation_keys`](DeviceBackend::annotation_keys), [`node_devices`](DeviceBackend::node_devices)
//! and [`fake_node`](DeviceBackend::fake_node). The others default to HAMi's common
//! conventions; override the ones where your vendor differs (memory units, webhook defaults,
//! verification). Use [`codec`] for HAMi's shared encodings. A complete crate is
//! `examples/xpu-backend` in the repository.
//!
//! ```
//! use std::collections::BTreeMap;
//! use hami_e2e_devices::{
//!     codec, AnnotationKeys, DeviceBackend, DeviceRegistry, DeviceRequest, FakeDevices,
//!     FakeNode, NodeDevice, ResourceNames, Result, node_annotation,
//! };
//! use k8s_openapi::api::core::v1::Node;
//! use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
//!
//! #[derive(Debug)]
//! struct Xpu { names: ResourceNames, keys: AnnotationKeys }
//!
//! impl Default for Xpu {
//!     fn default() -> Self {
//!         Xpu {
//!             names: ResourceNames::new("example.com/xpu").memory("example.com/xpu-memory"),
//!             keys: AnnotationKeys::for_device_type("XPU").register("hami.io/node-xpu-register"),
//!         }
//!     }
//! }
//!
//! impl DeviceBackend for Xpu {
//!     fn vendor(&self) -> &str { "xpu" }
//!     fn device_type(&self) -> &str { "XPU" }
//!     fn resource_names(&self) -> &ResourceNames { &self.names }
//!     fn annotation_keys(&self) -> &AnnotationKeys { &self.keys }
//!     fn node_devices(&self, node: &Node) -> Result<Vec<NodeDevice>> {
//!         let key = "hami.io/node-xpu-register";
//!         codec::decode_json_register(key, node_annotation(node, key)?)
//!     }
//!     fn fake_node(&self, fake: &FakeDevices) -> Result<FakeNode> {
//!         fake.validate(self.vendor())?;
//!         let devices = fake.node_devices("XPU", &fake.model);
//!         Ok(FakeNode {
//!             annotations: BTreeMap::from([(
//!                 "hami.io/node-xpu-register".to_owned(),
//!                 codec::encode_json_register(&devices),
//!             )]),
//!             capacity: BTreeMap::from([(
//!                 self.names.count.clone(),
//!                 Quantity(fake.devices.to_string()),
//!             )]),
//!         })
//!     }
//! }
//!
//! let mut registry = DeviceRegistry::builtin();
//! registry.register(Xpu::default())?;
//! let xpu = registry.get("xpu")?;
//! let limits = xpu.container_resources(&DeviceRequest::devices(1).memory_mib(1024))?.limits.unwrap();
//! assert_eq!(limits["example.com/xpu-memory"].0, "1024");
//! # Ok::<(), hami_e2e_devices::Error>(())
//! ```
//!
//! # Feature flags
//!
//! - `agent` (on by default): the fake device agent (`FakeDeviceAgent`, module `agent`),
//!   which watches and patches pods and nodes and so brings in kube and tokio. Without it
//!   the crate is the backends, the data types and the codecs alone, with no client.
//!
//! Like kube-core, the crate leaves k8s-openapi's Kubernetes version to the final binary:
//! enable one of k8s-openapi's version features there, or set `K8S_OPENAPI_ENABLED_VERSION`
//! when building.
//!
//! # Minimum supported Rust version
//!
//! 1.89, as kube's.

#[cfg(feature = "agent")]
pub mod agent;
mod ascend;
mod backend;
mod cambricon;
mod capability;
pub mod codec;
mod config;
mod container;
mod error;
mod hygon;
mod node;
mod nvidia;
pub mod nvidia_probe;
pub mod nvidia_smi;
pub mod oracle;
mod pod;
pub mod profiles;
mod registry;
mod request;
mod scalar;

#[cfg(feature = "agent")]
pub use agent::FakeDeviceAgent;
pub use ascend::{Ascend, AscendChip, AscendTemplate, VNPU_MODE, VNPU_MODE_HAMI_CORE};
pub use backend::{AnnotationKeys, DeviceBackend, HandshakeAnswer, NODE_LOCK, decode_register_any};
pub use cambricon::{CAMBRICON_MEMORY_UNIT_MIB, CAMBRICON_NODE_LOCK, Cambricon};
pub use capability::{DeviceDemand, DeviceInventory, devices_on_one_node, real_device_flag};
pub use config::{
    DeviceConfig, NvidiaConfig, TemplateConfig, VendorConfig, VnpuConfig, VnpusConfig,
};
pub use container::ContainerDevice;
pub use error::{Error, Problem, Result};
pub use hygon::Hygon;
pub use node::{
    FakeDevices, FakeNode, NodeDevice, check_fake_capacity, node_annotation, node_capacity,
};
pub use nvidia::{DEFAULT_NVIDIA_IMAGE, DEFAULT_NVIDIA_PROBE_IMAGE, NVIDIA_PROBE_IMAGES, Nvidia};
pub use pod::{
    BIND_PHASE, BIND_TIME, BindPhase, PodAllocation, VGPU_NODE, VGPU_TIME, allocation_problems,
};
pub use registry::DeviceRegistry;
pub use request::{
    DeviceRequest, ExpectedDevices, ExpectedMemory, PodOptions, PodRequest, ResourceNames,
};
pub use scalar::parse_quantity;
