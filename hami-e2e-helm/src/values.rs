//! Typed values of HAMi's Helm chart (`charts/hami/values.yaml`) for the keys tests change,
//! with an escape hatch for any other key.
//!
//! The typed layer knows the chart's history: the kube-scheduler image tag is
//! `scheduler.kubeScheduler.image.tag` since chart 2.6 and `scheduler.kubeScheduler.imageTag`
//! before it, so [`HamiValues::to_values`] takes the chart version.
//!
//! ```
//! use hami_e2e_helm::{HamiValues, SchedulerPolicy};
//!
//! let mut values = HamiValues::default();
//! values.image_tag = Some("v2.10.0".into());
//! values.leader_elect = Some(false);
//! values.gpu_scheduler_policy = Some(SchedulerPolicy::Binpack);
//! values.kube_scheduler_tag = Some("v1.37.2".into());
//! values.device_split_count = Some(4);
//! values.devices.insert("ascend".into(), true);
//! values.extra = serde_json::json!({"devicePlugin": {"runtimeClassName": "nvidia"}});
//!
//! let v = values.to_values("2.10.0")?;
//! assert_eq!(v["global"]["imageTag"], "v2.10.0");
//! assert_eq!(v["scheduler"]["kubeScheduler"]["image"]["tag"], "v1.37.2");
//! assert_eq!(v["scheduler"]["defaultSchedulerPolicy"]["gpuSchedulerPolicy"], "binpack");
//! assert_eq!(v["devicePlugin"]["deviceSplitCount"], 4);
//! assert_eq!(v["devicePlugin"]["runtimeClassName"], "nvidia");
//! assert_eq!(v["devices"]["ascend"]["enabled"], true);
//! // Before chart 2.6 the tag had its own key.
//! assert_eq!(values.to_values("2.5.1")?["scheduler"]["kubeScheduler"]["imageTag"], "v1.37.2");
//! # Ok::<(), hami_e2e_helm::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// A node or device scheduling policy of HAMi.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedulerPolicy {
    /// Fill a node (device) before the next.
    Binpack,
    /// Spread over nodes (devices).
    Spread,
}

impl fmt::Display for SchedulerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SchedulerPolicy::Binpack => "binpack",
            SchedulerPolicy::Spread => "spread",
        })
    }
}

/// The values of HAMi's chart that tests change; `None` leaves the chart's default.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct HamiValues {
    /// `global.imageTag`: the HAMi image tag (`v2.10.0`).
    pub image_tag: Option<String>,
    /// `global.imageRegistry`.
    pub image_registry: Option<String>,
    /// The scheduler extender's image repository (`scheduler.extender.image.repository`).
    pub scheduler_image_repository: Option<String>,
    /// The kube-scheduler image tag (key depends on the chart version).
    pub kube_scheduler_tag: Option<String>,
    /// `scheduler.leaderElect` (HAMi's CI sets `false`).
    pub leader_elect: Option<bool>,
    /// `scheduler.nodeLabelSelector` (`gpu: "on"`).
    pub node_label_selector: BTreeMap<String, String>,
    /// `scheduler.defaultSchedulerPolicy.nodeSchedulerPolicy`.
    pub node_scheduler_policy: Option<SchedulerPolicy>,
    /// `scheduler.defaultSchedulerPolicy.gpuSchedulerPolicy`.
    pub gpu_scheduler_policy: Option<SchedulerPolicy>,
    /// `scheduler.admissionWebhook.enabled`.
    pub webhook_enabled: Option<bool>,
    /// `scheduler.admissionWebhook.failurePolicy`: `Ignore` or `Fail`.
    pub webhook_failure_policy: Option<String>,
    /// `devicePlugin.enabled`.
    pub device_plugin_enabled: Option<bool>,
    /// `devicePlugin.deviceSplitCount` (≥ 1).
    pub device_split_count: Option<u32>,
    /// `devicePlugin.deviceMemoryScaling` (> 0).
    pub device_memory_scaling: Option<f64>,
    /// `devicePlugin.nvidiaNodeSelector`.
    pub nvidia_node_selector: BTreeMap<String, String>,
    /// `devices.<vendor>.enabled`.
    pub devices: BTreeMap<String, bool>,
    /// `resourceName`, `resourceMem`, `resourceCores`, `resourceMemPercentage`,
    /// `resourcePriority` and the other vendors' names, by their chart key.
    pub resource_names: BTreeMap<String, String>,
    /// Any other values, merged last (they win).
    pub extra: Value,
}

