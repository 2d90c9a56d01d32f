//! One namespace per scenario: created before its body, deleted after it, whatever the
//! outcome, and labelled so a later run can sweep what a crashed one left.
//!
//! Names are `hami-e2e-<scenario slug>-<5 random characters>`, a valid DNS label for any
//! scenario name (long slugs are cut). Every namespace, and every object applied through
//! [`TestNamespace`], carries [`RUN_LABEL`], [`SCENARIO_LABEL`] and
//! `app.kubernetes.io/managed-by=hami-e2e`; [`sweep`](crate::sweep()) selects by them and
//! never touches anything else.
//!
//! ```no_run
//! use std::time::Duration;
//! use hami_e2e_core::{Runner, scenario};
//! use hami_e2e_k8s::{ClusterArgs, ClusterFixture, ClusterSource, NamespaceFixture, NamespaceOptions, PodBuilder, wait};
//!
//! Runner::new()
//!     .fixture(ClusterFixture::new(ClusterSource::from_args(&ClusterArgs::default())))
//!     .fixture(NamespaceFixture::new(NamespaceOptions::default()))
//!     .scenario(scenario("demo/pod-runs").run(|ctx| async move {
//!         let ns = ctx.fixture::<NamespaceFixture>().await?; // this scenario's own namespace
//!         ns.apply(&PodBuilder::new("p").image("busybox").build()).await?;
//!         wait::pod_running(&ns.api(), "p", Duration::from_secs(60)).await?;
//!         Ok(())
//!     }))
//!     .main();
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hami_e2e_core::{Failure, Fixture, FixtureContext, TeardownContext};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, ObjectMeta, PostParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cluster::ClusterFixture;
use crate::error::{Error, Result};
use crate::retry::retry_transient;
use crate::wait;

/// Label naming the run that created an object.
pub const RUN_LABEL: &str = "hami-e2e.io/run";
/// Label naming the scenario (its slug) that created an object.
pub const SCENARIO_LABEL: &str = "hami-e2e.io/scenario";
/// `app.kubernetes.io/managed-by`, set to [`MANAGED_BY`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on what hami-e2e creates.
pub const MANAGED_BY: &str = "hami-e2e";
/// The field manager of server-side apply.
pub const FIELD_MANAGER: &str = "hami-e2e";
/// Annotation of a kept namespace: until when (RFC 3339) the sweeper must spare it.
pub const KEPT_UNTIL_ANNOTATION: &str = "hami-e2e.io/kept-until";

/// Whether an object is kept on purpose at `now` (its [`KEPT_UNTIL_ANNOTATION`] is later).
pub(crate) fn is_kept(meta: &ObjectMeta, now: k8s_openapi::jiff::Timestamp) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(KEPT_UNTIL_ANNOTATION))
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .is_some_and(|t| t > now)
}

/// The command that re-runs one scenario of the current test binary: `cargo test -p <pkg>
/// --test <target> -- --exact '<scenario>'` under cargo, else `<program> --exact '<scenario>'`.
pub fn rerun_command(scenario: &str) -> String {
    let program = std::env::args().next().unwrap_or_default();
    let package = std::env::var("CARGO_PKG_NAME").ok();
    let stem = std::path::Path::new(&program)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // cargo's test binaries are `<target>-<16 hex digits>`.
    let target = match stem.rsplit_once('-') {
        Some((t, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(t.to_string())
        }
        _ => None,
    };
    match (package, target) {
        (Some(p), Some(t)) => format!("cargo test -p {p} --test {t} -- --exact '{scenario}'"),
        _ => format!("{program} --exact '{scenario}'"),
    }
}

/// When a scenario's namespace is kept instead of deleted, for debugging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum KeepNamespaces {
    /// Always delete (the default).
    #[default]
    Never,
    /// Keep the namespaces of failed scenarios.
    OnFailure,
    /// Keep every namespace.
    Always,
}

