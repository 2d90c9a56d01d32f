//! Fixtures: set-up that scenarios share, with teardown the runner guarantees.
//!
//! A fixture is registered once with the runner ([`Runner::fixture`](crate::Runner::fixture))
//! and obtained by type from a scenario ([`Context::fixture`](crate::Context::fixture)) or
//! from another fixture ([`FixtureContext::fixture`]). It is set up lazily, the first time
//! it is asked for, so a run that selects no scenario needing a cluster starts none.
//!
//! - [`Scope::Run`] fixtures are set up once and shared by every scenario of the run (a
//!   cluster, a Helm release); they are torn down when the run ends, also after Ctrl-C.
//! - [`Scope::Scenario`] fixtures are set up per scenario (a namespace) and torn down
//!   when the scenario ends, whatever the outcome: success, failure, panic, timeout.
//!
//! Teardown runs in the reverse order of set-up, which puts dependents before what they
//! depend on. Set-up runs in a task of its own: a scenario that times out while waiting for
//! a run-scoped fixture does not cancel that fixture's set-up for the others, and a
//! scenario's teardown waits for its fixtures' set-ups to finish before tearing down, so
//! nothing that was being created is left behind.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::task::AbortHandle;

use crate::cancel::CancelToken;
use crate::event::EventKind;
pub use crate::event::Scope;
use crate::failure::Failure;
use crate::sink::EventSink;

/// A resource that scenarios use, set up on demand and torn down for certain.
///
/// Implement it with `async fn`s. A fixture that creates several things should make its
/// set-up undo what it already made when a later step fails, because a fixture whose
/// set-up failed is not torn down.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use hami_e2e_core::{Failure, Fixture, FixtureContext, Scope, TeardownContext};
///
/// /// A temporary folder per scenario.
/// struct TempDir;
///
/// impl Fixture for TempDir {
///     type Output = std::path::PathBuf;
///
///     async fn setup(&self, ctx: &FixtureContext) -> Result<Self::Output, Failure> {
///         let dir = std::env::temp_dir().join(format!("doc-{}-{}", ctx.run_id(), std::process::id()));
///         std::fs::create_dir_all(&dir)?;
///         Ok(dir)
///     }
///
///     async fn teardown(&self, dir: &Self::Output, _ctx: &TeardownContext) -> Result<(), Failure> {
///         std::fs::remove_dir_all(dir)?;
///         Ok(())
///     }
/// }
/// ```
pub trait Fixture: Send + Sync + 'static {
    /// What scenarios get (behind an `Arc`).
    type Output: Send + Sync + 'static;

    /// A name for reports; the type's name by default.
    fn name(&self) -> String {
        let full = type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full).to_string()
    }

    /// Run- or scenario-scoped; [`Scope::Scenario`] by default.
    fn scope(&self) -> Scope {
        Scope::Scenario
    }

    /// Creates the resource. A transient failure is retried with backoff.
    fn setup(
        &self,
        ctx: &FixtureContext,
    ) -> impl Future<Output = Result<Self::Output, Failure>> + Send;

    /// Removes the resource. Runs after every outcome; its errors fail the scenario (or
    /// the run, for run-scoped fixtures) and are reported.
    fn teardown(
        &self,
        value: &Self::Output,
        ctx: &TeardownContext,
    ) -> impl Future<Output = Result<(), Failure>> + Send {
        let _ = (value, ctx);
        async { Ok(()) }
    }

    /// Collects diagnostics when the scenario failed, before teardown (events, logs).
    /// Write files into [`TeardownContext::artifacts_dir`] or attach text with
    /// [`TeardownContext::attach`]. Runs for the scenario's own fixtures and for the
    /// run-scoped fixtures the scenario used (so a shared Helm release reports its state
    /// into each failed scenario's artifacts).
    fn on_failure(
        &self,
        value: &Self::Output,
        ctx: &TeardownContext,
    ) -> impl Future<Output = ()> + Send {
        let _ = (value, ctx);
        async {}
    }
}

