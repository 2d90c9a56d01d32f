//! Device-aware admission on the suite's real scenarios: the full suite at `--parallel 8`
//! on a fresh local cluster (one fake device pool node of four whole devices per vendor),
//! once with admission and once without (`--admission off`: every scenario is handed the
//! devices it would get with nothing else running, as a suite that does not track devices
//! would pick "the first GPU node"). Prints the wall time and the failures of each run; the
//! failures of the run without admission are the ones contention caused.
//!
//! `cargo bench -p hami-e2e-suite --bench admission` (`HAMI_E2E_BENCH_ROUNDS=N` repeats).

use std::time::{Duration, Instant};

use clap::Parser;
use hami_e2e_core::{Outcome, RunConfig, format_duration};
use hami_e2e_suite::{Suite, SuiteArgs};

fn main() -> std::process::ExitCode {
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        eprintln!("error: unset KUBECONFIG: this benchmark starts local clusters of its own");
        return std::process::ExitCode::from(2);
    }
    let rounds: u32 = std::env::var("HAMI_E2E_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for admission in ["on", "off"] {
            let args =
                SuiteArgs::parse_from(["bench", "--parallel", "8", "--admission", admission]);
            let mut config = match RunConfig::from_args(&args.core) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            config.human_output = false;
            config.handle_signals = false;
            let started = Instant::now();
            let conclusion = match runtime.block_on(Suite::new().runner(&args).run(config)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let wall = started.elapsed();
            let Some(summary) = conclusion.summary() else {
                return std::process::ExitCode::FAILURE;
            };
            let failures: Vec<String> = summary
                .scenarios
                .iter()
                .filter_map(|r| match &r.outcome {
                    Outcome::Failed { message, .. } => Some(format!(
                        "{}: {}",
                        r.scenario,
                        message.lines().next().unwrap_or_default()
                    )),
                    _ => None,
                })
                .collect();
            let queued: Duration = summary
                .scenarios
                .iter()
                .filter(|r| !r.devices.is_empty())
                .map(|r| r.queued)
                .sum();
            // The capacity scenarios' "... and runs" steps: a pod asking for devices its
            // scenario holds; their time is the scheduler's plus, under contention, the wait
            // for devices another scenario's pods hold.
            let pod_waits: Vec<Duration> = summary
                .scenarios
                .iter()
                .flat_map(|r| &r.steps)
                .filter(|s| s.name.ends_with("and runs"))
                .filter_map(|s| s.duration)
                .collect();
            let pod_total: Duration = pod_waits.iter().sum();
            let pod_max = pod_waits.iter().max().copied().unwrap_or_default();
            println!(
                "round {round}, admission {admission:>3}: {} passed, {} failed, {} skipped in {}; device scenarios waited {} to start; {} device pods took {} to run ({} at most)",
                summary.passed(),
                summary.failed(),
                summary.skipped(),
                format_duration(wall),
                format_duration(queued),
                pod_waits.len(),
                format_duration(pod_total),
                format_duration(pod_max)
            );
            for f in &failures {
                println!("    failed: {f}");
            }
            rows.push((admission, wall, summary.failed(), pod_total, pod_max));
        }
    }
    println!(
        "\n| admission | runs | wall time (median) | failures (total) | device pods' time to run, per run (median) | slowest device pod |"
    );
    println!("|---|---|---|---|---|---|");
    for admission in ["on", "off"] {
        let mut walls: Vec<Duration> = rows
            .iter()
            .filter(|r| r.0 == admission)
            .map(|r| r.1)
            .collect();
        walls.sort();
        let failed: usize = rows.iter().filter(|r| r.0 == admission).map(|r| r.2).sum();
        let mut pods: Vec<Duration> = rows
            .iter()
            .filter(|r| r.0 == admission)
            .map(|r| r.3)
            .collect();
        pods.sort();
        let slowest = rows
            .iter()
            .filter(|r| r.0 == admission)
            .map(|r| r.4)
            .max()
            .unwrap_or_default();
        println!(
            "| {admission} | {} | {} | {failed} | {} | {} |",
            walls.len(),
            format_duration(walls[walls.len() / 2]),
            format_duration(pods[pods.len() / 2]),
            format_duration(slowest)
        );
    }
    std::process::ExitCode::SUCCESS
}
