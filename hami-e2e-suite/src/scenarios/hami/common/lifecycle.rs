//! Pods and HAMi over time, for every vendor: a Job that completes, a Deployment scaled,
//! HAMi's device metrics, and HAMi restarted while a handshake is pending.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hami_e2e_core::{Failure, ensure};
use hami_e2e_devices::PodOptions;
use hami_e2e_k8s::wait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Patch;
use kube::{Api, ResourceExt};

use crate::scenarios::hami::case::{
    Case, HAMI_BUG, POD_WAIT, acknowledged, hami_scenario, hami_scenario_with, one_device, phase,
    pods_of,
};
use crate::scenarios::hami::oracle::sum_by_device;
use crate::scenarios::pod::DevicePod;

/// How long HAMi's per-device metrics may lag: they are refreshed on its register tick
/// (every 15 s), plus a margin.
const DEVICE_METRICS_LAG: Duration = Duration::from_secs(25);

fn bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
}

/// `hami::<vendor>::job-completes`: a Job's device pod (60 % of the node's one device)
/// is bound by HAMi and completes; its share is freed, and a pod of 60 % runs after it.
pub(super) fn job_completes(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "job-completes", &[], |c| async move {
        let node = c.node("job", 1).await?;
        let backend = c.backend()?;
        let request = c.share(3, 5, 20)?;
        let pod = DevicePod::new("job-pod")
            .devices(backend, &request)?
            .on_node(&node)
            .build();
        let job: Job = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": pod.spec},
            },
        }))
        .map_err(|e| Failure::msg(format!("the Job does not build: {e}")))?;
        c.ctx
            .step("a Job of one device pod", c.ns.apply(&job))
            .await?;
        let done = c
            .ctx
            .step("its pod, bound by HAMi, completes", async {
                let started = Instant::now();
                loop {
                    let pods = pods_of(&c.ns, "job-name=once").await?;
                    if let Some(p) = pods.iter().find(|p| phase(p) == "Succeeded") {
                        return Ok::<_, Failure>(p.clone());
                    }
                    ensure!(
                        started.elapsed() < POD_WAIT,
                        "the Job's pod did not complete within {POD_WAIT:?}: {:?}",
                        pods.iter()
                            .map(|p| (p.name_any(), phase(p).to_owned()))
                            .collect::<Vec<_>>()
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
            .await?;
        c.check_allocation(&done, &request, &node).await?;
        c.lock_released(&node).await?;
        c.runs(
            "after",
            &node,
            &request,
            "a pod of 60 % runs once the Job is done",
        )
        .await?;
        Ok(())
    })
}

/// Waits until the pods labelled `app=<name>` are `running` acknowledged ones and
/// `pending` ones that HAMi has not bound, and no more; returns them.
async fn replicas(
    c: &Case,
    name: &str,
    running: usize,
    pending: usize,
) -> Result<Vec<Pod>, Failure> {
    let started = Instant::now();
    loop {
        let pods: Vec<Pod> = pods_of(&c.ns, &format!("app={name}"))
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let up = pods.iter().filter(|p| acknowledged(p)).count();
        let waiting = pods.iter().filter(|p| !bound(p)).count();
        if up == running && waiting == pending && pods.len() == running + pending {
            return Ok(pods);
        }
        ensure!(
            started.elapsed() < POD_WAIT,
            "Deployment {name}: {up} running and {waiting} unbound of {} pods after {POD_WAIT:?}, not {running} and {pending}",
            pods.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `hami::<vendor>::deployment`: a Deployment of device pods, 40 % of the node's one device
/// each: two replicas share the device; scaled to three, the third is refused
/// (`CardInsufficientMemory`); scaled down to one and up to two again, the new replica
/// runs in the share the removed ones freed.
pub(super) fn deployment(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "deployment", &[], |c| async move {
        let node = c.node("deploy", 1).await?;
        let backend = c.backend()?;
        let request = c.share(2, 5, 20)?;
        let template = DevicePod::new("replica")
            .devices(backend, &request)?
            .on_node(&node)
            .into_builder();
        let deployment = hami_e2e_k8s::DeploymentBuilder::new("shared", template)
            .replicas(2)
            .build();
        c.ctx
            .step("a Deployment of two device pods", c.ns.apply(&deployment))
            .await?;
        let pods = c
            .ctx
            .step("both replicas run", replicas(&c, "shared", 2, 0))
            .await?;
        for pod in &pods {
            c.check_allocation(pod, &request, &node).await?;
        }
        let api = c.ns.api::<Deployment>();
        let scale = |n: i32| {
            let api = api.clone();
            async move {
                api.patch(
                    "shared",
                    &Default::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"replicas": n}})),
                )
                .await?;
                Ok::<_, Failure>(())
            }
        };
        c.ctx.step("scaled to three", scale(3)).await?;
        let pods = replicas(&c, "shared", 2, 1).await?;
        let third = pods
            .iter()
            .find(|p| !bound(p))
            .map(ResourceExt::name_any)
            .ok_or_else(|| Failure::msg("no unbound replica"))?;
        c.refused(&third, "CardInsufficientMemory", &node).await?;
        c.ctx.step("scaled down to one", scale(1)).await?;
        c.ctx
            .step("one replica is left", replicas(&c, "shared", 1, 0))
            .await?;
        c.ctx.step("scaled up to two", scale(2)).await?;
        let pods = c
            .ctx
            .step(
                "the new replica runs in the freed share",
                replicas(&c, "shared", 2, 0),
            )
            .await?;
        for pod in &pods {
            c.check_allocation(pod, &request, &node).await?;
        }
        Ok(())
    })
}

