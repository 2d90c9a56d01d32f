//! HAMi installed with Helm as a run-scoped fixture, and the clean-up of what HAMi leaves on
//! nodes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hami_e2e_core::{Capabilities, Failure, Fixture, FixtureContext, Scope, TeardownContext};
use hami_e2e_k8s::ClusterFixture;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::error::{Error, Result};
use crate::release::{Chart, HelmRelease};

/// Nodes with this label carry devices the fake device agent registered; the clean-up
/// after an uninstall leaves their register annotations alone.
pub const FAKE_DEVICES_LABEL: &str = "hami-e2e.io/fake-devices";

/// Node annotations HAMi's scheduler and device plugins write: the node lock, handshakes
/// and device registers (prefix match for the per-vendor ones).
pub const HAMI_NODE_ANNOTATIONS: &[&str] = &[
    "hami.io/mutex.lock",
    "hami.io/node-handshake",
    "hami.io/node-nvidia-register",
    "hami.io/node-nvidia-score",
    "hami.io/node-dcu-register",
    "hami.io/node-register-",
    "cambricon.com/dsmlu.lock",
];

/// Whether `key` is one of [`HAMI_NODE_ANNOTATIONS`], and whether it is a register (which
/// fake nodes keep).
fn classify(key: &str) -> Option<bool> {
    let register = key.contains("register") || key.ends_with("-score");
    let ours = HAMI_NODE_ANNOTATIONS.iter().any(|p| {
        key == *p || (p.ends_with('-') && key.starts_with(p)) || key.starts_with(&format!("{p}-"))
    });
    ours.then_some(register)
}

/// Removes the annotations HAMi leaves on nodes (node locks, handshakes, and device
/// registers its device plugins wrote), and returns `(node, key)` of each. Nodes labelled
/// [`FAKE_DEVICES_LABEL`] keep their registers: the fake device agent owns them.
///
/// It works on every node of the cluster: call it only where the HAMi it cleans up after is
/// the only one (the release the fixture installed and uninstalled), never beside a HAMi
/// that keeps running.
///
/// # Errors
///
/// [`Error::K8s`](crate::Error::K8s) when nodes cannot be listed or patched.
///
/// # Cancel safety
///
/// Cancel safe; some nodes may have been cleaned.
pub async fn clean_node_annotations(client: &kube::Client) -> Result<Vec<(String, String)>> {
    let api: Api<Node> = Api::all(client.clone());
    let nodes = api
        .list(&Default::default())
        .await
        .map_err(|source| hami_e2e_k8s::Error::Api {
            action: "list",
            object: "nodes".into(),
            source,
        })?;
    let mut removed = Vec::new();
    for node in nodes.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let fake = node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(FAKE_DEVICES_LABEL));
        let keys: Vec<String> = node
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter_map(|(k, _)| match classify(k) {
                Some(true) if fake => None,
                Some(_) => Some(k.clone()),
                None => None,
            })
            .collect();
        if keys.is_empty() {
            continue;
        }
        let nulls: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| (k.clone(), serde_json::Value::Null))
            .collect();
        let patch = serde_json::json!({"metadata": {"annotations": nulls}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| hami_e2e_k8s::Error::Api {
                action: "remove HAMi's annotations from",
                object: format!("node/{name}"),
                source,
            })?;
        removed.extend(keys.into_iter().map(|k| (name.clone(), k)));
    }
    Ok(removed)
}

/// What [`HelmReleaseFixture`] installs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HelmReleaseSpec {
    /// The `helm` binary.
    pub helm: PathBuf,
    /// The release's name (`hami`).
    pub name: String,
    /// Its namespace (`hami-system`), created by the install and deleted by the teardown.
    pub namespace: String,
    /// The chart.
    pub chart: Chart,
    /// The values.
    pub values: serde_json::Value,
    /// Timeout of the install's `--wait` and of the teardown.
    pub timeout: Duration,
}

impl HelmReleaseSpec {
    /// `chart` as release `name` in `namespace`, with `helm`, no values, 10 minutes.
    pub fn new(
        helm: impl Into<PathBuf>,
        name: impl Into<String>,
        namespace: impl Into<String>,
        chart: Chart,
    ) -> Self {
        Self {
            helm: helm.into(),
            name: name.into(),
            namespace: namespace.into(),
            chart,
            values: serde_json::json!({}),
            timeout: Duration::from_secs(600),
        }
    }

