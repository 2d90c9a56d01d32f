//! What a pod asks and what HAMi writes for it: several containers, several devices, memory
//! as a percentage, and Ascend's templates and `huawei.com/vnpu-mode`.

use super::*;

/// `pod` with `backend`'s limits for `request` on its current container.
fn with_limits(
    mut pod: PodBuilder,
    backend: &dyn DeviceBackend,
    request: &DeviceRequest,
) -> Result<PodBuilder, Failure> {
    for (k, v) in backend
        .container_resources(request)?
        .limits
        .unwrap_or_default()
    {
        pod = pod.limit(k, v.0);
    }
    Ok(pod)
}

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
        let pod = with_limits(
            PodBuilder::new("three").command(["sleep", "3600"]),
            backend,
            &first,
        )?
        .container("plain")
        .command(["sleep", "3600"])
        .container("last")
        .command(["sleep", "3600"]);
        let pod = with_limits(pod, backend, &last)?
            .node_selector("kubernetes.io/hostname", &node)
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
        c.create(&hami_pod(backend, "pair", &node, &request)?)
            .await?;
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
        let backend = c.backend()?;
        let quarter = DeviceRequest::devices(1).memory_percentage(25).cores(10);
        c.create(&hami_pod(backend, "quarter", &node, &quarter)?)
            .await?;
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
        c.create(&hami_pod(backend, "most", &node, &most)?).await?;
        c.refused("most", "CardInsufficientMemory", &node).await
    })
}

/// The `huawei.com/<chip>` runtime annotation HAMi writes for Ascend: `(temp, memory)` per
/// device.
fn ascend_runtime(pod: &Pod, chip: &str) -> Result<Vec<(String, u64)>, Failure> {
    let key = format!("huawei.com/{chip}");
    let text = pod
        .annotations()
        .get(&key)
        .ok_or_else(|| Failure::assertion(format!("pod {} has no {key}", pod.name_any())))?;
    let list: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| Failure::assertion(format!("{key} of {} is not JSON: {e}", pod.name_any())))?;
    Ok(list
        .iter()
        .map(|v| {
            (
                v["temp"].as_str().unwrap_or_default().to_owned(),
                v["memory"].as_u64().unwrap_or_default(),
            )
        })
        .collect())
}

/// `hami::ascend::template`: outside hami-core mode HAMi's webhook rounds an Ascend memory
/// request up to the chip's smallest template that holds it (2000 → 16384 MiB,
/// `vir05_1c_16g`; 20000 → 32768, `vir10_3c_32g` on the 910B3), HAMi allocates that and
/// names the template in the pod's `huawei.com/<chip>` annotation; a request over the
/// device's capacity is denied by the webhook (`... is invalid`).
pub(super) fn ascend_template(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "template", &["webhook"], |c| async move {
        let node = c.node("tmpl", 2).await?;
        let backend = c.backend()?;
        let chip = backend.device_type().to_owned();
        let memory = backend
            .resource_names()
            .memory
            .clone()
            .ok_or_else(|| Failure::msg(format!("{chip} has no memory resource")))?;
        let templates = hami_e2e_devices::AscendChip::named(&chip)
            .map(|a| a.templates)
            .unwrap_or_default();
        ensure!(
            templates.len() >= 2,
            "{chip} has {} templates in HAMi's catalogue; the scenario needs two",
            templates.len()
        );
        let asks = [
            ("small", templates[0].memory_mib / 8, &templates[0]),
            ("large", templates[0].memory_mib + 1, &templates[1]),
        ];
        for (name, ask, template) in asks {
            let request = DeviceRequest::devices(1).memory_mib(ask);
            let admitted = c
                .ctx
                .step(
                    format!("a pod asking {ask} MiB is admitted"),
                    admit(&c, &hami_pod(backend, name, &node, &request)?),
                )
                .await?
                .map_err(|m| Failure::assertion(format!("the {ask} MiB pod was refused: `{m}`")))?;
            let limit = first_limit(&admitted, &memory);
            ensure!(
                limit.as_deref() == Some(template.memory_mib.to_string().as_str()),
                "HAMi's webhook rewrote {memory}: {ask} to {limit:?}, not to template {}'s {}",
                template.name,
                template.memory_mib
            );
            let pod = c.running(name, &node).await?;
            c.check_allocation(&pod, &request, &node).await?;
            let runtime = ascend_runtime(&pod, &chip)?;
            ensure!(
                runtime == [(template.name.clone(), template.memory_mib)],
                "pod {name}'s huawei.com/{chip} is {runtime:?}, not [({}, {})]",
                template.name,
                template.memory_mib
            );
        }
        let too_much = DeviceRequest::devices(1).memory_mib(1_000_000);
        let answer = c
            .ctx
            .step(
                "a request over the device's capacity is denied",
                admit(&c, &hami_pod(backend, "too-much", &node, &too_much)?),
            )
            .await?;
        match answer {
            Err(m) => ensure!(
                m.contains(hami_e2e_helm::WEBHOOK_NAME) && m.contains("is invalid"),
                "the over-capacity pod was refused, but not by HAMi's webhook with `is invalid`: `{m}`"
            ),
            Ok(_) => {
                return Err(Failure::assertion(format!(
                    "HAMi's webhook admitted {memory}: 1000000 on a {chip}"
                )));
            }
        }
        Ok(())
    })
}

/// `hami::ascend::vnpu-mode`: a pod annotated `huawei.com/vnpu-mode: hami-core` is refused
/// with `ModeNotFit` on a node without `hami-vnpu-core: "true"` (the chart's default
/// `hamiVnpuCore: false`), and on a node with it runs with the memory and cores asked,
/// unrounded.
pub(super) fn ascend_vnpu_mode(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "vnpu-mode", &[], |c| async move {
        let hard = c.node("hard", 1).await?;
        let soft = c
            .node_annotated("soft", 1, |_| {}, &[], &[("hami-vnpu-core", "true")])
            .await?;
        let options = PodOptions::default().mode(hami_e2e_devices::VNPU_MODE_HAMI_CORE);
        let annotations = c.annotations(&options)?;
        let request = DeviceRequest::devices(1).memory_mib(3000).cores(10);
        c.create_annotated("on-hard", &hard, &request, &annotations)
            .await?;
        c.refused("on-hard", "ModeNotFit", &hard).await?;
        c.create_annotated("on-soft", &soft, &request, &annotations)
            .await?;
        let pod = c
            .ctx
            .step(
                "the hami-core pod runs on the soft-split node",
                c.running("on-soft", &soft),
            )
            .await?;
        let want = PodRequest::single(request).options(options);
        c.check_pod(&pod, &want, &soft).await?;
        let got: Vec<(u64, u32)> = c
            .backend()?
            .pod_allocation(pod.annotations())?
            .devices()
            .map(|d| (d.memory_mib, d.cores))
            .collect();
        ensure!(
            got == [(3000, 10)],
            "the hami-core pod got {got:?} (MiB, cores), not [(3000, 10)]"
        );
        Ok(())
    })
}
