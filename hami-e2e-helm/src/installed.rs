//! The HAMi already installed on a cluster (by its chart or otherwise), found from what the
//! chart creates: the scheduler Deployment (`app.kubernetes.io/component: hami-scheduler`),
//! its extender container's image (the version), the device config ConfigMap it mounts
//! (`device-config.yaml`), and the MutatingWebhookConfiguration with HAMi's webhook
//! (`vgpu.hami.io`).
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> hami_e2e_helm::Result<()> {
//! let found = hami_e2e_helm::installed::discover(&client).await?;
//! println!("{}", found.describe()); // v2.10.0 (scheduler kube-system/hami-scheduler, ...; webhook hami-webhook; ...)
//! # Ok(()) }
//! ```

use hami_e2e_devices::DeviceConfig;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::error::{Error, Result};

/// The label of HAMi's scheduler Deployment in its chart.
pub const SCHEDULER_COMPONENT: &str = "app.kubernetes.io/component=hami-scheduler";
/// The name of HAMi's webhook in its MutatingWebhookConfiguration.
pub const WEBHOOK: &str = "vgpu.hami.io";
/// The key of the device config in its ConfigMap.
pub const DEVICE_CONFIG_KEY: &str = "device-config.yaml";

/// What [`discover`] found.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct InstalledHami {
    /// The scheduler Deployment, `namespace/name`.
    pub scheduler: Option<String>,
    /// Its extender container's image (`projecthami/hami:v2.10.0`).
    pub image: Option<String>,
    /// The image's tag, HAMi's version (`v2.10.0`).
    pub version: Option<String>,
    /// The MutatingWebhookConfiguration holding `vgpu.hami.io`, and the scheduler it sets
    /// (from the Deployment's `--scheduler-name`, when given).
    pub webhook: Option<String>,
    /// The device config ConfigMap, `namespace/name`.
    pub device_config_map: Option<String>,
    /// The device config, parsed.
    pub device_config: Option<DeviceConfig>,
}

impl InstalledHami {
    /// Whether anything of HAMi was found.
    pub fn is_installed(&self) -> bool {
        self.scheduler.is_some() || self.webhook.is_some()
    }

    /// One line for a run's summary: `v2.10.0 (scheduler kube-system/hami-scheduler, image
    /// projecthami/hami:v2.10.0; webhook hami-webhook; device config
    /// kube-system/hami-scheduler-device: nvidia nvidia.com/gpu split 10, cambricon, hygon,
    /// ascend 7 chips)`, or `none (...)`.
    ///
    /// ```
    /// let found = hami_e2e_helm::installed::InstalledHami::default();
    /// assert!(found.describe().starts_with("none (no Deployment labelled"));
    /// ```
    pub fn describe(&self) -> String {
        if !self.is_installed() {
            return format!(
                "none (no Deployment labelled {SCHEDULER_COMPONENT}, no webhook {WEBHOOK})"
            );
        }
        let mut parts = Vec::new();
        match (&self.scheduler, &self.image) {
            (Some(s), Some(i)) => parts.push(format!("scheduler {s}, image {i}")),
            (Some(s), None) => parts.push(format!("scheduler {s}")),
            _ => parts.push("no scheduler Deployment".into()),
        }
        parts.push(match &self.webhook {
            Some(w) => format!("webhook {w}"),
            None => format!("no webhook {WEBHOOK}"),
        });
        match (&self.device_config_map, &self.device_config) {
            (Some(m), Some(c)) => parts.push(format!("device config {m}: {}", vendors(c))),
            (Some(m), None) => parts.push(format!("device config {m} (unreadable)")),
            _ => {}
        }
        format!(
            "{} ({})",
            self.version.as_deref().unwrap_or("of unknown version"),
            parts.join("; ")
        )
    }
}

fn vendors(c: &DeviceConfig) -> String {
    let mut out = Vec::new();
    if let Some(n) = &c.nvidia {
        let mut s = format!(
            "nvidia {}",
            n.resource_count_name.as_deref().unwrap_or("nvidia.com/gpu")
        );
        if let Some(split) = n.device_split_count {
            s.push_str(&format!(" split {split}"));
        }
        out.push(s);
    }
    if c.cambricon.is_some() {
        out.push("cambricon".into());
    }
    if c.hygon.is_some() {
        out.push("hygon".into());
    }
    if let Some(v) = &c.vnpus {
        out.push(format!("ascend {} chips", v.configs.len()));
    }
    if out.is_empty() {
        "no vendor".into()
    } else {
        out.join(", ")
    }
}

/// Finds the HAMi installed on the cluster of `client` (in any namespace). Nothing found is
/// not an error ([`InstalledHami::is_installed`] is false).
///
/// # Errors
///
/// [`Error::Hami`] naming the object kind when the API server refuses the lists (the
/// permissions needed: list Deployments, ConfigMaps in the scheduler's namespace, and
/// MutatingWebhookConfigurations).
pub async fn discover(client: &kube::Client) -> Result<InstalledHami> {
    let denied = |what: &str| {
        let what = what.to_owned();
        move |e: kube::Error| Error::Hami {
            what: format!("list {what}"),
            message: e.to_string(),
        }
    };
    let mut found = InstalledHami::default();
    let deployments = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().labels(SCHEDULER_COMPONENT))
        .await
        .map_err(denied("deployments"))?
        .items;
    if let Some(d) = deployments.first() {
        let ns = d.namespace().unwrap_or_default();
        found.scheduler = Some(format!("{ns}/{}", d.name_any()));
        let pod = d.spec.template.spec.as_ref();
        let extender = pod.and_then(|p| {
            p.containers
                .iter()
                .find(|c| c.image.as_deref().is_some_and(|i| i.contains("hami")))
        });
        if let Some(image) = extender.and_then(|c| c.image.clone()) {
            found.version = image
                .rsplit_once(':')
                .map(|(_, tag)| tag.to_owned())
                .filter(|t| !t.contains('/'));
            found.image = Some(image);
        }
        let config_map = pod.and_then(|p| {
            p.volumes.iter().flatten().find_map(|v| {
                v.config_map
                    .as_ref()
                    .map(|c| c.name.to_string())
                    .filter(|n: &String| n.ends_with("-device"))
            })
        });
        if let Some(name) = config_map {
            found.device_config_map = Some(format!("{ns}/{name}"));
            let map = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(denied("configmaps"))?;
            found.device_config = map
                .and_then(|m| m.data)
                .and_then(|d| d.get(DEVICE_CONFIG_KEY).cloned())
                .and_then(|text| DeviceConfig::from_yaml_named(&name, &text).ok());
        }
    }
    let webhooks = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(denied("mutatingwebhookconfigurations"))?
        .items;
    found.webhook = webhooks
        .iter()
        .find(|w| w.webhooks.iter().flatten().any(|h| h.name == WEBHOOK))
        .map(ResourceExt::name_any);
    Ok(found)
}