    /// Sets the values.
    #[must_use]
    pub fn values(mut self, values: serde_json::Value) -> Self {
        self.values = values;
        self
    }

    /// Sets the timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A Helm release installed once per run into the run's [`ClusterFixture`] (which must be
/// registered), ready (watch-driven) before the first scenario that asks for it, and
/// uninstalled after the last one: its objects and namespace awaited gone, and the
/// annotations HAMi left on nodes removed ([`clean_node_annotations`]).
///
/// ```no_run
/// use hami_e2e_core::{Runner, scenario};
/// use hami_e2e_helm::{Chart, HelmReleaseFixture, HelmReleaseSpec};
/// use hami_e2e_k8s::{ClusterArgs, ClusterFixture, ClusterSource};
///
/// let spec = HelmReleaseSpec::new("/usr/local/bin/helm", "hami", "hami-system", Chart::package("hami-2.10.0.tgz"))
///     .values(serde_json::json!({"scheduler": {"leaderElect": false}}));
/// Runner::new()
///     .fixture(ClusterFixture::new(ClusterSource::from_args(&ClusterArgs::default())))
///     .fixture(HelmReleaseFixture::new(spec))
///     .scenario(scenario("hami/installed").run(|ctx| async move {
///         let release = ctx.fixture::<HelmReleaseFixture>().await?;
///         assert_eq!(release.status().await?.info.status, "deployed");
///         Ok(())
///     }))
///     .main();
/// ```
#[derive(Debug, Clone)]
pub struct HelmReleaseFixture {
    spec: Arc<HelmReleaseSpec>,
}

impl HelmReleaseFixture {
    /// A fixture installing `spec`.
    pub fn new(spec: HelmReleaseSpec) -> Self {
        Self {
            spec: Arc::new(spec),
        }
    }
}

impl Fixture for HelmReleaseFixture {
    type Output = HelmRelease;

    fn name(&self) -> String {
        format!("helm release {}", self.spec.name)
    }

    fn scope(&self) -> Scope {
        Scope::Run
    }

    async fn setup(&self, ctx: &FixtureContext) -> Result<HelmRelease, Failure> {
        let cluster = ctx.fixture::<ClusterFixture>().await?;
        let s = &self.spec;
        let release = HelmRelease::new(
            &s.helm,
            cluster.access().clone(),
            &s.name,
            &s.namespace,
            s.chart.clone(),
        )
        .with_client(cluster.client())
        .timeout(s.timeout);
        // A failed install removes what it made itself, and never touches a release that
        // was there before.
        release.install(&s.values).await?;
        if let Err(e) = release.wait_ready(cluster.client(), s.timeout).await {
            // A fixture whose set-up fails is not torn down: undo what was made.
            let _ = release.uninstall(cluster.client(), s.timeout).await;
            return Err(e.into());
        }
        Ok(release)
    }

    async fn on_failure(&self, release: &HelmRelease, ctx: &TeardownContext) {
        let summary = match ctx.artifacts_dir() {
            Some(Ok(dir)) => release.collect(&dir).await,
            _ => match release.status().await {
                Ok(s) => format!("revision {} {}", s.version, s.info.status),
                Err(e) => e.to_string(),
            },
        };
        ctx.attach(format!("helm release {}", release.name()), summary);
    }

