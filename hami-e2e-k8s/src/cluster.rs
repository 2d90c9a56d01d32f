//! Which cluster a run uses ([`ClusterSource`]: an existing one, or a local cluster started
//! for the run) and the connection to it ([`Cluster`]).
//!
//! The rule, for every suite built on this crate ([`ClusterSource::from_args`], in
//! [`fixtures`](crate::fixtures)): `--kubeconfig PATH` (or `HAMI_E2E_KUBECONFIG`), else
//! `KUBECONFIG`, selects an existing cluster (with `--context` / `HAMI_E2E_CONTEXT` to pick
//! a context); `--in-cluster` the cluster of the pod the run is in; with none of them, the
//! framework starts a local cluster. `~/.kube/config` is never picked up implicitly, so a
//! run on a developer's machine does not wander into whatever cluster their shell points at.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};
#[cfg(feature = "local")]
use crate::local::{LocalCluster, LocalClusterOptions};
use crate::toolkit::access::ClusterAccess;
use crate::toolkit::discovery::ClusterInfo;

/// Where the cluster comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClusterSource {
    /// An existing cluster, reached in-cluster or through a kubeconfig.
    Existing(ClusterAccess),
    /// A [`LocalCluster`] started for the run.
    #[cfg(feature = "local")]
    Local(LocalClusterOptions),
    /// Neither a kubeconfig nor in-cluster access was given, and this build has no local
    /// cluster (the `local` feature is off): connecting fails, naming what to give.
    #[cfg(not(feature = "local"))]
    NotGiven,
}

impl ClusterSource {
    /// The cluster of the kubeconfig `path`, in `context` (`None`: its current one).
    pub fn kubeconfig(path: impl Into<std::path::PathBuf>, context: Option<String>) -> Self {
        ClusterSource::Existing(ClusterAccess::kubeconfig(path).with_context(context))
    }

    /// The cluster this process runs in, through its service account.
    pub fn in_cluster() -> Self {
        ClusterSource::Existing(ClusterAccess::InCluster)
    }
}

impl fmt::Display for ClusterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterSource::Existing(access) => access.fmt(f),
            #[cfg(feature = "local")]
            ClusterSource::Local(_) => f.write_str("local cluster"),
            #[cfg(not(feature = "local"))]
            ClusterSource::NotGiven => f.write_str("no cluster given"),
        }
    }
}

/// The connection to a cluster: a client, how it is reached (for tools such as Helm), and
/// the local cluster behind it if this process started one.
///
/// What a run holds on the cluster (its lease, what the reaper removed) is the
/// [`RunCluster`](crate::RunCluster) of the [`ClusterFixture`](crate::ClusterFixture).
pub struct Cluster {
    client: kube::Client,
    access: ClusterAccess,
    description: String,
    #[cfg(feature = "local")]
    local: Option<LocalCluster>,
    shared_local: bool,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("description", &self.description)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to the cluster of `source` (starting a local one if so), and checks that
    /// its API server answers.
    ///
    /// # Errors
    ///
    /// [`Error::Kubeconfig`] naming the file and context (or the in-cluster service
    /// account) when the configuration is missing or malformed, the context unknown, or
    /// the server unreachable or refusing the credentials; what
    /// [`LocalCluster::start`] returns; [`Error::Invalid`] for
    /// `ClusterSource::NotGiven`.
    pub async fn connect(source: ClusterSource) -> Result<Cluster> {
        match source {
            #[cfg(feature = "local")]
            ClusterSource::Local(options) => {
                Ok(Cluster::from_local(LocalCluster::start(options).await?))
            }
            ClusterSource::Existing(access) => Cluster::reach(access).await,
            #[cfg(not(feature = "local"))]
            ClusterSource::NotGiven => Err(Error::Invalid {
                what: "the cluster".into(),
                message: "no kubeconfig given (--kubeconfig, HAMI_E2E_KUBECONFIG or KUBECONFIG) \
                          nor --in-cluster, and hami-e2e-k8s was built without its `local` \
                          feature, which starts a local cluster"
                    .into(),
            }),
        }
    }

