//! Device-aware admission: scenarios declare the devices they hold while they run
//! ([`Demand`]), the probe describes the devices the system under test has
//! ([`Capabilities::devices`](crate::Capabilities::devices)), and the runner starts a
//! scenario only when the devices not held by running scenarios can hold its demand too.
//! A scenario whose demand the devices could not hold even with nothing else running is
//! skipped with the reason (a failure under `--require`).
//!
//! Admission hands the scenario a [`Reservation`]: the devices, and so the nodes, it may
//! use ([`Context::devices`](crate::Context::devices)). Scenarios pin their pods to the
//! reserved node; a scenario that tests where a scheduler puts pods asks for
//! [`Demand::all`] devices of a vendor instead, so nothing else uses them meanwhile.
//!
//! The model is HAMi's: a device is shared by up to `shares` containers, whose memory and
//! cores add up; an [`exclusive`](Demand::exclusive) demand takes the whole device. It is
//! the model of Kubernetes' extended resources too when every device has one share (a
//! count per node).
//!
//! [`DevicePool`] is the bookkeeping, usable on its own:
//!
//! ```
//! use hami_e2e_core::{Demand, DevicePool, PoolDevice};
//!
//! let mut pool = DevicePool::new(vec![
//!     PoolDevice::new("nvidia", "node-a", "GPU-0", 16384),
//!     PoolDevice::new("nvidia", "node-a", "GPU-1", 16384),
//! ]);
//! let two = [Demand::devices("nvidia", 2).exclusive()];
//! let first = pool.try_reserve(&two).expect("both devices are free");
//! assert_eq!(first.node("nvidia"), Some("node-a"));
//! assert!(pool.try_reserve(&two).is_none(), "held by the first scenario");
//! pool.release(&first);
//! assert!(pool.try_reserve(&two).is_some());
//!
//! let three = [Demand::devices("nvidia", 3)];
//! assert_eq!(
//!     pool.can_ever_hold(&three).unwrap_err(),
//!     "needs 3 nvidia devices on one node; the cluster has 2 nvidia devices, at most 2 on one node"
//! );
//! ```