    async fn teardown(&self, release: &HelmRelease, _ctx: &TeardownContext) -> Result<(), Failure> {
        // The cluster is torn down after this fixture (reverse order of set-up), so the
        // run's client the release keeps is still good.
        let client = release.client().await?;
        let uninstalled = release.uninstall(client.clone(), self.spec.timeout).await;
        // Also after a failed uninstall: the annotations are HAMi's leftovers either way.
        let removed = clean_node_annotations(&client).await?;
        if !removed.is_empty() {
            tracing::info!(?removed, "removed HAMi's node annotations");
        }
        Ok(uninstalled?)
    }
}

/// The variable choosing how HAMi gets onto the cluster before a run: `helm` installs it
/// with [`DEPLOY_CHART_ENV`]'s chart; unset, the HAMi that is there is tested.
pub const DEPLOY_ENV: &str = "HAMI_E2E_DEPLOY";
/// The chart [`DEPLOY_ENV`]`=helm` installs: a folder, a `.tgz`, an `oci://` reference, or a
/// chart repository's `https://` URL (its chart `hami`).
pub const DEPLOY_CHART_ENV: &str = "HAMI_E2E_HAMI_CHART";
/// The chart's version (for a repository or OCI chart; also which values layout
/// [`HamiValues::to_values`](crate::HamiValues::to_values) writes), default `2.10.0`.
pub const DEPLOY_CHART_VERSION_ENV: &str = "HAMI_E2E_HAMI_CHART_VERSION";

/// The chart `hami::all::helm-upgrade` starts from before upgrading to
/// [`DEPLOY_CHART_ENV`]'s: a folder, a `.tgz`, `oci://` or a repository's `https://` URL.
pub const DEPLOY_CHART_PREVIOUS_ENV: &str = "HAMI_E2E_HAMI_CHART_PREVIOUS";
/// Its version, default `2.9.0`.
pub const DEPLOY_CHART_PREVIOUS_VERSION_ENV: &str = "HAMI_E2E_HAMI_CHART_PREVIOUS_VERSION";

/// The capability flag the suite's probe sets when [`DeployFixture`] installed HAMi's chart.
pub const HELM_DEPLOYED_FLAG: &str = "hami-deployed-by-helm";
/// The capability flag set when [`DEPLOY_CHART_PREVIOUS_ENV`] names a usable chart.
pub const HELM_PREVIOUS_FLAG: &str = "hami-chart-previous";
/// The capability fact with the previous chart, or why there is none.
pub const HELM_PREVIOUS_FACT: &str = "hami chart previous";

/// Records what the upgrade through Helm needs: whether this run installed HAMi's chart
/// (`deployed`) and the previous chart ([`Deploy::previous_from_env`]'s answer).
pub fn record_deploy(
    caps: Capabilities,
    deployed: bool,
    previous: &Result<Option<(Chart, String)>>,
) -> Capabilities {
    let caps = if deployed {
        caps.with_flag(HELM_DEPLOYED_FLAG)
    } else {
        caps
    };
    match previous {
        Ok(Some((chart, version))) => caps.with_flag(HELM_PREVIOUS_FLAG).with_fact(
            HELM_PREVIOUS_FACT,
            format!("{version} ({})", chart.args().join(" ")),
        ),
        Ok(None) => caps,
        Err(e) => caps.with_fact(HELM_PREVIOUS_FACT, format!("failed: {e}")),
    }
}

/// What the upgrade through `helm upgrade` and `helm rollback` requires: HAMi installed by
/// this run ([`DEPLOY_ENV`]`=helm`) and a previous chart; a previous chart that was given
/// but is unusable passes, so that the scenario fails naming it.
///
/// ```
/// use hami_e2e_core::Capabilities;
/// use hami_e2e_helm::{helm_upgrade_requirement, record_deploy};
///
/// let none = Capabilities::default();
/// assert!(helm_upgrade_requirement().check(&none).unwrap_err().contains("HAMI_E2E_DEPLOY=helm"));
/// let deployed = record_deploy(Capabilities::default(), true, &Ok(None));
/// assert!(helm_upgrade_requirement().check(&deployed).unwrap_err().contains("HAMI_E2E_HAMI_CHART_PREVIOUS"));
/// ```
pub fn helm_upgrade_requirement() -> hami_e2e_core::Requirement {
    hami_e2e_core::Requirement::custom(
        "HAMi's chart, installed by this run, and the previous one",
        |caps| {
            if !caps.flags.contains(HELM_DEPLOYED_FLAG) {
                return Err(format!(
                    "needs HAMi installed by this run's Helm ({DEPLOY_ENV}=helm with {DEPLOY_CHART_ENV}, on a cluster given by --kubeconfig)"
                ));
            }
            let reason = caps.facts.get(HELM_PREVIOUS_FACT);
            if caps.flags.contains(HELM_PREVIOUS_FLAG)
                || reason.is_some_and(|r| r.starts_with("failed:"))
            {
                Ok(())
            } else {
                Err(format!(
                    "needs the previous chart to upgrade from: {DEPLOY_CHART_PREVIOUS_ENV} is unset"
                ))
            }
        },
    )
}

/// A chart from its reference as the variables give it, at `version`; checked.
fn chart_of(text: String, version: &str) -> Result<Chart> {
    let chart = if text.starts_with("oci://") {
        Chart::Oci {
            reference: text,
            version: Some(version.to_owned()),
        }
    } else if text.starts_with("https://") || text.starts_with("http://") {
        Chart::Repo {
            url: text,
            name: "hami".into(),
            version: Some(version.to_owned()),
        }
    } else if text.ends_with(".tgz") {
        Chart::package(text)
    } else {
        Chart::dir(text)
    };
    chart.validate()?;
    Ok(chart)
}

/// What [`DEPLOY_ENV`] and its companions ask for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Deploy {
    /// Test the HAMi that is on the cluster.
    Existing,
    /// Install this chart (at this version) with the default typed values first, uninstall
    /// it after the run.
    Helm {
        /// The chart.
        chart: Chart,
        /// Its version.
        version: String,
    },
}

