//! The runner: selects scenarios, runs them in parallel under timeouts and retries, tears
//! fixtures down whatever happens, and feeds the reporters.
//!
//! Split as nextest splits its runner:
//!
//! - `plan`: which scenarios run, the `--list` and `--dry-run` output, and the reports of
//!   scenarios that never start;
//! - `dispatch`: the one loop that owns the run (as in nextest's dispatcher). It starts
//!   scenario tasks as parallelism and device admission (`admit`) allow, collects their
//!   reports, and handles the signals (`signals`) that cancel the run; the reporters' loop
//!   is the only consumer of events;
//! - `execute`: one scenario: attempts, retries, timeouts, panics, teardown. Bodies run in
//!   tasks of their own, so a panic or a timeout drops the body but never the teardown;
//! - `probe`: the capability probe, found at most once per run, for admission and
//!   requirements;
//! - `conclusion`: what a run returns, and the process's exit codes.

mod admit;
mod conclusion;
mod dispatch;
mod execute;
mod plan;
mod probe;
mod signals;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub use conclusion::{Conclusion, exit_code};

use crate::args::{Args, RunConfig};
use crate::error::{Error, Result};
use crate::failure::Failure;
use crate::fixture::{ErasedFixture, Fixture, FixtureContext, Registry};
use crate::report::Reporter;
use crate::requirement::Capabilities;
use crate::scenario::Scenario;
use plan::Plan;
use probe::{Probe, Prober};

/// Registers scenarios and fixtures, then runs them.
///
/// # Examples
///
/// A complete suite binary (`[[test]] harness = false`):
///
/// ```no_run
/// use hami_e2e_core::{ensure, scenario, Runner};
///
/// fn main() -> std::process::ExitCode {
///     Runner::new()
///         .scenario(scenario("smoke/arithmetic").label("smoke").run(|ctx| async move {
///             let sum = ctx.step("add", async { Ok::<_, hami_e2e_core::Failure>(1 + 1) }).await?;
///             ensure!(sum == 2, "1 + 1 = {sum}");
///             Ok(())
///         }))
///         .main()
/// }
/// ```
///
/// Running in-process, as tests of the runner do:
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hami_e2e_core::{scenario, Failure, RunConfig, Runner};
///
/// let mut config = RunConfig::default();
/// config.human_output = false;
/// let conclusion = Runner::new()
///     .scenario(scenario("a").run(|_| async { Ok(()) }))
///     .scenario(scenario("b").run(|_| async { Err(Failure::assertion("no")) }))
///     .run(config)
///     .await?;
/// let summary = conclusion.summary().unwrap();
/// assert_eq!((summary.passed(), summary.failed()), (1, 1));
/// # Ok::<(), hami_e2e_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Default)]
pub struct Runner {
    scenarios: Vec<Arc<dyn Scenario>>,
    registry: Registry,
    probe: Option<Probe>,
    reporters: Vec<Box<dyn Reporter>>,
}

/// Initialises `tracing` output on stderr from `RUST_LOG` (default: warnings, and info from
/// the hami-e2e crates), coloured only when stderr is a terminal and `NO_COLOR` is unset (so
/// a log file or a CI log has no escape codes). Does nothing if a subscriber is already set.
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,hami_e2e=info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .try_init();
}

impl Runner {
    /// An empty runner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a scenario.
    #[must_use]
    pub fn scenario(mut self, scenario: impl Scenario) -> Self {
        self.scenarios.push(Arc::new(scenario));
        self
    }

    /// Adds scenarios.
    #[must_use]
    pub fn scenarios(mut self, scenarios: impl IntoIterator<Item = Arc<dyn Scenario>>) -> Self {
        self.scenarios.extend(scenarios);
        self
    }

    /// Registers a fixture; scenarios get it with
    /// [`Context::fixture`](crate::Context::fixture). Registering a second fixture of the
    /// same type replaces the first.
    #[must_use]
    pub fn fixture<F: Fixture>(mut self, fixture: F) -> Self {
        self.registry.insert(
            std::any::TypeId::of::<F>(),
            Arc::new(fixture) as Arc<dyn ErasedFixture>,
        );
        self
    }

    /// Sets the probe that finds out what the system under test offers. It runs at most
    /// once per run, the first time a selected scenario has requirements, and may use
    /// run-scoped fixtures. Without a probe, every requirement is unmet.
    #[must_use]
    pub fn probe<F, Fut>(mut self, probe: F) -> Self
    where
        F: Fn(FixtureContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Capabilities, Failure>> + Send + 'static,
    {
        self.probe = Some(Arc::new(move |ctx| Box::pin(probe(ctx))));
        self
    }

    /// Adds a reporter besides those the configuration asks for.
    #[must_use]
    pub fn reporter(mut self, reporter: impl Reporter + 'static) -> Self {
        self.reporters.push(Box::new(reporter));
        self
    }

    /// Parses the process's arguments (and `HAMI_E2E_*` variables), runs, and returns the
    /// exit code. Initialises tracing and handles SIGINT/SIGTERM. Use it as the `main` of
    /// a `harness = false` test target.
    pub fn main(self) -> ExitCode {
        let args = <Args as clap::Parser>::parse();
        self.main_with_args(&args)
    }

    /// Like [`Runner::main`], with arguments parsed by the caller (for suites whose parser
    /// flattens [`Args`] into a larger one).
    pub fn main_with_args(self, args: &Args) -> ExitCode {
        init_tracing();
        let config = match RunConfig::from_args(args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit_code::USAGE);
            }
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: {}", Error::Runtime(e));
                return ExitCode::from(exit_code::FAILED);
            }
        };
        let result = runtime.block_on(self.run(config));
        runtime.shutdown_timeout(Duration::from_secs(5));
        match result {
            Ok(conclusion) => {
                for e in conclusion.report_errors() {
                    eprintln!("error: {e}");
                }
                conclusion.exit_code()
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(exit_code::USAGE)
            }
        }
    }

    /// Runs the selected scenarios.
    ///
    /// # Errors
    ///
    /// Invalid or duplicate scenario names and labels, or a report file that cannot be
    /// created. Scenario failures are not errors: they are in the [`Conclusion`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future skips teardown. Cancel a run through SIGINT
    /// (with `handle_signals`) instead.
    pub async fn run(self, config: RunConfig) -> Result<Conclusion> {
        let plan = Plan::select(&self.scenarios, &config)?;
        if let Some(format) = config.list {
            plan.list(format);
            return Ok(Conclusion::new(None, Vec::new(), None));
        }
        if config.dry_run {
            plan.print(&config);
            return Ok(Conclusion::new(None, Vec::new(), None));
        }
        dispatch::run(
            plan,
            config,
            self.registry,
            Prober::new(self.probe),
            self.reporters,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        let run = Runner::new().run(RunConfig::default());
        send(&run);
    }
}
