//! The [`DeviceBackend`] trait: everything the framework needs to know about one vendor's
//! devices under HAMi.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Node, ResourceRequirements};

use crate::config::DeviceConfig;
use crate::container::ContainerDevice;
use crate::error::{Error, Result};
use crate::node::{FakeDevices, FakeNode, NodeDevice};
use crate::pod::{PodAllocation, allocation_problems};
use crate::request::{
    DeviceRequest, ExpectedDevices, ExpectedMemory, PodOptions, PodRequest, ResourceNames,
};

/// The annotation keys a vendor uses on nodes and pods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AnnotationKeys {
    /// The node register annotation its device plugin writes; `None` for vendors whose
    /// devices HAMi reads from node capacity (Cambricon).
    pub register: Option<String>,
    /// The node handshake annotation HAMi's scheduler writes (`Requesting_<time>`).
    pub handshake: Option<String>,
    /// The pod annotation with devices the device plugin has yet to allocate.
    pub to_allocate: String,
    /// The pod annotation with every device granted.
    pub allocated: String,
    /// Pod annotation: only device types containing one of these.
    pub use_type: Option<String>,
    /// Pod annotation: no device type containing one of these.
    pub avoid_type: Option<String>,
    /// Pod annotation: only these device ids.
    pub use_id: Option<String>,
    /// Pod annotation: none of these device ids.
    pub avoid_id: Option<String>,
    /// Pod annotation: the sharing mode.
    pub mode: Option<String>,
    /// The node annotation HAMi's scheduler locks a node with while a pod of this vendor
    /// is between bind and the device plugin's `Allocate` (`hami.io/mutex.lock`, whose
    /// value names the pod: `<time>,<namespace>,<pod>`). The device plugin releases it.
    pub node_lock: String,
    /// Whether the lock's value names its pod, so a plugin releases it only for that pod
    /// (`false` for Cambricon's `cambricon.com/dsmlu.lock`, a bare time).
    pub node_lock_names_pod: bool,
    /// How the vendor's device plugin answers the handshake, if it does.
    pub handshake_answer: Option<HandshakeAnswer>,
}

/// How a vendor's device plugin answers HAMi's handshake annotation (`Requesting_<time>`),
/// which tells HAMi's scheduler the plugin is alive and its devices should be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeAnswer {
    /// `Reported <time>` (Hygon's plugin: Go's `time.Now().String()`).
    Reported,
    /// `Reported_<YYYY.MM.DD hh:mm:ss>` (Ascend's plugin).
    ReportedUnderscore,
}

impl HandshakeAnswer {
    /// The annotation value a plugin writes at `now`.
    ///
    /// ```
    /// use hami_e2e_devices::HandshakeAnswer;
    /// use k8s_openapi::jiff::Timestamp;
    ///
    /// let now: Timestamp = "2026-12-02T10:20:30Z".parse().unwrap();
    /// assert_eq!(HandshakeAnswer::ReportedUnderscore.value(now), "Reported_2026.12.02 10:20:30");
    /// assert!(HandshakeAnswer::Reported.value(now).starts_with("Reported 2026-12-02 10:20:30"));
    /// ```
    pub fn value(self, now: k8s_openapi::jiff::Timestamp) -> String {
        let utc = now.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
        match self {
            HandshakeAnswer::Reported => {
                format!(
                    "Reported {} +0000 UTC",
                    utc.strftime("%Y-%m-%d %H:%M:%S%.f")
                )
            }
            HandshakeAnswer::ReportedUnderscore => {
                format!("Reported_{}", utc.strftime("%Y.%m.%d %H:%M:%S"))
            }
        }
    }
}

/// HAMi's node lock (`pkg/util/nodelock`), shared by NVIDIA, Hygon, Ascend and most vendors.
pub const NODE_LOCK: &str = "hami.io/mutex.lock";

impl AnnotationKeys {
    /// Keys with only the two pod allocation annotations.
    pub fn new(to_allocate: impl Into<String>, allocated: impl Into<String>) -> Self {
        AnnotationKeys {
            register: None,
            handshake: None,
            to_allocate: to_allocate.into(),
            allocated: allocated.into(),
            use_type: None,
            avoid_type: None,
            use_id: None,
            avoid_id: None,
            mode: None,
            node_lock: NODE_LOCK.to_owned(),
            node_lock_names_pod: true,
            handshake_answer: None,
        }
    }

    /// Sets the node lock annotation and whether its value names the pod.
    #[must_use]
    pub fn node_lock(mut self, key: impl Into<String>, names_pod: bool) -> Self {
        self.node_lock = key.into();
        self.node_lock_names_pod = names_pod;
        self
    }

