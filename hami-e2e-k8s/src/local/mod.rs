//! The local cluster: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) whose nodes are simulated by KWOK, started as
//! child processes on loopback from the binaries of [`bincache`] (built from the Go modules pinned in this
//! folder's `go/`, into a cache outside the repository). [`shared`] shares one local
//! cluster between the processes of a nextest run.
//!
//! Everything runs in a temporary folder with its own certificates and an admin
//! kubeconfig; every component listens on a free port of 127.0.0.1. Start-up waits on the
//! components' health endpoints, never on sleeps. [`LocalCluster::stop`] (or dropping the
//! value) stops every process by pid and process group and removes the folder; the
//! components also die with the test process (`PR_SET_PDEATHSIG`), so a killed test
//! leaves no process behind, and a later start removes folders left by dead processes.
//!
//! ```no_run
//! # async fn f() -> hami_e2e_k8s::Result<()> {
//! use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};
//! use k8s_openapi::api::core::v1::Namespace;
//!
//! let cluster = LocalCluster::start(LocalClusterOptions::default()).await?;
//! cluster.add_node(NodeSpec::new("gpu-node-0").capacity("nvidia.com/gpu", "8")).await?;
//! let namespaces = kube::Api::<Namespace>::all(cluster.client());
//! println!("{} namespaces; kubeconfig at {}", namespaces.list(&Default::default()).await.unwrap().items.len(), cluster.kubeconfig().display());
//! cluster.stop().await?;
//! # Ok(()) }
//! ```

pub mod bincache;
mod fixture;
mod node;
mod pki;
mod process;
pub mod shared;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::wait::await_condition;
use tracing::instrument::WithSubscriber;

pub use fixture::LocalClusterFixture;
pub use node::{KWOK_NODE_ANNOTATION, NodeSpec};
pub(crate) use process::log_tail;

use hami_e2e_core::progress::LongStep;

use crate::error::{Error, Result};
use crate::local::bincache::{BinaryCache, KubernetesRelease};
use crate::toolkit::access::client_from_kubeconfig;
use crate::toolkit::host::process_is_alive;
use crate::toolkit::wait;
use process::Process;

/// The local cluster's processes, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Component {
    /// etcd.
    Etcd,
    /// kube-apiserver.
    ApiServer,
    /// kube-controller-manager.
    ControllerManager,
    /// kube-scheduler.
    Scheduler,
    /// The KWOK controller, which plays the kubelets of the fake nodes.
    Kwok,
}

impl Component {
    /// Every component, in start order.
    pub const ALL: [Component; 5] = [
        Component::Etcd,
        Component::ApiServer,
        Component::ControllerManager,
        Component::Scheduler,
        Component::Kwok,
    ];

    /// The component's program name (`kube-apiserver`).
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
            Component::Kwok => "kwok",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// kube-scheduler's configuration beyond the default profile: extra profiles and extenders,
/// as `KubeSchedulerConfiguration` (`kubescheduler.config.k8s.io/v1`) JSON values.
///
/// ```
/// use hami_e2e_k8s::local::SchedulerConfig;
/// use serde_json::json;
///
/// let config = SchedulerConfig::default()
///     .profile(json!({"schedulerName": "hami-scheduler"}))
///     .extender(json!({"urlPrefix": "https://127.0.0.1:8443", "filterVerb": "filter"}));
/// let doc = config.to_json("/tmp/kubeconfig".as_ref());
/// assert_eq!(doc["profiles"][1]["schedulerName"], "hami-scheduler");
/// assert_eq!(doc["clientConnection"]["kubeconfig"], "/tmp/kubeconfig");
/// ```
#[derive(Debug, Clone, Default)]
pub struct SchedulerConfig {
    profiles: Vec<serde_json::Value>,
    extenders: Vec<serde_json::Value>,
    no_default_profile: bool,
}

impl SchedulerConfig {
    /// Leaves out the `default-scheduler` profile: for a second scheduler
    /// ([`LocalCluster::start_scheduler`]) that must not compete with the cluster's own for
    /// ordinary pods.
    ///
    /// ```
    /// use hami_e2e_k8s::local::SchedulerConfig;
    ///
    /// let doc = SchedulerConfig::default()
    ///     .without_default_profile()
    ///     .profile(serde_json::json!({"schedulerName": "hami-scheduler"}))
    ///     .to_json("/tmp/kubeconfig".as_ref());
    /// assert_eq!(doc["profiles"].as_array().unwrap().len(), 1);
    /// ```
    #[must_use]
    pub fn without_default_profile(mut self) -> Self {
        self.no_default_profile = true;
        self
    }

    /// Adds a profile after `default-scheduler`.
    #[must_use]
    pub fn profile(mut self, profile: serde_json::Value) -> Self {
        self.profiles.push(profile);
        self
    }

    /// Adds an extender.
    #[must_use]
    pub fn extender(mut self, extender: serde_json::Value) -> Self {
        self.extenders.push(extender);
        self
    }

