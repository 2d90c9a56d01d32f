//! The runner, run in-process: cleanup guarantees, retries, filters, ordering, reports.
//! Process-level behaviour (exit codes, signals, `--list`, nextest) is tested in
//! `testing/selftest`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hami_e2e_core::{
    Capabilities, Failure, FailureReason, Fixture, FixtureContext, LabelExpr, NameFilter, Outcome,
    Requirement, RunConfig, RunSummary, Runner, Scope, TeardownContext, bail, ensure, scenario,
};

type Log = Arc<Mutex<Vec<String>>>;

fn config() -> RunConfig {
    let mut c = RunConfig::default();
    c.human_output = false;
    c.retry_delay = Duration::from_millis(1);
    c.artifacts = std::env::temp_dir().join("hami-e2e-core-tests");
    c
}

async fn run(runner: Runner, config: RunConfig) -> RunSummary {
    runner
        .run(config)
        .await
        .expect("valid suite")
        .summary()
        .cloned()
        .expect("a run, not a listing")
}

fn outcome<'a>(s: &'a RunSummary, name: &str) -> &'a Outcome {
    &s.scenarios
        .iter()
        .find(|r| r.scenario == name)
        .unwrap_or_else(|| panic!("{name} not reported"))
        .outcome
}

/// A fixture that logs its set-up and teardown, scoped as asked.
struct Logged {
    name: &'static str,
    scope: Scope,
    log: Log,
}

impl Fixture for Logged {
    type Output = &'static str;
    fn name(&self) -> String {
        self.name.to_string()
    }
    fn scope(&self) -> Scope {
        self.scope
    }
    async fn setup(&self, ctx: &FixtureContext) -> Result<&'static str, Failure> {
        self.log.lock().unwrap().push(format!(
            "setup {} {}",
            self.name,
            ctx.scenario().unwrap_or("<run>")
        ));
        Ok(self.name)
    }
    async fn teardown(&self, _: &&'static str, ctx: &TeardownContext) -> Result<(), Failure> {
        self.log.lock().unwrap().push(format!(
            "teardown {} {} failed={}",
            self.name,
            ctx.scenario().unwrap_or("<run>"),
            ctx.failed()
        ));
        Ok(())
    }
}

/// Wrappers so two `Logged` fixtures have distinct types.
struct RunFix(Logged);
struct ScenFix(Logged);
struct DepFix(Logged);

impl Fixture for RunFix {
    type Output = &'static str;
    fn scope(&self) -> Scope {
        Scope::Run
    }
    async fn setup(&self, ctx: &FixtureContext) -> Result<&'static str, Failure> {
        self.0.setup(ctx).await
    }
    async fn teardown(&self, v: &&'static str, ctx: &TeardownContext) -> Result<(), Failure> {
        self.0.teardown(v, ctx).await
    }
}

impl Fixture for ScenFix {
    type Output = &'static str;
    async fn setup(&self, ctx: &FixtureContext) -> Result<&'static str, Failure> {
        ctx.fixture::<RunFix>().await?;
        self.0.setup(ctx).await
    }
    async fn teardown(&self, v: &&'static str, ctx: &TeardownContext) -> Result<(), Failure> {
        self.0.teardown(v, ctx).await
    }
}

impl Fixture for DepFix {
    type Output = &'static str;
    async fn setup(&self, ctx: &FixtureContext) -> Result<&'static str, Failure> {
        ctx.fixture::<ScenFix>().await?;
        self.0.setup(ctx).await
    }
    async fn teardown(&self, v: &&'static str, ctx: &TeardownContext) -> Result<(), Failure> {
        self.0.teardown(v, ctx).await
    }
}

fn logged_runner(log: &Log) -> Runner {
    let l = |name| Logged {
        name,
        scope: Scope::Scenario,
        log: log.clone(),
    };
    Runner::new()
        .fixture(RunFix(l("run")))
        .fixture(ScenFix(l("scen")))
        .fixture(DepFix(l("dep")))
}

fn teardowns_of(log: &Log, scenario: &str) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("teardown") && l.contains(scenario))
        .cloned()
        .collect()
}

