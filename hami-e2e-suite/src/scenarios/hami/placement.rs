//! Where HAMi puts a pod's devices: the mutex device policy and NUMA binding.

use super::*;

/// `hami.io/gpu-scheduler-policy: <policy>`.
fn device_policy(policy: &str) -> Vec<(String, String)> {
    vec![(
        "hami.io/gpu-scheduler-policy".to_string(),
        policy.to_string(),
    )]
}

/// `hami::<vendor>::mutex`: `hami.io/gpu-scheduler-policy: mutex` takes only idle
/// devices: on a node of two devices, one in use, a mutex pod gets the idle one; with both
/// in use, the next mutex pod is refused with `ExclusiveDeviceAllocateConflict` though both
/// have room to share (a plain pod still fits).
pub(super) fn mutex(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "mutex", &["placement"], |c| async move {
        let node = c.node("mutex", 2).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 1000, 10);
        c.create(&hami_pod(backend, "resident", &node, &request)?)
            .await?;
        let resident = c.running("resident", &node).await?;
        let used = c.device_ids(&resident)?;
        c.create_annotated("mutex-1", &node, &request, &device_policy("mutex"))
            .await?;
        let first = c
            .ctx
            .step(
                "a mutex pod gets the idle device",
                c.running("mutex-1", &node),
            )
            .await?;
        let got = c.device_ids(&first)?;
        ensure!(
            got.len() == 1 && !used.contains(&got[0]),
            "the mutex pod got {got:?}, not the idle device (the used one is {used:?})"
        );
        c.create_annotated("mutex-2", &node, &request, &device_policy("mutex"))
            .await?;
        c.refused("mutex-2", "ExclusiveDeviceAllocateConflict", &node)
            .await?;
        c.create(&hami_pod(backend, "sharer", &node, &request)?)
            .await?;
        c.ctx
            .step(
                "a pod without the policy still shares a device",
                c.running("sharer", &node),
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
pub(super) fn numa(vendor: &str) -> hami_e2e_core::FnScenario {
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
        c.create(&hami_pod(backend, "unbound", &node, &pair)?)
            .await?;
        let unbound = c
            .ctx
            .step(
                "without numa-bind the pair runs across NUMA nodes",
                c.running("unbound", &node),
            )
            .await?;
        let mut got = c.device_ids(&unbound)?;
        got.sort();
        let mut want = vec![devices[0].id.clone(), devices[3].id.clone()];
        want.sort();
        ensure!(
            got == want,
            "the unbound pair got {got:?}, not the free GPUs {want:?}"
        );
        // NUMA node 1's held GPU is freed.
        c.delete_pod("hold-1").await?;
        c.create_annotated("numa-1", &node, &pair, &bind).await?;
        let bound = c
            .ctx
            .step(
                "a NUMA-bound pair gets NUMA node 1",
                c.running("numa-1", &node),
            )
            .await?;
        let mut got = c.device_ids(&bound)?;
        got.sort();
        let mut want = vec![devices[2].id.clone(), devices[3].id.clone()];
        want.sort();
        ensure!(
            got == want,
            "the NUMA-bound pair got {got:?}, not NUMA node 1's GPUs {want:?}"
        );
        Ok(())
    })
}
