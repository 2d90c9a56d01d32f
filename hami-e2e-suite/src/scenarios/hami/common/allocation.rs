//! What HAMi allocates and refuses on one node, for every vendor: a device with memory and
//! cores, shares of one device, ten pods in a row, a share freed, too many devices, time
//! slicing, cores, and exclusive use.

use std::time::{Duration, Instant};

use hami_e2e_core::{Failure, ensure};
use hami_e2e_devices::DeviceRequest;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::scenarios::hami::case::{hami_scenario, one_device, profile_of};
use crate::scenarios::pod::DevicePod;

/// `hami::<vendor>::allocation`: a pod asking for one device with memory and cores is
/// mutated by HAMi's webhook (its scheduler name), filtered and bound by HAMi to the fake
/// node (`FilteringSucceed`, `BindingSucceed`), its allocation annotation matches the
/// request on one of the node's devices, the fake device plugin acknowledges it
/// (`bind-phase: success`), it runs, and the node lock is released.
pub(super) fn allocation(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "allocation", &["smoke"], |c| async move {
        let node = c.node("alloc", 2).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 3000, 30);
        let pod = DevicePod::new("alloc")
            .devices(backend, &request)?
            .on_node(&node)
            .build();
        c.ctx
            .step("create a pod asking for one device", c.create(&pod))
            .await?;
        let pod = c
            .ctx
            .step("it runs on the fake node", c.running("alloc", &node))
            .await?;
        let scheduler = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_default();
        ensure!(
            scheduler == c.hami.scheduler_name(),
            "HAMi's webhook did not set the scheduler: schedulerName is `{scheduler}`, not `{}`",
            c.hami.scheduler_name()
        );
        c.ctx
            .step(
                "HAMi's allocation matches the request",
                c.check_allocation(&pod, &request, &node),
            )
            .await?;
        let filtered = c
            .ctx
            .step(
                "HAMi filtered it",
                c.event("alloc", "FilteringSucceed", &node),
            )
            .await?;
        ensure!(
            filtered.contains("find fit node"),
            "FilteringSucceed says `{filtered}`"
        );
        c.ctx
            .step("HAMi bound it", c.event("alloc", "BindingSucceed", &node))
            .await?;
        c.ctx
            .step("the node lock is released", c.lock_released(&node))
            .await?;
        c.acknowledged(&node, 1).await
    })
}

/// `hami::<vendor>::sharing`: on a node with one device, two pods of 40 % of its memory
/// each share it (the same device in both allocations); a third of 40 % does not fit and
/// stays Pending with HAMi's `FilteringFailed` events (`CardInsufficientMemory` on the node,
/// and `no available node`).
pub(super) fn sharing(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "sharing", &[], |c| async move {
        let node = c.node("share", 1).await?;
        let backend = c.backend()?;
        let request = c.share(2, 5, 20)?;
        let mut ids = Vec::new();
        for name in ["first", "second"] {
            let pod = DevicePod::new(name)
                .devices(backend, &request)?
                .on_node(&node)
                .build();
            c.ctx
                .step(
                    format!("pod {name} takes 40 % of the device"),
                    c.create(&pod),
                )
                .await?;
            let pod = c.running(name, &node).await?;
            let allocation = c.check_allocation(&pod, &request, &node).await?;
            ids.extend(allocation.devices().map(|d| d.id.clone()));
        }
        ensure!(
            ids.len() == 2 && ids[0] == ids[1],
            "the two pods do not share one device: {ids:?}"
        );
        let pod = DevicePod::new("third")
            .devices(backend, &request)?
            .on_node(&node)
            .build();
        c.ctx
            .step("a third pod of 40 % is created", c.create(&pod))
            .await?;
        let reason = c
            .ctx
            .step(
                "HAMi refuses it: CardInsufficientMemory",
                c.event("third", "FilteringFailed", "CardInsufficientMemory"),
            )
            .await?;
        ensure!(
            reason.contains(&node),
            "the refusal does not name {node}: `{reason}`"
        );
        c.ctx
            .step(
                "and no available node",
                c.event("third", "FilteringFailed", "no available node"),
            )
            .await?;
        let third = c.ns.api::<Pod>().get("third").await?;
        let phase = third
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let bound = third.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(
            phase == "Pending" && bound.is_none(),
            "the third pod is {phase} on {bound:?}, not Pending and unbound"
        );
        ensure!(
            !third
                .annotations()
                .contains_key(hami_e2e_devices::VGPU_NODE),
            "HAMi wrote hami.io/vgpu-node on the refused pod"
        );
        Ok(())
    })
}