#[test_log::test(tokio::test)]
async fn teardown_runs_after_success_failure_panic_and_timeout_in_reverse_order() {
    let log: Log = Arc::default();
    let runner =
        logged_runner(&log)
            .scenario(scenario("ok").run(|ctx| async move {
                ctx.fixture::<DepFix>().await?;
                Ok(())
            }))
            .scenario(scenario("fails").run(|ctx| async move {
                ctx.fixture::<DepFix>().await?;
                bail!("expected 2 pods, found 1");
            }))
            .scenario(scenario("panics").run(|ctx| async move {
                ctx.fixture::<DepFix>().await?;
                panic!("boom");
            }))
            .scenario(scenario("hangs").timeout(Duration::from_millis(200)).run(
                |ctx| async move {
                    ctx.fixture::<DepFix>().await?;
                    ctx.step("wait forever", async {
                        std::future::pending::<Result<(), Failure>>().await
                    })
                    .await
                },
            ));
    let s = run(runner, config()).await;

    assert_eq!(outcome(&s, "ok"), &Outcome::Passed);
    assert!(
        matches!(outcome(&s, "fails"), Outcome::Failed { reason: FailureReason::Assertion, message } if message == "expected 2 pods, found 1")
    );
    assert!(
        matches!(outcome(&s, "panics"), Outcome::Failed { reason: FailureReason::Panic, message } if message.contains("boom"))
    );
    assert!(
        matches!(outcome(&s, "hangs"), Outcome::Failed { reason: FailureReason::Timeout, message } if message == "timed out after 200ms in step `wait forever`"),
        "{:?}",
        outcome(&s, "hangs")
    );
    for name in ["ok", "fails", "panics", "hangs"] {
        let failed = name != "ok";
        assert_eq!(
            teardowns_of(&log, name),
            [
                format!("teardown dep {name} failed={failed}"),
                format!("teardown scen {name} failed={failed}")
            ],
            "{name}"
        );
    }
    let log = log.lock().unwrap();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("setup run")).count(),
        1,
        "run fixture set up once: {log:?}"
    );
    assert_eq!(
        log.last().unwrap(),
        "teardown run <run> failed=true",
        "run fixture torn down last"
    );
}

#[test_log::test(tokio::test)]
async fn deferred_cleanups_interleave_with_fixture_teardown_lifo() {
    let log: Log = Arc::default();
    let l2 = log.clone();
    let runner = logged_runner(&log).scenario(scenario("defer").run(move |ctx| {
        let log = l2.clone();
        async move {
            ctx.fixture::<ScenFix>().await?;
            let l = log.clone();
            ctx.defer("delete pod", async move {
                l.lock().unwrap().push("deferred delete pod".into());
                Ok(())
            });
            ctx.defer("fails", async { Err(Failure::msg("api said no")) });
            Ok(())
        }
    }));
    let s = run(runner, config()).await;
    let log = log.lock().unwrap();
    let pos = |needle: &str| {
        log.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {log:?}"))
    };
    assert!(pos("deferred delete pod") < pos("teardown scen defer"));
    // The body passed, but a cleanup failed: the scenario fails and says which.
    match outcome(&s, "defer") {
        Outcome::Failed {
            reason: FailureReason::Teardown,
            message,
        } => {
            assert_eq!(
                message,
                "teardown of deferred cleanup `fails` failed: api said no"
            )
        }
        other => panic!("{other:?}"),
    }
}

struct Flaky {
    calls: Arc<AtomicU32>,
    fail_times: u32,
}

impl Fixture for Flaky {
    type Output = u32;
    async fn setup(&self, _: &FixtureContext) -> Result<u32, Failure> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.fail_times {
            return Err(Failure::transient(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )));
        }
        Ok(n)
    }
}

