//! Builds (or finds) the binaries that deploy HAMi, the way the tests do, and prints what
//! it got: the HAMi scheduler of the release `HAMI_E2E_HAMI_VERSION` names (or of every
//! pinned release with `--all-releases`) and where it came from, HAMi's chart folder, and
//! helm.
//!
//! ```text
//! cargo run -p hami-e2e-helm --bin hami-e2e-binaries -- build [--all-releases]
//! cargo run -p hami-e2e-helm --bin hami-e2e-binaries -- helm
//! ```
//!
//! The scheduler is found as the tests find it ([`binaries::find_hami_scheduler`]): the
//! binary `HAMI_E2E_HAMI_SCHEDULER` names, else the HAMi checkout `HAMI_E2E_HAMI_SOURCE`
//! names (built; its chart is `charts/hami` of the checkout), else the pinned release's Go
//! module (built). When neither variable is set and the module cannot be built (HAMi's Go
//! module is not served by every Go module proxy), `build` says why, still builds helm,
//! and exits with status 3, the tests' skip; a set but unusable variable exits with 1.
//!
//! `helm` builds (or finds) helm alone, for runs that deploy HAMi only with Helm.

use std::process::ExitCode;

use hami_e2e_core::Failure;
use hami_e2e_helm::binaries::{self, BinarySource, FindSchedulerError, HAMI_RELEASES, HamiRelease};
use hami_e2e_k8s::local::bincache::BinaryCache;

const USAGE: &str = "usage: hami-e2e-binaries build [--all-releases] | helm";

/// The exit status when no HAMi scheduler can be had and none was given.
const UNAVAILABLE: u8 = 3;

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
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(UNAVAILABLE),
        Err(e) => {
            eprintln!("hami-e2e-binaries: {}", e.report());
            ExitCode::FAILURE
        }
    }
}

/// Builds what `all` asks for; `Ok(false)` when a HAMi scheduler is unavailable.
async fn build(all: Option<bool>) -> Result<bool, Failure> {
    let cache = BinaryCache::default();
    let releases = match all {
        Some(true) => HAMI_RELEASES.to_vec(),
        Some(false) => vec![HamiRelease::from_env()?],
        None => Vec::new(),
    };
    let mut complete = true;
    for release in &releases {
        let scheduler = match binaries::find_hami_scheduler(&cache, release).await {
            Ok(scheduler) => scheduler,
            Err(FindSchedulerError::Unavailable { reason }) => {
                println!(
                    "hami-scheduler {}: unavailable: {reason}",
                    release.version()
                );
                complete = false;
                continue;
            }
            Err(failed) => return Err(failed.into()),
        };
        let source = match &scheduler.source {
            BinarySource::Built { .. } => {
                format!("{}, {}", scheduler.source, release.pseudo_version())
            }
            other => other.to_string(),
        };
        println!(
            "hami-scheduler {} ({source}): {}",
            scheduler.version,
            scheduler.path.display()
        );
        let chart = match &scheduler.source {
            BinarySource::Source { dir, .. } => dir.join("charts/hami"),
            _ => binaries::hami_module_dir(&cache, release)
                .await?
                .join("charts/hami"),
        };
        println!("hami chart {}: {}", release.version(), chart.display());
    }
    let helm = binaries::helm(&cache).await?;
    println!(
        "helm {} ({}): {}",
        helm.version,
        helm.source,
        helm.path.display()
    );
    Ok(complete)
}
