//! Changes to nodes the run did not create (their labels and annotations), recorded on the
//! node itself so that they can be undone, also after `kill -9`.
//!
//! A scenario that labels or annotates a node goes through [`NodeChanges`] (or the
//! scenario-scoped [`NodeChangesFixture`](crate::NodeChangesFixture)). Before a key is changed for the first time in a
//! run, its original value (or its absence) is written into the node's annotation
//! `hami-e2e.io/changes.<run id>` ([`record_annotation`]), in the same patch as the change,
//! so a run killed right after the patch still leaves a record. A second change of the same
//! key keeps the first original. The record is a [`ChangeRecord`] in JSON:
//!
//! ```json
//! {"run":"20261125-154505-b19381","since":"2026-11-25T15:45:07Z",
//!  "labels":{"pool":{"scenario":"nvidia-allocation-single","value":"blue"}},
//!  "annotations":{"hami.io/note":{"scenario":"nvidia-allocation-single","value":null}}}
//! ```
//!
//! Every patch is a JSON merge patch carrying the node's `resourceVersion` as a
//! precondition, repeated on `409 Conflict`, so two runs (or a run and a controller)
//! changing one node at once never lose a record; each run has its own annotation.
//!
//! Undo ([`NodeChanges::undo`], [`NodeChanges::undo_all`], [`undo_run`]) puts every
//! recorded key back to its original value, or removes it if it was absent, then removes
//! the record; nothing else on the node is touched. It is idempotent, and a node that is
//! gone is fine. The reaper ([`reap`](crate::reap)) undoes the records of runs
//! whose lease expired, and [`sweep`](crate::sweep()) those of runs whose lease expired or
//! is gone (the latter once the record is older than the sweep's age).
//!
//! Who changes a key first in a run owns it: its scenario's undo restores it. Two runs
//! changing the same key at once each restore what they found, so the last to undo wins.
//!
//! ```no_run
//! use hami_e2e_core::{Runner, scenario};
//! use hami_e2e_k8s::{ClusterArgs, ClusterFixture, ClusterSource, NodeChangesFixture};
//!
//! Runner::new()
//!     .fixture(ClusterFixture::new(ClusterSource::from_args(&ClusterArgs::default())))
//!     .fixture(NodeChangesFixture)
//!     .scenario(scenario("nodes/labelled").run(|ctx| async move {
//!         let nodes = ctx.fixture::<NodeChangesFixture>().await?;
//!         nodes.set_label("gpu-node-0", "gpu", Some("on")).await?;
//!         nodes.set_annotation("gpu-node-0", "hami.io/node-nvidia-register", None).await?;
//!         // ... the scenario; its teardown puts both keys back, whatever the outcome ...
//!         Ok(())
//!     }))
//!     .main();
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cleanup::labels::{RUN_LABEL, fnv, label_value};
use crate::cleanup::lease::{is_expired, run_leases};
use crate::error::{Error, Result};
use crate::toolkit::apply::FIELD_MANAGER;
use crate::toolkit::retry::retry_transient;

/// The prefix of the annotations that record a run's changes on a node.
pub const RECORD_ANNOTATION_PREFIX: &str = "hami-e2e.io/changes.";

/// How often a change is tried again after `409 Conflict` (the node changed in between).
const CONFLICT_ATTEMPTS: u32 = 20;

/// The annotation that records run `run_id`'s changes on a node:
/// `hami-e2e.io/changes.<run label value>`, cut (with a hash) to a valid annotation key.
///
/// ```
/// use hami_e2e_k8s::cleanup::node_changes::record_annotation;
///
/// assert_eq!(record_annotation("20261125-154505-b19381"), "hami-e2e.io/changes.20261125-154505-b19381");
/// let long = record_annotation(&"run".repeat(30));
/// assert!(long.len() <= "hami-e2e.io/".len() + 63);
/// assert_ne!(long, record_annotation(&"run".repeat(31)));
/// ```
pub fn record_annotation(run_id: &str) -> String {
    // The name part of an annotation key has at most 63 characters; `changes.` takes 8.
    const ROOM: usize = 63 - "changes.".len();
    let run = label_value(run_id);
    let run = if run.len() <= ROOM {
        run
    } else {
        let hash = format!("{:08x}", fnv(run.as_bytes()) as u32);
        let head =
            run[..ROOM - hash.len() - 1].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        format!("{head}-{hash}")
    };
    format!("{RECORD_ANNOTATION_PREFIX}{run}")
}

