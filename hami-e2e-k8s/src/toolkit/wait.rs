//! Waits driven by watches, never by sleeps or fixed polling.
//!
//! Every wait reads a watch on the one object it is about (`metadata.name=<name>`), checks
//! each new state against a [`Condition`], and returns as soon as the condition is met, a
//! few milliseconds after the API server knows. A wait has a timeout (kube's
//! `await_condition` has none); when it expires, the error carries the last state seen and
//! the object's recent events, e.g. `timed out after 5s waiting for pod `p` in `ns` to be
//! running; last observed: phase Pending, PodScheduled=False (Unschedulable: 0/2 nodes are
//! available: ...); events: Warning FailedScheduling: 0/2 nodes are available: ...`.
//!
//! A watch that breaks (the API server restarts, a `410 Gone`, a reset connection) is
//! re-established with backoff and the wait goes on; an error that retrying cannot cure
//! (403 Forbidden, 404 of the resource type) ends it at once. A condition can also say that
//! what is awaited can no longer happen (a pod awaited to run has failed): the wait then
//! fails at once, with the reason, instead of running into its timeout.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> hami_e2e_k8s::Result<()> {
//! use std::time::Duration;
//! use hami_e2e_k8s::wait;
//! use k8s_openapi::api::core::v1::Pod;
//!
//! let pods: kube::Api<Pod> = kube::Api::namespaced(client, "demo");
//! let pod = wait::pod_running(&pods, "cuda", Duration::from_secs(60)).await?;
//! // Any condition: a closure over the object (None while it does not exist).
//! wait::until(&pods, "cuda", "to carry HAMi's node annotation", Duration::from_secs(30), |p: Option<&Pod>| {
//!     p.and_then(|p| p.metadata.annotations.as_ref()).is_some_and(|a| a.contains_key("hami.io/vgpu-node"))
//! })
//! .await?;
//! # Ok(()) }
//! ```

use std::any::Any;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result, is_transient_kube};

/// How often a long wait logs "still waiting for ...".
const STILL_WAITING_EVERY: Duration = Duration::from_secs(30);

/// What a [`Condition`] says of one state of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Verdict {
    /// The condition holds: the wait returns.
    Met,
    /// Not yet: keep watching.
    Pending,
    /// It can no longer hold (the pod failed while awaited to run): the wait fails at once
    /// with this reason.
    Never(String),
}

/// A condition on an object that a wait awaits. `None` means the object does not exist.
///
/// Any `FnMut(Option<&K>) -> bool` is a condition (`true` is [`Verdict::Met`]); the
/// functions of this module build the common ones.
///
/// ```
/// use hami_e2e_k8s::wait::{Condition, Verdict, is_deleted};
/// use k8s_openapi::api::core::v1::Pod;
///
/// let mut gone = is_deleted::<Pod>(None);
/// assert_eq!(gone.check(None), Verdict::Met);
/// let mut named_x = |p: Option<&Pod>| p.is_some_and(|p| p.metadata.name.as_deref() == Some("x"));
/// assert_eq!(named_x.check(None), Verdict::Pending);
/// ```
pub trait Condition<K>: Send {
    /// Judges one state of the object.
    fn check(&mut self, object: Option<&K>) -> Verdict;
}

impl<K, F> Condition<K> for F
where
    F: FnMut(Option<&K>) -> bool + Send,
{
    fn check(&mut self, object: Option<&K>) -> Verdict {
        if self(object) {
            Verdict::Met
        } else {
            Verdict::Pending
        }
    }
}

/// A condition from a function returning a [`Verdict`].
#[must_use]
pub fn verdict<K, F>(f: F) -> impl Condition<K>
where
    F: FnMut(Option<&K>) -> Verdict + Send,
{
    struct V<F>(F);
    impl<K, F: FnMut(Option<&K>) -> Verdict + Send> Condition<K> for V<F> {
        fn check(&mut self, object: Option<&K>) -> Verdict {
            (self.0)(object)
        }
    }
    V(f)
}