/// Whether chart version `version` (`2.10.0`, `v2.5.1`) is at least `major.minor`.
fn at_least(version: &str, major: u64, minor: u64) -> Result<bool> {
    let v = version.trim_start_matches('v');
    let mut parts = v.split(['.', '-', '+']);
    let parse = |p: Option<&str>| -> Result<u64> {
        p.and_then(|p| p.parse().ok())
            .ok_or_else(|| Error::Invalid {
                what: format!("chart version `{version}`"),
                message: "expected MAJOR.MINOR.PATCH".into(),
            })
    };
    let (ma, mi) = (parse(parts.next())?, parse(parts.next())?);
    Ok((ma, mi) >= (major, minor))
}

/// Merges `patch` into `base`, objects key by key, anything else replaced.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

impl HamiValues {
    /// Checks the values the chart would accept but HAMi would not run with.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the value's chart key and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, message: &str| {
            Err(Error::Invalid {
                what: format!("chart value `{key}`"),
                message: message.to_string(),
            })
        };
        if self.device_split_count == Some(0) {
            return bad("devicePlugin.deviceSplitCount", "must be at least 1");
        }
        if let Some(s) = self.device_memory_scaling
            && !(s > 0.0 && s.is_finite())
        {
            return bad(
                "devicePlugin.deviceMemoryScaling",
                "must be a positive number",
            );
        }
        if let Some(p) = &self.webhook_failure_policy
            && p != "Ignore"
            && p != "Fail"
        {
            return bad(
                "scheduler.admissionWebhook.failurePolicy",
                &format!("`{p}` is neither Ignore nor Fail"),
            );
        }
        if !(self.extra.is_null() || self.extra.is_object()) {
            return bad("(extra values)", "must be a JSON object");
        }
        for key in self.resource_names.keys() {
            if !key.ends_with("ResourceName")
                && !key.starts_with("resource")
                && !key.contains("Resource")
            {
                return bad(key, "is not a resource-name key of the chart");
            }
        }
        Ok(())
    }

    /// The values document for chart version `chart_version`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for invalid values (see [`validate`](Self::validate)) or a
    /// chart version that does not parse.
    pub fn to_values(&self, chart_version: &str) -> Result<Value> {
        self.validate()?;
        let new_image_keys = at_least(chart_version, 2, 6)?;
        let mut v = json!({});
        let mut set = |path: &[&str], value: Value| {
            let mut patch = value;
            for key in path.iter().rev() {
                patch = json!({ *key: patch });
            }
            merge(&mut v, &patch);
        };
        if let Some(t) = &self.image_tag {
            set(&["global", "imageTag"], json!(t));
        }
        if let Some(r) = &self.image_registry {
            set(&["global", "imageRegistry"], json!(r));
        }
        if let Some(r) = &self.scheduler_image_repository {
            set(&["scheduler", "extender", "image", "repository"], json!(r));
        }
        if let Some(t) = &self.kube_scheduler_tag {
            if new_image_keys {
                set(&["scheduler", "kubeScheduler", "image", "tag"], json!(t));
            } else {
                set(&["scheduler", "kubeScheduler", "imageTag"], json!(t));
            }
        }
        if let Some(l) = self.leader_elect {
            set(&["scheduler", "leaderElect"], json!(l));
        }
        if !self.node_label_selector.is_empty() {
            set(
                &["scheduler", "nodeLabelSelector"],
                json!(self.node_label_selector),
            );
        }
        if let Some(p) = self.node_scheduler_policy {
            set(
                &["scheduler", "defaultSchedulerPolicy", "nodeSchedulerPolicy"],
                json!(p.to_string()),
            );
        }
        if let Some(p) = self.gpu_scheduler_policy {
            set(
                &["scheduler", "defaultSchedulerPolicy", "gpuSchedulerPolicy"],
                json!(p.to_string()),
            );
        }
        if let Some(e) = self.webhook_enabled {
            set(&["scheduler", "admissionWebhook", "enabled"], json!(e));
        }
        if let Some(p) = &self.webhook_failure_policy {
            set(
                &["scheduler", "admissionWebhook", "failurePolicy"],
                json!(p),
            );
        }
        if let Some(e) = self.device_plugin_enabled {
            set(&["devicePlugin", "enabled"], json!(e));
        }
        if let Some(n) = self.device_split_count {
            set(&["devicePlugin", "deviceSplitCount"], json!(n));
        }
        if let Some(s) = self.device_memory_scaling {
            set(&["devicePlugin", "deviceMemoryScaling"], json!(s));
        }
        if !self.nvidia_node_selector.is_empty() {
            set(
                &["devicePlugin", "nvidiaNodeSelector"],
                json!(self.nvidia_node_selector),
            );
        }
        for (vendor, enabled) in &self.devices {
            set(&["devices", vendor, "enabled"], json!(enabled));
        }
        for (key, name) in &self.resource_names {
            set(&[key], json!(name));
        }
        if self.extra.is_object() {
            merge(&mut v, &self.extra);
        }
        Ok(v)
    }
}

