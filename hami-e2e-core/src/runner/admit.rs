//! Device-aware admission, as the dispatcher uses it: the devices of an iteration (this
//! process's, shared through a file, or through a store) and whether a pending scenario may
//! start now, must wait, or can never start.

use std::sync::Arc;

use super::probe::Prober;
use crate::admission::{DevicePool, Reservation, SharedPool, StorePool};
use crate::args::RunConfig;
use crate::event::{FailureReason, Outcome};
use crate::fixture::RunShared;
use crate::scenario::Scenario;

/// What the dispatcher decided for a pending scenario.
pub(super) enum Admit {
    /// Start it with these devices.
    Start(Reservation),
    /// Its demand fits no time: report this outcome without running it.
    Never(Outcome),
    /// Not now: devices it needs are held.
    Wait,
}

/// The devices of an iteration: this process's, shared through a file, or through a store
/// other machines reach.
pub(super) enum Pool {
    Local(DevicePool),
    Shared(SharedPool),
    Store(StorePool),
}

impl Pool {
    pub(super) fn devices(&self) -> &DevicePool {
        match self {
            Pool::Local(p) => p,
            Pool::Shared(p) => p.devices(),
            Pool::Store(p) => p.devices(),
        }
    }

    /// Whether other processes release devices, so waiting scenarios must look again.
    pub(super) fn is_shared(&self) -> bool {
        !matches!(self, Pool::Local(_))
    }

    /// Gives back what `reservation` held; errors are logged, never fatal.
    pub(super) async fn release(&mut self, reservation: &Reservation) {
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
pub(super) async fn admit(
    run: &Arc<RunShared>,
    config: &RunConfig,
    probe: &Prober,
    pool: &mut Option<Pool>,
    s: &dyn Scenario,
) -> Admit {
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