type AnyValue = Arc<dyn Any + Send + Sync>;
type SetupResult = Result<AnyValue, Failure>;
/// A set-up in progress or done: awaited by everyone who needs the fixture.
type SetupCell = (Shared<BoxFuture<'static, SetupResult>>, AbortHandle);

/// Object-safe form of [`Fixture`], for the registry.
pub(crate) trait ErasedFixture: Send + Sync {
    fn name(&self) -> String;
    fn scope(&self) -> Scope;
    fn setup<'a>(&'a self, ctx: &'a FixtureContext) -> BoxFuture<'a, SetupResult>;
    fn teardown<'a>(
        &'a self,
        value: &'a AnyValue,
        ctx: &'a TeardownContext,
    ) -> BoxFuture<'a, Result<(), Failure>>;
    fn on_failure<'a>(&'a self, value: &'a AnyValue, ctx: &'a TeardownContext)
    -> BoxFuture<'a, ()>;
}

impl<F: Fixture> ErasedFixture for F {
    fn name(&self) -> String {
        Fixture::name(self)
    }
    fn scope(&self) -> Scope {
        Fixture::scope(self)
    }
    fn setup<'a>(&'a self, ctx: &'a FixtureContext) -> BoxFuture<'a, SetupResult> {
        Box::pin(async move {
            Fixture::setup(self, ctx)
                .await
                .map(|v| Arc::new(v) as AnyValue)
        })
    }
    fn teardown<'a>(
        &'a self,
        value: &'a AnyValue,
        ctx: &'a TeardownContext,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            match value.downcast_ref::<F::Output>() {
                Some(v) => Fixture::teardown(self, v, ctx).await,
                None => Err(Failure::msg("fixture value has an unexpected type")),
            }
        })
    }
    fn on_failure<'a>(
        &'a self,
        value: &'a AnyValue,
        ctx: &'a TeardownContext,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(v) = value.downcast_ref::<F::Output>() {
                Fixture::on_failure(self, v, ctx).await;
            }
        })
    }
}

/// The fixtures registered with a runner, by type.
pub(crate) type Registry = HashMap<TypeId, Arc<dyn ErasedFixture>>;

/// Settings the fixture machinery needs from the run.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt, for transient failures.
    pub(crate) retries: u32,
    /// First backoff delay; doubles each time, with jitter.
    pub(crate) min_delay: Duration,
    /// Largest backoff delay.
    pub(crate) max_delay: Duration,
}

impl RetryPolicy {
    pub(crate) fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries as usize)
            .with_jitter()
            .build()
    }
}

/// What is shared by everything in one run.
pub(crate) struct RunShared {
    pub(crate) run_id: String,
    pub(crate) registry: Registry,
    pub(crate) scope: ScopeState,
    pub(crate) events: EventSink,
    pub(crate) cancel: CancelToken,
    pub(crate) retry: RetryPolicy,
    pub(crate) artifacts_root: PathBuf,
}

/// Everything one scenario attempt owns.
pub(crate) struct ScenarioShared {
    pub(crate) name: String,
    pub(crate) iteration: u32,
    pub(crate) attempt: u32,
    pub(crate) scope: ScopeState,
    pub(crate) cancel: CancelToken,
    pub(crate) steps: Mutex<Vec<crate::event::StepRecord>>,
    pub(crate) attachments: Mutex<Vec<crate::event::Attachment>>,
    pub(crate) artifacts_dir: PathBuf,
    pub(crate) artifacts_used: std::sync::atomic::AtomicBool,
    /// Run-scoped fixtures this scenario used: their `on_failure` runs when it fails.
    pub(crate) run_fixtures: Mutex<Vec<UsedFixture>>,
    /// The devices admission handed it.
    pub(crate) devices: Arc<crate::admission::Reservation>,
}

/// A run-scoped fixture a scenario used, with its value.
pub(crate) type UsedFixture = (TypeId, Arc<dyn ErasedFixture>, AnyValue);