/// Waits until `condition` holds for the object `name` of `api`, for at most `timeout`,
/// and returns the object (or `None` when the condition was met by its absence).
///
/// `what` completes the sentence "waiting for `<kind> name in ns` ...", e.g. `"to be
/// running"`.
///
/// # Errors
///
/// [`Error::WaitTimeout`] with the last state and the object's recent events;
/// [`Error::WaitFailed`] when the condition says it can no longer hold, or the watch fails
/// with an error retrying cannot cure.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future stops the watch; nothing is left behind.
pub async fn until_verdict<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    mut condition: impl Condition<K>,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
{
    let subject = subject::<K>(api, name, what);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = std::pin::pin!(watcher::watch_object(api.clone(), name).default_backoff());
    let mut last: Option<Option<K>> = None;
    let mut last_error: Option<String> = None;
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + STILL_WAITING_EVERY,
        STILL_WAITING_EVERY,
    );
    loop {
        tokio::select! {
                    biased;
                    item = stream.next() => match item {
                        Some(Ok(object)) => {
                            last_error = None;
                            match condition.check(object.as_ref()) {
                                Verdict::Met => {
                                    tracing::debug!(what = %subject, elapsed = ?started.elapsed(), "condition met");
                                    return Ok(object);
                                }
                                Verdict::Pending => last = Some(object),
                                Verdict::Never(reason) => {
                                    return Err(Error::WaitFailed { what: subject, reason });
                                }
                            }
                        }
                        Some(Err(e)) => {
                            if !is_transient_watch(&e) {
                                return Err(Error::WaitFailed {
                                    what: subject,
                                    reason: format!("the watch failed: {e}"),
                                });
                            }
                            tracing::debug!(what = %subject, error = %e, "watch interrupted; resuming");
                            last_error = Some(e.to_string());
                        }
                        None => {
                            return Err(Error::WaitFailed {
                                what: subject,
                                reason: "the watch ended".into(),
                            });
                        }
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        let mut observed = match &last {
                            Some(Some(object)) => describe(object),
                            Some(None) => "does not exist".to_string(),
                            None => "nothing (no answer from the API server)".to_string(),
                        };
                        if let Some(e) = last_error {
                            observed.push_str(&format!("; last watch error: {e}"));
                        }
        let events = tokio::time::timeout(
                            // The API server may be what is unwell: do not wait on it for long.
                            Duration::from_secs(5),
                            recent_events(
                                &api.clone().into_client(),
                                api.namespace().unwrap_or("default"),
                                K::kind(&()).as_ref(),
                                name,
                                5,
                            ),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                        return Err(Error::WaitTimeout {
                            what: subject,
                            waited: timeout,
                            last: observed,
                            events: if events.is_empty() { String::new() } else { format!("; events: {}", events.join(" | ")) },
                        });
                    }
                    _ = ticker.tick() => {
                        let observed = match &last {
                            Some(Some(object)) => describe(object),
                            Some(None) => "does not exist".to_string(),
                            None => "no answer yet".to_string(),
                        };
                        tracing::info!(
                            "still waiting for {subject} ({}; {observed})",
                            hami_e2e_core::format_duration(started.elapsed())
                        );
                    }
                }
    }
}

/// [`until_verdict`] that returns the object, which must exist when the condition holds.
///
/// # Errors
///
/// As [`until_verdict`]; also [`Error::WaitFailed`] if the condition was met by the
/// object's absence.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn until<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    condition: impl Condition<K>,
) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
{
    until_verdict(api, name, what, timeout, condition)
        .await?
        .ok_or_else(|| Error::WaitFailed {
            what: subject::<K>(api, name, what),
            reason: "the object does not exist".into(),
        })
}

/// "pod `p` in `ns` to be running".
fn subject<K: Resource<DynamicType = ()>>(api: &Api<K>, name: &str, what: &str) -> String {
    let kind = K::kind(&()).to_lowercase();
    match api.namespace() {
        Some(ns) => format!("{kind} `{name}` in `{ns}` {what}"),
        None => format!("{kind} `{name}` {what}"),
    }
}

/// Whether a watch error may go away by itself (the API server restarting, a 410 Gone).
fn is_transient_watch(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => is_transient_kube(e),
        watcher::Error::WatchError(status) => {
            status.code == 410 || status.code >= 500 || status.code == 429
        }
        watcher::Error::NoResourceVersion => false,
    }
}

