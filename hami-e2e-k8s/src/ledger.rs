//! Cleanup that survives `kill -9`: every run holds a renewed `Lease`; a run whose lease
//! expired, or whose holder on this machine is gone, is dead, and the reaper removes what
//! it left.
//!
//! A run's objects carry [`RUN_LABEL`] (the [`NamespaceFixture`](crate::NamespaceFixture)
//! and [`TestNamespace::apply`](crate::TestNamespace::apply) put it there). While a run
//! goes on, [`RunLease`] keeps the Lease `hami-e2e-run-<run id>` in namespace `default`
//! renewed every third of its duration. The lease names its [`Holder`]: the host name, the
//! pid, the process's start time (against pid reuse) and its pid namespace, in annotations
//! ([`HOLDER_HOST_ANNOTATION`], [`HOLDER_PID_ANNOTATION`], [`HOLDER_START_ANNOTATION`],
//! [`HOLDER_PID_NAMESPACE_ANNOTATION`]) and, for people, in `holderIdentity`
//! (`host <h> pid <p> start <t>`; leases of older versions say `pid <p>` only).
//!
//! [`reap`] (the [`ClusterFixture`](crate::ClusterFixture) calls it at start) treats a run
//! as dead when its lease expired, or at once when its holder runs on this host (same host
//! name and pid namespace) and that process is gone: no such pid, a zombie, or a live pid
//! with another start time (a reused pid). A run killed with `kill -9` and started again at
//! once is thus cleaned up at the new run's start, not a lease duration later; that matters
//! for objects such as a `MutatingWebhookConfiguration` with `failurePolicy: Fail` pointing
//! at a process of the dead run, which would fail every pod creation until removed. Leases
//! held on other hosts, or without a host (older versions), are judged by expiry only, and
//! the current process's own leases never count as gone. For each dead run, the reaper
//! deletes every object labelled with it, through discovery (namespaces and cluster-scoped
//! objects included), undoes the changes it recorded on nodes (see
//! [`node_changes`](crate::node_changes)), then deletes the lease. Nothing without the dead
//! run's label or record is touched, and namespaces kept on purpose
//! (`hami-e2e.io/kept-until` in the future) stay until they expire.
//!
//! During the run, the [`RunLease`] looks again every [`DEFAULT_REAP_EVERY`] (see
//! [`RunLease::reap_every`]) with [`reap_except`] its own run, so that runs of other hosts
//! whose lease expires meanwhile are reaped too; what it reaps is logged at info level, and
//! its errors are logged as warnings, never fatal.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> hami_e2e_k8s::Result<()> {
//! use std::time::Duration;
//! use hami_e2e_k8s::ledger::{RunLease, reap};
//!
//! let report = reap(&client).await?; // what dead runs left
//! println!("reaped {:?}, restored {:?}", report.deleted, report.restored);
//! let lease = RunLease::acquire(&client, "my-run", Duration::from_secs(30))
//!     .await?
//!     .reap_every(Some(Duration::from_secs(60))); // look again every minute
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

/// Annotation of a run's lease: the host name of the process holding it.
pub const HOLDER_HOST_ANNOTATION: &str = "hami-e2e.io/holder-host";
/// Annotation of a run's lease: the pid of the process holding it.
pub const HOLDER_PID_ANNOTATION: &str = "hami-e2e.io/holder-pid";
/// Annotation of a run's lease: the start time of the process holding it (see
/// [`process_start_time`](hami_e2e_core::admission::process_start_time)).
pub const HOLDER_START_ANNOTATION: &str = "hami-e2e.io/holder-start";
/// Annotation of a run's lease: the pid namespace its pid belongs to (the target of
/// `/proc/self/ns/pid`, `pid:[4026531836]`), so that containers sharing a host name but not
/// their pids do not judge each other's processes.
pub const HOLDER_PID_NAMESPACE_ANNOTATION: &str = "hami-e2e.io/holder-pid-namespace";

