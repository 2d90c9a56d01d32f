//! Admission through the cluster: two processes, each with its own run, lease and admission
//! state, reserve every device of one pool again and again against one cluster, and never
//! hold them at the same time, a hold longer than the lease's duration included (the lease
//! is renewed). A shard killed with `kill -9` while it holds the devices frees them at once
//! (its holder on this host is gone); one whose lease is no longer renewed frees them when
//! it expires; and the reaper drops a dead run's holdings from the ConfigMap.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hami_e2e_core::admission::StorePool;
use hami_e2e_core::{Demand, PoolDevice};
use hami_e2e_k8s::cleanup::admission::{ADMISSION_CONFIGMAP, ClusterAdmission};
use hami_e2e_k8s::cleanup::lease::LEASE_NAMESPACE;
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions};
use hami_e2e_k8s::{RunLease, reap};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

/// The lease's duration: a shard's first hold lasts longer than this.
const LEASE: Duration = Duration::from_secs(3);

/// The holds of a shard, one per round: the first outlasts the lease.
const HOLDS_MS: [u64; 5] = [4000, 100, 100, 100, 100];

/// Kills the child when the test ends early, so it never outlives it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn devices() -> Vec<PoolDevice> {
    (0..2)
        .map(|i| PoolDevice::new("nvidia", "gpu-node", format!("GPU-{i}"), 16384).shares(10))
        .collect()
}

/// Every device of the pool, whole.
fn all() -> [Demand; 1] {
    [Demand::all("nvidia")]
}

fn micros_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros()
}

/// This test binary again, running only `admission_shard` as run `run`.
fn shard(kubeconfig: &std::path::Path, run: &str, hang: bool) -> KillOnDrop {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args(["--ignored", "--exact", "admission_shard", "--nocapture"])
        .env("HAMI_E2E_SHARD_KUBECONFIG", kubeconfig)
        .env("HAMI_E2E_SHARD_RUN", run)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if hang {
        command.env("HAMI_E2E_SHARD_HANG", "1");
    }
    KillOnDrop(command.spawn().expect("the test binary runs again"))
}

