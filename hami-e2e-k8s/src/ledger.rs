//! Cleanup that survives `kill -9`: every run holds a renewed `Lease`; a run whose lease
//! expired is dead, and the reaper removes what it left.
//!
//! A run's objects carry [`RUN_LABEL`] (the [`NamespaceFixture`](crate::NamespaceFixture)
//! and [`TestNamespace::apply`](crate::TestNamespace::apply) put it there). While a run
//! goes on, [`RunLease`] keeps the Lease `hami-e2e-run-<run id>` in namespace `default`
//! renewed every few seconds. When a run is killed, nothing renews it; the next run's
//! [`reap`] (the [`ClusterFixture`](crate::ClusterFixture) calls it at start) finds the
//! expired lease and deletes every object labelled with that run, through discovery
//! (namespaces and cluster-scoped objects included), undoes the changes it recorded on
//! nodes (see [`node_changes`](crate::node_changes)), then deletes the lease. Nothing
//! without the dead run's label or record is touched, and namespaces kept on purpose
//! (`hami-e2e.io/kept-until` in the future) stay until they expire.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> hami_e2e_k8s::Result<()> {
//! use std::time::Duration;
//! use hami_e2e_k8s::ledger::{RunLease, reap};
//!
//! let report = reap(&client).await?; // what dead runs left
//! println!("reaped {:?}, restored {:?}", report.deleted, report.restored);
//! let lease = RunLease::acquire(&client, "my-run", Duration::from_secs(30)).await?;
//! // ... the run ...
//! lease.release().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{
    DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Api, ResourceExt};

use crate::error::{Error, Result};
use crate::namespace::{MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL, is_kept, label_value};
use crate::retry::retry_transient;

/// Where run leases live.
pub const LEASE_NAMESPACE: &str = "default";

/// The name of run `run_id`'s lease.
pub fn lease_name(run_id: &str) -> String {
    format!("hami-e2e-run-{}", label_value(run_id))
}

fn api_error(action: &'static str, object: String) -> impl Fn(kube::Error) -> Error {
    move |source| Error::Api {
        action,
        object: object.clone(),
        source,
    }
}

/// A run's lease, renewed in the background until [`release`](RunLease::release)d or
/// dropped (then it expires by itself).
#[must_use = "the lease is renewed only while this value lives"]
pub struct RunLease {
    client: kube::Client,
    name: String,
    renew: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RunLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLease")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RunLease {
    /// Creates (or takes over) the lease of `run_id`, valid for `duration`, and renews it
    /// every third of that.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] with the server's message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; a lease created before the drop expires by itself.
    pub async fn acquire(
        client: &kube::Client,
        run_id: &str,
        duration: Duration,
    ) -> Result<RunLease> {
        let name = lease_name(run_id);
        let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let seconds = i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (RUN_LABEL.to_string(), label_value(run_id)),
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(format!("pid {}", std::process::id())),
                lease_duration_seconds: Some(seconds),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        };
        retry_transient("create the run's lease", || async {
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => renew(&api, &name).await,
                Err(e) => Err(api_error(
                    "create",
                    format!("lease/{LEASE_NAMESPACE}/{name}"),
                )(e)),
            }
        })
        .await?;
        let period = Duration::from_secs((duration.as_secs() / 3).max(1));
        let renew_api = api.clone();
        let renew_name = name.clone();
        let renew = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(e) = renew(&renew_api, &renew_name).await {
                    tracing::warn!(lease = %renew_name, error = %e, "cannot renew the run's lease");
                }
            }
        });
        Ok(RunLease {
            client: client.clone(),
            name,
            renew,
        })
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops renewing and deletes the lease: the run ended and cleaned up after itself.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] with the server's message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn release(self) -> Result<()> {
        self.renew.abort();
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        match api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_error(
                "delete",
                format!("lease/{LEASE_NAMESPACE}/{}", self.name),
            )(e)),
        }
    }
}

impl Drop for RunLease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

async fn renew(api: &Api<Lease>, name: &str) -> Result<()> {
    let patch = serde_json::json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(api_error(
            "renew",
            format!("lease/{LEASE_NAMESPACE}/{name}"),
        ))
}

/// Whether `lease` expired at `now` (renewed longer ago than its duration).
pub fn is_expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0.checked_add(duration).is_ok_and(|end| end < now)
}

