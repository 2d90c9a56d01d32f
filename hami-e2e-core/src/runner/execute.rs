//! Running one scenario: requirements, attempts and retries of transient failures, the
//! timeout, panics, run cancellation, diagnostics on failure and teardown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::Instrument;

use super::plan::static_report;
use super::probe::Prober;
use crate::admission::Reservation;
use crate::args::RunConfig;
use crate::context::Context;
use crate::duration::format_duration;
use crate::event::{EventKind, FailureReason, Outcome, ScenarioReport};
use crate::fixture::{RunShared, ScenarioShared, ScopeState, TeardownContext};
use crate::scenario::{Scenario, slug};

/// The message of a panic's payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// How an attempt failed.
struct Attempt {
    reason: FailureReason,
    message: String,
    transient: bool,
}

/// Runs one iteration of `scenario`: its requirements, then attempts (retrying transient
/// failures) each under its timeout and followed by its teardown. Reports the outcome as an
/// event and returns it.
pub(super) async fn run_scenario(
    run: &Arc<RunShared>,
    config: &RunConfig,
    probe: &Prober,
    scenario: Arc<dyn Scenario>,
    iteration: u32,
    slot: usize,
    devices: Arc<Reservation>,
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
