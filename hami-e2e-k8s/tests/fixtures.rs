//! The fixtures of hami-e2e-k8s driven by the real runner against a real local cluster:
//! isolated namespaces, cleanup after panics, watch-driven waits and their timeout
//! messages, apply (typed and YAML), exec and logs, diagnostics on failure, the keep
//! policy, the sweeper, capability discovery, and a wait that survives an API server
//! restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hami_e2e_core::{Failure, RunConfig, RunSummary, Runner, ensure, scenario};
use hami_e2e_k8s::local::{Component, LocalCluster, LocalClusterOptions, NodeSpec};
use hami_e2e_k8s::wait::{self, Verdict};
use hami_e2e_k8s::{
    Cluster, ClusterFixture, ClusterSource, DeploymentBuilder, Error, KeepNamespaces,
    NamespaceFixture, NamespaceOptions, PodBuilder, RUN_LABEL, SweepOptions, sweep,
};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodTemplateSpec};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(60);

fn cluster_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}
/// KWOK's chaos stage: pods with this label fail, with the annotations' reason and code.
const FAIL_LABEL: &str = "pod-container-running-failed.stage.kwok.x-k8s.io";

async fn local(host_exec: bool) -> LocalCluster {
    LocalCluster::start(
        LocalClusterOptions::default()
            .host_exec(host_exec)
            .node(NodeSpec::new("node-0").capacity("nvidia.com/gpu", "8"))
            .node(NodeSpec::new("node-1").capacity("nvidia.com/gpu", "8")),
    )
    .await
    .expect("the local cluster starts")
}

fn config(artifacts: &str) -> RunConfig {
    let mut config = RunConfig::default();
    config.human_output = false;
    config.retries = 0;
    config.parallel = 8;
    config.timeout = Duration::from_secs(120);
    // Failed scenarios' artifacts stay in the target folder (Cargo's temporary folder for
    // integration tests), not in the system's temp folder.
    config.artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "hami-e2e-k8s-test-{}-{artifacts}",
        std::process::id()
    ));
    config
}

fn runner(cluster: &LocalCluster, options: NamespaceOptions) -> Runner {
    Runner::new()
        .fixture(ClusterFixture::new(ClusterSource::kubeconfig(
            cluster.kubeconfig().to_path_buf(),
            None,
        )))
        .fixture(NamespaceFixture::new(options))
}

fn outcome<'a>(summary: &'a RunSummary, name: &str) -> &'a hami_e2e_core::ScenarioReport {
    summary
        .scenarios
        .iter()
        .find(|s| s.scenario == name)
        .unwrap_or_else(|| panic!("no scenario {name} in {:#?}", summary.scenarios))
}

fn message(summary: &RunSummary, name: &str) -> String {
    match &outcome(summary, name).outcome {
        hami_e2e_core::Outcome::Failed { message, .. } => message.clone(),
        other => format!("{other:?}"),
    }
}

