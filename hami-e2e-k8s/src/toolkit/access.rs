//! How a cluster is reached ([`ClusterAccess`]: in-cluster, or a kubeconfig and context),
//! and clients from it, with errors that name the file and context and never carry
//! credentials.

use std::fmt;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};

/// A client for the cluster of `path`, in `context` (default: the current context).
///
/// # Errors
///
/// [`Error::Kubeconfig`] naming the file (and context) when the file is missing or
/// malformed, the context unknown, or the credentials unusable.
pub async fn client_from_kubeconfig(path: &Path, context: Option<&str>) -> Result<kube::Client> {
    let name = describe(path, context);
    let invalid = |message: String| Error::Kubeconfig {
        source_name: name.clone(),
        message,
    };
    if !path.exists() {
        return Err(invalid("the file does not exist".into()));
    }
    let file = Kubeconfig::read_from(path).map_err(|e| invalid(e.to_string()))?;
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .map_err(|e| invalid(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| invalid(e.to_string()))
}

/// `` `path` (context `c`) ``, as errors name a kubeconfig.
pub(crate) fn describe(path: &Path, context: Option<&str>) -> String {
    match context {
        Some(c) => format!("`{}` (context `{c}`)", path.display()),
        None => format!("`{}`", path.display()),
    }
}

/// How a cluster is reached: through the service account of the pod this process runs in,
/// or a kubeconfig file and one of its contexts. Tools such as Helm are pointed at the same
/// cluster with it.
///
/// ```
/// use hami_e2e_k8s::ClusterAccess;
///
/// let access = ClusterAccess::kubeconfig("/etc/kc").with_context(Some("gpu".into()));
/// assert_eq!(access.to_string(), "kubeconfig `/etc/kc` (context `gpu`)");
/// assert_eq!(access.kubeconfig_path().unwrap().to_str(), Some("/etc/kc"));
/// assert_eq!(ClusterAccess::InCluster.kubeconfig_path(), None);
/// assert_eq!(ClusterAccess::InCluster.to_string(), "in-cluster service account");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterAccess {
    /// The cluster this process runs in, through its service account.
    InCluster,
    /// A kubeconfig file.
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The context, or the file's current one.
        context: Option<String>,
    },
}

impl ClusterAccess {
    /// The kubeconfig `path`, in its current context.
    pub fn kubeconfig(path: impl Into<PathBuf>) -> Self {
        ClusterAccess::Kubeconfig {
            path: path.into(),
            context: None,
        }
    }

    /// The same kubeconfig in `context` (`None`: its current one); in-cluster access has
    /// no contexts and stays as it is.
    #[must_use]
    pub fn with_context(self, context: Option<String>) -> Self {
        match self {
            ClusterAccess::Kubeconfig { path, .. } => ClusterAccess::Kubeconfig { path, context },
            ClusterAccess::InCluster => ClusterAccess::InCluster,
        }
    }

    /// The kubeconfig file, if reached through one.
    pub fn kubeconfig_path(&self) -> Option<&Path> {
        match self {
            ClusterAccess::Kubeconfig { path, .. } => Some(path),
            ClusterAccess::InCluster => None,
        }
    }

    /// The kubeconfig context asked for; `None` for the file's current one, or in-cluster.
    pub fn context(&self) -> Option<&str> {
        match self {
            ClusterAccess::Kubeconfig { context, .. } => context.as_deref(),
            ClusterAccess::InCluster => None,
        }
    }

    /// A client for the cluster.
    ///
    /// # Errors
    ///
    /// [`Error::Kubeconfig`] naming the file and context (or the in-cluster service account)
    /// when the configuration cannot be loaded: as [`client_from_kubeconfig`]; outside a pod,
    /// in-cluster access fails.
    pub async fn client(&self) -> Result<kube::Client> {
        match self {
            ClusterAccess::Kubeconfig { path, context } => {
                client_from_kubeconfig(path, context.as_deref()).await
            }
            ClusterAccess::InCluster => {
                let invalid = |message: String| Error::Kubeconfig {
                    source_name: self.to_string(),
                    message,
                };
                let config = kube::Config::incluster().map_err(|e| invalid(e.to_string()))?;
                kube::Client::try_from(config).map_err(|e| invalid(e.to_string()))
            }
        }
    }
}

impl From<&Path> for ClusterAccess {
    fn from(path: &Path) -> Self {
        ClusterAccess::kubeconfig(path)
    }
}

impl From<PathBuf> for ClusterAccess {
    fn from(path: PathBuf) -> Self {
        ClusterAccess::kubeconfig(path)
    }
}

impl From<&PathBuf> for ClusterAccess {
    fn from(path: &PathBuf) -> Self {
        ClusterAccess::kubeconfig(path.clone())
    }
}

impl fmt::Display for ClusterAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterAccess::Kubeconfig { path, context } => {
                write!(f, "kubeconfig {}", describe(path, context.as_deref()))
            }
            ClusterAccess::InCluster => f.write_str("in-cluster service account"),
        }
    }
}