/// The chart's default resource names, by chart key (`charts/hami/values.yaml` v2.10.0).
pub const CHART_RESOURCE_NAMES: &[(&str, &str)] = &[
    ("resourceName", "nvidia.com/gpu"),
    ("resourceMem", "nvidia.com/gpumem"),
    ("resourceMemPercentage", "nvidia.com/gpumem-percentage"),
    ("resourceCores", "nvidia.com/gpucores"),
    ("resourcePriority", "nvidia.com/priority"),
    ("mluResourceName", "cambricon.com/vmlu"),
    ("mluResourceMem", "cambricon.com/mlu.smlu.vmemory"),
    ("mluResourceCores", "cambricon.com/mlu.smlu.vcore"),
    ("dcuResourceName", "hygon.com/dcunum"),
    ("dcuResourceMem", "hygon.com/dcumem"),
    ("dcuResourceCores", "hygon.com/dcucores"),
];

impl HamiValues {
    /// A resource name by its chart key: the value set in
    /// [`resource_names`](Self::resource_names), else the chart's default.
    pub fn resource_name(&self, chart_key: &str) -> Option<&str> {
        self.resource_names
            .get(chart_key)
            .map(String::as_str)
            .or_else(|| {
                CHART_RESOURCE_NAMES
                    .iter()
                    .find(|(k, _)| *k == chart_key)
                    .map(|(_, v)| *v)
            })
    }

    /// Whether Ascend's devices are on (`devices.ascend.enabled`; on unless set to
    /// `false`, so the local cluster serves every built-in vendor).
    pub fn ascend_enabled(&self) -> bool {
        self.devices.get("ascend").copied().unwrap_or(true)
    }

