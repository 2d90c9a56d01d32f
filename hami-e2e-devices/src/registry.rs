//! [`DeviceRegistry`]: the backends a run knows, looked up by vendor name.

use crate::ascend::Ascend;
use crate::backend::DeviceBackend;
use crate::cambricon::Cambricon;
use crate::config::DeviceConfig;
use crate::error::{Error, Result};
use crate::hygon::Hygon;
use crate::nvidia::Nvidia;

/// The device backends of a run. The suite takes one as input, so a downstream crate adds
/// its vendor with one [`DeviceRegistry::register`] call.
///
/// Lookups by [`DeviceRegistry::get`] match a backend's vendor name or its HAMi device type,
/// ignoring case; when several backends share a vendor name (Ascend chips), the first
/// registered wins, and [`DeviceRegistry::vendor`] lists them all.
///
/// # Examples
///
/// ```
/// use hami_e2e_devices::{Ascend, AscendChip, DeviceRegistry};
///
/// let mut registry = DeviceRegistry::builtin();
/// registry.register(Ascend::new(AscendChip::named("Ascend910C").unwrap()))?;
/// assert_eq!(registry.get("NVIDIA")?.vendor(), "nvidia");
/// assert_eq!(registry.get("ascend")?.device_type(), "Ascend910B3");
/// assert_eq!(registry.get("Ascend910C")?.device_type(), "Ascend910C");
/// let err = registry.get("xpu").unwrap_err();
/// assert!(err.to_string().contains("`xpu`"));
/// # Ok::<(), hami_e2e_devices::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct DeviceRegistry {
    backends: Vec<Box<dyn DeviceBackend>>,
}

impl DeviceRegistry {
    /// A registry with no backend.
    pub fn empty() -> Self {
        DeviceRegistry::default()
    }

    /// NVIDIA, Cambricon, Hygon and Ascend (the 910B3; register other chips with
    /// [`Ascend::new`] or [`Ascend::all`]).
    pub fn builtin() -> Self {
        Self::builtin_with(Nvidia::default())
    }

    /// [`builtin`](Self::builtin) with `nvidia` as the NVIDIA backend (another test or probe
    /// image, say).
    ///
    /// ```
    /// use hami_e2e_devices::{DeviceBackend, DeviceRegistry, Nvidia};
    ///
    /// let registry = DeviceRegistry::builtin_with(Nvidia::default().with_probe_image("my/cuda:12"));
    /// assert_eq!(registry.get("nvidia")?.limit_probe_image(), Some("my/cuda:12"));
    /// assert_eq!(registry.vendors().len(), 4);
    /// # Ok::<(), hami_e2e_devices::Error>(())
    /// ```
    pub fn builtin_with(nvidia: Nvidia) -> Self {
        let backends: Vec<Box<dyn DeviceBackend>> = vec![
            Box::new(nvidia),
            Box::new(Cambricon::default()),
            Box::new(Hygon::default()),
            Box::new(Ascend::default()),
        ];
        DeviceRegistry { backends }
    }

    /// Adds `backend`.
    ///
    /// # Errors
    ///
    /// The one rule: every backend has its own [key](DeviceBackend::key) (by default the
    /// vendor's name; Ascend's other chips carry their chip). [`Error::DuplicateBackend`]
    /// naming both backends when the key is taken (a second `nvidia` backend of another
    /// device type must give itself another key); [`Error::InvalidBackend`] for an empty
    /// vendor name or device type, or a key that is not a slug.
    pub fn register(&mut self, backend: impl DeviceBackend + 'static) -> Result<&mut Self> {
        self.register_boxed(Box::new(backend))
    }