impl KeepNamespaces {
    /// Whether a scenario's namespace is kept, given whether it failed.
    pub fn keeps(self, failed: bool) -> bool {
        match self {
            KeepNamespaces::Never => false,
            KeepNamespaces::OnFailure => failed,
            KeepNamespaces::Always => true,
        }
    }
}

/// A label value (at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends)
/// for any text; long texts are cut and end with a hash of the whole, so two long scenario
/// names stay apart.
///
/// ```
/// use hami_e2e_k8s::label_value;
///
/// assert_eq!(label_value("nvidia::allocation::single"), "nvidia-allocation-single");
/// let long = label_value(&"a::".repeat(40));
/// assert!(long.len() <= 63);
/// assert_ne!(long, label_value(&"a::".repeat(41)));
/// ```
pub fn label_value(text: &str) -> String {
    let slug = hami_e2e_core::slug(text);
    if slug.len() <= 63 {
        return slug;
    }
    let hash = format!("{:08x}", fnv(text.as_bytes()) as u32);
    format!("{}-{hash}", slug[..54].trim_end_matches('-'))
}

/// The name of a scenario's namespace: `hami-e2e-<slug>-<suffix>`, at most 63 characters.
///
/// ```
/// let name = hami_e2e_k8s::namespace_name("nvidia::allocation::single_device", "x7k2q");
/// assert_eq!(name, "hami-e2e-nvidia-allocation-single-device-x7k2q");
/// let long = hami_e2e_k8s::namespace_name(&"very-long-scenario-name::".repeat(9), "x7k2q");
/// assert!(long.len() <= 63 && long.ends_with("-x7k2q"));
/// ```
pub fn namespace_name(scenario: &str, suffix: &str) -> String {
    const PREFIX: &str = "hami-e2e-";
    let slug = hami_e2e_core::slug(scenario);
    let room = (63 - PREFIX.len() - 1).saturating_sub(suffix.len());
    let mut slug = slug.chars().take(room).collect::<String>();
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        format!("{PREFIX}{suffix}")
    } else {
        format!("{PREFIX}{slug}-{suffix}")
    }
}

/// Five random characters of `[a-z0-9]`, from the standard library's random hasher keys.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let mut n = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The labels hami-e2e puts on what a scenario creates.
pub fn ownership_labels(run_id: &str, scenario: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RUN_LABEL.to_string(), label_value(run_id)),
        (SCENARIO_LABEL.to_string(), label_value(scenario)),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ])
}

/// A namespace of hami-e2e's, with helpers that create objects in it.
///
/// Get one from [`NamespaceFixture`] in a scenario, or create one yourself with
/// [`TestNamespace::create`] (and [`TestNamespace::delete`] it).
#[derive(Clone)]
pub struct TestNamespace {
    name: String,
    client: kube::Client,
    labels: BTreeMap<String, String>,
}

