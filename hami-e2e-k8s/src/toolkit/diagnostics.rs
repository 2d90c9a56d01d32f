//! What a failed scenario leaves for its reader: the events of its namespace, its pods'
//! statuses and conditions, their containers' logs (and previous logs after a restart),
//! and the conditions and allocatable resources of the nodes they ran on.
//!
//! [`NamespaceFixture`](crate::NamespaceFixture) collects it on failure, writes the files
//! into the scenario's artifacts folder (`events.txt`, `pods.txt`, `nodes.txt`,
//! `logs/<pod>.<container>.log`) and attaches a summary to the report (JUnit
//! `system-out`). Collecting never fails: what cannot be read is noted in its place.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> std::io::Result<()> {
//! let report = hami_e2e_k8s::diagnostics::collect(&client, "hami-e2e-demo-x7k2q").await;
//! println!("{}", report.summary());
//! report.write_to(std::path::Path::new("target/diagnostics"))?;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::ListParams;

use crate::toolkit::wait::{describe_pod, event_time, format_event};

/// Most log lines kept per container.
const LOG_TAIL: i64 = 200;

/// Diagnostics of one namespace.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Diagnostics {
    /// The namespace.
    pub namespace: String,
    /// Events, oldest first, one per line.
    pub events: Vec<String>,
    /// One line per pod: phase, node, conditions, containers.
    pub pods: Vec<String>,
    /// Per node the pods ran on: conditions and allocatable resources.
    pub nodes: Vec<String>,
    /// `(pod.container[.previous], text)` of container logs.
    pub logs: Vec<(String, String)>,
    /// What could not be read.
    pub errors: Vec<String>,
}

/// Collects the diagnostics of `namespace`.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn collect(client: &kube::Client, namespace: &str) -> Diagnostics {
    let mut d = Diagnostics {
        namespace: namespace.to_string(),
        ..Default::default()
    };
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    match events.list(&ListParams::default()).await {
        Ok(list) => {
            let mut items = list.items;
            items.sort_by_key(event_time);
            d.events = items
                .iter()
                .map(|e| {
                    let o = &e.involved_object;
                    format!(
                        "{} {}: {}",
                        o.kind.as_deref().unwrap_or("-").to_lowercase(),
                        o.name.as_deref().unwrap_or("-"),
                        format_event(e)
                    )
                })
                .collect();
        }
        Err(e) => d.errors.push(format!("events: {e}")),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut node_names = BTreeSet::new();
    match pods.list(&ListParams::default()).await {
        Ok(list) => {
            for pod in &list.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                d.pods.push(format!("{name}: {}", describe_pod(pod)));
                if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    node_names.insert(node);
                }
                let statuses = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.clone())
                    .unwrap_or_default();
                for c in statuses {
                    let started = c
                        .state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
                    if started {
                        read_logs(&mut d, &pods, &name, &c.name, false).await;
                    }
                    if c.restart_count > 0 {
                        read_logs(&mut d, &pods, &name, &c.name, true).await;
                    }
                }
            }
        }
        Err(e) => d.errors.push(format!("pods: {e}")),
    }
    let nodes: Api<Node> = Api::all(client.clone());
    for name in node_names {
        match nodes.get(&name).await {
            Ok(node) => d.nodes.push(describe_node(&node)),
            Err(e) => d.errors.push(format!("node {name}: {e}")),
        }
    }
    d
}

async fn read_logs(
    d: &mut Diagnostics,
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    previous: bool,
) {
    let key = if previous {
        format!("{pod}.{container}.previous")
    } else {
        format!("{pod}.{container}")
    };
    match crate::toolkit::exec::logs(pods, pod, Some(container), previous, Some(LOG_TAIL)).await {
        Ok(text) => d.logs.push((key, text)),
        // The API server's answer once (`no logs found for container "main" ... (400
        // BadRequest)`), not the whole chain with its debug dump.
        Err(e) => match api_status(&e) {
            Some(s) => d.errors.push(format!(
                "logs of {key}: {} ({} {})",
                s.message, s.code, s.reason
            )),
            None => d.errors.push(format!("logs of {key}: {}", error_chain(&e))),
        },
    }
}