// ---------------------------------------------------------------------------------------
// Conditions

/// The object is gone; with `uid`, also when a new object of the same name replaced it.
#[must_use]
pub fn is_deleted<K: Resource>(uid: Option<String>) -> impl Condition<K> {
    move |object: Option<&K>| match object {
        None => true,
        Some(o) => uid
            .as_ref()
            .is_some_and(|uid| o.meta().uid.as_ref() != Some(uid)),
    }
}

/// The pod's phase is `Running`; never, once it has ended.
#[must_use]
pub fn is_pod_running() -> impl Condition<Pod> {
    verdict(|pod: Option<&Pod>| match phase(pod) {
        Some("Running") => Verdict::Met,
        Some(p @ ("Succeeded" | "Failed")) => Verdict::Never(format!(
            "the pod ended in phase {p}{}",
            pod.map(pod_reason).unwrap_or_default()
        )),
        _ => Verdict::Pending,
    })
}

/// The pod's phase is `Succeeded`; never, once it failed.
#[must_use]
pub fn is_pod_succeeded() -> impl Condition<Pod> {
    verdict(|pod: Option<&Pod>| match phase(pod) {
        Some("Succeeded") => Verdict::Met,
        Some("Failed") => Verdict::Never(format!(
            "the pod failed{}",
            pod.map(pod_reason).unwrap_or_default()
        )),
        _ => Verdict::Pending,
    })
}

/// The pod's phase is `Failed`; never, once it succeeded.
#[must_use]
pub fn is_pod_failed() -> impl Condition<Pod> {
    verdict(|pod: Option<&Pod>| match phase(pod) {
        Some("Failed") => Verdict::Met,
        Some("Succeeded") => Verdict::Never("the pod succeeded".into()),
        _ => Verdict::Pending,
    })
}

/// The pod is bound to a node (`spec.nodeName` set, or `PodScheduled=True`).
#[must_use]
pub fn is_pod_scheduled() -> impl Condition<Pod> {
    |pod: Option<&Pod>| {
        pod.is_some_and(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                || pod_condition(p, "PodScheduled").is_some_and(|c| c.status == "True")
        })
    }
}

/// The scheduler found no node for the pod: `PodScheduled=False` with reason
/// `Unschedulable` (or `SchedulerError`, what a failing extender gives).
#[must_use]
pub fn is_pod_unschedulable() -> impl Condition<Pod> {
    verdict(|pod: Option<&Pod>| {
        let Some(p) = pod else {
            return Verdict::Pending;
        };
        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            return Verdict::Never(format!(
                "the pod was scheduled to `{}`",
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default()
            ));
        }
        match pod_condition(p, "PodScheduled") {
            Some(c)
                if c.status == "False"
                    && matches!(
                        c.reason.as_deref(),
                        Some("Unschedulable" | "SchedulerError")
                    ) =>
            {
                Verdict::Met
            }
            _ => Verdict::Pending,
        }
    })
}

/// Whether the node's `Ready` condition is `True`.
pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node exists and is `Ready` (KWOK marks fake nodes so within a second or two).
#[must_use]
pub fn is_node_ready() -> impl Condition<Node> {
    |n: Option<&Node>| n.is_some_and(node_is_ready)
}

/// The Deployment has rolled out: observed its generation, every replica updated and
/// available, and `Available=True`.
#[must_use]
pub fn is_deployment_available() -> impl Condition<Deployment> {
    |d: Option<&Deployment>| {
        d.is_some_and(|d| {
            let want = d.spec.replicas.unwrap_or(1);
            let Some(s) = &d.status else { return false };
            let observed = s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
            let available = s.conditions.as_ref().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
                })
            });
            observed
                && available
                && s.updated_replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want
                && s.replicas.unwrap_or(0) == want
        })
    }
}

/// The DaemonSet has rolled out: observed its generation, every scheduled pod updated and
/// available.
#[must_use]
pub fn is_daemonset_rolled_out() -> impl Condition<DaemonSet> {
    |d: Option<&DaemonSet>| {
        d.is_some_and(|d| {
            let Some(s) = &d.status else { return false };
            s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
                && s.updated_number_scheduled.unwrap_or(0) == s.desired_number_scheduled
                && s.number_available.unwrap_or(0) == s.desired_number_scheduled
        })
    }
}

