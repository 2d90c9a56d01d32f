//! `cargo bench -p hami-e2e-helm --bench hami`: the real HAMi on the local cluster, with the
//! fake device agent playing the device plugins.
//!
//! - ready: from the local cluster ready to HAMi ready (its scheduler answering, the HAMi
//!   kube-scheduler and the webhook configured), and to HAMi having registered a fake node
//!   added then (target: under 3 s); 3 runs, the median;
//! - scheduling: 100 pods (one T4 share each: 1000 MiB, 5 % of the cores) created at once
//!   onto 10 fake nodes of 8 Tesla T4, time until all are Running and p50/p95 of each pod's
//!   create → Running (target: all within 20 s on 2 cores); at HAMi's own API client rate
//!   (`--kube-qps 5 --kube-burst 10`), at 50/100, and at the local cluster's default (500/1000).
//!
//! Needs a HAMi scheduler binary (`HAMI_E2E_HAMI_SCHEDULER`, `HAMI_E2E_HAMI_SOURCE` or the
//! pinned module); without one it prints why and measures nothing. The README's
//! performance section records the figures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hami_e2e_devices::{DeviceBackend, DeviceRegistry, FakeDeviceAgent, Nvidia, profiles};
use hami_e2e_helm::SchedulerPolicy;
use hami_e2e_helm::binaries::{
    FindSchedulerError, HamiRelease, HamiScheduler, find_hami_scheduler_once,
};
use hami_e2e_helm::hami::{create_fake_node, default_local_options};
use hami_e2e_helm::local::LocalHami;
use hami_e2e_k8s::PodBuilder;
use hami_e2e_k8s::local::bincache::{BinaryCache, KubernetesRelease};
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

const NODES: usize = 10;
const DEVICES: u32 = 8;
const PODS: usize = 100;

async fn cluster(release: KubernetesRelease) -> LocalCluster {
    LocalCluster::start(LocalClusterOptions::default().release(release))
        .await
        .expect("the local cluster starts")
}