impl ScenarioShared {
    /// Runs `on_failure` of the scenario's fixtures (newest first), then of the run-scoped
    /// fixtures it used (a Helm release, a cluster).
    pub(crate) async fn on_failure(&self, ctx: &TeardownContext) {
        self.scope.on_failure(ctx).await;
        let used: Vec<_> = lock(&self.run_fixtures)
            .iter()
            .rev()
            .map(|(_, f, v)| (f.clone(), v.clone()))
            .collect();
        for (fixture, value) in used {
            fixture.on_failure(&value, ctx).await;
        }
    }

    pub(crate) fn artifacts_dir(&self) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.artifacts_dir)?;
        self.artifacts_used
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(self.artifacts_dir.clone())
    }
}

enum Entry {
    Fixture {
        name: String,
        fixture: Arc<dyn ErasedFixture>,
        value: AnyValue,
    },
    Deferred {
        name: String,
        cleanup: BoxFuture<'static, Result<(), Failure>>,
    },
}

/// Fixtures set up in one scope, and the order to undo them in.
#[derive(Default)]
pub(crate) struct ScopeState {
    cells: Mutex<HashMap<TypeId, SetupCell>>,
    stack: Mutex<Vec<Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ScopeState {
    pub(crate) fn defer(&self, name: String, cleanup: BoxFuture<'static, Result<(), Failure>>) {
        lock(&self.stack).push(Entry::Deferred { name, cleanup });
    }

    /// Runs `on_failure` of every fixture set up in this scope, newest first.
    pub(crate) async fn on_failure(&self, ctx: &TeardownContext) {
        let fixtures: Vec<_> = lock(&self.stack)
            .iter()
            .rev()
            .filter_map(|e| match e {
                Entry::Fixture { fixture, value, .. } => Some((fixture.clone(), value.clone())),
                Entry::Deferred { .. } => None,
            })
            .collect();
        for (fixture, value) in fixtures {
            fixture.on_failure(&value, ctx).await;
        }
    }

    /// Waits for set-ups still running (they were told to cancel), then undoes everything
    /// newest first. Returns one message per error.
    pub(crate) async fn teardown(
        &self,
        ctx: &TeardownContext,
        events: &EventSink,
        timeout: Duration,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let pending: Vec<_> = lock(&self.cells).drain().map(|(_, cell)| cell).collect();
        for (setup, abort) in pending {
            if tokio::time::timeout(timeout, setup).await.is_err() {
                abort.abort();
                errors.push(format!(
                    "a fixture set-up did not finish within {timeout:?} after cancellation; aborted"
                ));
            }
        }
        loop {
            let Some(entry) = lock(&self.stack).pop() else {
                break;
            };
            let started = Instant::now();
            let (name, result) = match entry {
                Entry::Fixture {
                    name,
                    fixture,
                    value,
                } => {
                    let r = tokio::time::timeout(timeout, fixture.teardown(&value, ctx)).await;
                    (format!("fixture `{name}`"), r)
                }
                Entry::Deferred { name, cleanup } => {
                    let r = tokio::time::timeout(timeout, cleanup).await;
                    (format!("deferred cleanup `{name}`"), r)
                }
            };
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(f)) => Some(format!("teardown of {name} failed: {}", f.report())),
                Err(_) => Some(format!(
                    "teardown of {name} timed out after {}",
                    crate::duration::format_duration(timeout)
                )),
            };
            events.emit(EventKind::TeardownFinished {
                scenario: ctx.scenario.clone(),
                what: name,
                duration: started.elapsed(),
                error: error.clone(),
            });
            errors.extend(error);
        }
        errors
    }
}

/// What a fixture's set-up can see and use.
#[derive(Clone)]
pub struct FixtureContext {
    pub(crate) run: Arc<RunShared>,
    pub(crate) scenario: Option<Arc<ScenarioShared>>,
    pub(crate) chain: Vec<(TypeId, String)>,
    pub(crate) cancel: CancelToken,
}

