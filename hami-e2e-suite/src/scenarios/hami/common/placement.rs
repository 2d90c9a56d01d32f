//! Where HAMi puts a pod's devices, for every vendor: the pod's use/avoid annotations of
//! device ids and types, the device and node policies (binpack, spread, mutex), and the
//! scoring weights.

use hami_e2e_core::{Failure, ensure};
use hami_e2e_devices::PodOptions;

use crate::scenarios::hami::case::{HAMI_BUG, hami_scenario, one_device};
use crate::scenarios::pod::DevicePod;

/// `hami::<vendor>::device-choice`: the pod's use/avoid id annotations (the vendor's
/// keys): asking for the second device's id puts the pod on it; avoiding it puts the pod
/// on the first; an id no device has is refused with `CardUuidMismatch`.
pub(super) fn device_choice(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "device-choice", &[], |c| async move {
        let node = c.node("choice", 2).await?;
        let backend = c.backend()?;
        let devices = c.devices_of(&node).await?;
        ensure!(
            devices.len() == 2,
            "{node} registers {} devices, not 2",
            devices.len()
        );
        let request = one_device(backend, 1000, 10);
        let cases = [
            (
                "use-second",
                PodOptions::default().use_id(&devices[1].id),
                Some(&devices[1].id),
            ),
            (
                "avoid-second",
                PodOptions::default().avoid_id(&devices[1].id),
                Some(&devices[0].id),
            ),
            (
                "use-missing",
                PodOptions::default().use_id("no-such-device"),
                None,
            ),
        ];
        for (name, options, want) in cases {
            let annotations = c.annotations(&options)?;
            c.create_annotated(name, &node, &request, &annotations)
                .await?;
            match want {
                Some(id) => {
                    let pod = c.running(name, &node).await?;
                    let got = c.device_ids(&pod)?;
                    ensure!(
                        got == [id.clone()],
                        "pod {name} ({annotations:?}) got {got:?}, not [{id}]"
                    );
                }
                None => c.refused(name, "CardUuidMismatch", &node).await?,
            }
        }
        Ok(())
    })
}

/// `hami::<vendor>::device-type` (vendors with type annotations; **hami-bug** for
/// Cambricon): a pod asking for a device type no device of the node has, or avoiding the
/// node's own type, is refused with `CardTypeMismatch`.
///
/// What HAMi v2.10.0 does instead for Cambricon: it defines `cambricon.com/use-mlutype`
/// and `cambricon.com/nouse-mlutype` (`pkg/device/cambricon/device.go`) but its
/// `checkType` never reads them: the pod is bound to the node anyway.
pub(super) fn device_type(vendor: &str) -> hami_e2e_core::FnScenario {
    let labels: &[&str] = if vendor == "cambricon" {
        &[HAMI_BUG]
    } else {
        &[]
    };
    hami_scenario(vendor, "device-type", labels, |c| async move {
        let node = c.node("type", 1).await?;
        let backend = c.backend()?;
        let devices = c.devices_of(&node).await?;
        let own = devices
            .first()
            .map(|d| d.device_type.clone())
            .ok_or_else(|| Failure::msg("no device"))?;
        let request = one_device(backend, 1000, 10);
        let types = [
            (
                "use-other-type",
                PodOptions::default().use_type("NoSuchModel"),
            ),
            ("avoid-own-type", PodOptions::default().avoid_type(&own)),
        ];
        for (name, options) in types {
            let annotations = c.annotations(&options)?;
            c.create_annotated(name, &node, &request, &annotations)
                .await?;
            c.refused(name, "CardTypeMismatch", &node).await?;
        }
        Ok(())
    })
}

