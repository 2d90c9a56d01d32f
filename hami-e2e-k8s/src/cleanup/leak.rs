//! The leak check: after a scenario's teardown, what still carries its labels?
//!
//! Everything hami-e2e applies for a scenario carries [`RUN_LABEL`] and [`SCENARIO_LABEL`]
//! (see [`ownership_labels`](crate::ownership_labels)). When the scenario's fixtures and
//! deferred cleanups have run, [`leaks`] lists every object of every listable resource type
//! (found through discovery, custom resources included) that still has both labels, outside
//! the scenario's own namespace (whose deletion removes what is in it). A leak fails that
//! scenario, with the list, instead of confusing a later one.

use std::collections::BTreeSet;

use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::discovery::verbs;
use kube::{Api, ResourceExt};

use crate::cleanup::labels::{RUN_LABEL, SCENARIO_LABEL, label_value};
use crate::error::{Error, Result};

/// Resource types never checked: events are recorded by the cluster about our objects, and
/// carry no labels of ours anyway; leases, endpoints and endpoint slices are derived.
const SKIPPED: &[&str] = &["events", "leases", "endpoints", "endpointslices"];

/// The listable resource types of the cluster (discovery), to check for leaks; run it once
/// per run and pass it to [`leaks`].
///
/// # Errors
///
/// [`Error::Api`] when discovery fails.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn listable_resources(client: &kube::Client) -> Result<Vec<ApiResource>> {
    let discovery = crate::toolkit::apply::discover(client).await?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for group in discovery.groups() {
        // The preferred version of each kind only: the same objects are served by others.
        for (resource, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) || SKIPPED.contains(&resource.plural.as_str())
            {
                continue;
            }
            if seen.insert((resource.group.clone(), resource.plural.clone())) {
                out.push(resource);
            }
        }
    }
    Ok(out)
}

/// Objects of `resources` still labelled for `scenario` of run `run_id`, outside
/// `own_namespace`, as `kind/namespace/name` (or `kind/name`), sorted.
///
/// # Errors
///
/// [`Error::Api`] when a list fails for another reason than the type being gone or
/// forbidden (both are skipped: a CRD deleted meanwhile, a type the credentials may not
/// list).
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn leaks(
    client: &kube::Client,
    resources: &[ApiResource],
    run_id: &str,
    scenario: &str,
    own_namespace: Option<&str>,
) -> Result<Vec<String>> {
    let selector = format!(
        "{RUN_LABEL}={},{SCENARIO_LABEL}={}",
        label_value(run_id),
        label_value(scenario)
    );
    let params = ListParams::default().labels(&selector);
    let lists = resources.iter().map(|resource| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
        let params = params.clone();
        let selector = selector.clone();
        async move {
            match api.list(&params).await {
                Ok(list) => Ok(list
                    .items
                    .into_iter()
                    .map(|o| (resource.kind.to_lowercase(), o))
                    .collect::<Vec<_>>()),
                // Gone, forbidden, not listable, or an aggregated API that is down.
                Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 405 | 503) => {
                    if s.code == 503 {
                        tracing::warn!(resource = %resource.plural, "not checked for leaks: its API is unavailable");
                    }
                    Ok(Vec::new())
                }
                Err(source) => Err(Error::Api {
                    action: "list",
                    object: format!("{} labelled {selector}", resource.plural),
                    source,
                }),
            }
        }
    });
    let mut objects = Vec::new();
    for result in futures::future::join_all(lists).await {
        objects.extend(result?);
    }
    // Namespaces labelled for this scenario (this attempt's, and earlier attempts' or
    // iterations' still terminating or kept on purpose): what is inside them goes with them.
    let covered: BTreeSet<String> = objects
        .iter()
        .filter(|(kind, _)| kind == "namespace")
        .map(|(_, o)| o.name_any())
        .chain(own_namespace.map(str::to_string))
        .collect();
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut found = Vec::new();
    for (kind, object) in objects {
        let ns = object.namespace();
        if ns.as_ref().is_some_and(|ns| covered.contains(ns)) {
            continue;
        }
        if kind == "namespace" {
            let kept = crate::cleanup::labels::is_kept(&object.metadata, now);
            if Some(object.name_any().as_str()) == own_namespace
                || object.metadata.deletion_timestamp.is_some()
                || kept
            {
                continue;
            }
        }
        found.push(match ns {
            Some(ns) => format!("{kind}/{ns}/{}", object.name_any()),
            None => format!("{kind}/{}", object.name_any()),
        });
    }
    found.sort();
    Ok(found)
}
