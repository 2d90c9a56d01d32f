//! The binaries that deploy and run HAMi: the HAMi scheduler and the `helm` CLI.
//!
//! Both come, by default, from Go modules pinned in this crate's `src/go/` folder and built
//! with the machine's Go into the same [`BinaryCache`] as the local cluster's control plane
//! (`~/.cache/hami-e2e/bin/hami-scheduler-v2.10.0/scheduler`, `bin/helm-v3.22.0/helm`). A
//! first build prints progress lines and takes a few minutes; later calls return at once.
//!
//! # The HAMi scheduler: three ways, in this order
//!
//! 1. **A binary**, `HAMI_E2E_HAMI_SCHEDULER=<binary>`, for example the one a HAMi pull
//!    request just built: that is how HAMi's own CI tests its change. It must exist and
//!    answer `version` (or `--help`).
//! 2. **A HAMi checkout**, `HAMI_E2E_HAMI_SOURCE=<folder>`: its `./cmd/scheduler` is built
//!    with `go build` (cgo on, the version linker flags of HAMi's Makefile, the version from
//!    its `VERSION` file) into the cache, keyed by the checkout's commit and a hash of its
//!    uncommitted changes, so an unchanged checkout is built once
//!    ([`hami_scheduler_from_source`], [`HamiCheckout`]).
//! 3. **The pinned release**: `cmd/scheduler` of `github.com/Project-HAMi/HAMi` at the
//!    [`HamiRelease`] chosen by `HAMI_E2E_HAMI_VERSION` (default v2.10.0), built from its
//!    Go module (`hami-e2e-helm/src/go/hami-2.10`) with cgo (its NVIDIA packages wrap go-nvml; the machine's
//!    C compiler is needed, no NVIDIA library).
//!
//! [`find_hami_scheduler`] applies the order and tells three outcomes apart: a binary; a
//! variable that is set but unusable, or a checkout that does not build
//! ([`FindSchedulerError::Failed`]: a failure, never a fall-through to the next way); and
//! nothing set while the module cannot be built, say because the Go module proxy refuses
//! HAMi ([`FindSchedulerError::Unavailable`], with one line naming the three ways: a
//! reason to skip). [`find_hami_scheduler_once`] tries once per process and hands every
//! caller the first answer. [`hami_scheduler`] takes the same order with this crate's
//! [`Error`].
//!
//! # The rest
//!
//! - **HAMi's sources**: [`hami_module_dir`] is the pinned module's folder in Go's module
//!   cache; it holds the Helm chart, `charts/hami`.
//! - **helm**: [`helm`] takes `HAMI_E2E_HELM`, else a `helm` v3 on `PATH`, else builds
//!   `helm.sh/helm/v3` from `hami-e2e-helm/src/go/helm`.
//!
//! HAMi's tags are `v2.x` on a module path without `/v2`, so Go cannot use them as module
//! versions: each release is pinned by its commit's pseudo-version
//! ([`HamiRelease::pseudo_version`]).
//!
//! ```no_run
//! # async fn f() -> Result<(), hami_e2e_core::Failure> {
//! use hami_e2e_helm::binaries::{self, BinarySource, FindSchedulerError, HamiRelease};
//! use hami_e2e_k8s::local::bincache::BinaryCache;
//!
//! let cache = BinaryCache::default();
//! let release = HamiRelease::from_env()?;
//! let scheduler = match binaries::find_hami_scheduler_once(&cache, &release).await {
//!     Ok(scheduler) => scheduler,
//!     Err(FindSchedulerError::Unavailable { reason }) => {
//!         println!("skipped: {reason}");
//!         return Ok(());
//!     }
//!     Err(failed) => return Err(failed.into()),
//! };
//! println!("HAMi scheduler {} at {} ({})", scheduler.version, scheduler.path.display(), scheduler.source);
//! let chart = match &scheduler.source {
//!     BinarySource::Source { dir, .. } => dir.join("charts/hami"),
//!     _ => binaries::hami_module_dir(&cache, &release).await?.join("charts/hami"),
//! };
//! let helm = binaries::helm(&cache).await?;
//! println!("helm {} at {}; chart {}", helm.version, helm.path.display(), chart.display());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use hami_e2e_k8s::local::bincache::{BinaryCache, GoBuild, GoModule, required_version};

use crate::error::{Error, Result};

/// The environment variable naming the HAMi release to use (`2.9`, `v2.9.0`).
pub const HAMI_VERSION_ENV: &str = "HAMI_E2E_HAMI_VERSION";
/// The environment variable naming a prebuilt HAMi scheduler binary to use instead of
/// building one.
pub const HAMI_SCHEDULER_ENV: &str = "HAMI_E2E_HAMI_SCHEDULER";
/// The environment variable naming a HAMi checkout (its top folder) to build the scheduler
/// from, when [`HAMI_SCHEDULER_ENV`] is unset.
pub const HAMI_SOURCE_ENV: &str = "HAMI_E2E_HAMI_SOURCE";
/// The environment variable naming a prebuilt scheduler of the release before the one in
/// use, for the upgrade and rollback scenarios.
pub const HAMI_SCHEDULER_PREVIOUS_ENV: &str = "HAMI_E2E_HAMI_SCHEDULER_PREVIOUS";
/// The environment variable naming a checkout of the release before the one in use, built
/// when [`HAMI_SCHEDULER_PREVIOUS_ENV`] is unset.
pub const HAMI_SOURCE_PREVIOUS_ENV: &str = "HAMI_E2E_HAMI_SOURCE_PREVIOUS";
/// The environment variable naming the `helm` binary to use.
pub const HELM_ENV: &str = "HAMI_E2E_HELM";

/// HAMi's Go module path.
pub const HAMI_MODULE: &str = "github.com/Project-HAMi/HAMi";

/// The helm major versions this crate drives.
pub const SUPPORTED_HELM_MAJORS: &[u32] = &[3];

/// How long a binary may take to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

const HELM_GO_MOD: &str = include_str!("go/helm/go.mod");
const HELM_GO_SUM: &str = include_str!("go/helm/go.sum");
const HELM_TOOLS_GO: &str = include_str!("go/helm/tools.go");

/// A HAMi release this crate can build, pinned by a Go module in `hami-e2e-helm/src/go/hami-<minor>/`.
///
/// ```
/// use hami_e2e_helm::binaries::HamiRelease;
///
/// let release = HamiRelease::find(Some("2.9"))?;
/// assert_eq!(release.version(), "v2.9.0");
/// assert!(release.pseudo_version().ends_with(&release.commit()[..12]));
/// assert_eq!(HamiRelease::find(None)?.version(), "v2.10.0");
/// # Ok::<(), hami_e2e_helm::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HamiRelease {
    version: &'static str,
    commit: &'static str,
    go_mod: &'static str,
    go_sum: &'static str,
    tools_go: &'static str,
}

/// The HAMi releases pinned in `src/go/`, newest first. The first is the default.
pub const HAMI_RELEASES: &[HamiRelease] = &[
    HamiRelease {
        version: "v2.10.0",
        commit: "4707fb02c91c545bc7343ce26dba4c32919f9a3e",
        go_mod: include_str!("go/hami-2.10/go.mod"),
        go_sum: include_str!("go/hami-2.10/go.sum"),
        tools_go: include_str!("go/hami-2.10/tools.go"),
    },
    HamiRelease {
        version: "v2.9.0",
        commit: "3a006c6ae2f077a2683df7805c43656c07f6dc15",
        go_mod: include_str!("go/hami-2.9/go.mod"),
        go_sum: include_str!("go/hami-2.9/go.sum"),
        tools_go: include_str!("go/hami-2.9/tools.go"),
    },
];

