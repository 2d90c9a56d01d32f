//! Finding the HAMi installed on a cluster: objects shaped as HAMi's chart creates them (the
//! scheduler Deployment, its device config ConfigMap, the webhook configuration) are found
//! and described; a cluster without them says so.

use hami_e2e_helm::HamiValues;
use hami_e2e_helm::installed::discover;
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use serde_json::json;

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_objects_are_found_and_described() {
    let local = LocalCluster::start(LocalClusterOptions::default())
        .await
        .unwrap();
    let client = local.client();

    let none = discover(&client).await.unwrap();
    assert!(!none.is_installed(), "{none:?}");
    assert!(none.describe().starts_with("none (no Deployment labelled"));

    let pp = Default::default();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &object(json!({"metadata": {"name": "hami-system"}})))
        .await
        .unwrap();
    // JSON is YAML: the device config as the chart would hold it.
    let config = HamiValues::default().device_config().unwrap().to_string();
    Api::<ConfigMap>::namespaced(client.clone(), "hami-system")
        .create(
            &pp,
            &object(json!({
                "metadata": {"name": "hami-scheduler-device"},
                "data": {"device-config.yaml": config},
            })),
        )
        .await
        .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "hami-system")
        .create(
            &pp,
            &object(json!({
                "metadata": {"name": "hami-scheduler", "labels": {"app.kubernetes.io/component": "hami-scheduler"}},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app.kubernetes.io/component": "hami-scheduler"}},
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/component": "hami-scheduler"}},
                        "spec": {
                            "containers": [
                                {"name": "kube-scheduler", "image": "registry.k8s.io/kube-scheduler:v1.37.2"},
                                {"name": "vgpu-scheduler-extender", "image": "projecthami/hami:v2.10.0"},
                            ],
                            "volumes": [{"name": "device-config", "configMap": {"name": "hami-scheduler-device"}}],
                        },
                    },
                },
            })),
        )
        .await
        .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(
            &pp,
            &object(json!({
                "metadata": {"name": "hami-webhook"},
                "webhooks": [{
                    "name": "vgpu.hami.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Ignore",
                    "clientConfig": {"service": {"name": "hami-scheduler", "namespace": "hami-system", "path": "/webhook"}},
                    // Matches no pod: the test's own objects are not sent to it.
                    "objectSelector": {"matchLabels": {"hami-e2e.io/never": "true"}},
                    "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                }],
            })),
        )
        .await
        .unwrap();

    let found = discover(&client).await.unwrap();
    assert_eq!(
        found.scheduler.as_deref(),
        Some("hami-system/hami-scheduler")
    );
    assert_eq!(found.version.as_deref(), Some("v2.10.0"));
    assert_eq!(found.webhook.as_deref(), Some("hami-webhook"));
    assert_eq!(
        found.device_config_map.as_deref(),
        Some("hami-system/hami-scheduler-device")
    );
    let text = found.describe();
    assert!(
        text.starts_with("v2.10.0 (scheduler hami-system/hami-scheduler, image projecthami/hami:v2.10.0; webhook hami-webhook; device config hami-system/hami-scheduler-device: nvidia nvidia.com/gpu split 10"),
        "{text}"
    );
    local.stop().await.unwrap();
}
