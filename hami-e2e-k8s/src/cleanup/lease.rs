//! Cleanup that survives `kill -9`: every run holds a renewed `Lease`; a run whose lease
//! expired, or whose holder on this machine is gone, is dead, and the reaper removes what
//! it left.
//!
//! A run's objects carry [`RUN_LABEL`] (the [`NamespaceFixture`](crate::NamespaceFixture)
//! and [`TestNamespace::apply`](crate::TestNamespace::apply) put it there). While a run
//! goes on, [`RunLease`](crate::RunLease) keeps the Lease `hami-e2e-run-<run id>` in namespace `default`
//! renewed every third of its duration. The lease names its [`Holder`]: the host name, the
//! pid, the process's start time (against pid reuse) and its pid namespace, in annotations
//! ([`HOLDER_HOST_ANNOTATION`], [`HOLDER_PID_ANNOTATION`], [`HOLDER_START_ANNOTATION`],
//! [`HOLDER_PID_NAMESPACE_ANNOTATION`]) and, for people, in `holderIdentity`
//! (`host <h> pid <p> start <t>`; leases of older versions say `pid <p>` only).
//!
//! [`reap`](crate::reap) (the [`ClusterFixture`](crate::ClusterFixture) calls it at start) treats a run
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
//! [`node_changes`](crate::cleanup::node_changes)), then deletes the lease. Nothing without the dead
//! run's label or record is touched, and namespaces kept on purpose
//! (`hami-e2e.io/kept-until` in the future) stay until they expire.
//!
//! During the run, the [`RunLease`](crate::RunLease) looks again every [`DEFAULT_REAP_EVERY`] (see
//! [`RunLease::reap_every`](crate::RunLease::reap_every)) with [`reap_except`](crate::cleanup::reaper::reap_except) its own run, so that runs of other hosts
//! whose lease expires meanwhile are reaped too; what it reaps is logged at info level, and
//! its errors are logged as warnings, never fatal.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> hami_e2e_k8s::Result<()> {
//! use std::time::Duration;
//! use hami_e2e_k8s::{RunLease, reap};
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

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::cleanup::labels::{MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL, label_value};
use crate::error::{Error, Result};
use crate::toolkit::host::{pid_exists, process_is_alive};
use crate::toolkit::retry::retry_transient;

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

/// How often a [`RunLease`](crate::RunLease) looks again for dead runs unless told otherwise
/// ([`RunLease::reap_every`](crate::RunLease::reap_every)).
pub const DEFAULT_REAP_EVERY: Duration = Duration::from_secs(30);

/// The name of run `run_id`'s lease.
pub fn lease_name(run_id: &str) -> String {
    format!("hami-e2e-run-{}", label_value(run_id))
}

pub(crate) fn api_error(action: &'static str, object: String) -> impl Fn(kube::Error) -> Error {
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
/// use hami_e2e_k8s::cleanup::lease::Holder;
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
            Some(now) => self.start.is_some_and(|then| then != now) || !process_is_alive(pid),
        }
    }
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
pub(crate) fn death(lease: &Lease, now: Timestamp) -> Option<&'static str> {
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