#[test_log::test(tokio::test)]
async fn only_transient_failures_are_retried_and_retries_are_bounded() {
    let body_calls = Arc::new(AtomicU32::new(0));
    let assert_calls = Arc::new(AtomicU32::new(0));
    let fixture_calls = Arc::new(AtomicU32::new(0));
    let (b, a) = (body_calls.clone(), assert_calls.clone());
    let runner = Runner::new()
        .fixture(Flaky {
            calls: fixture_calls.clone(),
            fail_times: 1,
        })
        .scenario(scenario("transient").run(move |_| {
            let b = b.clone();
            async move {
                if b.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset))?;
                }
                Ok(())
            }
        }))
        .scenario(scenario("assertion").run(move |_| {
            let a = a.clone();
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                ensure!(1 + 1 == 3, "arithmetic");
                Ok(())
            }
        }))
        .scenario(
            scenario("always-transient")
                .run(|_| async { Err(Failure::transient("apiserver restarting")) }),
        )
        .scenario(scenario("fixture-retry").run(|ctx| async move {
            let n = ctx.fixture::<Flaky>().await?;
            ensure!(*n == 2, "fixture set up on attempt {n}");
            Ok(())
        }));
    let mut c = config();
    c.retries = 2;
    let s = run(runner, c).await;
    let report = |n: &str| {
        s.scenarios
            .iter()
            .find(|r| r.scenario == n)
            .unwrap()
            .clone()
    };
    assert_eq!(report("transient").outcome, Outcome::Passed);
    assert_eq!(report("transient").attempts, 2);
    assert_eq!(body_calls.load(Ordering::SeqCst), 2);
    assert!(report("assertion").outcome.is_failed());
    assert_eq!(
        assert_calls.load(Ordering::SeqCst),
        1,
        "assertions are never retried"
    );
    assert_eq!(report("always-transient").attempts, 3, "1 + 2 retries");
    assert!(matches!(
        report("always-transient").outcome,
        Outcome::Failed {
            reason: FailureReason::Transient,
            ..
        }
    ));
    assert_eq!(report("fixture-retry").outcome, Outcome::Passed);
    assert_eq!(fixture_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn filters_select_by_name_label_and_ignored() {
    let mk = |name: &str, labels: &[&str]| {
        scenario(name)
            .labels(labels.iter().copied())
            .run(|_| async { Ok(()) })
    };
    let runner = || {
        Runner::new()
            .scenario(mk("nvidia/alloc", &["nvidia", "smoke"]))
            .scenario(mk("nvidia/slow", &["nvidia", "slow"]))
            .scenario(mk("hygon/alloc", &["hygon", "smoke"]))
            .scenario(
                scenario("manual")
                    .ignore("needs a human")
                    .run(|_| async { Ok(()) }),
            )
    };
    let mut c = config();
    c.labels = Some(LabelExpr::parse("nvidia && !slow || hygon").unwrap());
    let s = run(runner(), c).await;
    let names: Vec<_> = s
        .scenarios
        .iter()
        .map(|r| (r.scenario.as_str(), r.outcome.is_passed()))
        .collect();
    assert_eq!(names, [("hygon::alloc", true), ("nvidia::alloc", true)]);
    assert_eq!(
        s.filtered_out, 2,
        "nvidia::slow and the ignored `manual` (which matches no label)"
    );

    let mut c = config();
    c.names = NameFilter {
        filters: vec!["alloc".into(), "manual".into()],
        skip: vec!["hygon".into()],
        exact: false,
    };
    let s = run(runner(), c).await;
    let names: Vec<_> = s.scenarios.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(names, ["manual", "nvidia::alloc"]);
    assert_eq!(
        outcome(&s, "manual"),
        &Outcome::Skipped {
            reason: "ignored: needs a human".into()
        }
    );
}

#[tokio::test]
async fn requirements_skip_with_the_reason_or_fail_under_require() {
    let probes = Arc::new(AtomicU32::new(0));
    let runner = |probes: Arc<AtomicU32>| {
        Runner::new()
            .probe(move |_ctx| {
                let probes = probes.clone();
                async move {
                    probes.fetch_add(1, Ordering::SeqCst);
                    Ok(Capabilities::default()
                        .with_quantity("nvidia devices on one node", 1)
                        .with_fact("kubernetes", "v1.37.2"))
                }
            })
            .scenario(
                scenario("one")
                    .requires(Requirement::at_least("nvidia devices on one node", 1))
                    .run(|_| async { Ok(()) }),
            )
            .scenario(
                scenario("two")
                    .requires(Requirement::at_least("nvidia devices on one node", 2))
                    .run(|_| async { Ok(()) }),
            )
            .scenario(
                scenario("real")
                    .requires(Requirement::flag("real-device"))
                    .run(|_| async { Ok(()) }),
            )
    };
    let s = run(runner(probes.clone()), config()).await;
    assert_eq!(probes.load(Ordering::SeqCst), 1, "probed once per run");
    assert_eq!(outcome(&s, "one"), &Outcome::Passed);
    assert_eq!(
        outcome(&s, "two"),
        &Outcome::Skipped {
            reason: "needs 2 nvidia devices on one node, has 1".into()
        }
    );
    assert_eq!(
        outcome(&s, "real"),
        &Outcome::Skipped {
            reason: "needs real-device".into()
        }
    );
    assert_eq!(s.facts, [("kubernetes".to_string(), "v1.37.2".to_string())]);
    assert!(s.success());

    let mut c = config();
    c.require = true;
    let s = run(runner(probes), c).await;
    assert!(matches!(
        outcome(&s, "two"),
        Outcome::Failed {
            reason: FailureReason::Requirement,
            ..
        }
    ));
    assert!(!s.success());
}

#[tokio::test]
async fn parallelism_is_bounded_and_reports_are_ordered_by_name() {
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let mut runner = Runner::new();
    for i in (0..12).rev() {
        let (running, peak) = (running.clone(), peak.clone());
        runner = runner.scenario(scenario(format!("p/{i:02}")).run(move |_| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }));
    }
    let mut c = config();
    c.parallel = 3;
    let s = run(runner, c).await;
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    let names: Vec<_> = s.scenarios.iter().map(|r| r.scenario.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(s.scenarios.iter().all(|r| r.slot < 3));
}

#[tokio::test]
async fn serial_scenarios_run_alone_after_the_others() {
    let running = Arc::new(AtomicU32::new(0));
    let log: Log = Arc::default();
    let mut runner = Runner::new();
    // `a/serial-*` sort before `b/*`, yet run after them, each alone.
    for (name, serial) in [
        ("a/serial-1", true),
        ("a/serial-2", true),
        ("b/0", false),
        ("b/1", false),
        ("b/2", false),
    ] {
        let (running, log) = (running.clone(), log.clone());
        let mut b = scenario(name);
        if serial {
            b = b.serial();
        }
        runner = runner.scenario(b.run(move |ctx| {
            let (running, log) = (running.clone(), log.clone());
            async move {
                let others = running.fetch_add(1, Ordering::SeqCst);
                log.lock()
                    .unwrap()
                    .push(format!("{} with {others}", ctx.name()));
                tokio::time::sleep(Duration::from_millis(30)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }));
    }
    let mut c = config();
    c.parallel = 4;
    let s = run(runner, c).await;
    assert_eq!(s.scenarios.len(), 5);
    let log = log.lock().unwrap().clone();
    assert_eq!(
        &log[3..],
        ["a::serial-1 with 0", "a::serial-2 with 0"],
        "{log:?}"
    );
    assert!(log[..3].iter().all(|l| l.starts_with("b::")), "{log:?}");
    let serial = s.scenarios.iter().find(|r| r.scenario == "a::serial-1");
    assert!(serial.is_some_and(|r| r.labels.iter().any(|l| l == "serial")));
}

#[tokio::test]
async fn fail_fast_stops_starting_scenarios() {
    let mut runner = Runner::new()
        .scenario(scenario("a-fails").run(|_| async { Err(Failure::assertion("no")) }));
    for i in 0..5 {
        runner = runner.scenario(scenario(format!("b/{i}")).run(|_| async { Ok(()) }));
    }
    let mut c = config();
    c.parallel = 1;
    c.fail_fast = true;
    let s = run(runner, c).await;
    assert_eq!(s.failed(), 1);
    assert_eq!(s.passed(), 0);
    assert!(s.scenarios.iter().filter(|r| r.scenario.starts_with("b")).all(|r| matches!(&r.outcome, Outcome::Skipped { reason } if reason.contains("fail-fast"))));
}

#[tokio::test]
async fn repeat_and_until_it_fails() {
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let runner = Runner::new().scenario(scenario("flaky").run(move |_| {
        let calls = c2.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            ensure!(n < 4, "failed on run {n}");
            Ok(())
        }
    }));
    let mut c = config();
    c.until_it_fails = true;
    let s = run(runner, c).await;
    assert_eq!(s.scenarios.len(), 4);
    assert_eq!(s.scenarios.last().unwrap().iteration, 4);
    assert!(s.scenarios.last().unwrap().outcome.is_failed());

    let runner = Runner::new().scenario(scenario("steady").run(|_| async { Ok(()) }));
    let mut c = config();
    c.repeat = 3;
    let s = run(runner, c).await;
    assert_eq!(
        s.scenarios.iter().map(|r| r.iteration).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[tokio::test]
async fn fixture_errors_name_the_fixture() {
    struct Broken;
    impl Fixture for Broken {
        type Output = ();
        async fn setup(&self, _: &FixtureContext) -> Result<(), Failure> {
            Err(Failure::msg("port 6443 in use"))
        }
    }
    struct NotRegistered;
    impl Fixture for NotRegistered {
        type Output = ();
        async fn setup(&self, _: &FixtureContext) -> Result<(), Failure> {
            Ok(())
        }
    }
    struct CycleA;
    struct CycleB;
    impl Fixture for CycleA {
        type Output = ();
        async fn setup(&self, ctx: &FixtureContext) -> Result<(), Failure> {
            ctx.fixture::<CycleB>().await.map(|_| ())
        }
    }
    impl Fixture for CycleB {
        type Output = ();
        async fn setup(&self, ctx: &FixtureContext) -> Result<(), Failure> {
            ctx.fixture::<CycleA>().await.map(|_| ())
        }
    }
    let runner = Runner::new()
        .fixture(Broken)
        .fixture(CycleA)
        .fixture(CycleB)
        .scenario(
            scenario("broken").run(|ctx| async move { ctx.fixture::<Broken>().await.map(|_| ()) }),
        )
        .scenario(
            scenario("missing")
                .run(|ctx| async move { ctx.fixture::<NotRegistered>().await.map(|_| ()) }),
        )
        .scenario(
            scenario("cycle").run(|ctx| async move { ctx.fixture::<CycleA>().await.map(|_| ()) }),
        );
    let s = run(runner, config()).await;
    let msg = |n| match outcome(&s, n) {
        Outcome::Failed { message, .. } => message.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        msg("broken"),
        "set-up of fixture `Broken`: port 6443 in use"
    );
    assert!(
        msg("missing").contains("NotRegistered` is not registered"),
        "{}",
        msg("missing")
    );
    assert!(
        msg("cycle").contains("fixture dependency cycle: CycleA -> CycleB -> CycleA"),
        "{}",
        msg("cycle")
    );
}

#[tokio::test]
async fn junit_and_json_reports_are_written() {
    let dir = std::env::temp_dir().join(format!("hami-e2e-core-reports-{}", std::process::id()));
    let mut c = config();
    c.junit = Some(dir.join("junit.xml"));
    c.json = Some(dir.join("events.jsonl"));
    let runner = Runner::new()
        .scenario(scenario("nvidia/ok").run(|ctx| async move {
            ctx.step("create <pod> & wait", async { Ok::<_, Failure>(()) })
                .await
        }))
        .scenario(scenario("nvidia/bad").run(|ctx| async move {
            ctx.attach("events", "0/1 nodes are available");
            bail!("pod <p> \"stuck\"")
        }))
        .scenario(
            scenario("skipped")
                .ignore("manual")
                .run(|_| async { Ok(()) }),
        );
    let s = run(runner, c).await;
    assert_eq!((s.passed(), s.failed(), s.skipped()), (1, 1, 1));

    let xml = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(
        xml.contains(r#"<testsuite name="nvidia" tests="2" skipped="0" errors="0" failures="1""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="nvidia::bad" classname="nvidia""#),
        "{xml}"
    );
    assert!(
        xml.contains("pod &lt;p&gt; &quot;stuck&quot;"),
        "escaped: {xml}"
    );
    assert!(
        xml.contains("step ok create &lt;pod&gt; &amp; wait"),
        "{xml}"
    );
    assert!(xml.contains("0/1 nodes are available"), "{xml}");
    assert!(
        xml.contains(r#"<skipped message="ignored: manual"/>"#),
        "{xml}"
    );

    let jsonl = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["event"], "run_started");
    assert_eq!(events.last().unwrap()["event"], "summary");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "step_finished" && e["step"] == "create <pod> & wait")
    );
    assert!(events.iter().any(|e| e["event"] == "scenario_finished"
        && e["scenario"] == "nvidia::bad"
        && e["status"] == "failed"
        && e["reason"] == "assertion"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn invalid_suites_are_rejected_before_running() {
    let r = Runner::new()
        .scenario(scenario("dup").run(|_| async { Ok(()) }))
        .scenario(scenario("dup").run(|_| async { Ok(()) }))
        .run(config())
        .await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "scenario `dup` is registered twice"
    );
    let r = Runner::new()
        .scenario(scenario("a b").run(|_| async { Ok(()) }))
        .run(config())
        .await;
    assert!(
        r.unwrap_err()
            .to_string()
            .starts_with("invalid scenario name `a b`")
    );
}

#[tokio::test]
async fn run_fixture_teardown_errors_fail_the_run() {
    struct BadTeardown;
    impl Fixture for BadTeardown {
        type Output = ();
        fn scope(&self) -> Scope {
            Scope::Run
        }
        async fn setup(&self, _: &FixtureContext) -> Result<(), Failure> {
            Ok(())
        }
        async fn teardown(&self, _: &(), _: &TeardownContext) -> Result<(), Failure> {
            Err(Failure::msg("namespace hami-system stuck terminating"))
        }
    }
    let conclusion = Runner::new()
        .fixture(BadTeardown)
        .scenario(
            scenario("uses")
                .run(|ctx| async move { ctx.fixture::<BadTeardown>().await.map(|_| ()) }),
        )
        .run(config())
        .await
        .unwrap();
    let s = conclusion.summary().unwrap();
    assert_eq!(s.passed(), 1);
    assert_eq!(
        s.run_errors,
        ["teardown of fixture `BadTeardown` failed: namespace hami-system stuck terminating"]
    );
    assert!(!conclusion.success());
}

/// A run-scoped fixture that records the scenarios whose failure it was asked to report.
struct Reporting(Log);

impl Fixture for Reporting {
    type Output = ();
    fn scope(&self) -> Scope {
        Scope::Run
    }
    async fn setup(&self, _: &FixtureContext) -> Result<(), Failure> {
        Ok(())
    }
    async fn on_failure(&self, _: &(), ctx: &TeardownContext) {
        self.0
            .lock()
            .unwrap()
            .push(ctx.scenario().unwrap_or("<run>").to_string());
        ctx.attach("shared state", "what the run-scoped fixture saw");
    }
}

#[tokio::test]
async fn run_scoped_fixtures_report_into_the_failed_scenarios_that_used_them() {
    let log: Log = Arc::default();
    let runner = Runner::new()
        .fixture(Reporting(log.clone()))
        .scenario(scenario("uses-and-fails").run(|ctx| async move {
            ctx.fixture::<Reporting>().await?;
            bail!("failing")
        }))
        .scenario(scenario("uses-and-passes").run(|ctx| async move {
            ctx.fixture::<Reporting>().await?;
            Ok(())
        }))
        .scenario(scenario("fails-without-it").run(|_| async { bail!("failing") }));
    let summary = run(runner, config()).await;
    assert_eq!(*log.lock().unwrap(), ["uses-and-fails"]);
    let report = summary
        .scenarios
        .iter()
        .find(|s| s.scenario == "uses-and-fails")
        .unwrap();
    assert!(report.attachments.iter().any(|a| a.title == "shared state"));
}

/// Eight scenarios that each hold two whole devices of a pool of four (two per node), and
/// record which devices they used while they ran.
fn contended(
    probe_calls: &Arc<AtomicU32>,
    held: &Arc<Mutex<Vec<String>>>,
    overlaps: &Arc<AtomicU32>,
) -> Runner {
    use hami_e2e_core::{Demand, PoolDevice};
    let calls = probe_calls.clone();
    let mut runner = Runner::new().probe(move |_ctx| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut caps = Capabilities::default();
            for node in ["a", "b"] {
                for i in 0..2 {
                    caps =
                        caps.with_device(PoolDevice::new("gpu", node, format!("{node}{i}"), 16384));
                }
            }
            Ok(caps)
        }
    });
    for n in 0..8 {
        let (held, overlaps) = (held.clone(), overlaps.clone());
        runner = runner.scenario(
            scenario(format!("gpu/two-{n}"))
                .demand(Demand::devices("gpu", 2).exclusive())
                .run(move |ctx| {
                    let (held, overlaps) = (held.clone(), overlaps.clone());
                    async move {
                        let mine: Vec<String> = ctx
                            .devices()
                            .all_devices()
                            .map(ToString::to_string)
                            .collect();
                        ensure!(mine.len() == 2, "two devices granted, got {mine:?}");
                        let node = ctx.devices().node("gpu").unwrap_or_default().to_string();
                        ensure!(
                            mine.iter().all(|d| d.starts_with(&format!("gpu:{node}/"))),
                            "one node: {mine:?}"
                        );
                        {
                            let mut h = held.lock().unwrap();
                            if mine.iter().any(|d| h.contains(d)) {
                                overlaps.fetch_add(1, Ordering::SeqCst);
                            }
                            h.extend(mine.iter().cloned());
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        held.lock().unwrap().retain(|d| !mine.contains(d));
                        Ok(())
                    }
                }),
        );
    }
    runner
}

#[tokio::test]
async fn admission_never_hands_a_device_to_two_scenarios_at_once() {
    let (calls, held, overlaps) = Default::default();
    let mut c = config();
    c.parallel = 8;
    let started = std::time::Instant::now();
    let summary = run(contended(&calls, &held, &overlaps), c).await;
    assert_eq!(summary.passed(), 8, "{:?}", summary.scenarios);
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "no device was shared");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "probed once");
    // Two at a time (four devices, two each): four rounds of 100 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let waited = summary
        .scenarios
        .iter()
        .filter(|r| r.queued >= Duration::from_millis(90))
        .count();
    assert_eq!(waited, 6, "all but the first two waited for devices");
    assert!(summary.scenarios.iter().all(|r| r.devices.len() == 2));

    // Without admission, all eight start at once on the devices they would get alone.
    let (calls, held, overlaps) = Default::default();
    let mut c = config();
    c.parallel = 8;
    c.admission = false;
    let summary = run(contended(&calls, &held, &overlaps), c).await;
    assert_eq!(summary.passed(), 8);
    assert!(
        overlaps.load(Ordering::SeqCst) >= 6,
        "devices were shared: {overlaps:?}"
    );
}

#[tokio::test]
async fn demands_the_devices_cannot_hold_are_skipped_and_others_go_ahead() {
    use hami_e2e_core::{Demand, PoolDevice};
    let runner = || {
        Runner::new()
            .probe(|_ctx| async {
                Ok(Capabilities::default().with_device(PoolDevice::new("gpu", "a", "a0", 8192)))
            })
            .scenario(
                scenario("a/too-many")
                    .demand(Demand::devices("gpu", 2))
                    .run(|_| async { Ok(()) }),
            )
            .scenario(
                scenario("b/unknown-kind")
                    .demand(Demand::devices("npu", 1))
                    .run(|_| async { Ok(()) }),
            )
            .scenario(
                scenario("c/holds-the-device")
                    .demand(Demand::all("gpu"))
                    .run(|_| async {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(())
                    }),
            )
            .scenario(
                scenario("d/also-wants-it")
                    .demand(Demand::devices("gpu", 1).memory_mib(4096))
                    .run(|_| async { Ok(()) }),
            )
            .scenario(scenario("e/no-devices").run(|_| async { Ok(()) }))
    };
    let mut c = config();
    c.parallel = 4;
    let summary = run(runner(), c).await;
    assert_eq!(
        outcome(&summary, "a::too-many"),
        &Outcome::Skipped {
            reason: "needs 2 gpu devices on one node; the cluster has 1 gpu device, at most 1 on one node".into()
        }
    );
    assert!(
        matches!(outcome(&summary, "b::unknown-kind"), Outcome::Skipped { reason } if reason.contains("no npu devices")),
        "{:?}",
        outcome(&summary, "b::unknown-kind")
    );
    let report = |name: &str| {
        summary
            .scenarios
            .iter()
            .find(|r| r.scenario == name)
            .unwrap()
    };
    assert!(report("c::holds-the-device").outcome.is_passed());
    assert!(
        report("d::also-wants-it").queued >= Duration::from_millis(250),
        "waited for c"
    );
    assert!(
        report("e::no-devices").queued < Duration::from_millis(100),
        "did not wait behind d"
    );
    assert_eq!(report("d::also-wants-it").devices, ["gpu:a/a0"]);

    let mut c = config();
    c.require = true;
    let summary = run(runner(), c).await;
    assert!(matches!(
        outcome(&summary, "a::too-many"),
        Outcome::Failed { reason: FailureReason::Requirement, message } if message.starts_with("required but needs 2 gpu devices")
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_sharing_an_admission_file_never_share_a_device() {
    let path = std::env::temp_dir().join(format!(
        "hami-e2e-admission-test-{}.json",
        std::process::id()
    ));
    let (held, overlaps): (Arc<Mutex<Vec<String>>>, Arc<AtomicU32>) = Default::default();
    let one = || {
        let mut c = config();
        c.parallel = 8;
        c.admission_file = Some(path.clone());
        run(contended(&Default::default(), &held, &overlaps), c)
    };
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(one(), one());
    assert_eq!(
        (a.passed(), b.passed()),
        (8, 8),
        "{:?} {:?}",
        a.scenarios,
        b.scenarios
    );
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "no device held by two runs at once"
    );
    // Sixteen scenarios, two at a time, 100 ms each.
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert!(!path.exists(), "the last release removed the file");
}

/// A scenario whose `timeout()` panics: its task fails outside the body.
struct PanicsOutsideItsBody(Vec<hami_e2e_core::Demand>);

impl hami_e2e_core::Scenario for PanicsOutsideItsBody {
    fn name(&self) -> &str {
        "a::panics-outside"
    }
    fn demands(&self) -> &[hami_e2e_core::Demand] {
        &self.0
    }
    fn timeout(&self) -> Option<Duration> {
        panic!("a broken scenario")
    }
    fn run(
        &self,
        _ctx: hami_e2e_core::Context,
    ) -> futures::future::BoxFuture<'static, Result<(), Failure>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_task_that_fails_outside_the_body_gives_its_devices_back_and_is_reported() {
    use hami_e2e_core::{Demand, PoolDevice};
    let whole = || Demand::devices("gpu", 1).exclusive();
    let runner = Runner::new()
        .probe(|_ctx| async {
            Ok(Capabilities::default().with_device(PoolDevice::new("gpu", "a", "a0", 1)))
        })
        .scenario(PanicsOutsideItsBody(vec![whole()]))
        .scenario(
            scenario("b/after")
                .demand(whole())
                .run(|_| async { Ok(()) }),
        );
    let mut c = config();
    c.parallel = 1;
    let summary = tokio::time::timeout(Duration::from_secs(10), run(runner, c))
        .await
        .expect("no hang: the device came back");
    assert!(matches!(
        outcome(&summary, "a::panics-outside"),
        Outcome::Failed {
            reason: FailureReason::Panic,
            ..
        }
    ));
    assert!(outcome(&summary, "b::after").is_passed());
}

#[tokio::test]
async fn fail_fast_counts_demands_that_fail_before_running() {
    use hami_e2e_core::Demand;
    let runner = Runner::new()
        .probe(|_ctx| async { Ok(Capabilities::default()) })
        .scenario(
            scenario("a/needs-a-gpu")
                .demand(Demand::devices("gpu", 1))
                .run(|_| async { Ok(()) }),
        )
        .scenario(scenario("b/next").run(|_| async { Ok(()) }));
    let mut c = config();
    c.require = true;
    c.fail_fast = true;
    c.parallel = 1;
    let summary = run(runner, c).await;
    assert!(outcome(&summary, "a::needs-a-gpu").is_failed());
    assert_eq!(
        outcome(&summary, "b::next"),
        &Outcome::Skipped {
            reason: "not run: --fail-fast after a failure".into()
        }
    );
}

#[tokio::test]
async fn a_run_cancelled_through_its_token_skips_what_has_not_started() {
    // The probe's context carries the run's own token; a suite's code may cancel it. The
    // probe runs when the first scenario with a requirement is admitted.
    let runner = Runner::new()
        .probe(|ctx| async move {
            ctx.cancel_token().cancel();
            Ok(Capabilities::default())
        })
        .scenario(
            scenario("a")
                .requires(Requirement::at_least("devices", 0))
                .run(|_| async { Ok(()) }),
        )
        .scenario(scenario("b").run(|_| async { Ok(()) }));
    let mut c = config();
    c.parallel = 1;
    let s = run(runner, c).await;
    assert!(s.cancelled, "the run reads as cancelled: {:?}", s.scenarios);
    assert_eq!(
        outcome(&s, "b"),
        &Outcome::Skipped {
            reason: "not run: the run was cancelled".into()
        },
        "what had not started when the token was cancelled"
    );
}