impl FixtureContext {
    /// The run's id, unique per run (used in labels and folder names).
    pub fn run_id(&self) -> &str {
        &self.run.run_id
    }

    /// The scenario this set-up is for; `None` for run-scoped fixtures.
    pub fn scenario(&self) -> Option<&str> {
        self.scenario.as_deref().map(|s| s.name.as_str())
    }

    /// Completes when the set-up should give up (run cancelled, scenario timed out).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The cancellation token itself, to hand to helpers.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Another fixture this one depends on, set up first if needed. A run-scoped fixture
    /// may only depend on run-scoped ones.
    ///
    /// # Errors
    ///
    /// The dependency's set-up failure; a failure naming the fixture when it is not
    /// registered, when the dependencies form a cycle, or when a run-scoped fixture asks
    /// for a scenario-scoped one.
    pub async fn fixture<F: Fixture>(&self) -> Result<Arc<F::Output>, Failure> {
        obtain::<F>(self).await
    }

    /// The folder for this scenario's artifacts (created on first use); for run-scoped
    /// fixtures, the run's artifacts folder.
    ///
    /// # Errors
    ///
    /// The folder cannot be created.
    pub fn artifacts_dir(&self) -> Result<PathBuf, Failure> {
        match &self.scenario {
            Some(s) => Ok(s.artifacts_dir()?),
            None => {
                let dir = self.run.artifacts_root.join(&self.run.run_id);
                std::fs::create_dir_all(&dir)?;
                Ok(dir)
            }
        }
    }
}

/// What a fixture's teardown and `on_failure` hooks can see.
pub struct TeardownContext {
    pub(crate) scenario: Option<String>,
    pub(crate) failed: bool,
    pub(crate) shared: Option<Arc<ScenarioShared>>,
    pub(crate) run_id: String,
}

