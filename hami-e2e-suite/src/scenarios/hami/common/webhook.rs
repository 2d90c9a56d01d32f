//! HAMi's webhook, for every vendor: the pods it denies and the ones it leaves alone.

use hami_e2e_core::{Failure, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::scenarios::hami::case::{NOWHERE, admit, hami_scenario, one_device};
use crate::scenarios::pod::DevicePod;

fn scheduler_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.clone())
        .unwrap_or_default()
}

/// `hami::<vendor>::webhook-guards`: HAMi's webhook denies a privileged container asking
/// for a device (`container <name> is privileged`) and a device pod with `spec.nodeName`
/// set (`pod has node assigned`); it leaves alone a pod labelled `hami.io/webhook: ignore`,
/// a pod of another scheduler, and a privileged pod without devices (their scheduler
/// stays what it was).
pub(super) fn webhook_guards(vendor: &str) -> hami_e2e_core::FnScenario {
    hami_scenario(vendor, "webhook-guards", &["webhook"], |c| async move {
        let backend = c.backend()?;
        let request = one_device(backend, 1000, 10);
        let denied = [
            (
                "privileged",
                DevicePod::new("privileged")
                    .devices(backend, &request)?
                    .privileged(),
                "container main is privileged",
            ),
            (
                "preset node",
                DevicePod::new("preset-node")
                    .devices(backend, &request)?
                    .node_name("hami-e2e-nowhere"),
                "pod has node assigned",
            ),
        ];
        for (what, pod, message) in denied {
            let answer = c
                .ctx
                .step(
                    format!("a {what} device pod is denied"),
                    admit(&c, &pod.build()),
                )
                .await?;
            match answer {
                Err(m) => ensure!(
                    m.contains(hami_e2e_helm::WEBHOOK_NAME) && m.contains(message),
                    "the {what} pod was refused, but not by HAMi's webhook with `{message}`: `{m}`"
                ),
                Ok(p) => {
                    return Err(Failure::assertion(format!(
                        "HAMi's webhook admitted the {what} pod {} (scheduler `{}`); expected `{message}`",
                        p.name_any(),
                        scheduler_of(&p)
                    )));
                }
            }
        }
        let untouched = [
            (
                "labelled hami.io/webhook: ignore",
                DevicePod::new("ignored")
                    .devices(backend, &request)?
                    .ignored_by_hami_webhook(),
                "default-scheduler",
            ),
            (
                "of another scheduler",
                DevicePod::new("other-scheduler")
                    .devices(backend, &request)?
                    .scheduler_name("other-scheduler"),
                "other-scheduler",
            ),
            (
                "privileged without devices",
                DevicePod::new("privileged-plain").privileged(),
                "default-scheduler",
            ),
        ];
        for (what, pod, scheduler) in untouched {
            let pod = pod.node_selector(NOWHERE.0, NOWHERE.1).build();
            let answer = c
                .ctx
                .step(format!("a pod {what} is left alone"), admit(&c, &pod))
                .await?;
            let admitted = answer
                .map_err(|m| Failure::assertion(format!("the pod {what} was refused: `{m}`")))?;
            ensure!(
                scheduler_of(&admitted) == scheduler,
                "the pod {what} has scheduler `{}`, not `{scheduler}`",
                scheduler_of(&admitted)
            );
        }
        Ok(())
    })
}
