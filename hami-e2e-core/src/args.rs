//! The command line of a suite binary: libtest's flags (so `cargo test` and `cargo nextest`
//! drive it) plus the runner's own, each of which also reads a `HAMI_E2E_*` variable,
//! because `cargo nextest` passes no custom flags and `cargo test -- --flag` hands the flag
//! to every test target of a package.

use std::path::PathBuf;
use std::time::Duration;

use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::filter::{LabelExpr, NameFilter};

/// Command-line arguments of a suite binary.
///
/// Flatten it into a larger `clap` parser to add flags of your own
/// (`#[command(flatten)] core: hami_e2e_core::Args`).
///
/// ```
/// use clap::Parser;
/// use hami_e2e_core::{Args, RunConfig};
///
/// let args = Args::try_parse_from(["suite", "nvidia", "--label-filter", "smoke && !slow", "--parallel", "4"])?;
/// let config = RunConfig::from_args(&args)?;
/// assert_eq!(config.parallel, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "hami-e2e",
    about = "Runs end-to-end scenarios (libtest-compatible: works under cargo test and cargo nextest)",
    disable_version_flag = true
)]
pub struct Args {
    /// Run scenarios whose name contains one of these (or equals one, with --exact).
    #[arg(value_name = "FILTER")]
    pub filters: Vec<String>,

    /// Match names exactly.
    #[arg(long)]
    pub exact: bool,

    /// Leave out scenarios whose name contains this (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,

    /// List scenarios instead of running them.
    #[arg(long)]
    pub list: bool,

    /// Output format: `pretty` or `terse` (for --list), as libtest.
    #[arg(long, value_name = "FORMAT", default_value = "pretty")]
    pub format: String,

    /// Run only ignored scenarios.
    #[arg(long)]
    pub ignored: bool,

    /// Run ignored scenarios too.
    #[arg(long)]
    pub include_ignored: bool,

    /// Label expression, e.g. `nvidia && !slow || smoke`.
    #[arg(long, env = "HAMI_E2E_LABEL_FILTER", value_name = "EXPR")]
    pub label_filter: Option<String>,

    /// Scenarios run at the same time [default: number of CPUs].
    #[arg(long, env = "HAMI_E2E_PARALLEL", value_name = "N")]
    pub parallel: Option<usize>,

    /// Timeout per scenario, e.g. `90s`, `5m` [default: 10m].
    #[arg(long, env = "HAMI_E2E_TIMEOUT", value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Retries of a transient failure (never of an assertion) [default: 2].
    #[arg(long, env = "HAMI_E2E_RETRIES", value_name = "N")]
    pub retries: Option<u32>,

    /// Stop starting scenarios after the first failure.
    #[arg(long, env = "HAMI_E2E_FAIL_FAST")]
    pub fail_fast: bool,

    /// Run every selected scenario N times.
    #[arg(long, env = "HAMI_E2E_REPEAT", value_name = "N")]
    pub repeat: Option<u32>,

    /// Run the selection again and again until something fails (or Ctrl-C).
    #[arg(long, env = "HAMI_E2E_UNTIL_IT_FAILS")]
    pub until_it_fails: bool,

    /// Print what would run, and why the rest would not, without running anything.
    #[arg(long, env = "HAMI_E2E_DRY_RUN")]
    pub dry_run: bool,

    /// Turn skips for missing requirements into failures (so CI cannot pass by skipping).
    #[arg(long, env = "HAMI_E2E_REQUIRE")]
    pub require: bool,

    /// Device-aware admission: `on` starts a scenario only when the devices it demands are
    /// free; `off` starts scenarios as --parallel allows [default: on].
    #[arg(long, env = "HAMI_E2E_ADMISSION", value_name = "on|off")]
    pub admission: Option<String>,

    /// Share admission with other processes through this file (default under cargo
    /// nextest: one per `NEXTEST_RUN_ID` in the temp folder).
    #[arg(long, env = "HAMI_E2E_ADMISSION_FILE", value_name = "PATH")]
    pub admission_file: Option<PathBuf>,

    /// Write a JUnit XML report here.
    #[arg(long, env = "HAMI_E2E_JUNIT", value_name = "PATH")]
    pub junit: Option<PathBuf>,

    /// Write JSON lines events here.
    #[arg(long, env = "HAMI_E2E_JSON", value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Write a self-contained HTML report (timeline, failures, diagnostics) here.
    #[arg(long, env = "HAMI_E2E_HTML", value_name = "PATH")]
    pub html: Option<PathBuf>,

    /// Folder for scenarios' artifacts (default: `hami-e2e-artifacts` in the temp folder).
    #[arg(long, env = "HAMI_E2E_ARTIFACTS", value_name = "DIR")]
    pub artifacts: Option<PathBuf>,

    /// Print only failures and the summary.
    #[arg(short, long)]
    pub quiet: bool,

