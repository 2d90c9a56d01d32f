//! The verdict `hami-e2e run` prints after the run: per vendor and node, the devices the
//! probe saw and the scenarios that passed, failed and were skipped there, then one line per
//! vendor (`pass`, `FAIL`, `not tested`) and every skip with its reason.
//!
//! A scenario belongs to a vendor by its label (the vendor's slug, as the device scenarios
//! carry) and to a node by the devices admission handed it; scenarios of a vendor that held
//! no pool device (one that adds a node of its own) are counted on the row `-`.
//!
//! ```
//! use hami_e2e_core::{Capabilities, RunConfig, Runner, scenario};
//! use hami_e2e_suite::verdict::Verdict;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut config = RunConfig::default();
//! config.human_output = false;
//! let conclusion = Runner::new()
//!     .scenario(scenario("devices/nvidia/a").label("nvidia").run(|_| async { Ok(()) }))
//!     .run(config)
//!     .await?;
//! let verdict = Verdict::new(&["nvidia".to_string(), "ascend".to_string()], None, conclusion.summary().unwrap());
//! let text = verdict.to_string();
//! assert!(text.contains("nvidia  pass (1 passed)"), "{text}");
//! assert!(text.contains("ascend  not tested"), "{text}");
//! # Ok::<(), hami_e2e_core::Error>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};

use hami_e2e_core::{Outcome, Reporter, RunSummary, slug};
use hami_e2e_devices::DeviceInventory;

/// One row: a vendor on a node (`None`: scenarios of the vendor that held no pool device).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerdictRow {
    /// The vendor.
    pub vendor: String,
    /// The node, or `None`.
    pub node: Option<String>,
    /// Healthy devices the probe saw there.
    pub devices: usize,
    /// Scenarios that passed there.
    pub passed: usize,
    /// Scenarios that failed there.
    pub failed: usize,
    /// Scenarios skipped (for the vendor, on no particular node).
    pub skipped: usize,
}

/// The verdict of a run, per vendor and node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The rows, by vendor (in the registry's order), then node.
    pub rows: Vec<VerdictRow>,
    /// Each vendor's verdict: `pass`, `FAIL (n failed)` or `not tested`.
    pub vendors: Vec<(String, String)>,
    /// Skipped scenarios with their reasons.
    pub skipped: Vec<(String, String)>,
    /// Nodes whose device registration does not parse: vendor, node, why.
    pub broken: Vec<(String, String, String)>,
    /// Whether the device probe ran.
    pub probed: bool,
}

