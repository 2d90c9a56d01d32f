//! A Helm release as a typed, self-cleaning fixture: install, upgrade, roll back, inspect
//! and uninstall with the real `helm` CLI, with watch-driven readiness on top of `--wait`.
//!
//! Values are written to a file and passed with `--values`, never interpolated into a
//! command line or a shell (there is no shell: `helm` is run directly). Every command gets
//! the cluster's kubeconfig with `--kubeconfig` (and `--kube-context`), unless it runs
//! in-cluster, and a timeout.
//!
//! ```no_run
//! # async fn f(cluster: &hami_e2e_k8s::Cluster, helm: std::path::PathBuf) -> hami_e2e_helm::Result<()> {
//! use hami_e2e_helm::{Chart, HelmRelease};
//!
//! let release = HelmRelease::new(helm, cluster.access().clone(), "hami", "hami-system", Chart::dir("charts/hami"));
//! release.install(&serde_json::json!({"scheduler": {"leaderElect": false}})).await?;
//! release.wait_ready(cluster.client(), std::time::Duration::from_secs(300)).await?;
//! let status = release.status().await?;
//! assert_eq!(status.info.status, "deployed");
//! release.uninstall(cluster.client(), std::time::Duration::from_secs(120)).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use serde::Deserialize;

use hami_e2e_k8s::ClusterAccess;

use crate::error::{Error, Result};

/// Where a chart comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Chart {
    /// A chart folder (`charts/hami` of a checkout).
    Dir(PathBuf),
    /// A packaged chart (`hami-2.10.0.tgz`, what HAMi's CI builds per pull request).
    Package(PathBuf),
    /// A chart repository: its URL, the chart's name in it, and an optional version.
    Repo {
        /// `https://project-hami.github.io/HAMi/`.
        url: String,
        /// `hami`.
        name: String,
        /// `2.10.0`; the newest when `None`.
        version: Option<String>,
    },
    /// An OCI reference (`oci://registry/charts/hami`) and an optional version.
    Oci {
        /// The reference.
        reference: String,
        /// The version; the newest when `None`.
        version: Option<String>,
    },
}

impl Chart {
    /// A chart folder.
    pub fn dir(path: impl Into<PathBuf>) -> Chart {
        Chart::Dir(path.into())
    }

    /// A packaged chart.
    pub fn package(path: impl Into<PathBuf>) -> Chart {
        Chart::Package(path.into())
    }

    /// The chart argument and extra flags of `helm install`/`upgrade`/`template`.
    ///
    /// ```
    /// use hami_e2e_helm::Chart;
    ///
    /// let repo = Chart::Repo { url: "https://project-hami.github.io/HAMi/".into(), name: "hami".into(), version: Some("2.10.0".into()) };
    /// assert_eq!(repo.args(), ["hami", "--repo", "https://project-hami.github.io/HAMi/", "--version", "2.10.0"]);
    /// assert_eq!(Chart::dir("charts/hami").args(), ["charts/hami"]);
    /// ```
    pub fn args(&self) -> Vec<String> {
        match self {
            Chart::Dir(p) | Chart::Package(p) => vec![p.display().to_string()],
            Chart::Repo { url, name, version } => {
                let mut a = vec![name.clone(), "--repo".into(), url.clone()];
                if let Some(v) = version {
                    a.extend(["--version".into(), v.clone()]);
                }
                a
            }
            Chart::Oci { reference, version } => {
                let mut a = vec![reference.clone()];
                if let Some(v) = version {
                    a.extend(["--version".into(), v.clone()]);
                }
                a
            }
        }
    }

