//! A namespace of hami-e2e's ([`TestNamespace`]): created labelled for its run and scenario,
//! with helpers that create objects in it, deleted (or kept for debugging) after.
//!
//! Names are `hami-e2e-<scenario slug>-<5 random characters>`, a valid DNS label for any
//! scenario name (long slugs are cut). Every namespace, and every object applied through
//! [`TestNamespace`], carries [`RUN_LABEL`](crate::RUN_LABEL), [`SCENARIO_LABEL`](crate::SCENARIO_LABEL) and
//! `app.kubernetes.io/managed-by=hami-e2e`; [`sweep`](crate::sweep()) selects by them and
//! never touches anything else. The [`NamespaceFixture`](crate::NamespaceFixture) gives each
//! scenario one.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, ObjectMeta, PostParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cleanup::labels::{
    KEPT_UNTIL_ANNOTATION, namespace_name, ownership_labels, random_suffix,
};
use crate::error::{Error, Result};
use crate::toolkit::retry::retry_transient;
use crate::toolkit::wait;

/// A namespace of hami-e2e's, with helpers that create objects in it.
///
/// Get one from [`NamespaceFixture`](crate::NamespaceFixture) in a scenario, or create one yourself with
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
    /// so [`sweep`](crate::sweep()) finds it). [`NamespaceFixture`](crate::NamespaceFixture) runs it to completion.
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
        crate::toolkit::apply::apply(&self.client, Some(&self.name), &self.labels, object).await
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
        crate::toolkit::apply::create(&self.client, Some(&self.name), &self.labels, object).await
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
        crate::toolkit::apply::apply_yaml(
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
    /// [`NamespaceFixture`](crate::NamespaceFixture) does it in the teardown of a scenario that held devices.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_policy() {
        assert!(!KeepNamespaces::Never.keeps(true));
        assert!(KeepNamespaces::OnFailure.keeps(true));
        assert!(!KeepNamespaces::OnFailure.keeps(false));
        assert!(KeepNamespaces::Always.keeps(false));
    }
}
