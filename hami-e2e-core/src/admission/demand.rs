//! What admission works with: the devices a run can hand out ([`PoolDevice`]), what
//! scenarios ask for ([`Demand`]), and what they get ([`Reservation`]).

use std::fmt;

/// One device the runner can hand out to scenarios.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[non_exhaustive]
pub struct PoolDevice {
    /// What kind of device: the vendor name of a device backend (`nvidia`).
    pub kind: String,
    /// The node it is on.
    pub node: String,
    /// Its id, unique on the node (a UUID for NVIDIA).
    pub id: String,
    /// How many containers may share it (HAMi's split count; 1: whole devices only).
    pub shares: u32,
    /// Its memory, MiB.
    pub memory_mib: u64,
    /// Its compute units (100 for NVIDIA).
    pub cores: u32,
    /// What workloads outside the run use of it (shares, MiB, cores): on a shared cluster,
    /// the probe reads them from the pods' allocations, so admission hands out only what
    /// is free, and never a partly used device as a whole one.
    pub used_elsewhere: (u32, u64, u32),
}

impl PoolDevice {
    /// A device of `kind` on `node` with `memory_mib`, one share and 100 cores.
    pub fn new(
        kind: impl Into<String>,
        node: impl Into<String>,
        id: impl Into<String>,
        memory_mib: u64,
    ) -> Self {
        PoolDevice {
            kind: kind.into(),
            node: node.into(),
            id: id.into(),
            shares: 1,
            memory_mib,
            cores: 100,
            used_elsewhere: (0, 0, 0),
        }
    }

    /// Used by workloads outside the run: `shares` containers with `memory_mib` and `cores`
    /// in all.
    #[must_use]
    pub fn used_elsewhere(mut self, shares: u32, memory_mib: u64, cores: u32) -> Self {
        self.used_elsewhere = (shares, memory_mib, cores);
        self
    }

    /// Shared by up to `shares` containers (at least 1).
    #[must_use]
    pub fn shares(mut self, shares: u32) -> Self {
        self.shares = shares.max(1);
        self
    }

    /// With `cores` compute units.
    #[must_use]
    pub fn cores(mut self, cores: u32) -> Self {
        self.cores = cores;
        self
    }
}

/// Devices a scenario holds while it runs.
///
/// ```
/// use hami_e2e_core::Demand;
///
/// let d = Demand::devices("nvidia", 2).memory_mib(3000).cores(30);
/// assert_eq!(d.to_string(), "2 nvidia devices on one node, 3000 MiB and 30 cores of each");
/// assert_eq!(Demand::devices("ascend", 1).exclusive().to_string(), "1 whole ascend device");
/// assert_eq!(Demand::all("nvidia").to_string(), "every nvidia device");
/// assert_eq!(Demand::whole_node("nvidia").to_string(), "every nvidia device of one node");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Demand {
    /// The kind of device ([`PoolDevice::kind`]).
    pub kind: String,
    /// How many devices (ignored with `all`).
    pub count: u32,
    /// Memory of each device it uses, MiB (0: none counted).
    pub memory_mib: u64,
    /// Cores of each device it uses (0: none counted).
    pub cores: u32,
    /// Whole devices: nothing else may share them.
    pub exclusive: bool,
    /// All the devices on one node (the default: one pod's devices are on one node).
    pub same_node: bool,
    /// Every device of the kind, whole.
    pub all: bool,
    /// Every device of the kind on one node, whole: for scenarios that fill a node.
    pub whole_node: bool,
}

impl Demand {
    /// `count` devices of `kind` on one node, one share of each.
    pub fn devices(kind: impl Into<String>, count: u32) -> Self {
        Demand {
            kind: kind.into(),
            count,
            memory_mib: 0,
            cores: 0,
            exclusive: false,
            same_node: true,
            all: false,
            whole_node: false,
        }
    }

