//! The runner: selects scenarios, runs them in parallel under timeouts and retries, tears
//! fixtures down whatever happens, and feeds the reporters.
//!
//! One loop owns the run (as in nextest's dispatcher): it starts scenario tasks as
//! parallelism allows, and every task reports back through events; the reporters' loop
//! is the only consumer. Bodies run in tasks of their own, so a panic or a timeout drops
//! the body but never the teardown, which the scenario's task runs afterwards.

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::args::{Args, IgnoredMode, ListFormat, RunConfig};
use crate::cancel::CancelToken;
use crate::context::Context;
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::event::{EventKind, FailureReason, Outcome, RunSummary, ScenarioReport};
use crate::failure::Failure;
use crate::fixture::{
    ErasedFixture, Fixture, FixtureContext, Registry, RetryPolicy, RunShared, ScenarioShared,
    ScopeState, TeardownContext,
};
use crate::report::{HtmlReporter, HumanReporter, JsonReporter, JunitReporter, Reporter};
use crate::requirement::Capabilities;
use crate::scenario::{Scenario, slug, validate};
use crate::sink::EventSink;

/// Process exit codes of a suite binary.
pub mod exit_code {
    /// Every selected scenario passed or was skipped.
    pub const SUCCESS: u8 = 0;
    /// Bad arguments or `HAMI_E2E_*` values.
    pub const USAGE: u8 = 2;
    /// A scenario failed, a teardown failed, or a report could not be written (libtest's code).
    pub const FAILED: u8 = 101;
    /// The run was cancelled by SIGINT/SIGTERM and cleaned up.
    pub const INTERRUPTED: u8 = 130;
}

type Probe =
    Arc<dyn Fn(FixtureContext) -> BoxFuture<'static, Result<Capabilities, Failure>> + Send + Sync>;

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

/// The result of [`Runner::run`].
#[derive(Debug)]
#[must_use = "return `exit_code()` from main, or the run's failures are lost"]
pub struct Conclusion {
    summary: Option<RunSummary>,
    report_errors: Vec<String>,
}

impl Conclusion {
    /// The run's summary; `None` for `--list` and `--dry-run`.
    pub fn summary(&self) -> Option<&RunSummary> {
        self.summary.as_ref()
    }

    /// Errors writing reports (JUnit, JSON).
    pub fn report_errors(&self) -> &[String] {
        &self.report_errors
    }

    /// Whether everything passed and every report was written.
    pub fn success(&self) -> bool {
        self.report_errors.is_empty() && self.summary.as_ref().is_none_or(RunSummary::success)
    }