impl HamiRelease {
    /// The release's tag, `v2.10.0`.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// The commit the tag points at.
    pub fn commit(&self) -> &'static str {
        self.commit
    }

    /// The Go module version pinning the commit, `v0.0.0-20260821062039-4707fb02c91c`.
    pub fn pseudo_version(&self) -> &'static str {
        required_version(self.go_mod, HAMI_MODULE)
            .expect("hami-e2e-helm/src/go/hami-*/go.mod requires HAMi")
    }

    /// The release for `version` (`2.9`, `v2.9.0`, `2.9.0`), or the default (newest) for
    /// `None` or an empty string.
    ///
    /// ```
    /// use hami_e2e_helm::binaries::HamiRelease;
    ///
    /// assert_eq!(HamiRelease::find(Some("v2.10"))?.version(), "v2.10.0");
    /// let err = HamiRelease::find(Some("2.1")).unwrap_err();
    /// assert_eq!(err.to_string(), "HAMi version `2.1` is not supported; supported: v2.10.0, v2.9.0");
    /// # Ok::<(), hami_e2e_helm::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedHamiVersion`] naming the input and the supported versions.
    pub fn find(version: Option<&str>) -> Result<HamiRelease> {
        let Some(requested) = version.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(HAMI_RELEASES[0]);
        };
        let wanted = requested.strip_prefix('v').unwrap_or(requested);
        HAMI_RELEASES
            .iter()
            .find(|r| {
                let v = &r.version[1..];
                v == wanted || v.starts_with(&format!("{wanted}."))
            })
            .copied()
            .ok_or_else(|| Error::UnsupportedHamiVersion {
                requested: requested.to_string(),
                supported: HAMI_RELEASES
                    .iter()
                    .map(|r| r.version)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The pinned release before this one (`v2.9.0` before `v2.10.0`), if any.
    ///
    /// ```
    /// use hami_e2e_helm::binaries::HamiRelease;
    ///
    /// let current = HamiRelease::find(Some("2.10"))?;
    /// assert_eq!(current.previous().map(|r| r.version()), Some("v2.9.0"));
    /// assert!(HamiRelease::find(Some("2.9"))?.previous().is_none());
    /// # Ok::<(), hami_e2e_helm::Error>(())
    /// ```
    pub fn previous(&self) -> Option<HamiRelease> {
        let i = HAMI_RELEASES
            .iter()
            .position(|r| r.version == self.version)?;
        HAMI_RELEASES.get(i + 1).copied()
    }

    /// The release named by `HAMI_E2E_HAMI_VERSION`, or the default.
    ///
    /// ```
    /// let release = hami_e2e_helm::binaries::HamiRelease::from_env()?;
    /// assert!(release.version().starts_with("v2."));
    /// # Ok::<(), hami_e2e_helm::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedHamiVersion`].
    pub fn from_env() -> Result<HamiRelease> {
        Self::find(std::env::var(HAMI_VERSION_ENV).ok().as_deref())
    }

    /// The pinned Go module and the scheduler's build, for [`BinaryCache::build_go`] and
    /// [`BinaryCache::go_module_source`]: component `hami-scheduler`, cgo on, and the
    /// version linker flags of HAMi's Makefile (`pkg/version.version`, `.revision`,
    /// `.buildDate`).
    ///
    /// ```
    /// let module = hami_e2e_helm::binaries::HamiRelease::find(None)?.go_module();
    /// assert_eq!(module.key(), "hami-scheduler-v2.10.0");
    /// assert!(module.builds[0].cgo);
    /// assert!(module.builds[0].ldflags.contains("github.com/Project-HAMi/HAMi/pkg/version.version=v2.10.0"));
    /// # Ok::<(), hami_e2e_helm::Error>(())
    /// ```
    pub fn go_module(&self) -> GoModule {
        // HAMi's Makefile stamps `date +%Y%m%d-%T`; the commit's time keeps builds reproducible.
        let build_date = self
            .pseudo_version()
            .split('-')
            .nth(1)
            .filter(|t| t.len() == 14)
            .map(|t| format!("{}-{}:{}:{}", &t[..8], &t[8..10], &t[10..12], &t[12..14]))
            .unwrap_or_else(|| "unknown".into());
        let ldflags = version_ldflags(self.version, &self.commit[..12], &build_date);
        GoModule::new(
            "hami-scheduler",
            self.version,
            self.go_mod,
            self.go_sum,
            self.tools_go,
        )
        .build(
            GoBuild::new([format!("{HAMI_MODULE}/cmd/scheduler")], "scheduler")
                .ldflags(ldflags)
                .cgo(true),
        )
    }
}

/// The linker flags of HAMi's Makefile: `-s -w` and the version, revision and build date
/// stamped into `pkg/version`.
fn version_ldflags(version: &str, revision: &str, build_date: &str) -> String {
    let version_pkg = format!("{HAMI_MODULE}/pkg/version");
    format!(
        "-s -w -X {version_pkg}.version={version} -X {version_pkg}.revision={revision} -X {version_pkg}.buildDate={build_date}"
    )
}

/// Where a binary came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BinarySource {
    /// Named by an environment variable (`HAMI_E2E_HAMI_SCHEDULER`, `HAMI_E2E_HELM`).
    Env(&'static str),
    /// Found on `PATH`.
    Path,
    /// Built from the Go module pinned in `src/go/<module>` into the binary cache.
    Built {
        /// The folder that pins it (`hami-e2e-helm/src/go/hami-2.10`).
        pin: String,
    },
    /// Built from a HAMi checkout (`HAMI_E2E_HAMI_SOURCE`) into the binary cache.
    Source {
        /// The checkout's folder.
        dir: PathBuf,
        /// Its `HEAD` commit; `None` when the folder is not a git checkout.
        commit: Option<String>,
        /// How many files `git status` listed as changed or untracked (0 outside git).
        changes: usize,
    },
}

impl fmt::Display for BinarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BinarySource::Env(var) => write!(f, "from {var}"),
            BinarySource::Path => write!(f, "from PATH"),
            BinarySource::Built { pin } => write!(f, "built from {pin}"),
            BinarySource::Source {
                dir,
                commit,
                changes,
            } => {
                write!(f, "built from the checkout {}", dir.display())?;
                match commit {
                    Some(commit) => write!(f, " at {}", short(commit, 8))?,
                    None => write!(f, " (not a git checkout)")?,
                }
                if *changes > 0 {
                    write!(f, " (+{changes} uncommitted)")?;
                }
                Ok(())
            }
        }
    }
}

/// A HAMi scheduler binary that runs and the version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HamiScheduler {
    /// The binary.
    pub path: PathBuf,
    /// What `scheduler version` reports (`v2.10.0`; for a checkout, its `VERSION` file), or
    /// `unknown` for a binary given by `HAMI_E2E_HAMI_SCHEDULER` (or built from a checkout)
    /// that has no `version` command but answers `--help`.
    pub version: String,
    /// Where it came from.
    pub source: BinarySource,
}

/// The `helm` CLI and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HelmBinary {
    /// The binary.
    pub path: PathBuf,
    /// What `helm version --short` reports, without build metadata (`v3.22.0`).
    pub version: String,
    /// Where it came from.
    pub source: BinarySource,
}

/// The HAMi scheduler of `release`, in the order of the [module docs](self): the binary
/// named by `HAMI_E2E_HAMI_SCHEDULER`, else built from the checkout named by
/// `HAMI_E2E_HAMI_SOURCE`, else built from the pinned module (once; later calls use the
/// cache). [`find_hami_scheduler`] is the same with an error that tells a skip from a
/// failure.
///
/// ```no_run
/// # async fn f() -> hami_e2e_helm::Result<()> {
/// use hami_e2e_helm::binaries::{hami_scheduler, HamiRelease};
///
/// let cache = hami_e2e_k8s::local::bincache::BinaryCache::default();
/// let scheduler = hami_scheduler(&cache, &HamiRelease::find(None)?).await?;
/// println!("{} ({})", scheduler.version, scheduler.source);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// Those of [`hami_scheduler_from`] (a given binary, the pinned module) and of
/// [`hami_scheduler_from_source`] (a checkout).
///
/// # Cancel safety
///
/// Cancel safe: child processes are killed; an unfinished build leaves at most a
/// `.partial` folder (or a folder without `.complete`) that the next build replaces.
pub async fn hami_scheduler(cache: &BinaryCache, release: &HamiRelease) -> Result<HamiScheduler> {
    resolve(cache, release, &SchedulerInputs::from_env())
        .await
        .1
}

/// The HAMi scheduler of `release`, with `given` as the value of `HAMI_E2E_HAMI_SCHEDULER`
/// (`None` or empty: build it). A given binary must exist and answer `version` (or, for
/// builds without that command, `--help`); a built one must report the release's version.
///
/// ```no_run
/// # async fn f() {
/// use hami_e2e_helm::binaries::{hami_scheduler_from, HamiRelease};
/// use hami_e2e_helm::Error;
///
/// let cache = hami_e2e_k8s::local::bincache::BinaryCache::default();
/// let release = HamiRelease::find(None).unwrap();
/// let err = hami_scheduler_from(&cache, &release, Some("/no/such/scheduler".as_ref())).await;
/// assert!(matches!(err, Err(Error::BadBinary { .. })));
/// # }
/// ```
///
/// # Errors
///
/// - [`Error::BadBinary`] naming the path and `HAMI_E2E_HAMI_SCHEDULER` when the given
///   binary is missing, does not run or answers neither `version` nor `--help`; or naming
///   the cache folder when a built binary reports another version.
/// - [`Error::K8s`] with [`hami_e2e_k8s::Error::GoMissing`] or
///   [`hami_e2e_k8s::Error::GoBuild`] when building fails (the output says why, e.g. the
///   module proxy refusing the module or a missing C compiler).
///
/// # Cancel safety
///
/// As [`hami_scheduler`].
pub async fn hami_scheduler_from(
    cache: &BinaryCache,
    release: &HamiRelease,
    given: Option<&OsStr>,
) -> Result<HamiScheduler> {
    if let Some(path) = given.filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let version = check_scheduler(&path, HAMI_SCHEDULER_ENV).await?;
        tracing::info!(path = %path.display(), %version, "using the HAMi scheduler from {HAMI_SCHEDULER_ENV}");
        return Ok(HamiScheduler {
            path,
            version,
            source: BinarySource::Env(HAMI_SCHEDULER_ENV),
        });
    }
    let dir = cache.build_go(&release.go_module()).await?;
    let path = dir.join("scheduler");
    let pin = format!("hami-e2e-helm/src/go/hami-{}", minor_of(release.version()));
    let bad = |message: String| Error::BadBinary {
        what: "HAMi scheduler",
        path: path.clone(),
        origin: format!("built from {pin}"),
        message,
    };
    let out = run(&path, &["version"]).await.map_err(&bad)?;
    let version = parse_hami_version(&out).ok_or_else(|| {
        bad(format!(
            "`scheduler version` printed no version line: {}",
            out.trim()
        ))
    })?;
    if version != release.version() {
        return Err(bad(format!(
            "reports version {version}, not {}; delete {} to rebuild it",
            release.version(),
            dir.display()
        )));
    }
    Ok(HamiScheduler {
        path,
        version,
        source: BinarySource::Built { pin },
    })
}

