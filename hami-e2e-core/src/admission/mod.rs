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

pub mod store;

pub use store::{AdmissionStore, SharedStore, StorePool, Stored};

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
    grants: Vec<Vec<GrantedDevice>>,
    taken: Vec<(usize, Use)>,
    /// Its entry in a [`SharedPool`]'s file.
    token: u64,
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
struct Use {
    shares: u32,
    memory_mib: u64,
    cores: u32,
    exclusive: bool,
}

impl Use {
    /// What workloads outside the run use of `d`: where its usage starts.
    fn elsewhere(d: &PoolDevice) -> Use {
        let (shares, memory_mib, cores) = d.used_elsewhere;
        Use {
            shares,
            memory_mib,
            cores,
            exclusive: false,
        }
    }
}

/// The devices of a run and what running scenarios hold of them.
#[derive(Debug, Clone, Default)]
pub struct DevicePool {
    /// Sorted, shared by clones (admission clones the pool to place demands alone).
    devices: std::sync::Arc<[PoolDevice]>,
    used: Vec<Use>,
}

impl DevicePool {
    /// A pool of `devices`, all free.
    pub fn new(mut devices: Vec<PoolDevice>) -> Self {
        devices.sort();
        devices.dedup_by(|a, b| a.kind == b.kind && a.node == b.node && a.id == b.id);
        let used = devices.iter().map(Use::elsewhere).collect();
        DevicePool {
            devices: devices.into(),
            used,
        }
    }

    /// The pool's devices.
    pub fn devices(&self) -> &[PoolDevice] {
        &self.devices
    }

    /// Whether no device is held by a scenario.
    pub fn is_idle(&self) -> bool {
        self.used
            .iter()
            .zip(self.devices.iter())
            .all(|(u, d)| *u == Use::elsewhere(d))
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
            && used.memory_mib.saturating_add(d.memory_mib) <= dev.memory_mib
            && used.cores.saturating_add(d.cores) <= dev.cores
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
        used.shares = used.shares.saturating_add(u.shares);
        used.memory_mib = used.memory_mib.saturating_add(u.memory_mib);
        used.cores = used.cores.saturating_add(u.cores);
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
            for dev in self.devices.iter() {
                if dev.kind == d.kind {
                    per_node.entry(&dev.node).or_default().0 += 1;
                }
            }
            for i in fitting {
                if let Some(entry) = per_node.get_mut(self.devices[i].node.as_str()) {
                    entry.1.push(i);
                }
            }
            let least = (d.count as usize).max(1);
            return per_node
                .into_values()
                .filter(|(n, free)| *n >= least && free.len() == *n)
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
        let before = self.used.clone();
        let reserved = self.reserve_in_place(demands);
        if reserved.is_err() {
            self.used = before;
        }
        reserved.ok()
    }

