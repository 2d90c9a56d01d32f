//! The scenarios of the cluster itself, `cluster::*`: its nodes are Ready, and a pod runs
//! in a scenario's namespace.

use std::sync::Arc;
use std::time::Duration;

use hami_e2e_core::{Requirement, Scenario, ensure, scenario};
use hami_e2e_k8s::{ClusterFixture, NamespaceFixture, wait};
use k8s_openapi::api::core::v1::Node;

use crate::scenarios::pod::DevicePod;

/// The scenarios that do not depend on a device backend.
pub(crate) fn scenarios() -> Vec<Arc<dyn Scenario>> {
    vec![
        Arc::new(
            scenario("cluster/nodes-ready")
                .label("smoke")
                .run(|ctx| async move {
                    let cluster = ctx.fixture::<ClusterFixture>().await?;
                    let nodes = kube::Api::<Node>::all(cluster.client())
                        .list(&Default::default())
                        .await?;
                    let ready = nodes
                        .items
                        .iter()
                        .filter(|n| wait::node_is_ready(n))
                        .count();
                    ensure!(
                        ready > 0,
                        "no Ready node among {} in {}",
                        nodes.items.len(),
                        cluster.description()
                    );
                    Ok(())
                }),
        ),
        Arc::new(
            scenario("cluster/pod-runs-in-its-namespace")
                .label("smoke")
                .requires(Requirement::at_least("ready nodes", 1))
                .run(|ctx| async move {
                    let ns = ctx.fixture::<NamespaceFixture>().await?;
                    let pod = DevicePod::new("sleeper").tolerate_all().build();
                    ctx.step("create a pod", ns.apply(&pod)).await?;
                    let running = ctx
                        .step(
                            "wait until it runs",
                            wait::pod_running(&ns.api(), "sleeper", Duration::from_secs(120)),
                        )
                        .await?;
                    let node = running.spec.and_then(|s| s.node_name).unwrap_or_default();
                    ensure!(!node.is_empty(), "running without a node");
                    Ok(())
                }),
        ),
    ]
}