    /// Sets how the device plugin answers the handshake.
    #[must_use]
    pub fn handshake_answer(mut self, answer: HandshakeAnswer) -> Self {
        self.handshake_answer = Some(answer);
        self
    }

    /// The allocation keys HAMi derives from a device type (`hami.io/<type>-devices-...`),
    /// as it does for Ascend and most vendors added since.
    pub fn for_device_type(device_type: &str) -> Self {
        Self::new(
            format!("hami.io/{device_type}-devices-to-allocate"),
            format!("hami.io/{device_type}-devices-allocated"),
        )
    }

    /// Sets the node register annotation.
    #[must_use]
    pub fn register(mut self, key: impl Into<String>) -> Self {
        self.register = Some(key.into());
        self
    }

    /// Sets the node handshake annotation.
    #[must_use]
    pub fn handshake(mut self, key: impl Into<String>) -> Self {
        self.handshake = Some(key.into());
        self
    }

    /// Sets the use/avoid device type annotations.
    #[must_use]
    pub fn types(mut self, use_key: impl Into<String>, avoid_key: impl Into<String>) -> Self {
        self.use_type = Some(use_key.into());
        self.avoid_type = Some(avoid_key.into());
        self
    }

    /// Sets the use/avoid device id annotations.
    #[must_use]
    pub fn ids(mut self, use_key: impl Into<String>, avoid_key: impl Into<String>) -> Self {
        self.use_id = Some(use_key.into());
        self.avoid_id = Some(avoid_key.into());
        self
    }

    /// Sets the mode annotation.
    #[must_use]
    pub fn mode(mut self, key: impl Into<String>) -> Self {
        self.mode = Some(key.into());
        self
    }
}

/// One vendor's devices under HAMi: resource names, annotations, requests, the node and pod
/// sides, and how to prove a limit inside a container.
///
/// Implement it in your own crate and register it in a
/// [`DeviceRegistry`](crate::DeviceRegistry); nothing in this crate needs to change. Six
/// methods are required (identity, and the node side, which differs most between vendors);
/// the rest have defaults that follow HAMi's common conventions, so override only what your
/// vendor does differently. See the crate docs for a complete example.
///
/// The trait is object-safe (`Box<dyn DeviceBackend>`) and its methods are pure: they take
/// Kubernetes objects or annotation maps and never talk to a cluster.
pub trait DeviceBackend: Send + Sync + fmt::Debug {
    // --- identity -----------------------------------------------------------------------

    /// The vendor's name in this framework (`nvidia`): letters, digits and `-`, not empty
    /// (checked at registration). Several backends may share it, one per chip (Ascend's).
    fn vendor(&self) -> &str;

    /// The backend's own name: in scenario names (`devices::<key>::fake-node`), labels, fake
    /// node names, admission's device kinds and the verdict. Unique in a
    /// [`DeviceRegistry`](crate::DeviceRegistry). Default: the vendor's slug (`nvidia`); a
    /// vendor with several chips gives each other chip a key of its own (Ascend:
    /// `ascend` for the 910B3, `ascend-910c`, `ascend-310p`, ...).
    fn key(&self) -> String {
        hami_e2e_core::slug(self.vendor())
    }

    /// HAMi's device type keyword (`NVIDIA`, `DCU`, `MLU`, `Ascend910B3`): what HAMi writes
    /// as the type in allocation annotations.
    fn device_type(&self) -> &str;

    /// The extended resources its devices are requested with.
    fn resource_names(&self) -> &ResourceNames;

    /// The node and pod annotation keys it uses.
    fn annotation_keys(&self) -> &AnnotationKeys;

    /// How many MiB one unit of the memory resource is (Cambricon: 256). Default 1.
    fn memory_unit_mib(&self) -> u64 {
        1
    }

    /// Takes resource names and defaults from HAMi's device config. Default: nothing.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceConfigField`] when the vendor's section is unusable.
    fn configure(&mut self, config: &DeviceConfig) -> Result<()> {
        let _ = config;
        Ok(())
    }

    // --- requests -----------------------------------------------------------------------

    /// Container limits for `request`. Default: [`DeviceRequest::to_resources`] with
    /// [`DeviceBackend::resource_names`] and [`DeviceBackend::memory_unit_mib`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for what HAMi's webhook would reject.
    fn container_resources(&self, request: &DeviceRequest) -> Result<ResourceRequirements> {
        request.to_resources(self.vendor(), self.resource_names(), self.memory_unit_mib())
    }