    /// [`try_reserve`](Self::try_reserve) without the rollback: on `Err` (the first demand
    /// that did not fit), the demands before it stay applied.
    fn reserve_in_place<'d>(&mut self, demands: &'d [Demand]) -> Result<Reservation, &'d Demand> {
        let mut reservation = Reservation::default();
        let mut chosen: Vec<usize> = Vec::new();
        for d in demands {
            let picked = self.pick(d, &chosen).ok_or(d)?;
            let mut grant = Vec::with_capacity(picked.len());
            for i in picked {
                let u = self.take_of(i, d);
                self.apply(i, u);
                reservation.taken.push((i, u));
                chosen.push(i);
                let dev = &self.devices[i];
                grant.push(GrantedDevice {
                    kind: dev.kind.clone(),
                    node: dev.node.clone(),
                    id: dev.id.clone(),
                });
            }
            reservation.grants.push(grant);
        }
        Ok(reservation)
    }

    /// Gives back what `reservation` held.
    pub fn release(&mut self, reservation: &Reservation) {
        for (i, u) in &reservation.taken {
            let (Some(used), Some(dev)) = (self.used.get_mut(*i), self.devices.get(*i)) else {
                continue;
            };
            // Never below what other workloads use, even if released twice.
            let (shares, memory_mib, cores) = dev.used_elsewhere;
            used.shares = used.shares.saturating_sub(u.shares).max(shares);
            used.memory_mib = used.memory_mib.saturating_sub(u.memory_mib).max(memory_mib);
            used.cores = used.cores.saturating_sub(u.cores).max(cores);
            if u.exclusive {
                used.exclusive = false;
            }
        }
    }

    /// Where `demands` would go with nothing else running (what `--admission off` hands
    /// out: every scenario believes it has the devices to itself).
    pub fn place_alone(&self, demands: &[Demand]) -> Option<Reservation> {
        self.idle().reserve_in_place(demands).ok()
    }

    /// The pool with no scenario holding anything (what other workloads use stays).
    fn idle(&self) -> DevicePool {
        DevicePool {
            devices: std::sync::Arc::clone(&self.devices),
            used: self.devices.iter().map(Use::elsewhere).collect(),
        }
    }

    /// `Ok` when the devices could hold `demands` with nothing else running, else why not,
    /// naming the demand and what the devices are.
    ///
    /// # Errors
    ///
    /// The reason, as a skip reason: `needs 3 nvidia devices on one node; the cluster has
    /// 2 nvidia devices, at most 2 on one node`.
    pub fn can_ever_hold(&self, demands: &[Demand]) -> Result<(), String> {
        match self.idle().reserve_in_place(demands) {
            Ok(_) => Ok(()),
            Err(d) => Err(format!(
                "needs {d}; the cluster has {}",
                self.describe(&d.kind)
            )),
        }
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
        let busy = self
            .devices
            .iter()
            .filter(|d| d.kind == kind && d.used_elsewhere != (0, 0, 0))
            .count();
        let busy = if busy == 0 {
            String::new()
        } else {
            format!(" ({busy} partly or wholly used by other workloads)")
        };
        format!("{total} {kind} device{plural}, at most {most} on one node{busy}")
    }
}

