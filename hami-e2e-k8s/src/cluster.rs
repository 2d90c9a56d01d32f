//! Which cluster a run uses: a real one from a kubeconfig, or the local cluster.
//!
//! The rule, for every suite built on this crate: `--kubeconfig PATH` (or
//! `HAMI_E2E_KUBECONFIG`), else `KUBECONFIG`, selects an existing cluster (with `--context`
//! / `HAMI_E2E_CONTEXT` to pick a context); with neither, the framework starts a
//! [`LocalCluster`]. `~/.kube/config` is never picked up implicitly, so a run on a
//! developer's machine does not wander into whatever cluster their shell points at.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;

use hami_e2e_core::{Failure, Fixture, FixtureContext, Scope, TeardownContext};

use crate::error::{Error, Result};
use crate::kubeconfig::describe;
use crate::ledger::{ReapReport, RunLease};
use crate::local::{LocalCluster, LocalClusterOptions};
use crate::namespace::{KeepNamespaces, NamespaceOptions};
use crate::sweep::SweepOptions;

/// Command-line flags selecting the cluster; flatten them next to
/// [`hami_e2e_core::Args`].
///
/// ```
/// use clap::Parser;
///
/// #[derive(Parser)]
/// struct SuiteArgs {
///     #[command(flatten)]
///     core: hami_e2e_core::Args,
///     #[command(flatten)]
///     cluster: hami_e2e_k8s::ClusterArgs,
/// }
///
/// let args = SuiteArgs::try_parse_from(["e2e", "--kubeconfig", "/tmp/kc", "--context", "gpu", "smoke"])?;
/// assert_eq!(args.cluster.context.as_deref(), Some("gpu"));
/// assert_eq!(args.core.filters, ["smoke"]);
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig of an existing cluster [default: $KUBECONFIG, else a local cluster].
    #[arg(long, env = "HAMI_E2E_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Context of the kubeconfig [default: its current context].
    #[arg(long, env = "HAMI_E2E_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,

    /// Keep scenarios' namespaces for debugging: never, on-failure, always.
    #[arg(
        long,
        env = "HAMI_E2E_KEEP_NAMESPACES",
        value_enum,
        default_value = "never",
        value_name = "WHEN"
    )]
    pub keep_namespaces: KeepNamespaces,

    /// Use the cluster this process runs in (its service account) when no kubeconfig is
    /// given, instead of starting a local cluster.
    #[arg(long, env = "HAMI_E2E_IN_CLUSTER")]
    pub in_cluster: bool,

    /// Before the first scenario, delete namespaces that earlier runs left behind, and undo
    /// the node changes they recorded.
    #[arg(long, env = "HAMI_E2E_SWEEP")]
    pub sweep: bool,

    /// With --sweep, only namespaces (and node changes of runs without a lease) older than
    /// this (`15m`, `1h`).
    #[arg(
        long,
        env = "HAMI_E2E_SWEEP_OLDER_THAN",
        value_parser = parse_age,
        default_value = "15m",
        value_name = "AGE"
    )]
    pub sweep_older_than: Duration,
}

impl Default for ClusterArgs {
    /// What no flag and no variable give.
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            in_cluster: false,
            keep_namespaces: KeepNamespaces::Never,
            sweep: false,
            sweep_older_than: Duration::from_secs(15 * 60),
        }
    }
}

fn parse_age(text: &str) -> std::result::Result<Duration, String> {
    hami_e2e_core::parse_duration(text).map_err(|e| e.to_string())
}

impl ClusterArgs {
    /// The options of [`NamespaceFixture`](crate::NamespaceFixture) these flags ask for.
    pub fn namespace_options(&self) -> NamespaceOptions {
        NamespaceOptions::default().keep(self.keep_namespaces)
    }

    /// The sweep these flags ask for, if any.
    pub fn sweep_options(&self) -> Option<SweepOptions> {
        self.sweep
            .then(|| SweepOptions::default().older_than(self.sweep_older_than))
    }
}

