//! `cargo bench -p hami-e2e-core`: the runner's own cost, not any system under test.
//!
//! - overhead per scenario: 10,000 no-op scenarios at `--parallel 8` (target: under 20 µs);
//! - parallel speed-up: 32 scenarios that each wait 200 ms, at `--parallel 32` vs `--parallel 1`
//!   (expect about 32x);
//! - admission: 10,000 no-op scenarios that each hold one whole device of eight, at
//!   `--parallel 8`, in this process and through an admission file (as under nextest).
//!
//! Prints the figures; the README's performance section records them.

use std::time::{Duration, Instant};

use hami_e2e_core::{Capabilities, Demand, PoolDevice, RunConfig, Runner, scenario};

fn config(parallel: usize) -> RunConfig {
    let mut c = RunConfig::default();
    c.human_output = false;
    c.parallel = parallel;
    c
}

async fn noop_run(n: usize, parallel: usize) -> Duration {
    let runner = (0..n).fold(Runner::new(), |r, i| {
        r.scenario(scenario(format!("noop/{i:05}")).run(|_| async { Ok(()) }))
    });
    let start = Instant::now();
    let conclusion = runner.run(config(parallel)).await.expect("valid suite");
    let elapsed = start.elapsed();
    assert_eq!(conclusion.summary().map(|s| s.passed()), Some(n));
    elapsed
}

/// `n` no-op scenarios that each hold one of eight whole devices; `file`: admission through
/// a shared file.
async fn admitted_run(n: usize, file: Option<std::path::PathBuf>) -> Duration {
    let runner = (0..n).fold(
        Runner::new().probe(|_ctx| async {
            let mut caps = Capabilities::default();
            for i in 0..8 {
                caps = caps.with_device(PoolDevice::new(
                    "gpu",
                    format!("node-{}", i / 4),
                    format!("gpu-{i}"),
                    16384,
                ));
            }
            Ok(caps)
        }),
        |r, i| {
            r.scenario(
                scenario(format!("gpu/{i:05}"))
                    .demand(Demand::devices("gpu", 1).exclusive())
                    .run(|_| async { Ok(()) }),
            )
        },
    );
    let mut c = config(8);
    c.admission_file = file;
    let start = Instant::now();
    let conclusion = runner.run(c).await.expect("valid suite");
    let elapsed = start.elapsed();
    assert_eq!(conclusion.summary().map(|s| s.passed()), Some(n));
    elapsed
}

async fn sleepy_run(parallel: usize) -> Duration {
    let runner = (0..32).fold(Runner::new(), |r, i| {
        r.scenario(scenario(format!("sleep/{i:02}")).run(|_| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        }))
    });
    let start = Instant::now();
    let conclusion = runner.run(config(parallel)).await.expect("valid suite");
    assert!(conclusion.success());
    start.elapsed()
}

fn main() {
    // `cargo test --benches` runs bench targets with `--test`-like flags; only `--bench` measures.
    if !std::env::args().any(|a| a == "--bench") {
        println!("runner benchmark: run with `cargo bench -p hami-e2e-core`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        noop_run(1000, 8).await; // warm-up
        let mut runs: Vec<Duration> = Vec::new();
        for _ in 0..5 {
            runs.push(noop_run(10_000, 8).await);
        }
        runs.sort();
        let median = runs[runs.len() / 2];
        let per = median.as_secs_f64() * 1e6 / 10_000.0;
        println!(
            "overhead: 10000 no-op scenarios at --parallel 8: median {:.1} ms over 5 runs ({:.1} µs per scenario; min {:.1} µs, max {:.1} µs; target < 20 µs)",
            median.as_secs_f64() * 1e3,
            per,
            runs[0].as_secs_f64() * 1e2,
            runs[runs.len() - 1].as_secs_f64() * 1e2,
        );
        let admitted = admitted_run(10_000, None).await;
        let file = std::env::temp_dir().join(format!("hami-e2e-bench-admission-{}.json", std::process::id()));
        let shared = admitted_run(10_000, Some(file.clone())).await;
        assert!(!file.exists(), "the last release removes the file");
        println!(
            "admission: 10000 no-op scenarios holding 1 of 8 devices at --parallel 8: {:.1} µs per scenario in this process, {:.1} µs through an admission file",
            admitted.as_secs_f64() * 1e6 / 10_000.0,
            shared.as_secs_f64() * 1e6 / 10_000.0,
        );
        let serial = sleepy_run(1).await;
        let parallel = sleepy_run(32).await;
        println!(
            "parallelism: 32 scenarios x 200 ms: --parallel 1 {:.2} s, --parallel 32 {:.3} s, speed-up {:.1}x (ideal 32x)",
            serial.as_secs_f64(),
            parallel.as_secs_f64(),
            serial.as_secs_f64() / parallel.as_secs_f64()
        );
    });
}