/// How often a [`RunLease`] looks again for dead runs unless told otherwise
/// ([`RunLease::reap_every`]).
pub const DEFAULT_REAP_EVERY: Duration = Duration::from_secs(30);

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

/// This machine's host name (`/proc/sys/kernel/hostname`, else `/etc/hostname`).
fn this_host() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_string())
        .find(|host| !host.is_empty())
}

/// The pid namespace this process's pids belong to.
fn this_pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|target| target.to_string_lossy().into_owned())
}

/// Who holds a run's lease: a process on some host. Fields the lease does not say (older
/// versions wrote `pid <p>` only) are `None`.
///
/// ```
/// use hami_e2e_k8s::ledger::Holder;
///
/// let old = Holder::parse("pid 1234");
/// assert_eq!((old.host.as_deref(), old.pid, old.start), (None, Some(1234), None));
/// assert!(!old.is_on_this_host(), "no host: judged by the lease's expiry only");
/// let me = Holder::current();
/// assert_eq!(Holder::parse(&me.identity()).pid, Some(std::process::id()));
/// assert!(!me.is_gone());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The host name of its machine.
    pub host: Option<String>,
    /// Its pid.
    pub pid: Option<u32>,
    /// Its start time, in clock ticks since boot (see
    /// [`process_start_time`](hami_e2e_core::admission::process_start_time)).
    pub start: Option<u64>,
    /// The pid namespace its pid belongs to (see [`HOLDER_PID_NAMESPACE_ANNOTATION`]).
    pub pid_namespace: Option<String>,
}

impl Holder {
    /// The current process.
    pub fn current() -> Holder {
        Holder::process(std::process::id())
    }

    /// Process `pid` of this machine (its start time is `None` if it is gone).
    pub fn process(pid: u32) -> Holder {
        Holder {
            host: this_host(),
            pid: Some(pid),
            start: hami_e2e_core::admission::process_start_time(pid),
            pid_namespace: this_pid_namespace(),
        }
    }

    /// Reads a `holderIdentity`: `host <h> pid <p> start <t>`, any of them missing or in
    /// another order; unknown words are skipped.
    pub fn parse(identity: &str) -> Holder {
        let mut holder = Holder::default();
        let mut words = identity.split_whitespace();
        while let Some(word) = words.next() {
            match word {
                "host" => holder.host = words.next().map(str::to_string),
                "pid" => holder.pid = words.next().and_then(|w| w.parse().ok()),
                "start" => holder.start = words.next().and_then(|w| w.parse().ok()),
                _ => {}
            }
        }
        holder
    }

