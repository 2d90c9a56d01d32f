//! Faults, for every vendor: a device plugin that fails an allocation, a node lock taken by
//! an unacknowledged allocation, a device turned unhealthy, a device plugin gone.

use std::time::{Duration, Instant};

use hami_e2e_core::{Failure, ensure};
use hami_e2e_devices::BIND_PHASE;
use hami_e2e_k8s::wait;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::scenarios::hami::case::{HAMI_BUG, Outcome, POD_WAIT, hami_scenario, one_device, phase};
use crate::scenarios::pod::DevicePod;

/// `hami::<vendor>::allocation-failure` (fault): the device plugin fails a pod's
/// allocation (`bind-phase: failed`, the pod `Failed` as kubelet marks it); the node lock
/// is released, HAMi frees the failed pod's share (the next pod takes 60 % of the one
/// device, which would not fit beside it), and the next pod runs.
pub(super) fn allocation_failure(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "allocation-failure", &["fault"], |c| async move {
        let node = c.node("afail", 1).await?;
        let backend = c.backend()?;
        let request = c.share(3, 5, 30)?;
        c.hami.agent().fail_next_allocation(&node);
        c.ctx
            .step(
                "a pod whose allocation the device plugin fails",
                c.create(
                    &DevicePod::new("failed")
                        .devices(backend, &request)?
                        .on_node(&node)
                        .build(),
                ),
            )
            .await?;
        let api = c.ns.api::<Pod>();
        let failed = c
            .ctx
            .step(
                "it ends Failed with bind-phase failed",
                wait::until(
                    &api,
                    "failed",
                    "to be Failed with bind-phase failed",
                    POD_WAIT,
                    |p: Option<&Pod>| {
                        p.is_some_and(|p| {
                            phase(p) == "Failed"
                                && p.annotations().get(BIND_PHASE).map(String::as_str)
                                    == Some("failed")
                        })
                    },
                ),
            )
            .await?;
        let reason = failed
            .status
            .as_ref()
            .and_then(|s| s.reason.clone())
            .unwrap_or_default();
        ensure!(
            reason == "UnexpectedAdmissionError",
            "the failed pod's reason is `{reason}`, not UnexpectedAdmissionError"
        );
        c.ctx
            .step("the node lock is released", c.lock_released(&node))
            .await?;
        let agent = c.hami.agent();
        let started = Instant::now();
        while agent.failed(&node) < 1 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure!(
            agent.failed(&node) == 1,
            "the fake device plugin failed {} allocations, not 1",
            agent.failed(&node)
        );
        c.ctx
            .step(
                "the next pod, 60 % of the same device, runs",
                c.create(
                    &DevicePod::new("next")
                        .devices(backend, &request)?
                        .on_node(&node)
                        .build(),
                ),
            )
            .await?;
        let next = c.running("next", &node).await?;
        c.check_allocation(&next, &request, &node).await?;
        c.lock_released(&node).await?;
        c.acknowledged(&node, 1).await
    })
}

/// `hami::<vendor>::lock-contention` (fault): while the device plugin has not acknowledged
/// the first pod's allocation (the fake agent holds it), a second pod bound to the same
/// node meets HAMi's node lock (`BindingFailed` `... has been locked within ...` naming the
/// node); once the first is acknowledged the second is bound too, and both run with their
/// allocations acknowledged.
///
/// **hami-bug** for Cambricon (a race: it failed in 3 of 8 runs on a 2-core machine): HAMi v2.10.0 binds
/// the second pod while the first still holds the node. Cambricon's `LockNode` (`pkg/device/cambricon/device.go`) looks for
/// `cambricon.com/dsmlu.lock` on the node of the scheduler's informer cache
/// (`nodeLister.Get` in `Bind`) and sets it with a merge patch that carries no
/// `resourceVersion`: two binds in flight (kube-scheduler binds asynchronously) both find
/// no lock and both take it. The generic lock of the other vendors (`pkg/util/nodelock`)
/// reads the node from the API server and patches with its `resourceVersion`.
pub(super) fn lock_contention(vendor: &str) -> hami_e2e_core::FnScenario {
    let labels: &[&str] = if vendor == "cambricon" {
        &["fault", HAMI_BUG]
    } else {
        &["fault"]
    };
    hami_scenario(vendor, "lock-contention", labels, |c| async move {
        let node = c.node("lock", 2).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 1000, 10);
        let agent = c.hami.agent();
        agent.hold_acknowledgements(&node, true);
        for name in ["slow-first", "slow-second"] {
            c.create_on(name, &node, &request).await?;
        }
        let events: Api<Event> = Api::namespaced(c.ns.client(), c.ns.name());
        let contention = c
            .ctx
            .step(
                "the second pod meets the first's node lock (BindingFailed)",
                async {
                    let started = Instant::now();
                    loop {
                        let listed = events
                            .list(&ListParams::default().fields("reason=BindingFailed"))
                            .await?;
                        let found: Vec<String> = listed
                            .items
                            .iter()
                            .filter_map(|e| e.message.clone())
                            .filter(|m| m.contains("has been locked within"))
                            .collect();
                        if !found.is_empty() {
                            return Ok::<_, Failure>(found);
                        }
                        ensure!(
                            started.elapsed() < POD_WAIT,
                            "no BindingFailed event about {node}'s lock within {POD_WAIT:?} while its first allocation was unacknowledged ({} BindingFailed events)",
                            listed.items.len()
                        );
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                },
            )
            .await;
        agent.hold_acknowledgements(&node, false);
        let contention = contention?;
        ensure!(
            contention.iter().all(|m| m.contains(&node)),
            "a lock contention event names another node: {contention:?}"
        );
        for name in ["slow-first", "slow-second"] {
            let pod = c
                .ctx
                .step(format!("{name} runs, acknowledged"), c.running(name, &node))
                .await?;
            c.check_allocation(&pod, &request, &node).await?;
        }
        c.lock_released(&node).await?;
        c.acknowledged(&node, 2).await
    })
}