    /// Checks what can be checked without Helm: a folder holds `Chart.yaml`, a package is a
    /// file ending in `.tgz`, a repository URL is http(s), an OCI reference starts with
    /// `oci://`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the chart and what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: &str| {
            Err(Error::Invalid {
                what: format!("chart {}", self.args().join(" ")),
                message: message.to_string(),
            })
        };
        match self {
            Chart::Dir(p) if !p.join("Chart.yaml").is_file() => bad("no Chart.yaml in the folder"),
            Chart::Package(p) if !p.is_file() => bad("no such file"),
            Chart::Package(p) if !p.to_string_lossy().ends_with(".tgz") => {
                bad("a packaged chart ends in .tgz")
            }
            Chart::Repo { url, .. }
                if !(url.starts_with("https://") || url.starts_with("http://")) =>
            {
                bad("a repository URL starts with https:// or http://")
            }
            Chart::Oci { reference, .. } if !reference.starts_with("oci://") => {
                bad("an OCI reference starts with oci://")
            }
            _ => Ok(()),
        }
    }
}

/// `helm status -o json`, the parts tests read.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReleaseStatus {
    /// The release's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its current revision.
    pub version: u32,
    /// State of the revision.
    pub info: ReleaseInfo,
}

/// The `info` of [`ReleaseStatus`].
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReleaseInfo {
    /// `deployed`, `failed`, `pending-install`, `superseded`, ...
    pub status: String,
    /// What Helm said of the last operation.
    #[serde(default)]
    pub description: String,
}

/// One line of `helm history -o json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revision {
    /// The revision number, from 1.
    pub revision: u32,
    /// `deployed`, `superseded`, `failed`, ...
    pub status: String,
    /// `<chart name>-<chart version>`.
    pub chart: String,
    /// The chart's appVersion.
    #[serde(default)]
    pub app_version: String,
    /// `Install complete`, `Upgrade complete`, `Rollback to 1`.
    #[serde(default)]
    pub description: String,
}

/// A Helm release of a chart in a namespace, driven by the `helm` CLI.
#[derive(Clone)]
pub struct HelmRelease {
    helm: PathBuf,
    access: ClusterAccess,
    /// The client of the cluster the release was made with, if given: used instead of a new
    /// one from `access`.
    client: Option<kube::Client>,
    name: String,
    namespace: String,
    chart: Chart,
    timeout: Duration,
    /// Whether our `install` created the namespace (only then does `uninstall` delete it).
    created_namespace: Arc<AtomicBool>,
}

