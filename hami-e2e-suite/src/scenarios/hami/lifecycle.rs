//! Pods and HAMi over time: a Job that completes, a Deployment scaled, HAMi restarted,
//! HAMi's device metrics, a hundred pods at once, and the oracle at the end of the run.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::Patch;

use super::*;

/// How long HAMi's per-device metrics may lag: they are refreshed on its register tick
/// (every 15 s), plus a margin.
const DEVICE_METRICS_LAG: Duration = Duration::from_secs(25);

/// The pods of `ns` labelled `selector`.
async fn pods_of(ns: &TestNamespace, selector: &str) -> Result<Vec<Pod>, Failure> {
    Ok(ns
        .api::<Pod>()
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

fn bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
}

fn acknowledged(pod: &Pod) -> bool {
    phase(pod) == "Running"
        && pod.annotations().get(BIND_PHASE).map(String::as_str) == Some("success")
}

/// `hami::<vendor>::job-completes`: a Job's device pod (60 % of the node's one device)
/// is bound by HAMi and completes; its share is freed, and a pod of 60 % runs after it.
pub(super) fn job_completes(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "job-completes", &[], |c| async move {
        let node = c.node("job", 1).await?;
        let backend = c.backend()?;
        let request = c.share(3, 5, 20)?;
        let pod = hami_pod(backend, "job-pod", &node, &request)?;
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
        let template = hami_pod_builder(backend, "replica", &request)?
            .node_selector("kubernetes.io/hostname", &node);
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

/// `hami::all::restart` (serial): HAMi's scheduler restarted while, for every vendor, a pod
/// holds 60 % of one of a node's two devices rebuilds its usage from the pods' annotations:
/// its per-pod metrics are what they were, and per vendor a 60 % pod asking for the held
/// device is refused (`CardInsufficientMemory`) while a 60 % pod without a choice runs on
/// the other device.
///
/// The device plugins have answered HAMi's last handshake before the restart
/// (`restart-handshake` is the case where they have not). After the restart HAMi lists no
/// node until its next register pass: the node informer's first events come before the
/// scheduler counts as started and are dropped (`RegisterFromNodeAnnotations` skips a
/// notification while `started` is 0), so the nodes come back on the next register tick
/// (up to 15 s), or when a node is added. The scenario adds one, sees every node registered
/// again, and a pod run on the new node.
pub(super) fn restart(vendors: Vec<String>) -> hami_e2e_core::FnScenario {
    let labels = vendors.clone();
    hami_scenario_with(
        "all",
        "restart",
        &["fault"],
        |b| {
            b.labels(labels)
                .serial()
                .requires(hami_e2e_helm::hami::owned_requirement())
        },
        move |c| {
            let vendors = vendors.clone();
            async move {
                let held = Held::take(&c, &vendors, "restart").await?;
                held.switch(&c, None, "HAMi's scheduler is restarted", "late")
                    .await?;
                held.check_after(&c, "after-restart").await
            }
        },
    )
}

/// `hami::all::upgrade` (serial; needs the previous release, `HAMI_E2E_HAMI_SCHEDULER_PREVIOUS`
/// or `HAMI_E2E_HAMI_SOURCE_PREVIOUS`): with the previous HAMi (v2.9.0) in place of the
/// run's, a pod of each vendor holds 60 % of one of a node's two devices; upgraded to the
/// run's HAMi (v2.10.0), the pods keep their allocation annotations, the per-pod metrics are
/// what the previous release reported, a 60 % pod asking the held device is refused
/// (`CardInsufficientMemory`) and one without a choice runs on the other device. Rolled back
/// to the previous release, it rebuilds the same usage (both devices now 60 % used) and
/// refuses a third 60 % pod on each node. The run's HAMi is put back afterwards, whatever
/// happened.
pub(super) fn upgrade(vendors: Vec<String>) -> hami_e2e_core::FnScenario {
    let labels = vendors.clone();
    hami_scenario_with(
        "all",
        "upgrade",
        &["upgrade"],
        |b| {
            b.labels(labels)
                .serial()
                .requires(hami_e2e_helm::hami::previous_requirement())
        },
        move |c| {
            let vendors = vendors.clone();
            async move {
                let previous = hami_e2e_helm::hami::previous_scheduler().await?;
                let hami = Arc::clone(&c.hami);
                c.ctx
                    .defer("put the run's HAMi scheduler back", async move {
                        hami.switch_scheduler(None, &[]).await
                    });
                c.ctx
                    .step(
                        format!("HAMi {} takes the run's place", previous.version),
                        c.hami.switch_scheduler(Some(&previous.path), &[]),
                    )
                    .await?;
                running_release(&c, false).await?;
                let held = Held::take(&c, &vendors, "upgrade").await?;
                let annotations = held.allocations(&c).await?;
                held.switch(&c, None, "upgraded to the run's HAMi", "late-up")
                    .await?;
                running_release(&c, true).await?;
                ensure!(
                    held.allocations(&c).await? == annotations,
                    "the held pods' allocation annotations changed with the upgrade"
                );
                held.check_after(&c, "after-upgrade").await?;
                let rolled = held.with_metrics(&c).await?;
                rolled
                    .switch(
                        &c,
                        Some(&previous.path),
                        &format!("rolled back to HAMi {}", previous.version),
                        "late-back",
                    )
                    .await?;
                running_release(&c, false).await?;
                for (c, node, request, _) in &rolled.pods {
                    let name = format!("{}-third", c.vendor);
                    c.create(&hami_pod(c.backend()?, &name, node, request)?)
                        .await?;
                    c.refused(&name, "CardInsufficientMemory", node).await?;
                }
                Ok(())
            }
        },
    )
}

/// Checks which release answers HAMi's metrics: the run's (its `hami_build_info` version,
/// which v2.10.0 exports), or, with `run_s` false, another one (v2.9.0 exports no
/// `hami_build_info`).
async fn running_release(c: &Case, run_s: bool) -> Result<(), Failure> {
    let text = c.hami.endpoint().metrics().await?;
    let version = series(&text, "hami_build_info")
        .into_iter()
        .find_map(|(labels, _)| labels.get("version").cloned());
    let own = &c.hami.endpoint().version;
    if run_s {
        ensure!(
            version.as_deref() == Some(own.as_str()),
            "HAMi's metrics report the build {version:?}, not the run's {own}"
        );
    } else {
        ensure!(
            version.as_deref() != Some(own.as_str()),
            "HAMi's metrics still report the run's build {own}: the previous release did not take its place"
        );
    }
    Ok(())
}

/// Per vendor, a node of two devices and a pod holding 60 % of one of them, with HAMi's
/// per-pod metrics of those nodes: what a restart or an upgrade must keep.
struct Held {
    /// (the vendor's case, node, the 60 % request, the held device's ids).
    pods: Vec<(Case, String, DeviceRequest, Vec<String>)>,
    /// `hami_vgpu_memory_allocated_bytes` per (node, device) of those nodes.
    metrics: BTreeMap<(String, String), f64>,
}

impl Held {
    async fn take(c: &Case, vendors: &[String], what: &str) -> Result<Held, Failure> {
        let mut pods = Vec::new();
        for v in vendors {
            let c = c.for_vendor(v);
            let node = c.node(what, 2).await?;
            let request = c.share(3, 5, 20)?;
            let holder = format!("{v}-holder");
            let pod = c
                .runs(&holder, &node, &request, &format!("a 60 % {v} pod runs"))
                .await?;
            let ids = c.device_ids(&pod)?;
            pods.push((c, node, request, ids));
        }
        let held = Held {
            pods,
            metrics: BTreeMap::new(),
        };
        let held = held.with_metrics(c).await?;
        ensure!(
            held.metrics.len() == vendors.len(),
            "HAMi reports hami_vgpu_memory_allocated_bytes for {} of the {} held devices: {:?}",
            held.metrics.len(),
            vendors.len(),
            held.metrics
        );
        Ok(held)
    }

    fn nodes(&self) -> Vec<String> {
        self.pods.iter().map(|(_, n, _, _)| n.clone()).collect()
    }

    fn mine(&self, metrics: &str) -> BTreeMap<(String, String), f64> {
        let nodes = self.nodes();
        vgpu_memory_by_device(metrics)
            .into_iter()
            .filter(|((n, _), _)| nodes.contains(n))
            .collect()
    }

    /// The same pods, with HAMi's metrics of now.
    async fn with_metrics(self, c: &Case) -> Result<Held, Failure> {
        let metrics = self.mine(&c.hami.endpoint().metrics().await?);
        Ok(Held { metrics, ..self })
    }

    /// The allocation annotations of every pod of the held nodes, by pod.
    async fn allocations(&self, c: &Case) -> Result<BTreeMap<String, String>, Failure> {
        let keys: Vec<String> = c
            .registry
            .iter()
            .map(|b| b.annotation_keys().allocated.clone())
            .collect();
        Ok(c.ns
            .api::<Pod>()
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .flat_map(|p| {
                let name = p.name_any();
                p.annotations()
                    .iter()
                    .filter(|(k, _)| keys.contains(k))
                    .map(move |(k, v)| (format!("{name} {k}"), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// Replaces HAMi's scheduler with `binary` (`None`: the run's own, restarted), the
    /// device plugins having answered HAMi's last handshake (`restart-handshake` is the
    /// case where they have not); adds a node so that HAMi registers the ones it had at
    /// once, waits for them, and sees the per-pod metrics come back as they were.
    async fn switch(
        &self,
        c: &Case,
        binary: Option<&std::path::Path>,
        what: &str,
        late: &str,
    ) -> Result<(), Failure> {
        let nodes = self.nodes();
        for node in &nodes {
            c.hami.agent().answer_handshake_now(node).await;
        }
        c.ctx
            .step(what.to_owned(), c.hami.switch_scheduler(binary, &[]))
            .await?;
        let first = c.for_vendor(&self.pods[0].0.vendor);
        first.node(late, 1).await?;
        let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
        c.ctx
            .step(
                "HAMi registers the nodes it had again",
                c.hami
                    .endpoint()
                    .wait_registered(&names, Duration::from_secs(30)),
            )
            .await?;
        c.ctx
            .step("its per-pod metrics are rebuilt as they were", async {
                let started = Instant::now();
                loop {
                    let now = self.mine(&c.hami.endpoint().metrics().await?);
                    if now == self.metrics {
                        return Ok::<_, Failure>(());
                    }
                    ensure!(
                        started.elapsed() < Duration::from_secs(15),
                        "after `{what}` HAMi reports {now:?}, before it {:?}",
                        self.metrics
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
            .await
    }

    /// Per vendor: a 60 % pod asking the held device is refused, one without a choice runs
    /// on the other device.
    async fn check_after(&self, c: &Case, suffix: &str) -> Result<(), Failure> {
        let _ = c;
        for (c, node, request, ids) in &self.pods {
            let v = &c.vendor;
            let annotations = c.annotations(&PodOptions::default().use_id(&ids[0]))?;
            let same = format!("{v}-same-{suffix}");
            c.create_annotated(&same, node, request, &annotations)
                .await?;
            c.refused(&same, "CardInsufficientMemory", node).await?;
            let other = format!("{v}-other-{suffix}");
            let pod = c
                .runs(
                    &other,
                    node,
                    request,
                    &format!("a 60 % {v} pod runs on the other device"),
                )
                .await?;
            let got = c.device_ids(&pod)?;
            ensure!(
                got.len() == 1 && !ids.contains(&got[0]),
                "HAMi put the 60 % {v} pod on {got:?}, beside the holder's {ids:?}"
            );
        }
        Ok(())
    }
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

/// `hami::nvidia::hundred-pods`: 100 pods created at once on 10 nodes of two T4s, each pod
/// 3000 MiB and 20 % of a GPU, which is exactly what the 20 GPUs hold (five each): all
/// 100 run with their allocations acknowledged (the oracle then checks every GPU), and a
/// 101st is refused (`no available node`).
pub(super) fn hundred_pods(vendor: &str) -> hami_e2e_core::FnScenario {
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
            Ok(hami_pod_builder(backend, name, &request)?
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

/// `hami::all::oracle` (serial, after the others): the allocation oracle over the whole
/// cluster: every device of every HAMi node within budget by all live pods, and HAMi's
/// `hami_vgpu_memory_allocated_bytes` reporting only pods that still exist, each with
/// the memory of its allocation annotation (within 30 s of the last deletion).
pub(super) fn run_oracle(vendors: &[String]) -> hami_e2e_core::FnScenario {
    scenario("hami::all::oracle")
        .labels(["all", "hami", "oracle"])
        .labels(vendors.iter().cloned())
        .serial()
        .requires(Requirement::flag(LOCAL_CLUSTER))
        .requires(hami_e2e_helm::hami::requirement())
        .run(|ctx| async move {
            ctx.fixture::<ClusterFixture>().await?;
            let hami = ctx.fixture::<HamiFixture>().await?;
            let registry = ctx.fixture::<DevicesFixture>().await?;
            let ns = ctx.fixture::<NamespaceFixture>().await?;
            let client = ns.client();
            let started = Instant::now();
            loop {
                let nodes = Api::<Node>::all(client.clone())
                    .list(&ListParams::default().labels(&format!(
                        "{}=true",
                        hami_e2e_helm::HAMI_NODE_LABEL
                    )))
                    .await?
                    .items;
                let pods: Vec<Pod> = Api::<Pod>::all(client.clone())
                    .list(&ListParams::default().labels(hami_e2e_devices::VGPU_NODE))
                    .await?
                    .items;
                let names: Vec<String> = nodes.iter().map(ResourceExt::name_any).collect();
                let live: Vec<Pod> = pods
                    .iter()
                    .filter(|p| {
                        p.annotations()
                            .get(hami_e2e_devices::VGPU_NODE)
                            .is_some_and(|n| names.contains(n))
                    })
                    .cloned()
                    .collect();
                let usage = hami_e2e_devices::oracle::check(&registry, &nodes, &live);
                let mut problems: Vec<String> =
                    usage.violations.iter().map(ToString::to_string).collect();
                let text = hami.endpoint().metrics().await?;
                let mut reported: BTreeMap<(String, String, String), f64> = BTreeMap::new();
                for (labels, value) in series(&text, "hami_vgpu_memory_allocated_bytes") {
                    let key = |k: &str| labels.get(k).cloned().unwrap_or_default();
                    *reported
                        .entry((key("namespace"), key("pod"), key("device_uuid")))
                        .or_insert(0.0) += value;
                }
                for ((pod_ns, pod, device), value) in reported {
                    let found = pods.iter().find(|p| {
                        p.namespace().as_deref() == Some(pod_ns.as_str()) && p.name_any() == pod
                    });
                    let Some(p) = found else {
                        problems.push(format!(
                            "HAMi reports {value} bytes of device memory on {device} for pod {pod_ns}/{pod}, which no longer exists"
                        ));
                        continue;
                    };
                    let want: u64 = registry
                        .iter()
                        .filter_map(|b| b.pod_allocation(p.annotations()).ok())
                        .flat_map(|a| {
                            a.devices()
                                .filter(|d| d.id == device)
                                .map(|d| d.memory_mib)
                                .collect::<Vec<_>>()
                        })
                        .sum();
                    if (value - want as f64 * 1_048_576.0).abs() > 1.0 {
                        problems.push(format!(
                            "HAMi reports {value} bytes for pod {pod_ns}/{pod} on {device}; its allocation says {want} MiB"
                        ));
                    }
                }
                if problems.is_empty() {
                    return Ok(());
                }
                ensure!(
                    started.elapsed() < Duration::from_secs(30),
                    "{}",
                    problems.join("; ")
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
}

/// `hami::nvidia::device-plugin-nodes` (a real cluster with HAMi installed by its chart;
/// skipped on the local cluster, whose fake nodes have no device plugin pods): HAMi's
/// NVIDIA device plugin DaemonSet (`app.kubernetes.io/component: hami-device-plugin`) runs
/// a ready pod on every schedulable node its node selector (the chart's
/// `devicePlugin.nvidiaNodeSelector`, `gpu: "on"`) picks, and on no other node.
pub(super) fn device_plugin_nodes() -> hami_e2e_core::FnScenario {
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

/// `hami::all::helm-upgrade` (serial; a cluster given by `--kubeconfig` with
/// `HAMI_E2E_DEPLOY=helm`, `HAMI_E2E_HAMI_CHART` and `HAMI_E2E_HAMI_CHART_PREVIOUS`): the
/// run's release of HAMi's chart is taken to the previous chart by `helm upgrade`, upgraded
/// to the run's chart again, rolled back (`helm rollback`, to the previous chart) and rolled
/// back to the upgrade. After each step the release is `deployed` at the next revision, its
/// history says what Helm did, the scheduler Deployment runs that chart's HAMi image, HAMi's
/// webhook is there, and the pods that held HAMi's allocations before it are untouched.
pub(super) fn helm_upgrade() -> hami_e2e_core::FnScenario {
    scenario("hami::all::helm-upgrade")
        .labels(["upgrade", "hami-install", "cluster"])
        .serial()
        .requires(hami_e2e_helm::helm_upgrade_requirement())
        .run(|ctx| async move {
            let deployed = ctx.fixture::<hami_e2e_helm::DeployFixture>().await?;
            let Some((_, release)) = deployed.as_ref() else {
                return Err(Failure::msg("HAMi's chart was not installed by this run"));
            };
            let Some((previous, previous_version)) = hami_e2e_helm::Deploy::previous_from_env()?
            else {
                return Err(Failure::msg(format!(
                    "{} is unset",
                    hami_e2e_helm::DEPLOY_CHART_PREVIOUS_ENV
                )));
            };
            let hami_e2e_helm::Deploy::Helm { version, .. } = hami_e2e_helm::Deploy::from_env()?
            else {
                return Err(Failure::msg("HAMI_E2E_DEPLOY is not `helm`"));
            };
            // Two minutes a step, so that a rollout that cannot finish fails the scenario
            // with its cause, well within the scenario's timeout.
            let release = release.clone().timeout(Duration::from_secs(120));
            let release = &release;
            let client = ctx.fixture::<ClusterFixture>().await?.client();
            let start = release.status().await?.version;
            let allocated = allocated_pods(&client).await?;
            let steps: [(&str, u32, &str, &str); 4] = [
                ("upgrade", start + 1, &previous_version, "Upgrade complete"),
                ("upgrade", start + 2, &version, "Upgrade complete"),
                ("rollback", start + 3, &previous_version, ""),
                ("rollback", start + 4, &version, ""),
            ];
            for (action, revision, chart_version, description) in steps {
                let what = format!("helm {action} to chart {chart_version} (revision {revision})");
                let status = ctx
                    .step(what.clone(), async {
                        let done = if action == "upgrade" {
                            let chart = if chart_version == previous_version {
                                &previous
                            } else {
                                release.chart()
                            };
                            match hami_e2e_helm::HamiValues::default().to_values(chart_version) {
                                Ok(v) => release.upgrade(Some(chart), &v, false).await,
                                Err(e) => Err(e),
                            }
                        } else {
                            release.rollback(Some(revision - 2)).await
                        };
                        match done {
                            Ok(status) => Ok(status),
                            Err(e) => Err(Failure::msg(format!(
                                "{e}{}",
                                unschedulable(&client, release.namespace()).await
                            ))),
                        }
                    })
                    .await?;
                ensure!(
                    status.version == revision && status.info.status == "deployed",
                    "after {what}: the release is {} at revision {}",
                    status.info.status,
                    status.version
                );
                let history = release.history().await?;
                let last = history.last().ok_or_else(|| Failure::msg("no history"))?;
                let said = if description.is_empty() {
                    format!("Rollback to {}", revision - 2)
                } else {
                    description.to_string()
                };
                ensure!(
                    last.chart == format!("hami-{chart_version}") && last.description == said,
                    "after {what}: helm history's last revision is {last:?}, not chart hami-{chart_version} with `{said}`"
                );
                release
                    .wait_ready(client.clone(), Duration::from_secs(180))
                    .await?;
                let found = hami_e2e_helm::installed::discover(&client).await?;
                ensure!(
                    found.version.as_deref() == Some(format!("v{chart_version}").as_str())
                        && found.webhook.is_some(),
                    "after {what}: the cluster has {}",
                    found.describe()
                );
                let now = allocated_pods(&client).await?;
                ensure!(
                    now == allocated,
                    "after {what}: the pods holding HAMi's allocations changed: {allocated:?} before, {now:?} now"
                );
            }
            Ok(())
        })
}

/// The pods of `namespace` the scheduler cannot place, with its message, for a Helm
/// operation that timed out waiting for them (`; pending: hami-scheduler-... (0/1 nodes are
/// available: 1 node(s) didn't match pod anti-affinity rules ...)`); empty when none.
async fn unschedulable(client: &kube::Client, namespace: &str) -> String {
    let Ok(pods) = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    else {
        return String::new();
    };
    let pending: Vec<String> = pods
        .items
        .iter()
        .filter_map(|p| {
            let c = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
            Some(format!(
                "{} ({})",
                p.name_any(),
                c.message.clone().unwrap_or_default()
            ))
        })
        .collect();
    if pending.is_empty() {
        String::new()
    } else {
        format!("; not scheduled: {}", pending.join("; "))
    }
}

/// Every pod with a HAMi allocation annotation (`hami.io/vgpu-devices-allocated` and the
/// other vendors'), as `namespace/name` and the annotation: what a chart upgrade must not
/// touch.
async fn allocated_pods(
    client: &kube::Client,
) -> Result<std::collections::BTreeMap<String, Vec<(String, String)>>, Failure> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(pods
        .items
        .iter()
        .filter_map(|p| {
            let held: Vec<(String, String)> = p
                .annotations()
                .iter()
                .filter(|(k, _)| k.ends_with("-devices-allocated"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (!held.is_empty()).then(|| {
                (
                    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                    held,
                )
            })
        })
        .collect())
}