/// The API server's status in `e`'s chain of sources, if one of them is an API error.
fn api_status<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a kube::core::Status> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(kube::Error::Api(status)) = err.downcast_ref::<kube::Error>() {
            return Some(status);
        }
        cur = err.source();
    }
    None
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `node-0: Ready=True; allocatable cpu=32, nvidia.com/gpu=8, ...`, with every condition
/// that is not in its healthy state.
pub fn describe_node(node: &Node) -> String {
    let name = node.metadata.name.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .flatten()
        // Ready always; the others (pressure, network) only when they are True.
        .filter(|c| c.type_ == "Ready" || c.status == "True")
        .map(|c| match &c.message {
            Some(m) if c.type_ != "Ready" || c.status != "True" => {
                format!("{}={} ({})", c.type_, c.status, m.trim())
            }
            _ => format!("{}={}", c.type_, c.status),
        })
        .collect();
    let allocatable: Vec<String> = status
        .allocatable
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.0))
        .collect();
    let unschedulable = if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        " (cordoned)"
    } else {
        ""
    };
    format!(
        "{name}{unschedulable}: {}; allocatable {}",
        if conditions.is_empty() {
            "no conditions".to_string()
        } else {
            conditions.join(", ")
        },
        allocatable.join(", ")
    )
}

impl Diagnostics {
    /// A summary for reports: pods, the last 20 events, nodes, and what could not be read.
    pub fn summary(&self) -> String {
        let mut text = format!("namespace {}\npods:\n", self.namespace);
        push_lines(&mut text, &self.pods, "(none)");
        text.push_str("events (last 20):\n");
        let skip = self.events.len().saturating_sub(20);
        push_lines(&mut text, &self.events[skip..], "(none)");
        if !self.nodes.is_empty() {
            text.push_str("nodes:\n");
            push_lines(&mut text, &self.nodes, "");
        }
        if !self.logs.is_empty() {
            text.push_str(&format!(
                "container logs: {} (in the artifacts)\n",
                self.logs
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.errors.is_empty() {
            text.push_str("not collected:\n");
            push_lines(&mut text, &self.errors, "");
        }
        text
    }

    /// Writes `events.txt`, `pods.txt`, `nodes.txt` and `logs/<pod>.<container>.log` into
    /// `dir` (created if needed).
    ///
    /// # Errors
    ///
    /// The first I/O error.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::write(dir.join("events.txt"), self.events.join("\n") + "\n")?;
        std::fs::write(dir.join("pods.txt"), self.pods.join("\n") + "\n")?;
        std::fs::write(dir.join("nodes.txt"), self.nodes.join("\n") + "\n")?;
        for (key, text) in &self.logs {
            std::fs::write(dir.join("logs").join(format!("{key}.log")), text)?;
        }
        if !self.errors.is_empty() {
            std::fs::write(dir.join("not-collected.txt"), self.errors.join("\n") + "\n")?;
        }
        Ok(())
    }
}

fn push_lines(text: &mut String, lines: &[String], empty: &str) {
    if lines.is_empty() && !empty.is_empty() {
        text.push_str(&format!("  {empty}\n"));
    }
    for l in lines {
        text.push_str(&format!("  {l}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_is_said_once_without_its_debug_dump() {
        let status = kube::core::Status::failure(
            "no logs found for container \"main\" in pod \"ns/p\"",
            "BadRequest",
        )
        .with_code(400);
        let e = crate::Error::Api {
            action: "read the logs of",
            object: "pod/ns/p container `main`".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        let s = api_status(&e).expect("the status is found in the chain");
        assert_eq!(
            format!("{} ({} {})", s.message, s.code, s.reason),
            "no logs found for container \"main\" in pod \"ns/p\" (400 BadRequest)"
        );
        assert!(api_status(&std::io::Error::other("x")).is_none());
    }

    #[test]
    fn nodes_show_unhealthy_conditions_and_allocatable() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-0"},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "DiskPressure", "status": "True", "message": "disk full"}
                ],
                "allocatable": {"cpu": "32", "nvidia.com/gpu": "8"}
            }
        }))
        .unwrap();
        assert_eq!(
            describe_node(&node),
            "gpu-0: Ready=True, DiskPressure=True (disk full); allocatable cpu=32, nvidia.com/gpu=8"
        );
    }

    #[test]
    fn summaries_say_what_is_missing() {
        let d = Diagnostics {
            namespace: "ns".into(),
            errors: vec!["events: forbidden".into()],
            ..Default::default()
        };
        let s = d.summary();
        assert!(s.contains("pods:\n  (none)"), "{s}");
        assert!(s.contains("not collected:\n  events: forbidden"), "{s}");
    }
}
