//! Cleanup that survives `kill -9`: a run is killed in the middle of a scenario against a
//! cluster started by hand; the next run, started at once, has its reaper delete the dead
//! run's namespace and cluster-scoped object and undo its changes to a node without waiting
//! for the dead run's lease to expire (its holder ran on this host and is gone), and leave a
//! foreign namespace and a foreign node label alone. A lease whose holder is gone is reaped
//! at once, with its webhook that failed every pod creation; leases held on other hosts are
//! judged by expiry only; and a run's lease looks again during the run, reaping runs whose
//! lease expires meanwhile but never its own run.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hami_e2e_core::admission::process_start_time;
use hami_e2e_core::{RunConfig, Runner, scenario};
use hami_e2e_k8s::cleanup::lease::{
    HOLDER_HOST_ANNOTATION, HOLDER_PID_ANNOTATION, HOLDER_PID_NAMESPACE_ANNOTATION,
    HOLDER_START_ANNOTATION, LEASE_NAMESPACE, is_expired, lease_name,
};
use hami_e2e_k8s::cleanup::node_changes::RECORD_ANNOTATION_PREFIX;
use hami_e2e_k8s::cleanup::reaper::{ReapReport, reap, reap_except};
use hami_e2e_k8s::cleanup::run_lease::RunLease;
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
use hami_e2e_k8s::{
    ClusterFixture, ClusterSource, MANAGED_BY, MANAGED_BY_LABEL, NamespaceFixture,
    NamespaceOptions, NodeChangesFixture, PodBuilder, RUN_LABEL, wait,
};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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
/// starts in a process of its own and kills. With a 10-minute run lease, its scenario creates
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
            ClusterFixture::new(ClusterSource::kubeconfig(kubeconfig, None))
                .lease(Some(Duration::from_secs(600))),
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
    // While the run lives, nothing is reaped.
    let early = reap(&client).await.unwrap();
    assert!(early.dead_runs.is_empty(), "{early:?}");
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

    // The next run starts at once: the dead run's lease is good for minutes more, but
    // its holder ran on this host and is gone.
    let lease = leases.get(held[0].metadata.name.as_deref().unwrap()).await;
    assert!(
        !is_expired(&lease.unwrap(), Timestamp::now()),
        "the dead run's lease has not expired"
    );

    let reaped: Arc<Mutex<Option<ReapReport>>> = Arc::default();
    let seen = Arc::clone(&reaped);
    let runner = Runner::new()
        .fixture(ClusterFixture::new(ClusterSource::kubeconfig(
            local.kubeconfig().to_path_buf(),
            None,
        )))
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

/// This machine's host name, read as the ledger documents it.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .expect("a host name")
        .trim()
        .to_string()
}

/// The labels of run `run`'s objects.
fn run_labels(run: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RUN_LABEL.to_string(), run.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ])
}

/// Writes run `run`'s lease as another process would: `annotations` and `identity` name the
/// holder, renewed at `renewed` for `seconds`.
async fn write_lease(
    client: &kube::Client,
    run: &str,
    annotations: BTreeMap<String, String>,
    identity: &str,
    renewed: Timestamp,
    seconds: i32,
) {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(run)),
            labels: Some(run_labels(run)),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_string()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE)
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_or_else(|e| panic!("lease of run {run}: {e}"));
}

/// The holder annotations naming `host`, `pid` and `start`.
fn holder(host: &str, pid: u32, start: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (HOLDER_HOST_ANNOTATION.to_string(), host.to_string()),
        (HOLDER_PID_ANNOTATION.to_string(), pid.to_string()),
        (HOLDER_START_ANNOTATION.to_string(), start.to_string()),
    ])
}

/// Creates namespace `name`, labelled as run `run`'s if given.
async fn namespace(client: &kube::Client, name: &str, run: Option<&str>) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: run.map(run_labels),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
}

/// Whether namespace `name` exists and is not being deleted.
async fn namespace_stays(client: &kube::Client, name: &str) -> bool {
    Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .unwrap()
        .is_some_and(|ns| ns.metadata.deletion_timestamp.is_none())
}

