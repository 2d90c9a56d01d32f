use std::path::{Path, PathBuf};

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::event::{FailureReason, Outcome, RunSummary, ScenarioReport};
use crate::report::Reporter;

/// Writes a JUnit XML report (`--junit PATH`) at the end of the run, loadable by GitHub,
/// GitLab and Jenkins test views.
///
/// One `<testsuite>` per first name segment (`nvidia`, `hygon`), one `<testcase>` per
/// scenario with the rest of the path as `classname`. Steps, diagnostics and teardown
/// errors go into `system-out`/`system-err`; failures carry the message and cause chain.
/// Failures outside scenarios (a run-scoped fixture's teardown) become a test case named
/// `hami-e2e::run`.
pub struct JunitReporter {
    path: PathBuf,
    name: String,
}

impl JunitReporter {
    /// Writes to `path` at the end of the run, with `hami-e2e` as report name.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            name: "hami-e2e".to_string(),
        }
    }

    /// Sets the report's name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

fn test_case(r: &ScenarioReport, repeated: bool) -> TestCase {
    let status = match &r.outcome {
        Outcome::Passed => TestCaseStatus::success(),
        Outcome::Skipped { reason } => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(reason.as_str());
            s
        }
        Outcome::Failed { reason, message } => {
            let kind = match reason {
                FailureReason::Assertion | FailureReason::Timeout | FailureReason::Requirement => {
                    NonSuccessKind::Failure
                }
                _ => NonSuccessKind::Error,
            };
            let mut s = TestCaseStatus::non_success(kind);
            s.set_message(message.lines().next().unwrap_or_default());
            s.set_type(reason.as_str());
            s.set_description(message.as_str());
            s
        }
    };
    let name = r.display_name(repeated);
    let mut case = TestCase::new(name.as_str(), status);
    let classname = match name.rsplit_once("::") {
        Some((parent, _)) => parent.to_string(),
        None => name.clone(),
    };
    case.set_classname(classname);
    case.set_time(r.duration);
    let mut out = String::new();
    if r.attempts > 1 {
        out.push_str(&format!("attempts: {}\n", r.attempts));
    }
    for step in &r.steps {
        let status = match (&step.error, step.duration) {
            (None, Some(_)) => "ok",
            (Some(_), Some(_)) => "FAILED",
            (_, None) => "UNFINISHED",
        };
        let dur = step
            .duration
            .map(format_duration)
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!("step {status} {} ({dur})", step.name));
        if let Some(e) = &step.error {
            out.push_str(&format!(": {e}"));
        }
        out.push('\n');
    }
    for a in &r.attachments {
        out.push_str(&format!("--- {} ---\n{}\n", a.title, a.text.trim_end()));
    }
    if let Some(dir) = &r.artifacts {
        out.push_str(&format!("artifacts: {}\n", dir.display()));
    }
    if !out.is_empty() {
        case.set_system_out(out);
    }
    if !r.teardown_errors.is_empty() {
        case.set_system_err(r.teardown_errors.join("\n"));
    }
    case
}

impl Reporter for JunitReporter {
    fn finish(&mut self, s: &RunSummary) -> Result<()> {
        let mut report = Report::new(self.name.as_str());
        let mut suites: Vec<TestSuite> = Vec::new();
        for r in &s.scenarios {
            let suite_name = r.scenario.split("::").next().unwrap_or_default();
            if suites.last().is_none_or(|x| x.name.as_str() != suite_name) {
                suites.push(TestSuite::new(suite_name));
            }
            if let Some(suite) = suites.last_mut() {
                suite.add_test_case(test_case(r, s.repeated));
            }
        }
        if !s.run_errors.is_empty() || s.cancelled {
            let mut suite = TestSuite::new("hami-e2e");
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            let message = if s.cancelled && s.run_errors.is_empty() {
                "the run was cancelled".to_string()
            } else {
                s.run_errors.join("\n")
            };
            status.set_message(message.lines().next().unwrap_or_default());
            status.set_description(message);
            suite.add_test_case(TestCase::new("hami-e2e::run", status));
            suites.push(suite);
        }
        for (k, v) in &s.facts {
            if let Some(first) = suites.first_mut() {
                first.add_property(quick_junit::Property::new(k.as_str(), v.as_str()));
            }
        }
        report.add_test_suites(suites);
        report.set_time(s.duration);
        let write_err = |source| Error::Write {
            what: "JUnit report",
            path: self.path.clone(),
            source,
        };
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        let xml = report
            .to_string()
            .map_err(|e| write_err(std::io::Error::other(e)))?;
        std::fs::write(&self.path, xml).map_err(write_err)
    }
}