    /// libtest's --test-threads: same as --parallel.
    #[arg(long, value_name = "N", hide = true)]
    pub test_threads: Option<usize>,

    /// Accepted for libtest compatibility; output is never captured.
    #[arg(long, hide = true)]
    pub nocapture: bool,
    /// Accepted for libtest compatibility.
    #[arg(long, hide = true)]
    pub show_output: bool,
    /// Accepted for libtest compatibility.
    #[arg(long, hide = true, value_name = "WHEN")]
    pub color: Option<String>,
    /// Accepted for libtest compatibility.
    #[arg(long, hide = true)]
    pub report_time: bool,
    /// Accepted for libtest compatibility.
    #[arg(long, hide = true)]
    pub ensure_time: bool,
    /// Accepted for libtest compatibility.
    #[arg(long, hide = true)]
    pub test: bool,
    /// Accepted for libtest compatibility.
    #[arg(long, hide = true)]
    pub bench: bool,
    /// Accepted for libtest compatibility.
    #[arg(short = 'Z', hide = true, value_name = "FLAG")]
    pub unstable: Vec<String>,
}

/// Whether ignored scenarios run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IgnoredMode {
    /// Skip ignored scenarios.
    #[default]
    Skip,
    /// Run only the ignored ones (`--ignored`).
    Only,
    /// Run them too (`--include-ignored`).
    Include,
}

/// `--list` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// libtest's default: `name: test` lines, then a count.
    Pretty,
    /// `name: test` lines only, as `cargo nextest` expects.
    Terse,
}

/// Everything that shapes one run, checked. Built from [`Args`] or by hand.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunConfig {
    /// Name filters.
    pub names: NameFilter,
    /// Label filter.
    pub labels: Option<LabelExpr>,
    /// Ignored scenarios.
    pub ignored: IgnoredMode,
    /// `Some` to list instead of running.
    pub list: Option<ListFormat>,
    /// Print the plan, run nothing.
    pub dry_run: bool,
    /// Scenarios at the same time.
    pub parallel: usize,
    /// Default timeout per scenario.
    pub timeout: Duration,
    /// Timeout of each teardown step.
    pub teardown_timeout: Duration,
    /// Retries of transient failures.
    pub retries: u32,
    /// First retry delay (doubles each time).
    pub retry_delay: Duration,
    /// Stop starting scenarios after the first failure.
    pub fail_fast: bool,
    /// Iterations of the selection.
    pub repeat: u32,
    /// Repeat until a failure.
    pub until_it_fails: bool,
    /// Missing requirements fail instead of skipping.
    pub require: bool,
    /// Start scenarios only when the devices they demand are free (see
    /// [`admission`](crate::admission)); `false` starts them as `parallel` allows, each
    /// given the devices it would get with nothing else running.
    pub admission: bool,
    /// Where processes share admission ([`SharedPool`](crate::SharedPool)); `None`: this
    /// process only.
    pub admission_file: Option<PathBuf>,
    /// JUnit path.
    pub junit: Option<PathBuf>,
    /// JSON lines path.
    pub json: Option<PathBuf>,
    /// HTML report path.
    pub html: Option<PathBuf>,
    /// Artifacts root.
    pub artifacts: PathBuf,
    /// Human output without passed lines.
    pub quiet: bool,
    /// Print human output to stdout (off in benchmarks and embedded uses).
    pub human_output: bool,
    /// Handle SIGINT/SIGTERM: first cancels and cleans up, second exits at once.
    pub handle_signals: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            names: NameFilter::default(),
            labels: None,
            ignored: IgnoredMode::Skip,
            list: None,
            dry_run: false,
            parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
            timeout: Duration::from_secs(600),
            teardown_timeout: Duration::from_secs(120),
            retries: 2,
            retry_delay: Duration::from_secs(1),
            fail_fast: false,
            repeat: 1,
            until_it_fails: false,
            require: false,
            admission: true,
            admission_file: None,
            junit: None,
            json: None,
            html: None,
            artifacts: std::env::temp_dir().join("hami-e2e-artifacts"),
            quiet: false,
            human_output: true,
            handle_signals: false,
        }
    }
}

