//! [`DevicePool`]: the bookkeeping of one process, which places demands on the devices
//! that running scenarios leave free, and that the shared pools build on.

use std::collections::BTreeMap;

use super::demand::{Demand, GrantedDevice, PoolDevice, Reservation, Use};

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

    /// Places `demands` against this pool with `held` already taken: the reservation and
    /// what it takes, by device key.
    pub(super) fn reserve_over<'h>(
        &self,
        held: impl Iterator<Item = &'h (String, Use)>,
        demands: &[Demand],
    ) -> Option<(Reservation, Vec<(String, Use)>)> {
        let mut pool = self.clone();
        let index: BTreeMap<String, usize> = pool
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (device_key(d), i))
            .collect();
        for (key, u) in held {
            if let Some(&i) = index.get(key) {
                pool.apply(i, *u);
            }
        }
        let r = pool.try_reserve(demands)?;
        let taken = r
            .taken
            .iter()
            .map(|(i, u)| (device_key(&pool.devices[*i]), *u))
            .collect();
        Some((r, taken))
    }
}

/// A device's key in admission files and documents: `kind/node/id`.
fn device_key(d: &PoolDevice) -> String {
    format!("{}/{}/{}", d.kind, d.node, d.id)
}

/// A new reservation token, unique in this process.
pub(super) fn next_token() -> u64 {
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