    /// The whole `KubeSchedulerConfiguration`, talking to the API server through `kubeconfig`.
    pub fn to_json(&self, kubeconfig: &Path) -> serde_json::Value {
        let mut profiles = Vec::new();
        if !self.no_default_profile {
            profiles.push(serde_json::json!({"schedulerName": "default-scheduler"}));
        }
        profiles.extend(self.profiles.iter().cloned());
        serde_json::json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": kubeconfig, "qps": 100, "burst": 200},
            "leaderElection": {"leaderElect": false},
            "profiles": profiles,
            "extenders": self.extenders,
        })
    }
}

/// A process to run beside the local cluster's components
/// ([`LocalCluster::start_process`]).
///
/// ```
/// use hami_e2e_k8s::local::ProcessSpec;
///
/// let spec = ProcessSpec::new("extender", "/bin/extender").arg("-v=4").env("KUBECONFIG", "/tmp/kc");
/// assert_eq!(spec.name(), "extender");
/// ```
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ProcessSpec {
    /// `binary`, known to the cluster (logs, pids record) as `name`.
    pub fn new(name: impl Into<String>, binary: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            binary: binary.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds an argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (the rest of this process's environment is inherited).
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// How to start a [`LocalCluster`].
///
/// ```
/// use std::time::Duration;
/// use hami_e2e_k8s::local::{LocalClusterOptions, NodeSpec};
///
/// let options = LocalClusterOptions::default()
///     .node(NodeSpec::new("node-0"))
///     .start_timeout(Duration::from_secs(90));
/// ```
#[derive(Debug, Clone)]
pub struct LocalClusterOptions {
    release: Option<KubernetesRelease>,
    cache: Option<BinaryCache>,
    nodes: Vec<NodeSpec>,
    scheduler: SchedulerConfig,
    start_timeout: Duration,
    apiserver_args: Vec<String>,
    host_exec: bool,
}

impl Default for LocalClusterOptions {
    /// `HAMI_E2E_K8S_VERSION`'s release (default the newest), the default binary cache, no
    /// node, the default scheduler, 120 s per component to become ready.
    fn default() -> Self {
        Self {
            release: None,
            cache: None,
            nodes: Vec::new(),
            scheduler: SchedulerConfig::default(),
            start_timeout: Duration::from_secs(120),
            apiserver_args: Vec::new(),
            host_exec: false,
        }
    }
}

impl LocalClusterOptions {
    /// The Kubernetes release to run (default: `HAMI_E2E_K8S_VERSION`, else the newest).
    #[must_use]
    pub fn release(mut self, release: KubernetesRelease) -> Self {
        self.release = Some(release);
        self
    }

    /// Where binaries are cached (default [`BinaryCache::default`]).
    #[must_use]
    pub fn cache(mut self, cache: BinaryCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// A fake node to add, and wait Ready for, during start-up.
    #[must_use]
    pub fn node(mut self, node: NodeSpec) -> Self {
        self.nodes.push(node);
        self
    }

    /// The scheduler's extra profiles and extenders.
    #[must_use]
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = config;
        self
    }

    /// How long each component may take to become ready (default 120 s, which covers a
    /// loaded 2-core machine).
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Extra kube-apiserver flags (`--feature-gates=...`), appended after the defaults.
    #[must_use]
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }

    /// Answers `exec` into any container of a fake node by running the command **on this
    /// host**, in the folder [`LocalCluster::exec_dir`], and `logs` of any container with
    /// the content of [`LocalCluster::pod_log_file`] (KWOK's `ClusterExec` and
    /// `ClusterLogs`). Off by default: pods of fake nodes have no processes, and a test
    /// should opt in to commands running on its host. The requests go through the real
    /// API server and its streaming protocols, which is what this exists to test.
    #[must_use]
    pub fn host_exec(mut self, on: bool) -> Self {
        self.host_exec = on;
        self
    }
}

/// Ports of the components on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
struct Ports {
    etcd: u16,
    etcd_peer: u16,
    apiserver: u16,
    controller_manager: u16,
    scheduler: u16,
    kwok: u16,
}

impl Ports {
    /// Six distinct free ports: all bound at once, then released.
    fn pick() -> Result<Ports> {
        let mut listeners = Vec::new();
        for _ in 0..6 {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|source| {
                Error::NoFreePort {
                    component: "the local cluster",
                    source,
                }
            })?;
            listeners.push(l);
        }
        let p: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()).unwrap_or_default())
            .collect();
        Ok(Ports {
            etcd: p[0],
            etcd_peer: p[1],
            apiserver: p[2],
            controller_manager: p[3],
            scheduler: p[4],
            kwok: p[5],
        })
    }
}

/// A running local cluster. Stopped by [`LocalCluster::stop`] or on drop.
pub struct LocalCluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    version: String,
    client: kube::Client,
    ports: Ports,
    start_timeout: Duration,
    processes: Arc<Mutex<BTreeMap<Component, Process>>>,
    /// Processes started beside the components ([`LocalCluster::start_process`]), in start
    /// order.
    extras: Arc<Mutex<Vec<Process>>>,
    stopped: Mutex<bool>,
}