    /// Reads a request back from container resources. Default: [`DeviceRequest::from_resources`].
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] naming the resource when a quantity is not a whole number.
    fn request_from_resources(
        &self,
        resources: &ResourceRequirements,
    ) -> Result<Option<DeviceRequest>> {
        DeviceRequest::from_resources(self.resource_names(), resources, self.memory_unit_mib())
    }

    /// Pod annotations for `options`. Default: comma-joined lists under
    /// [`AnnotationKeys`]' use/avoid keys, and the mode.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when the vendor has no annotation for a choice;
    /// [`Error::InvalidRequest`] when an entry contains a comma.
    fn pod_annotations(&self, options: &PodOptions) -> Result<BTreeMap<String, String>> {
        let keys = self.annotation_keys();
        let mut out = BTreeMap::new();
        for (what, key, values) in [
            ("choosing device types", &keys.use_type, &options.use_types),
            (
                "avoiding device types",
                &keys.avoid_type,
                &options.avoid_types,
            ),
            ("choosing device ids", &keys.use_id, &options.use_ids),
            ("avoiding device ids", &keys.avoid_id, &options.avoid_ids),
        ] {
            if values.is_empty() {
                continue;
            }
            let key = key.as_ref().ok_or_else(|| Error::Unsupported {
                vendor: self.vendor().to_owned(),
                what: what.to_owned(),
            })?;
            if let Some(bad) = values.iter().find(|v| v.contains(',') || v.is_empty()) {
                return Err(Error::InvalidRequest {
                    vendor: self.vendor().to_owned(),
                    reason: format!("`{bad}` cannot be an entry of the comma list {key}"),
                });
            }
            out.insert(key.clone(), values.join(","));
        }
        if let Some(mode) = &options.mode {
            let key = keys.mode.as_ref().ok_or_else(|| Error::Unsupported {
                vendor: self.vendor().to_owned(),
                what: "a sharing mode annotation".to_owned(),
            })?;
            out.insert(key.clone(), mode.clone());
        }
        Ok(out)
    }

    /// What HAMi should grant per device for `request`. Default: the count; the memory asked,
    /// else the percentage, else the whole device; the cores asked, else 0.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for requests HAMi rejects.
    fn expected_devices(
        &self,
        request: &DeviceRequest,
        options: &PodOptions,
    ) -> Result<ExpectedDevices> {
        let _ = options;
        let memory = match (request.memory_mib, request.memory_percentage) {
            (Some(m), _) if m > 0 => ExpectedMemory::Exact(m),
            (_, Some(p)) if (1..=100).contains(&p) => ExpectedMemory::PercentOfDevice(p),
            _ => ExpectedMemory::PercentOfDevice(100),
        };
        Ok(ExpectedDevices::new(
            request.count,
            memory,
            request.cores.unwrap_or(0),
        ))
    }

    // --- node side ----------------------------------------------------------------------

    /// The devices `node` offers, from its register annotation or capacity.
    ///
    /// # Errors
    ///
    /// [`Error::Missing`] when the node has none of this vendor's data; [`Error::Parse`] when
    /// it is malformed.
    fn node_devices(&self, node: &Node) -> Result<Vec<NodeDevice>>;

    /// Annotations and capacity that make a fake node offer `fake` (the reverse of
    /// [`DeviceBackend::node_devices`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `fake` cannot be expressed for this vendor.
    fn fake_node(&self, fake: &FakeDevices) -> Result<FakeNode>;

    /// [`fake_node`](Self::fake_node), checked: its capacity must give the count resource
    /// ([`ResourceNames::count`]) as the devices or the devices × the split count, since
    /// HAMi's pods ask for it and a node without it never fits one (checked here, it fails
    /// at once instead of as a scheduling wait). The suite's fake nodes all come from here.
    ///
    /// ```
    /// use hami_e2e_devices::{DeviceBackend, FakeDevices, Nvidia};
    ///
    /// let fake = Nvidia::default().checked_fake_node(&FakeDevices::new("gpu-0", 2, "Tesla T4", 15360))?;
    /// assert_eq!(fake.capacity["nvidia.com/gpu"].0, "20"); // 2 devices × split 10
    /// # Ok::<(), hami_e2e_devices::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`fake_node`](Self::fake_node), and [`Error::FakeCapacity`] naming the resource,
    /// what the capacity gives, and what it must.
    fn checked_fake_node(&self, fake: &FakeDevices) -> Result<FakeNode> {
        let node = self.fake_node(fake)?;
        crate::node::check_fake_capacity(
            self.vendor(),
            &self.resource_names().count,
            &node.capacity,
            fake,
        )?;
        Ok(node)
    }

    // --- pod side -----------------------------------------------------------------------

    /// What HAMi wrote on a pod for this vendor. Default: [`PodAllocation::parse`] with
    /// [`AnnotationKeys`]' allocation keys.
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] naming the annotation, fragment and position.
    fn pod_allocation(&self, annotations: &BTreeMap<String, String>) -> Result<PodAllocation> {
        let keys = self.annotation_keys();
        PodAllocation::parse(annotations, &keys.to_allocate, &keys.allocated)
    }

    /// Checks what HAMi granted (`-devices-allocated`) against `request`; `node_devices` (may be
    /// empty) enables the checks that need the node. Default: [`allocation_problems`] with
    /// [`DeviceBackend::expected_devices`].
    ///
    /// # Errors
    ///
    /// [`Error::AllocationMismatch`] listing every difference; [`Error::Missing`] when nothing
    /// was allocated; errors of [`DeviceBackend::expected_devices`].
    fn check_allocation(
        &self,
        request: &PodRequest,
        allocation: &PodAllocation,
        node_devices: &[NodeDevice],
    ) -> Result<()> {
        let allocated = allocation
            .allocated
            .as_ref()
            .ok_or_else(|| Error::Missing {
                object: "pod".to_owned(),
                key: self.annotation_keys().allocated.clone(),
            })?;
        let expected = request
            .containers
            .iter()
            .map(|c| {
                c.as_ref()
                    .map(|r| self.expected_devices(r, &request.options))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let problems = allocation_problems(
            self.device_type(),
            &expected,
            &request.options,
            allocated,
            node_devices,
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::AllocationMismatch {
                vendor: self.vendor().to_owned(),
                problems,
            })
        }
    }

    // --- verification on a real cluster -------------------------------------------------

    /// The image whose containers run [`DeviceBackend::verify_command`]; `None` when the
    /// vendor has no verification.
    fn test_image(&self) -> Option<&str> {
        None
    }

    /// The command to run inside a container holding the devices, whose output proves the
    /// limits hold; `None` when the vendor has none (scenarios needing it are skipped).
    fn verify_command(&self) -> Option<Vec<String>> {
        None
    }

    /// Checks `output` of [`DeviceBackend::verify_command`] against what was `granted` to
    /// that container.
    ///
    /// # Errors
    ///
    /// [`Error::VerificationMismatch`] listing the differences, [`Error::Parse`] for output
    /// that cannot be read, [`Error::Unsupported`] (the default) when there is no verification.
    fn verify_output(&self, output: &str, granted: &[ContainerDevice]) -> Result<()> {
        let _ = (output, granted);
        Err(Error::Unsupported {
            vendor: self.vendor().to_owned(),
            what: "in-container verification".to_owned(),
        })
    }

    /// The image [`DeviceBackend::limit_probe_command`] runs in; `None` when the vendor has
    /// no probe.
    fn limit_probe_image(&self) -> Option<&str> {
        None
    }

    /// A command that proves the memory limit of what was `granted` to a container: an
    /// allocation under it that succeeds and one over it that is refused (reading the
    /// memory shown proves nothing: a limiter that does not enforce shows it too); `None`
    /// when the vendor has none. Its image needs what the command runs (NVIDIA: `python3`).
    fn limit_probe_command(&self, granted: &[ContainerDevice]) -> Option<Vec<String>> {
        let _ = granted;
        None
    }

    /// Checks the output (stdout and stderr) of [`DeviceBackend::limit_probe_command`].
    ///
    /// # Errors
    ///
    /// [`Error::VerificationMismatch`] with what disproved the limit or what the output
    /// lacks; [`Error::Unsupported`] (the default) when there is no probe.
    fn check_limit_probe(&self, output: &str, granted: &[ContainerDevice]) -> Result<()> {
        let _ = (output, granted);
        Err(Error::Unsupported {
            vendor: self.vendor().to_owned(),
            what: "a memory limit probe".to_owned(),
        })
    }
}

/// The register annotation of `node`, decoded as JSON when it starts with `[`, else in the
/// legacy colon format: how vendors that moved from one to the other (NVIDIA in HAMi v2.8)
/// are read whatever HAMi version wrote them.
///
/// # Errors
///
/// [`Error::Missing`] without the annotation, [`Error::Parse`] when it is malformed.
pub fn decode_register_any(node: &Node, key: &str) -> Result<Vec<NodeDevice>> {
    let value = crate::node::node_annotation(node, key)?;
    if value.trim_start().starts_with('[') {
        crate::codec::decode_json_register(key, value)
    } else {
        crate::codec::decode_legacy_register(key, value)
    }
}