    /// The process exit code, see [`exit_code`].
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_code_u8())
    }

    fn exit_code_u8(&self) -> u8 {
        match &self.summary {
            Some(s) if s.cancelled => exit_code::INTERRUPTED,
            _ if self.success() => exit_code::SUCCESS,
            _ => exit_code::FAILED,
        }
    }
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

    /// Registers a fixture; scenarios get it with [`Context::fixture`]. Registering a second
    /// fixture of the same type replaces the first.
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
        let mut names = HashSet::new();
        for s in &self.scenarios {
            validate(s.as_ref())?;
            if !names.insert(s.name().to_string()) {
                return Err(Error::DuplicateScenario {
                    name: s.name().to_string(),
                });
            }
        }
        let mut scenarios = self.scenarios.clone();
        scenarios.sort_by(|a, b| a.name().cmp(b.name()));

        let mut to_run = Vec::new();
        let mut ignored = Vec::new();
        let mut filtered_out = 0;
        for s in scenarios {
            let labels_match = config.labels.as_ref().is_none_or(|l| l.matches(s.labels()));
            if !config.names.matches(s.name()) || !labels_match {
                filtered_out += 1;
                continue;
            }
            match (config.ignored, s.ignored()) {
                (IgnoredMode::Only, None) => filtered_out += 1,
                (IgnoredMode::Skip, Some(reason)) => ignored.push((s.clone(), reason.to_string())),
                _ => to_run.push(s),
            }
        }

        if let Some(format) = config.list {
            let mut listed: Vec<_> = to_run
                .iter()
                .chain(ignored.iter().map(|(s, _)| s))
                .map(|s| s.name())
                .collect();
            listed.sort_unstable();
            let mut out = std::io::stdout().lock();
            for name in &listed {
                let _ = writeln!(out, "{name}: test");
            }
            if format == ListFormat::Pretty {
                let _ = writeln!(out, "\n{} tests, 0 benchmarks", listed.len());
            }
            return Ok(Conclusion {
                summary: None,
                report_errors: Vec::new(),
            });
        }
        if config.dry_run {
            print_plan(&to_run, &ignored, filtered_out, &config);
            return Ok(Conclusion {
                summary: None,
                report_errors: Vec::new(),
            });
        }

        let mut reporters = self.reporters;
        let repeated = config.repeat > 1 || config.until_it_fails;
        if config.human_output {
            reporters.insert(
                0,
                Box::new(
                    HumanReporter::stdout()
                        .quiet(config.quiet)
                        .repeated(repeated),
                ),
            );
        }
        if let Some(path) = &config.junit {
            reporters.push(Box::new(JunitReporter::new(path)));
        }
        if let Some(path) = &config.json {
            reporters.push(Box::new(JsonReporter::create(path)?));
        }
        if let Some(path) = &config.html {
            reporters.push(Box::new(HtmlReporter::new(path)));
        }

        let start = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let reporter_loop = tokio::spawn(report_loop(reporters, rx, stop_rx));
        let events = EventSink::new(Some(tx), start);
        let run = Arc::new(RunShared {
            run_id: new_run_id(),
            registry: self.registry,
            scope: ScopeState::default(),
            events: events.clone(),
            cancel: CancelToken::new(),
            retry: RetryPolicy {
                retries: config.retries,
                min_delay: config.retry_delay,
                max_delay: Duration::from_secs(30),
            },
            artifacts_root: config.artifacts.clone(),
        });
        let signals = config
            .handle_signals
            .then(|| tokio::spawn(watch_signals(run.cancel.clone(), events.clone())));

        let runs_per_iteration = to_run.len();
        events.emit(EventKind::RunStarted {
            run_id: run.run_id.clone(),
            to_run: runs_per_iteration * config.repeat as usize,
            filtered_out,
            parallel: config.parallel,
        });

        let mut reports = Vec::new();
        for (s, reason) in &ignored {
            let report = static_report(
                s.as_ref(),
                Outcome::Skipped {
                    reason: format!("ignored: {reason}"),
                },
            );
            events.emit(EventKind::ScenarioFinished(report.clone()));
            reports.push(report);
        }

        let probe = Arc::new(Prober {
            probe: self.probe,
            caps: OnceCell::new(),
        });
        let config = Arc::new(config);
        let mut iteration = 1;
        loop {
            let batch = run_iteration(&run, &config, &probe, &to_run, iteration).await;
            let any_failed = batch.iter().any(|r| r.outcome.is_failed());
            reports.extend(batch);
            let more = if config.until_it_fails {
                !any_failed
            } else {
                iteration < config.repeat
            };
            if !more
                || run.cancel.is_cancelled()
                || (config.fail_fast && any_failed)
                || to_run.is_empty()
            {
                break;
            }
            iteration += 1;
        }

        let any_failed = reports.iter().any(|r| r.outcome.is_failed());
        let tctx = TeardownContext {
            scenario: None,
            failed: any_failed,
            shared: None,
            run_id: run.run_id.clone(),
        };
        let run_errors = run
            .scope
            .teardown(&tctx, &events, config.teardown_timeout)
            .await;

        reports.sort_by(|a, b| {
            a.scenario
                .cmp(&b.scenario)
                .then(a.iteration.cmp(&b.iteration))
        });
        let facts = match probe.caps.get() {
            Some(Ok(c)) => c
                .facts
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => Vec::new(),
        };
        let summary = RunSummary {
            run_id: run.run_id.clone(),
            scenarios: reports,
            filtered_out,
            run_errors,
            cancelled: run.cancel.is_cancelled(),
            repeated,
            facts,
            duration: start.elapsed(),
        };
        events.emit(EventKind::RunFinished {
            passed: summary.passed(),
            failed: summary.failed(),
            skipped: summary.skipped(),
        });
        let _ = stop_tx.send(());
        let mut report_errors = Vec::new();
        match reporter_loop.await {
            Ok(mut reporters) => {
                for r in &mut reporters {
                    if let Err(e) = r.finish(&summary) {
                        report_errors.push(e.to_string());
                    }
                }
            }
            Err(e) => report_errors.push(format!("a reporter panicked: {e}")),
        }
        if let Some(signals) = signals {
            signals.abort();
        }
        Ok(Conclusion {
            summary: Some(summary),
            report_errors,
        })
    }
}

