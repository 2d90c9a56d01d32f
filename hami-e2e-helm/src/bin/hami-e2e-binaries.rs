//! Builds (or finds) the binaries that deploy HAMi, the way the tests do, and prints what
//! it got: the HAMi scheduler of the release `HAMI_E2E_HAMI_VERSION` names (or of every
//! pinned release with `--all-releases`), HAMi's chart folder, and helm.
//!
//! ```text
//! cargo run -p hami-e2e-helm --bin hami-e2e-binaries -- build [--all-releases]
//! cargo run -p hami-e2e-helm --bin hami-e2e-binaries -- helm
//! ```
//!
//! `helm` builds (or finds) helm alone: HAMi's Go module is not served by every Go module
//! proxy, and CI here builds only helm.

use std::process::ExitCode;

use hami_e2e_helm::binaries::{self, HAMI_RELEASES, HamiRelease};
use hami_e2e_k8s::bincache::BinaryCache;

const USAGE: &str = "usage: hami-e2e-binaries build [--all-releases] | helm";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["build"] => Some(false),
        ["build", "--all-releases"] => Some(true),
        ["helm"] => None,
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match build(all).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "hami-e2e-binaries: {}",
                hami_e2e_core::Failure::from(e).report()
            );
            ExitCode::FAILURE
        }
    }
}

async fn build(all: Option<bool>) -> hami_e2e_helm::Result<()> {
    let cache = BinaryCache::default();
    let releases = match all {
        Some(true) => HAMI_RELEASES.to_vec(),
        Some(false) => vec![HamiRelease::from_env()?],
        None => Vec::new(),
    };
    for release in &releases {
        let scheduler = binaries::hami_scheduler(&cache, release).await?;
        println!(
            "hami-scheduler {} ({}, {}): {}",
            scheduler.version,
            release.pseudo_version(),
            scheduler.source,
            scheduler.path.display()
        );
        let chart = binaries::hami_module_dir(&cache, release)
            .await?
            .join("charts/hami");
        println!("hami chart {}: {}", release.version(), chart.display());
    }
    let helm = binaries::helm(&cache).await?;
    println!(
        "helm {} ({}): {}",
        helm.version,
        helm.source,
        helm.path.display()
    );
    Ok(())
}
