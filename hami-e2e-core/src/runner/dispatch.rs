//! The one loop that owns a run (as nextest's dispatcher): it starts scenario tasks as
//! `--parallel` and device admission allow, collects their reports, runs `--repeat`
//! iterations, handles the signals that cancel the run inside its `select!`, tears
//! run-scoped fixtures down and feeds the reporters.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::admit::{Admit, Pool, admit};
use super::conclusion::{Conclusion, exit_code};
use super::execute::run_scenario;
use super::plan::{Plan, static_report};
use super::probe::Prober;
use super::signals::Signals;
use crate::admission::{Demand, Reservation};
use crate::args::RunConfig;
use crate::cancel::CancelToken;
use crate::duration::format_duration;
use crate::error::Result;
use crate::event::{
    CancelReason, Event, EventKind, FailureReason, Outcome, RunSummary, ScenarioReport, SignalKind,
};
use crate::fixture::{Registry, RetryPolicy, RunShared, ScopeState, TeardownContext};
use crate::report::{HtmlReporter, HumanReporter, JsonReporter, JunitReporter, Reporter};
use crate::scenario::Scenario;
use crate::sink::EventSink;

/// Runs `plan`: every iteration, then the run-scoped teardown, then the reports.
///
/// # Errors
///
/// A report file that cannot be created.
pub(super) async fn run(
    plan: Plan,
    config: RunConfig,
    registry: Registry,
    probe: Prober,
    reporters: Vec<Box<dyn Reporter>>,
) -> Result<Conclusion> {
    let Plan {
        to_run,
        ignored,
        filtered_out,
    } = plan;
    let repeated = config.repeat > 1 || config.until_it_fails;
    let reporters = with_configured(reporters, &config, repeated)?;

    let start = Instant::now();
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let reporter_loop = tokio::spawn(report_loop(reporters, rx, stop_rx));
    let events = EventSink::new(Some(tx), start);
    let run = Arc::new(RunShared {
        run_id: new_run_id(),
        registry,
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
    let mut cancel = Cancellation {
        signals: Signals::new(config.handle_signals),
        reason: None,
        fail_fast: config.fail_fast,
        run: run.clone(),
    };

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

    let probe = Arc::new(probe);
    let config = Arc::new(config);
    let mut iteration = 1;
    loop {
        let batch = run_iteration(&run, &config, &probe, &mut cancel, &to_run, iteration).await;
        let any_failed = batch.iter().any(|r| r.outcome.is_failed());
        reports.extend(batch);
        let more = if config.until_it_fails {
            !any_failed
        } else {
            iteration < config.repeat
        };
        // `--fail-fast` after a failure, or a signal.
        if !more || cancel.reason().is_some() || to_run.is_empty() {
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
    let run_errors = cancel
        .with_signals(run.scope.teardown(&tctx, &events, config.teardown_timeout))
        .await;

    reports.sort_by(|a, b| {
        a.scenario
            .cmp(&b.scenario)
            .then(a.iteration.cmp(&b.iteration))
    });
    let summary = RunSummary {
        run_id: run.run_id.clone(),
        scenarios: reports,
        filtered_out,
        run_errors,
        cancelled: matches!(
            cancel.reason(),
            Some(CancelReason::Signal(_) | CancelReason::Requested)
        ),
        repeated,
        facts: probe.facts(),
        duration: start.elapsed(),
    };
    events.emit(EventKind::RunFinished {
        passed: summary.passed(),
        failed: summary.failed(),
        skipped: summary.skipped(),
    });
    let _ = stop_tx.send(());
    let mut report_errors = Vec::new();
    match cancel.with_signals(reporter_loop).await {
        Ok(mut reporters) => {
            for r in &mut reporters {
                if let Err(e) = r.finish(&summary) {
                    report_errors.push(e.to_string());
                }
            }
        }
        Err(e) => report_errors.push(format!("a reporter panicked: {e}")),
    }
    Ok(Conclusion::new(
        Some(summary),
        report_errors,
        cancel.reason(),
    ))
}

/// `reporters` with those the configuration asks for: the human one first, then JUnit,
/// JSON and HTML.
///
/// # Errors
///
/// The JSON report's file cannot be created.
fn with_configured(
    mut reporters: Vec<Box<dyn Reporter>>,
    config: &RunConfig,
    repeated: bool,
) -> Result<Vec<Box<dyn Reporter>>> {
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
    Ok(reporters)
}

/// Why the run stops early, if it does, and the signals that can stop it.
struct Cancellation {
    signals: Signals,
    reason: Option<CancelReason>,
    fail_fast: bool,
    run: Arc<RunShared>,
}

impl Cancellation {
    /// Why the run stops; `None` while it goes on. The run's token cancelled from outside
    /// the dispatcher (a fixture's `cancel_token()`) stops it too.
    fn reason(&self) -> Option<CancelReason> {
        self.reason.or_else(|| {
            self.run
                .cancel
                .is_cancelled()
                .then_some(CancelReason::Requested)
        })
    }

    /// Stops the run for `reason`; of several reasons, the most severe stands. A signal
    /// also cancels the running scenarios; `--fail-fast` lets them finish.
    fn cancel(&mut self, reason: CancelReason) {
        self.reason = self.reason.max(Some(reason));
        if let CancelReason::Signal(_) = reason {
            self.run.cancel.cancel();
        }
    }

    /// Notes a finished scenario: under `--fail-fast`, a failure stops the run.
    fn finished(&mut self, report: &ScenarioReport) {
        if self.fail_fast && report.outcome.is_failed() {
            self.cancel(CancelReason::FailFast);
        }
    }

    /// The first signal cancels the run, which then cleans up; a second one exits at once.
    fn on_signal(&mut self, kind: SignalKind) {
        if let Some(CancelReason::Signal(_)) = self.reason {
            #[cfg(unix)]
            eprintln!(
                "received {} again: exiting without cleaning up",
                kind.name()
            );
            std::process::exit(i32::from(exit_code::INTERRUPTED));
        }
        #[cfg(unix)]
        eprintln!(
            "received {}: cancelling scenarios and cleaning up (send it again to exit at once)",
            kind.name()
        );
        let reason = CancelReason::Signal(kind);
        self.run.events.emit(EventKind::RunCancelling { reason });
        self.cancel(reason);
    }

    /// Awaits `work`, handling the signals that come meanwhile.
    async fn with_signals<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                kind = self.signals.recv() => self.on_signal(kind),
            }
        }
    }
}

/// The skip reason of the scenarios that a cancelled run does not start.
fn not_run(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::FailFast => "not run: --fail-fast after a failure",
        CancelReason::Signal(_) | CancelReason::Requested => "not run: the run was cancelled",
    }
}