/// Cluster ready → HAMi ready, and → one fake node registered by HAMi.
async fn ready_once(release: KubernetesRelease, scheduler: &HamiScheduler) -> (Duration, Duration) {
    let cluster = cluster(release).await;
    let started = Instant::now();
    let hami = LocalHami::start(&cluster, scheduler, default_local_options())
        .await
        .expect("HAMi starts");
    let ready = started.elapsed();
    let t4 = profiles::default_for("nvidia").expect("a T4 profile");
    create_fake_node(
        &cluster.client(),
        &Nvidia::default(),
        "gpu-0",
        &t4.fake_devices("gpu-0", DEVICES),
        &[],
    )
    .await
    .expect("the fake node");
    hami.wait_registered(&["gpu-0"], Duration::from_secs(30))
        .await
        .expect("HAMi registers the node");
    let registered = started.elapsed();
    hami.stop(&cluster).await.expect("HAMi stops");
    cluster.stop().await.expect("the cluster stops");
    (ready, registered)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// 100 pods created at once onto 10 nodes × 8 T4; (all Running, create → Running sorted).
async fn schedule_once(
    release: KubernetesRelease,
    scheduler: &HamiScheduler,
    qps_burst: Option<(u32, u32)>,
    node_policy: Option<SchedulerPolicy>,
) -> (Duration, Vec<Duration>, usize) {
    const LIMIT: Duration = Duration::from_secs(180);
    let cluster = cluster(release).await;
    let mut options = default_local_options();
    options.kube_qps_burst = qps_burst;
    options.values.node_scheduler_policy = node_policy;
    let hami = LocalHami::start(&cluster, scheduler, options)
        .await
        .expect("HAMi starts");
    let client = cluster.client();
    let registry = Arc::new(DeviceRegistry::builtin());
    let agent = FakeDeviceAgent::start(client.clone(), Arc::clone(&registry));
    let nvidia = Nvidia::default();
    let t4 = profiles::default_for("nvidia").expect("a T4 profile");
    let names: Vec<String> = (0..NODES).map(|i| format!("gpu-{i}")).collect();
    for name in &names {
        create_fake_node(&client, &nvidia, name, &t4.fake_devices(name, DEVICES), &[])
            .await
            .expect("the fake node");
        agent.manage(name, [nvidia.vendor()]);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    hami.wait_registered(&refs, Duration::from_secs(60))
        .await
        .expect("HAMi registers the nodes");

    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some("bench".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("the namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    // Watch first, so no pod's Running is missed.
    let seen = Arc::new(std::sync::Mutex::new(BTreeMap::<String, Instant>::new()));
    let watch = tokio::spawn({
        let (pods, seen) = (pods.clone(), Arc::clone(&seen));
        async move {
            let mut stream = std::pin::pin!(
                watcher(pods, watcher::Config::default())
                    .default_backoff()
                    .applied_objects()
            );
            while let Some(Ok(pod)) = stream.next().await {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if phase == Some("Running") {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let mut seen = seen.lock().unwrap();
                    seen.entry(name).or_insert_with(Instant::now);
                    if seen.len() == PODS {
                        break;
                    }
                }
            }
        }
    });
    let request = nvidia
        .container_resources(
            &hami_e2e_devices::DeviceRequest::devices(1)
                .memory_mib(1000)
                .cores(5),
        )
        .expect("the request");
    let started = Instant::now();
    let created: BTreeMap<String, Instant> = futures::stream::iter(0..PODS)
        .map(|i| {
            let (pods, request) = (pods.clone(), request.clone());
            async move {
                let name = format!("pod-{i:03}");
                let mut pod = PodBuilder::new(&name).command(["sleep", "3600"]);
                for (k, v) in request.limits.unwrap_or_default() {
                    pod = pod.limit(k, v.0);
                }
                let at = Instant::now();
                pods.create(&PostParams::default(), &pod.build()).await?;
                Ok::<_, kube::Error>((name, at))
            }
        })
        .buffer_unordered(PODS)
        .try_collect()
        .await
        .expect("create the pods");
    let _ = tokio::time::timeout(LIMIT, watch).await;
    let all = started.elapsed();
    let seen = seen.lock().unwrap().clone();
    let mut each: Vec<Duration> = created
        .iter()
        .filter_map(|(name, at)| Some(seen.get(name)?.saturating_duration_since(*at)))
        .collect();
    each.sort();
    let contention = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "bench")
        .list(&kube::api::ListParams::default().fields("reason=BindingFailed"))
        .await
        .map(|l| l.items.len())
        .unwrap_or_default();
    agent.stop().await;
    hami.stop(&cluster).await.expect("HAMi stops");
    cluster.stop().await.expect("the cluster stops");
    (all, each, contention)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("HAMi benchmark: run with `cargo bench -p hami-e2e-helm --bench hami`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let release = KubernetesRelease::from_env().expect("supported version");
        let cache = BinaryCache::default();
        cache.kubernetes(&release).await.expect("binaries");
        cache.kwok().await.expect("kwok");
        let hami_release = HamiRelease::from_env().expect("a HAMi release");
        let scheduler = match find_hami_scheduler_once(&cache, &hami_release).await {
            Ok(s) => s,
            Err(FindSchedulerError::Unavailable { reason }) => {
                println!("HAMi benchmark: nothing measured: {reason}");
                return;
            }
            Err(e) => panic!("the HAMi scheduler binary: {e}"),
        };
        println!(
            "HAMi {} ({}) on local cluster {}",
            scheduler.version,
            scheduler.source,
            release.version()
        );

        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(ready_once(release, &scheduler).await);
        }
        runs.sort();
        let (ready, registered) = runs[1];
        println!(
            "cluster ready -> HAMi ready: median {:.2} s (min {:.2}, max {:.2}); -> a new fake node registered by HAMi: {:.2} s (3 runs; target < 3 s)",
            ready.as_secs_f64(),
            runs[0].0.as_secs_f64(),
            runs[2].0.as_secs_f64(),
            registered.as_secs_f64()
        );

        for (what, qps, policy) in [
            (
                "client rate qps 500, burst 1000 (the local default), node policy binpack (HAMi's default)",
                Some((500, 1000)),
                None,
            ),
            (
                "client rate qps 500, burst 1000, node policy spread",
                Some((500, 1000)),
                Some(SchedulerPolicy::Spread),
            ),
            (
                "client rate qps 50, burst 100, node policy binpack",
                Some((50, 100)),
                None,
            ),
            (
                "HAMi's default client rate (qps 5, burst 10), node policy binpack",
                None,
                None,
            ),
        ] {
            let (all, each, contention) = schedule_once(release, &scheduler, qps, policy).await;
            let what = format!("{what}; {contention} BindingFailed (node lock) events");
            if each.len() < PODS {
                println!(
                    "{PODS} pods onto {NODES} nodes x {DEVICES} T4 at {what}: only {} Running after {:.0} s (target: all < 20 s)",
                    each.len(),
                    all.as_secs_f64()
                );
                continue;
            }
            println!(
                "{PODS} pods onto {NODES} nodes x {DEVICES} T4 at {what}: all Running in {:.2} s; create -> Running p50 {:.2} s, p95 {:.2} s, max {:.2} s (target: all < 20 s)",
                all.as_secs_f64(),
                percentile(&each, 0.5).as_secs_f64(),
                percentile(&each, 0.95).as_secs_f64(),
                each.last().copied().unwrap_or_default().as_secs_f64()
            );
        }
    });
}
