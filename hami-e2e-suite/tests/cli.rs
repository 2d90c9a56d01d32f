//! `hami-e2e` used as an operator would: against a cluster started by hand (a local one,
//! reached only through its kubeconfig), `run`, `list` and `sweep`; on it, a node whose
//! NVIDIA devices HAMi registered, one of which another team's pod holds.

use std::collections::BTreeMap;
use std::process::Command;

use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

fn hami_e2e(args: &[&str]) -> (i32, String, String) {
    hami_e2e_logging(args, "warn")
}

/// `hami-e2e` with `RUST_LOG=log`.
fn hami_e2e_logging(args: &[&str], log: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hami-e2e"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("HAMI_E2E_KUBECONFIG")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", log)
        .output()
        .expect("hami-e2e runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn run_list_and_sweep_against_a_users_cluster() {
    use hami_e2e_devices::{DeviceBackend, FakeDevices, Nvidia};
    let nvidia = Nvidia::default();
    let mut fake = FakeDevices::new("gpu-node", 4, "Tesla T4", 15360);
    fake.split = 1;
    let gpu_node = hami_e2e_suite::fake_node_spec("gpu-node", &nvidia.fake_node(&fake).unwrap());
    let local = LocalCluster::start(
        LocalClusterOptions::default()
            .node(NodeSpec::new("node-0"))
            .node(gpu_node),
    )
    .await
    .expect("the local cluster starts");
    let kubeconfig = local.kubeconfig().display().to_string();

    // Another team's pod, granted one of the GPUs by HAMi (its allocation annotation).
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(local.client())
        .get("gpu-node")
        .await
        .unwrap();
    let first = nvidia.node_devices(&node).unwrap()[0].id.clone();
    let granted = hami_e2e_devices::codec::encode_allocation(&[vec![
        hami_e2e_devices::ContainerDevice::new(&first, "NVIDIA", 15360, 100),
    ]]);
    let foreign = hami_e2e_k8s::PodBuilder::new("training")
        .namespace("default")
        .command(["sleep", "3600"])
        .limit("nvidia.com/gpu", "1")
        .node_selector("kubernetes.io/hostname", "gpu-node")
        .annotation(nvidia.annotation_keys().allocated.clone(), granted)
        .build();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(local.client(), "default")
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let (code, out, err) = hami_e2e(&["list", "--format", "terse"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("cluster::nodes-ready: test"), "{out}");

    let (code, out, err) = hami_e2e_logging(
        &[
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--label-filter",
            "smoke || capacity",
        ],
        "warn,hami_e2e=info",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("test cluster::pod-runs-in-its-namespace ... ok"),
        "{out}"
    );
    // Fake devices need the local cluster the run starts itself: skipped, with the reason.
    assert!(
        out.contains("test devices::nvidia::fake-node ... ignored, needs local-cluster"),
        "{out}"
    );
    assert!(
        out.contains(&format!("ran against: cluster kubeconfig `{kubeconfig}`")),
        "{out}"
    );
    // What HAMi it found there (none: this cluster has no HAMi chart installed).
    assert!(
        out.contains("installed HAMi none (no Deployment labelled app.kubernetes.io/component=hami-scheduler, no webhook vgpu.hami.io)"),
        "{out}"
    );
    assert!(out.contains("test result: ok."), "{out}");
    // Its log lines went to a pipe: no colour codes.
    assert!(err.contains(" INFO ") && !err.contains('\u{1b}'), "{err}");
    // Device admission went through the cluster, and its last release removed the ConfigMap.
    assert!(
        out.contains("device admission through ConfigMap default/hami-e2e-admission"),
        "{out}"
    );
    let admission =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(local.client(), "default")
            .get_opt(hami_e2e_k8s::cleanup::admission::ADMISSION_CONFIGMAP)
            .await
            .unwrap();
    assert!(admission.is_none(), "{admission:?}");
    // Two of the three free GPUs: runs, on the GPU node.
    assert!(
        out.contains("test devices::nvidia::whole-devices ... ok"),
        "{out}"
    );
    // A whole node: one GPU is another team's, so never; skipped with the reason.
    assert!(
        out.contains("test devices::nvidia::node-capacity ... ignored, needs every nvidia device of one node with at least 3; the cluster has 4 nvidia devices, at most 4 on one node (1 partly or wholly used by other workloads)"),
        "{out}"
    );
    assert!(
        out.contains("test devices::ascend::whole-devices ... ignored, needs 2 whole ascend devices on one node; the cluster has no ascend devices"),
        "{out}"
    );
    // The verdict, after libtest's summary.
    let verdict = out
        .split_once("verdict per vendor and node:")
        .expect("a verdict")
        .1;
    assert!(
        verdict.contains("nvidia     gpu-node        4       2       0        0"),
        "{verdict}"
    );
    assert!(
        verdict.contains("nvidia     -               -       0       0        3"),
        "{verdict}"
    );
    // HAMi on fake devices needs the local cluster too: skipped with the reason.
    assert!(
        out.contains("test hami::nvidia::allocation ... ignored, needs local-cluster"),
        "{out}"
    );
    assert!(verdict.contains("nvidia     pass (2 passed)"), "{verdict}");
    // node-selector labelled the GPU node for its pod; the label and its record are gone.
    assert!(
        out.contains("test devices::nvidia::node-selector ... ok"),
        "{out}"
    );
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(local.client())
        .get("gpu-node")
        .await
        .unwrap();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert!(
        !labels.contains_key(hami_e2e_suite::SELECTOR_LABEL),
        "{labels:?}"
    );
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with("hami-e2e.io/changes")),
        "{annotations:?}"
    );
    assert!(verdict.contains("ascend     not tested"), "{verdict}");
    assert!(
        verdict.contains("devices::nvidia::fake-node: needs local-cluster"),
        "{verdict}"
    );
    // The other team's pod is untouched.
    assert!(
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(local.client(), "default")
            .get_opt("training")
            .await
            .unwrap()
            .is_some()
    );

    // A namespace a crashed run left, and one of somebody else's.
    let namespaces: Api<Namespace> = Api::all(local.client());
    for (name, labels) in [
        (
            "hami-e2e-crashed-x1",
            BTreeMap::from([
                ("hami-e2e.io/run".to_string(), "old-run".to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "hami-e2e".to_string(),
                ),
            ]),
        ),
        ("team-a", BTreeMap::new()),
    ] {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let (code, out, err) = hami_e2e(&[
        "sweep",
        "--kubeconfig",
        &kubeconfig,
        "--sweep-older-than",
        "0s",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out,
        "deleted namespace hami-e2e-crashed-x1\nswept 1 namespace(s)\n"
    );
    assert!(namespaces.get_opt("team-a").await.unwrap().is_some());

    // Without a cluster there is nothing to sweep: a usage error, not a new local cluster.
    let (code, _, err) = hami_e2e(&["sweep"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("needs a cluster: --kubeconfig PATH or KUBECONFIG"),
        "{err}"
    );
    local.stop().await.unwrap();
}