impl fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// Creates a namespace for `scenario` of run `run_id`, and waits for its `default`
    /// service account (pods created before it exists are refused).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] with the server's message; [`Error::WaitTimeout`] if the service
    /// account does not appear within 60 s (the controller-manager is not running).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped after the create, it leaves the namespace behind (labelled,
    /// so [`sweep`](crate::sweep()) finds it). [`NamespaceFixture`] runs it to completion.
    pub async fn create(client: &kube::Client, scenario: &str, run_id: &str) -> Result<Self> {
        let labels = ownership_labels(run_id, scenario);
        let api: Api<Namespace> = Api::all(client.clone());
        // One name for all attempts: a retried POST whose first answer was lost finds its
        // own namespace (409), instead of making a second one.
        let name = namespace_name(scenario, &random_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut attempts = 0;
        retry_transient("create a namespace", || {
            attempts += 1;
            let retried = attempts > 1;
            let (api, ns, name) = (&api, &ns, &name);
            async move {
                match api.create(&PostParams::default(), ns).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 && retried => Ok(()),
                    Err(source) => Err(Error::Api {
                        action: "create",
                        object: format!("namespace/{name}"),
                        source,
                    }),
                }
            }
        })
        .await?;
        tracing::debug!(namespace = %name, scenario, "namespace created");
        let created = Self {
            name,
            client: client.clone(),
            labels,
        };
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &created.name);
        let ready = wait::until(
            &sas,
            "default",
            "to be created by the controller-manager",
            Duration::from_secs(60),
            |sa: Option<&ServiceAccount>| sa.is_some(),
        )
        .await;
        if let Err(e) = ready {
            // Not handed to a fixture, so nobody else would delete it.
            let _ = created.delete(None).await;
            return Err(e);
        }
        Ok(created)
    }

    /// Wraps an existing namespace (for tests that bring their own).
    pub fn existing(client: &kube::Client, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            client: client.clone(),
            labels: BTreeMap::new(),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it was created with.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The ownership labels (run, scenario, managed-by) put on what is applied here.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// An `Api` for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Server-side applies `object` (any `k8s-openapi` or `kube::Resource` type, namespaced
    /// or cluster-scoped) with field manager `hami-e2e`, adding the ownership labels;
    /// namespaced objects go into this namespace unless they name another.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] naming the object, with the server's message (a 422 lists the
    /// invalid fields).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the object may or may not have been applied.
    pub async fn apply<K>(&self, object: &K) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + fmt::Debug + 'static,
    {
        crate::apply::apply(&self.client, Some(&self.name), &self.labels, object).await
    }

    /// Creates `object` (a POST: fails if it exists), adding the ownership labels, into this
    /// namespace unless it names another.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] naming the object, with the server's message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the object may or may not have been created.
    pub async fn create_object<K>(&self, object: &K) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + fmt::Debug + 'static,
    {
        crate::apply::create(&self.client, Some(&self.name), &self.labels, object).await
    }

    /// Applies every document of `yaml` (separated by `---`), namespaced ones into this
    /// namespace unless they name another. Kinds are resolved through discovery, so
    /// custom resources work.
    ///
    /// # Errors
    ///
    /// [`Error::Yaml`] naming the document for bad YAML or an unknown kind; [`Error::Api`]
    /// for what the server refuses. Documents before the bad one stay applied.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; some documents may have been applied.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<DynamicObject>> {
        crate::apply::apply_yaml(
            &self.client,
            Some(&self.name),
            &self.labels,
            "inline YAML",
            yaml,
        )
        .await
    }

    /// Marks the namespace kept for `duration`: annotation [`KEPT_UNTIL_ANNOTATION`] with the
    /// expiry, which [`sweep`](crate::sweep()) honours. Returns the expiry (RFC 3339).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] with the server's message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn mark_kept(&self, duration: Duration) -> Result<String> {
        // Saturating: a duration too long to represent keeps it as long as possible.
        let until = k8s_openapi::jiff::SignedDuration::try_from(duration)
            .ok()
            .and_then(|d| k8s_openapi::jiff::Timestamp::now().checked_add(d).ok())
            .unwrap_or(k8s_openapi::jiff::Timestamp::MAX)
            .to_string();
        let patch =
            serde_json::json!({"metadata": {"annotations": {KEPT_UNTIL_ANNOTATION: until}}});
        let api: Api<Namespace> = Api::all(self.client.clone());
        retry_transient("mark a namespace kept", || async {
            api.patch(
                &self.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map_err(|source| Error::Api {
                action: "annotate",
                object: format!("namespace/{}", self.name),
                source,
            })
        })
        .await?;
        Ok(until)
    }

    /// Deletes every pod of the namespace and waits until they are gone (at most `timeout`
    /// for each): what they held on their nodes (devices) is free when it returns. The
    /// [`NamespaceFixture`] does it in the teardown of a scenario that held devices.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] naming the namespace's pods; [`Error::WaitTimeout`] naming a pod that
    /// is still there.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; once the delete is sent, the server finishes it.
    pub async fn delete_pods(&self, timeout: Duration) -> Result<()> {
        let pods: Api<Pod> = self.api();
        let object = format!("pods in namespace/{}", self.name);
        let names: Vec<String> = retry_transient("list the namespace's pods", || async {
            pods.list(&Default::default())
                .await
                .map_err(|source| Error::Api {
                    action: "list",
                    object: object.clone(),
                    source,
                })
        })
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
        if names.is_empty() {
            return Ok(());
        }
        retry_transient("delete the namespace's pods", || async {
            pods.delete_collection(&DeleteParams::default(), &Default::default())
                .await
                .map(|_| ())
                .map_err(|source| Error::Api {
                    action: "delete",
                    object: object.clone(),
                    source,
                })
        })
        .await?;
        for name in names {
            wait::deleted(&pods, &name, timeout).await?;
        }
        Ok(())
    }

    /// Deletes the namespace (foreground: its objects first), and with `wait` waits at most
    /// that long until it is gone.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] with the server's message; [`Error::WaitTimeout`] with the namespace's
    /// last state (its phase and the conditions that block its deletion).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: once the delete is sent, the server finishes it.
    pub async fn delete(&self, wait: Option<Duration>) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let deleted = retry_transient("delete a namespace", || async {
            match api.delete(&self.name, &DeleteParams::foreground()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(source) => Err(Error::Api {
                    action: "delete",
                    object: format!("namespace/{}", self.name),
                    source,
                }),
            }
        })
        .await;
        deleted?;
        if let Some(timeout) = wait {
            wait::deleted(&api, &self.name, timeout).await?;
        }
        Ok(())
    }
}

