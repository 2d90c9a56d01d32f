//! What a pod asks and what HAMi writes for it, for every vendor: several containers,
//! several devices, memory as a percentage.

use hami_e2e_core::{Failure, ensure};
use hami_e2e_devices::{DeviceBackend, DeviceRequest, PodRequest};

use crate::scenarios::hami::case::{HAMI_BUG, hami_scenario, in_units, one_device, profile_of};
use crate::scenarios::pod::DevicePod;

/// A request of two devices: for Ascend whole ones (its hard split gives several devices
/// only whole), for the others 2000 MiB and 20 % of the cores of each.
fn two_devices(backend: &dyn DeviceBackend) -> DeviceRequest {
    if backend.vendor() == "ascend" {
        DeviceRequest::devices(2)
    } else {
        DeviceRequest::devices(2)
            .memory_mib(in_units(backend, 2000))
            .cores(20)
    }
}

/// `hami::<vendor>::containers` (**hami-bug** for NVIDIA and Hygon): a pod of three
/// containers, the first and the last asking one device each (different memory and
/// cores), the middle one none: HAMi's allocation annotation has one entry per container
/// in order (the middle one empty, as `EncodePodSingleDevice` writes for a container
/// without devices), each matching its container's request, and the pod runs.
///
/// What HAMi v2.10.0 does instead for NVIDIA and Hygon: it leaves the device-less
/// container out, so the last container's device is recorded as the middle container's
/// (`GPU-1,NVIDIA,2000,20:;GPU-0,NVIDIA,7680,30:;` for three containers). The placeholder
/// for a container without devices is added under each node device's `Type`
/// (`nodeDeviceBaseTypes` in `pkg/scheduler/score.go`: `NVIDIA-Tesla T4`, `DCU-Z100L`),
/// while allocations are keyed by the request type (`NVIDIA`, `DCU`); for Cambricon
/// (`MLU`) and Ascend (`Ascend910B3`) the two are the same and the annotation is right.
pub(super) fn containers(vendor: &str) -> hami_e2e_core::FnScenario {
    let labels: &[&str] = if matches!(vendor, "nvidia" | "hygon") {
        &[HAMI_BUG]
    } else {
        &[]
    };
    hami_scenario(vendor, "containers", labels, |c| async move {
        let node = c.node("ctrs", 2).await?;
        let backend = c.backend()?;
        let profile = profile_of(backend).ok_or_else(|| Failure::msg("no profile"))?;
        let first = one_device(backend, 2000, 20);
        let last = one_device(backend, profile.memory_mib / 2, 30);
        let pod = DevicePod::new("three")
            .devices(backend, &first)?
            .container("plain")
            .container("last")
            .devices(backend, &last)?
            .on_node(&node)
            .build();
        c.ctx
            .step(
                "a pod of three containers, two with a device",
                c.create(&pod),
            )
            .await?;
        let pod = c.running("three", &node).await?;
        let request = PodRequest::containers([Some(first), None, Some(last)]);
        let allocation = c
            .ctx
            .step(
                "HAMi's allocation has an entry per container, each matching its request",
                c.check_pod(&pod, &request, &node),
            )
            .await?;
        let entries = allocation.allocated.as_ref().map_or(0, |a| a.len());
        ensure!(
            entries >= 3
                && allocation
                    .allocated
                    .as_ref()
                    .is_some_and(|a| a[0].len() == 1 && a[1].is_empty() && a[2].len() == 1),
            "HAMi's allocation of the three containers is {:?}, not [one device, none, one device]",
            allocation.allocated
        );
        c.lock_released(&node).await?;
        c.acknowledged(&node, 1).await
    })
}

/// `hami::<vendor>::devices`: a pod asking for two devices of a three-device node gets two
/// different devices of that node, each with the memory and cores asked.
pub(super) fn devices(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "devices", &[], |c| async move {
        let node = c.node("multi", 3).await?;
        let backend = c.backend()?;
        let request = two_devices(backend);
        c.create_on("pair", &node, &request).await?;
        let pod = c
            .ctx
            .step("a two-device pod runs", c.running("pair", &node))
            .await?;
        c.check_allocation(&pod, &request, &node).await?;
        let mut ids = c.device_ids(&pod)?;
        let count = ids.len();
        ids.sort();
        ids.dedup();
        ensure!(
            count == 2 && ids.len() == 2,
            "the two-device pod got {count} devices, {} of them different: {ids:?}",
            ids.len()
        );
        Ok(())
    })
}

/// `hami::<vendor>::memory-percentage` (vendors with a percentage resource): a pod asking
/// 25 % of a device's memory gets a quarter of the registered memory; with it, a pod of
/// 80 % is refused with `CardInsufficientMemory`.
pub(super) fn memory_percentage(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "memory-percentage", &[], |c| async move {
        let node = c.node("pct", 1).await?;
        let quarter = DeviceRequest::devices(1).memory_percentage(25).cores(10);
        c.create_on("quarter", &node, &quarter).await?;
        let pod = c.running("quarter", &node).await?;
        let allocation = c.check_allocation(&pod, &quarter, &node).await?;
        let device = c
            .devices_of(&node)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Failure::msg("no device"))?;
        let got: Vec<u64> = allocation.devices().map(|d| d.memory_mib).collect();
        ensure!(
            got == [device.memory_mib / 4],
            "25 % of a {} MiB device was granted as {got:?} MiB",
            device.memory_mib
        );
        let most = DeviceRequest::devices(1).memory_percentage(80).cores(10);
        c.create_on("most", &node, &most).await?;
        c.refused("most", "CardInsufficientMemory", &node).await
    })
}
