//! What a scenario body, a step or a fixture returns when it does not succeed.
//!
//! A [`Failure`] is to a scenario what `anyhow::Error` is to an application: any
//! `std::error::Error` converts into it with `?`, and it keeps the whole cause chain.
//! On top of that it carries a [`FailureKind`], because the runner treats the kinds
//! differently: only [`FailureKind::Transient`] failures are retried, an
//! [`FailureKind::Assertion`] never is.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, RwLock};

/// A boxed error that can cross threads.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// How the runner treats a [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The system under test did not behave as expected. Never retried.
    Assertion,
    /// Something went wrong that may go away on its own (a connection reset, an API
    /// server restarting, HTTP 429/5xx). Retried with backoff, a bounded number of times.
    Transient,
    /// Any other error (bad input, a missing binary, a 403). Not retried.
    Error,
}

/// Decides whether an error (or one of its causes) is transient.
///
/// Crates below the core register one with [`register_transient_classifier`], so that
/// their own error types, converted into a [`Failure`] by `?`, keep their retry semantics.
pub type TransientClassifier = fn(&(dyn StdError + 'static)) -> bool;

static CLASSIFIERS: RwLock<Vec<TransientClassifier>> = RwLock::new(Vec::new());

/// Registers a function that recognises transient errors of a crate's own error type.
///
/// Every error converted into a [`Failure`] with `?` is checked, cause by cause, against the
/// registered classifiers and against the built-in one (I/O errors such as connection
/// refused or reset, and timeouts). Registering the same function twice has no extra effect.
///
/// # Examples
///
/// ```
/// use hami_e2e_core::{Failure, FailureKind, register_transient_classifier};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("server busy")]
/// struct Busy;
///
/// register_transient_classifier(|e| e.is::<Busy>());
/// let failure: Failure = Busy.into();
/// assert_eq!(failure.kind(), FailureKind::Transient);
/// ```
pub fn register_transient_classifier(classifier: TransientClassifier) {
    let mut all = CLASSIFIERS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !all.iter().any(|c| std::ptr::fn_addr_eq(*c, classifier)) {
        all.push(classifier);
    }
}

fn builtin_is_transient(error: &(dyn StdError + 'static)) -> bool {
    use std::io::ErrorKind::*;
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return matches!(
            io.kind(),
            ConnectionRefused
                | ConnectionReset
                | ConnectionAborted
                | TimedOut
                | BrokenPipe
                | Interrupted
        );
    }
    error.is::<tokio::time::error::Elapsed>()
}

/// Whether `error` or any error in its `source()` chain is transient, according to the
/// built-in rules and the registered classifiers.
pub fn is_transient(error: &(dyn StdError + 'static)) -> bool {
    let classifiers = CLASSIFIERS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut current = Some(error);
    while let Some(e) = current {
        if builtin_is_transient(e) || classifiers.iter().any(|c| c(e)) {
            return true;
        }
        current = e.source();
    }
    false
}

/// Why a scenario, step or fixture did not succeed.
///
/// Build one with [`Failure::assertion`], [`Failure::transient`] or by converting any error
/// with `?`. The [`ensure!`](crate::ensure) and [`bail!`](crate::bail) macros build
/// assertion failures. `Failure` is cheap to clone, so one failed run-scoped fixture can
/// be reported by every scenario that needed it.
///
/// # Examples
///
/// ```
/// use hami_e2e_core::{Failure, FailureKind};
///
/// fn parse(s: &str) -> Result<u32, Failure> {
///     let n: u32 = s.parse()?; // any std error converts; kind Error
///     if n == 0 {
///         return Err(Failure::assertion("expected a positive number"));
///     }
///     Ok(n)
/// }
/// assert_eq!(parse("x").unwrap_err().kind(), FailureKind::Error);
/// assert_eq!(parse("0").unwrap_err().kind(), FailureKind::Assertion);
/// assert_eq!(parse("0").unwrap_err().to_string(), "expected a positive number");
/// ```
#[derive(Clone)]
pub struct Failure {
    kind: FailureKind,
    context: Vec<String>,
    source: Arc<dyn StdError + Send + Sync + 'static>,
}

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

impl Failure {
    /// An assertion about the system under test did not hold.
    pub fn assertion(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Assertion, Message(message.into()))
    }

    /// A failure that may go away on its own; the runner retries it.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::from_box(FailureKind::Transient, error.into())
    }

    /// A plain error with a message, not retried.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Error, Message(message.into()))
    }

    /// A failure of the given kind wrapping `error`.
    pub fn new(kind: FailureKind, error: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            kind,
            context: Vec::new(),
            source: Arc::new(error),
        }
    }

    fn from_box(kind: FailureKind, error: BoxError) -> Self {
        Self {
            kind,
            context: Vec::new(),
            source: Arc::from(error),
        }
    }

    /// Adds a line of context shown before the cause, like "while creating pod `x`".
    #[must_use]
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context.push(context.into());
        self
    }

    /// How the runner treats this failure.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// Whether the runner may retry this failure.
    pub fn is_transient(&self) -> bool {
        self.kind == FailureKind::Transient
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }

    /// The message and every cause, one per line, as reporters print it.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cause = self.source.source();
        while let Some(c) = cause {
            out.push_str("\ncaused by: ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.context.iter().rev() {
            write!(f, "{c}: ")?;
        }
        write!(f, "{}", self.source)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("kind", &self.kind)
            .field("message", &self.report())
            .finish()
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        let kind = if is_transient(&error) {
            FailureKind::Transient
        } else {
            FailureKind::Error
        };
        Self::new(kind, error)
    }
}

/// Fails the scenario with an assertion failure unless a condition holds.
///
/// ```
/// use hami_e2e_core::{ensure, Failure};
///
/// fn check(allocated: u64) -> Result<(), Failure> {
///     ensure!(allocated == 3000, "allocated {allocated} MiB, requested 3000 MiB");
///     Ok(())
/// }
/// assert!(check(3000).is_ok());
/// assert_eq!(check(1).unwrap_err().to_string(), "allocated 1 MiB, requested 3000 MiB");
/// ```
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return ::core::result::Result::Err($crate::Failure::assertion(format!($($arg)+)).into());
        }
    };
    ($cond:expr $(,)?) => {
        if !$cond {
            return ::core::result::Result::Err(
                $crate::Failure::assertion(concat!("assertion failed: ", stringify!($cond))).into(),
            );
        }
    };
}

/// Returns an assertion failure at once.
///
/// ```
/// use hami_e2e_core::{bail, Failure};
///
/// fn never() -> Result<(), Failure> {
///     bail!("pod {} was scheduled although it should not fit", "p");
/// }
/// assert!(never().is_err());
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::Failure::assertion(format!($($arg)+)).into())
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn io_errors_deep_in_the_chain_are_transient() {
        let inner = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let f: Failure = Outer(inner).into();
        assert!(f.is_transient());
        let f: Failure = Outer(std::io::Error::from(std::io::ErrorKind::NotFound)).into();
        assert_eq!(f.kind(), FailureKind::Error);
    }

    #[test]
    fn report_prints_context_then_chain() {
        let f: Failure = Outer(std::io::Error::other("disk full")).into();
        let f = f.context("writing report");
        assert_eq!(f.report(), "writing report: outer\ncaused by: disk full");
    }
}
