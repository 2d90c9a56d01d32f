//! Builders for the objects HAMi's tests create most: pods asking for devices, and
//! Deployments of them.
//!
//! ```
//! use hami_e2e_k8s::{DeploymentBuilder, PodBuilder};
//!
//! let pod = PodBuilder::new("cuda")
//!     .image("nvidia/cuda:12.4.1-base-ubuntu22.04")
//!     .command(["sleep", "infinity"])
//!     .limit("nvidia.com/gpu", "1")
//!     .limit("nvidia.com/gpumem", "3000")
//!     .annotation("nvidia.com/use-gputype", "A100")
//!     .node_selector("gpu", "on")
//!     .scheduler_name("hami-scheduler")
//!     .build();
//! let limits = pod.spec.as_ref().unwrap().containers[0].resources.as_ref().unwrap().limits.as_ref().unwrap();
//! assert_eq!(limits["nvidia.com/gpumem"].0, "3000");
//!
//! let deployment = DeploymentBuilder::new("cuda", PodBuilder::new("ignored").limit("nvidia.com/gpu", "1"))
//!     .replicas(3)
//!     .build();
//! assert_eq!(deployment.spec.replicas, Some(3));
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, PodSpec, PodTemplateSpec, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;

/// The image of containers that do not set one: small, and present on most clusters.
pub const DEFAULT_IMAGE: &str = "busybox:1.36";

/// Builds a [`Pod`]. Container settings ([`image`](Self::image),
/// [`limit`](Self::limit), ...) apply to the last container added with
/// [`container`](Self::container), or to a container named `main` created on first use.
#[derive(Debug, Clone)]
#[must_use]
pub struct PodBuilder {
    metadata: ObjectMeta,
    spec: PodSpec,
}

impl PodBuilder {
    /// A pod called `name`, restart policy `Never`, no containers yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: PodSpec {
                restart_policy: Some("Never".into()),
                ..Default::default()
            },
        }
    }

    fn current(&mut self) -> &mut Container {
        if self.spec.containers.is_empty() {
            self.spec.containers.push(Container {
                name: "main".into(),
                image: Some(DEFAULT_IMAGE.into()),
                ..Default::default()
            });
        }
        let last = self.spec.containers.len() - 1;
        &mut self.spec.containers[last]
    }

    fn resources(&mut self) -> &mut ResourceRequirements {
        self.current()
            .resources
            .get_or_insert_with(ResourceRequirements::default)
    }

    /// Adds a container called `name` (image [`DEFAULT_IMAGE`]); later container settings
    /// apply to it.
    pub fn container(mut self, name: impl Into<String>) -> Self {
        self.spec.containers.push(Container {
            name: name.into(),
            image: Some(DEFAULT_IMAGE.into()),
            ..Default::default()
        });
        self
    }

    /// Adds an init container, built by hand; the container settings of this builder
    /// apply to regular containers only.
    pub fn init_container_with(mut self, container: Container) -> Self {
        self.spec
            .init_containers
            .get_or_insert_with(Vec::new)
            .push(container);
        self
    }

    /// Sets the container's image.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.current().image = Some(image.into());
        self
    }

    /// Sets the container's command.
    pub fn command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.current().command = Some(command.into_iter().map(Into::into).collect());
        self
    }

    /// Adds an environment variable to the container.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.current()
            .env
            .get_or_insert_with(Vec::new)
            .push(EnvVar {
                name: name.into(),
                value: Some(value.into()),
                ..Default::default()
            });
        self
    }

    /// Sets a resource limit of the container (`nvidia.com/gpu: 1`, `cpu: 500m`).
    pub fn limit(mut self, resource: impl Into<String>, quantity: impl Into<String>) -> Self {
        self.resources()
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(resource.into(), Quantity(quantity.into()));
        self
    }

    /// Sets a resource request of the container.
    pub fn request(mut self, resource: impl Into<String>, quantity: impl Into<String>) -> Self {
        self.resources()
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert(resource.into(), Quantity(quantity.into()));
        self
    }

    /// Runs the container privileged (HAMi's webhook refuses such GPU pods).
    pub fn privileged(mut self) -> Self {
        self.current()
            .security_context
            .get_or_insert_with(Default::default)
            .privileged = Some(true);
        self
    }

    /// Sets the namespace (by default the one it is applied into).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.metadata.namespace = Some(namespace.into());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// Adds an annotation (`nvidia.com/use-gpuuuid`, ...).
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// Adds a node selector term.
    pub fn node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// Sets `spec.nodeName`, bypassing the scheduler.
    pub fn node_name(mut self, node: impl Into<String>) -> Self {
        self.spec.node_name = Some(node.into());
        self
    }

    /// Sets the scheduler (`hami-scheduler`).
    pub fn scheduler_name(mut self, scheduler: impl Into<String>) -> Self {
        self.spec.scheduler_name = Some(scheduler.into());
        self
    }

    /// Tolerates every taint (for tainted fake or GPU nodes).
    pub fn tolerate_all(mut self) -> Self {
        self.spec
            .tolerations
            .get_or_insert_with(Vec::new)
            .push(Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            });
        self
    }

    /// Sets the restart policy (`Never` by default).
    pub fn restart_policy(mut self, policy: impl Into<String>) -> Self {
        self.spec.restart_policy = Some(policy.into());
        self
    }

    /// Sets the grace period of deletion (0 deletes at once).
    pub fn termination_grace_period(mut self, seconds: i64) -> Self {
        self.spec.termination_grace_period_seconds = Some(seconds);
        self
    }

    /// Changes the spec in any other way.
    pub fn with_spec(mut self, change: impl FnOnce(&mut PodSpec)) -> Self {
        change(&mut self.spec);
        self
    }

    /// The pod.
    pub fn build(mut self) -> Pod {
        self.current();
        Pod {
            metadata: self.metadata,
            spec: Some(self.spec),
            status: None,
        }
    }
}

