//! What a scenario body gets: steps, fixtures, deferred cleanups, cancellation, artifacts.

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::cancel::CancelToken;
use crate::event::{Attachment, EventKind, StepRecord};
use crate::failure::Failure;
use crate::fixture::{Fixture, FixtureContext, RunShared, ScenarioShared, obtain};

/// The handle a scenario body works through. Cheap to clone.
///
/// It is `'static`, so a body can move it into spawned tasks. Every `tracing` event the
/// body emits is inside a span named `scenario` with the scenario's name as a field.
#[derive(Clone)]
pub struct Context {
    pub(crate) run: Arc<RunShared>,
    pub(crate) shared: Arc<ScenarioShared>,
    pub(crate) started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks a step unfinished if its future is dropped (timeout, cancellation).
struct StepGuard<'a> {
    ctx: &'a Context,
    index: usize,
    name: String,
    started: Instant,
    done: bool,
}

impl StepGuard<'_> {
    fn finish(mut self, error: Option<String>) {
        self.done = true;
        let duration = self.started.elapsed();
        if let Some(step) = lock(&self.ctx.shared.steps).get_mut(self.index) {
            step.duration = Some(duration);
            step.error = error.clone();
        }
        self.ctx.run.events.emit(EventKind::StepFinished {
            scenario: self.ctx.shared.name.clone(),
            step: std::mem::take(&mut self.name),
            duration,
            error,
        });
    }
}

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Some(step) = lock(&self.ctx.shared.steps).get_mut(self.index)
        {
            step.error = Some("interrupted".to_string());
        }
    }
}

impl Context {
    /// The scenario's name (canonical, with `::`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run.run_id
    }

    /// The attempt (1-based): above 1 when a transient failure made the runner retry.
    pub fn attempt(&self) -> u32 {
        self.shared.attempt
    }

    /// The devices admission handed this scenario, one list per
    /// [`Demand`](crate::Demand) it declared (empty without demands). Pin pods to
    /// [`Reservation::node`](crate::Reservation::node): with admission on (the default),
    /// other scenarios running meanwhile hold other devices; with `--admission off` these
    /// are the devices it would get with nothing else running.
    pub fn devices(&self) -> &crate::admission::Reservation {
        &self.shared.devices
    }

    /// The iteration (1-based) under `--repeat`.
    pub fn iteration(&self) -> u32 {
        self.shared.iteration
    }

    /// Runs `step` as a named step, like Ginkgo's `By`: it shows in live output, in the
    /// report of a failed scenario and in JUnit, with its duration and error.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as `step`; a step dropped before it finished is reported as
    /// "interrupted".
    ///
    /// # Examples
    ///
    /// ```
    /// # use hami_e2e_core::{Context, Failure};
    /// async fn body(ctx: Context) -> Result<(), Failure> {
    ///     let pods = ctx.step("list pods", async { Ok::<_, Failure>(vec!["p"]) }).await?;
    ///     assert_eq!(pods.len(), 1);
    ///     Ok(())
    /// }
    /// ```
    pub async fn step<T, E, Fut>(&self, name: impl Into<String>, step: Fut) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
        E: Display,
    {
        let name = name.into();
        let started = Instant::now();
        let index = {
            let mut steps = lock(&self.shared.steps);
            steps.push(StepRecord {
                name: name.clone(),
                start: started.duration_since(self.started),
                duration: None,
                error: None,
            });
            steps.len() - 1
        };
        tracing::debug!(step = %name, "step");
        self.run.events.emit(EventKind::StepStarted {
            scenario: self.shared.name.clone(),
            step: name.clone(),
        });
        let guard = StepGuard {
            ctx: self,
            index,
            name,
            started,
            done: false,
        };
        let result = step.await;
        guard.finish(result.as_ref().err().map(ToString::to_string));
        result
    }

    /// Fixture `F`, set up for this scenario (or for the run, if run-scoped) on first use.
    ///
    /// # Errors
    ///
    /// Its set-up failure, or a failure naming it when it is not registered.
    pub async fn fixture<F: Fixture>(&self) -> Result<Arc<F::Output>, Failure> {
        obtain::<F>(&self.fixture_context()).await
    }

    /// Registers a cleanup that runs after the body, whatever its outcome, in reverse order
    /// of registration and interleaved with fixture teardowns (like Ginkgo's `DeferCleanup`).
    /// Register it before creating the thing it removes.
    pub fn defer<Fut>(&self, name: impl Into<String>, cleanup: Fut)
    where
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        self.shared.scope.defer(name.into(), Box::pin(cleanup));
    }

    /// This scenario's artifacts folder (`--artifacts`), created on first use.
    ///
    /// # Errors
    ///
    /// The folder cannot be created.
    pub fn artifacts_dir(&self) -> Result<PathBuf, Failure> {
        Ok(self.shared.artifacts_dir()?)
    }

    /// Adds a titled block of text to this scenario's report.
    pub fn attach(&self, title: impl Into<String>, text: impl Into<String>) {
        lock(&self.shared.attachments).push(Attachment {
            title: title.into(),
            text: text.into(),
        });
    }

    /// Whether the scenario was told to stop (timeout, Ctrl-C).
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Completes when the scenario is told to stop. The runner also drops the body then, so
    /// this is only needed by work the body hands to other tasks.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn cancelled(&self) {
        self.shared.cancel.cancelled().await
    }

    /// The scenario's cancellation token, to hand to spawned work.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.shared.cancel
    }

    /// A [`FixtureContext`] for this scenario, for code that sets fixtures up by hand.
    pub fn fixture_context(&self) -> FixtureContext {
        FixtureContext {
            run: self.run.clone(),
            scenario: Some(self.shared.clone()),
            chain: Vec::new(),
            cancel: self.shared.cancel.clone(),
        }
    }
}