/// Which of a node's maps a key is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `metadata.labels`.
    Label,
    /// `metadata.annotations`.
    Annotation,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Label => "label",
            Field::Annotation => "annotation",
        })
    }
}

/// What a key held before a run first changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Original {
    /// The scenario (its label value) that first changed the key in this run.
    pub scenario: String,
    /// The value before, or `None` if the key was absent.
    pub value: Option<String>,
}

/// One run's changes on one node: for each changed key, its original value; stored in JSON
/// in the node's [`record_annotation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChangeRecord {
    /// The run (its label value).
    pub run: String,
    /// When the run first changed the node (RFC 3339).
    pub since: String,
    /// Changed labels and their originals.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Original>,
    /// Changed annotations and their originals.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, Original>,
}

impl ChangeRecord {
    /// An empty record of run `run_id`, started at `since`.
    pub fn new(run_id: &str, since: Timestamp) -> ChangeRecord {
        ChangeRecord {
            run: label_value(run_id),
            since: since.to_string(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// The originals of `field`.
    pub fn originals(&self, field: Field) -> &BTreeMap<String, Original> {
        match field {
            Field::Label => &self.labels,
            Field::Annotation => &self.annotations,
        }
    }

    fn originals_mut(&mut self, field: Field) -> &mut BTreeMap<String, Original> {
        match field {
            Field::Label => &mut self.labels,
            Field::Annotation => &mut self.annotations,
        }
    }

    /// Whether no key is recorded.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }

    /// The record as the annotation's value.
    ///
    /// ```
    /// use hami_e2e_k8s::cleanup::node_changes::{ChangeRecord, record_annotation};
    ///
    /// let record = ChangeRecord::new("run-1", "2026-11-25T12:00:00Z".parse().unwrap());
    /// let text = record.encode();
    /// assert_eq!(text, r#"{"run":"run-1","since":"2026-11-25T12:00:00Z"}"#);
    /// assert_eq!(ChangeRecord::decode("node-0", &record_annotation("run-1"), &text)?, record);
    /// # Ok::<(), hami_e2e_k8s::Error>(())
    /// ```
    pub fn encode(&self) -> String {
        // Strings and maps of strings: serialising cannot fail.
        serde_json::to_string(self).expect("a change record serialises")
    }

    /// Reads the value of annotation `annotation` of node `node`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the node and the annotation when the text is not a record,
    /// its `since` is not a time, or it belongs to another run than the annotation says.
    pub fn decode(node: &str, annotation: &str, text: &str) -> Result<ChangeRecord> {
        let invalid = |message: String| Error::Invalid {
            what: format!("change record `{annotation}` on node/{node}"),
            message,
        };
        let record: ChangeRecord =
            serde_json::from_str(text).map_err(|e| invalid(format!("{e} in `{text}`")))?;
        if let Err(e) = record.since.parse::<Timestamp>() {
            return Err(invalid(format!("`since` is not a time: {e}")));
        }
        let expected = record_annotation(&record.run);
        if expected != annotation {
            return Err(invalid(format!(
                "it names run `{}`, whose record is `{expected}`",
                record.run
            )));
        }
        Ok(record)
    }

    /// Run `run_id`'s record on `node`, if there is one.
    ///
    /// # Errors
    ///
    /// As [`ChangeRecord::decode`].
    pub fn of_run(node: &Node, run_id: &str) -> Result<Option<ChangeRecord>> {
        let annotation = record_annotation(run_id);
        node.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&annotation))
            .map(|text| ChangeRecord::decode(&node_name(node), &annotation, text))
            .transpose()
    }

    /// Every run's record on `node`, with its annotation.
    ///
    /// # Errors
    ///
    /// As [`ChangeRecord::decode`], for the first malformed record.
    pub fn all(node: &Node) -> Result<Vec<(String, ChangeRecord)>> {
        let name = node_name(node);
        node.metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(RECORD_ANNOTATION_PREFIX))
            .map(|(k, text)| Ok((k.clone(), ChangeRecord::decode(&name, k, text)?)))
            .collect()
    }
}

