//! Device admission through the cluster itself: shards of one CI run on different machines
//! (`cargo nextest run --partition` against one real cluster) never hand out the same
//! device twice.
//!
//! [`ClusterAdmission`] is an [`AdmissionStore`]: what every run holds is one document in
//! the ConfigMap [`ADMISSION_CONFIGMAP`] of namespace [`LEASE_NAMESPACE`], written with the
//! `resourceVersion` it was read at, so two runs writing at once cannot both win (the
//! loser reads again). A holding belongs to a run, and counts while that run's
//! [`RunLease`](crate::RunLease) is alive: a run killed with `kill -9` stops
//! renewing, its lease expires, and its devices are free again; the reaper drops its
//! holdings as it deletes the rest of what the run left ([`prune`]). The ConfigMap carries
//! hami-e2e's `managed-by` label, and the last release deletes it.
//!
//! The suite's probe hands it to the runner on every cluster reached by kubeconfig (where
//! the run holds a lease); the runner then reserves through it instead of a file of this
//! machine.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use hami_e2e_core::admission::StorePool;
//! use hami_e2e_core::{Demand, PoolDevice};
//! use hami_e2e_k8s::cleanup::admission::ClusterAdmission;
//!
//! let devices = vec![PoolDevice::new("nvidia", "gpu-node-1", "GPU-0", 81559)];
//! let pool = StorePool::new(Arc::new(ClusterAdmission::new(client, "my-run")), devices);
//! let held = pool.try_reserve(&[Demand::devices("nvidia", 1).exclusive()]).await?;
//! if let Some(held) = held {
//!     // ... no other run gets GPU-0 meanwhile ...
//!     pool.release(&held).await?;
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use hami_e2e_core::BoxError;
use hami_e2e_core::admission::{AdmissionStore, StorePool, Stored};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};

use crate::cleanup::labels::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::cleanup::lease::{LEASE_NAMESPACE, is_dead, lease_name};
use crate::error::{Error, Result};
use crate::toolkit::retry::retry_transient;

/// The ConfigMap that holds what every run holds.
pub const ADMISSION_CONFIGMAP: &str = "hami-e2e-admission";

/// Its data key.
const DATA_KEY: &str = "holdings.json";

/// What runs hold of the cluster's devices, kept in a ConfigMap; one value per run.
#[derive(Clone)]
pub struct ClusterAdmission {
    client: kube::Client,
    run_id: String,
    name: String,
}

impl std::fmt::Debug for ClusterAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl ClusterAdmission {
    /// The store of run `run_id` (whose [`RunLease`](crate::RunLease) says it is
    /// alive), in [`ADMISSION_CONFIGMAP`].
    pub fn new(client: kube::Client, run_id: impl Into<String>) -> Self {
        ClusterAdmission {
            client,
            run_id: run_id.into(),
            name: ADMISSION_CONFIGMAP.into(),
        }
    }

    /// In the ConfigMap `name` instead: devices admitted apart from the default ones.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), LEASE_NAMESPACE)
    }

    fn object(&self) -> String {
        format!("configmap/{LEASE_NAMESPACE}/{}", self.name)
    }

    async fn get(&self) -> Result<Option<ConfigMap>> {
        let api = self.api();
        let object = self.object();
        retry_transient(&format!("get {object}"), || async {
            api.get_opt(&self.name).await.map_err(|source| Error::Api {
                action: "get",
                object: object.clone(),
                source,
            })
        })
        .await
    }

    async fn write(&self, text: Option<&str>, read: Option<&str>) -> Result<bool> {
        let api = self.api();
        let err = |action: &'static str| {
            let object = self.object();
            move |source| Error::Api {
                action,
                object,
                source,
            }
        };
        let conflict =
            |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404);
        let map = |text: &str, version: Option<&str>| ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(LEASE_NAMESPACE.into()),
                resource_version: version.map(str::to_string),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.into(),
                    MANAGED_BY.into(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(DATA_KEY.into(), text.to_string())])),
            ..Default::default()
        };
        let done = match (text, read) {
            (None, None) => Ok(()),
            (Some(text), None) => api
                .create(&PostParams::default(), &map(text, None))
                .await
                .map(drop),
            (Some(text), Some(version)) => api
                .replace(
                    &self.name,
                    &PostParams::default(),
                    &map(text, Some(version)),
                )
                .await
                .map(drop),
            (None, Some(version)) => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: Some(version.to_string()),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                api.delete(&self.name, &params).await.map(drop)
            }
        };
        match done {
            Ok(()) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(err(if text.is_some() { "write" } else { "delete" })(e)),
        }
    }

    async fn dead(&self, owners: &[String]) -> Result<Vec<String>> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let now = Timestamp::now();
        let mut dead = Vec::new();
        for owner in owners.iter().filter(|o| **o != self.run_id) {
            let name = lease_name(owner);
            let object = format!("lease/{LEASE_NAMESPACE}/{name}");
            let lease = retry_transient(&format!("get {object}"), || async {
                leases.get_opt(&name).await.map_err(|source| Error::Api {
                    action: "get",
                    object: object.clone(),
                    source,
                })
            })
            .await?;
            if lease.is_none_or(|l| is_dead(&l, now)) {
                dead.push(owner.clone());
            }
        }
        Ok(dead)
    }
}

impl AdmissionStore for ClusterAdmission {
    fn describe(&self) -> String {
        format!("ConfigMap {LEASE_NAMESPACE}/{}", self.name)
    }

    fn owner(&self) -> String {
        self.run_id.clone()
    }

    fn load(&self) -> BoxFuture<'_, Result<Stored, BoxError>> {
        Box::pin(async move {
            let map = self.get().await?;
            Ok(Stored {
                version: map
                    .as_ref()
                    .and_then(|m| m.metadata.resource_version.clone()),
                text: map.and_then(|m| m.data?.remove(DATA_KEY)),
            })
        })
    }

    fn save<'a>(
        &'a self,
        text: Option<&'a str>,
        read: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(async move { Ok(self.write(text, read).await?) })
    }

    fn dead_owners<'a>(
        &'a self,
        owners: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, BoxError>> {
        Box::pin(async move { Ok(self.dead(owners).await?) })
    }
}

/// Drops the holdings of runs that are gone from the cluster's admission ConfigMap (the
/// reaper calls it after deleting what dead runs left): the runs whose holdings it dropped.
///
/// # Errors
///
/// [`Error::Admission`] naming the ConfigMap.
pub async fn prune(client: &kube::Client) -> Result<Vec<String>> {
    let store = ClusterAdmission::new(client.clone(), "");
    StorePool::new(Arc::new(store), Vec::new())
        .prune()
        .await
        .map_err(|e| Error::Admission(Box::new(e)))
}
