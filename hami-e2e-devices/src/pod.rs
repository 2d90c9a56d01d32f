//! The pod side: what HAMi wrote on a scheduled pod, typed, and the check of it against the
//! request.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::codec;
use crate::container::ContainerDevice;
use crate::error::{Error, Problem, Result};
use crate::node::NodeDevice;
use crate::request::{ExpectedDevices, ExpectedMemory, PodOptions};
use crate::scalar::check_len;

/// `hami.io/vgpu-node`: the node HAMi's filter chose (also set as a label).
pub const VGPU_NODE: &str = "hami.io/vgpu-node";
/// `hami.io/vgpu-time`: when HAMi's filter chose it (unix seconds).
pub const VGPU_TIME: &str = "hami.io/vgpu-time";
/// `hami.io/bind-phase`: `allocating` after bind, `success`/`failed` from the device plugin.
pub const BIND_PHASE: &str = "hami.io/bind-phase";
/// `hami.io/bind-time`: when HAMi bound the pod (unix seconds).
pub const BIND_TIME: &str = "hami.io/bind-time";

/// `hami.io/bind-phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindPhase {
    /// HAMi bound the pod; the device plugin has not allocated yet.
    Allocating,
    /// The device plugin allocated every container.
    Success,
    /// The device plugin failed.
    Failed,
}

impl BindPhase {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            BindPhase::Allocating => "allocating",
            BindPhase::Success => "success",
            BindPhase::Failed => "failed",
        }
    }

    /// Parses the annotation value.
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] naming [`BIND_PHASE`] for any other value.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "allocating" => Ok(BindPhase::Allocating),
            "success" => Ok(BindPhase::Success),
            "failed" => Ok(BindPhase::Failed),
            other => Err(Error::parse(
                BIND_PHASE,
                0,
                other,
                Problem::Unknown {
                    what: "bind phase",
                    expected: "allocating, success or failed".into(),
                },
            )),
        }
    }
}

impl fmt::Display for BindPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What HAMi wrote on a pod for one vendor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PodAllocation {
    /// `hami.io/vgpu-node`.
    pub node: Option<String>,
    /// `hami.io/bind-phase`.
    pub bind_phase: Option<BindPhase>,
    /// The vendor's `*-devices-to-allocate`, per container (init first); consumed by the
    /// device plugin, so `;;` after allocation.
    pub to_allocate: Option<Vec<Vec<ContainerDevice>>>,
    /// The vendor's `*-devices-allocated`, per container (init first).
    pub allocated: Option<Vec<Vec<ContainerDevice>>>,
}

impl PodAllocation {
    /// Parses the pod annotations HAMi writes, with the vendor's allocation keys.
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] naming the annotation, fragment and position.
    pub fn parse(
        annotations: &BTreeMap<String, String>,
        to_allocate_key: &str,
        allocated_key: &str,
    ) -> Result<Self> {
        let decode = |key: &str| {
            annotations
                .get(key)
                .map(|v| codec::decode_allocation(key, v))
                .transpose()
        };
        let node = match annotations.get(VGPU_NODE) {
            Some(v) if v.trim().is_empty() => {
                return Err(Error::parse(VGPU_NODE, 0, v, Problem::Empty));
            }
            Some(v) => {
                check_len(VGPU_NODE, v)?;
                Some(v.clone())
            }
            None => None,
        };
        Ok(PodAllocation {
            node,
            bind_phase: annotations
                .get(BIND_PHASE)
                .map(|v| BindPhase::parse(v))
                .transpose()?,
            to_allocate: decode(to_allocate_key)?,
            allocated: decode(allocated_key)?,
        })
    }

    /// Every device granted, over all containers.
    pub fn devices(&self) -> impl Iterator<Item = &ContainerDevice> {
        self.allocated.iter().flatten().flatten()
    }
}