    /// The holder `lease` names: its `hami-e2e.io/holder-*` annotations, each completed by
    /// its `holderIdentity` where missing.
    pub fn of_lease(lease: &Lease) -> Holder {
        let mut holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .map(Holder::parse)
            .unwrap_or_default();
        let annotations = lease.annotations();
        let get = |key: &str| {
            annotations
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        if let Some(host) = get(HOLDER_HOST_ANNOTATION) {
            holder.host = Some(host.to_string());
        }
        if let Some(pid) = get(HOLDER_PID_ANNOTATION).and_then(|v| v.parse().ok()) {
            holder.pid = Some(pid);
        }
        if let Some(start) = get(HOLDER_START_ANNOTATION).and_then(|v| v.parse().ok()) {
            holder.start = Some(start);
        }
        if let Some(ns) = get(HOLDER_PID_NAMESPACE_ANNOTATION) {
            holder.pid_namespace = Some(ns.to_string());
        }
        holder
    }

    /// The `holderIdentity` naming it: `host <h> pid <p> start <t>`, without what is unknown.
    pub fn identity(&self) -> String {
        let mut words = Vec::new();
        if let Some(host) = &self.host {
            words.push(format!("host {host}"));
        }
        if let Some(pid) = self.pid {
            words.push(format!("pid {pid}"));
        }
        if let Some(start) = self.start {
            words.push(format!("start {start}"));
        }
        words.join(" ")
    }

    /// Its `hami-e2e.io/holder-*` annotations; what is unknown is left out.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        [
            (HOLDER_HOST_ANNOTATION, self.host.clone()),
            (HOLDER_PID_ANNOTATION, self.pid.map(|p| p.to_string())),
            (HOLDER_START_ANNOTATION, self.start.map(|s| s.to_string())),
            (HOLDER_PID_NAMESPACE_ANNOTATION, self.pid_namespace.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect()
    }

    /// Whether it runs on this machine, where its pid means something: the same host name
    /// and, when both are known, the same pid namespace. A holder without a host (older
    /// versions) is not.
    pub fn is_on_this_host(&self) -> bool {
        let Some(host) = &self.host else { return false };
        if this_host().as_ref() != Some(host) {
            return false;
        }
        match &self.pid_namespace {
            Some(theirs) => this_pid_namespace().as_ref() == Some(theirs),
            None => true,
        }
    }

    /// Whether it is known to be gone: it runs [on this host](Holder::is_on_this_host) and
    /// its pid names no process, a zombie, or a process with another start time. Never
    /// true of the current process, nor of a process this one may not inspect, nor where
    /// there is no `/proc`.
    pub fn is_gone(&self) -> bool {
        let Some(pid) = self.pid else { return false };
        if !self.is_on_this_host() || !std::path::Path::new("/proc/self").exists() {
            return false;
        }
        let now = hami_e2e_core::admission::process_start_time(pid);
        if pid == std::process::id() && (self.start.is_none() || self.start == now) {
            return false; // ourselves
        }
        if !pid_exists(pid) {
            return true;
        }
        match now {
            // Exists, but its /proc entry is hidden (`hidepid`): it may well be the holder.
            None => false,
            Some(now) => {
                self.start.is_some_and(|then| then != now) || !crate::local::process_is_alive(pid)
            }
        }
    }
}

/// Whether some process has pid `pid`, even one of another user (kill(2) with signal 0:
/// only `ESRCH` says there is none).
fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true; // not a pid we can ask about: assume it lives
    };
    if pid <= 0 {
        return true;
    }
    #[expect(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
    // SAFETY: kill takes plain integers; signal 0 only checks the pid, sends nothing.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

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
    /// [`Error::Api`] with the server's message.
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
    /// [`Error::Api`] with the server's message.
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

/// Whether `lease` expired at `now` (renewed longer ago than its duration).
pub fn is_expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0.checked_add(duration).is_ok_and(|end| end < now)
}

/// Why the run of `lease` is dead at `now`, if it is.
fn death(lease: &Lease, now: Timestamp) -> Option<&'static str> {
    if is_expired(lease, now) {
        Some("its lease expired")
    } else if Holder::of_lease(lease).is_gone() {
        Some("its holder on this host is gone")
    } else {
        None
    }
}

