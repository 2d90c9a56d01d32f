//! `cargo bench -p hami-e2e-k8s --bench admission`: what device admission through the
//! cluster costs (the ConfigMap of `hami_e2e_k8s::cleanup::admission`), against the local cluster.
//!
//! One holder: a reservation and its release, one after the other (each is a read and a
//! conditional write; the last release deletes the ConfigMap, the next reservation creates
//! it). Then four holders (runs with leases of their own) at once, each taking one of four
//! devices and giving it back in a loop: the time per reservation and release when writes
//! conflict, and how many reservations found nothing free after their conflict retries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hami_e2e_core::admission::StorePool;
use hami_e2e_core::{Demand, PoolDevice};
use hami_e2e_k8s::cleanup::admission::ClusterAdmission;
use hami_e2e_k8s::cleanup::run_lease::RunLease;
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions};

const ROUNDS: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn devices() -> Vec<PoolDevice> {
    (0..4)
        .map(|i| PoolDevice::new("nvidia", "gpu-node", format!("GPU-{i}"), 16384))
        .collect()
}

fn pool(client: &kube::Client, run: &str) -> StorePool {
    StorePool::new(
        Arc::new(ClusterAdmission::new(client.clone(), run)),
        devices(),
    )
}

/// `ROUNDS` reservations of one whole device and their releases: each cycle's time, and
/// how many reservations waited (nothing free after the conflict retries).
async fn cycles(pool: StorePool) -> (Vec<Duration>, usize) {
    let one = [Demand::devices("nvidia", 1).exclusive()];
    let (mut times, mut waited) = (Vec::with_capacity(ROUNDS), 0);
    while times.len() < ROUNDS {
        let start = Instant::now();
        match pool.try_reserve(&one).await.expect("admission works") {
            Some(r) => {
                pool.release(&r).await.expect("released");
                times.push(start.elapsed());
            }
            None => waited += 1,
        }
    }
    (times, waited)
}

fn report(what: &str, mut times: Vec<Duration>, waited: usize) {
    times.sort();
    println!(
        "admission through the cluster, {what}: reservation + release p50 {:.1} ms, p95 {:.1} ms ({} cycles; {waited} reservations waited)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3,
        times.len()
    );
}

#[tokio::main]
async fn main() {
    let local = LocalCluster::start(LocalClusterOptions::default())
        .await
        .expect("the local cluster starts");
    let client = local.client();
    let mut leases = Vec::new();
    for i in 0..4 {
        let run = format!("bench-{i}");
        leases.push(
            RunLease::acquire(&client, &run, Duration::from_secs(60))
                .await
                .expect("a lease"),
        );
    }

    let (times, waited) = cycles(pool(&client, "bench-0")).await;
    report("1 holder", times, waited);

    let tasks: Vec<_> = (0..4)
        .map(|i| tokio::spawn(cycles(pool(&client, &format!("bench-{i}")))))
        .collect();
    let (mut all, mut waited) = (Vec::new(), 0);
    for t in tasks {
        let (times, w) = t.await.expect("join");
        all.extend(times);
        waited += w;
    }
    report("4 holders at once, 4 devices", all, waited);

    for lease in leases {
        lease.release().await.expect("released");
    }
    local.stop().await.expect("stopped");
}
