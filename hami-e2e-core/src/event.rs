//! What a run reports: a stream of events, then a summary ordered by scenario name.
//!
//! Plain data: reporters ([`Reporter`](crate::Reporter)) consume both, and everything here
//! serialises to JSON (the `--json` report is one event per line). The channel the events
//! travel through is in `sink`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::failure::FailureKind;

/// How long a fixture lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Once per run, shared by all scenarios.
    Run,
    /// Once per scenario attempt.
    Scenario,
}

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Time since the run started.
    #[serde(serialize_with = "ser_duration")]
    pub elapsed: Duration,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The run begins.
    RunStarted {
        /// Unique id of the run.
        run_id: String,
        /// Scenarios that will run (times `--repeat`).
        to_run: usize,
        /// Scenarios removed by name or label filters.
        filtered_out: usize,
        /// Parallelism limit.
        parallel: usize,
    },
    /// A scenario attempt begins.
    ScenarioStarted {
        /// Scenario name.
        scenario: String,
        /// Iteration (1-based) under `--repeat`.
        iteration: u32,
        /// Attempt (1-based); above 1 after a transient failure.
        attempt: u32,
    },
    /// A named step begins.
    StepStarted {
        /// Scenario name.
        scenario: String,
        /// Step name.
        step: String,
    },
    /// A named step ends.
    StepFinished {
        /// Scenario name.
        scenario: String,
        /// Step name.
        step: String,
        /// How long it took.
        #[serde(serialize_with = "ser_duration")]
        duration: Duration,
        /// Its error, if it failed.
        error: Option<String>,
    },
    /// A fixture's set-up finished.
    FixtureSetUp {
        /// The scenario it was set up for; `None` for run-scoped fixtures.
        scenario: Option<String>,
        /// Fixture name.
        fixture: String,
        /// Its scope.
        scope: Scope,
        /// Attempts made.
        attempts: u32,
        /// How long it took.
        #[serde(serialize_with = "ser_duration")]
        duration: Duration,
        /// Its error, if it failed.
        error: Option<String>,
    },
    /// A fixture teardown or deferred cleanup finished.
    TeardownFinished {
        /// The scenario; `None` for run-scoped fixtures.
        scenario: Option<String>,
        /// What was torn down.
        what: String,
        /// How long it took.
        #[serde(serialize_with = "ser_duration")]
        duration: Duration,
        /// Its error, if it failed.
        error: Option<String>,
    },
    /// A transient failure will be retried.
    Retry {
        /// The scenario; `None` for run-scoped fixtures.
        scenario: Option<String>,
        /// What failed (`scenario`, ``fixture `cluster` ``).
        what: String,
        /// The attempt that failed.
        attempt: u32,
        /// Delay before the next attempt.
        #[serde(serialize_with = "ser_duration")]
        delay: Duration,
        /// The transient error.
        error: String,
    },
    /// A scenario finished (after all its attempts and its teardown).
    ScenarioFinished(ScenarioReport),
    /// The run is being cancelled (first SIGINT/SIGTERM).
    RunCancelling {
        /// Why (in JSON, as text: `received SIGINT`).
        reason: CancelReason,
    },
    /// The run ended.
    RunFinished {
        /// Scenarios passed.
        passed: usize,
        /// Scenarios failed.
        failed: usize,
        /// Scenarios skipped or ignored.
        skipped: usize,
    },
}

/// A signal that cancels a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SignalKind {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl SignalKind {
    /// The signal's name: `SIGINT`, `SIGTERM` (`Ctrl-C` where there are no Unix signals).
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::Interrupt if cfg!(unix) => "SIGINT",
            SignalKind::Interrupt => "Ctrl-C",
            SignalKind::Terminate => "SIGTERM",
        }
    }
}

/// Why a run stops before it has run everything, in order of severity (as nextest's): when
/// there are several, the greatest stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CancelReason {
    /// `--fail-fast`, after a failure: nothing more starts; running scenarios finish.
    FailFast,
    /// The run's cancel token was cancelled by the suite's own code (a fixture's
    /// `cancel_token()`): as a signal, but without one.
    Requested,
    /// A signal: running scenarios are cancelled, then everything is torn down.
    Signal(SignalKind),
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::FailFast => f.write_str("--fail-fast after a failure"),
            CancelReason::Requested => f.write_str("the run's cancel token was cancelled"),
            CancelReason::Signal(kind) => write!(f, "received {}", kind.name()),
        }
    }
}

/// As text (`received SIGINT`), the way the JSON events have always spelt the reason.
impl Serialize for CancelReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How a scenario ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Body and teardown succeeded.
    Passed,
    /// Body or teardown failed.
    Failed {
        /// Why, in one word: `assertion`, `error`, `transient`, `panic`, `timeout`,
        /// `cancelled`, `teardown`, `requirement`.
        reason: FailureReason,
        /// The message with its cause chain.
        message: String,
    },
    /// Not run: ignored, or a requirement is missing.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// Why a scenario failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureReason {
    /// An assertion did not hold.
    Assertion,
    /// An error that is not transient.
    Error,
    /// A transient error that outlived its retries.
    Transient,
    /// The body panicked.
    Panic,
    /// The scenario's timeout expired.
    Timeout,
    /// The run was cancelled while it ran.
    Cancelled,
    /// The body passed but teardown failed.
    Teardown,
    /// A requirement is missing and `--require` is set.
    Requirement,
}

