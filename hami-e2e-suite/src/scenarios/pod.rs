//! [`DevicePod`]: the one builder of the scenarios' pods, a pod that sleeps and asks a
//! device backend for devices, on top of `hami_e2e_k8s::PodBuilder`.

use hami_e2e_core::Failure;
use hami_e2e_devices::{DeviceBackend, DeviceRequest};
use hami_e2e_k8s::PodBuilder;
use k8s_openapi::api::core::v1::Pod;

/// The command of the scenarios' containers: they only need to be there.
const SLEEP: [&str; 2] = ["sleep", "3600"];

/// The node label a pod is pinned to a node by.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A pod of a scenario: containers of `hami_e2e_k8s::DEFAULT_IMAGE` that sleep, asking a
/// backend for devices ([`devices`](Self::devices): the backend's resource limits for a
/// [`DeviceRequest`]), with whatever else the scenario sets. Container settings apply to the
/// last container added ([`container`](Self::container)), else to the first, `main`.
///
/// ```text
/// let pod = DevicePod::new("alloc")
///     .devices(backend, &DeviceRequest::devices(1).memory_mib(3000).cores(30))?
///     .on_node(&node)
///     .build();
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub(crate) struct DevicePod {
    pod: PodBuilder,
}

impl DevicePod {
    /// A pod `name` of one container, `main`, that sleeps and asks for nothing yet.
    pub(crate) fn new(name: &str) -> Self {
        Self {
            pod: PodBuilder::new(name).command(SLEEP),
        }
    }

    /// The container asks `backend` for `request`: the limits of
    /// [`DeviceBackend::container_resources`].
    ///
    /// # Errors
    ///
    /// When the backend cannot express `request`.
    pub(crate) fn devices(
        mut self,
        backend: &dyn DeviceBackend,
        request: &DeviceRequest,
    ) -> Result<Self, Failure> {
        for (k, v) in backend
            .container_resources(request)?
            .limits
            .unwrap_or_default()
        {
            self.pod = self.pod.limit(k, v.0);
        }
        Ok(self)
    }

    /// Adds a container `name` that sleeps; later container settings apply to it.
    pub(crate) fn container(mut self, name: &str) -> Self {
        self.pod = self.pod.container(name).command(SLEEP);
        self
    }

    /// Sets a resource limit of the container as written, for the limits no
    /// [`DeviceRequest`] writes (a count alone, memory without a count, a percentage over
    /// 100): what HAMi's webhook makes of them is the point.
    pub(crate) fn limit(mut self, resource: &str, quantity: &str) -> Self {
        self.pod = self.pod.limit(resource, quantity);
        self
    }

    /// Sets the container's image.
    pub(crate) fn image(mut self, image: &str) -> Self {
        self.pod = self.pod.image(image);
        self
    }

    /// Sets the container's command, in place of `sleep 3600`.
    pub(crate) fn command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.pod = self.pod.command(command);
        self
    }

    /// Adds an environment variable to the container.
    pub(crate) fn env(mut self, name: &str, value: &str) -> Self {
        self.pod = self.pod.env(name, value);
        self
    }

    /// Pins the pod to node `node` (a `kubernetes.io/hostname` node selector).
    pub(crate) fn on_node(self, node: &str) -> Self {
        self.node_selector(HOSTNAME_LABEL, node)
    }

    /// Adds a node selector term.
    pub(crate) fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.pod = self.pod.node_selector(key, value);
        self
    }

    /// Adds a label.
    pub(crate) fn label(mut self, key: &str, value: &str) -> Self {
        self.pod = self.pod.label(key, value);
        self
    }

    /// Labels the pod `hami.io/webhook: ignore`: HAMi's webhook leaves it alone, so
    /// Kubernetes' own scheduler places it.
    pub(crate) fn ignored_by_hami_webhook(self) -> Self {
        self.label("hami.io/webhook", "ignore")
    }

    /// Adds an annotation.
    pub(crate) fn annotation(mut self, key: &str, value: &str) -> Self {
        self.pod = self.pod.annotation(key, value);
        self
    }

    /// Adds `annotations` (a backend's [`pod_annotations`](DeviceBackend::pod_annotations),
    /// say).
    pub(crate) fn annotations(self, annotations: &[(String, String)]) -> Self {
        annotations
            .iter()
            .fold(self, |pod, (k, v)| pod.annotation(k, v))
    }

    /// Runs the container privileged.
    pub(crate) fn privileged(mut self) -> Self {
        self.pod = self.pod.privileged();
        self
    }

    /// Sets `spec.nodeName`, bypassing the scheduler.
    pub(crate) fn node_name(mut self, node: &str) -> Self {
        self.pod = self.pod.node_name(node);
        self
    }

    /// Sets the scheduler.
    pub(crate) fn scheduler_name(mut self, scheduler: &str) -> Self {
        self.pod = self.pod.scheduler_name(scheduler);
        self
    }

    /// Tolerates every taint.
    pub(crate) fn tolerate_all(mut self) -> Self {
        self.pod = self.pod.tolerate_all();
        self
    }

    /// The pod as a `PodBuilder`, the template of a `hami_e2e_k8s::DeploymentBuilder`.
    pub(crate) fn into_builder(self) -> PodBuilder {
        self.pod
    }

    /// The pod.
    pub(crate) fn build(self) -> Pod {
        self.pod.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use hami_e2e_devices::Nvidia;

    fn limits(pod: &Pod, container: usize) -> Vec<(String, String)> {
        pod.spec.as_ref().unwrap().containers[container]
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }

    #[test]
    fn a_device_pod_sleeps_and_carries_the_backends_limits() {
        let request = DeviceRequest::devices(1).memory_mib(3000).cores(30);
        let pod = DevicePod::new("alloc")
            .devices(&Nvidia::default(), &request)
            .unwrap()
            .on_node("gpu-0")
            .build();
        assert_eq!(pod.metadata.name.as_deref(), Some("alloc"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.containers.len(), 1);
        let main = &spec.containers[0];
        assert_eq!(main.name, "main");
        assert_eq!(main.image.as_deref(), Some(hami_e2e_k8s::DEFAULT_IMAGE));
        assert_eq!(
            main.command.as_deref(),
            Some(&["sleep".to_string(), "3600".to_string()][..])
        );
        assert_eq!(
            limits(&pod, 0),
            [
                ("nvidia.com/gpu".to_string(), "1".to_string()),
                ("nvidia.com/gpucores".to_string(), "30".to_string()),
                ("nvidia.com/gpumem".to_string(), "3000".to_string()),
            ]
        );
        assert_eq!(
            spec.node_selector.as_ref().unwrap()[HOSTNAME_LABEL],
            "gpu-0"
        );
        assert_eq!(spec.scheduler_name, None);
        assert_eq!(pod.metadata.labels, None);
        assert_eq!(pod.metadata.annotations, None);
    }

    #[test]
    fn later_settings_apply_to_the_last_container() {
        let nvidia = Nvidia::default();
        let pod = DevicePod::new("three")
            .devices(&nvidia, &DeviceRequest::devices(1))
            .unwrap()
            .container("plain")
            .container("last")
            .devices(&nvidia, &DeviceRequest::devices(2))
            .unwrap()
            .build();
        let names: Vec<&str> = pod
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["main", "plain", "last"]);
        assert_eq!(limits(&pod, 1), []);
        assert_eq!(
            limits(&pod, 2),
            [("nvidia.com/gpu".to_string(), "2".to_string())]
        );
    }
}