fn print_plan(
    to_run: &[Arc<dyn Scenario>],
    ignored: &[(Arc<dyn Scenario>, String)],
    filtered_out: usize,
    config: &RunConfig,
) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "dry run: {} would run, {} ignored, {filtered_out} filtered out",
        to_run.len(),
        ignored.len()
    );
    for s in to_run {
        let mut line = format!("run     {}", s.name());
        if !s.labels().is_empty() {
            line.push_str(&format!(" [{}]", s.labels().join(", ")));
        }
        let reqs: Vec<String> = s.requirements().iter().map(ToString::to_string).collect();
        if !reqs.is_empty() {
            let verb = if config.require {
                "requires (else fails)"
            } else {
                "requires (else skips)"
            };
            line.push_str(&format!(" {verb}: {}", reqs.join(", ")));
        }
        let demands: Vec<String> = s.demands().iter().map(ToString::to_string).collect();
        if !demands.is_empty() {
            line.push_str(&format!(" holds: {}", demands.join(", ")));
        }
        let timeout = s.timeout().unwrap_or(config.timeout);
        line.push_str(&format!(" timeout {}", format_duration(timeout)));
        let _ = writeln!(out, "{line}");
    }
    for (s, reason) in ignored {
        let _ = writeln!(out, "ignore  {} ({reason})", s.name());
    }
}

fn static_report(s: &dyn Scenario, outcome: Outcome) -> ScenarioReport {
    ScenarioReport {
        scenario: s.name().to_string(),
        labels: s.labels().to_vec(),
        iteration: 1,
        attempts: 0,
        outcome,
        duration: Duration::ZERO,
        start: Duration::ZERO,
        slot: 0,
        queued: Duration::ZERO,
        devices: Vec::new(),
        steps: Vec::new(),
        teardown_errors: Vec::new(),
        attachments: Vec::new(),
        artifacts: None,
    }
}

async fn report_loop(
    mut reporters: Vec<Box<dyn Reporter>>,
    mut rx: mpsc::UnboundedReceiver<crate::event::Event>,
    mut stop: oneshot::Receiver<()>,
) -> Vec<Box<dyn Reporter>> {
    loop {
        tokio::select! {
            biased;
            event = rx.recv() => match event {
                Some(event) => reporters.iter_mut().for_each(|r| r.on_event(&event)),
                None => break,
            },
            _ = &mut stop => {
                while let Ok(event) = rx.try_recv() {
                    reporters.iter_mut().for_each(|r| r.on_event(&event));
                }
                break;
            }
        }
    }
    reporters
}