    /// Every device of `kind`, whole: for scenarios that test placement across nodes.
    pub fn all(kind: impl Into<String>) -> Self {
        Demand {
            all: true,
            exclusive: true,
            same_node: false,
            ..Demand::devices(kind, 0)
        }
    }

    /// Every device of `kind` on one node, whole (the node with the fewest that has any, or
    /// at least [`at_least`](Self::at_least)): for scenarios that fill a node and check what
    /// no longer fits.
    pub fn whole_node(kind: impl Into<String>) -> Self {
        Demand {
            whole_node: true,
            exclusive: true,
            ..Demand::devices(kind, 0)
        }
    }

    /// With [`whole_node`](Self::whole_node): only nodes with at least `count` devices.
    #[must_use]
    pub fn at_least(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// `mib` MiB of each device.
    #[must_use]
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }

    /// `cores` compute units of each device.
    #[must_use]
    pub fn cores(mut self, cores: u32) -> Self {
        self.cores = cores;
        self
    }

    /// Whole devices, shared with nothing else.
    #[must_use]
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// The devices may be on different nodes (several pods).
    #[must_use]
    pub fn any_node(mut self) -> Self {
        self.same_node = false;
        self
    }
}

impl fmt::Display for Demand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all {
            return write!(f, "every {} device", self.kind);
        }
        if self.whole_node {
            write!(f, "every {} device of one node", self.kind)?;
            if self.count > 1 {
                write!(f, " with at least {}", self.count)?;
            }
            return Ok(());
        }
        let plural = if self.count == 1 { "" } else { "s" };
        let whole = if self.exclusive { "whole " } else { "" };
        write!(f, "{} {whole}{} device{plural}", self.count, self.kind)?;
        if self.same_node && self.count > 1 {
            f.write_str(" on one node")?;
        }
        match (self.memory_mib, self.cores) {
            (0, 0) => Ok(()),
            (m, 0) => write!(f, ", {m} MiB of each"),
            (0, c) => write!(f, ", {c} cores of each"),
            (m, c) => write!(f, ", {m} MiB and {c} cores of each"),
        }
    }
}

/// One device handed to a scenario.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrantedDevice {
    /// The kind of device.
    pub kind: String,
    /// Its node.
    pub node: String,
    /// Its id.
    pub id: String,
}

impl fmt::Display for GrantedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.kind, self.node, self.id)
    }
}

/// The devices admission handed to a scenario: one list per [`Demand`], in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    pub(super) grants: Vec<Vec<GrantedDevice>>,
    /// What it takes of which device of its pool, by index.
    pub(super) taken: Vec<(usize, Use)>,
    /// Its entry in a [`SharedPool`](super::SharedPool)'s file or a store's document.
    pub(super) token: u64,
}

impl Reservation {
    /// The devices granted for each demand, in the order of the demands.
    pub fn grants(&self) -> &[Vec<GrantedDevice>] {
        &self.grants
    }

    /// Every granted device.
    pub fn all_devices(&self) -> impl Iterator<Item = &GrantedDevice> {
        self.grants.iter().flatten()
    }

    /// The node of the first device of `kind`: where to pin a pod asking for them.
    pub fn node(&self, kind: &str) -> Option<&str> {
        self.all_devices()
            .find(|d| d.kind == kind)
            .map(|d| d.node.as_str())
    }

    /// Whether nothing was granted.
    pub fn is_empty(&self) -> bool {
        self.grants.iter().all(Vec::is_empty)
    }
}

/// What one demand takes of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Use {
    pub(super) shares: u32,
    pub(super) memory_mib: u64,
    pub(super) cores: u32,
    pub(super) exclusive: bool,
}

impl Use {
    /// What workloads outside the run use of `d`: where its usage starts.
    pub(super) fn elsewhere(d: &PoolDevice) -> Use {
        let (shares, memory_mib, cores) = d.used_elsewhere;
        Use {
            shares,
            memory_mib,
            cores,
            exclusive: false,
        }
    }
}
