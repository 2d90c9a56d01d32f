//! The binaries that deploy and run HAMi: the HAMi scheduler and the `helm` CLI.
//!
//! Both come, by default, from Go modules pinned in the repository's `go/` folder and built
//! with the machine's Go into the same [`BinaryCache`] as the local cluster's control plane
//! (`~/.cache/hami-e2e/bin/hami-scheduler-v2.10.0/scheduler`, `bin/helm-v3.22.0/helm`). A
//! first build prints progress lines and takes a few minutes; later calls return at once.
//!
//! - **HAMi scheduler**: [`hami_scheduler`] builds `cmd/scheduler` of
//!   `github.com/Project-HAMi/HAMi` at the [`HamiRelease`] chosen by
//!   `HAMI_E2E_HAMI_VERSION` (default v2.10.0), with cgo (its NVIDIA packages wrap
//!   go-nvml; the machine's C compiler is needed, no NVIDIA library) and the version linker
//!   flags of HAMi's Makefile. A binary named by `HAMI_E2E_HAMI_SCHEDULER`, for example
//!   the one a HAMi pull request just built, is used instead: that is how HAMi's own CI
//!   tests its change.
//! - **HAMi's sources**: [`hami_module_dir`] is the pinned module's folder in Go's module
//!   cache; it holds the Helm chart, `charts/hami`.
//! - **helm**: [`helm`] takes `HAMI_E2E_HELM`, else a `helm` v3 on `PATH`, else builds
//!   `helm.sh/helm/v3` from `go/helm`.
//!
//! HAMi's tags are `v2.x` on a module path without `/v2`, so Go cannot use them as module
//! versions: each release is pinned by its commit's pseudo-version
//! ([`HamiRelease::pseudo_version`]).
//!
//! ```no_run
//! # async fn f() -> hami_e2e_helm::Result<()> {
//! use hami_e2e_helm::binaries::{self, HamiRelease};
//! use hami_e2e_k8s::bincache::BinaryCache;
//!
//! let cache = BinaryCache::default();
//! let release = HamiRelease::from_env()?;
//! let scheduler = binaries::hami_scheduler(&cache, &release).await?;
//! let chart = binaries::hami_module_dir(&cache, &release).await?.join("charts/hami");
//! let helm = binaries::helm(&cache).await?;
//! println!("HAMi scheduler {} at {} ({})", scheduler.version, scheduler.path.display(), scheduler.source);
//! println!("helm {} at {}; chart {}", helm.version, helm.path.display(), chart.display());
//! # Ok(()) }
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hami_e2e_k8s::bincache::{BinaryCache, GoBuild, GoModule, required_version};

use crate::error::{Error, Result};

/// The environment variable naming the HAMi release to use (`2.9`, `v2.9.0`).
pub const HAMI_VERSION_ENV: &str = "HAMI_E2E_HAMI_VERSION";
/// The environment variable naming a prebuilt HAMi scheduler binary to use instead of
/// building one.
pub const HAMI_SCHEDULER_ENV: &str = "HAMI_E2E_HAMI_SCHEDULER";
/// The environment variable naming the `helm` binary to use.
pub const HELM_ENV: &str = "HAMI_E2E_HELM";

/// HAMi's Go module path.
pub const HAMI_MODULE: &str = "github.com/Project-HAMi/HAMi";

/// The helm major versions this crate drives.
pub const SUPPORTED_HELM_MAJORS: &[u32] = &[3];

/// How long a binary may take to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

const HELM_GO_MOD: &str = include_str!("../../go/helm/go.mod");
const HELM_GO_SUM: &str = include_str!("../../go/helm/go.sum");
const HELM_TOOLS_GO: &str = include_str!("../../go/helm/tools.go");

/// A HAMi release this crate can build, pinned by a Go module in `go/hami-<minor>/`.
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

/// The HAMi releases pinned in `go/`, newest first. The first is the default.
pub const HAMI_RELEASES: &[HamiRelease] = &[
    HamiRelease {
        version: "v2.10.0",
        commit: "4707fb02c91c545bc7343ce26dba4c32919f9a3e",
        go_mod: include_str!("../../go/hami-2.10/go.mod"),
        go_sum: include_str!("../../go/hami-2.10/go.sum"),
        tools_go: include_str!("../../go/hami-2.10/tools.go"),
    },
    HamiRelease {
        version: "v2.9.0",
        commit: "3a006c6ae2f077a2683df7805c43656c07f6dc15",
        go_mod: include_str!("../../go/hami-2.9/go.mod"),
        go_sum: include_str!("../../go/hami-2.9/go.sum"),
        tools_go: include_str!("../../go/hami-2.9/tools.go"),
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
        required_version(self.go_mod, HAMI_MODULE).expect("go/hami-*/go.mod requires HAMi")
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
        let version_pkg = format!("{HAMI_MODULE}/pkg/version");
        // HAMi's Makefile stamps `date +%Y%m%d-%T`; the commit's time keeps builds reproducible.
        let build_date = self
            .pseudo_version()
            .split('-')
            .nth(1)
            .filter(|t| t.len() == 14)
            .map(|t| format!("{}-{}:{}:{}", &t[..8], &t[8..10], &t[10..12], &t[12..14]))
            .unwrap_or_else(|| "unknown".into());
        let ldflags = format!(
            "-s -w -X {version_pkg}.version={} -X {version_pkg}.revision={} -X {version_pkg}.buildDate={build_date}",
            self.version,
            &self.commit[..12],
        );
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

/// Where a binary came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BinarySource {
    /// Named by an environment variable (`HAMI_E2E_HAMI_SCHEDULER`, `HAMI_E2E_HELM`).
    Env(&'static str),
    /// Found on `PATH`.
    Path,
    /// Built from the Go module pinned in `go/<module>` into the binary cache.
    Built {
        /// The folder in the repository's `go/` that pins it (`go/hami-2.10`).
        pin: String,
    },
}

impl fmt::Display for BinarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BinarySource::Env(var) => write!(f, "from {var}"),
            BinarySource::Path => write!(f, "from PATH"),
            BinarySource::Built { pin } => write!(f, "built from {pin}"),
        }
    }
}

