//! HAMi's scenarios for NVIDIA only (`hami::nvidia::*`, for every backend of the NVIDIA
//! family): the webhook's NVIDIA defaults and memory quota, a cordoned device, NUMA binding
//! (only NVIDIA's fit reads `nvidia.com/numa-bind`), a hundred pods at once, and HAMi's
//! device plugin DaemonSet on a real cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hami_e2e_core::{Failure, Requirement, Scenario, ensure, scenario};
use hami_e2e_devices::{DeviceRequest, PodOptions};
use hami_e2e_k8s::ClusterFixture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};

use crate::fixtures::LOCAL_CLUSTER;
use crate::scenarios::hami::case::{
    Case, HAMI_BUG, NOWHERE, acknowledged, admit, first_limit, hami_scenario, one_device, phase,
    pods_of,
};
use crate::scenarios::pod::DevicePod;

/// `hami::nvidia::quota` (webhook): with a ResourceQuota of `limits.nvidia.com/gpumem:
/// 4000` in the namespace, a pod of 3000 MiB runs and a second of 2000 MiB is denied by
/// HAMi's webhook (`exceeding resource quota`).
fn quota(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "quota", &["webhook"], |c| async move {
        let backend = c.backend()?;
        let memory = backend
            .resource_names()
            .memory
            .clone()
            .ok_or_else(|| Failure::msg(format!("{} has no memory resource", c.vendor)))?;
        let quota: k8s_openapi::api::core::v1::ResourceQuota =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "device-memory"},
                "spec": {"hard": {format!("limits.{memory}"): "4000"}},
            }))
            .map_err(|e| Failure::msg(e.to_string()))?;
        c.ctx
            .step(
                format!("a quota of 4000 on limits.{memory}"),
                c.ns.apply(&quota),
            )
            .await?;
        let node = c.node("quota", 1).await?;
        let first = one_device(backend, 3000, 10);
        c.create_on("within", &node, &first).await?;
        c.running("within", &node).await?;
        let second = DevicePod::new("over")
            .devices(backend, &one_device(backend, 2000, 10))?
            .on_node(&node)
            .build();
        let answer = c
            .ctx
            .step("a pod over the quota is denied", admit(&c, &second))
            .await?;
        match answer {
            Err(m) => ensure!(
                m.contains(hami_e2e_helm::WEBHOOK_NAME) && m.contains("exceeding resource quota"),
                "the pod over the quota was refused, but not by HAMi's webhook with `exceeding resource quota`: `{m}`"
            ),
            Ok(_) => {
                return Err(Failure::assertion(
                    "HAMi's webhook admitted a pod that takes the namespace over its quota"
                        .to_string(),
                ));
            }
        }
        Ok(())
    })
}