/// What [`find_hami_scheduler_with`] chooses from: the values of `HAMI_E2E_HAMI_SCHEDULER`
/// and `HAMI_E2E_HAMI_SOURCE` (unset or empty: `None`), and the `go` that builds a
/// checkout. The pinned module is built by [`BinaryCache::build_go`], with the `go` on
/// `PATH`.
///
/// ```
/// use hami_e2e_helm::binaries::SchedulerInputs;
///
/// let inputs = SchedulerInputs::new().source("/src/HAMi").go("/usr/local/go/bin/go");
/// assert_eq!(inputs.scheduler, None);
/// assert_eq!(inputs.source.as_deref(), Some("/src/HAMi".as_ref()));
/// assert_eq!(SchedulerInputs::new().go, std::path::Path::new("go"));
/// // An empty value counts as unset, as it does in the environment.
/// assert_eq!(SchedulerInputs::new().scheduler("").scheduler, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SchedulerInputs {
    /// `HAMI_E2E_HAMI_SCHEDULER`: a scheduler binary, used as is.
    pub scheduler: Option<PathBuf>,
    /// `HAMI_E2E_HAMI_SOURCE`: a HAMi checkout to build.
    pub source: Option<PathBuf>,
    /// The `go` that builds a checkout (`go`: found on `PATH`).
    pub go: PathBuf,
}

impl Default for SchedulerInputs {
    fn default() -> Self {
        Self::new()
    }
}

impl SchedulerInputs {
    /// Nothing given, `go` from `PATH`: the pinned module is built.
    pub fn new() -> Self {
        Self {
            scheduler: None,
            source: None,
            go: PathBuf::from("go"),
        }
    }

    /// `HAMI_E2E_HAMI_SCHEDULER` and `HAMI_E2E_HAMI_SOURCE` of the process.
    pub fn from_env() -> Self {
        Self::new()
            .scheduler(std::env::var_os(HAMI_SCHEDULER_ENV).unwrap_or_default())
            .source(std::env::var_os(HAMI_SOURCE_ENV).unwrap_or_default())
    }

    /// `HAMI_E2E_HAMI_SCHEDULER_PREVIOUS` and `HAMI_E2E_HAMI_SOURCE_PREVIOUS` of the
    /// process: the release before the one in use.
    pub fn previous_from_env() -> Self {
        Self::new()
            .scheduler(std::env::var_os(HAMI_SCHEDULER_PREVIOUS_ENV).unwrap_or_default())
            .source(std::env::var_os(HAMI_SOURCE_PREVIOUS_ENV).unwrap_or_default())
    }

    /// Sets the scheduler binary (an empty path unsets it).
    #[must_use]
    pub fn scheduler(mut self, path: impl Into<PathBuf>) -> Self {
        self.scheduler = non_empty(path.into());
        self
    }

    /// Sets the HAMi checkout (an empty path unsets it).
    #[must_use]
    pub fn source(mut self, dir: impl Into<PathBuf>) -> Self {
        self.source = non_empty(dir.into());
        self
    }

    /// Sets the `go` that builds a checkout.
    #[must_use]
    pub fn go(mut self, go: impl Into<PathBuf>) -> Self {
        self.go = go.into();
        self
    }
}

fn non_empty(path: PathBuf) -> Option<PathBuf> {
    (!path.as_os_str().is_empty()).then_some(path)
}

/// Why [`find_hami_scheduler`] returned no HAMi scheduler: nothing was given and the
/// pinned module cannot be built (skip), or what was given is unusable (fail).
///
/// Cloneable, so that [`find_hami_scheduler_once`] can hand the first answer to every
/// caller; it converts into [`hami_e2e_core::Failure`] with `?`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FindSchedulerError {
    /// Neither `HAMI_E2E_HAMI_SCHEDULER` nor `HAMI_E2E_HAMI_SOURCE` is set, and the pinned
    /// module could not be built (no `go`, the module proxy refusing HAMi, no C compiler):
    /// there is no HAMi scheduler on this machine, a reason to skip.
    #[error("{reason}")]
    Unavailable {
        /// One line naming the three ways and why the last one failed: `no HAMi
        /// scheduler: HAMI_E2E_HAMI_SCHEDULER and HAMI_E2E_HAMI_SOURCE are unset, and
        /// building HAMi v2.10.0 from its Go module (hami-e2e-helm/src/go/hami-2.10) failed: go:
        /// github.com/Project-HAMi/HAMi@v0.0.0-…: reading https://proxy.golang.org/…: 403
        /// Forbidden (go's output: …/logs/hami-scheduler-v2.10.0.log)`.
        reason: String,
    },
    /// A way was given and failed: `HAMI_E2E_HAMI_SCHEDULER` names an unusable binary
    /// ([`Error::BadBinary`]), `HAMI_E2E_HAMI_SOURCE` no HAMi checkout
    /// ([`Error::BadSource`]) or one that does not build ([`Error::SourceBuild`]); or the
    /// pinned module built a scheduler that is broken, or the cache could not be written.
    /// The next way is not tried: this is a failure.
    #[error(transparent)]
    Failed(Arc<Error>),
}

impl FindSchedulerError {
    /// Whether this is [`FindSchedulerError::Unavailable`] (skip), not a failure.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, FindSchedulerError::Unavailable { .. })
    }
}

/// The way [`resolve`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Given,
    Source,
    Module,
}

/// The order of the module docs, with the way that gave the result.
async fn resolve(
    cache: &BinaryCache,
    release: &HamiRelease,
    inputs: &SchedulerInputs,
) -> (Way, Result<HamiScheduler>) {
    if let Some(path) = &inputs.scheduler {
        let found = hami_scheduler_from(cache, release, Some(path.as_os_str())).await;
        return (Way::Given, found);
    }
    if let Some(dir) = &inputs.source {
        let found = hami_scheduler_from_source(cache, dir, &inputs.go).await;
        return (Way::Source, found);
    }
    (Way::Module, hami_scheduler_from(cache, release, None).await)
}

/// The HAMi scheduler of `release`, in the order of the [module docs](self):
/// `HAMI_E2E_HAMI_SCHEDULER`, else `HAMI_E2E_HAMI_SOURCE`, else the pinned module. Same as
/// [`find_hami_scheduler_with`] with [`SchedulerInputs::from_env`]. Tests that many callers
/// share want [`find_hami_scheduler_once`].
///
/// ```no_run
/// # async fn f() -> Result<(), hami_e2e_core::Failure> {
/// use hami_e2e_helm::binaries::{find_hami_scheduler, FindSchedulerError, HamiRelease};
///
/// let cache = hami_e2e_k8s::local::bincache::BinaryCache::default();
/// match find_hami_scheduler(&cache, &HamiRelease::from_env()?).await {
///     Ok(scheduler) => println!("{} ({})", scheduler.path.display(), scheduler.source),
///     Err(FindSchedulerError::Unavailable { reason }) => println!("skip: {reason}"),
///     Err(failed) => return Err(failed.into()),
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// See [`find_hami_scheduler_with`].
///
/// # Cancel safety
///
/// As [`hami_scheduler`].
pub async fn find_hami_scheduler(
    cache: &BinaryCache,
    release: &HamiRelease,
) -> std::result::Result<HamiScheduler, FindSchedulerError> {
    find_hami_scheduler_with(cache, release, &SchedulerInputs::from_env()).await
}