impl Deploy {
    /// Reads [`DEPLOY_ENV`], [`DEPLOY_CHART_ENV`] and [`DEPLOY_CHART_VERSION_ENV`] through
    /// `var`.
    ///
    /// ```
    /// use hami_e2e_helm::{Chart, Deploy};
    ///
    /// let env = |vars: &'static [(&'static str, &'static str)]| move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    /// assert_eq!(Deploy::from_vars(env(&[])).unwrap(), Deploy::Existing);
    /// let helm = Deploy::from_vars(env(&[("HAMI_E2E_DEPLOY", "helm"), ("HAMI_E2E_HAMI_CHART", "oci://registry.example/charts/hami")])).unwrap();
    /// assert_eq!(helm, Deploy::Helm {
    ///     chart: Chart::Oci { reference: "oci://registry.example/charts/hami".into(), version: Some("2.10.0".into()) },
    ///     version: "2.10.0".into(),
    /// });
    /// let err = Deploy::from_vars(env(&[("HAMI_E2E_DEPLOY", "helm"), ("HAMI_E2E_HAMI_CHART", "/no/such/chart")])).unwrap_err();
    /// assert!(err.to_string().starts_with("invalid HAMI_E2E_HAMI_CHART: "), "{err}");
    /// let err = Deploy::from_vars(env(&[("HAMI_E2E_DEPLOY", "kustomize")])).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid HAMI_E2E_DEPLOY: `kustomize` is not `helm` (or unset, to test the HAMi on the cluster)");
    /// let err = Deploy::from_vars(env(&[("HAMI_E2E_DEPLOY", "helm")])).unwrap_err();
    /// assert!(err.to_string().starts_with("invalid HAMI_E2E_HAMI_CHART: unset"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the variable and the value.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Deploy> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let invalid = |what: &str, message: String| Error::Invalid {
            what: what.to_owned(),
            message,
        };
        match get(DEPLOY_ENV).as_deref().map(str::trim) {
            None => Ok(Deploy::Existing),
            Some("helm") => {
                let version = get(DEPLOY_CHART_VERSION_ENV).unwrap_or_else(|| "2.10.0".into());
                let text = get(DEPLOY_CHART_ENV).ok_or_else(|| {
                    invalid(
                        DEPLOY_CHART_ENV,
                        format!("unset, and {DEPLOY_ENV}=helm needs a chart (a folder, a .tgz, oci://..., or a repository's https:// URL)"),
                    )
                })?;
                let chart = chart_of(text, &version)
                    .map_err(|e| invalid(DEPLOY_CHART_ENV, e.to_string()))?;
                Ok(Deploy::Helm { chart, version })
            }
            Some(other) => Err(invalid(
                DEPLOY_ENV,
                format!("`{other}` is not `helm` (or unset, to test the HAMi on the cluster)"),
            )),
        }
    }

    /// The chart the upgrade through Helm starts from ([`DEPLOY_CHART_PREVIOUS_ENV`] at
    /// [`DEPLOY_CHART_PREVIOUS_VERSION_ENV`], default `2.9.0`), read through `var`; `None`
    /// when unset.
    ///
    /// ```
    /// use hami_e2e_helm::{Chart, Deploy};
    ///
    /// let vars = [("HAMI_E2E_HAMI_CHART_PREVIOUS", "https://project-hami.github.io/HAMi/")];
    /// let var = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    /// let (chart, version) = Deploy::previous_from_vars(var).unwrap().unwrap();
    /// assert_eq!(version, "2.9.0");
    /// assert!(matches!(chart, Chart::Repo { version: Some(v), .. } if v == "2.9.0"));
    /// assert_eq!(Deploy::previous_from_vars(|_| None).unwrap(), None);
    /// let err = Deploy::previous_from_vars(|k| (k == "HAMI_E2E_HAMI_CHART_PREVIOUS").then(|| "/no/chart".into())).unwrap_err();
    /// assert!(err.to_string().starts_with("invalid HAMI_E2E_HAMI_CHART_PREVIOUS: "), "{err}");
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the variable and the value.
    pub fn previous_from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(Chart, String)>> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let Some(text) = get(DEPLOY_CHART_PREVIOUS_ENV) else {
            return Ok(None);
        };
        let version = get(DEPLOY_CHART_PREVIOUS_VERSION_ENV).unwrap_or_else(|| "2.9.0".into());
        let chart = chart_of(text, &version).map_err(|e| Error::Invalid {
            what: DEPLOY_CHART_PREVIOUS_ENV.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Some((chart, version)))
    }

    /// [`Deploy::previous_from_vars`] on the process's environment.
    ///
    /// # Errors
    ///
    /// As [`Deploy::previous_from_vars`].
    pub fn previous_from_env() -> Result<Option<(Chart, String)>> {
        Self::previous_from_vars(|k| std::env::var(k).ok())
    }

    /// [`Deploy::from_vars`] on the process's environment.
    ///
    /// # Errors
    ///
    /// As [`Deploy::from_vars`].
    pub fn from_env() -> Result<Deploy> {
        Self::from_vars(|k| std::env::var(k).ok())
    }
}