/// `hami::<vendor>::unhealthy-device` (fault; vendors with a register annotation): the
/// node's one device turns unhealthy in its register annotation; within HAMi's register
/// period a new pod is refused with `CardNotHealth`; healthy again, a new pod runs.
pub(super) fn unhealthy_device(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "unhealthy-device", &["fault"], |c| async move {
        let node = c.node("sick", 1).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 1000, 10);
        let node_obj = Api::<Node>::all(c.ns.client()).get(&node).await?;
        let device = backend
            .node_devices(&node_obj)?
            .first()
            .map(|d| d.id.clone())
            .ok_or_else(|| Failure::msg(format!("{node} has no device")))?;
        c.ctx
            .step(
                format!("device {device} turns unhealthy"),
                c.hami
                    .agent()
                    .set_device_health(&node, &backend.key(), &device, false),
            )
            .await?;
        let (_, refused) = c
            .ctx
            .step(
                "HAMi refuses new pods with CardNotHealth",
                c.until_outcome(
                    "sick",
                    &node,
                    &request,
                    "CardNotHealth",
                    false,
                    Duration::from_secs(40),
                ),
            )
            .await?;
        if let Outcome::Refused(m) = &refused {
            ensure!(m.contains(&node), "the refusal does not name {node}: `{m}`");
        }
        c.ctx
            .step(
                format!("device {device} is healthy again"),
                c.hami
                    .agent()
                    .set_device_health(&node, &backend.key(), &device, true),
            )
            .await?;
        let (name, _) = c
            .ctx
            .step(
                "a new pod is bound to it",
                c.until_outcome(
                    "healed",
                    &node,
                    &request,
                    "CardNotHealth",
                    true,
                    Duration::from_secs(40),
                ),
            )
            .await?;
        let pod = c.running(&name, &node).await?;
        c.check_allocation(&pod, &request, &node).await?;
        Ok(())
    })
}

/// `hami::<vendor>::plugin-gone` (fault, slow, **hami-bug**): the vendor's device plugin
/// goes away (its count is 0 in allocatable, and it stops answering HAMi's handshake);
/// HAMi drops the node's devices (its metrics no longer show the node: within 35 s, or for
/// vendors with a handshake key, within 120 s, as `Requesting_` may have to be 60 s old),
/// removes the
/// handshake annotation it armed, refuses a new pod (`no available node`), and does not
/// take the devices back for the next 20 s (two register periods).
///
/// What HAMi v2.10.0 does instead (`pkg/scheduler/scheduler.go` `register`):
/// - NVIDIA, Hygon, Ascend: it drops them, deletes the handshake annotation, and on its next
///   tick (15 s later) finds no handshake, writes `Requesting_<now>`, counts that as
///   healthy and re-reads the devices from the register annotation the gone plugin left:
///   the devices are offered again for 60 s of every 75 s, and pods are bound to a node
///   whose allocatable count is 0.
/// - Cambricon: never drops them. Its devices come from capacity; at 0, `GetNodeDevices`
///   returns an error (`device not found`), and `register` skips the node on that error
///   before the "zero devices: remove the stale entry" branch.
pub(super) fn plugin_gone(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(
        vendor,
        "plugin-gone",
        &["fault", "slow", HAMI_BUG],
        |c| async move {
            let node = c.node("gone", 1).await?;
            let backend = c.backend()?;
            let keys = backend.annotation_keys().clone();
            let request = one_device(backend, 1000, 10);
            let agent = c.hami.agent();
            agent.stop_handshake(&node, true);
            c.ctx
                .step(
                    "the device plugin goes away (allocatable 0)",
                    agent.remove_devices(&node, &backend.key()),
                )
                .await?;
            // With a handshake key HAMi may wait for its `Requesting_` to be 60 s old (NVIDIA
            // too, when it never saw the count change); Cambricon has no handshake.
            let within = if keys.handshake.is_some() {
                Duration::from_secs(120)
            } else {
                Duration::from_secs(35)
            };
            c.ctx
                .step(
                    "HAMi drops the node's devices",
                    c.unregistered(&node, within),
                )
                .await?;
            if let Some(key) = &keys.handshake {
                let node_obj = Api::<Node>::all(c.ns.client()).get(&node).await?;
                let value = node_obj.annotations().get(key).cloned();
                ensure!(
                    value.as_deref().is_none_or(|v| v.starts_with("Deleted")),
                    "HAMi left {key}: {value:?} on {node} after dropping its devices"
                );
            }
            c.ctx
                .step(
                    "a new pod finds no node",
                    c.create(
                        &DevicePod::new("orphan")
                            .devices(backend, &request)?
                            .on_node(&node)
                            .build(),
                    ),
                )
                .await?;
            c.event("orphan", "FilteringFailed", "no available node")
                .await?;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                let nodes = c.hami.endpoint().registered_nodes().await?;
                ensure!(
                    !nodes.iter().any(|n| n == &node),
                    "HAMi took {node}'s devices back {:.0?} after dropping them, though its device plugin is still gone (allocatable 0, no handshake answer)",
                    started.elapsed()
                );
                let orphan = c.ns.api::<Pod>().get("orphan").await?;
                ensure!(
                    orphan
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_none(),
                    "the pod `orphan` was bound to {node}, whose device plugin is gone"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(())
        },
    )
}