impl FailureReason {
    /// The reason in one word, as reports and the JSON events spell it (`assertion`, `timeout`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Assertion => "assertion",
            FailureReason::Error => "error",
            FailureReason::Transient => "transient",
            FailureReason::Panic => "panic",
            FailureReason::Timeout => "timeout",
            FailureReason::Cancelled => "cancelled",
            FailureReason::Teardown => "teardown",
            FailureReason::Requirement => "requirement",
        }
    }
}

impl From<FailureKind> for FailureReason {
    fn from(k: FailureKind) -> Self {
        match k {
            FailureKind::Assertion => FailureReason::Assertion,
            FailureKind::Transient => FailureReason::Transient,
            FailureKind::Error => FailureReason::Error,
        }
    }
}

impl Outcome {
    /// Whether it failed.
    pub fn is_failed(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }
    /// Whether it passed.
    pub fn is_passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
}

/// A named step of a scenario, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// Step name.
    pub name: String,
    /// Start, relative to the scenario's start.
    #[serde(serialize_with = "ser_duration")]
    pub start: Duration,
    /// How long it took; `None` when it never finished (timeout, panic).
    #[serde(serialize_with = "ser_opt_duration")]
    pub duration: Option<Duration>,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// A titled block of text collected for a scenario (diagnostics on failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// Title (`events in hami-e2e-x`).
    pub title: String,
    /// The text.
    pub text: String,
}

/// Everything known about one finished scenario (one iteration).
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub scenario: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Iteration under `--repeat` (1-based).
    pub iteration: u32,
    /// Attempts made (above 1 after transient failures).
    pub attempts: u32,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall time of all attempts, teardown included.
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    /// Start, relative to the run's start.
    #[serde(serialize_with = "ser_duration")]
    pub start: Duration,
    /// Parallel slot that ran it (0-based), for timelines.
    pub slot: usize,
    /// How long it waited to start: for a parallel slot, and for the devices it demands
    /// (device-aware admission).
    #[serde(serialize_with = "ser_duration")]
    pub queued: Duration,
    /// The devices admission handed it (`nvidia:node-a/GPU-0`).
    pub devices: Vec<String>,
    /// Steps of the last attempt.
    pub steps: Vec<StepRecord>,
    /// Teardown errors of the last attempt.
    pub teardown_errors: Vec<String>,
    /// Diagnostics attached by fixtures or the body.
    pub attachments: Vec<Attachment>,
    /// The artifacts folder, when anything was written there.
    pub artifacts: Option<PathBuf>,
}

impl ScenarioReport {
    /// The name with `#N` appended under `--repeat`.
    pub fn display_name(&self, repeated: bool) -> String {
        if repeated {
            format!("{}#{}", self.scenario, self.iteration)
        } else {
            self.scenario.clone()
        }
    }
}

/// The end of a run, with scenario reports ordered by name then iteration.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// One report per scenario iteration, ordered by name.
    pub scenarios: Vec<ScenarioReport>,
    /// Scenarios removed by filters.
    pub filtered_out: usize,
    /// Errors outside any scenario (run-scoped teardown, capability probe).
    pub run_errors: Vec<String>,
    /// Whether the run was cancelled by a signal.
    pub cancelled: bool,
    /// Whether `--repeat`/`--until-it-fails` ran scenarios more than once.
    pub repeated: bool,
    /// Facts about the system under test (cluster, versions), for the summary line.
    pub facts: Vec<(String, String)>,
    /// Wall time of the run.
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
}

impl RunSummary {
    /// Scenarios that passed.
    pub fn passed(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|s| s.outcome.is_passed())
            .count()
    }
    /// Scenarios that failed.
    pub fn failed(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|s| s.outcome.is_failed())
            .count()
    }
    /// Scenarios skipped or ignored.
    pub fn skipped(&self) -> usize {
        self.scenarios.len() - self.passed() - self.failed()
    }
    /// Whether the run succeeded: no failed scenario, no run error, not cancelled.
    pub fn success(&self) -> bool {
        self.failed() == 0 && self.run_errors.is_empty() && !self.cancelled
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_match_the_json_events() {
        use FailureReason::*;
        for r in [
            Assertion,
            Error,
            Transient,
            Panic,
            Timeout,
            Cancelled,
            Teardown,
            Requirement,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn cancel_reasons_order_by_severity_and_read_as_before() {
        let int = CancelReason::Signal(SignalKind::Interrupt);
        assert!(CancelReason::FailFast < int);
        assert_eq!(Some(CancelReason::FailFast).max(Some(int)), Some(int));
        let event = serde_json::to_value(EventKind::RunCancelling { reason: int }).unwrap();
        let name = if cfg!(unix) { "SIGINT" } else { "Ctrl-C" };
        assert_eq!(
            event,
            serde_json::json!({"event": "run_cancelling", "reason": format!("received {name}")})
        );
    }
}