/// `hami::<vendor>::device-policy`: on a node of two devices with one already in use,
/// `hami.io/gpu-scheduler-policy: binpack` puts a pod on the used device and `spread` on
/// the idle one; without the annotation HAMi spreads (its default).
pub(super) fn device_policy(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "device-policy", &["placement"], |c| async move {
        let node = c.node("dpol", 2).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 1000, 10);
        c.create_on("first", &node, &request).await?;
        let first = c.running("first", &node).await?;
        let used = c.device_ids(&first)?;
        let policy = |p: &str| vec![("hami.io/gpu-scheduler-policy".to_string(), p.to_string())];
        c.create_annotated("binpack", &node, &request, &policy("binpack"))
            .await?;
        let binpack = c.running("binpack", &node).await?;
        let got = c.device_ids(&binpack)?;
        ensure!(
            got == used,
            "binpack put the pod on {got:?}, not on the used device {used:?}"
        );
        c.create_annotated("spread", &node, &request, &policy("spread"))
            .await?;
        let spread = c.running("spread", &node).await?;
        let got = c.device_ids(&spread)?;
        ensure!(
            got.len() == 1 && !used.contains(&got[0]),
            "spread put the pod on {got:?}, not on the idle device (the used one is {used:?})"
        );
        // Two pods on the first device, one on the second: HAMi's default (spread) picks
        // the second, binpack would pick the first.
        c.create_on("default", &node, &request).await?;
        let default = c.running("default", &node).await?;
        let got_default = c.device_ids(&default)?;
        ensure!(
            got_default == got,
            "without the annotation HAMi put the pod on {got_default:?}, not on the less used {got:?} (the default device policy is spread)"
        );
        Ok(())
    })
}

/// `hami::<vendor>::node-policy`: of two nodes, one already holding a pod,
/// `hami.io/node-scheduler-policy: binpack` puts a pod on the busy node and `spread` on
/// the idle one; without the annotation HAMi binpacks (its default).
pub(super) fn node_policy(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "node-policy", &["placement"], |c| async move {
        let key = "hami-e2e.io/policy-group";
        let group = hami_e2e_k8s::label_value(&format!("{}-{}", c.ns.name(), c.ctx.attempt()));
        let busy = c.node_with("busy", 1, |_| {}, &[(key, &group)]).await?;
        let idle = c.node_with("idle", 1, |_| {}, &[(key, &group)]).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 1000, 10);
        c.create_on("resident", &busy, &request).await?;
        c.running("resident", &busy).await?;
        for (name, want) in [("binpack", &busy), ("spread", &idle)] {
            let pod = DevicePod::new(name)
                .devices(backend, &request)?
                .node_selector(key, &group)
                .annotation("hami.io/node-scheduler-policy", name)
                .build();
            c.create(&pod).await?;
            c.ctx
                .step(
                    format!("{name} puts the pod on {want}"),
                    c.running(name, want),
                )
                .await?;
        }
        // Two pods on the busy node, one on the idle: HAMi's default (binpack) picks the
        // busy one.
        let pod = DevicePod::new("default")
            .devices(backend, &request)?
            .node_selector(key, &group)
            .build();
        c.create(&pod).await?;
        c.ctx
            .step(
                format!("without the annotation (binpack by default) on {busy}"),
                c.running("default", &busy),
            )
            .await?;
        Ok(())
    })
}

/// `hami::<vendor>::scoring-weights`: a pod with a malformed
/// `hami.io/device-scoring-weights` annotation is refused with `FilteringFailed`
/// `calcScore failed invalid hami.io/device-scoring-weights annotation ...` and stays unbound.
pub(super) fn scoring_weights(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "scoring-weights", &["placement"], |c| async move {
        let node = c.node("weights", 1).await?;
        let backend = c.backend()?;
        let request = one_device(backend, 1000, 10);
        let bad = vec![(
            "hami.io/device-scoring-weights".to_string(),
            "slot=1,core".to_string(),
        )];
        c.create_annotated("bad-weights", &node, &request, &bad)
            .await?;
        c.ctx
            .step(
                "HAMi refuses it: invalid hami.io/device-scoring-weights",
                c.event(
                    "bad-weights",
                    "FilteringFailed",
                    "invalid hami.io/device-scoring-weights annotation",
                ),
            )
            .await?;
        c.unbound("bad-weights").await
    })
}

/// `hami.io/gpu-scheduler-policy: <policy>`.
fn policy_annotation(policy: &str) -> Vec<(String, String)> {
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
        c.create_on("resident", &node, &request).await?;
        let resident = c.running("resident", &node).await?;
        let used = c.device_ids(&resident)?;
        c.create_annotated("mutex-1", &node, &request, &policy_annotation("mutex"))
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
        c.create_annotated("mutex-2", &node, &request, &policy_annotation("mutex"))
            .await?;
        c.refused("mutex-2", "ExclusiveDeviceAllocateConflict", &node)
            .await?;
        c.create_on("sharer", &node, &request).await?;
        c.ctx
            .step(
                "a pod without the policy still shares a device",
                c.running("sharer", &node),
            )
            .await?;
        Ok(())
    })
}
