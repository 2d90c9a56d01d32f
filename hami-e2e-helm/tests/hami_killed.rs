//! A run killed with SIGKILL while the real HAMi runs on its local cluster: HAMi's scheduler
//! and the HAMi kube-scheduler die with it (as the cluster's own components do), and the
//! next local cluster's start removes the dead run's folder (certificates, logs, the pid
//! record naming HAMi's processes).
//!
//! Needs HAMi's scheduler binary (`HAMI_E2E_HAMI_SCHEDULER` or `HAMI_E2E_HAMI_SOURCE`; the
//! module proxy this project's CI reaches refuses HAMi's module), so it is ignored by
//! default; `cargo test -p hami-e2e-helm --test hami_killed -- --include-ignored` runs it,
//! and fails, naming the reason, when no binary can be had.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hami_e2e_helm::binaries::{HamiRelease, find_hami_scheduler_once};
use hami_e2e_helm::hami::default_local_options;
use hami_e2e_helm::local::{HAMI_KUBE_SCHEDULER_PROCESS, HAMI_PROCESS, LocalHami};
use hami_e2e_k8s::local::LocalCluster;
use hami_e2e_k8s::local::bincache::BinaryCache;

/// Set for the process that is started to be killed.
const TO_KILL: &str = "HAMI_E2E_HAMI_RUN_TO_KILL";

/// Kills the child when the test ends early (a failed assertion), so it never outlives it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (alive(pid) && cmdline.contains(needle)).then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

#[test]
#[ignore = "needs HAMi's scheduler (HAMI_E2E_HAMI_SCHEDULER or HAMI_E2E_HAMI_SOURCE); run with --include-ignored"]
fn a_killed_run_leaves_no_hami_process_after_the_next_start() {
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("the test binary's path"))
            .args([
                "--ignored",
                "--exact",
                "run_to_kill",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(TO_KILL, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the run to kill starts"),
    );
    let stdout = child.0.stdout.take().expect("its stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut pids, mut dir, mut seen) = (Vec::<(String, u32)>::new(), None, Vec::new());
    for line in lines.by_ref() {
        let line = line.expect("its output");
        // libtest prints `test run_to_kill ... ` first, on the same line.
        if let Some((_, path)) = line.split_once("DIR ") {
            dir = Some(PathBuf::from(path));
        }
        if let Some((_, list)) = line.split_once("PIDS ") {
            pids = list
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().expect("a pid")))
                .collect();
            break;
        }
        seen.push(line);
    }
    std::thread::spawn(move || lines.for_each(drop));
    assert!(
        !pids.is_empty(),
        "the run to kill did not start HAMi; its output:\n{}",
        seen.join("\n")
    );
    let dir = dir.expect("a DIR line before the PIDS line");
    for name in [HAMI_PROCESS, HAMI_KUBE_SCHEDULER_PROCESS] {
        assert!(
            pids.iter().any(|(n, p)| n == name && alive(*p)),
            "{name} is not running: {pids:?}"
        );
    }

    child.0.kill().expect("SIGKILL"); // no destructor runs
    child.0.wait().expect("reaped");
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|(_, p)| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "still running 20 s after the kill: {:?}",
            pids.iter().filter(|(_, p)| alive(*p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.exists(), "the dead run's folder is already gone");

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let next = LocalCluster::start(Default::default())
            .await
            .expect("the next local cluster starts");
        assert!(
            !dir.exists(),
            "{} was not removed by the next start",
            dir.display()
        );
        let left = processes_mentioning(&dir.display().to_string());
        assert!(left.is_empty(), "processes of the killed run: {left:?}");
        next.stop().await.unwrap();
    });
}

/// Not a test on its own: `a_killed_run_leaves_no_hami_process_after_the_next_start`
/// starts it in a process of its own and kills it. Starts a local cluster and HAMi on it,
/// prints `DIR <folder>` and `PIDS <name>=<pid> ...`, and sleeps.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "started by a_killed_run_leaves_no_hami_process_after_the_next_start, which kills it"]
async fn run_to_kill() {
    if std::env::var_os(TO_KILL).is_none() {
        println!("run_to_kill: only the test that kills it runs it ({TO_KILL} is not set)");
        return;
    }
    let cluster = LocalCluster::start(Default::default())
        .await
        .expect("the local cluster starts");
    let release = HamiRelease::from_env().expect("a HAMi release");
    let scheduler = find_hami_scheduler_once(&BinaryCache::default(), &release)
        .await
        .unwrap_or_else(|e| panic!("no HAMi scheduler: {e}"));
    let _hami = LocalHami::start(&cluster, &scheduler, default_local_options())
        .await
        .expect("HAMi starts");
    let mut pids: Vec<String> = cluster
        .pids()
        .iter()
        .map(|(c, p)| format!("{c}={p}"))
        .collect();
    for name in [HAMI_PROCESS, HAMI_KUBE_SCHEDULER_PROCESS] {
        if let Some(p) = cluster.process_pid(name) {
            pids.push(format!("{name}={p}"));
        }
    }
    println!("DIR {}", cluster.dir().display());
    println!("PIDS {}", pids.join(" "));
    tokio::time::sleep(Duration::from_secs(600)).await;
}
