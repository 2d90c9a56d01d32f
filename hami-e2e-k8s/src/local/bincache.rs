//! The Go-built binaries of the local cluster: built once from the Go modules pinned in
//! this crate's `src/local/go/` folder, cached outside the repository by component and version.
//!
//! The pins (`go.mod`, `go.sum`) are compiled into this crate, so the build works from any
//! checkout or dependent crate: it writes them into the cache and runs `go build` there with
//! the machine's Go. Nothing is rebuilt once a cache folder is complete; concurrent
//! processes share one build through a lock file; a first build prints a line when each
//! component's build and each `go build` in it starts and ends (see
//! [`hami_e2e_core::progress`]).
//!
//! Prebuilt binaries are used instead when `HAMI_E2E_BIN_DIR` names a folder holding them,
//! or when they are on `PATH`, provided `--version` reports the pinned version.
//!
//! Other layers build their own Go binaries (the HAMi scheduler, helm) the same way: they
//! describe a pinned module as a [`GoModule`] and call [`BinaryCache::build_go`]; the
//! module's files (HAMi's Helm chart) are found with [`BinaryCache::go_module_source`].
//!
//! Layout (`HAMI_E2E_CACHE_DIR`, default `~/.cache/hami-e2e`):
//!
//! ```text
//! bin/kubernetes-v1.37.2/{kube-apiserver,kube-controller-manager,kube-scheduler,etcd,.complete}
//! bin/kwok-v0.8.0/{kwok,stages/*.yaml,.complete}
//! bin/<component>-<version>/{<outputs of GoModule::builds>,.complete}
//! src/<component>-<version>/{go.mod,go.sum,tools.go}   the module the build ran in
//! logs/<component>-<version>.log                       go's output
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hami_e2e_core::progress::{self, LongStep};

use crate::error::{Error, Result};

/// A Kubernetes release this crate can build: control plane and etcd.
#[derive(Debug, Clone, Copy)]
pub struct KubernetesRelease {
    go_mod: &'static str,
    go_sum: &'static str,
    tools_go: &'static str,
}

/// The Kubernetes releases pinned in `src/local/go/`, newest first. The first is the default.
pub const KUBERNETES_RELEASES: &[KubernetesRelease] = &[
    KubernetesRelease {
        go_mod: include_str!("go/kubernetes-1.37/go.mod"),
        go_sum: include_str!("go/kubernetes-1.37/go.sum"),
        tools_go: include_str!("go/kubernetes-1.37/tools.go"),
    },
    KubernetesRelease {
        go_mod: include_str!("go/kubernetes-1.36/go.mod"),
        go_sum: include_str!("go/kubernetes-1.36/go.sum"),
        tools_go: include_str!("go/kubernetes-1.36/tools.go"),
    },
];

const KWOK_GO_MOD: &str = include_str!("go/kwok/go.mod");
const KWOK_GO_SUM: &str = include_str!("go/kwok/go.sum");
const KWOK_TOOLS_GO: &str = include_str!("go/kwok/tools.go");

/// The KWOK stages the local cluster loads (kwokctl's defaults for the binary runtime).
const KWOK_STAGES: &[&str] = &[
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
    // Pods labelled `pod-container-running-failed.stage.kwok.x-k8s.io=true` fail, with the
    // reason, message and exit code of their annotations: real Failed pods for tests.
    "pod/chaos/pod-container-running-failed.yaml",
];

/// The version `go.mod` requires of `module` (`v1.37.2`), from a `require` line.
///
/// ```
/// let go_mod = "module x\n\nrequire (\n\tk8s.io/kubernetes v1.37.2\n\tgo.etcd.io/etcd/server/v3 v3.7.0 // indirect\n)\n";
/// assert_eq!(hami_e2e_k8s::local::bincache::required_version(go_mod, "go.etcd.io/etcd/server/v3"), Some("v3.7.0"));
/// assert_eq!(hami_e2e_k8s::local::bincache::required_version(go_mod, "k8s.io/api"), None);
/// ```
pub fn required_version<'a>(go_mod: &'a str, module: &str) -> Option<&'a str> {
    go_mod.lines().find_map(|line| {
        let line = line.trim().strip_prefix("require ").unwrap_or(line.trim());
        let mut parts = line.split_whitespace();
        (parts.next() == Some(module))
            .then(|| parts.next())
            .flatten()
    })
}

