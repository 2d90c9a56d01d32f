//! Errors of the runner itself: bad input (a filter, a duration, a scenario name) and
//! report files that cannot be written. What scenarios return is a [`Failure`](crate::Failure).

use std::path::PathBuf;

/// Errors of `hami-e2e-core`.
///
/// None of them is transient: they come from the command line or the suite's own code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A label expression (`--label-filter`) does not parse.
    #[error("invalid label filter `{expression}` at position {position}: {message}\n  {expression}\n  {caret:>width$}", caret = "^", width = position + 1)]
    InvalidLabelFilter {
        /// The expression as given.
        expression: String,
        /// Zero-based character position of the problem.
        position: usize,
        /// What is wrong there.
        message: String,
    },
    /// A duration (`--timeout 5m`) does not parse.
    #[error("invalid duration `{input}`: {message} (expected e.g. `90s`, `5m`, `1h30m`, `500ms`)")]
    InvalidDuration {
        /// The duration as given.
        input: String,
        /// What is wrong with it.
        message: String,
    },
    /// A scenario name is not a valid path.
    #[error("invalid scenario name `{name}`: {reason}")]
    InvalidScenarioName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two scenarios have the same name.
    #[error("scenario `{name}` is registered twice")]
    DuplicateScenario {
        /// The name both scenarios have.
        name: String,
    },
    /// A label is not a valid label.
    #[error(
        "invalid label `{label}` on scenario `{scenario}`: labels are made of letters, digits and `-_.:/`"
    )]
    InvalidLabel {
        /// The scenario carrying it.
        scenario: String,
        /// The label.
        label: String,
    },
    /// A command-line argument or `HAMI_E2E_*` variable is invalid.
    #[error("invalid value for {name}: {message}")]
    InvalidArgument {
        /// The flag or variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A report or artifact file cannot be written.
    #[error("cannot write {what} `{}`", path.display())]
    Write {
        /// What was being written ("JUnit report", "artifacts folder").
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A store that admission shares through ([`AdmissionStore`](crate::admission::AdmissionStore))
    /// failed, or what it holds does not parse.
    #[error("admission through {store} failed: {message}")]
    Admission {
        /// The store ([`AdmissionStore::describe`](crate::admission::AdmissionStore::describe)).
        store: String,
        /// What went wrong.
        message: String,
        /// The store's own error, if any.
        #[source]
        source: Option<crate::failure::BoxError>,
    },
    /// The async runtime could not be started.
    #[error("cannot start the tokio runtime")]
    Runtime(#[source] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
