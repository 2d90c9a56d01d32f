//! A suite binary whose scenarios pass, fail, panic, time out and hang on purpose, for
//! the integration tests in `tests/` that drive it as a child process (as `cargo test` and
//! `cargo nextest` do) and check exit codes, signals, listings and cleanup.
//!
//! With `SELFTEST_MARKERS=<dir>`, fixtures and scenarios leave marker files there
//! (`run-setup`, `run-teardown`, `<slug>-setup`, `<slug>-teardown`, `<slug>-started`), so a
//! test can see what ran even after the process was killed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hami_e2e_core::{
    Failure, Fixture, FixtureContext, Runner, Scope, TeardownContext, bail, scenario, slug,
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
        .main()
}