impl KubernetesRelease {
    /// The release's version, `v1.37.2`.
    pub fn version(&self) -> &'static str {
        required_version(self.go_mod, "k8s.io/kubernetes")
            .expect("src/local/go/kubernetes-*/go.mod requires k8s.io/kubernetes")
    }

    /// The etcd version built with it (`v3.7.0`), chosen by Go's minimal version selection.
    pub fn etcd_version(&self) -> &'static str {
        required_version(self.go_mod, "go.etcd.io/etcd/server/v3")
            .expect("go.mod lists etcd's server module")
    }

    /// Minor version (37 for v1.37.2).
    pub fn minor(&self) -> u32 {
        self.version()
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// The release for `version` (`1.36`, `v1.36.3`, `1.36.3`), or the default (newest) for
    /// `None` or an empty string.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`] listing the supported ones.
    pub fn find(version: Option<&str>) -> Result<KubernetesRelease> {
        let Some(wanted) = version.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(KUBERNETES_RELEASES[0]);
        };
        let wanted = wanted.strip_prefix('v').unwrap_or(wanted);
        KUBERNETES_RELEASES
            .iter()
            .find(|r| {
                let v = &r.version()[1..];
                v == wanted || v.starts_with(&format!("{wanted}."))
            })
            .copied()
            .ok_or_else(|| Error::UnsupportedVersion {
                requested: wanted.to_string(),
                supported: KUBERNETES_RELEASES
                    .iter()
                    .map(|r| r.version())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The release named by `HAMI_E2E_K8S_VERSION`, or the default.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`].
    pub fn from_env() -> Result<KubernetesRelease> {
        Self::find(std::env::var("HAMI_E2E_K8S_VERSION").ok().as_deref())
    }
}

/// Paths of the control plane's binaries.
#[derive(Debug, Clone)]
pub struct KubernetesBinaries {
    /// The release.
    pub version: String,
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kube-controller-manager.
    pub controller_manager: PathBuf,
    /// kube-scheduler.
    pub scheduler: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
}

/// Paths of KWOK's binary and stages.
#[derive(Debug, Clone)]
pub struct KwokBinaries {
    /// Version.
    pub version: String,
    /// The kwok controller.
    pub kwok: PathBuf,
    /// The stage files it is configured with.
    pub stages: Vec<PathBuf>,
}

/// The cache of Go-built binaries.
#[derive(Debug, Clone)]
pub struct BinaryCache {
    root: PathBuf,
}

/// The cache folder: `HAMI_E2E_CACHE_DIR`, else `$XDG_CACHE_HOME/hami-e2e`, else
/// `~/.cache/hami-e2e`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HAMI_E2E_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("hami-e2e");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("hami-e2e"),
        None => std::env::temp_dir().join("hami-e2e-cache"),
    }
}

/// One `go build` run of a [`GoModule`]: packages, where they go, linker flags, cgo.
///
/// ```
/// use hami_e2e_k8s::local::bincache::GoBuild;
///
/// let build = GoBuild::new(["github.com/Project-HAMi/HAMi/cmd/scheduler"], "scheduler")
///     .ldflags("-s -w")
///     .cgo(true);
/// assert_eq!(build.output, "scheduler");
/// assert!(build.cgo);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GoBuild {
    /// The main packages to build (`k8s.io/kubernetes/cmd/kube-apiserver`).
    pub packages: Vec<String>,
    /// `go build -o` target inside the output folder: a file name (`etcd`), or `./` to put
    /// every package's binary there under its own name.
    pub output: String,
    /// `-ldflags`, e.g. `-s -w -X pkg.version=v1.0.0`.
    pub ldflags: String,
    /// Whether cgo is on (`CGO_ENABLED=1`, needs the machine's C compiler). Off by default.
    pub cgo: bool,
}

impl GoBuild {
    /// Builds `packages` into `output` (see [`GoBuild::output`]), with `-s -w` and no cgo.
    pub fn new(
        packages: impl IntoIterator<Item = impl Into<String>>,
        output: impl Into<String>,
    ) -> Self {
        Self {
            packages: packages.into_iter().map(Into::into).collect(),
            output: output.into(),
            ldflags: "-s -w".into(),
            cgo: false,
        }
    }

    /// Sets the linker flags (replacing the default `-s -w`).
    #[must_use]
    pub fn ldflags(mut self, ldflags: impl Into<String>) -> Self {
        self.ldflags = ldflags.into();
        self
    }

    /// Turns cgo on or off.
    #[must_use]
    pub fn cgo(mut self, cgo: bool) -> Self {
        self.cgo = cgo;
        self
    }

    /// What the progress lines call this build: the output's name, or the packages' last
    /// path elements when the output is a folder.
    fn label(&self) -> String {
        if self.output.ends_with('/') {
            self.packages
                .iter()
                .map(|p| p.rsplit('/').next().unwrap_or(p))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            self.output.clone()
        }
    }
}

/// A Go module pinned in the repository (its `go.mod`, `go.sum` and a `tools.go` importing
/// the main packages), and the binaries to build from it.
///
/// [`BinaryCache::build_go`] builds it once into `bin/<component>-<version>/`.
///
/// ```
/// use hami_e2e_k8s::local::bincache::{GoBuild, GoModule};
///
/// let module = GoModule::new(
///     "helm",
///     "v3.22.0",
///     "module example.com/pins/helm\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 v3.22.0\n",
///     "",
///     "//go:build tools\n\npackage tools\n\nimport _ \"helm.sh/helm/v3/cmd/helm\"\n",
/// )
/// .build(GoBuild::new(["helm.sh/helm/v3/cmd/helm"], "helm"));
/// assert_eq!(module.key(), "helm-v3.22.0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GoModule {
    /// The cache folder's name before the version (`kubernetes`, `hami-scheduler`).
    pub component: String,
    /// The version in the cache folder's name (`v1.37.2`).
    pub version: String,
    /// The module's `go.mod`.
    pub go_mod: String,
    /// The module's `go.sum`, complete: builds run with `-mod=readonly`.
    pub go_sum: String,
    /// A `//go:build tools` file importing the main packages, so `go mod tidy` keeps them.
    pub tools_go: String,
    /// The `go build` runs, in order, into the same output folder.
    pub builds: Vec<GoBuild>,
}

impl GoModule {
    /// A module with no builds yet (add them with [`GoModule::build`]).
    pub fn new(
        component: impl Into<String>,
        version: impl Into<String>,
        go_mod: impl Into<String>,
        go_sum: impl Into<String>,
        tools_go: impl Into<String>,
    ) -> Self {
        Self {
            component: component.into(),
            version: version.into(),
            go_mod: go_mod.into(),
            go_sum: go_sum.into(),
            tools_go: tools_go.into(),
            builds: Vec::new(),
        }
    }

    /// Adds a `go build` run.
    #[must_use]
    pub fn build(mut self, build: GoBuild) -> Self {
        self.builds.push(build);
        self
    }

    /// `<component>-<version>`: the name of its folders in the cache.
    pub fn key(&self) -> String {
        format!("{}-{}", self.component, self.version)
    }

    fn files(&self) -> [(&'static str, &str); 3] {
        [
            ("go.mod", &self.go_mod),
            ("go.sum", &self.go_sum),
            ("tools.go", &self.tools_go),
        ]
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `binary --version` and checks that its output names `version` (without `v`).
async fn reports_version(binary: &Path, version: &str) -> bool {
    let want = version.trim_start_matches('v');
    match tokio::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            text.split(|c: char| c.is_whitespace() || c == 'v')
                .any(|w| w == want)
        }
        Err(_) => false,
    }
}

/// Finds `name` in `HAMI_E2E_BIN_DIR`, then on `PATH`, if it reports `version`.
async fn prebuilt(name: &str, version: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("HAMI_E2E_BIN_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() && reports_version(&candidate, version).await {
            return Some(candidate);
        }
    }
    None
}

impl Default for BinaryCache {
    fn default() -> Self {
        Self::new(default_cache_dir())
    }
}

impl BinaryCache {
    /// A cache rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The control plane of `release`: prebuilt if found, else from the cache, else built.
    ///
    /// # Errors
    ///
    /// [`Error::GoMissing`], [`Error::GoBuild`], [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancelling leaves at most a `.partial` folder that the next build replaces.
    pub async fn kubernetes(&self, release: &KubernetesRelease) -> Result<KubernetesBinaries> {
        let version = release.version().to_string();
        let etcd_version = release.etcd_version();
        let names = [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ];
        let mut found = Vec::new();
        for name in names {
            found.push(prebuilt(name, &version).await);
        }
        let etcd = prebuilt("etcd", etcd_version).await;
        if let ([Some(a), Some(c), Some(s)], Some(e)) =
            (<[_; 3]>::try_from(found).unwrap_or_default(), etcd)
        {
            tracing::info!(%version, "using prebuilt control plane binaries");
            return Ok(KubernetesBinaries {
                version,
                apiserver: a,
                controller_manager: c,
                scheduler: s,
                etcd: e,
            });
        }
        let minor = release.minor();
        let ldflags = [
            format!("k8s.io/component-base/version.gitVersion={version}"),
            "k8s.io/component-base/version.gitMajor=1".into(),
            format!("k8s.io/component-base/version.gitMinor={minor}"),
            "k8s.io/component-base/version.gitTreeState=clean".into(),
            "k8s.io/component-base/version.gitCommit=go-module".into(),
            "k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z".into(),
            format!("k8s.io/client-go/pkg/version.gitVersion={version}"),
            "k8s.io/client-go/pkg/version.gitMajor=1".into(),
            format!("k8s.io/client-go/pkg/version.gitMinor={minor}"),
        ]
        .iter()
        .fold("-s -w".to_string(), |acc, x| format!("{acc} -X {x}"));
        let module = GoModule::new(
            "kubernetes",
            version.clone(),
            release.go_mod,
            release.go_sum,
            release.tools_go,
        )
        .build(
            GoBuild::new(
                [
                    "k8s.io/kubernetes/cmd/kube-apiserver",
                    "k8s.io/kubernetes/cmd/kube-controller-manager",
                    "k8s.io/kubernetes/cmd/kube-scheduler",
                ],
                "./",
            )
            .ldflags(ldflags),
        )
        .build(GoBuild::new(["go.etcd.io/etcd/server/v3"], "etcd"));
        let dir = self.ensure(&module, |_, _| Ok(())).await?;
        Ok(KubernetesBinaries {
            version,
            apiserver: dir.join("kube-apiserver"),
            controller_manager: dir.join("kube-controller-manager"),
            scheduler: dir.join("kube-scheduler"),
            etcd: dir.join("etcd"),
        })
    }

    /// KWOK and its stages: from the cache, else built (stages are copied from the module).
    ///
    /// # Errors
    ///
    /// [`Error::GoMissing`], [`Error::GoBuild`], [`Error::Io`].
    pub async fn kwok(&self) -> Result<KwokBinaries> {
        let version = required_version(KWOK_GO_MOD, "sigs.k8s.io/kwok")
            .expect("src/local/go/kwok/go.mod requires kwok")
            .to_string();
        let module = GoModule::new(
            "kwok",
            version.clone(),
            KWOK_GO_MOD,
            KWOK_GO_SUM,
            KWOK_TOOLS_GO,
        )
        .build(GoBuild::new(["sigs.k8s.io/kwok/cmd/kwok"], "kwok"));
        let dir = self
            .ensure(&module, |module_dir, out| {
                let kwok_dir = go_module_dir(module_dir, "sigs.k8s.io/kwok")?;
                let stages = out.join("stages");
                std::fs::create_dir_all(&stages).map_err(io("create folder", &stages))?;
                for stage in KWOK_STAGES {
                    let from = kwok_dir.join("kustomize/stage").join(stage);
                    let to = stages.join(Path::new(stage).file_name().unwrap_or_default());
                    std::fs::copy(&from, &to).map_err(io("copy KWOK stage", &from))?;
                }
                Ok(())
            })
            .await?;
        let stages: Vec<PathBuf> = KWOK_STAGES
            .iter()
            .map(|s| {
                dir.join("stages")
                    .join(Path::new(s).file_name().unwrap_or_default())
            })
            .collect();
        // A cache built by an earlier release of this crate may lack a stage added since.
        for (stage, path) in KWOK_STAGES.iter().zip(&stages) {
            if !path.is_file() {
                copy_stage_from_module_cache(&version, stage, path)?;
            }
        }
        Ok(KwokBinaries {
            version,
            kwok: dir.join("kwok"),
            stages,
        })
    }

    /// Builds `module`'s binaries into `bin/<component>-<version>/` and returns that folder,
    /// or returns it at once when an earlier build completed it. Runs `go build -trimpath`
    /// with `-mod=readonly`, `GOWORK=off` and the machine's `GOCACHE`, `GOPROXY` and C
    /// compiler (for [`GoBuild::cgo`]); concurrent processes share one build through a
    /// lock file; a first build prints a progress line per [`GoBuild`] with its elapsed time.
    ///
    /// ```no_run
    /// # async fn f(go_mod: &str, go_sum: &str, tools_go: &str) -> hami_e2e_k8s::Result<()> {
    /// use hami_e2e_k8s::local::bincache::{BinaryCache, GoBuild, GoModule};
    ///
    /// // The pins are usually compiled in: `include_str!("go/helm/go.mod")`.
    /// let module = GoModule::new("helm", "v3.22.0", go_mod, go_sum, tools_go)
    /// .build(GoBuild::new(["helm.sh/helm/v3/cmd/helm"], "helm"));
    /// let dir = BinaryCache::default().build_go(&module).await?;
    /// assert!(dir.join("helm").is_file());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::GoMissing`] without `go`, [`Error::GoBuild`] with the end of `go`'s output
    /// (the whole of it is in `logs/<component>-<version>.log`), [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancelling kills `go` and leaves at most a `.partial` folder that the next build
    /// replaces.
    pub async fn build_go(&self, module: &GoModule) -> Result<PathBuf> {
        self.ensure(module, |_, _| Ok(())).await
    }

    /// The folder of `module_path`'s source in Go's module cache, at the version `module`
    /// pins (`go mod download`, then `go list -m -f {{.Dir}}` in the module's folder under
    /// `src/`). Use it to read files a module ships besides Go code, such as HAMi's Helm
    /// chart. Builds nothing.
    ///
    /// ```no_run
    /// # async fn f(module: hami_e2e_k8s::local::bincache::GoModule) -> hami_e2e_k8s::Result<()> {
    /// use hami_e2e_k8s::local::bincache::BinaryCache;
    ///
    /// let hami = BinaryCache::default()
    ///     .go_module_source(&module, "github.com/Project-HAMi/HAMi")
    ///     .await?;
    /// assert!(hami.join("charts/hami/Chart.yaml").is_file());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::GoMissing`] without `go`; [`Error::GoBuild`] when `go` cannot download the
    /// module (its output says why: proxy refusal, checksum mismatch, unknown version);
    /// [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `go` is killed; a partial download is Go's to resume.
    pub async fn go_module_source(&self, module: &GoModule, module_path: &str) -> Result<PathBuf> {
        let module_dir = self.root.join("src").join(module.key());
        std::fs::create_dir_all(&module_dir).map_err(io("create folder", &module_dir))?;
        for (name, content) in module.files() {
            let path = module_dir.join(name);
            // Rewriting identical files could disturb a build running in the folder.
            if std::fs::read_to_string(&path).ok().as_deref() != Some(content) {
                std::fs::write(&path, content).map_err(io("write", &path))?;
            }
        }
        let what = format!("the source of {module_path} for {}", module.component);
        let go = |args: &'static [&'static str]| {
            run_go_query(&module_dir, args, module_path, &what, &module.version)
        };
        go(&["mod", "download"]).await?;
        let dir = go(&["list", "-m", "-f", "{{.Dir}}"]).await?;
        if dir.is_empty() {
            return Err(Error::GoBuild {
                component: format!("{what} (`go list -m -f {{{{.Dir}}}} {module_path}`)"),
                version: module.version.clone(),
                status: "0, but no folder".into(),
                output: String::new(),
            });
        }
        Ok(PathBuf::from(dir))
    }

    async fn ensure(
        &self,
        spec: &GoModule,
        post: impl Fn(&Path, &Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let key = spec.key();
        let bin = self.root.join("bin");
        let dir = bin.join(&key);
        let complete = dir.join(".complete");
        if complete.exists() {
            return Ok(dir);
        }
        std::fs::create_dir_all(&bin).map_err(io("create folder", &bin))?;
        let lock_path = bin.join(format!("{key}.lock"));
        let lock = std::fs::File::create(&lock_path).map_err(io("create lock file", &lock_path))?;
        if lock.try_lock().is_err() {
            progress::line(&format!(
                "hami-e2e: {} {}: waiting for another process that is building it",
                spec.component, spec.version
            ));
            let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
                .await
                .map_err(|e| Error::Io {
                    action: "lock",
                    path: lock_path.clone(),
                    source: std::io::Error::other(e),
                })?
                .map_err(io("lock", &lock_path))?;
            if complete.exists() {
                return Ok(dir);
            }
            return self.build_locked(spec, &key, &dir, post, lock).await;
        }
        if complete.exists() {
            return Ok(dir);
        }
        self.build_locked(spec, &key, &dir, post, lock).await
    }

    async fn build_locked(
        &self,
        spec: &GoModule,
        key: &str,
        dir: &Path,
        post: impl Fn(&Path, &Path) -> Result<()>,
        _lock: std::fs::File,
    ) -> Result<PathBuf> {
        let go_version = match tokio::process::Command::new("go")
            .arg("version")
            .stdin(Stdio::null())
            .output()
            .await
        {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
            Ok(out) => {
                return Err(Error::GoMissing {
                    component: format!("{} {}", spec.component, spec.version),
                    source: std::io::Error::other(format!(
                        "`go version` exited with {}",
                        out.status
                    )),
                });
            }
            Err(source) => {
                return Err(Error::GoMissing {
                    component: format!("{} {}", spec.component, spec.version),
                    source,
                });
            }
        };
        let module_dir = self.root.join("src").join(key);
        std::fs::create_dir_all(&module_dir).map_err(io("create folder", &module_dir))?;
        for (name, content) in spec.files() {
            let path = module_dir.join(name);
            std::fs::write(&path, content).map_err(io("write", &path))?;
        }
        let logs = self.root.join("logs");
        std::fs::create_dir_all(&logs).map_err(io("create folder", &logs))?;
        let log_path = logs.join(format!("{key}.log"));
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(io("create folder", &partial))?;

        let note = if spec.component == "kubernetes" {
            "first run only; a cold build of Kubernetes takes 5-30 minutes on 2 cores"
        } else {
            "first run only"
        };
        let whole = LongStep::start(&spec.component, &spec.version, Some(&log_path), "build");
        progress::line(&format!(
            "hami-e2e: {} {}: {go_version}, into {} ({note})",
            spec.component,
            spec.version,
            dir.display()
        ));
        let mut log_text = String::new();
        for build in &spec.builds {
            let what = build.label();
            let step = LongStep::start(
                &spec.component,
                &spec.version,
                Some(&log_path),
                format!("go build {what}"),
            );
            let output = if build.output.ends_with('/') {
                format!("{}/", partial.display())
            } else {
                partial.join(&build.output).display().to_string()
            };
            let mut cmd = tokio::process::Command::new("go");
            cmd.current_dir(&module_dir)
                .args([
                    "build",
                    "-trimpath",
                    "-ldflags",
                    &build.ldflags,
                    "-o",
                    &output,
                ])
                .args(&build.packages)
                .env("CGO_ENABLED", if build.cgo { "1" } else { "0" })
                .env("GOWORK", "off")
                .env("GOFLAGS", "-mod=readonly")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let child = cmd.spawn().map_err(|source| Error::GoMissing {
                component: spec.component.clone(),
                source,
            })?;
            let mut wait = AbortOnDrop(tokio::spawn(child.wait_with_output()));
            let mut ticker = tokio::time::interval(Duration::from_secs(60));
            ticker.tick().await;
            let out = loop {
                tokio::select! {
                    out = &mut wait.0 => break out,
                    _ = ticker.tick() => step.note(&format!("still building {what}")),
                }
            };
            let out = out
                .map_err(std::io::Error::other)
                .and_then(|o| o)
                .map_err(|source| Error::GoMissing {
                    component: spec.component.clone(),
                    source,
                })?;
            let status = out.status;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            log_text.push_str(&format!(
                "$ go build {}\n{text}\n",
                build.packages.join(" ")
            ));
            let _ = std::fs::write(&log_path, &log_text);
            if !status.success() {
                step.fail(&status);
                return Err(Error::GoBuild {
                    component: spec.component.clone(),
                    version: spec.version.clone(),
                    status: status.to_string(),
                    output: tail(&text, 30),
                });
            }
            step.finish();
        }
        post(&module_dir, &partial)?;
        let marker = partial.join(".complete");
        std::fs::write(&marker, format!("{go_version}\n")).map_err(io("write", &marker))?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io("remove stale folder", dir))?;
        }
        std::fs::rename(&partial, dir).map_err(io("rename", &partial))?;
        whole.finish();
        Ok(dir.to_path_buf())
    }
}

