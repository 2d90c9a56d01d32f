//! The sweeper: deletes namespaces that earlier runs left behind (a crashed or killed run
//! cannot delete its own), selected by hami-e2e's labels and their age, never anything else.
//!
//! A namespace is swept when it carries `app.kubernetes.io/managed-by=hami-e2e` and a
//! [`RUN_LABEL`], belongs to another run than the current one, is older
//! than the given age, is not being deleted already, and is not kept (a
//! `hami-e2e.io/kept-until` annotation in the future, set by `--keep-namespaces`). The age
//! keeps a sweep from deleting the namespaces of another run still going on against the same
//! cluster.
//!
//! The sweep also undoes the changes earlier runs recorded on nodes (see
//! [`node_changes`](crate::cleanup::node_changes)): those of runs other than the current one whose
//! lease expired, or whose lease is gone and whose record is older than the given age (a
//! run without a lease may still be going on). Nothing else on the nodes is touched.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> hami_e2e_k8s::Result<()> {
//! use std::time::Duration;
//! use hami_e2e_k8s::{SweepOptions, sweep};
//!
//! let swept = sweep(&client, &SweepOptions::default().older_than(Duration::from_secs(3600))).await?;
//! println!("deleted {swept:?}");
//! # Ok(()) }
//! ```

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, ListParams};

use crate::cleanup::labels::{MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL, is_kept, label_value};
use crate::error::{Error, Result};
use crate::toolkit::retry::retry_transient;

/// What [`sweep`] deletes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SweepOptions {
    /// Only namespaces older than this (default 15 minutes).
    pub older_than: Duration,
    /// Never the namespaces of this run (the current one).
    pub except_run: Option<String>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            older_than: Duration::from_secs(15 * 60),
            except_run: None,
        }
    }
}

impl SweepOptions {
    /// Only namespaces older than `age`.
    #[must_use]
    pub fn older_than(mut self, age: Duration) -> Self {
        self.older_than = age;
        self
    }

    /// Never the namespaces of run `run_id`.
    #[must_use]
    pub fn except_run(mut self, run_id: impl Into<String>) -> Self {
        self.except_run = Some(run_id.into());
        self
    }
}

/// Deletes the namespaces left by earlier runs and undoes their abandoned node changes (see
/// the module docs); returns the names of the namespaces (the nodes restored are logged).
/// Does not wait for the namespaces to be gone.
///
/// # Errors
///
/// [`Error::Api`] when the namespaces cannot be listed or one cannot be deleted, or a node
/// cannot be patched; [`Error::Invalid`] naming the node and the annotation for a malformed
/// record on a node. Nodes the credentials may not list are skipped.
///
/// # Cancel safety
///
/// Cancel safe; some namespaces may have been deleted.
pub async fn sweep(client: &kube::Client, options: &SweepOptions) -> Result<Vec<String>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{RUN_LABEL}");
    let list = retry_transient("list namespaces", || async {
        api.list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| Error::Api {
                action: "list",
                object: format!("namespaces labelled {selector}"),
                source,
            })
    })
    .await?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let except = options.except_run.as_deref().map(label_value);
    let mut swept = Vec::new();
    for ns in list.items {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let run = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(RUN_LABEL))
            .cloned();
        if run.is_some() && run == except {
            continue;
        }
        if ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // Kept on purpose (`--keep-namespaces`), until its expiry.
        if is_kept(&ns.metadata, now) {
            continue;
        }
        let age = ns
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| now.duration_since(t.0))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default();
        if age < options.older_than {
            continue;
        }
        retry_transient("delete a namespace", || async {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(source) => Err(Error::Api {
                    action: "delete",
                    object: format!("namespace/{name}"),
                    source,
                }),
            }
        })
        .await?;
        tracing::info!(namespace = %name, run = run.as_deref().unwrap_or(""), age = ?age, "swept a namespace left by an earlier run");
        swept.push(name);
    }
    let except = options.except_run.as_deref();
    match crate::cleanup::node_changes::undo_abandoned(client, options.older_than, except).await {
        Ok(restored) => {
            for r in restored {
                tracing::info!(restored = %r, "undid an earlier run's node changes");
            }
        }
        Err(Error::Api {
            action: "list",
            object,
            source: kube::Error::Api(s),
        }) if s.code == 403 && object == "nodes" => {
            tracing::warn!(
                "may not list nodes: earlier runs' node changes, if any, are not undone"
            );
        }
        Err(e) => return Err(e),
    }
    Ok(swept)
}
