//! `cargo bench -p hami-e2e-k8s --bench local_cluster`: the local cluster's costs, with
//! binaries already cached (the first run builds them and is not measured).
//!
//! - start: `LocalCluster::start` until a fake node is Ready (target: under 15 s);
//! - memory: resident set of all components after start-up and after the namespace churn
//!   (target: under 1.5 GiB);
//! - 100 namespaces: created 10 at a time, then deleted and awaited until gone.
//!
//! Prints the figures; the README's performance section records them.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hami_e2e_k8s::local::bincache::{BinaryCache, KubernetesRelease};
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

fn rss_mib(cluster: &LocalCluster) -> f64 {
    let kib: u64 = cluster
        .pids()
        .iter()
        .filter_map(|(_, pid)| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum();
    kib as f64 / 1024.0
}

async fn churn(cluster: &LocalCluster, n: usize) -> (Duration, Duration) {
    let api = Api::<Namespace>::all(cluster.client());
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:03}")).collect();
    let started = Instant::now();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name),
                        labels: Some([("bench".to_string(), "churn".to_string())].into()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                api.create(&PostParams::default(), &ns).await
            }
        })
        .buffer_unordered(10)
        .try_collect::<Vec<_>>()
        .await
        .expect("create namespaces");
    let created = started.elapsed();

    let started = Instant::now();
    let selector = "bench=churn";
    // Watch first, then delete, so no deletion is missed.
    let mut stream = std::pin::pin!(
        watcher(api.clone(), watcher::Config::default().labels(selector)).default_backoff()
    );
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move { api.delete(&name, &DeleteParams::background()).await }
        })
        .buffer_unordered(10)
        .try_collect::<Vec<_>>()
        .await
        .expect("delete namespaces");
    // Wait until the namespace controller has finalised all of them.
    loop {
        let left = api
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list")
            .items
            .len();
        if left == 0 {
            break;
        }
        // Any event on our namespaces may be the last deletion.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
    }
    (created, started.elapsed())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "local cluster benchmark: run with `cargo bench -p hami-e2e-k8s --bench local_cluster`"
        );
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
        let options = || {
            LocalClusterOptions::default()
                .release(release)
                .node(NodeSpec::new("node-0").capacity("nvidia.com/gpu", "8"))
        };
        let mut starts = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let cluster = LocalCluster::start(options()).await.expect("starts");
            starts.push(started.elapsed());
            cluster.stop().await.expect("stops");
        }
        starts.sort();
        println!(
            "local cluster {}: start to a Ready fake node: median {:.2} s (min {:.2}, max {:.2}; 3 runs; target < 15 s)",
            release.version(),
            starts[1].as_secs_f64(),
            starts[0].as_secs_f64(),
            starts[2].as_secs_f64()
        );

        let cluster = LocalCluster::start(options()).await.expect("starts");
        tokio::time::sleep(Duration::from_secs(5)).await; // let start-up caches settle
        println!("control plane RSS after start-up: {:.0} MiB (target < 1536 MiB)", rss_mib(&cluster));
        let (created, deleted) = churn(&cluster, 100).await;
        println!(
            "100 namespaces: created in {:.2} s, deleted and gone in {:.2} s",
            created.as_secs_f64(),
            deleted.as_secs_f64()
        );
        println!("control plane RSS after the namespace churn: {:.0} MiB", rss_mib(&cluster));
        cluster.stop().await.expect("stops");
    });
}
