//! Drives the selftest suite binary as a child process, the way `cargo test` and
//! `cargo nextest` do, and checks exit codes, signals, listings, reports and cleanup.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hami-e2e-selftest");

struct Markers(PathBuf);

impl Markers {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("hami-e2e-selftest-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
    fn has(&self, name: &str) -> bool {
        self.0.join(name).exists()
    }
    fn wait_for(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.has(name) {
            assert!(Instant::now() < deadline, "marker {name} never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Markers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn suite(markers: &Markers, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("SELFTEST_MARKERS", &markers.0)
        .env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("HAMI_E2E_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(markers: &Markers, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = suite(markers, args).output().expect("suite binary runs");
    (
        status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

#[test]
fn passing_run_exits_zero_with_libtest_summary() {
    let m = Markers::new("pass");
    let (code, out, err) = run(&m, &["basic::pass", "--exact"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("test basic::pass ... ok"), "{out}");
    assert!(
        last_line(&out).starts_with(
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 8 filtered out;"
        ),
        "{out}"
    );
    assert!(m.has("basic-pass-setup") && m.has("basic-pass-teardown") && m.has("run-teardown"));
}

/// The runner's own checks, as the scenarios of a suite: a step's value comes back, a
/// deferred clean-up runs, a scenario waiting on its cancellation is not cancelled.
#[test]
fn runner_scenarios_pass() {
    let m = Markers::new("runner");
    let (code, out, err) = run(&m, &["runner::"]);
    assert_eq!(code, 0, "{out}{err}");
    for name in [
        "runner::steps",
        "runner::deferred-cleanup",
        "runner::cancellation-aware",
    ] {
        assert!(out.contains(&format!("test {name} ... ok")), "{out}");
    }
    assert!(
        last_line(&out).starts_with(
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 6 filtered out;"
        ),
        "{out}"
    );
}

#[test]
fn failures_exit_101_and_every_scenario_is_torn_down() {
    let m = Markers::new("fail");
    let (code, out, _) = run(&m, &["basic::"]);
    assert_eq!(code, 101, "{out}");
    assert!(out.contains("test basic::fail ... FAILED"), "{out}");
    assert!(out.contains("error: expected 42, got 41"), "{out}");
    assert!(
        out.contains("  FAILED check the answer"),
        "steps of failed scenarios are shown: {out}"
    );
    assert!(out.contains("panicked: deliberate panic"), "{out}");
    assert!(
        out.contains("timed out after 300ms in step `sleep past the timeout`"),
        "{out}"
    );
    assert!(
        last_line(&out).starts_with("test result: FAILED. 1 passed; 3 failed; 0 ignored;"),
        "{out}"
    );
    for s in ["basic-pass", "basic-fail", "basic-panic", "basic-timeout"] {
        assert!(m.has(&format!("{s}-teardown")), "{s} torn down");
    }
    assert!(m.has("run-teardown"));
}

#[test]
fn list_terse_is_what_nextest_reads() {
    let m = Markers::new("list");
    let (code, out, _) = run(&m, &["--list", "--format", "terse"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "basic::fail: test",
            "basic::panic: test",
            "basic::pass: test",
            "basic::timeout: test",
            "other::labelled: test",
            "runner::cancellation-aware: test",
            "runner::deferred-cleanup: test",
            "runner::steps: test",
            "signal::hang: test",
        ]
    );
    let (_, out, _) = run(&m, &["--list", "--format", "terse", "--ignored"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["signal::hang: test"]);
    assert!(!m.has("run-setup"), "listing sets nothing up");
}

/// What `cargo nextest run` does: list, list ignored, then one process per test with
/// `<name> --exact --nocapture`, judging each by its exit code.
#[test]
fn nextest_protocol_one_process_per_scenario() {
    let m = Markers::new("nextest");
    let (_, all, _) = run(&m, &["--list", "--format", "terse"]);
    let (_, ignored, _) = run(&m, &["--list", "--format", "terse", "--ignored"]);
    let mut results = Vec::new();
    for line in all.lines() {
        let name = line.strip_suffix(": test").expect("terse format");
        if ignored.lines().any(|l| l == line) {
            continue;
        }
        let (code, out, _) = run(&m, &[name, "--exact", "--nocapture"]);
        assert!(out.contains(&format!("test {name} ...")), "{out}");
        assert!(
            out.contains("1 passed") || out.contains("1 failed"),
            "exactly one scenario ran: {out}"
        );
        results.push((name.to_string(), code));
    }
    let expected: Vec<(String, i32)> = [
        ("basic::fail", 101),
        ("basic::panic", 101),
        ("basic::pass", 0),
        ("basic::timeout", 101),
        ("other::labelled", 0),
        ("runner::cancellation-aware", 0),
        ("runner::deferred-cleanup", 0),
        ("runner::steps", 0),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_string(), c))
    .collect();
    assert_eq!(results, expected);
}

#[test]
fn flags_come_from_environment_variables_too() {
    let m = Markers::new("env");
    let junit = m.0.join("report.xml");
    let out = suite(&m, &[])
        .env("HAMI_E2E_LABEL_FILTER", "smoke && !slow")
        .env("HAMI_E2E_JUNIT", &junit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        last_line(&stdout).starts_with(
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 6 filtered out"
        ),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"<testcase name="basic::pass""#), "{xml}");
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_2() {
    let m = Markers::new("bad");
    let (code, _, err) = run(&m, &["--label-filter", "smoke && (slow"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid label filter `smoke && (slow` at position 14: missing `)`"),
        "{err}"
    );
    let (code, _, err) = run(&m, &["--timeout", "forever"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid duration `forever`"), "{err}");
    let (code, _, err) = run(&m, &["--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(!m.has("run-setup"));
}

#[test]
fn dry_run_lists_plan_and_skip_reasons_without_running() {
    let m = Markers::new("dry");
    let (code, out, _) = run(&m, &["--dry-run", "--label-filter", "smoke"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("dry run: 4 would run, 0 ignored, 5 filtered out"),
        "{out}"
    );
    assert!(
        out.contains("run     basic::pass [smoke] timeout 10m00s"),
        "{out}"
    );
    let (_, out, _) = run(&m, &["--dry-run", "signal"]);
    assert!(
        out.contains("ignore  signal::hang (waits for a signal)"),
        "{out}"
    );
    assert!(!m.has("run-setup"));
}

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

fn wait_with_deadline(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("suite did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_hang(m: &Markers, extra_env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = suite(m, &["signal::hang", "--exact", "--include-ignored"]);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigint_cancels_cleans_up_and_exits_130() {
    for signal in ["INT", "TERM"] {
        let m = Markers::new(&format!("sig{signal}"));
        let mut child = spawn_hang(&m, &[]);
        m.wait_for("signal-hang-started");
        kill(child.id(), signal);
        let status = wait_with_deadline(&mut child, Duration::from_secs(20));
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert_eq!(status.code(), Some(130), "{out}");
        assert!(
            m.has("signal-hang-teardown"),
            "scenario teardown ran after SIG{signal}"
        );
        assert!(m.has("run-teardown"), "run teardown ran after SIG{signal}");
        assert!(out.contains("cancelled: the run was interrupted"), "{out}");
        assert!(
            last_line(&out).starts_with("test result: FAILED. 0 passed; 1 failed"),
            "{out}"
        );
    }
}

#[test]
fn second_signal_exits_at_once() {
    let m = Markers::new("sig2");
    let mut child = spawn_hang(&m, &[("SELFTEST_SLOW_TEARDOWN", "1")]);
    m.wait_for("signal-hang-started");
    kill(child.id(), "INT");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    kill(child.id(), "INT");
    let status = wait_with_deadline(&mut child, Duration::from_secs(3));
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        !m.has("signal-hang-teardown"),
        "the slow teardown was abandoned"
    );
}