    /// Adds a boxed backend; see [`DeviceRegistry::register`].
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateBackend`] as [`DeviceRegistry::register`].
    pub fn register_boxed(&mut self, backend: Box<dyn DeviceBackend>) -> Result<&mut Self> {
        let vendor = backend.vendor();
        let key = backend.key();
        let problem = if vendor.is_empty() || hami_e2e_core::slug(vendor).is_empty() {
            Some("its vendor name is empty (or has no letter or digit)".to_owned())
        } else if backend.device_type().is_empty() {
            Some("its device type is empty".to_owned())
        } else if key.is_empty() || hami_e2e_core::slug(&key) != key {
            Some(format!(
                "its key `{key}` is not a slug (lower-case letters, digits and `-`)"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::InvalidBackend {
                vendor: vendor.to_owned(),
                device_type: backend.device_type().to_owned(),
                problem,
            });
        }
        if let Some(first) = self.backends.iter().find(|b| b.key() == key) {
            return Err(Error::DuplicateBackend {
                key,
                first: format!("{}/{}", first.vendor(), first.device_type()),
                second: format!("{}/{}", vendor, backend.device_type()),
            });
        }
        self.backends.push(backend);
        Ok(self)
    }

    /// The backend for `name`: a [key](DeviceBackend::key) (`ascend-910c`), else a vendor
    /// name (its first backend) or a device type, any case.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownVendor`] naming `name` and the known vendors.
    pub fn get(&self, name: &str) -> Result<&dyn DeviceBackend> {
        self.backends
            .iter()
            .find(|b| b.key().eq_ignore_ascii_case(name))
            .or_else(|| {
                self.backends
                    .iter()
                    .find(|b| b.vendor().eq_ignore_ascii_case(name))
            })
            .or_else(|| {
                self.backends
                    .iter()
                    .find(|b| b.device_type().eq_ignore_ascii_case(name))
            })
            .map(|b| b.as_ref())
            .ok_or_else(|| Error::UnknownVendor {
                vendor: name.to_owned(),
                known: if self.backends.is_empty() {
                    "none".to_owned()
                } else {
                    self.keys().join(", ")
                },
            })
    }

    /// Every backend whose vendor name is `vendor` (several for Ascend chips).
    pub fn vendor<'a>(&'a self, vendor: &'a str) -> impl Iterator<Item = &'a dyn DeviceBackend> {
        self.iter()
            .filter(move |b| b.vendor().eq_ignore_ascii_case(vendor))
    }

    /// Every backend, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn DeviceBackend> {
        self.backends.iter().map(|b| b.as_ref())
    }

    /// Every backend's [key](DeviceBackend::key), in registration order: one per backend.
    pub fn keys(&self) -> Vec<String> {
        self.backends.iter().map(|b| b.key()).collect()
    }

    /// The distinct vendor names, in registration order.
    pub fn vendors(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for b in &self.backends {
            if !names.contains(&b.vendor()) {
                names.push(b.vendor());
            }
        }
        names
    }

    /// How many backends are registered.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Passes HAMi's device config to every backend ([`DeviceBackend::configure`]).
    ///
    /// # Errors
    ///
    /// The first backend's error.
    pub fn configure(&mut self, config: &DeviceConfig) -> Result<()> {
        for b in &mut self.backends {
            b.configure(config)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_the_four_vendors() {
        let r = DeviceRegistry::builtin();
        assert_eq!(r.vendors(), vec!["nvidia", "cambricon", "hygon", "ascend"]);
        assert_eq!(r.get("DCU").unwrap().vendor(), "hygon");
        assert_eq!(r.get("mlu").unwrap().vendor(), "cambricon");
        let e = r.get("enflame").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no device backend named `enflame` is registered (known: nvidia, cambricon, hygon, ascend)"
        );
        assert!(DeviceRegistry::empty().get("nvidia").is_err());
    }

    #[test]
    fn duplicates_are_refused_and_chips_can_be_added() {
        let mut r = DeviceRegistry::builtin();
        assert!(matches!(
            r.register(Nvidia::default()),
            Err(Error::DuplicateBackend { .. })
        ));
        for a in Ascend::all() {
            if a.device_type() != "Ascend910B3" {
                r.register(a).unwrap();
            }
        }
        assert_eq!(r.vendor("ascend").count(), 7);
        assert_eq!(r.len(), 10);
        assert!(!r.is_empty());
        assert_eq!(r.get("ascend-910c").unwrap().device_type(), "Ascend910C");
        assert_eq!(r.get("ascend").unwrap().device_type(), "Ascend910B3");
        assert_eq!(r.keys().len(), 10, "one key per backend: {:?}", r.keys());
    }

    /// A second `nvidia` of another device type: same key, refused naming both.
    #[derive(Debug)]
    struct OtherNvidia(Nvidia, &'static str, &'static str);

    impl DeviceBackend for OtherNvidia {
        fn vendor(&self) -> &str {
            self.1
        }
        fn device_type(&self) -> &str {
            self.2
        }
        fn resource_names(&self) -> &crate::request::ResourceNames {
            self.0.resource_names()
        }
        fn annotation_keys(&self) -> &crate::backend::AnnotationKeys {
            self.0.annotation_keys()
        }
        fn node_devices(
            &self,
            node: &k8s_openapi::api::core::v1::Node,
        ) -> Result<Vec<crate::node::NodeDevice>> {
            self.0.node_devices(node)
        }
        fn fake_node(&self, fake: &crate::node::FakeDevices) -> Result<crate::node::FakeNode> {
            self.0.fake_node(fake)
        }
    }

    #[test]
    fn one_rule_for_duplicates_enforced_at_registration() {
        let mut r = DeviceRegistry::builtin();
        let e = r
            .register(OtherNvidia(Nvidia::default(), "nvidia", "NVIDIA-GRID"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "two device backends have the key `nvidia`: nvidia/NVIDIA (registered first) and nvidia/NVIDIA-GRID (vendor/device type); a vendor with several chips gives each other chip a key of its own (DeviceBackend::key)"
        );
        let e = r
            .register(OtherNvidia(Nvidia::default(), "", "NVIDIA"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot register the device backend of vendor ``, device type `NVIDIA`: its vendor name is empty (or has no letter or digit)"
        );
        let e = r
            .register(OtherNvidia(Nvidia::default(), "grid", ""))
            .unwrap_err();
        assert!(e.to_string().ends_with("its device type is empty"), "{e}");
        assert_eq!(r.len(), 4, "nothing was added");
    }
}