impl TeardownContext {
    /// Whether the scenario (or, for run-scoped fixtures, any scenario) failed.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The scenario being torn down; `None` at the end of the run.
    pub fn scenario(&self) -> Option<&str> {
        self.scenario.as_deref()
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The devices admission handed the scenario (see
    /// [`Context::devices`](crate::Context::devices)); `None` at the end of the run. A
    /// fixture whose objects hold devices frees them in teardown, before admission hands
    /// them to the next scenario.
    pub fn devices(&self) -> Option<&crate::admission::Reservation> {
        self.shared.as_ref().map(|s| &*s.devices)
    }

    /// The scenario's artifacts folder (created on first use); `None` at the end of the run.
    pub fn artifacts_dir(&self) -> Option<std::io::Result<PathBuf>> {
        self.shared.as_ref().map(|s| s.artifacts_dir())
    }

    /// Adds a titled block of text to the scenario's report (JUnit `system-out`, the
    /// failure details of the human report).
    pub fn attach(&self, title: impl Into<String>, text: impl Into<String>) {
        if let Some(s) = &self.shared {
            lock(&s.attachments).push(crate::event::Attachment {
                title: title.into(),
                text: text.into(),
            });
        }
    }
}

/// Finds (or sets up) fixture `F` for `ctx`.
pub(crate) async fn obtain<F: Fixture>(ctx: &FixtureContext) -> Result<Arc<F::Output>, Failure> {
    let id = TypeId::of::<F>();
    let fixture = ctx.run.registry.get(&id).cloned().ok_or_else(|| {
        Failure::msg(format!(
            "fixture `{}` is not registered with the runner (Runner::fixture)",
            type_name::<F>()
        ))
    })?;
    let value = obtain_erased(ctx, id, fixture).await?;
    value
        .downcast::<F::Output>()
        .map_err(|_| Failure::msg("fixture value has an unexpected type"))
}

async fn obtain_erased(
    ctx: &FixtureContext,
    id: TypeId,
    fixture: Arc<dyn ErasedFixture>,
) -> SetupResult {
    let name = fixture.name();
    if let Some(pos) = ctx.chain.iter().position(|(t, _)| *t == id) {
        let mut cycle: Vec<&str> = ctx.chain[pos..].iter().map(|(_, n)| n.as_str()).collect();
        cycle.push(&name);
        return Err(Failure::msg(format!(
            "fixture dependency cycle: {}",
            cycle.join(" -> ")
        )));
    }
    let scope = fixture.scope();
    let scenario = match (scope, &ctx.scenario, ctx.chain.last()) {
        (Scope::Scenario, None, Some((_, parent))) => {
            return Err(Failure::msg(format!(
                "run-scoped fixture `{parent}` cannot use scenario-scoped fixture `{name}`"
            )));
        }
        (Scope::Scenario, None, None) => {
            return Err(Failure::msg(format!(
                "scenario-scoped fixture `{name}` requested outside a scenario"
            )));
        }
        (Scope::Scenario, Some(s), _) => Some(s.clone()),
        (Scope::Run, _, _) => None,
    };
    let cell = {
        let state = scenario.as_ref().map_or(&ctx.run.scope, |s| &s.scope);
        let mut cells = lock(&state.cells);
        match cells.get(&id) {
            Some((shared, _)) => shared.clone(),
            None => {
                let mut chain = ctx.chain.clone();
                chain.push((id, name.clone()));
                let child = FixtureContext {
                    run: ctx.run.clone(),
                    scenario: scenario.clone(),
                    chain,
                    cancel: scenario
                        .as_ref()
                        .map_or_else(|| ctx.run.cancel.clone(), |s| s.cancel.clone()),
                };
                let handle = tokio::spawn(setup_with_retries(fixture.clone(), child, scope));
                let abort = handle.abort_handle();
                let task_name = name.clone();
                let shared = async move {
                    handle.await.unwrap_or_else(|e| {
                        let why = if e.is_panic() {
                            "panicked"
                        } else {
                            "was cancelled"
                        };
                        Err(Failure::msg(format!(
                            "set-up of fixture `{task_name}` {why}"
                        )))
                    })
                }
                .boxed()
                .shared();
                cells.insert(id, (shared.clone(), abort));
                shared
            }
        }
    };
    let value = cell.await?;
    if let (Scope::Run, Some(s)) = (scope, &ctx.scenario) {
        let mut used = lock(&s.run_fixtures);
        if !used.iter().any(|(t, _, _)| *t == id) {
            used.push((id, fixture.clone(), value.clone()));
        }
    }
    Ok(value)
}

async fn setup_with_retries(
    fixture: Arc<dyn ErasedFixture>,
    ctx: FixtureContext,
    scope: Scope,
) -> SetupResult {
    let name = fixture.name();
    let started = Instant::now();
    let mut backoff = ctx.run.retry.backoff();
    let mut attempt = 1;
    let result = loop {
        let result = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => Err(Failure::msg("cancelled")),
            r = fixture.setup(&ctx) => r,
        };
        match result {
            Ok(v) => break Ok(v),
            Err(f) if f.is_transient() && !ctx.cancel.is_cancelled() => match backoff.next() {
                Some(delay) => {
                    ctx.run.events.emit(EventKind::Retry {
                        scenario: ctx.scenario().map(str::to_string),
                        what: format!("fixture `{name}`"),
                        attempt,
                        delay,
                        error: f.report(),
                    });
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                None => break Err(f),
            },
            Err(f) => break Err(f),
        }
    };
    let result = result.map_err(|f| f.context(format!("set-up of fixture `{name}`")));
    if let Ok(value) = &result {
        let state = ctx.scenario.as_ref().map_or(&ctx.run.scope, |s| &s.scope);
        lock(&state.stack).push(Entry::Fixture {
            name: name.clone(),
            fixture: fixture.clone(),
            value: value.clone(),
        });
    }
    ctx.run.events.emit(EventKind::FixtureSetUp {
        scenario: ctx.scenario().map(str::to_string),
        fixture: name,
        scope,
        attempts: attempt,
        duration: started.elapsed(),
        error: result.as_ref().err().map(Failure::report),
    });
    result
}