/// `hami::<vendor>::ten-in-a-row`: ten pods created one after the other onto one node each
/// run with their allocation acknowledged, and none waits for HAMi's node lock to time out
/// (each is Running sooner than the 30 s node lock timeout of the local cluster).
pub(super) fn ten_in_a_row(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "ten-in-a-row", &[], |c| async move {
        let backend = c.backend()?;
        let profile = profile_of(backend).ok_or_else(|| Failure::msg("no profile"))?;
        let split = profile.fake_devices("x", 1).split.max(1);
        let devices = 10u32.div_ceil(split).max(2) + u32::from(backend.vendor() == "ascend");
        let node = c.node("ten", devices).await?;
        let request = one_device(backend, 1000, 5);
        let mut slowest = Duration::ZERO;
        for i in 0..10 {
            let name = format!("pod-{i}");
            let pod = DevicePod::new(&name)
                .devices(backend, &request)?
                .on_node(&node)
                .build();
            let started = Instant::now();
            c.create(&pod).await?;
            let pod = c.running(&name, &node).await?;
            slowest = slowest.max(started.elapsed());
            c.check_allocation(&pod, &request, &node).await?;
        }
        let lock_timeout = hami_e2e_helm::hami::default_local_options().node_lock_timeout;
        ensure!(
            slowest < lock_timeout,
            "the slowest of ten pods took {slowest:.1?} to run, HAMi's node lock timeout ({lock_timeout:?}): one waited for a lock nobody released"
        );
        c.lock_released(&node).await?;
        c.acknowledged(&node, 10).await
    })
}

/// `hami::<vendor>::release`: a pod deleted frees its share: with 60 % of the one device
/// taken, a second 60 % pod is refused (`CardInsufficientMemory`); once the first is
/// deleted, the second is bound and runs.
pub(super) fn release(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "release", &[], |c| async move {
        let node = c.node("free", 1).await?;
        let request = c.share(3, 5, 20)?;
        c.create_on("holder", &node, &request).await?;
        c.running("holder", &node).await?;
        c.create_on("waiter", &node, &request).await?;
        c.refused("waiter", "CardInsufficientMemory", &node).await?;
        c.delete_pod("holder").await?;
        let pod = c
            .ctx
            .step("the second pod runs", c.running("waiter", &node))
            .await?;
        c.check_allocation(&pod, &request, &node).await?;
        Ok(())
    })
}

/// `hami::<vendor>::too-many-devices`: a pod asking for two devices of a one-device node
/// stays Pending with `FilteringFailed` `no available node` (HAMi's `NodeInsufficientDevice`
/// has no per-reason event).
pub(super) fn too_many_devices(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "too-many-devices", &[], |c| async move {
        let node = c.node("few", 1).await?;
        let request = DeviceRequest::devices(2);
        c.create_on("greedy", &node, &request).await?;
        c.ctx
            .step(
                "HAMi finds no node",
                c.event("greedy", "FilteringFailed", "no available node"),
            )
            .await?;
        c.unbound("greedy").await
    })
}

/// `hami::<vendor>::time-slicing`: on a device registered with a split count of 2, two
/// small pods share it and a third is refused with `CardTimeSlicingExhausted`.
pub(super) fn time_slicing(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "time-slicing", &[], |c| async move {
        let node = c.node_with("slice", 1, |f| f.split = 2, &[]).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 1000, 5);
        for name in ["slice-1", "slice-2"] {
            c.create_on(name, &node, &request).await?;
            c.running(name, &node).await?;
        }
        c.create_on("slice-3", &node, &request).await?;
        c.refused("slice-3", "CardTimeSlicingExhausted", &node)
            .await
    })
}

/// `hami::<vendor>::cores` (vendors with a core share): two pods of 60 % of the one
/// device's cores do not fit together: the second is refused with `CardInsufficientCore`.
pub(super) fn cores(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "cores", &[], |c| async move {
        let node = c.node("cores", 1).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 1000, 60);
        c.create_on("cores-1", &node, &request).await?;
        c.running("cores-1", &node).await?;
        c.create_on("cores-2", &node, &request).await?;
        c.refused("cores-2", "CardInsufficientCore", &node).await
    })
}

/// `hami::<vendor>::exclusive` (vendors with a core share): a pod asking 100 % of the
/// cores of a device another pod already uses (with memory, no cores) is refused with
/// `ExclusiveDeviceAllocateConflict`.
pub(super) fn exclusive(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "exclusive", &[], |c| async move {
        let node = c.node("excl", 1).await?;
        let backend = c.backend()?;
        c.create(
            &DevicePod::new("sharer")
                .devices(backend, &one_device(backend, 1000, 0))?
                .on_node(&node)
                .build(),
        )
        .await?;
        c.running("sharer", &node).await?;
        c.create(
            &DevicePod::new("whole")
                .devices(backend, &one_device(backend, 1000, 100))?
                .on_node(&node)
                .build(),
        )
        .await?;
        c.refused("whole", "ExclusiveDeviceAllocateConflict", &node)
            .await
    })
}