fn phase(pod: Option<&Pod>) -> Option<&str> {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.as_deref())
}

fn pod_condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
}

/// ` (reason: message)` of an ended pod, from its status or its first terminated container.
fn pod_reason(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let mut reason = status.and_then(|s| s.reason.clone());
    let mut message = status.and_then(|s| s.message.clone());
    if reason.is_none() {
        let terminated = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .find_map(|c| c.state.as_ref().and_then(|s| s.terminated.as_ref()));
        if let Some(t) = terminated {
            reason = t
                .reason
                .clone()
                .or(Some(format!("exit code {}", t.exit_code)));
            message = t.message.clone();
        }
    }
    match (reason, message) {
        (Some(r), Some(m)) => format!(" ({r}: {m})"),
        (Some(r), None) => format!(" ({r})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Ready-made waits

/// Waits until the pod runs.
///
/// # Errors
///
/// [`Error::WaitTimeout`] (with the last phase, conditions and events), or
/// [`Error::WaitFailed`] if the pod ends first.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn pod_running(api: &Api<Pod>, name: &str, timeout: Duration) -> Result<Pod> {
    until(api, name, "to be running", timeout, is_pod_running()).await
}

/// Waits until the pod succeeds.
///
/// # Errors
///
/// As [`pod_running`]; [`Error::WaitFailed`] with the reason if the pod fails.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn pod_succeeded(api: &Api<Pod>, name: &str, timeout: Duration) -> Result<Pod> {
    until(api, name, "to succeed", timeout, is_pod_succeeded()).await
}

/// A pod that failed, and why.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PodFailure {
    /// The pod as last seen.
    pub pod: Pod,
    /// `status.reason`, else the first terminated container's reason or exit code.
    pub reason: Option<String>,
    /// `status.message`, else the container's message.
    pub message: Option<String>,
}

/// Waits until the pod fails, and returns why.
///
/// # Errors
///
/// As [`pod_running`]; [`Error::WaitFailed`] if the pod succeeds.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn pod_failed(api: &Api<Pod>, name: &str, timeout: Duration) -> Result<PodFailure> {
    let pod = until(api, name, "to fail", timeout, is_pod_failed()).await?;
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref().and_then(|s| s.terminated.clone()));
    let reason = status.and_then(|s| s.reason.clone()).or_else(|| {
        terminated.as_ref().map(|t| {
            t.reason
                .clone()
                .unwrap_or(format!("exit code {}", t.exit_code))
        })
    });
    let message = status
        .and_then(|s| s.message.clone())
        .or_else(|| terminated.and_then(|t| t.message));
    Ok(PodFailure {
        pod,
        reason,
        message,
    })
}

/// Waits until the pod is bound to a node, and returns the pod.
///
/// # Errors
///
/// As [`pod_running`].
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn pod_scheduled(api: &Api<Pod>, name: &str, timeout: Duration) -> Result<Pod> {
    until(api, name, "to be scheduled", timeout, is_pod_scheduled()).await
}

/// An unschedulable pod and what the scheduler said.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Unschedulable {
    /// The pod as last seen.
    pub pod: Pod,
    /// The `PodScheduled` condition's message (`0/2 nodes are available: ...`).
    pub message: String,
    /// The scheduler's `FailedScheduling` event, when it arrived within a few seconds of
    /// the condition (events are recorded asynchronously).
    pub event: Option<String>,
}

/// Waits until the scheduler declares the pod unschedulable, then for its
/// `FailedScheduling` event (at most 5 s more, watch-driven).
///
/// # Errors
///
/// As [`pod_running`]; [`Error::WaitFailed`] if the pod gets scheduled.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn pod_unschedulable(
    api: &Api<Pod>,
    name: &str,
    timeout: Duration,
) -> Result<Unschedulable> {
    let pod = until(
        api,
        name,
        "to be unschedulable",
        timeout,
        is_pod_unschedulable(),
    )
    .await?;
    let message = pod_condition(&pod, "PodScheduled")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    let namespace = pod.namespace().unwrap_or_default();
    let event = event(
        &api.clone().into_client(),
        &namespace,
        "Pod",
        name,
        "FailedScheduling",
        Duration::from_secs(5),
    )
    .await
    .ok()
    .map(|e| e.message.unwrap_or_default());
    Ok(Unschedulable {
        pod,
        message,
        event,
    })
}