fn node_name(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

fn current(node: &Node, field: Field, key: &str) -> Option<String> {
    let map = match field {
        Field::Label => node.metadata.labels.as_ref(),
        Field::Annotation => node.metadata.annotations.as_ref(),
    };
    map.and_then(|m| m.get(key)).cloned()
}

fn string_or_null(value: Option<String>) -> Value {
    value.map_or(Value::Null, Value::String)
}

/// A merge patch of `metadata`, with the node's `resourceVersion` as precondition.
fn metadata_patch(
    node: &Node,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
) -> Value {
    let mut metadata = Map::new();
    if let Some(rv) = &node.metadata.resource_version {
        metadata.insert("resourceVersion".into(), Value::String(rv.clone()));
    }
    if !labels.is_empty() {
        metadata.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    serde_json::json!({ "metadata": metadata })
}

/// The merge patch that sets `key` of `field` on `node` to `value` (`None` removes it) for
/// `scenario` of run `run`, and records the key's current value in the run's record first
/// unless the run changed it before.
///
/// # Errors
///
/// [`Error::Invalid`] when the run's record on the node is malformed.
pub(crate) fn change_patch(
    node: &Node,
    run: &str,
    scenario: &str,
    change: (Field, &str, Option<&str>),
    now: Timestamp,
) -> Result<Value> {
    let (field, key, value) = change;
    let annotation = record_annotation(run);
    let mut record =
        ChangeRecord::of_run(node, run)?.unwrap_or_else(|| ChangeRecord::new(run, now));
    record
        .originals_mut(field)
        .entry(key.to_string())
        .or_insert_with(|| Original {
            scenario: label_value(scenario),
            value: current(node, field, key),
        });
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let target = match field {
        Field::Label => &mut labels,
        Field::Annotation => &mut annotations,
    };
    target.insert(key.to_string(), string_or_null(value.map(str::to_string)));
    annotations.insert(annotation, Value::String(record.encode()));
    Ok(metadata_patch(node, labels, annotations))
}

/// What undoing a run's changes on one node takes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Undo {
    /// The merge patch.
    pub(crate) patch: Value,
    /// What it restores: `label x`, `annotation y`.
    pub(crate) restored: Vec<String>,
}

/// The merge patch that restores the keys run `run` recorded on `node` (only those first
/// changed by `scenario`, if given) and removes them from its record, and the record
/// itself once it is empty; `None` when there is nothing to undo.
///
/// # Errors
///
/// [`Error::Invalid`] when the run's record on the node is malformed.
pub(crate) fn undo_patch(node: &Node, run: &str, scenario: Option<&str>) -> Result<Option<Undo>> {
    let Some(mut record) = ChangeRecord::of_run(node, run)? else {
        return Ok(None);
    };
    let scenario = scenario.map(label_value);
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut restored = Vec::new();
    for field in [Field::Label, Field::Annotation] {
        let originals = record.originals_mut(field);
        let keys: Vec<String> = originals
            .iter()
            .filter(|(_, o)| scenario.as_ref().is_none_or(|s| &o.scenario == s))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(original) = originals.remove(&key) else {
                continue;
            };
            let target = match field {
                Field::Label => &mut labels,
                Field::Annotation => &mut annotations,
            };
            target.insert(key.clone(), string_or_null(original.value));
            restored.push(format!("{field} {key}"));
        }
    }
    if restored.is_empty() && !record.is_empty() {
        return Ok(None);
    }
    let rest = (!record.is_empty()).then(|| record.encode());
    annotations.insert(record_annotation(run), string_or_null(rest));
    Ok(Some(Undo {
        patch: metadata_patch(node, labels, annotations),
        restored,
    }))
}

/// A patch [`patch_node`] is to send, what its error names, and what it returns.
struct Planned<T> {
    patch: Value,
    object: String,
    value: T,
}