/// A [`DevicePool`] shared by the processes of one machine through a file, so that
/// scenarios in different processes (`cargo nextest` runs each in its own) are admitted
/// against the same devices. The file holds what each live process reserved; every access
/// takes an exclusive lock on it, drops the holdings of processes that are gone (by pid and
/// start time), and the last release removes the file.
///
/// The runner uses one under `cargo nextest` (`NEXTEST_RUN_ID`), or wherever
/// `HAMI_E2E_ADMISSION_FILE` points (several `cargo test` processes on one cluster).
///
/// ```
/// use hami_e2e_core::{Demand, PoolDevice, SharedPool};
///
/// let path = std::env::temp_dir().join(format!("hami-e2e-doc-pool-{}.json", std::process::id()));
/// let devices = vec![PoolDevice::new("nvidia", "node-a", "GPU-0", 16384)];
/// let (a, b) = (SharedPool::new(&path, devices.clone()), SharedPool::new(&path, devices));
/// let whole = [Demand::devices("nvidia", 1).exclusive()];
/// let held = a.try_reserve(&whole)?.expect("free");
/// assert!(b.try_reserve(&whole)?.is_none(), "held through the file");
/// a.release(&held)?;
/// assert!(!path.exists(), "the last release removes the file");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SharedPool {
    path: std::path::PathBuf,
    pool: DevicePool,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SharedState {
    holders: Vec<Holder>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Holder {
    pid: u32,
    /// The process's start time (Linux: `/proc/<pid>/stat`), against pid reuse.
    start: Option<u64>,
    /// A token per reservation, so one process can hold several.
    token: u64,
    /// Device (`kind/node/id`) and what is taken of it.
    taken: Vec<(String, Use)>,
}

fn device_key(d: &PoolDevice) -> String {
    format!("{}/{}/{}", d.kind, d.node, d.id)
}

/// The start time of process `pid`, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`; `None` off Linux or when it is gone): with the pid, it names one
/// process, never a later one that reuses the pid. Shared by everything that records
/// processes to check on them later (admission files, the local cluster's components).
///
/// ```
/// let me = hami_e2e_core::admission::process_start_time(std::process::id());
/// assert_eq!(me.is_some(), cfg!(target_os = "linux"));
/// ```
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces), starting at field 3.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn is_alive(pid: u32, start: Option<u64>) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true; // no procfs: never drop a holder we cannot check
    }
    match (process_start_time(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

impl SharedPool {
    /// The pool of `devices`, shared through the file at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>, devices: Vec<PoolDevice>) -> Self {
        SharedPool {
            path: path.into(),
            pool: DevicePool::new(devices),
        }
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The devices, without what anyone holds.
    pub fn devices(&self) -> &DevicePool {
        &self.pool
    }

    /// Opens and locks the file, making sure the locked file is still the one at the path
    /// (a releasing process may have removed it meanwhile).
    fn lock(&self) -> std::io::Result<(std::fs::File, SharedState)> {
        use std::io::Read;
        loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            file.lock()?;
            if !same_file(&file, &self.path) {
                continue;
            }
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            let state = if text.trim().is_empty() {
                SharedState::default()
            } else {
                serde_json::from_str(&text).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("malformed admission file `{}`: {e}", self.path.display()),
                    )
                })?
            };
            return Ok((file, state));
        }
    }

    /// Writes `state` (or removes the file when nobody holds anything), then unlocks by
    /// dropping `locked`. The new state goes to a temporary file renamed over the old one, so
    /// a process killed meanwhile leaves the old state whole; waiters holding the old file
    /// see it replaced and open the new one.
    fn store(&self, locked: std::fs::File, state: &SharedState) -> std::io::Result<()> {
        if state.holders.is_empty() {
            std::fs::remove_file(&self.path)?;
            drop(locked);
            return Ok(());
        }
        let text = serde_json::to_string(state).map_err(std::io::Error::other)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)?;
        drop(locked);
        Ok(())
    }

    /// As [`DevicePool::try_reserve`], against what every live process holds.
    ///
    /// # Errors
    ///
    /// The file cannot be opened, locked, read or written, or does not parse (naming it).
    pub fn try_reserve(&self, demands: &[Demand]) -> std::io::Result<Option<Reservation>> {
        let (file, mut state) = self.lock()?;
        state.holders.retain(|h| is_alive(h.pid, h.start));
        let held = state.holders.iter().flat_map(|h| h.taken.iter());
        let Some((mut r, taken)) = self.pool.reserve_over(held, demands) else {
            self.store(file, &state)?;
            return Ok(None);
        };
        if taken.is_empty() {
            self.store(file, &state)?;
            return Ok(Some(r));
        }
        r.token = next_token();
        state.holders.push(Holder {
            pid: std::process::id(),
            start: process_start_time(std::process::id()),
            token: r.token,
            taken,
        });
        self.store(file, &state)?;
        Ok(Some(r))
    }

    /// Gives back what `reservation` (of this process) held.
    ///
    /// # Errors
    ///
    /// As [`try_reserve`](Self::try_reserve).
    pub fn release(&self, reservation: &Reservation) -> std::io::Result<()> {
        if reservation.taken.is_empty() {
            return Ok(());
        }
        let (file, mut state) = self.lock()?;
        let pid = std::process::id();
        state.holders.retain(|h| {
            !(h.pid == pid && h.token == reservation.token) && is_alive(h.pid, h.start)
        });
        self.store(file, &state)
    }
}

#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &std::fs::File, path: &std::path::Path) -> bool {
    path.exists()
}

