//! The Helm release fixture with the real `helm` CLI against a real local cluster, on a
//! small chart of this repository (`tests/charts/demo`: a Deployment, a DaemonSet, a
//! ConfigMap and a post-install hook Job): install with readiness, values, status, history,
//! manifest, upgrade, rollback, a refused value, uninstall with everything gone, and the
//! node annotations HAMi leaves removed by the fixture's teardown.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hami_e2e_core::{RunConfig, Runner, ensure, scenario};
use hami_e2e_helm::{
    Chart, Error, FAKE_DEVICES_LABEL, HelmRelease, HelmReleaseFixture, HelmReleaseSpec,
};
use hami_e2e_k8s::local::bincache::BinaryCache;
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
use hami_e2e_k8s::{ClusterFixture, ClusterSource};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::Api;

const WAIT: Duration = Duration::from_secs(120);

fn demo_chart() -> Chart {
    Chart::dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/charts/demo"))
}

async fn helm() -> PathBuf {
    hami_e2e_helm::binaries::helm(&BinaryCache::default())
        .await
        .expect("helm is found or built")
        .path
}

async fn cluster() -> LocalCluster {
    LocalCluster::start(
        LocalClusterOptions::default()
            .node(NodeSpec::new("node-0"))
            .node(NodeSpec::new("gpu-node-0").label(FAKE_DEVICES_LABEL, "true")),
    )
    .await
    .expect("the local cluster starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn install_upgrade_rollback_uninstall() {
    let helm = helm().await;
    let local = cluster().await;
    let client = local.client();
    let release = HelmRelease::new(
        &helm,
        local.kubeconfig(),
        "demo",
        "demo-system",
        demo_chart(),
    )
    .timeout(WAIT);

    let installed = release
        .install(&serde_json::json!({"message": "first"}))
        .await
        .expect("installs");
    assert_eq!(
        (installed.info.status.as_str(), installed.version),
        ("deployed", 1)
    );
    release
        .wait_ready(client.clone(), WAIT)
        .await
        .expect("ready");
    // A second install never touches the release that is there (it may be the real one).
    let again = release.install(&serde_json::json!({})).await.unwrap_err();
    assert!(
        again.to_string().starts_with(
            "invalid release `demo` in `demo-system`: it exists already (revision 1 deployed)"
        ),
        "{again}"
    );
    assert_eq!(release.status().await.unwrap().info.status, "deployed");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "demo-system");
    let web = deployments.get("demo-web").await.unwrap();
    assert_eq!(web.status.unwrap().available_replicas, Some(2));
    let mut workloads = release.workloads().await.unwrap();
    workloads.sort();
    assert_eq!(
        workloads,
        [
            (
                "DaemonSet".to_string(),
                "demo-system".to_string(),
                "demo-agent".to_string()
            ),
            (
                "Deployment".to_string(),
                "demo-system".to_string(),
                "demo-web".to_string()
            ),
        ]
    );
    assert_eq!(
        release.values(false).await.unwrap(),
        serde_json::json!({"message": "first"})
    );
    assert_eq!(release.values(true).await.unwrap()["replicas"], 2);
    assert!(
        release
            .manifest()
            .await
            .unwrap()
            .contains("kind: DaemonSet")
    );

    // Upgrade on top of the current values, then roll back to the first revision.
    let upgraded = release
        .upgrade(None, &serde_json::json!({"replicas": 3}), true)
        .await
        .expect("upgrades");
    assert_eq!(upgraded.version, 2);
    release.wait_ready(client.clone(), WAIT).await.unwrap();
    let config: Api<ConfigMap> = Api::namespaced(client.clone(), "demo-system");
    assert_eq!(
        config.get("demo-config").await.unwrap().data.unwrap()["message"],
        "first"
    );
    assert_eq!(
        deployments.get("demo-web").await.unwrap().spec.replicas,
        Some(3)
    );
    let rolled = release.rollback(Some(1)).await.expect("rolls back");
    assert_eq!(rolled.version, 3);
    assert_eq!(
        deployments.get("demo-web").await.unwrap().spec.replicas,
        Some(2)
    );
    let history = release.history().await.unwrap();
    let described: Vec<(u32, &str)> = history
        .iter()
        .map(|r| (r.revision, r.status.as_str()))
        .collect();
    assert_eq!(
        described,
        [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    );
    assert_eq!(history[2].description, "Rollback to 1");
    assert_eq!(history[0].chart, "demo-0.1.0");

    // A value the chart's schema refuses: Helm's message, naming the value.
    let refused = release
        .upgrade(None, &serde_json::json!({"replicas": "many"}), true)
        .await
        .expect_err("the schema refuses a string");
    let text = refused.to_string();
    assert!(matches!(refused, Error::Helm { .. }), "{text}");
    assert!(
        text.contains("replicas") && text.starts_with("`helm upgrade demo"),
        "{text}"
    );

    release
        .uninstall(client.clone(), WAIT)
        .await
        .expect("uninstalls");
    assert!(deployments.get_opt("demo-web").await.unwrap().is_none());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt("demo-system").await.unwrap().is_none());
    // Uninstalling what is not there is fine.
    release.uninstall(client, WAIT).await.expect("idempotent");
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_install_names_what_was_not_ready_and_leaves_nothing() {
    let helm = helm().await;
    let local = cluster().await;
    let client = local.client();
    let release = HelmRelease::new(
        &helm,
        local.kubeconfig(),
        "stuck",
        "stuck-system",
        demo_chart(),
    )
    .timeout(Duration::from_secs(10));
    // No node has this label: the Deployment never becomes available.
    let err = release
        .install(
            &serde_json::json!({"nodeSelector": {"no-such": "label"}, "hook": {"enabled": false}}),
        )
        .await
        .expect_err("cannot become ready");
    let text = err.to_string();
    assert!(text.starts_with("`helm install stuck"), "{text}");
    assert!(
        text.contains("not ready: timed out")
            && text.contains("deployment `stuck-web` in `stuck-system`"),
        "{text}"
    );
    assert!(
        text.contains("FailedScheduling") || text.contains("didn't match"),
        "{text}"
    );
    let gone = release.status().await.expect_err("no release is left");
    assert!(gone.to_string().contains("not found"), "{gone}");
    let namespaces: Api<Namespace> = Api::all(client);
    assert!(namespaces.get_opt("stuck-system").await.unwrap().is_none());
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_charts_are_named() {
    let helm = helm().await;
    let local = cluster().await;
    let missing = HelmRelease::new(
        &helm,
        local.kubeconfig(),
        "x",
        "x",
        Chart::dir("/nonexistent/chart"),
    );
    assert_eq!(
        missing
            .install(&serde_json::json!({}))
            .await
            .unwrap_err()
            .to_string(),
        "invalid chart /nonexistent/chart: no Chart.yaml in the folder"
    );
    let oci = HelmRelease::new(
        &helm,
        local.kubeconfig(),
        "x",
        "x",
        Chart::Oci {
            reference: "registry.example/hami".into(),
            version: None,
        },
    );
    assert_eq!(
        oci.install(&serde_json::json!({}))
            .await
            .unwrap_err()
            .to_string(),
        "invalid chart registry.example/hami: an OCI reference starts with oci://"
    );
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fixture_installs_once_and_cleans_up_after_the_run() {
    let helm = helm().await;
    let local = cluster().await;
    let client = local.client();
    let spec = HelmReleaseSpec::new(&helm, "fixture", "fixture-system", demo_chart())
        .values(serde_json::json!({"replicas": 1, "hook": {"enabled": false}}))
        .timeout(WAIT);
    let revisions: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut runner = Runner::new()
        .fixture(ClusterFixture::new(ClusterSource::kubeconfig(
            local.kubeconfig().to_path_buf(),
            None,
        )))
        .fixture(HelmReleaseFixture::new(spec));
    runner = runner.scenario(scenario("uses/and-fails").run(|ctx| async move {
        ctx.fixture::<HelmReleaseFixture>().await?;
        hami_e2e_core::bail!("failing on purpose")
    }));
    for i in 0..3 {
        let revisions = Arc::clone(&revisions);
        runner = runner.scenario(scenario(format!("uses/release-{i}")).run(move |ctx| {
            let revisions = Arc::clone(&revisions);
            async move {
                let release = ctx.fixture::<HelmReleaseFixture>().await?;
                let status = release.status().await?;
                ensure!(status.info.status == "deployed", "{status:?}");
                revisions.lock().unwrap().push(status.version);
                Ok(())
            }
        }));
    }
    // HAMi's leftovers on nodes, as its scheduler and plugins write them.
    let nodes: Api<Node> = Api::all(client.clone());
    for node in ["node-0", "gpu-node-0"] {
        let patch = serde_json::json!({"metadata": {"annotations": {
            "hami.io/mutex.lock": "2026-11-25T10:00:00Z,default,p",
            "hami.io/node-handshake": "Requesting_2026-11-25 10:00:00",
            "hami.io/node-nvidia-register": "[]",
            "example.com/keep": "yes",
        }}});
        nodes
            .patch(node, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let mut config = RunConfig::default();
    config.human_output = false;
    config.retries = 0;
    config.artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hami-e2e-helm-test-{}", std::process::id()));
    let conclusion = runner.run(config).await.unwrap();
    let summary = conclusion.summary().unwrap();
    assert!(summary.run_errors.is_empty(), "{:?}", summary.run_errors);
    assert_eq!(
        (summary.passed(), summary.failed()),
        (3, 1),
        "{:#?}",
        summary.scenarios
    );
    // The failed scenario carries the release's state.
    let failed = summary
        .scenarios
        .iter()
        .find(|s| s.scenario == "uses::and-fails")
        .unwrap();
    let attached = failed
        .attachments
        .iter()
        .find(|a| a.title == "helm release fixture")
        .expect("attached");
    assert!(
        attached
            .text
            .starts_with("release fixture in fixture-system: revision 1 deployed"),
        "{}",
        attached.text
    );
    let dir = failed.artifacts.clone().expect("artifacts");
    let manifest = std::fs::read_to_string(dir.join("helm-fixture-manifest.yaml")).unwrap();
    assert!(manifest.contains("kind: Deployment"), "{manifest}");
    let values = std::fs::read_to_string(dir.join("helm-fixture-values.json")).unwrap();
    assert!(values.contains("\"replicas\":1"), "{values}");
    assert_eq!(*revisions.lock().unwrap(), [1, 1, 1], "installed once");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces
            .get_opt("fixture-system")
            .await
            .unwrap()
            .is_none()
    );
    let annotations = |n: Node| n.metadata.annotations.unwrap_or_default();
    let plain = annotations(nodes.get("node-0").await.unwrap());
    assert!(!plain.contains_key("hami.io/mutex.lock"), "{plain:?}");
    assert!(!plain.contains_key("hami.io/node-handshake"), "{plain:?}");
    assert!(
        !plain.contains_key("hami.io/node-nvidia-register"),
        "{plain:?}"
    );
    assert_eq!(plain["example.com/keep"], "yes");
    let fake = annotations(nodes.get("gpu-node-0").await.unwrap());
    assert!(!fake.contains_key("hami.io/mutex.lock"), "{fake:?}");
    assert_eq!(
        fake["hami.io/node-nvidia-register"], "[]",
        "the fake device agent's register stays"
    );
    local.stop().await.unwrap();
}