/// Waits until the Deployment is available with all its replicas updated.
///
/// # Errors
///
/// As [`pod_running`].
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn deployment_available(
    api: &Api<Deployment>,
    name: &str,
    timeout: Duration,
) -> Result<Deployment> {
    until(
        api,
        name,
        "to be available",
        timeout,
        is_deployment_available(),
    )
    .await
}

/// Waits until the DaemonSet has rolled out on every node it targets.
///
/// # Errors
///
/// As [`pod_running`].
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn daemonset_rolled_out(
    api: &Api<DaemonSet>,
    name: &str,
    timeout: Duration,
) -> Result<DaemonSet> {
    until(api, name, "to roll out", timeout, is_daemonset_rolled_out()).await
}

/// Waits until the object is gone (or replaced by a new object of the same name). Returns
/// at once if it does not exist.
///
/// # Errors
///
/// [`Error::WaitTimeout`] with the last state (its deletion timestamp and finalizers);
/// [`Error::Api`] when the object cannot be read.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn deleted<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
{
    let uid = match api.get_opt(name).await {
        Ok(Some(o)) => o.meta().uid.clone(),
        Ok(None) => return Ok(()),
        Err(e) if is_transient_kube(&e) => None,
        Err(source) => {
            return Err(Error::Api {
                action: "get",
                object: object_name::<K>(api.namespace(), name),
                source,
            });
        }
    };
    until_verdict(api, name, "to be deleted", timeout, is_deleted(uid))
        .await
        .map(|_| ())
}

/// Waits for an event with `reason` about the object `kind`/`name` in `namespace`, and
/// returns the first one seen (one recorded already, or the next). Watch-driven: returns as
/// soon as it is recorded.
///
/// # Errors
///
/// [`Error::WaitTimeout`] listing the events the object has.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn event(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Result<Event> {
    event_with_message(client, namespace, kind, name, reason, "", timeout).await
}

