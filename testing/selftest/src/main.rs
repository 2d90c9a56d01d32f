//! A suite binary whose scenarios pass, fail, panic, time out and hang on purpose, for
//! the integration tests in `tests/` that drive it as a child process (as `cargo test` and
//! `cargo nextest` do) and check exit codes, signals, listings and cleanup. Its `runner::`
//! scenarios check the runner from inside a scenario (steps, deferred clean-up,
//! cancellation) and pass.
//!
//! With `SELFTEST_MARKERS=<dir>`, fixtures and scenarios leave marker files there
//! (`run-setup`, `run-teardown`, `<slug>-setup`, `<slug>-teardown`, `<slug>-started`), so a
//! test can see what ran even after the process was killed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hami_e2e_core::{
    Failure, Fixture, FixtureContext, Runner, Scenario, Scope, TeardownContext, bail, ensure,
    scenario, slug,
};

fn mark(name: &str) {
    if let Some(dir) = std::env::var_os("SELFTEST_MARKERS") {
        let dir = PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(name), b"");
    }
}

/// Run-scoped: set up once per process.
struct RunMarker;

impl Fixture for RunMarker {
    type Output = ();
    fn scope(&self) -> Scope {
        Scope::Run
    }
    async fn setup(&self, _: &FixtureContext) -> Result<(), Failure> {
        mark("run-setup");
        Ok(())
    }
    async fn teardown(&self, _: &(), _: &TeardownContext) -> Result<(), Failure> {
        mark("run-teardown");
        Ok(())
    }
}

/// Scenario-scoped, on top of the run-scoped one. `SELFTEST_SLOW_TEARDOWN=1` makes its
/// teardown take 5 s, so a test can interrupt it.
struct ScenarioMarker;

impl Fixture for ScenarioMarker {
    type Output = String;
    async fn setup(&self, ctx: &FixtureContext) -> Result<String, Failure> {
        ctx.fixture::<RunMarker>().await?;
        let s = slug(ctx.scenario().unwrap_or_default());
        mark(&format!("{s}-setup"));
        Ok(s)
    }
    async fn teardown(&self, s: &String, _: &TeardownContext) -> Result<(), Failure> {
        if std::env::var_os("SELFTEST_SLOW_TEARDOWN").is_some() {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        mark(&format!("{s}-teardown"));
        Ok(())
    }
}

/// The runner's own checks, run as scenarios: a step's value comes back, a deferred
/// clean-up runs after the body, and a scenario that waits on its cancellation is not
/// cancelled within its timeout.
fn runner_scenarios() -> Vec<Arc<dyn Scenario>> {
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

fn main() -> ExitCode {
    Runner::new()
        .fixture(RunMarker)
        .fixture(ScenarioMarker)
        .scenario(scenario("basic/pass").label("smoke").run(|ctx| async move {
            ctx.fixture::<ScenarioMarker>().await?;
            ctx.step("do nothing", async { Ok::<_, Failure>(()) }).await
        }))
        .scenario(
            scenario("basic/fail")
                .label("broken")
                .run(|ctx| async move {
                    ctx.fixture::<ScenarioMarker>().await?;
                    ctx.step("check the answer", async {
                        Err::<(), _>(Failure::assertion("expected 42, got 41"))
                    })
                    .await
                }),
        )
        .scenario(
            scenario("basic/panic")
                .label("broken")
                .run(|ctx| async move {
                    ctx.fixture::<ScenarioMarker>().await?;
                    panic!("deliberate panic");
                }),
        )
        .scenario(
            scenario("basic/timeout")
                .label("broken")
                .timeout(Duration::from_millis(300))
                .run(|ctx| async move {
                    ctx.fixture::<ScenarioMarker>().await?;
                    ctx.step("sleep past the timeout", async {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok::<(), Failure>(())
                    })
                    .await
                }),
        )
        .scenario(
            scenario("other/labelled")
                .labels(["smoke", "slow"])
                .run(|_| async { Ok(()) }),
        )
        .scenario(
            scenario("signal/hang")
                .ignore("waits for a signal")
                .run(|ctx| async move {
                    let s = ctx.fixture::<ScenarioMarker>().await?;
                    mark(&format!("{s}-started"));
                    std::future::pending::<()>().await;
                    bail!("unreachable");
                }),
        )
        .scenarios(runner_scenarios())
        .main()
}