/// A HAMi scheduler binary that runs and the version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HamiScheduler {
    /// The binary.
    pub path: PathBuf,
    /// What `scheduler version` reports (`v2.10.0`), or `unknown` for a binary given by
    /// `HAMI_E2E_HAMI_SCHEDULER` that has no `version` command but answers `--help`.
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

/// The HAMi scheduler of `release`: the binary named by `HAMI_E2E_HAMI_SCHEDULER` if set,
/// else built from the pinned module (once; later calls use the cache).
///
/// Same as [`hami_scheduler_from`] with the variable's value.
///
/// ```no_run
/// # async fn f() -> hami_e2e_helm::Result<()> {
/// use hami_e2e_helm::binaries::{hami_scheduler, HamiRelease};
///
/// let cache = hami_e2e_k8s::bincache::BinaryCache::default();
/// let scheduler = hami_scheduler(&cache, &HamiRelease::find(None)?).await?;
/// assert_eq!(scheduler.version, "v2.10.0");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// See [`hami_scheduler_from`].
///
/// # Cancel safety
///
/// Cancel safe: child processes are killed; an unfinished build leaves at most a
/// `.partial` folder that the next build replaces.
pub async fn hami_scheduler(cache: &BinaryCache, release: &HamiRelease) -> Result<HamiScheduler> {
    let given = std::env::var_os(HAMI_SCHEDULER_ENV);
    hami_scheduler_from(cache, release, given.as_deref()).await
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
/// let cache = hami_e2e_k8s::bincache::BinaryCache::default();
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
        let version = check_given_scheduler(&path).await?;
        tracing::info!(path = %path.display(), %version, "using the HAMi scheduler from {HAMI_SCHEDULER_ENV}");
        return Ok(HamiScheduler {
            path,
            version,
            source: BinarySource::Env(HAMI_SCHEDULER_ENV),
        });
    }
    let dir = cache.build_go(&release.go_module()).await?;
    let path = dir.join("scheduler");
    let pin = format!("go/hami-{}", minor_of(release.version()));
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

/// The folder of the pinned HAMi module's source in Go's module cache (downloaded if
/// needed). It holds HAMi's Helm chart, `charts/hami`, and the default device
/// configuration of the release.
///
/// ```no_run
/// # async fn f() -> hami_e2e_helm::Result<()> {
/// use hami_e2e_helm::binaries::{hami_module_dir, HamiRelease};
///
/// let cache = hami_e2e_k8s::bincache::BinaryCache::default();
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

/// The pinned helm version (`v3.22.0`), from `go/helm/go.mod`.
///
/// ```
/// assert!(hami_e2e_helm::binaries::pinned_helm_version().starts_with("v3."));
/// ```
pub fn pinned_helm_version() -> &'static str {
    required_version(HELM_GO_MOD, "helm.sh/helm/v3").expect("go/helm/go.mod requires helm v3")
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
/// major version (v3), else built from `go/helm`. Same as [`helm_from`] with the process's
/// `HAMI_E2E_HELM` and `PATH`.
///
/// ```no_run
/// # async fn f() -> hami_e2e_helm::Result<()> {
/// let helm = hami_e2e_helm::binaries::helm(&hami_e2e_k8s::bincache::BinaryCache::default()).await?;
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
/// let cache = hami_e2e_k8s::bincache::BinaryCache::default();
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
    let pin = "go/helm".to_string();
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

/// Checks a scheduler given by `HAMI_E2E_HAMI_SCHEDULER` and returns its version.
async fn check_given_scheduler(path: &Path) -> Result<String> {
    let bad = |message: String| Error::BadBinary {
        what: "HAMi scheduler",
        path: path.to_path_buf(),
        origin: HAMI_SCHEDULER_ENV.into(),
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
    fn minor_of_release() {
        assert_eq!(minor_of("v2.10.0"), "2.10");
        assert_eq!(minor_of("v2.9.0"), "2.9");
    }
}