/// Reads node `name`, plans a patch from what it holds, and sends it (its precondition is
/// the node's `resourceVersion`), reading and planning again after `409 Conflict`. `None`
/// when there is nothing to do, or the node is gone and `missing_ok`.
async fn patch_node<T>(
    api: &Api<Node>,
    name: &str,
    action: &'static str,
    object: &str,
    missing_ok: bool,
    mut plan: impl FnMut(&Node) -> Result<Option<Planned<T>>>,
) -> Result<Option<T>> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let node = retry_transient("read a node", || async {
            match api.get(name).await {
                Ok(node) => Ok(Some(node)),
                Err(kube::Error::Api(s)) if s.code == 404 && missing_ok => Ok(None),
                Err(source) => Err(Error::Api {
                    action,
                    object: object.to_string(),
                    source,
                }),
            }
        })
        .await?;
        let Some(node) = node else { return Ok(None) };
        let Some(planned) = plan(&node)? else {
            return Ok(None);
        };
        let sent = retry_transient("patch a node", || async {
            api.patch(name, &params, &Patch::Merge(&planned.patch))
                .await
                .map_err(|source| Error::Api {
                    action,
                    object: planned.object.clone(),
                    source,
                })
        })
        .await;
        match sent {
            Ok(_) => return Ok(Some(planned.value)),
            Err(Error::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 409 && attempt < CONFLICT_ATTEMPTS => {
                tracing::debug!(node = name, attempt, "the node changed meanwhile; again");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(Error::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 && missing_ok => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Undoes run `run`'s recorded changes on node `name` (those of `scenario` only, if given):
/// `node/<name>: label x, annotation y`, or `None` when there were none or the node is gone.
async fn undo_on_node(
    client: &kube::Client,
    name: &str,
    run: &str,
    scenario: Option<&str>,
) -> Result<Option<String>> {
    let api: Api<Node> = Api::all(client.clone());
    let annotation = record_annotation(run);
    let restored = patch_node(
        &api,
        name,
        "undo",
        &format!("the changes recorded in `{annotation}` on node/{name}"),
        true,
        |node| {
            Ok(undo_patch(node, run, scenario)?.map(|undo| Planned {
                object: format!(
                    "{} on node/{name} (recorded in `{annotation}`)",
                    undo.restored.join(", ")
                ),
                patch: undo.patch,
                value: undo.restored,
            }))
        },
    )
    .await?;
    let restored = restored.filter(|r| !r.is_empty());
    if let Some(keys) = &restored {
        tracing::info!(node = name, run, restored = ?keys, "undid a run's changes to a node");
    }
    Ok(restored.map(|keys| format!("node/{name}: {}", keys.join(", "))))
}

async fn list_nodes(client: &kube::Client) -> Result<Vec<Node>> {
    let api: Api<Node> = Api::all(client.clone());
    retry_transient("list nodes", || async {
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|source| Error::Api {
                action: "list",
                object: "nodes".into(),
                source,
            })
    })
    .await
}

/// Undoes every change run `run_id` recorded, on every node: what was restored, as
/// `node/<name>: label x, annotation y`. The reaper calls it for dead runs.
///
/// # Errors
///
/// [`Error::Api`] when the nodes cannot be listed or one cannot be patched, naming the node
/// and the keys; [`Error::Invalid`] naming the node and the annotation for a malformed
/// record.
///
/// # Cancel safety
///
/// Cancel safe: each node's undo is one patch; a later call finishes the job.
pub async fn undo_run(client: &kube::Client, run_id: &str) -> Result<Vec<String>> {
    let run = label_value(run_id);
    let annotation = record_annotation(&run);
    let mut restored = Vec::new();
    for node in list_nodes(client).await? {
        let has_record = node
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(&annotation));
        if has_record {
            restored.extend(undo_on_node(client, &node_name(&node), &run, None).await?);
        }
    }
    Ok(restored)
}

/// For [`sweep`](crate::sweep()): undoes the records of runs other than `except_run` whose
/// lease expired, or is gone and whose record is older than `older_than`.
pub(crate) async fn undo_abandoned(
    client: &kube::Client,
    older_than: Duration,
    except_run: Option<&str>,
) -> Result<Vec<String>> {
    let leases = run_leases(client).await?;
    let now = Timestamp::now();
    // Run label value -> whether its lease expired.
    let expired: BTreeMap<String, bool> = leases
        .iter()
        .filter_map(|l| {
            let run = l.metadata.labels.as_ref()?.get(RUN_LABEL)?;
            Some((run.clone(), is_expired(l, now)))
        })
        .collect();
    let except = except_run.map(label_value);
    let mut restored = Vec::new();
    for node in list_nodes(client).await? {
        for (_, record) in ChangeRecord::all(&node)? {
            if except.as_ref() == Some(&record.run) {
                continue;
            }
            let abandoned = match expired.get(&record.run) {
                Some(expired) => *expired,
                None => record
                    .since
                    .parse::<Timestamp>()
                    .ok()
                    .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
                    .is_some_and(|age| age >= older_than),
            };
            if abandoned {
                restored.extend(undo_on_node(client, &node_name(&node), &record.run, None).await?);
            }
        }
    }
    Ok(restored)
}

/// Changes to node labels and annotations on behalf of one scenario of one run, each
/// recorded on the node before it is made (see the [module docs](self)).
///
/// ```no_run
/// # async fn f(client: kube::Client) -> hami_e2e_k8s::Result<()> {
/// use hami_e2e_k8s::NodeChanges;
///
/// let changes = NodeChanges::new(&client, "my-run", "nodes::labelled");
/// changes.set_label("gpu-node-0", "gpu", Some("on")).await?;
/// changes.set_annotation("gpu-node-0", "hami.io/mutex.lock", None).await?;
/// let restored = changes.undo().await?; // ["node/gpu-node-0: label gpu, annotation hami.io/mutex.lock"]
/// # Ok(()) }
/// ```
pub struct NodeChanges {
    client: kube::Client,
    run: String,
    scenario: String,
    annotation: String,
    /// Nodes this value changed (or tried to): where [`NodeChanges::undo`] looks.
    touched: Mutex<BTreeSet<String>>,
}

impl fmt::Debug for NodeChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeChanges")
            .field("run", &self.run)
            .field("scenario", &self.scenario)
            .field("annotation", &self.annotation)
            .finish_non_exhaustive()
    }
}