fn next_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
    fn what_others_use_is_not_handed_out() {
        let mut p = DevicePool::new(vec![
            PoolDevice::new("gpu", "a", "a0", 16384)
                .shares(10)
                .used_elsewhere(1, 12000, 50),
        ]);
        assert!(p.is_idle());
        let whole = [Demand::devices("gpu", 1).exclusive()];
        assert!(p.try_reserve(&whole).is_none(), "partly used elsewhere");
        assert_eq!(
            p.can_ever_hold(&whole).unwrap_err(),
            "needs 1 whole gpu device; the cluster has 1 gpu device, at most 1 on one node (1 partly or wholly used by other workloads)"
        );
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1).memory_mib(8000)])
                .is_none(),
            "4384 MiB free"
        );
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1).memory_mib(4000).cores(50)])
                .is_some()
        );
    }

    #[test]
    fn whole_node_at_least_skips_small_nodes() {
        let mut p = pool(&[("small", 2), ("big", 4)]);
        let d = [Demand::whole_node("gpu").at_least(3)];
        assert_eq!(
            d[0].to_string(),
            "every gpu device of one node with at least 3"
        );
        assert_eq!(p.try_reserve(&d).unwrap().node("gpu"), Some("big"));
        assert!(pool(&[("small", 2)]).can_ever_hold(&d).is_err());
    }

    #[test]
    fn releasing_twice_keeps_what_others_use() {
        let mut p = DevicePool::new(vec![
            PoolDevice::new("gpu", "a", "a0", 1000)
                .shares(4)
                .used_elsewhere(1, 500, 0),
        ]);
        let r = p
            .try_reserve(&[Demand::devices("gpu", 1).memory_mib(500)])
            .unwrap();
        p.release(&r);
        p.release(&r);
        assert!(p.is_idle());
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1).memory_mib(501)])
                .is_none()
        );
    }

    #[test]
    fn huge_demands_do_not_overflow() {
        let mut p = pool(&[("a", 1)]);
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1)
                .memory_mib(u64::MAX)
                .cores(u32::MAX)])
                .is_none()
        );
        let _ = p
            .try_reserve(&[Demand::devices("gpu", 1).memory_mib(1)])
            .unwrap();
        assert!(
            p.try_reserve(&[Demand::devices("gpu", 1).memory_mib(u64::MAX)])
                .is_none()
        );
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
    fn a_shared_pool_drops_the_holdings_of_dead_processes() {
        let path =
            std::env::temp_dir().join(format!("hami-e2e-pool-test-{}.json", std::process::id()));
        let devices = vec![PoolDevice::new("gpu", "a", "a0", 100)];
        let shared = SharedPool::new(&path, devices);
        let d = [Demand::devices("gpu", 1).exclusive()];
        // A holder that is gone: pid 0 is never a process of ours; a wrong start time is
        // a reused pid.
        let me = std::process::id();
        for (pid, start) in [(0, None), (me, Some(u64::MAX))] {
            let state = SharedState {
                holders: vec![Holder {
                    pid,
                    start,
                    token: 99,
                    taken: vec![(
                        "gpu/a/a0".into(),
                        Use {
                            shares: 1,
                            exclusive: true,
                            ..Use::default()
                        },
                    )],
                }],
            };
            std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();
            let r = shared
                .try_reserve(&d)
                .unwrap()
                .expect("the dead holder's device is free");
            assert!(shared.try_reserve(&d).unwrap().is_none());
            shared.release(&r).unwrap();
            assert!(!path.exists());
        }
        // A reservation of nothing leaves no holder (and no file) behind.
        let nothing = shared
            .try_reserve(&[Demand::devices("gpu", 0)])
            .unwrap()
            .unwrap();
        assert!(nothing.is_empty());
        assert!(!path.exists());
        std::fs::write(&path, "{not json").unwrap();
        let e = shared.try_reserve(&d).unwrap_err().to_string();
        assert!(e.starts_with("malformed admission file `"), "{e}");
        std::fs::remove_file(&path).unwrap();
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