/// What [`reap`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReapReport {
    /// The dead runs found (their run label values).
    pub dead_runs: Vec<String>,
    /// What was deleted, as `kind/namespace/name` or `kind/name`.
    pub deleted: Vec<String>,
    /// Namespaces spared because they are kept until a later time.
    pub kept: Vec<String>,
    /// Node changes undone (see [`node_changes`](crate::node_changes)), as
    /// `node/<name>: label x, annotation y`.
    pub restored: Vec<String>,
}

/// Every run's lease (ours: labelled with a run and managed by hami-e2e).
pub(crate) async fn run_leases(client: &kube::Client) -> Result<Vec<Lease>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{RUN_LABEL}");
    let list = retry_transient("list run leases", || async {
        leases
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_error("list", format!("leases labelled {selector}")))
    })
    .await?;
    Ok(list.items)
}

/// Removes what runs whose lease expired left: the changes they recorded on nodes are
/// undone (see [`node_changes`](crate::node_changes); nothing else on the nodes is
/// touched), every object labelled with such a run (all listable resource types,
/// cluster-scoped included) is deleted, then the lease.
///
/// # Errors
///
/// [`Error::Api`] when leases cannot be listed, an object cannot be deleted or a node
/// cannot be patched (403, ...); [`Error::Invalid`] naming the node and the annotation when
/// a dead run's record on a node is malformed (the lease stays, so a later reap tries again
/// once the record is repaired or removed). Nodes the credentials may not list are skipped.
///
/// # Cancel safety
///
/// Cancel safe; what was deleted stays deleted, and a later reap finishes the job.
pub async fn reap(client: &kube::Client) -> Result<ReapReport> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let list = run_leases(client).await?;
    let now = Timestamp::now();
    let dead: Vec<(String, String)> = list
        .iter()
        .filter(|l| is_expired(l, now))
        .filter_map(|l| Some((l.name_any(), l.labels().get(RUN_LABEL)?.clone())))
        .collect();
    let mut report = ReapReport::default();
    if dead.is_empty() {
        return Ok(report);
    }
    let resources = crate::leak::listable_resources(client).await?;
    for (lease, run) in dead {
        tracing::info!(run = %run, "reaping what a dead run left");
        match crate::node_changes::undo_run(client, &run).await {
            Ok(restored) => report.restored.extend(restored),
            Err(Error::Api {
                action: "list",
                source: kube::Error::Api(s),
                ..
            }) if s.code == 403 => {
                tracing::warn!(run = %run, "may not list nodes: the run's node changes, if any, are not undone");
            }
            Err(e) => return Err(e),
        }
        let selector = format!("{RUN_LABEL}={run}");
        for resource in &resources {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
            let objects = match api.list(&ListParams::default().labels(&selector)).await {
                Ok(l) => l.items,
                Err(kube::Error::Api(s)) if matches!(s.code, 403..=405 | 503) => continue,
                Err(e) => {
                    return Err(api_error(
                        "list",
                        format!("{} labelled {selector}", resource.plural),
                    )(e));
                }
            };
            for object in objects {
                if object.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let kind = resource.kind.to_lowercase();
                let name = object.name_any();
                if is_kept(&object.metadata, now) {
                    report.kept.push(format!("{kind}/{name}"));
                    continue;
                }
                let (id, target) = match object.namespace() {
                    Some(ns) => (
                        format!("{kind}/{ns}/{name}"),
                        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, resource),
                    ),
                    None => (format!("{kind}/{name}"), api.clone()),
                };
                match target.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => report.deleted.push(id),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(api_error("delete", id)(e)),
                }
            }
        }
        match leases.delete(&lease, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(api_error(
                    "delete",
                    format!("lease/{LEASE_NAMESPACE}/{lease}"),
                )(e));
            }
        }
        report.dead_runs.push(run);
    }
    report.deleted.sort();
    report.restored.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(renewed: &str, seconds: i32) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "l"},
            "spec": {"renewTime": renewed, "leaseDurationSeconds": seconds}
        }))
        .expect("a valid lease")
    }

    #[test]
    fn leases_expire_after_their_duration() {
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        assert!(!is_expired(&lease("2026-11-25T11:59:40.000000Z", 30), now));
        assert!(is_expired(&lease("2026-11-25T11:59:00.000000Z", 30), now));
        assert!(is_expired(&Lease::default(), now));
    }

    #[test]
    fn lease_names_are_valid() {
        assert_eq!(
            lease_name("20261125-154505-b19381"),
            "hami-e2e-run-20261125-154505-b19381"
        );
    }
}