/// Feeds every event to every reporter until `stop`, then what is still queued; hands the
/// reporters back for their summaries.
async fn report_loop(
    mut reporters: Vec<Box<dyn Reporter>>,
    mut rx: mpsc::UnboundedReceiver<Event>,
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

/// A run id that sorts by time: `20261125-101500-abcdef` (UTC, and 24 random bits).
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

/// The parallel slots (for timelines): which are taken.
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

/// Runs one iteration of the selection: starts scenarios in name order as `--parallel`
/// and the devices they demand allow (a scenario whose devices are held waits, and those
/// behind it that fit go first), and collects their reports. Signals are handled here, in
/// the loop's `select!`, and while it waits for admission.
async fn run_iteration(
    run: &Arc<RunShared>,
    config: &Arc<RunConfig>,
    probe: &Arc<Prober>,
    cancel: &mut Cancellation,
    to_run: &[Arc<dyn Scenario>],
    iteration: u32,
) -> Vec<ScenarioReport> {
    /// What the dispatcher keeps of a started scenario, so that its slot and devices come
    /// back even if its task fails outside the body.
    struct Started {
        scenario: Arc<dyn Scenario>,
        reservation: Arc<Reservation>,
        slot: usize,
    }
    let slots = Slots(Mutex::new(vec![false; config.parallel]));
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
    let finish_unrun = |s: &Arc<dyn Scenario>, outcome: Outcome, cancel: &mut Cancellation| {
        let mut r = static_report(s.as_ref(), outcome);
        r.iteration = iteration;
        cancel.finished(&r);
        run.events.emit(EventKind::ScenarioFinished(r.clone()));
        r
    };
    loop {
        if let Some(reason) = cancel.reason() {
            for p in pending.drain(..) {
                let outcome = Outcome::Skipped {
                    reason: not_run(reason).to_string(),
                };
                reports.push(finish_unrun(&p.scenario, outcome, cancel));
            }
        }
        // Start what may start, first come first served among those that fit.
        let mut i = 0;
        // Demands found waiting in this pass: the same demands behind them wait too, without
        // asking the pool again (a long queue costs one look per distinct demand).
        let mut waiting: Vec<Vec<Demand>> = Vec::new();
        while started.len() < config.parallel && i < pending.len() {
            if cancel.reason().is_some() {
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
            let scenario = pending[i].scenario.as_ref();
            match cancel
                .with_signals(admit(run, config, probe, &mut pool, scenario))
                .await
            {
                Admit::Wait => {
                    waiting.push(pending[i].scenario.demands().to_vec());
                    i += 1;
                }
                Admit::Never(outcome) => {
                    if let Some(p) = pending.remove(i) {
                        reports.push(finish_unrun(&p.scenario, outcome, cancel));
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
            if cancel.reason().is_some() {
                continue;
            }
            // Nothing runs, so every device is free, and what is pending fits (it passed
            // `can_ever_hold`): unreachable unless the bookkeeping is wrong. Never hang.
            if let Some(p) = pending.pop_front() {
                let outcome = Outcome::Failed {
                    reason: FailureReason::Error,
                    message: "admission could not place its demand on idle devices".into(),
                };
                reports.push(finish_unrun(&p.scenario, outcome, cancel));
            }
            continue;
        }
        tokio::select! {
            biased;
            kind = cancel.signals.recv() => cancel.on_signal(kind),
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
                    cancel.with_signals(pool.release(&s.reservation)).await;
                }
                let report = match report {
                    Some(r) => {
                        cancel.finished(&r);
                        r
                    }
                    None => finish_unrun(
                        &s.scenario,
                        Outcome::Failed {
                            reason: FailureReason::Panic,
                            message: "its task failed outside the body (a panic in the runner or the scenario's methods)".into(),
                        },
                        cancel,
                    ),
                };
                reports.push(report);
            }
            _ = tokio::time::sleep(poll_every), if poll => {}
            _ = tokio::time::sleep(STILL_WAITING), if !waiting.is_empty() => {}
        }
    }
    reports
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