impl fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCluster")
            .field("dir", &self.dir)
            .field("server", &self.server)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Prefix of the clusters' temporary folders: `hami-e2e-cluster-<pid>-<nonce>`.
const DIR_PREFIX: &str = "hami-e2e-cluster-";

/// The file in a cluster's folder that records its components: `<component> <pid> <start>`
/// lines, so a later start can stop what a dead owner left, by pid and start time.
const PIDS_FILE: &str = "pids";

/// Stops the components recorded in `dir`'s pids file that are still the processes that
/// were recorded (the owner died without stopping them); returns what it stopped.
fn stop_recorded(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join(PIDS_FILE)) else {
        return Vec::new();
    };
    let mut stopped = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(pid), Some(start)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            continue;
        };
        if process::kill_if_same(pid, start) {
            stopped.push(format!("{name} (pid {pid})"));
        }
    }
    stopped
}

/// A new temporary folder for a cluster; removes those of processes that no longer exist,
/// after stopping the components they recorded.
fn make_dir() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
                continue;
            };
            let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if owner.is_some_and(|pid| !process_is_alive(pid)) {
                let stopped = stop_recorded(&entry.path());
                if !stopped.is_empty() {
                    tracing::warn!(dir = %entry.path().display(), ?stopped, "stopped components a dead process left running");
                }
                tracing::info!(dir = %entry.path().display(), "removing a cluster folder left by a dead process");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let nonce = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.finish() & 0xff_ffff
    };
    let dir = tmp.join(format!("{DIR_PREFIX}{}-{nonce:06x}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).map_err(|source| Error::Io {
        action: "create folder",
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn write(path: &Path, content: &str) -> Result<()> {
    std::fs::write(path, content).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// A client for a component's own HTTPS (or HTTP) health endpoint; these serve
/// self-signed certificates and allow anonymous health checks.
fn health_client(url: &str) -> Result<kube::Client> {
    let uri: http::Uri = url.parse().map_err(|e| Error::Invalid {
        what: format!("health URL `{url}`"),
        message: format!("{e}"),
    })?;
    let mut config = kube::Config::new(uri);
    config.accept_invalid_certs = true;
    config.read_timeout = Some(Duration::from_secs(5));
    config.connect_timeout = Some(Duration::from_secs(2));
    kube::Client::try_from(config).map_err(|e| Error::Invalid {
        what: format!("health client for `{url}`"),
        message: e.to_string(),
    })
}

/// GETs `path`; `Ok` for 2xx.
async fn probe(client: &kube::Client, path: &str) -> std::result::Result<String, String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client.request_text(request).await.map_err(|e| match e {
        kube::Error::Api(status) => format!("HTTP {}: {}", status.code, status.message),
        other => other.to_string(),
    })
}

impl LocalCluster {
    /// Builds the binaries if the cache lacks them, then starts etcd, kube-apiserver,
    /// kube-controller-manager and kube-scheduler, and KWOK, each after the one before is
    /// ready; waits for the `default` service account (so pods can be created at once) and
    /// for the option's nodes to be Ready.
    ///
    /// A port taken by someone else between picking and binding is retried with new ports.
    ///
    /// # Errors
    ///
    /// [`Error::GoMissing`]/[`Error::GoBuild`] (binaries), [`Error::Spawn`],
    /// [`Error::ComponentExited`] and [`Error::NotReady`] with the component's last log
    /// lines, [`Error::Api`] for the nodes.
    pub async fn start(options: LocalClusterOptions) -> Result<LocalCluster> {
        let started = Instant::now();
        let release = match options.release {
            Some(r) => r,
            None => KubernetesRelease::from_env()?,
        };
        for node in &options.nodes {
            node.to_node()?;
        }
        let cache = options.cache.clone().unwrap_or_default();
        let (k8s, kwok) = futures::try_join!(cache.kubernetes(&release), cache.kwok())?;
        let mut step = LongStep::start("local cluster", &k8s.version, None, "start-up");
        let mut attempt = 0;
        let cluster = loop {
            attempt += 1;
            match Self::try_start(&options, &k8s, &kwok).await {
                Ok(cluster) => {
                    step.set_log(&cluster.dir.join("logs"));
                    break cluster;
                }
                Err(Error::ComponentExited { ref log_tail, .. })
                    if attempt < 3 && log_tail.contains("address already in use") =>
                {
                    tracing::info!("a port was taken during start-up; retrying with new ports");
                }
                Err(e) => {
                    step.fail(&e);
                    return Err(e);
                }
            }
        };
        for node in &options.nodes {
            cluster.add_node(node.clone()).await?;
        }
        step.finish();
        tracing::info!(
            version = %cluster.version,
            server = %cluster.server,
            elapsed = ?started.elapsed(),
            "local cluster ready"
        );
        Ok(cluster)
    }

    async fn try_start(
        options: &LocalClusterOptions,
        k8s: &crate::local::bincache::KubernetesBinaries,
        kwok: &crate::local::bincache::KwokBinaries,
    ) -> Result<LocalCluster> {
        let dir = make_dir()?;
        // From here on, dropping `cluster` stops what was started and removes `dir`.
        let ports = Ports::pick()?;
        let pki = pki::generate(&dir.join("pki"))?;
        let server = format!("https://127.0.0.1:{}", ports.apiserver);
        let kubeconfig = dir.join("kubeconfig");
        write(&kubeconfig, &pki::kubeconfig(&pki, &server))?;
        let client = client_from_kubeconfig(&kubeconfig, None).await?;
        let cluster = LocalCluster {
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
            server,
            version: k8s.version.clone(),
            client,
            ports,
            start_timeout: options.start_timeout,
            processes: Arc::new(Mutex::new(BTreeMap::new())),
            extras: Arc::new(Mutex::new(Vec::new())),
            stopped: Mutex::new(false),
        };
        let path = |p: &Path| p.display().to_string();
        let log = |c: Component| dir.join("logs").join(format!("{c}.log"));

        let p = ports.etcd_peer;
        let e = ports.etcd;
        cluster.spawn(
            Component::Etcd,
            &k8s.etcd,
            vec![
                "--name=default".into(),
                format!("--data-dir={}", path(&dir.join("etcd"))),
                format!("--listen-client-urls=http://127.0.0.1:{e}"),
                format!("--advertise-client-urls=http://127.0.0.1:{e}"),
                format!("--listen-peer-urls=http://127.0.0.1:{p}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{p}"),
                format!("--initial-cluster=default=http://127.0.0.1:{p}"),
                "--unsafe-no-fsync=true".into(),
                "--auto-compaction-retention=1".into(),
                "--quota-backend-bytes=8589934592".into(),
                "--log-level=warn".into(),
            ],
            log(Component::Etcd),
        )?;
        cluster.wait_ready(Component::Etcd).await?;

        let mut apiserver_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{e}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.apiserver),
            format!("--cert-dir={}", path(&dir.join("pki"))),
            format!("--tls-cert-file={}", path(&pki.admin_crt)),
            format!("--tls-private-key-file={}", path(&pki.admin_key)),
            format!("--client-ca-file={}", path(&pki.ca_crt)),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", path(&pki.sa_pub)),
            format!("--service-account-signing-key-file={}", path(&pki.sa_key)),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--allow-privileged=true".into(),
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
            "--max-requests-inflight=0".into(),
            "--max-mutating-requests-inflight=0".into(),
            "--enable-priority-and-fairness=false".into(),
            "--v=1".into(),
        ];
        apiserver_args.extend(options.apiserver_args.iter().cloned());
        cluster.spawn(
            Component::ApiServer,
            &k8s.apiserver,
            apiserver_args,
            log(Component::ApiServer),
        )?;
        cluster.wait_ready(Component::ApiServer).await?;

        let kc = path(&kubeconfig);
        cluster.spawn(
            Component::ControllerManager,
            &k8s.controller_manager,
            vec![
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", ports.controller_manager),
                format!("--cert-dir={}", path(&dir.join("pki").join("kcm"))),
                "--leader-elect=false".into(),
                format!("--service-account-private-key-file={}", path(&pki.sa_key)),
                format!("--root-ca-file={}", path(&pki.ca_crt)),
                "--use-service-account-credentials=false".into(),
                "--node-monitor-period=25s".into(),
                "--node-monitor-grace-period=3m20s".into(),
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics".into(),
                "--kube-api-qps=100".into(),
                "--kube-api-burst=200".into(),
                "--concurrent-namespace-syncs=10".into(),
                "--v=1".into(),
            ],
            log(Component::ControllerManager),
        )?;
        write(
            &dir.join("scheduler.json"),
            &options.scheduler.to_json(&kubeconfig).to_string(),
        )?;
        cluster.spawn(
            Component::Scheduler,
            &k8s.scheduler,
            cluster.scheduler_args(),
            log(Component::Scheduler),
        )?;
        futures::try_join!(
            cluster.wait_ready(Component::ControllerManager),
            cluster.wait_ready(Component::Scheduler),
        )?;
        cluster.wait_default_service_account().await?;

        // Only the stages: a KwokConfiguration document would replace kwok's defaults
        // (parallelism 0 and the like) with whatever it leaves out.
        let mut kwok_config = String::new();
        for stage in &kwok.stages {
            let text = std::fs::read_to_string(stage).map_err(|source| Error::Io {
                action: "read",
                path: stage.clone(),
                source,
            })?;
            kwok_config.push_str("---\n");
            kwok_config.push_str(&text);
            if !text.ends_with('\n') {
                kwok_config.push('\n');
            }
        }
        if options.host_exec {
            let exec_dir = dir.join("exec");
            std::fs::create_dir_all(&exec_dir).map_err(|source| Error::Io {
                action: "create folder",
                path: exec_dir.clone(),
                source,
            })?;
            write(&dir.join("pod.log"), "")?;
            kwok_config.push_str(&host_exec_documents(&exec_dir, &dir.join("pod.log")));
        }
        write(&dir.join("kwok.yaml"), &kwok_config)?;
        cluster.spawn(
            Component::Kwok,
            &kwok.kwok,
            vec![
                format!("--kubeconfig={kc}"),
                format!("--config={}", path(&dir.join("kwok.yaml"))),
                "--manage-all-nodes=false".into(),
                format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
                "--node-ip=127.0.0.1".into(),
                "--node-name=localhost".into(),
                format!("--node-port={}", ports.kwok),
                format!("--server-address=127.0.0.1:{}", ports.kwok),
                format!("--tls-cert-file={}", path(&pki.admin_crt)),
                format!("--tls-private-key-file={}", path(&pki.admin_key)),
                "--cidr=10.244.0.0/16".into(),
                "--node-lease-duration-seconds=200".into(),
            ],
            log(Component::Kwok),
        )?;
        cluster.wait_ready(Component::Kwok).await?;
        Ok(cluster)
    }

    fn scheduler_args(&self) -> Vec<String> {
        let kc = self.kubeconfig.display().to_string();
        vec![
            format!("--config={}", self.dir.join("scheduler.json").display()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", self.ports.scheduler),
            format!(
                "--cert-dir={}",
                self.dir.join("pki").join("scheduler").display()
            ),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics".into(),
            "--v=1".into(),
        ]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Component, Process>> {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self, c: Component, binary: &Path, args: Vec<String>, log: PathBuf) -> Result<()> {
        let process = Process::spawn(c.as_str(), binary, args, Vec::new(), log)?;
        self.lock().insert(c, process);
        self.record_pids()
    }

    fn lock_extras(&self) -> std::sync::MutexGuard<'_, Vec<Process>> {
        self.extras.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records every component and extra process with its pid and start time (see
    /// `stop_recorded`).
    fn record_pids(&self) -> Result<()> {
        let line = |name: &str, p: &Process| {
            let pid = p.pid()?;
            Some(format!(
                "{name} {pid} {}\n",
                hami_e2e_core::admission::process_start_time(pid)?
            ))
        };
        let mut record: String = self
            .lock()
            .iter()
            .filter_map(|(c, p)| line(c.as_str(), p))
            .collect();
        record.extend(self.lock_extras().iter().filter_map(|p| line(&p.name, p)));
        write(&self.dir.join(PIDS_FILE), &record)
    }

    /// The URL and path that say whether `c` is ready.
    fn health(&self, c: Component) -> (String, &'static str) {
        let p = self.ports;
        match c {
            Component::Etcd => (format!("http://127.0.0.1:{}", p.etcd), "/health"),
            Component::ApiServer => (self.server.clone(), "/readyz"),
            Component::ControllerManager => (
                format!("https://127.0.0.1:{}", p.controller_manager),
                "/healthz",
            ),
            Component::Scheduler => (format!("https://127.0.0.1:{}", p.scheduler), "/readyz"),
            Component::Kwok => (format!("https://127.0.0.1:{}", p.kwok), "/healthz"),
        }
    }

    /// Polls `c`'s health endpoint every 100 ms until it answers 2xx, failing at once if the
    /// process exits.
    async fn wait_ready(&self, c: Component) -> Result<()> {
        let (url, path) = self.health(c);
        let client = if c == Component::ApiServer {
            self.client.clone()
        } else {
            health_client(&url)?
        };
        let started = Instant::now();
        let mut last;
        loop {
            if let Some(p) = self.lock().get_mut(&c) {
                p.check_alive("during start-up")?;
            }
            // Refused connections are expected while a component starts; keep kube's
            // request logging out of the test output.
            let answer = probe(&client, path)
                .with_subscriber(tracing::subscriber::NoSubscriber::default())
                .await;
            match answer {
                Ok(body) if c != Component::Etcd || body.contains("true") => {
                    tracing::debug!(component = %c, elapsed = ?started.elapsed(), "ready");
                    return Ok(());
                }
                Ok(body) => last = body,
                Err(e) => last = e,
            }
            if started.elapsed() > self.start_timeout {
                let log = self.log_path(c);
                return Err(Error::NotReady {
                    component: c.to_string(),
                    waited: started.elapsed(),
                    last: format!("GET {url}{path}: {last}"),
                    log_tail: process::log_tail(&log, 20),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for `default/default`: the service-account controller creates one per
    /// namespace, and pods created before it exists are refused.
    async fn wait_default_service_account(&self) -> Result<()> {
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), "default");
        let wait = await_condition(api, "default", |sa: Option<&ServiceAccount>| sa.is_some());
        match tokio::time::timeout(self.start_timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::Invalid {
                what: "watch of service account default/default".into(),
                message: e.to_string(),
            }),
            Err(_) => Err(Error::NotReady {
                component: Component::ControllerManager.to_string(),
                waited: self.start_timeout,
                last: "service account default/default was not created".into(),
                log: self.log_path(Component::ControllerManager),
                log_tail: process::log_tail(&self.log_path(Component::ControllerManager), 20),
            }),
        }
    }

    /// Creates a fake node and waits until KWOK reports it Ready.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a bad spec, [`Error::Api`] with the server's message,
    /// [`Error::WaitTimeout`] if KWOK does not mark it Ready.
    pub async fn add_node(&self, spec: NodeSpec) -> Result<Node> {
        let node = spec.to_node()?;
        let api = Api::<Node>::all(self.client.clone());
        api.create(&PostParams::default(), &node)
            .await
            .map_err(|source| Error::Api {
                action: "create",
                object: format!("node/{}", spec.name()),
                source,
            })?;
        let started = Instant::now();
        let ready = await_condition(api, spec.name(), |n: Option<&Node>| {
            n.is_some_and(wait::node_is_ready)
        });
        match tokio::time::timeout(self.start_timeout, ready).await {
            Ok(Ok(Some(node))) => {
                tracing::debug!(node = spec.name(), elapsed = ?started.elapsed(), "node ready");
                Ok(node)
            }
            Ok(Ok(None)) => Err(Error::WaitTimeout {
                what: format!("node/{} to be Ready", spec.name()),
                waited: started.elapsed(),
                last: "the node was deleted".into(),
                events: String::new(),
            }),
            Ok(Err(e)) => Err(Error::Invalid {
                what: format!("watch of node/{}", spec.name()),
                message: e.to_string(),
            }),
            Err(_) => {
                let log = self.log_path(Component::Kwok);
                Err(Error::WaitTimeout {
                    what: format!("node/{} to be Ready", spec.name()),
                    waited: started.elapsed(),
                    last: format!(
                        "not Ready; last lines of {}:\n{}",
                        log.display(),
                        process::log_tail(&log, 20)
                    ),
                    events: String::new(),
                })
            }
        }
    }

    /// Deletes a fake node.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] with the server's message.
    pub async fn remove_node(&self, name: &str) -> Result<()> {
        Api::<Node>::all(self.client.clone())
            .delete(name, &Default::default())
            .await
            .map_err(|source| Error::Api {
                action: "delete",
                object: format!("node/{name}"),
                source,
            })?;
        Ok(())
    }

    /// Stops `component` (SIGTERM, then SIGKILL after 10 s) and starts it again with the
    /// same flags, then waits until it is ready. For fault tests: restarting the API server
    /// in the middle of a wait.
    ///
    /// # Errors
    ///
    /// As [`LocalCluster::start`] for that component.
    pub async fn restart(&self, component: Component) -> Result<()> {
        // Stopping waits up to the grace period: on a blocking thread. Starting happens
        // here, on a runtime worker, which outlives the component (`PR_SET_PDEATHSIG` fires
        // when the thread that started a process exits; a blocking thread idles out).
        let processes = Arc::clone(&self.processes);
        tokio::task::spawn_blocking(move || {
            let mut map = processes.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = map.get_mut(&component) {
                p.stop(Duration::from_secs(10));
            }
        })
        .await
        .map_err(|e| Error::Invalid {
            what: format!("restart of {component}"),
            message: e.to_string(),
        })?;
        if let Some(p) = self.lock().get_mut(&component) {
            p.start()?;
        }
        self.record_pids()?;
        self.wait_ready(component).await
    }

    /// Replaces the scheduler's profiles and extenders and restarts it (for HAMi's
    /// extender, which needs the cluster running before it can start).
    ///
    /// # Errors
    ///
    /// [`Error::Io`], or as [`LocalCluster::restart`].
    pub async fn set_scheduler_config(&self, config: &SchedulerConfig) -> Result<()> {
        write(
            &self.dir.join("scheduler.json"),
            &config.to_json(&self.kubeconfig).to_string(),
        )?;
        self.restart(Component::Scheduler).await
    }

    /// Starts a process beside the cluster's components: one that talks to the cluster
    /// (a scheduler extender, a webhook server, a second scheduler). Like the components,
    /// it leads its own process group, dies with this process (`PR_SET_PDEATHSIG`), writes
    /// to `logs/<name>.log`, is recorded with its pid and start time in the cluster's
    /// `pids` file (so a later start stops it if this process is killed), and is stopped
    /// before the components by [`LocalCluster::stop`]. Returns its pid.
    ///
    /// ```no_run
    /// # async fn f(cluster: &hami_e2e_k8s::local::LocalCluster) -> hami_e2e_k8s::Result<()> {
    /// use hami_e2e_k8s::local::ProcessSpec;
    ///
    /// let pid = cluster.start_process(
    ///     ProcessSpec::new("my-extender", "/usr/local/bin/my-extender")
    ///         .arg("--port=8443")
    ///         .env("KUBECONFIG", cluster.kubeconfig().display().to_string()),
    /// )?;
    /// println!("pid {pid}, log {}", cluster.process_log("my-extender").display());
    /// cluster.stop_process("my-extender").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a name that is empty, not a single path segment, one of the
    /// components' or one already running; [`Error::Spawn`] naming the binary.
    pub fn start_process(&self, spec: ProcessSpec) -> Result<u32> {
        let bad_name = spec.name.is_empty()
            || spec.name.contains(['/', ' ', '\n'])
            || Component::ALL.iter().any(|c| c.as_str() == spec.name);
        if bad_name {
            return Err(Error::Invalid {
                what: format!("process name `{}`", spec.name),
                message: "must be one path segment without spaces, and not a component's name"
                    .into(),
            });
        }
        let mut extras = self.lock_extras();
        if extras
            .iter()
            .any(|p| p.name == spec.name && p.pid().is_some())
        {
            return Err(Error::Invalid {
                what: format!("process `{}`", spec.name),
                message: "is running already".into(),
            });
        }
        extras.retain(|p| p.name != spec.name);
        let log = self.process_log(&spec.name);
        let process = Process::spawn(spec.name, &spec.binary, spec.args, spec.env, log)?;
        let pid = process.pid().unwrap_or_default();
        extras.push(process);
        drop(extras);
        self.record_pids()?;
        Ok(pid)
    }

    /// The log file of a process started with [`LocalCluster::start_process`].
    pub fn process_log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// `Ok` while the process `name` runs; else [`Error::ComponentExited`] with the last
    /// lines of its log (or [`Error::Invalid`] if no such process was started).
    ///
    /// # Errors
    ///
    /// As above.
    pub fn check_process(&self, name: &str, when: &str) -> Result<()> {
        let mut extras = self.lock_extras();
        let process = extras
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::Invalid {
                what: format!("process `{name}`"),
                message: "was not started on this cluster".into(),
            })?;
        process.check_alive(when)
    }

    /// The pid of the process `name`, while it runs.
    pub fn process_pid(&self, name: &str) -> Option<u32> {
        self.lock_extras()
            .iter()
            .find(|p| p.name == name)
            .and_then(Process::pid)
    }

    /// Stops the process `name` (SIGTERM to its group, SIGKILL after 10 s) and forgets it.
    /// Stopping one that is not running is fine.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the pids record cannot be written.
    pub async fn stop_process(&self, name: &str) -> Result<()> {
        let process = {
            let mut extras = self.lock_extras();
            let i = extras.iter().position(|p| p.name == name);
            i.map(|i| extras.remove(i))
        };
        if let Some(mut process) = process {
            let _ =
                tokio::task::spawn_blocking(move || process.stop(Duration::from_secs(10))).await;
        }
        self.record_pids()
    }

    /// Starts a second kube-scheduler, `name`, with `config` (usually
    /// [`SchedulerConfig::without_default_profile`] and the profiles it serves), on a free
    /// port, and waits until it is ready: a scheduler of its own for pods that name its
    /// profile, so that an extender (HAMi's) sees only those and the cluster's own scheduler
    /// is left as it is. Stopped with [`LocalCluster::stop_process`] or with the cluster.
    ///
    /// ```no_run
    /// # async fn f(cluster: &hami_e2e_k8s::local::LocalCluster) -> hami_e2e_k8s::Result<()> {
    /// use hami_e2e_k8s::local::SchedulerConfig;
    ///
    /// let config = SchedulerConfig::default()
    ///     .without_default_profile()
    ///     .profile(serde_json::json!({"schedulerName": "my-scheduler"}));
    /// cluster.start_scheduler("my-kube-scheduler", &config).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NoFreePort`], [`Error::Io`], and as [`LocalCluster::start_process`];
    /// [`Error::ComponentExited`] or [`Error::NotReady`] with its log's last lines when it
    /// does not become ready.
    pub async fn start_scheduler(&self, name: &str, config: &SchedulerConfig) -> Result<()> {
        let binary = self
            .lock()
            .get(&Component::Scheduler)
            .map(|p| p.binary.clone())
            .ok_or_else(|| Error::Invalid {
                what: format!("scheduler `{name}`"),
                message: "the cluster's kube-scheduler is not running".into(),
            })?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|source| Error::NoFreePort {
                component: "a second kube-scheduler",
                source,
            })?;
        let config_path = self.dir.join(format!("{name}.json"));
        write(&config_path, &config.to_json(&self.kubeconfig).to_string())?;
        let kc = self.kubeconfig.display().to_string();
        let cert_dir = self.dir.join("pki").join(name);
        self.start_process(
            ProcessSpec::new(name, binary)
                .arg(format!("--config={}", config_path.display()))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", cert_dir.display()))
                .arg(format!("--authentication-kubeconfig={kc}"))
                .arg(format!("--authorization-kubeconfig={kc}"))
                .arg("--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics")
                .arg("--v=2"),
        )?;
        let url = format!("https://127.0.0.1:{port}");
        let client = health_client(&url)?;
        let started = Instant::now();
        loop {
            self.check_process(name, "during start-up")?;
            let answer = probe(&client, "/readyz")
                .with_subscriber(tracing::subscriber::NoSubscriber::default())
                .await;
            match answer {
                Ok(_) => return Ok(()),
                Err(last) if started.elapsed() > self.start_timeout => {
                    let log = self.process_log(name);
                    return Err(Error::NotReady {
                        component: name.to_string(),
                        waited: started.elapsed(),
                        last: format!("GET {url}/readyz: {last}"),
                        log_tail: process::log_tail(&log, 20),
                        log,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Where commands run by `exec` into fake pods run, with
    /// [`LocalClusterOptions::host_exec`].
    pub fn exec_dir(&self) -> PathBuf {
        self.dir.join("exec")
    }

    /// The file whose content `logs` of fake pods returns, with
    /// [`LocalClusterOptions::host_exec`]: lines in the container runtime's format
    /// (`<RFC 3339 time> stdout F <text>`); [`LocalCluster::set_pod_logs`] writes it.
    pub fn pod_log_file(&self) -> PathBuf {
        self.dir.join("pod.log")
    }

    /// Sets what `logs` of every fake pod returns (with
    /// [`LocalClusterOptions::host_exec`]): `lines` on stdout, stamped now.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be written.
    pub fn set_pod_logs<I, S>(&self, lines: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let now = k8s_openapi::jiff::Timestamp::now();
        let text: String = lines
            .into_iter()
            .map(|l| format!("{now} stdout F {}\n", l.as_ref()))
            .collect();
        write(&self.pod_log_file(), &text)
    }

    /// The admin kubeconfig (absolute paths to the certificates): for `kubectl`, Helm,
    /// HAMi's processes.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client with the admin's rights.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The Kubernetes version (`v1.37.2`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The cluster's temporary folder (certificates in `pki/`, logs in `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate that signed the API server's and the admin's certificates.
    pub fn ca_certificate(&self) -> PathBuf {
        self.dir.join("pki").join("ca.crt")
    }

    /// The log file of a component.
    pub fn log_path(&self, component: Component) -> PathBuf {
        self.dir.join("logs").join(format!("{component}.log"))
    }

    /// The pids of the running components.
    pub fn pids(&self) -> Vec<(Component, u32)> {
        self.lock()
            .iter()
            .filter_map(|(c, p)| p.pid().map(|pid| (*c, pid)))
            .collect()
    }

    /// Stops every component in reverse start order and removes the temporary folder.
    /// Idempotent; dropping the cluster does the same.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the folder cannot be removed.
    pub async fn stop(&self) -> Result<()> {
        let processes = Arc::clone(&self.processes);
        let extras = Arc::clone(&self.extras);
        let _ = tokio::task::spawn_blocking(move || stop_all(&extras, &processes)).await;
        self.remove_dir()
    }

    fn remove_dir(&self) -> Result<()> {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return Ok(());
        }
        *stopped = true;
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                action: "remove",
                path: self.dir.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Stops the extra processes, then the components, in reverse start order.
fn stop_all(extras: &Mutex<Vec<Process>>, processes: &Mutex<BTreeMap<Component, Process>>) {
    let mut extras = extras.lock().unwrap_or_else(PoisonError::into_inner);
    while let Some(mut p) = extras.pop() {
        p.stop(Duration::from_secs(10));
    }
    let mut map = processes.lock().unwrap_or_else(PoisonError::into_inner);
    while let Some((_, mut p)) = map.pop_last() {
        p.stop(Duration::from_secs(10));
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        stop_all(&self.extras, &self.processes);
        let _ = self.remove_dir();
    }
}

/// KWOK's `ClusterExec` and `ClusterLogs` for every pod: commands run in `exec_dir` on the
/// host, logs come from `log_file`.
fn host_exec_documents(exec_dir: &Path, log_file: &Path) -> String {
    let exec = serde_json::json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterExec",
        "metadata": {"name": "hami-e2e-host-exec"},
        "spec": {"execs": [{"local": {"workDir": exec_dir.display().to_string()}}]}
    });
    let logs = serde_json::json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": {"name": "hami-e2e-pod-logs"},
        "spec": {"logs": [{
            "logsFile": log_file.display().to_string(),
            "previousLogsFile": log_file.display().to_string(),
            "follow": false
        }]}
    });
    // JSON is YAML: one document each.
    format!("---\n{exec}\n---\n{logs}\n")
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .expect("sleep runs")
    }

    #[test]
    fn recorded_components_are_stopped_by_pid_and_start_time_only() {
        let dir = std::env::temp_dir().join(format!("hami-e2e-pids-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut recorded = sleeper();
        let mut reused = sleeper();
        let start =
            hami_e2e_core::admission::process_start_time(recorded.id()).expect("a start time");
        let other =
            hami_e2e_core::admission::process_start_time(reused.id()).expect("a start time");
        // The second line stands for a pid reused by another process: its start time differs.
        let text = format!(
            "etcd {} {start}\nkwok {} {}\nbroken line\n",
            recorded.id(),
            reused.id(),
            other + 1
        );
        std::fs::write(dir.join(PIDS_FILE), text).unwrap();
        let stopped = stop_recorded(&dir);
        assert_eq!(stopped, [format!("etcd (pid {})", recorded.id())]);
        let status = recorded.wait().unwrap();
        assert!(!status.success(), "killed: {status:?}");
        assert!(
            reused.try_wait().unwrap().is_none(),
            "another process's pid is left alone"
        );
        reused.kill().unwrap();
        reused.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(stop_recorded(&dir).is_empty(), "no folder, nothing to stop");
    }
}