#[cfg(unix)]
async fn watch_signals(cancel: CancelToken, events: EventSink) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will not clean up");
        return;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    eprintln!(
        "received {name}: cancelling scenarios and cleaning up (send it again to exit at once)"
    );
    events.emit(EventKind::RunCancelling {
        reason: format!("received {name}"),
    });
    cancel.cancel();
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    eprintln!("received {name} again: exiting without cleaning up");
    std::process::exit(i32::from(exit_code::INTERRUPTED));
}

#[cfg(not(unix))]
async fn watch_signals(cancel: CancelToken, events: EventSink) {
    if tokio::signal::ctrl_c().await.is_ok() {
        events.emit(EventKind::RunCancelling {
            reason: "received Ctrl-C".into(),
        });
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(i32::from(exit_code::INTERRUPTED));
        }
    }
}

fn new_run_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let random = RandomState::new().hash_one((secs, std::process::id())) & 0x00ff_ffff;
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{random:06x}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

struct Prober {
    probe: Option<Probe>,
    caps: OnceCell<Result<Capabilities, Failure>>,
}

impl Prober {
    async fn get(&self, run: &Arc<RunShared>) -> &Result<Capabilities, Failure> {
        self.caps
            .get_or_init(|| async {
                let Some(probe) = self.probe.clone() else {
                    return Ok(Capabilities::default());
                };
                let ctx = FixtureContext {
                    run: run.clone(),
                    scenario: None,
                    chain: Vec::new(),
                    cancel: run.cancel.clone(),
                };
                // A task of its own: a scenario that gives up waiting does not cancel the probe.
                match tokio::spawn(async move { probe(ctx).await }).await {
                    Ok(r) => r,
                    Err(e) => Err(Failure::msg(format!(
                        "the capability probe did not finish: {e}"
                    ))),
                }
            })
            .await
    }
}

struct Slots(Mutex<Vec<bool>>);

impl Slots {
    fn take(&self) -> usize {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match v.iter().position(|busy| !busy) {
            Some(i) => {
                v[i] = true;
                i
            }
            None => {
                v.push(true);
                v.len() - 1
            }
        }
    }
    fn give(&self, i: usize) {
        if let Some(b) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get_mut(i) {
            *b = false;
        }
    }
}

/// How often a scenario waiting for its devices says so.
const STILL_WAITING: Duration = Duration::from_secs(30);

/// A scenario waiting to start, and since when.
struct Pending {
    scenario: Arc<dyn Scenario>,
    since: Instant,
}

/// What the dispatcher decided for a pending scenario.
enum Admit {
    /// Start it with these devices.
    Start(crate::admission::Reservation),
    /// Its demand fits no time: report this outcome without running it.
    Never(Outcome),
    /// Not now: devices it needs are held.
    Wait,
}

/// The devices of an iteration: this process's, shared through a file, or through a store
/// other machines reach.
enum Pool {
    Local(crate::admission::DevicePool),
    Shared(crate::admission::SharedPool),
    Store(crate::admission::StorePool),
}

impl Pool {
    fn devices(&self) -> &crate::admission::DevicePool {
        match self {
            Pool::Local(p) => p,
            Pool::Shared(p) => p.devices(),
            Pool::Store(p) => p.devices(),
        }
    }

    /// Whether other processes release devices, so waiting scenarios must look again.
    fn is_shared(&self) -> bool {
        !matches!(self, Pool::Local(_))
    }

    async fn release(&mut self, reservation: &crate::admission::Reservation) {
        match self {
            Pool::Local(p) => p.release(reservation),
            Pool::Shared(p) => {
                if let Err(e) = p.release(reservation) {
                    tracing::warn!(file = %p.path().display(), error = %e, "cannot release devices in the admission file");
                }
            }
            Pool::Store(p) => {
                if let Err(e) = p.release(reservation).await {
                    tracing::warn!(error = error_chain(&e), "cannot release devices");
                }
            }
        }
    }
}