impl std::fmt::Debug for HelmRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelmRelease")
            .field("helm", &self.helm)
            .field("access", &self.access)
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("chart", &self.chart)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HelmRelease {
    /// A release `name` of `chart` in `namespace` (created by `install`), driven by the
    /// `helm` binary against the cluster reached through `access` (a kubeconfig path
    /// converts into one; see [`ClusterAccess`]).
    pub fn new(
        helm: impl Into<PathBuf>,
        access: impl Into<ClusterAccess>,
        name: impl Into<String>,
        namespace: impl Into<String>,
        chart: Chart,
    ) -> Self {
        Self {
            helm: helm.into(),
            access: access.into(),
            client: None,
            name: name.into(),
            namespace: namespace.into(),
            chart,
            timeout: Duration::from_secs(600),
            created_namespace: Arc::default(),
        }
    }

    /// The kubeconfig context to use (`--kube-context`); its current context by default.
    #[must_use]
    pub fn context(mut self, context: Option<String>) -> Self {
        self.access = self.access.with_context(context);
        self
    }

    /// The client to use for the release's cluster (the run's, so that teardown needs no new
    /// connection); without one, [`client`](Self::client) connects through the access.
    #[must_use]
    pub fn with_client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// How the release's cluster is reached.
    pub fn access(&self) -> &ClusterAccess {
        &self.access
    }

    /// How long `install`, `upgrade` and `rollback` may take with `--wait` (default 10 min).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A client for the release's cluster: the one given with
    /// [`with_client`](Self::with_client), else a new one through its access.
    ///
    /// # Errors
    ///
    /// [`Error::K8s`] naming the kubeconfig (or the in-cluster service account) when it
    /// cannot be loaded.
    pub async fn client(&self) -> Result<kube::Client> {
        match &self.client {
            Some(client) => Ok(client.clone()),
            None => Ok(self.access.client().await?),
        }
    }

    /// The release's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The release's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The chart.
    pub fn chart(&self) -> &Chart {
        &self.chart
    }

    /// Runs `helm` with `args` plus the kubeconfig and namespace flags; returns stdout.
    async fn helm(&self, args: &[String], timeout: Duration) -> Result<String> {
        let mut full: Vec<String> = args.to_vec();
        // In-cluster, Helm uses the pod's service account by itself.
        if let ClusterAccess::Kubeconfig { path, context } = &self.access {
            full.extend(["--kubeconfig".into(), path.display().to_string()]);
            if let Some(c) = context {
                full.extend(["--kube-context".into(), c.clone()]);
            }
        }
        full.extend(["--namespace".into(), self.namespace.clone()]);
        run_helm(&self.helm, &full, timeout).await
    }

    fn values_file(&self, values: &serde_json::Value) -> Result<tempfile_path::TempFile> {
        tempfile_path::TempFile::write(
            &format!("hami-e2e-values-{}-{}", self.name, std::process::id()),
            &serde_json::to_string_pretty(values).unwrap_or_default(),
        )
    }

    /// `helm install --create-namespace --wait` with `values` (any JSON object; see
    /// [`HamiValues`](crate::HamiValues) for HAMi's chart).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a bad chart source; [`Error::Helm`] with the command and
    /// Helm's message (values the chart's schema refuses, a timeout of `--wait`).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, Helm may leave a release `pending-install`;
    /// [`uninstall`](Self::uninstall) removes it.
    pub async fn install(&self, values: &serde_json::Value) -> Result<ReleaseStatus> {
        self.chart.validate()?;
        // Never touch a release (or namespace) that was there before: it may be the real one.
        if let Ok(existing) = self.status().await {
            return Err(Error::Invalid {
                what: format!("release `{}` in `{}`", self.name, self.namespace),
                message: format!(
                    "it exists already (revision {} {}); upgrade it, or uninstall it first",
                    existing.version, existing.info.status
                ),
            });
        }
        let client = self.client().await?;
        let namespaces: kube::Api<Namespace> = kube::Api::all(client);
        let existed = namespaces
            .get_opt(&self.namespace)
            .await
            .map_err(|source| hami_e2e_k8s::Error::Api {
                action: "get",
                object: format!("namespace/{}", self.namespace),
                source,
            })?
            .is_some();
        self.created_namespace.store(!existed, Ordering::SeqCst);
        let file = self.values_file(values)?;
        let mut args = vec!["install".to_string(), self.name.clone()];
        args.extend(self.chart.args());
        args.extend([
            "--create-namespace".into(),
            "--wait".into(),
            "--wait-for-jobs".into(),
            "--timeout".into(),
            format!("{}s", self.timeout.as_secs()),
            "--values".into(),
            file.path().display().to_string(),
        ]);
        match self
            .helm(&args, self.timeout + Duration::from_secs(30))
            .await
        {
            Ok(_) => self.status().await,
            Err(Error::Helm {
                command,
                status,
                mut stderr,
            }) => {
                // Say which workload was not ready and why, then leave nothing behind.
                if let Ok(client) = self.client().await {
                    if let Err(e) = self
                        .wait_ready(client.clone(), Duration::from_secs(2))
                        .await
                    {
                        stderr.push_str(&format!("\nnot ready: {e}"));
                        // The why is often in the pods (unschedulable, image pull).
                        let pods = hami_e2e_k8s::diagnostics::collect(&client, &self.namespace)
                            .await
                            .pods;
                        for line in pods.iter().filter(|p| !p.contains("phase Running")).take(3) {
                            stderr.push_str(&format!("\npod {line}"));
                        }
                    }
                    if let Err(e) = self.uninstall(client, Duration::from_secs(120)).await {
                        stderr.push_str(&format!("\nremoving the failed release failed too: {e}"));
                    }
                }
                Err(Error::Helm {
                    command,
                    status,
                    stderr,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `helm status`, the release's values and its rendered manifest into `dir`
    /// (`helm-<release>-status.json`, `-values.json`, `-manifest.yaml`); returns a one-line
    /// summary. What cannot be read is written as the error instead.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn collect(&self, dir: &Path) -> String {
        let status = self.status().await;
        let summary = match &status {
            Ok(s) => format!(
                "release {} in {}: revision {} {} ({})",
                s.name, s.namespace, s.version, s.info.status, s.info.description
            ),
            Err(e) => format!("release {} in {}: {e}", self.name, self.namespace),
        };
        let files = [
            ("status.json", self.json_of("status").await),
            (
                "values.json",
                self.values(true).await.map(|v| v.to_string()),
            ),
            ("manifest.yaml", self.manifest().await),
        ];
        for (suffix, content) in files {
            let text = content.unwrap_or_else(|e| format!("error: {e}\n"));
            let _ = std::fs::write(dir.join(format!("helm-{}-{suffix}", self.name)), text);
        }
        summary
    }

    /// `helm upgrade --wait` to `values` (with `reuse`, on top of the current ones), of
    /// `chart` if given (an upgrade to a new chart version), else the release's chart.
    ///
    /// # Errors
    ///
    /// As [`install`](Self::install).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: Helm may leave the release `pending-upgrade`.
    pub async fn upgrade(
        &self,
        chart: Option<&Chart>,
        values: &serde_json::Value,
        reuse: bool,
    ) -> Result<ReleaseStatus> {
        let chart = chart.unwrap_or(&self.chart);
        chart.validate()?;
        let file = self.values_file(values)?;
        let mut args = vec!["upgrade".to_string(), self.name.clone()];
        args.extend(chart.args());
        args.extend([
            "--wait".into(),
            "--wait-for-jobs".into(),
            "--timeout".into(),
            format!("{}s", self.timeout.as_secs()),
            "--values".into(),
            file.path().display().to_string(),
        ]);
        if reuse {
            args.push("--reuse-values".into());
        }
        self.helm(&args, self.timeout + Duration::from_secs(30))
            .await?;
        self.status().await
    }

    /// `helm rollback --wait` to `revision` (the previous one with `None`).
    ///
    /// # Errors
    ///
    /// [`Error::Helm`] with Helm's message (`release: not found`, no such revision).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: Helm may leave the release `pending-rollback`.
    pub async fn rollback(&self, revision: Option<u32>) -> Result<ReleaseStatus> {
        let mut args = vec!["rollback".to_string(), self.name.clone()];
        if let Some(r) = revision {
            args.push(r.to_string());
        }
        args.extend([
            "--wait".into(),
            "--timeout".into(),
            format!("{}s", self.timeout.as_secs()),
        ]);
        self.helm(&args, self.timeout + Duration::from_secs(30))
            .await?;
        self.status().await
    }

    /// `helm status -o json`.
    ///
    /// # Errors
    ///
    /// [`Error::Helm`] (`release: not found`), [`Error::Invalid`] for output that does not
    /// parse.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn status(&self) -> Result<ReleaseStatus> {
        let out = self.json_of("status").await?;
        parse_json("helm status", &out)
    }

    /// `helm <verb> <release> -o json`.
    async fn json_of(&self, verb: &str) -> Result<String> {
        let args = [
            verb.to_string(),
            self.name.clone(),
            "-o".into(),
            "json".into(),
        ];
        self.helm(&args, Duration::from_secs(60)).await
    }

    /// `helm history -o json`, oldest first.
    ///
    /// # Errors
    ///
    /// As [`status`](Self::status).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn history(&self) -> Result<Vec<Revision>> {
        let out = self.json_of("history").await?;
        parse_json("helm history", &out)
    }

    /// `helm get values -o json` (with `all`, the chart's defaults merged in).
    ///
    /// # Errors
    ///
    /// As [`status`](Self::status).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn values(&self, all: bool) -> Result<serde_json::Value> {
        let mut args = vec![
            "get".to_string(),
            "values".into(),
            self.name.clone(),
            "-o".into(),
            "json".into(),
        ];
        if all {
            args.push("--all".into());
        }
        let out = self.helm(&args, Duration::from_secs(60)).await?;
        let value: serde_json::Value = parse_json("helm get values", &out)?;
        // A release without user values prints `null`.
        Ok(if value.is_null() {
            serde_json::json!({})
        } else {
            value
        })
    }

    /// The rendered manifest of the current revision (`helm get manifest`), as YAML.
    ///
    /// # Errors
    ///
    /// As [`status`](Self::status).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn manifest(&self) -> Result<String> {
        self.helm(
            &["get".into(), "manifest".into(), self.name.clone()],
            Duration::from_secs(60),
        )
        .await
    }

    /// The workloads of the rendered manifest as `(kind, namespace, name)`: Deployments,
    /// DaemonSets, StatefulSets and Jobs, for readiness checks.
    ///
    /// # Errors
    ///
    /// As [`manifest`](Self::manifest); [`Error::K8s`] if the manifest does not parse.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn workloads(&self) -> Result<Vec<(String, String, String)>> {
        let manifest = self.manifest().await?;
        workloads(&manifest, &self.namespace)
    }

    /// Waits, through watches, until every workload of the manifest is ready: Deployments
    /// available, DaemonSets rolled out, StatefulSets ready, Jobs complete. `helm --wait`
    /// already waited; this checks it for Helm versions and charts where `--wait` misses
    /// objects (hooks, other namespaces) and gives our error messages.
    ///
    /// # Errors
    ///
    /// [`Error::K8s`] with the first workload that is not ready in `timeout`, its last state
    /// and events.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_ready(&self, client: kube::Client, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        for (kind, ns, name) in self.workloads().await? {
            let left = timeout.saturating_sub(started.elapsed());
            match kind.as_str() {
                "Deployment" => {
                    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
                    hami_e2e_k8s::wait::deployment_available(&api, &name, left).await?;
                }
                "DaemonSet" => {
                    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
                    hami_e2e_k8s::wait::daemonset_rolled_out(&api, &name, left).await?;
                }
                "StatefulSet" => {
                    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
                    hami_e2e_k8s::wait::until(
                        &api,
                        &name,
                        "to be ready",
                        left,
                        |s: Option<&StatefulSet>| {
                            s.is_some_and(|s| {
                                let want = s.spec.replicas.unwrap_or(1);
                                s.status
                                    .as_ref()
                                    .and_then(|x| x.ready_replicas)
                                    .unwrap_or(0)
                                    == want
                            })
                        },
                    )
                    .await?;
                }
                "Job" => {
                    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
                    // A finished hook Job may be deleted by its hook policy: gone is fine.
                    hami_e2e_k8s::wait::until_verdict(
                        &api,
                        &name,
                        "to complete",
                        left,
                        |j: Option<&Job>| {
                            j.is_none_or(|j| {
                                j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0
                            })
                        },
                    )
                    .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `helm uninstall --wait`, then waits (watches) until the release's workloads and its
    /// namespace are gone. A release that does not exist is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Helm`] with Helm's message; [`Error::K8s`] when objects are still there
    /// after `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe once `helm uninstall` has run.
    pub async fn uninstall(&self, client: kube::Client, timeout: Duration) -> Result<()> {
        let workloads = match self.workloads().await {
            Ok(w) => w,
            Err(Error::Helm { ref stderr, .. }) if stderr.contains("not found") => Vec::new(),
            Err(e) => return Err(e),
        };
        let args = vec![
            "uninstall".to_string(),
            self.name.clone(),
            "--ignore-not-found".into(),
            "--wait".into(),
            "--timeout".into(),
            format!("{}s", timeout.as_secs()),
        ];
        self.helm(&args, timeout + Duration::from_secs(30)).await?;
        let started = Instant::now();
        for (kind, ns, name) in workloads {
            let left = timeout.saturating_sub(started.elapsed());
            match kind.as_str() {
                "Deployment" => gone::<Deployment>(&client, &ns, &name, left).await?,
                "DaemonSet" => gone::<DaemonSet>(&client, &ns, &name, left).await?,
                "StatefulSet" => gone::<StatefulSet>(&client, &ns, &name, left).await?,
                _ => {}
            }
        }
        // The namespace, only if our `install --create-namespace` made it.
        if !self.created_namespace.load(Ordering::SeqCst) {
            return Ok(());
        }
        let namespaces: Api<Namespace> = Api::all(client);
        match namespaces
            .delete(&self.namespace, &Default::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(hami_e2e_k8s::Error::Api {
                    action: "delete",
                    object: format!("namespace/{}", self.namespace),
                    source,
                }
                .into());
            }
        }
        let left = timeout.saturating_sub(started.elapsed());
        hami_e2e_k8s::wait::deleted(&namespaces, &self.namespace, left).await?;
        Ok(())
    }
}