    /// HAMi's `device-config.yaml` as the chart's `device-configmap.yaml` renders it from
    /// these values (resource names, split count, memory scaling, Ascend's chips), for a
    /// HAMi scheduler that runs outside the chart: the same values make the chart's
    /// ConfigMap and this file, so the two cannot disagree. JSON, which is YAML.
    ///
    /// ```
    /// use hami_e2e_helm::HamiValues;
    ///
    /// let mut values = HamiValues::default();
    /// values.resource_names.insert("resourceMem".into(), "example.com/vgpu-memory".into());
    /// values.device_split_count = Some(4);
    /// let config = values.device_config()?;
    /// assert_eq!(config["nvidia"]["resourceMemoryName"], "example.com/vgpu-memory");
    /// assert_eq!(config["nvidia"]["resourceCountName"], "nvidia.com/gpu");
    /// assert_eq!(config["nvidia"]["deviceSplitCount"], 4);
    /// assert_eq!(config["hygon"]["resourceCountName"], "hygon.com/dcunum");
    /// assert_eq!(config["vnpus"]["configs"][2]["commonWord"], "Ascend910B3");
    /// // hami-e2e-devices reads it back: one source for the backends and for HAMi.
    /// let parsed = hami_e2e_devices::DeviceConfig::from_yaml(&config.to_string()).unwrap();
    /// assert_eq!(parsed.vnpus.unwrap().configs.len(), 7);
    /// # Ok::<(), hami_e2e_helm::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for values [`validate`](Self::validate) rejects.
    pub fn device_config(&self) -> Result<Value> {
        self.validate()?;
        let name = |k: &str| self.resource_name(k).unwrap_or_default().to_string();
        let mut config = json!({
            "nvidia": {
                "resourceCountName": name("resourceName"),
                "resourceMemoryName": name("resourceMem"),
                "resourceMemoryPercentageName": name("resourceMemPercentage"),
                "resourceCoreName": name("resourceCores"),
                "resourcePriorityName": name("resourcePriority"),
                "overwriteEnv": false,
                "defaultMemory": 0,
                "defaultCores": 0,
                "defaultGPUNum": 1,
                "memoryFactor": 1,
                "deviceSplitCount": self.device_split_count.unwrap_or(10),
                "deviceMemoryScaling": self.device_memory_scaling.unwrap_or(1.0),
                "deviceCoreScaling": 1,
                "gpuCorePolicy": "default",
            },
            "cambricon": {
                "resourceCountName": name("mluResourceName"),
                "resourceMemoryName": name("mluResourceMem"),
                "resourceCoreName": name("mluResourceCores"),
            },
            "hygon": {
                "resourceCountName": name("dcuResourceName"),
                "resourceMemoryName": name("dcuResourceMem"),
                "resourceCoreName": name("dcuResourceCores"),
                "memoryFactor": 1,
            },
        });
        if self.ascend_enabled() {
            let configs: Vec<Value> = hami_e2e_devices::AscendChip::catalogue()
                .iter()
                .map(|chip| {
                    json!({
                        "chipName": chip.chip_name,
                        "commonWord": chip.common_word,
                        "resourceName": chip.names.count,
                        "resourceMemoryName": chip.names.memory,
                        "resourceCoreName": chip.names.cores,
                        "memoryAllocatable": chip.memory_allocatable,
                        "memoryCapacity": chip.memory_capacity,
                        "memoryFactor": chip.memory_factor,
                        "aiCore": chip.ai_core,
                        "superPod": chip.super_pod,
                        "templates": chip.templates.iter().map(|t| json!({
                            "name": t.name, "memory": t.memory_mib, "aiCore": t.ai_core,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            config["vnpus"] = json!({"hamiVnpuCore": false, "configs": configs});
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_values_name_their_key() {
        let mut v = HamiValues {
            device_split_count: Some(0),
            ..Default::default()
        };
        assert_eq!(
            v.to_values("2.10.0").unwrap_err().to_string(),
            "invalid chart value `devicePlugin.deviceSplitCount`: must be at least 1"
        );
        v.device_split_count = None;
        v.webhook_failure_policy = Some("Sometimes".into());
        assert_eq!(
            v.validate().unwrap_err().to_string(),
            "invalid chart value `scheduler.admissionWebhook.failurePolicy`: `Sometimes` is neither Ignore nor Fail"
        );
        v.webhook_failure_policy = None;
        v.extra = json!([1]);
        assert!(v.validate().is_err());
        v.extra = Value::Null;
        v.resource_names.insert("schedulerName".into(), "x".into());
        assert!(v.validate().is_err());
    }

    #[test]
    fn chart_versions_are_compared() {
        assert!(at_least("2.6.0", 2, 6).unwrap());
        assert!(at_least("v2.10.0", 2, 6).unwrap());
        assert!(!at_least("2.5.9", 2, 6).unwrap());
        assert!(at_least("3.0.0-rc.1", 2, 6).unwrap());
        assert_eq!(
            at_least("latest", 2, 6).unwrap_err().to_string(),
            "invalid chart version `latest`: expected MAJOR.MINOR.PATCH"
        );
    }

    #[test]
    fn extra_values_win() {
        let v = HamiValues {
            leader_elect: Some(true),
            extra: json!({"scheduler": {"leaderElect": false, "replicas": 2}}),
            ..Default::default()
        }
        .to_values("2.10.0")
        .unwrap();
        assert_eq!(v["scheduler"], json!({"leaderElect": false, "replicas": 2}));
    }
}