/// `hami::nvidia::webhook-defaults`: HAMi's NVIDIA webhook makes a plain
/// `nvidia.com/gpu: 1` pod a whole-card request (adds `nvidia.com/gpucores: 100`; HAMi
/// then allocates the card's whole memory and 100 % of its cores), adds
/// `nvidia.com/gpu: 1` to a pod asking only `nvidia.com/gpumem` (and no cores), and refuses
/// `nvidia.com/gpumem-percentage: 150`.
fn webhook_defaults(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "webhook-defaults", &["webhook"], |c| async move {
        let backend = c.backend()?;
        let names = backend.resource_names().clone();
        let (Some(memory), Some(percentage), Some(cores)) = (
            names.memory.clone(),
            names.memory_percentage.clone(),
            names.cores.clone(),
        ) else {
            return Err(Failure::msg(format!(
                "{} has no memory, memory-percentage or cores resource",
                c.vendor
            )));
        };
        let limit = first_limit;
        let node = c.node("whole", 1).await?;
        let plain = DevicePod::new("plain")
            .limit(&names.count, "1")
            .on_node(&node)
            .build();
        let admitted = c
            .ctx
            .step("a plain one-device pod", admit(&c, &plain))
            .await?
            .map_err(|m| Failure::assertion(format!("the plain pod was refused: `{m}`")))?;
        ensure!(
            limit(&admitted, &cores).as_deref() == Some("100"),
            "HAMi's webhook did not add {cores}: 100 to a plain {} pod: {:?}",
            names.count,
            limit(&admitted, &cores)
        );
        let pod = c.running("plain", &node).await?;
        let allocation = backend.pod_allocation(pod.annotations())?;
        let node_obj = Api::<Node>::all(c.ns.client()).get(&node).await?;
        let device = backend
            .node_devices(&node_obj)?
            .into_iter()
            .next()
            .ok_or_else(|| Failure::msg("no device"))?;
        let got: Vec<(u64, u32)> = allocation
            .devices()
            .map(|d| (d.memory_mib, d.cores))
            .collect();
        ensure!(
            got == vec![(device.memory_mib, 100)],
            "a plain pod got {got:?} (MiB, cores), not the whole card ({} MiB, 100)",
            device.memory_mib
        );

        let memory_only = DevicePod::new("memory-only")
            .limit(&memory, "1000")
            .node_selector(NOWHERE.0, NOWHERE.1)
            .build();
        let admitted = c
            .ctx
            .step("a pod asking only for memory", admit(&c, &memory_only))
            .await?
            .map_err(|m| Failure::assertion(format!("the memory-only pod was refused: `{m}`")))?;
        ensure!(
            limit(&admitted, &names.count).as_deref() == Some("1"),
            "HAMi's webhook did not add {}: 1 to a {memory}-only pod: {:?}",
            names.count,
            limit(&admitted, &names.count)
        );
        ensure!(
            limit(&admitted, &cores).is_none(),
            "HAMi's webhook added {cores} to a {memory}-only pod"
        );

        let over = DevicePod::new("over-percentage")
            .limit(&names.count, "1")
            .limit(&percentage, "150")
            .node_selector(NOWHERE.0, NOWHERE.1)
            .build();
        let answer = c
            .ctx
            .step(format!("{percentage}: 150 is refused"), admit(&c, &over))
            .await?;
        match answer {
            Err(m) => ensure!(
                m.contains(hami_e2e_helm::WEBHOOK_NAME),
                "the pod was refused, but not by HAMi's webhook: `{m}`"
            ),
            Ok(_) => {
                return Err(Failure::assertion(format!(
                    "HAMi's webhook admitted {percentage}: 150"
                )));
            }
        }
        Ok(())
    })
}

/// `hami::nvidia::cordon` (**hami-bug**): a device named in the node's
/// `hami.io/device-cordon` receives no new pod (`CardCordoned`) within HAMi's register
/// period.
///
/// What HAMi v2.10.0 does instead: its fit reads the annotation from the node object cached
/// at the last device update (`nodes.go` `addNode`), which the NVIDIA flow (allocatable
/// present, register annotation unchanged, handshake left at `Requesting_`) never
/// refreshes: the cordon is ignored until the register annotation or the device count
/// changes.
fn cordon(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "cordon", &[HAMI_BUG], |c| async move {
        let node = c.node("cordon", 1).await?;
        let backend = c.backend()?;
        let device = c
            .devices_of(&node)
            .await?
            .first()
            .map(|d| d.id.clone())
            .ok_or_else(|| Failure::msg("no device"))?;
        Api::<Node>::all(c.ns.client())
            .patch(
                &node,
                &Default::default(),
                &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {"hami.io/device-cordon": device}}})),
            )
            .await?;
        let request = one_device(backend, 1000, 10);
        c.ctx
            .step(
                format!("HAMi refuses new pods on {device}: CardCordoned"),
                c.until_outcome(
                    "cordoned",
                    &node,
                    &request,
                    "CardCordoned",
                    false,
                    Duration::from_secs(40),
                ),
            )
            .await?;
        Ok(())
    })
}

