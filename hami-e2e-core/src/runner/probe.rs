//! The capability probe: what the system under test offers, found at most once per run and
//! shared by admission (the dispatcher) and the requirement checks (each scenario).

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::failure::Failure;
use crate::fixture::{FixtureContext, RunShared};
use crate::requirement::Capabilities;

/// The probe a suite registers with [`Runner::probe`](crate::Runner::probe).
pub(super) type Probe =
    Arc<dyn Fn(FixtureContext) -> BoxFuture<'static, Result<Capabilities, Failure>> + Send + Sync>;

/// The probe and, once it ran, what it found.
pub(super) struct Prober {
    probe: Option<Probe>,
    caps: OnceCell<Result<Capabilities, Failure>>,
}

impl Prober {
    pub(super) fn new(probe: Option<Probe>) -> Self {
        Prober {
            probe,
            caps: OnceCell::new(),
        }
    }

    /// What the probe found, running it the first time. Without a probe, nothing is offered.
    pub(super) async fn get(&self, run: &Arc<RunShared>) -> &Result<Capabilities, Failure> {
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

    /// The facts the probe found (cluster, versions), for the summary; none if it did not
    /// run or failed.
    pub(super) fn facts(&self) -> Vec<(String, String)> {
        match self.caps.get() {
            Some(Ok(c)) => c
                .facts
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }
}
