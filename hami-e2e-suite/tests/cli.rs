//! `hami-e2e` used as an operator would: against a cluster started by hand (a local one,
//! reached only through its kubeconfig), `run`, `list` and `sweep`.

use std::collections::BTreeMap;
use std::process::Command;

use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

fn hami_e2e(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hami-e2e"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("HAMI_E2E_KUBECONFIG")
        .env("RUST_LOG", "warn")
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
    let local = LocalCluster::start(LocalClusterOptions::default().node(NodeSpec::new("node-0")))
        .await
        .expect("the local cluster starts");
    let kubeconfig = local.kubeconfig().display().to_string();

    let (code, out, err) = hami_e2e(&["list", "--format", "terse"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("cluster::nodes-ready: test"), "{out}");

    let (code, out, err) = hami_e2e(&[
        "run",
        "--kubeconfig",
        &kubeconfig,
        "--label-filter",
        "smoke",
    ]);
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
    assert!(out.contains("test result: ok."), "{out}");

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
