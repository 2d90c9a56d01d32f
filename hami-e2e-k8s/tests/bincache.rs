//! Builds the local cluster's binaries with the machine's Go, through the same code path a
//! first `cargo test` takes, and checks what came out. Slow the first time (minutes), then
//! served from the cache.

use std::process::Command;
use std::time::{Duration, Instant};

use hami_e2e_k8s::local::bincache::{BinaryCache, KubernetesRelease};

fn version_of(binary: &std::path::Path) -> String {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .expect("binary runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn kwok_is_built_once_with_its_stages() {
    let cache = BinaryCache::default();
    let kwok = cache.kwok().await.expect("kwok builds");
    assert!(
        version_of(&kwok.kwok).starts_with(&format!("kwok version {}", kwok.version)),
        "{}",
        version_of(&kwok.kwok)
    );
    assert_eq!(kwok.stages.len(), 6);
    for stage in &kwok.stages {
        let text = std::fs::read_to_string(stage).expect("stage copied");
        assert!(text.contains("kind: Stage"), "{}", stage.display());
    }
    let marker = kwok.kwok.parent().unwrap().join(".complete");
    let before = std::fs::metadata(&marker).unwrap().modified().unwrap();
    let started = Instant::now();
    cache.kwok().await.expect("cached");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a cached binary is not rebuilt"
    );
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        before
    );
}

#[tokio::test]
async fn control_plane_reports_the_pinned_version() {
    let release = KubernetesRelease::from_env().expect("supported version");
    let bins = BinaryCache::default()
        .kubernetes(&release)
        .await
        .expect("control plane builds");
    for b in [&bins.apiserver, &bins.controller_manager, &bins.scheduler] {
        assert_eq!(
            version_of(b).trim(),
            format!("Kubernetes {}", release.version()),
            "{}",
            b.display()
        );
    }
    let etcd = version_of(&bins.etcd);
    assert!(
        etcd.contains(release.etcd_version().trim_start_matches('v')),
        "{etcd}"
    );
}