/// `hami::nvidia::numa`: on a node of four GPUs on two NUMA nodes (0, 0, 1, 1) with one
/// GPU of each NUMA node taken whole, a pod asking two GPUs with `nvidia.com/numa-bind:
/// "true"` is refused with `NumaNotFit` while the same pod without it runs on the two free
/// GPUs across NUMA nodes; once the NUMA-1 GPU is free again, a NUMA-bound pair gets both
/// GPUs of NUMA node 1.
fn numa(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "numa", &["placement"], |c| async move {
        let node = c.node_with("numa", 4, |f| f.numa_nodes = 2, &[]).await?;
        let backend = c.backend()?;
        let devices = c.devices_of(&node).await?;
        let numa: Vec<i32> = devices.iter().map(|d| d.numa).collect();
        ensure!(
            numa == [0, 0, 1, 1],
            "{node} registers NUMA nodes {numa:?}, not [0, 0, 1, 1]"
        );
        let whole = one_device(backend, 1000, 100);
        for (name, device) in [("hold-0", &devices[1]), ("hold-1", &devices[2])] {
            let options = PodOptions::default().use_id(&device.id);
            let annotations = c.annotations(&options)?;
            c.create_annotated(name, &node, &whole, &annotations)
                .await?;
            c.running(name, &node).await?;
        }
        let pair = DeviceRequest::devices(2).memory_mib(1000).cores(40);
        let bind = vec![("nvidia.com/numa-bind".to_string(), "true".to_string())];
        c.create_annotated("bound", &node, &pair, &bind).await?;
        c.refused("bound", "NumaNotFit", &node).await?;
        c.ns.api::<Pod>()
            .delete("bound", &DeleteParams::default().grace_period(0))
            .await?;
        c.create_on("unbound", &node, &pair).await?;
        runs_on_devices(
            &c,
            ("unbound", &node),
            "without numa-bind the pair runs across NUMA nodes",
            [&devices[0].id, &devices[3].id],
            ("the unbound pair", "the free GPUs"),
        )
        .await?;
        // NUMA node 1's held GPU is freed.
        c.delete_pod("hold-1").await?;
        c.create_annotated("numa-1", &node, &pair, &bind).await?;
        runs_on_devices(
            &c,
            ("numa-1", &node),
            "a NUMA-bound pair gets NUMA node 1",
            [&devices[2].id, &devices[3].id],
            ("the NUMA-bound pair", "NUMA node 1's GPUs"),
        )
        .await?;
        Ok(())
    })
}

/// Waits (a step saying `step`) until pod `name` runs on `node`, then checks that it holds
/// the devices `want`, in any order; the failure says `pod` got what, not `devices`.
async fn runs_on_devices(
    c: &Case,
    (name, node): (&str, &str),
    step: &str,
    want: [&String; 2],
    (pod, devices): (&str, &str),
) -> Result<(), Failure> {
    let running = c.ctx.step(step.to_owned(), c.running(name, node)).await?;
    let mut got = c.device_ids(&running)?;
    got.sort();
    let mut want: Vec<String> = want.into_iter().cloned().collect();
    want.sort();
    ensure!(got == want, "{pod} got {got:?}, not {devices} {want:?}");
    Ok(())
}

