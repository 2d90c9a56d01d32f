//! Fake nodes: `Node` objects that KWOK manages as if a kubelet ran them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSpec as CoreNodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use crate::error::{Error, Result};

/// The annotation KWOK selects the nodes it manages by (`--manage-nodes-with-annotation-selector`).
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// A fake node: name, labels, annotations, taints, capacity and allocatable (extended
/// resources included). KWOK marks it Ready, keeps its lease and runs the pods bound to it.
///
/// New nodes carry `kubernetes.io/hostname`, `kubernetes.io/os=linux` and `type=kwok`
/// labels and 32 CPUs, 256 GiB of memory and 110 pods of capacity.
///
/// ```
/// use hami_e2e_k8s::local::NodeSpec;
///
/// let node = NodeSpec::new("gpu-node-0")
///     .label("gpu", "on")
///     .capacity("nvidia.com/gpu", "8")
///     .annotation("hami.io/node-handshake", "Requesting_2026-01-01 00:00:00")
///     .taint("dedicated", "gpu", "NoSchedule")
///     .to_node()?;
/// let status = node.status.unwrap();
/// assert_eq!(status.allocatable.unwrap()["nvidia.com/gpu"].0, "8");
/// assert_eq!(node.metadata.annotations.unwrap()["kwok.x-k8s.io/node"], "fake");
/// # Ok::<(), hami_e2e_k8s::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NodeSpec {
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    taints: Vec<Taint>,
    capacity: BTreeMap<String, String>,
    allocatable: BTreeMap<String, String>,
}

impl NodeSpec {
    /// A fake node called `name`, with the default labels and capacity.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let labels = [
            ("kubernetes.io/hostname", name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("type", "kwok"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let capacity: BTreeMap<String, String> =
            [("cpu", "32"), ("memory", "256Gi"), ("pods", "110")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        Self {
            name,
            labels,
            annotations: BTreeMap::new(),
            taints: Vec::new(),
            allocatable: capacity.clone(),
            capacity,
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds or replaces a label.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds or replaces an annotation (HAMi's device registration lives in annotations).
    #[must_use]
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Adds a taint; `effect` is `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[must_use]
    pub fn taint(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        effect: impl Into<String>,
    ) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        });
        self
    }

    /// Sets a resource's capacity and allocatable (`"8"`, `"80Gi"`).
    #[must_use]
    pub fn capacity(mut self, resource: impl Into<String>, quantity: impl Into<String>) -> Self {
        let (resource, quantity) = (resource.into(), quantity.into());
        self.allocatable.insert(resource.clone(), quantity.clone());
        self.capacity.insert(resource, quantity);
        self
    }

    /// Sets a resource's allocatable only (call after [`NodeSpec::capacity`]).
    #[must_use]
    pub fn allocatable(mut self, resource: impl Into<String>, quantity: impl Into<String>) -> Self {
        self.allocatable.insert(resource.into(), quantity.into());
        self
    }

    /// The `Node` object to create, with the KWOK annotation that hands it to KWOK.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if the name is not a DNS subdomain or a taint effect is unknown.
    pub fn to_node(&self) -> Result<Node> {
        validate_name(&self.name)?;
        for taint in &self.taints {
            if !matches!(
                taint.effect.as_str(),
                "NoSchedule" | "PreferNoSchedule" | "NoExecute"
            ) {
                return Err(Error::Invalid {
                    what: format!("taint `{}` of node `{}`", taint.key, self.name),
                    message: format!(
                        "effect `{}` is not NoSchedule, PreferNoSchedule or NoExecute",
                        taint.effect
                    ),
                });
            }
        }
        let mut annotations = self.annotations.clone();
        annotations.insert(KWOK_NODE_ANNOTATION.into(), "fake".into());
        annotations.insert("node.alpha.kubernetes.io/ttl".into(), "0".into());
        let quantities = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect::<BTreeMap<_, _>>()
        };
        Ok(Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(CoreNodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(quantities(&self.capacity)),
                allocatable: Some(quantities(&self.allocatable)),
                node_info: Some(NodeSystemInfo {
                    architecture: "amd64".into(),
                    operating_system: "linux".into(),
                    kubelet_version: "fake".into(),
                    kube_proxy_version: "fake".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
    }
}

/// Checks a DNS-1123 subdomain (what Kubernetes requires of node names).
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: format!("node name `{name}`"),
            message: "must be lower-case letters, digits, `-` and `.` (a DNS subdomain), at most 253 characters".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_and_effects_are_named() {
        for name in ["", "Upper", "-dash", "a..b", &"x".repeat(64)] {
            let err = NodeSpec::new(name).to_node().unwrap_err().to_string();
            assert!(err.contains(&format!("node name `{name}`")), "{err}");
        }
        let err = NodeSpec::new("n")
            .taint("k", "v", "Sometimes")
            .to_node()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("taint `k` of node `n`") && err.contains("Sometimes"),
            "{err}"
        );
    }

    #[test]
    fn allocatable_can_differ_from_capacity() {
        let node = NodeSpec::new("n")
            .capacity("nvidia.com/gpu", "8")
            .allocatable("nvidia.com/gpu", "6")
            .to_node()
            .unwrap();
        let status = node.status.unwrap();
        assert_eq!(status.capacity.unwrap()["nvidia.com/gpu"].0, "8");
        assert_eq!(status.allocatable.unwrap()["nvidia.com/gpu"].0, "6");
        assert_eq!(node.metadata.labels.unwrap()["kubernetes.io/hostname"], "n");
    }
}