/// Builds a [`Deployment`] whose pods come from a [`PodBuilder`] (its name is replaced,
/// its labels kept, `app=<name>` added and used as the selector, restart policy `Always`).
#[derive(Debug, Clone)]
#[must_use]
pub struct DeploymentBuilder {
    name: String,
    replicas: i32,
    pod: PodBuilder,
}

impl DeploymentBuilder {
    /// A Deployment called `name` of one replica of `pod`.
    pub fn new(name: impl Into<String>, pod: PodBuilder) -> Self {
        Self {
            name: name.into(),
            replicas: 1,
            pod,
        }
    }

    /// Sets the number of replicas.
    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = replicas;
        self
    }

    /// The Deployment.
    pub fn build(self) -> Deployment {
        let selector = BTreeMap::from([("app".to_string(), self.name.clone())]);
        let mut pod = self
            .pod
            .restart_policy("Always")
            .label("app", self.name.clone())
            .build();
        pod.metadata.name = None;
        pod.metadata.namespace = None;
        Deployment {
            metadata: ObjectMeta {
                name: Some(self.name),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(self.replicas),
                selector: LabelSelector {
                    match_labels: Some(selector),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(pod.metadata),
                    spec: pod.spec,
                },
                ..Default::default()
            },
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_to_the_last_container() {
        let pod = PodBuilder::new("p")
            .limit("nvidia.com/gpu", "1")
            .container("second")
            .image("cuda")
            .limit("nvidia.com/gpu", "2")
            .request("cpu", "1")
            .build();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.containers.len(), 2);
        assert_eq!(spec.containers[0].name, "main");
        assert_eq!(spec.containers[0].image.as_deref(), Some(DEFAULT_IMAGE));
        let second = &spec.containers[1];
        assert_eq!(second.image.as_deref(), Some("cuda"));
        let r = second.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["nvidia.com/gpu"].0, "2");
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "1");
    }

    #[test]
    fn a_pod_always_has_a_container() {
        let pod = PodBuilder::new("p").build();
        assert_eq!(pod.spec.unwrap().containers[0].name, "main");
    }

    #[test]
    fn deployments_select_their_pods() {
        let d = DeploymentBuilder::new("web", PodBuilder::new("x").label("tier", "gpu")).build();
        let spec = d.spec;
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels["tier"], "gpu");
        assert_eq!(spec.selector.match_labels.unwrap()["app"], "web");
        assert_eq!(
            spec.template.spec.unwrap().restart_policy.as_deref(),
            Some("Always")
        );
    }
}
