//! One local cluster for all the processes of a `cargo nextest` run.
//!
//! nextest runs every scenario in a process of its own; started per process, the local
//! cluster would cost each scenario seconds and half a GiB. Instead, the first process that
//! needs it starts a *supervisor*: the same test binary again, with
//! [`SUPERVISOR_ENV`] naming a folder keyed by `NEXTEST_RUN_ID`. The supervisor starts the
//! cluster and publishes its kubeconfig there; every scenario process (the first included)
//! attaches to it through that kubeconfig and keeps a *hold* file renewed while it runs. When
//! no process has renewed a hold for a while (default 20 s), the supervisor stops the
//! cluster, removes the folder and exits. A lock file in the folder makes the processes
//! start one supervisor, not one each.
//!
//! A suite binary takes part by calling [`supervise_if_asked`] first thing in `main` (the
//! suite's `Suite::main` does), and by registering its
//! [`ClusterFixture`](crate::ClusterFixture) with
//! [`share_under_nextest`](crate::ClusterFixture::share_under_nextest).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::local::{LocalCluster, LocalClusterOptions};

/// Set on the supervisor process: the folder to publish the shared cluster in.
pub const SUPERVISOR_ENV: &str = "HAMI_E2E_SHARED_CLUSTER_DIR";

/// How long the supervisor keeps the cluster without any renewed hold.
pub const IDLE: Duration = Duration::from_secs(20);

/// How often a process renews its hold.
const RENEW: Duration = Duration::from_secs(2);

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The nextest run this process belongs to, if any (`NEXTEST_RUN_ID`).
pub fn nextest_run_id() -> Option<String> {
    std::env::var("NEXTEST_RUN_ID")
        .ok()
        .filter(|id| !id.is_empty())
}

/// The folder of run `run_id`'s shared cluster.
pub fn shared_dir(run_id: &str) -> PathBuf {
    std::env::temp_dir()
        .join("hami-e2e-shared")
        .join(crate::cleanup::labels::label_value(run_id))
}