use std::collections::BTreeMap;
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
        }
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

    /// Every device of `kind` on one node, whole (the node with the fewest that has any):
    /// for scenarios that fill a node and check what no longer fits.
    pub fn whole_node(kind: impl Into<String>) -> Self {
        Demand {
            whole_node: true,
            exclusive: true,
            ..Demand::devices(kind, 0)
        }
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
            return write!(f, "every {} device of one node", self.kind);
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
    grants: Vec<Vec<GrantedDevice>>,
    taken: Vec<(usize, Use)>,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Use {
    shares: u32,
    memory_mib: u64,
    cores: u32,
    exclusive: bool,
}

/// The devices of a run and what running scenarios hold of them.
#[derive(Debug, Clone, Default)]
pub struct DevicePool {
    devices: Vec<PoolDevice>,
    used: Vec<Use>,
}

impl DevicePool {
    /// A pool of `devices`, all free.
    pub fn new(mut devices: Vec<PoolDevice>) -> Self {
        devices.sort();
        devices.dedup_by(|a, b| a.kind == b.kind && a.node == b.node && a.id == b.id);
        let used = vec![Use::default(); devices.len()];
        DevicePool { devices, used }
    }

    /// The pool's devices.
    pub fn devices(&self) -> &[PoolDevice] {
        &self.devices
    }

    /// Whether no device is held.
    pub fn is_idle(&self) -> bool {
        self.used.iter().all(|u| *u == Use::default())
    }

    fn fits(&self, i: usize, d: &Demand) -> bool {
        let (dev, used) = (&self.devices[i], &self.used[i]);
        if dev.kind != d.kind || used.exclusive {
            return false;
        }
        if d.exclusive {
            return used.shares == 0 && used.memory_mib == 0 && used.cores == 0;
        }
        used.shares < dev.shares
            && used.memory_mib + d.memory_mib <= dev.memory_mib
            && used.cores + d.cores <= dev.cores
    }

    fn take_of(&self, i: usize, d: &Demand) -> Use {
        if d.exclusive {
            let dev = &self.devices[i];
            Use {
                shares: dev.shares,
                memory_mib: dev.memory_mib,
                cores: dev.cores,
                exclusive: true,
            }
        } else {
            Use {
                shares: 1,
                memory_mib: d.memory_mib,
                cores: d.cores,
                exclusive: false,
            }
        }
    }

    fn apply(&mut self, i: usize, u: Use) {
        let used = &mut self.used[i];
        used.shares += u.shares;
        used.memory_mib += u.memory_mib;
        used.cores += u.cores;
        used.exclusive |= u.exclusive;
    }

    /// Devices for one demand among those that fit now, not already in `chosen`.
    fn pick(&self, d: &Demand, chosen: &[usize]) -> Option<Vec<usize>> {
        let fitting: Vec<usize> = (0..self.devices.len())
            .filter(|i| !chosen.contains(i) && self.fits(*i, d))
            .collect();
        if d.all {
            let of_kind = self.devices.iter().filter(|x| x.kind == d.kind).count();
            return (of_kind > 0 && fitting.len() == of_kind).then_some(fitting);
        }
        if d.whole_node {
            let mut per_node: BTreeMap<&str, (usize, Vec<usize>)> = BTreeMap::new();
            for dev in &self.devices {
                if dev.kind == d.kind {
                    per_node.entry(&dev.node).or_default().0 += 1;
                }
            }
            for i in fitting {
                if let Some(entry) = per_node.get_mut(self.devices[i].node.as_str()) {
                    entry.1.push(i);
                }
            }
            return per_node
                .into_values()
                .filter(|(n, free)| *n > 0 && free.len() == *n)
                .min_by_key(|(n, _)| *n)
                .map(|(_, free)| free);
        }
        let count = d.count as usize;
        if count == 0 {
            return Some(Vec::new());
        }
        if !d.same_node {
            return (fitting.len() >= count).then(|| fitting[..count].to_vec());
        }
        // The node with the fewest fitting devices that still suffice: big demands keep
        // the nodes with the most free devices.
        let mut per_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for i in fitting {
            per_node.entry(&self.devices[i].node).or_default().push(i);
        }
        per_node
            .into_values()
            .filter(|v| v.len() >= count)
            .min_by_key(Vec::len)
            .map(|v| v[..count].to_vec())
    }

    /// Reserves devices for every demand, if the free devices can hold them all now; the
    /// reservation is all or nothing. Demands are placed one after the other, each on the
    /// node with the fewest free devices that suffice.
    pub fn try_reserve(&mut self, demands: &[Demand]) -> Option<Reservation> {
        let mut trial = self.clone();
        let mut reservation = Reservation::default();
        let mut chosen: Vec<usize> = Vec::new();
        for d in demands {
            let picked = trial.pick(d, &chosen)?;
            let mut grant = Vec::with_capacity(picked.len());
            for i in picked {
                let u = trial.take_of(i, d);
                trial.apply(i, u);
                reservation.taken.push((i, u));
                chosen.push(i);
                let dev = &trial.devices[i];
                grant.push(GrantedDevice {
                    kind: dev.kind.clone(),
                    node: dev.node.clone(),
                    id: dev.id.clone(),
                });
            }
            reservation.grants.push(grant);
        }
        *self = trial;
        Some(reservation)
    }

    /// Gives back what `reservation` held.
    pub fn release(&mut self, reservation: &Reservation) {
        for (i, u) in &reservation.taken {
            if let Some(used) = self.used.get_mut(*i) {
                used.shares = used.shares.saturating_sub(u.shares);
                used.memory_mib = used.memory_mib.saturating_sub(u.memory_mib);
                used.cores = used.cores.saturating_sub(u.cores);
                if u.exclusive {
                    used.exclusive = false;
                }
            }
        }
    }

    /// Where `demands` would go with nothing else running (what `--admission off` hands
    /// out: every scenario believes it has the devices to itself).
    pub fn place_alone(&self, demands: &[Demand]) -> Option<Reservation> {
        let mut empty = DevicePool::new(self.devices.clone());
        empty.try_reserve(demands)
    }

    /// `Ok` when the devices could hold `demands` with nothing else running, else why not,
    /// naming the demand and what the devices are.
    ///
    /// # Errors
    ///
    /// The reason, as a skip reason: `needs 3 nvidia devices on one node; the cluster has
    /// 2 nvidia devices, at most 2 on one node`.
    pub fn can_ever_hold(&self, demands: &[Demand]) -> Result<(), String> {
        if self.place_alone(demands).is_some() {
            return Ok(());
        }
        let mut empty = DevicePool::new(self.devices.clone());
        let mut chosen = Vec::new();
        for d in demands {
            match empty.pick(d, &chosen) {
                Some(picked) => {
                    for i in picked {
                        let u = empty.take_of(i, d);
                        empty.apply(i, u);
                        chosen.push(i);
                    }
                }
                None => {
                    return Err(format!(
                        "needs {d}; the cluster has {}",
                        self.describe(&d.kind)
                    ));
                }
            }
        }
        let all: Vec<String> = demands.iter().map(ToString::to_string).collect();
        Err(format!(
            "needs {} at once; the cluster's devices cannot hold them together",
            all.join(" and ")
        ))
    }

    fn describe(&self, kind: &str) -> String {
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for d in self.devices.iter().filter(|d| d.kind == kind) {
            *per_node.entry(&d.node).or_default() += 1;
        }
        let total: usize = per_node.values().sum();
        if total == 0 {
            return format!("no {kind} devices");
        }
        let most = per_node.values().copied().max().unwrap_or(0);
        let plural = if total == 1 { "" } else { "s" };
        format!("{total} {kind} device{plural}, at most {most} on one node")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(nodes: &[(&str, usize)]) -> DevicePool {
        let mut devices = Vec::new();
        for (node, n) in nodes {
            for i in 0..*n {
                devices.push(PoolDevice::new("gpu", *node, format!("{node}-{i}"), 16384).shares(4));
            }
        }
        DevicePool::new(devices)
    }

    #[test]
    fn exclusive_demands_take_whole_devices() {
        let mut p = pool(&[("a", 2)]);
        let first = p
            .try_reserve(&[Demand::devices("gpu", 1).exclusive()])
            .unwrap();
        let second = p
            .try_reserve(&[Demand::devices("gpu", 1).exclusive()])
            .unwrap();
        assert_ne!(first.grants()[0][0].id, second.grants()[0][0].id);
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1)]).is_none(),
            "no share left"
        );
        p.release(&first);
        assert!(p.try_reserve(&[Demand::devices("gpu", 1)]).is_some());
    }

    #[test]
    fn shared_demands_add_up_shares_memory_and_cores() {
        let mut p = pool(&[("a", 1)]);
        let d = [Demand::devices("gpu", 1).memory_mib(6000).cores(40)];
        let a = p.try_reserve(&d).unwrap();
        let _b = p.try_reserve(&d).unwrap();
        assert!(p.try_reserve(&d).is_none(), "18000 MiB > 16384 MiB");
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1).memory_mib(4000).cores(30)])
                .is_none(),
            "110 cores"
        );
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1).memory_mib(4000).cores(20)])
                .is_some()
        );
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1)]).is_some(),
            "a fourth share"
        );
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1)]).is_none(),
            "4 shares used"
        );
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1).exclusive()])
                .is_none()
        );
        p.release(&a);
        assert!(p.try_reserve(&[Demand::devices("gpu", 1)]).is_some());
    }

    #[test]
    fn same_node_demands_pick_the_tightest_node() {
        let mut p = pool(&[("big", 4), ("small", 2)]);
        let r = p
            .try_reserve(&[Demand::devices("gpu", 2).exclusive()])
            .unwrap();
        assert_eq!(r.node("gpu"), Some("small"), "keeps the big node free");
        let r = p
            .try_reserve(&[Demand::devices("gpu", 4).exclusive()])
            .unwrap();
        assert_eq!(r.node("gpu"), Some("big"));
        assert!(p.try_reserve(&[Demand::devices("gpu", 1)]).is_none());
    }

    #[test]
    fn any_node_demands_spread_over_nodes() {
        let mut p = pool(&[("a", 1), ("b", 1)]);
        let d = [Demand::devices("gpu", 2).exclusive()];
        assert!(p.clone().try_reserve(&d).is_none(), "two on one node");
        let r = p
            .try_reserve(&[Demand::devices("gpu", 2).exclusive().any_node()])
            .unwrap();
        let nodes: Vec<&str> = r.all_devices().map(|d| d.node.as_str()).collect();
        assert_eq!(nodes, ["a", "b"]);
    }

    #[test]
    fn all_takes_every_device_or_waits() {
        let mut p = pool(&[("a", 2), ("b", 2)]);
        let one = p.try_reserve(&[Demand::devices("gpu", 1)]).unwrap();
        assert!(
            p.try_reserve(&[Demand::all("gpu")]).is_none(),
            "one is in use"
        );
        p.release(&one);
        let all = p.try_reserve(&[Demand::all("gpu")]).unwrap();
        assert_eq!(all.all_devices().count(), 4);
        assert!(p.try_reserve(&[Demand::devices("gpu", 1)]).is_none());
        p.release(&all);
        assert!(p.is_idle());
        assert_eq!(
            p.can_ever_hold(&[Demand::all("npu")]).unwrap_err(),
            "needs every npu device; the cluster has no npu devices"
        );
    }

    #[test]
    fn whole_node_takes_a_free_node() {
        let mut p = pool(&[("big", 4), ("small", 2)]);
        let first = p.try_reserve(&[Demand::whole_node("gpu")]).unwrap();
        assert_eq!(first.all_devices().count(), 2);
        assert_eq!(first.node("gpu"), Some("small"), "the smallest node");
        let one = p.try_reserve(&[Demand::devices("gpu", 1)]).unwrap();
        assert_eq!(one.node("gpu"), Some("big"));
        assert!(
            p.try_reserve(&[Demand::whole_node("gpu")]).is_none(),
            "big is in use"
        );
        p.release(&one);
        assert_eq!(
            p.try_reserve(&[Demand::whole_node("gpu")])
                .unwrap()
                .all_devices()
                .count(),
            4
        );
        assert!(p.can_ever_hold(&[Demand::whole_node("npu")]).is_err());
    }

    #[test]
    fn reservations_are_all_or_nothing() {
        let mut p = pool(&[("a", 2)]);
        let both = [
            Demand::devices("gpu", 1).exclusive(),
            Demand::devices("gpu", 2).exclusive(),
        ];
        assert!(p.try_reserve(&both).is_none());
        assert!(p.is_idle(), "a failed reservation holds nothing");
        assert_eq!(
            p.can_ever_hold(&both).unwrap_err(),
            "needs 2 whole gpu devices on one node; the cluster has 2 gpu devices, at most 2 on one node"
        );
    }

    #[test]
    fn placing_alone_ignores_what_others_hold() {
        let mut p = pool(&[("a", 1)]);
        let d = [Demand::devices("gpu", 1).exclusive()];
        let _held = p.try_reserve(&d).unwrap();
        assert!(p.try_reserve(&d).is_none());
        assert_eq!(p.place_alone(&d).unwrap().node("gpu"), Some("a"));
    }

    #[test]
    fn releasing_twice_never_underflows() {
        let mut p = pool(&[("a", 1)]);
        let r = p
            .try_reserve(&[Demand::devices("gpu", 1).memory_mib(100)])
            .unwrap();
        p.release(&r);
        p.release(&r);
        assert!(p.is_idle());
    }

    #[test]
    fn unknown_kinds_and_zero_counts() {
        let mut p = pool(&[("a", 1)]);
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 0)])
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            p.can_ever_hold(&[Demand::devices("npu", 1)]).unwrap_err(),
            "needs 1 npu device; the cluster has no npu devices"
        );
    }
}