/// Runs `go <args> <module_path>` in `module_dir` and returns its trimmed standard output.
async fn run_go_query(
    module_dir: &Path,
    args: &[&str],
    module_path: &str,
    what: &str,
    version: &str,
) -> Result<String> {
    let out = tokio::process::Command::new("go")
        .current_dir(module_dir)
        .args(args)
        .arg(module_path)
        .env("GOWORK", "off")
        .env("GOFLAGS", "-mod=readonly")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Error::GoMissing {
            component: what.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::GoBuild {
            component: format!("{what} (`go {} {module_path}`)", args.join(" ")),
            version: version.to_string(),
            status: out.status.to_string(),
            output: tail(&String::from_utf8_lossy(&out.stderr), 30),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Aborts the task (and so kills `go`, spawned with `kill_on_drop`) when the build is cancelled.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Copies a KWOK stage from Go's module cache (filled by the build) into the binary cache.
fn copy_stage_from_module_cache(version: &str, stage: &str, to: &Path) -> Result<()> {
    let out = std::process::Command::new("go")
        .args(["env", "GOMODCACHE"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::GoMissing {
            component: "kwok's stages".into(),
            source,
        })?;
    let from = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        .join(format!("sigs.k8s.io/kwok@{version}/kustomize/stage"))
        .join(stage);
    std::fs::copy(&from, to).map_err(|source| Error::Io {
        action: "copy KWOK stage (delete the kwok folder of the binary cache to rebuild it)",
        path: from.clone(),
        source,
    })?;
    Ok(())
}

fn go_module_dir(module_dir: &Path, module: &str) -> Result<PathBuf> {
    let out = std::process::Command::new("go")
        .current_dir(module_dir)
        .args(["list", "-m", "-f", "{{.Dir}}", module])
        .env("GOWORK", "off")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::GoMissing {
            component: module.to_string(),
            source,
        })?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        return Err(Error::GoBuild {
            component: module.to_string(),
            version: String::new(),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_releases_parse() {
        assert_eq!(KUBERNETES_RELEASES[0].version(), "v1.37.2");
        assert_eq!(KUBERNETES_RELEASES[0].minor(), 37);
        assert!(KUBERNETES_RELEASES[0].etcd_version().starts_with("v3."));
        assert_eq!(KUBERNETES_RELEASES[1].version(), "v1.36.3");
    }

    #[test]
    fn versions_are_found_by_prefix() {
        assert_eq!(
            KubernetesRelease::find(Some("1.36")).unwrap().version(),
            "v1.36.3"
        );
        assert_eq!(
            KubernetesRelease::find(Some("v1.37.2")).unwrap().version(),
            "v1.37.2"
        );
        assert_eq!(KubernetesRelease::find(None).unwrap().version(), "v1.37.2");
        let e = KubernetesRelease::find(Some("1.3"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "Kubernetes version `1.3` is not supported; supported: v1.37.2, v1.36.3"
        );
    }
}