/// The HAMi scheduler of `release` from `inputs`: the given binary, else the given
/// checkout built, else the pinned module built. A way that is given and fails is a
/// failure; the next way is not tried.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use hami_e2e_helm::binaries::{find_hami_scheduler_with, FindSchedulerError, HamiRelease, SchedulerInputs};
/// use hami_e2e_helm::Error;
///
/// let cache = hami_e2e_k8s::local::bincache::BinaryCache::new("/nonexistent/cache");
/// let release = HamiRelease::find(None).unwrap();
/// // A given binary that does not exist fails, even with a checkout given too.
/// let inputs = SchedulerInputs::new().scheduler("/no/such/scheduler").source("/no/such/HAMi");
/// let err = find_hami_scheduler_with(&cache, &release, &inputs).await.unwrap_err();
/// assert!(matches!(&err, FindSchedulerError::Failed(e) if matches!(**e, Error::BadBinary { .. })));
/// assert!(err.to_string().contains("HAMI_E2E_HAMI_SCHEDULER"));
/// // So does a checkout that does not exist.
/// let inputs = SchedulerInputs::new().source("/no/such/HAMi");
/// let err = find_hami_scheduler_with(&cache, &release, &inputs).await.unwrap_err();
/// assert!(!err.is_unavailable());
/// assert!(err.to_string().starts_with("HAMI_E2E_HAMI_SOURCE=`/no/such/HAMi` is not a HAMi checkout"));
/// # }
/// ```
///
/// # Errors
///
/// - [`FindSchedulerError::Unavailable`] when nothing is given and building the pinned
///   module fails for want of `go` or in `go build` (the reason quotes the line of go's
///   output that says why).
/// - [`FindSchedulerError::Failed`] otherwise: the errors of [`hami_scheduler_from`] for
///   a given binary, of [`hami_scheduler_from_source`] for a checkout, and a built module
///   whose scheduler does not run or reports another version.
///
/// # Cancel safety
///
/// As [`hami_scheduler`].
pub async fn find_hami_scheduler_with(
    cache: &BinaryCache,
    release: &HamiRelease,
    inputs: &SchedulerInputs,
) -> std::result::Result<HamiScheduler, FindSchedulerError> {
    let (way, found) = resolve(cache, release, inputs).await;
    match found {
        Ok(scheduler) => {
            tracing::info!(
                path = %scheduler.path.display(),
                version = %scheduler.version,
                source = %scheduler.source,
                "using the HAMi scheduler"
            );
            Ok(scheduler)
        }
        Err(Error::K8s(e)) if way == Way::Module => match unavailable_reason(cache, release, &e) {
            Some(reason) => {
                tracing::info!(%reason, "no HAMi scheduler");
                Err(FindSchedulerError::Unavailable { reason })
            }
            None => Err(FindSchedulerError::Failed(Arc::new(Error::K8s(e)))),
        },
        Err(e) => Err(FindSchedulerError::Failed(Arc::new(e))),
    }
}

/// [`find_hami_scheduler`], tried once per process: the first call for a release (and
/// cache folder) resolves it, concurrent and later calls wait for and get a clone of that
/// answer, so the pinned module's build (minutes, or a refusal by the module proxy) is
/// tried once, not once per test.
///
/// ```no_run
/// # async fn f() -> Result<(), hami_e2e_core::Failure> {
/// use hami_e2e_helm::binaries::{find_hami_scheduler_once, HamiRelease};
///
/// let cache = hami_e2e_k8s::local::bincache::BinaryCache::default();
/// let release = HamiRelease::from_env()?;
/// let first = find_hami_scheduler_once(&cache, &release).await;
/// let again = find_hami_scheduler_once(&cache, &release).await; // at once: not tried again
/// assert_eq!(first.is_ok(), again.is_ok());
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`find_hami_scheduler_with`], cloned.
///
/// # Cancel safety
///
/// Cancel safe: a cancelled first call leaves the answer unset, and the next caller
/// resolves it.
pub async fn find_hami_scheduler_once(
    cache: &BinaryCache,
    release: &HamiRelease,
) -> std::result::Result<HamiScheduler, FindSchedulerError> {
    find_hami_scheduler_once_with(cache, release, &SchedulerInputs::from_env()).await
}

/// [`find_hami_scheduler_with`], once per process for each release, cache folder and
/// `inputs`: see [`find_hami_scheduler_once`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use hami_e2e_helm::binaries::{find_hami_scheduler_once_with, HamiRelease, SchedulerInputs};
///
/// let cache = hami_e2e_k8s::local::bincache::BinaryCache::new("/nonexistent/cache");
/// let release = HamiRelease::find(None).unwrap();
/// let inputs = SchedulerInputs::new().source("/no/such/HAMi");
/// let first = find_hami_scheduler_once_with(&cache, &release, &inputs).await.unwrap_err();
/// let again = find_hami_scheduler_once_with(&cache, &release, &inputs).await.unwrap_err();
/// assert_eq!(first.to_string(), again.to_string());
/// # }
/// ```
///
/// # Errors
///
/// As [`find_hami_scheduler_with`], cloned.
///
/// # Cancel safety
///
/// As [`find_hami_scheduler_once`].
pub async fn find_hami_scheduler_once_with(
    cache: &BinaryCache,
    release: &HamiRelease,
    inputs: &SchedulerInputs,
) -> std::result::Result<HamiScheduler, FindSchedulerError> {
    type Key = (&'static str, PathBuf, SchedulerInputs);
    type Cell = Arc<tokio::sync::OnceCell<std::result::Result<HamiScheduler, FindSchedulerError>>>;
    static ANSWERS: OnceLock<Mutex<HashMap<Key, Cell>>> = OnceLock::new();
    let key = (
        release.version(),
        cache.root().to_path_buf(),
        inputs.clone(),
    );
    let cell = ANSWERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| find_hami_scheduler_with(cache, release, inputs))
        .await
        .clone()
}

/// The skip reason for a failed build of the pinned module, or `None` for errors that are
/// failures (the cache folder not writable, ...).
fn unavailable_reason(
    cache: &BinaryCache,
    release: &HamiRelease,
    error: &hami_e2e_k8s::Error,
) -> Option<String> {
    let why = match error {
        hami_e2e_k8s::Error::GoBuild { output, .. } => {
            let log = cache
                .root()
                .join("logs")
                .join(format!("{}.log", release.go_module().key()));
            let summary = go_error_summary(output);
            if log.is_file() {
                format!("{summary} (go's output: {})", log.display())
            } else {
                summary
            }
        }
        hami_e2e_k8s::Error::GoMissing { source, .. } => {
            format!("cannot run `go` ({source}); install Go 1.26 or newer")
        }
        _ => return None,
    };
    Some(format!(
        "no HAMi scheduler: {HAMI_SCHEDULER_ENV} and {HAMI_SOURCE_ENV} are unset, and building HAMi {} from its Go module (hami-e2e-helm/src/go/hami-{}) failed: {why}",
        release.version(),
        minor_of(release.version()),
    ))
}

