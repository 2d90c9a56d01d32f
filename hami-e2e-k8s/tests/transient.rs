//! A project that reuses the fixtures gets the retries of transient Kubernetes errors with
//! the cluster fixture alone: no suite, no call to `register_transient_errors` of its own.
//! (Its own test binary: the classifiers are registered for the whole process.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hami_e2e_core::{Outcome, RunConfig, Runner, scenario};
use hami_e2e_k8s::{ClusterFixture, ClusterSource};

fn too_many_requests() -> kube::Error {
    kube::Error::Api(Box::new(
        kube::core::Status::failure("the server is busy", "TooManyRequests").with_code(429),
    ))
}

async fn attempts_of_a_scenario_failing_once_with_429(runner: Runner) -> (Outcome, u32) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let runner = runner.scenario(scenario("busy-once").run(move |_| {
        let c = c.clone();
        async move {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(too_many_requests())?;
            }
            Ok(())
        }
    }));
    let mut config = RunConfig::default();
    config.human_output = false;
    config.retries = 2;
    config.retry_delay = Duration::from_millis(1);
    config.artifacts = std::env::temp_dir().join("hami-e2e-k8s-transient-test");
    let summary = runner
        .run(config)
        .await
        .expect("a valid suite")
        .summary()
        .cloned()
        .expect("a run");
    let report = &summary.scenarios[0];
    (report.outcome.clone(), report.attempts)
}

#[tokio::test]
async fn a_429_is_retried_once_the_cluster_fixture_exists() {
    // Before any ClusterFixture: the core alone does not know kube's errors.
    let (outcome, attempts) = attempts_of_a_scenario_failing_once_with_429(Runner::new()).await;
    assert!(outcome.is_failed(), "{outcome:?}");
    assert_eq!(attempts, 1, "not retried without the classifier");

    // The fixture is never set up (the scenario does not ask for it): no cluster is needed.
    let runner = Runner::new().fixture(ClusterFixture::new(ClusterSource::kubeconfig(
        "/nonexistent/kubeconfig",
        None,
    )));
    let (outcome, attempts) = attempts_of_a_scenario_failing_once_with_429(runner).await;
    assert_eq!(outcome, Outcome::Passed);
    assert_eq!(attempts, 2, "retried once");
}