/// Where the cluster comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClusterSource {
    /// The cluster this process runs in, through its service account.
    InCluster,
    /// An existing cluster.
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The context, or the file's current one.
        context: Option<String>,
    },
    /// A [`LocalCluster`] started for the run.
    Local(LocalClusterOptions),
}

impl ClusterSource {
    /// Applies the rule of this module to `args` and the environment.
    ///
    /// ```
    /// use hami_e2e_k8s::{ClusterArgs, ClusterSource};
    ///
    /// let args = ClusterArgs { kubeconfig: Some("/etc/kc".into()), ..Default::default() };
    /// assert!(matches!(ClusterSource::from_args(&args), ClusterSource::Kubeconfig { .. }));
    /// ```
    pub fn from_args(args: &ClusterArgs) -> ClusterSource {
        let from_env = || {
            std::env::var_os("KUBECONFIG")
                .filter(|v| !v.is_empty())
                // A list of files: the first one, as kubectl writes to it.
                .and_then(|v| std::env::split_paths(&v).next())
        };
        match args.kubeconfig.clone().or_else(from_env) {
            Some(path) => ClusterSource::Kubeconfig {
                path,
                context: args.context.clone(),
            },
            // Asked for only: a CI job in a pod must not test the cluster it runs on by accident.
            None if args.in_cluster => ClusterSource::InCluster,
            None => ClusterSource::Local(LocalClusterOptions::default()),
        }
    }
}

impl fmt::Display for ClusterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterSource::Kubeconfig { path, context } => {
                write!(f, "kubeconfig {}", describe(path, context.as_deref()))
            }
            ClusterSource::Local(_) => f.write_str("local cluster"),
            ClusterSource::InCluster => f.write_str("in-cluster service account"),
        }
    }
}

/// A cluster the run talks to: a client, the kubeconfig for tools (Helm), and the local
/// cluster if the run started one.
pub struct Cluster {
    client: kube::Client,
    kubeconfig: PathBuf,
    source: String,
    local: Option<LocalCluster>,
    lease: std::sync::Mutex<Option<RunLease>>,
    context: Option<String>,
    hold: std::sync::Mutex<Option<crate::shared::Hold>>,
    shared_local: bool,
    reaped: std::sync::OnceLock<ReapReport>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("source", &self.source)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Where this run's device admission is shared with other runs on the cluster (other
    /// machines' shards included): on a cluster reached by kubeconfig, where the run holds
    /// a [`RunLease`](crate::ledger::RunLease); `None` on a local cluster of this machine.
    pub fn admission(&self) -> Option<crate::admission::ClusterAdmission> {
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        let run = lease.as_ref()?.run_id().to_string();
        Some(crate::admission::ClusterAdmission::new(self.client(), run))
    }

    /// Connects to the cluster of `source` (starting a local one if so), and checks that
    /// its API server answers.
    ///
    /// # Errors
    ///
    /// [`Error::Kubeconfig`] naming the file and context when the file is missing or
    /// malformed, the context unknown, or the server unreachable or refusing the
    /// credentials; what [`LocalCluster::start`] returns.
    pub async fn connect(source: ClusterSource) -> Result<Cluster> {
        match source {
            ClusterSource::Local(options) => {
                Ok(Cluster::from_local(LocalCluster::start(options).await?))
            }
            ClusterSource::Kubeconfig {
                ref path,
                ref context,
            } => {
                let client = crate::client_from_kubeconfig(path, context.as_deref()).await?;
                let version = client
                    .apiserver_version()
                    .await
                    .map_err(|e| Error::Kubeconfig {
                        source_name: describe(path, context.as_deref()),
                        message: unanswered(&e),
                    })?;
                Ok(Cluster::remote(
                    client,
                    path.clone(),
                    format!("{source}, Kubernetes {}", version.git_version),
                    context.clone(),
                ))
            }
            ClusterSource::InCluster => {
                let invalid = |message: String| Error::Kubeconfig {
                    source_name: "in-cluster service account".into(),
                    message,
                };
                let config = kube::Config::incluster().map_err(|e| invalid(e.to_string()))?;
                let client = kube::Client::try_from(config).map_err(|e| invalid(e.to_string()))?;
                let version = client
                    .apiserver_version()
                    .await
                    .map_err(|e| invalid(unanswered(&e)))?;
                Ok(Cluster::remote(
                    client,
                    PathBuf::new(),
                    format!("{source}, Kubernetes {}", version.git_version),
                    None,
                ))
            }
        }
    }