/// Whether the run of `lease` is dead at `now`: its lease [expired](is_expired), or its
/// [holder](Holder::of_lease) [is gone](Holder::is_gone) (it ran on this host).
pub fn is_dead(lease: &Lease, now: Timestamp) -> bool {
    death(lease, now).is_some()
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

/// Removes what dead runs left (see [`is_dead`]: the lease expired, or the holder on this
/// host is gone): the changes they recorded on nodes are undone (see
/// [`node_changes`](crate::node_changes); nothing else on the nodes is touched), every
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
    let resources = crate::leak::listable_resources(client).await?;
    for (lease, run, why) in dead {
        tracing::info!(run = %run, "reaping what a dead run left: {why}");
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
    // Their devices in the cluster's admission ConfigMap, if they held any.
    match crate::admission::prune(client).await {
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

    fn held(holder: &Holder, identity: Option<&str>) -> Lease {
        let mut lease = lease("2026-11-25T11:59:40.000000Z", 30);
        lease.metadata.annotations = Some(holder.annotations());
        lease.spec.as_mut().unwrap().holder_identity = identity.map(str::to_string);
        lease
    }

    #[test]
    fn holders_are_read_from_annotations_or_the_identity() {
        let holder = Holder {
            host: Some("gpu-box".into()),
            pid: Some(4321),
            start: Some(987_654),
            pid_namespace: Some("pid:[4026531836]".into()),
        };
        assert_eq!(holder.identity(), "host gpu-box pid 4321 start 987654");
        assert_eq!(Holder::of_lease(&held(&holder, None)), holder);
        // The identity alone (no annotations), as people read it.
        let from_identity = Holder::of_lease(&held(&Holder::default(), Some(&holder.identity())));
        assert_eq!(
            from_identity,
            Holder {
                pid_namespace: None,
                ..holder.clone()
            }
        );
        // Annotations win over the identity.
        let mixed = held(&holder, Some("host elsewhere pid 1"));
        assert_eq!(Holder::of_lease(&mixed), holder);
        // Older versions: `pid 1234`, nothing else.
        let old = Holder::of_lease(&held(&Holder::default(), Some("pid 1234")));
        assert_eq!(
            old,
            Holder {
                pid: Some(1234),
                ..Holder::default()
            }
        );
        assert_eq!(Holder::parse("something else entirely"), Holder::default());
        assert_eq!(Holder::parse("pid notanumber").pid, None);
    }

    #[test]
    fn a_holder_of_this_host_is_gone_once_its_process_is() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep runs");
        let holder = Holder::process(child.id());
        assert!(
            holder.start.is_some() && holder.host.is_some(),
            "{holder:?}"
        );
        assert!(holder.is_on_this_host());
        assert!(!holder.is_gone(), "it runs");
        let reused = Holder {
            start: holder.start.map(|s| s + 1),
            ..holder.clone()
        };
        assert!(reused.is_gone(), "another process now has its pid");
        let elsewhere = Holder {
            host: Some(format!("not-{}", holder.host.clone().unwrap())),
            ..reused.clone()
        };
        assert!(!elsewhere.is_on_this_host());
        assert!(
            !elsewhere.is_gone(),
            "another host's pids mean nothing here"
        );
        let other_pids = Holder {
            pid_namespace: Some("pid:[1]".into()),
            ..reused.clone()
        };
        assert!(
            !other_pids.is_gone(),
            "another pid namespace's pids mean nothing here"
        );
        let no_host = Holder {
            host: None,
            ..reused.clone()
        };
        assert!(!no_host.is_gone(), "an older lease: judged by expiry only");

        child.kill().unwrap();
        // A zombie until waited for: gone already (once the signal is delivered).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !holder.is_gone() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(holder.is_gone(), "killed, not yet waited for");
        child.wait().unwrap();
        assert!(holder.is_gone(), "killed");
        let without_start = Holder {
            start: None,
            ..holder.clone()
        };
        assert!(without_start.is_gone(), "no such pid");

        let me = Holder::current();
        assert!(!me.is_gone(), "never the current process");
        assert!(
            !Holder {
                start: None,
                ..me.clone()
            }
            .is_gone()
        );
    }

    #[test]
    fn dead_leases_expired_or_lost_their_holder() {
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let holder = Holder::process(child.id());
        child.wait().unwrap();
        let fresh = held(&holder, Some(&holder.identity()));
        assert!(!is_expired(&fresh, now));
        assert_eq!(death(&fresh, now), Some("its holder on this host is gone"));
        let mine = held(&Holder::current(), None);
        assert!(!is_dead(&mine, now));
        let old = held(&Holder::default(), Some(&format!("pid {}", child.id())));
        assert!(!is_dead(&old, now), "no host: not judged by its pid");
        let expired = lease("2026-11-25T11:00:00.000000Z", 30);
        assert_eq!(death(&expired, now), Some("its lease expired"));
    }

    #[test]
    fn lease_names_are_valid() {
        assert_eq!(
            lease_name("20261125-154505-b19381"),
            "hami-e2e-run-20261125-154505-b19381"
        );
    }
}