impl NodeChanges {
    /// Changes on behalf of `scenario` of run `run_id`.
    pub fn new(client: &kube::Client, run_id: &str, scenario: &str) -> NodeChanges {
        NodeChanges {
            client: client.clone(),
            run: label_value(run_id),
            scenario: label_value(scenario),
            annotation: record_annotation(run_id),
            touched: Mutex::default(),
        }
    }

    /// The run (its label value).
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The scenario (its label value).
    pub fn scenario(&self) -> &str {
        &self.scenario
    }

    /// The annotation that records the run's changes on a node.
    pub fn record_annotation(&self) -> &str {
        &self.annotation
    }

    /// Sets label `key` of node `node` to `value`, or removes it with `None`, after
    /// recording its original value (the first time the run changes it).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for an empty key or one of hami-e2e's record annotations, or a
    /// malformed record on the node (naming the node and the annotation); [`Error::Api`]
    /// naming the node and the key, with the server's message (404 for a missing node, 422
    /// for an invalid key or value).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the change and its record are one patch; either both happened or
    /// neither, and [`NodeChanges::undo`] looks at the node either way.
    pub async fn set_label(&self, node: &str, key: &str, value: Option<&str>) -> Result<()> {
        self.change(node, Field::Label, key, value).await
    }

    /// Sets annotation `key` of node `node` to `value`, or removes it with `None`, after
    /// recording its original value (the first time the run changes it).
    ///
    /// # Errors
    ///
    /// As [`NodeChanges::set_label`].
    ///
    /// # Cancel safety
    ///
    /// As [`NodeChanges::set_label`].
    pub async fn set_annotation(&self, node: &str, key: &str, value: Option<&str>) -> Result<()> {
        self.change(node, Field::Annotation, key, value).await
    }