/// A process's hold on the shared cluster: renewed in the background, removed on drop.
#[derive(Debug)]
#[must_use = "the hold is renewed only while this value lives"]
pub struct Hold {
    path: PathBuf,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.renew.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn touch(path: &Path) -> std::io::Result<()> {
    std::fs::write(path, std::process::id().to_string())
}

/// Attaches to the shared cluster of `dir`, starting its supervisor (`supervisor`, a command
/// that runs [`supervise_if_asked`]) when there is none. Returns the kubeconfig and this
/// process's hold.
///
/// # Errors
///
/// [`Error::Io`] for the folder or lock; [`Error::NotReady`] if the supervisor does not
/// publish a kubeconfig within `timeout`, with the end of its log.
///
/// # Cancel safety
///
/// Not cancel safe: dropped while it waits, the supervisor it started stays up until idle.
pub async fn attach(
    dir: &Path,
    mut supervisor: std::process::Command,
    timeout: Duration,
) -> Result<(PathBuf, Hold)> {
    std::fs::create_dir_all(dir.join("holds")).map_err(io("create folder", dir))?;
    let lock_path = dir.join("lock");
    let lock = std::fs::File::create(&lock_path).map_err(io("create lock file", &lock_path))?;
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .map_err(|e| Error::Io {
            action: "lock",
            path: dir.join("lock"),
            source: std::io::Error::other(e),
        })?
        .map_err(io("lock", &lock_path))?;
    // The hold first, renewed from now on (a first start may build binaries for minutes),
    // so that the supervisor never finds it stale.
    let hold_path = dir.join("holds").join(std::process::id().to_string());
    touch(&hold_path).map_err(io("write", &hold_path))?;
    let renew_path = hold_path.clone();
    let renew = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(RENEW);
        loop {
            ticker.tick().await;
            let _ = touch(&renew_path);
        }
    });
    let hold = Hold {
        path: hold_path,
        renew,
    };
    let kubeconfig = dir.join("kubeconfig");
    let pid_file = dir.join("supervisor.pid");
    let alive = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(crate::toolkit::host::process_is_alive);
    if !(alive && kubeconfig.is_file()) {
        let _ = std::fs::remove_file(&kubeconfig);
        let log_path = dir.join("supervisor.log");
        let log = std::fs::File::create(&log_path).map_err(io("create", &log_path))?;
        let err = log.try_clone().map_err(io("open", &log_path))?;
        use std::os::unix::process::CommandExt;
        let child = supervisor
            .env(SUPERVISOR_ENV, dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: a Ctrl-C of the test process does not reach it; it
            // stops by idleness.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                component: "shared cluster supervisor".into(),
                binary: PathBuf::from(supervisor.get_program()),
                source,
            })?;
        std::fs::write(&pid_file, child.id().to_string()).map_err(io("write", &pid_file))?;
        let started = Instant::now();
        // A file, not an API object: checked every 100 ms.
        while !kubeconfig.is_file() {
            if started.elapsed() > timeout || !crate::toolkit::host::process_is_alive(child.id()) {
                return Err(Error::NotReady {
                    component: "shared cluster supervisor".into(),
                    waited: started.elapsed(),
                    last: "no kubeconfig published".into(),
                    log_tail: crate::local::log_tail(&log_path, 20),
                    log: log_path,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(lock);
    Ok((kubeconfig, hold))
}

/// The newest renewal of any hold in `dir`.
fn newest_hold(dir: &Path) -> Option<SystemTime> {
    std::fs::read_dir(dir.join("holds"))
        .ok()?
        .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
        .max()
}

/// If this process is a supervisor ([`SUPERVISOR_ENV`] is set), runs it to the end and
/// returns `true`: the caller's `main` must then exit. `options` says what cluster to start
/// (the one the suite would start for itself). Otherwise returns `false` at once.
pub fn supervise_if_asked(options: impl FnOnce() -> LocalClusterOptions) -> bool {
    supervise_if_asked_with(options, None)
}

/// What a [`Companion`] returns: the future that stops what it started, run before the
/// shared cluster stops.
pub type CompanionStop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Something the supervisor runs beside the shared cluster for the whole nextest run
/// (HAMi's scheduler and webhook: one per cluster, whatever the number of processes). It is
/// called once the cluster is up and before its kubeconfig is published, with the cluster
/// and the shared folder (to publish what the scenario processes need to find it), and
/// returns how to stop it.
pub type Companion = Box<
    dyn FnOnce(
            Arc<LocalCluster>,
            PathBuf,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = CompanionStop> + Send>>
        + Send,
>;

/// [`supervise_if_asked`] with a [`Companion`] started beside the cluster.
pub fn supervise_if_asked_with(
    options: impl FnOnce() -> LocalClusterOptions,
    companion: Option<Companion>,
) -> bool {
    let Some(dir) = std::env::var_os(SUPERVISOR_ENV).map(PathBuf::from) else {
        return false;
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("supervisor: cannot start the async runtime: {e}");
            return true;
        }
    };
    if let Err(e) = runtime.block_on(supervise(&dir, options(), IDLE, companion)) {
        eprintln!("supervisor: {e}");
    }
    true
}

/// Starts the cluster, publishes its kubeconfig in `dir`, and stops it once no hold has been
/// renewed for `idle`; then removes `dir`.
async fn supervise(
    dir: &Path,
    options: LocalClusterOptions,
    idle: Duration,
    companion: Option<Companion>,
) -> Result<()> {
    let cluster = Arc::new(LocalCluster::start(options).await?);
    eprintln!(
        "supervisor: shared local cluster {} at {} (pid {})",
        cluster.version(),
        cluster.server(),
        std::process::id()
    );
    let stop_companion = match companion {
        Some(start) => Some(start(Arc::clone(&cluster), dir.to_path_buf()).await),
        None => None,
    };
    let tmp = dir.join("kubeconfig.tmp");
    std::fs::copy(cluster.kubeconfig(), &tmp).map_err(io("copy the kubeconfig to", &tmp))?;
    std::fs::rename(&tmp, dir.join("kubeconfig")).map_err(io("publish", &tmp))?;
    let fresh = || {
        newest_hold(dir)
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < idle)
    };
    // Idle means no hold renewed for `idle`: also when no hold file exists at all, which
    // happens for a moment between two scenario processes (the last one removed its hold,
    // the next has not written its own yet).
    let mut last_held = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if fresh() {
            last_held = Instant::now();
            continue;
        }
        if last_held.elapsed() < idle {
            continue;
        }
        // Decide under the attachers' lock: a process attaching now has written its hold
        // before it looks for the kubeconfig, so either we see its hold and go on, or it
        // sees the kubeconfig gone and starts a supervisor of its own.
        let lock = lock_dir(dir)?;
        if fresh() {
            last_held = Instant::now();
            continue;
        }
        let _ = std::fs::remove_file(dir.join("kubeconfig"));
        let _ = std::fs::remove_file(dir.join("supervisor.pid"));
        drop(lock);
        break;
    }
    eprintln!("supervisor: no hold renewed for {idle:?}; stopping");
    if let Some(stop) = stop_companion {
        stop.await;
    }
    let result = cluster.stop().await;
    // The folder goes, unless a new supervisor took it over meanwhile.
    let lock = lock_dir(dir)?;
    if !dir.join("supervisor.pid").exists() {
        let _ = std::fs::remove_dir_all(dir);
        // The parent (`hami-e2e-shared`) too, when no other run's folder is in it.
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    drop(lock);
    result
}

/// Takes the lock of a shared cluster's folder (blocking: the supervisor has nothing else
/// to do meanwhile).
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let lock_path = dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open lock file", &lock_path))?;
    lock.lock().map_err(io("lock", &lock_path))?;
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Between two scenario processes there is a moment with no hold file at all; the
    /// supervisor keeps the cluster through it, and stops `idle` after the last hold.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_supervisor_outlasts_a_gap_between_processes_and_stops_when_idle() {
        let dir = std::env::temp_dir()
            .join(format!("hami-e2e-shared-test-{}", std::process::id()))
            .join("run");
        std::fs::create_dir_all(dir.join("holds")).unwrap();
        std::fs::write(dir.join("supervisor.pid"), std::process::id().to_string()).unwrap();
        let idle = Duration::from_secs(3);
        let task = tokio::spawn({
            let dir = dir.clone();
            async move { supervise(&dir, LocalClusterOptions::default(), idle, None).await }
        });
        let kubeconfig = dir.join("kubeconfig");
        let started = Instant::now();
        while !kubeconfig.is_file() {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "never published"
            );
            assert!(
                !task.is_finished(),
                "the supervisor ended: {:?}",
                task.await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let hold = dir.join("holds").join("1");
        for _ in 0..2 {
            touch(&hold).unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            std::fs::remove_file(&hold).unwrap();
            // No hold file for 1.5 s: shorter than `idle`, the cluster stays.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(kubeconfig.is_file(), "stopped in a gap between processes");
        }
        let ended = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("stopped once idle");
        ended.unwrap().unwrap();
        assert!(!dir.exists(), "the folder is removed");
        assert!(!dir.parent().unwrap().exists(), "and its empty parent");
    }
}
