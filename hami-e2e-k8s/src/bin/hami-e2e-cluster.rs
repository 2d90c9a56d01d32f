//! Starts and stops the local cluster by hand, and builds its binaries.
//!
//! ```text
//! cargo run -p hami-e2e-k8s --bin hami-e2e-cluster -- up --nodes 2 --gpus 8
//! cargo run -p hami-e2e-k8s --bin hami-e2e-cluster -- build
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use hami_e2e_k8s::local::bincache::{BinaryCache, KubernetesRelease};
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};

/// The local Kubernetes cluster of hami-e2e (real control plane, KWOK nodes).
#[derive(Debug, Parser)]
#[command(name = "hami-e2e-cluster", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a cluster, print its kubeconfig, and run until Ctrl-C (or SIGTERM), then stop it.
    Up {
        /// Kubernetes version (e.g. 1.36) [default: the newest supported].
        #[arg(long, env = "HAMI_E2E_K8S_VERSION")]
        k8s_version: Option<String>,
        /// Fake nodes to add, named `node-0`, `node-1`, ...
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// `nvidia.com/gpu` capacity of each node (0 for none).
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        /// Also copy the kubeconfig here.
        #[arg(long, value_name = "PATH")]
        kubeconfig_out: Option<PathBuf>,
    },
    /// Build (or find in the cache) the binaries, and print where they are.
    Build {
        /// Kubernetes version (e.g. 1.36) [default: the newest supported].
        #[arg(long, env = "HAMI_E2E_K8S_VERSION")]
        k8s_version: Option<String>,
    },
}

async fn up(
    k8s_version: Option<String>,
    nodes: usize,
    gpus: u32,
    kubeconfig_out: Option<PathBuf>,
) -> hami_e2e_k8s::Result<()> {
    let release = KubernetesRelease::find(k8s_version.as_deref())?;
    let mut options = LocalClusterOptions::default().release(release);
    for i in 0..nodes {
        let mut node = NodeSpec::new(format!("node-{i}"));
        if gpus > 0 {
            node = node.capacity("nvidia.com/gpu", gpus.to_string());
        }
        options = options.node(node);
    }
    let started = Instant::now();
    let cluster = LocalCluster::start(options).await?;
    if let Some(out) = &kubeconfig_out {
        std::fs::copy(cluster.kubeconfig(), out).map_err(|source| hami_e2e_k8s::Error::Io {
            action: "copy the kubeconfig to",
            path: out.clone(),
            source,
        })?;
    }
    let kubeconfig = kubeconfig_out
        .as_deref()
        .unwrap_or(cluster.kubeconfig())
        .display()
        .to_string();
    println!(
        "local cluster {} ready at {} in {:.1}s with {nodes} node(s)",
        cluster.version(),
        cluster.server(),
        started.elapsed().as_secs_f64()
    );
    println!("kubeconfig: {kubeconfig}");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("logs: {}", cluster.dir().join("logs").display());
    let pids: Vec<String> = cluster
        .pids()
        .iter()
        .map(|(c, pid)| format!("{c}={pid}"))
        .collect();
    println!("pids: {}", pids.join(" "));
    println!("Press Ctrl-C to stop.");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| hami_e2e_k8s::Error::Io {
            action: "listen for SIGTERM on",
            path: PathBuf::from("/proc/self"),
            source,
        })?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping the local cluster ...");
    cluster.stop().await?;
    if kubeconfig_out.is_some() {
        eprintln!("(the copied kubeconfig {kubeconfig} now points at nothing)");
    }
    println!("stopped");
    Ok(())
}

async fn build(k8s_version: Option<String>) -> hami_e2e_k8s::Result<()> {
    let release = KubernetesRelease::find(k8s_version.as_deref())?;
    let cache = BinaryCache::default();
    let (k8s, kwok) = futures::try_join!(cache.kubernetes(&release), cache.kwok())?;
    for (name, path) in [
        ("kube-apiserver", &k8s.apiserver),
        ("kube-controller-manager", &k8s.controller_manager),
        ("kube-scheduler", &k8s.scheduler),
        ("etcd", &k8s.etcd),
        ("kwok", &kwok.kwok),
    ] {
        println!("{name}: {}", path.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    hami_e2e_core::init_tracing();
    let result = match cli.command {
        Command::Up {
            k8s_version,
            nodes,
            gpus,
            kubeconfig_out,
        } => up(k8s_version, nodes, gpus, kubeconfig_out).await,
        Command::Build { k8s_version } => build(k8s_version).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", hami_e2e_core::Failure::from(e).report());
            ExitCode::FAILURE
        }
    }
}
