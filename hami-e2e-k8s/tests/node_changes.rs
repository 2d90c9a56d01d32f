//! Changes to nodes the run did not create, on a real local cluster: recorded on the node
//! before they are made, undone exactly (pre-existing values back, new keys gone, record
//! gone), by hand, by the scenario-scoped fixture after a failure or a panic, and by the
//! sweeper for runs whose lease expired or is gone; malformed records fail with the node
//! and the annotation.

use std::collections::BTreeMap;
use std::time::Duration;

use hami_e2e_core::{Failure, RunConfig, Runner, scenario};
use hami_e2e_k8s::cleanup::node_changes::{ChangeRecord, record_annotation};
use hami_e2e_k8s::cleanup::run_lease::RunLease;
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
use hami_e2e_k8s::{
    ClusterFixture, ClusterSource, Error, NodeChanges, NodeChangesFixture, SweepOptions, sweep,
    wait,
};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};

type Maps = (BTreeMap<String, String>, BTreeMap<String, String>);

/// A node's labels and annotations.
async fn maps(nodes: &Api<Node>, name: &str) -> Maps {
    let node = nodes.get(name).await.expect("the node exists");
    (
        node.metadata.labels.unwrap_or_default(),
        node.metadata.annotations.unwrap_or_default(),
    )
}

/// A node's labels and annotations once the controller-manager has added its own (the
/// `beta.kubernetes.io/*` labels, a moment after the node is created), so that they change
/// only by what the test does.
async fn settled(nodes: &Api<Node>, name: &str) -> Maps {
    wait::until(
        nodes,
        name,
        "to get its beta labels",
        Duration::from_secs(60),
        |n: Option<&Node>| {
            n.and_then(|n| n.metadata.labels.as_ref()).is_some_and(|l| {
                l.contains_key("beta.kubernetes.io/os") && l.contains_key("beta.kubernetes.io/arch")
            })
        },
    )
    .await
    .expect("the node settles");
    maps(nodes, name).await
}

async fn node(nodes: &Api<Node>, name: &str) -> Node {
    nodes.get(name).await.expect("the node exists")
}