/// How long a teardown waits for the pods of a scenario that held devices to be gone.
const DEVICE_PODS_GONE: Duration = Duration::from_secs(60);

/// Options of [`NamespaceFixture`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NamespaceOptions {
    /// When to keep the namespace instead of deleting it.
    pub keep: KeepNamespaces,
    /// Wait until the namespace is gone before the scenario ends (at most this long), or
    /// only send the delete (`None`, the default: the controller-manager takes seconds to
    /// empty a namespace, and nothing else in the run waits on it).
    pub wait_for_deletion: Option<Duration>,
    /// After the teardown, fail the scenario if objects labelled for it are left outside
    /// its namespace (see [`leak`](crate::leak)); on by default.
    pub leak_check: bool,
    /// How long a kept namespace is spared by [`sweep`](crate::sweep()) (default 24 h).
    pub keep_for: Duration,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            keep: KeepNamespaces::Never,
            wait_for_deletion: None,
            leak_check: true,
            keep_for: Duration::from_secs(24 * 3600),
        }
    }
}

impl NamespaceOptions {
    /// Sets when namespaces are kept.
    #[must_use]
    pub fn keep(mut self, keep: KeepNamespaces) -> Self {
        self.keep = keep;
        self
    }

    /// Waits at most `timeout` for the deletion, or not at all with `None`.
    #[must_use]
    pub fn wait_for_deletion(mut self, timeout: Option<Duration>) -> Self {
        self.wait_for_deletion = timeout;
        self
    }

    /// How long kept namespaces are spared by the sweeper (default 24 h).
    #[must_use]
    pub fn keep_for(mut self, duration: Duration) -> Self {
        self.keep_for = duration;
        self
    }

    /// Turns the leak check after teardown on or off.
    #[must_use]
    pub fn leak_check(mut self, on: bool) -> Self {
        self.leak_check = on;
        self
    }
}

/// A namespace per scenario, in the run's [`ClusterFixture`] (which must be registered):
/// created before the body, deleted after it whatever the outcome (unless kept), and on
/// failure its events, pods, container logs and nodes are collected into the scenario's
/// artifacts and report (see [`diagnostics`](crate::diagnostics)). Obtain it first in a
/// scenario: it is then torn down last, and its leak check sees what the scenario's other
/// fixtures and deferred cleanups left.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFixture {
    options: NamespaceOptions,
    /// The cluster's listable resource types, discovered once per run for the leak check.
    resources: Arc<tokio::sync::OnceCell<Vec<kube::api::ApiResource>>>,
}

