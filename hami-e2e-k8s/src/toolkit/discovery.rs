//! What a cluster offers ([`ClusterInfo`]): its version, nodes and their extended
//! resources, and the API groups it serves; the run's capabilities are made from it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;

use crate::error::{Error, Result};
use crate::toolkit::wait;

/// What a cluster offers, for skipping scenarios whose needs it cannot meet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterInfo {
    /// `gitVersion` of the API server (`v1.37.2`).
    pub version: String,
    /// Its minor version (37).
    pub minor: u32,
    /// The nodes.
    pub nodes: Vec<NodeInfo>,
    /// The API groups served, with their versions (`apps/v1`, `v1` for the core group).
    pub api_groups: BTreeSet<String>,
}

/// One node, as [`ClusterInfo`] sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Whether its `Ready` condition is `True` and it is not cordoned.
    pub ready: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Allocatable extended resources (names with a `/`, such as `nvidia.com/gpu`) that
    /// are whole numbers.
    pub extended: BTreeMap<String, u64>,
}

impl ClusterInfo {
    /// Reads the version, nodes and API groups of the cluster `client` talks to.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] naming what could not be read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn discover(client: &kube::Client) -> Result<ClusterInfo> {
        let version = client
            .apiserver_version()
            .await
            .map_err(|source| Error::Api {
                action: "get",
                object: "the server version".into(),
                source,
            })?;
        let nodes = kube::Api::<Node>::all(client.clone())
            .list(&Default::default())
            .await
            .map_err(|source| Error::Api {
                action: "list",
                object: "nodes".into(),
                source,
            })?;
        let mut api_groups = BTreeSet::new();
        let core = client
            .list_core_api_versions()
            .await
            .map_err(|source| Error::Api {
                action: "list",
                object: "the core API versions".into(),
                source,
            })?;
        api_groups.extend(core.versions);
        let groups = client
            .list_api_groups()
            .await
            .map_err(|source| Error::Api {
                action: "list",
                object: "the API groups".into(),
                source,
            })?;
        for g in groups.groups {
            for v in g.versions {
                api_groups.insert(v.group_version);
            }
        }
        let minor = version
            .minor
            .trim_end_matches('+')
            .parse()
            .unwrap_or_default();
        Ok(ClusterInfo {
            version: version.git_version,
            minor,
            nodes: nodes.items.iter().map(NodeInfo::from_node).collect(),
            api_groups,
        })
    }

    /// The run's capabilities: fact `kubernetes` (the version); quantities
    /// `kubernetes minor`, `ready nodes`, and per extended resource `<name> per node` (the
    /// most on one ready node) and `<name> total`; flags `api:<group/version>`.
    ///
    /// ```
    /// use hami_e2e_k8s::{ClusterInfo, NodeInfo};
    ///
    /// let mut info = ClusterInfo::default();
    /// info.version = "v1.37.2".into();
    /// info.minor = 37;
    /// let mut node = NodeInfo::default();
    /// node.ready = true;
    /// node.extended.insert("nvidia.com/gpu".into(), 8);
    /// info.nodes = vec![node.clone(), node];
    /// let caps = info.capabilities();
    /// assert_eq!(caps.quantity("nvidia.com/gpu per node"), 8);
    /// assert_eq!(caps.quantity("nvidia.com/gpu total"), 16);
    /// assert_eq!(caps.quantity("kubernetes minor"), 37);
    /// ```
    pub fn capabilities(&self) -> hami_e2e_core::Capabilities {
        let mut caps = hami_e2e_core::Capabilities::default()
            .with_fact("kubernetes", self.version.clone())
            .with_quantity("kubernetes minor", u64::from(self.minor));
        let ready: Vec<&NodeInfo> = self.nodes.iter().filter(|n| n.ready).collect();
        caps = caps.with_quantity("ready nodes", ready.len() as u64);
        for node in ready {
            for (resource, n) in &node.extended {
                let per_node = format!("{resource} per node");
                let most = caps.quantity(&per_node).max(*n);
                let total = caps.quantity(&format!("{resource} total")) + n;
                caps = caps
                    .with_quantity(per_node, most)
                    .with_quantity(format!("{resource} total"), total);
            }
        }
        for g in &self.api_groups {
            caps = caps.with_flag(format!("api:{g}"));
        }
        caps
    }
}

impl NodeInfo {
    /// What [`ClusterInfo`] keeps of a node.
    pub fn from_node(node: &Node) -> NodeInfo {
        let status = node.status.clone().unwrap_or_default();
        let ready = wait::node_is_ready(node)
            && node.spec.as_ref().and_then(|s| s.unschedulable) != Some(true);
        let extended = status
            .allocatable
            .iter()
            .flatten()
            .filter(|(k, _)| k.contains('/'))
            .filter_map(|(k, v)| v.0.parse::<u64>().ok().map(|n| (k.clone(), n)))
            .collect();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready,
            labels: node.metadata.labels.clone().unwrap_or_default(),
            extended,
        }
    }
}
