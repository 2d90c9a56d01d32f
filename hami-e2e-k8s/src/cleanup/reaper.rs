//! The reaper: removes what dead runs left (see [`lease`](crate::cleanup::lease) for when a
//! run is dead), selected by the run's label and the records it left on nodes.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::{Api, ResourceExt};

use crate::cleanup::labels::{RUN_LABEL, is_kept, label_value};
use crate::cleanup::lease::{LEASE_NAMESPACE, api_error, death, lease_name, run_leases};
use crate::cleanup::{admission, leak, node_changes};
use crate::error::{Error, Result};

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
    /// Node changes undone (see [`node_changes`]), as
    /// `node/<name>: label x, annotation y`.
    pub restored: Vec<String>,
}

/// Removes what dead runs left (see [`is_dead`](crate::cleanup::lease::is_dead): the lease expired, or the holder on this
/// host is gone): the changes they recorded on nodes are undone (see
/// [`node_changes`]; nothing else on the nodes is touched), every
/// object labelled with such a run (all listable resource types, cluster-scoped included)
/// is deleted, then the lease.
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
    reap_runs(client, None).await
}

/// As [`reap`], but never run `run_id` (the current one), whatever its lease says: what a
/// run's own background re-check calls.
///
/// # Errors
///
/// As [`reap`].
///
/// # Cancel safety
///
/// As [`reap`].
pub async fn reap_except(client: &kube::Client, run_id: &str) -> Result<ReapReport> {
    reap_runs(client, Some(run_id)).await
}

async fn reap_runs(client: &kube::Client, except_run: Option<&str>) -> Result<ReapReport> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let list = run_leases(client).await?;
    let now = Timestamp::now();
    let except = except_run.map(|run| (label_value(run), lease_name(run)));
    let dead: Vec<(String, String, &'static str)> = list
        .iter()
        .filter_map(|l| {
            let run = l.labels().get(RUN_LABEL)?.clone();
            let name = l.name_any();
            if except
                .as_ref()
                .is_some_and(|(r, n)| *r == run || *n == name)
            {
                return None;
            }
            Some((name, run, death(l, now)?))
        })
        .collect();
    let mut report = ReapReport::default();
    if dead.is_empty() {
        return Ok(report);
    }
    let resources = leak::listable_resources(client).await?;
    for (lease, run, why) in dead {
        tracing::info!(run = %run, "reaping what a dead run left: {why}");
        match node_changes::undo_run(client, &run).await {
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
    // Their devices in the cluster's admission ConfigMap, if they held any.
    match admission::prune(client).await {
        Ok(dropped) if !dropped.is_empty() => {
            tracing::info!(runs = ?dropped, "dropped the admission holdings of dead runs");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot drop the admission holdings of dead runs"),
    }
    report.deleted.sort();
    report.restored.sort();
    Ok(report)
}
