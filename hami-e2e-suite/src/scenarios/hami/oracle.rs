//! The allocation oracle after each HAMi scenario, and the reading of HAMi's metrics it and
//! the scenarios use (the series of a metric in Prometheus' text format).

use std::collections::BTreeMap;
use std::sync::Arc;

use hami_e2e_core::{Failure, ensure};
use hami_e2e_devices::DeviceRegistry;
use hami_e2e_helm::Hami;
use hami_e2e_k8s::TestNamespace;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

/// The series of metric `name` in a Prometheus text: each one's labels and value.
pub(super) fn series(metrics: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let value = value.trim().parse::<f64>().ok()?;
            let mut map = BTreeMap::new();
            let mut rest = labels;
            while let Some((key, after)) = rest.split_once("=\"") {
                let end = after.find('"')?;
                map.insert(
                    key.trim_start_matches(',').trim().to_owned(),
                    after[..end].to_owned(),
                );
                rest = &after[end + 1..];
            }
            Some((map, value))
        })
        .collect()
}

/// The sum of metric `name` per (node, device_uuid) in a metrics text.
pub(super) fn sum_by_device(metrics: &str, name: &str) -> BTreeMap<(String, String), f64> {
    let mut sums = BTreeMap::new();
    for (labels, value) in series(metrics, name) {
        if let (Some(node), Some(device)) = (labels.get("node"), labels.get("device_uuid")) {
            *sums.entry((node.clone(), device.clone())).or_insert(0.0) += value;
        }
    }
    sums
}

/// The sum of `hami_vgpu_memory_allocated_bytes` per (node, device) in a metrics text.
pub(super) fn vgpu_memory_by_device(metrics: &str) -> BTreeMap<(String, String), f64> {
    sum_by_device(metrics, "hami_vgpu_memory_allocated_bytes")
}

/// The allocation oracle after a HAMi scenario ([`hami_e2e_devices::oracle`]): every device
/// of the scenario's nodes within its memory, cores and split count by the allocation
/// annotations of all pods HAMi placed on them, every allocation of the scenario's pods
/// naming a real node and device, and HAMi's `hami_vgpu_memory_allocated_bytes` adding up
/// to the same memory per device.
pub(super) async fn allocation_oracle(
    hami: &Hami,
    registry: &DeviceRegistry,
    ns: &TestNamespace,
    nodes: Arc<std::sync::Mutex<Vec<String>>>,
) -> Result<(), Failure> {
    let mine = nodes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if mine.is_empty() {
        return Ok(());
    }
    let client = ns.client();
    let all_nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{}=true", hami_e2e_helm::HAMI_NODE_LABEL)))
        .await?
        .items;
    let pods: Vec<Pod> = Api::<Pod>::all(client)
        .list(&ListParams::default().labels(hami_e2e_devices::VGPU_NODE))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.annotations()
                .get(hami_e2e_devices::VGPU_NODE)
                .is_some_and(|n| mine.contains(n))
                || p.namespace().as_deref() == Some(ns.name())
        })
        .collect();
    let usage = hami_e2e_devices::oracle::check(registry, &all_nodes, &pods);
    let problems: Vec<String> = usage
        .violations
        .iter()
        .filter(|v| match v {
            hami_e2e_devices::oracle::Violation::OverBudget { device, .. } => {
                mine.contains(&device.node)
            }
            _ => true,
        })
        .map(ToString::to_string)
        .collect();
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    let metrics = hami.endpoint().metrics().await?;
    let reported = vgpu_memory_by_device(&metrics);
    for d in usage.devices.iter().filter(|d| mine.contains(&d.node)) {
        let got = reported
            .get(&(d.node.clone(), d.device.clone()))
            .copied()
            .unwrap_or(0.0);
        let want = d.used_memory_mib as f64 * 1_048_576.0;
        ensure!(
            (got - want).abs() < 1.0,
            "HAMi's hami_vgpu_memory_allocated_bytes for {} device {} on {} adds up to {got} bytes; its pods' allocations to {want} ({} MiB: {})",
            d.vendor,
            d.device,
            d.node,
            d.used_memory_mib,
            d.pods.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_series_are_read_with_their_labels() {
        let text = "# HELP x\nhami_gpu_shared_count{device_uuid=\"GPU-0\",node=\"n1\",zone=\"vGPU\"} 2\nhami_gpu_shared_count{device_uuid=\"GPU-1\",node=\"n1\",zone=\"vGPU\"} 0\nhami_gpu_shared_count_other{node=\"n1\"} 9\n";
        let s = series(text, "hami_gpu_shared_count");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0["device_uuid"], "GPU-0");
        assert_eq!(s[0].1, 2.0);
        let sums = sum_by_device(text, "hami_gpu_shared_count");
        assert_eq!(sums[&("n1".to_string(), "GPU-0".to_string())], 2.0);
        assert_eq!(sums.len(), 2);
    }
}
