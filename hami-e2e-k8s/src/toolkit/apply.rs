//! Creating objects: server-side apply of typed values and of YAML documents.
//!
//! [`TestNamespace::apply`](crate::TestNamespace::apply) and friends call these with the
//! scenario's namespace and labels; use them directly for cluster-scoped set-up outside a
//! scenario.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::toolkit::retry::retry_transient;

/// The field manager of server-side apply.
pub const FIELD_MANAGER: &str = "hami-e2e";

/// Where a typed object goes: its own namespace, else `namespace`, for namespaced kinds.
fn target_namespace<K: Resource + 'static>(object: &K, namespace: Option<&str>) -> Option<String> {
    if TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>() {
        object
            .meta()
            .namespace
            .clone()
            .or_else(|| namespace.map(str::to_string))
    } else {
        None
    }
}

fn dynamic_api<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<K>(&());
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

fn object_name(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{}/{ns}/{name}", kind.to_lowercase()),
        None => format!("{}/{name}", kind.to_lowercase()),
    }
}

fn with_labels<K: Resource + Clone>(object: &K, labels: &BTreeMap<String, String>) -> K {
    let mut object = object.clone();
    let own = object.meta_mut().labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in labels {
        own.entry(k.clone()).or_insert_with(|| v.clone());
    }
    object
}

/// Server-side applies `object` with field manager `hami-e2e` (forcing conflicts), adding
/// `labels`; a namespaced object goes into its own namespace, else `namespace`.
///
/// # Errors
///
/// [`Error::Invalid`] for an object without a name or a namespaced one without a
/// namespace; [`Error::Api`] naming the object, with the server's message. Transient
/// errors are retried.
///
/// # Cancel safety
///
/// Cancel safe; the object may or may not have been applied.
pub async fn apply<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
    object: &K,
) -> Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + 'static,
{
    let name = object.meta().name.clone().ok_or_else(|| Error::Invalid {
        what: format!("{} without a name", K::kind(&()).to_lowercase()),
        message: "server-side apply needs metadata.name".into(),
    })?;
    let (api, ns) = typed_target(client, namespace, object, &name)?;
    let mut value = typed_json(&with_labels(object, labels), ns.as_deref(), &name)?;
    // Server-side apply leaves the status alone.
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = retry_transient("apply", || async {
        api.patch(&name, &params, &Patch::Apply(&value))
            .await
            .map_err(|source| Error::Api {
                action: "apply",
                object: object_name(&K::kind(&()), ns.as_deref(), &name),
                source,
            })
    })
    .await?;
    convert(applied, &K::kind(&()), ns.as_deref(), &name)
}

/// Creates `object` (a POST, failing with 409 if it exists), adding `labels`; a
/// namespaced object goes into its own namespace, else `namespace`.
///
/// # Errors
///
/// As [`apply`].
///
/// # Cancel safety
///
/// Cancel safe; the object may or may not have been created.
pub async fn create<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
    object: &K,
) -> Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + 'static,
{
    let object = with_labels(object, labels);
    // `name_any` also covers objects named by the server (`generateName`).
    let name = object.name_any();
    let (api, ns) = typed_target(client, namespace, &object, &name)?;
    let value = typed_json(&object, ns.as_deref(), &name)?;
    let dynamic: DynamicObject = serde_json::from_value(value).map_err(|e| Error::Invalid {
        what: object_name(&K::kind(&()), ns.as_deref(), &name),
        message: e.to_string(),
    })?;
    let created = retry_transient("create", || async {
        api.create(&PostParams::default(), &dynamic)
            .await
            .map_err(|source| Error::Api {
                action: "create",
                object: object_name(&K::kind(&()), ns.as_deref(), &name),
                source,
            })
    })
    .await?;
    convert(created, &K::kind(&()), ns.as_deref(), &name)
}

/// The dynamic API a typed object goes through, and its namespace (its own, else
/// `namespace`, for namespaced kinds).
fn typed_target<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    object: &K,
    name: &str,
) -> Result<(Api<DynamicObject>, Option<String>)>
where
    K: Resource<DynamicType = ()> + 'static,
{
    let ns = target_namespace(object, namespace);
    let namespaced = TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>();
    if namespaced && ns.is_none() {
        return Err(Error::Invalid {
            what: object_name(&K::kind(&()), None, name),
            message: "a namespaced object needs a namespace".into(),
        });
    }
    Ok((dynamic_api::<K>(client, ns.as_deref()), ns))
}

/// The object as JSON with its `apiVersion` and `kind` (which typed values leave out).
fn typed_json<K>(object: &K, namespace: Option<&str>, name: &str) -> Result<serde_json::Value>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let mut value = serde_json::to_value(object).map_err(|e| Error::Invalid {
        what: object_name(&K::kind(&()), namespace, name),
        message: e.to_string(),
    })?;
    value["apiVersion"] = K::api_version(&()).as_ref().into();
    value["kind"] = K::kind(&()).as_ref().into();
    Ok(value)
}

fn convert<K: DeserializeOwned>(
    object: DynamicObject,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<K> {
    let value = serde_json::to_value(object).map_err(|e| Error::Invalid {
        what: object_name(kind, namespace, name),
        message: e.to_string(),
    })?;
    serde_json::from_value(value).map_err(|e| Error::Invalid {
        what: format!("server's answer for {}", object_name(kind, namespace, name)),
        message: e.to_string(),
    })
}

/// The API groups and resource types the cluster serves, with transient errors retried.
///
/// Aggregated discovery first (two requests; an unavailable aggregated API such as a broken
/// metrics server is reported stale there instead of failing everything), then, on servers
/// without it, the group-by-group discovery.
pub(crate) async fn discover(client: &kube::Client) -> Result<Discovery> {
    retry_transient("discover the API", || async {
        match Discovery::new(client.clone()).run_aggregated().await {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::debug!(error = %e, "no aggregated discovery; querying group by group");
                Discovery::new(client.clone())
                    .run()
                    .await
                    .map_err(|source| Error::Api {
                        action: "discover",
                        object: "the API groups".into(),
                        source,
                    })
            }
        }
    })
    .await
}