/// Like [`event`], for an event whose message also contains `message` (HAMi records
/// several `FilteringFailed` events about one pod, one per reason): the first such event
/// seen, recorded already or the next.
///
/// ```no_run
/// # async fn f(client: kube::Client) -> hami_e2e_k8s::Result<()> {
/// use std::time::Duration;
///
/// let e = hami_e2e_k8s::wait::event_with_message(
///     &client, "ns", "Pod", "too-big", "FilteringFailed", "no available node", Duration::from_secs(30),
/// ).await?;
/// println!("{}", e.message.unwrap_or_default());
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::WaitTimeout`] listing the events the object has.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn event_with_message(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
    message: &str,
    timeout: Duration,
) -> Result<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let fields = format!("involvedObject.name={name},involvedObject.kind={kind},reason={reason}");
    let what = if message.is_empty() {
        format!(
            "event `{reason}` about {} `{name}` in `{namespace}`",
            kind.to_lowercase()
        )
    } else {
        format!(
            "event `{reason}` containing `{message}` about {} `{name}` in `{namespace}`",
            kind.to_lowercase()
        )
    };
    let stream = watcher::watcher(api, watcher::Config::default().fields(&fields))
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    let found = tokio::time::timeout(timeout, async {
        loop {
            match stream.next().await {
                Some(Ok(e)) if e.message.as_deref().unwrap_or_default().contains(message) => {
                    return Ok(e);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if !is_transient_watch(&e) {
                        return Err(Error::WaitFailed {
                            what: what.clone(),
                            reason: format!("the watch failed: {e}"),
                        });
                    }
                }
                None => {
                    return Err(Error::WaitFailed {
                        what: what.clone(),
                        reason: "the watch ended".into(),
                    });
                }
            }
        }
    })
    .await;
    match found {
        Ok(result) => result,
        Err(_) => {
            let events = recent_events(client, namespace, kind, name, 8)
                .await
                .unwrap_or_default();
            Err(Error::WaitTimeout {
                what,
                waited: timeout,
                last: if events.is_empty() {
                    "no events about it".into()
                } else {
                    "other events only".into()
                },
                events: if events.is_empty() {
                    String::new()
                } else {
                    format!("; events: {}", events.join(" | "))
                },
            })
        }
    }
}

/// The newest `limit` events about `kind`/`name` in `namespace`, oldest first, as lines
/// `Warning FailedScheduling (x3): message`.
///
/// # Errors
///
/// [`Error::Api`] if the events cannot be listed.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn recent_events(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
    limit: usize,
) -> Result<Vec<String>> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let fields = format!("involvedObject.name={name},involvedObject.kind={kind}");
    let mut events = api
        .list(&ListParams::default().fields(&fields))
        .await
        .map_err(|source| Error::Api {
            action: "list events of",
            object: format!("{}/{namespace}/{name}", kind.to_lowercase()),
            source,
        })?
        .items;
    events.sort_by_key(event_time);
    let skip = events.len().saturating_sub(limit);
    Ok(events.iter().skip(skip).map(format_event).collect())
}

/// When the event last happened, for ordering.
pub(crate) fn event_time(e: &Event) -> Option<k8s_openapi::jiff::Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// `Warning FailedScheduling (x3): message`.
pub(crate) fn format_event(e: &Event) -> String {
    let count = match e.count {
        Some(n) if n > 1 => format!(" (x{n})"),
        _ => String::new(),
    };
    format!(
        "{} {}{count}: {}",
        e.type_.as_deref().unwrap_or("Normal"),
        e.reason.as_deref().unwrap_or("-"),
        e.message.as_deref().unwrap_or("").trim()
    )
}

/// `kind/namespace/name`, as errors name objects.
pub(crate) fn object_name<K: Resource<DynamicType = ()>>(
    namespace: Option<&str>,
    name: &str,
) -> String {
    let kind = K::kind(&()).to_lowercase();
    match namespace {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

// ---------------------------------------------------------------------------------------
// Describing the last state

/// A one-line summary of an object's state for messages: phase, conditions and containers
/// for pods; replica counts for Deployments and DaemonSets; otherwise its `status` as JSON
/// (cut at 500 characters) and its deletion state.
pub fn describe<K: Serialize + Any>(object: &K) -> String {
    let any: &dyn Any = object;
    if let Some(pod) = any.downcast_ref::<Pod>() {
        return describe_pod(pod);
    }
    if let Some(d) = any.downcast_ref::<Deployment>() {
        let s = d.status.clone().unwrap_or_default();
        return format!(
            "replicas {} wanted, {} updated, {} ready, {} available; {}",
            d.spec.replicas.unwrap_or(1),
            s.updated_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            conditions(s.conditions.iter().flatten().map(|c| {
                (
                    c.type_.clone().unwrap_or_default(),
                    c.status.clone().unwrap_or_default(),
                    c.reason.clone(),
                    c.message.clone(),
                )
            }))
        );
    }
    if let Some(d) = any.downcast_ref::<DaemonSet>() {
        let s = d.status.clone().unwrap_or_default();
        return format!(
            "{} desired, {} updated, {} available, {} misscheduled",
            s.desired_number_scheduled,
            s.updated_number_scheduled.unwrap_or(0),
            s.number_available.unwrap_or(0),
            s.number_misscheduled
        );
    }
    let value = serde_json::to_value(object).unwrap_or_default();
    let mut text = String::new();
    if let Some(ts) = value.pointer("/metadata/deletionTimestamp") {
        text.push_str(&format!("deleting since {ts}"));
        if let Some(f) = value.pointer("/metadata/finalizers") {
            text.push_str(&format!(", finalizers {f}"));
        }
        text.push_str("; ");
    }
    match value.get("status") {
        Some(status) => {
            let s = status.to_string();
            text.push_str("status ");
            text.push_str(&cut(&s, 500));
        }
        None => text.push_str("exists"),
    }
    text
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn conditions(
    cs: impl Iterator<Item = (String, String, Option<String>, Option<String>)>,
) -> String {
    let parts: Vec<String> = cs
        .map(|(t, s, r, m)| match (r, m) {
            (Some(r), Some(m)) => format!("{t}={s} ({r}: {})", m.trim()),
            (Some(r), None) => format!("{t}={s} ({r})"),
            _ => format!("{t}={s}"),
        })
        .collect();
    if parts.is_empty() {
        "no conditions".into()
    } else {
        parts.join(", ")
    }
}

/// `phase Pending on node-1, PodScheduled=False (Unschedulable: ...); containers: cuda waiting (ContainerCreating)`.
pub fn describe_pod(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let mut text = format!("phase {}", status.phase.as_deref().unwrap_or("unknown"));
    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) {
        text.push_str(&format!(" on `{node}`"));
    }
    if let Some(r) = &status.reason {
        text.push_str(&format!(" ({r})"));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        text.push_str(", deleting");
    }
    text.push_str(", ");
    text.push_str(&conditions(
        status
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.status != "True" || c.type_ == "PodScheduled")
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                )
            }),
    ));
    let containers: Vec<String> = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| {
            let state = c.state.clone().unwrap_or_default();
            let s = if let Some(w) = state.waiting {
                format!("waiting ({})", w.reason.unwrap_or_default())
            } else if let Some(t) = state.terminated {
                format!(
                    "terminated ({}, exit code {})",
                    t.reason.unwrap_or_default(),
                    t.exit_code
                )
            } else if state.running.is_some() {
                "running".to_string()
            } else {
                "unknown".to_string()
            };
            format!("{} {s}, restarts {}", c.name, c.restart_count)
        })
        .collect();
    if !containers.is_empty() {
        text.push_str(&format!("; containers: {}", containers.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a valid pod")
    }

    #[test]
    fn running_is_met_pending_or_never() {
        let mut c = is_pod_running();
        assert_eq!(c.check(None), Verdict::Pending);
        let pending =
            pod(serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}));
        assert_eq!(c.check(Some(&pending)), Verdict::Pending);
        let running =
            pod(serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Running"}}));
        assert_eq!(c.check(Some(&running)), Verdict::Met);
        let failed = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
            }]}
        }));
        assert_eq!(
            c.check(Some(&failed)),
            Verdict::Never("the pod ended in phase Failed (OOMKilled)".into())
        );
    }

    #[test]
    fn unschedulable_reads_the_condition() {
        let mut c = is_pod_unschedulable();
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
            }]}
        }));
        assert_eq!(c.check(Some(&p)), Verdict::Met);
        assert_eq!(
            describe(&p),
            "phase Pending, PodScheduled=False (Unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.)"
        );
        let bound = pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": []}}),
        );
        assert!(matches!(c.check(Some(&bound)), Verdict::Never(_)));
        assert_eq!(is_pod_scheduled().check(Some(&bound)), Verdict::Met);
    }

    #[test]
    fn deployment_availability_needs_every_replica() {
        let mut c = is_deployment_available();
        let d = |available: i32| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "d", "generation": 2},
                "spec": {"replicas": 3, "selector": {}, "template": {}},
                "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                           "availableReplicas": available,
                           "conditions": [{"type": "Available", "status": "True"}]}
            }))
            .expect("a valid deployment")
        };
        assert_eq!(c.check(Some(&d(2))), Verdict::Pending);
        assert_eq!(c.check(Some(&d(3))), Verdict::Met);
        assert_eq!(
            describe(&d(2)),
            "replicas 3 wanted, 3 updated, 0 ready, 2 available; Available=True"
        );
    }

    #[test]
    fn deleted_tells_a_successor_apart() {
        let p = |uid: &str| pod(serde_json::json!({"metadata": {"name": "p", "uid": uid}}));
        let mut c = is_deleted::<Pod>(Some("a".into()));
        assert_eq!(c.check(Some(&p("a"))), Verdict::Pending);
        assert_eq!(c.check(Some(&p("b"))), Verdict::Met);
        assert_eq!(c.check(None), Verdict::Met);
    }

    #[test]
    fn other_objects_are_described_by_their_status() {
        let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["f"]},
            "status": {"phase": "Terminating"}
        }))
        .expect("a valid namespace");
        assert_eq!(
            describe(&ns),
            r#"deleting since "2026-01-01T00:00:00Z", finalizers ["f"]; status {"phase":"Terminating"}"#
        );
    }
}
