//! HAMi's real chart, installed with the typed values onto the local cluster, upgraded,
//! rolled back and uninstalled with the real `helm`. HAMi's pods "run" there as KWOK makes
//! every pod run (no HAMi process starts): this checks the chart and our values against
//! each other and the release's life cycle, not HAMi's behaviour (the HAMi scenarios do
//! that with the host-process HAMi).
//!
//! Needs the chart: `HAMI_E2E_HAMI_CHART=<HAMi checkout>/charts/hami` (a folder or a
//! `.tgz`), so it is ignored by default; `cargo test -p hami-e2e-helm --test real_chart --
//! --include-ignored` runs it, and fails naming the variable when it is unset.

use std::path::PathBuf;
use std::time::Duration;

use hami_e2e_helm::{Chart, HamiValues, HelmRelease, SchedulerPolicy};
use hami_e2e_k8s::local::bincache::BinaryCache;
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;

const WAIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs HAMi's chart (HAMI_E2E_HAMI_CHART); run with --include-ignored"]
async fn hamis_chart_installs_upgrades_rolls_back_and_uninstalls() {
    let chart = std::env::var_os("HAMI_E2E_HAMI_CHART")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .expect(
            "HAMI_E2E_HAMI_CHART names no chart: set it to HAMi's charts/hami (a folder or a .tgz)",
        );
    let chart = if chart.extension().is_some_and(|e| e == "tgz") {
        Chart::package(chart)
    } else {
        Chart::dir(chart)
    };
    let helm = hami_e2e_helm::binaries::helm(&BinaryCache::default())
        .await
        .expect("helm is found or built")
        .path;
    let local = LocalCluster::start(LocalClusterOptions::default().node(NodeSpec::new("node-0")))
        .await
        .unwrap();
    let client = local.client();
    let release =
        HelmRelease::new(&helm, local.kubeconfig(), "hami", "hami-system", chart).timeout(WAIT);

    let mut values = HamiValues::default();
    values.gpu_scheduler_policy = Some(SchedulerPolicy::Spread);
    let installed = release
        .install(&values.to_values("2.10.0").unwrap())
        .await
        .expect("HAMi's chart installs with our values");
    assert_eq!(installed.info.status, "deployed");
    release
        .wait_ready(client.clone(), WAIT)
        .await
        .expect("ready");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "hami-system");
    let scheduler = deployments.get("hami-scheduler").await.unwrap();
    let args = scheduler.spec.template.spec.as_ref().unwrap().containers[1]
        .command
        .clone()
        .unwrap_or_default()
        .join(" ");
    assert!(args.contains("--gpu-scheduler-policy=spread"), "{args}");
    let config: Api<ConfigMap> = Api::namespaced(client.clone(), "hami-system");
    assert!(
        config
            .get("hami-scheduler-device")
            .await
            .unwrap()
            .data
            .unwrap()["device-config.yaml"]
            .contains("nvidia.com/gpu")
    );
    let found = hami_e2e_helm::installed::discover(&client).await.unwrap();
    assert!(
        found
            .describe()
            .contains("scheduler hami-system/hami-scheduler")
            && found.webhook.is_some(),
        "{}",
        found.describe()
    );

    values.gpu_scheduler_policy = Some(SchedulerPolicy::Binpack);
    let upgraded = release
        .upgrade(None, &values.to_values("2.10.0").unwrap(), false)
        .await
        .expect("upgrades");
    assert_eq!(upgraded.version, 2);
    release.wait_ready(client.clone(), WAIT).await.unwrap();
    let rolled = release.rollback(Some(1)).await.expect("rolls back");
    assert_eq!(rolled.version, 3);
    let args = deployments
        .get("hami-scheduler")
        .await
        .unwrap()
        .spec
        .template
        .spec
        .unwrap()
        .containers[1]
        .command
        .clone()
        .unwrap_or_default()
        .join(" ");
    assert!(args.contains("--gpu-scheduler-policy=spread"), "{args}");

    release
        .uninstall(client.clone(), WAIT)
        .await
        .expect("uninstalls");
    assert!(
        deployments
            .get_opt("hami-scheduler")
            .await
            .unwrap()
            .is_none()
    );
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    assert!(webhooks.get_opt("hami-webhook").await.unwrap().is_none());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt("hami-system").await.unwrap().is_none());
    local.stop().await.unwrap();
}