/// Polls `check` until it returns `Ok`, for at most `timeout`; panics with its last error.
async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what} after {timeout:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A webhook of run `run` that every pod creation must pass, at `127.0.0.1:port`.
fn failing_webhook(name: &str, run: &str, port: u16) -> MutatingWebhookConfiguration {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": run_labels(run)},
        "webhooks": [{
            "name": "pods.hami-e2e.test",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate")},
            "rules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
            }],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 2,
        }],
    }))
    .expect("a valid webhook configuration")
}

/// A lease held by a process of this host that is then SIGKILLed: before the kill, `reap`
/// leaves the run's namespace and webhook; after it, `reap` removes them at once, a day
/// before the lease would expire, and pods can be created again.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_whose_holder_on_this_host_is_killed_is_reaped_at_once() {
    let local = LocalCluster::start(LocalClusterOptions::default())
        .await
        .expect("the local cluster starts");
    let client = local.client();
    let run = "killed-sleeper";
    let mut sleeper = KillOnDrop(
        Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep runs"),
    );
    let pid = sleeper.0.id();
    let start = process_start_time(pid).expect("the sleeper's start time");
    let host = this_host();
    // Renewed in a day, for a day: by expiry, it is alive for two days.
    let renewed = Timestamp::now() + SignedDuration::from_hours(24);
    write_lease(
        &client,
        run,
        holder(&host, pid, start),
        &format!("host {host} pid {pid} start {start}"),
        renewed,
        86_400,
    )
    .await;
    namespace(&client, "killed-sleeper-ns", Some(run)).await;
    namespace(&client, "team-b", None).await;
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let webhook = "killed-sleeper-pods";
    webhooks
        .create(
            &PostParams::default(),
            &failing_webhook(webhook, run, closed_port()),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team-b");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // Once the API server has loaded it, the webhook fails every pod creation.
    until(
        "the webhook refuses pods",
        Duration::from_secs(60),
        || async {
            match pods.create(&dry_run, &PodBuilder::new("p").build()).await {
                Err(e) if e.to_string().contains("pods.hami-e2e.test") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // While the sleeper lives, its run is alive.
    let early = reap(&client).await.unwrap();
    assert_eq!(early, ReapReport::default());
    assert!(namespace_stays(&client, "killed-sleeper-ns").await);
    assert!(webhooks.get_opt(webhook).await.unwrap().is_some());

    sleeper.0.kill().unwrap();
    sleeper.0.wait().unwrap();
    let reaped = reap(&client).await.unwrap();
    assert_eq!(reaped.dead_runs, [run], "{reaped:?}");
    assert_eq!(
        reaped.deleted,
        [
            "mutatingwebhookconfiguration/killed-sleeper-pods",
            "namespace/killed-sleeper-ns",
        ],
        "{reaped:?}"
    );
    assert!(webhooks.get_opt(webhook).await.unwrap().is_none());
    assert!(!namespace_stays(&client, "killed-sleeper-ns").await);
    assert!(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE)
            .get_opt(&lease_name(run))
            .await
            .unwrap()
            .is_none(),
        "the lease is gone"
    );
    assert!(namespace_stays(&client, "team-b").await, "not the run's");
    // Pods can be created again (once the API server has dropped the webhook).
    until("a pod is created", Duration::from_secs(30), || async {
        pods.create(&PostParams::default(), &PodBuilder::new("p").build())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    wait::deleted(
        &Api::<Namespace>::all(client.clone()),
        "killed-sleeper-ns",
        Duration::from_secs(60),
    )
    .await
    .expect("the dead run's namespace goes");
    local.stop().await.unwrap();
}

/// Leases whose holder runs elsewhere (another host, another pid namespace, or no host at
/// all: an older version) are judged by expiry only, even when their pid is gone here; the
/// same pid on this host makes a run dead.
#[tokio::test(flavor = "multi_thread")]
async fn leases_held_elsewhere_are_judged_by_expiry_only() {
    let local = LocalCluster::start(LocalClusterOptions::default())
        .await
        .expect("the local cluster starts");
    let client = local.client();
    // A pid that was a process of this host and is gone.
    let mut gone = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep runs");
    let pid = gone.id();
    let start = process_start_time(pid).expect("its start time");
    gone.kill().unwrap();
    gone.wait().unwrap();
    let host = this_host();
    let now = Timestamp::now();
    let elsewhere = format!("not-{host}");
    write_lease(
        &client,
        "other-host",
        holder(&elsewhere, pid, start),
        &format!("host {elsewhere} pid {pid} start {start}"),
        now,
        3600,
    )
    .await;
    let mut container = holder(&host, pid, start);
    container.insert(
        HOLDER_PID_NAMESPACE_ANNOTATION.to_string(),
        "pid:[1]".to_string(),
    );
    write_lease(
        &client,
        "other-pid-namespace",
        container,
        &format!("host {host} pid {pid} start {start}"),
        now,
        3600,
    )
    .await;
    write_lease(
        &client,
        "older-version",
        BTreeMap::new(),
        &format!("pid {pid}"),
        now,
        3600,
    )
    .await;
    write_lease(
        &client,
        "this-host",
        holder(&host, pid, start),
        &format!("host {host} pid {pid} start {start}"),
        now,
        3600,
    )
    .await;
    for run in [
        "other-host",
        "other-pid-namespace",
        "older-version",
        "this-host",
    ] {
        namespace(&client, &format!("{run}-ns"), Some(run)).await;
    }

    let reaped = reap(&client).await.unwrap();
    assert_eq!(reaped.dead_runs, ["this-host"], "{reaped:?}");
    assert_eq!(reaped.deleted, ["namespace/this-host-ns"], "{reaped:?}");
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    for run in ["other-host", "other-pid-namespace", "older-version"] {
        assert!(
            namespace_stays(&client, &format!("{run}-ns")).await,
            "{run}"
        );
        assert!(
            leases.get_opt(&lease_name(run)).await.unwrap().is_some(),
            "{run}"
        );
    }
    local.stop().await.unwrap();
}

/// A run's lease looks again every period: a run of another host whose lease expires
/// during the run is reaped then, while the run's own objects stay even when its own lease
/// looks expired.
#[tokio::test(flavor = "multi_thread")]
async fn the_run_lease_reaps_leases_that_expire_during_the_run() {
    let local = LocalCluster::start(LocalClusterOptions::default())
        .await
        .expect("the local cluster starts");
    let client = local.client();
    // Renewed every 100 s: not during the test.
    let lease = RunLease::acquire(&client, "current", Duration::from_secs(300))
        .await
        .unwrap()
        .reap_every(Some(Duration::from_secs(1)));
    namespace(&client, "current-ns", Some("current")).await;
    // Our own lease looks expired now: the re-check must spare its own run all the same.
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let stale = serde_json::json!({"spec": {"renewTime": "2000-01-01T00:00:00.000000Z"}});
    leases
        .patch(lease.name(), &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .unwrap();
    namespace(&client, "short-lived-ns", Some("short-lived")).await;
    let host = format!("not-{}", this_host());
    write_lease(
        &client,
        "short-lived",
        holder(&host, 1, 1),
        &format!("host {host} pid 1 start 1"),
        Timestamp::now(),
        5,
    )
    .await;
    // At first, it is alive.
    let early = reap_except(&client, "current").await.unwrap();
    assert_eq!(early, ReapReport::default());
    assert!(namespace_stays(&client, "short-lived-ns").await);

    // No one reaps but the lease's re-check.
    wait::deleted(
        &Api::<Namespace>::all(client.clone()),
        "short-lived-ns",
        Duration::from_secs(60),
    )
    .await
    .expect("the re-check reaps the expired run");
    assert!(
        leases
            .get_opt(&lease_name("short-lived"))
            .await
            .unwrap()
            .is_none()
    );
    // A few more re-checks: the current run stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let own = leases
        .get_opt(lease.name())
        .await
        .unwrap()
        .expect("the current run's lease stays");
    assert!(is_expired(&own, Timestamp::now()), "still looks expired");
    assert!(namespace_stays(&client, "current-ns").await);
    lease.release().await.unwrap();
    local.stop().await.unwrap();
}
