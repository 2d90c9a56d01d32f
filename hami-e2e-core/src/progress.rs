//! Progress lines of long steps (a Go build, a cluster start), shown on the terminal even
//! where test output is captured.
//!
//! `cargo test` captures what a test prints with `print!`/`eprint!`, and `cargo nextest`
//! captures the whole of a test process's standard error; a first run that builds its
//! binaries for ten minutes would show nothing. A [`LongStep`] writes a line when it starts
//! and when it ends (with the component, version, elapsed time and log path): on standard
//! error, written directly, past libtest's capture; and when standard error is not a
//! terminal (nextest captures it, or it is a log file), also on the process's controlling
//! terminal (`/dev/tty`) if it has one. Each line is also logged with `tracing`, at debug
//! level (so that a subscriber printing to the same terminal does not show it twice).
//!
//! ```
//! use hami_e2e_core::progress::LongStep;
//!
//! let step = LongStep::start("kubernetes", "v1.37.2", Some("/tmp/kubernetes-v1.37.2.log".as_ref()), "go build");
//! assert_eq!(step.started_line(), "hami-e2e: kubernetes v1.37.2: go build started (log: /tmp/kubernetes-v1.37.2.log)");
//! step.finish();
//! ```

use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::duration::format_duration;

/// Writes `line` (one line, without its newline) where a person running the tests sees it:
/// see the [module docs](self).
pub fn line(line: &str) {
    tracing::debug!(target: "hami_e2e::progress", "{line}");
    let text = format!("{line}\n");
    let stderr = std::io::stderr();
    if !stderr.is_terminal()
        && let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty")
    {
        let _ = tty.write_all(text.as_bytes());
    }
    // Also on standard error (a log file, nextest's captured output), straight to the file
    // descriptor: not through libtest's capture of `eprint!`.
    let _ = stderr.lock().write_all(text.as_bytes());
}

/// A long step of one component: a line when it starts, and one when it ends.
#[derive(Debug)]
#[must_use = "say how the step ended with finish() or fail()"]
pub struct LongStep {
    component: String,
    version: String,
    what: String,
    log: Option<PathBuf>,
    started: Instant,
    ended: bool,
}

impl LongStep {
    /// Starts `what` (`go build`, `start`) of `component` `version`, whose output goes to
    /// `log`, and writes its first line.
    pub fn start(
        component: impl Into<String>,
        version: impl Into<String>,
        log: Option<&Path>,
        what: impl Into<String>,
    ) -> LongStep {
        let step = LongStep {
            component: component.into(),
            version: version.into(),
            what: what.into(),
            log: log.map(Path::to_path_buf),
            started: Instant::now(),
            ended: false,
        };
        line(&step.started_line());
        step
    }

    /// Names the step's log (a file or a folder) once it is known: the following lines
    /// show it.
    pub fn set_log(&mut self, log: &Path) {
        self.log = Some(log.to_path_buf());
    }

    /// The line written at the start.
    pub fn started_line(&self) -> String {
        format!("hami-e2e: {self}: {} started{}", self.what, self.log_note())
    }

    /// Writes a line about the step while it goes on (`still building, 3m0s`).
    pub fn note(&self, text: &str) {
        line(&format!(
            "hami-e2e: {self}: {text} ({}){}",
            format_duration(self.started.elapsed()),
            self.log_note()
        ));
    }

    /// Ends the step: writes its elapsed time.
    pub fn finish(mut self) {
        self.ended = true;
        line(&format!(
            "hami-e2e: {self}: {} done in {}{}",
            self.what,
            format_duration(self.started.elapsed()),
            self.log_note()
        ));
    }

    /// Ends the step as failed, with why.
    pub fn fail(mut self, why: &dyn fmt::Display) {
        self.ended = true;
        line(&format!(
            "hami-e2e: {self}: {} failed after {}: {why}{}",
            self.what,
            format_duration(self.started.elapsed()),
            self.log_note()
        ));
    }

    fn log_note(&self) -> String {
        match &self.log {
            Some(path) => format!(" (log: {})", path.display()),
            None => String::new(),
        }
    }
}

impl fmt::Display for LongStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.component, self.version)
    }
}

impl Drop for LongStep {
    /// A step dropped before it ended (an error returned with `?`, a cancelled future)
    /// says so, so that the terminal never shows a start without an end.
    fn drop(&mut self) {
        if !self.ended {
            line(&format!(
                "hami-e2e: {self}: {} stopped after {}{}",
                self.what,
                format_duration(self.started.elapsed()),
                self.log_note()
            ));
        }
    }
}
