//! [`SharedPool`]: a [`DevicePool`] shared by the processes of one machine through a locked
//! file, which drops the holdings of processes that are gone.

use super::demand::{Demand, PoolDevice, Reservation, Use};
use super::pool::{DevicePool, next_token};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
