use std::io::Write;

use crate::duration::format_duration;
use crate::error::Result;
use crate::event::{Event, EventKind, Outcome, RunSummary};
use crate::report::Reporter;

/// Live, libtest-like lines: one per scenario with status and duration, the steps and
/// diagnostics of failed scenarios at the end, and libtest's closing
/// `test result: ...` line.
///
/// ```text
/// running 3 scenarios (run 20261125-101500-3f2a, parallel 2)
/// test smoke::pass ... ok (12ms)
/// test nvidia::two-devices ... ignored, needs 2 nvidia devices on one node, has 1
/// test smoke::fail ... FAILED (3ms)
///
/// failures:
/// ...
/// test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.02s
/// ```
pub struct HumanReporter {
    out: Box<dyn Write + Send>,
    quiet: bool,
    repeated: bool,
}

impl HumanReporter {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()))
    }

    /// Writes to any writer.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            quiet: false,
            repeated: false,
        }
    }

    /// Leaves out the lines of passed scenarios.
    #[must_use]
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Appends `#N` (the iteration) to names, for `--repeat`.
    #[must_use]
    pub fn repeated(mut self, repeated: bool) -> Self {
        self.repeated = repeated;
        self
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl Reporter for HumanReporter {
    fn on_event(&mut self, event: &Event) {
        let out = &mut self.out;
        let _ = match &event.kind {
            EventKind::RunStarted {
                run_id,
                to_run,
                parallel,
                ..
            } => {
                writeln!(
                    out,
                    "\nrunning {to_run} scenarios (run {run_id}, parallel {parallel})"
                )
            }
            EventKind::Retry {
                scenario,
                what,
                attempt,
                delay,
                error,
            } => writeln!(
                out,
                "test {} ... retrying {what} (attempt {attempt} failed, next in {}): {}",
                scenario.as_deref().unwrap_or("<run>"),
                format_duration(*delay),
                first_line(error)
            ),
            EventKind::RunCancelling { reason } => {
                writeln!(
                    out,
                    "cancelling: {reason}; cleaning up (send the signal again to exit at once)"
                )
            }
            EventKind::ScenarioFinished(r) => {
                let name = r.display_name(self.repeated);
                let dur = format_duration(r.duration);
                let tries = if r.attempts > 1 {
                    format!(", {} attempts", r.attempts)
                } else {
                    String::new()
                };
                match &r.outcome {
                    Outcome::Passed if self.quiet => Ok(()),
                    Outcome::Passed => writeln!(out, "test {name} ... ok ({dur}{tries})"),
                    Outcome::Skipped { reason } => {
                        writeln!(out, "test {name} ... ignored, {reason}")
                    }
                    Outcome::Failed { reason, message } => {
                        let reason = reason.as_str();
                        writeln!(
                            out,
                            "test {name} ... FAILED ({dur}{tries}) {reason}: {}",
                            first_line(message)
                        )
                    }
                }
            }
            _ => Ok(()),
        };
        let _ = out.flush();
    }

    fn finish(&mut self, s: &RunSummary) -> Result<()> {
        let out = &mut self.out;
        let failed: Vec<_> = s
            .scenarios
            .iter()
            .filter(|r| r.outcome.is_failed())
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(out, "\nfailures:");
            for r in &failed {
                let _ = writeln!(
                    out,
                    "\n---- {} (attempt {}) ----",
                    r.display_name(self.repeated),
                    r.attempts
                );
                if !r.steps.is_empty() {
                    let _ = writeln!(out, "steps:");
                    for step in &r.steps {
                        let (status, dur) = match (&step.error, step.duration) {
                            (None, Some(d)) => ("ok    ", format_duration(d)),
                            (Some(_), Some(d)) => ("FAILED", format_duration(d)),
                            (_, None) => ("UNFINISHED", "-".to_string()),
                        };
                        let err = step
                            .error
                            .as_deref()
                            .map(|e| format!(": {}", first_line(e)))
                            .unwrap_or_default();
                        let _ = writeln!(out, "  {status} {} ({dur}){err}", step.name);
                    }
                }
                if let Outcome::Failed { message, .. } = &r.outcome {
                    let _ = writeln!(out, "error: {message}");
                }
                for e in &r.teardown_errors {
                    let _ = writeln!(out, "teardown: {e}");
                }
                for a in &r.attachments {
                    let _ = writeln!(out, "--- {} ---\n{}", a.title, a.text.trim_end());
                }
                if let Some(dir) = &r.artifacts {
                    let _ = writeln!(out, "artifacts: {}", dir.display());
                }
            }
            let _ = writeln!(out, "\nfailures:");
            for r in &failed {
                let _ = writeln!(out, "    {}", r.display_name(self.repeated));
            }
        }
        for e in &s.run_errors {
            let _ = writeln!(out, "\nrun error: {e}");
        }
        if !s.facts.is_empty() {
            let _ = writeln!(out, "\nran against: {}", ran_against(&s.facts));
        }
        if s.cancelled {
            let _ = writeln!(out, "\nthe run was cancelled");
        }
        let status = if s.success() { "ok" } else { "FAILED" };
        let _ = writeln!(
            out,
            "\ntest result: {status}. {} passed; {} failed; {} ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
            s.passed(),
            s.failed(),
            s.skipped(),
            s.filtered_out,
            s.duration.as_secs_f64()
        );
        let _ = out.flush();
        Ok(())
    }
}

/// The facts as `key value` joined by `, `, leaving out one that another already says
/// (`kubernetes v1.37.2` beside `cluster local cluster v1.37.2 at ..., Kubernetes v1.37.2`).
fn ran_against(facts: &[(String, String)]) -> String {
    let all: Vec<String> = facts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let said = |i: usize| {
        let this = all[i].to_lowercase();
        let value = facts[i].1.to_lowercase();
        // A version or a number said elsewhere counts too (`kubernetes v1.37.2` beside
        // `cluster local cluster v1.37.2 at ...`).
        let versionish =
            value.len() >= 5 && !value.contains(' ') && value.chars().any(|c| c.is_ascii_digit());
        all.iter().enumerate().any(|(j, other)| {
            let other = other.to_lowercase();
            j != i
                && ((other.len() > this.len() && other.contains(&this))
                    || (versionish && other.contains(&value)))
        })
    };
    (0..all.len())
        .filter(|&i| !said(i))
        .map(|i| all[i].clone())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod ran_against_tests {
    #[test]
    fn a_fact_another_already_says_is_left_out() {
        let facts = [
            (
                "cluster".to_string(),
                "kubeconfig `/k`, Kubernetes v1.37.2".to_string(),
            ),
            ("hami".to_string(), "v2.10.0".to_string()),
            ("kubernetes".to_string(), "v1.37.2".to_string()),
        ];
        assert_eq!(
            super::ran_against(&facts),
            "cluster kubeconfig `/k`, Kubernetes v1.37.2, hami v2.10.0"
        );
        let local = [
            (
                "cluster".to_string(),
                "local cluster v1.37.2 at https://127.0.0.1:1".to_string(),
            ),
            ("hami".to_string(), "v2.10.0 (from X)".to_string()),
            ("kubernetes".to_string(), "v1.37.2".to_string()),
        ];
        assert_eq!(
            super::ran_against(&local),
            "cluster local cluster v1.37.2 at https://127.0.0.1:1, hami v2.10.0 (from X)"
        );
    }
}
