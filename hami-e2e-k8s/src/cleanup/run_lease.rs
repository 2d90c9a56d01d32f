//! The run's lease ([`RunLease`]): held, and renewed in the background, while a run goes
//! on; its holder is this process (see [`lease`](crate::cleanup::lease)). While it lives it
//! also reaps dead runs now and then (see [`reaper`](crate::cleanup::reaper)).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};

use crate::cleanup::labels::{MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL, label_value};
use crate::cleanup::lease::{
    DEFAULT_REAP_EVERY, HOLDER_HOST_ANNOTATION, HOLDER_PID_ANNOTATION,
    HOLDER_PID_NAMESPACE_ANNOTATION, HOLDER_START_ANNOTATION, Holder, LEASE_NAMESPACE, api_error,
    lease_name,
};
use crate::cleanup::reaper::reap_except;
use crate::error::Result;
use crate::toolkit::retry::retry_transient;

/// A run's lease, renewed in the background until [`release`](RunLease::release)d or
/// dropped (then it expires by itself). While it lives, it also looks for dead runs every
/// [`DEFAULT_REAP_EVERY`] (see [`reap_every`](RunLease::reap_every)).
#[must_use = "the lease is renewed only while this value lives"]
pub struct RunLease {
    client: kube::Client,
    name: String,
    run: String,
    runtime: tokio::runtime::Handle,
    renew: tokio::task::JoinHandle<()>,
    reaper: Option<(Duration, tokio::task::JoinHandle<()>)>,
}

impl std::fmt::Debug for RunLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLease")
            .field("name", &self.name)
            .field("reap_every", &self.reaper.as_ref().map(|(p, _)| p))
            .finish_non_exhaustive()
    }
}

impl RunLease {
    /// Creates (or takes over) the lease of `run_id`, valid for `duration`, naming the
    /// current process as its [`Holder`], and renews it every third of that. Every
    /// [`DEFAULT_REAP_EVERY`], starting one period from now, it reaps what dead runs other
    /// than `run_id` left ([`reap_except`]); see [`reap_every`](RunLease::reap_every).
    ///
    /// # Errors
    ///
    /// [`Error::Api`](crate::Error::Api) with the server's message.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
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
        let holder = Holder::current();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (RUN_LABEL.to_string(), label_value(run_id)),
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                ])),
                annotations: Some(holder.annotations()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.identity()),
                lease_duration_seconds: Some(seconds),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        };
        retry_transient("create the run's lease", || async {
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    take_over(&api, &name, &holder, seconds).await
                }
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
        let runtime = tokio::runtime::Handle::current();
        let renew = runtime.spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(e) = renew(&renew_api, &renew_name).await {
                    tracing::warn!(lease = %renew_name, error = %e, "cannot renew the run's lease");
                }
            }
        });
        let lease = RunLease {
            client: client.clone(),
            name,
            run: run_id.to_string(),
            runtime,
            renew,
            reaper: None,
        };
        Ok(lease.reap_every(Some(DEFAULT_REAP_EVERY)))
    }

    /// Looks for dead runs every `period` from now on (the first time one period from now),
    /// or never with `None` (or a zero period): each time, [`reap_except`] the lease's own
    /// run, logging at info level what was reaped, and as a warning why it could not be.
    pub fn reap_every(mut self, period: Option<Duration>) -> RunLease {
        if let Some((_, task)) = self.reaper.take() {
            task.abort();
        }
        if let Some(period) = period.filter(|p| !p.is_zero()) {
            let client = self.client.clone();
            let run = self.run.clone();
            let task = self.runtime.spawn(reap_periodically(client, run, period));
            self.reaper = Some((period, task));
        }
        self
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The run it is the lease of.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// Stops renewing and reaping, and deletes the lease: the run ended and cleaned up
    /// after itself.
    ///
    /// # Errors
    ///
    /// [`Error::Api`](crate::Error::Api) with the server's message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn release(self) -> Result<()> {
        self.stop_tasks();
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

    fn stop_tasks(&self) {
        self.renew.abort();
        if let Some((_, task)) = &self.reaper {
            task.abort();
        }
    }
}

impl Drop for RunLease {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

/// The background re-check of a [`RunLease`]: never reaps `run` itself.
async fn reap_periodically(client: kube::Client, run: String, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is now: the run reaped at its start
    loop {
        ticker.tick().await;
        match reap_except(&client, &run).await {
            Ok(report) if !report.dead_runs.is_empty() => tracing::info!(
                runs = ?report.dead_runs,
                deleted = ?report.deleted,
                restored = ?report.restored,
                kept = ?report.kept,
                "reaped what dead runs left"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                run = %run,
                error = %e,
                "cannot reap what dead runs left; trying again in {period:?}"
            ),
        }
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

/// Makes `holder` the holder of the existing lease `name`, renewed now for `seconds`.
async fn take_over(api: &Api<Lease>, name: &str, holder: &Holder, seconds: i32) -> Result<()> {
    let annotations = holder.annotations();
    let annotations: serde_json::Map<String, serde_json::Value> = [
        HOLDER_HOST_ANNOTATION,
        HOLDER_PID_ANNOTATION,
        HOLDER_START_ANNOTATION,
        HOLDER_PID_NAMESPACE_ANNOTATION,
    ]
    .into_iter()
    // null removes what a former holder said and this one does not.
    .map(|k| (k.to_string(), annotations.get(k).cloned().into()))
    .collect();
    let patch = serde_json::json!({
        "metadata": {"annotations": annotations},
        "spec": {
            "holderIdentity": holder.identity(),
            "leaseDurationSeconds": seconds,
            "renewTime": MicroTime(Timestamp::now()),
        },
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(api_error(
            "take over",
            format!("lease/{LEASE_NAMESPACE}/{name}"),
        ))
}
