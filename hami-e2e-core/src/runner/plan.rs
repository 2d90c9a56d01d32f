//! Which scenarios a run selects (names, labels, `--ignored`), the `--list` and
//! `--dry-run` output, and the reports of scenarios that never start.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::args::{IgnoredMode, ListFormat, RunConfig};
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::event::{Outcome, ScenarioReport};
use crate::scenario::{Scenario, validate};

/// The scenarios of a run, sorted by name, and what the filters left out.
pub(super) struct Plan {
    /// Scenarios to run.
    pub(super) to_run: Vec<Arc<dyn Scenario>>,
    /// Ignored scenarios, with the reason, reported as skipped.
    pub(super) ignored: Vec<(Arc<dyn Scenario>, String)>,
    /// Scenarios removed by name or label filters (or `--ignored`).
    pub(super) filtered_out: usize,
}

impl Plan {
    /// Validates `scenarios` and selects those `config` asks for.
    ///
    /// # Errors
    ///
    /// An invalid name or label, or two scenarios of one name.
    pub(super) fn select(scenarios: &[Arc<dyn Scenario>], config: &RunConfig) -> Result<Plan> {
        let mut names = HashSet::new();
        for s in scenarios {
            validate(s.as_ref())?;
            if !names.insert(s.name().to_string()) {
                return Err(Error::DuplicateScenario {
                    name: s.name().to_string(),
                });
            }
        }
        let mut scenarios = scenarios.to_vec();
        scenarios.sort_by(|a, b| a.name().cmp(b.name()));

        let mut to_run = Vec::new();
        let mut ignored = Vec::new();
        let mut filtered_out = 0;
        for s in scenarios {
            let labels_match = config.labels.as_ref().is_none_or(|l| l.matches(s.labels()));
            if !config.names.matches(s.name()) || !labels_match {
                filtered_out += 1;
                continue;
            }
            match (config.ignored, s.ignored()) {
                (IgnoredMode::Only, None) => filtered_out += 1,
                (IgnoredMode::Skip, Some(reason)) => ignored.push((s.clone(), reason.to_string())),
                _ => to_run.push(s),
            }
        }
        Ok(Plan {
            to_run,
            ignored,
            filtered_out,
        })
    }

    /// Prints the selection as libtest's `--list` does (ignored scenarios included).
    pub(super) fn list(&self, format: ListFormat) {
        let mut listed: Vec<_> = self
            .to_run
            .iter()
            .chain(self.ignored.iter().map(|(s, _)| s))
            .map(|s| s.name())
            .collect();
        listed.sort_unstable();
        let mut out = std::io::stdout().lock();
        for name in &listed {
            let _ = writeln!(out, "{name}: test");
        }
        if format == ListFormat::Pretty {
            let _ = writeln!(out, "\n{} tests, 0 benchmarks", listed.len());
        }
    }

    /// Prints what would run and why the rest would not (`--dry-run`).
    pub(super) fn print(&self, config: &RunConfig) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "dry run: {} would run, {} ignored, {} filtered out",
            self.to_run.len(),
            self.ignored.len(),
            self.filtered_out
        );
        for s in &self.to_run {
            let mut line = format!("run     {}", s.name());
            if !s.labels().is_empty() {
                line.push_str(&format!(" [{}]", s.labels().join(", ")));
            }
            let reqs: Vec<String> = s.requirements().iter().map(ToString::to_string).collect();
            if !reqs.is_empty() {
                let verb = if config.require {
                    "requires (else fails)"
                } else {
                    "requires (else skips)"
                };
                line.push_str(&format!(" {verb}: {}", reqs.join(", ")));
            }
            let demands: Vec<String> = s.demands().iter().map(ToString::to_string).collect();
            if !demands.is_empty() {
                line.push_str(&format!(" holds: {}", demands.join(", ")));
            }
            let timeout = s.timeout().unwrap_or(config.timeout);
            line.push_str(&format!(" timeout {}", format_duration(timeout)));
            let _ = writeln!(out, "{line}");
        }
        for (s, reason) in &self.ignored {
            let _ = writeln!(out, "ignore  {} ({reason})", s.name());
        }
    }
}

/// The report of a scenario that did not run (ignored, skipped, not admitted), or the
/// start of one that does.
pub(super) fn static_report(s: &dyn Scenario, outcome: Outcome) -> ScenarioReport {
    ScenarioReport {
        scenario: s.name().to_string(),
        labels: s.labels().to_vec(),
        iteration: 1,
        attempts: 0,
        outcome,
        duration: Duration::ZERO,
        start: Duration::ZERO,
        slot: 0,
        queued: Duration::ZERO,
        devices: Vec::new(),
        steps: Vec::new(),
        teardown_errors: Vec::new(),
        attachments: Vec::new(),
        artifacts: None,
    }
}