    /// Connects to an existing cluster and checks that its API server answers.
    async fn reach(access: ClusterAccess) -> Result<Cluster> {
        let client = access.client().await?;
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| Error::Kubeconfig {
                source_name: match &access {
                    ClusterAccess::Kubeconfig { path, context } => {
                        crate::toolkit::access::describe(path, context.as_deref())
                    }
                    ClusterAccess::InCluster => access.to_string(),
                },
                message: unanswered(&e),
            })?;
        let description = format!("{access}, Kubernetes {}", version.git_version);
        Ok(Cluster {
            client,
            access,
            description,
            #[cfg(feature = "local")]
            local: None,
            shared_local: false,
        })
    }

    /// Attaches to a local cluster of this machine that another process started (the one
    /// the processes of a nextest run share), through its kubeconfig: [`is_local`](Self::is_local)
    /// is true, and [`stop`](Self::stop) leaves it running.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect) with a kubeconfig.
    pub async fn attach_local(kubeconfig: &Path, description: &str) -> Result<Cluster> {
        let cluster = Cluster::reach(ClusterAccess::kubeconfig(kubeconfig)).await?;
        Ok(Cluster {
            description: format!("{description}, {}", cluster.description),
            shared_local: true,
            ..cluster
        })
    }

    /// Wraps a local cluster started by hand; [`Cluster::stop`] stops it.
    #[cfg(feature = "local")]
    pub fn from_local(local: LocalCluster) -> Cluster {
        Cluster {
            client: local.client(),
            access: ClusterAccess::kubeconfig(local.kubeconfig()),
            description: format!("local cluster {} at {}", local.version(), local.server()),
            local: Some(local),
            shared_local: false,
        }
    }

    /// Finds out what the cluster offers: its version, its nodes and their allocatable
    /// extended resources, and the API groups it serves. The suite's probe turns it into
    /// the run's [`Capabilities`](hami_e2e_core::Capabilities).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] when the version, nodes or API groups cannot be read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn discover(&self) -> Result<ClusterInfo> {
        ClusterInfo::discover(&self.client).await
    }

    /// A client for the cluster.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// How the cluster is reached, for tools such as Helm.
    pub fn access(&self) -> &ClusterAccess {
        &self.access
    }

    /// The kubeconfig context in use (`--context`), for tools such as Helm; `None` for its
    /// current context, or in-cluster.
    pub fn context(&self) -> Option<&str> {
        self.access.context()
    }

    /// The kubeconfig file, for tools such as Helm; `None` in-cluster.
    pub fn kubeconfig(&self) -> Option<&Path> {
        self.access.kubeconfig_path()
    }

    /// Whether this is a local cluster (KWOK nodes, fake devices can be added): the run's own,
    /// or the one the processes of a nextest run share.
    pub fn is_local(&self) -> bool {
        self.local().is_some() || self.shared_local
    }

    /// The local cluster, if this process started it (to add fake nodes, restart components).
    #[cfg(feature = "local")]
    pub fn local(&self) -> Option<&LocalCluster> {
        self.local.as_ref()
    }

    /// The local cluster: never, in a build without the `local` feature.
    #[cfg(not(feature = "local"))]
    pub fn local(&self) -> Option<&std::convert::Infallible> {
        None
    }

    /// What the cluster is, for reports: `local cluster v1.37.2 at https://...` or
    /// `kubeconfig `/path` (context `x`), Kubernetes v1.36.3`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Stops the local cluster, if this process started one. Idempotent.
    ///
    /// # Errors
    ///
    /// As [`LocalCluster::stop`].
    pub async fn stop(&self) -> Result<()> {
        #[cfg(feature = "local")]
        if let Some(local) = &self.local {
            return local.stop().await;
        }
        Ok(())
    }
}

/// What the API server says when it does not answer the version request, without
/// credentials: a refused token reads as such, not as an unreachable server.
fn unanswered(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 => {
            "the API server refused the credentials (401 Unauthorized: expired or invalid token or certificate)".into()
        }
        kube::Error::Api(s) if s.code == 403 => {
            format!("the credentials may not read the server version (403 Forbidden: {})", s.message)
        }
        other => format!("the API server does not answer: {other}"),
    }
}