/// The checks every vendor shares: per container, the number of devices, their type keyword,
/// distinct ids, memory, cores, the pod's use/avoid choices and that the ids exist on the
/// node. Returns one line per difference; empty means it matches.
///
/// `expected` has one entry per container (init first), `None` for containers that asked
/// for nothing. `node_devices` may be empty when the node is unknown; then the checks that
/// need it (percentages, types, existence) are skipped.
pub fn allocation_problems(
    device_type: &str,
    expected: &[Option<ExpectedDevices>],
    options: &PodOptions,
    allocated: &[Vec<ContainerDevice>],
    node_devices: &[NodeDevice],
) -> Vec<String> {
    let mut problems = Vec::new();
    let by_id: BTreeMap<&str, &NodeDevice> =
        node_devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let containers = expected.len().max(allocated.len());
    for i in 0..containers {
        let got: &[ContainerDevice] = allocated.get(i).map(Vec::as_slice).unwrap_or(&[]);
        let want = expected.get(i).cloned().flatten();
        let Some(want) = want else {
            if !got.is_empty() {
                problems.push(format!(
                    "container {i} asked for no device but got {}",
                    ids(got)
                ));
            }
            continue;
        };
        if got.len() != want.count as usize {
            problems.push(format!(
                "container {i}: expected {} device(s), got {} ({})",
                want.count,
                got.len(),
                ids(got)
            ));
        }
        let mut seen = BTreeSet::new();
        for d in got {
            if !seen.insert(d.id.as_str()) {
                problems.push(format!("container {i}: device {} granted twice", d.id));
            }
            if d.device_type != device_type {
                problems.push(format!(
                    "container {i}: device {} has type `{}`, expected `{device_type}`",
                    d.id, d.device_type
                ));
            }
            let node_dev = by_id.get(d.id.as_str()).copied();
            if !node_devices.is_empty() && node_dev.is_none() {
                problems.push(format!(
                    "container {i}: device {} is not registered on the node",
                    d.id
                ));
            }
            match want.memory {
                ExpectedMemory::Exact(m) if d.memory_mib != m => problems.push(format!(
                    "container {i}: device {} has {} MiB, expected {m} MiB",
                    d.id, d.memory_mib
                )),
                ExpectedMemory::PercentOfDevice(p) => {
                    if let Some(n) = node_dev {
                        let m = n.memory_mib * u64::from(p) / 100;
                        if d.memory_mib != m {
                            problems.push(format!(
                                "container {i}: device {} has {} MiB, expected {m} MiB ({p}% of {} MiB)",
                                d.id, d.memory_mib, n.memory_mib
                            ));
                        }
                    }
                }
                ExpectedMemory::Exact(_) => {}
            }
            if d.cores != want.cores {
                problems.push(format!(
                    "container {i}: device {} has {} cores, expected {}",
                    d.id, d.cores, want.cores
                ));
            }
            if !options.use_ids.is_empty() && !options.use_ids.contains(&d.id) {
                problems.push(format!(
                    "container {i}: device {} is not one of the requested ids {:?}",
                    d.id, options.use_ids
                ));
            }
            if options.avoid_ids.contains(&d.id) {
                problems.push(format!("container {i}: device {} was to be avoided", d.id));
            }
            if let Some(n) = node_dev {
                let t = n.device_type.to_lowercase();
                if !options.use_types.is_empty()
                    && !options
                        .use_types
                        .iter()
                        .any(|u| t.contains(&u.to_lowercase()))
                {
                    problems.push(format!(
                        "container {i}: device {} of type `{}` matches none of {:?}",
                        d.id, n.device_type, options.use_types
                    ));
                }
                if let Some(a) = options
                    .avoid_types
                    .iter()
                    .find(|a| t.contains(&a.to_lowercase()))
                {
                    problems.push(format!(
                        "container {i}: device {} of type `{}` matches avoided type `{a}`",
                        d.id, n.device_type
                    ));
                }
            }
        }
    }
    problems
}

fn ids(devices: &[ContainerDevice]) -> String {
    if devices.is_empty() {
        return "none".to_owned();
    }
    devices
        .iter()
        .map(|d| d.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO: &str = "hami.io/vgpu-devices-to-allocate";
    const AL: &str = "hami.io/vgpu-devices-allocated";

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_the_reference_pod() {
        let a = annotations(&[
            (VGPU_NODE, "node1"),
            (VGPU_TIME, "1755770400"),
            (BIND_PHASE, "allocating"),
            (TO, ";;"),
            (AL, ";GPU-a,NVIDIA,3000,30:GPU-b,NVIDIA,3000,30:;"),
        ]);
        let p = PodAllocation::parse(&a, TO, AL).unwrap();
        assert_eq!(p.node.as_deref(), Some("node1"));
        assert_eq!(p.bind_phase, Some(BindPhase::Allocating));
        assert_eq!(p.to_allocate, Some(vec![vec![], vec![]]));
        assert_eq!(p.devices().count(), 2);
        let bad = annotations(&[(BIND_PHASE, "done")]);
        let e = PodAllocation::parse(&bad, TO, AL).unwrap_err();
        assert!(e.to_string().contains(BIND_PHASE), "{e}");
        assert!(PodAllocation::parse(&annotations(&[(VGPU_NODE, " ")]), TO, AL).is_err());
        assert_eq!(
            PodAllocation::parse(&BTreeMap::new(), TO, AL).unwrap(),
            PodAllocation::default()
        );
    }

    #[test]
    fn problems_name_the_container_and_the_difference() {
        let node = vec![
            NodeDevice::new("GPU-a", "NVIDIA-A100", 40960),
            NodeDevice::new("GPU-b", "NVIDIA-T4", 15360),
        ];
        let expected = vec![
            None,
            Some(ExpectedDevices::new(2, ExpectedMemory::Exact(3000), 30)),
        ];
        let good = vec![
            vec![],
            vec![
                ContainerDevice::new("GPU-a", "NVIDIA", 3000, 30),
                ContainerDevice::new("GPU-b", "NVIDIA", 3000, 30),
            ],
        ];
        let opts = PodOptions::default();
        assert!(allocation_problems("NVIDIA", &expected, &opts, &good, &node).is_empty());
        let bad = vec![
            vec![ContainerDevice::new("GPU-a", "NVIDIA", 3000, 30)],
            vec![ContainerDevice::new("GPU-x", "NVIDIA", 2000, 30)],
        ];
        let p = allocation_problems("NVIDIA", &expected, &opts, &bad, &node);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].starts_with("container 0 asked for no device"));
        let pct = vec![Some(ExpectedDevices::new(
            1,
            ExpectedMemory::PercentOfDevice(50),
            0,
        ))];
        let got = vec![vec![ContainerDevice::new("GPU-b", "NVIDIA", 7680, 0)]];
        let opts = PodOptions::default().use_type("a100").avoid_id("GPU-b");
        let p = allocation_problems("NVIDIA", &pct, &opts, &got, &node);
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