/// Decides whether `s` may start now. Scenarios without demands always may; so may those
/// with unmet requirements, or a failed probe, which `run_scenario` reports.
async fn admit(
    run: &Arc<RunShared>,
    config: &RunConfig,
    probe: &Prober,
    pool: &mut Option<Pool>,
    s: &dyn Scenario,
) -> Admit {
    use crate::admission::{DevicePool, Reservation, SharedPool, StorePool};
    if s.demands().is_empty() {
        return Admit::Start(Reservation::default());
    }
    let caps = match probe.get(run).await {
        Ok(caps) => caps,
        Err(_) => return Admit::Start(Reservation::default()),
    };
    if s.requirements().iter().any(|r| r.check(caps).is_err()) {
        return Admit::Start(Reservation::default());
    }
    let pool = pool.get_or_insert_with(|| match (&caps.admission, &config.admission_file) {
        (Some(store), _) if config.admission => {
            Pool::Store(StorePool::new(store.0.clone(), caps.devices.clone()))
        }
        (None, Some(path)) if config.admission => {
            Pool::Shared(SharedPool::new(path, caps.devices.clone()))
        }
        _ => Pool::Local(DevicePool::new(caps.devices.clone())),
    });
    if let Err(reason) = pool.devices().can_ever_hold(s.demands()) {
        return Admit::Never(if config.require {
            Outcome::Failed {
                reason: FailureReason::Requirement,
                message: format!("required but {reason}"),
            }
        } else {
            Outcome::Skipped { reason }
        });
    }
    if !config.admission {
        return Admit::Start(pool.devices().place_alone(s.demands()).unwrap_or_default());
    }
    let reserved = match pool {
        Pool::Local(p) => p.try_reserve(s.demands()),
        Pool::Shared(p) => match p.try_reserve(s.demands()) {
            Ok(r) => r,
            Err(e) => {
                return Admit::Never(Outcome::Failed {
                    reason: FailureReason::Error,
                    message: format!("admission through `{}` failed: {e}", p.path().display()),
                });
            }
        },
        Pool::Store(p) => match p.try_reserve(s.demands()).await {
            Ok(r) => r,
            Err(e) => {
                return Admit::Never(Outcome::Failed {
                    reason: FailureReason::Error,
                    message: error_chain(&e),
                });
            }
        },
    };
    match reserved {
        Some(r) => Admit::Start(r),
        None => Admit::Wait,
    }
}

