//! Cleanup that survives `kill -9`: a run is killed in the middle of a scenario against a
//! cluster started by hand; the next run's reaper deletes the dead run's namespace and
//! cluster-scoped object and undoes its changes to a node once its lease has expired, and
//! leaves a foreign namespace and a foreign node label alone.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hami_e2e_core::{RunConfig, Runner, scenario};
use hami_e2e_k8s::ledger::{LEASE_NAMESPACE, ReapReport, reap};
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
use hami_e2e_k8s::node_changes::RECORD_ANNOTATION_PREFIX;
use hami_e2e_k8s::{
    ClusterFixture, ClusterSource, NamespaceFixture, NamespaceOptions, NodeChangesFixture, wait,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};

/// The annotation the killed run adds to the node.
const ADDED: &str = "hami-e2e.test/added-by-killed-run";

/// Kills the child when the test ends early (a failed assertion), so it never outlives it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The run that gets killed: this test binary again, running only `killed_run` (below).
fn start_killed_run(kubeconfig: &std::path::Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args([
            "--ignored",
            "--exact",
            "killed_run",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("HAMI_E2E_KILLED_RUN_KUBECONFIG", kubeconfig);
    command
}

/// Not a test on its own: the run `a_killed_runs_leftovers_are_reaped_by_the_next_run`
/// starts in a process of its own and kills. With a 3-second run lease, its scenario creates
/// its namespace and a cluster-scoped object, overwrites label `pool` of node `node-0` and
/// adds an annotation to it, prints `READY <namespace>`, and sleeps.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "started by a_killed_runs_leftovers_are_reaped_by_the_next_run, which kills it"]
async fn killed_run() {
    let kubeconfig = std::env::var_os("HAMI_E2E_KILLED_RUN_KUBECONFIG")
        .expect("HAMI_E2E_KILLED_RUN_KUBECONFIG names the cluster");
    let mut config = RunConfig::default();
    config.human_output = false;
    let _ = Runner::new()
        .fixture(
            ClusterFixture::new(ClusterSource::Kubeconfig {
                path: kubeconfig.into(),
                context: None,
            })
            .lease(Some(Duration::from_secs(3))),
        )
        .fixture(NamespaceFixture::new(NamespaceOptions::default()))
        .fixture(NodeChangesFixture)
        .scenario(scenario("ledger/killed-midway").run(|ctx| async move {
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            let mut role = ClusterRole::default();
            role.metadata.name = Some(format!("{}-role", ns.name()));
            ns.apply(&role).await?;
            let nodes = ctx.fixture::<NodeChangesFixture>().await?;
            nodes.set_label("node-0", "pool", Some("red")).await?;
            nodes.set_annotation("node-0", ADDED, Some("yes")).await?;
            println!("READY {}", ns.name());
            std::io::stdout().flush()?;
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        }))
        .run(config)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_runs_leftovers_are_reaped_by_the_next_run() {
    let local = LocalCluster::start(
        LocalClusterOptions::default().node(NodeSpec::new("node-0").label("pool", "blue")),
    )
    .await
    .expect("the local cluster starts");
    let client = local.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let foreign = Namespace {
        metadata: ObjectMeta {
            name: Some("team-a".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let mut victim = KillOnDrop(
        start_killed_run(local.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the test binary runs again"),
    );
    let mut ns = None;
    for line in BufReader::new(victim.0.stdout.take().unwrap()).lines() {
        // libtest prints `test killed_run ... ` first, on the same line.
        let line = line.unwrap();
        if let Some((_, name)) = line.split_once("READY ") {
            ns = Some(name.trim().to_string());
            break;
        }
    }
    let ns = ns.expect("the run got going");
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let held = leases.list(&Default::default()).await.unwrap().items;
    assert_eq!(held.len(), 1, "the run holds its lease");
    // SIGKILL: no teardown, no signal handler, nothing runs.
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    assert!(
        namespaces.get_opt(&ns).await.unwrap().is_some(),
        "left behind"
    );
    let node = nodes.get("node-0").await.unwrap();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(labels["pool"], "red", "changed by the killed run");
    assert_eq!(annotations[ADDED], "yes", "added by the killed run");
    let records: Vec<&String> = annotations
        .keys()
        .filter(|k| k.starts_with(RECORD_ANNOTATION_PREFIX))
        .collect();
    assert_eq!(records.len(), 1, "the killed run's record: {annotations:?}");
    // Someone else labels the node meanwhile: not ours, it stays.
    let foreign_label = serde_json::json!({"metadata": {"labels": {"team": "a"}}});
    nodes
        .patch(
            "node-0",
            &PatchParams::default(),
            &Patch::Merge(&foreign_label),
        )
        .await
        .unwrap();

    // While the lease is valid, the run counts as alive: nothing is reaped.
    let early = reap(&client).await.unwrap();
    assert!(early.dead_runs.is_empty(), "{early:?}");
    // The 3-second lease expires: nothing renews it any more.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let reaped: Arc<Mutex<Option<ReapReport>>> = Arc::default();
    let seen = Arc::clone(&reaped);
    let runner = Runner::new()
        .fixture(ClusterFixture::new(ClusterSource::Kubeconfig {
            path: local.kubeconfig().to_path_buf(),
            context: None,
        }))
        .scenario(scenario("ledger/next-run").run(move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                let cluster = ctx.fixture::<ClusterFixture>().await?;
                *seen.lock().unwrap() = cluster.reaped().cloned();
                Ok(())
            }
        }));
    let mut config = RunConfig::default();
    config.human_output = false;
    let conclusion = runner.run(config).await.unwrap();
    assert!(conclusion.success(), "{:?}", conclusion.summary());
    let report = reaped
        .lock()
        .unwrap()
        .clone()
        .expect("the next run's reaper ran");
    assert_eq!(report.dead_runs.len(), 1, "{report:?}");
    assert_eq!(
        report.restored,
        [format!("node/node-0: label pool, annotation {ADDED}")],
        "{report:?}"
    );
    assert!(
        report.deleted.contains(&format!("namespace/{ns}")),
        "{report:?}"
    );

    let node = nodes.get("node-0").await.unwrap();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(labels["pool"], "blue", "the old label value is back");
    assert_eq!(labels["team"], "a", "a foreign label stays");
    assert!(!annotations.contains_key(ADDED), "{annotations:?}");
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with(RECORD_ANNOTATION_PREFIX)),
        "the record is gone: {annotations:?}"
    );

    wait::deleted(&namespaces, &ns, Duration::from_secs(60))
        .await
        .expect("the dead run's namespace is reaped");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles
            .get_opt(&format!("{ns}-role"))
            .await
            .unwrap()
            .is_none(),
        "its ClusterRole is reaped"
    );
    assert!(
        namespaces.get_opt("team-a").await.unwrap().is_some(),
        "a foreign namespace stays"
    );
    assert!(
        leases
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "both leases are gone"
    );
    local.stop().await.unwrap();
}
