//! Errors of `hami-e2e-k8s`, each naming the object or file and the cause.

use std::path::PathBuf;
use std::time::Duration;

/// Errors of `hami-e2e-k8s`.
///
/// [`Error::is_transient`] says which ones are worth retrying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Go toolchain is needed to build a component and is not on PATH.
    #[error(
        "building {component} needs the Go toolchain (`go` 1.26 or newer on PATH), which was not found; install Go, or point HAMI_E2E_BIN_DIR at prebuilt binaries"
    )]
    GoMissing {
        /// What was to be built.
        component: String,
        /// Why `go` could not run.
        #[source]
        source: std::io::Error,
    },
    /// `go build` failed.
    #[error("building {component} {version} with Go failed ({status}); last output:\n{output}")]
    GoBuild {
        /// What was built.
        component: String,
        /// Its version.
        version: String,
        /// `go`'s exit status.
        status: String,
        /// The end of `go`'s output.
        output: String,
    },
    /// A Kubernetes version that no Go module in this release pins.
    #[error("Kubernetes version `{requested}` is not supported; supported: {supported}")]
    UnsupportedVersion {
        /// What was asked for (HAMI_E2E_K8S_VERSION).
        requested: String,
        /// The versions pinned in `src/local/go/`.
        supported: String,
    },
    /// A file or folder could not be read or written.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// What was being done ("write", "create folder", "read").
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The local cluster's certificates could not be generated.
    #[cfg(feature = "local")]
    #[error("cannot generate the local cluster's {what}")]
    Pki {
        /// Which key or certificate.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// No free port on loopback.
    #[error("cannot find a free port on 127.0.0.1 for {component}")]
    NoFreePort {
        /// The component it was for.
        component: &'static str,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// A component could not be started.
    #[error("cannot start {component} (`{}`)", binary.display())]
    Spawn {
        /// The component.
        component: String,
        /// Its binary.
        binary: PathBuf,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// A component exited during start-up or while the cluster ran.
    #[error("{component} exited ({status}) {when}; last lines of {}:\n{log_tail}", log.display())]
    ComponentExited {
        /// The component.
        component: String,
        /// Its exit status.
        status: String,
        /// "during start-up", "while waiting for ...".
        when: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        log_tail: String,
    },
    /// A component did not become ready in time.
    #[error("{component} was not ready after {}; last check: {last}; last lines of {}:\n{log_tail}", hami_e2e_core::format_duration(*waited), log.display())]
    NotReady {
        /// The component.
        component: String,
        /// How long we waited.
        waited: Duration,
        /// The last health check's answer or error.
        last: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        log_tail: String,
    },
    /// The kubeconfig could not be loaded or used.
    #[error("invalid kubeconfig {source_name}: {message}")]
    Kubeconfig {
        /// Which kubeconfig (path, KUBECONFIG, context).
        source_name: String,
        /// What is wrong, never with credentials in it.
        message: String,
    },
    /// A Kubernetes API call failed.
    #[error("failed to {action} {object}")]
    Api {
        /// What was being done ("create", "delete", "get").
        action: &'static str,
        /// `kind/namespace/name`.
        object: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// A wait timed out.
    #[error("timed out after {} waiting for {what}; last observed: {last}{events}", hami_e2e_core::format_duration(*waited))]
    WaitTimeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The last state seen.
        last: String,
        /// `; events: ...` with the object's recent events, or empty.
        events: String,
    },
    /// A wait ended before its timeout because what it awaits can no longer happen (the pod
    /// awaited to run failed), or its watch failed for good (403 Forbidden).
    #[error("gave up waiting for {what}: {reason}")]
    WaitFailed {
        /// What was awaited.
        what: String,
        /// Why it cannot happen.
        reason: String,
    },
    /// A YAML document could not be parsed or applied.
    #[error("invalid YAML document {index} of {source_name}: {message}")]
    Yaml {
        /// Where the YAML came from (a file, "inline YAML").
        source_name: String,
        /// The document's position, from 1.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A command run in a container could not be started or its stream broke.
    #[error("failed to exec `{command}` in {container}")]
    Exec {
        /// The command line.
        command: String,
        /// `pod/namespace/name` and the container.
        container: String,
        /// kube's error (a `kube::Error`, or the streaming protocol's).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Invalid input from the caller.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What was invalid.
        what: String,
        /// Why.
        message: String,
    },
    /// Admission through the cluster's ConfigMap failed (see
    /// [`admission`](crate::cleanup::admission)).
    #[error(transparent)]
    Admission(Box<hami_e2e_core::Error>),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying may help: API errors with HTTP 429 or 5xx, connection errors, watch
    /// desync (410 Gone) and timeouts of API calls.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Api { source, .. } => is_transient_kube(source),
            Error::Exec { source, .. } => source
                .downcast_ref::<kube::Error>()
                .is_some_and(is_transient_kube),
            _ => false,
        }
    }
}

/// Whether a kube error is worth retrying.
pub fn is_transient_kube(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code == 410 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::HttpError(_) => true,
        _ => false,
    }
}

/// Registers this crate's transient-error classifier with the core runner, so that `?` on
/// this crate's errors (and on `kube::Error`) in a scenario keeps their retry semantics.
/// Idempotent; call it once before running.
///
/// ```
/// use hami_e2e_core::Failure;
///
/// hami_e2e_k8s::register_transient_errors();
/// let busy = kube::Error::Api(Box::new(kube::core::Status::failure("too many requests", "TooManyRequests").with_code(429)));
/// assert!(Failure::from(busy).is_transient());
/// ```
pub fn register_transient_errors() {
    hami_e2e_core::register_transient_classifier(classify_transient);
}

/// This crate's errors and kube's, as the runner's retries see them.
fn classify_transient(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = e.downcast_ref::<Error>() {
        return e.is_transient();
    }
    if let Some(e) = e.downcast_ref::<kube::Error>() {
        return is_transient_kube(e);
    }
    false
}