/// Runs one iteration of the selection: starts scenarios in name order as `--parallel`
/// and the devices they demand allow (a scenario whose devices are held waits, and those
/// behind it that fit go first), and collects their reports.
async fn run_iteration(
    run: &Arc<RunShared>,
    config: &Arc<RunConfig>,
    probe: &Arc<Prober>,
    to_run: &[Arc<dyn Scenario>],
    iteration: u32,
) -> Vec<ScenarioReport> {
    /// What the dispatcher keeps of a started scenario, so that its slot and devices come
    /// back even if its task fails outside the body.
    struct Started {
        scenario: Arc<dyn Scenario>,
        reservation: Arc<crate::admission::Reservation>,
        slot: usize,
    }
    let slots = Slots(Mutex::new(vec![false; config.parallel]));
    let mut failed = false;
    let mut set = JoinSet::new();
    let mut started: std::collections::HashMap<tokio::task::Id, Started> = Default::default();
    let mut reports = Vec::new();
    let mut pool = None;
    let now = Instant::now();
    let mut last_note = now;
    // Serial scenarios go last, one at a time, once nothing else runs.
    let mut pending: std::collections::VecDeque<Pending> = to_run
        .iter()
        .filter(|s| !s.serial())
        .chain(to_run.iter().filter(|s| s.serial()))
        .map(|s| Pending {
            scenario: s.clone(),
            since: now,
        })
        .collect();
    let finish_unrun = |s: &Arc<dyn Scenario>, outcome: Outcome, failed: &mut bool| {
        let mut r = static_report(s.as_ref(), outcome);
        r.iteration = iteration;
        *failed |= r.outcome.is_failed();
        run.events.emit(EventKind::ScenarioFinished(r.clone()));
        r
    };
    loop {
        let stop = if run.cancel.is_cancelled() {
            Some("not run: the run was cancelled")
        } else if config.fail_fast && failed {
            Some("not run: --fail-fast after a failure")
        } else {
            None
        };
        if let Some(reason) = stop {
            for p in pending.drain(..) {
                let outcome = Outcome::Skipped {
                    reason: reason.to_string(),
                };
                reports.push(finish_unrun(&p.scenario, outcome, &mut failed));
            }
        }
        // Start what may start, first come first served among those that fit.
        let mut i = 0;
        // Demands found waiting in this pass: the same demands behind them wait too, without
        // asking the pool again (a long queue costs one look per distinct demand).
        let mut waiting: Vec<Vec<crate::admission::Demand>> = Vec::new();
        while started.len() < config.parallel && i < pending.len() {
            if config.fail_fast && failed {
                break;
            }
            if started.values().any(|s| s.scenario.serial())
                || (pending[i].scenario.serial() && !started.is_empty())
            {
                break;
            }
            let demands = pending[i].scenario.demands();
            if !demands.is_empty() && waiting.iter().any(|w| w.as_slice() == demands) {
                i += 1;
                continue;
            }
            match admit(run, config, probe, &mut pool, pending[i].scenario.as_ref()).await {
                Admit::Wait => {
                    waiting.push(pending[i].scenario.demands().to_vec());
                    i += 1;
                }
                Admit::Never(outcome) => {
                    if let Some(p) = pending.remove(i) {
                        reports.push(finish_unrun(&p.scenario, outcome, &mut failed));
                    }
                }
                Admit::Start(reservation) => {
                    let Some(p) = pending.remove(i) else { break };
                    let reservation = Arc::new(reservation);
                    let slot = slots.take();
                    let (run, config, probe) = (run.clone(), config.clone(), probe.clone());
                    let queued = p.since.elapsed();
                    let (scenario, devices) = (p.scenario.clone(), reservation.clone());
                    let handle = set.spawn(async move {
                        let mut report =
                            run_scenario(&run, &config, &probe, scenario, iteration, slot, devices)
                                .await;
                        report.queued = queued;
                        report
                    });
                    started.insert(
                        handle.id(),
                        Started {
                            scenario: p.scenario,
                            reservation,
                            slot,
                        },
                    );
                }
            }
        }
        // A scenario that waits long for its devices says so, now and then.
        if !waiting.is_empty() && last_note.elapsed() >= STILL_WAITING {
            last_note = Instant::now();
            for p in pending
                .iter()
                .filter(|p| !p.scenario.demands().is_empty())
                .take(3)
            {
                let demands: Vec<String> = p
                    .scenario
                    .demands()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                tracing::info!(
                    scenario = %p.scenario.name(),
                    "still waiting for devices ({}) after {}; running: {}",
                    demands.join(", "),
                    format_duration(p.since.elapsed()),
                    started.values().map(|s| s.scenario.name()).collect::<Vec<_>>().join(", ")
                );
            }
        }
        // Other processes release shared devices: look again now and then.
        let poll = pool.as_ref().is_some_and(Pool::is_shared) && !pending.is_empty();
        // A store on a cluster costs API requests: a second is soon enough there.
        let poll_every = if matches!(pool, Some(Pool::Store(_))) {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(200)
        };
        if started.is_empty() && !poll {
            if pending.is_empty() {
                break;
            }
            if config.fail_fast && failed {
                continue;
            }
            // Nothing runs, so every device is free, and what is pending fits (it passed
            // `can_ever_hold`): unreachable unless the bookkeeping is wrong. Never hang.
            if let Some(p) = pending.pop_front() {
                let outcome = Outcome::Failed {
                    reason: FailureReason::Error,
                    message: "admission could not place its demand on idle devices".into(),
                };
                reports.push(finish_unrun(&p.scenario, outcome, &mut failed));
            }
            continue;
        }
        tokio::select! {
            biased;
            joined = set.join_next_with_id(), if !started.is_empty() => {
                let (id, report) = match joined {
                    Some(Ok((id, report))) => (id, Some(report)),
                    Some(Err(e)) => {
                        tracing::error!("a scenario task failed outside its body: {e}");
                        (e.id(), None)
                    }
                    None => continue,
                };
                let Some(s) = started.remove(&id) else { continue };
                slots.give(s.slot);
                if let Some(pool) = pool.as_mut() {
                    pool.release(&s.reservation).await;
                }
                let report = match report {
                    Some(r) => {
                        failed |= r.outcome.is_failed();
                        r
                    }
                    None => finish_unrun(
                        &s.scenario,
                        Outcome::Failed {
                            reason: FailureReason::Panic,
                            message: "its task failed outside the body (a panic in the runner or the scenario's methods)".into(),
                        },
                        &mut failed,
                    ),
                };
                reports.push(report);
            }
            _ = run.cancel.cancelled(), if !pending.is_empty() => {}
            _ = tokio::time::sleep(poll_every), if poll => {}
            _ = tokio::time::sleep(STILL_WAITING), if !waiting.is_empty() => {}
        }
    }
    reports
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

struct Attempt {
    reason: FailureReason,
    message: String,
    transient: bool,
}

async fn run_scenario(
    run: &Arc<RunShared>,
    config: &RunConfig,
    probe: &Prober,
    scenario: Arc<dyn Scenario>,
    iteration: u32,
    slot: usize,
    devices: Arc<crate::admission::Reservation>,
) -> ScenarioReport {
    let name = scenario.name().to_string();
    let started = Instant::now();
    let mut report = static_report(scenario.as_ref(), Outcome::Passed);
    report.iteration = iteration;
    report.slot = slot;
    report.start = started.duration_since(run.events.start());
    report.devices = devices.all_devices().map(ToString::to_string).collect();

    if !scenario.requirements().is_empty() || !scenario.demands().is_empty() {
        let miss = match probe.get(run).await {
            Err(f) => Some(Outcome::Failed {
                reason: FailureReason::Error,
                message: format!("the capability probe failed: {}", f.report()),
            }),
            Ok(caps) => scenario
                .requirements()
                .iter()
                .find_map(|r| r.check(caps).err())
                .map(|reason| {
                    if config.require {
                        Outcome::Failed {
                            reason: FailureReason::Requirement,
                            message: format!("required but {reason}"),
                        }
                    } else {
                        Outcome::Skipped { reason }
                    }
                }),
        };
        if let Some(outcome) = miss {
            report.outcome = outcome;
            report.duration = started.elapsed();
            run.events.emit(EventKind::ScenarioFinished(report.clone()));
            return report;
        }
    }

    let timeout = scenario.timeout().unwrap_or(config.timeout);
    let mut backoff = run.retry.backoff();
    let mut attempt = 1;
    let base_dir = run.artifacts_root.join(&run.run_id).join(slug(&name));
    loop {
        run.events.emit(EventKind::ScenarioStarted {
            scenario: name.clone(),
            iteration,
            attempt,
        });
        let mut dir = base_dir.clone();
        if iteration > 1 || attempt > 1 {
            dir.as_mut_os_string()
                .push(format!("-{iteration}-{attempt}"));
        }
        let shared = Arc::new(ScenarioShared {
            name: name.clone(),
            iteration,
            attempt,
            scope: ScopeState::default(),
            cancel: run.cancel.child(),
            steps: Mutex::new(Vec::new()),
            attachments: Mutex::new(Vec::new()),
            artifacts_dir: dir,
            artifacts_used: AtomicBool::new(false),
            run_fixtures: Mutex::new(Vec::new()),
            devices: devices.clone(),
        });
        let ctx = Context {
            run: run.clone(),
            shared: shared.clone(),
            started: Instant::now(),
        };
        let span = tracing::info_span!("scenario", name = %name, attempt);
        let mut body = tokio::spawn(scenario.run(ctx).instrument(span));
        let result: Result<(), Attempt> = tokio::select! {
            biased;
            joined = &mut body => match joined {
                Ok(Ok(())) => Ok(()),
                Ok(Err(f)) => Err(Attempt { reason: f.kind().into(), message: f.report(), transient: f.is_transient() }),
                Err(e) if e.is_panic() => Err(Attempt { reason: FailureReason::Panic, message: panic_message(e.into_panic()), transient: false }),
                Err(_) => Err(Attempt { reason: FailureReason::Cancelled, message: "the body's task was cancelled".into(), transient: false }),
            },
            _ = run.cancel.cancelled() => Err(Attempt { reason: FailureReason::Cancelled, message: "cancelled: the run was interrupted".into(), transient: false }),
            _ = tokio::time::sleep(timeout) => Err(Attempt { reason: FailureReason::Timeout, message: format!("timed out after {}", format_duration(timeout)), transient: false }),
        };
        shared.cancel.cancel();
        if !body.is_finished() {
            body.abort();
            let _ = body.await;
        }
        let result = result.map_err(|mut a| {
            if a.reason == FailureReason::Timeout || a.reason == FailureReason::Cancelled {
                let steps = shared.steps.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(step) = steps.iter().rev().find(|s| s.duration.is_none()) {
                    a.message.push_str(&format!(" in step `{}`", step.name));
                }
            }
            a
        });

        let tctx = TeardownContext {
            scenario: Some(name.clone()),
            failed: result.is_err(),
            shared: Some(shared.clone()),
            run_id: run.run_id.clone(),
        };
        if result.is_err()
            && tokio::time::timeout(config.teardown_timeout, shared.on_failure(&tctx))
                .await
                .is_err()
        {
            tracing::warn!(scenario = %name, "collecting diagnostics timed out");
        }
        let teardown_errors = shared
            .scope
            .teardown(&tctx, &run.events, config.teardown_timeout)
            .await;
        let result = match result {
            Ok(()) if !teardown_errors.is_empty() => Err(Attempt {
                reason: FailureReason::Teardown,
                message: teardown_errors.join("\n"),
                transient: false,
            }),
            other => other,
        };

        if let Err(a) = &result
            && a.transient
            && !run.cancel.is_cancelled()
            && let Some(delay) = backoff.next()
        {
            run.events.emit(EventKind::Retry {
                scenario: Some(name.clone()),
                what: "scenario".into(),
                attempt,
                delay,
                error: a.message.clone(),
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = run.cancel.cancelled() => {}
            }
            attempt += 1;
            continue;
        }

        report.attempts = attempt;
        report.outcome = match result {
            Ok(()) => Outcome::Passed,
            Err(a) => Outcome::Failed {
                reason: a.reason,
                message: a.message,
            },
        };
        report.duration = started.elapsed();
        report.steps = std::mem::take(&mut *shared.steps.lock().unwrap_or_else(|p| p.into_inner()));
        report.attachments =
            std::mem::take(&mut *shared.attachments.lock().unwrap_or_else(|p| p.into_inner()));
        report.teardown_errors = teardown_errors;
        if shared.artifacts_used.load(Ordering::Relaxed) {
            report.artifacts = Some(shared.artifacts_dir.clone());
        }
        run.events.emit(EventKind::ScenarioFinished(report.clone()));
        return report;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn run_ids_are_unique_and_sortable() {
        let a = new_run_id();
        let b = new_run_id();
        assert_eq!(a.len(), "20261125-101500-abcdef".len());
        assert_ne!(a, b);
    }
}