    /// Wraps a local cluster started by hand; [`Cluster::stop`] stops it.
    pub fn from_local(local: LocalCluster) -> Cluster {
        let source = format!("local cluster {} at {}", local.version(), local.server());
        let mut cluster = Cluster::remote(
            local.client(),
            local.kubeconfig().to_path_buf(),
            source,
            None,
        );
        cluster.local = Some(local);
        cluster
    }

    /// A cluster without a local cluster behind it (yet).
    fn remote(
        client: kube::Client,
        kubeconfig: PathBuf,
        source: String,
        context: Option<String>,
    ) -> Cluster {
        Cluster {
            client,
            kubeconfig,
            source,
            local: None,
            lease: Default::default(),
            context,
            hold: Default::default(),
            shared_local: false,
            reaped: Default::default(),
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

    /// The kubeconfig context in use (`--context`), for tools such as Helm; `None` for its
    /// current context.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// The kubeconfig file, for tools such as Helm; empty for an in-cluster connection.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Whether this is a local cluster (KWOK nodes, fake devices can be added): the run's own,
    /// or the one the processes of a nextest run share.
    pub fn is_local(&self) -> bool {
        self.local.is_some() || self.shared_local
    }

    /// The local cluster, if this run started one (to add fake nodes, restart components).
    pub fn local(&self) -> Option<&LocalCluster> {
        self.local.as_ref()
    }

    /// What the reaper removed when the [`ClusterFixture`] connected (see
    /// [`ledger`](crate::ledger)); `None` when it did not run (a local cluster of the run's
    /// own, the lease turned off).
    pub fn reaped(&self) -> Option<&ReapReport> {
        self.reaped.get()
    }

    /// What the cluster is, for reports: `local cluster v1.37.2 at https://...` or
    /// `kubeconfig `/path` (context `x`), Kubernetes v1.36.3`.
    pub fn description(&self) -> &str {
        &self.source
    }

    /// Stops the local cluster, if any. Idempotent.
    ///
    /// # Errors
    ///
    /// As [`LocalCluster::stop`].
    pub async fn stop(&self) -> Result<()> {
        match &self.local {
            Some(local) => local.stop().await,
            None => Ok(()),
        }
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

/// The run's [`Cluster`]: connected (or started) on first use, stopped after the run.
///
/// ```no_run
/// use hami_e2e_core::{Runner, scenario};
/// use hami_e2e_k8s::{ClusterFixture, ClusterSource, ClusterArgs};
///
/// Runner::new()
///     .fixture(ClusterFixture::new(ClusterSource::from_args(&ClusterArgs::default())))
///     .scenario(scenario("cluster/answers").run(|ctx| async move {
///         let cluster = ctx.fixture::<ClusterFixture>().await?;
///         cluster.client().apiserver_version().await?;
///         Ok(())
///     }))
///     .main();
/// ```
#[derive(Debug, Clone)]
pub struct ClusterFixture {
    source: ClusterSource,
    sweep: Option<SweepOptions>,
    lease: Option<Duration>,
    share: bool,
}

impl ClusterFixture {
    /// A fixture for `source`. On a cluster the run did not start itself, it first reaps
    /// what runs killed earlier left, then holds a run lease of 30 s, renewed until the end
    /// of the run (see [`ledger`](crate::ledger)).
    pub fn new(source: ClusterSource) -> Self {
        Self {
            source,
            sweep: None,
            lease: Some(Duration::from_secs(30)),
            share: false,
        }
    }

    /// Under `cargo nextest` (`NEXTEST_RUN_ID` set), attach to one local cluster shared by
    /// all the run's processes instead of starting one per process (see
    /// [`shared`](crate::shared)). Only for binaries whose `main` calls
    /// [`supervise_if_asked`](crate::shared::supervise_if_asked) first.
    #[must_use]
    pub fn share_under_nextest(mut self, on: bool) -> Self {
        self.share = on;
        self
    }

    /// Sets the run lease's duration, or turns the lease and the reaper off with `None`.
    #[must_use]
    pub fn lease(mut self, duration: Option<Duration>) -> Self {
        self.lease = duration;
        self
    }

    /// Sweeps namespaces and node changes left by earlier runs once connected (see
    /// [`sweep`](crate::sweep())), never those of the current run.
    #[must_use]
    pub fn sweep(mut self, options: Option<SweepOptions>) -> Self {
        self.sweep = options;
        self
    }
}

impl Fixture for ClusterFixture {
    type Output = Cluster;

    fn name(&self) -> String {
        "cluster".into()
    }

    fn scope(&self) -> Scope {
        Scope::Run
    }

    async fn setup(&self, ctx: &FixtureContext) -> Result<Cluster, Failure> {
        if let (true, ClusterSource::Local(_), Some(run)) =
            (self.share, &self.source, crate::shared::nextest_run_id())
        {
            let exe = std::env::current_exe()?;
            let dir = crate::shared::shared_dir(&run);
            let (kubeconfig, hold) = crate::shared::attach(
                &dir,
                std::process::Command::new(exe),
                Duration::from_secs(3600),
            )
            .await?;
            let cluster = Cluster::connect(ClusterSource::Kubeconfig {
                path: kubeconfig,
                context: None,
            })
            .await?;
            *cluster.hold.lock().unwrap_or_else(|p| p.into_inner()) = Some(hold);
            let cluster = Cluster {
                source: format!(
                    "shared local cluster of nextest run {run}, {}",
                    cluster.source
                ),
                shared_local: true,
                ..cluster
            };
            tracing::info!(cluster = cluster.description(), "attached");
            return Ok(cluster);
        }
        let cluster = Cluster::connect(self.source.clone()).await?;
        tracing::info!(cluster = cluster.description(), "connected");
        let prepared = async {
            if let Some(duration) = self.lease
                && cluster.local().is_none()
            {
                let reaped = crate::ledger::reap(&cluster.client()).await?;
                if !reaped.dead_runs.is_empty() {
                    tracing::info!(runs = ?reaped.dead_runs, deleted = ?reaped.deleted, restored = ?reaped.restored, "reaped what dead runs left");
                }
                let _ = cluster.reaped.set(reaped);
                let lease =
                    crate::ledger::RunLease::acquire(&cluster.client(), ctx.run_id(), duration).await?;
                *cluster.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
            }
            if let Some(options) = &self.sweep {
                let options = options.clone().except_run(ctx.run_id());
                crate::sweep(&cluster.client(), &options).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = prepared {
            let _ = cluster.stop().await;
            return Err(e.into());
        }
        Ok(cluster)
    }

    async fn teardown(&self, cluster: &Cluster, _ctx: &TeardownContext) -> Result<(), Failure> {
        let lease = cluster
            .lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(lease) = lease {
            lease.release().await?;
        }
        Ok(cluster.stop().await?)
    }
}

/// What a cluster offers, for skipping scenarios whose needs it cannot meet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterInfo {
    /// `gitVersion` of the API server (`v1.37.2`).
    pub version: String,
    /// Its minor version (37).
    pub minor: u32,
    /// The nodes.
    pub nodes: Vec<NodeInfo>,
    /// The API groups served, with their versions (`apps/v1`, `v1` for the core group).
    pub api_groups: BTreeSet<String>,
}

/// One node, as [`ClusterInfo`] sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Whether its `Ready` condition is `True` and it is not cordoned.
    pub ready: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Allocatable extended resources (names with a `/`, such as `nvidia.com/gpu`) that
    /// are whole numbers.
    pub extended: BTreeMap<String, u64>,
}

impl ClusterInfo {
    /// Reads the version, nodes and API groups of the cluster `client` talks to.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] naming what could not be read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn discover(client: &kube::Client) -> Result<ClusterInfo> {
        let version = client
            .apiserver_version()
            .await
            .map_err(|source| Error::Api {
                action: "get",
                object: "the server version".into(),
                source,
            })?;
        let nodes = kube::Api::<Node>::all(client.clone())
            .list(&Default::default())
            .await
            .map_err(|source| Error::Api {
                action: "list",
                object: "nodes".into(),
                source,
            })?;
        let mut api_groups = BTreeSet::new();
        let core = client
            .list_core_api_versions()
            .await
            .map_err(|source| Error::Api {
                action: "list",
                object: "the core API versions".into(),
                source,
            })?;
        api_groups.extend(core.versions);
        let groups = client
            .list_api_groups()
            .await
            .map_err(|source| Error::Api {
                action: "list",
                object: "the API groups".into(),
                source,
            })?;
        for g in groups.groups {
            for v in g.versions {
                api_groups.insert(v.group_version);
            }
        }
        let minor = version
            .minor
            .trim_end_matches('+')
            .parse()
            .unwrap_or_default();
        Ok(ClusterInfo {
            version: version.git_version,
            minor,
            nodes: nodes.items.iter().map(NodeInfo::from_node).collect(),
            api_groups,
        })
    }

    /// The run's capabilities: fact `kubernetes` (the version); quantities
    /// `kubernetes minor`, `ready nodes`, and per extended resource `<name> per node` (the
    /// most on one ready node) and `<name> total`; flags `api:<group/version>`.
    ///
    /// ```
    /// use hami_e2e_k8s::{ClusterInfo, NodeInfo};
    ///
    /// let mut info = ClusterInfo::default();
    /// info.version = "v1.37.2".into();
    /// info.minor = 37;
    /// let mut node = NodeInfo::default();
    /// node.ready = true;
    /// node.extended.insert("nvidia.com/gpu".into(), 8);
    /// info.nodes = vec![node.clone(), node];
    /// let caps = info.capabilities();
    /// assert_eq!(caps.quantity("nvidia.com/gpu per node"), 8);
    /// assert_eq!(caps.quantity("nvidia.com/gpu total"), 16);
    /// assert_eq!(caps.quantity("kubernetes minor"), 37);
    /// ```
    pub fn capabilities(&self) -> hami_e2e_core::Capabilities {
        let mut caps = hami_e2e_core::Capabilities::default()
            .with_fact("kubernetes", self.version.clone())
            .with_quantity("kubernetes minor", u64::from(self.minor));
        let ready: Vec<&NodeInfo> = self.nodes.iter().filter(|n| n.ready).collect();
        caps = caps.with_quantity("ready nodes", ready.len() as u64);
        for node in ready {
            for (resource, n) in &node.extended {
                let per_node = format!("{resource} per node");
                let most = caps.quantity(&per_node).max(*n);
                let total = caps.quantity(&format!("{resource} total")) + n;
                caps = caps
                    .with_quantity(per_node, most)
                    .with_quantity(format!("{resource} total"), total);
            }
        }
        for g in &self.api_groups {
            caps = caps.with_flag(format!("api:{g}"));
        }
        caps
    }
}

impl NodeInfo {
    /// What [`ClusterInfo`] keeps of a node.
    pub fn from_node(node: &Node) -> NodeInfo {
        let status = node.status.clone().unwrap_or_default();
        let ready = crate::wait::node_is_ready(node)
            && node.spec.as_ref().and_then(|s| s.unschedulable) != Some(true);
        let extended = status
            .allocatable
            .iter()
            .flatten()
            .filter(|(k, _)| k.contains('/'))
            .filter_map(|(k, v)| v.0.parse::<u64>().ok().map(|n| (k.clone(), n)))
            .collect();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready,
            labels: node.metadata.labels.clone().unwrap_or_default(),
            extended,
        }
    }
}