async fn namespace_exists(client: &kube::Client, name: &str) -> bool {
    Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .expect("get namespace")
        .is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn scenarios_get_isolated_namespaces_waits_and_diagnostics() {
    let local = local(true).await;
    let client = local.client();
    let seen: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let local = Arc::new(local);

    let mut runner = runner(&local, NamespaceOptions::default());
    // Two scenarios at the same time, each writing the same ConfigMap name in its own
    // namespace: neither sees the other's.
    for side in ["a", "b"] {
        let seen = Arc::clone(&seen);
        let barrier = Arc::clone(&barrier);
        runner = runner.scenario(scenario(format!("isolation/{side}")).run(move |ctx| {
            let seen = Arc::clone(&seen);
            let barrier = Arc::clone(&barrier);
            async move {
                let ns = ctx.fixture::<NamespaceFixture>().await?;
                seen.lock()
                    .unwrap()
                    .insert(format!("isolation/{side}"), ns.name().to_string());
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some("shared-name".into()),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([("side".to_string(), side.to_string())])),
                    ..Default::default()
                };
                let applied = ns.apply(&cm).await?;
                let labels = applied.metadata.labels.unwrap_or_default();
                ensure!(labels.contains_key(RUN_LABEL), "no run label on {labels:?}");
                barrier.wait().await; // both namespaces exist and hold their ConfigMap
                let all = ns.api::<ConfigMap>().list(&ListParams::default()).await?;
                let mine: Vec<_> = all
                    .items
                    .iter()
                    .filter(|c| c.metadata.name.as_deref() == Some("shared-name"))
                    .collect();
                ensure!(
                    mine.len() == 1,
                    "{} ConfigMaps named shared-name",
                    mine.len()
                );
                ensure!(
                    mine[0].data.as_ref().unwrap()["side"] == side,
                    "saw the other side's ConfigMap in {}",
                    ns.name()
                );
                Ok(())
            }
        }));
    }
    let seen_panic = Arc::clone(&seen);
    let log = Arc::clone(&local);
    runner = runner
        .scenario(scenario("cleanup/after-panic").run(move |ctx| {
            let seen = Arc::clone(&seen_panic);
            async move {
                let ns = ctx.fixture::<NamespaceFixture>().await?;
                seen.lock().unwrap().insert("cleanup/after-panic".into(), ns.name().to_string());
                ns.apply(&PodBuilder::new("left-behind").build()).await?;
                panic!("the scenario panics with a pod in its namespace");
            }
        }))
        .scenario(scenario("wait/timeout-names-phase-and-event").run(|ctx| async move {
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            // More GPUs than any node has: the scheduler says so, in an event.
            ns.apply(&PodBuilder::new("too-big").limit("nvidia.com/gpu", "100").build())
                .await?;
            let pods = ns.api::<Pod>();
            let unschedulable = wait::pod_unschedulable(&pods, "too-big", WAIT).await?;
            ensure!(
                unschedulable.message.contains("Insufficient nvidia.com/gpu"),
                "condition: {}",
                unschedulable.message
            );
            ensure!(
                unschedulable.event.as_deref().is_some_and(|e| e.contains("Insufficient nvidia.com/gpu")),
                "event: {:?}",
                unschedulable.event
            );
            let err = wait::pod_running(&pods, "too-big", Duration::from_secs(2))
                .await
                .expect_err("the pod cannot run");
            let text = err.to_string();
            ensure!(matches!(err, Error::WaitTimeout { .. }), "{text}");
            ensure!(
                text.starts_with(&format!("timed out after 2.00s waiting for pod `too-big` in `{}` to be running; last observed: phase Pending", ns.name())),
                "{text}"
            );
            ensure!(
                text.contains("PodScheduled=False (Unschedulable") && text.contains("Warning FailedScheduling"),
                "{text}"
            );
            Ok(())
        }))
        .scenario(scenario("wait/pods-deployments-daemonsets").run(|ctx| async move {
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            let pods = ns.api::<Pod>();
            ns.apply(&PodBuilder::new("runs").limit("nvidia.com/gpu", "1").build()).await?;
            let pod = wait::pod_running(&pods, "runs", WAIT).await?;
            ensure!(pod.spec.unwrap().node_name.is_some(), "running without a node");

            let deployment = DeploymentBuilder::new("web", PodBuilder::new("x")).replicas(3).build();
            ns.apply(&deployment).await?;
            let deployments = ns.api::<Deployment>();
            let d = wait::deployment_available(&deployments, "web", WAIT).await?;
            ensure!(d.status.unwrap().available_replicas == Some(3), "not 3 available");
            ns.apply(&DeploymentBuilder::new("web", PodBuilder::new("x")).replicas(1).build()).await?;
            wait::deployment_available(&deployments, "web", WAIT).await?;

            let template = PodBuilder::new("x").label("app", "agent").build();
            let ds = DaemonSet {
                metadata: ObjectMeta { name: Some("agent".into()), ..Default::default() },
                spec: DaemonSetSpec {
                    selector: LabelSelector {
                        match_labels: Some(BTreeMap::from([("app".to_string(), "agent".to_string())])),
                        ..Default::default()
                    },
                    template: PodTemplateSpec {
                        metadata: Some(template.metadata),
                        spec: template.spec.map(|mut s| {
                            s.restart_policy = Some("Always".into());
                            s
                        }),
                    },
                    ..Default::default()
                },
                status: None,
            };
            ns.apply(&ds).await?;
            let ds = wait::daemonset_rolled_out(&ns.api::<DaemonSet>(), "agent", WAIT).await?;
            ensure!(ds.status.unwrap().number_available == Some(2), "not on both nodes");

            pods.delete("runs", &Default::default()).await?;
            wait::deleted(&pods, "runs", WAIT).await?;
            Ok(())
        }))
        .scenario(scenario("wait/failed-and-succeeded").run(|ctx| async move {
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            let pods = ns.api::<Pod>();
            ns.apply(
                &PodBuilder::new("oom")
                    .label(FAIL_LABEL, "true")
                    .annotation(format!("{FAIL_LABEL}/reason"), "OOMKilled")
                    .annotation(format!("{FAIL_LABEL}/message"), "out-of-memory")
                    .annotation(format!("{FAIL_LABEL}/exit-code"), "137")
                    .annotation(format!("{FAIL_LABEL}/delay"), "0")
                    .annotation(format!("{FAIL_LABEL}/jitter-delay"), "0")
                    .build(),
            )
            .await?;
            let failure = wait::pod_failed(&pods, "oom", WAIT).await?;
            ensure!(failure.reason.as_deref() == Some("OOMKilled"), "{failure:?}");
            let err = wait::pod_succeeded(&pods, "oom", WAIT).await.expect_err("it failed");
            ensure!(
                err.to_string() == format!("gave up waiting for pod `oom` in `{}` to succeed: the pod failed (OOMKilled: out-of-memory)", ns.name()),
                "{err}"
            );

            let job = Job {
                metadata: ObjectMeta { name: Some("once".into()), ..Default::default() },
                spec: Some(JobSpec {
                    template: {
                        let p = PodBuilder::new("x").build();
                        PodTemplateSpec { metadata: None, spec: p.spec }
                    },
                    ..Default::default()
                }),
                status: None,
            };
            ns.apply(&job).await?;
            let jobs = ns.api::<Job>();
            wait::until(&jobs, "once", "to complete", WAIT, |j: Option<&Job>| {
                j.and_then(|j| j.status.as_ref()).and_then(|s| s.succeeded) == Some(1)
            })
            .await?;
            let job_pods = pods.list(&ListParams::default().labels("job-name=once")).await?;
            let name = job_pods.items[0].metadata.name.clone().unwrap();
            wait::pod_succeeded(&pods, &name, WAIT).await?;
            Ok(())
        }))
        .scenario(scenario("apply/yaml-and-errors").run(|ctx| async move {
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            let applied = ns
                .apply_yaml(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\ndata:\n  k: v\n---\n\
                     apiVersion: v1\nkind: Service\nmetadata:\n  name: two\nspec:\n  ports:\n  - port: 80\n",
                )
                .await?;
            ensure!(applied.len() == 2, "{} applied", applied.len());
            let cm = ns.api::<ConfigMap>().get("one").await?;
            ensure!(cm.metadata.labels.unwrap_or_default().contains_key(RUN_LABEL), "unlabelled");

            let unknown = ns
                .apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: three\n---\napiVersion: example.com/v1\nkind: Nope\nmetadata:\n  name: x\n")
                .await
                .expect_err("unknown kind");
            ensure!(
                unknown.to_string() == "invalid YAML document 2 of inline YAML: the server does not serve kind `Nope` of `example.com/v1`",
                "{unknown}"
            );
            // The server's own message for an invalid object, not retried.
            let mut empty = PodBuilder::new("empty").build();
            empty.spec.as_mut().unwrap().containers.clear();
            let invalid = ns.apply(&empty).await.expect_err("no containers");
            ensure!(!invalid.is_transient(), "422 is not transient");
            let text = Failure::from(invalid).report();
            ensure!(text.starts_with(&format!("failed to apply pod/{}/empty", ns.name())), "{text}");
            ensure!(text.contains("spec.containers: Required value"), "{text}");
            Ok(())
        }))
        .scenario(scenario("exec/and-logs").run(move |ctx| {
            let log = Arc::clone(&log);
            async move {
                let ns = ctx.fixture::<NamespaceFixture>().await?;
                let pods = ns.api::<Pod>();
                ns.apply(&PodBuilder::new("shell").build()).await?;
                wait::pod_running(&pods, "shell", WAIT).await?;
                let out = hami_e2e_k8s::exec(
                    &pods,
                    "shell",
                    Some("main"),
                    ["sh", "-c", "echo out; echo err >&2; exit 3"],
                )
                .await?;
                ensure!(out.stdout == "out\n", "stdout {:?}", out.stdout);
                ensure!(out.stderr == "err\n", "stderr {:?}", out.stderr);
                ensure!(out.exit_code == 3, "exit code {}", out.exit_code);
                let ok = hami_e2e_k8s::exec(&pods, "shell", None, ["true"]).await?;
                ensure!(ok.exit_code == 0, "exit code {}", ok.exit_code);

                log.set_pod_logs(["line 1", "line 2"])?;
                let text = hami_e2e_k8s::logs(&pods, "shell", None, false, None).await?;
                ensure!(text == "line 1\nline 2\n", "logs {text:?}");
                let missing = hami_e2e_k8s::exec(&pods, "nope", None, ["true"]).await.expect_err("no pod");
                ensure!(
                    missing.to_string() == format!("failed to exec `true` in pod/{}/nope", ns.name()),
                    "{missing}"
                );
                Ok(())
            }
        }))
        .scenario(scenario("leak/left-behind").run(|ctx| async move {
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            ns.apply(&cluster_role("hami-e2e-test-leaked")).await?;
            let mut elsewhere = ConfigMap::default();
            elsewhere.metadata.name = Some("hami-e2e-test-leaked".into());
            elsewhere.metadata.namespace = Some("default".into());
            ns.apply(&elsewhere).await?;
            ns.apply(&ConfigMap {
                metadata: ObjectMeta { name: Some("inside".into()), ..Default::default() },
                ..Default::default()
            })
            .await?;
            Ok(())
        }))
        .scenario(scenario("leak/cleaned-up").run(|ctx| async move {
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            ns.apply(&cluster_role("hami-e2e-test-cleaned")).await?;
            let client = ns.client();
            ctx.defer("delete the ClusterRole", async move {
                Api::<ClusterRole>::all(client)
                    .delete("hami-e2e-test-cleaned", &Default::default())
                    .await?;
                Ok(())
            });
            Ok(())
        }))
        .scenario(scenario("diagnostics/on-failure").run(|ctx| async move {
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            ns.apply(&PodBuilder::new("too-big").limit("nvidia.com/gpu", "100").build()).await?;
            ns.apply(&PodBuilder::new("runs").build()).await?;
            let pods = ns.api::<Pod>();
            wait::pod_unschedulable(&pods, "too-big", WAIT).await?;
            wait::pod_running(&pods, "runs", WAIT).await?;
            Err(Failure::assertion("failing on purpose to collect diagnostics"))
        }));

    let conclusion = runner.run(config("main")).await.expect("the run runs");
    let summary = conclusion.summary().expect("a summary");

    for name in [
        "isolation::a",
        "isolation::b",
        "wait::timeout-names-phase-and-event",
        "wait::pods-deployments-daemonsets",
        "wait::failed-and-succeeded",
        "apply::yaml-and-errors",
        "exec::and-logs",
    ] {
        assert!(
            outcome(summary, name).outcome.is_passed(),
            "{name}: {}",
            message(summary, name)
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert_ne!(seen["isolation/a"], seen["isolation/b"]);
    // Every namespace is gone, also the one of the panicking scenario.
    let panicked = outcome(summary, "cleanup::after-panic");
    assert!(
        message(summary, "cleanup::after-panic").contains("the scenario panics"),
        "{:?}",
        panicked.outcome
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in seen.values() {
        wait::deleted(&namespaces, ns, WAIT).await.expect("deleted");
    }

    // What a scenario leaves outside its namespace fails it, listed; what it cleans up does not.
    assert!(
        outcome(summary, "leak::cleaned-up").outcome.is_passed(),
        "{}",
        message(summary, "leak::cleaned-up")
    );
    let leaked = message(summary, "leak::left-behind");
    assert!(
        leaked.ends_with("left behind after teardown, labelled for this scenario: clusterrole/hami-e2e-test-leaked, configmap/default/hami-e2e-test-leaked"),
        "{leaked}"
    );
    Api::<ClusterRole>::all(client.clone())
        .delete("hami-e2e-test-leaked", &Default::default())
        .await
        .unwrap();

    // The failing scenario's report carries its diagnostics, and its artifacts the files.
    let failed = outcome(summary, "diagnostics::on-failure");
    assert!(!failed.outcome.is_passed());
    let diag = failed
        .attachments
        .iter()
        .find(|a| a.title.starts_with("diagnostics of namespace"))
        .expect("diagnostics attached");
    assert!(
        diag.text.contains("too-big: phase Pending"),
        "{}",
        diag.text
    );
    assert!(
        diag.text.contains("runs: phase Running on `node-"),
        "{}",
        diag.text
    );
    assert!(
        diag.text.contains("Warning FailedScheduling"),
        "{}",
        diag.text
    );
    assert!(diag.text.contains("node-"), "{}", diag.text);
    let dir: PathBuf = failed.artifacts.clone().expect("an artifacts folder");
    let events = std::fs::read_to_string(dir.join("events.txt")).unwrap();
    assert!(
        events.contains("pod too-big: Warning FailedScheduling"),
        "{events}"
    );
    let nodes = std::fs::read_to_string(dir.join("nodes.txt")).unwrap();
    assert!(nodes.contains("nvidia.com/gpu=8"), "{nodes}");
    assert!(dir.join("logs/runs.main.log").is_file());
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_scenarios_keep_their_namespace_on_request() {
    let local = local(false).await;
    let client = local.client();
    let names: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut runner = runner(
        &local,
        NamespaceOptions::default().keep(KeepNamespaces::OnFailure),
    );
    for (name, fail) in [("keep/fails", true), ("keep/passes", false)] {
        let names = Arc::clone(&names);
        runner = runner.scenario(scenario(name).run(move |ctx| {
            let names = Arc::clone(&names);
            async move {
                let ns = ctx.fixture::<NamespaceFixture>().await?;
                names.lock().unwrap().insert(name.into(), ns.name().into());
                ensure!(!fail, "failing on purpose");
                Ok(())
            }
        }));
    }
    let conclusion = runner.run(config("keep")).await.unwrap();
    let summary = conclusion.summary().unwrap();
    let names = names.lock().unwrap().clone();
    assert!(namespace_exists(&client, &names["keep/fails"]).await);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait::deleted(&namespaces, &names["keep/passes"], WAIT)
        .await
        .expect("deleted");
    let kept = outcome(summary, "keep::fails")
        .attachments
        .iter()
        .find(|a| a.title == "kept namespace")
        .expect("the kept namespace is reported");
    assert!(
        kept.text.contains(&format!(
            "kubectl -n {} get all,events",
            names["keep/fails"]
        )),
        "{}",
        kept.text
    );
    assert!(
        kept.text.ends_with("re-run this scenario:\n  cargo test -p hami-e2e-k8s --test fixtures -- --exact 'keep::fails'"),
        "{}",
        kept.text
    );
    // The sweeper spares it until its expiry, then removes it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let kept_ns = namespaces.get(&names["keep/fails"]).await.unwrap();
    let until = kept_ns.metadata.annotations.unwrap()[hami_e2e_k8s::KEPT_UNTIL_ANNOTATION].clone();
    assert!(kept.text.contains(&until), "{}", kept.text);
    let sweep_all = SweepOptions::default().older_than(Duration::ZERO);
    assert!(sweep(&client, &sweep_all).await.unwrap().is_empty());
    let expired = serde_json::json!({"metadata": {"annotations": {hami_e2e_k8s::KEPT_UNTIL_ANNOTATION: "2026-01-01T00:00:00Z"}}});
    namespaces
        .patch(
            &names["keep/fails"],
            &PatchParams::default(),
            &Patch::Merge(&expired),
        )
        .await
        .unwrap();
    assert_eq!(
        sweep(&client, &sweep_all).await.unwrap(),
        [names["keep/fails"].clone()]
    );
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_removes_leftovers_only() {
    let local = local(false).await;
    let client = local.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let make = |name: &str, run: Option<&str>| {
        let mut labels = BTreeMap::new();
        if let Some(run) = run {
            labels.insert(RUN_LABEL.to_string(), run.to_string());
            labels.insert(
                "app.kubernetes.io/managed-by".to_string(),
                "hami-e2e".to_string(),
            );
        }
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        }
    };
    for (name, run) in [
        ("leftover", Some("crashed-run")),
        ("current", Some("this-run")),
        ("foreign", None),
    ] {
        namespaces
            .create(&PostParams::default(), &make(name, run))
            .await
            .unwrap();
    }
    // Too young: nothing is swept.
    let young = sweep(&client, &SweepOptions::default().except_run("this-run"))
        .await
        .unwrap();
    assert!(young.is_empty(), "{young:?}");
    let swept = sweep(
        &client,
        &SweepOptions::default()
            .older_than(Duration::ZERO)
            .except_run("this-run"),
    )
    .await
    .unwrap();
    assert_eq!(swept, ["leftover"]);
    wait::deleted(&namespaces, "leftover", WAIT).await.unwrap();
    assert!(namespace_exists(&client, "current").await);
    assert!(namespace_exists(&client, "foreign").await);
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_reports_version_nodes_and_groups() {
    let local = local(false).await;
    let cluster = Cluster::connect(ClusterSource::kubeconfig(
        local.kubeconfig().to_path_buf(),
        None,
    ))
    .await
    .unwrap();
    let info = cluster.discover().await.unwrap();
    assert_eq!(info.version, local.version());
    assert_eq!(info.nodes.len(), 2);
    assert!(info.nodes.iter().all(|n| n.ready));
    assert!(info.api_groups.contains("apps/v1") && info.api_groups.contains("v1"));
    let caps = info.capabilities();
    assert_eq!(caps.quantity("nvidia.com/gpu per node"), 8);
    assert_eq!(caps.quantity("nvidia.com/gpu total"), 16);
    assert_eq!(caps.quantity("ready nodes"), 2);
    assert!(caps.flags.contains("api:batch/v1"));
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_survives_an_api_server_restart() {
    let local = Arc::new(local(false).await);
    let client = local.client();
    let namespace: Arc<Mutex<Option<String>>> = Arc::default();
    let (ns_slot, cluster) = (Arc::clone(&namespace), Arc::clone(&local));
    // This time the scenario waits until its namespace is gone.
    let options = NamespaceOptions::default().wait_for_deletion(Some(WAIT));
    let runner =
        runner(&local, options).scenario(scenario("fault/apiserver-restart").run(move |ctx| {
            let ns_slot = Arc::clone(&ns_slot);
            let cluster = Arc::clone(&cluster);
            async move {
                let ns = ctx.fixture::<NamespaceFixture>().await?;
                *ns_slot.lock().unwrap() = Some(ns.name().to_string());
                ns.apply(&PodBuilder::new("p").limit("nvidia.com/gpu", "100").build())
                    .await?;
                let pods = ns.api::<Pod>();
                // Waits for an annotation that is set only after the restart.
                let waiting = tokio::spawn({
                    let pods = pods.clone();
                    async move {
                        wait::until_verdict(
                            &pods,
                            "p",
                            "to be released",
                            WAIT,
                            wait::verdict(|p: Option<&Pod>| {
                                let go = p
                                    .and_then(|p| p.metadata.annotations.as_ref())
                                    .is_some_and(|a| a.contains_key("go"));
                                if go { Verdict::Met } else { Verdict::Pending }
                            }),
                        )
                        .await
                    }
                });
                tokio::time::sleep(Duration::from_millis(500)).await; // the watch is established
                cluster.restart(Component::ApiServer).await?;
                ensure!(!waiting.is_finished(), "the wait ended with the API server");
                let patch = serde_json::json!({"metadata": {"annotations": {"go": "now"}}});
                hami_e2e_k8s::retry_transient("annotate the pod", || async {
                    pods.patch("p", &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|source| Error::Api {
                            action: "patch",
                            object: "pod/p".into(),
                            source,
                        })
                })
                .await?;
                let released = waiting.await.map_err(|e| Failure::msg(e.to_string()))??;
                ensure!(released.is_some(), "the pod vanished");
                Ok(())
            }
        }));
    let conclusion = runner.run(config("restart")).await.unwrap();
    let summary = conclusion.summary().unwrap();
    assert!(
        summary.scenarios[0].outcome.is_passed(),
        "{}",
        message(summary, "fault::apiserver-restart")
    );
    let ns = namespace.lock().unwrap().clone().expect("the scenario ran");
    assert!(!namespace_exists(&client, &ns).await, "{ns} left behind");
    local.stop().await.unwrap();
}

/// A scenario that held devices: when its teardown ends (and admission hands the devices on)
/// its pods are gone already, while its namespace may still be terminating (without the
/// teardown's `delete_pods` the pod is still there, seconds before the namespace goes).
#[tokio::test(flavor = "multi_thread")]
async fn the_pods_of_a_scenario_holding_devices_are_gone_when_it_ends() {
    use hami_e2e_core::{Capabilities, Demand, PoolDevice};
    let local = local(false).await;
    let client = local.client();
    let namespaces: Arc<Mutex<BTreeMap<String, String>>> = Default::default();
    let body = |namespaces: Arc<Mutex<BTreeMap<String, String>>>| {
        move |ctx: hami_e2e_core::Context| {
            let namespaces = Arc::clone(&namespaces);
            async move {
                let ns = ctx.fixture::<NamespaceFixture>().await?;
                namespaces
                    .lock()
                    .unwrap()
                    .insert(ctx.name().to_string(), ns.name().to_string());
                let pod = PodBuilder::new("p")
                    .command(["sleep", "3600"])
                    .limit("nvidia.com/gpu", "1")
                    .build();
                ns.apply(&pod).await?;
                wait::pod_running(&ns.api(), "p", WAIT).await?;
                Ok(())
            }
        }
    };
    let runner = runner(&local, NamespaceOptions::default())
        .probe(|_ctx| async {
            Ok(Capabilities::default().with_device(PoolDevice::new("nvidia", "node-0", "g0", 1)))
        })
        .scenario(
            scenario("devices/holds")
                .demand(Demand::devices("nvidia", 1).exclusive())
                .run(body(Arc::clone(&namespaces))),
        );
    let conclusion = runner.run(config("device-pods")).await.unwrap();
    let summary = conclusion.summary().unwrap();
    assert_eq!(summary.passed(), 1, "{:#?}", summary.scenarios);
    let namespaces = namespaces.lock().unwrap().clone();
    let pod_in = |scenario: &str| {
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespaces[scenario]);
        async move { api.get_opt("p").await.unwrap() }
    };
    assert!(
        pod_in("devices::holds").await.is_none(),
        "the pod holding a device outlived its scenario"
    );
    local.stop().await.unwrap();
}