async fn annotate(nodes: &Api<Node>, name: &str, key: &str, value: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotated");
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_are_recorded_and_undone_exactly() {
    let local = LocalCluster::start(
        LocalClusterOptions::default()
            .node(
                NodeSpec::new("node-0")
                    .label("pool", "blue")
                    .label("tier", "gold")
                    .annotation("note", "original"),
            )
            .node(NodeSpec::new("node-1")),
    )
    .await
    .expect("the local cluster starts");
    let client = local.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let before = settled(&nodes, "node-0").await;

    let a = NodeChanges::new(&client, "run-a", "node-changes::exact");
    a.set_label("node-0", "pool", Some("green")).await.unwrap();
    a.set_label("node-0", "fresh", Some("x")).await.unwrap();
    a.set_label("node-0", "tier", None).await.unwrap();
    a.set_annotation("node-0", "note", Some("changed"))
        .await
        .unwrap();
    a.set_annotation("node-0", "hami-e2e.test/added", Some("y"))
        .await
        .unwrap();
    // A second change of the same key keeps the first original.
    a.set_label("node-0", "pool", Some("purple")).await.unwrap();

    let (labels, annotations) = maps(&nodes, "node-0").await;
    assert_eq!(labels["pool"], "purple");
    assert_eq!(labels["fresh"], "x");
    assert!(!labels.contains_key("tier"));
    assert_eq!(annotations["note"], "changed");
    assert_eq!(annotations["hami-e2e.test/added"], "y");
    let raw: serde_json::Value =
        serde_json::from_str(&annotations["hami-e2e.io/changes.run-a"]).expect("JSON");
    assert_eq!(raw["run"], "run-a");
    assert_eq!(
        raw["labels"],
        serde_json::json!({
            "pool": {"scenario": "node-changes-exact", "value": "blue"},
            "fresh": {"scenario": "node-changes-exact", "value": null},
            "tier": {"scenario": "node-changes-exact", "value": "gold"},
        })
    );
    assert_eq!(
        raw["annotations"],
        serde_json::json!({
            "note": {"scenario": "node-changes-exact", "value": "original"},
            "hami-e2e.test/added": {"scenario": "node-changes-exact", "value": null},
        })
    );
    let record_a = ChangeRecord::of_run(&node(&nodes, "node-0").await, "run-a")
        .unwrap()
        .expect("run a's record");

    // A second run changing the same key keeps a record of its own.
    let b = NodeChanges::new(&client, "run-b", "node-changes::other-run");
    b.set_label("node-0", "pool", Some("orange")).await.unwrap();
    let n = node(&nodes, "node-0").await;
    let record_b = ChangeRecord::of_run(&n, "run-b")
        .unwrap()
        .expect("run b's record");
    assert_eq!(record_b.labels["pool"].value.as_deref(), Some("purple"));
    assert_eq!(
        ChangeRecord::of_run(&n, "run-a").unwrap(),
        Some(record_a.clone())
    );
    assert_eq!(
        b.undo().await.unwrap(),
        ["node/node-0: label pool".to_string()]
    );
    let n = node(&nodes, "node-0").await;
    assert_eq!(n.metadata.labels.as_ref().unwrap()["pool"], "purple");
    assert_eq!(ChangeRecord::of_run(&n, "run-b").unwrap(), None);
    assert_eq!(ChangeRecord::of_run(&n, "run-a").unwrap(), Some(record_a));

    // Undo: exactly as before, record gone.
    assert_eq!(
        a.undo().await.unwrap(),
        ["node/node-0: label fresh, label pool, label tier, annotation hami-e2e.test/added, annotation note".to_string()]
    );
    let after = node(&nodes, "node-0").await;
    assert_eq!(
        (
            after.metadata.labels.clone().unwrap_or_default(),
            after.metadata.annotations.clone().unwrap_or_default()
        ),
        before
    );
    // Idempotent: nothing more to do, nothing patched.
    assert!(a.undo().await.unwrap().is_empty());
    assert!(a.undo_all().await.unwrap().is_empty());
    assert_eq!(
        node(&nodes, "node-0").await.metadata.resource_version,
        after.metadata.resource_version
    );

    // Parallel scenarios of one run share its record: concurrent changes lose no entry (the
    // patches' resourceVersion precondition makes the losers read the record again).
    let parallel: Vec<NodeChanges> = (0..8)
        .map(|i| NodeChanges::new(&client, "run-p", &format!("parallel::s{i}")))
        .collect();
    let sets = parallel.iter().enumerate().map(|(i, c)| async move {
        c.set_label("node-0", &format!("hami-e2e.test/p{i}"), Some("1"))
            .await
    });
    for r in futures::future::join_all(sets).await {
        r.unwrap();
    }
    let record = ChangeRecord::of_run(&node(&nodes, "node-0").await, "run-p")
        .unwrap()
        .expect("run p's record");
    assert_eq!(record.labels.len(), 8, "{record:?}");
    let undos = parallel.iter().map(|c| c.undo());
    for r in futures::future::join_all(undos).await {
        assert_eq!(r.unwrap().len(), 1);
    }
    assert_eq!(maps(&nodes, "node-0").await, before, "all undone");

    // A node that is gone is fine.
    a.set_label("node-1", "doomed", Some("yes")).await.unwrap();
    local.remove_node("node-1").await.unwrap();
    wait::deleted(&nodes, "node-1", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(a.undo().await.unwrap().is_empty());

    // Errors name the node and the key, or the node and the annotation.
    let e = a
        .set_label("node-9", "pool", Some("x"))
        .await
        .expect_err("no such node");
    let message = Failure::from(e).report();
    assert!(
        message.contains("node/node-9") && message.contains("`pool`") && message.contains("404"),
        "{message}"
    );
    let e = a
        .set_annotation("node-0", "hami-e2e.io/changes.run-a", Some("{}"))
        .await
        .expect_err("our own records are not for changing");
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    let e = a
        .set_label("node-0", "bad key!", Some("x"))
        .await
        .expect_err("an invalid label key");
    let message = Failure::from(e).report();
    assert!(
        message.contains("node/node-0") && message.contains("`bad key!`"),
        "{message}"
    );
    assert_eq!(
        maps(&nodes, "node-0").await,
        before,
        "a refused change leaves nothing"
    );

    let c = NodeChanges::new(&client, "run-c", "node-changes::malformed");
    annotate(&nodes, "node-0", &record_annotation("run-c"), "{not json").await;
    for e in [
        c.set_label("node-0", "pool", Some("red"))
            .await
            .unwrap_err(),
        c.undo_all().await.unwrap_err(),
        sweep(&client, &SweepOptions::default().older_than(Duration::ZERO))
            .await
            .unwrap_err(),
    ] {
        let message = e.to_string();
        assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
        assert!(
            message.contains("node/node-0") && message.contains("hami-e2e.io/changes.run-c"),
            "{message}"
        );
    }
    assert_eq!(
        maps(&nodes, "node-0").await.0["pool"],
        "blue",
        "nothing changed"
    );
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fixture_and_the_sweeper_undo_what_scenarios_changed() {
    let local = LocalCluster::start(
        LocalClusterOptions::default()
            .node(NodeSpec::new("node-0").label("pool", "blue"))
            .node(NodeSpec::new("node-1").label("pool", "blue")),
    )
    .await
    .expect("the local cluster starts");
    let client = local.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let before = settled(&nodes, "node-0").await;

    // The fixture's teardown undoes a failed and a panicking scenario's changes.
    let runner = Runner::new()
        .fixture(ClusterFixture::new(ClusterSource::kubeconfig(
            local.kubeconfig().to_path_buf(),
            None,
        )))
        .fixture(NodeChangesFixture)
        .scenario(scenario("fixture/fails").run(|ctx| async move {
            let nodes = ctx.fixture::<NodeChangesFixture>().await?;
            nodes.set_label("node-0", "pool", Some("red")).await?;
            nodes
                .set_annotation("node-0", "hami-e2e.test/fails", Some("1"))
                .await?;
            Err(Failure::msg("fails on purpose"))
        }))
        .scenario(scenario("fixture/panics").run(|ctx| async move {
            let nodes = ctx.fixture::<NodeChangesFixture>().await?;
            nodes
                .set_label("node-0", "hami-e2e.test/panics", Some("1"))
                .await?;
            panic!("panics on purpose");
        }));
    let mut config = RunConfig::default();
    config.human_output = false;
    config.retries = 0;
    config.artifacts =
        std::env::temp_dir().join(format!("hami-e2e-k8s-node-changes-{}", std::process::id()));
    let conclusion = runner.run(config).await.unwrap();
    let summary = conclusion.summary().expect("a summary");
    assert_eq!(summary.failed(), 2, "{summary:#?}");
    for s in &summary.scenarios {
        assert!(
            matches!(s.outcome, hami_e2e_core::Outcome::Failed { reason, .. } if reason != hami_e2e_core::FailureReason::Teardown),
            "{s:#?}"
        );
    }
    assert_eq!(maps(&nodes, "node-0").await, before, "both undone");

    // The sweeper: a live run's and the current run's records stay; a run whose lease
    // expired is undone at once, one without a lease once its record is old enough.
    let live_lease = RunLease::acquire(&client, "live", Duration::from_secs(30))
        .await
        .unwrap();
    let expired_lease = RunLease::acquire(&client, "expired", Duration::from_secs(1))
        .await
        .unwrap();
    drop(expired_lease); // no longer renewed
    for run in ["live", "expired", "gone", "current"] {
        NodeChanges::new(&client, run, "sweep::records")
            .set_label("node-1", &format!("hami-e2e.test/{run}"), Some("1"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let labels = |m: Maps| {
        let mut runs: Vec<String> =
            m.0.keys()
                .filter_map(|k| k.strip_prefix("hami-e2e.test/").map(str::to_string))
                .collect();
        runs.sort();
        let records =
            m.1.keys()
                .filter(|k| k.starts_with("hami-e2e.io/changes."))
                .count();
        (runs, records)
    };
    let young = SweepOptions::default()
        .older_than(Duration::from_secs(3600))
        .except_run("current");
    assert!(sweep(&client, &young).await.unwrap().is_empty());
    assert_eq!(
        labels(maps(&nodes, "node-1").await),
        (vec!["current".into(), "gone".into(), "live".into()], 3)
    );
    let all = SweepOptions::default()
        .older_than(Duration::ZERO)
        .except_run("current");
    sweep(&client, &all).await.unwrap();
    assert_eq!(
        labels(maps(&nodes, "node-1").await),
        (vec!["current".into(), "live".into()], 2)
    );
    assert_eq!(maps(&nodes, "node-1").await.0["pool"], "blue");
    live_lease.release().await.unwrap();
    local.stop().await.unwrap();
}