impl Verdict {
    /// The verdict of `summary` for `vendors`, with the devices of `inventory`.
    pub fn new(
        vendors: &[String],
        inventory: Option<&DeviceInventory>,
        summary: &RunSummary,
    ) -> Self {
        let mut verdict = Verdict {
            probed: inventory.is_some(),
            ..Verdict::default()
        };
        for vendor in vendors {
            let label = slug(vendor);
            let mut rows: BTreeMap<Option<String>, VerdictRow> = BTreeMap::new();
            if let Some(nodes) = inventory.and_then(|i| i.vendors.get(vendor)) {
                for (node, devices) in nodes {
                    rows.insert(
                        Some(node.clone()),
                        VerdictRow {
                            vendor: vendor.clone(),
                            node: Some(node.clone()),
                            devices: devices.len(),
                            ..VerdictRow::default()
                        },
                    );
                }
            }
            let (mut passed, mut failed) = (0, 0);
            for r in summary
                .scenarios
                .iter()
                .filter(|r| r.labels.contains(&label))
            {
                let prefix = format!("{vendor}:");
                let node = r
                    .devices
                    .iter()
                    .find_map(|d| d.strip_prefix(&prefix))
                    .and_then(|rest| rest.split_once('/'))
                    .map(|(node, _)| node.to_string());
                let row = rows.entry(node.clone()).or_insert_with(|| VerdictRow {
                    vendor: vendor.clone(),
                    node,
                    ..VerdictRow::default()
                });
                match &r.outcome {
                    Outcome::Passed => {
                        row.passed += 1;
                        passed += 1;
                    }
                    Outcome::Failed { .. } => {
                        row.failed += 1;
                        failed += 1;
                    }
                    Outcome::Skipped { .. } => row.skipped += 1,
                }
            }
            let broken = inventory
                .and_then(|i| i.broken.get(vendor))
                .map_or(&[][..], Vec::as_slice);
            for (node, why) in broken {
                verdict
                    .broken
                    .push((vendor.clone(), node.clone(), why.clone()));
            }
            let word = match (passed, failed) {
                _ if !broken.is_empty() => format!(
                    "FAIL (the registration of {} does not parse; {failed} failed, {passed} passed)",
                    broken
                        .iter()
                        .map(|(n, _)| format!("node {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (_, f) if f > 0 => format!("FAIL ({f} failed, {passed} passed)"),
                (0, _) => "not tested".to_string(),
                (p, _) => format!("pass ({p} passed)"),
            };
            verdict.vendors.push((vendor.clone(), word));
            if rows.is_empty() {
                rows.insert(
                    None,
                    VerdictRow {
                        vendor: vendor.clone(),
                        ..VerdictRow::default()
                    },
                );
            }
            // Nodes first, then the row of no particular node.
            let mut rows: Vec<VerdictRow> = rows.into_values().collect();
            rows.sort_by_key(|r| r.node.is_none());
            verdict.rows.extend(rows);
        }
        verdict.skipped = summary
            .scenarios
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Skipped { reason } => Some((r.scenario.clone(), reason.clone())),
                _ => None,
            })
            .collect();
        verdict
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vendor_w = self
            .rows
            .iter()
            .map(|r| r.vendor.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let node_w = self
            .rows
            .iter()
            .map(|r| r.node.as_deref().map_or(1, str::len))
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(f, "\nverdict per vendor and node:")?;
        writeln!(
            f,
            "  {:vendor_w$}  {:node_w$}  {:>7}  {:>6}  {:>6}  {:>7}",
            "vendor", "node", "devices", "passed", "failed", "skipped"
        )?;
        for r in &self.rows {
            let devices = match (&r.node, self.probed) {
                (Some(_), _) => r.devices.to_string(),
                (None, true) => "-".to_string(),
                (None, false) => "?".to_string(),
            };
            writeln!(
                f,
                "  {:vendor_w$}  {:node_w$}  {devices:>7}  {:>6}  {:>6}  {:>7}",
                r.vendor,
                r.node.as_deref().unwrap_or("-"),
                r.passed,
                r.failed,
                r.skipped
            )?;
        }
        if !self.probed {
            writeln!(
                f,
                "  (devices not probed: no selected scenario needed them)"
            )?;
        }
        writeln!(f, "verdict:")?;
        for (vendor, word) in &self.vendors {
            writeln!(f, "  {vendor:vendor_w$}  {word}")?;
        }
        if !self.broken.is_empty() {
            writeln!(f, "broken device registrations:")?;
            for (vendor, node, why) in &self.broken {
                writeln!(f, "  {vendor} on node {node}: {why}")?;
            }
        }
        if !self.skipped.is_empty() {
            writeln!(f, "skipped:")?;
            for (scenario, reason) in &self.skipped {
                writeln!(f, "  {scenario}: {reason}")?;
            }
        }
        Ok(())
    }
}

/// Where the suite's probe leaves the device inventory for the [`VerdictReporter`].
pub type InventorySlot = Arc<Mutex<Option<DeviceInventory>>>;

/// Prints the [`Verdict`] at the end of a run (after libtest's summary line).
pub struct VerdictReporter {
    vendors: Vec<String>,
    inventory: InventorySlot,
    out: Box<dyn Write + Send>,
}

impl fmt::Debug for VerdictReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerdictReporter")
            .field("vendors", &self.vendors)
            .finish_non_exhaustive()
    }
}

impl VerdictReporter {
    /// A reporter for `vendors`, reading the inventory the probe leaves in `inventory`,
    /// printing to stdout.
    pub fn new(vendors: Vec<String>, inventory: InventorySlot) -> Self {
        Self {
            vendors,
            inventory,
            out: Box::new(std::io::stdout()),
        }
    }
}