/// Parses the documents of `yaml` (separated by `---`; empty documents are skipped) into
/// JSON values, without a cluster.
///
/// ```
/// let docs = hami_e2e_k8s::parse_yaml_documents("inline", "kind: A\n---\n---\nkind: B\n")?;
/// assert_eq!(docs.len(), 2);
/// let bad = hami_e2e_k8s::parse_yaml_documents("x.yaml", "kind: A\n---\nkind: [\n").unwrap_err();
/// assert!(bad.to_string().starts_with("invalid YAML document 2 of x.yaml"), "{bad}");
/// # Ok::<(), hami_e2e_k8s::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Yaml`] naming the document (from 1) and the parser's message with its line.
pub fn parse_yaml_documents(source_name: &str, yaml: &str) -> Result<Vec<serde_json::Value>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let value = serde_json::Value::deserialize(document).map_err(|e| Error::Yaml {
            source_name: source_name.to_string(),
            index: i + 1,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Applies every document of `yaml` with server-side apply, resolving each kind through
/// discovery (so custom resources work), adding `labels`; namespaced objects go into
/// their own namespace, else `namespace`.
///
/// # Errors
///
/// [`Error::Yaml`] naming the document for bad YAML, a missing `apiVersion`/`kind`/name or
/// a kind the server does not serve; [`Error::Api`] for what the server refuses. Documents
/// before a bad one stay applied.
///
/// # Cancel safety
///
/// Cancel safe; some documents may have been applied.
pub async fn apply_yaml(
    client: &kube::Client,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
    source_name: &str,
    yaml: &str,
) -> Result<Vec<DynamicObject>> {
    let documents = parse_yaml_documents(source_name, yaml)?;
    if documents.is_empty() {
        return Ok(Vec::new());
    }
    let discovery = discover(client).await?;
    let mut applied = Vec::new();
    for (i, document) in documents.into_iter().enumerate() {
        let bad = |message: String| Error::Yaml {
            source_name: source_name.to_string(),
            index: i + 1,
            message,
        };
        let mut object: DynamicObject =
            serde_json::from_value(document).map_err(|e| bad(e.to_string()))?;
        let types = object
            .types
            .clone()
            .ok_or_else(|| bad("no apiVersion and kind".into()))?;
        let gvk = kube::api::GroupVersionKind::try_from(&types).map_err(|e| bad(e.to_string()))?;
        let (resource, capabilities) = discovery.resolve_gvk(&gvk).ok_or_else(|| {
            bad(format!(
                "the server does not serve kind `{}` of `{}`",
                types.kind, types.api_version
            ))
        })?;
        let name = object
            .metadata
            .name
            .clone()
            .ok_or_else(|| bad(format!("the {} has no metadata.name", types.kind)))?;
        let own = object.metadata.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in labels {
            own.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let ns = match capabilities.scope {
            Scope::Namespaced => Some(
                object
                    .metadata
                    .namespace
                    .clone()
                    .or_else(|| namespace.map(str::to_string))
                    .ok_or_else(|| bad(format!("the {} `{name}` needs a namespace", types.kind)))?,
            ),
            Scope::Cluster => None,
        };
        let api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let value = serde_json::to_value(&object).map_err(|e| bad(e.to_string()))?;
        let result = retry_transient("apply", || async {
            api.patch(&name, &params, &Patch::Apply(&value))
                .await
                .map_err(|source| Error::Api {
                    action: "apply",
                    object: object_name(&types.kind, ns.as_deref(), &name),
                    source,
                })
        })
        .await?;
        applied.push(result);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Namespace, Pod};

    #[test]
    fn namespaced_kinds_get_the_default_namespace() {
        let pod = Pod::default();
        assert_eq!(target_namespace(&pod, Some("ns")).as_deref(), Some("ns"));
        let mut elsewhere = Pod::default();
        elsewhere.metadata.namespace = Some("other".into());
        assert_eq!(
            target_namespace(&elsewhere, Some("ns")).as_deref(),
            Some("other")
        );
        assert_eq!(target_namespace(&Namespace::default(), Some("ns")), None);
    }

    #[test]
    fn labels_are_added_not_overwritten() {
        let mut pod = Pod::default();
        pod.metadata.labels = Some(BTreeMap::from([("a".to_string(), "mine".to_string())]));
        let labels = BTreeMap::from([
            ("a".to_string(), "theirs".to_string()),
            ("b".to_string(), "x".to_string()),
        ]);
        let out = with_labels(&pod, &labels);
        let l = out.metadata.labels.unwrap_or_default();
        assert_eq!(l["a"], "mine");
        assert_eq!(l["b"], "x");
    }

    #[test]
    fn yaml_errors_name_the_document() {
        let e = parse_yaml_documents("app.yaml", "a: 1\n---\nb: [\n").unwrap_err();
        assert!(
            matches!(&e, Error::Yaml { index: 2, source_name, .. } if source_name == "app.yaml"),
            "{e}"
        );
        assert!(parse_yaml_documents("x", "").unwrap().is_empty());
    }
}
