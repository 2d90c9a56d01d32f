//! Progress lines reach a person under the test runners' capture: libtest captures
//! `eprint!` inside a test, nextest captures a test process's whole standard error.

use std::process::{Command, Stdio};

const LINE: &str = "hami-e2e: kubernetes v1.37.2: go build started (log: /tmp/k.log)";
const CAPTURED: &str = "an eprintln! line the capture keeps";

/// Run as a child process by the tests below, under libtest's capture (no `--nocapture`).
#[test]
#[ignore = "a child process of the other tests of this file"]
fn child() {
    hami_e2e_core::progress::line(LINE);
    eprintln!("{CAPTURED}");
}

fn child_command() -> String {
    let exe = std::env::current_exe().expect("the test binary");
    format!("{} --ignored --exact child --test-threads 1", exe.display())
}

/// Like a CI job: no terminal at all (a new session has no controlling terminal), standard
/// error a pipe. The line is on standard error, past libtest's capture; the `eprintln!` is not.
#[test]
fn without_a_terminal_the_line_is_on_stderr_past_the_capture() {
    let out = Command::new("setsid")
        .args(["sh", "-c", &child_command()])
        .stdin(Stdio::null())
        .output()
        .expect("setsid (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains(LINE), "stderr: {stderr}\nstdout: {stdout}");
    assert!(
        !stderr.contains(CAPTURED) && !stdout.contains(CAPTURED),
        "libtest should have captured the eprintln!: {stdout}{stderr}"
    );
}

/// Like nextest on a developer's terminal: standard error is not the terminal (it is thrown
/// away here), but the process has one. The line goes to the terminal (`script` gives the
/// child a pseudo-terminal and copies what is written to it onto its own stdout).
#[test]
fn with_a_terminal_the_line_reaches_it_when_stderr_is_captured() {
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{} 2>/dev/null", child_command()),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    assert!(terminal.contains(LINE), "the terminal showed: {terminal}");
    assert!(!terminal.contains(CAPTURED), "{terminal}");
}