/// HAMi as [`Deploy::from_env`] asks: with `HAMI_E2E_DEPLOY=helm`, its chart installed into
/// `hami-system` (release `hami`) with the default [`HamiValues`](crate::HamiValues) before
/// the first scenario that asks, ready, and uninstalled after the run (as
/// [`HelmReleaseFixture`]); otherwise nothing (`None`). Refused on the run's own local
/// cluster, where HAMi runs as host processes.
#[derive(Debug, Clone, Default)]
pub struct DeployFixture;

impl Fixture for DeployFixture {
    type Output = Option<(HelmReleaseFixture, HelmRelease)>;

    fn name(&self) -> String {
        "HAMi deployed by Helm".into()
    }

    fn scope(&self) -> Scope {
        Scope::Run
    }

    async fn setup(&self, ctx: &FixtureContext) -> Result<Self::Output, Failure> {
        let Deploy::Helm { chart, version } = Deploy::from_env()? else {
            return Ok(None);
        };
        let cluster = ctx.fixture::<ClusterFixture>().await?;
        if cluster.local().is_some() {
            return Err(Failure::msg(format!(
                "{DEPLOY_ENV}=helm installs HAMi's chart on a cluster given by --kubeconfig or KUBECONFIG; the run's own local cluster runs HAMi as host processes"
            )));
        }
        let helm = crate::binaries::helm(&Default::default()).await?;
        let values = crate::HamiValues::default().to_values(&version)?;
        let fixture = HelmReleaseFixture::new(
            HelmReleaseSpec::new(helm.path, "hami", "hami-system", chart).values(values),
        );
        let release = fixture.setup(ctx).await?;
        Ok(Some((fixture, release)))
    }

    async fn teardown(&self, out: &Self::Output, ctx: &TeardownContext) -> Result<(), Failure> {
        match out {
            Some((fixture, release)) => fixture.teardown(release, ctx).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hami_annotations_are_recognised() {
        assert_eq!(classify("hami.io/mutex.lock"), Some(false));
        assert_eq!(classify("hami.io/node-handshake"), Some(false));
        assert_eq!(classify("hami.io/node-handshake-dcu"), Some(false));
        assert_eq!(classify("hami.io/node-nvidia-register"), Some(true));
        assert_eq!(classify("hami.io/node-register-Ascend910B3"), Some(true));
        assert_eq!(classify("hami.io/node-dcu-register"), Some(true));
        assert_eq!(classify("kwok.x-k8s.io/node"), None);
        assert_eq!(classify("hami.io/mutex.lockx"), None);
    }
}
