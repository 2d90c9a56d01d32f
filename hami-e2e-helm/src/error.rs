//! Errors of `hami-e2e-helm`, each naming the object, file or command and the cause.

use std::path::PathBuf;

/// Errors of `hami-e2e-helm`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the Kubernetes layer (API calls, waits, the local cluster, the binary
    /// cache).
    #[error(transparent)]
    K8s(#[from] hami_e2e_k8s::Error),
    /// A `helm` command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Helm {
        /// The command line (values are in a file, so no secrets are in it).
        command: String,
        /// Its exit status, or how long it ran before it was killed.
        status: String,
        /// What Helm printed on stderr.
        stderr: String,
    },
    /// A HAMi version that no Go module in this release pins.
    #[error("HAMi version `{requested}` is not supported; supported: {supported}")]
    UnsupportedHamiVersion {
        /// What was asked for (`HAMI_E2E_HAMI_VERSION`).
        requested: String,
        /// The versions pinned in `src/go/`.
        supported: String,
    },
    /// A file or folder could not be read or written.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A binary given by the user (`HAMI_E2E_HAMI_SCHEDULER`, `HAMI_E2E_HELM`) is unusable.
    #[error("the {what} binary `{}` (from {origin}) is unusable: {message}", path.display())]
    BadBinary {
        /// Which binary.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Where the path came from (an environment variable, PATH).
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The folder given as a HAMi checkout (`HAMI_E2E_HAMI_SOURCE`) is not one.
    #[error("HAMI_E2E_HAMI_SOURCE=`{}` is not a HAMi checkout: {message}", path.display())]
    BadSource {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Building the HAMi scheduler from a checkout (`HAMI_E2E_HAMI_SOURCE`) failed.
    #[error(
        "building HAMi's scheduler from the checkout `{}` (HAMI_E2E_HAMI_SOURCE) failed: `{command}` {status}; log: {}; last lines:\n{tail}",
        dir.display(),
        log.display()
    )]
    SourceBuild {
        /// The checkout.
        dir: PathBuf,
        /// The command line, run in the checkout.
        command: String,
        /// How it ended (`failed (exit status: 1)`, `could not start: ...`).
        status: String,
        /// The file holding the command's whole output.
        log: PathBuf,
        /// The last lines of that output.
        tail: String,
    },
    /// HAMi on the local cluster did not start, answer or register what it should.
    #[error("HAMi: {what}: {message}")]
    Hami {
        /// What was being done or awaited.
        what: String,
        /// Why it failed, with the end of HAMi's log where it helps.
        message: String,
    },
    /// Invalid input from the caller.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What was invalid.
        what: String,
        /// Why.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying may help (transient API errors only).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::K8s(e) => e.is_transient(),
            _ => false,
        }
    }
}