impl NamespaceFixture {
    /// A fixture with `options`.
    pub fn new(options: NamespaceOptions) -> Self {
        Self {
            options,
            resources: Arc::default(),
        }
    }
}

impl Fixture for NamespaceFixture {
    type Output = TestNamespace;

    fn name(&self) -> String {
        "namespace".into()
    }

    async fn setup(&self, ctx: &FixtureContext) -> Result<TestNamespace, Failure> {
        let cluster = ctx.fixture::<ClusterFixture>().await?;
        let scenario = ctx.scenario().unwrap_or("run");
        Ok(TestNamespace::create(&cluster.client(), scenario, ctx.run_id()).await?)
    }

    async fn on_failure(&self, ns: &TestNamespace, ctx: &TeardownContext) {
        let report = crate::diagnostics::collect(&ns.client, &ns.name).await;
        if let Some(Ok(dir)) = ctx.artifacts_dir()
            && let Err(e) = report.write_to(&dir)
        {
            tracing::warn!(namespace = %ns.name, error = %e, "cannot write diagnostics");
        }
        ctx.attach(
            format!("diagnostics of namespace {}", ns.name),
            report.summary(),
        );
    }

    async fn teardown(&self, ns: &TestNamespace, ctx: &TeardownContext) -> Result<(), Failure> {
        if self.options.keep.keeps(ctx.failed()) {
            let scenario = ctx.scenario().unwrap_or("run");
            let expiry = ns.mark_kept(self.options.keep_for).await?;
            let text = format!(
                "kept namespace `{0}` until {expiry} (then `--sweep` deletes it)\n  kubectl -n {0} get all,events\n  kubectl -n {0} get events --sort-by=.lastTimestamp\n  kubectl delete namespace {0}\nre-run this scenario:\n  {1}",
                ns.name,
                rerun_command(scenario)
            );
            tracing::info!("{text}");
            ctx.attach("kept namespace", text);
        } else {
            // The devices a scenario held are handed to the next one when its teardown
            // ends: its pods must be gone by then, not seconds later with the namespace.
            if ctx.devices().is_some_and(|d| !d.is_empty()) {
                ns.delete_pods(DEVICE_PODS_GONE).await?;
            }
            ns.delete(self.options.wait_for_deletion).await?;
        }
        if self.options.leak_check {
            let resources = self
                .resources
                .get_or_try_init(|| crate::leak::listable_resources(&ns.client))
                .await?;
            let scenario = ctx.scenario().unwrap_or("run");
            let left = crate::leak::leaks(
                &ns.client,
                resources,
                ctx.run_id(),
                scenario,
                Some(&ns.name),
            )
            .await?;
            if !left.is_empty() {
                return Err(Failure::msg(format!(
                    "left behind after teardown, labelled for this scenario: {}",
                    left.join(", ")
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for scenario in [
            "a",
            "nvidia::allocation::single_device",
            &"x".repeat(200),
            "---",
            "UPPER::Case::Name",
            &format!("{}::b", "a-".repeat(40)),
        ] {
            let name = namespace_name(scenario, &random_suffix());
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
        }
    }

    #[test]
    fn suffixes_differ() {
        let a: std::collections::BTreeSet<String> = (0..100).map(|_| random_suffix()).collect();
        assert!(a.len() > 95, "{a:?}");
    }

    #[test]
    fn label_values_are_valid() {
        for text in ["run-1", &"y".repeat(100), "a::b", "20261125-143708-ab12"] {
            let v = label_value(text);
            assert!(v.len() <= 63);
            assert!(v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()));
            assert!(v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn keep_policy() {
        assert!(!KeepNamespaces::Never.keeps(true));
        assert!(KeepNamespaces::OnFailure.keeps(true));
        assert!(!KeepNamespaces::OnFailure.keeps(false));
        assert!(KeepNamespaces::Always.keeps(false));
    }
}