/// Not a test on its own: one shard, started by the tests below in a process of its own.
/// It holds a run lease and reserves every device through the cluster once per entry of
/// [`HOLDS_MS`], printing `HELD <start µs> <end µs>` for each hold (the start taken after the
/// reservation, the end before the release, so the real hold contains it); with
/// `HAMI_E2E_SHARD_HANG` it prints `READY` after the first reservation and sleeps.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "started by the tests of this file in processes of its own"]
async fn admission_shard() {
    let kubeconfig = std::env::var_os("HAMI_E2E_SHARD_KUBECONFIG").expect("the cluster");
    let run = std::env::var("HAMI_E2E_SHARD_RUN").expect("the run id");
    let client = hami_e2e_k8s::client_from_kubeconfig(kubeconfig.as_ref(), None)
        .await
        .expect("the kubeconfig works");
    let lease = RunLease::acquire(&client, &run, LEASE)
        .await
        .expect("a lease");
    let pool = StorePool::new(Arc::new(ClusterAdmission::new(client, &run)), devices());
    for hold in HOLDS_MS {
        let held = loop {
            if let Some(r) = pool.try_reserve(&all()).await.expect("admission works") {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let start = micros_now();
        if std::env::var_os("HAMI_E2E_SHARD_HANG").is_some() {
            println!("READY");
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        tokio::time::sleep(Duration::from_millis(hold)).await;
        println!("HELD {start} {}", micros_now());
        pool.release(&held).await.expect("released");
    }
    lease.release().await.expect("lease released");
}

/// The holds a shard printed.
fn holds(child: &mut KillOnDrop) -> Vec<(u128, u128)> {
    let out = BufReader::new(child.0.stdout.take().expect("piped"));
    let holds = out
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let (_, rest) = l.split_once("HELD ")?;
            let (a, b) = rest.trim().split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    assert!(
        child.0.wait().expect("the shard ends").success(),
        "the shard failed"
    );
    holds
}

async fn configmap(client: &kube::Client) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), LEASE_NAMESPACE)
        .get_opt(ADMISSION_CONFIGMAP)
        .await
        .expect("the ConfigMap can be read")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_with_their_own_admission_state_never_hold_the_same_devices() {
    let local = LocalCluster::start(LocalClusterOptions::default())
        .await
        .expect("the local cluster starts");
    let mut a = shard(local.kubeconfig(), "shard-a", false);
    let mut b = shard(local.kubeconfig(), "shard-b", false);
    let (a, b) = tokio::task::spawn_blocking(move || (holds(&mut a), holds(&mut b)))
        .await
        .unwrap();
    assert_eq!(a.len(), HOLDS_MS.len(), "shard a held {a:?}");
    assert_eq!(b.len(), HOLDS_MS.len(), "shard b held {b:?}");
    for &(s1, e1) in &a {
        for &(s2, e2) in &b {
            assert!(
                e1 <= s2 || e2 <= s1,
                "both shards held every device at once: a {s1}..{e1}, b {s2}..{e2} (µs)"
            );
        }
    }
    assert!(
        configmap(&local.client()).await.is_none(),
        "the last release removes the ConfigMap"
    );
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_shards_devices_are_free_again() {
    let local = LocalCluster::start(LocalClusterOptions::default())
        .await
        .expect("the local cluster starts");
    let client = local.client();
    let _lease = RunLease::acquire(&client, "survivor", LEASE).await.unwrap();
    let survivor = StorePool::new(
        Arc::new(ClusterAdmission::new(client.clone(), "survivor")),
        devices(),
    );

    // Killed with kill -9 while it holds every device: its holder on this host is gone.
    let mut victim = shard(local.kubeconfig(), "victim", true);
    let out = BufReader::new(victim.0.stdout.take().unwrap());
    assert!(
        out.lines()
            .map_while(Result::ok)
            .any(|l| l.contains("READY")),
        "the victim reserved"
    );
    assert!(
        survivor.try_reserve(&all()).await.unwrap().is_none(),
        "held by the victim"
    );
    let text = configmap(&client)
        .await
        .and_then(|m| m.data?.remove("holdings.json"));
    assert!(text.is_some_and(|t| t.contains("\"owner\": \"victim\"")));
    drop(victim); // SIGKILL
    let r = survivor
        .try_reserve(&all())
        .await
        .unwrap()
        .expect("free once the victim is gone");
    survivor.release(&r).await.unwrap();

    // A run whose lease is no longer renewed: free once it expires.
    let stale = RunLease::acquire(&client, "stale", LEASE).await.unwrap();
    let held = StorePool::new(
        Arc::new(ClusterAdmission::new(client.clone(), "stale")),
        devices(),
    );
    held.try_reserve(&all()).await.unwrap().expect("free");
    drop(stale); // stops renewing, without deleting the lease
    assert!(
        survivor.try_reserve(&all()).await.unwrap().is_none(),
        "held by `stale`"
    );
    let started = Instant::now();
    let r = loop {
        if let Some(r) = survivor.try_reserve(&all()).await.unwrap() {
            break r;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "freed before the lease expired"
    );
    survivor.release(&r).await.unwrap();

    // The reaper drops what a dead run still holds in the ConfigMap.
    let again = RunLease::acquire(&client, "stale-again", LEASE)
        .await
        .unwrap();
    StorePool::new(
        Arc::new(ClusterAdmission::new(client.clone(), "stale-again")),
        devices(),
    )
    .try_reserve(&all())
    .await
    .unwrap()
    .expect("free");
    drop(again);
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    let report = reap(&client).await.unwrap();
    assert!(
        report.dead_runs.contains(&"stale-again".to_string()),
        "{report:?}"
    );
    assert!(
        configmap(&client).await.is_none(),
        "its holding was the last one"
    );
    local.stop().await.unwrap();
}
