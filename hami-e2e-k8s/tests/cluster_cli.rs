//! `hami-e2e-cluster` as a user runs it: components die with it even when it is killed
//! with SIGKILL, SIGTERM stops it cleanly, and bad set-ups fail with a clear message.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_hami-e2e-cluster");

struct Up {
    child: Child,
    pids: Vec<u32>,
    dir: PathBuf,
}

/// Starts `hami-e2e-cluster up` and reads its output until the pids line.
fn up() -> Up {
    let mut child = Command::new(CLI)
        .args(["up", "--gpus", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the CLI starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut pids, mut dir) = (Vec::new(), None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(path) = line.strip_prefix("kubeconfig: ") {
            dir = Path::new(path).parent().map(Path::to_path_buf);
        }
        if let Some(list) = line.strip_prefix("pids: ") {
            pids = list
                .split_whitespace()
                .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
                .collect();
            break;
        }
    }
    // Keep draining stdout so the CLI never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    assert_eq!(pids.len(), 5, "five components");
    Up {
        child,
        pids,
        dir: dir.expect("kubeconfig line"),
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

fn wait_all_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "still running: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_of_the_owner_takes_the_components_with_it() {
    let mut up = up();
    assert!(up.pids.iter().all(|p| alive(*p)));
    up.child.kill().unwrap(); // SIGKILL: no destructor runs
    up.child.wait().unwrap();
    wait_all_gone(&up.pids);
    // The folder of the dead owner is left, and the next cluster's start removes it.
    assert!(up.dir.exists());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = hami_e2e_k8s::local::LocalCluster::start(Default::default())
            .await
            .expect("starts");
        assert!(!up.dir.exists(), "{} was not swept", up.dir.display());
        cluster.stop().await.unwrap();
    });
}

#[test]
fn sigterm_stops_the_cluster_and_removes_its_folder() {
    let mut up = up();
    let status = Command::new("kill")
        .args(["-TERM", &up.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = up.child.wait().unwrap();
    assert!(exit.success(), "{exit}");
    wait_all_gone(&up.pids);
    assert!(!up.dir.exists(), "{} is left", up.dir.display());
}

#[test]
fn an_unsupported_version_is_named() {
    let out = Command::new(CLI)
        .args(["build", "--k8s-version", "1.2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Kubernetes version `1.2` is not supported") && err.contains("v1.37.2"),
        "{err}"
    );
}

#[test]
fn a_missing_go_toolchain_is_named() {
    let cache = std::env::temp_dir().join(format!("hami-e2e-empty-cache-{}", std::process::id()));
    let out = Command::new(CLI)
        .arg("build")
        .env("HAMI_E2E_CACHE_DIR", &cache)
        .env("PATH", "/nonexistent")
        .env_remove("HAMI_E2E_BIN_DIR")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&cache);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs the Go toolchain"), "{err}");
}