/// `hami::nvidia::hundred-pods`: 100 pods created at once on 10 nodes of two T4s, each pod
/// 3000 MiB and 20 % of a GPU, which is exactly what the 20 GPUs hold (five each): all
/// 100 run with their allocations acknowledged (the oracle then checks every GPU), and a
/// 101st is refused (`no available node`).
fn hundred_pods(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "hundred-pods", &["load"], |c| async move {
        let key = "hami-e2e.io/load-group";
        let group = hami_e2e_k8s::label_value(&format!("{}-{}", c.ns.name(), c.ctx.attempt()));
        let nodes = futures::future::try_join_all((0..10).map(|i| {
            let (c, group) = (&c, group.clone());
            async move {
                c.node_with(&format!("load{i}"), 2, |_| {}, &[(key, group.as_str())])
                    .await
            }
        }))
        .await?;
        let backend = c.backend()?;
        let request = one_device(backend, 3000, 20);
        let pod = |name: &str| -> Result<Pod, Failure> {
            Ok(DevicePod::new(name)
                .devices(backend, &request)?
                .node_selector(key, &group)
                .label("hami-e2e.io/load", "hundred")
                .annotation("hami.io/node-scheduler-policy", "spread")
                .build())
        };
        let all: Vec<Pod> = (0..100)
            .map(|i| pod(&format!("load-{i:03}")))
            .collect::<Result<_, _>>()?;
        c.ctx
            .step(
                "100 device pods are created at once",
                futures::future::try_join_all(all.iter().map(|p| c.create(p))),
            )
            .await?;
        let within = Duration::from_secs(120);
        c.ctx
            .step("all 100 run with their allocations acknowledged", async {
                let started = Instant::now();
                loop {
                    let pods = pods_of(&c.ns, "hami-e2e.io/load=hundred").await?;
                    let up = pods.iter().filter(|p| acknowledged(p)).count();
                    if up == 100 {
                        return Ok::<_, Failure>(());
                    }
                    ensure!(
                        started.elapsed() < within,
                        "{up} of 100 pods run acknowledged after {within:?}"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
            .await?;
        let pods = pods_of(&c.ns, "hami-e2e.io/load=hundred").await?;
        for pod in &pods {
            let on = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            ensure!(
                nodes.contains(&on),
                "pod {} runs on {on}, not on one of the load nodes",
                pod.name_any()
            );
            c.check_allocation(pod, &request, &on).await?;
        }
        c.create(&pod("load-extra")?).await?;
        c.ctx
            .step(
                "a 101st pod finds no node",
                c.event("load-extra", "FilteringFailed", "no available node"),
            )
            .await?;
        c.unbound("load-extra").await
    })
}

/// `hami::nvidia::device-plugin-nodes` (a real cluster with HAMi installed by its chart;
/// skipped on the local cluster, whose fake nodes have no device plugin pods): HAMi's
/// NVIDIA device plugin DaemonSet (`app.kubernetes.io/component: hami-device-plugin`) runs
/// a ready pod on every schedulable node its node selector (the chart's
/// `devicePlugin.nvidiaNodeSelector`, `gpu: "on"`) picks, and on no other node.
fn device_plugin_nodes() -> hami_e2e_core::FnScenario {
    use k8s_openapi::api::apps::v1::DaemonSet;
    scenario("hami::nvidia::device-plugin-nodes")
        .labels(["nvidia", "cluster", "hami-install"])
        .requires(Requirement::custom("a cluster running HAMi's device plugin", |caps| {
            if caps.flags.contains(LOCAL_CLUSTER) {
                Err("the local cluster runs no device plugin pods: the fake device agent plays HAMi's device plugins on its fake nodes (run it against a cluster with HAMi installed, by --kubeconfig)".into())
            } else {
                Ok(())
            }
        }))
        .run(|ctx| async move {
            let cluster = ctx.fixture::<ClusterFixture>().await?;
            let client = cluster.client();
            let component = "app.kubernetes.io/component=hami-device-plugin";
            let sets = Api::<DaemonSet>::all(client.clone())
                .list(&ListParams::default().labels(component))
                .await?
                .items;
            let set = sets.into_iter().next().ok_or_else(|| {
                Failure::assertion(format!(
                    "no DaemonSet labelled {component} in any namespace: HAMi's device plugin is not installed"
                ))
            })?;
            let spec = set.spec.clone();
            let selector = spec
                .template
                .spec
                .as_ref()
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default();
            let wanted = selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let nodes = Api::<Node>::all(client.clone())
                .list(&ListParams::default().labels(&wanted))
                .await?
                .items;
            let picked: Vec<String> = nodes
                .iter()
                .filter(|n| !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false))
                .map(ResourceExt::name_any)
                .collect();
            let pod_labels = spec
                .selector
                .match_labels
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let ns = set.namespace().unwrap_or_default();
            let pods = Api::<Pod>::namespaced(client.clone(), &ns)
                .list(&ListParams::default().labels(&pod_labels))
                .await?
                .items;
            let mut problems = Vec::new();
            for pod in &pods {
                let on = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                if !picked.contains(&on) {
                    problems.push(format!(
                        "device plugin pod {ns}/{} runs on {on}, which {wanted} does not pick",
                        pod.name_any()
                    ));
                }
            }
            for node in &picked {
                let ready = pods.iter().any(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                        && phase(p) == "Running"
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                });
                if !ready {
                    problems.push(format!(
                        "node {node} ({wanted}) has no ready device plugin pod of {ns}/{}",
                        set.name_any()
                    ));
                }
            }
            ensure!(problems.is_empty(), "{}", problems.join("; "));
            Ok(())
        })
}

/// The NVIDIA-only scenarios of the backend with key `vendor`.
pub(super) fn scenarios(vendor: &str) -> Vec<Arc<dyn Scenario>> {
    vec![
        Arc::new(quota(vendor)),
        Arc::new(webhook_defaults(vendor)),
        Arc::new(cordon(vendor)),
        Arc::new(numa(vendor)),
        Arc::new(hundred_pods(vendor)),
        Arc::new(device_plugin_nodes()),
    ]
}