impl Reporter for VerdictReporter {
    fn finish(&mut self, summary: &RunSummary) -> hami_e2e_core::Result<()> {
        let inventory = self
            .inventory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let verdict = Verdict::new(&self.vendors, inventory.as_ref(), summary);
        let _ = write!(self.out, "{verdict}");
        let _ = self.out.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hami_e2e_core::{FailureReason, ScenarioReport};
    use hami_e2e_devices::NodeDevice;

    use super::*;

    fn report(name: &str, label: &str, outcome: Outcome, devices: &[&str]) -> ScenarioReport {
        ScenarioReport {
            scenario: name.into(),
            labels: vec![label.into()],
            iteration: 1,
            attempts: 1,
            outcome,
            duration: Duration::ZERO,
            start: Duration::ZERO,
            slot: 0,
            queued: Duration::ZERO,
            devices: devices.iter().map(ToString::to_string).collect(),
            steps: Vec::new(),
            teardown_errors: Vec::new(),
            attachments: Vec::new(),
            artifacts: None,
        }
    }

    fn summary(scenarios: Vec<ScenarioReport>) -> RunSummary {
        RunSummary {
            run_id: "r".into(),
            scenarios,
            filtered_out: 0,
            run_errors: Vec::new(),
            cancelled: false,
            repeated: false,
            facts: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn rows_per_vendor_and_node_with_verdicts_and_skips() {
        let mut inventory = DeviceInventory::default();
        let gpus = vec![NodeDevice::new("GPU-0", "NVIDIA-T4", 15360); 4];
        inventory
            .vendors
            .entry("nvidia".into())
            .or_default()
            .insert("gpu-0".into(), gpus);
        let s = summary(vec![
            report(
                "devices::nvidia::a",
                "nvidia",
                Outcome::Passed,
                &["nvidia:gpu-0/GPU-0"],
            ),
            report("devices::nvidia::b", "nvidia", Outcome::Passed, &[]),
            report(
                "devices::hygon::a",
                "hygon",
                Outcome::Failed {
                    reason: FailureReason::Assertion,
                    message: "no".into(),
                },
                &[],
            ),
            report(
                "devices::ascend::a",
                "ascend",
                Outcome::Skipped {
                    reason: "needs local-cluster".into(),
                },
                &[],
            ),
        ]);
        let vendors = ["nvidia", "hygon", "ascend"].map(String::from);
        let v = Verdict::new(&vendors, Some(&inventory), &s);
        let nvidia: Vec<_> = v.rows.iter().filter(|r| r.vendor == "nvidia").collect();
        assert_eq!(nvidia.len(), 2);
        assert_eq!(
            (
                nvidia[0].node.as_deref(),
                nvidia[0].devices,
                nvidia[0].passed
            ),
            (Some("gpu-0"), 4, 1)
        );
        assert_eq!((nvidia[1].node.as_deref(), nvidia[1].passed), (None, 1));
        assert_eq!(v.vendors[0].1, "pass (2 passed)");
        assert_eq!(v.vendors[1].1, "FAIL (1 failed, 0 passed)");
        assert_eq!(v.vendors[2].1, "not tested");
        assert_eq!(
            v.skipped,
            [(
                "devices::ascend::a".to_string(),
                "needs local-cluster".to_string()
            )]
        );
        let text = v.to_string();
        assert!(
            text.contains("nvidia  gpu-0        4       1       0        0"),
            "{text}"
        );
        assert!(
            text.contains("devices::ascend::a: needs local-cluster"),
            "{text}"
        );
    }

    #[test]
    fn without_a_probe_devices_are_unknown() {
        let v = Verdict::new(&["nvidia".to_string()], None, &summary(Vec::new()));
        let text = v.to_string();
        assert!(text.contains("devices not probed"), "{text}");
        assert!(text.contains("nvidia  -           ?"), "{text}");
    }

    #[test]
    fn a_vendor_with_a_node_whose_registration_does_not_parse_does_not_pass() {
        let mut inventory = DeviceInventory::default();
        inventory.broken.insert(
            "nvidia".into(),
            vec![(
                "gpu-9".into(),
                "cannot parse `hami.io/node-nvidia-register` at byte 0".into(),
            )],
        );
        let s = summary(vec![report(
            "devices::nvidia::a",
            "nvidia",
            Outcome::Passed,
            &[],
        )]);
        let v = Verdict::new(&["nvidia".to_string()], Some(&inventory), &s);
        assert_eq!(
            v.vendors[0].1,
            "FAIL (the registration of node gpu-9 does not parse; 0 failed, 1 passed)"
        );
        let text = v.to_string();
        assert!(
            text.contains("broken device registrations:\n  nvidia on node gpu-9: cannot parse `hami.io/node-nvidia-register`"),
            "{text}"
        );
    }
}