/// The line(s) of go's output that say why a build failed (the module proxy's answer, a
/// missing C compiler), not the whole log: at most three, each at most 300 characters.
fn go_error_summary(output: &str) -> String {
    const MARKERS: &[&str] = &[
        "Forbidden",
        "not available",
        "Not Found",
        "404",
        "410 Gone",
        "no such host",
        "dial tcp",
        "connection refused",
        "timeout",
        "missing go.sum",
        "checksum mismatch",
        "SECURITY ERROR",
        "unknown revision",
        "invalid version",
        "not found",
        "GOPROXY",
        "toolchain",
    ];
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("go: downloading") && !l.starts_with("go: finding")
        })
        .collect();
    let mut chosen: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| MARKERS.iter().any(|m| l.contains(m)))
        .collect();
    if chosen.is_empty() {
        chosen = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("go: "))
            .collect();
    }
    if chosen.is_empty() {
        chosen = lines[lines.len().saturating_sub(3)..].to_vec();
    }
    let mut seen = Vec::new();
    for line in chosen {
        if !seen.contains(&line) {
            seen.push(line);
        }
    }
    if seen.is_empty() {
        return "go printed nothing".into();
    }
    seen.iter()
        .take(3)
        .map(|l| match l.char_indices().nth(300) {
            Some((i, _)) => format!("{}…", &l[..i]),
            None => (*l).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// A HAMi checkout as [`hami_scheduler_from_source`] sees it: its commit, its uncommitted
/// changes, and the cache key they make.
///
/// The key is `hami-scheduler-src-<commit, 12 digits>-<hash>`, the hash covering
/// `git status --porcelain`, `git diff HEAD`, the sizes and times of untracked files and
/// the `VERSION` file; outside git it is `hami-scheduler-src-nogit-<hash>`, the hash
/// covering the paths, sizes and modification times of the `*.go`, `go.mod` and `go.sum`
/// files (as Go, skipping folders named `testdata` or starting with `.` or `_`). The
/// folder is a git checkout when it is the top of a git work tree itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HamiCheckout {
    /// The folder, canonical.
    pub dir: PathBuf,
    /// `HEAD`, when the folder is a git checkout.
    pub commit: Option<String>,
    /// How many files `git status` lists as changed or untracked (0 outside git).
    pub changes: usize,
    /// The first word of the `VERSION` file, or `unknown`.
    pub version: String,
    /// The commit's date as HAMi's Makefile stamps it (`20260821-06:20:39`, UTC), or
    /// `unknown` outside git.
    pub build_date: String,
    /// The name of its folder in the binary cache (`bin/<key>/`).
    pub key: String,
}

impl HamiCheckout {
    /// Looks at the checkout in `dir` (runs `git` there, or lists its Go files).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use hami_e2e_helm::binaries::HamiCheckout;
    ///
    /// let err = HamiCheckout::inspect("/no/such/HAMi".as_ref()).await.unwrap_err();
    /// assert!(err.to_string().starts_with("HAMI_E2E_HAMI_SOURCE=`/no/such/HAMi` is not a HAMi checkout: cannot read it"));
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::BadSource`] naming the folder when it does not exist, is not a folder, or
    /// has no `cmd/scheduler` folder or `go.mod`; [`Error::Io`] when its files cannot be
    /// listed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `git` is killed.
    pub async fn inspect(dir: &Path) -> Result<HamiCheckout> {
        let bad = |message: String| Error::BadSource {
            path: dir.to_path_buf(),
            message,
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(bad("it is not a folder".into())),
            Err(e) => return Err(bad(format!("cannot read it: {e}"))),
        }
        if !dir.join("cmd/scheduler").is_dir() {
            return Err(bad(
                "it has no `cmd/scheduler` folder (name the top folder of a HAMi checkout)".into(),
            ));
        }
        if !dir.join("go.mod").is_file() {
            return Err(bad("it has no `go.mod`".into()));
        }
        let dir = std::fs::canonicalize(dir).map_err(|e| bad(format!("cannot resolve it: {e}")))?;
        let version_file = std::fs::read_to_string(dir.join("VERSION")).unwrap_or_default();
        let version = version_file
            .split_whitespace()
            .next()
            .unwrap_or("unknown")
            .to_string();
        let mut hash = Fnv::new();
        hash.field(b"VERSION");
        hash.field(version_file.as_bytes());
        let (commit, changes, build_date) = match git_state(&dir).await {
            Some(git) => {
                hash.field(b"git");
                hash.field(git.commit.as_bytes());
                hash.field(&git.status);
                hash.field(&git.diff);
                for file in &git.untracked {
                    hash.field(file.as_bytes());
                    hash_stat(&mut hash, &dir.join(file));
                }
                (Some(git.commit), git.changes, git.date)
            }
            None => {
                let root = dir.clone();
                let files = tokio::task::spawn_blocking(move || go_files(&root))
                    .await
                    .map_err(|e| Error::Io {
                        action: "list the Go files of",
                        path: dir.clone(),
                        source: std::io::Error::other(e),
                    })?
                    .map_err(|source| Error::Io {
                        action: "list the Go files of",
                        path: dir.clone(),
                        source,
                    })?;
                hash.field(b"files");
                for file in &files {
                    hash.field(file.as_bytes());
                    hash_stat(&mut hash, &dir.join(file));
                }
                (None, 0, "unknown".to_string())
            }
        };
        let key = format!(
            "hami-scheduler-src-{}-{:016x}",
            commit.as_deref().map_or("nogit", |c| short(c, 12)),
            hash.0
        );
        Ok(HamiCheckout {
            dir,
            commit,
            changes,
            version,
            build_date,
            key,
        })
    }

    /// The revision stamped into the binary: the commit's first 12 digits, `-dirty` with
    /// uncommitted changes; `unknown` outside git.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("hami-e2e-doc-revision-{}", std::process::id()));
    /// # std::fs::create_dir_all(dir.join("cmd/scheduler")).unwrap();
    /// # std::fs::write(dir.join("go.mod"), "module github.com/Project-HAMi/HAMi\n").unwrap();
    /// let checkout = hami_e2e_helm::binaries::HamiCheckout::inspect(&dir).await.unwrap();
    /// assert_eq!(checkout.commit, None);
    /// assert_eq!(checkout.revision(), "unknown");
    /// assert!(checkout.key.starts_with("hami-scheduler-src-nogit-"));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub fn revision(&self) -> String {
        match &self.commit {
            Some(c) if self.changes > 0 => format!("{}-dirty", short(c, 12)),
            Some(c) => short(c, 12).to_string(),
            None => "unknown".into(),
        }
    }

    /// The linker flags of the build: those of the pinned builds (and HAMi's Makefile),
    /// with [`HamiCheckout::version`], [`HamiCheckout::revision`] and
    /// [`HamiCheckout::build_date`].
    pub fn ldflags(&self) -> String {
        version_ldflags(&self.version, &self.revision(), &self.build_date)
    }

    /// Its folder in `cache`: `bin/<key>/`, holding `scheduler`, `build.log` and, once
    /// built, `.complete`.
    pub fn cache_dir(&self, cache: &BinaryCache) -> PathBuf {
        cache.root().join("bin").join(&self.key)
    }
}

/// What `git` says of a checkout.
struct GitState {
    commit: String,
    date: String,
    status: Vec<u8>,
    diff: Vec<u8>,
    changes: usize,
    untracked: Vec<String>,
}

/// The git state of `dir` when it is the top of a git work tree, else `None` (also when
/// `git` is missing or refuses the folder: the Go files' times are used instead).
async fn git_state(dir: &Path) -> Option<GitState> {
    let commit = match git(dir, &["rev-parse", "HEAD"]).await {
        Ok(out) => String::from_utf8_lossy(&out).trim().to_string(),
        Err(why) => {
            tracing::debug!(dir = %dir.display(), %why, "not a git checkout");
            return None;
        }
    };
    let result = async {
        let status = git(
            dir,
            &["status", "--porcelain", "-z", "--untracked-files=all"],
        )
        .await?;
        let diff = git(dir, &["diff", "HEAD", "--binary"]).await?;
        let date = git(
            dir,
            &[
                "show",
                "-s",
                "--format=%cd",
                "--date=format-local:%Y%m%d-%H:%M:%S",
                "HEAD",
            ],
        )
        .await
        .map(|d| String::from_utf8_lossy(&d).trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
        Ok::<_, String>((status, diff, date))
    }
    .await;
    match result {
        Ok((status, diff, date)) => {
            let (changes, untracked) = parse_porcelain_z(&status);
            Some(GitState {
                commit,
                date,
                status,
                diff,
                changes,
                untracked,
            })
        }
        Err(why) => {
            tracing::warn!(dir = %dir.display(), %why, "git fails in the checkout; keying its build by its Go files instead");
            None
        }
    }
}

/// Runs `git args` in `dir`, looking no higher than `dir` for the repository, taking no
/// optional locks (no index refresh written), dates in UTC.
async fn git(dir: &Path, args: &[&str]) -> std::result::Result<Vec<u8>, String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("TZ", "UTC")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(parent) = dir.parent() {
        cmd.env("GIT_CEILING_DIRECTORIES", parent);
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run `git`: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "`git {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The number of entries of `git status --porcelain -z` and the untracked paths.
fn parse_porcelain_z(out: &[u8]) -> (usize, Vec<String>) {
    let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
    let mut changes = 0;
    let mut untracked = Vec::new();
    while let Some(entry) = fields.next() {
        if entry.len() < 4 {
            continue;
        }
        changes += 1;
        let (xy, path) = (&entry[..2], &entry[3..]);
        if xy == b"??" {
            untracked.push(String::from_utf8_lossy(path).into_owned());
        }
        // A rename or copy is followed by its original path.
        if xy.contains(&b'R') || xy.contains(&b'C') {
            fields.next();
        }
    }
    (changes, untracked)
}

/// The paths (relative, `/`-separated, sorted) of the files a Go build reads the checkout's
/// state from: `*.go`, `go.mod`, `go.sum`.
fn go_files(root: &Path) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut folders = vec![PathBuf::new()];
    while let Some(rel) = folders.pop() {
        for entry in std::fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if !(name.starts_with('.') || name.starts_with('_') || name == "testdata") {
                    folders.push(rel.join(&*name));
                }
            } else if kind.is_file()
                && (name.ends_with(".go") || name == "go.mod" || name == "go.sum")
            {
                let path = rel.join(&*name);
                files.push(path.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Adds a file's size and modification time (or that it cannot be read) to `hash`.
fn hash_stat(hash: &mut Fnv, path: &Path) {
    match std::fs::metadata(path) {
        Ok(m) => {
            hash.field(&m.len().to_le_bytes());
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            hash.field(&mtime.to_le_bytes());
        }
        Err(_) => hash.field(b"unreadable"),
    }
}

/// 64-bit FNV-1a: a hash that stays the same across Rust releases, for cache keys.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Writes `bytes` with its length first, so that fields cannot run into each other.
    fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

/// The first `n` characters of a commit.
fn short(commit: &str, n: usize) -> &str {
    commit.get(..n).unwrap_or(commit)
}

/// A progress line, on the terminal under `cargo test` and nextest too (see
/// [`hami_e2e_core::progress`]).
fn progress(line: &str) {
    hami_e2e_core::progress::line(&format!("hami-e2e: {line}"));
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The HAMi scheduler built from the HAMi checkout in `dir` (`HAMI_E2E_HAMI_SOURCE`), with
/// `go` (`go` finds it on `PATH`).
///
/// Runs `go build -trimpath -ldflags <HamiCheckout::ldflags> -o <cache>/bin/<key>/scheduler
/// ./cmd/scheduler` in `dir` with `CGO_ENABLED=1` and `GOWORK=off` (other Go settings, such
/// as `GOFLAGS` and `GOPROXY`, are the environment's), writing go's output to `build.log`
/// next to the binary, and prints a progress line when it starts and when it ends. The
/// [`HamiCheckout::key`] names the cache folder, so an unchanged checkout is built once;
/// concurrent builds of one key share it through a lock file. The version is what the
/// binary's `version` command reports: the `VERSION` file's.
///
/// ```no_run
/// # async fn f() -> hami_e2e_helm::Result<()> {
/// use hami_e2e_helm::binaries::{hami_scheduler_from_source, BinarySource};
///
/// let cache = hami_e2e_k8s::local::bincache::BinaryCache::default();
/// let scheduler = hami_scheduler_from_source(&cache, "/src/HAMi".as_ref(), "go".as_ref()).await?;
/// assert!(matches!(scheduler.source, BinarySource::Source { .. }));
/// println!("{} {}", scheduler.version, scheduler.source); // v2.10.0 built from the checkout /src/HAMi at 4707fb02 (+3 uncommitted)
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// - [`Error::BadSource`] naming `HAMI_E2E_HAMI_SOURCE` and the folder when it does not
///   exist or has no `cmd/scheduler` (see [`HamiCheckout::inspect`]).
/// - [`Error::SourceBuild`] naming the folder, the command, the log and its last 20 lines
///   when `go` does not start or the build fails.
/// - [`Error::BadBinary`] when the built binary answers neither `version` nor `--help`.
/// - [`Error::Io`] when the cache folder cannot be written.
///
/// # Cancel safety
///
/// Cancel safe: `go` and `git` are killed; an unfinished build leaves a folder without
/// `.complete`, which the next call builds again.
pub async fn hami_scheduler_from_source(
    cache: &BinaryCache,
    dir: &Path,
    go: &Path,
) -> Result<HamiScheduler> {
    let checkout = HamiCheckout::inspect(dir).await?;
    let out_dir = checkout.cache_dir(cache);
    let out_dir = std::path::absolute(&out_dir).map_err(io_error("resolve", &out_dir))?;
    let path = out_dir.join("scheduler");
    let complete = out_dir.join(".complete");
    if complete.is_file() {
        tracing::debug!(path = %path.display(), "HAMi's scheduler of the checkout is cached");
    } else {
        let bin = cache.root().join("bin");
        std::fs::create_dir_all(&bin).map_err(io_error("create folder", &bin))?;
        let lock_path = bin.join(format!("{}.lock", checkout.key));
        let lock =
            std::fs::File::create(&lock_path).map_err(io_error("create lock file", &lock_path))?;
        let _lock = if lock.try_lock().is_ok() {
            lock
        } else {
            progress(&format!(
                "waiting for another build of HAMi's scheduler from {}",
                checkout.dir.display()
            ));
            tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
                .await
                .map_err(|e| Error::Io {
                    action: "lock",
                    path: lock_path.clone(),
                    source: std::io::Error::other(e),
                })?
                .map_err(io_error("lock", &lock_path))?
        };
        if !complete.is_file() {
            build_checkout(&checkout, &out_dir, go).await?;
        }
    }
    let source = BinarySource::Source {
        dir: checkout.dir.clone(),
        commit: checkout.commit.clone(),
        changes: checkout.changes,
    };
    let version = check_scheduler(&path, &source.to_string()).await?;
    Ok(HamiScheduler {
        path,
        version,
        source,
    })
}

/// Builds `checkout`'s scheduler into `out_dir` (absolute) and marks it complete. The
/// caller holds the key's lock.
async fn build_checkout(checkout: &HamiCheckout, out_dir: &Path, go: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir).map_err(io_error("create folder", out_dir))?;
    let binary = out_dir.join("scheduler");
    let marker = out_dir.join(".complete");
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(&binary);
    let log_path = out_dir.join("build.log");
    let ldflags = checkout.ldflags();
    let output = binary.display().to_string();
    let command = format!(
        "CGO_ENABLED=1 {} build -trimpath -ldflags '{ldflags}' -o {output} ./cmd/scheduler",
        go.display()
    );
    let mut log = std::fs::File::create(&log_path).map_err(io_error("create", &log_path))?;
    writeln!(log, "$ cd {} && {command}", checkout.dir.display())
        .map_err(io_error("write", &log_path))?;
    let log_err = log.try_clone().map_err(io_error("open", &log_path))?;
    let state = match &checkout.commit {
        Some(c) => format!(
            "commit {}, {} uncommitted changes",
            short(c, 8),
            checkout.changes
        ),
        None => "not a git checkout".into(),
    };
    progress(&format!(
        "building HAMi's scheduler from {} ({state}); log: {}",
        checkout.dir.display(),
        log_path.display()
    ));
    let started = Instant::now();
    let failed = |status: String| Error::SourceBuild {
        dir: checkout.dir.clone(),
        command: command.clone(),
        status,
        log: log_path.clone(),
        tail: tail_of_file(&log_path, 20),
    };
    let spawned = tokio::process::Command::new(go)
        .current_dir(&checkout.dir)
        .args([
            "build",
            "-trimpath",
            "-ldflags",
            &ldflags,
            "-o",
            &output,
            "./cmd/scheduler",
        ])
        .env("CGO_ENABLED", "1")
        .env("GOWORK", "off")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Err(failed(format!("could not start ({e})"))),
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    ticker.tick().await;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = ticker.tick() => progress(&format!(
                "still building HAMi's scheduler from {} ({})",
                checkout.dir.display(),
                hami_e2e_core::format_duration(started.elapsed())
            )),
        }
    };
    let status = status.map_err(|e| failed(format!("could not be waited for ({e})")))?;
    if !status.success() {
        return Err(failed(format!("failed ({status})")));
    }
    if !binary.is_file() {
        return Err(failed("exited with 0 but wrote no binary".into()));
    }
    std::fs::write(&marker, format!("{command}\n")).map_err(io_error("write", &marker))?;
    progress(&format!(
        "built HAMi's scheduler from {} in {}: {}",
        checkout.dir.display(),
        hami_e2e_core::format_duration(started.elapsed()),
        binary.display()
    ));
    Ok(())
}

/// The last `lines` lines of the file at `path` (empty when it cannot be read).
fn tail_of_file(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The folder of the pinned HAMi module's source in Go's module cache (downloaded if
/// needed). It holds HAMi's Helm chart, `charts/hami`, and the default device
/// configuration of the release.
///
/// ```no_run
/// # async fn f() -> hami_e2e_helm::Result<()> {
/// use hami_e2e_helm::binaries::{hami_module_dir, HamiRelease};
///
/// let cache = hami_e2e_k8s::local::bincache::BinaryCache::default();
/// let dir = hami_module_dir(&cache, &HamiRelease::from_env()?).await?;
/// assert!(dir.join("charts/hami/Chart.yaml").is_file());
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::K8s`] with [`hami_e2e_k8s::Error::GoMissing`] or
/// [`hami_e2e_k8s::Error::GoBuild`] when `go` cannot download the module (its output says
/// why).
///
/// # Cancel safety
///
/// Cancel safe: `go` is killed; Go resumes a partial download.
pub async fn hami_module_dir(cache: &BinaryCache, release: &HamiRelease) -> Result<PathBuf> {
    Ok(cache
        .go_module_source(&release.go_module(), HAMI_MODULE)
        .await?)
}

/// The pinned helm version (`v3.22.0`), from `hami-e2e-helm/src/go/helm/go.mod`.
///
/// ```
/// assert!(hami_e2e_helm::binaries::pinned_helm_version().starts_with("v3."));
/// ```
pub fn pinned_helm_version() -> &'static str {
    required_version(HELM_GO_MOD, "helm.sh/helm/v3")
        .expect("hami-e2e-helm/src/go/helm/go.mod requires helm v3")
}

/// The helm Go module and its build: the version linker flags of helm's Makefile, including
/// the Kubernetes version helm assumes when it has no cluster (`helm template`), taken from
/// the `k8s.io/client-go` it is built with.
///
/// ```
/// let module = hami_e2e_helm::binaries::helm_module();
/// assert_eq!(module.key(), format!("helm-{}", hami_e2e_helm::binaries::pinned_helm_version()));
/// ```
pub fn helm_module() -> GoModule {
    let version = pinned_helm_version();
    let k8s_minor = required_version(HELM_GO_MOD, "k8s.io/client-go")
        .and_then(|v| v.split('.').nth(1))
        .unwrap_or("0");
    let ldflags = [
        format!("internal/version.version={version}"),
        "internal/version.metadata=".into(),
        "internal/version.gitTreeState=clean".into(),
        "pkg/lint/rules.k8sVersionMajor=1".into(),
        format!("pkg/lint/rules.k8sVersionMinor={k8s_minor}"),
        "pkg/chartutil.k8sVersionMajor=1".into(),
        format!("pkg/chartutil.k8sVersionMinor={k8s_minor}"),
    ]
    .iter()
    .fold("-s -w".to_string(), |acc, x| {
        format!("{acc} -X helm.sh/helm/v3/{x}")
    });
    GoModule::new("helm", version, HELM_GO_MOD, HELM_GO_SUM, HELM_TOOLS_GO)
        .build(GoBuild::new(["helm.sh/helm/v3/cmd/helm"], "helm").ldflags(ldflags))
}

/// The `helm` CLI: `HAMI_E2E_HELM` if set, else `helm` on `PATH` if it is a supported
/// major version (v3), else built from `hami-e2e-helm/src/go/helm`. Same as [`helm_from`] with the process's
/// `HAMI_E2E_HELM` and `PATH`.
///
/// ```no_run
/// # async fn f() -> hami_e2e_helm::Result<()> {
/// let helm = hami_e2e_helm::binaries::helm(&hami_e2e_k8s::local::bincache::BinaryCache::default()).await?;
/// println!("helm {} ({})", helm.version, helm.source);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// See [`helm_from`].
///
/// # Cancel safety
///
/// Cancel safe: child processes are killed; an unfinished build leaves at most a
/// `.partial` folder that the next build replaces.
pub async fn helm(cache: &BinaryCache) -> Result<HelmBinary> {
    let given = std::env::var_os(HELM_ENV);
    let path = std::env::var_os("PATH");
    helm_from(cache, given.as_deref(), path.as_deref()).await
}

/// The `helm` CLI, with `given` as the value of `HAMI_E2E_HELM` and `path` as `PATH`.
///
/// ```no_run
/// # async fn f() -> hami_e2e_helm::Result<()> {
/// use hami_e2e_helm::binaries::{helm_from, pinned_helm_version, BinarySource};
///
/// let cache = hami_e2e_k8s::local::bincache::BinaryCache::default();
/// // No HAMI_E2E_HELM and an empty PATH: the pinned helm is built.
/// let helm = helm_from(&cache, None, None).await?;
/// assert!(matches!(helm.source, BinarySource::Built { .. }));
/// assert_eq!(helm.version, pinned_helm_version());
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// - [`Error::BadBinary`] naming the path and `HAMI_E2E_HELM` when the given binary is
///   missing, does not run, or is not helm v3; or naming the cache folder when the built
///   helm reports another version.
/// - [`Error::K8s`] with [`hami_e2e_k8s::Error::GoMissing`] or
///   [`hami_e2e_k8s::Error::GoBuild`] when building fails.
///
/// # Cancel safety
///
/// As [`helm`].
pub async fn helm_from(
    cache: &BinaryCache,
    given: Option<&OsStr>,
    path: Option<&OsStr>,
) -> Result<HelmBinary> {
    if let Some(given) = given.filter(|p| !p.is_empty()) {
        let path = PathBuf::from(given);
        let bad = |message: String| Error::BadBinary {
            what: "helm",
            path: path.clone(),
            origin: HELM_ENV.into(),
            message,
        };
        check_exists(&path).map_err(&bad)?;
        let out = run(&path, &["version", "--short"]).await.map_err(&bad)?;
        let (major, version) = parse_helm_version(&out).ok_or_else(|| {
            bad(format!(
                "`helm version --short` printed no version: {}",
                out.trim()
            ))
        })?;
        if !SUPPORTED_HELM_MAJORS.contains(&major) {
            return Err(bad(format!(
                "it is helm {version}; supported: helm v3 (unset {HELM_ENV} to build helm {})",
                pinned_helm_version()
            )));
        }
        tracing::info!(path = %path.display(), %version, "using helm from {HELM_ENV}");
        return Ok(HelmBinary {
            path,
            version,
            source: BinarySource::Env(HELM_ENV),
        });
    }
    for dir in path.map(std::env::split_paths).into_iter().flatten() {
        let candidate = dir.join("helm");
        if !candidate.is_file() {
            continue;
        }
        match run(&candidate, &["version", "--short"]).await {
            Ok(out) => match parse_helm_version(&out) {
                Some((major, version)) if SUPPORTED_HELM_MAJORS.contains(&major) => {
                    tracing::info!(path = %candidate.display(), %version, "using helm from PATH");
                    return Ok(HelmBinary {
                        path: candidate,
                        version,
                        source: BinarySource::Path,
                    });
                }
                _ => tracing::info!(
                    path = %candidate.display(),
                    output = out.trim(),
                    "ignoring helm on PATH: not helm v3"
                ),
            },
            Err(message) => {
                tracing::info!(path = %candidate.display(), %message, "ignoring helm on PATH")
            }
        }
    }
    let dir = cache.build_go(&helm_module()).await?;
    let path = dir.join("helm");
    let pin = "hami-e2e-helm/src/go/helm".to_string();
    let bad = |message: String| Error::BadBinary {
        what: "helm",
        path: path.clone(),
        origin: format!("built from {pin}"),
        message,
    };
    let out = run(&path, &["version", "--short"]).await.map_err(&bad)?;
    let version = parse_helm_version(&out)
        .map(|(_, v)| v)
        .ok_or_else(|| bad(format!("`helm version --short` printed {}", out.trim())))?;
    if version != pinned_helm_version() {
        return Err(bad(format!(
            "reports version {version}, not {}; delete {} to rebuild it",
            pinned_helm_version(),
            dir.display()
        )));
    }
    Ok(HelmBinary {
        path,
        version,
        source: BinarySource::Built { pin },
    })
}

/// `2.10` of `v2.10.0`.
fn minor_of(version: &str) -> &str {
    let v = version.trim_start_matches('v');
    match v.match_indices('.').nth(1) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

fn check_exists(path: &Path) -> std::result::Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err("it is not a file".into()),
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}

/// Checks a scheduler given by `HAMI_E2E_HAMI_SCHEDULER` (or built from a checkout: see
/// `origin`) and returns its version.
async fn check_scheduler(path: &Path, origin: &str) -> Result<String> {
    let bad = |message: String| Error::BadBinary {
        what: "HAMi scheduler",
        path: path.to_path_buf(),
        origin: origin.into(),
        message,
    };
    check_exists(path).map_err(&bad)?;
    match run(path, &["version"]).await {
        Ok(out) => Ok(parse_hami_version(&out).unwrap_or_else(|| "unknown".into())),
        Err(version_error) => match run(path, &["--help"]).await {
            Ok(_) => Ok("unknown".into()),
            Err(help_error) => Err(bad(format!(
                "`version` failed ({version_error}) and `--help` failed ({help_error})"
            ))),
        },
    }
}

/// Runs `binary args` with a timeout and returns stdout and stderr together (cobra prints
/// HAMi's version on stderr), or why it failed.
async fn run(binary: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let child = tokio::process::Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let command = format!("`{} {}`", binary.display(), args.join(" "));
    let out = tokio::time::timeout(VERSION_TIMEOUT, child)
        .await
        .map_err(|_| {
            format!(
                "{command} did not finish within {}",
                hami_e2e_core::format_duration(VERSION_TIMEOUT)
            )
        })?
        .map_err(|e| format!("cannot run {command}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        let last: Vec<&str> = text.lines().rev().take(5).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        Err(format!(
            "{command} exited with {}: {}",
            out.status,
            last.join(" / ")
        ))
    }
}

/// The version in `scheduler version`'s output (`version:          v2.10.0`).
fn parse_hami_version(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let value = line.trim().strip_prefix("version:")?.trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Major version and version without build metadata from `helm version --short`
/// (`v3.22.0+g1234abc` → `(3, "v3.22.0")`).
fn parse_helm_version(output: &str) -> Option<(u32, String)> {
    output.split_whitespace().find_map(|word| {
        let version = word.split('+').next()?;
        let rest = version.strip_prefix('v')?;
        let mut parts = rest.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor_ok = parts.next()?.parse::<u32>().is_ok();
        minor_ok.then(|| (major, version.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_found_by_prefix() {
        for (input, want) in [
            ("2.9", "v2.9.0"),
            ("v2.9", "v2.9.0"),
            ("v2.9.0", "v2.9.0"),
            ("2.9.0", "v2.9.0"),
            (" 2.10 ", "v2.10.0"),
            ("v2.10.0", "v2.10.0"),
            ("", "v2.10.0"),
        ] {
            assert_eq!(
                HamiRelease::find(Some(input)).unwrap().version(),
                want,
                "{input}"
            );
        }
        assert_eq!(HamiRelease::find(None).unwrap().version(), "v2.10.0");
    }

    #[test]
    fn unknown_releases_name_the_input_and_the_supported_ones() {
        for input in ["2.1", "v2.8.0", "3", "latest", "2.10.1"] {
            let e = HamiRelease::find(Some(input)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("HAMi version `{input}` is not supported; supported: v2.10.0, v2.9.0")
            );
        }
    }

    #[test]
    fn pins_match_the_releases_commits() {
        assert_eq!(
            HAMI_RELEASES[0].pseudo_version(),
            "v0.0.0-20260821062039-4707fb02c91c"
        );
        assert_eq!(
            HAMI_RELEASES[1].pseudo_version(),
            "v0.0.0-20260519091452-3a006c6ae2f0"
        );
        for r in HAMI_RELEASES {
            assert!(r.pseudo_version().ends_with(&r.commit()[..12]));
            assert!(r.go_mod.contains(&format!("Pins HAMi {}", r.version())));
            assert!(
                r.go_sum
                    .contains(&format!("{HAMI_MODULE} {} h1:", r.pseudo_version()))
            );
            assert!(
                r.tools_go
                    .contains("github.com/Project-HAMi/HAMi/cmd/scheduler")
            );
        }
    }

    #[test]
    fn scheduler_build_stamps_the_version_like_hamis_makefile() {
        let m = HAMI_RELEASES[1].go_module();
        assert_eq!(m.key(), "hami-scheduler-v2.9.0");
        let b = &m.builds[0];
        assert!(b.cgo);
        assert_eq!(b.output, "scheduler");
        assert_eq!(
            b.ldflags,
            "-s -w -X github.com/Project-HAMi/HAMi/pkg/version.version=v2.9.0 \
             -X github.com/Project-HAMi/HAMi/pkg/version.revision=3a006c6ae2f0 \
             -X github.com/Project-HAMi/HAMi/pkg/version.buildDate=20260519-09:14:52"
        );
    }

    #[test]
    fn helm_build_stamps_version_and_kubernetes_minor() {
        let m = helm_module();
        let b = &m.builds[0];
        assert!(!b.cgo);
        assert!(b.ldflags.contains(&format!(
            "-X helm.sh/helm/v3/internal/version.version={}",
            pinned_helm_version()
        )));
        assert!(b.ldflags.contains("chartutil.k8sVersionMajor=1 "));
        assert!(!b.ldflags.contains("k8sVersionMinor=0"));
    }

    #[test]
    fn hami_version_output_is_parsed() {
        let out = "version:          v2.10.0\nrevision:         4707fb02c91c\nbuild date:       20260821-06:20:39\ngo version:       go1.26.8\n";
        assert_eq!(parse_hami_version(out).as_deref(), Some("v2.10.0"));
        assert_eq!(parse_hami_version("version:\nrevision: x"), None);
        assert_eq!(parse_hami_version("Usage: scheduler"), None);
    }

    #[test]
    fn helm_version_output_is_parsed() {
        assert_eq!(
            parse_helm_version("v3.22.0+g1a2b3c4\n"),
            Some((3, "v3.22.0".into()))
        );
        assert_eq!(parse_helm_version("v3.22.0\n"), Some((3, "v3.22.0".into())));
        assert_eq!(
            parse_helm_version("v4.3.1+gabc"),
            Some((4, "v4.3.1".into()))
        );
        assert_eq!(
            parse_helm_version("WARNING: kubeconfig is group-readable\nv3.19.0+g3d8990f"),
            Some((3, "v3.19.0".into()))
        );
        assert_eq!(parse_helm_version("helm: command not found"), None);
        assert_eq!(parse_helm_version("v3"), None);
    }

    #[test]
    fn go_error_summary_keeps_the_line_that_says_why() {
        let refused = "go: downloading github.com/Project-HAMi/HAMi v0.0.0-20260821062039-4707fb02c91c\n\
            go: github.com/Project-HAMi/HAMi@v0.0.0-20260821062039-4707fb02c91c: reading https://proxy.golang.org/github.com/!project-!h!a!mi/!h!a!mi/@v/v0.0.0-20260821062039-4707fb02c91c.zip: 403 Forbidden\n";
        assert_eq!(
            go_error_summary(refused),
            "go: github.com/Project-HAMi/HAMi@v0.0.0-20260821062039-4707fb02c91c: reading https://proxy.golang.org/github.com/!project-!h!a!mi/!h!a!mi/@v/v0.0.0-20260821062039-4707fb02c91c.zip: 403 Forbidden"
        );
        let offline =
            "go: github.com/Project-HAMi/HAMi@v0.0.0-x: module lookup disabled by GOPROXY=off\n";
        assert_eq!(go_error_summary(offline), offline.trim());
        let cgo = "# runtime/cgo\ncgo: C compiler \"gcc\" not found: exec: \"gcc\": executable file not found in $PATH\n";
        assert!(
            go_error_summary(cgo).starts_with("cgo: C compiler"),
            "{}",
            go_error_summary(cgo)
        );
        // No known marker: the `go:` lines, else the last lines.
        assert_eq!(
            go_error_summary("go: something odd\nmore\n"),
            "go: something odd"
        );
        assert_eq!(go_error_summary("a\nb\nc\nd\n"), "b / c / d");
        assert_eq!(go_error_summary("\n"), "go printed nothing");
        let long = format!("go: {} 403 Forbidden", "x".repeat(400));
        assert_eq!(go_error_summary(&long).chars().count(), 301);
    }

    #[test]
    fn porcelain_entries_are_counted_with_renames_and_untracked_files() {
        let out = b" M cmd/scheduler/main.go\0R  new.go\0old.go\0?? extra.go\0?? pkg/a b.go\0";
        let (changes, untracked) = parse_porcelain_z(out);
        assert_eq!(changes, 4);
        assert_eq!(untracked, ["extra.go", "pkg/a b.go"]);
        assert_eq!(parse_porcelain_z(b""), (0, Vec::new()));
    }

    #[test]
    fn the_cache_key_hash_is_stable() {
        // FNV-1a 64 test vectors: the key must not change with the Rust release.
        let mut h = Fnv::new();
        h.write(b"");
        assert_eq!(h.0, 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv::new();
        h.write(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
        let mut h = Fnv::new();
        h.write(b"foobar");
        assert_eq!(h.0, 0x8594_4171_f739_67e8);
        // Fields are length-prefixed: ("ab", "c") and ("a", "bc") differ.
        let (mut x, mut y) = (Fnv::new(), Fnv::new());
        x.field(b"ab");
        x.field(b"c");
        y.field(b"a");
        y.field(b"bc");
        assert_ne!(x.0, y.0);
    }

    #[test]
    fn a_checkout_source_says_where_and_at_which_commit() {
        let source = BinarySource::Source {
            dir: "/src/HAMi".into(),
            commit: Some("4707fb02c91c545bc7343ce26dba4c32919f9a3e".into()),
            changes: 3,
        };
        assert_eq!(
            source.to_string(),
            "built from the checkout /src/HAMi at 4707fb02 (+3 uncommitted)"
        );
        let clean = BinarySource::Source {
            dir: "/src/HAMi".into(),
            commit: Some("4707fb02c91c545bc7343ce26dba4c32919f9a3e".into()),
            changes: 0,
        };
        assert_eq!(
            clean.to_string(),
            "built from the checkout /src/HAMi at 4707fb02"
        );
        let no_git = BinarySource::Source {
            dir: "/src/HAMi".into(),
            commit: None,
            changes: 0,
        };
        assert_eq!(
            no_git.to_string(),
            "built from the checkout /src/HAMi (not a git checkout)"
        );
    }

    #[test]
    fn a_checkout_is_stamped_like_the_pinned_builds() {
        let checkout = HamiCheckout {
            dir: "/src/HAMi".into(),
            commit: Some("4707fb02c91c545bc7343ce26dba4c32919f9a3e".into()),
            changes: 2,
            version: "v2.10.0".into(),
            build_date: "20260821-06:20:39".into(),
            key: "k".into(),
        };
        assert_eq!(
            checkout.ldflags(),
            "-s -w -X github.com/Project-HAMi/HAMi/pkg/version.version=v2.10.0 \
             -X github.com/Project-HAMi/HAMi/pkg/version.revision=4707fb02c91c-dirty \
             -X github.com/Project-HAMi/HAMi/pkg/version.buildDate=20260821-06:20:39"
        );
        let cache = BinaryCache::new("/cache");
        assert_eq!(checkout.cache_dir(&cache), Path::new("/cache/bin/k"));
    }

    #[test]
    fn the_skip_reason_names_the_three_ways() {
        let release = HAMI_RELEASES[0];
        let cache = BinaryCache::new("/nonexistent/cache");
        let missing = hami_e2e_k8s::Error::GoMissing {
            component: "hami-scheduler v2.10.0".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let reason = unavailable_reason(&cache, &release, &missing).unwrap();
        assert!(
            reason.starts_with(
                "no HAMi scheduler: HAMI_E2E_HAMI_SCHEDULER and HAMI_E2E_HAMI_SOURCE are unset, \
                 and building HAMi v2.10.0 from its Go module (hami-e2e-helm/src/go/hami-2.10) failed: cannot run `go` ("
            ),
            "{reason}"
        );
        let other = hami_e2e_k8s::Error::Io {
            action: "write",
            path: "/x".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(unavailable_reason(&cache, &release, &other), None);
    }

    #[test]
    fn minor_of_release() {
        assert_eq!(minor_of("v2.10.0"), "2.10");
        assert_eq!(minor_of("v2.9.0"), "2.9");
    }
}