/// `hami::<vendor>::metrics`: HAMi's per-device metrics agree with the allocations within
/// its register period: with pods of 3000 and 2000 MiB on one of the node's two devices,
/// `hami_gpu_memory_allocated_bytes` is 5000 MiB there and 0 on the other, and
/// `hami_gpu_shared_count` 2 and 0; with the first pod deleted, 2000 MiB and 1.
pub(super) fn metrics(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "metrics", &[], |c| async move {
        let node = c.node("metrics", 2).await?;
        let backend = c.backend()?;
        let devices = c.devices_of(&node).await?;
        let target = devices
            .first()
            .map(|d| d.id.clone())
            .ok_or_else(|| Failure::msg("no device"))?;
        let options = PodOptions::default().use_id(&target);
        let annotations = c.annotations(&options)?;
        let mut memory = BTreeMap::new();
        for (name, mib) in [("big", 3000), ("small", 2000)] {
            let request = one_device(backend, mib, 10);
            c.create_annotated(name, &node, &request, &annotations)
                .await?;
            let pod = c.running(name, &node).await?;
            let granted: u64 = c
                .backend()?
                .pod_allocation(pod.annotations())?
                .devices()
                .map(|d| d.memory_mib)
                .sum();
            memory.insert(name, granted);
        }
        let expect = |want: Vec<(String, u64, f64)>| {
            let c = &c;
            let node = node.clone();
            async move {
                let started = Instant::now();
                loop {
                    let text = c.hami.endpoint().metrics().await?;
                    let allocated = sum_by_device(&text, "hami_gpu_memory_allocated_bytes");
                    let shared = sum_by_device(&text, "hami_gpu_shared_count");
                    let got: Vec<(String, u64, f64)> = want
                        .iter()
                        .map(|(d, _, _)| {
                            let key = (node.clone(), d.clone());
                            (
                                d.clone(),
                                (allocated.get(&key).copied().unwrap_or(0.0) / 1_048_576.0) as u64,
                                shared.get(&key).copied().unwrap_or(0.0),
                            )
                        })
                        .collect();
                    if got == want {
                        return Ok::<_, Failure>(());
                    }
                    ensure!(
                        started.elapsed() < DEVICE_METRICS_LAG,
                        "HAMi's device metrics for {node} are {got:?} (device, MiB, pods) after {DEVICE_METRICS_LAG:?}, not {want:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let other = devices
            .get(1)
            .map(|d| d.id.clone())
            .ok_or_else(|| Failure::msg("no second device"))?;
        let both = memory.values().sum::<u64>();
        c.ctx
            .step(
                format!("hami_gpu_memory_allocated_bytes shows {both} MiB on {target}"),
                expect(vec![(target.clone(), both, 2.0), (other.clone(), 0, 0.0)]),
            )
            .await?;
        c.delete_pod("big").await?;
        let left = memory["small"];
        c.ctx
            .step(
                format!("and then {left} MiB"),
                expect(vec![(target.clone(), left, 1.0), (other, 0, 0.0)]),
            )
            .await?;
        Ok(())
    })
}

/// `hami::<vendor>::restart-handshake` (serial, **hami-bug**; vendors whose plugins answer
/// HAMi's handshake): HAMi restarted while a node's handshake stands at `Requesting_` (HAMi
/// asked, the plugin, reporting every 30 s, has not answered yet) registers the node again
/// on its first register pass, as the HAMi before the restart kept it in that state.
///
/// What HAMi v2.10.0 does instead: `CheckHealth` (`pkg/device/devices.go`) answers a
/// `Requesting_` younger than 60 s with "healthy, no update", and `register` skips a node
/// that needs no update without looking whether its cache has the node at all: the node
/// stays unregistered (pods are refused) until the plugin reports, up to its report period
/// after the restart.
pub(super) fn restart_handshake(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario_with(
        vendor,
        "restart-handshake",
        &["fault", HAMI_BUG],
        |b| {
            b.serial()
                .requires(hami_e2e_helm::hami::owned_requirement())
        },
        |c| async move {
            let node = c.node("rhs", 1).await?;
            let backend = c.backend()?;
            let key = backend
                .annotation_keys()
                .handshake
                .clone()
                .ok_or_else(|| Failure::msg(format!("{} has no handshake", c.vendor)))?;
            c.hami.agent().stop_handshake(&node, true);
            let nodes = Api::<Node>::all(c.ns.client());
            c.ctx
                .step(
                    format!("HAMi asks for the handshake ({key}: Requesting_...)"),
                    wait::until(
                        &nodes,
                        &node,
                        "to have a Requesting_ handshake",
                        Duration::from_secs(20),
                        |n: Option<&Node>| {
                            n.is_some_and(|n| {
                                n.annotations()
                                    .get(&key)
                                    .is_some_and(|v| v.starts_with("Requesting"))
                            })
                        },
                    ),
                )
                .await?;
            c.ctx
                .step("HAMi's scheduler is restarted", c.hami.restart(&[]))
                .await?;
            let late = c.node("rhs-late", 1).await?;
            let started = Instant::now();
            loop {
                let registered = c.hami.endpoint().registered_nodes().await?;
                if registered.contains(&node) {
                    break;
                }
                ensure!(
                    started.elapsed() < Duration::from_secs(5),
                    "after the restart HAMi registered {late} but not {node}, whose handshake is still `Requesting_` (it had {node} registered in that state before)"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            c.hami.agent().stop_handshake(&node, false);
            Ok(())
        },
    )
}
