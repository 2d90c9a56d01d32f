//! HAMi's scenarios for Ascend only (`hami::ascend::*`, for every Ascend chip): the
//! webhook's rounding to the chip's templates, and `huawei.com/vnpu-mode: hami-core`.

use std::sync::Arc;

use hami_e2e_core::{Failure, Scenario, ensure};
use hami_e2e_devices::{DeviceRequest, PodOptions, PodRequest};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::scenarios::hami::case::{admit, first_limit, hami_scenario};
use crate::scenarios::pod::DevicePod;

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
fn template(vendor: &str) -> hami_e2e_core::FnScenario {
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
                    admit(
                        &c,
                        &DevicePod::new(name)
                            .devices(backend, &request)?
                            .on_node(&node)
                            .build(),
                    ),
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
                admit(
                    &c,
                    &DevicePod::new("too-much")
                        .devices(backend, &too_much)?
                        .on_node(&node)
                        .build(),
                ),
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
fn vnpu_mode(vendor: &str) -> hami_e2e_core::FnScenario {
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

/// The Ascend-only scenarios of the backend (one chip) with key `vendor`.
pub(super) fn scenarios(vendor: &str) -> Vec<Arc<dyn Scenario>> {
    vec![Arc::new(template(vendor)), Arc::new(vnpu_mode(vendor))]
}
