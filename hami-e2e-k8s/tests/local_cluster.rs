//! The local cluster against itself: a real control plane with KWOK nodes, one per
//! supported Kubernetes release. The first run builds the binaries (minutes).

use std::collections::BTreeMap;
use std::time::Duration;

use hami_e2e_k8s::local::bincache::{KUBERNETES_RELEASES, KubernetesRelease};
use hami_e2e_k8s::local::{Component, LocalCluster, LocalClusterOptions, NodeSpec};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, Namespace, Node, Pod, PodSpec, PodTemplateSpec, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::wait::{await_condition, conditions};

const WAIT: Duration = Duration::from_secs(60);

fn pod_spec(gpus: Option<&str>) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "main".into(),
            image: Some("registry.example/none:latest".into()),
            resources: gpus.map(|n| ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "nvidia.com/gpu".to_string(),
                    Quantity(n.into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }],
        tolerations: Some(vec![Toleration {
            key: Some("kwok.x-k8s.io/node".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

async fn smoke(release: KubernetesRelease) {
    let cluster = LocalCluster::start(
        LocalClusterOptions::default().release(release).node(
            NodeSpec::new("gpu-node-0")
                .capacity("nvidia.com/gpu", "8")
                .taint("kwok.x-k8s.io/node", "fake", "NoSchedule"),
        ),
    )
    .await
    .expect("the local cluster starts");
    let client = cluster.client();
    let info = client.apiserver_version().await.expect("version");
    assert_eq!(info.git_version, release.version());
    assert!(cluster.kubeconfig().is_file());

    // The node carries its extended resource.
    let node = Api::<Node>::all(client.clone())
        .get("gpu-node-0")
        .await
        .unwrap();
    let alloc = node.status.unwrap().allocatable.unwrap();
    assert_eq!(alloc["nvidia.com/gpu"].0, "8");

    // A namespace, and a pod requesting GPUs that runs on the fake node.
    let namespaces = Api::<Namespace>::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("smoke".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), "smoke");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("gpu-pod".into()),
            ..Default::default()
        },
        spec: Some(pod_spec(Some("2"))),
        ..Default::default()
    };
    // The namespace's default service account appears shortly after the namespace.
    let sa = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), "smoke");
    tokio::time::timeout(
        WAIT,
        await_condition(sa, "default", |s: Option<&_>| s.is_some()),
    )
    .await
    .expect("default service account")
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), "gpu-pod", conditions::is_pod_running()),
    )
    .await
    .expect("the pod runs within a minute")
    .unwrap()
    .unwrap();
    assert_eq!(
        running.spec.unwrap().node_name.as_deref(),
        Some("gpu-node-0")
    );
    assert!(
        running
            .status
            .unwrap()
            .pod_ip
            .unwrap()
            .starts_with("10.244.")
    );

    // A Deployment that becomes Available (ReplicaSet controller, scheduler, KWOK).
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(3),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod_spec(None)),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let deployments = Api::<Deployment>::namespaced(client.clone(), "smoke");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let available = tokio::time::timeout(
        WAIT,
        await_condition(deployments, "web", |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.available_replicas == Some(3))
        }),
    )
    .await
    .expect("the deployment is available within a minute")
    .unwrap();
    assert!(available.is_some());

    // Deleting the namespace removes it (namespace controller + KWOK's pod-delete stage).
    let uid = namespaces.get("smoke").await.unwrap().metadata.uid.unwrap();
    namespaces
        .delete("smoke", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(namespaces.clone(), "smoke", conditions::is_deleted(&uid)),
    )
    .await
    .expect("the namespace is gone within a minute")
    .unwrap();

    // Stopping leaves no process and no folder.
    let pids = cluster.pids();
    assert_eq!(pids.len(), Component::ALL.len(), "{pids:?}");
    let dir = cluster.dir().to_path_buf();
    // Every component is recorded with its pid (and start time), for a later start to stop
    // what a dead owner left.
    let recorded = std::fs::read_to_string(dir.join("pids")).unwrap();
    for (component, pid) in &pids {
        assert!(
            recorded
                .lines()
                .any(|l| l.starts_with(&format!("{component} {pid} "))),
            "{component} {pid} not in {recorded}"
        );
    }
    cluster.stop().await.unwrap();
    for (component, pid) in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{component} ({pid}) is still running"
        );
    }
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test_log::test(tokio::test(flavor = "multi_thread"))]
async fn newest_release_runs_pods_and_deployments() {
    smoke(KUBERNETES_RELEASES[0]).await;
}

#[test_log::test(tokio::test(flavor = "multi_thread"))]
async fn older_release_runs_pods_and_deployments() {
    smoke(KUBERNETES_RELEASES[1]).await;
}
