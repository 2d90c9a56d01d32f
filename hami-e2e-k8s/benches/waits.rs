//! `cargo bench -p hami-e2e-k8s --bench waits`: how long after a condition becomes true a
//! wait returns, against the local cluster (target: under 100 ms at p50), next to what
//! fixed-interval polling costs (1 s and 2 s intervals, as Ginkgo suites use).
//!
//! Each round: a wait starts on a ConfigMap, then the ConfigMap is patched so the condition
//! holds; the latency is the time from sending the patch to the wait's return, so it
//! includes the write itself (an upper bound: the watch event often arrives before the
//! patch's own answer). Polling returns on the first `GET` after the write.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions};
use hami_e2e_k8s::wait;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};

const ROUNDS: usize = 40;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn is_go(round: usize) -> impl Fn(Option<&ConfigMap>) -> bool + Send + Clone {
    let want = round.to_string();
    move |cm: Option<&ConfigMap>| {
        cm.and_then(|c| c.data.as_ref())
            .and_then(|d| d.get("round"))
            .is_some_and(|r| *r == want)
    }
}

/// Patches the flag; returns when the patch was sent.
async fn patch(api: &Api<ConfigMap>, round: usize) -> Instant {
    let body = serde_json::json!({"data": {"round": round.to_string()}});
    let sent = Instant::now();
    api.patch("flag", &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("patch");
    sent
}

/// Watch-driven: `wait::until`.
async fn watch_round(api: &Api<ConfigMap>, round: usize) -> Duration {
    let waiter = {
        let api = api.clone();
        let cond = is_go(round);
        tokio::spawn(async move {
            wait::until(&api, "flag", "to flip", Duration::from_secs(30), cond)
                .await
                .expect("wait");
            Instant::now()
        })
    };
    // Let the watch establish before the change (a wait usually starts well before).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = patch(api, round).await;
    let returned = waiter.await.expect("join");
    returned.saturating_duration_since(written)
}

/// Fixed-interval polling, as `Eventually(..).WithPolling(interval)` does.
async fn poll_round(api: &Api<ConfigMap>, round: usize, interval: Duration) -> Duration {
    let waiter = {
        let api = api.clone();
        let cond = is_go(round);
        tokio::spawn(async move {
            loop {
                let cm = api.get_opt("flag").await.expect("get");
                if cond(cm.as_ref()) {
                    return Instant::now();
                }
                tokio::time::sleep(interval).await;
            }
        })
    };
    // The change lands at a random point of the polling interval.
    let offset = (round as u64 * 7919) % interval.as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(offset)).await;
    let written = patch(api, round).await;
    let returned = waiter.await.expect("join");
    returned.saturating_duration_since(written)
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<28} p50 {:>8.1} ms   p95 {:>8.1} ms   max {:>8.1} ms   ({} rounds)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.95).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        samples.len()
    );
}

#[tokio::main]
async fn main() {
    let cluster = LocalCluster::start(LocalClusterOptions::default())
        .await
        .expect("the local cluster starts");
    println!("local cluster {}", cluster.version());
    let client = cluster.client();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some("bench-waits".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    let api: Api<ConfigMap> = Api::namespaced(client, "bench-waits");
    api.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("flag".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("round".to_string(), "none".to_string())])),
            ..Default::default()
        },
    )
    .await
    .expect("configmap");

    let mut watch = Vec::new();
    for round in 0..ROUNDS {
        watch.push(watch_round(&api, round).await);
    }
    report("watch-driven wait::until", watch);
    for interval in [Duration::from_secs(1), Duration::from_secs(2)] {
        let mut polled = Vec::new();
        for round in 0..ROUNDS / 4 {
            polled.push(poll_round(&api, ROUNDS + round, interval).await);
        }
        report(&format!("polling every {}s", interval.as_secs()), polled);
    }
    cluster.stop().await.expect("stop");
}