/// Waits until the namespaced object `name` of kind `K` is gone.
async fn gone<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(hami_e2e_k8s::wait::deleted(&api, name, timeout).await?)
}

/// Runs `helm` directly (no shell) with `args`; returns stdout, or [`Error::Helm`] with the
/// command line and Helm's stderr.
pub(crate) async fn run_helm(helm: &Path, args: &[String], timeout: Duration) -> Result<String> {
    let command = format!("helm {}", args.join(" "));
    let child = tokio::process::Command::new(helm)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Io {
            action: "run",
            path: helm.to_path_buf(),
            source,
        })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(source)) => {
            return Err(Error::Io {
                action: "run",
                path: helm.to_path_buf(),
                source,
            });
        }
        Err(_) => {
            return Err(Error::Helm {
                command,
                status: format!("killed after {}", hami_e2e_core::format_duration(timeout)),
                stderr: String::new(),
            });
        }
    };
    if !output.status.success() {
        return Err(Error::Helm {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Invalid {
        what: format!("output of `{what}`"),
        message: format!("{e}: {}", text.chars().take(200).collect::<String>()),
    })
}

/// The workloads of a rendered manifest (see [`HelmRelease::workloads`]); objects without
/// a namespace are in `default_namespace`.
///
/// ```
/// let manifest = "---\n# Source: x/templates/d.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";
/// let w = hami_e2e_helm::workloads(manifest, "ns")?;
/// assert_eq!(w, [("Deployment".to_string(), "ns".to_string(), "web".to_string())]);
/// # Ok::<(), hami_e2e_helm::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::K8s`] naming the document that does not parse.
pub fn workloads(manifest: &str, default_namespace: &str) -> Result<Vec<(String, String, String)>> {
    let docs = hami_e2e_k8s::parse_yaml_documents("the release's manifest", manifest)?;
    Ok(docs
        .iter()
        .filter_map(|d| {
            let kind = d.get("kind")?.as_str()?;
            if !matches!(kind, "Deployment" | "DaemonSet" | "StatefulSet" | "Job") {
                return None;
            }
            let name = d.pointer("/metadata/name")?.as_str()?;
            let ns = d
                .pointer("/metadata/namespace")
                .and_then(|n| n.as_str())
                .unwrap_or(default_namespace);
            Some((kind.to_string(), ns.to_string(), name.to_string()))
        })
        .collect())
}

mod tempfile_path {
    //! A file removed on drop, for values.

    use std::path::{Path, PathBuf};

    use crate::error::{Error, Result};

    pub(super) struct TempFile(PathBuf);

    impl TempFile {
        pub(super) fn write(stem: &str, content: &str) -> Result<TempFile> {
            let path = std::env::temp_dir().join(format!("{stem}-{}.yaml", unique()));
            // Values may hold credentials: readable by this user only.
            let written = {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut f| f.write_all(content.as_bytes()))
            };
            written.map_err(|source| Error::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
            Ok(TempFile(path))
        }

        pub(super) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn unique() -> u128 {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            + u128::from(n)
    }
}