    async fn change(&self, node: &str, field: Field, key: &str, value: Option<&str>) -> Result<()> {
        let object = format!("{field} `{key}` of node/{node}");
        if key.is_empty() || key.starts_with(RECORD_ANNOTATION_PREFIX) {
            return Err(Error::Invalid {
                what: object,
                message: format!(
                    "the key must not be empty nor start with `{RECORD_ANNOTATION_PREFIX}` (hami-e2e's own records)"
                ),
            });
        }
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string());
        let api: Api<Node> = Api::all(self.client.clone());
        let action = if value.is_some() { "set" } else { "remove" };
        let now = Timestamp::now();
        patch_node(&api, node, action, &object, false, |n| {
            Ok(Some(Planned {
                patch: change_patch(n, &self.run, &self.scenario, (field, key, value), now)?,
                object: object.clone(),
                value: (),
            }))
        })
        .await?;
        tracing::debug!(node, %field, key, value, run = %self.run, "changed a node");
        Ok(())
    }

    /// Undoes this scenario's changes on the nodes changed through this value: every key it
    /// changed first is back to its original value (or gone), and the run's record keeps
    /// only other scenarios' keys (or is removed). Returns what was restored, as
    /// `node/<name>: label x, annotation y`. Idempotent; a node that is gone is skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] naming the node and the keys, with the server's message;
    /// [`Error::Invalid`] naming the node and the annotation for a malformed record.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: each node's undo is one patch; calling it again finishes the job.
    pub async fn undo(&self) -> Result<Vec<String>> {
        let nodes = self
            .touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut restored = Vec::new();
        for node in nodes {
            restored
                .extend(undo_on_node(&self.client, &node, &self.run, Some(&self.scenario)).await?);
        }
        Ok(restored)
    }

    /// Undoes every change of the run (all its scenarios) on every node; see [`undo_run`].
    ///
    /// # Errors
    ///
    /// As [`undo_run`].
    ///
    /// # Cancel safety
    ///
    /// As [`undo_run`].
    pub async fn undo_all(&self) -> Result<Vec<String>> {
        undo_run(&self.client, &self.run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: Value, annotations: Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-0", "resourceVersion": "42", "labels": labels, "annotations": annotations}
        }))
        .expect("a valid node")
    }

    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    /// Applies a merge patch (RFC 7386) of metadata labels and annotations to `node`.
    fn apply(node: &Node, patch: &Value) -> Node {
        let mut node = node.clone();
        let meta = &patch["metadata"];
        for (field, map) in [
            ("labels", &mut node.metadata.labels),
            ("annotations", &mut node.metadata.annotations),
        ] {
            if let Some(members) = meta[field].as_object() {
                let map = map.get_or_insert_default();
                for (k, v) in members {
                    match v.as_str() {
                        Some(v) => map.insert(k.clone(), v.to_string()),
                        None => map.remove(k),
                    };
                }
            }
        }
        node.metadata.resource_version = Some("43".into());
        node
    }

    #[test]
    fn records_round_trip() {
        let mut record = ChangeRecord::new("run-1", now());
        record.labels.insert(
            "pool".into(),
            Original {
                scenario: "a-b".into(),
                value: Some("blue".into()),
            },
        );
        record.annotations.insert(
            "note".into(),
            Original {
                scenario: "a-b".into(),
                value: None,
            },
        );
        let text = record.encode();
        assert_eq!(
            text,
            r#"{"run":"run-1","since":"2026-11-25T12:00:00Z","labels":{"pool":{"scenario":"a-b","value":"blue"}},"annotations":{"note":{"scenario":"a-b","value":null}}}"#
        );
        let decoded = ChangeRecord::decode("gpu-0", &record_annotation("run-1"), &text).unwrap();
        assert_eq!(decoded, record);
        // An empty original is not an absent one.
        record.labels.get_mut("pool").unwrap().value = Some(String::new());
        let again = ChangeRecord::decode("gpu-0", &record_annotation("run-1"), &record.encode());
        assert_eq!(again.unwrap().labels["pool"].value.as_deref(), Some(""));
    }

    #[test]
    fn malformed_records_name_the_node_and_the_annotation() {
        let annotation = record_annotation("run-1");
        for text in [
            "not json",
            r#"{"run":"run-1"}"#,
            r#"{"run":"run-1","since":"yesterday"}"#,
            r#"{"run":"run-2","since":"2026-11-25T12:00:00Z"}"#,
            r#"{"run":"run-1","since":"2026-11-25T12:00:00Z","labels":{"k":"v"}}"#,
        ] {
            let e = ChangeRecord::decode("gpu-0", &annotation, text).unwrap_err();
            let message = e.to_string();
            assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
            assert!(message.contains("node/gpu-0"), "{message}");
            assert!(message.contains("hami-e2e.io/changes.run-1"), "{message}");
        }
        let n = node(
            serde_json::json!({}),
            serde_json::json!({annotation.clone(): "{"}),
        );
        assert!(ChangeRecord::of_run(&n, "run-1").is_err());
        assert!(change_patch(&n, "run-1", "s", (Field::Label, "k", Some("v")), now()).is_err());
        assert!(undo_patch(&n, "run-1", None).is_err());
        assert!(ChangeRecord::all(&n).is_err());
        // Another run's malformed record does not concern this one.
        assert!(undo_patch(&n, "run-2", None).unwrap().is_none());
    }

    #[test]
    fn record_annotations_are_valid_keys() {
        for run in ["r", "20261125-154505-b19381", &"x".repeat(200), "A::B"] {
            let key = record_annotation(run);
            let name = key.strip_prefix("hami-e2e.io/").unwrap();
            assert!(name.len() <= 63, "{key}");
            assert!(
                name.chars().last().unwrap().is_ascii_alphanumeric(),
                "{key}"
            );
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')),
                "{key}"
            );
            // The reaper knows runs by their label value: the same annotation.
            assert_eq!(record_annotation(&label_value(run)), key);
        }
    }

    #[test]
    fn a_change_records_the_original_in_the_same_patch() {
        let n = node(
            serde_json::json!({"pool": "blue"}),
            serde_json::json!({"note": "x"}),
        );
        let patch = change_patch(
            &n,
            "run-1",
            "demo::s",
            (Field::Label, "pool", Some("red")),
            now(),
        )
        .unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["metadata"]["labels"]["pool"], "red");
        let record = &patch["metadata"]["annotations"]["hami-e2e.io/changes.run-1"];
        assert_eq!(
            record.as_str().unwrap(),
            r#"{"run":"run-1","since":"2026-11-25T12:00:00Z","labels":{"pool":{"scenario":"demo-s","value":"blue"}}}"#
        );
        // A second change keeps the first original; a new key records its absence.
        let n = apply(&n, &patch);
        let later: Timestamp = "2026-11-25T13:00:00Z".parse().unwrap();
        let patch = change_patch(
            &n,
            "run-1",
            "other",
            (Field::Label, "pool", Some("green")),
            later,
        )
        .unwrap();
        let n = apply(&n, &patch);
        let patch = change_patch(
            &n,
            "run-1",
            "other",
            (Field::Annotation, "new", Some("y")),
            later,
        )
        .unwrap();
        assert_eq!(patch["metadata"]["annotations"]["new"], "y");
        let n = apply(&n, &patch);
        let record = ChangeRecord::of_run(&n, "run-1").unwrap().unwrap();
        assert_eq!(record.since, "2026-11-25T12:00:00Z");
        assert_eq!(record.labels["pool"].value.as_deref(), Some("blue"));
        assert_eq!(record.labels["pool"].scenario, "demo-s");
        assert_eq!(record.annotations["new"].value, None);
        assert_eq!(record.annotations["new"].scenario, "other");
        // Removing a key is a null in the patch.
        let patch = change_patch(
            &n,
            "run-1",
            "other",
            (Field::Annotation, "note", None),
            later,
        )
        .unwrap();
        assert_eq!(patch["metadata"]["annotations"]["note"], Value::Null);
    }

    #[test]
    fn two_runs_keep_separate_records() {
        let n = node(serde_json::json!({"pool": "blue"}), serde_json::json!({}));
        let n = apply(
            &n,
            &change_patch(&n, "run-1", "s", (Field::Label, "pool", Some("red")), now()).unwrap(),
        );
        let n = apply(
            &n,
            &change_patch(
                &n,
                "run-2",
                "s",
                (Field::Label, "pool", Some("green")),
                now(),
            )
            .unwrap(),
        );
        assert_eq!(
            ChangeRecord::of_run(&n, "run-1").unwrap().unwrap().labels["pool"]
                .value
                .as_deref(),
            Some("blue")
        );
        assert_eq!(
            ChangeRecord::of_run(&n, "run-2").unwrap().unwrap().labels["pool"]
                .value
                .as_deref(),
            Some("red")
        );
        let records = ChangeRecord::all(&n).unwrap();
        assert_eq!(records.len(), 2);
        // Undoing run 2 leaves run 1's record alone.
        let undo = undo_patch(&n, "run-2", None).unwrap().unwrap();
        assert_eq!(undo.patch["metadata"]["labels"]["pool"], "red");
        assert!(
            undo.patch["metadata"]["annotations"]
                .get("hami-e2e.io/changes.run-1")
                .is_none()
        );
    }

    #[test]
    fn the_undo_patch_restores_originals_and_drops_the_record() {
        let original = node(
            serde_json::json!({"pool": "blue", "tier": "gold", "keep": "me"}),
            serde_json::json!({"note": "x", "foreign": "f"}),
        );
        let mut n = original.clone();
        for (field, key, value) in [
            (Field::Label, "pool", Some("red")),
            (Field::Label, "new", Some("1")),
            (Field::Label, "tier", None),
            (Field::Annotation, "note", Some("y")),
            (Field::Annotation, "added", Some("z")),
        ] {
            n = apply(
                &n,
                &change_patch(&n, "run-1", "s", (field, key, value), now()).unwrap(),
            );
        }
        let undo = undo_patch(&n, "run-1", None).unwrap().unwrap();
        assert_eq!(
            undo.restored,
            [
                "label new",
                "label pool",
                "label tier",
                "annotation added",
                "annotation note"
            ]
        );
        assert_eq!(
            undo.patch,
            serde_json::json!({"metadata": {
                "resourceVersion": "43",
                "labels": {"pool": "blue", "new": null, "tier": "gold"},
                "annotations": {"note": "x", "added": null, "hami-e2e.io/changes.run-1": null},
            }})
        );
        let back = apply(&n, &undo.patch);
        assert_eq!(back.metadata.labels, original.metadata.labels);
        assert_eq!(back.metadata.annotations, original.metadata.annotations);
        // Nothing left to undo: idempotent.
        assert_eq!(undo_patch(&back, "run-1", None).unwrap(), None);
    }

    #[test]
    fn a_scenarios_undo_keeps_the_other_scenarios_keys() {
        let mut n = node(serde_json::json!({"a": "1"}), serde_json::json!({}));
        n = apply(
            &n,
            &change_patch(&n, "run-1", "first", (Field::Label, "a", Some("2")), now()).unwrap(),
        );
        n = apply(
            &n,
            &change_patch(&n, "run-1", "second", (Field::Label, "b", Some("3")), now()).unwrap(),
        );
        let undo = undo_patch(&n, "run-1", Some("first")).unwrap().unwrap();
        assert_eq!(undo.restored, ["label a"]);
        let n = apply(&n, &undo.patch);
        assert_eq!(n.metadata.labels.as_ref().unwrap()["a"], "1");
        let record = ChangeRecord::of_run(&n, "run-1").unwrap().unwrap();
        assert_eq!(record.labels.keys().collect::<Vec<_>>(), ["b"]);
        // The first scenario has nothing more to undo; the second has its key.
        assert_eq!(undo_patch(&n, "run-1", Some("first")).unwrap(), None);
        let undo = undo_patch(&n, "run-1", Some("second")).unwrap().unwrap();
        assert_eq!(undo.patch["metadata"]["labels"]["b"], Value::Null);
        assert_eq!(
            undo.patch["metadata"]["annotations"]["hami-e2e.io/changes.run-1"],
            Value::Null
        );
    }

    #[test]
    fn an_empty_record_is_removed() {
        let annotation = record_annotation("run-1");
        let n = node(
            serde_json::json!({}),
            serde_json::json!({annotation.clone(): r#"{"run":"run-1","since":"2026-11-25T12:00:00Z"}"#}),
        );
        let undo = undo_patch(&n, "run-1", Some("s")).unwrap().unwrap();
        assert!(undo.restored.is_empty());
        assert_eq!(
            undo.patch["metadata"]["annotations"][&annotation],
            Value::Null
        );
    }
}
