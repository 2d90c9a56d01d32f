//! What a run returns ([`Conclusion`]): its summary, the errors writing reports, why it
//! stopped early, and the process exit code that follows from them.

use std::process::ExitCode;

use crate::event::{CancelReason, RunSummary};

/// Process exit codes of a suite binary.
pub mod exit_code {
    /// Every selected scenario passed or was skipped.
    pub const SUCCESS: u8 = 0;
    /// Bad arguments or `HAMI_E2E_*` values.
    pub const USAGE: u8 = 2;
    /// A scenario failed, a teardown failed, or a report could not be written (libtest's code).
    pub const FAILED: u8 = 101;
    /// The run was cancelled by SIGINT/SIGTERM and cleaned up.
    pub const INTERRUPTED: u8 = 130;
}

/// The result of [`Runner::run`](crate::Runner::run).
#[derive(Debug)]
#[must_use = "return `exit_code()` from main, or the run's failures are lost"]
pub struct Conclusion {
    summary: Option<RunSummary>,
    report_errors: Vec<String>,
    cancel_reason: Option<CancelReason>,
}

impl Conclusion {
    pub(super) fn new(
        summary: Option<RunSummary>,
        report_errors: Vec<String>,
        cancel_reason: Option<CancelReason>,
    ) -> Self {
        Conclusion {
            summary,
            report_errors,
            cancel_reason,
        }
    }

    /// The run's summary; `None` for `--list` and `--dry-run`.
    pub fn summary(&self) -> Option<&RunSummary> {
        self.summary.as_ref()
    }

    /// Errors writing reports (JUnit, JSON).
    pub fn report_errors(&self) -> &[String] {
        &self.report_errors
    }

    /// Why the run stopped before it ran everything (`--fail-fast`, a signal); `None` when
    /// nothing stopped it.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cancel_reason
    }

    /// Whether everything passed and every report was written.
    pub fn success(&self) -> bool {
        self.report_errors.is_empty() && self.summary.as_ref().is_none_or(RunSummary::success)
    }

    /// The process exit code, see [`exit_code`].
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_code_u8())
    }

    fn exit_code_u8(&self) -> u8 {
        match &self.summary {
            Some(s) if s.cancelled => exit_code::INTERRUPTED,
            _ if self.success() => exit_code::SUCCESS,
            _ => exit_code::FAILED,
        }
    }
}