impl RunConfig {
    /// Checks `args` and turns them into a configuration.
    ///
    /// # Errors
    ///
    /// A malformed label filter or duration, `--parallel 0`, `--repeat 0`, an unknown
    /// `--format`, or `--ignored` with `--include-ignored`.
    pub fn from_args(args: &Args) -> Result<Self> {
        let invalid = |name: &str, message: &str| Error::InvalidArgument {
            name: name.into(),
            message: message.into(),
        };
        let mut c = RunConfig {
            names: NameFilter {
                filters: args.filters.clone(),
                skip: args.skip.clone(),
                exact: args.exact,
            },
            ..RunConfig::default()
        };
        if let Some(expr) = args
            .label_filter
            .as_deref()
            .filter(|e| !e.trim().is_empty())
        {
            c.labels = Some(LabelExpr::parse(expr)?);
        }
        c.ignored = match (args.ignored, args.include_ignored) {
            (true, true) => {
                return Err(invalid(
                    "--ignored",
                    "cannot be combined with --include-ignored",
                ));
            }
            (true, false) => IgnoredMode::Only,
            (false, true) => IgnoredMode::Include,
            (false, false) => IgnoredMode::Skip,
        };
        let format = match args.format.as_str() {
            "pretty" => ListFormat::Pretty,
            "terse" => ListFormat::Terse,
            "json" => {
                return Err(invalid(
                    "--format",
                    "`json` is not supported; use --json PATH",
                ));
            }
            other => {
                return Err(invalid(
                    "--format",
                    &format!("unknown format `{other}` (pretty, terse)"),
                ));
            }
        };
        c.list = args.list.then_some(format);
        c.dry_run = args.dry_run;
        if let Some(p) = args.parallel.or(args.test_threads) {
            if p == 0 {
                return Err(invalid(
                    "--parallel (HAMI_E2E_PARALLEL)",
                    "must be at least 1",
                ));
            }
            c.parallel = p;
        }
        if let Some(t) = &args.timeout {
            c.timeout = parse_duration(t)?;
            if c.timeout.is_zero() {
                return Err(invalid(
                    "--timeout (HAMI_E2E_TIMEOUT)",
                    "must be above zero",
                ));
            }
        }
        if let Some(r) = args.retries {
            c.retries = r;
        }
        c.fail_fast = args.fail_fast;
        if let Some(r) = args.repeat {
            if r == 0 {
                return Err(invalid("--repeat (HAMI_E2E_REPEAT)", "must be at least 1"));
            }
            c.repeat = r;
        }
        c.until_it_fails = args.until_it_fails;
        c.require = args.require;
        c.admission = match args.admission.as_deref().map(str::trim) {
            None | Some("on" | "true" | "1") => true,
            Some("off" | "false" | "0") => false,
            Some(other) => {
                return Err(invalid(
                    "--admission (HAMI_E2E_ADMISSION)",
                    &format!("unknown value `{other}` (on, off)"),
                ));
            }
        };
        c.admission_file = args.admission_file.clone().or_else(|| {
            std::env::var("NEXTEST_RUN_ID")
                .ok()
                .filter(|id| !id.is_empty())
                .map(|id| {
                    let id: String = id
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    std::env::temp_dir().join(format!("hami-e2e-admission-{id}.json"))
                })
        });
        c.junit = args.junit.clone();
        c.json = args.json.clone();
        c.html = args.html.clone();
        if let Some(a) = &args.artifacts {
            c.artifacts = a.clone();
        }
        c.quiet = args.quiet;
        c.handle_signals = true;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(argv: &[&str]) -> Result<RunConfig> {
        let mut full = vec!["suite"];
        full.extend_from_slice(argv);
        RunConfig::from_args(&Args::try_parse_from(full).expect("clap accepts it"))
    }

    #[test]
    fn nextest_invocations_parse() {
        let c = parse(&["--list", "--format", "terse"]).unwrap();
        assert_eq!(c.list, Some(ListFormat::Terse));
        let c = parse(&["--list", "--format", "terse", "--ignored"]).unwrap();
        assert_eq!(c.ignored, IgnoredMode::Only);
        let c = parse(&["a::b", "--exact", "--nocapture"]).unwrap();
        assert!(c.names.exact);
        assert_eq!(c.names.filters, ["a::b"]);
    }

    #[test]
    fn cargo_test_flags_parse() {
        let c = parse(&[
            "--test-threads",
            "3",
            "-q",
            "--color",
            "always",
            "-Z",
            "unstable-options",
        ])
        .unwrap();
        assert_eq!(c.parallel, 3);
        assert!(c.quiet);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = parse(&["--label-filter", "a &&"]).unwrap_err().to_string();
        assert!(e.contains("invalid label filter `a &&`"), "{e}");
        let e = parse(&["--timeout", "soon"]).unwrap_err().to_string();
        assert!(e.contains("`soon`"), "{e}");
        let e = parse(&["--parallel", "0"]).unwrap_err().to_string();
        assert!(e.contains("--parallel"), "{e}");
        let e = parse(&["--format", "xml"]).unwrap_err().to_string();
        assert!(e.contains("unknown format `xml`"), "{e}");
        assert!(parse(&["--ignored", "--include-ignored"]).is_err());
        let e = parse(&["--admission", "maybe"]).unwrap_err().to_string();
        assert!(e.contains("--admission") && e.contains("`maybe`"), "{e}");
        assert!(!parse(&["--admission", "off"]).unwrap().admission);
        assert!(parse(&[]).unwrap().admission);
    }
}
