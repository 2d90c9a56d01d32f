//! HAMi's official end-to-end scenarios, as a library that downstream forks extend.
//!
//! For now the suite holds scenarios that exercise the runner without a cluster, so that
//! `cargo test -p hami-e2e-suite` runs on any machine; the suite issue replaces them with
//! HAMi's scenarios on the local cluster or a real one.
//!
//! ```
//! let names: Vec<String> = hami_e2e_suite::scenarios().iter().map(|s| s.name().to_string()).collect();
//! assert!(names.contains(&"runner::steps".to_string()));
//! ```

use std::sync::Arc;
use std::time::Duration;

use hami_e2e_core::{Failure, Scenario, ensure, scenario};

/// The suite's scenarios.
pub fn scenarios() -> Vec<Arc<dyn Scenario>> {
    vec![
        Arc::new(
            scenario("runner/steps")
                .label("smoke")
                .run(|ctx| async move {
                    let n = ctx
                        .step("count to three", async {
                            Ok::<_, Failure>((1..=3).sum::<u32>())
                        })
                        .await?;
                    ensure!(n == 6, "1 + 2 + 3 = {n}");
                    Ok(())
                }),
        ),
        Arc::new(
            scenario("runner/deferred-cleanup")
                .label("smoke")
                .run(|ctx| async move {
                    let marker = std::env::temp_dir().join(format!(
                        "hami-e2e-{}-{}",
                        ctx.run_id(),
                        std::process::id()
                    ));
                    let m = marker.clone();
                    ctx.defer("remove marker", async move {
                        std::fs::remove_file(&m)?;
                        Ok(())
                    });
                    std::fs::write(&marker, b"")?;
                    ensure!(marker.exists(), "marker written");
                    Ok(())
                }),
        ),
        Arc::new(scenario("runner/cancellation-aware").run(|ctx| async move {
            let waited = tokio::select! {
                _ = ctx.cancelled() => false,
                _ = tokio::time::sleep(Duration::from_millis(50)) => true,
            };
            ensure!(
                waited && !ctx.is_cancelled(),
                "not cancelled within its timeout"
            );
            Ok(())
        })),
    ]
}

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
