//! HAMi's scenarios over every vendor at once (`hami::all::*`, serial): HAMi's scheduler
//! restarted, upgraded and rolled back while pods of each vendor hold devices, its chart
//! upgraded and rolled back by Helm, and the oracle over the whole cluster at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hami_e2e_core::{Failure, Requirement, Scenario, ensure, scenario};
use hami_e2e_devices::{DeviceRequest, PodOptions};
use hami_e2e_helm::HamiFixture;
use hami_e2e_k8s::{ClusterFixture, NamespaceFixture};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::fixtures::{DevicesFixture, LOCAL_CLUSTER};
use crate::scenarios::hami::case::{Case, hami_scenario_with};
use crate::scenarios::hami::oracle::{series, vgpu_memory_by_device};
use crate::scenarios::pod::DevicePod;

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
fn restart(vendors: Vec<String>) -> hami_e2e_core::FnScenario {
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
fn upgrade(vendors: Vec<String>) -> hami_e2e_core::FnScenario {
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
                    c.create(
                        &DevicePod::new(&name)
                            .devices(c.backend()?, request)?
                            .on_node(node)
                            .build(),
                    )
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

/// `hami::all::oracle` (serial, after the others): the allocation oracle over the whole
/// cluster: every device of every HAMi node within budget by all live pods, and HAMi's
/// `hami_vgpu_memory_allocated_bytes` reporting only pods that still exist, each with
/// the memory of its allocation annotation (within 30 s of the last deletion).
fn run_oracle(vendors: &[String]) -> hami_e2e_core::FnScenario {
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

/// `hami::all::helm-upgrade` (serial; a cluster given by `--kubeconfig` with
/// `HAMI_E2E_DEPLOY=helm`, `HAMI_E2E_HAMI_CHART` and `HAMI_E2E_HAMI_CHART_PREVIOUS`): the
/// run's release of HAMi's chart is taken to the previous chart by `helm upgrade`, upgraded
/// to the run's chart again, rolled back (`helm rollback`, to the previous chart) and rolled
/// back to the upgrade. After each step the release is `deployed` at the next revision, its
/// history says what Helm did, the scheduler Deployment runs that chart's HAMi image, HAMi's
/// webhook is there, and the pods that held HAMi's allocations before it are untouched.
fn helm_upgrade() -> hami_e2e_core::FnScenario {
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

/// The scenarios over `vendors` (the keys of every backend HAMi serves) at once.
pub(super) fn scenarios(vendors: Vec<String>) -> Vec<Arc<dyn Scenario>> {
    vec![
        Arc::new(restart(vendors.clone())),
        Arc::new(upgrade(vendors.clone())),
        Arc::new(helm_upgrade()),
        Arc::new(run_oracle(&vendors)),
    ]
}
